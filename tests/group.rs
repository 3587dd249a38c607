//! The public group: any number of named calls of any types run concurrently, and the first
//! failure of a required call ends `run` at once, whatever the join does, cancelling the rest.

// One body runs on Copy (Inline, AsyncStd) and non-Copy (Smol, Tokio) executors alike.
#![allow(clippy::clone_on_copy)]

mod common;

use std::error::Error as _;
use std::pin::pin;
use std::time::{Duration, Instant};

use common::{drive_until, eventually, finish, ms, on_every_executor, order};
use failfast::mock::{self, Mock};
use failfast::timer::Manual;
use failfast::{BoxError, Context, Error, FailFast, Outcome, ProfileService, Timer};
use futures::future::{try_join_all, try_join3};

on_every_executor!(
    async fn three_calls_of_different_types_take_as_long_as_the_slowest(ex) {
        let clock = Manual::new();
        let profiles = mock::profile("Alice").delay(ms(300)).timer(clock.clone());
        let orders = Mock::new(5_u32).delay(ms(300)).timer(clock.clone());
        let ff = FailFast::builder().executor(ex).timer(clock.clone()).build().unwrap();
        let group = ff.group(&Context::background());
        let nap = clock.clone();
        let mut run = pin!(group.run(try_join3(
            group.call("profile", move |ctx| async move { profiles.profile(ctx, 1).await }),
            group.call("orders", order(&orders)),
            group.call("recs", move |_ctx| async move {
                nap.sleep(ms(300)).await;
                Ok::<_, BoxError>(vec!["book", "lamp"])
            }),
        )));

        // All three asleep at once: none waits for another.
        assert!(drive_until(run.as_mut(), || clock.sleepers() == 3).await.is_none());
        clock.advance(ms(300));

        let (profile, count, recs) = finish(run).await.unwrap();
        assert_eq!((profile.name.as_str(), count, recs), ("Alice", 5, vec!["book", "lamp"]));
        assert_eq!(clock.elapsed(), ms(300)); // not 900 ms
    }
);

on_every_executor!(
    async fn a_hundred_calls_in_real_time_take_about_as_long_as_the_slowest(ex) {
        let ff = FailFast::builder().executor(ex).build().unwrap();
        let group = ff.group(&Context::background());
        let shards = Mock::new(7_u32).delay(ms(300));
        let calls = shards.calls();

        let start = Instant::now();
        let values = group
            .run(try_join_all((0..100).map(|i| group.call(format!("shard-{i}"), order(&shards)))))
            .await
            .unwrap();
        let elapsed = start.elapsed();

        assert_eq!(values, vec![7; 100]);
        assert_eq!(calls.finished(), 100);
        assert!(elapsed >= ms(300), "answered before the services did: {elapsed:?}");
        // One after another they would take 30 s; the margin is for a noisy machine.
        assert!(elapsed < ms(3_000), "took {elapsed:?}: the calls did not overlap");
    }
);

on_every_executor!(
    async fn the_last_of_a_hundred_calls_failing_ends_the_group_though_the_join_yields_in_order(ex) {
        // `try_join_all` over more than 30 futures yields results in input order: on its own
        // it would hold the 100th call's error back until the 99 before it had answered.
        let clock = Manual::new();
        let slow = Mock::new(1_u32).delay(Duration::from_secs(10)).timer(clock.clone());
        let broken = Mock::new(1_u32).delay(ms(10)).fail("shard 99 down").timer(clock.clone());
        let (slow_calls, broken_calls) = (slow.calls(), broken.calls());
        let ff = FailFast::builder().executor(ex).timer(clock.clone()).build().unwrap();
        let group = ff.group(&Context::background());
        let calls = (0..100).map(|i| {
            let service = if i == 99 { &broken } else { &slow };
            group.call(format!("shard-{i}"), order(service))
        });
        let mut run = pin!(group.run(try_join_all(calls)));
        assert!(drive_until(run.as_mut(), || clock.sleepers() == 100).await.is_none());

        clock.advance(ms(10));
        let err = finish(run).await.unwrap_err();

        assert_eq!(err.service(), Some("shard-99"));
        assert_eq!(format!("{err:#}"), "shard-99 service failed: shard 99 down");
        assert_eq!(clock.elapsed(), ms(10));
        assert_eq!(broken_calls.finished(), 1);
        eventually("the 99 slow calls were cancelled", || slow_calls.cancelled() == 99).await;
        assert_eq!(slow_calls.finished(), 0);
    }
);

