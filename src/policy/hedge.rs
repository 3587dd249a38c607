//! [`Hedge`]: when to start another attempt while the first is still running.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::budget::Budget;
use crate::error::BuildError;
use crate::sync::lock;

/// How many latencies a window keeps per call name, at most.
const KEPT: usize = 1000;

/// A hedging policy for an [idempotent](crate::Group::idempotent) call: after a delay
/// without an answer, start another attempt, up to a maximum; the first *success* wins and
/// the other attempts are cancelled (their futures dropped). The Tail at Scale's "hedged
/// requests", tower's `Hedge`, Finagle's backup requests.
///
/// * **The delay** is fixed ([`HedgeBuilder::delay`]), or adaptive
///   ([`HedgeBuilder::percentile`]): a percentile of the recent successful latencies of calls
///   of the same name made with this policy, over a rotating window, once it holds a minimum
///   number of samples (until then, no hedge is made). A delay of zero starts every attempt
///   at once.
/// * **Failures**: a failed attempt does not end the call while another is in flight, and a
///   failure starts the next attempt at once (if any are left). A panicking attempt ends
///   that attempt only; no further attempt starts after it (the others run on), and if it was
///   the last, the call gives up with it ([`StopReason::NotRetryable`](crate::StopReason)). The call fails when every
///   attempt it could make has failed, with a [`GaveUp`](crate::GaveUp) holding the last
///   error, or when the group ends it (its deadline, its cancellation, another call's
///   failure), which cancels every attempt.
/// * **The budget**: with a [`Budget`], every attempt after the first must be granted by
///   it; a refused hedge is not made, and logged and observed, and the call makes no more.
/// * **The deadline**: there is no minimum time left for a hedge (unlike
///   [`Retry::min_time_left`](crate::RetryBuilder::min_time_left)): a hedge may start just
///   before the deadline, and is cancelled with the rest when it passes.
/// * The adaptive delay learns from winners only, measured from their own start: slow
///   attempts that lose are not recorded, so the percentile leans low (more hedges) when
///   hedges win often.
/// * Each attempt gets a fresh child of the call's context, cancelled when it ends or loses.
///
/// # Cancellation
///
/// When the first success arrives, the other attempts' futures are dropped at once and their
/// contexts cancelled. The group's deadline, the caller's cancellation or another call's
/// failure drop every attempt in flight the same way, and no hedge starts after them: the
/// hedge delay never outlives the deadline.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use failfast::{BoxError, Context, FailFast, Hedge};
///
/// use futures::future::{BoxFuture, FutureExt};
///
/// let hedge = Hedge::builder().attempts(2).delay(Duration::from_millis(10)).build()?;
/// let ff = FailFast::builder().timeout(Duration::from_secs(1)).build()?;
/// # futures::executor::block_on(async {
/// let group = ff.group(&Context::background());
/// let mut attempt = 0;
/// let replica = move |_ctx: Context| -> BoxFuture<'static, Result<u32, BoxError>> {
///     attempt += 1;
///     match attempt {
///         1 => std::future::pending().boxed(), // a replica stuck in its tail
///         n => async move { Ok(n) }.boxed(),   // the hedge, 10 ms later, answers at once
///     }
/// };
/// let value = group.idempotent("kv", replica).hedge(hedge);
/// assert_eq!(group.run(value).await?, 2); // the hedge won; the stuck attempt was dropped
/// # Ok::<_, Box<dyn std::error::Error>>(()) })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Hedge {
    pub(crate) attempts: NonZeroU32,
    pub(crate) delay: Delay,
    pub(crate) budget: Option<Budget>,
}

