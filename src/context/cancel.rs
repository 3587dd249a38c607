//! [`CancelHandle`], [`DropGuard`] and [`ContextError`]: cancelling a context, and why one is done.

use std::fmt;
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::sync::{Arc, OnceLock};

#[cfg(doc)]
use super::Context;
use super::node::{Node, Scope};
use crate::error::{BoxError, SharedError};

/// Why a context is done: Go's `context.Canceled` and `context.DeadlineExceeded`.
///
/// Returned by [`Context::err`]; it is also the [cause](Context::cause) of a context that was
/// given none.
///
/// # Examples
///
/// ```
/// use failfast::{Context, ContextError};
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// cancel.cancel();
/// assert_eq!(ctx.err(), Some(ContextError::Cancelled));
/// assert_eq!(ContextError::Cancelled.to_string(), "context cancelled");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// The context, or one above it, was cancelled.
    #[error("context cancelled")]
    Cancelled,
    /// The context's deadline passed (before any cancellation).
    #[error("context deadline exceeded")]
    DeadlineExceeded,
}

impl ContextError {
    /// This error as a [`SharedError`], made once per process.
    pub(super) fn shared(self) -> SharedError {
        static CANCELLED: OnceLock<SharedError> = OnceLock::new();
        static DEADLINE: OnceLock<SharedError> = OnceLock::new();
        let cell = match self {
            ContextError::Cancelled => &CANCELLED,
            ContextError::DeadlineExceeded => &DEADLINE,
        };
        cell.get_or_init(|| Arc::new(self)).clone()
    }
}

/// Cancels the [`Context`] it was created with, and every context derived from it.
///
/// Returned by [`Context::with_cancel`]. Clones cancel the same context. Dropping a handle
/// does *not* cancel: a handle that is dropped unused simply means "never cancelled". For
/// Go's `defer cancel()`, hold a [`drop_guard`](CancelHandle::drop_guard).
///
/// # Examples
///
/// ```
/// use failfast::Context;
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// std::thread::spawn(move || cancel.cancel()).join().unwrap();
/// assert!(ctx.is_cancelled());
/// ```
#[derive(Clone)]
pub struct CancelHandle {
    node: Arc<Node>,
}

/// Cancels its context when dropped: Go's `defer cancel()`, tokio's `DropGuard`.
///
/// Made by [`CancelHandle::drop_guard`].
///
/// # Examples
///
/// ```
/// use failfast::Context;
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// {
///     let _guard = cancel.drop_guard();
///     assert!(!ctx.is_cancelled());
/// } // the guard goes out of scope here
/// assert!(ctx.is_cancelled());
/// ```
#[must_use = "the context is cancelled as soon as the guard is dropped"]
pub struct DropGuard {
    handle: Option<CancelHandle>,
}

impl CancelHandle {
    pub(super) fn new(node: Arc<Node>) -> CancelHandle {
        CancelHandle { node }
    }

    /// Cancels the context, and every context derived from it, on any thread. Its cause is
    /// [`ContextError::Cancelled`]. After-functions of the cancelled contexts run on this
    /// thread before it returns. Returns false, and does nothing, if the context was already
    /// cancelled (by this handle or from above).
    ///
    /// # Examples
    ///
    /// ```
    /// let (ctx, cancel) = failfast::Context::background().with_cancel();
    /// assert!(cancel.cancel());
    /// assert!(!cancel.cancel()); // a second call does nothing, and says so
    /// assert!(ctx.is_cancelled());
    /// ```
    #[doc(alias = "CancelFunc")]
    pub fn cancel(&self) -> bool {
        self.cancel_reason(None)
    }

    /// Cancels with `cause`, which [`Context::cause`] then returns here and below (Go's
    /// `CancelCauseFunc`). The first cause wins: returns false, and changes nothing, if the
    /// context was already cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// let (ctx, cancel) = failfast::Context::background().with_cancel();
    /// assert!(cancel.cancel_with("disk full"));
    /// assert!(!cancel.cancel_with("too late"));
    /// assert_eq!(ctx.with_cancel().0.cause().unwrap().to_string(), "disk full");
    /// ```
    #[doc(alias = "WithCancelCause")]
    pub fn cancel_with(&self, cause: impl Into<BoxError>) -> bool {
        self.cancel_reason(Some(SharedError::from(cause.into())))
    }

    /// Cancels with `cause` given as a shared error (no new allocation).
    pub(crate) fn cancel_reason(&self, cause: Option<SharedError>) -> bool {
        !self.is_cancelled() && self.node.cancel(cause)
    }

    /// Whether the context has been cancelled, by this handle or from above.
    ///
    /// # Examples
    ///
    /// ```
    /// let (_ctx, cancel) = failfast::Context::background().with_cancel();
    /// assert!(!cancel.is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.node.scope().is_some_and(Scope::is_cancelled)
    }

    /// A guard that cancels the context when dropped (Go's `defer cancel()`).
    ///
    /// # Examples
    ///
    /// ```
    /// let (ctx, cancel) = failfast::Context::background().with_cancel();
    /// drop(cancel.drop_guard());
    /// assert!(ctx.is_cancelled());
    /// ```
    #[doc(alias = "DropGuard")]
    pub fn drop_guard(self) -> DropGuard {
        DropGuard { handle: Some(self) }
    }
}

// A context is safe to use after a panic: its locks ignore poisoning, and every update leaves
// it consistent (see `crate::sync`). As tokio-util's `CancellationToken` is.
impl UnwindSafe for CancelHandle {}
impl RefUnwindSafe for CancelHandle {}

impl fmt::Debug for CancelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelHandle")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl DropGuard {
    /// Gives the handle back without cancelling.
    ///
    /// # Examples
    ///
    /// ```
    /// let (ctx, cancel) = failfast::Context::background().with_cancel();
    /// let guard = cancel.drop_guard();
    /// let _cancel = guard.disarm();
    /// assert!(!ctx.is_cancelled());
    /// ```
    pub fn disarm(mut self) -> CancelHandle {
        self.handle
            .take()
            .expect("the handle is taken only here and in drop")
    }
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.cancel();
        }
    }
}

impl fmt::Debug for DropGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DropGuard")
            .field("handle", &self.handle)
            .finish()
    }
}
