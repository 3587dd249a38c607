//! [`Call`] and [`Optional`]: the handles of one named call of a group, and its settings.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use futures::future::FusedFuture;

use crate::attempt::{GROUP_FINISHED, Settings};
use crate::error::Error;
use crate::spawned::Slot;
use crate::state::Shared;

/// What a call needs from its group.
pub(crate) trait Driver: Sync {
    fn shared(&self) -> &Shared;
    /// Whether the group has finished (its `run` returned, or it was dropped).
    fn finished(&self) -> bool;
    /// The call `index` is no longer wanted: cancel it now if the group polls it.
    fn forget(&self, index: usize);
    /// The spawned call `index` has ended and its outcome was taken: drop what the group
    /// holds of its task, here and now if the group is not being driven on another thread.
    fn release(&self, index: usize);
    /// The group's timer's time.
    fn now(&self) -> Instant;
    /// Changes the settings of the inline call `index`; false once it has been launched.
    fn configure(&self, index: usize, change: &mut dyn FnMut(&mut Settings)) -> bool;
    /// Moves the outcome of the inline call `index` into `into` (an `Option<Result<V,
    /// Error>>`): `Ready` once it has ended, or if it is gone.
    fn take(&self, index: usize, cx: &mut TaskContext<'_>, into: &mut dyn Any) -> Poll<()>;
}

/// The message of a setting changed after the call had started.
const TOO_LATE: &str = "a call's timeout, optional flag or retry policy was set after the call had started: set them right after `call` or `idempotent`";

/// The message of a call awaited outside `run`.
const OUTSIDE_RUN: &str = "a call was awaited outside `run`: the group's deadline and the caller's cancellation \
     are enforced only there; hand the join of the calls to `group.run(..)`";

/// The message of a call polled again after it had completed.
const POLLED_AGAIN: &str = "a call was polled again after it had completed";

/// Where a call's outcome comes from.
enum Source<V> {
    /// An inline call, kept by the group under this index.
    Inline(usize),
    /// A spawned call and its cell; the index is the group's.
    Spawned(usize, Arc<dyn Slot<V>>),
}

/// One named call of a [`Group`](crate::Group): a future of the call's `Result<V, Error>`.
///
/// Made by [`Group::call`](crate::Group::call), configured with [`timeout`](Call::timeout)
/// and [`optional`](Call::optional), and handed, joined with the group's other calls, to
/// [`Group::run`](crate::Group::run). The call runs whether or not your join polls it: the
/// group starts and watches every call it made, so a failure is seen at once even by a join
/// that looks at calls one by one. Calls are awaited inside `run` (in the join, or in an
/// `async` block given to it): a call awaited outside `run` is cancelled and yields
/// [`Error::Misuse`], because nothing there would enforce the group's deadline or the
/// caller's cancellation.
///
/// # Cancellation
///
/// Dropping a `Call` before it completes cancels the call: its service's future is dropped
/// (on its executor, if it was spawned) and it does not fail the group. A join that gives up
/// at the first error, like `try_join`, drops the other calls this way.
///
/// A spawned call cancelled at the very instant its task starts running may still call its
/// service (the task was past its check when the cancellation came, as a goroutine may be
/// past its `ctx.Done()` check): the service's future is then dropped at its first poll.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use failfast::{BoxError, Context, FailFast};
///
/// let ff = FailFast::builder().build()?;
/// # futures::executor::block_on(async {
/// let group = ff.group(&Context::background());
/// let name = group.call("profile", |_ctx| async { Ok::<_, BoxError>("Alice") });
/// let orders = group
///     .call("orders", |_ctx| async { Ok::<_, BoxError>(5) })
///     .timeout(Duration::from_millis(200));
/// let (name, orders) = group.run(futures::future::try_join(name, orders)).await?;
/// assert_eq!(format!("User: {name} | Orders: {orders}"), "User: Alice | Orders: 5");
/// # Ok::<_, failfast::Error>(()) })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[must_use = "futures do nothing unless you .await or poll them; a dropped call is cancelled"]
pub struct Call<'g, V> {
    driver: &'g dyn Driver,
    source: Source<V>,
    /// A setting came too late: the call yields a misuse error.
    too_late: bool,
    /// The outcome was taken: nothing to cancel when dropped.
    done: bool,
}

impl<'g, V> Call<'g, V> {
    pub(crate) fn inline(driver: &'g dyn Driver, index: usize) -> Call<'g, V> {
        Call {
            driver,
            source: Source::Inline(index),
            too_late: false,
            done: false,
        }
    }

    pub(crate) fn spawned(
        driver: &'g dyn Driver,
        index: usize,
        slot: Arc<dyn Slot<V>>,
    ) -> Call<'g, V> {
        Call {
            driver,
            source: Source::Spawned(index, slot),
            too_late: false,
            done: false,
        }
    }

