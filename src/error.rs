//! [`Error`] (also named [`AggregateError`]) and [`BuildError`].

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A boxed error as returned by services: any error, `Send + Sync + 'static`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A service's own error, shared: it is what [`Error::Service`] keeps as its
/// [`source`](std::error::Error::source).
///
/// Shared rather than boxed because a failure has two readers: the call's own future (so that
/// your join stops) and the group (which returns the first failure whatever your join does).
/// `err.source()` is the service's error itself, so `downcast_ref` works as usual.
///
/// # Examples
///
/// ```
/// use std::error::Error as _;
///
/// let err = failfast::Error::service_failed("ledger", std::io::Error::other("disk full"));
/// let io = err.source().and_then(|source| source.downcast_ref::<std::io::Error>());
/// assert_eq!(io.map(|io| io.to_string()), Some("disk full".to_owned()));
/// ```
pub type SharedError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Why a group (or an aggregate) failed, or why one call did.
///
/// Every variant says *what* failed; a service's own error is kept as the
/// [`source`](std::error::Error::source), so an error reporter that walks the chain prints
/// both. The alternate form `{:#}` prints the whole chain on one line:
///
/// # Examples
///
/// ```
/// use std::error::Error as _;
/// use failfast::Error;
///
/// let err = Error::service_failed("orders", "connection refused");
/// assert_eq!(err.to_string(), "orders service failed");
/// assert_eq!(format!("{err:#}"), "orders service failed: connection refused");
/// assert_eq!(err.source().unwrap().to_string(), "connection refused");
/// assert_eq!(err.service(), Some("orders"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// The effective deadline (the earliest of the caller's context deadline and the group's
    /// timeout) passed before the group finished.
    DeadlineExceeded {
        /// Time from the start of the group until it gave up, as measured by its timer.
        elapsed: Duration,
    },
    /// The caller's context was cancelled (before its deadline passed: a cancel that comes
    /// after is [`DeadlineExceeded`](Error::DeadlineExceeded), as the context's own
    /// [`err`](crate::Context::err) says).
    Cancelled {
        /// Time from the start of the group until it gave up, as measured by its timer.
        elapsed: Duration,
        /// The cause the caller cancelled with
        /// ([`CancelHandle::cancel_with`](crate::CancelHandle::cancel_with)), if it gave one;
        /// also this error's [`source`](std::error::Error::source).
        cause: Option<SharedError>,
    },
    /// A call's service returned an error. This is the first failure of a required call; the
    /// other calls were cancelled.
    Service {
        /// Which call failed: its name, such as `"profile"` or `"shard-3"`.
        service: Cow<'static, str>,
        /// The service's own error.
        source: SharedError,
    },
    /// A call's service panicked (while it was made, polled or dropped). The panic was caught
    /// where the call ran; the other calls were cancelled.
    Panicked {
        /// Which call panicked.
        service: Cow<'static, str>,
        /// The panic message, when the payload was a string; otherwise a placeholder.
        message: String,
    },
    /// A call's own timeout (set with [`Call::timeout`](crate::Call::timeout)) passed before
    /// it answered; the call was cancelled.
    TimedOut {
        /// Which call timed out.
        service: Cow<'static, str>,
        /// The call's own timeout.
        timeout: Duration,
    },
    /// The timer failed: it panicked while creating or polling a sleep (tokio's timer does once
    /// its runtime has shut down), so a deadline cannot be enforced.
    Timer {
        /// The timer's panic message.
        message: String,
    },
    /// The executor dropped a call's task before it finished (typically because the runtime
    /// was shutting down), so it can never answer.
    Dropped {
        /// Which call was lost.
        service: Cow<'static, str>,
    },
    /// The group was used in a way that cannot work, such as running it twice or awaiting a
    /// call of a group that has already finished. The message says what happened.
    Misuse {
        /// What was done, and what to do instead.
        message: &'static str,
    },
    /// A [`Gather`](crate::Gather) could not get the successes it needed: too many of its
    /// calls failed, or (best effort) too few had succeeded when the deadline passed.
    TooFew {
        /// How many successes were needed.
        needed: usize,
        /// How many calls succeeded.
        succeeded: usize,
        /// How many calls were gathered.
        calls: usize,
        /// The last failure of a gathered call, if one failed; also this error's
        /// [`source`](std::error::Error::source).
        last_failure: Option<Box<Error>>,
    },
}

/// The name the kata uses for [`Error`]: `UserAggregator::aggregate` returns it.
pub type AggregateError = Error;

impl Error {
    /// A [`Service`](Error::Service) error for the call `service`, for tests and fakes.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = failfast::Error::service_failed("profile", "profile db down");
    /// assert_eq!(format!("{err:#}"), "profile service failed: profile db down");
    /// ```
    pub fn service_failed(
        service: impl Into<Cow<'static, str>>,
        source: impl Into<BoxError>,
    ) -> Error {
        Error::Service {
            service: service.into(),
            source: Arc::from(source.into()),
        }
    }

