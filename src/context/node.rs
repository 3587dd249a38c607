//! The tree behind contexts: cancellation scopes, values, deadline causes and clocks, each a
//! node that points up to its parent.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use event_listener::Event;

use super::after::After;
use super::clock::Clock;
use crate::error::SharedError;
use crate::sync::lock;

/// One link of a context chain. Only [`Kind::Scope`] nodes can be cancelled; every other node
/// defers to the nearest scope above it.
pub(crate) struct Node {
    /// The node above: keeps the chain alive (values, deadline causes, and the cancellation of
    /// a grandparent reaching a grandchild after the middle contexts are dropped).
    parent: Option<Arc<Node>>,
    /// For nodes that are not scopes: the nearest scope above, the one whose cancellation is
    /// theirs. `None` for scopes themselves, and under a detached node.
    scope_above: Option<Arc<Node>>,
    /// The clock of this node's deadlines, inherited from the parent unless set here.
    pub(crate) clock: Option<Arc<dyn Clock>>,
    pub(crate) kind: Kind,
}

pub(crate) enum Kind {
    /// `with_cancel`: can be cancelled, with a cause.
    Scope(Scope),
    /// `with_value`: a typed value, visible to everything below.
    Value(Box<dyn Any + Send + Sync>),
    /// `with_deadline_cause`: the cause reported when the deadline `at` is what ended a
    /// context.
    DeadlineCause { at: Instant, cause: SharedError },
    /// `without_cancel`: values and clock go through; cancellation and deadlines stop here.
    Detached,
}

/// Why and when a scope was cancelled.
#[derive(Clone)]
pub(crate) struct Reason {
    /// When, by the scope's clock: a deadline at or before it is what ended the context.
    pub(crate) at: Instant,
    /// The cause given to `cancel_with`, if any.
    pub(crate) cause: Option<SharedError>,
}

/// A cancellation scope: a flag, its reason, the tasks waiting on it, the scopes below it and
/// the after-functions to run when it is cancelled.
pub(crate) struct Scope {
    cancelled: AtomicBool,
    /// Set once, by the cancel that wins (a mutex: cheaper than a `OnceLock` to set).
    reason: Mutex<Option<Reason>>,
    event: Event,
    /// Whether a task ever listened on `event`: lets `cancel` skip the notification (which
    /// would allocate the event's list) when none did.
    listened: AtomicBool,
    links: Mutex<Links>,
    /// Whether `links` was ever pushed to: lets `cancel` skip the lock when it was not.
    linked: AtomicBool,
}

#[derive(Default)]
struct Links {
    /// Child scopes, held weakly: a child that is dropped is pruned lazily.
    children: Vec<Weak<Node>>,
    /// After-functions registered here and not yet stopped (or pruned).
    afters: Vec<Arc<After>>,
}

impl Node {
    /// A node of `kind` under `parent`, on the parent's clock.
    pub(crate) fn new(parent: Option<&Arc<Node>>, kind: Kind) -> Arc<Node> {
        Node::build(parent, kind, None)
    }

    /// A new cancellation scope under `parent`, on `clock`: what a group hands its calls, and
    /// what `with_timer` makes. Every change of clock is a scope, so that a cancellation
    /// from above is time-stamped by the clock of the deadlines it is compared with.
    pub(crate) fn scope_on(parent: Option<&Arc<Node>>, clock: Arc<dyn Clock>) -> Arc<Node> {
        Node::build(parent, Kind::Scope(Scope::new()), Some(clock))
    }

    /// A node of `kind` under `parent`, on `clock` or else the parent's; a scope is adopted
    /// by the scope above, so that cancelling that one reaches it.
    fn build(parent: Option<&Arc<Node>>, kind: Kind, clock: Option<Arc<dyn Clock>>) -> Arc<Node> {
        let scope_above = match (&kind, parent) {
            (Kind::Scope(_) | Kind::Detached, _) | (_, None) => None,
            (_, Some(parent)) => parent.scope_node(),
        };
        let node = Arc::new(Node {
            parent: parent.cloned(),
            scope_above,
            clock: clock.or_else(|| parent.and_then(|parent| parent.clock.clone())),
            kind,
        });
        if matches!(node.kind, Kind::Scope(_)) {
            if let Some(above) = parent.and_then(|parent| parent.scope_node()) {
                above.scope().expect("scope_node is a scope").adopt(&node);
            }
        }
        node
    }

