//! Configurable mock services for tests and examples: a value, a delay, an error, a panic or a
//! hang, with counters that prove whether a call was cancelled.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use failfast::{mock, UserAggregator};
//!
//! let profiles = mock::profile("Alice").delay(Duration::from_millis(5));
//! let orders = mock::orders(5).fail("order db down");
//! let (profile_calls, order_calls) = (profiles.calls(), orders.calls());
//!
//! let agg = UserAggregator::builder(profiles, orders).build()?;
//! let result = futures::executor::block_on(agg.aggregate(&failfast::Context::background(), 7));
//!
//! assert_eq!(result.unwrap_err().to_string(), "orders service failed");
//! assert_eq!(order_calls.finished(), 1);
//! assert_eq!(profile_calls.cancelled(), 1); // dropped while it slept
//! # Ok::<_, failfast::BuildError>(())
//! ```

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sync::lock;
use crate::timer::{DefaultTimer, Timer};
use crate::{BoxError, Context, OrderService, Profile, ProfileService, UserId};

/// A mock Profile service answering `Profile::new(name)`.
///
/// # Examples
///
/// ```
/// let profiles = failfast::mock::profile("Alice");
/// ```
pub fn profile(name: impl Into<String>) -> Mock<Profile> {
    Mock::new(Profile::new(name))
}

/// A mock Order service answering `count`.
///
/// # Examples
///
/// ```
/// let orders = failfast::mock::orders(5);
/// ```
pub fn orders(count: u32) -> Mock<u32> {
    Mock::new(count)
}

/// A mock service: answers its value (or fails, panics or hangs) after an optional delay.
///
/// `Mock<Profile, _>` is a [`ProfileService`] and `Mock<u32, _>` an [`OrderService`]. Clones
/// share their [`Calls`] counters. A mock does not watch its context: it is cancelled only by
/// being dropped, which is what the counters observe.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use failfast::mock::Mock;
///
/// let slow = Mock::new(5_u32).delay(Duration::from_secs(2));
/// let broken = Mock::new(5_u32).fail("connection refused");
/// let crashing = Mock::new(5_u32).panic("index out of bounds");
/// let stuck = Mock::new(5_u32).hang();
/// ```
#[derive(Clone)]
pub struct Mock<V, T = DefaultTimer> {
    value: V,
    outcome: Outcome,
    delay: Duration,
    timer: T,
    calls: Calls,
}

#[derive(Debug, Clone)]
enum Outcome {
    Value,
    Fail(String),
    Panic(String),
    Hang,
}

/// Counts the calls made to a [`Mock`]: how many started, finished and were cancelled.
///
/// A call starts when the service is called (its future is created), finishes when it returns
/// or panics, and is cancelled when its future is dropped before that, polled or not.
///
/// # Examples
///
/// ```
/// let orders = failfast::mock::orders(5);
/// let calls = orders.calls();
/// assert_eq!((calls.started(), calls.finished(), calls.cancelled()), (0, 0, 0));
/// ```
#[derive(Clone, Default)]
pub struct Calls {
    inner: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    started: AtomicUsize,
    finished: AtomicUsize,
    cancelled: AtomicUsize,
    last_context: Mutex<Option<Context>>,
}

impl<V> Mock<V> {
    /// A mock that answers `value` at once.
    ///
    /// # Examples
    ///
    /// ```
    /// let orders = failfast::mock::Mock::new(5_u32);
    /// ```
    pub fn new(value: V) -> Mock<V> {
        Mock {
            value,
            outcome: Outcome::Value,
            delay: Duration::ZERO,
            timer: DefaultTimer::default(),
            calls: Calls::default(),
        }
    }
}

impl<V, T> Mock<V, T> {
    /// Answers only after `delay`, measured by the mock's timer. Default: no delay.
    ///
    /// # Examples
    ///
    /// ```
    /// let orders = failfast::mock::orders(5).delay(std::time::Duration::from_millis(300));
    /// ```
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Returns an error with this message (after the delay) instead of the value.
    ///
    /// # Examples
    ///
    /// ```
    /// let orders = failfast::mock::orders(5).fail("connection refused");
    /// ```
    pub fn fail(mut self, message: impl Into<String>) -> Self {
        self.outcome = Outcome::Fail(message.into());
        self
    }

    /// Panics with this message (after the delay) instead of answering.
    ///
    /// # Examples
    ///
    /// ```
    /// let orders = failfast::mock::orders(5).panic("index out of bounds");
    /// ```
    pub fn panic(mut self, message: impl Into<String>) -> Self {
        self.outcome = Outcome::Panic(message.into());
        self
    }

    /// Never answers (after the delay, if any): only cancellation ends the call.
    ///
    /// # Examples
    ///
    /// ```
    /// let orders = failfast::mock::orders(5).hang();
    /// ```
    pub fn hang(mut self) -> Self {
        self.outcome = Outcome::Hang;
        self
    }

