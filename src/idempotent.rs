//! [`Idempotent`]: a call whose service may be called more than once, and so may be retried.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use futures::future::{Either, FusedFuture, select};
use log::Level;
use log::kv::Value;

use crate::call::{Call, Optional};
use crate::context::{Context, ContextError};
use crate::error::{BoxError, Error};
use crate::observer::AttemptFinished;
use crate::policy::retry::{AttemptFailure, AttemptTimedOut, GaveUp, Jitter, Retry, StopReason};
use crate::records::millis;
use crate::state::Shared;
use crate::sync::lock;

/// A call of a [`Group`](crate::Group) whose service may be called again: made by
/// [`Group::idempotent`](crate::Group::idempotent), it can [`retry`](Idempotent::retry).
///
/// It is a [`Call`] otherwise: a future of the call's `Result<V, Error>`, with
/// [`timeout`](Idempotent::timeout) and [`optional`](Idempotent::optional). Its
/// [`timeout`](Idempotent::timeout) bounds all its attempts together, backoffs included.
///
/// # Cancellation
///
/// Dropping it cancels the call, whichever attempt or backoff it is in, as for a [`Call`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use failfast::{BoxError, Context, FailFast, Retry};
///
/// let ff = FailFast::builder().build()?;
/// # futures::executor::block_on(async {
/// let group = ff.group(&Context::background());
/// let orders = group
///     .idempotent("orders", |_ctx| async { Ok::<_, BoxError>(5) }) // safe to call again
///     .retry(Retry::builder().attempts(2).build()?)
///     .timeout(Duration::from_millis(500));
/// assert_eq!(group.run(orders).await?, 5);
/// # Ok::<_, Box<dyn std::error::Error>>(()) })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[must_use = "futures do nothing unless you .await or poll them; a dropped call is cancelled"]
pub struct Idempotent<'g, V> {
    call: Call<'g, V>,
    policy: Arc<Mutex<Policy>>,
}

/// The policy of one idempotent call: set by its handle, taken when the call starts.
#[derive(Default)]
pub(crate) struct Policy {
    retry: Option<Retry>,
    started: bool,
}

impl<'g, V> Idempotent<'g, V> {
    pub(crate) fn new(call: Call<'g, V>, policy: Arc<Mutex<Policy>>) -> Idempotent<'g, V> {
        Idempotent { call, policy }
    }

    /// Retries the call's failures under `policy`: see [`Retry`] for the schedule, what is
    /// retried, the budget and the deadline. Default: a single attempt.
    ///
    /// Set it right after [`Group::idempotent`](crate::Group::idempotent): once the call has
    /// started, it is too late, and the call ends with [`Error::Misuse`].
    ///
    /// # Examples
    ///
    /// See [`Retry`].
    pub fn retry(mut self, policy: Retry) -> Self {
        let mut slot = lock(&self.policy);
        if slot.started {
            drop(slot);
            self.call.too_late();
        } else {
            slot.retry = Some(policy);
            drop(slot);
        }
        self
    }

    /// A deadline of the call's own, for all its attempts: see [`Call::timeout`].
    ///
    /// # Examples
    ///
    /// See [`Idempotent`].
    pub fn timeout(self, timeout: Duration) -> Self {
        Idempotent {
            call: self.call.timeout(timeout),
            policy: self.policy,
        }
    }

    /// Makes the call optional: see [`Call::optional`]. Set [`retry`](Idempotent::retry)
    /// first: the call fails on its own (and yields `Ok(None)`) once it gives up.
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::{BoxError, Context, FailFast, Retry};
    ///
    /// let ff = FailFast::builder().build()?;
    /// # futures::executor::block_on(async {
    /// let group = ff.group(&Context::background());
    /// let recs = group
    ///     .idempotent("recs", |_ctx| async { Err::<u32, BoxError>("down".into()) })
    ///     .retry(Retry::builder().attempts(2).build()?)
    ///     .optional();
    /// assert_eq!(group.run(recs).await?, None);
    /// # Ok::<_, Box<dyn std::error::Error>>(()) })?;
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn optional(self) -> Optional<'g, V> {
        self.call.optional()
    }
}

impl<V: 'static> Future for Idempotent<'_, V> {
    type Output = Result<V, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.call).poll(cx)
    }
}

impl<V: 'static> FusedFuture for Idempotent<'_, V> {
    fn is_terminated(&self) -> bool {
        self.call.is_terminated()
    }
}

impl<V> fmt::Debug for Idempotent<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotent")
            .field("call", &self.call)
            .field("retry", &lock(&self.policy).retry)
            .finish()
    }
}

