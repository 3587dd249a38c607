//! [`Group::run`] and [`Run`], the future that drives a group to its end and decides how it
//! ends.

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use log::Level;
use log::kv::Value;
use pin_project_lite::pin_project;

use crate::attempt::timer_failed;
use crate::context::Cancelled;
use crate::error::Error;
use crate::executor::Executor;
use crate::group::Group;
use crate::observer::GroupFinished;
use crate::records::{chain, millis};
use crate::registry::ALREADY_RAN;
use crate::timer::Timer;

/// How late a deadline's sleep may fire before the group concludes that its timer is not
/// being driven. Real timers fire a millisecond or so late (tokio rounds up to its 1 ms tick),
/// a few milliseconds on a loaded machine; far beyond this, the timer is not running at all.
const LATE: Duration = Duration::from_millis(25);

const POLLED_AFTER_DONE: &str = "a group's `run` was polled again after it had completed";

impl<E: Executor, T: Timer> Group<'_, E, T> {
    /// Drives the group: launches its calls, watches them, and returns `join`'s result, unless
    /// something ends the group first. Go's `g.Wait()`, except that it returns at the first
    /// failure instead of waiting for every call.
    ///
    /// `join` is any future of `Result<R, Error>` over the group's calls: `try_join`,
    /// `try_join3`, `try_join!`, `try_join_all`, or an `async` block. The group does not depend
    /// on how it polls them: every call runs from the start, and the first failure of a
    /// required call ends `run` at once, even when the join would look at that call last. The
    /// first of these ends the group:
    ///
    /// * `join` completes: its result;
    /// * a required call fails (its service errs or panics, it times out, or its task is lost):
    ///   that error, [`Error::Service`], [`Error::Panicked`], [`Error::TimedOut`] or
    ///   [`Error::Dropped`], whatever the join makes of it;
    /// * the caller's context is cancelled: [`Error::Cancelled`];
    /// * the group's deadline passes: [`Error::DeadlineExceeded`].
    ///
    /// When `run` returns, however it returns, the calls' context is cancelled and every call
    /// still running is cancelled: its future is dropped (aborted on its executor, if it was
    /// spawned), not left to finish.
    ///
    /// **Ties.** When several of these are seen in the same poll (on
    /// [`Inline`](crate::executor::Inline), everything due at the same instant is), a failure
    /// wins, then the join's result, then the cancellation, then the deadline (but a caller's
    /// context whose own deadline passed before it was cancelled ends the group with
    /// `DeadlineExceeded`, as its [`err`](crate::Context::err) says). Of two failures seen in
    /// one poll, the call made first wins; spawned calls report from their own tasks,
    /// so the first failure to arrive wins. A service error or a call's own timeout seen once
    /// the caller has cancelled or the deadline has passed is reported as `Cancelled` or
    /// `DeadlineExceeded`: a service that honours its context fails *because* of them, and the
    /// cause is what the caller needs. Panics are never rewritten.
    ///
    /// **A timer that does not fire.** If the deadline passed more than 25 ms before the group
    /// ends and its timer has still not fired (a tokio timer on a runtime nobody drives, say),
    /// the group ends with `DeadlineExceeded` even if the join succeeded, and logs a warning
    /// naming the timer. If the deadline passes while spawned calls were never polled by their
    /// executor (a smol `Executor` nobody runs, say), the warning names the executor.
    ///
    /// # Errors
    ///
    /// The errors above, and:
    /// * [`Error::Cancelled`] or [`Error::DeadlineExceeded`] at once, starting nothing, when
    ///   the caller's context was already cancelled or past its deadline;
    /// * [`Error::Timer`] when the timer panics (tokio's does once its runtime has shut down);
    /// * [`Error::Misuse`] when the group has already run.
    ///
    /// # Panics
    ///
    /// Panics of the services (making, polling or dropping them) and of the timer are contained
    /// (see above). A panic in the executor's own `spawn`, in a logger or in an observer
    /// unwinds out of `run`; the calls already started are cancelled as it unwinds.
    ///
    /// # Cancellation
    ///
    /// Dropping the returned future cancels every call of the group, spawned ones too, and the
    /// calls' context. Nothing keeps running.
    ///
    /// # Examples
    ///
    /// Fail fast does not wait for the join: `try_join_all` over many calls returns results in
    /// input order, yet the failure of the last call ends the group at once.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use failfast::{BoxError, Context, Error, FailFast};
    /// use futures::future::try_join_all;
    ///
    /// let ff = FailFast::builder().build()?;
    /// # futures::executor::block_on(async {
    /// let group = ff.group(&Context::background());
    /// let start = Instant::now();
    /// let calls = (0..100).map(|i| {
    ///     group.call(format!("shard-{i}"), move |_ctx| async move {
    ///         if i == 99 {
    ///             return Err::<(), BoxError>("shard down".into());
    ///         }
    ///         futures_timer::Delay::new(Duration::from_secs(10)).await;
    ///         Ok(())
    ///     })
    /// });
    /// let err = group.run(try_join_all(calls)).await.unwrap_err();
    /// assert_eq!(format!("{err:#}"), "shard-99 service failed: shard down");
    /// assert!(start.elapsed() < Duration::from_secs(5));
    /// # });
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    #[doc(alias = "Wait")]
    pub fn run<F, R>(&self, join: F) -> Run<'_, F, E, T>
    where
        F: Future<Output = Result<R, Error>>,
    {
        Run {
            group: self,
            join,
            sleep: None,
            cancelled: None,
            stage: RunStage::New,
            fired: false,
        }
    }

    /// Starts `run`: refuses a second run, and a caller's context already cancelled or past
    /// its deadline.
    fn begin(&self) -> Result<(), Error> {
        if !self.registry.begin() {
            return Err(Error::Misuse {
                message: ALREADY_RAN,
            });
        }
        let calls = self.registry.len();
        self.shared.set_in_run(true);
        let shared = &*self.shared;
        let records = &shared.records;
        // Refused before anything started: it spent no time on the calls.
        let elapsed = Duration::ZERO;
        let refused = if let Some(error) = shared.ended_by_caller(elapsed) {
            let message = match error {
                Error::DeadlineExceeded { .. } => {
                    "the deadline had already passed, nothing started"
                }
                _ => "the caller's context was already cancelled, nothing started",
            };
            Some((error, message))
        } else if shared.expired(shared.started) {
            // Past when the group was made: the caller's deadline. (The group's own timeout
            // is never zero; passing it since, calls that answer at once still win the tie.)
            Some((
                Error::DeadlineExceeded { elapsed },
                "the deadline had already passed, nothing started",
            ))
        } else {
            None
        };
        if let Some((error, message)) = refused {
            records.write(Level::Warn, message, &[]);
            self.observe_end(elapsed, Some(&error));
            self.close();
            return Err(error);
        }
        if records.enabled(Level::Debug) {
            let calls = ("calls", Value::from(calls));
            match shared.deadline {
                Some(deadline) => {
                    let now = self.ff.timer.now(); // read only for this record
                    let budget = millis(deadline.saturating_duration_since(now));
                    let keys = [calls, ("budget_ms", Value::from(budget))];
                    records.write(Level::Debug, "group started", &keys);
                }
                None => records.write(Level::Debug, "group started", &[calls]),
            }
        }
        Ok(())
    }

    /// Decides how the group ends, reports it and closes the group.
    fn settle<R>(
        &self,
        result: Result<R, Error>,
        mut sleep: Pin<&mut Option<T::Sleep>>,
        fired: bool,
        cx: &mut TaskContext<'_>,
    ) -> Result<R, Error> {
        let shared = &*self.shared;
        let records = &shared.records;
        let now = self.ff.timer.now();
        // Go's `defer cancel()`.
        shared.cancel();
        let elapsed = shared.elapsed(now);
        let mut result = match result {
            Err(error) => Err(shared.caused_by(&error, now).unwrap_or(error)),
            ok => ok,
        };

        // A deadline long past whose sleep has still not fired: the timer is not being driven.
        if let (Some(deadline), Some(sleep), false) =
            (shared.deadline, sleep.as_mut().as_pin_mut(), fired)
        {
            let late = now.saturating_duration_since(deadline);
            if late >= LATE
                && !matches!(
                    catch_unwind(AssertUnwindSafe(|| sleep.poll(cx))),
                    Ok(Poll::Ready(()))
                )
            {
                let keys = [("late_ms", Value::from(millis(late)))];
                records.write(
                    Level::Warn,
                    "the deadline passed but the timer never fired: is its runtime driven? (a tokio timer needs a multi-thread runtime, or a current-thread one that some thread is blocking on)",
                    &keys,
                );
                if result.is_ok() {
                    result = Err(Error::DeadlineExceeded { elapsed });
                }
            }
        }

        if let Err(error) = &result {
            if matches!(error, Error::DeadlineExceeded { .. }) {
                self.warn_unpolled();
            }
            if records.enabled(Level::Warn) {
                let text = chain(error);
                let cancelled = self.registry.names_in_flight();
                let mut keys = vec![
                    ("error", Value::from(text.as_str())),
                    ("elapsed_ms", Value::from(millis(elapsed))),
                ];
                if !cancelled.is_empty() {
                    keys.push(("cancelled", Value::from(cancelled.as_str())));
                }
                records.write(
                    Level::Warn,
                    "group failed, cancelling the calls still in flight",
                    &keys,
                );
            }
        } else if records.enabled(Level::Debug) {
            let keys = [("elapsed_ms", Value::from(millis(elapsed)))];
            records.write(Level::Debug, "group finished", &keys);
        }
        // The deadline's sleep is freed now, before the calls' tasks are stopped, rather than
        // when the caller drops this future: some timers wake a thread of theirs to forget it.
        // A timer that panics in its destructor is contained, as its other panics are.
        let _ = catch_unwind(AssertUnwindSafe(|| sleep.set(None)));
        self.observe_end(elapsed, result.as_ref().err());
        self.close();
        result
    }

    /// Warns when spawned calls were never polled by their executor: a deadline exceeded
    /// because nothing ran them, not because they were slow.
    fn warn_unpolled(&self) {
        let records = &self.shared.records;
        if !records.enabled(Level::Warn) {
            return;
        }
        let unpolled = self.registry.unpolled();
        if unpolled > 0 {
            let keys = [("unpolled", Value::from(unpolled))];
            records.write(
                Level::Warn,
                "calls handed to the executor were never polled: is it running? (a smol Executor must be run, a tokio current-thread runtime blocked on)",
                &keys,
            );
        }
    }

    fn observe_end(&self, elapsed: Duration, error: Option<&Error>) {
        let outcome = match error {
            None => "succeeded",
            Some(Error::Cancelled { .. }) => "cancelled",
            Some(Error::DeadlineExceeded { .. }) => "deadline_exceeded",
            Some(_) => "failed",
        };
        let source = error.map(|error| error as &(dyn std::error::Error + 'static));
        self.shared.span.finish(outcome, Some(elapsed), source);
        if let Some(observer) = &self.shared.observer {
            let calls = self.registry.len();
            observer.group_finished(&GroupFinished {
                group: self.shared.id,
                elapsed,
                calls,
                error,
            });
        }
    }

    /// `run` was dropped before it finished.
    fn walked_away(&self) {
        let records = &self.shared.records;
        let debug = records.enabled(Level::Debug);
        if debug || self.shared.observer.is_some() || self.shared.span.enabled() {
            let elapsed = self.shared.elapsed(self.ff.timer.now());
            if debug {
                let keys = [("elapsed_ms", Value::from(millis(elapsed)))];
                records.write(
                    Level::Debug,
                    "group dropped by the caller, cancelling the calls in flight",
                    &keys,
                );
            }
            self.observe_end(
                elapsed,
                Some(&Error::Cancelled {
                    elapsed,
                    cause: None,
                }),
            );
        }
        self.close();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunStage {
    New,
    Running,
    Done,
}

pin_project! {
    /// The future returned by [`Group::run`].
    ///
    /// # Cancellation
    ///
    /// Dropping it before it completes cancels every call of the group and the calls' context.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::{BoxError, Context, FailFast};
    /// use futures::FutureExt;
    ///
    /// let ff = FailFast::builder().build()?;
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let group = ff.group(&ctx);
    /// let slow = group.call("slow", |_ctx| async {
    ///     futures_timer::Delay::new(Duration::from_secs(10)).await;
    ///     Ok::<_, BoxError>(())
    /// });
    /// let mut run = Box::pin(group.run(slow));
    /// assert!((&mut run).now_or_never().is_none()); // started, pending
    /// cancel.cancel();
    /// assert!(futures::executor::block_on(run).unwrap_err().is_cancelled());
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    #[must_use = "futures do nothing unless you .await or poll them"]
    pub struct Run<'g, F, E, T>
    where
        E: Executor,
        T: Timer,
    {
        group: &'g Group<'g, E, T>,
        #[pin]
        join: F,
        #[pin]
        sleep: Option<T::Sleep>,
        cancelled: Option<Cancelled>,
        stage: RunStage,
        // The deadline's sleep completed.
        fired: bool,
    }

    impl<'g, F, E, T> PinnedDrop for Run<'g, F, E, T>
    where
        E: Executor,
        T: Timer,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if *this.stage == RunStage::Running {
                this.group.walked_away();
            }
        }
    }
}

impl<F, R, E, T> Future for Run<'_, F, E, T>
where
    F: Future<Output = Result<R, Error>>,
    E: Executor,
    T: Timer,
{
    type Output = Result<R, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let group = *this.group;
        let _entered = group.shared.span.enter();
        match *this.stage {
            RunStage::Done => {
                return Poll::Ready(Err(Error::Misuse {
                    message: POLLED_AFTER_DONE,
                }));
            }
            RunStage::New => {
                if let Err(error) = group.begin() {
                    *this.stage = RunStage::Done;
                    return Poll::Ready(Err(error));
                }
                *this.stage = RunStage::Running;
            }
            RunStage::Running => {}
        }
        let shared = &*group.shared;
        let mut decided = None;
        loop {
            let made = group.drive(cx);
            if let Some(failure) = shared.failure() {
                decided = Some(Err(failure));
                break;
            }
            if let Poll::Ready(result) = this.join.as_mut().poll(cx) {
                decided = Some(shared.failure().map_or(result, Err));
                break;
            }
            // Calls made while the join was polled are launched before waiting.
            if group.registry.len() == made {
                break;
            }
        }
        if decided.is_none() {
            decided = poll_end(group, this.cancelled, this.sleep.as_mut(), this.fired, cx);
        }
        match decided {
            None => Poll::Pending,
            Some(result) => {
                *this.stage = RunStage::Done;
                Poll::Ready(group.settle(result, this.sleep.as_mut(), *this.fired, cx))
            }
        }
    }
}

