//! The one place that runs calls concurrently: start each on the executor, race them all
//! against the deadline and the caller's cancellation, and abort the rest when one fails.
//!
//! It is generic over any number of calls of different result types: [`FanOut::call`] starts
//! one call and returns a future of its typed result; the caller joins those futures with a
//! short-circuiting join (`try_join`, `try_join!`, `try_join_all`) and hands the join to
//! [`FanOut::run`]. The first error ends the join; dropping the join drops every other
//! [`Call`], and dropping a `Call` aborts its task.

use std::any::TypeId;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::{AbortHandle, Abortable, Aborted, FutureExt};
use pin_project_lite::pin_project;

use crate::context::{CancelHandle, Context};
use crate::error::{AggregateError, BoxError, panic_message};
use crate::executor::{Executor, Inline};
use crate::logger::Logger;
use crate::timer::Timer;

/// What a call's task reports: the service's own result, or the message of its panic.
type Outcome<R> = Result<Result<R, BoxError>, String>;

/// One fan-out in progress. Created by [`FanOut::start`]; lives as long as the operation.
pub(crate) struct FanOut<'a, E, T> {
    executor: &'a E,
    timer: &'a T,
    logger: &'a Logger,
    /// The operation's id, logged as `user_id`.
    id: u64,
    started: Instant,
    deadline: Option<Instant>,
    /// The caller's context: its cancellation ends the fan-out.
    parent: &'a Context,
    /// The context handed to every call: the effective deadline, cancelled when the fan-out
    /// ends, however it ends (Go's `defer cancel()`).
    child: Context,
    /// Held only for its `Drop`.
    _cancel_child: CancelOnDrop,
    /// The names of the first [`NAMED`] calls, in the order they started, for the logs.
    names: [OnceLock<&'static str>; NAMED],
    /// How many calls have started.
    started_calls: AtomicUsize,
    /// Bit `i` is set while call `i` has started and not yet answered.
    pending: AtomicU64,
}

/// How many calls' names a fan-out keeps for its logs; later calls go unlisted.
const NAMED: usize = 8;

