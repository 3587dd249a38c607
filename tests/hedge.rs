//! Hedged requests: the schedule pinned in virtual time (hedge at the delay, the loser dropped
//! at the instant the winner answers), failures, the budget and the adaptive delay, on every
//! executor.

mod common;

use std::error::Error as _;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Capture, drive_until, finish, ms, on_clock, on_every_executor};
use failfast::executor::Inline;
use failfast::timer::Manual;
use failfast::{
    AttemptFinished, BoxError, Budget, BuildError, Context, GaveUp, Hedge, Observer, Retry,
    StopReason, Timer,
};
use futures::future::BoxFuture;

/// A service whose attempt `n` (from 1) sleeps `plan[n-1].0` of virtual time, then answers
/// `n` or fails; it counts the attempts dropped before they ended.
#[derive(Clone)]
struct Replica {
    clock: Manual,
    plan: Arc<Vec<(Duration, bool)>>,
    made: Arc<AtomicUsize>,
    dropped: Arc<Mutex<Vec<(usize, Duration)>>>,
}

/// Counts a dropped attempt (with the virtual time it was dropped at) unless it finished.
struct Guard {
    n: usize,
    replica: Replica,
    finished: bool,
}

impl Guard {
    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.finished {
            let at = self.replica.clock.elapsed();
            self.replica.dropped.lock().unwrap().push((self.n, at));
        }
    }
}

impl Replica {
    fn new(clock: &Manual, plan: &[(u64, bool)]) -> Replica {
        Replica {
            clock: clock.clone(),
            plan: Arc::new(plan.iter().map(|&(d, ok)| (ms(d), ok)).collect()),
            made: Arc::default(),
            dropped: Arc::default(),
        }
    }

    fn service(
        &self,
    ) -> impl FnMut(Context) -> BoxFuture<'static, Result<usize, BoxError>> + Send + 'static {
        let replica = self.clone();
        move |_ctx| {
            let n = replica.made.fetch_add(1, Ordering::SeqCst) + 1;
            let (delay, ok) = replica
                .plan
                .get(n - 1)
                .copied()
                .unwrap_or((ms(1_000_000), true));
            let mut guard = Guard {
                n,
                replica: replica.clone(),
                finished: false,
            };
            Box::pin(async move {
                guard.replica.clock.sleep(delay).await;
                guard.finish();
                if ok {
                    Ok(n)
                } else {
                    Err(format!("replica {n} failed").into())
                }
            })
        }
    }

    fn made(&self) -> usize {
        self.made.load(Ordering::SeqCst)
    }

    fn dropped(&self) -> Vec<(usize, Duration)> {
        self.dropped.lock().unwrap().clone()
    }
}

/// Records every attempt event: (attempt, hedge, failed, stopped, cancelled).
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Event>>>);

type Event = (u32, bool, bool, Option<StopReason>, bool);

impl Observer for Events {
    fn attempt_finished(&self, a: &AttemptFinished<'_>) {
        self.0.lock().unwrap().push((
            a.attempt,
            a.hedge,
            a.error.is_some(),
            a.stopped,
            a.cancelled,
        ));
    }
}

fn hedge(attempts: u32, delay: u64) -> Hedge {
    Hedge::builder()
        .attempts(attempts)
        .delay(ms(delay))
        .build()
        .unwrap()
}

/// `replica`'s service, keeping the context each attempt is given in `kept`.
fn keeping(
    kept: &Arc<Mutex<Vec<Context>>>,
    replica: &Replica,
) -> impl FnMut(Context) -> BoxFuture<'static, Result<usize, BoxError>> + Send + 'static {
    let kept = kept.clone();
    let mut service = replica.service();
    move |ctx: Context| {
        kept.lock().unwrap().push(ctx.clone());
        service(ctx)
    }
}

/// Drives `run` until `sleepers` are asleep on `clock`, then advances it by `by`.
async fn step<F: std::future::Future>(
    run: std::pin::Pin<&mut F>,
    clock: &Manual,
    sleepers: usize,
    by: u64,
) {
    assert!(
        drive_until(run, || clock.sleepers() == sleepers)
            .await
            .is_none()
    );
    clock.advance(ms(by));
}

