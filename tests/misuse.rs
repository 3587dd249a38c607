//! Every public constructor and setter given its worst input: zero and huge durations,
//! deadlines at the very start and end of what an `Instant` can hold, contexts already
//! cancelled, cancel handles raced from many threads, executors and loggers that panic. Each
//! gives a clear error or its documented behaviour, never a panic or a hang: every wait here is
//! bounded by `common::HANG`.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::{HANG, drive_for, drive_until, eventually, finish, ms, on_every_executor};
use failfast::mock::{Calls, Mock};
use failfast::timer::Manual;
use failfast::{
    AggregateError, Context, Dashboard, Profile, Timer, UserAggregator, executor, mock, timer,
};
use futures::FutureExt;
use futures::executor::block_on;
use futures::future::{BoxFuture, FusedFuture};

/// The latest `Instant` this platform can represent.
fn end_of_time() -> Instant {
    let now = Instant::now();
    let secs = last_true(u64::MAX, |s| {
        now.checked_add(Duration::from_secs(s)).is_some()
    });
    let base = now + Duration::from_secs(secs);
    let nanos = last_true(999_999_999, |n| {
        base.checked_add(Duration::from_nanos(n)).is_some()
    });
    base + Duration::from_nanos(nanos)
}

/// The earliest `Instant` this platform can represent.
fn start_of_time() -> Instant {
    let now = Instant::now();
    let secs = last_true(u64::MAX, |s| {
        now.checked_sub(Duration::from_secs(s)).is_some()
    });
    let base = now - Duration::from_secs(secs);
    let nanos = last_true(999_999_999, |n| {
        base.checked_sub(Duration::from_nanos(n)).is_some()
    });
    base - Duration::from_nanos(nanos)
}

/// The largest `x` in `0..=max` for which `holds(x)`, given that it holds for 0 and stops
/// holding from some point on.
fn last_true(max: u64, holds: impl Fn(u64) -> bool) -> u64 {
    let (mut low, mut high) = (0, max);
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        if holds(mid) {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    low
}

/// Durations too long to add to any `Instant` from now on.
fn unrepresentable() -> [Duration; 3] {
    [
        Duration::MAX,
        Duration::from_secs(u64::MAX),
        end_of_time().duration_since(Instant::now()) + Duration::from_secs(1),
    ]
}

/// An inline aggregator whose services and clock are on timer `T`.
type OnTimer<T> = UserAggregator<Mock<Profile, T>, Mock<u32, T>, executor::Inline, T>;

/// An inline aggregator on `timer` whose two services never answer, and their counters.
fn hanging_on<T: Timer>(timer: T, timeout: Duration) -> (OnTimer<T>, [Calls; 2]) {
    let profiles = mock::profile("Alice").hang().timer(timer.clone());
    let orders = mock::orders(5).hang().timer(timer.clone());
    let calls = [profiles.calls(), orders.calls()];
    let agg = UserAggregator::builder(profiles, orders)
        .timer(timer)
        .timeout(timeout)
        .build()
        .expect("a non-zero timeout is valid");
    (agg, calls)
}

fn started(calls: &[Calls]) -> usize {
    calls.iter().map(Calls::started).sum()
}

fn in_flight(calls: &[Calls]) -> usize {
    calls.iter().map(Calls::in_flight).sum()
}

/// A multi-threaded tokio runtime with its time driver, for `timer::Tokio`.
#[cfg(feature = "tokio")]
fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .expect("tokio runtime")
}

/// Calls the generic function `$check(name, timer)` with each real-time timer the enabled
/// features provide.
macro_rules! with_every_real_timer {
    ($check:ident) => {{
        $check("FuturesTimer", timer::FuturesTimer);
        #[cfg(any(feature = "smol", feature = "async-std"))]
        $check("AsyncIo", timer::AsyncIo);
        #[cfg(feature = "tokio")]
        {
            let runtime = tokio_runtime();
            $check("Tokio", timer::Tokio::new(runtime.handle().clone()));
        }
    }};
}

// ---------------------------------------------------------------------------------------------
// The builder's timeout.

#[test]
fn a_one_nanosecond_timeout_still_answers_calls_that_are_ready_at_once() {
    // Inline, both calls answer on the first poll, before the deadline is looked at: answers
    // win ties.
    let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
        .timeout(Duration::from_nanos(1))
        .build()
        .unwrap();
    let dashboard = block_on(agg.aggregate(&Context::background(), 1)).unwrap();
    assert_eq!(dashboard.to_string(), "User: Alice | Orders: 5");
}