impl<'a, E: Executor, T: Timer> FanOut<'a, E, T> {
    /// Prepares a fan-out under `parent`, to finish within `timeout` (`None`: only the
    /// parent's deadline applies).
    ///
    /// Fails without starting anything if `parent` is already cancelled or its deadline has
    /// already passed.
    pub(crate) fn start(
        parent: &'a Context,
        timeout: Option<Duration>,
        executor: &'a E,
        timer: &'a T,
        logger: &'a Logger,
        id: u64,
    ) -> Result<Self, AggregateError> {
        let started = timer.now();
        let own = timeout.and_then(|timeout| started.checked_add(timeout));
        let deadline = match (parent.deadline(), own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match deadline {
            Some(deadline) => {
                let budget_ms = millis(deadline.saturating_duration_since(started));
                log::debug!(logger: logger, target: "failfast", user_id = id, budget_ms = budget_ms; "aggregate started");
            }
            None => {
                log::debug!(logger: logger, target: "failfast", user_id = id; "aggregate started")
            }
        }

        if parent.is_cancelled() {
            log::warn!(logger: logger, target: "failfast", user_id = id; "caller's context already cancelled, nothing started");
            return Err(AggregateError::Cancelled {
                elapsed: Duration::ZERO,
            });
        }
        if deadline.is_some_and(|deadline| deadline <= started) {
            log::warn!(logger: logger, target: "failfast", user_id = id; "deadline already passed, nothing started");
            return Err(AggregateError::DeadlineExceeded {
                elapsed: Duration::ZERO,
            });
        }
        let scoped = match deadline {
            Some(deadline) => parent.with_deadline(deadline),
            None => parent.clone(),
        };
        let (child, cancel_child) = scoped.with_cancel();
        Ok(FanOut {
            executor,
            timer,
            logger,
            id,
            started,
            deadline,
            parent,
            child,
            _cancel_child: CancelOnDrop(cancel_child),
            names: Default::default(),
            started_calls: AtomicUsize::new(0),
            pending: AtomicU64::new(0),
        })
    }

    /// Starts the call `name`: builds its future from the fan-out's context and hands it to
    /// the executor. The returned [`Call`] yields its result; dropping it aborts the call.
    pub(crate) fn call<F, R>(
        &self,
        name: &'static str,
        make: impl FnOnce(Context) -> F,
    ) -> Call<'_, E, T, R>
    where
        F: Future<Output = Result<R, BoxError>> + Send + 'static,
        R: Send + 'static,
    {
        let guarded = Guarded {
            future: Some(make(self.child.clone())),
        };
        // Boxed (type-erased) either way, so that the aggregate's future does not carry `F` in
        // its type: proving `Send` for it through `F`'s bounds hits rustc's higher-ranked
        // lifetime limitation (rust-lang/rust#64552).
        let state = if TypeId::of::<E>() == TypeId::of::<Inline>() {
            // `Inline` always hands its task back, and the channel and abort handle that a
            // spawned task needs are built before `spawn` can say so: for the built-in one,
            // known up front, poll the call in place without them (dropping it is cancelling
            // it). Any other executor that hands tasks back takes the general path below,
            // which is correct, only one channel and one abort handle per call dearer.
            State::Inline(Box::pin(guarded))
        } else {
            let (tx, rx) = oneshot::channel();
            let (abort, registration) = AbortHandle::new_pair();
            let sending = Sending {
                guarded,
                tx: Some(tx),
            };
            let task: Task<F, R> = Abortable::new(sending, registration).map(ignore_abort);
            let handed_back = self
                .executor
                .spawn(task)
                .map(|task| -> HandedBack { Box::pin(task) });
            State::Spawned {
                handed_back,
                rx,
                abort: Some(AbortOnDrop::new(abort)),
            }
        };
        let index = self.started_calls.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = self.names.get(index) {
            let _ = slot.set(name);
        }
        let bit = if index < NAMED { 1 << index } else { 0 }; // later calls go unlisted
        self.pending.fetch_or(bit, Ordering::Relaxed);
        Call {
            fanout: self,
            name,
            bit,
            state,
        }
    }

    /// Drives `calls` (a join of [`Call`]s) until it completes, the deadline passes or the
    /// caller's context is cancelled, whichever comes first.
    ///
    /// Ties, when several are ready at the same poll: a completed join wins (work that is done
    /// is not thrown away, like tower's `Timeout`), then the caller's cancellation, then the
    /// deadline. A service *error* observed once the caller has cancelled or the deadline has
    /// passed is reported as that cancellation or deadline: a service that honours its context
    /// fails because of it, and the cause is what the caller needs to see.
    pub(crate) async fn run<R>(
        &self,
        calls: impl Future<Output = Result<R, AggregateError>>,
    ) -> Result<R, AggregateError> {
        let calls = calls.fuse();
        futures::pin_mut!(calls);
        // Calls that answer on their first poll need no timer: the sleep is created (which,
        // for some timers, costs more than the whole fan-out) only once they are pending.
        // The deadline is absolute, so creating its sleep late does not move it.
        if let Poll::Ready(result) = futures::poll!(calls.as_mut()) {
            return self.settle(result);
        }

        // A timer can panic (tokio's, once its runtime is shut down): contained like a service.
        let sleep = match self.deadline {
            Some(deadline) => {
                match catch_unwind(AssertUnwindSafe(|| self.timer.sleep_until(deadline))) {
                    Ok(sleep) => Some(sleep),
                    Err(payload) => return self.settle(Err(timer_failed(payload))),
                }
            }
            None => None,
        };
        let deadline = async move {
            match sleep {
                Some(sleep) => AssertUnwindSafe(sleep).catch_unwind().await,
                None => futures::future::pending().await,
            }
        }
        .fuse();
        let cancelled = self.parent.cancelled();
        futures::pin_mut!(cancelled, deadline);

        // Biased so that the order above is the documented tie rule, not a coin toss.
        let result = futures::select_biased! {
            result = calls => result,
            () = cancelled => Err(AggregateError::Cancelled { elapsed: self.elapsed() }),
            fired = deadline => match fired {
                Ok(()) => Err(AggregateError::DeadlineExceeded { elapsed: self.elapsed() }),
                Err(payload) => Err(timer_failed(payload)),
            },
        };
        self.settle(result)
    }

    /// Reports a service error caused by the caller's cancellation or the deadline as that
    /// cause, then logs how the fan-out ended. The child context is cancelled when the
    /// `FanOut` drops.
    fn settle<R>(&self, result: Result<R, AggregateError>) -> Result<R, AggregateError> {
        let result = match result {
            Err(AggregateError::Service { .. }) if self.parent.is_cancelled() => {
                Err(AggregateError::Cancelled {
                    elapsed: self.elapsed(),
                })
            }
            Err(AggregateError::Service { .. }) if self.deadline_passed() => {
                Err(AggregateError::DeadlineExceeded {
                    elapsed: self.elapsed(),
                })
            }
            other => other,
        };
        if let Err(error) = &result {
            let cancelled = self.pending_names();
            log::warn!(
                logger: self.logger, target: "failfast",
                user_id = self.id, error = chain(error).as_str(), cancelled = cancelled.as_str(), elapsed_ms = millis(self.elapsed());
                "aggregate failed, cancelling the calls still in flight"
            );
        } else {
            log::debug!(logger: self.logger, target: "failfast", user_id = self.id, elapsed_ms = millis(self.elapsed()); "aggregate finished");
        }
        result
    }

    fn deadline_passed(&self) -> bool {
        self.deadline
            .is_some_and(|deadline| self.timer.now() >= deadline)
    }

    fn elapsed(&self) -> Duration {
        self.timer.now().saturating_duration_since(self.started)
    }

    /// The names of the calls still in flight, comma-separated.
    fn pending_names(&self) -> String {
        let pending = self.pending.load(Ordering::Relaxed);
        let mut list = String::new();
        for (index, name) in self.names.iter().enumerate() {
            if let Some(name) = name.get().filter(|_| pending & (1 << index) != 0) {
                if !list.is_empty() {
                    list.push(',');
                }
                list.push_str(name);
            }
        }
        list
    }

    fn finished(&self, name: &'static str, bit: u64, outcome: &Result<impl Sized, AggregateError>) {
        self.pending.fetch_and(!bit, Ordering::Relaxed);
        // Log arguments are evaluated only when the record is enabled: no clock read otherwise.
        match outcome {
            Ok(_) => {
                log::debug!(logger: self.logger, target: "failfast", user_id = self.id, service = name, elapsed_ms = millis(self.elapsed()); "fetch finished");
            }
            Err(error) => {
                log::debug!(logger: self.logger, target: "failfast", user_id = self.id, service = name, elapsed_ms = millis(self.elapsed()), error = chain(error).as_str(); "fetch failed");
            }
        }
    }
}

/// The result of one started call. Dropping it cancels the call.
#[must_use = "futures do nothing unless you .await or poll them"]
pub(crate) struct Call<'a, E, T, R> {
    fanout: &'a FanOut<'a, E, T>,
    name: &'static str,
    /// This call's bit in `FanOut::pending`.
    bit: u64,
    state: State<R>,
}

