//! [`UserAggregator`]: the kata's dashboard, built from two services with fail-fast semantics,
//! as a short client of the public [`FailFast`] group.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::try_join;

use crate::executor::{Executor, Inline};
use crate::records::Logger;
use crate::timer::{DefaultTimer, Timer};
use crate::{
    AggregateError, BuildError, Context, FailFast, OrderService, Profile, ProfileService, UserId,
};

/// The default of [`UserAggregatorBuilder::timeout`].
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the dashboard shows: a user's profile and order count.
///
/// Displays as `User: Alice | Orders: 5`.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// use failfast::{mock, Context, UserAggregator};
///
/// let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5)).build()?;
/// let dashboard = agg.aggregate(&Context::background(), 42).await?;
/// assert_eq!(dashboard.profile.name, "Alice");
/// assert_eq!(dashboard.orders, 5);
/// assert_eq!(dashboard.to_string(), "User: Alice | Orders: 5");
/// # Ok::<_, Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Dashboard {
    /// From the Profile service.
    pub profile: Profile,
    /// From the Order service.
    pub orders: u32,
}

impl Dashboard {
    /// A dashboard from its parts, for tests and fakes.
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::{Dashboard, Profile};
    ///
    /// let dashboard = Dashboard::new(Profile::new("Alice"), 5);
    /// assert_eq!(dashboard.to_string(), "User: Alice | Orders: 5");
    /// ```
    pub fn new(profile: Profile, orders: u32) -> Dashboard {
        Dashboard { profile, orders }
    }
}

impl fmt::Display for Dashboard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "User: {} | Orders: {}", self.profile.name, self.orders)
    }
}

/// Builds a [`Dashboard`] from a [`ProfileService`] and an [`OrderService`], queried
/// concurrently, failing fast.
///
/// Built with [`UserAggregator::builder`]. It is `Send + Sync`: share one in an `Arc` and call
/// [`aggregate`](UserAggregator::aggregate) from many tasks at once.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use failfast::{mock, Context, UserAggregator};
///
/// let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
///     .timeout(Duration::from_secs(1))
///     .build()?;
/// # futures::executor::block_on(async {
/// let dashboard = agg.aggregate(&Context::background(), 42).await?;
/// assert_eq!(dashboard.to_string(), "User: Alice | Orders: 5");
/// # Ok::<_, failfast::AggregateError>(()) })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
pub struct UserAggregator<P, O, E = Inline, T = DefaultTimer> {
    profiles: Arc<P>,
    orders: Arc<O>,
    ff: FailFast<E, T>,
    timeout: Duration,
}

/// Configures a [`UserAggregator`]: Go's functional options, as a builder.
///
/// The services are required and given to [`UserAggregator::builder`]; everything else has a
/// documented default. Nothing is checked until [`build`](UserAggregatorBuilder::build).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use failfast::{executor, mock, timer, UserAggregator};
///
/// let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
///     .timeout(Duration::from_millis(500))
///     .executor(executor::Inline)
///     .timer(timer::Manual::new())
///     .build()?;
/// # Ok::<_, failfast::BuildError>(())
/// ```
#[must_use = "a builder does nothing until you call `build`"]
pub struct UserAggregatorBuilder<P, O, E = Inline, T = DefaultTimer> {
    profiles: P,
    orders: O,
    executor: E,
    timer: T,
    timeout: Duration,
    logger: Logger,
}

impl<P, O> UserAggregator<P, O> {
    /// Starts configuring an aggregator over these two services.
    ///
    /// Defaults: timeout 2 s, [`executor::Inline`](crate::executor::Inline),
    /// `timer::FuturesTimer` (without the `futures-timer` feature there is no default timer:
    /// set one with [`timer`](UserAggregatorBuilder::timer)), the global `log` logger.
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::{mock, UserAggregator};
    ///
    /// let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5)).build()?;
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    #[doc(alias = "new")]
    pub fn builder(profiles: P, orders: O) -> UserAggregatorBuilder<P, O> {
        UserAggregatorBuilder {
            profiles,
            orders,
            executor: Inline,
            timer: DefaultTimer::default(),
            timeout: DEFAULT_TIMEOUT,
            logger: Logger::Global,
        }
    }
}