on_every_executor!(
    async fn a_one_nanosecond_timeout_times_out_hanging_calls_and_cancels_them(ex) {
        let profiles = mock::profile("Alice").hang();
        let orders = mock::orders(5).hang();
        let calls = [profiles.calls(), orders.calls()];
        let agg = UserAggregator::builder(profiles, orders)
            .executor(ex)
            .timeout(Duration::from_nanos(1))
            .build()
            .unwrap();
        let err = finish(agg.aggregate(&Context::background(), 1)).await.unwrap_err();
        assert!(err.is_deadline_exceeded(), "{err:?}");
        eventually("no call is left running", || in_flight(&calls) == 0).await;
    }
);

#[test]
fn every_unrepresentable_timeout_builds_and_only_the_callers_cancel_or_deadline_ends_it() {
    for timeout in unrepresentable() {
        let clock = Manual::new();
        let (agg, calls) = hanging_on(clock.clone(), timeout);
        assert_eq!(agg.timeout(), timeout, "reported back unchanged");
        let (ctx, cancel) = Context::background().with_cancel();
        block_on(async {
            let mut aggregate = pin!(agg.aggregate(&ctx, 1));
            let both_started = || started(&calls) == 2;
            assert!(
                drive_until(aggregate.as_mut(), both_started)
                    .await
                    .is_none()
            );
            assert_eq!(clock.sleepers(), 0, "{timeout:?}: armed a deadline");
            cancel.cancel();
            let err = finish(aggregate).await.unwrap_err();
            assert!(err.is_cancelled(), "{timeout:?}: {err:?}");
        });
        assert_eq!(in_flight(&calls), 0);
    }
}

fn enforces_the_callers_deadline_under_a_duration_max_timeout<T: Timer>(name: &str, timer: T) {
    let (agg, calls) = hanging_on(timer, Duration::MAX);
    let ctx = Context::background().with_timeout(ms(50));
    let start = Instant::now();
    let err = block_on(finish(agg.aggregate(&ctx, 1))).unwrap_err();
    assert!(err.is_deadline_exceeded(), "{name}: {err:?}");
    assert!(
        start.elapsed() >= ms(50),
        "{name}: early, {:?}",
        start.elapsed()
    );
    assert_eq!(in_flight(&calls), 0, "{name}");
}

#[test]
fn every_timer_enforces_the_callers_deadline_under_a_duration_max_timeout() {
    with_every_real_timer!(enforces_the_callers_deadline_under_a_duration_max_timeout);
}

fn waits_out_a_far_but_representable_timeout<T: Timer>(name: &str, timer: T) {
    let century = Duration::from_secs(99 * 365 * 24 * 60 * 60);
    let almost_forever = end_of_time().duration_since(Instant::now()) - Duration::from_secs(3600);
    for timeout in [century, almost_forever] {
        let (agg, calls) = hanging_on(timer.clone(), timeout);
        let (ctx, cancel) = Context::background().with_cancel();
        block_on(async {
            let mut aggregate = pin!(agg.aggregate(&ctx, 1));
            let early = drive_for(aggregate.as_mut(), ms(20)).await;
            assert!(early.is_none(), "{name}, {timeout:?}: {early:?}");
            cancel.cancel();
            let err = finish(aggregate).await.unwrap_err();
            assert!(err.is_cancelled(), "{name}, {timeout:?}: {err:?}");
        });
        assert_eq!(in_flight(&calls), 0, "{name}");
    }
}

#[test]
fn every_timer_arms_a_timeout_of_a_century_or_an_hour_short_of_the_end_of_time() {
    with_every_real_timer!(waits_out_a_far_but_representable_timeout);
    waits_out_a_far_but_representable_timeout("Manual", Manual::new());
}

// ---------------------------------------------------------------------------------------------
// Context deadlines.

#[test]
fn a_context_with_a_zero_timeout_fails_an_aggregate_at_once_and_starts_nothing() {
    let (agg, calls) = hanging_on(timer::FuturesTimer, Duration::from_secs(1));
    let ctx = Context::background().with_timeout(Duration::ZERO);
    assert!(ctx.deadline().is_some());
    let err = block_on(agg.aggregate(&ctx, 1)).unwrap_err();
    assert!(
        matches!(err, AggregateError::DeadlineExceeded { elapsed } if elapsed.is_zero()),
        "{err:?}"
    );
    assert_eq!(started(&calls), 0);
}