    fn configure(&mut self, change: &mut dyn FnMut(&mut Settings)) {
        let configured = match &self.source {
            Source::Inline(index) => self.driver.configure(*index, change),
            Source::Spawned(_, slot) => slot.configure(change),
        };
        if !configured {
            self.too_late = true;
        }
    }

    /// A setting came after the call had started: the call yields a misuse error.
    pub(crate) fn too_late(&mut self) {
        self.too_late = true;
    }

    /// Cancels the call, unless it has completed.
    fn cancel(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        match &self.source {
            Source::Inline(index) => self.driver.forget(*index),
            Source::Spawned(index, slot) => {
                slot.abort();
                self.driver.forget(*index);
            }
        }
    }

    /// Gives the call a deadline of its own, `timeout` after it starts. Default: none (only the
    /// group's deadline).
    ///
    /// The call's context carries the earlier of this deadline and the group's. When this one
    /// passes first, the call is cancelled and ends with [`Error::TimedOut`] naming it, which
    /// fails the group at once, unless the call is [`optional`](Call::optional). So does a
    /// service that sees its context done at that deadline and returns an error of its own
    /// (a retried call's last attempt cut there, say). A call waiting
    /// for a slot under a [`limit`](crate::FailFastBuilder::limit) starts its clock when it gets
    /// one. `Duration::ZERO` times out at once without calling the service; a timeout too large
    /// for an `Instant` means none.
    ///
    /// Set it right after [`Group::call`](crate::Group::call): once the call has started, it is
    /// too late, and the call ends with [`Error::Misuse`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::{Context, Error, FailFast, timer::Manual};
    ///
    /// let clock = Manual::new();
    /// let ff = FailFast::builder().timer(clock.clone()).build()?;
    /// # futures::executor::block_on(async {
    /// let group = ff.group(&Context::background());
    /// let slow = clock.clone();
    /// let call = group
    ///     .call("recs", move |_ctx| async move {
    ///         failfast::Timer::sleep(&slow, Duration::from_secs(5)).await;
    ///         Ok::<_, failfast::BoxError>(vec!["book"])
    ///     })
    ///     .timeout(Duration::from_millis(50));
    /// let mut run = std::pin::pin!(group.run(call));
    /// assert!(futures::poll!(run.as_mut()).is_pending());
    /// clock.advance(Duration::from_millis(50));
    /// let err = run.await.unwrap_err();
    /// assert!(matches!(err, Error::TimedOut { .. }));
    /// assert_eq!(err.to_string(), "recs service timed out after 50.0ms");
    /// # });
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    #[doc(alias = "WithTimeout")]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.configure(&mut |settings| settings.timeout = Some(timeout));
        self
    }

    /// Makes the call optional: its own failure (an error, a panic, its own
    /// [`timeout`](Call::timeout)) yields `Ok(None)` instead of failing the group. The failure
    /// is logged (at `info`) and observed, not lost.
    ///
    /// The group's deadline and the caller's cancellation still end everything: an optional
    /// call whose service fails once they have come yields them as errors.
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::{BoxError, Context, FailFast};
    ///
    /// let ff = FailFast::builder().build()?;
    /// # futures::executor::block_on(async {
    /// let group = ff.group(&Context::background());
    /// let profile = group.call("profile", |_ctx| async { Ok::<_, BoxError>("Alice") });
    /// let recs = group
    ///     .call("recs", |_ctx| async { Err::<Vec<&str>, BoxError>("recs down".into()) })
    ///     .optional();
    /// let (profile, recs) = group.run(futures::future::try_join(profile, recs)).await?;
    /// assert_eq!((profile, recs), ("Alice", None));
    /// # Ok::<_, failfast::Error>(()) })?;
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn optional(mut self) -> Optional<'g, V> {
        self.configure(&mut |settings| settings.optional = true);
        Optional { call: self }
    }
}