/// Whether the caller's cancellation (or its deadline, if that passed first) or the group's
/// deadline ends the group now, in that order. The deadline's sleep is created only once the
/// calls are pending: calls that answer at their first poll need no timer.
fn poll_end<R, E: Executor, T: Timer>(
    group: &Group<'_, E, T>,
    cancelled: &mut Option<Cancelled>,
    mut sleep: Pin<&mut Option<T::Sleep>>,
    fired: &mut bool,
    cx: &mut TaskContext<'_>,
) -> Option<Result<R, Error>> {
    let shared = &*group.shared;
    let timer = &group.ff.timer;
    let cancelled = cancelled.get_or_insert_with(|| shared.parent.cancelled());
    if shared.parent.is_cancelled() || Pin::new(cancelled).poll(cx).is_ready() {
        let elapsed = shared.elapsed(timer.now());
        return shared.ended_by_caller(elapsed).map(Err);
    }
    let deadline = shared.deadline?;
    if sleep.is_none() {
        match catch_unwind(AssertUnwindSafe(|| timer.sleep_until(deadline))) {
            Ok(new) => sleep.set(Some(new)),
            Err(payload) => return Some(Err(timer_failed(payload))),
        }
    }
    let sleep = sleep.as_pin_mut()?;
    match catch_unwind(AssertUnwindSafe(|| sleep.poll(cx))) {
        Ok(Poll::Pending) => None,
        Ok(Poll::Ready(())) => {
            *fired = true;
            let elapsed = shared.elapsed(timer.now());
            Some(Err(Error::DeadlineExceeded { elapsed }))
        }
        Err(payload) => Some(Err(timer_failed(payload))),
    }
}

impl<F, E, T> fmt::Debug for Run<'_, F, E, T>
where
    E: Executor + fmt::Debug,
    T: Timer + fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run")
            .field("group", &self.group)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}
