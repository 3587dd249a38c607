//! One call as it runs: its [`Cell`] (what its handle, its task and its group share) and its
//! [`Task`] (the future handed to the executor, or polled by the group): the service is made
//! with the call's context on the first poll, polled with its panics caught, cut off at the
//! call's own deadline, and its outcome reported to the handle and, for the failure of a
//! required call, to the group.
//!
//! Everything a call needs lives in one allocation (the cell) besides the task itself: no
//! channel, no separate abort handle. A task is cancelled by setting the cell's `aborted` flag
//! and waking it (spawned), or by dropping it (local).

use std::borrow::Cow;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use log::Level;
use log::kv::Value;
use pin_project_lite::pin_project;

use crate::context::{CancelHandle, Context};
use crate::error::{BoxError, Error, panic_message};
use crate::executor::Executor;
use crate::observer::{CallFinished, CallStarted, Outcome};
use crate::records::{chain, millis};
use crate::state::Shared;
use crate::sync::lock;
use crate::timer::Timer;

/// The message of a call that never got to run because its group had finished.
pub(crate) const GROUP_FINISHED: &str = "the group finished before this call answered, so the call was cancelled: await calls inside `run`";

/// How far a call has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Made, waiting for the group to launch it (for a slot, under a limit).
    Registered,
    /// Handed to the executor, which has not polled it yet.
    Launched,
    /// Its service was called.
    Running,
    /// Its outcome is known (or it was cancelled).
    Done,
}

/// A call's own settings, fixed when it is launched.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Settings {
    pub(crate) timeout: Option<Duration>,
    pub(crate) optional: bool,
}

/// What a call's handle, its task and its group share. `Mk` makes the service's future.
pub(crate) struct Cell<V, Mk> {
    shared: Arc<Shared>,
    index: usize,
    name: Cow<'static, str>,
    /// Set when the call is no longer wanted: its task drops the service at its next poll.
    aborted: AtomicBool,
    /// The spawned task's waker, to wake it when it is aborted.
    task_waker: AtomicWaker,
    state: Mutex<State<V, Mk>>,
}

struct State<V, Mk> {
    make: Option<Mk>,
    settings: Settings,
    phase: Phase,
    outcome: Option<Result<V, Error>>,
    /// The handle's waker.
    waker: Option<Waker>,
}

/// The handle's view of a call: [`Call`](crate::Call) holds one.
pub(crate) trait Slot<V>: Send + Sync {
    fn name(&self) -> &str;
    fn shared(&self) -> &Shared;
    fn index(&self) -> usize;
    /// Changes the settings; false if the call has already been launched.
    fn configure(&self, change: &mut dyn FnMut(&mut Settings)) -> bool;
    /// The outcome, once; later polls get a misuse error.
    fn poll_outcome(&self, cx: &mut TaskContext<'_>) -> Poll<Result<V, Error>>;
    /// The handle was dropped: the call is no longer wanted.
    fn abort(&self);
}

/// The group's view of a call.
pub(crate) trait Entry<E, T>: Send + Sync {
    fn name(&self) -> &str;
    fn phase(&self) -> Phase;
    /// Starts the call: hands its task to the executor, or returns it to be polled locally
    /// when the executor hands it back. `None` also when the call was dropped before.
    fn launch(self: Arc<Self>, executor: &E, timer: &T) -> Option<Local>;
    /// Cancels the call: a spawned task drops its service at its next poll (it is woken for
    /// it); a call not launched yet ends with `error`.
    fn abort(&self, error: &Error);
}

/// A call polled by its group rather than by an executor.
pub(crate) struct Local {
    pub(crate) task: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Marks the call ready in the group.
    pub(crate) waker: Waker,
}

impl<V, Mk> Cell<V, Mk> {
    pub(crate) fn new(
        shared: Arc<Shared>,
        index: usize,
        name: Cow<'static, str>,
        make: Mk,
    ) -> Cell<V, Mk> {
        Cell {
            shared,
            index,
            name,
            aborted: AtomicBool::new(false),
            task_waker: AtomicWaker::new(),
            state: Mutex::new(State {
                make: Some(make),
                settings: Settings::default(),
                phase: Phase::Registered,
                outcome: None,
                waker: None,
            }),
        }
    }

