//! Retries of idempotent calls: the schedule pinned in virtual time, what is retried, the
//! deadline and the budget, on every executor.

mod common;

use std::error::Error as _;
use std::pin::pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Capture, drive_until, finish, ms, on_clock, on_every_executor};
use failfast::timer::Manual;
use failfast::{
    AttemptFinished, BoxError, Budget, BuildError, Context, Error, FailFast, GaveUp, Observer,
    Retry, StopReason, Timer,
};
use futures::future::try_join;

/// A service that records when (in virtual time) each attempt starts, and fails the first
/// `failures` attempts with "busy" (after `delay`), then answers with the attempt's number.
#[derive(Clone)]
struct Flaky {
    clock: Manual,
    failures: u32,
    delay: Duration,
    starts: Arc<Mutex<Vec<Duration>>>,
    origin: Instant,
}

impl Flaky {
    fn new(clock: &Manual, failures: u32, delay: Duration) -> Flaky {
        Flaky {
            clock: clock.clone(),
            failures,
            delay,
            starts: Arc::default(),
            origin: clock.now(),
        }
    }

    fn attempt(
        &self,
    ) -> impl FnMut(Context) -> futures::future::BoxFuture<'static, Result<u32, BoxError>> + Send + 'static
    {
        let this = self.clone();
        move |_ctx| {
            let mut starts = this.starts.lock().unwrap();
            starts.push(this.clock.now() - this.origin);
            let n = starts.len() as u32;
            let (clock, delay, failures) = (this.clock.clone(), this.delay, this.failures);
            Box::pin(async move {
                if !delay.is_zero() {
                    clock.sleep(delay).await;
                }
                if n <= failures {
                    Err("busy".into())
                } else {
                    Ok(n)
                }
            })
        }
    }

    fn starts(&self) -> Vec<Duration> {
        self.starts.lock().unwrap().clone()
    }
}

/// Records every attempt event.
#[derive(Clone, Default)]
struct Attempts(Arc<Mutex<Vec<Seen>>>);

/// What an attempt event said: its number, the backoff after it, why the call stopped.
type Seen = (u32, Option<Duration>, Option<StopReason>);

impl Observer for Attempts {
    fn attempt_finished(&self, attempt: &AttemptFinished<'_>) {
        self.0
            .lock()
            .unwrap()
            .push((attempt.attempt, attempt.retry_after, attempt.stopped));
    }
}

fn retry(attempts: u32, initial: Duration, max: Duration, seed: u64) -> Retry {
    Retry::builder()
        .attempts(attempts)
        .backoff(initial, max)
        .seed(seed)
        .build()
        .unwrap()
}

/// Advances `clock` by `by` once every party is asleep (`sleepers` of them).
async fn advance_when<F: std::future::Future>(
    run: std::pin::Pin<&mut F>,
    clock: &Manual,
    sleepers: usize,
    by: Duration,
) -> Option<F::Output> {
    let out = drive_until(run, || clock.sleepers() == sleepers).await;
    if out.is_none() {
        clock.advance(by);
    }
    out
}

on_every_executor!(
    async fn the_schedule_replays_from_the_seed_attempt_backoff_attempt_backoff_answer(ex) {
        let clock = Manual::new();
        let observed = Attempts::default();
        let ff = on_clock(ex, &clock)
            .observer(observed.clone())
            .build()
            .unwrap();
        let policy = retry(3, ms(100), ms(1000), 7);
        let backoffs: Vec<Duration> = policy.backoffs().collect();
        let flaky = Flaky::new(&clock, 2, ms(10));
        let group = ff.group(&Context::background());
        let mut run = pin!(group.run(group.idempotent("kv", flaky.attempt()).retry(policy)));
        // Attempt 1 at t=0 fails at t=10; backoff 1; attempt 2 fails 10 ms later; backoff 2.
        assert!(advance_when(run.as_mut(), &clock, 1, ms(10)).await.is_none());
        assert!(advance_when(run.as_mut(), &clock, 1, backoffs[0]).await.is_none());
        assert!(advance_when(run.as_mut(), &clock, 1, ms(10)).await.is_none());
        assert!(advance_when(run.as_mut(), &clock, 1, backoffs[1]).await.is_none());
        assert!(advance_when(run.as_mut(), &clock, 1, ms(10)).await.is_none());
        assert_eq!(finish(run).await.unwrap(), 3);
        let first_retry = ms(10) + backoffs[0];
        assert_eq!(
            flaky.starts(),
            [Duration::ZERO, first_retry, first_retry + ms(10) + backoffs[1]]
        );
        assert_eq!(
            *observed.0.lock().unwrap(),
            [(1, Some(backoffs[0]), None), (2, Some(backoffs[1]), None), (3, None, None)]
        );
    }
);

