//! [`Retry`]: how many attempts, how long to back off between them, what is worth retrying,
//! and never past the deadline.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::budget::Budget;
use crate::error::{BoxError, BuildError};

/// Decides whether a failed attempt is worth another: see [`RetryBuilder::retry_if`].
type Classifier = Arc<dyn Fn(&AttemptFailure<'_>) -> bool + Send + Sync>;

/// A retry policy for an [idempotent](crate::Group::idempotent) call: up to `attempts`
/// attempts, exponential backoff with full jitter between them, all inside the call's
/// deadline.
///
/// * **Backoff** (gRPC's): before retry `n` (the first retry is `n = 1`), sleep a random time
///   in `[0, min(initial * multiplier^(n-1), max)]`. The randomness is seeded
///   ([`seed`](RetryBuilder::seed)) so that a test can replay a schedule.
/// * **What is retried**: by default a service error and a per-attempt timeout; never a
///   panic (it ends the call as [`Error::Panicked`](crate::Error::Panicked)), never an attempt
///   cut short by the group (its deadline, its cancellation). Change it with
///   [`retry_if`](RetryBuilder::retry_if).
/// * **The deadline**: each attempt gets a fresh child of the call's context (cancelled when
///   the attempt ends), cut at the [per-attempt timeout](RetryBuilder::attempt_timeout) if
///   there is one. A backoff never sleeps past the deadline, and no attempt starts with less
///   than [`min_time_left`](RetryBuilder::min_time_left) before it: the call gives up with the
///   last error instead (the first attempt too: then it gives up after 0 attempts, with
///   [`StopReason::Deadline`]).
/// * **The budget**: with a [`Budget`], each retry must be granted by it.
///
/// When the call gives up, its error ([`Error::Service`](crate::Error::Service)) has a
/// [`GaveUp`] as its source, which says how many attempts were made and why they stopped,
/// and keeps the last attempt's error as its own source. Earlier failures are logged (debug).
///
/// # Cancellation
///
/// The group ends a retried call as any call: its deadline, the caller's cancellation or
/// another call's failure drop it wherever it is, mid-attempt (the attempt's future is
/// dropped and its context cancelled) or mid-backoff (the sleep is dropped); no further
/// attempt starts. An attempt cut short this way is not retried.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use failfast::{BoxError, Context, FailFast, Retry};
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
///
/// let retry = Retry::builder()
///     .attempts(3)
///     .backoff(Duration::from_millis(1), Duration::from_millis(10))
///     .build()?;
/// let ff = FailFast::builder().timeout(Duration::from_secs(1)).build()?;
/// let tries = Arc::new(AtomicU32::new(0));
/// # futures::executor::block_on(async {
/// let group = ff.group(&Context::background());
/// let counter = tries.clone();
/// let flaky = group
///     .idempotent("flaky", move |_ctx| {
///         let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
///         async move { if n < 3 { Err::<u32, BoxError>("busy".into()) } else { Ok(n) } }
///     })
///     .retry(retry);
/// assert_eq!(group.run(flaky).await?, 3); // failed twice, then answered
/// # Ok::<_, failfast::Error>(()) })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Retry {
    pub(crate) attempts: NonZeroU32,
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
    pub(crate) multiplier: f64,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) min_time_left: Duration,
    pub(crate) classify: Option<Classifier>,
    pub(crate) budget: Option<Budget>,
    pub(crate) seed: Option<u64>,
}

/// Builds a [`Retry`]; every setting has a default, checked once in
/// [`build`](RetryBuilder::build).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use failfast::Retry;
///
/// let retry = Retry::builder()
///     .attempts(4)
///     .backoff(Duration::from_millis(20), Duration::from_secs(1))
///     .multiplier(1.6)
///     .attempt_timeout(Duration::from_millis(200))
///     .min_time_left(Duration::from_millis(10))
///     .seed(7)
///     .build()?;
/// # Ok::<_, failfast::BuildError>(())
/// ```
#[derive(Clone)]
#[must_use = "a builder does nothing until `build()` is called"]
pub struct RetryBuilder {
    attempts: u32,
    initial: Duration,
    max: Duration,
    multiplier: f64,
    attempt_timeout: Option<Duration>,
    min_time_left: Duration,
    classify: Option<Classifier>,
    budget: Option<Budget>,
    seed: Option<u64>,
}

/// What went wrong with one attempt, as a [`retry_if`](RetryBuilder::retry_if) classifier
/// sees it.
///
/// # Examples
///
/// ```
/// use failfast::AttemptFailure;
///
/// // Retry timeouts and "busy", nothing else.
/// fn worth_retrying(failure: &AttemptFailure<'_>) -> bool {
///     match failure {
///         AttemptFailure::TimedOut(_) => true,
///         AttemptFailure::Error(error) => error.to_string().contains("busy"),
///         _ => false,
///     }
/// }
/// assert!(worth_retrying(&AttemptFailure::TimedOut(std::time::Duration::from_millis(5))));
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum AttemptFailure<'a> {
    /// The service returned this error.
    Error(&'a (dyn std::error::Error + Send + Sync + 'static)),
    /// The attempt's own timeout passed (see [`RetryBuilder::attempt_timeout`]).
    TimedOut(Duration),
}

