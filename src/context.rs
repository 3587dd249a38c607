//! [`Context`]: a deadline, a cancellation signal with a cause, and request-scoped values,
//! handed from parent to child.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{BoxError, SharedError};
use crate::timer::Timer;

mod after;
mod cancel;
mod clock;
mod node;
mod wait;

pub use after::AfterHandle;
pub use cancel::{CancelHandle, ContextError, DropGuard};
pub use wait::{Cancelled, Done, RunUntilCancelled};

pub(crate) use clock::Clock;

use after::After;
use node::{Kind, Node, Reason, Scope};

/// A deadline, a cancellation signal and request-scoped values, passed as the first argument
/// to every call.
///
/// This is Go's `context.Context` for failfast. A context is cheap to clone (one atomic
/// increment, or none for [`background`](Context::background)); clones share the same
/// cancellation. Children are derived with [`with_timeout`](Context::with_timeout),
/// [`with_deadline`](Context::with_deadline), [`with_cancel`](Context::with_cancel),
/// [`with_value`](Context::with_value) and the like:
///
/// * a child's deadline is the earlier of its own and its parent's: the earlier deadline wins;
/// * cancelling a parent cancels every child, never the other way round, and the child
///   inherits the parent's [cause](Context::cause);
/// * a child sees its parent's values, and its own value of a type shadows the parent's.
///
/// # Done, and the clock
///
/// A context is *done* when it is cancelled or its deadline has passed
/// ([`err`](Context::err) says which). Asking is always right, even if nobody was woken:
/// [`is_done`](Context::is_done) and [`err`](Context::err) read the clock. To *wait* for it,
/// [`done`](Context::done) sleeps until the deadline on the context's clock:
///
/// * inside a group's call, the group's timer ([`FailFastBuilder::timer`]);
/// * a timer attached with [`with_timer`](Context::with_timer), such as
///   [`timer::Manual`](crate::timer::Manual) for virtual time;
/// * otherwise the default timer, `timer::FuturesTimer` (feature `futures-timer`, on by
///   default). With that feature off and no timer attached, a deadline is noticed when asked
///   about but never wakes anyone: attach a timer with `with_timer`.
///
/// No timer is made for a deadline nobody waits on. [`cancelled`](Context::cancelled), by
/// contrast, waits for cancellation alone (tokio's `CancellationToken::cancelled`).
///
/// A group cancels the context it hands its calls when it ends, however it ends (Go's `defer
/// cancel()`), and at the first failure of a required call, with that failure as the cause
/// (errgroup's `WithContext`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use failfast::{Context, ContextError};
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// let child = ctx.with_timeout(Duration::from_secs(1));
/// assert!(child.deadline().is_some());
/// assert_eq!(child.err(), None);
///
/// cancel.cancel_with("user logged out");
/// assert_eq!(child.err(), Some(ContextError::Cancelled));
/// assert_eq!(child.cause().unwrap().to_string(), "user logged out");
/// ```
///
/// Done at the deadline, with no group involved:
///
/// ```
/// use std::time::Duration;
/// use failfast::{Context, ContextError};
///
/// # futures::executor::block_on(async {
/// let ctx = Context::background().with_timeout(Duration::from_millis(20));
/// ctx.done().await; // fires on the default timer
/// assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
/// assert_eq!(ctx.to_string(), "context deadline exceeded");
/// # });
/// ```
///
/// [`FailFastBuilder::timer`]: crate::FailFastBuilder::timer
#[derive(Clone, Default)]
pub struct Context {
    deadline: Option<Instant>,
    node: Option<Arc<Node>>,
}

impl Context {
    /// The root context: no deadline, never cancelled, no values. Allocates nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// let ctx = failfast::Context::background();
    /// assert_eq!(ctx.deadline(), None);
    /// assert!(!ctx.is_done());
    /// ```
    #[doc(alias = "Background")]
    pub fn background() -> Context {
        Context::default()
    }

