//! Futures that wait on a context: [`Cancelled`], [`Done`] and [`RunUntilCancelled`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use event_listener::EventListener;
use futures::future::FusedFuture;

use super::Context;
use super::clock::Sleep;
use super::node::Node;

/// The future returned by [`Context::cancelled`]: completes when the context is cancelled,
/// not at its deadline.
///
/// It owns what it needs, so it can be moved into a spawned task. It is a
/// [`FusedFuture`](futures::future::FusedFuture), so it can be used in `futures::select!`
/// directly.
///
/// # Cancellation
///
/// Dropping it only stops waiting; it has no effect on the context.
///
/// # Examples
///
/// ```
/// use futures::FutureExt;
///
/// let (ctx, cancel) = failfast::Context::background().with_cancel();
/// let mut cancelled = ctx.cancelled();
/// assert!((&mut cancelled).now_or_never().is_none());
/// cancel.cancel();
/// assert!(cancelled.now_or_never().is_some());
/// ```
#[must_use = "futures do nothing unless you .await or poll them"]
pub struct Cancelled {
    /// The scope whose cancellation we wait for; `None`: nothing can cancel the context.
    scope: Option<Arc<Node>>,
    listener: Option<EventListener>,
    done: bool,
}

/// The future returned by [`Context::done`]: completes when the context is cancelled or its
/// deadline passes, whichever comes first (Go's `<-ctx.Done()`).
///
/// The deadline fires on the context's clock: the group's timer inside a group's call, a
/// timer attached with [`Context::with_timer`], or else the default timer (feature
/// `futures-timer`). A sleep is made only once the future is polled and the deadline has not
/// passed yet.
///
/// # Cancellation
///
/// Dropping it only stops waiting (and drops its sleep); it has no effect on the context.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use failfast::{timer::Manual, Context};
/// use futures::FutureExt;
///
/// let clock = Manual::new();
/// let ctx = Context::background().with_timer(clock.clone()).with_timeout(Duration::from_secs(1));
/// let mut done = ctx.done();
/// assert!((&mut done).now_or_never().is_none()); // the first poll made the sleep
/// clock.advance(Duration::from_secs(1));
/// assert!(done.now_or_never().is_some());
/// ```
#[must_use = "futures do nothing unless you .await or poll them"]
pub struct Done {
    ctx: Context,
    cancelled: Cancelled,
    sleep: Option<Sleep>,
    warned: bool,
}

pin_project_lite::pin_project! {
    /// The future returned by [`Context::run_until_cancelled`]: the inner future's output, or
    /// `None` if the context is done first.
    ///
    /// # Cancellation
    ///
    /// Dropping it drops the inner future.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let ctx = failfast::Context::background().with_timeout(std::time::Duration::ZERO);
    /// assert_eq!(ctx.run_until_cancelled(async { 1 }).await, None); // already done
    /// # });
    /// ```
    #[must_use = "futures do nothing unless you .await or poll them"]
    pub struct RunUntilCancelled<F> {
        #[pin]
        future: F,
        done: Done,
        finished: bool,
    }
}

impl Cancelled {
    pub(crate) fn new(scope: Option<Arc<Node>>) -> Cancelled {
        Cancelled {
            scope,
            listener: None,
            done: false,
        }
    }
}

impl Future for Cancelled {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = &mut *self;
        let Some(scope) = this.scope.as_ref().and_then(|node| node.scope()) else {
            return Poll::Pending; // nothing can cancel it
        };
        loop {
            if scope.is_cancelled() {
                this.listener = None;
                this.done = true;
                return Poll::Ready(());
            }
            match &mut this.listener {
                // Register first, then re-check the flag (at the top of the loop), so a
                // cancel racing with us cannot be missed.
                None => this.listener = Some(scope.listen()),
                Some(listener) => match Pin::new(listener).poll(cx) {
                    Poll::Ready(()) => this.listener = None,
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }
}

impl FusedFuture for Cancelled {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl fmt::Debug for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cancelled")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Done {
    pub(crate) fn new(ctx: Context) -> Done {
        let cancelled = ctx.cancelled();
        Done {
            ctx,
            cancelled,
            sleep: None,
            warned: false,
        }
    }
}

impl Future for Done {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.cancelled.done || Pin::new(&mut this.cancelled).poll(cx).is_ready() {
            this.sleep = None;
            return Poll::Ready(());
        }
        let Some(deadline) = this.ctx.deadline() else {
            return Poll::Pending;
        };
        if this.ctx.expired() {
            this.cancelled.done = true;
            this.sleep = None;
            return Poll::Ready(());
        }
        if this.sleep.is_none() {
            match this.ctx.clock() {
                Some(clock) => this.sleep = Some(clock.sleep_until(deadline)),
                None => {
                    if !std::mem::replace(&mut this.warned, true) {
                        log::warn!(
                            target: "failfast",
                            "a context's deadline cannot fire: it has no clock (the `futures-timer` feature is off); attach one with Context::with_timer"
                        );
                    }
                    return Poll::Pending;
                }
            }
        }
        let sleep = this.sleep.as_mut().expect("made above");
        if sleep.as_mut().poll(cx).is_ready() {
            this.cancelled.done = true;
            this.sleep = None;
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl FusedFuture for Done {
    fn is_terminated(&self) -> bool {
        self.cancelled.done
    }
}

impl fmt::Debug for Done {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Done")
            .field("ctx", &self.ctx)
            .field("done", &self.cancelled.done)
            .finish_non_exhaustive()
    }
}

impl<F> RunUntilCancelled<F> {
    pub(crate) fn new(future: F, done: Done) -> RunUntilCancelled<F> {
        RunUntilCancelled {
            future,
            done,
            finished: false,
        }
    }
}

impl<F: Future> Future for RunUntilCancelled<F> {
    type Output = Option<F::Output>;

    /// The context is checked first: when both are ready, the context wins (`None`).
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<F::Output>> {
        let this = self.project();
        if Pin::new(&mut *this.done).poll(cx).is_ready() {
            *this.finished = true;
            return Poll::Ready(None);
        }
        let output = futures::ready!(this.future.poll(cx));
        *this.finished = true;
        Poll::Ready(Some(output))
    }
}

impl<F: Future> FusedFuture for RunUntilCancelled<F> {
    fn is_terminated(&self) -> bool {
        self.finished
    }
}

impl<F> fmt::Debug for RunUntilCancelled<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunUntilCancelled")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}
