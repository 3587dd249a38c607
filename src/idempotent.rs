//! [`Idempotent`]: a call whose service may be called more than once, and so may be retried
//! or hedged.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::future::FusedFuture;

use crate::call::{Call, Optional};
use crate::error::Error;
use crate::policy::hedge::Hedge;
use crate::policy::retry::Retry;
use crate::sync::lock;

/// A call of a [`Group`](crate::Group) whose service may be called again: made by
/// [`Group::idempotent`](crate::Group::idempotent), it can [`retry`](Idempotent::retry) or
/// [`hedge`](Idempotent::hedge).
///
/// It is a [`Call`] otherwise: a future of the call's `Result<V, Error>`, with
/// [`timeout`](Idempotent::timeout) and [`optional`](Idempotent::optional). Its
/// [`timeout`](Idempotent::timeout) bounds all its attempts together, backoffs included.
///
/// # Cancellation
///
/// Dropping it cancels the call, whichever attempt or backoff it is in, as for a [`Call`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use failfast::{BoxError, Context, FailFast, Retry};
///
/// let ff = FailFast::builder().build()?;
/// # futures::executor::block_on(async {
/// let group = ff.group(&Context::background());
/// let orders = group
///     .idempotent("orders", |_ctx| async { Ok::<_, BoxError>(5) }) // safe to call again
///     .retry(Retry::builder().attempts(2).build()?)
///     .timeout(Duration::from_millis(500));
/// assert_eq!(group.run(orders).await?, 5);
/// # Ok::<_, Box<dyn std::error::Error>>(()) })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[must_use = "futures do nothing unless you .await or poll them; a dropped call is cancelled"]
pub struct Idempotent<'g, V> {
    call: Call<'g, V>,
    policy: Arc<Mutex<Policy>>,
}

/// The policy of one idempotent call: set by its handle, taken when the call starts.
#[derive(Default)]
pub(crate) struct Policy {
    retry: Option<Retry>,
    hedge: Option<Hedge>,
    started: bool,
}

impl Policy {
    /// The call starts: its policies are taken, and can no longer be set.
    pub(crate) fn start(&mut self) -> (Option<Retry>, Option<Hedge>) {
        self.started = true;
        (self.retry.take(), self.hedge.take())
    }
}

impl<'g, V> Idempotent<'g, V> {
    pub(crate) fn new(call: Call<'g, V>, policy: Arc<Mutex<Policy>>) -> Idempotent<'g, V> {
        Idempotent { call, policy }
    }

    /// Retries the call's failures under `policy`: see [`Retry`] for the schedule, what is
    /// retried, the budget and the deadline. Default: a single attempt.
    ///
    /// Set it right after [`Group::idempotent`](crate::Group::idempotent): once the call has
    /// started, it is too late, and the call ends with [`Error::Misuse`].
    ///
    /// # Examples
    ///
    /// See [`Retry`].
    pub fn retry(mut self, policy: Retry) -> Self {
        self.set(|slot| {
            slot.hedge = None;
            slot.retry = Some(policy);
        });
        self
    }

    /// Hedges the call under `policy`: see [`Hedge`] for when attempts start, which one wins
    /// and the budget. A call hedges or retries: this replaces a [`retry`](Idempotent::retry)
    /// set before, and a `retry` set after replaces this.
    ///
    /// Set it right after [`Group::idempotent`](crate::Group::idempotent): once the call has
    /// started, it is too late, and the call ends with [`Error::Misuse`].
    ///
    /// # Examples
    ///
    /// See [`Hedge`].
    pub fn hedge(mut self, policy: Hedge) -> Self {
        self.set(|slot| {
            slot.retry = None;
            slot.hedge = Some(policy);
        });
        self
    }

    /// Changes the policy, unless the call has started (then the call yields a misuse error).
    fn set(&mut self, change: impl FnOnce(&mut Policy)) {
        let mut slot = lock(&self.policy);
        if slot.started {
            drop(slot);
            self.call.too_late();
        } else {
            change(&mut slot);
        }
    }

    /// A deadline of the call's own, for all its attempts: see [`Call::timeout`].
    ///
    /// # Examples
    ///
    /// See [`Idempotent`].
    pub fn timeout(self, timeout: Duration) -> Self {
        Idempotent {
            call: self.call.timeout(timeout),
            policy: self.policy,
        }
    }

    /// Makes the call optional: see [`Call::optional`]. Set [`retry`](Idempotent::retry)
    /// first: the call fails on its own (and yields `Ok(None)`) once it gives up.
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::{BoxError, Context, FailFast, Retry};
    ///
    /// let ff = FailFast::builder().build()?;
    /// # futures::executor::block_on(async {
    /// let group = ff.group(&Context::background());
    /// let recs = group
    ///     .idempotent("recs", |_ctx| async { Err::<u32, BoxError>("down".into()) })
    ///     .retry(Retry::builder().attempts(2).build()?)
    ///     .optional();
    /// assert_eq!(group.run(recs).await?, None);
    /// # Ok::<_, Box<dyn std::error::Error>>(()) })?;
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn optional(self) -> Optional<'g, V> {
        self.call.optional()
    }
}

impl<'g, V> From<Idempotent<'g, V>> for Call<'g, V> {
    /// The call, with its policy set: for a [`Gather`](crate::Gather).
    fn from(idempotent: Idempotent<'g, V>) -> Call<'g, V> {
        idempotent.call
    }
}

impl<V: 'static> Future for Idempotent<'_, V> {
    type Output = Result<V, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.call).poll(cx)
    }
}

impl<V: 'static> FusedFuture for Idempotent<'_, V> {
    fn is_terminated(&self) -> bool {
        self.call.is_terminated()
    }
}

impl<V> fmt::Debug for Idempotent<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotent")
            .field("call", &self.call)
            .field("retry", &lock(&self.policy).retry)
            .field("hedge", &lock(&self.policy).hedge)
            .finish()
    }
}