    /// A child that must finish within `timeout` from now, by this context's clock.
    ///
    /// If the parent's deadline is earlier, the parent's wins. A timeout too large to be
    /// represented as an `Instant` (such as `Duration::MAX`) means no deadline of its own.
    /// The child shares the parent's cancellation. Allocates nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::Context;
    ///
    /// let outer = Context::background().with_timeout(Duration::from_secs(1));
    /// let inner = outer.with_timeout(Duration::from_secs(60));
    /// assert_eq!(inner.deadline(), outer.deadline()); // the earlier deadline wins
    /// ```
    #[doc(alias = "WithTimeout")]
    #[must_use]
    pub fn with_timeout(&self, timeout: Duration) -> Context {
        match self.now().checked_add(timeout) {
            Some(deadline) => self.with_deadline(deadline),
            None => self.clone(),
        }
    }

    /// A child that must finish by `deadline`; the parent's deadline wins if it is earlier.
    ///
    /// A deadline that has already passed is allowed: the child is done at once, and work
    /// run under it fails at once with [`Error::DeadlineExceeded`](crate::Error::DeadlineExceeded).
    /// Allocates nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use failfast::Context;
    ///
    /// let at = Instant::now() + Duration::from_millis(500);
    /// assert_eq!(Context::background().with_deadline(at).deadline(), Some(at));
    /// ```
    #[doc(alias = "WithDeadline")]
    #[must_use]
    pub fn with_deadline(&self, deadline: Instant) -> Context {
        if self.is_cancelled() {
            // Already done: the child is done as its parent is, with its cause (Go's
            // `propagateCancel`), whatever its own deadline.
            return self.clone();
        }
        let deadline = match self.deadline {
            Some(parent) if parent <= deadline => parent,
            _ => deadline,
        };
        Context {
            deadline: Some(deadline),
            node: self.node.clone(),
        }
    }

    /// Like [`with_timeout`](Context::with_timeout), with `cause` as the
    /// [cause](Context::cause) reported when this deadline is what ends the context (Go's
    /// `WithTimeoutCause`). If the parent's deadline is earlier, it wins and `cause` is
    /// ignored. A group run under this context and ended by this deadline returns
    /// [`Error::DeadlineExceeded`](crate::Error::DeadlineExceeded), as Go's `Err()` does;
    /// the cause is the context's: `ctx.cause()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::{Context, ContextError};
    ///
    /// let ctx = Context::background().with_timeout_cause(Duration::ZERO, "search took too long");
    /// assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
    /// assert_eq!(ctx.cause().unwrap().to_string(), "search took too long");
    /// ```
    #[doc(alias = "WithTimeoutCause")]
    #[must_use]
    pub fn with_timeout_cause(&self, timeout: Duration, cause: impl Into<BoxError>) -> Context {
        match self.now().checked_add(timeout) {
            Some(deadline) => self.with_deadline_cause(deadline, cause),
            None => self.clone(),
        }
    }

    /// Like [`with_deadline`](Context::with_deadline), with `cause` as the
    /// [cause](Context::cause) reported when this deadline is what ends the context (Go's
    /// `WithDeadlineCause`). If the parent's deadline is earlier, it wins and `cause` is
    /// ignored.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Instant;
    /// use failfast::Context;
    ///
    /// let ctx = Context::background().with_deadline_cause(Instant::now(), "too late");
    /// assert_eq!(ctx.cause().unwrap().to_string(), "too late");
    /// ```
    #[doc(alias = "WithDeadlineCause")]
    #[must_use]
    pub fn with_deadline_cause(&self, deadline: Instant, cause: impl Into<BoxError>) -> Context {
        if self.is_cancelled() || self.deadline.is_some_and(|parent| parent <= deadline) {
            return self.clone();
        }
        let cause = SharedError::from(cause.into());
        Context {
            deadline: Some(deadline),
            node: Some(Node::new(
                self.node.as_ref(),
                Kind::DeadlineCause {
                    at: deadline,
                    cause,
                },
            )),
        }
    }