#[test]
fn context_with_any_unrepresentable_timeout_keeps_the_deadline_it_had() {
    let parent = Context::background().with_timeout(Duration::from_secs(1));
    for timeout in unrepresentable() {
        assert_eq!(Context::background().with_timeout(timeout).deadline(), None);
        assert_eq!(parent.with_timeout(timeout).deadline(), parent.deadline());
    }
}

#[test]
fn deadlines_at_the_start_and_end_of_time_are_kept_and_the_earlier_one_wins() {
    let (start, end) = (start_of_time(), end_of_time());
    let past = Context::background().with_deadline(start);
    let future = Context::background().with_deadline(end);
    assert_eq!(past.deadline(), Some(start));
    assert_eq!(future.deadline(), Some(end));
    assert_eq!(past.with_deadline(end).deadline(), Some(start));
    assert_eq!(future.with_deadline(start).deadline(), Some(start));
    assert_eq!(future.with_timeout(Duration::MAX).deadline(), Some(end));
    let soon = future
        .with_timeout(Duration::from_secs(1))
        .deadline()
        .unwrap();
    assert!(soon < end);
    let _ = format!("{past:?} {future:?}");
}

#[test]
fn an_aggregate_under_a_deadline_at_the_start_of_time_fails_at_once_and_starts_nothing() {
    let (agg, calls) = hanging_on(timer::FuturesTimer, Duration::from_secs(1));
    let ctx = Context::background().with_deadline(start_of_time());
    let err = block_on(agg.aggregate(&ctx, 1)).unwrap_err();
    assert!(
        matches!(err, AggregateError::DeadlineExceeded { elapsed } if elapsed.is_zero()),
        "{err:?}"
    );
    assert_eq!(started(&calls), 0);
}

/// With no timeout of its own, an aggregate under a deadline at the end of time waits (here
/// for hanging calls) until its caller cancels: the timer neither fires nor panics.
fn waits_for_a_deadline_at_the_end_of_time<T: Timer>(name: &str, timer: T) {
    let end = end_of_time();
    let sleep = catch_unwind(AssertUnwindSafe(|| timer.sleep_until(end).now_or_never()));
    assert!(
        matches!(sleep, Ok(None)),
        "{name}: a sleep until the end of time must stay pending, not fire or panic"
    );

    let (agg, calls) = hanging_on(timer, Duration::MAX);
    let (ctx, cancel) = Context::background().with_cancel();
    let ctx = ctx.with_deadline(end);
    block_on(async {
        let mut aggregate = pin!(agg.aggregate(&ctx, 1));
        let early = drive_for(aggregate.as_mut(), ms(30)).await;
        assert!(early.is_none(), "{name}: ended early: {early:?}");
        cancel.cancel();
        let err = finish(aggregate).await.unwrap_err();
        assert!(err.is_cancelled(), "{name}: {err:?}");
    });
    assert_eq!(in_flight(&calls), 0, "{name}");
}

#[test]
fn a_context_deadline_at_the_end_of_time_waits_on_futures_timer_async_io_and_manual() {
    waits_for_a_deadline_at_the_end_of_time("FuturesTimer", timer::FuturesTimer);
    #[cfg(any(feature = "smol", feature = "async-std"))]
    waits_for_a_deadline_at_the_end_of_time("AsyncIo", timer::AsyncIo);
    waits_for_a_deadline_at_the_end_of_time("Manual", Manual::new());
}

#[cfg(feature = "tokio")]
#[test]
fn a_context_deadline_at_the_end_of_time_waits_on_the_tokio_timer_too() {
    let runtime = tokio_runtime();
    waits_for_a_deadline_at_the_end_of_time("Tokio", timer::Tokio::new(runtime.handle().clone()));
}

