//! The caller cancelling its context, or walking away from the future, cancels every call.

mod common;

use std::pin::pin;

use futures::FutureExt;
use std::time::{Duration, Instant};

use common::{drive_until, eventually, finish, on_every_executor};
use failfast::{AggregateError, Context, UserAggregator, mock};

on_every_executor!(
    async fn cancelling_the_callers_context_from_another_thread_cancels_both_calls(ex) {
        let profiles = mock::profile("Alice").hang();
        let orders = mock::orders(5).hang();
        let (profile_calls, order_calls) = (profiles.calls(), orders.calls());
        let agg = UserAggregator::builder(profiles, orders)
            .executor(ex)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let (ctx, cancel) = Context::background().with_cancel();
        let mut aggregate = pin!(agg.aggregate(&ctx, 1));
        let both_started = || profile_calls.started() == 1 && order_calls.started() == 1;
        assert!(drive_until(aggregate.as_mut(), both_started).await.is_none());

        let start = Instant::now();
        std::thread::spawn(move || cancel.cancel()).join().unwrap();
        let err = finish(aggregate).await.unwrap_err();

        assert!(matches!(err, AggregateError::Cancelled { .. }), "{err:?}");
        assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
        eventually("both calls were cancelled", || {
            profile_calls.cancelled() == 1 && order_calls.cancelled() == 1
        })
        .await;
        // The services' own context was cancelled too.
        assert!(order_calls.last_context().unwrap().is_cancelled());
    }
);

on_every_executor!(
    async fn dropping_the_aggregate_future_cancels_every_call(ex) {
        let profiles = mock::profile("Alice").hang();
        let orders = mock::orders(5).hang();
        let (profile_calls, order_calls) = (profiles.calls(), orders.calls());
        let agg = UserAggregator::builder(profiles, orders)
            .executor(ex)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let ctx = Context::background();
        {
            let mut aggregate = pin!(agg.aggregate(&ctx, 1));
            let both_started = || profile_calls.started() == 1 && order_calls.started() == 1;
            assert!(drive_until(aggregate.as_mut(), both_started).await.is_none());
        } // the caller walks away

        eventually("both calls were cancelled", || {
            profile_calls.cancelled() == 1 && order_calls.cancelled() == 1
        })
        .await;
        assert_eq!(profile_calls.in_flight() + order_calls.in_flight(), 0);
        assert!(profile_calls.last_context().unwrap().is_cancelled());
    }
);

on_every_executor!(
    async fn the_services_context_is_cancelled_when_a_sibling_fails(ex) {
        let orders = mock::orders(5).hang();
        let order_calls = orders.calls();
        let agg = UserAggregator::builder(
            mock::profile("Alice").delay(Duration::from_millis(20)).fail("down"),
            orders,
        )
        .executor(ex)
        .build()
        .unwrap();

        let err = agg.aggregate(&Context::background(), 1).await.unwrap_err();

        assert_eq!(err.service(), Some("profile"));
        let given = order_calls.last_context().expect("orders was called");
        assert!(given.is_cancelled());
        given.cancelled().await; // completes: Go's <-ctx.Done()
    }
);

on_every_executor!(
    async fn a_cancel_from_another_thread_wakes_an_aggregate_that_is_awaited(ex) {
        // Awaited with the runtime's real waker (no polling loop): only the cancellation's
        // wake-up can end this before the 5 s timeout.
        let agg = UserAggregator::builder(mock::profile("Alice").hang(), mock::orders(5).hang())
            .executor(ex)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let (ctx, cancel) = Context::background().with_cancel();
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            cancel.cancel();
        });
        let start = Instant::now();
        let err = agg.aggregate(&ctx, 1).await.unwrap_err();
        let elapsed = start.elapsed();
        canceller.join().unwrap();
        assert!(err.is_cancelled(), "{err:?}");
        // Cancelled after 50 ms; without the wake-up it would only be noticed at the 10 s
        // deadline.
        assert!(elapsed < Duration::from_secs(5), "woken late: {elapsed:?}");
    }
);

#[test]
fn context_cancelled_wakes_a_waiting_task() {
    let (ctx, cancel) = Context::background().with_cancel();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        cancel.cancel();
    });
    // Bounded, so that a lost wake-up fails the test instead of hanging it.
    let woken = futures::executor::block_on(async {
        // Biased: if only the timeout wakes us, it is reported as such.
        futures::select_biased! {
            () = futures_timer::Delay::new(common::HANG).fuse() => false,
            () = ctx.cancelled() => true,
        }
    });
    canceller.join().unwrap();
    assert!(
        woken,
        "cancel() did not wake the task waiting on cancelled()"
    );
}

