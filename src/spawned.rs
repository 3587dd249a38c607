//! A call handed to an executor: its [`Cell`] (what its handle, its task and its group share,
//! in one allocation: no channel, no separate abort handle) and its [`Task`] (the future the
//! executor runs). A task is cancelled by setting the cell's `aborted` flag and waking it: it
//! drops its service at its next poll. An executor may also hand the task back, to be polled
//! by the group itself with the cell as its waker.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Wake, Waker};

use futures::task::AtomicWaker;
use pin_project_lite::pin_project;

use crate::attempt::{Attempt, GROUP_FINISHED, Phase, Settings, ended};
use crate::context::Context;
use crate::error::{BoxError, Error};
use crate::executor::Executor;
use crate::observer::Outcome;
use crate::state::Shared;
use crate::sync::lock;
use crate::timer::Timer;

/// What a spawned call's handle, its task and its group share. `Mk` makes the service.
pub(crate) struct Cell<V, Mk> {
    shared: Arc<Shared>,
    index: usize,
    name: Cow<'static, str>,
    /// Set when the call is no longer wanted: its task drops the service at its next poll.
    aborted: AtomicBool,
    /// Set when the executor first polls the task.
    polled: AtomicBool,
    /// Set once the outcome is stored: nothing left to cancel, and the handle may take it.
    ended: AtomicBool,
    /// The task's waker, to wake it when it is aborted.
    task_waker: AtomicWaker,
    /// The handle's waker, woken when the outcome is stored. Not behind the lock: the handle
    /// and the task (on another thread) never wait for each other.
    handle_waker: AtomicWaker,
    state: Mutex<State<V, Mk>>,
}

/// Where a spawned call is, with what it holds there: its maker before it starts, its outcome
/// after it ends (one or the other, never both).
enum State<V, Mk> {
    /// Made, not launched yet: its maker and its settings.
    Registered { make: Mk, settings: Settings },
    /// Handed to its executor.
    Launched,
    /// Ended: its outcome, until its handle takes it (`None` if cancelled before it started).
    Done(Option<Result<V, Error>>),
}

impl<V, Mk> State<V, Mk> {
    fn phase(&self) -> Phase {
        match self {
            State::Registered { .. } => Phase::Registered,
            State::Launched => Phase::Launched,
            State::Done(_) => Phase::Done,
        }
    }

    /// Ends a call that has not started with `outcome`; its maker, to be dropped outside the
    /// lock. `None` if it had started.
    fn end_unstarted(&mut self, outcome: Option<Result<V, Error>>) -> Option<Mk> {
        if !matches!(self, State::Registered { .. }) {
            return None;
        }
        match std::mem::replace(self, State::Done(outcome)) {
            State::Registered { make, .. } => Some(make),
            _ => None,
        }
    }
}

/// The handle's view of a spawned call: [`Call`](crate::Call) holds one.
pub(crate) trait Slot<V>: Send + Sync {
    /// Changes the settings; false if the call has already been launched.
    fn configure(&self, change: &mut dyn FnMut(&mut Settings)) -> bool;
    /// The outcome, once; `Ready(None)` if it was already taken.
    fn poll_outcome(&self, cx: &mut TaskContext<'_>) -> Poll<Option<Result<V, Error>>>;
    /// The handle was dropped: the call is no longer wanted.
    fn abort(&self);
}

/// The group's view of a spawned call.
pub(crate) trait Entry<E: Executor, T>: Send + Sync {
    fn name(&self) -> &str;
    fn phase(&self) -> Phase;
    /// Starts the call: hands its task to the executor, or returns it to be polled by the
    /// group when the executor hands it back.
    fn launch(self: Arc<Self>, executor: &E, timer: &T) -> Launched<E::Handle>;
    /// Cancels the call: its task drops its service at its next poll (it is woken for it); a
    /// call not launched yet ends with `error`.
    fn abort(&self, error: &Error);
}

/// What launching a spawned call gave.
pub(crate) enum Launched<H> {
    /// The executor took the task and gave this handle, kept until the call ends.
    Spawned(H),
    /// The executor handed the task back.
    Local(Local),
    /// Not launched: the call was dropped (or cancelled) before.
    Not,
}

/// A task handed back by the executor, polled by the group.
pub(crate) struct Local {
    pub(crate) task: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Marks the call ready in the group.
    pub(crate) waker: Waker,
}

impl<V, Mk> Cell<V, Mk> {
    pub(crate) fn new(
        shared: Arc<Shared>,
        index: usize,
        name: Cow<'static, str>,
        make: Mk,
    ) -> Cell<V, Mk> {
        Cell {
            shared,
            index,
            name,
            aborted: AtomicBool::new(false),
            polled: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            task_waker: AtomicWaker::new(),
            handle_waker: AtomicWaker::new(),
            state: Mutex::new(State::Registered {
                make,
                settings: Settings::default(),
            }),
        }
    }