    /// Ends a call that was never launched with `error`.
    pub(crate) fn refuse(&self, error: Error) {
        let (waker, make) = {
            let mut state = lock(&self.state);
            if state.phase != Phase::Registered {
                return;
            }
            state.phase = Phase::Done;
            state.outcome = Some(Err(error));
            (state.waker.take(), state.make.take())
        };
        drop(make); // the caller's closure, dropped outside the lock
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Records the outcome of a launched call, once: wakes its handle, hands the failure of a
    /// required call to the group, frees its slot, logs it and tells the observer.
    fn finish(&self, result: Result<V, Error>, elapsed: Duration, cancelled: bool) {
        let (waker, optional, failure, started, make) = {
            let mut state = lock(&self.state);
            if state.phase == Phase::Done {
                return;
            }
            let started = state.phase == Phase::Running;
            state.phase = Phase::Done;
            let optional = state.settings.optional;
            let failure = match &result {
                Err(error) if !cancelled => Some(error.clone()),
                _ => None,
            };
            state.outcome = Some(result);
            (
                state.waker.take(),
                optional,
                failure,
                started,
                state.make.take(),
            )
        };
        drop(make); // never called: the task was dropped before its first poll
        if let Some(error) = &failure {
            if !optional {
                self.shared.fail(error.clone());
            }
        }
        if let Some(waker) = waker {
            waker.wake();
        }
        self.shared.finished();
        if started {
            self.report(failure.as_ref(), elapsed, optional, cancelled);
        }
    }

    /// The record and the event of a call that started and finished.
    fn report(&self, error: Option<&Error>, elapsed: Duration, optional: bool, cancelled: bool) {
        let shared = &self.shared;
        let records = &shared.records;
        let name = &*self.name;
        match error {
            _ if cancelled => {
                if records.enabled(Level::Debug) {
                    let keys = [
                        ("service", Value::from(name)),
                        ("elapsed_ms", Value::from(millis(elapsed))),
                    ];
                    records.write(Level::Debug, "fetch cancelled", &keys);
                }
            }
            None => {
                if records.enabled(Level::Debug) {
                    let keys = [
                        ("service", Value::from(name)),
                        ("elapsed_ms", Value::from(millis(elapsed))),
                    ];
                    records.write(Level::Debug, "fetch finished", &keys);
                }
            }
            Some(error) => {
                let level = if optional { Level::Info } else { Level::Debug };
                if records.enabled(level) {
                    let text = chain(error);
                    let keys = [
                        ("service", Value::from(name)),
                        ("elapsed_ms", Value::from(millis(elapsed))),
                        ("error", Value::from(text.as_str())),
                    ];
                    let message = if optional {
                        "optional fetch failed, going on without it"
                    } else {
                        "fetch failed"
                    };
                    records.write(level, message, &keys);
                }
            }
        }
        if let Some(observer) = &shared.observer {
            let outcome = match error {
                _ if cancelled => Outcome::Cancelled,
                None => Outcome::Succeeded,
                Some(error) => Outcome::of(error),
            };
            observer.call_finished(&CallFinished {
                group: shared.id,
                name,
                elapsed,
                outcome,
                optional,
                error: error.filter(|_| !cancelled),
            });
        }
    }
}

impl<V, Mk> Slot<V> for Cell<V, Mk>
where
    V: Send + 'static,
    Mk: Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn shared(&self) -> &Shared {
        &self.shared
    }

    fn index(&self) -> usize {
        self.index
    }

    fn configure(&self, change: &mut dyn FnMut(&mut Settings)) -> bool {
        let mut state = lock(&self.state);
        if state.phase != Phase::Registered {
            return false;
        }
        change(&mut state.settings);
        true
    }

    fn poll_outcome(&self, cx: &mut TaskContext<'_>) -> Poll<Result<V, Error>> {
        let mut state = lock(&self.state);
        if let Some(outcome) = state.outcome.take() {
            return Poll::Ready(outcome);
        }
        if state.phase == Phase::Done {
            return Poll::Ready(Err(Error::Misuse {
                message: "a call was polled again after it had completed",
            }));
        }
        match &mut state.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            None => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        let make = {
            let mut state = lock(&self.state);
            if state.phase == Phase::Registered {
                state.phase = Phase::Done;
            }
            if state.phase == Phase::Done {
                state.make.take()
            } else {
                None
            }
        };
        drop(make);
        self.task_waker.wake();
    }
}

impl<V, Mk, Fut, Er, E, T> Entry<E, T> for Cell<V, Mk>
where
    Mk: FnOnce(Context) -> Fut + Send + 'static,
    Fut: Future<Output = Result<V, Er>> + Send + 'static,
    Er: Into<BoxError>,
    V: Send + 'static,
    E: Executor,
    T: Timer,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn phase(&self) -> Phase {
        lock(&self.state).phase
    }

