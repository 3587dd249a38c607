//! A context is done at its deadline or when cancelled, says which (`err`) and why
//! (`cause`), carries values, and offers Go's and tokio's helpers; with no group involved.

mod common;

use std::error::Error as _;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{drive_for, finish, ms};
use failfast::timer::Manual;
use failfast::{Context, ContextError, Timer};
use futures::FutureExt;

/// Generous: these machines are shared and noisy.
const SLACK: Duration = Duration::from_secs(2);

#[cfg(feature = "futures-timer")]
#[test]
fn a_context_with_a_timeout_is_done_at_its_deadline_on_the_default_timer() {
    let start = Instant::now();
    let ctx = Context::background().with_timeout(ms(50));
    futures::executor::block_on(ctx.done());
    let waited = start.elapsed();
    assert!(waited >= ms(50), "done early: {waited:?}");
    assert!(waited < ms(50) + SLACK, "done late: {waited:?}");
    assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
    assert!(!ctx.is_cancelled(), "a deadline is not a cancellation");
    assert_eq!(
        ctx.cause().unwrap().to_string(),
        "context deadline exceeded"
    );
}

#[cfg(feature = "smol")]
#[test]
fn a_context_is_done_at_its_deadline_on_async_io() {
    let ctx = Context::background()
        .with_timer(failfast::timer::AsyncIo)
        .with_timeout(ms(50));
    let start = Instant::now();
    smol::block_on(ctx.done());
    assert!(start.elapsed() >= ms(50));
    assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
}

#[cfg(feature = "tokio")]
#[test]
fn a_context_is_done_at_its_deadline_on_tokio() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let timer = failfast::timer::Tokio::new(runtime.handle().clone());
    let start = Instant::now();
    runtime.block_on(async {
        let ctx = Context::background().with_timer(timer).with_timeout(ms(50));
        ctx.done().await;
        assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
    });
    assert!(start.elapsed() >= ms(50));
}

#[test]
fn in_virtual_time_done_completes_exactly_at_the_deadline() {
    futures::executor::block_on(async {
        let clock = Manual::new();
        let ctx = Context::background()
            .with_timer(clock.clone())
            .with_timeout(ms(100));
        let mut done = pin!(ctx.done());
        assert!(drive_for(done.as_mut(), ms(20)).await.is_none());
        assert_eq!(clock.sleepers(), 1, "the first poll made the sleep");
        clock.advance(ms(99));
        assert!(
            drive_for(done.as_mut(), ms(20)).await.is_none(),
            "done early"
        );
        assert_eq!(ctx.remaining(), Some(ms(1)));
        clock.advance(ms(1));
        finish(done).await;
        assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
        assert_eq!(ctx.remaining(), Some(Duration::ZERO));
    });
}

#[test]
fn no_timer_is_made_for_a_deadline_nobody_waits_on() {
    let clock = Manual::new();
    let ctx = Context::background()
        .with_timer(clock.clone())
        .with_timeout(ms(100));
    let done = ctx.done();
    let _child = ctx.with_timeout(ms(50)).with_cancel();
    assert_eq!(clock.sleepers(), 0);
    drop(done);
}

#[test]
fn a_passed_deadline_is_reported_when_asked_even_if_nobody_was_woken() {
    let clock = Manual::new();
    let ctx = Context::background()
        .with_timer(clock.clone())
        .with_timeout(ms(10));
    assert!(!ctx.is_done());
    clock.advance(ms(10));
    assert!(ctx.is_done());
    assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
    // And a future that first looks after the fact is ready at once, with no sleep.
    assert!(ctx.done().now_or_never().is_some());
    assert_eq!(clock.sleepers(), 0);
}

#[test]
fn a_cancel_before_the_deadline_is_a_cancellation() {
    let clock = Manual::new();
    let (ctx, cancel) = Context::background()
        .with_timer(clock.clone())
        .with_cancel();
    let child = ctx.with_timeout(ms(100));
    let mut done = pin!(child.done());
    assert!(done.as_mut().now_or_never().is_none());
    clock.advance(ms(40));
    cancel.cancel();
    assert!(done.now_or_never().is_some());
    clock.advance(ms(100)); // the deadline passing later changes nothing
    assert_eq!(child.err(), Some(ContextError::Cancelled));
    assert_eq!(child.cause().unwrap().to_string(), "context cancelled");
}