    /// This node's scope, if it is one.
    pub(crate) fn scope(&self) -> Option<&Scope> {
        match &self.kind {
            Kind::Scope(scope) => Some(scope),
            _ => None,
        }
    }

    /// The scope whose cancellation is this node's: itself, or the nearest one above.
    pub(crate) fn scope_node(self: &Arc<Self>) -> Option<Arc<Node>> {
        match &self.kind {
            Kind::Scope(_) => Some(self.clone()),
            _ => self.scope_above.clone(),
        }
    }

    /// Like [`scope_node`](Node::scope_node), borrowed.
    pub(crate) fn effective_scope(&self) -> Option<&Scope> {
        match &self.kind {
            Kind::Scope(scope) => Some(scope),
            _ => self.scope_above.as_deref().and_then(Node::scope),
        }
    }

    /// This node and the ones above it, nearest first, up to and including a detached node
    /// when `through_detached` is false.
    pub(crate) fn chain(&self, through_detached: bool) -> impl Iterator<Item = &Node> {
        let mut next = Some(self);
        std::iter::from_fn(move || {
            let node = next?;
            next = match node.kind {
                Kind::Detached if !through_detached => None,
                _ => node.parent.as_deref(),
            };
            Some(node)
        })
    }

    /// Cancels this scope and everything below it, iteratively (a chain of any depth is fine),
    /// then runs the after-functions registered there, outside every lock of the tree.
    /// Returns false if the scope was already cancelled.
    ///
    /// Each scope stamps its own cancellation with its clock, read after its flag is set (see
    /// `cancel_one`), so that `Context::err` never changes once a reader has seen it.
    pub(crate) fn cancel(&self, cause: Option<SharedError>) -> bool {
        self.cancel_stamped(None, cause)
    }

    /// [`cancel`](Node::cancel), stamped `at` if given (a cancellation inherited when the
    /// scope was made, which no reader can have seen pending) or else by this node's clock.
    fn cancel_stamped(&self, at: Option<Instant>, cause: Option<SharedError>) -> bool {
        let Some(scope) = self.scope() else {
            return false;
        };
        let mut afters = Vec::new();
        let when = || at.unwrap_or_else(|| stamp(|| self.now()));
        let Some(children) = scope.cancel_one(when, &cause, &mut afters) else {
            return false;
        };
        let mut below = children;
        while let Some(weak) = below.pop() {
            let Some(node) = weak.upgrade() else { continue };
            let Some(scope) = node.scope() else { continue };
            if let Some(children) = scope.cancel_one(|| stamp(|| node.now()), &cause, &mut afters) {
                below.extend(children);
            }
        }
        for after in afters {
            after.fire();
        }
        true
    }

    /// `reason`, coming from the scope above, as this scope records it: re-stamped by this
    /// scope's clock when it differs from the clock above (virtual time under real time, say).
    fn restamp(&self, reason: Reason) -> Reason {
        let above = self
            .parent
            .as_ref()
            .and_then(|parent| parent.clock.as_ref());
        let same = match (above, &self.clock) {
            (None, None) => true,
            (Some(a), Some(b)) => std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b)),
            _ => false,
        };
        if same {
            reason
        } else {
            Reason {
                at: self.now(),
                cause: reason.cause,
            }
        }
    }

    /// The time to record for a cancellation made now, by this node's clock.
    pub(crate) fn now(&self) -> Instant {
        match &self.clock {
            Some(clock) => clock.now(),
            None => super::clock::default_clock().map_or_else(Instant::now, |clock| clock.now()),
        }
    }
}