/// Runs an idempotent call's service: once, or under its retry policy. What the group sees
/// as the call's service.
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
    let retry = {
        let mut slot = lock(&policy);
        slot.started = true;
        slot.retry.take()
    };
    let Some(retry) = retry else {
        return make(ctx).await.map_err(Into::into);
    };
    let now = || ctx.clock().map_or_else(Instant::now, |clock| clock.now());
    let mut jitter = Jitter::new(retry.seed, now());
    if let Some(budget) = &retry.budget {
        budget.deposit(now());
    }
    let mut attempt = 1;
    loop {
        let started = now();
        let (attempt_ctx, cancel) = ctx.with_cancel();
        let attempt_ctx = match retry.attempt_timeout {
            Some(timeout) => attempt_ctx.with_timeout(timeout),
            None => attempt_ctx,
        };
        let outcome = {
            let _cancel = cancel.drop_guard(); // the attempt's own work ends with it
            let service = make(attempt_ctx.clone());
            if retry.attempt_timeout.is_none() {
                // Only the call's deadline: the group enforces it (by dropping the call).
                service.await.map_err(Into::into)
            } else {
                match select(std::pin::pin!(service), attempt_ctx.done()).await {
                    Either::Left((result, _)) => result.map_err(Into::into),
                    Either::Right(((), _)) => Err(timed_out(&retry)),
                }
            }
        };
        let error = match outcome {
            Ok(value) => {
                observe(&shared, &name, attempt, now() - started, None, None, None);
                return Ok(value);
            }
            Err(error) => error,
        };
        if ctx.is_done() {
            // Cut short by the group (its deadline, its cancellation): not the call's own
            // failure, and not worth another attempt.
            return Err(error);
        }
        let timed_out = attempt_ctx.err() == Some(ContextError::DeadlineExceeded);
        let failure = match (timed_out, retry.attempt_timeout) {
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
            let enough = match (ctx.deadline(), resume) {
                (Some(deadline), Some(resume)) => resume
                    .checked_add(retry.min_time_left)
                    .is_some_and(|ready| ready < deadline),
                (Some(_), None) => false,
                (None, _) => true,
            };
            (!enough).then_some(StopReason::Deadline)
        });
        let stop = stop.or_else(|| match &retry.budget {
            Some(budget) if !budget.withdraw(now()) => Some(StopReason::Budget),
            _ => None,
        });
        if let Some(reason) = stop {
            observe(
                &shared,
                &name,
                attempt,
                elapsed,
                Some(&*error),
                None,
                Some(reason),
            );
            report(&shared, &name, attempt, &error, None, Some(reason));
            return Err(Box::new(GaveUp {
                attempts: attempt,
                reason,
                last: error,
            }));
        }
        observe(
            &shared,
            &name,
            attempt,
            elapsed,
            Some(&*error),
            Some(backoff),
            None,
        );
        report(&shared, &name, attempt, &error, Some(backoff), None);
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

/// The error of an attempt cut at its own timeout.
fn timed_out(retry: &Retry) -> BoxError {
    Box::new(AttemptTimedOut(retry.attempt_timeout.unwrap_or_default()))
}

/// Tells the observer about one attempt.
fn observe(
    shared: &Shared,
    name: &str,
    attempt: u32,
    elapsed: Duration,
    error: Option<&(dyn std::error::Error + Send + Sync + 'static)>,
    retry_after: Option<Duration>,
    stopped: Option<StopReason>,
) {
    if let Some(observer) = &shared.observer {
        observer.attempt_finished(&AttemptFinished {
            group: shared.id,
            name,
            attempt,
            elapsed,
            error,
            retry_after,
            stopped,
        });
    }
}

/// Logs a failed attempt: the retry to come (debug), a budget refusal (info), or giving up
/// (debug: the group reports the call's failure).
fn report(
    shared: &Shared,
    name: &str,
    attempt: u32,
    error: &BoxError,
    backoff: Option<Duration>,
    stopped: Option<StopReason>,
) {
    let level = match stopped {
        Some(StopReason::Budget) => Level::Info,
        _ => Level::Debug,
    };
    if !shared.records.enabled(level) {
        return;
    }
    let error = crate::records::chain_of(&**error);
    let mut keys = vec![
        ("service", Value::from(name)),
        ("attempt", Value::from(attempt)),
        ("error", Value::from(error.as_str())),
    ];
    let message = match (backoff, stopped) {
        (Some(backoff), _) => {
            keys.push(("backoff_ms", Value::from(millis(backoff))));
            "attempt failed, retrying"
        }
        (None, Some(StopReason::Budget)) => "attempt failed, retry refused by the budget",
        (None, Some(StopReason::Deadline)) => {
            "attempt failed, not enough time left before the deadline to retry"
        }
        (None, Some(StopReason::NotRetryable)) => "attempt failed, not retryable",
        (None, _) => "attempt failed, no attempts left",
    };
    shared.records.write(level, message, &keys);
}