/// Why a retried call stopped trying.
///
/// # Examples
///
/// ```
/// assert_eq!(failfast::StopReason::Exhausted.to_string(), "no attempts left");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum StopReason {
    /// Every attempt allowed was made.
    #[error("no attempts left")]
    Exhausted,
    /// The classifier said the failure is not worth retrying.
    #[error("not retryable")]
    NotRetryable,
    /// The backoff would end too close to (or past) the deadline.
    #[error("not enough time left before the call's deadline")]
    Deadline,
    /// The [`Budget`] refused the retry.
    #[error("retry budget exhausted")]
    Budget,
}

/// The error of a call that gave up retrying: how many attempts were made and why it stopped.
/// Its [`source`](std::error::Error::source) is the last attempt's error.
///
/// It is the source of the call's [`Error::Service`](crate::Error::Service).
///
/// # Examples
///
/// ```
/// use std::error::Error as _;
/// use failfast::{GaveUp, StopReason};
///
/// let err = GaveUp::new(3, StopReason::Exhausted, "connection refused");
/// assert_eq!(err.to_string(), "gave up after 3 attempts: no attempts left");
/// assert_eq!(err.source().unwrap().to_string(), "connection refused");
/// ```
#[derive(Debug, thiserror::Error)]
#[error("gave up after {attempts} attempt{s}: {reason}", s = if *attempts == 1 { "" } else { "s" })]
#[non_exhaustive]
pub struct GaveUp {
    /// How many attempts were made.
    pub attempts: u32,
    /// Why no more were made.
    pub reason: StopReason,
    /// The last attempt's error.
    #[source]
    pub last: BoxError,
}

/// The error of an attempt cut short by its own timeout.
#[derive(Debug, thiserror::Error)]
#[error("attempt timed out after {0:.1?}")]
pub(crate) struct AttemptTimedOut(pub(crate) Duration);

impl Retry {
    /// A builder with the defaults: 3 attempts, backoff from 10 ms up to 1 s with a multiplier
    /// of 2, no per-attempt timeout, no minimum time left, service errors and timeouts
    /// retried, no budget, a seed drawn per call.
    ///
    /// # Examples
    ///
    /// ```
    /// let retry = failfast::Retry::builder().build()?;
    /// assert_eq!(retry.attempts(), 3);
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    pub fn builder() -> RetryBuilder {
        RetryBuilder {
            attempts: 3,
            initial: Duration::from_millis(10),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            attempt_timeout: None,
            min_time_left: Duration::ZERO,
            classify: None,
            budget: None,
            seed: None,
        }
    }

    /// The maximum number of attempts, the first included.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(failfast::Retry::builder().attempts(5).build()?.attempts(), 5);
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    pub fn attempts(&self) -> u32 {
        self.attempts.get()
    }

    /// The backoffs this policy sleeps before retries 1, 2, ... of a call: exactly these with
    /// a [`seed`](RetryBuilder::seed) (every call of the policy replays them), an example of
    /// them without one. For tests that pin a schedule in virtual time.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let retry = failfast::Retry::builder()
    ///     .attempts(3)
    ///     .backoff(Duration::from_millis(100), Duration::from_secs(1))
    ///     .seed(42)
    ///     .build()?;
    /// let backoffs: Vec<Duration> = retry.backoffs().collect();
    /// assert_eq!(backoffs.len(), 2); // 3 attempts: 2 retries
    /// assert!(backoffs[0] <= Duration::from_millis(100));
    /// assert!(backoffs[1] <= Duration::from_millis(200));
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    pub fn backoffs(&self) -> impl Iterator<Item = Duration> + '_ {
        let mut jitter = Jitter::new(self.seed, Instant::now());
        (1..self.attempts.get()).map(move |n| self.backoff(n, jitter.next()))
    }

    /// Whether `failure` is worth another attempt.
    pub(crate) fn retryable(&self, failure: &AttemptFailure<'_>) -> bool {
        match &self.classify {
            Some(classify) => classify(failure),
            None => true,
        }
    }

    /// The backoff before retry `n` (1 for the first retry), with full jitter drawn from
    /// `random`, a number in `[0, 1)`.
    pub(crate) fn backoff(&self, n: u32, random: f64) -> Duration {
        let exponent = i32::try_from(n.saturating_sub(1)).unwrap_or(i32::MAX);
        let ceiling = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        let ceiling = ceiling.min(self.max.as_secs_f64());
        Duration::try_from_secs_f64(ceiling * random).unwrap_or(self.max)
    }
}