on_every_executor!(
    async fn a_join_that_awaits_calls_one_by_one_still_runs_them_together_and_fails_fast(ex) {
        let clock = Manual::new();
        let slow = Mock::new(1_u32).delay(Duration::from_secs(10)).timer(clock.clone());
        let broken = Mock::new(1_u32).delay(ms(20)).fail("shard 3 down").timer(clock.clone());
        let slow_calls = slow.calls();
        let ff = FailFast::builder().executor(ex).timer(clock.clone()).build().unwrap();
        let group = ff.group(&Context::background());
        let calls: Vec<_> = (0..5)
            .map(|i| group.call(format!("shard-{i}"), order(if i == 3 { &broken } else { &slow })))
            .collect();
        let mut run = pin!(group.run(async move {
            let mut values = Vec::new();
            for call in calls {
                values.push(call.await?); // waits on shard-0 first
            }
            Ok(values)
        }));
        // Every call is asleep, not only the one the join is waiting for.
        assert!(drive_until(run.as_mut(), || clock.sleepers() == 5).await.is_none());

        clock.advance(ms(20));
        let err = finish(run).await.unwrap_err();

        assert_eq!(err.service(), Some("shard-3"));
        assert_eq!(clock.elapsed(), ms(20));
        eventually("the slow calls were cancelled", || slow_calls.cancelled() == 4).await;
    }
);

on_every_executor!(
    async fn a_failing_call_that_the_join_ignores_still_fails_the_group(ex) {
        let ff = FailFast::builder().executor(ex).build().unwrap();
        let group = ff.group(&Context::background());
        let fine = group.call("fine", |_ctx| async { Ok::<_, BoxError>(1) });
        let broken = group.call("broken", |_ctx| async { Err::<u32, BoxError>("down".into()) });

        // The join swallows the error: a required call's failure is the group's anyway.
        let result = finish(group.run(async move {
            let _ = broken.await;
            fine.await
        }))
        .await;
        let err = result.unwrap_err();
        assert_eq!(err.service(), Some("broken"));
        assert_eq!(err.source().unwrap().to_string(), "down");
    }
);

on_every_executor!(
    async fn every_call_gets_the_earliest_deadline_and_a_context_cancelled_when_run_returns(ex) {
        let clock = Manual::new();
        let ff = FailFast::builder()
            .executor(ex)
            .timer(clock.clone())
            .timeout(ms(500))
            .build()
            .unwrap();
        let caller = Context::background().with_deadline(clock.now() + ms(800));
        let group = ff.group(&caller);
        let plain = Mock::new(1_u32).timer(clock.clone());
        let own = Mock::new(2_u32).timer(clock.clone());
        let late = Mock::new(3_u32).timer(clock.clone());
        let (plain_calls, own_calls, late_calls) = (plain.calls(), own.calls(), late.calls());

        let values = finish(group.run(try_join3(
            group.call("plain", order(&plain)),
            group.call("own", order(&own)).timeout(ms(200)),
            group.call("late", order(&late)).timeout(ms(900)),
        )))
        .await
        .unwrap();

        assert_eq!(values, (1, 2, 3));
        let start = clock.now();
        // The group's timeout beats the caller's deadline; a call's own timeout beats both, and
        // one later than the group's changes nothing.
        assert_eq!(plain_calls.last_context().unwrap().deadline(), Some(start + ms(500)));
        assert_eq!(own_calls.last_context().unwrap().deadline(), Some(start + ms(200)));
        assert_eq!(late_calls.last_context().unwrap().deadline(), Some(start + ms(500)));
        assert_eq!(group.deadline(), Some(start + ms(500)));
        // `run` returned: every call's context is cancelled, the caller's is not.
        for calls in [plain_calls, own_calls, late_calls] {
            assert!(calls.last_context().unwrap().is_cancelled());
        }
        assert!(!caller.is_cancelled());
    }
);

on_every_executor!(
    async fn the_first_failure_cancels_the_context_the_other_calls_were_given(ex) {
        let ff = FailFast::builder().executor(ex).build().unwrap();
        let group = ff.group(&Context::background());
        let waiting = group.call("waits", |ctx: Context| async move {
            ctx.cancelled().await; // an honest service: stops when its context says so
            Err::<(), BoxError>("cancelled".into())
        });
        let broken = group.call("broken", |_ctx| async { Err::<(), BoxError>("down".into()) });

        let err = finish(group.run(futures::future::try_join(waiting, broken))).await.unwrap_err();
        assert_eq!(err.service(), Some("broken"));
    }
);