on_every_executor!(
    async fn a_slow_first_attempt_is_hedged_at_the_delay_and_dropped_when_the_hedge_answers(ex) {
        let clock = Manual::new();
        let events = Events::default();
        let ff = on_clock(ex, &clock).observer(events.clone()).build().unwrap();
        let replica = Replica::new(&clock, &[(100, true), (5, true)]);
        let group = ff.group(&Context::background());
        let mut run = pin!(group.run(group.idempotent("kv", replica.service()).hedge(hedge(2, 10))));
        // t=0: attempt 1 (100 ms) and the hedge timer (10 ms) asleep.
        step(run.as_mut(), &clock, 2, 10).await;
        // t=10: the hedge started (5 ms); attempt 1 still asleep.
        step(run.as_mut(), &clock, 2, 5).await;
        assert_eq!(finish(run).await.unwrap(), 2, "the hedge won");
        assert_eq!(replica.made(), 2);
        common::eventually("the loser was dropped", || !replica.dropped().is_empty()).await;
        assert_eq!(replica.dropped(), [(1, ms(15))], "at the instant the winner answered");
        assert_eq!(
            *events.0.lock().unwrap(),
            [(2, true, false, None, false), (1, false, false, None, true)],
            "the winner, then the loser, cancelled"
        );
    }
);

on_every_executor!(
    async fn a_call_that_answers_before_the_delay_is_never_hedged(ex) {
        let clock = Manual::new();
        let ff = on_clock(ex, &clock).build().unwrap();
        let replica = Replica::new(&clock, &[(5, true)]);
        let group = ff.group(&Context::background());
        let mut run = pin!(group.run(group.idempotent("kv", replica.service()).hedge(hedge(3, 10))));
        step(run.as_mut(), &clock, 2, 5).await;
        assert_eq!(finish(run).await.unwrap(), 1);
        assert_eq!(replica.made(), 1);
    }
);

on_every_executor!(
    async fn a_failure_does_not_end_the_call_while_another_attempt_runs(ex) {
        let clock = Manual::new();
        let ff = on_clock(ex, &clock).build().unwrap();
        // Attempt 1 fails at t=50; the hedge (from t=10) answers at t=110.
        let replica = Replica::new(&clock, &[(50, false), (100, true)]);
        let group = ff.group(&Context::background());
        let mut run = pin!(group.run(group.idempotent("kv", replica.service()).hedge(hedge(2, 10))));
        step(run.as_mut(), &clock, 2, 10).await;
        step(run.as_mut(), &clock, 2, 40).await;
        step(run.as_mut(), &clock, 1, 60).await;
        assert_eq!(finish(run).await.unwrap(), 2);
    }
);

on_every_executor!(
    async fn a_failure_starts_the_next_attempt_at_once(ex) {
        let clock = Manual::new();
        let ff = on_clock(ex, &clock).build().unwrap();
        let replica = Replica::new(&clock, &[(5, false), (5, true)]);
        let group = ff.group(&Context::background());
        let mut run = pin!(group.run(group.idempotent("kv", replica.service()).hedge(hedge(3, 1000))));
        step(run.as_mut(), &clock, 2, 5).await; // attempt 1 fails at t=5: attempt 2 starts
        step(run.as_mut(), &clock, 2, 5).await;
        assert_eq!(finish(run).await.unwrap(), 2);
        assert_eq!(clock.elapsed(), ms(10), "no wait for the hedge delay");
    }
);

on_every_executor!(
    async fn when_every_attempt_fails_the_call_gives_up_with_the_last_error(ex) {
        let clock = Manual::new();
        let ff = on_clock(ex, &clock).build().unwrap();
        let replica = Replica::new(&clock, &[(5, false), (5, false)]);
        let group = ff.group(&Context::background());
        let mut run = pin!(group.run(group.idempotent("kv", replica.service()).hedge(hedge(2, 0))));
        step(run.as_mut(), &clock, 2, 5).await; // a zero delay: both attempts at once
        let err = finish(run).await.unwrap_err();
        let gave_up = err.source().unwrap().downcast_ref::<GaveUp>().unwrap();
        assert_eq!((gave_up.attempts, gave_up.reason), (2, StopReason::Exhausted));
        assert!(format!("{err:#}").contains("replica"), "{err:#}");
    }
);