    /// A child that can be cancelled on its own, and the handle that cancels it. Allocates
    /// once.
    ///
    /// The child is also cancelled when this context is; if this context is already
    /// cancelled, the child starts cancelled, with the same cause.
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::Context;
    ///
    /// let (parent, cancel_parent) = Context::background().with_cancel();
    /// let (child, cancel_child) = parent.with_cancel();
    ///
    /// cancel_child.cancel();
    /// assert!(child.is_cancelled());
    /// assert!(!parent.is_cancelled()); // cancellation flows down only
    ///
    /// let (other, _) = parent.with_cancel();
    /// cancel_parent.cancel();
    /// assert!(other.is_cancelled());
    /// ```
    #[doc(alias = "WithCancel")]
    #[doc(alias = "WithCancelCause")]
    #[doc(alias = "child_token")]
    #[must_use]
    pub fn with_cancel(&self) -> (Context, CancelHandle) {
        let node = Node::new(self.node.as_ref(), Kind::Scope(Scope::new()));
        let child = Context {
            deadline: self.deadline,
            node: Some(node.clone()),
        };
        (child, CancelHandle::new(node))
    }

    /// [`with_cancel`](Context::with_cancel) and [`with_timeout`](Context::with_timeout) in
    /// one: Go's `WithTimeout`, which returns its cancel function. Allocates once.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::Context;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel_timeout(Duration::from_secs(5));
    /// let _guard = cancel.drop_guard(); // defer cancel()
    /// assert!(ctx.deadline().is_some());
    /// ```
    #[must_use]
    pub fn with_cancel_timeout(&self, timeout: Duration) -> (Context, CancelHandle) {
        let (ctx, cancel) = self.with_cancel();
        (ctx.with_timeout(timeout), cancel)
    }

    /// [`with_cancel`](Context::with_cancel) and [`with_deadline`](Context::with_deadline)
    /// in one: Go's `WithDeadline`, which returns its cancel function. Allocates once.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use failfast::Context;
    ///
    /// let at = Instant::now() + Duration::from_secs(5);
    /// let (ctx, cancel) = Context::background().with_cancel_deadline(at);
    /// cancel.cancel();
    /// assert!(ctx.is_done());
    /// ```
    #[must_use]
    pub fn with_cancel_deadline(&self, deadline: Instant) -> (Context, CancelHandle) {
        let (ctx, cancel) = self.with_cancel();
        (ctx.with_deadline(deadline), cancel)
    }

    /// A child that carries `value`, found by its type with [`value`](Context::value): a trace
    /// id, the caller's identity. Go's `WithValue`, with the type as the key (no string keys,
    /// no collisions between crates: wrap a plain type in a newtype of your own).
    ///
    /// A value of a type the parent already carries shadows the parent's for this child and
    /// its children. Allocates twice (the node and the value).
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::Context;
    ///
    /// #[derive(Debug, PartialEq)]
    /// struct TraceId(u64);
    ///
    /// let ctx = Context::background().with_value(TraceId(7));
    /// let child = ctx.with_cancel().0;
    /// assert_eq!(child.value::<TraceId>(), Some(&TraceId(7)));
    /// assert_eq!(child.with_value(TraceId(8)).value::<TraceId>(), Some(&TraceId(8)));
    /// assert_eq!(ctx.value::<String>(), None);
    /// ```
    #[doc(alias = "WithValue")]
    #[must_use]
    pub fn with_value<T: Any + Send + Sync>(&self, value: T) -> Context {
        Context {
            deadline: self.deadline,
            node: Some(Node::new(self.node.as_ref(), Kind::Value(Box::new(value)))),
        }
    }

