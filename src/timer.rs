//! Clocks and sleeps: the [`Timer`] trait and one adapter per runtime, plus [`Manual`]
//! virtual time for tests.
//!
//! | timer | feature | sleeps on |
//! |---|---|---|
//! | `FuturesTimer` | `futures-timer` (default) | futures-timer's helper thread: any executor |
//! | `AsyncIo` | `smol` or `async-std` | async-io's reactor: any executor |
//! | `Tokio` | `tokio` | a tokio runtime's time driver |
//! | [`Manual`] | always | a virtual clock that moves only when you advance it |

use std::future::Future;
use std::time::{Duration, Instant};

mod manual;

pub use manual::{Manual, ManualSleep};

/// The timer a builder starts with: `FuturesTimer`.
#[cfg(feature = "futures-timer")]
pub(crate) type DefaultTimer = FuturesTimer;

/// The timer a builder starts with when the `futures-timer` feature is off: [`NoTimer`].
#[cfg(not(feature = "futures-timer"))]
pub(crate) type DefaultTimer = NoTimer;

/// Stands in for a timer when the `futures-timer` feature is off: it is not a [`Timer`], so
/// `build()` asks for one to be set with `.timer(..)`.
///
/// # Examples
///
/// ```
/// let _placeholder = failfast::timer::NoTimer;
/// ```
#[cfg(not(feature = "futures-timer"))]
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTimer;

/// Tells the time and sleeps: what a group needs to enforce deadlines and time its calls.
///
/// Implementations must never complete a sleep early. A sleep whose deadline cannot be
/// represented (such as `sleep(Duration::MAX)`) must never complete rather than panic. A
/// sleep must fire without being polled again at its deadline, which means something must
/// drive the timer (a reactor, a helper thread, a runtime's time driver); a group notices a
/// timer that does not fire and says so in a warning.
///
/// # Examples
///
/// A timer is used by the group, and by services that want the same clock:
///
/// ```
/// use std::time::Duration;
/// use failfast::Timer;
///
/// async fn backoff<T: Timer>(timer: &T) {
///     timer.sleep(Duration::from_millis(10)).await;
/// }
/// # futures::executor::block_on(backoff(&failfast::timer::FuturesTimer));
/// ```
///
/// Implementing the trait, here on a thread per sleep (a sketch: a real timer shares one
/// thread or reactor among all its sleeps):
///
/// ```
/// use std::time::{Duration, Instant};
/// use failfast::{BoxError, Context, FailFast, Timer};
/// use futures::channel::oneshot;
/// use futures::future::{BoxFuture, FutureExt};
///
/// #[derive(Clone)]
/// struct ThreadTimer;
///
/// impl Timer for ThreadTimer {
///     type Sleep = BoxFuture<'static, ()>;
///
///     fn sleep(&self, duration: Duration) -> Self::Sleep {
///         let (fire, fired) = oneshot::channel::<()>();
///         std::thread::spawn(move || {
///             std::thread::sleep(duration);
///             let _ = fire.send(());
///         });
///         fired.map(|_| ()).boxed()
///     }
/// }
///
/// let ff = FailFast::builder().timer(ThreadTimer).timeout(Duration::from_millis(20)).build()?;
/// # futures::executor::block_on(async {
/// let group = ff.group(&Context::background());
/// let start = Instant::now();
/// let err = group.run(group.call("stuck", |_ctx| std::future::pending::<Result<(), BoxError>>())).await;
/// assert!(err.unwrap_err().is_deadline_exceeded());
/// assert!(start.elapsed() >= Duration::from_millis(20));
/// # });
/// # Ok::<_, failfast::BuildError>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a failfast `Timer`",
    note = "without the `futures-timer` feature there is no default timer: set one with `.timer(..)` on the builder and on each `mock::Mock`, such as `timer::AsyncIo`, `timer::Tokio` or `timer::Manual`"
)]
pub trait Timer: Clone + Send + Sync + 'static {
    /// The future returned by [`sleep`](Timer::sleep) and [`sleep_until`](Timer::sleep_until).
    type Sleep: Future<Output = ()> + Send + 'static;

    /// Completes once `duration` has passed, measured by this timer.
    fn sleep(&self, duration: Duration) -> Self::Sleep;

    /// Completes once [`now`](Timer::now) reaches `deadline`; at once if it already has.
    fn sleep_until(&self, deadline: Instant) -> Self::Sleep {
        self.sleep(deadline.saturating_duration_since(self.now()))
    }

    /// This timer's current time. Default: `Instant::now()`.
    ///
    /// It is called while a context's lock is held (a cancellation is stamped with it), so it
    /// must not cancel or inspect contexts itself; it should be quick and must not block.
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Sleeps at least this long never complete with [`FuturesTimer`]: about a century.
#[cfg(feature = "futures-timer")]
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// Sleeps with [futures-timer](https://docs.rs/futures-timer): works under any executor, at the
/// cost of one helper thread per process. The default timer.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use failfast::{timer::FuturesTimer, Timer};
///
/// let start = Instant::now();
/// futures::executor::block_on(FuturesTimer.sleep(Duration::from_millis(20)));
/// assert!(start.elapsed() >= Duration::from_millis(20));
/// ```
#[cfg(feature = "futures-timer")]
#[cfg_attr(docsrs, doc(cfg(feature = "futures-timer")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct FuturesTimer;

/// The sleep of [`FuturesTimer`].
#[cfg(feature = "futures-timer")]
#[cfg_attr(docsrs, doc(cfg(feature = "futures-timer")))]
#[must_use = "futures do nothing unless you .await or poll them"]
#[derive(Debug)]
pub struct FuturesTimerSleep {
    /// `None` when the deadline is beyond what `Instant` can hold: never fires.
    delay: Option<futures_timer::Delay>,
}