on_every_executor!(
    async fn a_budget_that_refuses_means_no_hedge_and_says_so(ex) {
        let clock = Manual::new();
        let events = Events::default();
        let ff = on_clock(ex, &clock).observer(events.clone()).build().unwrap();
        let replica = Replica::new(&clock, &[(30, true)]);
        let policy = Hedge::builder()
            .attempts(2)
            .delay(ms(10))
            .budget(Budget::new(0.0, 0).unwrap())
            .build()
            .unwrap();
        let group = ff.group(&Context::background());
        let mut run = pin!(group.run(group.idempotent("kv", replica.service()).hedge(policy)));
        step(run.as_mut(), &clock, 2, 10).await;
        let refused = || !events.0.lock().unwrap().is_empty();
        assert!(drive_until(run.as_mut(), refused).await.is_none());
        step(run.as_mut(), &clock, 1, 20).await;
        assert_eq!(finish(run).await.unwrap(), 1);
        assert_eq!(replica.made(), 1);
        assert_eq!(
            events.0.lock().unwrap()[0],
            (2, true, false, Some(StopReason::Budget), false)
        );
    }
);

on_every_executor!(
    async fn the_adaptive_delay_hedges_at_the_percentile_of_recent_successes(ex) {
        let clock = Manual::new();
        let ff = on_clock(ex, &clock).build().unwrap();
        let policy = Hedge::builder()
            .attempts(2)
            .percentile(90.0)
            .window(Duration::from_secs(60), 5)
            .build()
            .unwrap();
        // Five calls answering in 20 ms: no hedge yet (too few samples before the fifth).
        for _ in 0..5 {
            let replica = Replica::new(&clock, &[(20, true)]);
            let group = ff.group(&Context::background());
            let mut run = pin!(group.run(group.idempotent("kv", replica.service()).hedge(policy.clone())));
            step(run.as_mut(), &clock, 1, 20).await;
            assert_eq!(finish(run).await.unwrap(), 1);
            assert_eq!(replica.made(), 1);
        }
        // Now a stuck first attempt is hedged at p90 = 20 ms.
        let replica = Replica::new(&clock, &[(1000, true), (20, true)]);
        let group = ff.group(&Context::background());
        let mut run = pin!(group.run(group.idempotent("kv", replica.service()).hedge(policy.clone())));
        step(run.as_mut(), &clock, 2, 20).await;
        step(run.as_mut(), &clock, 2, 20).await;
        assert_eq!(finish(run).await.unwrap(), 2);
    }
);

on_every_executor!(
    async fn the_adaptive_delay_hedges_exactly_at_the_p95_of_spread_out_latencies(ex) {
        let clock = Manual::new();
        let ff = on_clock(ex, &clock).build().unwrap();
        let policy = Hedge::builder()
            .attempts(2)
            .percentile(95.0)
            .window(Duration::from_secs(60), 20)
            .build()
            .unwrap();
        // Twenty calls answering in 1, 2, ..., 20 ms (none hedged: too few samples before).
        for latency in 1..=20 {
            let replica = Replica::new(&clock, &[(latency, true)]);
            let group = ff.group(&Context::background());
            let mut run = pin!(group.run(group.idempotent("kv", replica.service()).hedge(policy.clone())));
            step(run.as_mut(), &clock, 1, latency).await;
            assert_eq!(finish(run).await.unwrap(), 1);
        }
        // p95 of those twenty (nearest rank: the 19th smallest) is 19 ms: not a hedge at 18,
        // one at 19, and the hedge's answer wins.
        let replica = Replica::new(&clock, &[(1000, true), (5, true)]);
        let group = ff.group(&Context::background());
        let mut run = pin!(group.run(group.idempotent("kv", replica.service()).hedge(policy)));
        step(run.as_mut(), &clock, 2, 18).await;
        step(run.as_mut(), &clock, 2, 0).await;
        assert_eq!(replica.made(), 1, "hedged before the p95");
        step(run.as_mut(), &clock, 2, 1).await;
        step(run.as_mut(), &clock, 2, 5).await;
        assert_eq!(replica.made(), 2, "not hedged at the p95");
        assert_eq!(finish(run).await.unwrap(), 2);
    }
);