on_every_executor!(
    async fn a_call_that_keeps_failing_gives_up_saying_how_many_attempts_and_keeping_the_last_error(ex) {
        let clock = Manual::new();
        let ff = on_clock(ex, &clock).build().unwrap();
        let flaky = Flaky::new(&clock, u32::MAX, Duration::ZERO);
        let group = ff.group(&Context::background());
        let policy = retry(3, Duration::ZERO, Duration::ZERO, 1); // no backoff at all
        let err = finish(group.run(group.idempotent("kv", flaky.attempt()).retry(policy)))
            .await
            .unwrap_err();
        assert_eq!(err.service(), Some("kv"));
        assert_eq!(format!("{err:#}"), "kv service failed: gave up after 3 attempts: no attempts left: busy");
        let gave_up = err.source().unwrap().downcast_ref::<GaveUp>().unwrap();
        assert_eq!((gave_up.attempts, gave_up.reason), (3, StopReason::Exhausted));
        assert_eq!(flaky.starts().len(), 3);
    }
);

on_every_executor!(
    async fn a_slow_attempt_is_cut_at_its_own_timeout_cancelled_and_retried(ex) {
        let clock = Manual::new();
        let ff = on_clock(ex, &clock).build().unwrap();
        let policy = Retry::builder()
            .attempts(2)
            .backoff(Duration::ZERO, Duration::ZERO)
            .attempt_timeout(ms(50))
            .build()
            .unwrap();
        let hang = failfast::mock::Mock::new(9_u32).hang().timer(clock.clone());
        let calls = hang.calls();
        let tries = Arc::new(AtomicU32::new(0));
        let group = ff.group(&Context::background());
        let counter = tries.clone();
        let call = group
            .idempotent("kv", move |ctx| {
                let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
                let hang = hang.clone();
                async move {
                    if first {
                        use failfast::OrderService;
                        hang.order_count(ctx, 1).await // hangs until cancelled
                    } else {
                        Ok(7)
                    }
                }
            })
            .retry(policy);
        let mut run = pin!(group.run(call));
        assert!(advance_when(run.as_mut(), &clock, 1, ms(50)).await.is_none());
        assert_eq!(finish(run).await.unwrap(), 7);
        assert_eq!(tries.load(Ordering::SeqCst), 2);
        assert_eq!(calls.cancelled(), 1, "the timed-out attempt was dropped");
    }
);

on_every_executor!(
    async fn a_backoff_that_would_pass_the_deadline_is_not_slept_the_call_gives_up_at_once(ex) {
        let clock = Manual::new();
        let ff = on_clock(ex, &clock)
            .timeout(ms(100))
            .build()
            .unwrap();
        // A seed whose first backoff is longer than the 100 ms the group has.
        let policy = (0..)
            .map(|seed| retry(3, ms(500), ms(500), seed))
            .find(|policy| policy.backoffs().next().unwrap() > ms(100))
            .unwrap();
        let flaky = Flaky::new(&clock, u32::MAX, Duration::ZERO);
        let group = ff.group(&Context::background());
        let err = finish(group.run(group.idempotent("kv", flaky.attempt()).retry(policy)))
            .await
            .unwrap_err();
        let gave_up = err.source().unwrap().downcast_ref::<GaveUp>().unwrap();
        assert_eq!((gave_up.attempts, gave_up.reason), (1, StopReason::Deadline));
        assert_eq!(clock.elapsed(), Duration::ZERO, "it did not sleep");
    }
);

on_every_executor!(
    async fn no_attempt_starts_with_less_than_the_minimum_time_left(ex) {
        let clock = Manual::new();
        let ff = on_clock(ex, &clock)
            .timeout(ms(100))
            .build()
            .unwrap();
        let policy = Retry::builder()
            .attempts(5)
            .backoff(Duration::ZERO, Duration::ZERO)
            .min_time_left(ms(60))
            .build()
            .unwrap();
        let flaky = Flaky::new(&clock, u32::MAX, ms(30));
        let group = ff.group(&Context::background());
        let mut run = pin!(group.run(group.idempotent("kv", flaky.attempt()).retry(policy)));
        // t=0 attempt 1, t=30 attempt 2 (70 left), t=60: 40 left < 60, give up.
        assert!(advance_when(run.as_mut(), &clock, 2, ms(30)).await.is_none());
        assert!(advance_when(run.as_mut(), &clock, 2, ms(30)).await.is_none());
        let err = finish(run).await.unwrap_err();
        let gave_up = err.source().unwrap().downcast_ref::<GaveUp>().unwrap();
        assert_eq!((gave_up.attempts, gave_up.reason), (2, StopReason::Deadline));
        assert_eq!(flaky.starts(), [Duration::ZERO, ms(30)]);
    }
);

