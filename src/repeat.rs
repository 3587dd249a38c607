//! Running an idempotent call's service: once, under a [`Retry`] policy (one attempt after
//! another), or under a [`Hedge`] policy (attempts overlapping). What the group sees as the
//! call's service.

use std::borrow::Cow;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::StreamExt;
use futures::future::{Either, select};
use futures::stream::FuturesUnordered;
use log::Level;
use log::kv::Value;

use crate::attempt::contain;
use crate::context::{Context, ContextError};
use crate::error::BoxError;
use crate::idempotent::Policy;
use crate::observer::{AttemptFinished, Outcome};
use crate::policy::hedge::Hedge;
use crate::policy::retry::{AttemptFailure, AttemptTimedOut, GaveUp, Jitter, StopReason};
use crate::records::{chain, millis};
use crate::state::Shared;
use crate::sync::lock;
use crate::trace::{Span, Traced, outcome_name, record_attempts, source};

/// Runs an idempotent call's service: once, under its retry policy, or hedged.
pub(crate) async fn attempts<V, Er, Fut, F>(
    ctx: Context,
    mut make: F,
    policy: Arc<Mutex<Policy>>,
    shared: Arc<Shared>,
    name: Cow<'static, str>,
) -> Result<V, BoxError>
where
    F: FnMut(Context) -> Fut,
    Fut: Future<Output = Result<V, Er>>,
    Er: Into<BoxError>,
{
    let (retry, hedge) = lock(&policy).start();
    if let Some(hedge) = hedge {
        return hedged(ctx, make, hedge, shared, name).await;
    }
    let Some(retry) = retry else {
        return make(ctx).await.map_err(Into::into);
    };
    let now = || ctx.now();
    let mut jitter = Jitter::new(retry.seed, now());
    if let Some(refused) = too_late_to_start(&ctx, retry.min_time_left, now()) {
        // Not even a first attempt: refused as a retry is for lack of time (an event with no
        // error and `stopped` set, as for a hedge the budget refuses).
        observe(
            &shared,
            AttemptFinished {
                stopped: Some(StopReason::Deadline),
                ..event(&shared, &name, 1, Duration::ZERO)
            },
        );
        report(
            &shared,
            &name,
            0,
            &refused,
            Next::Stop(StopReason::Deadline),
        );
        return Err(Box::new(GaveUp {
            attempts: 0,
            reason: StopReason::Deadline,
            last: refused,
        }));
    }
    if let Some(budget) = &retry.budget {
        budget.deposit(now());
    }
    let mut flying = InFlight::new(&shared, &name, &ctx, false);
    let mut attempt = 1;
    loop {
        let started = now();
        let (attempt_ctx, cancel) = match retry.attempt_timeout {
            Some(timeout) => ctx.with_cancel_timeout(timeout),
            None => ctx.with_cancel(),
        };
        let (outcome, span) = {
            let _cancel = cancel.drop_guard(); // the attempt's own work ends with it
            record_attempts(attempt);
            let span = Span::attempt(shared.id, &name, attempt, false);
            flying.add(attempt, started, span.handle());
            let service = {
                let _entered = span.enter();
                make(attempt_ctx.clone())
            };
            let service = std::pin::pin!(Traced::new(service, span));
            match retry.attempt_timeout {
                None => {
                    // Only the call's deadline: the group enforces it (by dropping the call).
                    let (result, span) = service.await;
                    (result.map_err(Into::into), span)
                }
                Some(timeout) => match select(service, attempt_ctx.done()).await {
                    Either::Left(((result, span), _)) => (result.map_err(Into::into), span),
                    Either::Right(((), service)) => {
                        let cut: BoxError = Box::new(AttemptTimedOut(timeout));
                        (Err(cut), service.take_span())
                    }
                },
            }
        };
        flying.remove(attempt); // it ended: reported below
        if span.enabled() {
            // Cut by the call's end (the group's deadline, its cancellation): cancelled, as
            // the call's own records say; by its own timeout: timed out.
            let traced = match &outcome {
                Ok(_) => Outcome::Succeeded,
                Err(_) if ctx.is_done() => Outcome::Cancelled,
                Err(_) if attempt_ctx.err() == Some(ContextError::DeadlineExceeded) => {
                    Outcome::TimedOut
                }
                Err(_) => Outcome::Failed,
            };
            let spent = now().saturating_duration_since(started);
            span.end(
                outcome_name(traced),
                Some(spent),
                outcome.as_ref().err().and_then(source),
            );
        }
        let error = match outcome {
            Ok(value) => {
                if shared.observer.is_some() {
                    observe(&shared, event(&shared, &name, attempt, now() - started));
                }
                if attempt > 1 {
                    note(&shared, &name, attempt, "retried call answered");
                }
                return Ok(value);
            }
            Err(error) => error,
        };
        if ctx.is_done() {
            // Cut short by the group (its deadline, its cancellation): not the call's own
            // failure, and not worth another attempt.
            let ran = now().saturating_duration_since(started);
            observe_cut(&shared, &name, attempt, false, ran, Some(&error));
            return Err(error);
        }
        let cut = attempt_ctx.err() == Some(ContextError::DeadlineExceeded);
        let failure = match (cut, retry.attempt_timeout) {
            (true, Some(timeout)) => AttemptFailure::TimedOut(timeout),
            _ => AttemptFailure::Error(&*error),
        };
        let elapsed = now().saturating_duration_since(started);
        let stop = if attempt >= retry.attempts.get() {
            Some(StopReason::Exhausted)
        } else if !retry.retryable(&failure) {
            Some(StopReason::NotRetryable)
        } else {
            None
        };
        let backoff = retry.backoff(attempt, jitter.next());
        let resume = now().checked_add(backoff);
        let stop = stop.or_else(|| {
            (!time_to_start(&ctx, resume, retry.min_time_left)).then_some(StopReason::Deadline)
        });
        let stop = stop.or_else(|| match &retry.budget {
            Some(budget) if !budget.withdraw(now()) => Some(StopReason::Budget),
            _ => None,
        });
        if let Some(reason) = stop {
            observe(
                &shared,
                AttemptFinished {
                    error: Some(&*error),
                    stopped: Some(reason),
                    ..event(&shared, &name, attempt, elapsed)
                },
            );
            report(&shared, &name, attempt, &error, Next::Stop(reason));
            return Err(Box::new(GaveUp {
                attempts: attempt,
                reason,
                last: error,
            }));
        }
        observe(
            &shared,
            AttemptFinished {
                error: Some(&*error),
                retry_after: Some(backoff),
                ..event(&shared, &name, attempt, elapsed)
            },
        );
        report(&shared, &name, attempt, &error, Next::Retry(backoff));
        if let (Some(resume), Some(clock), false) = (resume, ctx.clock(), backoff.is_zero()) {
            let mut sleep = clock.sleep_until(resume);
            let mut done = ctx.done();
            if let Either::Right(_) = select(&mut sleep, &mut done).await {
                return Err(error); // the group ended during the backoff
            }
        }
        attempt += 1;
    }
}

