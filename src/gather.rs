//! [`Gather`]: k of n calls, or as many as the deadline allows.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use futures::future::FusedFuture;

use crate::call::{Call, Driver, Optional};
use crate::error::Error;

/// What a gather that was asked for more successes than it has calls yields.
const MORE_THAN_CALLS: &str =
    "a gather needs more successes than it has calls: `k` must be at most the number of calls";

/// A k-of-n gather over calls of a group: made by [`Group::gather`](crate::Group::gather),
/// handed to [`Group::run`](crate::Group::run).
///
/// Every call in it is [optional](crate::Call::optional): its own failure counts against the
/// gather, not the group. It yields the successes as `(position, value)`, the position being
/// the call's place in the calls given, in that order.
///
/// * **k of n** (the default): as soon as `k` calls have succeeded, it yields those `k` and
///   the others are cancelled. Once more than `n - k` have failed, it fails with
///   [`Error::TooFew`].
/// * **Best effort** ([`best_effort`](Gather::best_effort), The Tail at Scale's "good enough"
///   results): it waits for every call, until the group's deadline. Then (or when every call
///   has ended) it yields all the successes if there are at least `k`, and
///   [`Error::TooFew`] otherwise; the calls still running are cancelled. At the deadline, the
///   gather's answer wins over the group's `DeadlineExceeded`.
///
/// The group's cancellation ends it as it ends any join. `k = 0` needs nothing: the gather
/// yields `Ok` with no values at once (best effort: every success by the deadline), and the
/// calls it did not wait for are cancelled. `k` above the number of calls is refused when the
/// gather is made: its calls are cancelled before any starts, and it yields
/// [`Error::Misuse`] when run.
///
/// In virtual time with a spawned executor, move the clock one event at a time (waiting for
/// each call to report, as with any spawned call): a call whose task answers within the same
/// `advance` that passes the deadline may report after the gather has taken stock.
///
/// # Cancellation
///
/// Dropping it cancels the calls it still holds.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use failfast::{BoxError, Context, FailFast};
///
/// let ff = FailFast::builder().timeout(Duration::from_secs(1)).build()?;
/// # futures::executor::block_on(async {
/// let group = ff.group(&Context::background());
/// let replicas = (0..3).map(|i| {
///     group.call(format!("replica-{i}"), move |_ctx| async move {
///         if i == 1 { Err::<u32, BoxError>("replica down".into()) } else { Ok(i * 10) }
///     })
/// });
/// let quorum = group.run(group.gather(2, replicas)).await?;
/// assert_eq!(quorum, [(0, 0), (2, 20)]); // positions 0 and 2 answered
/// # Ok::<_, failfast::Error>(()) })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[must_use = "futures do nothing unless you .await or poll them; a dropped gather cancels its calls"]
pub struct Gather<'g, V> {
    calls: Vec<Option<Optional<'g, V>>>,
    /// How many calls were given (none are kept when `k` is more).
    n: usize,
    k: usize,
    best_effort: bool,
    /// The group: its deadline and its timer.
    group: &'g dyn Driver,
    succeeded: Vec<(usize, V)>,
    failed: usize,
    /// The last call's own failure, for `Error::TooFew`.
    last_failure: Option<Error>,
    done: bool,
}

