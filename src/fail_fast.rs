//! [`FailFast`]: the reusable settings of fail-fast groups, and its builder.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::context::{Clock, Context};
use crate::error::BuildError;
use crate::executor::{Executor, Inline};
use crate::group::Group;
use crate::observer::Observer;
use crate::records::Logger;
use crate::timer::{DefaultTimer, Timer};

/// Where groups run and how long they may take: Go's `errgroup.WithContext` with the
/// settings made once, for every fan-out of your service.
///
/// Build one with [`FailFast::builder`]; then each fan-out is a [`Group`], made with
/// [`group`](FailFast::group). A `FailFast` is `Send + Sync` when its executor and timer are:
/// share one in an `Arc` and make groups from many tasks at once.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use failfast::{BoxError, Context, FailFast};
/// use futures::future::try_join_all;
///
/// let ff = FailFast::builder()
///     .timeout(Duration::from_secs(1))
///     .limit(8)
///     .build()?;
/// # futures::executor::block_on(async {
/// let group = ff.group(&Context::background());
/// let shards = group
///     .run(try_join_all((0..32).map(|i| {
///         group.call(format!("shard-{i}"), move |_ctx| async move { Ok::<_, BoxError>(i * 10) })
///     })))
///     .await?;
/// assert_eq!(shards[31], 310); // in input order
/// # Ok::<_, failfast::Error>(()) })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
pub struct FailFast<E = Inline, T = DefaultTimer> {
    pub(crate) executor: E,
    pub(crate) timer: T,
    pub(crate) timeout: Option<Duration>,
    pub(crate) limit: Option<NonZeroUsize>,
    pub(crate) logger: Logger,
    pub(crate) observer: Option<Arc<dyn Observer>>,
    /// The timer again, as the clock of the contexts handed to calls: made once, shared by
    /// every group.
    pub(crate) clock: Arc<dyn Clock>,
}

/// Configures a [`FailFast`]: Go's functional options, as a builder.
///
/// Every setting has a documented default; nothing is checked until
/// [`build`](FailFastBuilder::build).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use failfast::{executor, timer, FailFast};
///
/// let ff = FailFast::builder()
///     .timeout(Duration::from_millis(500))
///     .executor(executor::Inline)
///     .timer(timer::Manual::new())
///     .limit(4)
///     .build()?;
/// # Ok::<_, failfast::BuildError>(())
/// ```
#[must_use = "a builder does nothing until you call `build`"]
pub struct FailFastBuilder<E = Inline, T = DefaultTimer> {
    executor: E,
    timer: T,
    timeout: Option<Duration>,
    limit: Option<usize>,
    logger: Logger,
    observer: Option<Arc<dyn Observer>>,
}

impl FailFast {
    /// Starts configuring groups.
    ///
    /// Defaults: no timeout of its own (the caller's deadline only), no limit,
    /// [`executor::Inline`](crate::executor::Inline), `timer::FuturesTimer` (without the
    /// `futures-timer` feature there is no default timer: set one with
    /// [`timer`](FailFastBuilder::timer)), the global `log` logger, no observer.
    ///
    /// # Examples
    ///
    /// ```
    /// let ff = failfast::FailFast::builder().build()?;
    /// assert_eq!(ff.timeout(), None);
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    #[doc(alias = "new")]
    pub fn builder() -> FailFastBuilder {
        FailFastBuilder {
            executor: Inline,
            timer: DefaultTimer::default(),
            timeout: None,
            limit: None,
            logger: Logger::Global,
            observer: None,
        }
    }
}

impl<E, T> FailFastBuilder<E, T> {
    /// The most time one group may take, counted from [`FailFast::group`]. Default: none of its
    /// own, only the caller's context deadline.
    ///
    /// The group's deadline is the earlier of this timeout and the caller's. `Duration::ZERO`
    /// is rejected by [`build`](Self::build); a timeout too large to add to an `Instant` (such
    /// as `Duration::MAX`) means no timeout of its own.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let ff = failfast::FailFast::builder().timeout(Duration::from_secs(1)).build()?;
    /// assert_eq!(ff.timeout(), Some(Duration::from_secs(1)));
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    #[doc(alias = "WithTimeout")]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// At most `limit` calls of one group run at once; the others wait for a slot, in the order
    /// they were made, inside the group's deadline. Go's `errgroup.SetLimit`. Default: no limit.
    ///
    /// `limit(0)` is rejected by [`build`](Self::build).
    ///
    /// # Examples
    ///
    /// ```
    /// let ff = failfast::FailFast::builder().limit(16).build()?;
    /// assert_eq!(ff.limit(), Some(16));
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    #[doc(alias = "SetLimit")]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Where the calls run. Default: [`executor::Inline`](crate::executor::Inline), inside the
    /// task that awaits the group.
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::FailFast;
    /// use futures::{executor::ThreadPool, future::BoxFuture};
    ///
    /// // With the `tokio` feature: `.executor(failfast::executor::Tokio::new(handle))`.
    /// let pool = ThreadPool::new()?;
    /// let ff = FailFast::builder()
    ///     .executor(move |task: BoxFuture<'static, ()>| pool.spawn_ok(task))
    ///     .build()?;
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn executor<E2: Executor>(self, executor: E2) -> FailFastBuilder<E2, T> {
        FailFastBuilder {
            executor,
            timer: self.timer,
            timeout: self.timeout,
            limit: self.limit,
            logger: self.logger,
            observer: self.observer,
        }
    }