#[test]
fn an_already_cancelled_context_fails_at_once_and_starts_nothing() {
    let profiles = mock::profile("Alice");
    let profile_calls = profiles.calls();
    let agg = UserAggregator::builder(profiles, mock::orders(5))
        .build()
        .unwrap();
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();

    let err = futures::executor::block_on(agg.aggregate(&ctx, 1)).unwrap_err();

    assert!(err.is_cancelled(), "{err:?}");
    assert_eq!(profile_calls.started(), 0);
}

#[test]
fn cancelling_a_parent_context_cancels_an_aggregate_under_a_child() {
    let agg = UserAggregator::builder(mock::profile("Alice").hang(), mock::orders(5).hang())
        .build()
        .unwrap();
    let (parent, cancel) = Context::background().with_cancel();
    let (child, _cancel_child) = parent.with_cancel();
    let child = child.with_timeout(Duration::from_secs(30));

    let err = futures::executor::block_on(async {
        let mut aggregate = pin!(agg.aggregate(&child, 1));
        assert!(
            common::drive_for(aggregate.as_mut(), Duration::from_millis(20))
                .await
                .is_none()
        );
        cancel.cancel();
        finish(aggregate).await
    })
    .unwrap_err();

    assert!(err.is_cancelled());
}

#[test]
fn a_successful_aggregate_cancels_the_context_it_gave_the_services() {
    // Go's `defer cancel()`: nothing derived from the aggregate's context outlives it.
    let orders = mock::orders(5);
    let order_calls = orders.calls();
    let agg = UserAggregator::builder(mock::profile("Alice"), orders)
        .build()
        .unwrap();
    let (ctx, _cancel) = Context::background().with_cancel();

    futures::executor::block_on(agg.aggregate(&ctx, 1)).unwrap();

    assert!(order_calls.last_context().unwrap().is_cancelled());
    assert!(!ctx.is_cancelled(), "the caller's own context is untouched");
}

/// Counts the times it is woken.
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_call_cancelled_after_run_returned_does_not_wake_the_caller_when_its_task_ends_later() {
    cancelled_call_ends_after_run_returned(None);
}

#[test]
fn under_a_limit_too_a_call_ending_after_run_returned_does_not_wake_the_caller() {
    // Under a limit, a call that ends frees its slot and wakes the group's driver.
    cancelled_call_ends_after_run_returned(Some(2));
}

/// A group of a call that hangs and one that fails, on an executor the test polls by hand:
/// the cancelled call's task ends only after `run` has returned and been dropped, and must
/// not wake the caller's waker then.
fn cancelled_call_ends_after_run_returned(limit: Option<usize>) {
    use std::sync::{Arc, Mutex, atomic::Ordering};
    use std::task::{Context as TaskContext, Poll, Waker};

    use failfast::{BoxError, FailFast};
    use futures::future::BoxFuture;

    // An executor whose tasks the test polls by hand, in the order it chooses.
    let tasks: Arc<Mutex<Vec<BoxFuture<'static, ()>>>> = Arc::default();
    let queue = tasks.clone();
    let builder = FailFast::builder()
        .executor(move |task| queue.lock().unwrap().push(task))
        .timeout(Duration::from_secs(30));
    let ff = match limit {
        Some(n) => builder.limit(n),
        None => builder,
    }
    .build()
    .unwrap();
    let group = ff.group(&Context::background());
    let hangs = group.call("hangs", |_ctx| {
        std::future::pending::<Result<(), BoxError>>()
    });
    let fails = group.call("fails", |_ctx| async {
        Err::<(), _>(BoxError::from("down"))
    });
    let mut run = Box::pin(group.run(futures::future::try_join(hangs, fails)));

    let caller = Arc::new(CountingWaker(Default::default()));
    let waker = Waker::from(caller.clone());
    let mut cx = TaskContext::from_waker(&waker);
    assert!(run.as_mut().poll(&mut cx).is_pending());
    let [hanging, failing]: [BoxFuture<'static, ()>; 2] =
        std::mem::take(&mut *tasks.lock().unwrap())
            .try_into()
            .ok()
            .unwrap();
    let mut failing = failing;
    let mut noop = TaskContext::from_waker(Waker::noop());
    assert!(failing.as_mut().poll(&mut noop).is_ready());
    let Poll::Ready(Err(err)) = run.as_mut().poll(&mut cx) else {
        panic!("the failure did not end run");
    };
    assert_eq!(err.service(), Some("fails"));
    drop(run); // the caller moves on; its waker may be reused for anything else
    let woken = caller.0.load(Ordering::SeqCst);

    // The cancelled call's task ends later, on the executor's schedule.
    let mut hanging = hanging;
    assert!(hanging.as_mut().poll(&mut noop).is_ready());
    drop(hanging);
    assert_eq!(
        caller.0.load(Ordering::SeqCst),
        woken,
        "a call whose handle was dropped woke the caller when its task ended"
    );
}
