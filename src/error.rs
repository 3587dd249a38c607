//! [`AggregateError`] and [`BuildError`].

use std::time::Duration;

/// A boxed error as returned by services: any error, `Send + Sync + 'static`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why an aggregate failed.
///
/// Every variant says *what* failed; a service's own error is kept as the
/// [`source`](std::error::Error::source), so an error reporter that walks the chain prints both.
///
/// # Examples
///
/// ```
/// use std::error::Error as _;
/// use failfast::AggregateError;
///
/// let err = AggregateError::Service { service: "orders", source: "connection refused".into() };
/// assert_eq!(err.to_string(), "orders service failed");
/// assert_eq!(err.source().unwrap().to_string(), "connection refused");
/// assert_eq!(err.service(), Some("orders"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AggregateError {
    /// The effective deadline (the earlier of the caller's context deadline and the
    /// aggregator's timeout) passed before every call had answered.
    #[error("deadline exceeded after {elapsed:.1?}")]
    DeadlineExceeded {
        /// Time from the start of the aggregate until it gave up, as measured by its timer.
        elapsed: Duration,
    },
    /// The caller's context was cancelled.
    #[error("cancelled by the caller after {elapsed:.1?}")]
    Cancelled {
        /// Time from the start of the aggregate until it gave up, as measured by its timer.
        elapsed: Duration,
    },
    /// A service returned an error. This is the first error observed; the other calls were
    /// cancelled.
    #[error("{service} service failed")]
    Service {
        /// Which call failed: `"profile"` or `"orders"` for a [`UserAggregator`](crate::UserAggregator).
        service: &'static str,
        /// The service's own error.
        #[source]
        source: BoxError,
    },
    /// A service panicked. The panic was caught where the call ran; the other calls were
    /// cancelled.
    #[error("{service} service panicked: {message}")]
    Panicked {
        /// Which call panicked.
        service: &'static str,
        /// The panic message, when the payload was a string; otherwise a placeholder.
        message: String,
    },
    /// The timer failed: it panicked while creating or polling the deadline's sleep (tokio's
    /// timer does once its runtime has shut down), so the deadline cannot be enforced.
    #[error("timer failed: {message}")]
    Timer {
        /// The timer's panic message.
        message: String,
    },
    /// The executor dropped a call's task before it finished (typically because the runtime
    /// was shutting down), so it can never answer.
    #[error("{service} task was dropped by the executor before it finished")]
    Dropped {
        /// Which call was lost.
        service: &'static str,
    },
}

impl AggregateError {
    /// The name of the call this error is about, if it is about one call.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::AggregateError;
    ///
    /// let err = AggregateError::DeadlineExceeded { elapsed: Duration::from_secs(1) };
    /// assert_eq!(err.service(), None);
    /// ```
    pub fn service(&self) -> Option<&'static str> {
        match self {
            AggregateError::Service { service, .. }
            | AggregateError::Panicked { service, .. }
            | AggregateError::Dropped { service } => Some(service),
            AggregateError::DeadlineExceeded { .. }
            | AggregateError::Cancelled { .. }
            | AggregateError::Timer { .. } => None,
        }
    }

    /// Whether the deadline passed: Go's `errors.Is(err, context.DeadlineExceeded)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::AggregateError;
    ///
    /// assert!(AggregateError::DeadlineExceeded { elapsed: Duration::ZERO }.is_deadline_exceeded());
    /// ```
    pub fn is_deadline_exceeded(&self) -> bool {
        matches!(self, AggregateError::DeadlineExceeded { .. })
    }

    /// Whether the caller cancelled: Go's `errors.Is(err, context.Canceled)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::AggregateError;
    ///
    /// assert!(AggregateError::Cancelled { elapsed: Duration::ZERO }.is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        matches!(self, AggregateError::Cancelled { .. })
    }
}

/// A setting given to a builder cannot work.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use failfast::{mock, BuildError, UserAggregator};
///
/// let err = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
///     .timeout(Duration::ZERO)
///     .build()
///     .unwrap_err();
/// assert_eq!(err, BuildError::ZeroTimeout);
/// assert_eq!(err.to_string(), "timeout must be greater than zero");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `timeout(Duration::ZERO)`: every call would fail before it started.
    #[error("timeout must be greater than zero")]
    ZeroTimeout,
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