on_every_executor!(
    async fn not_even_a_first_attempt_starts_with_less_than_the_minimum_time_left(ex) {
        let clock = Manual::new();
        let attempts = Attempts::default();
        let ff = on_clock(ex, &clock).observer(attempts.clone()).build().unwrap();
        let policy = Retry::builder()
            .min_time_left(ms(50))
            .build()
            .unwrap();
        let flaky = Flaky::new(&clock, 0, Duration::ZERO);
        let caller = Context::background()
            .with_timer(clock.clone())
            .with_timeout(ms(40));
        let group = ff.group(&caller);
        let err = finish(group.run(group.idempotent("kv", flaky.attempt()).retry(policy.clone())))
            .await
            .unwrap_err();
        assert_eq!(err.service(), Some("kv"));
        let gave_up = err.source().unwrap().downcast_ref::<GaveUp>().unwrap();
        assert_eq!((gave_up.attempts, gave_up.reason), (0, StopReason::Deadline));
        assert!(format!("{err:#}").contains("no attempt started"), "{err:#}");
        assert!(flaky.starts().is_empty(), "the service was called");
        let refused = attempts.0.lock().unwrap().clone();
        assert_eq!(refused, [(1, None, Some(StopReason::Deadline))], "refused, observed");

        // Enough time left: the first attempt starts and answers.
        let caller = Context::background()
            .with_timer(clock.clone())
            .with_timeout(ms(60));
        let group = ff.group(&caller);
        let answer = finish(group.run(group.idempotent("kv", flaky.attempt()).retry(policy)));
        assert!(answer.await.is_ok());
        assert_eq!(flaky.starts().len(), 1);
    }
);

on_every_executor!(
    async fn what_the_classifier_refuses_is_not_retried_and_panics_never_are(ex) {
        let clock = Manual::new();
        let ff = on_clock(ex, &clock).build().unwrap();
        let policy = Retry::builder()
            .attempts(3)
            .backoff(Duration::ZERO, Duration::ZERO)
            .retry_if(|failure| !failure_text(failure).contains("busy"))
            .build()
            .unwrap();
        let flaky = Flaky::new(&clock, u32::MAX, Duration::ZERO);
        let group = ff.group(&Context::background());
        let err = finish(group.run(group.idempotent("kv", flaky.attempt()).retry(policy.clone())))
            .await
            .unwrap_err();
        let gave_up = err.source().unwrap().downcast_ref::<GaveUp>().unwrap();
        assert_eq!((gave_up.attempts, gave_up.reason), (1, StopReason::NotRetryable));

        let tries = Arc::new(AtomicU32::new(0));
        let counter = tries.clone();
        let group = ff.group(&Context::background());
        let err = finish(group.run(group.idempotent("kv", move |_ctx| {
                counter.fetch_add(1, Ordering::SeqCst);
                async { panic!("boom") as Result<u32, BoxError> }
            })
            .retry(retry(3, Duration::ZERO, Duration::ZERO, 1))))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Panicked { .. }), "{err:?}");
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }
);

fn failure_text(failure: &failfast::AttemptFailure<'_>) -> String {
    match failure {
        failfast::AttemptFailure::Error(error) => error.to_string(),
        other => format!("{other:?}"),
    }
}

on_every_executor!(
    async fn an_exhausted_budget_refuses_the_retry_and_says_so_in_the_error_the_log_and_the_observer(ex) {
        let clock = Manual::new();
        let observed = Attempts::default();
        let capture = Capture::new();
        let ff = on_clock(ex, &clock)
            .observer(observed.clone())
            .logger(capture.clone())
            .build()
            .unwrap();
        let budget = Budget::new(0.0, 0).unwrap(); // nothing to spend
        let policy = Retry::builder().attempts(3).budget(budget).build().unwrap();
        let flaky = Flaky::new(&clock, u32::MAX, Duration::ZERO);
        let group = ff.group(&Context::background());
        let err = finish(group.run(group.idempotent("kv", flaky.attempt()).retry(policy)))
            .await
            .unwrap_err();
        let gave_up = err.source().unwrap().downcast_ref::<GaveUp>().unwrap();
        assert_eq!((gave_up.attempts, gave_up.reason), (1, StopReason::Budget));
        assert_eq!(*observed.0.lock().unwrap(), [(1, None, Some(StopReason::Budget))]);
        assert_eq!(capture.with_message("attempt failed, retry refused by the budget").len(), 1);
    }
);

