//! [`Manual`]: virtual time that moves only when a test says so.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use super::Timer;
use crate::sync::lock;

/// A virtual clock for tests: sleeps complete only when the test [`advance`](Manual::advance)s
/// it, so timeout tests are exact and instant on any executor. On
/// [`Inline`](crate::executor::Inline) they are fully deterministic; spawned calls run on
/// their own threads, so a test waits for them (for example until
/// [`sleepers`](Manual::sleepers) counts every party asleep) before advancing.
///
/// The clock starts at the real `Instant::now()` of [`Manual::new`] and then stands still.
/// Clones share the clock. Give the same `Manual` to the aggregator and to the mock services
/// (see [`mock::Mock::timer`](crate::mock::Mock::timer)) so that both live in virtual time.
/// A context lives in virtual time once this clock is attached to it
/// ([`Context::with_timer`](crate::Context::with_timer)), as it is to the contexts a group
/// on this timer hands its calls: their `with_timeout` counts from this clock, and their
/// [`done`](crate::Context::done) fires as it advances.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use futures::FutureExt;
/// use failfast::{timer::Manual, Timer};
///
/// let clock = Manual::new();
/// let mut nap = clock.sleep(Duration::from_secs(10));
/// assert!((&mut nap).now_or_never().is_none()); // polled once: registered, pending
/// assert_eq!(clock.sleepers(), 1);
///
/// clock.advance(Duration::from_secs(9));
/// assert!((&mut nap).now_or_never().is_none());
/// clock.advance(Duration::from_secs(1));
/// assert!(nap.now_or_never().is_some()); // exactly 10 s of virtual time
/// assert_eq!(clock.elapsed(), Duration::from_secs(10));
/// ```
#[derive(Clone)]
pub struct Manual {
    clock: Arc<Mutex<Clock>>,
}

/// The sleep of [`Manual`].
///
/// Registered with the clock when first polled; dropping it unregisters it.
#[must_use = "futures do nothing unless you .await or poll them"]
pub struct ManualSleep {
    clock: Arc<Mutex<Clock>>,
    /// `None`: the deadline cannot be represented, so the sleep never completes.
    deadline: Option<Instant>,
    /// This sleep's entry in the clock, once registered.
    key: Option<(Instant, u64)>,
}

struct Clock {
    start: Instant,
    now: Instant,
    next_id: u64,
    sleepers: BTreeMap<(Instant, u64), Waker>,
}

impl Manual {
    /// A clock that reads the real `Instant::now()` and stands still from then on.
    ///
    /// # Examples
    ///
    /// ```
    /// let clock = failfast::timer::Manual::new();
    /// assert_eq!(clock.elapsed(), std::time::Duration::ZERO);
    /// ```
    pub fn new() -> Manual {
        let now = Instant::now();
        Manual {
            clock: Arc::new(Mutex::new(Clock {
                start: now,
                now,
                next_id: 0,
                sleepers: BTreeMap::new(),
            })),
        }
    }

    /// Moves the clock forward by `duration` and wakes every sleep that is now due.
    ///
    /// Advancing beyond what `Instant` can represent wakes every registered sleep and leaves
    /// the clock at its latest registered deadline.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let clock = failfast::timer::Manual::new();
    /// clock.advance(Duration::from_millis(1500));
    /// assert_eq!(clock.elapsed(), Duration::from_millis(1500));
    /// ```
    pub fn advance(&self, duration: Duration) {
        let due: Vec<Waker> = {
            let mut clock = lock(&self.clock);
            let target = match clock.now.checked_add(duration) {
                Some(target) => target,
                None => clock
                    .sleepers
                    .keys()
                    .next_back()
                    .map_or(clock.now, |&(deadline, _)| deadline.max(clock.now)),
            };
            clock.now = target;
            let later = clock.sleepers.split_off(&(target, u64::MAX));
            std::mem::replace(&mut clock.sleepers, later)
                .into_values()
                .collect()
        };
        // Wake outside the lock: a woken task may poll (and lock the clock) right away.
        for waker in due {
            waker.wake();
        }
    }

    /// The clock's current (virtual) time; the same as [`Timer::now`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let clock = failfast::timer::Manual::new();
    /// let before = clock.now();
    /// clock.advance(Duration::from_secs(1));
    /// assert_eq!(clock.now() - before, Duration::from_secs(1));
    /// ```
    pub fn now(&self) -> Instant {
        lock(&self.clock).now
    }

    /// Virtual time passed since [`Manual::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// let clock = failfast::timer::Manual::new();
    /// clock.advance(std::time::Duration::from_secs(2));
    /// assert_eq!(clock.elapsed().as_secs(), 2);
    /// ```
    pub fn elapsed(&self) -> Duration {
        let clock = lock(&self.clock);
        clock.now - clock.start
    }

    /// How many sleeps are registered and waiting: polled at least once, not yet due, not
    /// dropped. Tests use it to wait until every party is asleep before advancing.
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::{timer::Manual, Timer};
    /// let clock = Manual::new();
    /// let _unpolled = clock.sleep(std::time::Duration::from_secs(1));
    /// assert_eq!(clock.sleepers(), 0);
    /// ```
    pub fn sleepers(&self) -> usize {
        lock(&self.clock).sleepers.len()
    }

    /// The earliest deadline among the registered sleeps, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures::FutureExt;
    /// use failfast::{timer::Manual, Timer};
    /// use std::time::Duration;
    ///
    /// let clock = Manual::new();
    /// let mut nap = clock.sleep(Duration::from_secs(3));
    /// let _ = (&mut nap).now_or_never();
    /// assert_eq!(clock.next_deadline(), Some(clock.now() + Duration::from_secs(3)));
    /// ```
    pub fn next_deadline(&self) -> Option<Instant> {
        lock(&self.clock)
            .sleepers
            .keys()
            .next()
            .map(|&(deadline, _)| deadline)
    }
}

impl Default for Manual {
    fn default() -> Manual {
        Manual::new()
    }
}

impl fmt::Debug for Manual {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let clock = lock(&self.clock);
        f.debug_struct("Manual")
            .field("elapsed", &(clock.now - clock.start))
            .field("sleepers", &clock.sleepers.len())
            .finish()
    }
}

impl Timer for Manual {
    type Sleep = ManualSleep;

    fn sleep(&self, duration: Duration) -> ManualSleep {
        let deadline = Manual::now(self).checked_add(duration);
        ManualSleep {
            clock: self.clock.clone(),
            deadline,
            key: None,
        }
    }

    fn sleep_until(&self, deadline: Instant) -> ManualSleep {
        ManualSleep {
            clock: self.clock.clone(),
            deadline: Some(deadline),
            key: None,
        }
    }

    fn now(&self) -> Instant {
        Manual::now(self)
    }
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = &mut *self;
        let Some(deadline) = this.deadline else {
            return Poll::Pending;
        };
        let mut clock = lock(&this.clock);
        if clock.now >= deadline {
            if let Some(key) = this.key.take() {
                clock.sleepers.remove(&key);
            }
            return Poll::Ready(());
        }
        let key = *this.key.get_or_insert_with(|| {
            clock.next_id += 1;
            (deadline, clock.next_id)
        });
        match clock.sleepers.get_mut(&key) {
            Some(waker) => waker.clone_from(cx.waker()),
            None => {
                clock.sleepers.insert(key, cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for ManualSleep {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            lock(&self.clock).sleepers.remove(&key);
        }
    }
}

impl fmt::Debug for ManualSleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualSleep")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
