//! [`Group`]: one fan-out of named calls. Its [`run`](Group::run) is in `run.rs`.

use std::any::TypeId;
use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use crate::attempt::Settings;
use crate::call::{Call, Driver};
use crate::context::Context;
use crate::error::BoxError;
use crate::executor::{Executor, Inline};
use crate::fail_fast::FailFast;
use crate::gather::Gather;
use crate::idempotent::{Idempotent, Policy};
use crate::inline::InlineCall;
use crate::records::Records;
use crate::registry::{Env, Registry, Stage};
use crate::repeat::attempts;
use crate::spawned::Cell;
use crate::state::Shared;
use crate::timer::Timer;

/// One fan-out: named calls made with [`call`](Group::call), driven to the end by
/// [`run`](Group::run). Go's `errgroup.Group`, from `errgroup.WithContext`.
///
/// Made by [`FailFast::group`] under the caller's context. Every call gets a child of that
/// context carrying the group's deadline (and the call's own, if it has one), cancelled at the
/// first failure of a required call and when `run` returns, however it returns. One group is
/// one run: a second `run`, or a call made after `run` returned, ends with
/// [`Error::Misuse`](crate::Error::Misuse).
///
/// # Examples
///
/// Three services of different types, concurrently, failing fast:
///
/// ```
/// use std::time::Duration;
/// use failfast::{BoxError, Context, FailFast};
/// use futures::future::try_join3;
///
/// # async fn profile(_: failfast::Context) -> Result<String, BoxError> { Ok("Alice".into()) }
/// # async fn orders(_: failfast::Context) -> Result<u32, BoxError> { Ok(5) }
/// # async fn recs(_: failfast::Context) -> Result<Vec<&'static str>, BoxError> { Ok(vec!["book"]) }
/// let ff = FailFast::builder().timeout(Duration::from_secs(1)).build()?;
/// # futures::executor::block_on(async {
/// let group = ff.group(&Context::background());
/// let (name, count, recs) = group
///     .run(try_join3(
///         group.call("profile", profile),
///         group.call("orders", orders),
///         group.call("recs", recs).timeout(Duration::from_millis(50)).optional(),
///     ))
///     .await?;
/// assert_eq!((name.as_str(), count, recs), ("Alice", 5, Some(vec!["book"])));
/// # Ok::<_, failfast::Error>(()) })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
pub struct Group<'ff, E: Executor, T> {
    pub(crate) ff: &'ff FailFast<E, T>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) registry: Registry<E, T>,
    /// `Registry::close` for this timer, for `Drop`, which cannot require `T: Timer`.
    close: fn(&Registry<E, T>, &Shared, &T),
}

