//! [`Observer`]: what happened to each call and each group, for metrics.

use std::time::Duration;

use crate::Error;

/// Watches the calls and groups of a [`FailFast`](crate::FailFast): set one with
/// [`FailFastBuilder::observer`](crate::FailFastBuilder::observer).
///
/// Every method has an empty default, so implement only what you need. Methods are called on
/// whatever thread the call runs on, while the call is being finished: keep them short and
/// never block. A group without an observer does no work for it (no clock reads, no events).
///
/// # Examples
///
/// A per-call latency histogram, with buckets doubling from 1 ms:
///
/// ```
/// use std::collections::BTreeMap;
/// use std::sync::{Arc, Mutex};
/// use failfast::{CallFinished, Context, FailFast, Observer, Outcome};
///
/// #[derive(Default)]
/// struct Latencies(Mutex<BTreeMap<String, [u64; 12]>>);
///
/// impl Observer for Latencies {
///     fn call_finished(&self, call: &CallFinished<'_>) {
///         if call.outcome != Outcome::Succeeded {
///             return;
///         }
///         let ms = call.elapsed.as_millis() as u64;
///         let bucket = (u64::BITS - ms.leading_zeros()).min(11) as usize; // 0, 1, 2-3, 4-7 ms...
///         let mut histograms = self.0.lock().unwrap();
///         histograms.entry(call.name.to_owned()).or_default()[bucket] += 1;
///     }
/// }
///
/// let latencies = Arc::new(Latencies::default());
/// let ff = FailFast::builder().observer(latencies.clone()).build()?;
/// # futures::executor::block_on(async {
/// let group = ff.group(&Context::background());
/// group
///     .run(group.call("profile", |_ctx| async { Ok::<_, failfast::BoxError>("Alice") }))
///     .await?;
/// # Ok::<_, failfast::Error>(()) })?;
/// assert_eq!(latencies.0.lock().unwrap()["profile"].iter().sum::<u64>(), 1);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
pub trait Observer: Send + Sync + 'static {
    /// A call started: its service is about to be called. Calls waiting for a slot under
    /// [`limit`](crate::FailFastBuilder::limit) start when they get one.
    fn call_started(&self, call: &CallStarted<'_>) {
        let _ = call;
    }

    /// A call that had started finished, however it finished: answered, failed, or was
    /// cancelled because the group no longer needed it.
    fn call_finished(&self, call: &CallFinished<'_>) {
        let _ = call;
    }

    /// A group finished: `run` is about to return, or was dropped before it finished (then
    /// `error` is [`Error::Cancelled`]: the caller walked away).
    fn group_finished(&self, group: &GroupFinished<'_>) {
        let _ = group;
    }

    /// An attempt of a call with a [`Retry`](crate::Retry) or [`Hedge`](crate::Hedge) policy
    /// ended on its own: it answered, or it failed (and is retried after a backoff, or the
    /// call gives up: no attempts left, not retryable, too close to the deadline, or refused
    /// by the [`Budget`](crate::Budget)); or it was refused (an event with no error and
    /// `stopped` set: a hedge the budget refused, or a first attempt with less than
    /// [`min_time_left`](crate::RetryBuilder::min_time_left) before the deadline); or it was
    /// cut short (`cancelled`): it lost a hedge race, or the group ended its call (its
    /// deadline, its cancellation, another call's failure). Every attempt that started has
    /// exactly one event, but one that panics in a retried call: the panic ends the call,
    /// and [`call_finished`](Observer::call_finished) reports it. Events of attempts the group
    /// cut short may come after [`group_finished`](Observer::group_finished), as the
    /// `call_finished` of the calls it cancelled may (a spawned call ends when its executor
    /// drops it).
    fn attempt_finished(&self, attempt: &AttemptFinished<'_>) {
        let _ = attempt;
    }
}

impl<O: Observer + ?Sized> Observer for std::sync::Arc<O> {
    fn call_started(&self, call: &CallStarted<'_>) {
        (**self).call_started(call)
    }

    fn call_finished(&self, call: &CallFinished<'_>) {
        (**self).call_finished(call)
    }

    fn group_finished(&self, group: &GroupFinished<'_>) {
        (**self).group_finished(group)
    }

    fn attempt_finished(&self, attempt: &AttemptFinished<'_>) {
        (**self).attempt_finished(attempt)
    }
}

/// A call started. See [`Observer::call_started`].
///
/// # Examples
///
/// ```
/// use failfast::{CallStarted, Observer};
///
/// struct Starts;
/// impl Observer for Starts {
///     fn call_started(&self, call: &CallStarted<'_>) {
///         println!("group {}: {} started", call.group, call.name);
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct CallStarted<'a> {
    /// The group's id, as in its log records (`group_id`).
    pub group: u64,
    /// The call's name.
    pub name: &'a str,
}

