//! The same aggregate on every executor and timer, the closure executor, and the types'
//! thread-safety, checked at compile time.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::on_every_executor;
use failfast::{
    AggregateError, CancelHandle, Context, Dashboard, Timer, UserAggregator, executor, mock, timer,
};
use futures::future::BoxFuture;

on_every_executor!(
    async fn the_happy_path_answers_user_alice_orders_5(ex) {
        let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
            .executor(ex)
            .build()
            .unwrap();
        let dashboard = agg.aggregate(&Context::background(), 42).await.unwrap();
        assert_eq!(dashboard.to_string(), "User: Alice | Orders: 5");
    }
);

on_every_executor!(
    async fn one_aggregator_serves_many_concurrent_aggregates(ex) {
        let profiles = mock::profile("Alice").delay(Duration::from_millis(20));
        let orders = mock::orders(5).delay(Duration::from_millis(20));
        let order_calls = orders.calls();
        let agg = Arc::new(
            UserAggregator::builder(profiles, orders)
                .executor(ex)
                .build()
                .unwrap(),
        );
        let ctx = Context::background();
        let results = futures::future::join_all((0..50).map(|id| agg.aggregate(&ctx, id))).await;
        assert!(results.iter().all(|r| r.as_ref().is_ok_and(|d| d.orders == 5)));
        assert_eq!(order_calls.finished(), 50);
    }
);

#[test]
fn a_closure_is_an_executor() {
    let pool = futures::executor::ThreadPool::builder()
        .pool_size(2)
        .create()
        .unwrap();
    let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
        .executor(move |task: BoxFuture<'static, ()>| pool.spawn_ok(task))
        .build()
        .unwrap();
    let dashboard = futures::executor::block_on(agg.aggregate(&Context::background(), 1)).unwrap();
    assert_eq!(dashboard.orders, 5);
}

#[cfg(feature = "smol")]
#[test]
fn smols_global_executor_runs_calls_on_its_own_threads_and_fails_fast() {
    let ff = failfast::FailFast::builder()
        .executor(executor::Smol::global())
        .build()
        .unwrap();
    let group = ff.group(&Context::background());
    let call = group.call("where", |_ctx| async {
        Ok::<_, failfast::BoxError>(std::thread::current().id())
    });
    let ran_on = smol::block_on(group.run(call)).unwrap();
    assert_ne!(ran_on, std::thread::current().id());

    // Domino Effect: profile fails after 20 ms, orders would take 10 s and is cancelled in
    // flight.
    let orders = mock::orders(5).delay(Duration::from_secs(10));
    let calls = orders.calls();
    let profile = mock::profile("Alice")
        .delay(Duration::from_millis(20))
        .fail("profile db down");
    let agg = UserAggregator::builder(profile, orders)
        .executor(executor::Smol::global())
        .build()
        .unwrap();
    let started = Instant::now();
    let err = smol::block_on(agg.aggregate(&Context::background(), 1)).unwrap_err();
    assert_eq!(err.service(), Some("profile"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(calls.started(), 1, "the orders call was in flight");
    // Cancelled on the global executor's thread, soon after.
    let waited = Instant::now();
    while calls.cancelled() == 0 && waited.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(calls.cancelled(), 1);
    assert_eq!(calls.finished(), 0);
}

/// An executor of its own that declines every task, like `Inline`, but through the general
/// hand-back path rather than failfast's shortcut for the built-in one.
#[derive(Clone)]
struct HandsBack;

impl failfast::Executor for HandsBack {
    type Handle = ();

    fn spawn<F>(&self, task: F) -> Result<(), F>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        Err(task)
    }
}

#[test]
fn an_executor_that_hands_tasks_back_runs_them_in_place_and_fails_fast() {
    let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
        .executor(HandsBack)
        .build()
        .unwrap();
    let dashboard = futures::executor::block_on(agg.aggregate(&Context::background(), 1)).unwrap();
    assert_eq!(dashboard.to_string(), "User: Alice | Orders: 5");

    let orders = mock::orders(5).delay(Duration::from_secs(10));
    let order_calls = orders.calls();
    let agg = UserAggregator::builder(
        mock::profile("Alice")
            .delay(Duration::from_millis(20))
            .fail("down"),
        orders,
    )
    .executor(HandsBack)
    .build()
    .unwrap();
    let start = Instant::now();
    let err = futures::executor::block_on(agg.aggregate(&Context::background(), 1)).unwrap_err();
    assert_eq!(err.service(), Some("profile"));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        order_calls.cancelled(),
        1,
        "the handed-back orders call was dropped"
    );
}

#[test]
fn an_executor_that_drops_tasks_is_reported_not_hung() {
    let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
        .executor(drop::<BoxFuture<'static, ()>>)
        .build()
        .unwrap();
    let err = futures::executor::block_on(agg.aggregate(&Context::background(), 1)).unwrap_err();
    assert!(
        matches!(&err, AggregateError::Dropped { service } if service == "profile"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "profile task was dropped by the executor before it finished"
    );
}

#[cfg(feature = "tokio")]
#[test]
fn a_shut_down_tokio_runtime_reports_dropped_tasks() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let handle = runtime.handle().clone();
    runtime.shutdown_background();
    let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
        .executor(executor::Tokio::new(handle))
        .build()
        .unwrap();
    let err = futures::executor::block_on(agg.aggregate(&Context::background(), 1)).unwrap_err();
    assert!(matches!(err, AggregateError::Dropped { .. }), "{err:?}");
}

#[cfg(feature = "tokio")]
#[test]
fn a_tokio_timer_whose_runtime_is_gone_is_an_error_not_a_panic() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let handle = runtime.handle().clone();
    runtime.shutdown_background();
    let agg = UserAggregator::builder(mock::profile("Alice").hang(), mock::orders(5).hang())
        .timer(timer::Tokio::new(handle))
        .build()
        .unwrap();
    let err = futures::executor::block_on(agg.aggregate(&Context::background(), 1)).unwrap_err();
    assert!(matches!(err, AggregateError::Timer { .. }), "{err:?}");
    assert!(err.to_string().starts_with("timer failed: "), "{err}");
}

#[cfg(feature = "tokio")]
#[test]
fn an_aggregate_can_be_spawned_on_tokio_with_a_shared_aggregator() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let agg = Arc::new(
        UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
            .executor(executor::Tokio::new(runtime.handle().clone()))
            .timer(timer::Tokio::new(runtime.handle().clone()))
            .build()
            .unwrap(),
    );
    let handles: Vec<_> = (0..8)
        .map(|id| {
            let agg = Arc::clone(&agg);
            runtime.spawn(async move { agg.aggregate(&Context::background(), id).await })
        })
        .collect();
    for handle in handles {
        assert_eq!(runtime.block_on(handle).unwrap().unwrap().orders, 5);
    }
}

