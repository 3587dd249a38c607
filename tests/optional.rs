//! Optional calls and a call's own timeout: an optional call's own failure yields `None` and
//! fails nothing; a required call's own timeout fails the group at once, naming it; the
//! group's deadline and the caller's cancellation still end everything.

#![allow(clippy::clone_on_copy)]

mod common;

use std::pin::pin;
use std::time::Duration;

use common::{Capture, drive_until, eventually, finish, ms, on_every_executor, order};
use failfast::mock::Mock;
use failfast::timer::Manual;
use failfast::{BoxError, Context, Error, FailFast, Timer};
use futures::future::{try_join, try_join3};

on_every_executor!(
    async fn an_optional_call_that_fails_yields_none_and_the_group_succeeds(ex) {
        let capture = Capture::new();
        let ff = FailFast::builder().executor(ex).logger(capture.clone()).build().unwrap();
        let group = ff.group(&Context::background());
        let broken = Mock::new(1_u32).fail("recs down");
        let crashing = Mock::new(2_u32).panic("recs exploded");

        let (profile, recs, more) = finish(group.run(try_join3(
            group.call("profile", |_ctx| async { Ok::<_, BoxError>("Alice") }),
            group.call("recs", order(&broken)).optional(),
            group.call("more-recs", order(&crashing)).optional(),
        )))
        .await
        .unwrap();

        assert_eq!((profile, recs, more), ("Alice", None, None));
        // Not lost: each failure is logged at info, with its cause.
        let failed = capture.with_message("optional fetch failed");
        assert_eq!(failed.len(), 2, "{:#?}", capture.lines());
        assert!(failed.iter().all(|(level, _, _)| *level == log::Level::Info));
        assert!(failed.iter().any(|(_, _, kvs)| kvs.contains(&"error=recs service failed: recs down".into())));
        assert!(capture.lines().iter().all(|(level, _, _)| *level > log::Level::Warn));
    }
);

on_every_executor!(
    async fn an_optional_call_with_its_own_timeout_yields_none_when_it_passes(ex) {
        let clock = Manual::new();
        let slow = Mock::new(1_u32).delay(Duration::from_secs(5)).timer(clock.clone());
        let calls = slow.calls();
        let ff = FailFast::builder()
            .executor(ex)
            .timer(clock.clone())
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let group = ff.group(&Context::background());
        let quick = Mock::new(5_u32).delay(ms(80)).timer(clock.clone());
        let mut run = pin!(group.run(try_join(
            group.call("orders", order(&quick)),
            group.call("recs", order(&slow)).timeout(ms(50)).optional(),
        )));
        // orders, recs, recs' own timeout and the group's deadline asleep.
        assert!(drive_until(run.as_mut(), || clock.sleepers() == 4).await.is_none());
        clock.advance(ms(50));
        let early = drive_until(run.as_mut(), || calls.cancelled() == 1).await;
        assert!(early.is_none(), "finished before orders answered: {early:?}");
        clock.advance(ms(30));

        assert_eq!(finish(run).await.unwrap(), (5, None));
        assert_eq!(clock.elapsed(), ms(80));
    }
);

on_every_executor!(
    async fn a_required_call_past_its_own_timeout_fails_the_group_at_once_naming_it(ex) {
        let clock = Manual::new();
        let slow = Mock::new(1_u32).delay(Duration::from_secs(5)).timer(clock.clone());
        let other = Mock::new(2_u32).delay(Duration::from_secs(5)).timer(clock.clone());
        let (slow_calls, other_calls) = (slow.calls(), other.calls());
        let ff = FailFast::builder()
            .executor(ex)
            .timer(clock.clone())
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let group = ff.group(&Context::background());
        let mut run = pin!(group.run(try_join(
            group.call("orders", order(&other)),
            group.call("ledger", order(&slow)).timeout(ms(50)),
        )));
        assert!(drive_until(run.as_mut(), || clock.sleepers() == 4).await.is_none());
        clock.advance(ms(50));

        let err = finish(run).await.unwrap_err();
        assert!(
            matches!(&err, Error::TimedOut { service, timeout } if service == "ledger" && *timeout == ms(50)),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "ledger service timed out after 50.0ms");
        assert_eq!(clock.elapsed(), ms(50));
        eventually("both calls were cancelled", || {
            slow_calls.cancelled() == 1 && other_calls.cancelled() == 1
        })
        .await;
    }
);

on_every_executor!(
    async fn a_call_timeout_later_than_the_groups_deadline_changes_nothing(ex) {
        let clock = Manual::new();
        let slow = Mock::new(1_u32).delay(Duration::from_secs(5)).timer(clock.clone());
        let ff = FailFast::builder()
            .executor(ex)
            .timer(clock.clone())
            .timeout(ms(100))
            .build()
            .unwrap();
        let group = ff.group(&Context::background());
        let mut run = pin!(group.run(group.call("ledger", order(&slow)).timeout(ms(500))));
        // No sleep of its own: only the service's and the group's deadline.
        assert!(drive_until(run.as_mut(), || clock.sleepers() == 2).await.is_none());
        clock.advance(ms(100));
        let err = finish(run).await.unwrap_err();
        assert!(err.is_deadline_exceeded(), "{err:?}");
    }
);