#[test]
fn a_deadline_noticed_only_after_a_later_cancel_is_still_the_reason() {
    let clock = Manual::new();
    let (ctx, cancel) = Context::background()
        .with_timer(clock.clone())
        .with_cancel();
    let child = ctx.with_timeout_cause(ms(100), "the report took too long");
    clock.advance(ms(150)); // nobody looked at the deadline
    cancel.cancel_with("user left");
    assert_eq!(child.err(), Some(ContextError::DeadlineExceeded));
    assert_eq!(
        child.cause().unwrap().to_string(),
        "the report took too long"
    );
    assert_eq!(
        ctx.err(),
        Some(ContextError::Cancelled),
        "the parent has no deadline"
    );
    assert_eq!(ctx.cause().unwrap().to_string(), "user left");
}

#[test]
fn a_cancel_at_the_very_instant_of_the_deadline_counts_as_the_deadline() {
    let clock = Manual::new();
    let (ctx, cancel) = Context::background()
        .with_timer(clock.clone())
        .with_cancel();
    let child = ctx.with_timeout(ms(100));
    clock.advance(ms(100));
    cancel.cancel();
    assert_eq!(child.err(), Some(ContextError::DeadlineExceeded));
}

/// A clock that stands still on the thread named "canceller": each reading there takes the
/// time and says it arrived; then it sleeps a while before answering, or, for the first
/// reading of a clock made `holding`, waits until the test releases it. The test moves the
/// time on meanwhile, as if the deadline passed in the middle of a cancel.
#[derive(Clone)]
struct SlowOnTheCanceller {
    base: Instant,
    offset: Arc<AtomicU64>,
    arrived: Arc<AtomicUsize>,
    holding: bool,
    released: Arc<AtomicBool>,
}

impl SlowOnTheCanceller {
    fn new(holding: bool) -> SlowOnTheCanceller {
        SlowOnTheCanceller {
            base: Instant::now(),
            offset: Arc::default(),
            arrived: Arc::default(),
            holding,
            released: Arc::default(),
        }
    }

    fn advance_to(&self, offset: Duration) {
        self.offset
            .store(offset.as_millis().try_into().unwrap(), Ordering::SeqCst);
    }

    fn wait_for_the_canceller(&self) {
        let start = Instant::now();
        while self.arrived.load(Ordering::SeqCst) == 0 {
            assert!(
                start.elapsed() < SLACK,
                "the canceller never read the clock"
            );
            std::thread::yield_now();
        }
    }

    fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
    }
}

impl Timer for SlowOnTheCanceller {
    type Sleep = futures::future::Pending<()>;

    fn sleep(&self, _: Duration) -> Self::Sleep {
        futures::future::pending()
    }

    fn now(&self) -> Instant {
        let now = self.base + Duration::from_millis(self.offset.load(Ordering::SeqCst));
        if std::thread::current().name() == Some("canceller") {
            let first = self.arrived.fetch_add(1, Ordering::SeqCst) == 0;
            if self.holding && first {
                let start = Instant::now();
                while !self.released.load(Ordering::SeqCst) && start.elapsed() < SLACK {
                    std::thread::yield_now();
                }
            } else if !self.holding {
                std::thread::sleep(ms(30));
            }
        }
        now
    }
}

/// Cancels `cancel` on a thread named "canceller" while the deadline at 100 ms passes, and
/// returns what `ctx.err()` said first, in the middle of the cancel, and what it says after.
fn err_while_the_deadline_passes_during_a_cancel(
    clock: &SlowOnTheCanceller,
    ctx: &Context,
    cancel: failfast::CancelHandle,
) -> (Option<ContextError>, Option<ContextError>) {
    let canceller = std::thread::Builder::new()
        .name("canceller".into())
        .spawn(move || cancel.cancel())
        .unwrap();
    clock.wait_for_the_canceller();
    clock.advance_to(ms(100));
    let during = ctx.err();
    clock.release();
    assert!(canceller.join().unwrap(), "the cancel took effect");
    (during, ctx.err())
}