impl<P, O, E, T> UserAggregatorBuilder<P, O, E, T> {
    /// The most time one aggregate may take. Default: 2 s.
    ///
    /// The effective deadline of each call is the earlier of this timeout and the caller's
    /// context deadline. `Duration::ZERO` is rejected by [`build`](Self::build); a timeout too
    /// large to add to an `Instant` (such as `Duration::MAX`) means "no timeout of its own":
    /// only the caller's deadline applies.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::{mock, UserAggregator};
    ///
    /// let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
    ///     .timeout(Duration::from_secs(1))
    ///     .build()?;
    /// assert_eq!(agg.timeout(), Duration::from_secs(1));
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    #[doc(alias = "WithTimeout")]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where the calls run. Default: [`executor::Inline`](crate::executor::Inline), inside the
    /// caller's task.
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::{mock, UserAggregator};
    /// use futures::{executor::ThreadPool, future::BoxFuture};
    ///
    /// // With the `tokio` feature: `.executor(failfast::executor::Tokio::new(handle))`.
    /// let pool = ThreadPool::new()?;
    /// let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
    ///     .executor(move |task: BoxFuture<'static, ()>| pool.spawn_ok(task))
    ///     .build()?;
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn executor<E2: Executor>(self, executor: E2) -> UserAggregatorBuilder<P, O, E2, T> {
        UserAggregatorBuilder {
            profiles: self.profiles,
            orders: self.orders,
            executor,
            timer: self.timer,
            timeout: self.timeout,
            logger: self.logger,
        }
    }

    /// The clock that enforces the deadline. Default:
    /// `timer::FuturesTimer` (feature `futures-timer`).
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::{mock, timer, UserAggregator};
    ///
    /// let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
    ///     .timer(timer::Manual::new()) // virtual time, for tests
    ///     .build()?;
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    pub fn timer<T2: Timer>(self, timer: T2) -> UserAggregatorBuilder<P, O, E, T2> {
        UserAggregatorBuilder {
            profiles: self.profiles,
            orders: self.orders,
            executor: self.executor,
            timer,
            timeout: self.timeout,
            logger: self.logger,
        }
    }

    /// Sends this aggregator's log records to `logger` instead of the global one. Default: the
    /// global `log` logger.
    ///
    /// Records are still filtered by `log::max_level()` first, as every `log` macro is; set it
    /// (`log::set_max_level`) if no global logger is installed.
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::{mock, UserAggregator};
    ///
    /// struct Stderr;
    /// impl log::Log for Stderr {
    ///     fn enabled(&self, _: &log::Metadata<'_>) -> bool { true }
    ///     fn log(&self, record: &log::Record<'_>) { eprintln!("{}", record.args()) }
    ///     fn flush(&self) {}
    /// }
    ///
    /// let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
    ///     .logger(Stderr)
    ///     .build()?;
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    #[doc(alias = "slog")]
    pub fn logger(mut self, logger: impl log::Log + 'static) -> Self {
        self.logger = Logger::Custom(Arc::new(logger));
        self
    }

    /// Checks the settings and builds the aggregator.
    ///
    /// # Errors
    ///
    /// [`BuildError::ZeroTimeout`] if the timeout is zero.
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::{mock, UserAggregator};
    ///
    /// let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5)).build();
    /// assert!(agg.is_ok());
    /// ```
    pub fn build(self) -> Result<UserAggregator<P, O, E, T>, BuildError>
    where
        P: ProfileService,
        O: OrderService,
        E: Executor,
        T: Timer,
    {
        if self.timeout.is_zero() {
            return Err(BuildError::ZeroTimeout);
        }
        Ok(UserAggregator {
            profiles: Arc::new(self.profiles),
            orders: Arc::new(self.orders),
            ff: FailFast {
                executor: self.executor,
                clock: Arc::new(self.timer.clone()),
                timer: self.timer,
                timeout: Some(self.timeout),
                limit: None,
                logger: self.logger,
                observer: None,
            },
            timeout: self.timeout,
        })
    }
}

