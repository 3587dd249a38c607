//! [`Group`]: one fan-out of named calls, and [`Run`], the future that drives it.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, TryLockError};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use log::Level;
use log::kv::Value;
use pin_project_lite::pin_project;

use crate::call::{Call, Driver};
use crate::context::{Cancelled, Context};
use crate::error::{BoxError, Error};
use crate::executor::Executor;
use crate::fail_fast::FailFast;
use crate::observer::GroupFinished;
use crate::records::{Records, chain, millis};
use crate::state::Shared;
use crate::sync::lock;
use crate::task::{Cell, Entry, GROUP_FINISHED, Local, Phase, timer_failed};
use crate::timer::Timer;

/// How late a deadline's sleep may fire before the group concludes that its timer is not
/// being driven. Real timers fire a millisecond or so late (tokio rounds up to its 1 ms tick),
/// a few milliseconds on a loaded machine; far beyond this, the timer is not running at all.
const LATE: Duration = Duration::from_millis(25);

/// How many names of cancelled calls a record lists.
const NAMES_LISTED: usize = 16;

const ALREADY_RAN: &str =
    "this group has already run: make a new group with `FailFast::group` for more calls";
const POLLED_AFTER_DONE: &str = "a group's `run` was polled again after it had completed";

/// One fan-out: named calls made with [`call`](Group::call), driven to the end by
/// [`run`](Group::run). Go's `errgroup.Group`, from `errgroup.WithContext`.
///
/// Made by [`FailFast::group`] under the caller's context. Every call gets a child of that
/// context carrying the group's deadline (and the call's own, if it has one), cancelled at the
/// first failure of a required call and when `run` returns, however it returns. One group is
/// one run: a second `run`, or a call made after `run` returned, ends with
/// [`Error::Misuse`].
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
pub struct Group<'ff, E, T> {
    ff: &'ff FailFast<E, T>,
    shared: Arc<Shared>,
    registry: Mutex<Registry<E, T>>,
}

/// The calls of a group, in the order they were made.
struct Registry<E, T> {
    slots: Vec<CallSlot<E, T>>,
    /// Calls before this index have been launched (or ended without starting).
    next: usize,
    stage: Stage,
    /// Reused for the indices of local calls to poll.
    scratch: Vec<usize>,
    /// `run` has begun and not launched anything yet: the calls made before it start even if
    /// the deadline has passed meanwhile (as calls that answer at once, they win the tie).
    fresh: bool,
}

struct CallSlot<E, T> {
    entry: Arc<dyn Entry<E, T>>,
    /// The call's task, when the group polls it itself.
    local: Option<Local>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Idle,
    Running,
    Finished,
}