    fn launch(self: Arc<Self>, executor: &E, timer: &T) -> Option<Local> {
        let settings = {
            let mut state = lock(&self.state);
            if state.phase != Phase::Registered || self.aborted.load(Ordering::Acquire) {
                return None;
            }
            state.phase = Phase::Launched;
            state.settings
        };
        self.shared.launched();
        let task = Task {
            cell: self.clone(),
            timer: timer.clone(),
            settings,
            local: false,
            done: false,
            started: None,
            own_deadline: None,
            cancel: None,
            fut: None,
            sleep: None,
        };
        let mut task = executor.spawn(task)?;
        task.local = true;
        Some(Local {
            task: Box::pin(task),
            waker: Waker::from(self),
        })
    }

    fn abort(&self, error: &Error) {
        self.refuse(error.clone());
        Slot::abort(self);
    }
}

impl<V, Mk> Wake for Cell<V, Mk>
where
    V: Send + 'static,
    Mk: Send + 'static,
{
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.wake_local(self.index);
    }
}

pin_project! {
    /// The future that runs one call, spawned on the executor or polled by the group.
    #[project = TaskProj]
    pub(crate) struct Task<V, Mk, Fut, T: Timer> {
        cell: Arc<Cell<V, Mk>>,
        timer: T,
        settings: Settings,
        // Polled by the group: it is cancelled by being dropped, so it keeps no waker.
        local: bool,
        done: bool,
        // When the service was called, if the call times itself.
        started: Option<Instant>,
        // The call's own deadline, when it is earlier than the group's.
        own_deadline: Option<Instant>,
        // Cancels the call's own context (made only for a call with its own deadline).
        cancel: Option<CancelHandle>,
        #[pin]
        fut: Option<Fut>,
        #[pin]
        sleep: Option<T::Sleep>,
    }

    impl<V, Mk, Fut, T: Timer> PinnedDrop for Task<V, Mk, Fut, T> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // A panic in the service's or the sleep's destructor must not unwind into the
            // executor (or into a caller dropping the group): there is nobody to report it to.
            let (mut fut, mut sleep) = (this.fut, this.sleep);
            let _ = catch_unwind(AssertUnwindSafe(|| fut.set(None)));
            let _ = catch_unwind(AssertUnwindSafe(|| sleep.set(None)));
            if let Some(cancel) = this.cancel.take() {
                cancel.cancel();
            }
            if !*this.done {
                // Dropped unfinished: cancelled by failfast, or lost by the executor.
                let cell = &**this.cell;
                let aborted = cell.aborted.load(Ordering::Acquire);
                let elapsed = elapsed(this.started, &*this.timer);
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    let error = if aborted {
                        Error::Misuse { message: GROUP_FINISHED }
                    } else {
                        Error::Dropped { service: cell.name.clone() }
                    };
                    cell.finish(Err(error), elapsed, aborted);
                }));
            }
        }
    }
}

/// The time since `started`, if the call times itself.
fn elapsed<T: Timer>(started: &Option<Instant>, timer: &T) -> Duration {
    match started {
        Some(started) => timer.now().saturating_duration_since(*started),
        None => Duration::ZERO,
    }
}