/// Builds a [`Hedge`]; checked once in [`build`](HedgeBuilder::build).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let adaptive = failfast::Hedge::builder()
///     .attempts(2)
///     .percentile(95.0)
///     .window(Duration::from_secs(10), 100)
///     .build()?;
/// # Ok::<_, failfast::BuildError>(())
/// ```
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build()` is called"]
pub struct HedgeBuilder {
    attempts: u32,
    delay: Option<Duration>,
    percentile: Option<f64>,
    window: Duration,
    min_samples: usize,
    budget: Option<Budget>,
}

/// When the next attempt starts.
#[derive(Clone)]
pub(crate) enum Delay {
    Fixed(Duration),
    Adaptive(Arc<Latencies>),
}

/// The recent successful latencies of each call name, for an adaptive delay.
pub(crate) struct Latencies {
    percentile: f64,
    window: Duration,
    min_samples: usize,
    names: Mutex<HashMap<String, Window>>,
}

/// Two halves of a rotating window: the latencies of the current period and the previous one.
struct Window {
    started: Instant,
    current: Vec<Duration>,
    previous: Vec<Duration>,
    /// The percentile last computed, and how many latencies were recorded since: it is
    /// recomputed (a sort) only every `STALE` records or when the window rotates, not at
    /// every attempt.
    cached: Option<Duration>,
    since: usize,
}

/// How many new latencies make the cached percentile stale.
const STALE: usize = 32;

impl Hedge {
    /// A builder with the defaults: 2 attempts, a fixed delay of 10 ms, no budget.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(failfast::Hedge::builder().build()?.attempts(), 2);
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    pub fn builder() -> HedgeBuilder {
        HedgeBuilder {
            attempts: 2,
            delay: None,
            percentile: None,
            window: Duration::from_secs(10),
            min_samples: 100,
            budget: None,
        }
    }

    /// The maximum number of attempts, the first included.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(failfast::Hedge::builder().attempts(3).build()?.attempts(), 3);
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    pub fn attempts(&self) -> u32 {
        self.attempts.get()
    }

    /// The delay before the next attempt of the call `name` at `now`; `None`: no hedge yet
    /// (an adaptive delay without enough samples).
    pub(crate) fn delay(&self, name: &str, now: Instant) -> Option<Duration> {
        match &self.delay {
            Delay::Fixed(delay) => Some(*delay),
            Delay::Adaptive(latencies) => latencies.percentile(name, now),
        }
    }

    /// Records a successful attempt's latency, for an adaptive delay.
    pub(crate) fn record(&self, name: &str, now: Instant, latency: Duration) {
        if let Delay::Adaptive(latencies) = &self.delay {
            latencies.record(name, now, latency);
        }
    }
}

impl HedgeBuilder {
    /// The maximum number of attempts, the first included. Default: 2. Zero is a
    /// [`BuildError::ZeroAttempts`]; one never hedges.
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// A fixed delay between attempts. Default: 10 ms. Zero starts every attempt at once.
    /// It replaces a [`percentile`](HedgeBuilder::percentile) set before (and a percentile
    /// set after replaces it): the last of the two is the policy, and only it is checked.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self.percentile = None;
        self
    }

    /// An adaptive delay: this percentile (in `(0, 100)`) of the recent successful latencies
    /// of calls of the same name. Outside that range, [`BuildError::Percentile`].
    pub fn percentile(mut self, percentile: f64) -> Self {
        self.percentile = Some(percentile);
        self.delay = None;
        self
    }

    /// The adaptive delay's window (latencies older than about twice this are forgotten) and
    /// the samples it needs before it hedges. Default: 10 s and 100. A window of zero is a
    /// [`BuildError::ZeroWindow`] for an adaptive delay (it would never hedge); a
    /// `min_samples` of zero counts as one.
    pub fn window(mut self, window: Duration, min_samples: usize) -> Self {
        self.window = window;
        self.min_samples = min_samples;
        self
    }

    /// Draws every attempt after the first from `budget`. Default: no budget.
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`BuildError::ZeroAttempts`], [`BuildError::Percentile`] for a percentile outside
    /// `(0, 100)`, or [`BuildError::ZeroWindow`] for an adaptive delay over a window of zero.
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::{BuildError, Hedge};
    ///
    /// assert_eq!(Hedge::builder().percentile(100.0).build().unwrap_err(), BuildError::Percentile);
    /// ```
    pub fn build(self) -> Result<Hedge, BuildError> {
        let attempts = NonZeroU32::new(self.attempts).ok_or(BuildError::ZeroAttempts)?;
        let delay = match self.percentile {
            Some(percentile) if !(percentile > 0.0 && percentile < 100.0) => {
                return Err(BuildError::Percentile);
            }
            Some(_) if self.window.is_zero() => return Err(BuildError::ZeroWindow),
            Some(percentile) => Delay::Adaptive(Arc::new(Latencies {
                percentile,
                window: self.window,
                min_samples: self.min_samples.max(1),
                names: Mutex::new(HashMap::new()),
            })),
            None => Delay::Fixed(self.delay.unwrap_or(Duration::from_millis(10))),
        };
        Ok(Hedge {
            attempts,
            delay,
            budget: self.budget,
        })
    }
}

