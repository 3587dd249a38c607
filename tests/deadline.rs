//! The effective deadline (the earlier of the caller's and the aggregator's) ends the aggregate
//! on time, never early, and reaches the services.

mod common;

use std::pin::pin;
use std::time::{Duration, Instant};

use common::{drive_for, drive_until, eventually, finish, ms, on_every_executor};
use failfast::{AggregateError, BuildError, Context, UserAggregator, mock, timer::Manual};

on_every_executor!(
    async fn slow_poke_exceeds_the_deadline_at_exactly_one_second(ex) {
        let clock = Manual::new();
        let profiles = mock::profile("Alice").timer(clock.clone());
        let profile_calls = profiles.calls();
        let orders = mock::orders(5).delay(Duration::from_secs(2)).timer(clock.clone());
        let order_calls = orders.calls();
        let agg = UserAggregator::builder(profiles, orders)
            .executor(ex)
            .timer(clock.clone())
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let ctx = Context::background();
        let mut aggregate = pin!(agg.aggregate(&ctx, 1));

        // The deadline and the slow orders call are asleep; profile has answered.
        assert!(drive_until(aggregate.as_mut(), || clock.sleepers() == 2).await.is_none());
        clock.advance(ms(999));
        let early = drive_for(aggregate.as_mut(), ms(50)).await;
        assert!(early.is_none(), "gave up before the deadline: {early:?}");
        clock.advance(ms(1));

        let err = finish(aggregate).await.unwrap_err();
        assert!(
            matches!(err, AggregateError::DeadlineExceeded { elapsed } if elapsed == Duration::from_secs(1)),
            "{err:?}"
        );
        assert!(err.to_string().contains("deadline exceeded"), "{err}");
        assert_eq!(profile_calls.finished(), 1);
        eventually("the slow orders call was cancelled", || order_calls.cancelled() == 1).await;
        assert_eq!(order_calls.finished(), 0);
    }
);

on_every_executor!(
    async fn slow_poke_in_real_time_gives_up_after_about_one_second_not_two(ex) {
        let orders = mock::orders(5).delay(Duration::from_secs(2));
        let order_calls = orders.calls();
        let agg = UserAggregator::builder(mock::profile("Alice"), orders)
            .executor(ex)
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();

        let start = Instant::now();
        let err = agg.aggregate(&Context::background(), 1).await.unwrap_err();
        let elapsed = start.elapsed();

        assert!(err.is_deadline_exceeded(), "{err:?}");
        assert!(elapsed >= Duration::from_secs(1), "gave up early: {elapsed:?}");
        assert!(elapsed < ms(1_900), "waited for the slow call: {elapsed:?}");
        eventually("the slow orders call was cancelled", || order_calls.cancelled() == 1).await;
    }
);

on_every_executor!(
    async fn the_callers_earlier_deadline_wins_and_reaches_the_services(ex) {
        let clock = Manual::new();
        let profiles = mock::profile("Alice").hang().timer(clock.clone());
        let profile_calls = profiles.calls();
        let orders = mock::orders(5).hang().timer(clock.clone());
        let agg = UserAggregator::builder(profiles, orders)
            .executor(ex)
            .timer(clock.clone())
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let deadline = clock.now() + ms(300);
        let ctx = Context::background().with_deadline(deadline);
        let mut aggregate = pin!(agg.aggregate(&ctx, 1));

        assert!(
            drive_until(aggregate.as_mut(), || clock.sleepers() == 1 && profile_calls.started() == 1)
                .await
                .is_none()
        );
        let given = profile_calls.last_context().unwrap();
        assert_eq!(given.deadline(), Some(deadline));
        assert!(!given.is_cancelled());
        clock.advance(ms(300));

        let err = finish(aggregate).await.unwrap_err();
        assert!(
            matches!(err, AggregateError::DeadlineExceeded { elapsed } if elapsed == ms(300)),
            "{err:?}"
        );
        // The aggregate cancelled the context it gave the services when it gave up.
        assert!(given.is_cancelled());
    }
);