    /// Sleeps on `timer`, such as a shared [`timer::Manual`](crate::timer::Manual) for virtual
    /// time. Default: `timer::FuturesTimer` (without the `futures-timer` feature, none: set one).
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::{mock, timer::Manual};
    ///
    /// let clock = Manual::new();
    /// let orders = mock::orders(5).timer(clock.clone());
    /// ```
    pub fn timer<T2: Timer>(self, timer: T2) -> Mock<V, T2> {
        Mock {
            value: self.value,
            outcome: self.outcome,
            delay: self.delay,
            timer,
            calls: self.calls,
        }
    }

    /// The counters of this mock and all its clones.
    ///
    /// # Examples
    ///
    /// ```
    /// let orders = failfast::mock::orders(5);
    /// let calls = orders.calls();
    /// assert_eq!(calls.in_flight(), 0);
    /// ```
    pub fn calls(&self) -> Calls {
        self.calls.clone()
    }
}

impl<V, T> Mock<V, T>
where
    V: Clone + Send + Sync + 'static,
    T: Timer,
{
    fn answer(&self, ctx: Context) -> impl Future<Output = Result<V, BoxError>> + Send + 'static {
        // The guard exists from the call on, so a future dropped before its first poll still
        // counts as started and cancelled.
        let guard = self.calls.start(ctx);
        let sleep = (!self.delay.is_zero()).then(|| self.timer.sleep(self.delay));
        let value = self.value.clone();
        let outcome = self.outcome.clone();
        async move {
            if let Some(sleep) = sleep {
                sleep.await;
            }
            match outcome {
                Outcome::Value => {
                    guard.finish();
                    Ok(value)
                }
                Outcome::Fail(message) => {
                    guard.finish();
                    Err(message.into())
                }
                Outcome::Panic(message) => {
                    guard.finish();
                    panic!("{message}");
                }
                Outcome::Hang => {
                    std::future::pending::<()>().await;
                    unreachable!("a pending future never completes");
                }
            }
        }
    }
}

impl<T: Timer> ProfileService for Mock<Profile, T> {
    fn profile(
        &self,
        ctx: Context,
        _id: UserId,
    ) -> impl Future<Output = Result<Profile, BoxError>> + Send {
        self.answer(ctx)
    }
}

impl<T: Timer> OrderService for Mock<u32, T> {
    fn order_count(
        &self,
        ctx: Context,
        _id: UserId,
    ) -> impl Future<Output = Result<u32, BoxError>> + Send {
        self.answer(ctx)
    }
}

impl<V: fmt::Debug, T: fmt::Debug> fmt::Debug for Mock<V, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mock")
            .field("value", &self.value)
            .field("outcome", &self.outcome)
            .field("delay", &self.delay)
            .field("timer", &self.timer)
            .field("calls", &self.calls)
            .finish()
    }
}

impl Calls {
    /// Calls made so far.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(failfast::mock::orders(5).calls().started(), 0);
    /// ```
    pub fn started(&self) -> usize {
        self.inner.started.load(Ordering::SeqCst)
    }

    /// Calls that returned (a value or an error) or panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(failfast::mock::orders(5).calls().finished(), 0);
    /// ```
    pub fn finished(&self) -> usize {
        self.inner.finished.load(Ordering::SeqCst)
    }

    /// Calls whose future was dropped before it finished.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(failfast::mock::orders(5).calls().cancelled(), 0);
    /// ```
    pub fn cancelled(&self) -> usize {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Calls whose future is still alive: started, neither finished nor cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(failfast::mock::orders(5).calls().in_flight(), 0);
    /// ```
    pub fn in_flight(&self) -> usize {
        // Read the ends before the start, so a call that ends meanwhile is not counted twice.
        let ended = self.finished() + self.cancelled();
        self.started().saturating_sub(ended)
    }

    /// The context the most recent call was given.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(failfast::mock::orders(5).calls().last_context().is_none());
    /// ```
    pub fn last_context(&self) -> Option<Context> {
        lock(&self.inner.last_context).clone()
    }

    fn start(&self, ctx: Context) -> CallGuard {
        *lock(&self.inner.last_context) = Some(ctx);
        self.inner.started.fetch_add(1, Ordering::SeqCst);
        CallGuard {
            calls: Some(self.clone()),
        }
    }
}

impl fmt::Debug for Calls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Calls")
            .field("started", &self.started())
            .field("finished", &self.finished())
            .field("cancelled", &self.cancelled())
            .finish()
    }
}

/// Lives inside one call's future: counts it finished, or cancelled if dropped first.
struct CallGuard {
    calls: Option<Calls>,
}

impl CallGuard {
    fn finish(mut self) {
        if let Some(calls) = self.calls.take() {
            calls.inner.finished.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if let Some(calls) = self.calls.take() {
            calls.inner.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}