#[test]
fn advancing_a_manual_clock_by_duration_max_reaches_even_a_deadline_at_the_end_of_time() {
    // Documented: advancing beyond what an Instant can hold stops at the latest deadline.
    let clock = Manual::new();
    let (agg, calls) = hanging_on(clock.clone(), Duration::MAX);
    let end = end_of_time();
    let ctx = Context::background().with_deadline(end);
    let start = clock.now();
    let err = block_on(async {
        let mut aggregate = pin!(agg.aggregate(&ctx, 1));
        let armed = || clock.sleepers() == 1 && started(&calls) == 2;
        assert!(drive_until(aggregate.as_mut(), armed).await.is_none());
        clock.advance(Duration::MAX);
        finish(aggregate).await.unwrap_err()
    });
    assert!(
        matches!(err, AggregateError::DeadlineExceeded { elapsed } if elapsed == end - start),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with("deadline exceeded after "),
        "{err}"
    );
    assert_eq!(clock.now(), end);
    assert_eq!(in_flight(&calls), 0);
}

#[test]
fn a_context_both_cancelled_and_past_its_deadline_reports_whichever_came_first() {
    // Its deadline passed long before the cancel: the deadline, as the context's `err()` says.
    let (agg, calls) = hanging_on(timer::FuturesTimer, Duration::from_secs(1));
    let (ctx, cancel) = Context::background().with_cancel();
    let ctx = ctx.with_deadline(start_of_time());
    cancel.cancel();
    let err = block_on(agg.aggregate(&ctx, 1)).unwrap_err();
    assert!(
        matches!(err, AggregateError::DeadlineExceeded { elapsed } if elapsed.is_zero()),
        "{err:?}"
    );
    // Cancelled before its deadline, and both are past when the aggregate starts: the
    // cancellation. (On a virtual clock: the cancel comes before the deadline, however slow
    // the machine.)
    let clock = timer::Manual::new();
    let (ctx, cancel) = Context::background()
        .with_timer(clock.clone())
        .with_cancel();
    let ctx = ctx.with_deadline(clock.now() + Duration::from_millis(5));
    cancel.cancel();
    clock.advance(Duration::from_millis(20));
    let err = block_on(agg.aggregate(&ctx, 1)).unwrap_err();
    assert!(
        matches!(err, AggregateError::Cancelled { elapsed, .. } if elapsed.is_zero()),
        "{err:?}"
    );
    assert_eq!(started(&calls), 0);
}

// ---------------------------------------------------------------------------------------------
// Cancellation.

#[test]
fn context_cancelled_never_completes_on_background_and_can_be_polled_again_once_done() {
    let background = Context::background();
    let mut never = pin!(background.cancelled());
    assert!(block_on(drive_for(never.as_mut(), ms(20))).is_none());
    assert!(!never.is_terminated());

    let (ctx, cancel) = Context::background().with_cancel();
    let mut done = pin!(ctx.cancelled());
    cancel.cancel();
    block_on(finish(done.as_mut()));
    assert!(done.is_terminated());
    assert_eq!(
        done.as_mut().now_or_never(),
        Some(()),
        "polled again after completing"
    );
    cancel.cancel();
    assert_eq!(done.now_or_never(), Some(()));
}

#[test]
fn cancelling_twice_through_clones_after_the_aggregate_answered_changes_nothing() {
    let profiles = mock::profile("Alice");
    let profile_calls = profiles.calls();
    let agg = UserAggregator::builder(profiles, mock::orders(5))
        .build()
        .unwrap();
    let (ctx, cancel) = Context::background().with_cancel();
    let dashboard = block_on(agg.aggregate(&ctx, 1)).unwrap();

    cancel.cancel();
    cancel.cancel();
    cancel.clone().cancel();
    assert!(cancel.is_cancelled() && ctx.is_cancelled());
    assert_eq!(dashboard.to_string(), "User: Alice | Orders: 5");
    let err = block_on(agg.aggregate(&ctx, 2)).unwrap_err();
    assert!(err.is_cancelled(), "{err:?}");
    assert_eq!(
        profile_calls.started(),
        1,
        "the second aggregate started nothing"
    );
}

#[test]
fn a_cancel_handle_outliving_every_context_it_cancels_still_cancels_quietly() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (grandchild, _) = ctx.with_timeout(Duration::from_secs(1)).with_cancel();
    drop((ctx, grandchild));
    cancel.cancel();
    cancel.cancel();
    assert!(cancel.is_cancelled());
    assert_eq!(format!("{cancel:?}"), "CancelHandle { cancelled: true }");

    // Dropping a handle unused does not cancel (documented).
    let (ctx, unused) = Context::background().with_cancel();
    drop(unused);
    assert!(!ctx.is_cancelled());
}