on_every_executor!(
    async fn a_shared_budget_caps_retries_across_groups(ex) {
        let clock = Manual::new();
        let ff = on_clock(ex, &clock).build().unwrap();
        let budget = Budget::new(0.5, 0).unwrap();
        let policy = Retry::builder()
            .attempts(2)
            .backoff(Duration::ZERO, Duration::ZERO)
            .budget(budget)
            .build()
            .unwrap();
        let mut retried = 0;
        for _ in 0..10 {
            let flaky = Flaky::new(&clock, 1, Duration::ZERO); // fails once, then answers
            let group = ff.group(&Context::background());
            let ok = finish(group.run(group.idempotent("kv", flaky.attempt()).retry(policy.clone())))
                .await
                .is_ok();
            retried += usize::from(ok);
        }
        assert_eq!(retried, 5, "half of ten first attempts");
    }
);

on_every_executor!(
    async fn a_failure_elsewhere_during_a_backoff_ends_the_call_with_no_more_attempts(ex) {
        let clock = Manual::new();
        let ff = on_clock(ex, &clock).build().unwrap();
        let flaky = Flaky::new(&clock, u32::MAX, Duration::ZERO);
        let group = ff.group(&Context::background());
        let broken = failfast::mock::Mock::new(1_u32).delay(ms(20)).fail("down").timer(clock.clone());
        let mut run = pin!(group.run(try_join(
            group.idempotent("kv", flaky.attempt()).retry(retry(5, ms(100), ms(100), 3)),
            group.call("broken", common::order(&broken)),
        )));
        // The backoff of kv (up to 100 ms) and broken (20 ms) are asleep.
        let sleepers = if retry(5, ms(100), ms(100), 3).backoffs().next().unwrap().is_zero() { 1 } else { 2 };
        assert!(advance_when(run.as_mut(), &clock, sleepers, ms(20)).await.is_none());
        let err = finish(run).await.unwrap_err();
        assert_eq!(err.service(), Some("broken"));
        assert!(flaky.starts().len() <= 2);
    }
);

/// Records (attempt, cancelled, elapsed) of every attempt event.
#[derive(Clone, Default)]
struct Cut(Arc<Mutex<Vec<(u32, bool, Duration)>>>);

impl Observer for Cut {
    fn attempt_finished(&self, attempt: &AttemptFinished<'_>) {
        self.0
            .lock()
            .unwrap()
            .push((attempt.attempt, attempt.cancelled, attempt.elapsed));
    }
}

on_every_executor!(
    async fn an_attempt_cut_short_by_the_groups_deadline_is_observed_cancelled(ex) {
        let clock = Manual::new();
        let cut = Cut::default();
        let ff = on_clock(ex, &clock)
            .timeout(ms(50))
            .observer(cut.clone())
            .build()
            .unwrap();
        // Attempt 1 fails at t=30; attempt 2 (no backoff) would take 30 ms more: the
        // deadline at t=50 cuts it after 20 ms.
        let flaky = Flaky::new(&clock, u32::MAX, ms(30));
        let group = ff.group(&Context::background());
        let mut run = pin!(group.run(group.idempotent("kv", flaky.attempt()).retry(retry(3, Duration::ZERO, Duration::ZERO, 1))));
        assert!(advance_when(run.as_mut(), &clock, 2, ms(30)).await.is_none());
        assert!(advance_when(run.as_mut(), &clock, 2, ms(20)).await.is_none());
        assert!(finish(run).await.unwrap_err().is_deadline_exceeded());
        common::eventually("both attempts observed", || cut.0.lock().unwrap().len() == 2).await;
        assert_eq!(
            *cut.0.lock().unwrap(),
            [(1, false, ms(30)), (2, true, ms(20))],
            "attempt 1 failed on its own; attempt 2 was cut after 20 ms"
        );
    }
);

on_every_executor!(
    async fn a_retried_attempt_that_panics_ends_the_call_as_a_panic_not_as_cut_short(ex) {
        let cut = Cut::default();
        let ff = FailFast::builder()
            .executor(ex)
            .observer(cut.clone())
            .build()
            .unwrap();
        let group = ff.group(&Context::background());
        let call = group
            .idempotent("kv", |_ctx| async {
                if true {
                    panic!("corrupt row");
                }
                Ok::<u32, BoxError>(1)
            })
            .retry(retry(3, Duration::ZERO, Duration::ZERO, 1));
        let err = finish(group.run(call)).await.unwrap_err();
        assert!(matches!(err, Error::Panicked { .. }), "{err:?}");
        assert!(cut.0.lock().unwrap().is_empty(), "no attempt event: {:?}", cut.0.lock().unwrap());
    }
);