    /// The clock that enforces deadlines and times calls. Default: `timer::FuturesTimer`
    /// (feature `futures-timer`).
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::{timer, FailFast};
    ///
    /// let ff = FailFast::builder().timer(timer::Manual::new()).build()?; // virtual time
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    pub fn timer<T2: Timer>(self, timer: T2) -> FailFastBuilder<E, T2> {
        FailFastBuilder {
            executor: self.executor,
            timer,
            timeout: self.timeout,
            limit: self.limit,
            logger: self.logger,
            observer: self.observer,
        }
    }

    /// Sends the groups' log records to `logger` instead of the global one. Default: the global
    /// `log` logger.
    ///
    /// Records are still filtered by `log::max_level()` first, as every `log` macro is; set it
    /// (`log::set_max_level`) if no global logger is installed.
    ///
    /// # Examples
    ///
    /// ```
    /// struct Stderr;
    /// impl log::Log for Stderr {
    ///     fn enabled(&self, _: &log::Metadata<'_>) -> bool { true }
    ///     fn log(&self, record: &log::Record<'_>) { eprintln!("{}", record.args()) }
    ///     fn flush(&self) {}
    /// }
    ///
    /// let ff = failfast::FailFast::builder().logger(Stderr).build()?;
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    #[doc(alias = "slog")]
    pub fn logger(mut self, logger: impl log::Log + 'static) -> Self {
        self.logger = Logger::Custom(Arc::new(logger));
        self
    }

    /// Tells `observer` about every call and group: see [`Observer`]. Default: none, which
    /// costs nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::{CallFinished, FailFast, Observer};
    ///
    /// struct PrintSlowCalls;
    /// impl Observer for PrintSlowCalls {
    ///     fn call_finished(&self, call: &CallFinished<'_>) {
    ///         if call.elapsed.as_millis() > 100 {
    ///             eprintln!("{} took {:?}", call.name, call.elapsed);
    ///         }
    ///     }
    /// }
    ///
    /// let ff = FailFast::builder().observer(PrintSlowCalls).build()?;
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    pub fn observer(mut self, observer: impl Observer) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// Checks the settings and builds the [`FailFast`].
    ///
    /// # Errors
    ///
    /// [`BuildError::ZeroTimeout`] if the timeout is zero, [`BuildError::ZeroLimit`] if the
    /// limit is zero.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::{BuildError, FailFast};
    ///
    /// assert!(FailFast::builder().build().is_ok());
    /// let err = FailFast::builder().timeout(Duration::ZERO).build().unwrap_err();
    /// assert_eq!(err, BuildError::ZeroTimeout);
    /// ```
    pub fn build(self) -> Result<FailFast<E, T>, BuildError>
    where
        E: Executor,
        T: Timer,
    {
        if self.timeout.is_some_and(|timeout| timeout.is_zero()) {
            return Err(BuildError::ZeroTimeout);
        }
        let limit = match self.limit {
            None => None,
            Some(limit) => Some(NonZeroUsize::new(limit).ok_or(BuildError::ZeroLimit)?),
        };
        Ok(FailFast {
            executor: self.executor,
            clock: Arc::new(self.timer.clone()),
            timer: self.timer,
            timeout: self.timeout,
            limit,
            logger: self.logger,
            observer: self.observer,
        })
    }
}

/// The id of the next group, for records and events.
static NEXT_GROUP: AtomicU64 = AtomicU64::new(1);

impl<E: Executor, T: Timer> FailFast<E, T> {
    /// Starts one fan-out under the caller's context `ctx`: Go's `errgroup.WithContext(ctx)`.
    ///
    /// The group's deadline is the earlier of `ctx`'s and this `FailFast`'s timeout, counted
    /// from now. Nothing runs until the group's [`run`](Group::run) is polled. Making a group
    /// never fails: a `ctx` that is already cancelled or past its deadline makes `run` fail at
    /// once, starting nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::{BoxError, Context, FailFast};
    ///
    /// let ff = FailFast::builder().build()?;
    /// # futures::executor::block_on(async {
    /// let group = ff.group(&Context::background());
    /// let answer = group.run(group.call("answer", |_ctx| async { Ok::<_, BoxError>(42) })).await?;
    /// assert_eq!(answer, 42);
    /// # Ok::<_, failfast::Error>(()) })?;
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "WithContext")]
    pub fn group(&self, ctx: &Context) -> Group<'_, E, T> {
        let id = NEXT_GROUP.fetch_add(1, Ordering::Relaxed);
        Group::new(self, ctx, id)
    }
}

impl<E, T> FailFast<E, T> {
    /// The timeout set with [`FailFastBuilder::timeout`], if any.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(failfast::FailFast::builder().build()?.timeout(), None);
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The limit set with [`FailFastBuilder::limit`], if any.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(failfast::FailFast::builder().limit(3).build()?.limit(), Some(3));
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    pub fn limit(&self) -> Option<usize> {
        self.limit.map(NonZeroUsize::get)
    }

    /// The timer, to build deadlines on the same clock (`ctx.with_deadline(ff.timer().now() + d)`),
    /// as tests in virtual time do.
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::{timer::Manual, FailFast, Timer};
    ///
    /// let ff = FailFast::builder().timer(Manual::new()).build()?;
    /// let _now = ff.timer().now();
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    pub fn timer(&self) -> &T {
        &self.timer
    }
}

impl<E: fmt::Debug, T: fmt::Debug> fmt::Debug for FailFast<E, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailFast")
            .field("timeout", &self.timeout)
            .field("limit", &self.limit)
            .field("executor", &self.executor)
            .field("timer", &self.timer)
            .field("logger", &self.logger)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

impl<E: fmt::Debug, T: fmt::Debug> fmt::Debug for FailFastBuilder<E, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailFastBuilder")
            .field("timeout", &self.timeout)
            .field("limit", &self.limit)
            .field("executor", &self.executor)
            .field("timer", &self.timer)
            .field("logger", &self.logger)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}
