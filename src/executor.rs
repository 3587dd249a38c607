//! Where calls run: the [`Executor`] trait and one adapter per runtime.
//!
//! | executor | feature | runs calls |
//! |---|---|---|
//! | [`Inline`] | always | inside the caller's task, no spawn: any `block_on`, any runtime |
//! | `AsyncStd` | `async-std` | on async-std's global executor |
//! | `Smol` | `smol` | on a `smol::Executor` you run, or on smol's global executor |
//! | `Tokio` | `tokio` | on a tokio runtime, through its `Handle` |
//! | any `Fn(BoxFuture<'static, ()>)` | always | wherever the closure puts them |

use std::future::Future;

use futures::future::BoxFuture;

/// Starts the calls of a group.
///
/// An executor either takes a task and polls it to completion in the background (returning
/// `Ok` with its [`Handle`](Executor::Handle)), or hands it back (returning `Err(task)`), in
/// which case the group polls it inside the task that runs the group, concurrently with the
/// other calls, as [`Inline`] does.
///
/// Tasks handed to an executor never panic (panics are caught inside them) and are cancelled
/// by failfast itself: when their result is no longer wanted they are flagged, woken, and
/// complete promptly on their next poll, dropping the service. So an executor needs no handle
/// for cancellation (`type Handle = ()` is fine); it may drop a task (for example while
/// shutting down), which failfast reports as [`Error::Dropped`](crate::Error::Dropped).
///
/// The handle, if the runtime gives one, is kept by the group and dropped on the group's own
/// thread once the call has ended (or the group has), rather than detached at once: the
/// runtime then frees the finished task on that thread instead of on its workers, which took
/// 12-40% off the time of 256-call groups (smol the least, async-std the most; see
/// `BENCHMARKS.md`). It is also dropped, wherever that happens, when the call is cancelled (its
/// [`Call`](crate::Call) dropped, the group ended): after failfast has flagged the task to
/// stop. Dropping it may cancel the task (smol's `Task` does) or detach it (tokio's
/// `JoinHandle` does): either is fine. It must not block or panic when dropped. An executor
/// that has no handle uses `()`.
///
/// Any `Fn(BoxFuture<'static, ()>) + Send + Sync + 'static` closure is an executor, so
/// a runtime without an adapter here takes one line. A closure has no handle to give back, so
/// it must detach the runtime's handle itself (smol: `.detach()`; a smol `Task` dropped
/// cancels the call, which failfast reports as [`Error::Dropped`](crate::Error::Dropped)), and
/// the finished tasks are then freed on the runtime's threads: implement the trait, with the
/// runtime's handle as `Handle`, to have them freed on the group's thread.
///
/// # Examples
///
/// A closure that runs each call on a `futures` thread pool:
///
/// ```
/// use failfast::{BoxError, Context, FailFast};
/// use futures::executor::ThreadPool;
/// use futures::future::BoxFuture;
///
/// let pool = ThreadPool::new()?;
/// let ff = FailFast::builder()
///     .executor(move |task: BoxFuture<'static, ()>| pool.spawn_ok(task))
///     .build()?;
/// # futures::executor::block_on(async {
/// let group = ff.group(&Context::background());
/// let thread = group.call("where", |_ctx| async { Ok::<_, BoxError>(std::thread::current().id()) });
/// assert_ne!(group.run(thread).await?, std::thread::current().id());
/// # Ok::<_, failfast::Error>(()) })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
///
/// Implementing the trait, for a runtime that has no adapter here: a pool that runs a task
/// when it has room and hands it back to be polled in place when it is full.
///
/// ```
/// use std::future::Future;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use failfast::{BoxError, Context, Executor, FailFast};
/// use futures::executor::ThreadPool;
///
/// struct Bounded {
///     pool: ThreadPool,
///     room: Arc<AtomicUsize>,
/// }
///
/// impl Executor for Bounded {
///     type Handle = (); // the pool gives no handle
///
///     fn spawn<F>(&self, task: F) -> Result<(), F>
///     where
///         F: Future<Output = ()> + Send + 'static,
///     {
///         let taken = self.room.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
///         if taken.is_err() {
///             return Err(task); // full: the group polls it itself
///         }
///         let room = self.room.clone();
///         self.pool.spawn_ok(async move {
///             task.await;
///             room.fetch_add(1, Ordering::AcqRel);
///         });
///         Ok(())
///     }
/// }
///
/// let ff = FailFast::builder()
///     .executor(Bounded { pool: ThreadPool::new()?, room: Arc::new(AtomicUsize::new(2)) })
///     .build()?;
/// # futures::executor::block_on(async {
/// let group = ff.group(&Context::background());
/// let calls = (0..5).map(|i| group.call("square", move |_ctx| async move { Ok::<_, BoxError>(i * i) }));
/// assert_eq!(group.run(futures::future::try_join_all(calls)).await?, [0, 1, 4, 9, 16]);
/// # Ok::<_, failfast::Error>(()) })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
pub trait Executor: Send + Sync + 'static {
    /// What the runtime gives back for a spawned task (smol's `Task`, tokio's `JoinHandle`),
    /// kept by the group until the call has ended; `()` if nothing.
    type Handle: Send + 'static;

    /// Runs `task` in the background and returns its handle, or returns `Err(task)` for the
    /// caller to poll in place.
    fn spawn<F>(&self, task: F) -> Result<Self::Handle, F>
    where
        F: Future<Output = ()> + Send + 'static;
}