/// Slow Poke in real time with the given timer on the inline executor: gives up after about
/// one second, never before.
fn slow_poke_with<T: Timer>(timer: T) {
    let agg = UserAggregator::builder(
        mock::profile("Alice"),
        mock::orders(5)
            .delay(Duration::from_secs(2))
            .timer(timer.clone()),
    )
    .timer(timer)
    .timeout(Duration::from_secs(1))
    .build()
    .unwrap();
    let start = Instant::now();
    let err = futures::executor::block_on(agg.aggregate(&Context::background(), 1)).unwrap_err();
    let elapsed = start.elapsed();
    assert!(err.is_deadline_exceeded(), "{err:?}");
    assert!(elapsed >= Duration::from_secs(1), "early: {elapsed:?}");
    assert!(elapsed < Duration::from_millis(1_900), "late: {elapsed:?}");
}

#[test]
fn futures_timer_enforces_the_deadline() {
    slow_poke_with(timer::FuturesTimer);
}

#[cfg(any(feature = "smol", feature = "async-std"))]
#[test]
fn async_io_timer_enforces_the_deadline() {
    slow_poke_with(timer::AsyncIo);
}

#[cfg(feature = "tokio")]
#[test]
fn tokio_timer_enforces_the_deadline_even_outside_the_runtime() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    slow_poke_with(timer::Tokio::new(runtime.handle().clone()));
}

#[test]
fn timers_never_panic_on_a_duration_too_large_for_an_instant() {
    use futures::FutureExt;
    assert!(
        timer::FuturesTimer
            .sleep(Duration::MAX)
            .now_or_never()
            .is_none()
    );
    assert!(
        timer::Manual::new()
            .sleep(Duration::MAX)
            .now_or_never()
            .is_none()
    );
    #[cfg(any(feature = "smol", feature = "async-std"))]
    assert!(timer::AsyncIo.sleep(Duration::MAX).now_or_never().is_none());
    #[cfg(feature = "tokio")]
    {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let tokio_timer = timer::Tokio::new(runtime.handle().clone());
        assert!(tokio_timer.sleep(Duration::MAX).now_or_never().is_none());
    }
}