    /// Ends a call that was never launched with `error`.
    pub(crate) fn refuse(&self, error: Error) {
        let Some(make) = lock(&self.state).end_unstarted(Some(Err(error))) else {
            return;
        };
        self.ended.store(true, Ordering::Release);
        drop(make); // the caller's closure, dropped outside the lock
        self.handle_waker.wake();
    }

    /// Records the outcome of a launched call, once, wakes its handle, and does what every
    /// ended call does.
    fn finish(
        &self,
        result: Result<V, Error>,
        settings: Settings,
        made: bool,
        cancelled: bool,
        elapsed: std::time::Duration,
    ) {
        let error = {
            let mut state = lock(&self.state);
            if let State::Done(_) = *state {
                return;
            }
            let error = result.as_ref().err().cloned();
            *state = State::Done(Some(result));
            error
        };
        self.ended.store(true, Ordering::Release);
        let name = &self.name;
        ended(
            &self.shared,
            name,
            error.as_ref(),
            settings,
            made,
            cancelled,
            elapsed,
        );
        self.handle_waker.wake();
    }

    /// Cancels the task: it drops its service at its next poll, woken for it.
    fn cancel_task(&self) {
        if self.ended.load(Ordering::Acquire) {
            return;
        }
        self.aborted.store(true, Ordering::Release);
        // Not started: it never will (its maker is dropped outside the lock).
        let make = lock(&self.state).end_unstarted(None);
        drop(make);
        self.task_waker.wake();
    }
}

impl<V, Mk> Slot<V> for Cell<V, Mk>
where
    V: Send + 'static,
    Mk: Send + 'static,
{
    fn configure(&self, change: &mut dyn FnMut(&mut Settings)) -> bool {
        match &mut *lock(&self.state) {
            State::Registered { settings, .. } => {
                change(settings);
                true
            }
            _ => false,
        }
    }

    fn poll_outcome(&self, cx: &mut TaskContext<'_>) -> Poll<Option<Result<V, Error>>> {
        if !self.ended.load(Ordering::Acquire) {
            // Registered first, then the flag checked again: an outcome stored in between is
            // not missed. The lock is taken only once the outcome is there.
            self.handle_waker.register(cx.waker());
            if !self.ended.load(Ordering::Acquire) {
                return Poll::Pending;
            }
        }
        Poll::Ready(match &mut *lock(&self.state) {
            State::Done(outcome) => outcome.take(),
            _ => None,
        })
    }

    fn abort(&self) {
        // The handle is gone: its waker must not be woken when the task, cancelled, ends later
        // on another thread (a spurious wake-up of a task that has moved on).
        drop(self.handle_waker.take());
        self.cancel_task();
    }
}

impl<V, Mk, Fut, Er, E, T> Entry<E, T> for Cell<V, Mk>
where
    Mk: FnOnce(Context) -> Fut + Send + 'static,
    Fut: Future<Output = Result<V, Er>> + Send + 'static,
    Er: Into<BoxError>,
    V: Send + 'static,
    E: Executor,
    T: Timer,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn phase(&self) -> Phase {
        match lock(&self.state).phase() {
            Phase::Launched if self.polled.load(Ordering::Acquire) => Phase::Running,
            phase => phase,
        }
    }