impl<'ff, E: Executor, T: Timer> Group<'ff, E, T> {
    pub(crate) fn new(ff: &'ff FailFast<E, T>, ctx: &Context, id: u64) -> Group<'ff, E, T> {
        let started = ff.timer.now();
        let own = ff.timeout.and_then(|timeout| started.checked_add(timeout));
        let deadline = match (ctx.deadline(), own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let records = Records::new(ff.logger.clone(), id);
        let shared = Shared::new(
            id,
            started,
            deadline,
            ctx.clone(),
            ff.limit.is_some(),
            records,
            ff.observer.clone(),
        );
        Group {
            ff,
            shared: Arc::new(shared),
            registry: Mutex::new(Registry {
                slots: Vec::new(),
                next: 0,
                stage: Stage::Idle,
                scratch: Vec::new(),
                fresh: false,
            }),
        }
    }

    /// Makes the call `name`: `f` is called with the call's [`Context`] when the call starts,
    /// and the service's future it returns is run (spawned on the executor, or polled by the
    /// group on [`Inline`](crate::executor::Inline)). Go's `g.Go(f)`.
    ///
    /// `name` is a `&'static str` (no allocation) or a `String` (names made at run time); it
    /// names the call in errors, records and events. The returned [`Call`] is a future of the
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
        let cell = {
            let mut registry = lock(&self.registry);
            let index = registry.slots.len();
            let cell = Arc::new(Cell::new(self.shared.clone(), index, name.into(), f));
            if registry.stage == Stage::Finished {
                cell.refuse(Error::Misuse {
                    message: ALREADY_RAN,
                });
            }
            registry.slots.push(CallSlot {
                entry: cell.clone(),
                local: None,
            });
            cell
        };
        if self.shared.in_run() {
            self.shared.waker.wake(); // a call made from outside the join: `run` launches it
        }
        Call::new(self, cell)
    }

    /// Drives the group: launches its calls, watches them, and returns `join`'s result, unless
    /// something ends the group first. Go's `g.Wait()`, except that it returns at the first
    /// failure instead of waiting for every call.
    ///
    /// `join` is any future of `Result<R, Error>` over the group's calls: `try_join`,
    /// `try_join3`, `try_join!`, `try_join_all`, or an `async` block. The group does not depend
    /// on how it polls them: every call runs from the start, and the first failure of a
    /// required call ends `run` at once, even when the join would look at that call last. The
    /// first of these ends the group:
    ///
    /// * `join` completes: its result;
    /// * a required call fails (its service errs or panics, it times out, or its task is lost):
    ///   that error, [`Error::Service`], [`Error::Panicked`], [`Error::TimedOut`] or
    ///   [`Error::Dropped`], whatever the join makes of it;
    /// * the caller's context is cancelled: [`Error::Cancelled`];
    /// * the group's deadline passes: [`Error::DeadlineExceeded`].
    ///
    /// When `run` returns, however it returns, the calls' context is cancelled and every call
    /// still running is cancelled: its future is dropped (aborted on its executor, if it was
    /// spawned), not left to finish.
    ///
    /// **Ties.** When several of these are seen in the same poll (on
    /// [`Inline`](crate::executor::Inline), everything due at the same instant is), a failure
    /// wins, then the join's result, then the cancellation, then the deadline. Of two failures
    /// seen in one poll, the call made first wins; spawned calls report from their own tasks,
    /// so the first failure to arrive wins. A service error or a call's own timeout seen once
    /// the caller has cancelled or the deadline has passed is reported as `Cancelled` or
    /// `DeadlineExceeded`: a service that honours its context fails *because* of them, and the
    /// cause is what the caller needs. Panics are never rewritten.
    ///
    /// **A timer that does not fire.** If the deadline passed more than 25 ms before the group
    /// ends and its timer has still not fired (a tokio timer on a runtime nobody drives, say),
    /// the group ends with `DeadlineExceeded` even if the join succeeded, and logs a warning
    /// naming the timer. If the deadline passes while spawned calls were never polled by their
    /// executor (a smol `Executor` nobody runs, say), the warning names the executor.
    ///
    /// # Errors
    ///
    /// The errors above, and:
    /// * [`Error::Cancelled`] or [`Error::DeadlineExceeded`] at once, starting nothing, when
    ///   the caller's context was already cancelled or past its deadline;
    /// * [`Error::Timer`] when the timer panics (tokio's does once its runtime has shut down);
    /// * [`Error::Misuse`] when the group has already run.
    ///
    /// # Panics
    ///
    /// Panics of the services (making, polling or dropping them) and of the timer are contained
    /// (see above). A panic in the executor's own `spawn`, in a logger or in an observer
    /// unwinds out of `run`; the calls already started are cancelled as it unwinds.
    ///
    /// # Cancellation
    ///
    /// Dropping the returned future cancels every call of the group, spawned ones too, and the
    /// calls' context. Nothing keeps running.
    ///
    /// # Examples
    ///
    /// Fail fast does not wait for the join: `try_join_all` over many calls returns results in
    /// input order, yet the failure of the last call ends the group at once.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use failfast::{BoxError, Context, Error, FailFast};
    /// use futures::future::try_join_all;
    ///
    /// let ff = FailFast::builder().build()?;
    /// # futures::executor::block_on(async {
    /// let group = ff.group(&Context::background());
    /// let start = Instant::now();
    /// let calls = (0..100).map(|i| {
    ///     group.call(format!("shard-{i}"), move |_ctx| async move {
    ///         if i == 99 {
    ///             return Err::<(), BoxError>("shard down".into());
    ///         }
    ///         futures_timer::Delay::new(Duration::from_secs(10)).await;
    ///         Ok(())
    ///     })
    /// });
    /// let err = group.run(try_join_all(calls)).await.unwrap_err();
    /// assert_eq!(format!("{err:#}"), "shard-99 service failed: shard down");
    /// assert!(start.elapsed() < Duration::from_secs(5));
    /// # });
    /// # Ok::<_, failfast::BuildError>(())
    /// ```
    #[doc(alias = "Wait")]
    pub fn run<F, R>(&self, join: F) -> Run<'_, F, E, T>
    where
        F: Future<Output = Result<R, Error>>,
    {
        Run {
            group: self,
            join,
            sleep: None,
            cancelled: None,
            stage: RunStage::New,
            fired: false,
        }
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

    /// Launches the calls that may start and polls the local calls that are ready. In `run`,
    /// calls are not launched once the group is over (run ends it); outside, they end with the
    /// reason. Returns how many calls the group has made.
    fn drive(&self, cx: &mut TaskContext<'_>, in_run: bool) -> usize {
        self.shared.waker.register(cx.waker());
        let mut registry = lock(&self.registry);
        let registry = &mut *registry;
        if registry.stage == Stage::Finished {
            return registry.slots.len();
        }
        let mut ready = std::mem::take(&mut registry.scratch);
        loop {
            self.launch(registry, &mut ready, in_run);
            self.shared.take_ready(&mut ready);
            if ready.is_empty() {
                break;
            }
            ready.sort_unstable(); // of calls ready together, the one made first goes first
            ready.dedup();
            let mut freed = false;
            for &index in &ready {
                if self.shared.has_failed() {
                    break; // fail fast: `run` ends the group, nothing more is started or polled
                }
                let Some(slot) = registry.slots.get_mut(index) else {
                    continue;
                };
                let Some(local) = &mut slot.local else {
                    continue;
                };
                let mut task_cx = TaskContext::from_waker(&local.waker);
                if local.task.as_mut().poll(&mut task_cx).is_ready() {
                    slot.local = None;
                    freed = true;
                }
            }
            ready.clear();
            // Local calls that finished freed slots: launch the calls waiting for them.
            if !freed || registry.next == registry.slots.len() || self.shared.has_failed() {
                break;
            }
        }
        registry.scratch = ready;
        registry.slots.len()
    }

    /// Launches waiting calls while the limit allows, and notes the local ones in `ready`.
    fn launch(&self, registry: &mut Registry<E, T>, ready: &mut Vec<usize>, in_run: bool) {
        let limit = self.ff.limit.map_or(usize::MAX, NonZeroUsize::get);
        let fresh = std::mem::take(&mut registry.fresh) && in_run;
        if registry.next == registry.slots.len() || self.shared.running() >= limit {
            return;
        }
        if fresh {
            // `begin` has just checked the caller's context and deadline.
        } else if let Some(error) = self.shared.over(self.ff.timer.now()) {
            if !in_run {
                for slot in &registry.slots[registry.next..] {
                    slot.entry.abort(&error);
                }
                registry.next = registry.slots.len();
            }
            return;
        }
        while registry.next < registry.slots.len()
            && self.shared.running() < limit
            && !self.shared.has_failed()
        {
            let index = registry.next;
            registry.next += 1;
            let slot = &mut registry.slots[index];
            if let Some(local) = slot.entry.clone().launch(&self.ff.executor, &self.ff.timer) {
                slot.local = Some(local);
                ready.push(index);
            }
        }
    }

    /// Starts `run`: refuses a second run, and a caller's context already cancelled or past
    /// its deadline.
    fn begin(&self) -> Result<(), Error> {
        let calls = {
            let mut registry = lock(&self.registry);
            if registry.stage != Stage::Idle {
                return Err(Error::Misuse {
                    message: ALREADY_RAN,
                });
            }
            registry.stage = Stage::Running;
            registry.fresh = true;
            registry.slots.len()
        };
        self.shared.set_in_run(true);
        let shared = &*self.shared;
        let records = &shared.records;
        let now = self.ff.timer.now();
        // Refused before anything started: it spent no time on the calls.
        let elapsed = Duration::ZERO;
        let refused = if shared.parent.is_cancelled() {
            Some((
                Error::Cancelled { elapsed },
                "the caller's context was already cancelled, nothing started",
            ))
        } else if shared.expired(shared.started) {
            // Past when the group was made: the caller's deadline. (The group's own timeout
            // is never zero; passing it since, calls that answer at once still win the tie.)
            Some((
                Error::DeadlineExceeded { elapsed },
                "the deadline had already passed, nothing started",
            ))
        } else {
            None
        };
        if let Some((error, message)) = refused {
            records.write(Level::Warn, message, &[]);
            self.observe_end(elapsed, Some(&error));
            self.close();
            return Err(error);
        }
        if records.enabled(Level::Debug) {
            let calls = ("calls", Value::from(calls));
            match shared.deadline {
                Some(deadline) => {
                    let budget = millis(deadline.saturating_duration_since(now));
                    let keys = [calls, ("budget_ms", Value::from(budget))];
                    records.write(Level::Debug, "group started", &keys);
                }
                None => records.write(Level::Debug, "group started", &[calls]),
            }
        }
        Ok(())
    }

    /// Decides how the group ends, reports it and closes the group.
    fn settle<R>(
        &self,
        result: Result<R, Error>,
        sleep: Option<Pin<&mut T::Sleep>>,
        fired: bool,
        cx: &mut TaskContext<'_>,
    ) -> Result<R, Error> {
        let shared = &*self.shared;
        let records = &shared.records;
        let now = self.ff.timer.now();
        let elapsed = shared.elapsed(now);
        let mut result = match result {
            Err(Error::Service { .. } | Error::TimedOut { .. }) if shared.parent.is_cancelled() => {
                Err(Error::Cancelled { elapsed })
            }
            Err(Error::Service { .. } | Error::TimedOut { .. }) if shared.expired(now) => {
                Err(Error::DeadlineExceeded { elapsed })
            }
            other => other,
        };

        // A deadline long past whose sleep has still not fired: the timer is not being driven.
        if let (Some(deadline), Some(sleep), false) = (shared.deadline, sleep, fired) {
            let late = now.saturating_duration_since(deadline);
            if late >= LATE
                && !matches!(
                    catch_unwind(AssertUnwindSafe(|| sleep.poll(cx))),
                    Ok(Poll::Ready(()))
                )
            {
                let keys = [("late_ms", Value::from(millis(late)))];
                records.write(
                    Level::Warn,
                    "the deadline passed but the timer never fired: is its runtime driven? (a tokio timer needs a multi-thread runtime, or a current-thread one that some thread is blocking on)",
                    &keys,
                );
                if result.is_ok() {
                    result = Err(Error::DeadlineExceeded { elapsed });
                }
            }
        }

        if let Err(error) = &result {
            if matches!(error, Error::DeadlineExceeded { .. }) {
                self.warn_unpolled();
            }
            if records.enabled(Level::Warn) {
                let text = chain(error);
                let cancelled = self.names_in_flight();
                let mut keys = vec![
                    ("error", Value::from(text.as_str())),
                    ("elapsed_ms", Value::from(millis(elapsed))),
                ];
                if !cancelled.is_empty() {
                    keys.push(("cancelled", Value::from(cancelled.as_str())));
                }
                records.write(
                    Level::Warn,
                    "group failed, cancelling the calls still in flight",
                    &keys,
                );
            }
        } else if records.enabled(Level::Debug) {
            let keys = [("elapsed_ms", Value::from(millis(elapsed)))];
            records.write(Level::Debug, "group finished", &keys);
        }
        self.observe_end(elapsed, result.as_ref().err());
        self.close();
        result
    }

    /// Warns when spawned calls were never polled by their executor: a deadline exceeded
    /// because nothing ran them, not because they were slow.
    fn warn_unpolled(&self) {
        let records = &self.shared.records;
        if !records.enabled(Level::Warn) {
            return;
        }
        let registry = lock(&self.registry);
        let unpolled = registry
            .slots
            .iter()
            .filter(|slot| slot.local.is_none() && slot.entry.phase() == Phase::Launched)
            .count();
        if unpolled > 0 {
            let keys = [("unpolled", Value::from(unpolled))];
            records.write(
                Level::Warn,
                "calls handed to the executor were never polled: is it running? (a smol Executor must be run, a tokio current-thread runtime blocked on)",
                &keys,
            );
        }
    }

    /// The names of the calls still in flight, comma-separated (the first few).
    fn names_in_flight(&self) -> String {
        let registry = lock(&self.registry);
        let mut names = String::new();
        let (mut listed, mut more) = (0, 0);
        for slot in &registry.slots {
            if !matches!(slot.entry.phase(), Phase::Launched | Phase::Running) {
                continue;
            }
            if listed == NAMES_LISTED {
                more += 1;
                continue;
            }
            if listed > 0 {
                names.push(',');
            }
            names.push_str(slot.entry.name());
            listed += 1;
        }
        if more > 0 {
            names.push_str(&format!(",+{more} more"));
        }
        names
    }

    fn observe_end(&self, elapsed: Duration, error: Option<&Error>) {
        if let Some(observer) = &self.shared.observer {
            let calls = lock(&self.registry).slots.len();
            observer.group_finished(&GroupFinished {
                group: self.shared.id,
                elapsed,
                calls,
                error,
            });
        }
    }

    /// `run` was dropped before it finished.
    fn walked_away(&self) {
        let records = &self.shared.records;
        if records.enabled(Level::Debug) {
            let elapsed = self.shared.elapsed(self.ff.timer.now());
            let keys = [("elapsed_ms", Value::from(millis(elapsed)))];
            records.write(
                Level::Debug,
                "group dropped by the caller, cancelling the calls in flight",
                &keys,
            );
        }
        self.close();
    }
}

impl<E: Executor, T: Timer> Driver for Group<'_, E, T> {
    fn drive(&self, cx: &mut TaskContext<'_>) {
        Group::drive(self, cx, false);
    }

    fn forget(&self, index: usize) {
        let local = match self.registry.try_lock() {
            Ok(mut registry) => registry.slots.get_mut(index).and_then(|s| s.local.take()),
            Err(TryLockError::Poisoned(poisoned)) => poisoned
                .into_inner()
                .slots
                .get_mut(index)
                .and_then(|slot| slot.local.take()),
            Err(TryLockError::WouldBlock) => {
                // The group is being driven right now: it drops the call at its next poll.
                self.shared.wake_local(index);
                None
            }
        };
        drop(local);
    }

    fn now(&self) -> Instant {
        self.ff.timer.now()
    }
}

impl<E, T> Group<'_, E, T> {
    /// Ends the group: cancels the calls' context and every call still running. Idempotent.
    fn close(&self) {
        let locals: Vec<Local> = {
            let mut registry = lock(&self.registry);
            if registry.stage == Stage::Finished {
                return;
            }
            registry.stage = Stage::Finished;
            self.shared.set_in_run(false);
            self.shared.cancel();
            let error = Error::Misuse {
                message: GROUP_FINISHED,
            };
            registry.next = registry.slots.len();
            registry
                .slots
                .iter_mut()
                .filter_map(|slot| {
                    slot.entry.abort(&error);
                    slot.local.take()
                })
                .collect()
        };
        // Dropped outside the lock: their destructors are the services'.
        drop(locals);
    }
}