#[test]
fn cancel_handles_raced_from_many_threads_reach_every_context_created_meanwhile() {
    const CANCELLERS: usize = 4;
    const MAKERS: usize = 4;
    const WAITERS: usize = 4;
    let (root, cancel) = Context::background().with_cancel();
    let barrier = Arc::new(Barrier::new(CANCELLERS + MAKERS + WAITERS));
    let (report, reports) = mpsc::channel::<Result<Vec<Context>, String>>();

    for _ in 0..CANCELLERS {
        let (cancel, barrier, report) = (cancel.clone(), barrier.clone(), report.clone());
        thread::spawn(move || {
            barrier.wait();
            for _ in 0..100 {
                cancel.cancel();
            }
            let _ = report.send(Ok(Vec::new()));
        });
    }
    for _ in 0..MAKERS {
        let (root, barrier, report) = (root.clone(), barrier.clone(), report.clone());
        thread::spawn(move || {
            barrier.wait();
            let made = (0..1_000)
                .map(|_| root.with_cancel().0.with_cancel().0)
                .collect();
            let _ = report.send(Ok(made));
        });
    }
    for _ in 0..WAITERS {
        let (child, barrier, report) = (root.with_cancel().0, barrier.clone(), report.clone());
        thread::spawn(move || {
            barrier.wait();
            let woken = block_on(async {
                futures::select_biased! {
                    () = child.cancelled() => true,
                    () = futures_timer::Delay::new(HANG).fuse() => false,
                }
            });
            let _ = report.send(if woken {
                Ok(vec![child])
            } else {
                Err("a waiter was not woken".into())
            });
        });
    }

    // Once every thread is done (every cancel has returned), every context made meanwhile,
    // before, during or after the cancels, is cancelled.
    let mut made = Vec::new();
    for _ in 0..CANCELLERS + MAKERS + WAITERS {
        let contexts = reports
            .recv_timeout(HANG + Duration::from_secs(1))
            .expect("a thread hung");
        made.extend(contexts.unwrap());
    }
    assert_eq!(made.len(), MAKERS * 1_000 + WAITERS);
    let missed = made.iter().filter(|ctx| !ctx.is_cancelled()).count();
    assert_eq!(missed, 0, "contexts left uncancelled");
    assert!(root.is_cancelled());
    assert!(root.with_cancel().0.is_cancelled(), "born cancelled");
}

#[test]
fn aggregates_on_many_threads_under_one_context_all_end_when_cancels_race_in() {
    const AGGREGATES: usize = 8;
    const CANCELLERS: usize = 8;
    let profiles = mock::profile("Alice").hang();
    let orders = mock::orders(5).hang();
    let calls = [profiles.calls(), orders.calls()];
    // The timeout only backs up a broken cancellation: then the test fails, it does not hang.
    let agg = Arc::new(
        UserAggregator::builder(profiles, orders)
            .timeout(HANG)
            .build()
            .unwrap(),
    );
    let (ctx, cancel) = Context::background().with_cancel();
    let (report, results) = mpsc::channel();
    for id in 0..AGGREGATES {
        let (agg, ctx, report) = (agg.clone(), ctx.clone(), report.clone());
        thread::spawn(move || {
            let _ = report.send(block_on(agg.aggregate(&ctx, id as u64)));
        });
    }
    let start = Instant::now();
    while started(&calls) < 2 * AGGREGATES {
        assert!(start.elapsed() < HANG, "the aggregates did not start");
        thread::sleep(ms(1));
    }

    let barrier = Arc::new(Barrier::new(CANCELLERS));
    for _ in 0..CANCELLERS {
        let (cancel, barrier) = (cancel.clone(), barrier.clone());
        thread::spawn(move || {
            barrier.wait();
            cancel.cancel();
        });
    }
    for _ in 0..AGGREGATES {
        let result = results
            .recv_timeout(HANG + HANG)
            .expect("an aggregate hung");
        assert!(
            result.as_ref().is_err_and(AggregateError::is_cancelled),
            "{result:?}"
        );
    }
    assert_eq!(in_flight(&calls), 0);
    assert_eq!(calls[0].cancelled() + calls[1].cancelled(), 2 * AGGREGATES);
}

// ---------------------------------------------------------------------------------------------
// Timers and mocks.