    fn launch(self: Arc<Self>, executor: &E, timer: &T) -> Launched<E::Handle> {
        let (make, settings) = {
            let mut state = lock(&self.state);
            if self.aborted.load(Ordering::Acquire) {
                return Launched::Not;
            }
            match std::mem::replace(&mut *state, State::Launched) {
                State::Registered { make, settings } => (make, settings),
                other => {
                    *state = other; // not waiting to start: left as it was
                    return Launched::Not;
                }
            }
        };
        self.shared.launched();
        let task = Task {
            cell: self.clone(),
            timer: timer.clone(),
            settings,
            local: false,
            done: false,
            attempt: Attempt::new(make),
        };
        match executor.spawn(task) {
            Ok(handle) => Launched::Spawned(handle),
            Err(mut task) => {
                task.local = true;
                Launched::Local(Local {
                    task: Box::pin(task),
                    waker: Waker::from(self),
                })
            }
        }
    }

    fn abort(&self, error: &Error) {
        if self.ended.load(Ordering::Acquire) {
            return;
        }
        if lock(&self.state).phase() == Phase::Registered {
            self.refuse(error.clone());
        }
        self.cancel_task();
    }
}

impl<V, Mk> Wake for Cell<V, Mk>
where
    V: Send + 'static,
    Mk: Send + 'static,
{
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.wake_local(self.index);
    }
}

pin_project! {
    /// The future that runs one spawned call.
    pub(crate) struct Task<V, Mk, Fut, T: Timer> {
        cell: Arc<Cell<V, Mk>>,
        timer: T,
        settings: Settings,
        // Handed back and polled by the group: cancelled by being dropped, so it keeps no waker.
        local: bool,
        done: bool,
        #[pin]
        attempt: Attempt<Mk, Fut, T::Sleep>,
    }

    impl<V, Mk, Fut, T: Timer> PinnedDrop for Task<V, Mk, Fut, T> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let mut attempt = this.attempt;
            let cell = &**this.cell;
            let aborted = cell.aborted.load(Ordering::Acquire);
            if !*this.done {
                let outcome = if aborted {
                    Outcome::Cancelled
                } else {
                    Outcome::Dropped // lost by the executor
                };
                attempt.as_mut().close_span(outcome, &*this.timer);
            }
            let _ = attempt.as_mut().stop();
            if !*this.done {
                // Dropped unfinished: cancelled by failfast, or lost by the executor.
                let error = if aborted {
                    Error::Misuse { message: GROUP_FINISHED }
                } else {
                    Error::Dropped { service: cell.name.clone() }
                };
                let elapsed = attempt.elapsed(&*this.timer);
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    cell.finish(Err(error), *this.settings, attempt.made(), aborted, elapsed);
                }));
            }
        }
    }
}

impl<V, Mk, Fut, Er, T> Future for Task<V, Mk, Fut, T>
where
    Mk: FnOnce(Context) -> Fut,
    Fut: Future<Output = Result<V, Er>>,
    Er: Into<BoxError>,
    T: Timer,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(());
        }
        let cell = &**this.cell;
        if cell.aborted.load(Ordering::Acquire) {
            // Cancelled: the drop, right after this, drops the service and reports it.
            return Poll::Ready(());
        }
        let mut attempt = this.attempt;
        if !attempt.made() {
            cell.polled.store(true, Ordering::Release);
        }
        let settings = *this.settings;
        match attempt
            .as_mut()
            .poll_attempt(cx, &cell.shared, &cell.name, settings, &*this.timer)
        {
            Poll::Ready(result) => {
                *this.done = true;
                let elapsed = attempt.elapsed(&*this.timer);
                cell.finish(result, *this.settings, attempt.made(), false, elapsed);
                Poll::Ready(())
            }
            Poll::Pending if *this.local => Poll::Pending,
            Poll::Pending => {
                // Registered only when pending (a call that answers at once needs no waker),
                // then the flag checked again: an abort in between is not missed.
                cell.task_waker.register(cx.waker());
                if cell.aborted.load(Ordering::Acquire) {
                    return Poll::Ready(());
                }
                Poll::Pending
            }
        }
    }
}
