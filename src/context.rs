//! [`Context`]: a deadline and a cancellation signal, handed from parent to child.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use event_listener::{Event, EventListener};

use crate::sync::lock;

/// A deadline and a cancellation signal, passed as the first argument to every call.
///
/// This is Go's `context.Context` for failfast. A context is cheap to clone; clones share the
/// same cancellation. Children are derived with [`with_timeout`](Context::with_timeout),
/// [`with_deadline`](Context::with_deadline) and [`with_cancel`](Context::with_cancel):
///
/// * a child's deadline is the earlier of its own and its parent's: the earlier deadline wins;
/// * cancelling a parent cancels every child, never the other way round.
///
/// The deadline is data, not a timer: a context does not fire by itself when its deadline
/// passes (failfast stays runtime-agnostic by never owning a clock). Whoever runs the work
/// enforces it, as [`Group::run`](crate::Group::run) does, and services read
/// [`deadline`](Context::deadline) to pass the remaining budget downstream. When a group
/// ends, whether it gives up (deadline, error, cancellation) or succeeds, it cancels the
/// context it handed to its calls (Go's `defer cancel()`), and so does the first failure of a
/// required call (errgroup's cancel on the first error), so `ctx.cancelled().await` inside a
/// service wakes up either way.
///
/// A deadline is an `Instant` of the real clock (`with_timeout` reads `Instant::now()`). With
/// a virtual clock ([`timer::Manual`](crate::timer::Manual), or tokio's paused time), build
/// deadlines from that clock instead: `ctx.with_deadline(timer.now() + d)`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use failfast::Context;
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// let child = ctx.with_timeout(Duration::from_secs(1));
/// assert!(child.deadline().is_some());
/// assert!(!child.is_cancelled());
///
/// cancel.cancel();
/// assert!(child.is_cancelled());
/// ```
#[derive(Clone, Default)]
pub struct Context {
    deadline: Option<Instant>,
    node: Option<Arc<Node>>,
}

/// Cancels the [`Context`] it was created with, and every context derived from it.
///
/// Returned by [`Context::with_cancel`]. Clones cancel the same context. Dropping a handle
/// does *not* cancel: a handle that is dropped unused simply means "never cancelled".
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

/// The future returned by [`Context::cancelled`].
///
/// It owns what it needs, so it can be moved into a spawned task. It is a
/// [`FusedFuture`](futures::future::FusedFuture), so it can be used in `futures::select!`
/// directly.
///
/// # Cancellation
///
/// Dropping it only stops waiting; it has no effect on the context.
#[must_use = "futures do nothing unless you .await or poll them"]
pub struct Cancelled {
    node: Option<Arc<Node>>,
    listener: Option<EventListener>,
    done: bool,
}

/// One cancellation scope: a flag, the tasks waiting on it and the scopes below it.
struct Node {
    cancelled: AtomicBool,
    event: Event,
    /// Child scopes, held weakly: a child that is dropped is pruned lazily.
    children: Mutex<Vec<Weak<Node>>>,
    /// Whether `children` was ever pushed to: lets `cancel` skip the lock when it was not.
    adopted: AtomicBool,
    /// Keeps the scopes above alive while this one is: cancellation of a grandparent must
    /// still reach us after the intermediate `Context` values are dropped.
    _parent: Option<Arc<Node>>,
}

impl Context {
    /// The root context: no deadline, never cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// let ctx = failfast::Context::background();
    /// assert_eq!(ctx.deadline(), None);
    /// assert!(!ctx.is_cancelled());
    /// ```
    #[doc(alias = "Background")]
    pub fn background() -> Context {
        Context::default()
    }

    /// A child that must finish within `timeout` from now (`Instant::now()`).
    ///
    /// If the parent's deadline is earlier, the parent's wins. A timeout too large to be
    /// represented as an `Instant` (such as `Duration::MAX`) means no deadline of its own.
    /// The child shares the parent's cancellation.
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
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.with_deadline(deadline),
            None => self.clone(),
        }
    }

    /// A child that must finish by `deadline`; the parent's deadline wins if it is earlier.
    ///
    /// A deadline that has already passed is allowed: work run under it fails at once with
    /// [`AggregateError::DeadlineExceeded`](crate::AggregateError::DeadlineExceeded).
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
        let deadline = match self.deadline {
            Some(parent) if parent <= deadline => parent,
            _ => deadline,
        };
        Context {
            deadline: Some(deadline),
            node: self.node.clone(),
        }
    }

    /// A child that can be cancelled on its own, and the handle that cancels it.
    ///
    /// The child is also cancelled when this context is; if this context is already
    /// cancelled, the child starts cancelled.
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
    #[must_use]
    pub fn with_cancel(&self) -> (Context, CancelHandle) {
        let node = Arc::new(Node::new(self.node.clone()));
        if let Some(parent) = &self.node {
            parent.adopt(&node);
        }
        let child = Context {
            deadline: self.deadline,
            node: Some(node.clone()),
        };
        (child, CancelHandle { node })
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

    /// Whether this context, or one of its ancestors, has been cancelled.
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
        self.node.as_ref().is_some_and(|node| node.is_cancelled())
    }

    /// Waits until this context is cancelled. Never completes for a context that cannot be
    /// cancelled, such as [`Context::background`].
    ///
    /// This is Go's `<-ctx.Done()`, except that reaching the deadline does not complete it on
    /// its own (see the type's docs); inside a group's call it does, because the group
    /// cancels its calls' context when it gives up.
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
    #[doc(alias = "Done")]
    pub fn cancelled(&self) -> Cancelled {
        Cancelled {
            node: self.node.clone(),
            listener: None,
            done: false,
        }
    }
}