#[cfg(feature = "futures-timer")]
impl Timer for FuturesTimer {
    type Sleep = FuturesTimerSleep;

    fn sleep(&self, duration: Duration) -> FuturesTimerSleep {
        // futures-timer before 3.0.4 adds `duration` to `Instant::now()` without checking for
        // overflow, so anything beyond a century (which no deadline needs) is "never".
        FuturesTimerSleep {
            delay: (duration < NEVER).then(|| futures_timer::Delay::new(duration)),
        }
    }
}

#[cfg(feature = "futures-timer")]
impl Future for FuturesTimerSleep {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        match &mut self.delay {
            Some(delay) => std::pin::Pin::new(delay).poll(cx),
            None => std::task::Poll::Pending,
        }
    }
}

/// Sleeps with [async-io](https://docs.rs/async-io)'s `Timer`, the reactor smol and async-std
/// use: works under any executor.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use failfast::{timer::AsyncIo, Timer};
///
/// let start = Instant::now();
/// smol::block_on(AsyncIo.sleep(Duration::from_millis(20)));
/// assert!(start.elapsed() >= Duration::from_millis(20));
/// ```
#[cfg(any(feature = "smol", feature = "async-std"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "smol", feature = "async-std"))))]
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncIo;

/// The sleep of [`AsyncIo`].
#[cfg(any(feature = "smol", feature = "async-std"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "smol", feature = "async-std"))))]
#[must_use = "futures do nothing unless you .await or poll them"]
#[derive(Debug)]
pub struct AsyncIoSleep {
    timer: async_io::Timer,
}

#[cfg(any(feature = "smol", feature = "async-std"))]
impl Timer for AsyncIo {
    type Sleep = AsyncIoSleep;

    fn sleep(&self, duration: Duration) -> AsyncIoSleep {
        // `Timer::after` never fires when the deadline overflows `Instant`.
        AsyncIoSleep {
            timer: async_io::Timer::after(duration),
        }
    }

    fn sleep_until(&self, deadline: Instant) -> AsyncIoSleep {
        AsyncIoSleep {
            timer: async_io::Timer::at(deadline),
        }
    }
}

#[cfg(any(feature = "smol", feature = "async-std"))]
impl Future for AsyncIoSleep {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        std::pin::Pin::new(&mut self.timer).poll(cx).map(drop)
    }
}

/// Sleeps on a tokio runtime's time driver.
///
/// Sleeps are created inside the runtime's context, so this timer also works when the
/// group runs outside the runtime (with [`executor::Inline`](crate::executor::Inline)
/// under another `block_on`), as long as the runtime was built with the time driver enabled
/// (`enable_time()` or `enable_all()`) and its driver runs: a multi-thread runtime drives it
/// on its workers, a current-thread runtime only while some thread is inside its `block_on`.
/// Over a current-thread runtime that nobody drives, sleeps never fire: only an answer or the
/// caller's cancellation ends the group, and an answer that comes long after the deadline is
/// reported as [`Error::DeadlineExceeded`](crate::Error::DeadlineExceeded), with a warning
/// that the timer never fired. If tokio panics (time driver disabled, runtime shut down), the
/// group contains the panic and fails with [`Error::Timer`](crate::Error::Timer).
///
/// [`now`](Timer::now) reads tokio's clock, so tokio's paused test time is honoured inside the
/// runtime (outside it, tokio's clock is the real one). Contexts use it once it is attached
/// ([`Context::with_timer`](crate::Context::with_timer)), as it is to the contexts a group on
/// this timer hands its calls.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use failfast::{timer, Timer};
///
/// let rt = tokio::runtime::Runtime::new()?;
/// let tokio_timer = timer::Tokio::new(rt.handle().clone());
/// let start = Instant::now();
/// futures::executor::block_on(tokio_timer.sleep(Duration::from_millis(20)));
/// assert!(start.elapsed() >= Duration::from_millis(20));
/// # Ok::<_, std::io::Error>(())
/// ```
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[derive(Debug, Clone)]
pub struct Tokio {
    handle: tokio::runtime::Handle,
}

#[cfg(feature = "tokio")]
impl Tokio {
    /// Sleeps on the time driver of the runtime behind `handle`.
    ///
    /// # Examples
    ///
    /// ```
    /// let rt = tokio::runtime::Runtime::new()?;
    /// let _timer = failfast::timer::Tokio::new(rt.handle().clone());
    /// # Ok::<_, std::io::Error>(())
    /// ```
    pub fn new(handle: tokio::runtime::Handle) -> Tokio {
        Tokio { handle }
    }
}

#[cfg(feature = "tokio")]
impl Timer for Tokio {
    type Sleep = tokio::time::Sleep;

    fn sleep(&self, duration: Duration) -> tokio::time::Sleep {
        let _runtime = self.handle.enter();
        // tokio clamps durations too large for its clock to "far in the future".
        tokio::time::sleep(duration)
    }

    fn sleep_until(&self, deadline: Instant) -> tokio::time::Sleep {
        let _runtime = self.handle.enter();
        // tokio rounds a deadline up to its next millisecond with an unchecked addition, which
        // panics within a millisecond of the latest `Instant`; such a deadline is "never".
        match deadline.checked_add(Duration::from_millis(1)) {
            Some(_) => tokio::time::sleep_until(deadline.into()),
            None => tokio::time::sleep(Duration::MAX), // clamped by tokio to its far future
        }
    }

    fn now(&self) -> Instant {
        // tokio's clock, so that a paused test clock (`tokio::time::pause`) of the current
        // runtime is honoured. (Not entering `handle` here keeps this as cheap as
        // `Instant::now()`; outside any runtime tokio's clock is the real one.)
        tokio::time::Instant::now().into_std()
    }
}