    /// The nearest value of type `T` given to [`with_value`](Context::with_value) on this
    /// context or above it.
    ///
    /// # Examples
    ///
    /// ```
    /// let ctx = failfast::Context::background().with_value("tenant-a");
    /// assert_eq!(ctx.value::<&str>(), Some(&"tenant-a"));
    /// ```
    #[doc(alias = "Value")]
    pub fn value<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.node
            .as_deref()?
            .chain(true)
            .find_map(|node| match &node.kind {
                Kind::Value(value) => value.downcast_ref::<T>(),
                _ => None,
            })
    }

    /// A child with this context's values and clock, but no deadline and no cancellation: for
    /// cleanup work that must outlive the request (Go's `WithoutCancel`). Allocates once.
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::Context;
    ///
    /// let (ctx, cancel) = Context::background().with_value(42_u64).with_cancel();
    /// let detached = ctx.without_cancel();
    /// cancel.cancel();
    /// assert!(!detached.is_done());
    /// assert_eq!(detached.value::<u64>(), Some(&42));
    /// ```
    #[doc(alias = "WithoutCancel")]
    #[must_use]
    pub fn without_cancel(&self) -> Context {
        Context {
            deadline: None,
            node: self
                .node
                .as_ref()
                .map(|node| Node::new(Some(node), Kind::Detached)),
        }
    }

    /// A child whose deadlines fire on `timer`, as do its children's (unless they attach
    /// another). Deadlines derived from it with [`with_timeout`](Context::with_timeout) count
    /// from `timer.now()`. Allocates once.
    ///
    /// Use it for virtual time ([`timer::Manual`](crate::timer::Manual)), for a runtime's own
    /// timer, or when the `futures-timer` feature is off and a context outside any group
    /// must wake at its deadline. Inside a group's call, the group's timer is already
    /// attached.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::{timer::Manual, Context};
    ///
    /// let clock = Manual::new();
    /// let ctx = Context::background().with_timer(clock.clone()).with_timeout(Duration::from_secs(5));
    /// assert!(!ctx.is_done());
    /// clock.advance(Duration::from_secs(5)); // virtual time: instant
    /// assert!(ctx.is_done());
    /// ```
    #[must_use]
    pub fn with_timer<T: Timer>(&self, timer: T) -> Context {
        Context {
            deadline: self.deadline,
            node: Some(Node::scope_on(self.node.as_ref(), Arc::new(timer))),
        }
    }

    /// A cancellation scope on `clock` for a group's calls, and its handle.
    pub(crate) fn with_cancel_on(&self, clock: Arc<dyn Clock>) -> (Context, CancelHandle) {
        let node = Node::scope_on(self.node.as_ref(), clock);
        let child = Context {
            deadline: self.deadline,
            node: Some(node.clone()),
        };
        (child, CancelHandle::new(node))
    }

    /// When this context's work must be finished, if ever.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::Context;
    ///
    /// assert!(Context::background().deadline().is_none());
    /// assert!(Context::background().with_timeout(Duration::from_secs(1)).deadline().is_some());
    /// ```
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The time left before the deadline, by this context's clock: zero once it has passed,
    /// `None` without a deadline. What a service passes downstream as its budget.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::Context;
    ///
    /// let ctx = Context::background().with_timeout(Duration::from_secs(1));
    /// assert!(ctx.remaining().unwrap() <= Duration::from_secs(1));
    /// assert_eq!(Context::background().remaining(), None);
    /// ```
    pub fn remaining(&self) -> Option<Duration> {
        let deadline = self.deadline?;
        Some(deadline.saturating_duration_since(self.now()))
    }

    /// Whether this context, or one above it, has been cancelled. The deadline does not
    /// count: see [`is_done`](Context::is_done).
    ///
    /// # Examples
    ///
    /// ```
    /// let (ctx, cancel) = failfast::Context::background().with_cancel();
    /// assert!(!ctx.is_cancelled());
    /// cancel.cancel();
    /// assert!(ctx.is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.scope().is_some_and(Scope::is_cancelled)
    }

    /// Whether this context is done: cancelled, or past its deadline by its clock. Noticed
    /// when asked, even if no timer fired.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::Context;
    ///
    /// let ctx = Context::background().with_timeout(Duration::ZERO);
    /// assert!(ctx.is_done());
    /// assert!(!ctx.is_cancelled());
    /// ```
    pub fn is_done(&self) -> bool {
        self.err().is_some()
    }

    /// Why this context is done, if it is (Go's `Err()`):
    /// [`ContextError::DeadlineExceeded`] if the deadline passed before any cancellation,
    /// [`ContextError::Cancelled`] if it was cancelled first.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::{Context, ContextError};
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let late = ctx.with_timeout(Duration::ZERO); // its deadline has passed
    /// cancel.cancel();
    /// assert_eq!(ctx.err(), Some(ContextError::Cancelled));
    /// assert_eq!(late.err(), Some(ContextError::DeadlineExceeded)); // the deadline came first
    /// ```
    #[doc(alias = "Err")]
    pub fn err(&self) -> Option<ContextError> {
        let scope = self.scope();
        let ended = |reason: Reason| match self.deadline {
            Some(deadline) if deadline <= reason.at => ContextError::DeadlineExceeded,
            _ => ContextError::Cancelled,
        };
        if let Some(reason) = scope.and_then(Scope::reason) {
            return Some(ended(reason));
        }
        let deadline = self.deadline?;
        // The clock first, then the flag again: a cancel that sets the flag after this look
        // stamps itself with a time read after ours, so a deadline passed by our reading is
        // what ended the context, now and at every later call.
        let now = self.now();
        if let Some(reason) = scope.and_then(Scope::reason) {
            return Some(ended(reason));
        }
        (now >= deadline).then_some(ContextError::DeadlineExceeded)
    }

    /// Why this context is done, in full (Go's `context.Cause`): the cause given to
    /// [`CancelHandle::cancel_with`] or to [`with_timeout_cause`](Context::with_timeout_cause),
    /// inherited from above; else the [`ContextError`] of [`err`](Context::err). `None` only
    /// while the context is not done.
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::Context;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// assert!(ctx.cause().is_none());
    /// cancel.cancel_with("shutting down");
    /// cancel.cancel_with("ignored: the first cause wins");
    /// assert_eq!(ctx.cause().unwrap().to_string(), "shutting down");
    ///
    /// let (plain, cancel) = Context::background().with_cancel();
    /// cancel.cancel();
    /// assert_eq!(plain.cause().unwrap().to_string(), "context cancelled");
    /// ```
    #[doc(alias = "Cause")]
    pub fn cause(&self) -> Option<SharedError> {
        match self.err()? {
            err @ ContextError::Cancelled => {
                Some(self.given_cause().unwrap_or_else(|| err.shared()))
            }
            err @ ContextError::DeadlineExceeded => {
                Some(self.deadline_cause().unwrap_or_else(|| err.shared()))
            }
        }
    }

    /// The cause given to the cancellation that reached this context, if one was.
    pub(crate) fn given_cause(&self) -> Option<SharedError> {
        self.scope()?.reason()?.cause.clone()
    }

    /// The cause given with this context's deadline, if one was.
    fn deadline_cause(&self) -> Option<SharedError> {
        let deadline = self.deadline?;
        self.node
            .as_deref()?
            .chain(false)
            .find_map(|node| match &node.kind {
                Kind::DeadlineCause { at, cause } if *at == deadline => Some(cause.clone()),
                _ => None,
            })
    }

    /// Waits until this context is cancelled. Never completes for a context that cannot be
    /// cancelled, such as [`Context::background`]. The deadline does not count: to wait for
    /// either, use [`done`](Context::done).
    ///
    /// # Cancellation
    ///
    /// Dropping the future only stops waiting.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (ctx, cancel) = failfast::Context::background().with_cancel();
    /// std::thread::spawn(move || cancel.cancel());
    /// ctx.cancelled().await;
    /// assert!(ctx.is_cancelled());
    /// # });
    /// ```
    pub fn cancelled(&self) -> Cancelled {
        Cancelled::new(self.node.as_ref().and_then(Node::scope_node))
    }

    /// Waits until this context is done: cancelled, or past its deadline, whichever comes
    /// first (Go's `<-ctx.Done()`). The deadline fires on the context's clock (see the type's
    /// docs); the sleep is made on the first poll that needs it, so in a `select!` loop make
    /// the future once, outside the loop (it is a `FusedFuture`), rather than at each turn.
    ///
    /// # Panics
    ///
    /// If the context's timer panics, as tokio's does once its runtime has shut down, so
    /// does this future: the same as awaiting that timer's own sleep.
    ///
    /// # Cancellation
    ///
    /// Dropping the future only stops waiting.
    ///
    /// Inside a group, a cancelled call's future is also dropped, and whether the service is
    /// polled in between to see `done()` complete is a race: cleanup that must run belongs in
    /// a `Drop` guard, not after `done()`.
    ///
    /// # Examples
    ///
    /// A service that gives up at its deadline, or when cancelled:
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::{BoxError, Context};
    /// use futures::{FutureExt, select};
    ///
    /// async fn slow_query(ctx: Context) -> Result<u32, BoxError> {
    ///     select! {
    ///         _ = ctx.done() => Err(ctx.cause().expect("done").into()),
    ///         n = futures_timer::Delay::new(Duration::from_secs(10)).map(|()| 7).fuse() => Ok(n),
    ///     }
    /// }
    /// # futures::executor::block_on(async {
    /// let ctx = Context::background().with_timeout(Duration::from_millis(20));
    /// let err = slow_query(ctx).await.unwrap_err();
    /// assert_eq!(err.to_string(), "context deadline exceeded");
    /// # });
    /// ```
    #[doc(alias = "Done")]
    pub fn done(&self) -> Done {
        Done::new(self.clone())
    }

    /// Runs `future` until it completes (`Some(output)`) or the context is done first
    /// (`None`), like tokio's `CancellationToken::run_until_cancelled`, deadline included.
    /// When both are ready at once, the context wins.
    ///
    /// # Cancellation
    ///
    /// Dropping the returned future drops `future`.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (ctx, cancel) = failfast::Context::background().with_cancel();
    /// assert_eq!(ctx.run_until_cancelled(async { 5 }).await, Some(5));
    /// cancel.cancel();
    /// assert_eq!(ctx.run_until_cancelled(async { 5 }).await, None);
    /// # });
    /// ```
    pub fn run_until_cancelled<F: Future>(&self, future: F) -> RunUntilCancelled<F> {
        RunUntilCancelled::new(future, self.done())
    }

    /// Runs `f` once, when this context is done. Go's `context.AfterFunc`. Where it runs:
    ///
    /// * on cancellation: on the thread that cancels, after it has released every lock of the
    ///   context tree, before `cancel()` returns;
    /// * at the deadline: on failfast's after-function thread (one per process, named
    ///   `failfast-after`, started on first use), never on the timer's own thread, so a slow
    ///   `f` cannot hold up timers; the deadline's sleep is polled on the timer's thread,
    ///   which wakes it, so no executor is needed;
    /// * on a context that is already done: now, on this thread.
    ///
    /// `f` may cancel and derive contexts, its own included. What follows for the caller:
    /// `cancel()` returns only after the after-functions it triggered have returned, so do
    /// not cancel while holding a lock that `f` takes; and after-functions fired by deadlines
    /// run one at a time, so a long or blocking `f` delays the others: hand long work to an
    /// executor or a thread. A panic in `f` is caught and logged at warn; the rest of the tree
    /// is cancelled regardless.
    ///
    /// The deadline needs a clock, as [`done`](Context::done) does. Without one (the
    /// `futures-timer` feature off and no [`with_timer`](Context::with_timer)), `f` runs on
    /// cancellation only, and a warning says so. If the timer fails (tokio's, after its
    /// runtime shut down), the failure is logged and `f` runs on cancellation only.
    ///
    /// The returned handle can [`stop`](AfterHandle::stop) `f`; dropping it leaves `f`
    /// registered, as in Go. While registered, `f` (and what it captures) lives as long as
    /// the context's cancellation scope, or until the deadline: a function that captures its
    /// own context is freed when the context is cancelled or `f` is stopped.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// use failfast::Context;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let closed = Arc::new(AtomicBool::new(false));
    /// let flag = closed.clone();
    /// let _handle = ctx.after(move || flag.store(true, Ordering::SeqCst));
    /// cancel.cancel(); // runs the function before returning
    /// assert!(closed.load(Ordering::SeqCst));
    /// ```
    #[doc(alias = "AfterFunc")]
    pub fn after(&self, f: impl FnOnce() + Send + 'static) -> AfterHandle {
        let after = After::new(Box::new(f));
        let scope = self.node.as_ref().and_then(Node::scope_node);
        let registered = match scope.as_ref().and_then(|node| node.scope()) {
            Some(scope) => scope.register(&after),
            None => true,
        };
        if !registered || self.expired() {
            after.fire();
        } else if let Some(deadline) = self.deadline {
            match self.clock() {
                Some(clock) => after.arm(clock.sleep_until(deadline)),
                None => log::warn!(
                    target: "failfast",
                    "an after-function will not run at its context's deadline: there is no clock (the `futures-timer` feature is off); attach one with Context::with_timer"
                ),
            }
        }
        AfterHandle::new(after, scope)
    }

    /// The scope whose cancellation is this context's.
    fn scope(&self) -> Option<&Scope> {
        self.node.as_deref()?.effective_scope()
    }

    /// The clock deadlines fire on, if there is one.
    pub(crate) fn clock(&self) -> Option<&dyn Clock> {
        match self.node.as_deref().and_then(|node| node.clock.as_deref()) {
            Some(clock) => Some(clock),
            None => clock::default_clock(),
        }
    }

    /// Now, by this context's clock (the real clock without one).
    pub(crate) fn now(&self) -> Instant {
        self.clock().map_or_else(Instant::now, Clock::now)
    }

    /// Whether the deadline has passed, by this context's clock.
    fn expired(&self) -> bool {
        self.deadline.is_some_and(|deadline| self.now() >= deadline)
    }
}