impl Latencies {
    fn record(&self, name: &str, now: Instant, latency: Duration) {
        let mut names = lock(&self.names);
        if !names.contains_key(name) {
            // The name is copied once, at its first success, not at every one.
            let window = Window {
                started: now,
                current: Vec::new(),
                previous: Vec::new(),
                cached: None,
                since: 0,
            };
            names.insert(name.to_owned(), window);
        }
        let Some(window) = names.get_mut(name) else {
            return;
        };
        window.rotate(now, self.window);
        if window.current.len() < KEPT {
            window.current.push(latency);
            window.since += 1;
        }
    }

    fn percentile(&self, name: &str, now: Instant) -> Option<Duration> {
        let mut names = lock(&self.names);
        let window = names.get_mut(name)?;
        window.rotate(now, self.window);
        if window.since < STALE {
            if let Some(cached) = window.cached {
                return Some(cached);
            }
        }
        window.since = 0;
        let mut all: Vec<Duration> = window
            .previous
            .iter()
            .chain(&window.current)
            .copied()
            .collect();
        if all.len() < self.min_samples {
            window.cached = None;
            return None;
        }
        all.sort_unstable();
        // Nearest rank: the smallest latency at or above `percentile` of the samples.
        let rank = (self.percentile / 100.0 * all.len() as f64).ceil() as usize;
        let percentile = all[rank.clamp(1, all.len()) - 1];
        window.cached = Some(percentile);
        Some(percentile)
    }
}

impl Window {
    fn rotate(&mut self, now: Instant, period: Duration) {
        let passed = now.saturating_duration_since(self.started);
        if passed >= period * 2 {
            self.previous.clear();
            self.current.clear();
            self.started = now;
            self.cached = None;
        } else if passed >= period {
            self.previous = std::mem::take(&mut self.current);
            self.started += period;
            self.cached = None;
        }
    }
}

impl fmt::Debug for Hedge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Hedge");
        debug.field("attempts", &self.attempts);
        match &self.delay {
            Delay::Fixed(delay) => debug.field("delay", delay),
            Delay::Adaptive(latencies) => debug.field("percentile", &latencies.percentile),
        };
        debug.field("budget", &self.budget).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_adaptive_delay_is_the_percentile_of_recent_successes_once_there_are_enough() {
        let hedge = Hedge::builder()
            .percentile(95.0)
            .window(Duration::from_secs(10), 20)
            .build()
            .unwrap();
        let now = Instant::now();
        for ms in 1..=19 {
            hedge.record("kv", now, Duration::from_millis(ms));
        }
        assert_eq!(hedge.delay("kv", now), None, "19 samples are not enough");
        hedge.record("kv", now, Duration::from_millis(20));
        assert_eq!(hedge.delay("kv", now), Some(Duration::from_millis(19)));
        assert_eq!(hedge.delay("other", now), None, "per call name");
        let later = now + Duration::from_secs(25);
        assert_eq!(
            hedge.delay("kv", later),
            None,
            "forgotten after two windows"
        );
    }
}