impl<E, T> Drop for Group<'_, E, T> {
    fn drop(&mut self) {
        // Without a finished `run` only if the group never ran, or its `run` was leaked.
        self.close();
    }
}

impl<E: fmt::Debug, T: fmt::Debug> fmt::Debug for Group<'_, E, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let registry = lock(&self.registry);
        f.debug_struct("Group")
            .field("id", &self.shared.id)
            .field("deadline", &self.shared.deadline)
            .field("calls", &registry.slots.len())
            .field("running", &self.shared.running())
            .field("stage", &registry.stage)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunStage {
    New,
    Running,
    Done,
}

pin_project! {
    /// The future returned by [`Group::run`].
    ///
    /// # Cancellation
    ///
    /// Dropping it before it completes cancels every call of the group and the calls' context.
    #[must_use = "futures do nothing unless you .await or poll them"]
    pub struct Run<'g, F, E, T>
    where
        E: Executor,
        T: Timer,
    {
        group: &'g Group<'g, E, T>,
        #[pin]
        join: F,
        #[pin]
        sleep: Option<T::Sleep>,
        cancelled: Option<Cancelled>,
        stage: RunStage,
        // The deadline's sleep completed.
        fired: bool,
    }

    impl<'g, F, E, T> PinnedDrop for Run<'g, F, E, T>
    where
        E: Executor,
        T: Timer,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if *this.stage == RunStage::Running {
                this.group.walked_away();
            }
        }
    }
}

