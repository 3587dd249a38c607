//! A call on [`Inline`](crate::executor::Inline): polled by its group, inside the task that
//! runs the group. It lives in one allocation that the group owns, outcome included, and is
//! cancelled by being dropped (or stopped) in place. Its waker is made only if it is pending
//! after its first poll: a call that answers at once costs no waker.

use std::any::Any;
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Wake, Waker};

use pin_project_lite::pin_project;

use crate::attempt::{Attempt, Phase, Settings, ended};
use crate::context::Context;
use crate::error::{BoxError, Error};
use crate::observer::Outcome;
use crate::state::Shared;
use crate::timer::Timer;

/// The group's view of an inline call. `T` is the group's timer.
pub(crate) trait InlineEntry<T>: Send {
    fn name(&self) -> &str;
    fn phase(&self) -> Phase;
    /// Changes the settings; false if the call has already been launched.
    fn configure(self: Pin<&mut Self>, change: &mut dyn FnMut(&mut Settings)) -> bool;
    /// Ends a call that was never launched with `error`.
    fn refuse(self: Pin<&mut Self>, error: Error);
    /// Marks the call launched; false if it was not waiting to be.
    fn launch(self: Pin<&mut Self>) -> bool;
    /// Polls the call; true once it has ended.
    fn poll_call(self: Pin<&mut Self>, shared: &Arc<Shared>, index: usize, timer: &T) -> bool;
    /// Cancels the call: drops its service, and reports it if it had started.
    fn cancel(self: Pin<&mut Self>, shared: &Shared, timer: &T);
    /// Moves the outcome into `into` (an `Option<Result<V, Error>>`): `Ready` once the call
    /// has ended, whether or not there was an outcome left to move.
    fn take(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, into: &mut dyn Any) -> Poll<()>;
}

pin_project! {
    /// An inline call: `Mk` makes the service's future `Fut`; `S` is the timer's sleep.
    pub(crate) struct InlineCall<V, Mk, Fut, S> {
        name: Cow<'static, str>,
        settings: Settings,
        phase: Phase,
        outcome: Option<Result<V, Error>>,
        // The handle's waker.
        handle: Option<Waker>,
        // This call's waker: marks it ready in the group.
        wake: Option<Waker>,
        #[pin]
        attempt: Attempt<Mk, Fut, S>,
    }
}

impl<V, Mk, Fut, S> InlineCall<V, Mk, Fut, S> {
    pub(crate) fn new(name: Cow<'static, str>, make: Mk) -> Self {
        InlineCall {
            name,
            settings: Settings::default(),
            phase: Phase::Registered,
            outcome: None,
            handle: None,
            wake: None,
            attempt: Attempt::new(make),
        }
    }
}

impl<V, Mk, Fut, Er, T> InlineEntry<T> for InlineCall<V, Mk, Fut, T::Sleep>
where
    Mk: FnOnce(Context) -> Fut + Send + 'static,
    Fut: Future<Output = Result<V, Er>> + Send + 'static,
    Er: Into<BoxError>,
    V: Send + 'static,
    T: Timer,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn phase(&self) -> Phase {
        self.phase
    }

    fn configure(self: Pin<&mut Self>, change: &mut dyn FnMut(&mut Settings)) -> bool {
        let this = self.project();
        if *this.phase != Phase::Registered {
            return false;
        }
        change(this.settings);
        true
    }

    fn refuse(self: Pin<&mut Self>, error: Error) {
        let this = self.project();
        if *this.phase != Phase::Registered {
            return;
        }
        *this.phase = Phase::Done;
        *this.outcome = Some(Err(error));
        let _ = this.attempt.stop();
        if let Some(handle) = this.handle.take() {
            handle.wake();
        }
    }

    fn launch(self: Pin<&mut Self>) -> bool {
        let this = self.project();
        if *this.phase != Phase::Registered {
            return false;
        }
        *this.phase = Phase::Launched;
        true
    }

    fn poll_call(self: Pin<&mut Self>, shared: &Arc<Shared>, index: usize, timer: &T) -> bool {
        let this = self.project();
        match *this.phase {
            Phase::Launched => *this.phase = Phase::Running,
            Phase::Running => {}
            Phase::Registered | Phase::Done => return *this.phase == Phase::Done,
        }
        let (name, settings) = (&*this.name, *this.settings);
        let mut attempt = this.attempt;
        let poll = match this.wake {
            Some(waker) => {
                let mut cx = TaskContext::from_waker(waker);
                attempt
                    .as_mut()
                    .poll_attempt(&mut cx, shared, name, settings, timer)
            }
            None => {
                // First poll, with a waker that does nothing: if the call is pending, it is
                // polled again at once with a waker of its own.
                let mut cx = TaskContext::from_waker(Waker::noop());
                match attempt
                    .as_mut()
                    .poll_attempt(&mut cx, shared, name, settings, timer)
                {
                    Poll::Pending => {
                        let wake = InlineWake {
                            shared: shared.clone(),
                            index,
                        };
                        let waker = this.wake.insert(Waker::from(Arc::new(wake)));
                        let mut cx = TaskContext::from_waker(waker);
                        attempt
                            .as_mut()
                            .poll_attempt(&mut cx, shared, name, settings, timer)
                    }
                    ready => ready,
                }
            }
        };
        let Poll::Ready(result) = poll else {
            return false;
        };
        *this.phase = Phase::Done;
        let error = result.as_ref().err().cloned();
        *this.outcome = Some(result);
        let (made, elapsed) = (attempt.made(), attempt.elapsed(timer));
        ended(
            shared,
            name,
            error.as_ref(),
            *this.settings,
            made,
            false,
            elapsed,
        );
        if let Some(handle) = this.handle.take() {
            handle.wake();
        }
        true
    }

    fn cancel(self: Pin<&mut Self>, shared: &Shared, timer: &T) {
        let this = self.project();
        let phase = std::mem::replace(this.phase, Phase::Done);
        let mut attempt = this.attempt;
        attempt.as_mut().close_span(Outcome::Cancelled, timer);
        let _ = attempt.as_mut().stop();
        if matches!(phase, Phase::Launched | Phase::Running) {
            let (made, elapsed) = (attempt.made(), attempt.elapsed(timer));
            ended(shared, this.name, None, *this.settings, made, true, elapsed);
        }
        if let Some(handle) = this.handle.take() {
            handle.wake();
        }
    }

    fn take(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, into: &mut dyn Any) -> Poll<()> {
        let this = self.project();
        if let Some(slot) = into.downcast_mut::<Option<Result<V, Error>>>() {
            if let Some(outcome) = this.outcome.take() {
                *slot = Some(outcome);
                return Poll::Ready(());
            }
        }
        if *this.phase == Phase::Done {
            return Poll::Ready(());
        }
        match this.handle {
            Some(waker) => waker.clone_from(cx.waker()),
            None => *this.handle = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// The waker of an inline call: marks it ready in its group and wakes whoever drives it.
struct InlineWake {
    shared: Arc<Shared>,
    index: usize,
}

impl Wake for InlineWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.wake_local(self.index);
    }
}