impl<'ff, E: Executor, T: Timer> Group<'ff, E, T> {
    pub(crate) fn new(ff: &'ff FailFast<E, T>, ctx: &Context, id: u64) -> Group<'ff, E, T> {
        let records = Records::new(ff.logger.clone(), id);
        let shared = Shared::new(
            id,
            ctx,
            ff.clock.clone(),
            ff.timeout,
            ff.limit.is_some(),
            records,
            ff.observer.clone(),
        );
        Group {
            ff,
            shared: Arc::new(shared),
            registry: Registry::new(),
            close: Registry::<E, T>::close,
        }
    }

    /// Makes the call `name`: `f` is called with the call's [`Context`] when the call starts,
    /// and the service's future it returns is run (spawned on the executor, or polled by the
    /// group on [`Inline`](crate::executor::Inline)). Go's `g.Go(f)`.
    ///
    /// `name` is a `&'static str` (no allocation) or a `String` (names made at run time); it
    /// names the call in errors, records and events. `f`, its future and its value must be
    /// `Send + 'static`, even on [`Inline`](crate::executor::Inline), as for a spawned task:
    /// move owned data in (`move |ctx| fetch(ctx, id.clone())`), not borrows. In an `async`
    /// block that uses `?`, name the error type of its `Ok`: `Ok::<_, BoxError>(value)`. The returned [`Call`] is a future of the
    /// call's result, to be joined with the others and handed to [`run`](Group::run). Nothing
    /// starts before `run` (or the call itself) is polled; under a
    /// [`limit`](crate::FailFastBuilder::limit), calls start in the order they were made.
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::{BoxError, Context, FailFast};
    /// use futures::future::try_join_all;
    ///
    /// async fn fetch(ctx: Context, shard: usize) -> Result<usize, BoxError> {
    ///     assert!(!ctx.is_cancelled());
    ///     Ok(shard * shard)
    /// }
    ///
    /// let ff = FailFast::builder().build()?;
    /// # futures::executor::block_on(async {
    /// let group = ff.group(&Context::background());
    /// let squares = group
    ///     .run(try_join_all((0..4).map(|i| group.call(format!("shard-{i}"), move |ctx| fetch(ctx, i)))))
    ///     .await?;
    /// assert_eq!(squares, [0, 1, 4, 9]);
    /// # Ok::<_, failfast::Error>(()) })?;
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "Go")]
    pub fn call<V, Er, Fut, F>(&self, name: impl Into<Cow<'static, str>>, f: F) -> Call<'_, V>
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, Er>> + Send + 'static,
        Er: Into<BoxError>,
        V: Send + 'static,
    {
        let name = name.into();
        let call = if TypeId::of::<E>() == TypeId::of::<Inline>() {
            // Polled by the group: one allocation, no waker unless it is pending.
            let call = InlineCall::<V, F, Fut, T::Sleep>::new(name, f);
            Call::inline(self, self.registry.push_inline(Box::pin(call)))
        } else {
            // Any other executor, even one that hands tasks back (they are polled here then).
            let shared = &self.shared;
            let (index, cell) = self
                .registry
                .push_spawned(|index| Arc::new(Cell::new(shared.clone(), index, name, f)));
            Call::spawned(self, index, cell)
        };
        if self.shared.in_run() {
            self.shared.waker.wake(); // made from outside the join: `run` launches it
        }
        call
    }

    /// Makes the call `name` to a service that may be called more than once, so that the call
    /// can [`retry`](Idempotent::retry): `f` is called once per attempt, each time with a
    /// fresh child of the call's [`Context`]. Otherwise the same as [`call`](Group::call).
    ///
    /// Only the caller knows whether calling a service again is safe (a read, or a write
    /// with an idempotency key): [`call`](Group::call) takes an `FnOnce`, so a call made
    /// with it cannot be retried by accident. `f` is an `FnMut` rather than a `Clone`
    /// closure, so that it can keep state across attempts (a counter, a connection) and
    /// needs no `Clone` on what it captures.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::{BoxError, Context, FailFast, Retry};
    ///
    /// async fn get(_ctx: Context, key: &str) -> Result<String, BoxError> {
    ///     Ok(format!("value of {key}"))
    /// }
    ///
    /// let ff = FailFast::builder().timeout(Duration::from_secs(1)).build()?;
    /// # futures::executor::block_on(async {
    /// let group = ff.group(&Context::background());
    /// let value = group
    ///     .idempotent("kv", |ctx| get(ctx, "answer"))
    ///     .retry(Retry::builder().attempts(3).build()?);
    /// assert_eq!(group.run(value).await?, "value of answer");
    /// # Ok::<_, Box<dyn std::error::Error>>(()) })?;
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// A plain [`Call`] has no `retry` or `hedge`: a payment made with
    /// [`call`](Group::call) cannot be retried or hedged by mistake.
    ///
    /// ```compile_fail,E0599
    /// use failfast::{BoxError, Context, FailFast, Hedge};
    ///
    /// let ff = FailFast::builder().build().unwrap();
    /// let group = ff.group(&Context::background());
    /// let hedge = Hedge::builder().build().unwrap();
    /// let payment = group
    ///     .call("pay", |_ctx| async { Ok::<_, BoxError>(()) })
    ///     .hedge(hedge); // error[E0599]: no method named `hedge` found for `Call`
    /// ```
    pub fn idempotent<V, Er, Fut, F>(
        &self,
        name: impl Into<Cow<'static, str>>,
        f: F,
    ) -> Idempotent<'_, V>
    where
        F: FnMut(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, Er>> + Send + 'static,
        Er: Into<BoxError> + 'static,
        V: Send + 'static,
    {
        let name = name.into();
        let policy = Arc::new(Mutex::new(Policy::default()));
        let (slot, shared, label) = (policy.clone(), self.shared.clone(), name.clone());
        let call = self.call(name, move |ctx| attempts(ctx, f, slot, shared, label));
        Idempotent::new(call, policy)
    }

    /// A k-of-n gather over `calls` of this group, to hand to [`run`](Group::run): it yields
    /// as soon as `k` of them have succeeded (cancelling the rest), or, made
    /// [`best_effort`](Gather::best_effort), all that succeeded by the deadline if there are at
    /// least `k`. Each call counts as optional: its own failure does not fail the group. See
    /// [`Gather`].
    ///
    /// `calls` may be [`Call`]s, [`Idempotent`] calls (retried or hedged) or
    /// [`Optional`](crate::Optional) ones. `k` larger than the number of calls is refused
    /// here: the calls are cancelled before any starts, and the gather yields
    /// [`Error::Misuse`](crate::Error::Misuse) when it is run.
    ///
    /// # Examples
    ///
    /// See [`Gather`].
    pub fn gather<'g, V, C>(&'g self, k: usize, calls: impl IntoIterator<Item = C>) -> Gather<'g, V>
    where
        C: Into<Call<'g, V>>,
    {
        let calls = calls.into_iter().map(Into::into).collect();
        Gather::new(k, calls, self)
    }

    /// Adds `key = value` to every log record of this group, such as the user or the request
    /// it serves. Records always carry `group_id`, which tells concurrent groups apart.
    ///
    /// Nothing is kept when logging is off (`log::max_level()` is `Off`).
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::{Context, FailFast};
    ///
    /// let ff = FailFast::builder().build()?;
    /// let group = ff.group(&Context::background()).log_field("user_id", 42);
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    pub fn log_field(
        self,
        key: &'static str,
        value: impl fmt::Display + Send + Sync + 'static,
    ) -> Self {
        if log::max_level() != log::LevelFilter::Off {
            self.shared.records.add_field(key, Box::new(value));
        }
        self
    }

    /// The group's id, as in its log records (`group_id`) and [`Observer`](crate::Observer)
    /// events. Unique within the process.
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::{Context, FailFast};
    ///
    /// let ff = FailFast::builder().build()?;
    /// let (a, b) = (ff.group(&Context::background()), ff.group(&Context::background()));
    /// assert_ne!(a.id(), b.id());
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The group's deadline: the earlier of the caller's and the `FailFast`'s timeout, counted
    /// from the group's creation.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use failfast::{Context, FailFast};
    ///
    /// let ff = FailFast::builder().timeout(Duration::from_secs(1)).build()?;
    /// let ctx = Context::background().with_timeout(Duration::from_secs(60));
    /// let group = ff.group(&ctx);
    /// assert!(group.deadline() < ctx.deadline()); // the earlier deadline wins
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    pub fn deadline(&self) -> Option<Instant> {
        self.shared.deadline
    }

    fn env(&self) -> Env<'_, E, T> {
        Env {
            shared: &self.shared,
            executor: &self.ff.executor,
            timer: &self.ff.timer,
            limit: self.ff.limit,
        }
    }

    /// Launches the calls that may start and polls the inline ones that are ready; registers
    /// `cx` to be woken when more can be done. Returns how many calls the group has made.
    pub(crate) fn drive(&self, cx: &mut TaskContext<'_>) -> usize {
        self.shared.waker.register(cx.waker());
        self.registry.drive(&self.env())
    }

    /// Ends the group: cancels the calls' context and every call still running. Idempotent.
    pub(crate) fn close(&self) {
        self.registry.close(&self.shared, &self.ff.timer);
    }
}