on_every_executor!(
    async fn retries_and_hedges_draw_on_one_shared_budget(ex) {
        let clock = Manual::new();
        let events = Events::default();
        let ff = on_clock(ex, &clock).observer(events.clone()).build().unwrap();
        // Half a retry or hedge per first attempt, no floor.
        let budget = Budget::new(0.5, 0).unwrap();
        let retry = Retry::builder()
            .attempts(2)
            .backoff(Duration::ZERO, Duration::ZERO)
            .budget(budget.clone())
            .build()
            .unwrap();
        let hedge = Hedge::builder()
            .attempts(2)
            .delay(ms(10))
            .budget(budget)
            .build()
            .unwrap();
        let answer_now = || Replica::new(&clock, &[(0, true)]);
        // Two first attempts: 1 token.
        for _ in 0..2 {
            let replica = answer_now();
            let group = ff.group(&Context::background());
            let call = group.idempotent("kv", replica.service()).retry(retry.clone());
            assert_eq!(finish(group.run(call)).await.unwrap(), 1);
        }
        // A third first attempt (1.5 tokens): its hedge is granted, and wins.
        let replica = Replica::new(&clock, &[(1000, true), (5, true)]);
        let group = ff.group(&Context::background());
        let mut run = pin!(group.run(group.idempotent("kv", replica.service()).hedge(hedge.clone())));
        step(run.as_mut(), &clock, 2, 10).await;
        assert!(drive_until(run.as_mut(), || replica.made() == 2).await.is_none());
        step(run.as_mut(), &clock, 2, 5).await;
        assert_eq!(finish(run).await.unwrap(), 2, "the hedge was granted");
        // A fourth (2 tokens, 1 spent): its retry is granted.
        let replica = Replica::new(&clock, &[(0, false), (0, true)]);
        let group = ff.group(&Context::background());
        let call = group.idempotent("kv", replica.service()).retry(retry);
        assert_eq!(finish(group.run(call)).await.unwrap(), 2, "the retry was granted");
        // A fifth (2.5 tokens, 2 spent): its hedge is refused, and the first attempt answers.
        let replica = Replica::new(&clock, &[(20, true)]);
        let group = ff.group(&Context::background());
        let mut run = pin!(group.run(group.idempotent("kv", replica.service()).hedge(hedge)));
        let refusals = || -> Vec<Event> {
            let events = events.0.lock().unwrap();
            let refused = events.iter().filter(|event| event.3 == Some(StopReason::Budget));
            refused.copied().collect()
        };
        step(run.as_mut(), &clock, 2, 10).await;
        assert!(drive_until(run.as_mut(), || !refusals().is_empty()).await.is_none());
        step(run.as_mut(), &clock, 1, 10).await;
        assert_eq!(finish(run).await.unwrap(), 1);
        assert_eq!(replica.made(), 1, "the hedge was refused");
        assert_eq!(refusals(), [(2, true, false, Some(StopReason::Budget), false)]);
    }
);

