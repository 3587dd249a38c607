//! [`Budget`]: caps retries (and hedges) to a share of first attempts, with a floor.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::BuildError;
use crate::sync::lock;

/// How long a first attempt or a retry counts against the budget.
const WINDOW: Duration = Duration::from_secs(10);
/// The window is kept in this many buckets: an event leaves it within a tenth of `WINDOW`.
const BUCKETS: usize = 10;

/// A retry budget shared by calls and groups: retries and hedges may add at most `ratio` of
/// the first attempts made over the last 10 seconds, plus `min_per_second` (times 10) so that
/// quiet periods can still retry. Finagle's `RetryBudget`, and the 20% / 3 per second that
/// Envoy and Finagle default to.
///
/// Each first attempt deposits `ratio`; each retry or hedge withdraws 1, and is refused when
/// less than 1 is left. A refused retry is not made: the call fails with the error its last
/// attempt had, wrapped in a [`GaveUp`](crate::GaveUp) whose reason is
/// [`StopReason::Budget`](crate::StopReason::Budget) (so that a caller can tell a refusal from
/// a policy run out) and whose [`source`](std::error::Error::source) is that error. A refused
/// hedge is not made either; the attempts already running go on. Every refusal is logged
/// (info) and [observed](crate::Observer::attempt_finished). Time is read from the call's
/// context clock, so a budget works in virtual time too.
///
/// **The deadline** comes first: a retry that would start too close to the deadline
/// ([`min_time_left`](crate::RetryBuilder::min_time_left), or a backoff past it) is not asked
/// of the budget and spends nothing; a hedge never outlives the deadline either.
///
/// Clones share the budget: give one to every policy that should draw on it, across calls
/// and groups.
///
/// # Cancellation
///
/// A retry or hedge is counted when it is granted, whether or not it then runs to its end:
/// an attempt cancelled by its group still spent its share.
///
/// # Examples
///
/// ```
/// use std::error::Error as _;
/// use std::time::Duration;
/// use failfast::{BoxError, Budget, Context, FailFast, GaveUp, Retry, StopReason};
///
/// // No share of first attempts and no floor: every retry is refused.
/// let budget = Budget::new(0.0, 0)?;
/// let retry = Retry::builder()
///     .attempts(3)
///     .backoff(Duration::ZERO, Duration::ZERO)
///     .budget(budget.clone()) // clones share it: hand one to every policy that should
///     .build()?;
/// let ff = FailFast::builder().build()?;
/// let group = ff.group(&Context::background());
/// let call = group
///     .idempotent("kv", |_ctx| async { Err::<u32, BoxError>("busy".into()) })
///     .retry(retry);
/// let err = futures::executor::block_on(group.run(call)).unwrap_err();
/// let gave_up = err.source().unwrap().downcast_ref::<GaveUp>().unwrap();
/// assert_eq!((gave_up.attempts, gave_up.reason), (1, StopReason::Budget));
/// assert_eq!(gave_up.source().unwrap().to_string(), "busy"); // the attempt's own error
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Budget {
    inner: Arc<Mutex<Ledger>>,
}

struct Ledger {
    ratio: f64,
    min_per_second: u32,
    /// When the current bucket started; `None` until first used.
    start: Option<Instant>,
    /// Per bucket, oldest first: (first attempts, retries).
    buckets: [(u64, u64); BUCKETS],
}

impl Budget {
    /// A budget of `ratio` (in `[0, 1]`) of first attempts, plus `min_per_second` retries a
    /// second.
    ///
    /// # Errors
    ///
    /// [`BuildError::BudgetRatio`] if `ratio` is not in `[0, 1]` (or is NaN).
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::{Budget, BuildError};
    ///
    /// assert!(Budget::new(0.1, 0).is_ok());
    /// assert_eq!(Budget::new(1.5, 0).unwrap_err(), BuildError::BudgetRatio);
    /// ```
    pub fn new(ratio: f64, min_per_second: u32) -> Result<Budget, BuildError> {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(BuildError::BudgetRatio);
        }
        Ok(Budget {
            inner: Arc::new(Mutex::new(Ledger {
                ratio,
                min_per_second,
                start: None,
                buckets: [(0, 0); BUCKETS],
            })),
        })
    }

    /// Counts a first attempt made at `now`.
    pub(crate) fn deposit(&self, now: Instant) {
        let mut ledger = lock(&self.inner);
        ledger.rotate(now);
        ledger.buckets[BUCKETS - 1].0 += 1;
    }

    /// Takes one retry at `now`, if the budget allows it.
    pub(crate) fn withdraw(&self, now: Instant) -> bool {
        let mut ledger = lock(&self.inner);
        ledger.rotate(now);
        let (firsts, retries) = ledger
            .buckets
            .iter()
            .fold((0, 0), |(f, r), &(bf, br)| (f + bf, r + br));
        let floor = f64::from(ledger.min_per_second) * WINDOW.as_secs_f64();
        let allowed = ledger.ratio * firsts as f64 + floor;
        if allowed - retries as f64 >= 1.0 {
            ledger.buckets[BUCKETS - 1].1 += 1;
            true
        } else {
            false
        }
    }
}

impl Ledger {
    /// Moves the window to `now`: buckets older than the window are forgotten.
    fn rotate(&mut self, now: Instant) {
        let width = WINDOW / BUCKETS as u32;
        let Some(start) = self.start else {
            self.start = Some(now);
            return;
        };
        let passed = now.saturating_duration_since(start);
        let steps = (passed.as_nanos() / width.as_nanos()).min(BUCKETS as u128) as usize;
        if steps == 0 {
            return;
        }
        self.buckets.rotate_left(steps);
        for bucket in &mut self.buckets[BUCKETS - steps..] {
            *bucket = (0, 0);
        }
        // `steps` is at most BUCKETS, so this fits in a u32.
        self.start = Some(start + width * steps as u32);
        if now.saturating_duration_since(start) >= WINDOW {
            self.start = Some(now);
        }
    }
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ledger = lock(&self.inner);
        f.debug_struct("Budget")
            .field("ratio", &ledger.ratio)
            .field("min_per_second", &ledger.min_per_second)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_capped_to_the_ratio_of_first_attempts_plus_the_floor() {
        let budget = Budget::new(0.2, 0).unwrap();
        let now = Instant::now();
        for _ in 0..10 {
            budget.deposit(now);
        }
        assert!(budget.withdraw(now));
        assert!(budget.withdraw(now));
        assert!(!budget.withdraw(now), "20% of 10 is 2");

        let floor = Budget::new(0.0, 1).unwrap();
        let granted = (0..20).filter(|_| floor.withdraw(now)).count();
        assert_eq!(granted, 10, "1 a second over a 10 s window");
    }

    #[test]
    fn the_window_forgets_what_is_older_than_ten_seconds() {
        let budget = Budget::new(0.5, 0).unwrap();
        let start = Instant::now();
        for _ in 0..4 {
            budget.deposit(start);
        }
        assert!(budget.withdraw(start));
        assert!(budget.withdraw(start));
        assert!(!budget.withdraw(start));
        let later = start + Duration::from_secs(11);
        assert!(!budget.withdraw(later), "the deposits left with the window");
        budget.deposit(later);
        budget.deposit(later);
        assert!(budget.withdraw(later), "and so did the retries");
    }
}
