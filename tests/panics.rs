//! A panicking service becomes an error naming it; the other call is cancelled; nothing hangs
//! and the process survives, on every executor.

// One body runs on Copy (Inline, AsyncStd) and non-Copy (Smol, Tokio) executors alike.
#![allow(clippy::clone_on_copy)]

mod common;

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use common::{drive_until, eventually, finish, on_every_executor};
use failfast::{
    AggregateError, BoxError, Context, OrderService, UserAggregator, UserId, mock, timer::Manual,
};

on_every_executor!(
    async fn a_panicking_profile_service_becomes_an_error_and_cancels_orders(ex) {
        let orders = mock::orders(5).hang();
        let order_calls = orders.calls();
        let agg = UserAggregator::builder(mock::profile("Alice").panic("profile exploded"), orders)
            .executor(ex)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();

        let err = finish(agg.aggregate(&Context::background(), 1)).await.unwrap_err();

        match &err {
            AggregateError::Panicked { service, message } => {
                assert_eq!(*service, "profile");
                assert_eq!(message, "profile exploded");
            }
            other => panic!("expected Panicked, got {other:?}"),
        }
        assert_eq!(err.to_string(), "profile service panicked: profile exploded");
        eventually("orders was cancelled", || order_calls.in_flight() == 0).await;
        assert_eq!(order_calls.finished(), 0);
    }
);

on_every_executor!(
    async fn a_panic_after_an_await_is_caught_and_cancels_the_sibling(ex) {
        let clock = Manual::new();
        let profiles = mock::profile("Alice").hang().timer(clock.clone());
        let profile_calls = profiles.calls();
        let orders = mock::orders(5)
            .delay(Duration::from_millis(40))
            .panic("orders exploded")
            .timer(clock.clone());
        let agg = UserAggregator::builder(profiles, orders)
            .executor(ex)
            .timer(clock.clone())
            .build()
            .unwrap();
        let ctx = Context::background();
        let mut aggregate = pin!(agg.aggregate(&ctx, 1));
        assert!(
            drive_until(aggregate.as_mut(), || clock.sleepers() == 2 && profile_calls.started() == 1)
                .await
                .is_none()
        );
        clock.advance(Duration::from_millis(40));

        let err = finish(aggregate).await.unwrap_err();
        assert!(matches!(&err, AggregateError::Panicked { service, .. } if service == "orders"), "{err:?}");
        eventually("profile was cancelled", || profile_calls.cancelled() == 1).await;
    }
);

/// Panics with a payload that is not a string.
struct PanicsWithANumber;

impl OrderService for PanicsWithANumber {
    async fn order_count(&self, _: Context, _: UserId) -> Result<u32, BoxError> {
        std::panic::panic_any(42_i32)
    }
}

on_every_executor!(
    async fn a_non_string_panic_payload_is_reported_too(ex) {
        let agg = UserAggregator::builder(mock::profile("Alice").hang(), PanicsWithANumber)
            .executor(ex)
            .build()
            .unwrap();

        let err = finish(agg.aggregate(&Context::background(), 1)).await.unwrap_err();

        assert!(
            matches!(&err, AggregateError::Panicked { service, message } if service == "orders" && message == "non-string panic payload"),
            "{err:?}"
        );
    }
);

/// Never answers, and panics when its future is dropped.
struct PanicsWhenDropped;

struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("orders panicked while being dropped");
    }
}

impl OrderService for PanicsWhenDropped {
    fn order_count(
        &self,
        _: Context,
        _: UserId,
    ) -> impl Future<Output = Result<u32, BoxError>> + Send {
        let bomb = Bomb;
        async move {
            let _bomb = bomb;
            std::future::pending::<()>().await;
            Ok(5)
        }
    }
}

