//! k-of-n gathers: k successes end it and cancel the rest; best effort returns what arrived
//! by the deadline; on every executor, in virtual time.

mod common;

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{drive_until, finish, ms, on_clock, on_every_executor, order};
use failfast::mock::Mock;
use failfast::timer::Manual;
use failfast::{BoxError, Context, Error, FailFast, Hedge, Timer};

/// Counts the calls that finished: once it has seen a call, the call's outcome is stored,
/// ready for the gather (a sync point with spawned calls before moving virtual time on).
#[derive(Clone, Default)]
struct Finished(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl failfast::Observer for Finished {
    fn call_finished(&self, _call: &failfast::CallFinished<'_>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Finished {
    fn get(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Mock replicas answering their position after 10, 20, 30 ms..., or failing where asked.
fn replicas(clock: &Manual, n: u32, failing: &[u32]) -> Vec<Mock<u32, Manual>> {
    (0..n)
        .map(|i| {
            let mock = Mock::new(i)
                .delay(ms(10 * u64::from(i + 1)))
                .timer(clock.clone());
            if failing.contains(&i) {
                mock.fail("replica down")
            } else {
                mock
            }
        })
        .collect()
}

on_every_executor!(
    async fn k_successes_end_the_gather_and_cancel_the_rest(ex) {
        let clock = Manual::new();
        let ff = on_clock(ex, &clock).build().unwrap();
        let mocks = replicas(&clock, 3, &[]);
        let group = ff.group(&Context::background());
        let calls = mocks.iter().enumerate().map(|(i, m)| group.call(format!("replica-{i}"), order(m)));
        let mut run = pin!(group.run(group.gather(2, calls)));
        assert!(drive_until(run.as_mut(), || clock.sleepers() == 3).await.is_none());
        clock.advance(ms(10));
        assert!(drive_until(run.as_mut(), || clock.sleepers() == 2).await.is_none());
        clock.advance(ms(10));
        assert_eq!(finish(run).await.unwrap(), [(0, 0), (1, 1)]);
        common::eventually("the third was cancelled", || mocks[2].calls().cancelled() == 1).await;
    }
);

on_every_executor!(
    async fn once_k_can_no_longer_be_reached_the_gather_fails_at_once(ex) {
        let clock = Manual::new();
        let ff = on_clock(ex, &clock).build().unwrap();
        let mocks = replicas(&clock, 3, &[0, 1]);
        let group = ff.group(&Context::background());
        let calls = mocks.iter().map(|m| group.call("replica", order(m)));
        let mut run = pin!(group.run(group.gather(2, calls)));
        assert!(drive_until(run.as_mut(), || clock.sleepers() == 3).await.is_none());
        clock.advance(ms(10));
        assert!(drive_until(run.as_mut(), || clock.sleepers() == 2).await.is_none());
        clock.advance(ms(10)); // the second failure: 2 of 3 can no longer succeed
        let err = finish(run).await.unwrap_err();
        assert!(matches!(err, Error::TooFew { needed: 2, succeeded: 0, calls: 3, .. }), "{err:?}");
        assert_eq!(err.to_string(), "0 of 3 calls succeeded, 2 needed");
        assert_eq!(
            format!("{err:#}"),
            "0 of 3 calls succeeded, 2 needed: replica service failed: replica down",
            "the last failure is the source"
        );
        common::eventually("the third was cancelled", || mocks[2].calls().cancelled() == 1).await;
    }
);

on_every_executor!(
    async fn best_effort_returns_what_arrived_by_the_deadline(ex) {
        let clock = Manual::new();
        let finished = Finished::default();
        let ff = on_clock(ex, &clock).observer(finished.clone()).timeout(ms(25)).build().unwrap();
        let mocks = replicas(&clock, 4, &[1]);
        let group = ff.group(&Context::background());
        let calls = mocks.iter().map(|m| group.call("replica", order(m)));
        let mut run = pin!(group.run(group.gather(1, calls).best_effort()));
        assert!(drive_until(run.as_mut(), || clock.sleepers() == 5).await.is_none());
        clock.advance(ms(10));
        assert!(drive_until(run.as_mut(), || finished.get() == 1).await.is_none());
        clock.advance(ms(10));
        assert!(drive_until(run.as_mut(), || finished.get() == 2).await.is_none());
        clock.advance(ms(5)); // the deadline: replicas 2 and 3 are not back
        assert_eq!(finish(run).await.unwrap(), [(0, 0)], "good enough beats DeadlineExceeded");
        common::eventually("the late ones were cancelled", || {
            mocks[2].calls().cancelled() + mocks[3].calls().cancelled() == 2
        })
        .await;
    }
);

on_every_executor!(
    async fn best_effort_with_too_few_by_the_deadline_is_an_error(ex) {
        let clock = Manual::new();
        let finished = Finished::default();
        let ff = on_clock(ex, &clock).observer(finished.clone()).timeout(ms(15)).build().unwrap();
        let mocks = replicas(&clock, 3, &[]);
        let group = ff.group(&Context::background());
        let calls = mocks.iter().map(|m| group.call("replica", order(m)));
        let mut run = pin!(group.run(group.gather(2, calls).best_effort()));
        assert!(drive_until(run.as_mut(), || clock.sleepers() == 4).await.is_none());
        clock.advance(ms(10));
        assert!(drive_until(run.as_mut(), || finished.get() == 1).await.is_none());
        clock.advance(ms(5));
        let err = finish(run).await.unwrap_err();
        assert!(matches!(err, Error::TooFew { needed: 2, succeeded: 1, calls: 3, .. }), "{err:?}");
    }
);

on_every_executor!(
    async fn a_panicking_or_failing_call_counts_against_the_gather_not_the_group(ex) {
        let ff = FailFast::builder().executor(ex).build().unwrap();
        let group = ff.group(&Context::background());
        let calls = vec![
            group.call("ok", |_ctx| async { Ok::<_, BoxError>(1) }),
            group.call("boom", |_ctx| async { panic!("boom") as Result<u32, BoxError> }),
            group.call("down", |_ctx| async { Err::<u32, BoxError>("down".into()) }),
            group.call("ok too", |_ctx| async { Ok::<_, BoxError>(4) }),
        ];
        let got = finish(group.run(group.gather(2, calls))).await.unwrap();
        assert_eq!(got, [(0, 1), (3, 4)]);
    }
);

on_every_executor!(
    async fn a_gather_over_hedged_calls_takes_the_first_answers(ex) {
        let clock = Manual::new();
        let ff = on_clock(ex, &clock).build().unwrap();
        let group = ff.group(&Context::background());
        let hedge = Hedge::builder().attempts(2).delay(ms(5)).build().unwrap();
        let calls = (0..3_u64).map(|i| {
            let clock = clock.clone();
            group
                .idempotent(format!("shard-{i}"), move |_ctx| {
                    let clock = clock.clone();
                    async move {
                        clock.sleep(ms(3 + i)).await;
                        Ok::<_, BoxError>(i)
                    }
                })
                .hedge(hedge.clone())
        });
        let mut run = pin!(group.run(group.gather(3, calls)));
        // Three first attempts (3, 4, 5 ms) and three hedge timers (5 ms) asleep.
        assert!(drive_until(run.as_mut(), || clock.sleepers() == 6).await.is_none());
        clock.advance(ms(5));
        assert_eq!(finish(run).await.unwrap(), [(0, 0), (1, 1), (2, 2)]);
    }
);

on_every_executor!(
    async fn asking_for_more_successes_than_calls_is_a_misuse_and_calls_nothing(ex) {
        let ff = FailFast::builder().executor(ex).build().unwrap();
        let group = ff.group(&Context::background());
        let called = Arc::new(AtomicUsize::new(0));
        let calls: Vec<_> = (0..2)
            .map(|_| {
                let called = called.clone();
                group.call("replica", move |_ctx| async move {
                    called.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, BoxError>(1)
                })
            })
            .collect();
        let err = group.run(group.gather(3, calls)).await.unwrap_err();
        assert!(matches!(err, Error::Misuse { .. }), "{err:?}");
        assert!(err.to_string().contains("more successes than it has calls"));
        // Refused when the gather was made: no service was called, not even spawned ones.
        for _ in 0..20 {
            common::nap().await; // time for a spawned call to run, if one was started
        }
        assert_eq!(called.load(Ordering::SeqCst), 0);
    }
);

on_every_executor!(
    async fn a_gather_of_zero_yields_no_values_even_when_calls_have_answered(ex) {
        let ff = FailFast::builder().executor(ex).build().unwrap();
        for _ in 0..20 {
            let group = ff.group(&Context::background());
            let calls: Vec<_> = (0..2)
                .map(|i| group.call("ready", move |_ctx| async move { Ok::<_, BoxError>(i) }))
                .collect();
            // Spawned calls may have answered before the gather is first polled.
            for _ in 0..3 {
                common::nap().await;
            }
            assert_eq!(group.run(group.gather(0, calls)).await.unwrap(), []);
        }
    }
);

#[test]
fn the_callers_cancellation_ends_a_gather() {
    futures::executor::block_on(async {
        let ff = FailFast::builder().build().unwrap();
        let (ctx, cancel) = Context::background().with_cancel();
        let group = ff.group(&ctx);
        let calls = (0..3).map(|_| {
            group.call("stuck", |_ctx| {
                std::future::pending::<Result<u32, BoxError>>()
            })
        });
        let mut run = pin!(group.run(group.gather(1, calls).best_effort()));
        assert!(drive_until(run.as_mut(), || true).await.is_none());
        cancel.cancel();
        assert!(finish(run).await.unwrap_err().is_cancelled());
    });
}

#[test]
fn a_gather_of_zero_needs_nothing_and_cancels_every_call() {
    futures::executor::block_on(async {
        let ff = FailFast::builder().build().unwrap();
        let group = ff.group(&Context::background());
        let stuck = Mock::new(1_u32).hang();
        let calls = (0..3).map(|_| group.call("stuck", order(&stuck)));
        assert!(
            finish(group.run(group.gather(0, calls)))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(stuck.calls().in_flight(), 0);
    });
}

#[test]
fn best_effort_counts_a_failure_met_at_the_deadline_instant_as_the_deadline() {
    // Inline, so that the order is fixed: at 20 ms the failing replica's answer is seen in the
    // same poll as the deadline, and after it.
    let clock = Manual::new();
    let finished = Finished::default();
    let ff = on_clock(failfast::executor::Inline, &clock)
        .observer(finished.clone())
        .timeout(ms(20))
        .build()
        .unwrap();
    let mocks = replicas(&clock, 2, &[1]); // 0 answers at 10 ms, 1 fails at 20 ms
    let group = ff.group(&Context::background());
    let calls = mocks.iter().map(|m| group.call("replica", order(m)));
    futures::executor::block_on(async {
        let mut run = pin!(group.run(group.gather(1, calls).best_effort()));
        assert!(
            drive_until(run.as_mut(), || clock.sleepers() == 3)
                .await
                .is_none()
        );
        clock.advance(ms(10));
        assert!(
            drive_until(run.as_mut(), || finished.get() == 1)
                .await
                .is_none()
        );
        clock.advance(ms(10)); // the deadline, and the failure, at the same instant
        assert_eq!(
            finish(run).await.unwrap(),
            [(0, 0)],
            "what succeeded by the deadline, not DeadlineExceeded"
        );
    });
}