on_every_executor!(
    async fn the_groups_deadline_still_ends_a_group_waiting_on_an_optional_call(ex) {
        let clock = Manual::new();
        let hanging = Mock::new(1_u32).hang().timer(clock.clone());
        let calls = hanging.calls();
        let ff = FailFast::builder()
            .executor(ex)
            .timer(clock.clone())
            .timeout(ms(200))
            .build()
            .unwrap();
        let group = ff.group(&Context::background());
        let mut run = pin!(group.run(group.call("recs", order(&hanging)).optional()));
        assert!(drive_until(run.as_mut(), || clock.sleepers() == 1 && calls.started() == 1).await.is_none());
        clock.advance(ms(200));
        let err = finish(run).await.unwrap_err();
        assert!(err.is_deadline_exceeded(), "{err:?}");
        eventually("recs was cancelled", || calls.cancelled() == 1).await;
    }
);

on_every_executor!(
    async fn the_callers_cancellation_still_ends_a_group_waiting_on_an_optional_call(ex) {
        let hanging = Mock::new(1_u32).hang();
        let calls = hanging.calls();
        let ff = FailFast::builder().executor(ex).build().unwrap();
        let (ctx, cancel) = Context::background().with_cancel();
        let group = ff.group(&ctx);
        let mut run = pin!(group.run(group.call("recs", order(&hanging)).optional()));
        assert!(drive_until(run.as_mut(), || calls.started() == 1).await.is_none());
        cancel.cancel();
        let err = finish(run).await.unwrap_err();
        assert!(err.is_cancelled(), "{err:?}");
    }
);

on_every_executor!(
    async fn an_optional_service_that_fails_because_the_caller_cancelled_reports_the_cancel(ex) {
        let ff = FailFast::builder().executor(ex).build().unwrap();
        let (ctx, cancel) = Context::background().with_cancel();
        let group = ff.group(&ctx);
        let recs = group
            .call("recs", |ctx: Context| async move {
                ctx.cancelled().await;
                Err::<u32, BoxError>("stopped: context cancelled".into())
            })
            .optional();
        let mut run = pin!(group.run(recs));
        assert!(common::drive_for(run.as_mut(), ms(20)).await.is_none());
        cancel.cancel();
        let err = finish(run).await.unwrap_err();
        assert!(err.is_cancelled(), "{err:?}");
    }
);

#[test]
fn a_zero_call_timeout_times_out_at_once_without_calling_the_service() {
    let service = Mock::new(1_u32);
    let calls = service.calls();
    let ff = FailFast::builder().build().unwrap();
    let group = ff.group(&Context::background());
    let err = futures::executor::block_on(
        group.run(group.call("zero", order(&service)).timeout(Duration::ZERO)),
    )
    .unwrap_err();
    assert!(matches!(err, Error::TimedOut { .. }), "{err:?}");
    assert_eq!(calls.started(), 0);
}

#[test]
fn a_call_timeout_too_large_for_an_instant_means_none() {
    let clock = Manual::new();
    let ff = FailFast::builder().timer(clock.clone()).build().unwrap();
    let group = ff.group(&Context::background());
    let nap = clock.clone();
    let call = group
        .call("long", move |ctx: Context| async move {
            assert_eq!(ctx.deadline(), None);
            nap.sleep(ms(10)).await;
            Ok::<_, BoxError>(1)
        })
        .timeout(Duration::MAX);
    futures::executor::block_on(async {
        let mut run = pin!(group.run(call));
        assert!(
            drive_until(run.as_mut(), || clock.sleepers() == 1)
                .await
                .is_none()
        );
        clock.advance(ms(10));
        assert_eq!(finish(run).await.unwrap(), 1);
    });
}

on_every_executor!(
    async fn a_service_that_gives_up_at_its_calls_own_deadline_timed_out_it_did_not_fail(ex) {
        let clock = Manual::new();
        let ff = FailFast::builder().executor(ex).timer(clock.clone()).build().unwrap();
        let group = ff.group(&Context::background());
        // The service honours its context: at its deadline it stops, with an error of its own.
        let call = group
            .call("ledger", |ctx: Context| async move {
                ctx.done().await;
                Err::<u32, BoxError>("gave up: context done".into())
            })
            .timeout(ms(50));
        let mut run = pin!(group.run(call));
        // The call's own deadline is asleep twice: in the group and in the service's `done()`.
        assert!(drive_until(run.as_mut(), || clock.sleepers() == 2).await.is_none());
        clock.advance(ms(50));
        let err = finish(run).await.unwrap_err();
        assert!(
            matches!(&err, Error::TimedOut { service, .. } if service == "ledger"),
            "whichever of the two wakes first, the call timed out: {err:?}"
        );
    }
);