on_every_executor!(
    async fn a_panicking_call_becomes_an_error_naming_it_and_cancels_the_rest(ex) {
        let hanging = Mock::new(1_u32).hang();
        let hanging_calls = hanging.calls();
        let started = hanging.calls();
        let ff = FailFast::builder().executor(ex).timeout(Duration::from_secs(30)).build().unwrap();
        let group = ff.group(&Context::background());

        let err = finish(group.run(futures::future::try_join(
            group.call("hangs", order(&hanging)),
            group.call(String::from("shard-7"), move |_ctx| async move {
                // Panics once the other call is running, so that there is one to cancel.
                while started.started() == 0 {
                    futures_timer::Delay::new(Duration::from_millis(1)).await;
                }
                if true {
                    panic!("shard 7 exploded");
                }
                Ok::<u32, BoxError>(7)
            }),
        )))
        .await
        .unwrap_err();

        assert!(matches!(&err, Error::Panicked { service, message }
            if service == "shard-7" && message == "shard 7 exploded"), "{err:?}");
        eventually("the hanging call was cancelled", || hanging_calls.in_flight() == 0).await;
        assert_eq!(hanging_calls.cancelled(), 1);
    }
);

on_every_executor!(
    async fn a_panic_while_making_the_service_future_is_contained_too(ex) {
        let ff = FailFast::builder().executor(ex).build().unwrap();
        let group = ff.group(&Context::background());
        let call = group.call("factory", |_ctx| -> futures::future::Ready<Result<u8, BoxError>> {
            panic!("no connection pool")
        });
        let err = finish(group.run(call)).await.unwrap_err();
        assert!(matches!(&err, Error::Panicked { service, message }
            if service == "factory" && message == "no connection pool"), "{err:?}");
    }
);

on_every_executor!(
    async fn dropping_run_cancels_every_call_spawned_ones_too(ex) {
        let hanging = Mock::new(1_u32).hang();
        let calls = hanging.calls();
        let ff = FailFast::builder().executor(ex).timeout(Duration::from_secs(30)).build().unwrap();
        let group = ff.group(&Context::background());
        {
            let mut run = pin!(group.run(try_join_all(
                (0..3).map(|i| group.call(format!("shard-{i}"), order(&hanging)))
            )));
            assert!(drive_until(run.as_mut(), || calls.started() == 3).await.is_none());
        } // the caller walks away
        eventually("every call was cancelled", || calls.cancelled() == 3).await;
        assert!(calls.last_context().unwrap().is_cancelled());
    }
);

on_every_executor!(
    async fn cancelling_the_callers_context_ends_the_group(ex) {
        let hanging = Mock::new(1_u32).hang();
        let calls = hanging.calls();
        let ff = FailFast::builder().executor(ex).build().unwrap();
        let (ctx, cancel) = Context::background().with_cancel();
        let group = ff.group(&ctx);
        let mut run = pin!(group.run(try_join_all(
            (0..3).map(|i| group.call(format!("shard-{i}"), order(&hanging)))
        )));
        assert!(drive_until(run.as_mut(), || calls.started() == 3).await.is_none());

        std::thread::spawn(move || cancel.cancel()).join().unwrap();
        let err = finish(run).await.unwrap_err();

        assert!(err.is_cancelled(), "{err:?}");
        eventually("every call was cancelled", || calls.cancelled() == 3).await;
    }
);

on_every_executor!(
    async fn an_already_cancelled_context_starts_nothing(ex) {
        let service = Mock::new(1_u32);
        let calls = service.calls();
        let ff = FailFast::builder().executor(ex).build().unwrap();
        let (ctx, cancel) = Context::background().with_cancel();
        cancel.cancel();
        let group = ff.group(&ctx);

        let err = finish(group.run(group.call("never", order(&service)))).await.unwrap_err();

        assert!(matches!(err, Error::Cancelled { elapsed, .. } if elapsed == Duration::ZERO));
        assert_eq!(calls.started(), 0);
    }
);

on_every_executor!(
    async fn the_group_deadline_ends_it_and_cancels_every_call(ex) {
        let clock = Manual::new();
        let slow = Mock::new(1_u32).delay(Duration::from_secs(2)).timer(clock.clone());
        let calls = slow.calls();
        let ff = FailFast::builder()
            .executor(ex)
            .timer(clock.clone())
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let group = ff.group(&Context::background());
        let mut run = pin!(group.run(try_join_all(
            (0..4).map(|i| group.call(format!("shard-{i}"), order(&slow)))
        )));
        assert!(drive_until(run.as_mut(), || clock.sleepers() == 5).await.is_none());

        clock.advance(Duration::from_secs(1));
        let err = finish(run).await.unwrap_err();

        assert!(
            matches!(err, Error::DeadlineExceeded { elapsed } if elapsed == Duration::from_secs(1)),
            "{err:?}"
        );
        eventually("every call was cancelled", || calls.cancelled() == 4).await;
    }
);