#[test]
fn a_retry_set_after_the_call_started_is_a_misuse() {
    futures::executor::block_on(async {
        let ff = FailFast::builder().build().unwrap(); // inline: the first poll starts every call
        let group = ff.group(&Context::background());
        let kv = group.idempotent("kv", |_ctx| async { Ok::<_, BoxError>(1) });
        let other = group.call("other", |_ctx| async { Ok::<_, BoxError>(2) });
        assert_eq!(group.run(other).await.unwrap(), 2);
        let err = kv
            .retry(Retry::builder().build().unwrap())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Misuse { .. }), "{err:?}");
        assert!(err.to_string().contains("retry policy"), "{err}");
    });
}

#[test]
fn bad_policies_are_build_errors() {
    assert_eq!(
        Retry::builder().attempts(0).build().unwrap_err(),
        BuildError::ZeroAttempts
    );
    assert_eq!(
        Retry::builder().backoff(ms(10), ms(5)).build().unwrap_err(),
        BuildError::BackoffMax
    );
    assert_eq!(
        Retry::builder().multiplier(0.9).build().unwrap_err(),
        BuildError::Multiplier
    );
    assert_eq!(
        Retry::builder().multiplier(f64::NAN).build().unwrap_err(),
        BuildError::Multiplier
    );
    assert_eq!(
        Retry::builder()
            .attempt_timeout(Duration::ZERO)
            .build()
            .unwrap_err(),
        BuildError::ZeroTimeout
    );
    assert_eq!(Budget::new(-0.1, 3).unwrap_err(), BuildError::BudgetRatio);
    assert_eq!(
        Budget::new(f64::NAN, 3).unwrap_err(),
        BuildError::BudgetRatio
    );
}

#[test]
fn every_failed_attempt_and_the_answer_are_logged_with_keys() {
    futures::executor::block_on(async {
        let clock = Manual::new();
        let capture = Capture::new();
        let ff = FailFast::builder()
            .timer(clock.clone())
            .logger(capture.clone())
            .build()
            .unwrap();
        let flaky = Flaky::new(&clock, 1, Duration::ZERO);
        let group = ff.group(&Context::background());
        let policy = retry(2, Duration::ZERO, Duration::ZERO, 1);
        let value = finish(group.run(group.idempotent("kv", flaky.attempt()).retry(policy)))
            .await
            .unwrap();
        assert_eq!(value, 2);
        let failed = capture.with_message("attempt failed, retrying");
        assert_eq!(failed.len(), 1);
        let keys = &failed[0].2;
        for key in ["service=kv", "attempt=1", "error=busy", "backoff_ms=0"] {
            assert!(keys.iter().any(|k| k == key), "{key} missing in {keys:?}");
        }
        let answered = capture.with_message("retried call answered");
        assert!(
            answered[0].2.iter().any(|k| k == "attempt=2"),
            "{answered:?}"
        );
    });
}

on_every_executor!(
    async fn a_retried_call_cut_at_its_own_timeout_says_it_timed_out(ex) {
        let clock = Manual::new();
        let ff = on_clock(ex, &clock).build().unwrap();
        let policy = Retry::builder()
            .attempts(5)
            .backoff(Duration::ZERO, Duration::ZERO)
            .attempt_timeout(ms(30))
            .build()
            .unwrap();
        let group = ff.group(&Context::background());
        let call = group
            .idempotent("kv", |_ctx| std::future::pending::<Result<u8, BoxError>>())
            .retry(policy)
            .timeout(ms(80));
        let mut run = pin!(group.run(call));
        // Attempts start at 0, 30 and 60 ms; the call's own deadline is at 80 ms, and so is
        // the third attempt's (never later than the call's).
        assert!(advance_when(run.as_mut(), &clock, 2, ms(30)).await.is_none());
        assert!(advance_when(run.as_mut(), &clock, 2, ms(30)).await.is_none());
        assert!(advance_when(run.as_mut(), &clock, 2, ms(20)).await.is_none());
        let err = finish(run).await.unwrap_err();
        assert!(matches!(&err, Error::TimedOut { .. }), "{err:?}");
        assert_eq!(err.service(), Some("kv"));
        assert_eq!(err.to_string(), "kv service timed out after 80.0ms");
    }
);