on_every_executor!(
    async fn the_aggregators_earlier_timeout_wins_over_a_later_caller_deadline(ex) {
        let clock = Manual::new();
        let orders = mock::orders(5).hang().timer(clock.clone());
        let order_calls = orders.calls();
        let agg = UserAggregator::builder(mock::profile("Alice").timer(clock.clone()), orders)
            .executor(ex)
            .timer(clock.clone())
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let ctx = Context::background().with_deadline(clock.now() + Duration::from_secs(5));
        let mut aggregate = pin!(agg.aggregate(&ctx, 1));

        assert!(
            drive_until(aggregate.as_mut(), || clock.sleepers() == 1 && order_calls.started() == 1)
                .await
                .is_none()
        );
        assert_eq!(clock.next_deadline(), Some(clock.now() + Duration::from_secs(1)));
        assert_eq!(
            order_calls.last_context().unwrap().deadline(),
            Some(clock.now() + Duration::from_secs(1))
        );
        clock.advance(Duration::from_secs(1));
        let err = finish(aggregate).await.unwrap_err();
        assert!(matches!(err, AggregateError::DeadlineExceeded { elapsed } if elapsed == Duration::from_secs(1)));
    }
);

#[test]
fn a_deadline_already_passed_fails_at_once_and_starts_nothing() {
    let profiles = mock::profile("Alice");
    let orders = mock::orders(5);
    let (profile_calls, order_calls) = (profiles.calls(), orders.calls());
    let agg = UserAggregator::builder(profiles, orders).build().unwrap();
    let ctx = Context::background().with_deadline(Instant::now() - ms(1));

    let err = futures::executor::block_on(agg.aggregate(&ctx, 1)).unwrap_err();

    assert!(
        matches!(err, AggregateError::DeadlineExceeded { elapsed } if elapsed == Duration::ZERO)
    );
    assert_eq!(profile_calls.started() + order_calls.started(), 0);
}

#[test]
fn a_zero_timeout_is_a_build_error() {
    let err = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::ZeroTimeout);
}

#[test]
fn a_timeout_too_large_for_an_instant_leaves_only_the_callers_deadline() {
    let clock = Manual::new();
    let agg = UserAggregator::builder(
        mock::profile("Alice").timer(clock.clone()),
        mock::orders(5).hang().timer(clock.clone()),
    )
    .timer(clock.clone())
    .timeout(Duration::MAX)
    .build()
    .unwrap();

    futures::executor::block_on(async {
        // No caller deadline either: it simply waits (here, for the hanging call).
        let background = Context::background();
        let mut unbounded = pin!(agg.aggregate(&background, 1));
        assert!(drive_for(unbounded.as_mut(), ms(20)).await.is_none());
        assert_eq!(
            clock.sleepers(),
            0,
            "no deadline sleep for an unrepresentable timeout"
        );

        let ctx = Context::background().with_deadline(clock.now() + ms(250));
        let mut bounded = pin!(agg.aggregate(&ctx, 1));
        assert!(
            drive_until(bounded.as_mut(), || clock.sleepers() == 1)
                .await
                .is_none()
        );
        clock.advance(ms(250));
        let err = finish(bounded).await.unwrap_err();
        assert!(err.is_deadline_exceeded());
    });
}

#[test]
fn context_with_timeout_of_duration_max_does_not_panic() {
    let ctx = Context::background().with_timeout(Duration::MAX);
    assert_eq!(ctx.deadline(), None);
    let ctx = ctx
        .with_timeout(Duration::from_secs(1))
        .with_timeout(Duration::MAX);
    assert!(ctx.deadline().is_some());
}

#[test]
fn the_deadlines_sleep_is_released_when_run_returns_not_when_its_future_is_dropped() {
    use failfast::{BoxError, FailFast};
    use std::task::{Context as TaskContext, Poll, Waker};

    let clock = Manual::new();
    let ff = FailFast::builder()
        .timer(clock.clone())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let group = ff.group(&Context::background());
    let (answer, answered) = futures::channel::oneshot::channel::<u32>();
    let call = group.call("slow", move |_ctx| async move {
        answered.await.map_err(BoxError::from)
    });
    let mut run = Box::pin(group.run(call));
    let mut cx = TaskContext::from_waker(Waker::noop());
    assert!(run.as_mut().poll(&mut cx).is_pending());
    assert_eq!(clock.sleepers(), 1, "the group waits on its deadline");

    answer.send(7).unwrap();
    assert!(matches!(run.as_mut().poll(&mut cx), Poll::Ready(Ok(7))));
    // Some timers wake a thread of theirs to forget a sleep: that happens before `run` returns,
    // not later, whenever the caller gets round to dropping the finished future.
    assert_eq!(
        clock.sleepers(),
        0,
        "the finished run still holds its sleep"
    );
    drop(run);
}