fn cuts_off_a_mock_delayed_by_duration_max<T: Timer>(name: &str, timer: T) {
    let profiles = mock::profile("Alice")
        .delay(Duration::MAX)
        .timer(timer.clone());
    let orders = mock::orders(5).delay(Duration::MAX).timer(timer.clone());
    let calls = [profiles.calls(), orders.calls()];
    let agg = UserAggregator::builder(profiles, orders)
        .timer(timer)
        .timeout(ms(50))
        .build()
        .unwrap();
    let err = block_on(finish(agg.aggregate(&Context::background(), 1))).unwrap_err();
    assert!(err.is_deadline_exceeded(), "{name}: {err:?}");
    let ended: Vec<_> = calls
        .iter()
        .map(|c| (c.started(), c.finished(), c.cancelled()))
        .collect();
    assert_eq!(ended, [(1, 0, 1), (1, 0, 1)], "{name}");
}

#[test]
fn a_mock_delayed_by_duration_max_is_cut_off_by_every_timers_deadline() {
    with_every_real_timer!(cuts_off_a_mock_delayed_by_duration_max);
}

#[test]
fn advancing_a_manual_clock_by_duration_max_times_out_at_the_deadline_not_at_the_end_of_time() {
    let clock = Manual::new();
    let profiles = mock::profile("Alice")
        .delay(Duration::MAX)
        .timer(clock.clone());
    let orders = mock::orders(5).delay(Duration::MAX).timer(clock.clone());
    let calls = [profiles.calls(), orders.calls()];
    let agg = UserAggregator::builder(profiles, orders)
        .timer(clock.clone())
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let background = Context::background();
    let err = block_on(async {
        let mut aggregate = pin!(agg.aggregate(&background, 1));
        let both_started = || started(&calls) == 2;
        assert!(
            drive_until(aggregate.as_mut(), both_started)
                .await
                .is_none()
        );
        assert_eq!(
            clock.sleepers(),
            1,
            "sleeps of Duration::MAX are never registered"
        );
        clock.advance(Duration::MAX);
        finish(aggregate).await.unwrap_err()
    });
    assert!(
        matches!(err, AggregateError::DeadlineExceeded { elapsed } if elapsed == Duration::from_secs(1)),
        "{err:?}"
    );
    assert_eq!(clock.elapsed(), Duration::from_secs(1));
    assert_eq!(calls[0].cancelled() + calls[1].cancelled(), 2);
}

#[test]
fn a_manual_clock_survives_being_advanced_to_the_end_of_time() {
    let clock = Manual::new();
    let start = clock.now();
    clock.advance(Duration::MAX);
    assert_eq!(clock.now(), start, "nothing registered: the clock stays");

    let end = end_of_time();
    let mut last = pin!(clock.sleep_until(end));
    let mut soon = pin!(clock.sleep(Duration::from_secs(1)));
    assert!(last.as_mut().now_or_never().is_none());
    assert!(soon.as_mut().now_or_never().is_none());
    assert_eq!(clock.next_deadline(), Some(start + Duration::from_secs(1)));
    clock.advance(Duration::MAX);
    assert_eq!(clock.now(), end);
    assert_eq!(clock.elapsed(), end - start);
    assert_eq!(soon.now_or_never(), Some(()));
    assert_eq!(last.now_or_never(), Some(()));

    // At the end of time, any later deadline is unrepresentable: such a sleep never completes.
    let mut beyond = pin!(clock.sleep(Duration::from_nanos(1)));
    assert!(beyond.as_mut().now_or_never().is_none());
    assert_eq!(clock.sleepers(), 0);
    clock.advance(Duration::MAX);
    clock.advance(Duration::from_nanos(1));
    assert!(beyond.now_or_never().is_none());
    assert_eq!(clock.now(), end);
    assert_eq!(clock.sleep(Duration::ZERO).now_or_never(), Some(()));
    let _ = format!("{clock:?}");
}

fn completes_sleeps_already_due<T: Timer>(name: &str, timer: T) {
    block_on(async {
        finish(timer.sleep_until(start_of_time())).await;
        finish(timer.sleep(Duration::ZERO)).await;
        finish(timer.sleep_until(timer.now())).await;
    });
    let _ = name;
}

#[test]
fn every_timer_completes_a_sleep_until_the_start_of_time_or_of_zero_length() {
    with_every_real_timer!(completes_sleeps_already_due);
    completes_sleeps_already_due("Manual", Manual::new());
}