#[test]
fn err_never_changes_when_the_deadline_passes_while_a_cancel_reads_its_clock() {
    // The scope cancelled is the one whose deadline it is: `err` in the middle of the cancel
    // (it waits for the cancel's lock) must already give the answer it gives for good. The
    // clock sleeps rather than holds: `err` waits on the lock its reading is taken under.
    let clock = SlowOnTheCanceller::new(false);
    let (ctx, cancel) = Context::background()
        .with_timer(clock.clone())
        .with_cancel();
    let child = ctx.with_timeout(ms(100));
    let (during, after) = err_while_the_deadline_passes_during_a_cancel(&clock, &child, cancel);
    assert!(
        during.is_some(),
        "done: the cancel had begun, or the deadline had passed"
    );
    assert_eq!(during, after, "err() changed its answer");
}

#[test]
fn err_never_changes_when_the_deadline_passes_while_a_cancel_travels_down_the_tree() {
    // The cancel starts above and reaches the scope with the deadline only after it passed:
    // a reader in between saw the deadline pass, so the deadline stays the reason. The clock
    // holds the cancel at the root until the reader has looked.
    let clock = SlowOnTheCanceller::new(true);
    let (root, cancel) = Context::background()
        .with_timer(clock.clone())
        .with_cancel();
    let (below, _keep) = root.with_timeout(ms(100)).with_cancel();
    let (during, after) = err_while_the_deadline_passes_during_a_cancel(&clock, &below, cancel);
    assert_eq!(during, Some(ContextError::DeadlineExceeded));
    assert_eq!(
        after,
        Some(ContextError::DeadlineExceeded),
        "err() changed its answer"
    );
    assert_eq!(
        root.err(),
        Some(ContextError::Cancelled),
        "the root was cancelled first"
    );
}

