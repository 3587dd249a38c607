//! What wins when several outcomes are due at the same instant, decided deterministically in
//! virtual time, and errors that a cancellation or the deadline caused.

mod common;

use std::pin::pin;
use std::time::Duration;

use common::{drive_until, finish, ms, on_every_executor};
use failfast::{
    AggregateError, BoxError, Context, OrderService, Timer, UserAggregator, UserId, mock,
    timer::Manual,
};

#[test]
fn answers_due_with_the_deadline_win_over_it() {
    // Inline: the calls are polled in the aggregate's task, so "same instant" is exact.
    let clock = Manual::new();
    let agg = UserAggregator::builder(
        mock::profile("Alice").delay(ms(1_000)).timer(clock.clone()),
        mock::orders(5).delay(ms(1_000)).timer(clock.clone()),
    )
    .timer(clock.clone())
    .timeout(ms(1_000))
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
        clock.advance(ms(1_000));
        let dashboard = finish(aggregate).await.unwrap();
        assert_eq!(dashboard.orders, 5);
    });
}

#[test]
fn answers_due_with_a_cancel_win_over_it() {
    let clock = Manual::new();
    let agg = UserAggregator::builder(
        mock::profile("Alice").delay(ms(100)).timer(clock.clone()),
        mock::orders(5).delay(ms(100)).timer(clock.clone()),
    )
    .timer(clock.clone())
    .build()
    .unwrap();
    let (ctx, cancel) = Context::background().with_cancel();

    futures::executor::block_on(async {
        let mut aggregate = pin!(agg.aggregate(&ctx, 1));
        assert!(
            drive_until(aggregate.as_mut(), || clock.sleepers() == 3)
                .await
                .is_none()
        );
        clock.advance(ms(100));
        cancel.cancel(); // due at the same poll as both answers
        let dashboard = finish(aggregate).await.unwrap();
        assert_eq!(dashboard.orders, 5);
    });
}

on_every_executor!(
    async fn an_error_due_with_the_deadline_is_reported_as_the_deadline(ex) {
        let clock = Manual::new();
        let agg = UserAggregator::builder(
            mock::profile("Alice").delay(ms(1_000)).fail("late failure").timer(clock.clone()),
            mock::orders(5).hang().timer(clock.clone()),
        )
        .executor(ex)
        .timer(clock.clone())
        .timeout(ms(1_000))
        .build()
        .unwrap();
        let ctx = Context::background();
        let mut aggregate = pin!(agg.aggregate(&ctx, 1));
        assert!(drive_until(aggregate.as_mut(), || clock.sleepers() == 2).await.is_none());
        clock.advance(ms(1_000));
        let err = finish(aggregate).await.unwrap_err();
        assert!(
            matches!(err, AggregateError::DeadlineExceeded { elapsed } if elapsed == ms(1_000)),
            "{err:?}"
        );
    }
);

on_every_executor!(
    async fn a_cancel_and_the_deadline_due_together_report_the_cancel(ex) {
        let clock = Manual::new();
        let orders = mock::orders(5).hang().timer(clock.clone());
        let order_calls = orders.calls();
        let agg = UserAggregator::builder(mock::profile("Alice").timer(clock.clone()), orders)
            .executor(ex)
            .timer(clock.clone())
            .timeout(ms(500))
            .build()
            .unwrap();
        let (ctx, cancel) = Context::background().with_cancel();
        let mut aggregate = pin!(agg.aggregate(&ctx, 1));
        assert!(
            drive_until(aggregate.as_mut(), || clock.sleepers() == 1 && order_calls.started() == 1)
                .await
                .is_none()
        );
        // Both happen before the aggregate is polled again.
        cancel.cancel();
        clock.advance(ms(500));
        let err = finish(aggregate).await.unwrap_err();
        assert!(err.is_cancelled(), "{err:?}");
    }
);

on_every_executor!(
    async fn an_error_due_with_a_cancel_reports_the_cancel(ex) {
        let clock = Manual::new();
        let orders = mock::orders(5).delay(ms(100)).fail("orders down").timer(clock.clone());
        let order_calls = orders.calls();
        let agg = UserAggregator::builder(mock::profile("Alice").hang().timer(clock.clone()), orders)
            .executor(ex)
            .timer(clock.clone())
            .build()
            .unwrap();
        let (ctx, cancel) = Context::background().with_cancel();
        let mut aggregate = pin!(agg.aggregate(&ctx, 1));
        assert!(
            drive_until(aggregate.as_mut(), || clock.sleepers() == 2 && order_calls.started() == 1)
                .await
                .is_none()
        );
        cancel.cancel();
        clock.advance(ms(100));
        let err = finish(aggregate).await.unwrap_err();
        assert!(err.is_cancelled(), "{err:?}");
    }
);