    /// The name of the call this error is about, if it is about one call.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::Error;
    ///
    /// assert_eq!(Error::service_failed("shard-7", "down").service(), Some("shard-7"));
    /// let err = Error::DeadlineExceeded { elapsed: Duration::from_secs(1) };
    /// assert_eq!(err.service(), None);
    /// ```
    #[doc(alias = "name")]
    pub fn service(&self) -> Option<&str> {
        match self {
            Error::Service { service, .. }
            | Error::Panicked { service, .. }
            | Error::TimedOut { service, .. }
            | Error::Dropped { service } => Some(service),
            Error::DeadlineExceeded { .. }
            | Error::Cancelled { .. }
            | Error::Timer { .. }
            | Error::Misuse { .. }
            | Error::TooFew { .. } => None,
        }
    }

    /// Whether the group's deadline passed: Go's `errors.Is(err, context.DeadlineExceeded)`.
    ///
    /// A call's own timeout is [`Error::TimedOut`] instead: it names the call.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::Error;
    ///
    /// assert!(Error::DeadlineExceeded { elapsed: Duration::ZERO }.is_deadline_exceeded());
    /// ```
    pub fn is_deadline_exceeded(&self) -> bool {
        matches!(self, Error::DeadlineExceeded { .. })
    }

    /// Whether the caller cancelled: Go's `errors.Is(err, context.Canceled)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::Error;
    ///
    /// assert!(Error::Cancelled { elapsed: Duration::ZERO, cause: None }.is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Cancelled { .. })
    }

    /// Whether this is a failure of one call rather than of the group as a whole: a service
    /// error, a panic, the call's own timeout or a task lost by the executor.
    pub(crate) fn is_call_failure(&self) -> bool {
        self.service().is_some()
    }
}

impl fmt::Display for Error {
    /// The error alone; with `{:#}`, followed by each of its sources: `outer: inner: ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::DeadlineExceeded { elapsed } => {
                write!(f, "deadline exceeded after {elapsed:.1?}")?
            }
            Error::Cancelled { elapsed, .. } => {
                write!(f, "cancelled by the caller after {elapsed:.1?}")?
            }
            Error::Service { service, .. } => write!(f, "{service} service failed")?,
            Error::Panicked { service, message } => {
                write!(f, "{service} service panicked: {message}")?
            }
            Error::TimedOut { service, timeout } => {
                write!(f, "{service} service timed out after {timeout:.1?}")?
            }
            Error::Timer { message } => write!(f, "timer failed: {message}")?,
            Error::Dropped { service } => write!(
                f,
                "{service} task was dropped by the executor before it finished"
            )?,
            Error::Misuse { message } => f.write_str(message)?,
            Error::TooFew {
                needed,
                succeeded,
                calls,
                ..
            } => write!(f, "{succeeded} of {calls} calls succeeded, {needed} needed")?,
        }
        if f.alternate() {
            let mut source = std::error::Error::source(self);
            while let Some(cause) = source {
                write!(f, ": {cause}")?;
                source = cause.source();
            }
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Service { source, .. } => Some(&**source),
            Error::Cancelled {
                cause: Some(cause), ..
            } => Some(&**cause),
            Error::TooFew {
                last_failure: Some(failure),
                ..
            } => Some(&**failure),
            _ => None,
        }
    }
}

/// A setting given to a builder cannot work.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use failfast::{BuildError, FailFast};
///
/// let err = FailFast::builder().limit(0).build().unwrap_err();
/// assert_eq!(err, BuildError::ZeroLimit);
/// assert_eq!(err.to_string(), "limit must be greater than zero");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `timeout(Duration::ZERO)`: every call would fail before it started.
    #[error("timeout must be greater than zero")]
    ZeroTimeout,
    /// `limit(0)`: no call could ever start.
    #[error("limit must be greater than zero")]
    ZeroLimit,
    /// `Retry::builder().attempts(0)`: not even one attempt.
    #[error("attempts must be at least one")]
    ZeroAttempts,
    /// A backoff whose maximum is below its initial value.
    #[error("the backoff's maximum must not be below its initial value")]
    BackoffMax,
    /// A backoff multiplier below 1 (or NaN): the backoff would shrink.
    #[error("the backoff multiplier must be at least 1")]
    Multiplier,
    /// A hedge percentile outside `(0, 100)` (or NaN).
    #[error("the percentile must be between 0 and 100, both excluded")]
    Percentile,
    /// A budget ratio outside `[0, 1]` (or NaN).
    #[error("the budget ratio must be between 0 and 1")]
    BudgetRatio,
    /// An adaptive hedge's window of zero: it would forget every latency at once and never
    /// hedge.
    #[error("the adaptive hedge's window must be greater than zero")]
    ZeroWindow,
}

/// Renders a panic payload the way the standard library's hook does.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