impl<'g, V> Gather<'g, V> {
    pub(crate) fn new(k: usize, calls: Vec<Call<'g, V>>, group: &'g dyn Driver) -> Gather<'g, V> {
        // More successes than calls: refused now, before `run` can start any of them. The
        // calls are dropped, which cancels them; the first poll reports the misuse.
        let n = calls.len();
        let calls = if k > n {
            drop(calls);
            Vec::new()
        } else {
            calls
                .into_iter()
                .map(|call| Some(call.optional()))
                .collect()
        };
        Gather {
            calls,
            n,
            k,
            best_effort: false,
            group,
            succeeded: Vec::new(),
            failed: 0,
            last_failure: None,
            done: false,
        }
    }

    /// Waits for every call until the group's deadline, and yields all the successes if
    /// there are at least `k`: see [`Gather`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::{BoxError, Context, FailFast, timer::Manual, Timer};
    ///
    /// let clock = Manual::new();
    /// let ff = FailFast::builder().timer(clock.clone()).timeout(Duration::from_millis(50)).build()?;
    /// # futures::executor::block_on(async {
    /// let group = ff.group(&Context::background());
    /// let shards = (0..3_u64).map(|i| {
    ///     let clock = clock.clone();
    ///     group.call(format!("shard-{i}"), move |_ctx| async move {
    ///         clock.sleep(Duration::from_millis(20 + 20 * i)).await; // 20, 40, 60 ms
    ///         Ok::<_, BoxError>(i)
    ///     })
    /// });
    /// let mut run = std::pin::pin!(group.run(group.gather(1, shards).best_effort()));
    /// assert!(futures::poll!(run.as_mut()).is_pending());
    /// clock.advance(Duration::from_millis(50)); // the deadline: shard 2 is not back yet
    /// assert_eq!(run.await?, [(0, 0), (1, 1)]);
    /// # Ok::<_, failfast::Error>(()) })?;
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn best_effort(mut self) -> Self {
        self.best_effort = true;
        self
    }

    /// Ends the gather: the calls still running are cancelled, and the successes handed over
    /// in input order if there are enough.
    fn finish(&mut self) -> Result<Vec<(usize, V)>, Error> {
        self.done = true;
        let calls = self.calls.len();
        self.calls.clear(); // cancels what is still running
        if self.succeeded.len() < self.k {
            return Err(Error::TooFew {
                needed: self.k,
                succeeded: self.succeeded.len(),
                calls,
                last_failure: self.last_failure.take().map(Box::new),
            });
        }
        let mut succeeded = std::mem::take(&mut self.succeeded);
        succeeded.sort_unstable_by_key(|&(position, _)| position);
        Ok(succeeded)
    }
}

// Nothing in a gather is pinned: values are moved out as they arrive, and calls are `Unpin`.
impl<V> Unpin for Gather<'_, V> {}

impl<V: 'static> Future for Gather<'_, V> {
    type Output = Result<Vec<(usize, V)>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(Err(Error::Misuse {
                message: "a gather was polled again after it had completed",
            }));
        }
        if this.k > this.n {
            this.done = true;
            return Poll::Ready(Err(Error::Misuse {
                message: MORE_THAN_CALLS,
            }));
        }
        for (position, slot) in this.calls.iter_mut().enumerate() {
            if !this.best_effort && this.succeeded.len() >= this.k {
                break; // k is enough (`k = 0` at once): the calls not looked at are cancelled
            }
            let Some(call) = slot else { continue };
            match call.poll_own(cx) {
                Poll::Pending => continue,
                Poll::Ready(Ok(Ok(value))) => this.succeeded.push((position, value)),
                Poll::Ready(Ok(Err(failure))) => {
                    this.failed += 1;
                    this.last_failure = Some(failure);
                }
                Poll::Ready(Err(error)) if this.best_effort && error.is_deadline_exceeded() => {
                    // A failure seen after the deadline counts as the deadline (the call may
                    // have failed because of it): best effort takes stock now, as it would
                    // had it seen the deadline first.
                    return Poll::Ready(this.finish());
                }
                Poll::Ready(Err(error)) => {
                    // Not the call's own failure: the group is ending (cancelled, deadline).
                    this.done = true;
                    this.calls.clear();
                    return Poll::Ready(Err(error));
                }
            }
            *slot = None;
        }
        let running = this.n - this.succeeded.len() - this.failed;
        let enough = !this.best_effort && this.succeeded.len() >= this.k;
        let hopeless = this.succeeded.len() + running < this.k;
        // Only best effort waits for the deadline: read the clock for it alone.
        let expired = || this.group.shared().expired(this.group.now());
        if enough || hopeless || running == 0 || (this.best_effort && expired()) {
            return Poll::Ready(this.finish());
        }
        Poll::Pending
    }
}

impl<V: 'static> FusedFuture for Gather<'_, V> {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl<V> fmt::Debug for Gather<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gather")
            .field("k", &self.k)
            .field("calls", &self.calls.len())
            .field("best_effort", &self.best_effort)
            .field("succeeded", &self.succeeded.len())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}