on_every_executor!(
    async fn each_attempt_gets_its_own_child_context_cancelled_when_it_ends(ex) {
        let clock = Manual::new();
        let ff = on_clock(ex, &clock).build().unwrap();
        let kept: Arc<Mutex<Vec<Context>>> = Arc::default();
        let contexts = || kept.lock().unwrap().clone();
        let cancelled = |contexts: &[Context]| -> Vec<bool> {
            contexts.iter().map(Context::is_cancelled).collect()
        };

        // Hedged: the hedge fails at t=15 while attempt 1 runs on until t=100.
        let replica = Replica::new(&clock, &[(100, true), (5, false)]);
        let group = ff.group(&Context::background());
        let mut run = pin!(group.run(group.idempotent("kv", keeping(&kept, &replica)).hedge(hedge(2, 10))));
        step(run.as_mut(), &clock, 2, 10).await;
        step(run.as_mut(), &clock, 2, 5).await;
        let failed_one_cancelled = || cancelled(&contexts()) == [false, true];
        assert!(drive_until(run.as_mut(), failed_one_cancelled).await.is_none());
        assert_eq!(cancelled(&contexts()), [false, true], "only the failed attempt's");
        step(run.as_mut(), &clock, 1, 85).await;
        assert_eq!(finish(run).await.unwrap(), 1);
        assert_eq!(cancelled(&contexts()), [true, true], "every attempt ended");

        // Retried: attempt 1 fails at t=5; attempt 2 runs from t=5 to t=15.
        kept.lock().unwrap().clear();
        let replica = Replica::new(&clock, &[(5, false), (10, true)]);
        let retry = Retry::builder()
            .attempts(2)
            .backoff(Duration::ZERO, Duration::ZERO)
            .build()
            .unwrap();
        let group = ff.group(&Context::background());
        let mut run = pin!(group.run(group.idempotent("kv", keeping(&kept, &replica)).retry(retry)));
        step(run.as_mut(), &clock, 1, 5).await;
        let second_running = || cancelled(&contexts()) == [true, false];
        assert!(drive_until(run.as_mut(), second_running).await.is_none());
        assert_eq!(cancelled(&contexts()), [true, false], "a fresh context for attempt 2");
        step(run.as_mut(), &clock, 1, 10).await;
        assert_eq!(finish(run).await.unwrap(), 2);
    }
);

on_every_executor!(
    async fn the_groups_deadline_cancels_every_attempt(ex) {
        let clock = Manual::new();
        let events = Events::default();
        let ff = on_clock(ex, &clock)
            .timeout(ms(50))
            .observer(events.clone())
            .build()
            .unwrap();
        let replica = Replica::new(&clock, &[(1000, true), (1000, true)]);
        let group = ff.group(&Context::background());
        let mut run = pin!(group.run(group.idempotent("kv", replica.service()).hedge(hedge(2, 10))));
        step(run.as_mut(), &clock, 3, 10).await; // deadline, attempt 1, hedge timer
        step(run.as_mut(), &clock, 3, 40).await; // deadline, attempts 1 and 2
        assert!(finish(run).await.unwrap_err().is_deadline_exceeded());
        common::eventually("both attempts dropped", || replica.dropped().len() == 2).await;
        // Each attempt has its event: cut short, unfinished.
        common::eventually("both attempts observed", || events.0.lock().unwrap().len() == 2).await;
        std::thread::sleep(ms(20)); // time for a duplicate to show up, if there were one
        let mut seen = events.0.lock().unwrap().clone();
        seen.sort_unstable_by_key(|event| event.0);
        assert_eq!(
            seen,
            [(1, false, false, None, true), (2, true, false, None, true)]
        );
    }
);

#[test]
fn bad_hedges_are_build_errors() {
    assert_eq!(
        Hedge::builder().attempts(0).build().unwrap_err(),
        BuildError::ZeroAttempts
    );
    for bad in [0.0, 100.0, -5.0, f64::NAN] {
        assert_eq!(
            Hedge::builder().percentile(bad).build().unwrap_err(),
            BuildError::Percentile
        );
    }
    assert!(
        Hedge::builder().delay(Duration::ZERO).build().is_ok(),
        "zero: all at once"
    );
    assert_eq!(
        Hedge::builder()
            .percentile(95.0)
            .window(Duration::ZERO, 10)
            .build()
            .unwrap_err(),
        BuildError::ZeroWindow
    );
    assert!(
        Hedge::builder()
            .percentile(95.0)
            .window(ms(1), 0)
            .build()
            .is_ok(),
        "zero samples: counts as one"
    );
}

on_every_executor!(
    async fn a_panicking_hedge_ends_that_attempt_only(ex) {
        let clock = Manual::new();
        let ff = on_clock(ex, &clock).build().unwrap();
        let made = Arc::new(AtomicUsize::new(0));
        let group = ff.group(&Context::background());
        let (counter, sleeper) = (made.clone(), clock.clone());
        let call = group
            .idempotent("kv", move |_ctx| {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let clock = sleeper.clone();
                async move {
                    if n == 1 {
                        clock.sleep(ms(30)).await;
                        Ok::<_, BoxError>(1)
                    } else {
                        clock.sleep(ms(1)).await;
                        panic!("the hedge exploded")
                    }
                }
            })
            .hedge(hedge(3, 10));
        let mut run = pin!(group.run(call));
        step(run.as_mut(), &clock, 2, 10).await; // t=10: the hedge starts
        step(run.as_mut(), &clock, 3, 1).await; // t=11: it panics; attempt 1 runs on
        step(run.as_mut(), &clock, 1, 19).await; // no third attempt after a panic
        assert_eq!(finish(run).await.unwrap(), 1);
        assert_eq!(made.load(Ordering::SeqCst), 2);
    }
);