impl<F, R, E, T> Future for Run<'_, F, E, T>
where
    F: Future<Output = Result<R, Error>>,
    E: Executor,
    T: Timer,
{
    type Output = Result<R, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let group = *this.group;
        match *this.stage {
            RunStage::Done => {
                return Poll::Ready(Err(Error::Misuse {
                    message: POLLED_AFTER_DONE,
                }));
            }
            RunStage::New => {
                if let Err(error) = group.begin() {
                    *this.stage = RunStage::Done;
                    return Poll::Ready(Err(error));
                }
                *this.stage = RunStage::Running;
            }
            RunStage::Running => {}
        }
        let shared = &*group.shared;
        let mut decided = None;
        loop {
            let made = group.drive(cx, true);
            if let Some(failure) = shared.failure() {
                decided = Some(Err(failure));
                break;
            }
            if let Poll::Ready(result) = this.join.as_mut().poll(cx) {
                decided = Some(shared.failure().map_or(result, Err));
                break;
            }
            // Calls made while the join was polled are launched before waiting.
            if lock(&group.registry).slots.len() == made {
                break;
            }
        }
        if decided.is_none() {
            decided = poll_end(group, this.cancelled, this.sleep.as_mut(), this.fired, cx);
        }
        match decided {
            None => Poll::Pending,
            Some(result) => {
                *this.stage = RunStage::Done;
                Poll::Ready(group.settle(result, this.sleep.as_pin_mut(), *this.fired, cx))
            }
        }
    }
}