/// Where a call runs.
enum State<R> {
    /// Polled inside the aggregate's own task.
    Inline(Pin<Box<dyn PollOutcome<R> + Send>>),
    /// Given to the executor; the outcome comes back through `rx`. `handed_back` is the task
    /// when the executor returned it to be polled here instead.
    Spawned {
        handed_back: Option<HandedBack>,
        rx: oneshot::Receiver<Outcome<R>>,
        /// Aborts the task if the call is dropped before its outcome arrived.
        abort: Option<AbortOnDrop>,
    },
}

/// A task handed back by the executor, polled inside the aggregate's own task.
type HandedBack = Pin<Box<dyn Future<Output = ()> + Send>>;

impl<E: Executor, T: Timer, R> Future for Call<'_, E, T, R> {
    type Output = Result<R, AggregateError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let outcome = match &mut this.state {
            State::Inline(call) => match call.as_mut().poll_outcome(cx) {
                Poll::Ready(outcome) => outcome,
                Poll::Pending => return Poll::Pending,
            },
            State::Spawned {
                handed_back,
                rx,
                abort,
            } => {
                if let Some(task) = handed_back {
                    if task.as_mut().poll(cx).is_ready() {
                        *handed_back = None;
                    }
                }
                match Pin::new(rx).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(outcome)) => {
                        // The task has finished: nothing to abort (an abort would only wake it).
                        if let Some(guard) = abort.take() {
                            guard.disarm();
                        }
                        outcome
                    }
                    Poll::Ready(Err(oneshot::Canceled)) => {
                        // The executor dropped the task without running it to completion.
                        let result = Err(AggregateError::Dropped { service: this.name });
                        this.fanout.finished(this.name, this.bit, &result);
                        return Poll::Ready(result);
                    }
                }
            }
        };
        let result = match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(AggregateError::Service {
                service: this.name,
                source,
            }),
            Err(message) => Err(AggregateError::Panicked {
                service: this.name,
                message,
            }),
        };
        this.fanout.finished(this.name, this.bit, &result);
        Poll::Ready(result)
    }
}