impl<V: 'static> Future for Call<'_, V> {
    type Output = Result<V, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(Err(Error::Misuse {
                message: POLLED_AGAIN,
            }));
        }
        if this.too_late {
            this.cancel();
            return Poll::Ready(Err(Error::Misuse { message: TOO_LATE }));
        }
        if !this.driver.shared().in_run() && !this.driver.finished() {
            // Nothing would enforce the deadline or the caller's cancellation.
            this.cancel();
            return Poll::Ready(Err(Error::Misuse {
                message: OUTSIDE_RUN,
            }));
        }
        let outcome = match &this.source {
            Source::Inline(index) => {
                let mut outcome: Option<Result<V, Error>> = None;
                match this.driver.take(*index, cx, &mut outcome) {
                    Poll::Ready(()) => Poll::Ready(outcome),
                    Poll::Pending => Poll::Pending,
                }
            }
            Source::Spawned(index, slot) => {
                let outcome = slot.poll_outcome(cx);
                if outcome.is_ready() {
                    this.driver.release(*index);
                }
                outcome
            }
        };
        match outcome {
            Poll::Ready(outcome) => {
                this.done = true;
                Poll::Ready(outcome.unwrap_or_else(|| {
                    Err(Error::Misuse {
                        message: GROUP_FINISHED,
                    })
                }))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<V: 'static> FusedFuture for Call<'_, V> {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl<V> Drop for Call<'_, V> {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl<V> fmt::Debug for Call<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, index) = match &self.source {
            Source::Inline(index) => ("inline", index),
            Source::Spawned(index, _) => ("spawned", index),
        };
        f.debug_struct("Call")
            .field("index", index)
            .field("kind", &kind)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// An [optional](Call::optional) call: a future of `Result<Option<V>, Error>`.
///
/// It yields `Ok(Some(value))` when the call answers and `Ok(None)` when it fails on its own.
/// It yields an error only for what ends the whole group: the caller's cancellation, the
/// group's deadline, or a misuse.
///
/// # Cancellation
///
/// As for [`Call`]: dropping it cancels the call.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use failfast::{BoxError, Context, FailFast};
///
/// let ff = FailFast::builder().build()?;
/// # futures::executor::block_on(async {
/// let group = ff.group(&Context::background());
/// let recs = group
///     .call("recs", |_ctx| async { Ok::<_, BoxError>(vec!["book", "lamp"]) })
///     .optional()
///     .timeout(Duration::from_millis(50));
/// assert_eq!(group.run(recs).await?, Some(vec!["book", "lamp"]));
/// # Ok::<_, failfast::Error>(()) })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[must_use = "futures do nothing unless you .await or poll them; a dropped call is cancelled"]
pub struct Optional<'g, V> {
    call: Call<'g, V>,
}

impl<V> Optional<'_, V> {
    /// Gives the call a deadline of its own: see [`Call::timeout`]. When it passes, the call
    /// yields `Ok(None)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::{BoxError, Context, FailFast};
    ///
    /// let ff = FailFast::builder().build()?;
    /// let group = ff.group(&Context::background());
    /// let recs = group
    ///     .call("recs", |_ctx| async { Ok::<_, BoxError>(()) })
    ///     .optional()
    ///     .timeout(Duration::from_millis(50));
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    #[doc(alias = "WithTimeout")]
    pub fn timeout(self, timeout: Duration) -> Self {
        Optional {
            call: self.call.timeout(timeout),
        }
    }
}

impl<'g, V> From<Optional<'g, V>> for Call<'g, V> {
    /// The call again, for a [`Gather`](crate::Gather), which treats every call as optional.
    fn from(optional: Optional<'g, V>) -> Call<'g, V> {
        optional.call
    }
}

impl<V: 'static> Future for Optional<'_, V> {
    type Output = Result<Option<V>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        self.poll_own(cx).map(|outcome| outcome.map(Result::ok))
    }
}

impl<V: 'static> Optional<'_, V> {
    /// Polls the call: `Ok(Ok(value))`, `Ok(Err(its own failure))`, or `Err` for what ends
    /// the group (its cancellation, its deadline, a misuse).
    pub(crate) fn poll_own(
        &mut self,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Result<Result<V, Error>, Error>> {
        let call = &mut self.call;
        let error = match Pin::new(&mut *call).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(value)) => return Poll::Ready(Ok(Ok(value))),
            Poll::Ready(Err(error)) => error,
        };
        if !error.is_call_failure() {
            return Poll::Ready(Err(error));
        }
        // An error caused by the caller's cancellation or the deadline is not the call's own:
        // as for a required call, they end the group.
        let now = call.driver.now();
        match call.driver.shared().caused_by(&error, now) {
            Some(cause) => Poll::Ready(Err(cause)),
            None => Poll::Ready(Ok(Err(error))),
        }
    }
}

impl<V: 'static> FusedFuture for Optional<'_, V> {
    fn is_terminated(&self) -> bool {
        self.call.done
    }
}

impl<V> fmt::Debug for Optional<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Optional")
            .field("call", &self.call)
            .finish()
    }
}