/// Compile-time checks: these only build if the types are thread-safe.
#[allow(dead_code)]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    fn error<T: std::error::Error + Send + Sync + 'static>() {}

    type Agg<E, T> = UserAggregator<mock::Mock<failfast::Profile, T>, mock::Mock<u32, T>, E, T>;
    send_sync::<Agg<executor::Inline, timer::FuturesTimer>>();
    send_sync::<Agg<executor::Inline, timer::Manual>>();
    send_sync::<Context>();
    send_sync::<CancelHandle>();
    send_sync::<failfast::Cancelled>();
    send_sync::<Dashboard>();
    send_sync::<mock::Calls>();
    error::<AggregateError>();
    error::<failfast::BuildError>();

    let agg: Agg<executor::Inline, timer::FuturesTimer> =
        UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
            .build()
            .unwrap();
    let ctx = Context::background();
    send(&agg.aggregate(&ctx, 1));
    send(&ctx.cancelled());

    #[cfg(feature = "tokio")]
    {
        send_sync::<Agg<executor::Tokio, timer::Tokio>>();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
            .executor(executor::Tokio::new(rt.handle().clone()))
            .timer(timer::Tokio::new(rt.handle().clone()))
            .build()
            .unwrap();
        send(&agg.aggregate(&ctx, 1));
    }
    #[cfg(feature = "smol")]
    {
        send_sync::<Agg<executor::Smol, timer::AsyncIo>>();
        let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
            .executor(executor::Smol::new(Arc::new(smol::Executor::new())))
            .timer(timer::AsyncIo)
            .build()
            .unwrap();
        send(&agg.aggregate(&ctx, 1));
    }
    #[cfg(feature = "async-std")]
    {
        send_sync::<Agg<executor::AsyncStd, timer::AsyncIo>>();
        let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
            .executor(executor::AsyncStd)
            .timer(timer::AsyncIo)
            .build()
            .unwrap();
        send(&agg.aggregate(&ctx, 1));
    }
}

/// A handle that records the thread it is dropped on.
struct Recorded(Arc<Mutex<Vec<std::thread::ThreadId>>>);

impl Drop for Recorded {
    fn drop(&mut self) {
        let mut dropped = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        dropped.push(std::thread::current().id());
    }
}

/// An executor on a thread pool whose handles say where they were dropped.
struct Recording {
    pool: futures::executor::ThreadPool,
    dropped: Arc<Mutex<Vec<std::thread::ThreadId>>>,
}

impl failfast::Executor for Recording {
    type Handle = Recorded;

    fn spawn<F>(&self, task: F) -> Result<Recorded, F>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.pool.spawn_ok(task);
        Ok(Recorded(self.dropped.clone()))
    }
}

#[test]
fn the_runtimes_handles_are_dropped_on_the_groups_thread_once_calls_end() {
    let dropped = Arc::new(Mutex::new(Vec::new()));
    let ff = failfast::FailFast::builder()
        .executor(Recording {
            pool: futures::executor::ThreadPool::new().unwrap(),
            dropped: dropped.clone(),
        })
        .build()
        .unwrap();
    let group = ff.group(&Context::background());
    let answers = (0..8).map(|i| {
        group.call("shard", move |_ctx| async move {
            Ok::<_, failfast::BoxError>(i)
        })
    });
    let hangs = group.call("hangs", |_ctx| {
        std::future::pending::<Result<u32, failfast::BoxError>>()
    });
    let run = group.run(async {
        let count = || dropped.lock().unwrap().len();
        let answers = futures::future::try_join_all(answers).await?;
        // Every answer taken: their handles are gone, the hanging call's is not.
        assert_eq!(count(), 8);
        drop(hangs); // no longer wanted: cancelled, and its handle dropped too
        assert_eq!(count(), 9);
        Ok(answers)
    });
    assert_eq!(
        futures::executor::block_on(run).unwrap(),
        (0..8).collect::<Vec<_>>()
    );
    let here = std::thread::current().id();
    assert!(dropped.lock().unwrap().iter().all(|&thread| thread == here));
}