/// Honours its context as the docs ask: fails as soon as it is cancelled.
struct GivesUpWhenCancelled;

impl OrderService for GivesUpWhenCancelled {
    async fn order_count(&self, ctx: Context, _: UserId) -> Result<u32, BoxError> {
        ctx.cancelled().await;
        Err("request aborted: context cancelled".into())
    }
}

on_every_executor!(
    async fn a_service_that_fails_because_the_caller_cancelled_is_reported_as_cancelled(ex) {
        let agg = UserAggregator::builder(mock::profile("Alice").hang(), GivesUpWhenCancelled)
            .executor(ex)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        for _ in 0..20 {
            let (ctx, cancel) = Context::background().with_cancel();
            let mut aggregate = pin!(agg.aggregate(&ctx, 1));
            assert!(common::drive_for(aggregate.as_mut(), ms(5)).await.is_none());
            cancel.cancel();
            let err = finish(aggregate).await.unwrap_err();
            assert!(err.is_cancelled(), "{err:?}");
        }
    }
);

/// Passes its budget on: sleeps until its context's deadline, then fails as a downstream
/// client with that deadline would.
struct TimesOutDownstream(Manual);

impl OrderService for TimesOutDownstream {
    async fn order_count(&self, ctx: Context, _: UserId) -> Result<u32, BoxError> {
        let deadline = ctx.deadline().ok_or("no deadline")?;
        self.0.sleep_until(deadline).await;
        Err("downstream timed out".into())
    }
}

on_every_executor!(
    async fn a_service_that_fails_at_its_deadline_is_reported_as_the_deadline(ex) {
        let clock = Manual::new();
        let agg = UserAggregator::builder(
            mock::profile("Alice").hang().timer(clock.clone()),
            TimesOutDownstream(clock.clone()),
        )
        .executor(ex)
        .timer(clock.clone())
        .timeout(ms(300))
        .build()
        .unwrap();
        let ctx = Context::background();
        let mut aggregate = pin!(agg.aggregate(&ctx, 1));
        assert!(drive_until(aggregate.as_mut(), || clock.sleepers() == 2).await.is_none());
        clock.advance(ms(300));
        let err = finish(aggregate).await.unwrap_err();
        assert!(err.is_deadline_exceeded(), "{err:?}");
    }
);

#[test]
fn a_panic_due_with_the_deadline_is_still_reported_as_a_panic() {
    let clock = Manual::new();
    let agg = UserAggregator::builder(
        mock::profile("Alice")
            .delay(ms(200))
            .panic("boom")
            .timer(clock.clone()),
        mock::orders(5).hang().timer(clock.clone()),
    )
    .timer(clock.clone())
    .timeout(ms(200))
    .build()
    .unwrap();

    futures::executor::block_on(async {
        let ctx = Context::background();
        let mut aggregate = pin!(agg.aggregate(&ctx, 1));
        assert!(
            drive_until(aggregate.as_mut(), || clock.sleepers() == 2)
                .await
                .is_none()
        );
        clock.advance(ms(200));
        let err = finish(aggregate).await.unwrap_err();
        assert!(
            matches!(
                &err,
                AggregateError::Panicked { service, .. } if service == "profile"
            ),
            "{err:?}"
        );
    });
}

#[test]
fn an_error_and_a_panic_due_with_a_cancel_report_the_cancel_caused_first() {
    // Inline, at one instant: profile's error (made first), orders' panic, the caller's
    // cancel. The profile error is the first failure, caused by the cancel: `Cancelled`, not
    // the panic that came second. (Found by the model soak, seed 7776649818540.)
    let clock = Manual::new();
    let agg = UserAggregator::builder(
        mock::profile("Alice")
            .delay(ms(200))
            .fail("profile down")
            .timer(clock.clone()),
        mock::orders(5)
            .delay(ms(200))
            .panic("orders exploded")
            .timer(clock.clone()),
    )
    .timer(clock.clone())
    .timeout(ms(400))
    .build()
    .unwrap();
    let (ctx, cancel) = Context::background().with_cancel();

    futures::executor::block_on(async {
        let mut aggregate = pin!(agg.aggregate(&ctx, 1));
        assert!(
            drive_until(aggregate.as_mut(), || clock.sleepers() == 3)
                .await
                .is_none()
        );
        cancel.cancel();
        clock.advance(ms(200));
        let err = finish(aggregate).await.unwrap_err();
        assert!(err.is_cancelled(), "{err:?}");
    });
}