#[test]
fn empty_names_and_messages_and_ids_and_counts_at_their_limits_pass_through_unchanged() {
    let agg = UserAggregator::builder(mock::profile(""), mock::orders(u32::MAX))
        .build()
        .unwrap();
    let dashboard = block_on(agg.aggregate(&Context::background(), u64::MAX)).unwrap();
    assert_eq!(dashboard, Dashboard::new(Profile::new(""), u32::MAX));
    assert_eq!(dashboard.to_string(), "User:  | Orders: 4294967295");

    let agg = UserAggregator::builder(mock::profile("Alice").fail(""), mock::orders(5))
        .build()
        .unwrap();
    let err = block_on(agg.aggregate(&Context::background(), 0)).unwrap_err();
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert_eq!(
        (err.service(), source.as_deref()),
        (Some("profile"), Some(""))
    );

    let agg = UserAggregator::builder(mock::profile("Alice").panic(""), mock::orders(5))
        .build()
        .unwrap();
    let err = block_on(agg.aggregate(&Context::background(), 0)).unwrap_err();
    assert!(
        matches!(&err, AggregateError::Panicked { service, message } if service == "profile" && message.is_empty()),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "profile service panicked: ");
}

#[test]
fn errors_carrying_the_longest_durations_display_without_panicking() {
    for elapsed in [Duration::MAX, end_of_time() - start_of_time()] {
        let deadline = AggregateError::DeadlineExceeded { elapsed };
        let cancelled = AggregateError::Cancelled {
            elapsed,
            cause: None,
        };
        assert!(deadline.to_string().starts_with("deadline exceeded after "));
        assert!(
            cancelled
                .to_string()
                .starts_with("cancelled by the caller after ")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Executors and loggers that misbehave.

#[test]
fn an_executor_that_panics_on_its_second_spawn_leaves_no_call_running() {
    let pool = futures::executor::ThreadPool::builder()
        .pool_size(1)
        .create()
        .unwrap();
    let spawns = AtomicUsize::new(0);
    let profiles = mock::profile("Alice").hang();
    let orders = mock::orders(5).hang();
    let calls = [profiles.calls(), orders.calls()];
    let agg = UserAggregator::builder(profiles, orders)
        .executor(move |task: BoxFuture<'static, ()>| {
            if spawns.fetch_add(1, Ordering::SeqCst) == 1 {
                panic!("spawn refused");
            }
            pool.spawn_ok(task);
        })
        .timeout(HANG)
        .build()
        .unwrap();

    // Unlike a timer's, an executor's panic is not turned into an error: it reaches the
    // caller, as a panic in any callback would. Either way, nothing may be left running.
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        block_on(finish(agg.aggregate(&Context::background(), 1)))
    }));
    if let Ok(result) = &outcome {
        assert!(result.is_err(), "{result:?}");
    }
    let start = Instant::now();
    while in_flight(&calls) != 0 {
        assert!(start.elapsed() < HANG, "a call was left running: {calls:?}");
        thread::sleep(ms(1));
    }
    assert_eq!(calls[1].started(), 0, "the refused call never ran");
}

#[test]
fn a_logger_that_panics_mid_aggregate_leaves_no_call_running() {
    struct Exploding;
    impl log::Log for Exploding {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            if record.args().to_string() == "fetch failed" {
                panic!("logger down");
            }
        }
        fn flush(&self) {}
    }
    log::set_max_level(log::LevelFilter::Debug);
    let pool = futures::executor::ThreadPool::builder()
        .pool_size(1)
        .create()
        .unwrap();
    let orders = mock::orders(5).hang();
    let order_calls = orders.calls();
    let agg = UserAggregator::builder(mock::profile("Alice").fail("down"), orders)
        .executor(move |task: BoxFuture<'static, ()>| pool.spawn_ok(task))
        .logger(Exploding)
        .timeout(HANG)
        .build()
        .unwrap();

    // The logger's panic reaches the caller; the orders call it leaves behind is aborted.
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        block_on(finish(agg.aggregate(&Context::background(), 1)))
    }));
    if let Ok(result) = &outcome {
        assert!(result.is_err(), "{result:?}");
    }
    let start = Instant::now();
    while order_calls.in_flight() != 0 {
        assert!(
            start.elapsed() < HANG,
            "the orders call was left running: {order_calls:?}"
        );
        thread::sleep(ms(1));
    }
}