on_every_executor!(
    async fn a_sibling_that_panics_while_being_cancelled_does_not_take_anything_down(ex) {
        let agg = UserAggregator::builder(
            mock::profile("Alice").delay(Duration::from_millis(20)).fail("profile down"),
            PanicsWhenDropped,
        )
        .executor(ex.clone())
        .build()
        .unwrap();

        let err = finish(agg.aggregate(&Context::background(), 1)).await.unwrap_err();
        assert_eq!(err.service(), Some("profile"));

        // The same executor still works afterwards.
        let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
            .executor(ex)
            .build()
            .unwrap();
        assert_eq!(agg.aggregate(&Context::background(), 1).await.unwrap().orders, 5);
    }
);

#[test]
fn dropping_an_inline_aggregate_whose_call_panics_on_drop_does_not_unwind_into_the_caller() {
    let agg = UserAggregator::builder(mock::profile("Alice").hang(), PanicsWhenDropped)
        .build()
        .unwrap();
    futures::executor::block_on(async {
        let ctx = Context::background();
        let mut aggregate = pin!(agg.aggregate(&ctx, 1));
        assert!(
            common::drive_for(aggregate.as_mut(), Duration::from_millis(10))
                .await
                .is_none()
        );
    }); // dropped here, inside the caller: the Bomb goes off and is contained
}

/// A panic payload whose own destructor panics.
struct PayloadBomb;

impl Drop for PayloadBomb {
    fn drop(&mut self) {
        panic!("the panic payload panicked while being dropped");
    }
}

struct PanicsWithABomb;

impl OrderService for PanicsWithABomb {
    async fn order_count(&self, _: Context, _: UserId) -> Result<u32, BoxError> {
        std::panic::panic_any(PayloadBomb)
    }
}

/// Runs tasks on a thread pool and records whether any panic escaped a task into it.
fn watching_pool() -> (
    impl Fn(futures::future::BoxFuture<'static, ()>) + Send + Sync + 'static,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use futures::FutureExt;
    use std::panic::AssertUnwindSafe;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let escaped = std::sync::Arc::new(AtomicUsize::new(0));
    let pool = futures::executor::ThreadPool::builder()
        .pool_size(2)
        .create()
        .unwrap();
    let counter = escaped.clone();
    let spawn = move |task: futures::future::BoxFuture<'static, ()>| {
        let counter = counter.clone();
        pool.spawn_ok(async move {
            if AssertUnwindSafe(task).catch_unwind().await.is_err() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
    };
    (spawn, escaped)
}

#[test]
fn no_panic_ever_escapes_into_the_executor() {
    use std::sync::atomic::Ordering;

    // A sibling that panics while being cancelled.
    let (spawn, escaped) = watching_pool();
    let agg = UserAggregator::builder(
        mock::profile("Alice")
            .delay(Duration::from_millis(20))
            .fail("profile down"),
        PanicsWhenDropped,
    )
    .executor(spawn)
    .build()
    .unwrap();
    let err = futures::executor::block_on(agg.aggregate(&Context::background(), 1)).unwrap_err();
    assert_eq!(err.service(), Some("profile"));

    // A panic whose payload panics when dropped.
    let (spawn, escaped_too) = watching_pool();
    let agg = UserAggregator::builder(mock::profile("Alice").hang(), PanicsWithABomb)
        .executor(spawn)
        .build()
        .unwrap();
    let err = futures::executor::block_on(agg.aggregate(&Context::background(), 1)).unwrap_err();
    assert!(
        matches!(
            &err,
            AggregateError::Panicked { service, .. } if service == "orders"
        ),
        "{err:?}"
    );

    // Let the pools finish dropping the aborted tasks.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        escaped.load(Ordering::SeqCst),
        0,
        "a panic escaped into the executor"
    );
    assert_eq!(
        escaped_too.load(Ordering::SeqCst),
        0,
        "a panic escaped into the executor"
    );
}

#[test]
fn a_panic_payload_that_panics_when_dropped_does_not_unwind_into_an_inline_caller() {
    let agg = UserAggregator::builder(mock::profile("Alice").hang(), PanicsWithABomb)
        .build()
        .unwrap();
    let err = futures::executor::block_on(agg.aggregate(&Context::background(), 1)).unwrap_err();
    assert!(
        matches!(
            &err,
            AggregateError::Panicked { service, .. } if service == "orders"
        ),
        "{err:?}"
    );
}