impl Scope {
    pub(crate) fn new() -> Scope {
        Scope {
            cancelled: AtomicBool::new(false),
            reason: Mutex::new(None),
            event: Event::new(),
            listened: AtomicBool::new(false),
            links: Mutex::new(Links::default()),
            linked: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Why and when this scope was cancelled, once it is. (`cancel_one` sets the flag under
    /// the reason's lock: a reader that sees the flag waits here until the reason is in.)
    pub(crate) fn reason(&self) -> Option<Reason> {
        if self.is_cancelled() {
            lock(&self.reason).clone()
        } else {
            None
        }
    }

    /// A listener for the cancellation; the caller re-checks the flag after making it.
    pub(crate) fn listen(&self) -> event_listener::EventListener {
        self.listened.store(true, Ordering::SeqCst);
        self.event.listen()
    }

    /// Registers `child` so that cancelling this scope cancels it.
    fn adopt(&self, child: &Arc<Node>) {
        if !self.is_cancelled() {
            self.linked.store(true, Ordering::SeqCst);
            let mut links = lock(&self.links);
            let children = &mut links.children;
            if children.len() == children.capacity() {
                // Amortised pruning: dropped children are forgotten before the list grows, so
                // a long-lived parent holds no more entries than its peak number of live
                // children, rounded up to the list's capacity.
                children.retain(|weak| weak.strong_count() > 0);
            }
            children.push(Arc::downgrade(child));
        }
        // `cancel_one` sets the flag before it takes the list: either it saw our push, or we
        // see its flag here.
        if let Some(reason) = self.reason() {
            let reason = child.restamp(reason);
            child.cancel_stamped(Some(reason.at), reason.cause);
        }
    }

    /// Registers `after` to fire when this scope is cancelled. False if it already is (the
    /// caller fires it).
    pub(crate) fn register(&self, after: &Arc<After>) -> bool {
        if self.is_cancelled() {
            return false;
        }
        self.linked.store(true, Ordering::SeqCst);
        {
            let mut links = lock(&self.links);
            let afters = &mut links.afters;
            if afters.len() == afters.capacity() {
                afters.retain(|after| after.is_pending());
            }
            afters.push(after.clone());
        }
        // As in `adopt`: a cancel that did not see our push is seen here; firing twice is
        // harmless (an after-function runs at most once).
        !self.is_cancelled()
    }

    /// Forgets `after` (stopped).
    pub(crate) fn unregister(&self, after: &Arc<After>) {
        lock(&self.links)
            .afters
            .retain(|other| !Arc::ptr_eq(other, after));
    }

    /// Cancels this scope alone: `None` if it already was, else its children. Its
    /// after-functions are moved to `afters`.
    ///
    /// `when` (the time to record) is called after the flag is set and before the reason is
    /// published, under the reason's lock: a reader that saw the flag unset read its clock
    /// before, so a deadline it saw pass is at or before the time recorded here, and `err`
    /// gives it the same answer afterwards.
    fn cancel_one(
        &self,
        when: impl FnOnce() -> Instant,
        cause: &Option<SharedError>,
        afters: &mut Vec<Arc<After>>,
    ) -> Option<Vec<Weak<Node>>> {
        // The first cause wins: whoever sets the reason cancels.
        {
            let mut set = lock(&self.reason);
            if set.is_some() {
                return None;
            }
            self.cancelled.store(true, Ordering::SeqCst);
            *set = Some(Reason {
                at: when(),
                cause: cause.clone(),
            });
        }
        // `listen` sets `listened` before it registers and re-checks our flag after: a
        // listener this load misses sees the flag.
        if self.listened.load(Ordering::SeqCst) {
            self.event.notify(usize::MAX);
        }
        // `adopt` and `register` set `linked` before they push and re-check our flag after:
        // one they push after this load sees the flag.
        if !self.linked.load(Ordering::SeqCst) {
            return Some(Vec::new());
        }
        let links = std::mem::take(&mut *lock(&self.links));
        afters.extend(links.afters);
        Some(links.children)
    }

    /// How many entries the scope holds, for tests of pruning.
    #[cfg(test)]
    pub(crate) fn linked_len(&self) -> (usize, usize) {
        let links = lock(&self.links);
        (links.children.len(), links.afters.len())
    }
}

/// The time `now` reads, for a cancellation in progress: a clock that panics must not leave
/// a scope flagged with no reason, so its panic is contained and the system's time used.
fn stamp(now: impl FnOnce() -> Instant) -> Instant {
    catch_unwind(AssertUnwindSafe(now)).unwrap_or_else(|_| {
        log::warn!(
            target: "failfast",
            "a context's clock panicked while a cancellation was stamped; Instant::now() was used"
        );
        Instant::now()
    })
}

impl Drop for Node {
    /// Releases the chain of parents iteratively, so that dropping the last context of a very
    /// deep chain does not recurse once per level.
    fn drop(&mut self) {
        let mut parent = self.parent.take();
        while let Some(node) = parent {
            parent = Arc::into_inner(node).and_then(|mut node| node.parent.take());
        }
    }
}
