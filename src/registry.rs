//! The calls of one group, in the order they were made: launching them (under the limit),
//! polling the inline ones, handing outcomes to their handles, and cancelling them all when
//! the group ends.

use std::any::Any;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::task::{Context as TaskContext, Poll};

use crate::attempt::{GROUP_FINISHED, Phase, Settings};
use crate::error::Error;
use crate::executor::Executor;
use crate::inline::InlineEntry;
use crate::spawned::{Entry, Launched, Local};
use crate::state::Shared;
use crate::sync::lock;
use crate::timer::Timer;

/// What a call made after its group has run yields.
pub(crate) const ALREADY_RAN: &str =
    "this group has already run: make a new group with `FailFast::group` for more calls";

/// How many names of cancelled calls a record lists.
const NAMES_LISTED: usize = 16;

/// The calls of one group.
pub(crate) struct Registry<E: Executor, T> {
    inner: Mutex<Inner<E, T>>,
    /// How many calls were made: `inner.slots.len()`, readable without the lock.
    made: AtomicUsize,
}

struct Inner<E: Executor, T> {
    slots: Vec<CallSlot<E, T>>,
    /// Calls before this index have been launched (or ended without starting).
    next: usize,
    stage: Stage,
    /// Reused for the indices of the calls to poll.
    scratch: Vec<usize>,
    /// `run` has begun and launched nothing yet: the calls made before it start even if the
    /// deadline has passed meanwhile (answering at once, they win the tie).
    fresh: bool,
}

enum CallSlot<E: Executor, T> {
    /// Polled by the group: the executor is `Inline`.
    Inline(Pin<Box<dyn InlineEntry<T>>>),
    /// Handed to the executor, and what the group holds of its task.
    Spawned {
        entry: Arc<dyn Entry<E, T>>,
        held: Held<E::Handle>,
    },
    /// Its outcome was taken, or it was cancelled.
    Gone,
}

/// What the group holds of a spawned call's task.
enum Held<H> {
    /// Nothing: not launched (yet).
    Nothing,
    /// The runtime's handle, dropped on the group's thread once the call has ended (so that
    /// the runtime frees the task here, not on its workers) or to cancel it.
    Handle(H),
    /// The task itself, handed back by the executor and polled by the group (boxed: rare,
    /// and it would double the size of every slot).
    Local(Box<Local>),
}

/// Where a group is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Idle,
    Running,
    Finished,
}

/// What launching and polling calls need from their group.
pub(crate) struct Env<'a, E, T> {
    pub(crate) shared: &'a Arc<Shared>,
    pub(crate) executor: &'a E,
    pub(crate) timer: &'a T,
    pub(crate) limit: Option<NonZeroUsize>,
}