/// Whether an attempt starting at `start` (`None`: past what an `Instant` holds) would have at
/// least `min_time_left` before the call's deadline. Always, with no deadline.
fn time_to_start(ctx: &Context, start: Option<Instant>, min_time_left: Duration) -> bool {
    let Some(deadline) = ctx.deadline() else {
        return true;
    };
    start
        .and_then(|start| start.checked_add(min_time_left))
        .is_some_and(|ready| ready < deadline)
}

/// The error of a first attempt that may not start at `now`: less than a minimum of time left
/// (a minimum of zero leaves the deadline to the group). `None` if it may.
fn too_late_to_start(ctx: &Context, min_time_left: Duration, now: Instant) -> Option<BoxError> {
    let refused = !min_time_left.is_zero() && !time_to_start(ctx, Some(now), min_time_left);
    refused.then(|| Box::new(NoTimeToStart(min_time_left)) as BoxError)
}

/// The error of a call under a retry policy whose first attempt did not start.
#[derive(Debug, thiserror::Error)]
#[error("no attempt started (the minimum time left is {0:.1?})")]
struct NoTimeToStart(Duration);

/// Tells the observer that attempt `attempt` was cut short after `ran`: another attempt won,
/// or the group ended the call (its deadline, its cancellation, another call's failure); with
/// the error it ended with, if it ended before it was dropped.
fn observe_cut(
    shared: &Shared,
    name: &str,
    attempt: u32,
    hedge: bool,
    ran: Duration,
    error: Option<&BoxError>,
) {
    observe(
        shared,
        AttemptFinished {
            error: error.map(|error| &**error as _),
            hedge,
            cancelled: true,
            ..event(shared, name, attempt, ran)
        },
    );
}