#[test]
fn every_hedge_and_what_follows_a_failed_attempt_are_logged_with_keys() {
    futures::executor::block_on(async {
        let clock = Manual::new();
        let capture = Capture::new();
        let ff = on_clock(Inline, &clock)
            .logger(capture.clone())
            .build()
            .unwrap();

        // t=10 the timer hedges; t=15 the hedge fails and the third attempt starts at once;
        // t=20 it answers and the first is cancelled.
        let replica = Replica::new(&clock, &[(50, false), (5, false), (5, true)]);
        let group = ff.group(&Context::background());
        let mut run = pin!(
            group.run(
                group
                    .idempotent("kv", replica.service())
                    .hedge(hedge(3, 10))
            )
        );
        step(run.as_mut(), &clock, 2, 10).await;
        step(run.as_mut(), &clock, 3, 5).await;
        step(run.as_mut(), &clock, 2, 5).await;
        assert_eq!(finish(run).await.unwrap(), 3);
        let keys_of = |message: &str| -> Vec<Vec<String>> {
            capture
                .with_message(message)
                .into_iter()
                .map(|(_, _, keys)| keys)
                .collect()
        };
        let has = |keys: &[String], key: &str| keys.iter().any(|k| k == key);
        let hedged = keys_of("no answer yet, hedging");
        assert_eq!(hedged.len(), 1, "{:?}", capture.lines());
        assert!(has(&hedged[0], "service=kv") && has(&hedged[0], "attempt=2"));
        let at_once = keys_of("attempt failed, hedging at once");
        assert_eq!(at_once.len(), 1, "{:?}", capture.lines());
        assert!(has(&at_once[0], "attempt=2") && has(&at_once[0], "error=replica 2 failed"));
        let answered = keys_of("hedged call answered, cancelling the other attempts");
        assert!(has(&answered[0], "attempt=3"), "{answered:?}");
        assert!(
            keys_of("no attempts left").is_empty(),
            "{:?}",
            capture.lines()
        );

        // A failed hedge while the first attempt still runs: nothing new starts, nothing ends.
        let replica = Replica::new(&clock, &[(100, true), (5, false)]);
        let group = ff.group(&Context::background());
        let mut run = pin!(
            group.run(
                group
                    .idempotent("kv", replica.service())
                    .hedge(hedge(2, 10))
            )
        );
        step(run.as_mut(), &clock, 2, 10).await;
        step(run.as_mut(), &clock, 2, 5).await;
        step(run.as_mut(), &clock, 1, 85).await;
        assert_eq!(finish(run).await.unwrap(), 1);
        let waiting = keys_of("attempt failed, other attempts still running");
        assert_eq!(waiting.len(), 1, "{:?}", capture.lines());
        assert!(has(&waiting[0], "attempt=2"));

        // A hedge the budget refuses: logged at info, with the attempts made so far.
        let refusing = Hedge::builder()
            .attempts(2)
            .delay(ms(10))
            .budget(Budget::new(0.0, 0).unwrap())
            .build()
            .unwrap();
        let replica = Replica::new(&clock, &[(20, true)]);
        let group = ff.group(&Context::background());
        let mut run = pin!(group.run(group.idempotent("kv", replica.service()).hedge(refusing)));
        step(run.as_mut(), &clock, 2, 10).await;
        step(run.as_mut(), &clock, 1, 10).await;
        assert_eq!(finish(run).await.unwrap(), 1);
        let refused = capture.with_message("hedge refused by the budget");
        assert_eq!(refused.len(), 1, "{:?}", capture.lines());
        assert_eq!(refused[0].0, log::Level::Info);
        assert!(has(&refused[0].2, "attempts=1"), "{refused:?}");
    });
}