impl<E: Executor, T> Registry<E, T> {
    pub(crate) fn new() -> Registry<E, T> {
        Registry {
            inner: Mutex::new(Inner {
                slots: Vec::new(),
                next: 0,
                stage: Stage::Idle,
                scratch: Vec::new(),
                fresh: false,
            }),
            made: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<E, T>> {
        lock(&self.inner)
    }

    /// How many calls were made.
    pub(crate) fn len(&self) -> usize {
        self.made.load(Ordering::Acquire)
    }

    pub(crate) fn stage(&self) -> Stage {
        self.lock().stage
    }

    /// Starts `run`: false if the group has run (or is running) already.
    pub(crate) fn begin(&self) -> bool {
        let mut inner = self.lock();
        if inner.stage != Stage::Idle {
            return false;
        }
        inner.stage = Stage::Running;
        inner.fresh = true;
        true
    }

    /// Adds an inline call; returns its index.
    pub(crate) fn push_inline(&self, mut call: Pin<Box<dyn InlineEntry<T>>>) -> usize {
        let mut inner = self.lock();
        if inner.stage == Stage::Finished {
            call.as_mut().refuse(Error::Misuse {
                message: ALREADY_RAN,
            });
        }
        inner.slots.push(CallSlot::Inline(call));
        self.made.store(inner.slots.len(), Ordering::Release);
        inner.slots.len() - 1
    }

    /// Adds a spawned call, made by `make` from its index.
    pub(crate) fn push_spawned<C>(&self, make: impl FnOnce(usize) -> Arc<C>) -> (usize, Arc<C>)
    where
        C: Entry<E, T> + 'static,
    {
        let mut inner = self.lock();
        let index = inner.slots.len();
        let entry = make(index);
        if inner.stage == Stage::Finished {
            entry.abort(&Error::Misuse {
                message: ALREADY_RAN,
            });
        }
        inner.slots.push(CallSlot::Spawned {
            entry: entry.clone(),
            held: Held::Nothing,
        });
        self.made.store(inner.slots.len(), Ordering::Release);
        (index, entry)
    }

    /// Changes the settings of the inline call `index`; false once it has been launched.
    pub(crate) fn configure(&self, index: usize, change: &mut dyn FnMut(&mut Settings)) -> bool {
        match self.lock().slots.get_mut(index) {
            Some(CallSlot::Inline(call)) => call.as_mut().configure(change),
            _ => false,
        }
    }

    /// Moves the outcome of the inline call `index` into `into`; the call is gone after that.
    pub(crate) fn take(
        &self,
        index: usize,
        cx: &mut TaskContext<'_>,
        into: &mut dyn Any,
    ) -> Poll<()> {
        let mut inner = self.lock();
        let Some(slot) = inner.slots.get_mut(index) else {
            return Poll::Ready(());
        };
        let CallSlot::Inline(call) = slot else {
            return Poll::Ready(()); // cancelled: the group has finished
        };
        if call.as_mut().take(cx, into).is_pending() {
            return Poll::Pending;
        }
        // Done: free it now rather than when the group ends.
        let gone = std::mem::replace(slot, CallSlot::Gone);
        drop(inner);
        drop(gone);
        Poll::Ready(())
    }

    /// The spawned call `index` has ended: drops the runtime's handle on its task now, on
    /// this thread (where the runtime then frees the task), unless the group is being driven
    /// on another thread right now; then it goes when the group ends.
    pub(crate) fn release(&self, index: usize) {
        if !std::mem::needs_drop::<E::Handle>() {
            return; // an executor without handles: nothing to drop
        }
        let held = match self.inner.try_lock() {
            Ok(mut inner) => match inner.slots.get_mut(index) {
                Some(CallSlot::Spawned { held, .. }) if matches!(held, Held::Handle(_)) => {
                    std::mem::replace(held, Held::Nothing)
                }
                _ => return,
            },
            Err(_) => return,
        };
        drop(held);
    }

    /// The names of the calls still in flight, comma-separated (the first few).
    pub(crate) fn names_in_flight(&self) -> String {
        let inner = self.lock();
        let mut names = String::new();
        let (mut listed, mut more) = (0, 0);
        for slot in &inner.slots {
            let (phase, name) = match slot {
                CallSlot::Inline(call) => (call.phase(), call.name()),
                CallSlot::Spawned { entry, .. } => (entry.phase(), entry.name()),
                CallSlot::Gone => continue,
            };
            if !matches!(phase, Phase::Launched | Phase::Running) {
                continue;
            }
            if listed == NAMES_LISTED {
                more += 1;
                continue;
            }
            if listed > 0 {
                names.push(',');
            }
            names.push_str(name);
            listed += 1;
        }
        if more > 0 {
            names.push_str(&format!(",+{more} more"));
        }
        names
    }

    /// How many spawned calls the executor was given and never polled.
    pub(crate) fn unpolled(&self) -> usize {
        self.lock()
            .slots
            .iter()
            .filter(|slot| {
                matches!(slot, CallSlot::Spawned { entry, held: Held::Nothing | Held::Handle(_) }
                    if entry.phase() == Phase::Launched)
            })
            .count()
    }
}

impl<E: Executor, T: Timer> Registry<E, T> {
    /// Ends the group: every call still running is cancelled, the calls' context too.
    /// Idempotent. Services and the runtime's handles are dropped outside the lock; the makers
    /// of spawned calls that never started are dropped under it (by `Entry::abort`), and they
    /// are the only user code the loop runs: calls launch in the order they were made, so a
    /// maker's panic can only cut the loop short after every call holding a handle (whose
    /// task must be flagged before its handle goes: smol's cancels on drop) was reached.
    pub(crate) fn close(&self, shared: &Shared, timer: &T) {
        let mut cancelled = Vec::new();
        {
            let mut inner = self.lock();
            if inner.stage == Stage::Finished {
                return;
            }
            inner.stage = Stage::Finished;
            inner.next = inner.slots.len();
            shared.set_in_run(false);
            shared.cancel();
            // Nobody drives the group any more: calls that end later (a cancelled task on its
            // executor's thread, freeing a slot under a limit, or failing) must not wake the
            // last driver, which has moved on.
            drop(shared.waker.take());
            let error = Error::Misuse {
                message: GROUP_FINISHED,
            };
            for slot in &mut inner.slots {
                match slot {
                    CallSlot::Inline(_) => cancelled.push(std::mem::replace(slot, CallSlot::Gone)),
                    CallSlot::Spawned { entry, held } => {
                        entry.abort(&error);
                        if !matches!(held, Held::Nothing) {
                            // Dropped below, outside the lock: a handle may cancel its task.
                            cancelled.push(std::mem::replace(slot, CallSlot::Gone));
                        }
                    }
                    CallSlot::Gone => {}
                }
            }
        }
        for slot in cancelled {
            if let CallSlot::Inline(mut call) = slot {
                call.as_mut().cancel(shared, timer);
            }
        }
    }

    /// The call `index` is no longer wanted: an inline call (or a spawned one handed back) is
    /// cancelled now. If the group is being driven on another thread right now, a handed-back
    /// call stops at its next poll (its abort flag is set) and an inline one when the group
    /// ends.
    pub(crate) fn forget(&self, index: usize, shared: &Shared, timer: &T) {
        let gone = match self.inner.try_lock() {
            Ok(mut inner) => take_slot(&mut inner, index),
            Err(TryLockError::Poisoned(poisoned)) => take_slot(&mut poisoned.into_inner(), index),
            Err(TryLockError::WouldBlock) => {
                shared.wake_local(index);
                return;
            }
        };
        if let Some(CallSlot::Inline(mut call)) = gone {
            call.as_mut().cancel(shared, timer);
        }
    }
}

/// Takes the slot `index` out if it holds a call the group polls.
fn take_slot<E: Executor, T>(inner: &mut Inner<E, T>, index: usize) -> Option<CallSlot<E, T>> {
    let slot = inner.slots.get_mut(index)?;
    match slot {
        CallSlot::Inline(_)
        | CallSlot::Spawned {
            held: Held::Local(_) | Held::Handle(_),
            ..
        } => Some(std::mem::replace(slot, CallSlot::Gone)),
        _ => None,
    }
}

impl<E: Executor, T: Timer> Registry<E, T> {
    /// Launches the calls that may start and polls the inline (and handed back) calls that
    /// are ready; nothing is launched once the group is over (`run` ends it). Returns how many
    /// calls the group has made.
    pub(crate) fn drive(&self, env: &Env<'_, E, T>) -> usize {
        let mut inner = self.lock();
        let inner = &mut *inner;
        if inner.stage == Stage::Finished {
            return inner.slots.len();
        }
        let mut ready = std::mem::take(&mut inner.scratch);
        loop {
            let first = inner.next;
            launch(inner, env);
            // The calls woken since the last poll (all launched before) and the calls just
            // launched, in the order they were made: of calls ready together, the one made
            // first goes first.
            env.shared.take_ready(&mut ready);
            ready.sort_unstable();
            ready.dedup();
            let launched = first..inner.next;
            if ready.is_empty() && launched.is_empty() {
                break;
            }
            let mut freed = false;
            for index in ready.iter().copied().chain(launched) {
                if env.shared.has_failed() {
                    break; // fail fast: `run` ends the group; nothing more is polled
                }
                let ended = match inner.slots.get_mut(index) {
                    Some(CallSlot::Inline(call)) => {
                        call.as_mut().poll_call(env.shared, index, env.timer)
                    }
                    Some(CallSlot::Spawned {
                        held: Held::Local(local),
                        ..
                    }) => {
                        let mut cx = TaskContext::from_waker(&local.waker);
                        let ended = local.task.as_mut().poll(&mut cx).is_ready();
                        if ended {
                            inner.slots[index] = CallSlot::Gone;
                        }
                        ended
                    }
                    _ => false,
                };
                freed |= ended;
            }
            ready.clear();
            // Calls that ended freed slots: launch the calls waiting for them.
            if !freed || inner.next == inner.slots.len() || env.shared.has_failed() {
                break;
            }
        }
        inner.scratch = ready;
        inner.slots.len()
    }
}

/// Launches waiting calls while the limit allows; the caller polls those the group polls.
fn launch<E, T>(inner: &mut Inner<E, T>, env: &Env<'_, E, T>)
where
    E: crate::executor::Executor,
    T: Timer,
{
    let fresh = std::mem::take(&mut inner.fresh);
    let limit = env.limit.map_or(usize::MAX, NonZeroUsize::get);
    let shared = env.shared;
    if inner.next == inner.slots.len() || shared.running() >= limit {
        return;
    }
    if fresh {
        // `run` has just checked the caller's context and deadline.
    } else if shared.over(env.timer.now()).is_some() {
        return; // `run` ends the group at this poll
    }
    while inner.next < inner.slots.len() && shared.running() < limit && !shared.has_failed() {
        let index = inner.next;
        inner.next += 1;
        match &mut inner.slots[index] {
            CallSlot::Inline(call) => {
                if call.as_mut().launch() {
                    shared.launched();
                }
            }
            CallSlot::Spawned { entry, held } => {
                *held = match entry.clone().launch(env.executor, env.timer) {
                    Launched::Spawned(handle) => Held::Handle(handle),
                    Launched::Local(local) => Held::Local(Box::new(local)),
                    Launched::Not => Held::Nothing,
                };
            }
            CallSlot::Gone => {}
        }
    }
}