/// Tells the observer about one attempt, if there is an observer.
fn observe(shared: &Shared, event: AttemptFinished<'_>) {
    if let Some(observer) = &shared.observer {
        observer.attempt_finished(&event);
    }
}

/// The attempts of one call still running: when the call's future is dropped with some (the
/// group ended it: its deadline, its cancellation, another call's failure), each is reported
/// cancelled, with the time it ran, to the observer and on its span.
struct InFlight<'a> {
    shared: &'a Shared,
    name: &'a str,
    ctx: &'a Context,
    /// Whether the call hedges: its attempts after the first are hedges.
    hedged: bool,
    /// Each attempt's number, start and span.
    attempts: Vec<(u32, Instant, Span)>,
}

impl<'a> InFlight<'a> {
    fn new(shared: &'a Shared, name: &'a str, ctx: &'a Context, hedged: bool) -> InFlight<'a> {
        InFlight {
            shared,
            name,
            ctx,
            hedged,
            attempts: Vec::new(),
        }
    }

    fn add(&mut self, attempt: u32, started: Instant, span: Span) {
        self.attempts.push((attempt, started, span));
    }

    /// Forgets attempt `n`: it ended, and was reported.
    fn remove(&mut self, n: u32) {
        self.attempts.retain(|(attempt, _, _)| *attempt != n);
    }

    /// Reports every attempt still here as cancelled, with the time it ran, and forgets it.
    fn cancel_all(&mut self) {
        if self.attempts.is_empty() {
            return;
        }
        let now = self.ctx.now();
        for (attempt, began, span) in self.attempts.drain(..) {
            let ran = now.saturating_duration_since(began);
            span.finish(outcome_name(Outcome::Cancelled), Some(ran), None);
            let hedge = self.hedged && attempt > 1;
            observe_cut(self.shared, self.name, attempt, hedge, ran, None);
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A retried attempt (or a factory) panicked: the panic ends the call, and the
            // call's own event reports it; no observer is called while it unwinds.
            return;
        }
        // An observer that panics here must not turn the group's cancellation into a panic.
        let _ = catch_unwind(AssertUnwindSafe(|| self.cancel_all()));
    }
}

/// The event of attempt `attempt` of the call `name`: succeeded, not a hedge.
fn event<'a>(
    shared: &Shared,
    name: &'a str,
    attempt: u32,
    elapsed: Duration,
) -> AttemptFinished<'a> {
    AttemptFinished {
        group: shared.id,
        name,
        attempt,
        elapsed,
        error: None,
        retry_after: None,
        stopped: None,
        hedge: false,
        cancelled: false,
    }
}

/// What follows a failed attempt, as its log record says.
#[derive(Clone, Copy)]
enum Next {
    /// A retry, after this backoff.
    Retry(Duration),
    /// A hedge, started at once.
    Hedge,
    /// Nothing new: other attempts of the hedged call are still running.
    Wait,
    /// Nothing: the call gives up.
    Stop(StopReason),
}