#[cfg(feature = "smol")]
#[test]
fn a_smol_executor_nobody_runs_ends_the_aggregate_at_its_deadline_with_nothing_started() {
    // Documented: the aggregate ends at its deadline; the aborted calls stay queued until the
    // executor runs, and then end without calling their services.
    let ex = Arc::new(smol::Executor::new());
    let profiles = mock::profile("Alice");
    let orders = mock::orders(5);
    let calls = [profiles.calls(), orders.calls()];
    let agg = UserAggregator::builder(profiles, orders)
        .executor(failfast::executor::Smol::new(ex.clone()))
        .timeout(ms(50))
        .build()
        .unwrap();
    let err = block_on(finish(agg.aggregate(&Context::background(), 1))).unwrap_err();
    assert!(err.is_deadline_exceeded(), "{err:?}");
    assert!(!ex.is_empty(), "the calls are still queued");

    let start = Instant::now();
    while !ex.is_empty() {
        assert!(start.elapsed() < HANG, "the aborted calls did not end");
        ex.try_tick();
    }
    assert_eq!(started(&calls), 0);
}

#[cfg(feature = "tokio")]
#[test]
fn a_tokio_runtime_nobody_drives_ends_the_aggregate_at_its_deadline_with_nothing_started() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let profiles = mock::profile("Alice");
    let orders = mock::orders(5);
    let calls = [profiles.calls(), orders.calls()];
    let agg = UserAggregator::builder(profiles, orders)
        .executor(failfast::executor::Tokio::new(runtime.handle().clone()))
        .timeout(ms(50))
        .build()
        .unwrap();
    let err = block_on(finish(agg.aggregate(&Context::background(), 1))).unwrap_err();
    assert!(err.is_deadline_exceeded(), "{err:?}");
    drop(runtime); // drops the queued, aborted calls
    assert_eq!(started(&calls), 0);
}

#[cfg(feature = "tokio")]
#[test]
fn a_tokio_timer_whose_runtime_has_no_time_driver_is_a_timer_error() {
    // Documented: tokio's panic is contained as AggregateError::Timer.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let (agg, calls) = hanging_on(timer::Tokio::new(runtime.handle().clone()), ms(50));
    let err = block_on(finish(agg.aggregate(&Context::background(), 1))).unwrap_err();
    assert!(matches!(err, AggregateError::Timer { .. }), "{err:?}");
    assert!(err.to_string().contains("enable_time"), "{err}");
    assert_eq!(in_flight(&calls), 0);
}

#[cfg(feature = "tokio")]
#[test]
fn shutting_down_the_tokio_runtime_under_a_pending_aggregate_reports_a_dropped_call() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let profiles = mock::profile("Alice").hang();
    let orders = mock::orders(5).hang();
    let calls = [profiles.calls(), orders.calls()];
    let agg = UserAggregator::builder(profiles, orders)
        .executor(failfast::executor::Tokio::new(runtime.handle().clone()))
        .timeout(HANG)
        .build()
        .unwrap();
    let background = Context::background();
    let err = block_on(async {
        let mut aggregate = pin!(agg.aggregate(&background, 1));
        let both_started = || started(&calls) == 2;
        assert!(
            drive_until(aggregate.as_mut(), both_started)
                .await
                .is_none()
        );
        runtime.shutdown_timeout(HANG);
        finish(aggregate).await.unwrap_err()
    });
    assert!(matches!(err, AggregateError::Dropped { .. }), "{err:?}");
    assert_eq!(in_flight(&calls), 0);
}

#[cfg(feature = "tokio")]
#[test]
fn a_tokio_timer_on_a_current_thread_runtime_nobody_drives_still_yields_to_a_cancel() {
    // Nothing turns this runtime's time driver, so its sleeps do not fire (as `timer::Tokio`
    // documents); the caller's cancellation still ends the aggregate.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (agg, calls) = hanging_on(timer::Tokio::new(runtime.handle().clone()), ms(20));
    let (ctx, cancel) = Context::background().with_cancel();
    let result = block_on(async {
        let mut aggregate = pin!(agg.aggregate(&ctx, 1));
        if let Some(result) = drive_for(aggregate.as_mut(), ms(200)).await {
            return result;
        }
        cancel.cancel();
        finish(aggregate).await
    });
    let err = result.unwrap_err();
    assert!(err.is_cancelled() || err.is_deadline_exceeded(), "{err:?}");
    assert_eq!(in_flight(&calls), 0);
}
