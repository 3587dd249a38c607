//! After-functions ([`Context::after`](crate::Context::after)): a function run once when a
//! context is done, by its cancellation or at its deadline.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, OnceLock, TryLockError};
use std::task::{Context as TaskContext, Wake, Waker};

use super::clock::Sleep;
use super::node::Node;
use crate::error::panic_message;
use crate::sync::lock;

const PENDING: u8 = 0;
const RAN: u8 = 1;
const STOPPED: u8 = 2;

/// One registered after-function, shared by the scope it waits on, the timer of its deadline
/// and its [`AfterHandle`].
pub(crate) struct After {
    state: AtomicU8,
    f: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// The sleep until the deadline, polled by its own waker (see [`After::drive`]).
    sleep: Mutex<Option<Sleep>>,
    /// Set by a wake; cleared by whoever polls `sleep` next.
    woken: AtomicBool,
}

/// Stops an after-function registered with [`Context::after`](crate::Context::after), if it
/// has not run yet: Go's `stop` returned by `context.AfterFunc`.
///
/// Dropping the handle leaves the function registered, as discarding Go's `stop` does: it
/// still runs when the context is done.
///
/// # Examples
///
/// ```
/// use failfast::Context;
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// let handle = ctx.after(|| println!("cleaning up"));
/// assert!(handle.stop()); // stopped before it ran
/// cancel.cancel(); // prints nothing
/// assert!(!handle.stop()); // already stopped: nothing to do
/// ```
pub struct AfterHandle {
    after: Arc<After>,
    scope: Option<Arc<Node>>,
}

impl After {
    pub(crate) fn new(f: Box<dyn FnOnce() + Send>) -> Arc<After> {
        Arc::new(After {
            state: AtomicU8::new(PENDING),
            f: Mutex::new(Some(f)),
            sleep: Mutex::new(None),
            woken: AtomicBool::new(false),
        })
    }

    pub(crate) fn is_pending(&self) -> bool {
        self.state.load(Ordering::Acquire) == PENDING
    }

    /// Runs the function on this thread, unless it ran or was stopped. A panic is contained
    /// and logged: it cannot stop the rest of a tree from being cancelled.
    pub(crate) fn fire(&self) {
        if self
            .state
            .compare_exchange(PENDING, RAN, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let Some(f) = lock(&self.f).take() else {
            return;
        };
        if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
            log::warn!(
                target: "failfast",
                panic:% = panic_message(&*payload);
                "after-function panicked; the rest of the context tree was cancelled regardless"
            );
        }
        // The deadline's sleep, if any, is no longer needed. (`try_lock`: when the sleep
        // itself fired us, `drive` holds this lock and drops the sleep.)
        if let Ok(mut sleep) = self.sleep.try_lock() {
            sleep.take();
        }
    }

    /// Runs the function when `sleep` completes: it is polled by a waker that polls it again
    /// on whichever thread wakes it (the timer's), so no executor is needed; the function
    /// itself then runs on the after-function thread.
    pub(crate) fn arm(self: &Arc<Self>, sleep: Sleep) {
        *lock(&self.sleep) = Some(sleep);
        self.drive();
    }

    /// Polls the sleep until it is pending or done. A wake that arrives while another thread
    /// polls is not lost: that thread sees `woken` and polls again.
    fn drive(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        while self.woken.load(Ordering::SeqCst) {
            let mut sleep = match self.sleep.try_lock() {
                Ok(sleep) => sleep,
                Err(TryLockError::WouldBlock) => return,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            };
            self.woken.store(false, Ordering::SeqCst);
            if !self.is_pending() {
                sleep.take();
                return;
            }
            let Some(timer) = sleep.as_mut() else {
                return;
            };
            let waker = Waker::from(self.clone());
            let polled = catch_unwind(AssertUnwindSafe(|| {
                timer.as_mut().poll(&mut TaskContext::from_waker(&waker))
            }));
            match polled {
                Ok(std::task::Poll::Pending) => {}
                Ok(std::task::Poll::Ready(())) => {
                    sleep.take();
                    drop(sleep);
                    run_elsewhere(self.clone());
                    return;
                }
                Err(payload) => {
                    sleep.take();
                    log::warn!(
                        target: "failfast",
                        panic:% = panic_message(&*payload);
                        "timer of an after-function panicked; it will run on cancellation only"
                    );
                    return;
                }
            }
        }
    }

    /// Stops the function if it has not run. True if this stopped it.
    fn stop(&self) -> bool {
        if self
            .state
            .compare_exchange(PENDING, STOPPED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        lock(&self.f).take();
        if let Ok(mut sleep) = self.sleep.try_lock() {
            sleep.take();
        }
        true
    }
}

/// Runs `after` on failfast's after-function thread (one per process, started on first use),
/// so that a slow or blocking function never holds up the timer whose thread fired it. If
/// that thread cannot be started, runs it here.
fn run_elsewhere(after: Arc<After>) {
    static RUNNER: OnceLock<Option<Sender<Arc<After>>>> = OnceLock::new();
    let runner = RUNNER.get_or_init(|| {
        let (send, receive) = channel::<Arc<After>>();
        std::thread::Builder::new()
            .name("failfast-after".to_owned())
            .spawn(move || {
                for after in receive {
                    after.fire();
                }
            })
            .ok()
            .map(|_| send)
    });
    let refused = match runner {
        Some(send) => send.send(after).err().map(|returned| returned.0),
        None => Some(after),
    };
    if let Some(after) = refused {
        after.fire();
    }
}

impl Wake for After {
    fn wake(self: Arc<Self>) {
        self.drive();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.drive();
    }
}

impl AfterHandle {
    pub(crate) fn new(after: Arc<After>, scope: Option<Arc<Node>>) -> AfterHandle {
        AfterHandle { after, scope }
    }

    /// Stops the function from running. Returns true if this call stopped it; false if it has
    /// already run, is running, or was already stopped. It does not wait for a running
    /// function to finish.
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::Context;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let handle = ctx.after(|| {});
    /// cancel.cancel(); // runs the function, on this thread
    /// assert!(!handle.stop()); // too late: it ran
    /// ```
    pub fn stop(&self) -> bool {
        let stopped = self.after.stop();
        if stopped {
            if let Some(scope) = self.scope.as_ref().and_then(|node| node.scope()) {
                scope.unregister(&self.after);
            }
        }
        stopped
    }
}

impl fmt::Debug for AfterHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.after.state.load(Ordering::Acquire) {
            PENDING => "pending",
            RAN => "ran",
            _ => "stopped",
        };
        f.debug_struct("AfterHandle")
            .field("state", &state)
            .finish()
    }
}