/// Logs a failed attempt and what follows it: a retry or a hedge (debug), other attempts
/// still running (debug), a budget refusal (info), or giving up (debug: the group reports the
/// call's failure). Attempt 0: the first attempt did not start.
fn report(shared: &Shared, name: &str, attempt: u32, error: &BoxError, next: Next) {
    let level = match next {
        Next::Stop(StopReason::Budget) => Level::Info,
        _ => Level::Debug,
    };
    if !shared.records.enabled(level) {
        return;
    }
    let error = chain(&**error);
    let mut keys = vec![
        ("service", Value::from(name)),
        ("attempt", Value::from(attempt)),
        ("error", Value::from(error.as_str())),
    ];
    let message = match next {
        Next::Retry(backoff) => {
            keys.push(("backoff_ms", Value::from(millis(backoff))));
            "attempt failed, retrying"
        }
        Next::Hedge => "attempt failed, hedging at once",
        Next::Wait => "attempt failed, other attempts still running",
        Next::Stop(StopReason::Deadline) if attempt == 0 => {
            "no attempt started: not enough time left before the call's deadline"
        }
        Next::Stop(StopReason::Budget) => "attempt failed, retry refused by the budget",
        Next::Stop(StopReason::Deadline) => {
            "attempt failed, not enough time left before the call's deadline to retry"
        }
        Next::Stop(StopReason::NotRetryable) => "attempt failed, not retryable",
        Next::Stop(StopReason::Exhausted) => "attempt failed, no attempts left",
    };
    shared.records.write(level, message, &keys);
}

/// Runs an idempotent call's service under `hedge`: attempts overlap, the first success wins
/// and the others are dropped (cancelled) with this future.
pub(crate) async fn hedged<V, Er, Fut, F>(
    ctx: Context,
    mut make: F,
    hedge: Hedge,
    shared: Arc<Shared>,
    name: Cow<'static, str>,
) -> Result<V, BoxError>
where
    F: FnMut(Context) -> Fut,
    Fut: Future<Output = Result<V, Er>>,
    Er: Into<BoxError>,
{
    let now = || ctx.now();
    if let Some(budget) = &hedge.budget {
        budget.deposit(now());
    }
    let max = hedge.attempts.get();
    // The attempts in flight, when they started and their spans: those that lose, or are
    // still running when the group ends the call, are reported cancelled.
    let mut in_flight = InFlight::new(&shared, &name, &ctx, true);
    let mut launch = |n: u32| {
        let (attempt_ctx, cancel) = ctx.with_cancel();
        record_attempts(n);
        let span = Span::attempt(shared.id, &name, n, n > 1);
        let handle = span.handle();
        let service = {
            let _entered = span.enter();
            make(attempt_ctx)
        };
        let started = now();
        let attempt = async move {
            let _cancel = cancel.drop_guard(); // a loser's own work ends with it
            // A panic ends this attempt only: the others may still answer.
            let (caught, span) = Traced::new(AssertUnwindSafe(service).catch_unwind(), span).await;
            let outcome = match caught {
                Ok(result) => result.map_err(Into::into),
                Err(payload) => Err(Box::new(AttemptPanicked(contain(payload))) as BoxError),
            };
            (n, started, outcome, span)
        };
        (attempt, started, handle)
    };
    let mut running = FuturesUnordered::new();
    let (first, at, span) = launch(1);
    running.push(first);
    in_flight.add(1, at, span);
    let mut started = 1;
    // When the next hedge starts; `None`: no more hedges (none left, no delay known yet, or
    // refused by the budget).
    let next_hedge = |started: u32| {
        (started < max)
            .then(|| hedge.delay(&name, now()))
            .flatten()
            .and_then(|delay| now().checked_add(delay))
    };
    let mut next_at = next_hedge(started);
    let mut last: Option<BoxError> = None;
    let mut refused = false;
    loop {
        let timer = next_at.and_then(|at| Some(ctx.clock()?.sleep_until(at)));
        let finished = match timer {
            Some(timer) => match select(running.next(), timer).await {
                Either::Left((finished, _)) => finished,
                Either::Right(((), _)) => {
                    // No answer in time: hedge, if the budget allows.
                    if spend(&hedge, &shared, &name, started, now()) {
                        started += 1;
                        note(&shared, &name, started, "no answer yet, hedging");
                        let (attempt, at, span) = launch(started);
                        running.push(attempt);
                        in_flight.add(started, at, span);
                        next_at = next_hedge(started);
                    } else {
                        refused = true;
                        next_at = None;
                    }
                    continue;
                }
            },
            None => running.next().await,
        };
        let Some((n, began, result, span)) = finished else {
            // Nothing in flight and nothing to start: every attempt failed.
            let panicked = last
                .as_ref()
                .is_some_and(|last| last.is::<AttemptPanicked>());
            let reason = hedge_stop(refused, panicked);
            let last = last.unwrap_or_else(|| "no attempt was made".into());
            return Err(Box::new(GaveUp {
                attempts: started,
                reason,
                last,
            }));
        };
        let elapsed = now().saturating_duration_since(began);
        let traced = match &result {
            Ok(_) => Outcome::Succeeded,
            Err(error) if error.is::<AttemptPanicked>() => Outcome::Panicked,
            Err(_) if ctx.is_done() => Outcome::Cancelled,
            Err(_) => Outcome::Failed,
        };
        span.end(
            outcome_name(traced),
            Some(elapsed),
            result.as_ref().err().and_then(source),
        );
        in_flight.remove(n);
        let error = match result {
            Ok(value) => {
                hedge.record(&name, now(), elapsed);
                observe(
                    &shared,
                    AttemptFinished {
                        hedge: n > 1,
                        ..event(&shared, &name, n, elapsed)
                    },
                );
                if n > 1 || !in_flight.attempts.is_empty() {
                    note(
                        &shared,
                        &name,
                        n,
                        "hedged call answered, cancelling the other attempts",
                    );
                }
                // The others lost: they are dropped with `running` when this returns.
                in_flight.cancel_all();
                return Ok(value);
            }
            Err(error) => error,
        };
        if ctx.is_done() {
            // The group ended the call: this attempt and those still running were cut short.
            observe_cut(&shared, &name, n, n > 1, elapsed, Some(&error));
            return Err(error);
        }
        // A failure starts the next attempt at once, if one is left and the budget allows; a
        // panic starts none (as a retry policy never retries one).
        let panicked = error.is::<AttemptPanicked>();
        let next = started < max && !refused && !panicked;
        let granted = next && spend(&hedge, &shared, &name, started, now());
        if next && !granted {
            refused = true;
            next_at = None; // no hedge after a refusal, from the timer either
        }
        if panicked {
            next_at = None; // nor after a panic
        }
        let stopped = (!granted && running.is_empty()).then(|| hedge_stop(refused, panicked));
        observe(
            &shared,
            AttemptFinished {
                error: Some(&*error),
                stopped,
                hedge: n > 1,
                ..event(&shared, &name, n, elapsed)
            },
        );
        let next = match stopped {
            Some(reason) => Next::Stop(reason),
            None if granted => Next::Hedge,
            None => Next::Wait,
        };
        report(&shared, &name, n, &error, next);
        if granted {
            started += 1;
            let (attempt, at, span) = launch(started);
            running.push(attempt);
            in_flight.add(started, at, span);
            next_at = next_hedge(started);
        }
        last = Some(error);
    }
}