on_every_executor!(
    async fn calls_made_inside_the_join_run_too(ex) {
        let ff = FailFast::builder().executor(ex).build().unwrap();
        let group = ff.group(&Context::background());
        let total = finish(group.run(async {
            let user = group.call("user", |_ctx| async { Ok::<_, BoxError>(7_u64) }).await?;
            // A second call that depends on the first one's answer.
            let orders = group
                .call("orders", move |_ctx| async move { Ok::<_, BoxError>(user * 3) })
                .await?;
            Ok(user + orders)
        }))
        .await
        .unwrap();
        assert_eq!(total, 28);
    }
);

#[test]
fn of_two_calls_failing_in_the_same_poll_inline_the_one_made_first_wins() {
    let clock = Manual::new();
    let first = Mock::new(1_u32)
        .delay(ms(10))
        .fail("first down")
        .timer(clock.clone());
    let second = Mock::new(2_u32)
        .delay(ms(10))
        .fail("second down")
        .timer(clock.clone());
    let ff = FailFast::builder().timer(clock.clone()).build().unwrap();
    let group = ff.group(&Context::background());
    futures::executor::block_on(async {
        // The join looks at the second call first; the group still reports the first.
        let b = group.call("second-made", order(&second));
        let a = group.call("first-made", order(&first));
        let mut run = pin!(group.run(futures::future::try_join(b, a)));
        let _ = drive_until(run.as_mut(), || clock.sleepers() == 2).await;
        clock.advance(ms(10));
        let err = finish(run).await.unwrap_err();
        assert_eq!(err.service(), Some("second-made"));
    });
}

on_every_executor!(
    async fn a_service_that_stops_when_its_context_is_cancelled_is_reported_cancelled_not_failed(ex) {
        let recorder = Recorder::default();
        let ff = FailFast::builder().executor(ex).observer(recorder.clone()).build().unwrap();
        let group = ff.group(&Context::background());
        let polite = group.call("polite", |ctx: Context| async move {
            ctx.cancelled().await;
            Err::<(), BoxError>("request cancelled".into())
        });
        let broken = group.call("broken", |_ctx| async {
            futures_timer::Delay::new(ms(20)).await;
            Err::<(), BoxError>("down".into())
        });

        let err = finish(group.run(futures::future::try_join(polite, broken))).await.unwrap_err();

        assert_eq!(err.service(), Some("broken"));
        eventually("both calls reported", || recorder.0.lock().unwrap().len() == 2).await;
        let outcomes = recorder.0.lock().unwrap().clone();
        assert!(outcomes.contains(&("broken".to_owned(), Outcome::Failed)), "{outcomes:?}");
        // On Inline it is dropped before it sees the cancellation; spawned, it returns an error
        // because of it: cancelled either way.
        assert!(outcomes.contains(&("polite".to_owned(), Outcome::Cancelled)), "{outcomes:?}");
    }
);

/// Records each call's name and outcome.
#[derive(Clone, Default)]
struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<(String, Outcome)>>>);

impl failfast::Observer for Recorder {
    fn call_finished(&self, call: &failfast::CallFinished<'_>) {
        self.0
            .lock()
            .unwrap()
            .push((call.name.to_owned(), call.outcome));
    }
}

#[test]
fn a_call_awaited_outside_run_is_a_misuse_error_and_never_starts() {
    let ff = FailFast::builder().timeout(ms(50)).build().unwrap();
    let group = ff.group(&Context::background());
    let service = Mock::new(1_u32);
    let calls = service.calls();
    let err = futures::executor::block_on(group.call("alone", order(&service))).unwrap_err();
    assert!(matches!(err, Error::Misuse { .. }), "{err:?}");
    assert!(err.to_string().contains("outside `run`"), "{err}");
    assert_eq!(calls.started(), 0);
    // The group itself can still run.
    let value = futures::executor::block_on(group.run(group.call("inside", order(&service))));
    assert_eq!(value.unwrap(), 1);
}

#[test]
fn group_futures_are_send_and_errors_are_clone() {
    fn send<T: Send>(_: &T) {}
    fn send_sync<T: Send + Sync>() {}
    send_sync::<FailFast>();
    send_sync::<Error>();
    send_sync::<failfast::Group<'static, failfast::executor::Inline, Manual>>();
    let ff = FailFast::builder().build().unwrap();
    let group = ff.group(&Context::background());
    let call = group.call("a", |_ctx| async { Ok::<_, BoxError>(1) });
    send(&call);
    let optional = group
        .call("b", |_ctx| async { Ok::<_, BoxError>(2) })
        .optional();
    send(&optional);
    let run = group.run(futures::future::try_join(call, optional));
    send(&run);
    let err = Error::service_failed("a", "down");
    let copy = err.clone();
    assert_eq!(format!("{copy:#}"), format!("{err:#}"));
}