impl fmt::Debug for Context {
    /// Shows what a reader needs: the time left before the deadline (by the context's clock;
    /// zero once it has passed), why it is done, and its cause.
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::Context;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// cancel.cancel_with("bye");
    /// assert_eq!(
    ///     format!("{ctx:?}"),
    ///     r#"Context { remaining: None, done: Some(Cancelled), cause: Some("bye") }"#
    /// );
    /// let ctx = Context::background().with_timeout(Duration::from_secs(60));
    /// assert!(format!("{ctx:?}").starts_with("Context { remaining: Some(59."));
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("remaining", &self.remaining())
            .field("done", &self.err())
            .field("cause", &self.cause().map(|cause| cause.to_string()))
            .finish()
    }
}

impl fmt::Display for Context {
    /// One line for logs: the budget left, or why the context is done.
    ///
    /// ```
    /// use failfast::Context;
    ///
    /// assert_eq!(Context::background().to_string(), "context without deadline");
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// cancel.cancel_with("user left");
    /// assert_eq!(ctx.to_string(), "context cancelled: user left");
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.err(), self.remaining()) {
            (None, None) => f.write_str("context without deadline"),
            (None, Some(remaining)) => write!(f, "context with {remaining:.1?} left"),
            (Some(err), _) => {
                write!(f, "{err}")?;
                let given = match err {
                    ContextError::Cancelled => self.given_cause(),
                    ContextError::DeadlineExceeded => self.deadline_cause(),
                };
                match given {
                    Some(cause) => write!(f, ": {cause}"),
                    None => Ok(()),
                }
            }
        }
    }
}

