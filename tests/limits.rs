//! `limit(n)`: at most n calls of a group run at once; the others wait their turn, in order,
//! inside the deadline.

#![allow(clippy::clone_on_copy)]

mod common;

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{drive_until, eventually, finish, ms, on_every_executor, order};
use failfast::mock::Mock;
use failfast::timer::Manual;
use failfast::{BoxError, BuildError, Context, Error, FailFast, Timer};
use futures::future::try_join_all;

/// Counts calls running now, and the most ever running at once.
#[derive(Clone, Default)]
struct Gauge {
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Gauge {
    fn enter(&self) -> GaugeGuard {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        GaugeGuard(self.clone())
    }

    fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

struct GaugeGuard(Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

on_every_executor!(
    async fn ten_calls_under_a_limit_of_three_run_three_at_a_time(ex) {
        let clock = Manual::new();
        let ff = FailFast::builder()
            .executor(ex)
            .timer(clock.clone())
            .limit(3)
            .build()
            .unwrap();
        let gauge = Gauge::default();
        let started = Arc::new(std::sync::Mutex::new(Vec::new()));
        let group = ff.group(&Context::background());
        let calls = (0..10).map(|i| {
            let (gauge, clock, started) = (gauge.clone(), clock.clone(), started.clone());
            group.call(format!("shard-{i}"), move |_ctx| async move {
                let _running = gauge.enter();
                started.lock().unwrap().push(i);
                clock.sleep(ms(100)).await;
                Ok::<_, BoxError>(i)
            })
        });
        let mut run = pin!(group.run(try_join_all(calls)));

        for round in 1..=4 {
            let asleep = if round == 4 { 1 } else { 3 };
            let early = drive_until(run.as_mut(), || clock.sleepers() == asleep).await;
            assert!(early.is_none(), "round {round}: finished early: {early:?}");
            assert!(gauge.peak() <= 3, "{} ran at once", gauge.peak());
            clock.advance(ms(100));
        }

        let values = finish(run).await.unwrap();
        assert_eq!(values, (0..10).collect::<Vec<_>>());
        assert_eq!(gauge.peak(), 3);
        assert_eq!(clock.elapsed(), ms(400)); // four rounds of 100 ms
        let mut order = started.lock().unwrap().clone();
        assert_eq!(order.len(), 10);
        order.truncate(3);
        order.sort_unstable();
        assert_eq!(order, [0, 1, 2], "the first calls made start first");
    }
);

on_every_executor!(
    async fn calls_waiting_for_a_slot_never_start_once_the_deadline_has_passed(ex) {
        let clock = Manual::new();
        let slow = Mock::new(1_u32).delay(ms(100)).timer(clock.clone());
        let calls = slow.calls();
        let ff = FailFast::builder()
            .executor(ex)
            .timer(clock.clone())
            .limit(1)
            .timeout(ms(150))
            .build()
            .unwrap();
        let group = ff.group(&Context::background());
        let mut run = pin!(group.run(try_join_all(
            (0..3).map(|i| group.call(format!("shard-{i}"), order(&slow)))
        )));
        // The first call and the deadline asleep; then the second call once the first is done.
        assert!(drive_until(run.as_mut(), || clock.sleepers() == 2).await.is_none());
        clock.advance(ms(100));
        assert!(
            drive_until(run.as_mut(), || calls.started() == 2 && clock.sleepers() == 2)
                .await
                .is_none()
        );
        clock.advance(ms(50));

        let err = finish(run).await.unwrap_err();
        assert!(err.is_deadline_exceeded(), "{err:?}");
        assert_eq!(clock.elapsed(), ms(150));
        eventually("the second call was cancelled", || calls.cancelled() == 1).await;
        assert_eq!(calls.started(), 2, "the third call started after the deadline");
        assert_eq!(calls.finished(), 1);
    }
);

on_every_executor!(
    async fn a_failure_under_a_limit_starts_none_of_the_waiting_calls(ex) {
        let ff = FailFast::builder().executor(ex).limit(2).build().unwrap();
        let fine = Mock::new(1_u32).hang();
        let calls = fine.calls();
        let group = ff.group(&Context::background());
        let mut all = vec![group.call("broken", |_ctx| async { Err::<u32, BoxError>("down".into()) })];
        all.extend((0..5).map(|i| group.call(format!("shard-{i}"), order(&fine))));

        let err = finish(group.run(try_join_all(all))).await.unwrap_err();

        assert_eq!(err.service(), Some("broken"));
        eventually("the one call started was cancelled", || calls.in_flight() == 0).await;
        assert!(calls.started() <= 1, "{} calls started after the failure", calls.started());
    }
);

#[test]
fn a_limit_of_zero_is_a_build_error() {
    let err = FailFast::builder().limit(0).build().unwrap_err();
    assert_eq!(err, BuildError::ZeroLimit);
    assert_eq!(err.to_string(), "limit must be greater than zero");
}

#[test]
fn a_limit_of_one_runs_calls_strictly_one_after_another() {
    let ff = FailFast::builder().limit(1).build().unwrap();
    let gauge = Gauge::default();
    let group = ff.group(&Context::background());
    let calls = (0..20).map(|i| {
        let gauge = gauge.clone();
        group.call("step", move |_ctx| async move {
            let _running = gauge.enter();
            futures_timer::Delay::new(Duration::from_millis(1)).await;
            Ok::<_, Error>(i)
        })
    });
    let values = futures::executor::block_on(group.run(try_join_all(calls))).unwrap();
    assert_eq!(values, (0..20).collect::<Vec<_>>());
    assert_eq!(gauge.peak(), 1);
}