/// The future handed to the executor for one call.
pub(crate) type Task<F, R> =
    futures::future::Map<Abortable<Sending<F, R>>, fn(Result<(), Aborted>)>;

fn ignore_abort(_: Result<(), Aborted>) {}

/// Polls a call to its [`Outcome`]: the object-safe face of [`Guarded`].
trait PollOutcome<R> {
    /// Polls the service future; `Pending` forever once the outcome was returned.
    fn poll_outcome(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Outcome<R>>;
}

pin_project! {
    /// Runs a service future, catching its panics, also those raised while it is dropped.
    pub(crate) struct Guarded<F> {
        #[pin]
        future: Option<F>,
    }

    impl<F> PinnedDrop for Guarded<F> {
        fn drop(this: Pin<&mut Self>) {
            // A panic in the service's destructor must not unwind into the executor (or into
            // the caller dropping an inline aggregate); there is nobody left to report it to.
            let mut future = this.project().future;
            let _ = catch_unwind(AssertUnwindSafe(|| future.set(None)));
        }
    }
}

impl<F, R> PollOutcome<R> for Guarded<F>
where
    F: Future<Output = Result<R, BoxError>>,
{
    fn poll_outcome(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Outcome<R>> {
        let mut this = self.project();
        let Some(future) = this.future.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        let outcome = match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(result)) => Ok(result),
            Err(payload) => Err(contain(payload)),
        };
        // Drop the finished future here, where a panicking destructor is still caught.
        match catch_unwind(AssertUnwindSafe(|| this.future.set(None))) {
            Ok(()) => Poll::Ready(outcome),
            Err(payload) => Poll::Ready(Err(contain(payload))),
        }
    }
}

pin_project! {
    /// A [`Guarded`] call running on an executor: sends its outcome to its [`Call`].
    pub(crate) struct Sending<F, R> {
        #[pin]
        guarded: Guarded<F>,
        tx: Option<oneshot::Sender<Outcome<R>>>,
    }
}

impl<F, R> Future for Sending<F, R>
where
    F: Future<Output = Result<R, BoxError>>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = self.project();
        let outcome = match this.guarded.poll_outcome(cx) {
            Poll::Ready(outcome) => outcome,
            Poll::Pending => return Poll::Pending,
        };
        if let Some(tx) = this.tx.take() {
            if let Err(unwanted) = tx.send(outcome) {
                // The call was abandoned; its value (or error) is dropped here, where a
                // panicking destructor cannot escape into the executor.
                let _ = catch_unwind(AssertUnwindSafe(move || drop(unwanted)));
            }
        }
        Poll::Ready(())
    }
}

/// The message of a caught panic. The payload is dropped inside `catch_unwind` too: a payload
/// whose own destructor panics must not escape either.
fn contain(payload: Box<dyn std::any::Any + Send>) -> String {
    let message = panic_message(&*payload);
    let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
    message
}

fn timer_failed(payload: Box<dyn std::any::Any + Send>) -> AggregateError {
    AggregateError::Timer {
        message: contain(payload),
    }
}

/// Cancels a context when dropped: the fan-out's `defer cancel()`.
struct CancelOnDrop(CancelHandle);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Aborts a spawned task when dropped: an `AbortHandle` alone does nothing when dropped.
struct AbortOnDrop(Option<AbortHandle>);

impl AbortOnDrop {
    fn new(handle: AbortHandle) -> AbortOnDrop {
        AbortOnDrop(Some(handle))
    }

    /// Drops the guard without aborting.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = &self.0 {
            handle.abort();
        }
    }
}

/// An error and its sources, as `outer: inner: ...`, for a log record.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