/// A call finished. See [`Observer::call_finished`].
///
/// # Examples
///
/// ```
/// use failfast::{CallFinished, Observer, Outcome};
///
/// struct Failures;
/// impl Observer for Failures {
///     fn call_finished(&self, call: &CallFinished<'_>) {
///         if let (Outcome::Failed, Some(error)) = (call.outcome, call.error) {
///             eprintln!("{} failed after {:?}: {error:#}", call.name, call.elapsed);
///         }
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct CallFinished<'a> {
    /// The group's id, as in its log records (`group_id`).
    pub group: u64,
    /// The call's name.
    pub name: &'a str,
    /// From the call's start to its end, as measured by the group's timer.
    pub elapsed: Duration,
    /// How it ended.
    pub outcome: Outcome,
    /// Whether the call was [`optional`](crate::Call::optional): its failure did not fail the
    /// group.
    pub optional: bool,
    /// The error, when the call failed.
    pub error: Option<&'a Error>,
}

/// A group finished. See [`Observer::group_finished`].
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use failfast::{GroupFinished, Observer};
///
/// #[derive(Default)]
/// struct Counts { ok: AtomicU64, failed: AtomicU64 }
///
/// impl Observer for Counts {
///     fn group_finished(&self, group: &GroupFinished<'_>) {
///         let counter = if group.error.is_none() { &self.ok } else { &self.failed };
///         counter.fetch_add(1, Ordering::Relaxed);
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct GroupFinished<'a> {
    /// The group's id, as in its log records (`group_id`).
    pub group: u64,
    /// From the group's creation to the end of its `run`, as measured by its timer.
    pub elapsed: Duration,
    /// How many calls were made in the group.
    pub calls: usize,
    /// The error `run` returns, if it fails; [`Error::Cancelled`] if `run` was dropped before
    /// it finished.
    pub error: Option<&'a Error>,
}

/// An attempt of a retried call finished. See [`Observer::attempt_finished`].
///
/// # Examples
///
/// ```
/// use failfast::{AttemptFinished, Observer, StopReason};
///
/// struct Refusals;
/// impl Observer for Refusals {
///     fn attempt_finished(&self, attempt: &AttemptFinished<'_>) {
///         if attempt.stopped == Some(StopReason::Budget) {
///             eprintln!("{}: retry refused by the budget", attempt.name);
///         }
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct AttemptFinished<'a> {
    /// The group's id, as in its log records (`group_id`).
    pub group: u64,
    /// The call's name.
    pub name: &'a str,
    /// Which attempt: 1 for the first.
    pub attempt: u32,
    /// From the attempt's start to its end, by the group's timer.
    pub elapsed: Duration,
    /// The attempt's error, if it failed.
    pub error: Option<&'a (dyn std::error::Error + Send + Sync + 'static)>,
    /// When it failed and another attempt follows: the backoff before it.
    pub retry_after: Option<Duration>,
    /// When it failed and the call gives up: why. (For an attempt refused before it started,
    /// an event with no error: a hedge refused by the budget has `stopped` set to
    /// [`StopReason::Budget`](crate::StopReason::Budget), a first attempt with too little
    /// time left to [`StopReason::Deadline`](crate::StopReason::Deadline).)
    pub stopped: Option<crate::StopReason>,
    /// Whether this attempt was a hedge: started while an earlier one was still running, or
    /// after it failed, under a [`Hedge`](crate::Hedge) policy.
    pub hedge: bool,
    /// Whether the attempt was cut short: another attempt of the call answered first (a hedge
    /// race it lost), or the group ended the call. `elapsed` is then the time it ran, and
    /// `error` the error it ended with, if it ended before it was dropped.
    pub cancelled: bool,
}

/// How a call ended.
///
/// # Examples
///
/// ```
/// use failfast::Outcome;
///
/// fn is_error(outcome: Outcome) -> bool {
///     !matches!(outcome, Outcome::Succeeded | Outcome::Cancelled)
/// }
/// assert!(is_error(Outcome::TimedOut));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The service answered.
    Succeeded,
    /// The service returned an error.
    Failed,
    /// The service panicked.
    Panicked,
    /// The call's own timeout passed.
    TimedOut,
    /// The group no longer needed the call (it failed, timed out, was cancelled, finished, or
    /// the call's future was dropped), so the call was cancelled: dropped before it answered,
    /// or its service returned an error once the group had cancelled its context (a service
    /// that honours its context fails because of the cancellation, not on its own).
    Cancelled,
    /// The executor dropped the call's task before it finished.
    Dropped,
}

impl Outcome {
    /// The outcome a call's own error stands for.
    pub(crate) fn of(error: &Error) -> Outcome {
        match error {
            Error::Service { .. } => Outcome::Failed,
            Error::Panicked { .. } => Outcome::Panicked,
            Error::TimedOut { .. } => Outcome::TimedOut,
            Error::Dropped { .. } => Outcome::Dropped,
            _ => Outcome::Cancelled,
        }
    }
}