impl fmt::Debug for Context {
    /// Shows what a reader needs: the time left before the deadline (by the real clock; zero
    /// once it has passed), whether the context can be cancelled, and whether it is.
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::Context;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// cancel.cancel();
    /// assert_eq!(format!("{ctx:?}"), "Context { remaining: None, cancellable: true, cancelled: true }");
    /// let ctx = Context::background().with_timeout(Duration::from_secs(60));
    /// assert!(format!("{ctx:?}").starts_with("Context { remaining: Some(59."));
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let remaining = self
            .deadline
            .map(|deadline| deadline.saturating_duration_since(Instant::now()));
        f.debug_struct("Context")
            .field("remaining", &remaining)
            .field("cancellable", &self.node.is_some())
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl CancelHandle {
    /// Cancels the context, and every context derived from it. Idempotent; callable from any
    /// thread.
    ///
    /// # Examples
    ///
    /// ```
    /// let (ctx, cancel) = failfast::Context::background().with_cancel();
    /// cancel.cancel();
    /// cancel.cancel(); // a second call does nothing
    /// assert!(ctx.is_cancelled());
    /// ```
    #[doc(alias = "CancelFunc")]
    pub fn cancel(&self) {
        self.node.cancel();
    }

    /// Whether the context has been cancelled, by this handle or by an ancestor.
    ///
    /// # Examples
    ///
    /// ```
    /// let (_ctx, cancel) = failfast::Context::background().with_cancel();
    /// assert!(!cancel.is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.node.is_cancelled()
    }
}

impl fmt::Debug for CancelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelHandle")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl Future for Cancelled {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = &mut *self;
        let Some(node) = &this.node else {
            return Poll::Pending; // background: nothing can cancel it
        };
        loop {
            if node.is_cancelled() {
                this.listener = None;
                this.done = true;
                return Poll::Ready(());
            }
            match &mut this.listener {
                // Register first, then re-check the flag (at the top of the loop), so a
                // cancel racing with us cannot be missed.
                None => this.listener = Some(node.event.listen()),
                Some(listener) => match Pin::new(listener).poll(cx) {
                    Poll::Ready(()) => this.listener = None,
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }
}

impl futures::future::FusedFuture for Cancelled {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl fmt::Debug for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cancelled").finish_non_exhaustive()
    }
}

impl Node {
    fn new(parent: Option<Arc<Node>>) -> Node {
        Node {
            cancelled: AtomicBool::new(false),
            event: Event::new(),
            children: Mutex::new(Vec::new()),
            adopted: AtomicBool::new(false),
            _parent: parent,
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Registers `child` so that cancelling `self` cancels it.
    fn adopt(&self, child: &Arc<Node>) {
        if !self.is_cancelled() {
            self.adopted.store(true, Ordering::SeqCst);
            let mut children = lock(&self.children);
            if children.len() == children.capacity() {
                // Amortised pruning: dropped children are forgotten before the list grows, so
                // a long-lived parent holds no more entries than its peak number of live
                // children, rounded up to the list's capacity.
                children.retain(|weak| weak.strong_count() > 0);
            }
            children.push(Arc::downgrade(child));
        }
        // `cancel` sets the flag before it takes the list: either it saw our push, or we see
        // its flag here.
        if self.is_cancelled() {
            child.cancel();
        }
    }

    /// Cancels this scope and everything below it, iteratively: a chain of any depth is fine.
    fn cancel(&self) {
        let mut below = self.cancel_one();
        while let Some(weak) = below.pop() {
            if let Some(node) = weak.upgrade() {
                below.extend(node.cancel_one());
            }
        }
    }

    /// Cancels this scope alone and returns its children.
    fn cancel_one(&self) -> Vec<Weak<Node>> {
        if self.cancelled.swap(true, Ordering::SeqCst) {
            return Vec::new();
        }
        self.event.notify(usize::MAX);
        // `adopt` sets `adopted` before it pushes and re-checks our flag after: a child it
        // pushes after this load sees the flag and cancels itself.
        if self.adopted.load(Ordering::SeqCst) {
            std::mem::take(&mut *lock(&self.children))
        } else {
            Vec::new()
        }
    }
}

impl Drop for Node {
    /// Releases the chain of parents iteratively, so that dropping the last context of a very
    /// deep chain does not recurse once per level.
    fn drop(&mut self) {
        let mut parent = self._parent.take();
        while let Some(node) = parent {
            parent = Arc::into_inner(node).and_then(|mut node| node._parent.take());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_children_are_pruned() {
        let (parent, _cancel) = Context::background().with_cancel();
        for _ in 0..10_000 {
            let _ = parent.with_cancel();
        }
        let node = parent.node.as_ref().unwrap();
        assert!(lock(&node.children).len() <= 64);
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