/// Whether the caller's cancellation or the deadline ends the group now, in that order. The
/// deadline's sleep is created only once the calls are pending: calls that answer at their
/// first poll need no timer.
fn poll_end<R, E: Executor, T: Timer>(
    group: &Group<'_, E, T>,
    cancelled: &mut Option<Cancelled>,
    mut sleep: Pin<&mut Option<T::Sleep>>,
    fired: &mut bool,
    cx: &mut TaskContext<'_>,
) -> Option<Result<R, Error>> {
    let shared = &*group.shared;
    let timer = &group.ff.timer;
    let cancelled = cancelled.get_or_insert_with(|| shared.parent.cancelled());
    if shared.parent.is_cancelled() || Pin::new(cancelled).poll(cx).is_ready() {
        let elapsed = shared.elapsed(timer.now());
        return Some(Err(Error::Cancelled { elapsed }));
    }
    let deadline = shared.deadline?;
    if sleep.is_none() {
        match catch_unwind(AssertUnwindSafe(|| timer.sleep_until(deadline))) {
            Ok(new) => sleep.set(Some(new)),
            Err(payload) => return Some(Err(timer_failed(payload))),
        }
    }
    let sleep = sleep.as_pin_mut()?;
    match catch_unwind(AssertUnwindSafe(|| sleep.poll(cx))) {
        Ok(Poll::Pending) => None,
        Ok(Poll::Ready(())) => {
            *fired = true;
            let elapsed = shared.elapsed(timer.now());
            Some(Err(Error::DeadlineExceeded { elapsed }))
        }
        Err(payload) => Some(Err(timer_failed(payload))),
    }
}

impl<F, E, T> fmt::Debug for Run<'_, F, E, T>
where
    E: Executor + fmt::Debug,
    T: Timer + fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run")
            .field("group", &self.group)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}