#[test]
fn an_after_function_runs_once_when_a_cancel_races_the_deadline_on_another_thread() {
    for round in 0..200_u64 {
        let (ctx, cancel) = Context::background().with_cancel();
        let deadline = Instant::now() + Duration::from_micros(200 + round % 7 * 50);
        let ctx = ctx.with_deadline(deadline);
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let _handle = ctx.after(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let canceller = std::thread::spawn(move || {
            while Instant::now() < deadline {
                std::hint::spin_loop();
            }
            cancel.cancel();
        });
        canceller.join().unwrap();
        futures::executor::block_on(ctx.done());
        // The function runs on the cancelling thread, or on the after-function thread if the
        // deadline's sleep won the race: wait for it, then make sure it ran once only.
        let start = Instant::now();
        while runs.load(Ordering::SeqCst) == 0 && start.elapsed() < SLACK {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(runs.load(Ordering::SeqCst), 1, "round {round}");
        let first = ctx.err();
        assert_eq!(ctx.err(), first, "round {round}: err() changed its answer");
    }
}

/// A clock that panics once `broken` is set.
#[derive(Clone, Default)]
struct Breaks {
    broken: Arc<AtomicBool>,
}

impl Timer for Breaks {
    type Sleep = futures::future::Pending<()>;

    fn sleep(&self, _: Duration) -> Self::Sleep {
        futures::future::pending()
    }

    fn now(&self) -> Instant {
        assert!(!self.broken.load(Ordering::SeqCst), "the clock broke");
        Instant::now()
    }
}

#[test]
fn a_clock_that_panics_during_a_cancel_still_leaves_the_tree_cancelled() {
    let clock = Breaks::default();
    let (ctx, cancel) = Context::background()
        .with_timer(clock.clone())
        .with_cancel();
    let (child, _keep) = ctx.with_cancel();
    clock.broken.store(true, Ordering::SeqCst);
    assert!(
        cancel.cancel_with("shutting down"),
        "the cancel did not panic"
    );
    for ctx in [&ctx, &child] {
        assert_eq!(ctx.err(), Some(ContextError::Cancelled));
        assert_eq!(ctx.cause().unwrap().to_string(), "shutting down");
        assert!(
            ctx.cancelled().now_or_never().is_some(),
            "a waiter would hang"
        );
    }
}

#[test]
fn children_inherit_their_parents_cause_and_the_first_cause_wins() {
    let (root, cancel) = Context::background().with_cancel();
    let (middle, cancel_middle) = root.with_cancel();
    let leaf = middle
        .with_value(1_u8)
        .with_timeout(Duration::from_secs(60));
    assert!(cancel.cancel_with(std::io::Error::other("shutting down")));
    assert!(!cancel.cancel_with("second"));
    assert!(!cancel_middle.cancel_with("too late for the middle too"));
    for ctx in [&root, &middle, &leaf] {
        assert_eq!(ctx.err(), Some(ContextError::Cancelled));
        let cause = ctx.cause().unwrap();
        assert_eq!(cause.to_string(), "shutting down");
        assert!(
            cause.downcast_ref::<std::io::Error>().is_some(),
            "the cause keeps its type"
        );
    }
    // A child derived afterwards starts cancelled, with the same cause.
    let late = leaf.with_cancel().0;
    assert_eq!(late.cause().unwrap().to_string(), "shutting down");
}

#[test]
fn a_child_cancelled_first_keeps_its_own_cause() {
    let (root, cancel) = Context::background().with_cancel();
    let (child, cancel_child) = root.with_cancel();
    cancel_child.cancel_with("child's reason");
    cancel.cancel_with("root's reason");
    assert_eq!(child.cause().unwrap().to_string(), "child's reason");
    assert_eq!(root.cause().unwrap().to_string(), "root's reason");
}

#[test]
fn a_deadline_cause_is_ignored_when_the_parents_deadline_is_earlier() {
    let clock = Manual::new();
    let outer = Context::background()
        .with_timer(clock.clone())
        .with_timeout(ms(10));
    let inner = outer.with_timeout_cause(ms(50), "inner budget spent");
    assert_eq!(inner.deadline(), outer.deadline());
    clock.advance(ms(10));
    assert_eq!(
        inner.cause().unwrap().to_string(),
        "context deadline exceeded"
    );
}

#[test]
fn a_deadline_in_the_past_is_done_at_once_and_duration_max_means_none_of_its_own() {
    let past = Context::background().with_deadline(Instant::now() - ms(1));
    assert_eq!(past.err(), Some(ContextError::DeadlineExceeded));
    assert!(past.done().now_or_never().is_some());

    let forever = Context::background().with_timeout(Duration::MAX);
    assert_eq!(forever.deadline(), None);
    assert!(!forever.is_done());
}

#[test]
fn background_is_never_done_and_cancelled_never_completes() {
    let ctx = Context::background();
    assert_eq!((ctx.err(), ctx.cause().is_none()), (None, true));
    assert!(ctx.done().now_or_never().is_none());
    assert!(ctx.cancelled().now_or_never().is_none());
}

#[test]
fn cancelled_ignores_the_deadline_but_done_does_not() {
    let clock = Manual::new();
    let ctx = Context::background()
        .with_timer(clock.clone())
        .with_cancel()
        .0
        .with_timeout(ms(5));
    clock.advance(ms(5));
    assert!(ctx.cancelled().now_or_never().is_none());
    assert!(ctx.done().now_or_never().is_some());
}

#[test]
fn values_are_found_by_type_inherited_and_shadowed() {
    #[derive(Debug, PartialEq)]
    struct TraceId(&'static str);
    #[derive(Debug, PartialEq)]
    struct User(u64);

    let root = Context::background()
        .with_value(TraceId("t-1"))
        .with_value(User(7));
    let (scoped, _cancel) = root.with_cancel();
    let child = scoped
        .with_timeout(Duration::from_secs(1))
        .with_value(TraceId("t-2"));
    assert_eq!(
        child.value::<TraceId>(),
        Some(&TraceId("t-2")),
        "the child's own shadows"
    );
    assert_eq!(
        child.value::<User>(),
        Some(&User(7)),
        "inherited through scopes and deadlines"
    );
    assert_eq!(
        root.value::<TraceId>(),
        Some(&TraceId("t-1")),
        "the parent keeps its own"
    );
    assert_eq!(
        child.value::<u64>(),
        None,
        "the key is the type, not what is inside it"
    );
    assert_eq!(Context::background().value::<User>(), None);
    // A value does not change cancellation or the deadline.
    assert_eq!(child.with_value(1_u8).deadline(), child.deadline());
}

#[test]
fn without_cancel_keeps_the_values_and_drops_deadline_and_cancellation() {
    let clock = Manual::new();
    let (ctx, cancel) = Context::background()
        .with_timer(clock.clone())
        .with_value("request-9")
        .with_cancel();
    let ctx = ctx.with_timeout(ms(10));
    let detached = ctx.without_cancel();
    cancel.cancel();
    clock.advance(ms(50));
    assert!(ctx.is_done());
    assert_eq!((detached.err(), detached.deadline()), (None, None));
    assert!(detached.done().now_or_never().is_none());
    assert_eq!(detached.value::<&str>(), Some(&"request-9"));
    // Its own children get deadlines on the same clock, and cancel on their own.
    let cleanup = detached.with_timeout(ms(5));
    clock.advance(ms(5));
    assert_eq!(cleanup.err(), Some(ContextError::DeadlineExceeded));
}

#[test]
fn a_drop_guard_cancels_when_dropped_and_disarm_keeps_the_handle() {
    let (ctx, cancel) = Context::background().with_cancel();
    let guard = cancel.clone().drop_guard();
    let handle = guard.disarm();
    assert!(!ctx.is_cancelled());
    {
        let _guard = handle.drop_guard();
    }
    assert!(ctx.is_cancelled());
    assert!(!cancel.cancel_with("a second cancel is a no-op"));
    assert_eq!(ctx.cause().unwrap().to_string(), "context cancelled");
}

#[test]
fn with_cancel_timeout_and_with_cancel_deadline_are_done_at_the_deadline_or_at_the_cancel() {
    let clock = Manual::new();
    let root = Context::background().with_timer(clock.clone());
    let (timed, _cancel) = root.with_cancel_timeout(ms(100));
    let (cancelled, cancel) = root.with_cancel_deadline(clock.now() + ms(100));
    assert_eq!((timed.err(), cancelled.err()), (None, None));
    assert_eq!(timed.remaining(), Some(ms(100)));

    assert!(cancel.cancel());
    assert_eq!(cancelled.err(), Some(ContextError::Cancelled));
    assert_eq!(cancelled.cause().unwrap().to_string(), "context cancelled");
    assert_eq!(timed.err(), None, "a sibling's cancel does not reach it");

    clock.advance(ms(100));
    assert_eq!(timed.err(), Some(ContextError::DeadlineExceeded));
    assert!(!timed.is_cancelled(), "its deadline is not a cancellation");
    assert_eq!(
        cancelled.err(),
        Some(ContextError::Cancelled),
        "the cancel came first"
    );
    assert_eq!(root.err(), None, "the root is untouched");
}

#[test]
fn run_until_cancelled_returns_none_when_the_context_is_done_first() {
    futures::executor::block_on(async {
        let clock = Manual::new();
        let ctx = Context::background()
            .with_timer(clock.clone())
            .with_timeout(ms(30));
        let slow = clock.sleep(ms(100));
        let mut run = pin!(ctx.run_until_cancelled(slow));
        assert!(drive_for(run.as_mut(), ms(20)).await.is_none());
        clock.advance(ms(30));
        assert_eq!(finish(run).await, None);

        let (ctx, _cancel) = Context::background().with_cancel();
        assert_eq!(
            ctx.run_until_cancelled(async { "answer" }).await,
            Some("answer")
        );
    });
}

#[test]
fn a_parent_cancelled_while_children_are_derived_leaves_every_child_cancelled() {
    for _ in 0..200 {
        let (root, cancel) = Context::background().with_cancel();
        let deriving = {
            let root = root.clone();
            std::thread::spawn(move || (0..100).map(|_| root.with_cancel().0).collect::<Vec<_>>())
        };
        std::thread::yield_now();
        cancel.cancel_with("race");
        for child in deriving.join().unwrap() {
            assert_eq!(child.cause().unwrap().to_string(), "race");
        }
    }
}

#[test]
fn debug_and_display_show_the_budget_and_why_it_is_done() {
    let clock = Manual::new();
    let ctx = Context::background()
        .with_timer(clock.clone())
        .with_timeout(ms(1500));
    assert_eq!(ctx.to_string(), "context with 1.5s left");
    assert_eq!(
        format!("{ctx:?}"),
        "Context { remaining: Some(1.5s), done: None, cause: None }"
    );
    clock.advance(ms(1500));
    assert_eq!(ctx.to_string(), "context deadline exceeded");
    let ctx = ctx.with_deadline_cause(clock.now() - ms(1), "quota");
    assert_eq!(ctx.to_string(), "context deadline exceeded: quota");
    assert!(
        !format!("{ctx:?}").contains("tv_sec"),
        "no raw Instant internals"
    );
}

#[test]
fn the_cause_of_an_error_chain_reaches_its_source() {
    let (ctx, cancel) = Context::background().with_cancel();
    let io = std::io::Error::other("disk full");
    cancel.cancel_with(io);
    let cause = ctx.cause().unwrap();
    assert!(cause.source().is_none());
    assert_eq!(cause.to_string(), "disk full");
}

#[test]
fn a_deep_chain_of_every_kind_cancels_and_drops_without_overflowing_the_stack() {
    let (root, cancel) = Context::background().with_cancel();
    let mut ctx = root.clone();
    for i in 0..100_000_u32 {
        ctx = match i % 3 {
            0 => ctx.with_cancel().0,
            1 => ctx.with_value(i),
            _ => ctx.with_timeout_cause(Duration::from_secs(3600), "deep"),
        };
    }
    assert_eq!(ctx.value::<u32>(), Some(&99_997));
    let fired = Arc::new(AtomicBool::new(false));
    let flag = fired.clone();
    let _after = ctx.after(move || flag.store(true, Ordering::SeqCst));
    cancel.cancel();
    assert!(ctx.is_cancelled());
    assert!(fired.load(Ordering::SeqCst));
    drop(ctx);
}

#[test]
fn a_deadline_in_virtual_time_under_a_real_time_scope_never_flips_to_cancelled() {
    let clock = Manual::new();
    let (ctx, cancel) = Context::background().with_cancel(); // the real clock
    let virtual_ctx = ctx
        .with_timer(clock.clone())
        .with_timeout(Duration::from_secs(5));
    clock.advance(Duration::from_secs(10));
    assert_eq!(virtual_ctx.err(), Some(ContextError::DeadlineExceeded));
    cancel.cancel_with("later");
    assert_eq!(
        virtual_ctx.err(),
        Some(ContextError::DeadlineExceeded),
        "err never changes"
    );

    // The other way round: cancelled before the virtual deadline, though the real clock has
    // long passed it.
    let clock = Manual::new();
    std::thread::sleep(ms(30));
    let (ctx, cancel) = Context::background().with_cancel();
    let virtual_ctx = ctx.with_timer(clock.clone()).with_timeout(ms(10));
    cancel.cancel_with("client gone");
    assert_eq!(virtual_ctx.err(), Some(ContextError::Cancelled));
    assert_eq!(virtual_ctx.cause().unwrap().to_string(), "client gone");
}

#[test]
fn a_child_of_a_cancelled_context_keeps_its_cause_whatever_its_own_deadline() {
    let past = Instant::now() - ms(5);
    let (root, cancel) = Context::background().with_cancel();
    cancel.cancel_with("user");
    for child in [
        root.with_deadline(past),
        root.with_timeout(Duration::ZERO),
        root.with_deadline_cause(past, "ignored"),
    ] {
        assert_eq!(child.err(), Some(ContextError::Cancelled));
        assert_eq!(child.cause().unwrap().to_string(), "user");
    }
}

#[test]
fn contexts_and_handles_are_send_sync_unwind_safe_and_cheap_to_move() {
    fn check<T: Send + Sync + std::panic::UnwindSafe + std::panic::RefUnwindSafe>() {}
    check::<Context>();
    check::<failfast::CancelHandle>();
    assert!(std::mem::size_of::<Context>() <= 32);
}