impl<V, Mk, Fut, Er, T> Future for Task<V, Mk, Fut, T>
where
    Mk: FnOnce(Context) -> Fut,
    Fut: Future<Output = Result<V, Er>>,
    Er: Into<BoxError>,
    T: Timer,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(());
        }
        let cell = &**this.cell;
        if cell.aborted.load(Ordering::Acquire) {
            // Cancelled: the drop (right after this returns) drops the service, catching its
            // panics, and reports the call as cancelled.
            return Poll::Ready(());
        }
        if !*this.local {
            cell.task_waker.register(cx.waker());
        }

        if this.fut.is_none() {
            // First poll: make the service's future with the call's context.
            let make = {
                let mut state = lock(&cell.state);
                match state.make.take() {
                    Some(make) if state.phase == Phase::Launched => {
                        state.phase = Phase::Running;
                        make
                    }
                    _ => return Poll::Ready(()), // ended meanwhile
                }
            };
            let shared = &*cell.shared;
            let timeout = this.settings.timeout;
            let now = (shared.timing || timeout.is_some()).then(|| this.timer.now());
            *this.started = now;
            let mut ctx = shared.ctx.clone();
            if let (Some(now), Some(timeout)) = (now, timeout) {
                let own = now.checked_add(timeout);
                if let Some(own) = own.filter(|&own| shared.deadline.is_none_or(|d| own < d)) {
                    let (own_ctx, cancel) = ctx.with_deadline(own).with_cancel();
                    ctx = own_ctx;
                    *this.own_deadline = Some(own);
                    *this.cancel = Some(cancel);
                }
            }
            if let Some(observer) = &shared.observer {
                observer.call_started(&CallStarted {
                    group: shared.id,
                    name: &cell.name,
                });
            }
            if this.own_deadline.is_some_and(|own| Some(own) <= now) {
                // A zero timeout: the service is not called at all.
                return this.finish(Err(timed_out(cell, timeout)));
            }
            match catch_unwind(AssertUnwindSafe(|| make(ctx))) {
                Ok(fut) => this.fut.set(Some(fut)),
                Err(payload) => return this.finish(Err(panicked(cell, payload))),
            }
        }

        let Some(fut) = this.fut.as_mut().as_pin_mut() else {
            return Poll::Ready(());
        };
        let result = match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Ready(Ok(value))) => Ok(value),
            Ok(Poll::Ready(Err(error))) => Err(Error::Service {
                service: cell.name.clone(),
                source: Arc::from(error.into()),
            }),
            Err(payload) => Err(panicked(cell, payload)),
            Ok(Poll::Pending) => match this.poll_own_deadline(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(error) => Err(error),
            },
        };
        this.finish(result)
    }
}

impl<V, Mk, Fut, T: Timer> TaskProj<'_, V, Mk, Fut, T> {
    /// Polls the call's own deadline, creating its sleep the first time: a call that answers
    /// at its first poll needs no timer.
    fn poll_own_deadline(&mut self, cx: &mut TaskContext<'_>) -> Poll<Error> {
        let Some(own) = *self.own_deadline else {
            return Poll::Pending;
        };
        let cell = &**self.cell;
        if self.sleep.is_none() {
            let timer = &*self.timer;
            match catch_unwind(AssertUnwindSafe(|| timer.sleep_until(own))) {
                Ok(sleep) => self.sleep.set(Some(sleep)),
                Err(payload) => return Poll::Ready(timer_failed(payload)),
            }
        }
        let Some(sleep) = self.sleep.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        match catch_unwind(AssertUnwindSafe(|| sleep.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(())) => Poll::Ready(timed_out(cell, self.settings.timeout)),
            Err(payload) => Poll::Ready(timer_failed(payload)),
        }
    }

    /// Drops the service (catching a panic in its destructor), then records the outcome.
    fn finish(&mut self, mut result: Result<V, Error>) -> Poll<()> {
        let cell = &**self.cell;
        let mut fut = self.fut.as_mut();
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| fut.set(None))) {
            result = Err(panicked(cell, payload));
        }
        let mut sleep = self.sleep.as_mut();
        let _ = catch_unwind(AssertUnwindSafe(|| sleep.set(None)));
        if let Some(cancel) = self.cancel.take() {
            cancel.cancel();
        }
        *self.done = true;
        let elapsed = elapsed(self.started, &*self.timer);
        cell.finish(result, elapsed, false);
        Poll::Ready(())
    }
}

fn timed_out<V, Mk>(cell: &Cell<V, Mk>, timeout: Option<Duration>) -> Error {
    Error::TimedOut {
        service: cell.name.clone(),
        timeout: timeout.unwrap_or_default(),
    }
}

fn panicked<V, Mk>(cell: &Cell<V, Mk>, payload: Box<dyn std::any::Any + Send>) -> Error {
    Error::Panicked {
        service: cell.name.clone(),
        message: contain(payload),
    }
}

/// The error of a timer that panicked.
pub(crate) fn timer_failed(payload: Box<dyn std::any::Any + Send>) -> Error {
    Error::Timer {
        message: contain(payload),
    }
}

/// The message of a caught panic. The payload is dropped inside `catch_unwind` too: a payload
/// whose own destructor panics must not escape either.
fn contain(payload: Box<dyn std::any::Any + Send>) -> String {
    let message = panic_message(&*payload);
    let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
    message
}