impl<S> Executor for S
where
    S: Fn(BoxFuture<'static, ()>) + Send + Sync + 'static,
{
    type Handle = ();

    fn spawn<F>(&self, task: F) -> Result<(), F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self(Box::pin(task));
        Ok(())
    }
}

/// Runs every call inside the caller's own task: no spawn, no thread, no runtime needed.
///
/// The calls still run concurrently (they are polled together), but on one thread, so
/// CPU-bound services do not run in parallel. Cancellation is plain dropping. This is the
/// default executor.
///
/// # Examples
///
/// ```
/// use failfast::{executor, mock, Context, UserAggregator};
///
/// let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
///     .executor(executor::Inline)
///     .build()?;
/// let dashboard = futures::executor::block_on(agg.aggregate(&Context::background(), 42))?;
/// assert_eq!(dashboard.orders, 5);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Inline;

impl Executor for Inline {
    type Handle = ();

    fn spawn<F>(&self, task: F) -> Result<(), F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Err(task)
    }
}

/// Spawns calls on async-std's global executor.
///
/// async-std is deprecated upstream in favour of smol; this adapter is kept for applications
/// that still run on it.
///
/// # Examples
///
/// ```
/// use failfast::{executor, mock, Context, UserAggregator};
///
/// let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
///     .executor(executor::AsyncStd)
///     .build()?;
/// let dashboard = async_std::task::block_on(agg.aggregate(&Context::background(), 42))?;
/// assert_eq!(dashboard.to_string(), "User: Alice | Orders: 5");
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[cfg(feature = "async-std")]
#[cfg_attr(docsrs, doc(cfg(feature = "async-std")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStd;

#[cfg(feature = "async-std")]
impl Executor for AsyncStd {
    /// Dropping it detaches the task; failfast flags the task to stop, and it ends at its next
    /// poll.
    type Handle = async_std::task::JoinHandle<()>;

    fn spawn<F>(&self, task: F) -> Result<Self::Handle, F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Ok(async_std::task::spawn(task))
    }
}