impl RetryBuilder {
    /// The maximum number of attempts, the first included. Default: 3. Zero is a
    /// [`BuildError::ZeroAttempts`].
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// The backoff's first ceiling and its cap. Default: 10 ms and 1 s. A cap below the first
    /// ceiling is a [`BuildError::BackoffMax`]. Zero for both means no backoff at all.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial = initial;
        self.max = max;
        self
    }

    /// How much the ceiling grows per retry. Default: 2. Below 1 (or NaN) is a
    /// [`BuildError::Multiplier`].
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Each attempt's own timeout: the attempt is cancelled when it passes, and counts as
    /// [`AttemptFailure::TimedOut`]. Default: none (only the call's deadline). Zero is a
    /// [`BuildError::ZeroTimeout`].
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// No attempt starts with less than this left before the call's deadline, the first one
    /// included: a call with less left gives up at once ([`GaveUp`] with 0 attempts and
    /// [`StopReason::Deadline`]). Default: zero (an attempt may start whenever the deadline
    /// has not passed). Calls with no deadline are never refused.
    pub fn min_time_left(mut self, min: Duration) -> Self {
        self.min_time_left = min;
        self
    }

    /// Which failures are retried. Default: every service error and per-attempt timeout.
    /// Panics are never retried, whatever this says.
    pub fn retry_if(
        mut self,
        classify: impl Fn(&AttemptFailure<'_>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.classify = Some(Arc::new(classify));
        self
    }

    /// Draws every retry from `budget`. Default: no budget.
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Seeds the jitter, so that a test replays the same backoffs. Default: a seed drawn per
    /// call. Every call of a seeded policy backs off the same way: calls that fail together
    /// retry together, which is what jitter is there to avoid. Seed in tests, not in
    /// production.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`BuildError::ZeroAttempts`], [`BuildError::BackoffMax`], [`BuildError::Multiplier`]
    /// or [`BuildError::ZeroTimeout`], as each setter says.
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::{BuildError, Retry};
    ///
    /// assert_eq!(Retry::builder().attempts(0).build().unwrap_err(), BuildError::ZeroAttempts);
    /// assert_eq!(Retry::builder().multiplier(0.5).build().unwrap_err(), BuildError::Multiplier);
    /// ```
    pub fn build(self) -> Result<Retry, BuildError> {
        let attempts = NonZeroU32::new(self.attempts).ok_or(BuildError::ZeroAttempts)?;
        if self.max < self.initial {
            return Err(BuildError::BackoffMax);
        }
        if self.multiplier.is_nan() || self.multiplier < 1.0 {
            return Err(BuildError::Multiplier);
        }
        if self
            .attempt_timeout
            .is_some_and(|timeout| timeout.is_zero())
        {
            return Err(BuildError::ZeroTimeout);
        }
        Ok(Retry {
            attempts,
            initial: self.initial,
            max: self.max,
            multiplier: self.multiplier,
            attempt_timeout: self.attempt_timeout,
            min_time_left: self.min_time_left,
            classify: self.classify,
            budget: self.budget,
            seed: self.seed,
        })
    }
}

impl GaveUp {
    /// A `GaveUp` after `attempts` attempts, for tests and fakes.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = failfast::GaveUp::new(1, failfast::StopReason::NotRetryable, "bad request");
    /// assert_eq!(err.to_string(), "gave up after 1 attempt: not retryable");
    /// ```
    pub fn new(attempts: u32, reason: StopReason, last: impl Into<BoxError>) -> GaveUp {
        GaveUp {
            attempts,
            reason,
            last: last.into(),
        }
    }
}

/// A small, seedable generator for jitter (splitmix64): no dependency, and replayable.
#[derive(Debug, Clone)]
pub(crate) struct Jitter(u64);

impl Jitter {
    /// Seeded with `seed`, or else from a process-wide counter mixed with the clock.
    pub(crate) fn new(seed: Option<u64>, now: Instant) -> Jitter {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
        match seed {
            Some(seed) => Jitter(seed),
            None => {
                let counter = NEXT.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
                let clock = now.elapsed().as_nanos() as u64;
                Jitter(counter ^ clock.rotate_left(32))
            }
        }
    }

    /// The next number in `[0, 1)`.
    pub(crate) fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl fmt::Debug for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("attempts", &self.attempts)
            .field("initial", &self.initial)
            .field("max", &self.max)
            .field("multiplier", &self.multiplier)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("min_time_left", &self.min_time_left)
            .field("budget", &self.budget)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RetryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBuilder")
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_full_jitter_under_a_growing_capped_ceiling() {
        let retry = Retry::builder()
            .backoff(Duration::from_millis(10), Duration::from_millis(50))
            .build()
            .unwrap();
        assert_eq!(retry.backoff(1, 0.5), Duration::from_millis(5));
        assert_eq!(retry.backoff(2, 0.5), Duration::from_millis(10));
        assert_eq!(
            retry.backoff(3, 0.999_999),
            Duration::from_nanos(39_999_960)
        );
        assert_eq!(
            retry.backoff(9, 0.5),
            Duration::from_millis(25),
            "capped at 50 ms"
        );
        assert_eq!(retry.backoff(u32::MAX, 0.0), Duration::ZERO);
    }

    #[test]
    fn jitter_replays_from_a_seed_and_stays_in_range() {
        let now = Instant::now();
        let (mut a, mut b) = (Jitter::new(Some(7), now), Jitter::new(Some(7), now));
        for _ in 0..1000 {
            let x = a.next();
            assert_eq!(x, b.next());
            assert!((0.0..1.0).contains(&x));
        }
    }
}
