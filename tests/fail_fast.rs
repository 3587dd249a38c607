//! Both calls run at once, and the first error ends the aggregate at once, cancelling the other.

mod common;

use std::error::Error as _;
use std::pin::pin;
use std::time::{Duration, Instant};

use common::{drive_until, eventually, finish, ms, on_every_executor};
use failfast::{AggregateError, Context, UserAggregator, mock, timer::Manual};

on_every_executor!(
    async fn both_calls_are_in_flight_at_once(ex) {
        let clock = Manual::new();
        let profiles = mock::profile("Alice").delay(ms(300)).timer(clock.clone());
        let orders = mock::orders(5).delay(ms(300)).timer(clock.clone());
        let agg = UserAggregator::builder(profiles, orders)
            .executor(ex)
            .timer(clock.clone())
            .build()
            .unwrap();
        let ctx = Context::background();
        let mut aggregate = pin!(agg.aggregate(&ctx, 1));

        // Both services and the deadline are asleep at the same time: neither waits for the other.
        let early = drive_until(aggregate.as_mut(), || clock.sleepers() == 3).await;
        assert!(early.is_none(), "finished before any time passed: {early:?}");
        clock.advance(ms(300));

        let dashboard = finish(aggregate).await.unwrap();
        assert_eq!(dashboard.to_string(), "User: Alice | Orders: 5");
        assert_eq!(clock.elapsed(), ms(300)); // not 600 ms
    }
);

on_every_executor!(
    async fn two_500ms_services_answer_in_about_500ms_of_real_time(ex) {
        let profiles = mock::profile("Alice").delay(ms(500));
        let orders = mock::orders(5).delay(ms(500));
        let agg = UserAggregator::builder(profiles, orders)
            .executor(ex)
            .build()
            .unwrap();

        let start = Instant::now();
        let dashboard = agg.aggregate(&Context::background(), 1).await.unwrap();
        let elapsed = start.elapsed();

        assert_eq!(dashboard.to_string(), "User: Alice | Orders: 5");
        assert!(elapsed >= ms(500), "answered before the services did: {elapsed:?}");
        // Sequential calls would take 1 s; the margin is for a noisy machine.
        assert!(elapsed < ms(900), "took {elapsed:?}: the calls did not overlap");
    }
);

on_every_executor!(
    async fn domino_effect_returns_the_profile_error_at_once_in_virtual_time(ex) {
        let clock = Manual::new();
        let profiles = mock::profile("Alice").fail("profile db down").timer(clock.clone());
        let orders = mock::orders(5).delay(Duration::from_secs(10)).timer(clock.clone());
        let order_calls = orders.calls();
        let agg = UserAggregator::builder(profiles, orders)
            .executor(ex)
            .timer(clock.clone())
            .build()
            .unwrap();

        let err = finish(agg.aggregate(&Context::background(), 1)).await.unwrap_err();

        assert!(
            matches!(&err, AggregateError::Service { service, .. } if service == "profile"),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "profile service failed");
        assert_eq!(err.source().unwrap().to_string(), "profile db down");
        assert_eq!(clock.elapsed(), Duration::ZERO);
        eventually("the orders call is no longer alive", || order_calls.in_flight() == 0).await;
        assert_eq!(order_calls.finished(), 0, "the orders call ran to completion");
    }
);

on_every_executor!(
    async fn domino_effect_drops_an_orders_call_that_had_started(ex) {
        let clock = Manual::new();
        let profiles = mock::profile("Alice")
            .delay(ms(100))
            .fail("profile db down")
            .timer(clock.clone());
        let orders = mock::orders(5).delay(Duration::from_secs(10)).timer(clock.clone());
        let order_calls = orders.calls();
        let agg = UserAggregator::builder(profiles, orders)
            .executor(ex)
            .timer(clock.clone())
            .build()
            .unwrap();
        let ctx = Context::background();
        let mut aggregate = pin!(agg.aggregate(&ctx, 1));

        // Profile, orders and the deadline asleep: the orders call is running.
        assert!(drive_until(aggregate.as_mut(), || clock.sleepers() == 3).await.is_none());
        assert_eq!(order_calls.started(), 1);
        clock.advance(ms(100));

        let err = finish(aggregate).await.unwrap_err();
        assert_eq!(err.service(), Some("profile"));
        assert_eq!(clock.elapsed(), ms(100));
        // The orders future was dropped, not left sleeping until its 10 s were up.
        eventually("the orders call was cancelled", || order_calls.cancelled() == 1).await;
        assert_eq!(order_calls.finished(), 0);
    }
);

on_every_executor!(
    async fn domino_effect_in_real_time_answers_well_before_the_slow_call(ex) {
        let profiles = mock::profile("Alice").fail("profile db down");
        let orders = mock::orders(5).delay(Duration::from_secs(10));
        let order_calls = orders.calls();
        let agg = UserAggregator::builder(profiles, orders)
            .executor(ex)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();

        let start = Instant::now();
        let err = agg.aggregate(&Context::background(), 1).await.unwrap_err();
        let elapsed = start.elapsed();

        assert_eq!(err.service(), Some("profile"));
        // Typically well under a millisecond; the bound only has to prove we did not wait 10 s.
        assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
        eventually("the orders call is no longer alive", || order_calls.in_flight() == 0).await;
        assert_eq!(order_calls.finished(), 0);
    }
);

on_every_executor!(
    async fn an_orders_failure_cancels_the_profile_call(ex) {
        let clock = Manual::new();
        let profiles = mock::profile("Alice").hang().timer(clock.clone());
        let profile_calls = profiles.calls();
        let orders = mock::orders(5).delay(ms(50)).fail("order db down").timer(clock.clone());
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
        clock.advance(ms(50));

        let err = finish(aggregate).await.unwrap_err();
        assert!(matches!(&err, AggregateError::Service { service, .. } if service == "orders"), "{err:?}");
        assert_eq!(err.source().unwrap().to_string(), "order db down");
        eventually("the profile call was cancelled", || profile_calls.cancelled() == 1).await;
    }
);

#[test]
fn when_both_calls_fail_at_the_same_instant_the_profile_error_wins() {
    let clock = Manual::new();
    let profiles = mock::profile("Alice")
        .delay(ms(10))
        .fail("profile down")
        .timer(clock.clone());
    let orders = mock::orders(5)
        .delay(ms(10))
        .fail("orders down")
        .timer(clock.clone());
    let agg = UserAggregator::builder(profiles, orders)
        .timer(clock.clone())
        .build()
        .unwrap();

    futures::executor::block_on(async {
        let ctx = Context::background();
        let mut aggregate = pin!(agg.aggregate(&ctx, 1));
        assert!(
            drive_until(aggregate.as_mut(), || clock.sleepers() == 3)
                .await
                .is_none()
        );
        clock.advance(ms(10)); // both due at once; inline, both complete in the same poll
        let err = finish(aggregate).await.unwrap_err();
        assert_eq!(err.service(), Some("profile"));
    });
}