/// Spawns calls on a [`smol::Executor`](https://docs.rs/smol/2/smol/struct.Executor.html)
/// ([`Smol::new`]), or on smol's global executor ([`Smol::global`]).
///
/// An executor of your own must be running (`ex.run(..)` on some thread) for the calls to
/// make progress; if it is not, the group ends at its deadline with a warning that its calls
/// were never polled (a group with no deadline waits for ever, or until the caller cancels),
/// and the cancelled calls stay queued (their futures alive) until the executor runs or is
/// dropped. The global executor runs itself.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use failfast::{executor, mock, Context, UserAggregator};
///
/// let ex = Arc::new(smol::Executor::new());
/// let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
///     .executor(executor::Smol::new(ex.clone()))
///     .build()?;
/// let dashboard = smol::block_on(ex.run(agg.aggregate(&Context::background(), 42)))?;
/// assert_eq!(dashboard.to_string(), "User: Alice | Orders: 5");
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[cfg(feature = "smol")]
#[cfg_attr(docsrs, doc(cfg(feature = "smol")))]
#[derive(Debug, Clone)]
pub struct Smol {
    /// `None`: smol's global executor.
    executor: Option<std::sync::Arc<smol::Executor<'static>>>,
}

#[cfg(feature = "smol")]
impl Smol {
    /// Spawns on `executor`.
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = std::sync::Arc::new(smol::Executor::new());
    /// let _executor = failfast::executor::Smol::new(ex);
    /// ```
    pub fn new(executor: std::sync::Arc<smol::Executor<'static>>) -> Smol {
        Smol {
            executor: Some(executor),
        }
    }

    /// Spawns on smol's global executor (`smol::spawn`), which runs on threads of its own:
    /// one by default, `SMOL_THREADS` to change it.
    ///
    /// # Examples
    ///
    /// ```
    /// use failfast::{executor, mock, Context, UserAggregator};
    ///
    /// let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
    ///     .executor(executor::Smol::global())
    ///     .build()?;
    /// let dashboard = smol::block_on(agg.aggregate(&Context::background(), 42))?;
    /// assert_eq!(dashboard.to_string(), "User: Alice | Orders: 5");
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn global() -> Smol {
        Smol { executor: None }
    }
}

#[cfg(feature = "smol")]
impl Executor for Smol {
    /// Dropped once the call has ended, or to cancel it with the group.
    type Handle = smol::Task<()>;

    fn spawn<F>(&self, task: F) -> Result<Self::Handle, F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Ok(match &self.executor {
            Some(executor) => executor.spawn(task),
            None => smol::spawn(task),
        })
    }
}

/// Spawns calls on a tokio runtime.
///
/// The runtime must run its tasks: a multi-thread runtime does on its workers, a
/// current-thread runtime only while some thread is inside its `block_on`. If nothing runs
/// them, the group ends at its deadline, with a warning that its calls were never polled.
///
/// # Examples
///
/// ```
/// use failfast::{executor, mock, Context, UserAggregator};
///
/// let rt = tokio::runtime::Runtime::new()?;
/// let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
///     .executor(executor::Tokio::new(rt.handle().clone()))
///     .build()?;
/// let dashboard = rt.block_on(agg.aggregate(&Context::background(), 42))?;
/// assert_eq!(dashboard.to_string(), "User: Alice | Orders: 5");
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[derive(Debug, Clone)]
pub struct Tokio {
    handle: tokio::runtime::Handle,
}

#[cfg(feature = "tokio")]
impl Tokio {
    /// Spawns on the runtime behind `handle`.
    ///
    /// # Examples
    ///
    /// ```
    /// let rt = tokio::runtime::Runtime::new()?;
    /// let _executor = failfast::executor::Tokio::new(rt.handle().clone());
    /// # Ok::<_, std::io::Error>(())
    /// ```
    pub fn new(handle: tokio::runtime::Handle) -> Tokio {
        Tokio { handle }
    }
}

#[cfg(feature = "tokio")]
impl Executor for Tokio {
    /// Dropping it detaches the task; failfast flags the task to stop, and it ends at its next
    /// poll.
    type Handle = tokio::task::JoinHandle<()>;

    fn spawn<F>(&self, task: F) -> Result<Self::Handle, F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Ok(self.handle.spawn(task))
    }
}