// A context is safe to use after a panic: its locks ignore poisoning, and every update leaves
// it consistent (see `crate::sync`). As tokio-util's `CancellationToken` is.
impl UnwindSafe for Context {}
impl RefUnwindSafe for Context {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_children_are_pruned() {
        let (parent, _cancel) = Context::background().with_cancel();
        for _ in 0..10_000 {
            let _ = parent.with_cancel();
        }
        let scope = parent.scope().unwrap();
        assert!(scope.linked_len().0 <= 64);
    }

    #[test]
    fn child_of_cancelled_parent_starts_cancelled() {
        let (parent, cancel) = Context::background().with_cancel();
        cancel.cancel();
        assert!(parent.with_cancel().0.is_cancelled());
    }

    #[test]
    fn cancellation_reaches_grandchildren_after_the_middle_context_is_dropped() {
        let (root, cancel) = Context::background().with_cancel();
        let mut ctx = root;
        for _ in 0..1_000 {
            ctx = ctx.with_cancel().0;
        }
        cancel.cancel();
        assert!(ctx.is_cancelled());
    }

    #[test]
    fn very_deep_chains_cancel_and_drop_without_overflowing_the_stack() {
        let (root, cancel) = Context::background().with_cancel();
        let mut ctx = root.clone();
        for _ in 0..200_000 {
            ctx = ctx.with_cancel().0;
        }
        cancel.cancel();
        assert!(ctx.is_cancelled());
        drop(ctx);

        let mut ctx = root;
        for _ in 0..200_000 {
            ctx = ctx.with_cancel().0;
        }
        drop(ctx); // uncancelled chain: released without recursion too
    }
}