impl<P, O, E, T> UserAggregator<P, O, E, T>
where
    P: ProfileService,
    O: OrderService,
    E: Executor,
    T: Timer,
{
    /// Fetches the profile and the order count of `id` concurrently and combines them.
    ///
    /// It is a [`Group`](crate::Group) of two calls, `"profile"` and `"orders"`, joined with
    /// `try_join`: both are started at once (spawned, or polled together on
    /// [`Inline`](crate::executor::Inline)), each with a child of `ctx` that carries the
    /// effective deadline: the earlier of `ctx`'s deadline and the aggregator's timeout. A
    /// service is called when its call is first polled, so if the profile call fails on its
    /// very first poll on `Inline`, the Order service is never called at all. The first of
    /// these ends the aggregate:
    ///
    /// * both calls answer: `Ok(Dashboard)`;
    /// * a call fails or panics: that error, at once; the other call is cancelled;
    /// * the deadline passes: [`AggregateError::DeadlineExceeded`]; both calls are cancelled;
    /// * `ctx` is cancelled: [`AggregateError::Cancelled`]; both calls are cancelled.
    ///
    /// "Cancelled" means the call's future is dropped (aborted, if it was spawned) and the
    /// context it was given is cancelled; it is not left running to finish on its own.
    ///
    /// **Ties.** When several of these are seen in the same poll (on
    /// [`Inline`](crate::executor::Inline), everything due at the same instant is), they are
    /// decided in this order: a call's failure, then answers (both calls having answered is a
    /// success even if the deadline or a cancellation is also due), then cancellation, then
    /// the deadline (but a `ctx` whose own deadline had passed before it was cancelled ends in
    /// `DeadlineExceeded`, as its [`err`](crate::Context::err) says: that order is known, not
    /// a tie). If both calls fail in the same poll, the profile call's error is
    /// reported; spawned calls report from their own tasks, so there the first failure to
    /// arrive wins. A service error observed once `ctx` has
    /// been cancelled or the deadline has passed is reported as `Cancelled` or
    /// `DeadlineExceeded`: a service that honours its context fails *because* of them, and
    /// the cause is what the caller needs (the service's own error is logged at debug level).
    /// Panics are never rewritten as `Cancelled` or `DeadlineExceeded`. Spawned calls report
    /// through their own tasks, so an outcome due exactly at the deadline may arrive after it.
    ///
    /// # Errors
    ///
    /// * [`AggregateError::Service`] when a service returns an error (`service` is
    ///   `"profile"` or `"orders"`; the service's error is the `source`);
    /// * [`AggregateError::Panicked`] when a service panics;
    /// * [`AggregateError::DeadlineExceeded`] when the deadline passes first, or had already
    ///   passed (then nothing is started);
    /// * [`AggregateError::Cancelled`] when `ctx` is cancelled first, or already was (then
    ///   nothing is started);
    /// * [`AggregateError::Dropped`] when the executor drops a call's task unfinished, as a
    ///   runtime that is shutting down does;
    /// * [`AggregateError::Timer`] when the timer panics, as tokio's does once its runtime has
    ///   shut down.
    ///
    /// # Panics
    ///
    /// Panics of the services (polling or dropping them) and of the timer's sleep (creating or
    /// polling it) are contained (see above). A panic in the
    /// executor's own `spawn`, or in a logger, unwinds out of `aggregate` to the caller; the
    /// calls already started are cancelled as it unwinds.
    ///
    /// # Cancellation
    ///
    /// Dropping the returned future cancels both calls: spawned calls are aborted (their
    /// futures are dropped on their executor), inline calls are dropped in place, and their
    /// context is cancelled. Nothing keeps running.
    ///
    /// # Examples
    ///
    /// Domino Effect: the Profile service fails at once, so the slow Orders call is cancelled
    /// instead of awaited.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use failfast::{mock, AggregateError, Context, UserAggregator};
    ///
    /// let orders = mock::orders(5).delay(Duration::from_secs(10));
    /// let calls = orders.calls();
    /// let agg = UserAggregator::builder(mock::profile("Alice").fail("profile db down"), orders).build()?;
    ///
    /// # futures::executor::block_on(async {
    /// let start = Instant::now();
    /// let err = agg.aggregate(&Context::background(), 42).await.unwrap_err();
    /// assert!(matches!(err, AggregateError::Service { .. }));
    /// assert_eq!(err.service(), Some("profile"));
    /// assert!(start.elapsed() < Duration::from_secs(1));
    /// assert_eq!(calls.finished(), 0); // the Orders call never completed
    /// assert_eq!(calls.in_flight(), 0); // and nothing was left running
    /// # });
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub async fn aggregate(&self, ctx: &Context, id: UserId) -> Result<Dashboard, AggregateError> {
        let group = self.ff.group(ctx).log_field("user_id", id);
        let (profiles, orders) = (Arc::clone(&self.profiles), Arc::clone(&self.orders));
        let (profile, orders) = group
            .run(try_join(
                group.call("profile", move |ctx| async move {
                    profiles.profile(ctx, id).await
                }),
                group.call("orders", move |ctx| async move {
                    orders.order_count(ctx, id).await
                }),
            ))
            .await?;
        Ok(Dashboard { profile, orders })
    }

    /// The timeout set with [`UserAggregatorBuilder::timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::{mock, UserAggregator};
    ///
    /// let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5)).build()?;
    /// assert_eq!(agg.timeout(), std::time::Duration::from_secs(2));
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl<P, O, E: fmt::Debug, T: fmt::Debug> fmt::Debug for UserAggregator<P, O, E, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserAggregator")
            .field("ff", &self.ff)
            .finish_non_exhaustive()
    }
}

impl<P, O, E: fmt::Debug, T: fmt::Debug> fmt::Debug for UserAggregatorBuilder<P, O, E, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserAggregatorBuilder")
            .field("timeout", &self.timeout)
            .field("executor", &self.executor)
            .field("timer", &self.timer)
            .field("logger", &self.logger)
            .finish_non_exhaustive()
    }
}