/// Asks the budget, if any, for one more attempt; logs and observes a refusal.
fn spend(hedge: &Hedge, shared: &Shared, name: &str, started: u32, now: Instant) -> bool {
    let Some(budget) = &hedge.budget else {
        return true;
    };
    if budget.withdraw(now) {
        return true;
    }
    if shared.records.enabled(Level::Info) {
        let keys = [
            ("service", Value::from(name)),
            ("attempts", Value::from(started)),
        ];
        shared
            .records
            .write(Level::Info, "hedge refused by the budget", &keys);
    }
    observe(
        shared,
        AttemptFinished {
            stopped: Some(StopReason::Budget),
            hedge: true,
            ..event(shared, name, started + 1, Duration::ZERO)
        },
    );
    false
}

/// Logs a step of a call with more than one attempt (debug): a hedge, the attempt that
/// answered.
fn note(shared: &Shared, name: &str, attempt: u32, message: &str) {
    if shared.records.enabled(Level::Debug) {
        let keys = [
            ("service", Value::from(name)),
            ("attempt", Value::from(attempt)),
        ];
        shared.records.write(Level::Debug, message, &keys);
    }
}

/// Why a hedged call with nothing more in flight stops.
fn hedge_stop(refused: bool, panicked: bool) -> StopReason {
    if refused {
        StopReason::Budget
    } else if panicked {
        StopReason::NotRetryable
    } else {
        StopReason::Exhausted
    }
}

/// The error of a hedge attempt that panicked: it ends that attempt, not the others.
#[derive(Debug, thiserror::Error)]
#[error("attempt panicked: {0}")]
struct AttemptPanicked(String);