impl<E: Executor, T: Timer> Driver for Group<'_, E, T> {
    fn shared(&self) -> &Shared {
        &self.shared
    }

    fn finished(&self) -> bool {
        self.registry.stage() == Stage::Finished
    }

    fn forget(&self, index: usize) {
        self.registry.forget(index, &self.shared, &self.ff.timer);
    }

    fn release(&self, index: usize) {
        self.registry.release(index);
    }

    fn now(&self) -> Instant {
        self.ff.timer.now()
    }

    fn configure(&self, index: usize, change: &mut dyn FnMut(&mut Settings)) -> bool {
        self.registry.configure(index, change)
    }

    fn take(
        &self,
        index: usize,
        cx: &mut TaskContext<'_>,
        into: &mut dyn std::any::Any,
    ) -> Poll<()> {
        self.registry.take(index, cx, into)
    }
}

impl<E: Executor, T> Drop for Group<'_, E, T> {
    fn drop(&mut self) {
        // Without a finished `run` only if the group never ran, or its `run` was leaked.
        (self.close)(&self.registry, &self.shared, &self.ff.timer);
    }
}

impl<E: Executor + fmt::Debug, T: fmt::Debug> fmt::Debug for Group<'_, E, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("id", &self.shared.id)
            .field("deadline", &self.shared.deadline)
            .field("calls", &self.registry.len())
            .field("stage", &self.registry.stage())
            .finish_non_exhaustive()
    }
}
