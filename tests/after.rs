//! `Context::after`: a function run once when a context is done, stoppable before it runs.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ms;
use failfast::timer::Manual;
use failfast::{Context, ContextError};

/// Generous: these machines are shared and noisy.
const SLACK: Duration = Duration::from_secs(5);

/// Counts how many times the functions made by `f()` ran.
#[derive(Clone, Default)]
struct Runs(Arc<AtomicUsize>);

impl Runs {
    fn f(&self) -> impl FnOnce() + Send + 'static {
        let runs = self.0.clone();
        move || {
            runs.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

#[test]
fn an_after_function_runs_once_on_cancel_on_the_cancelling_thread() {
    let (ctx, cancel) = Context::background().with_cancel();
    let thread = Arc::new(Mutex::new(None));
    let seen = thread.clone();
    let _handle = ctx.after(move || *seen.lock().unwrap() = Some(std::thread::current().id()));
    let runs = Runs::default();
    let _second = ctx.with_value(1_u8).after(runs.f()); // registered through a value node
    cancel.cancel();
    cancel.cancel();
    assert_eq!(*thread.lock().unwrap(), Some(std::thread::current().id()));
    assert_eq!(runs.get(), 1);
}

/// Waits (in real time, generously) until `runs` reaches `n`.
fn wait_for(runs: &Runs, n: usize) {
    let start = Instant::now();
    while runs.get() < n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "ran {} of {n}",
            runs.get()
        );
        std::thread::sleep(ms(1));
    }
}

#[test]
fn an_after_function_runs_at_the_deadline_in_virtual_time_on_the_after_function_thread() {
    let clock = Manual::new();
    let ctx = Context::background()
        .with_timer(clock.clone())
        .with_timeout(ms(100));
    let runs = Runs::default();
    let thread = Arc::new(Mutex::new(None));
    let seen = thread.clone();
    let count = runs.f();
    let _handle = ctx.after(move || {
        *seen.lock().unwrap() = std::thread::current().name().map(str::to_owned);
        count();
    });
    clock.advance(ms(99));
    std::thread::sleep(ms(20));
    assert_eq!(runs.get(), 0, "ran before the deadline");
    clock.advance(ms(1)); // no executor involved
    wait_for(&runs, 1);
    assert_eq!(thread.lock().unwrap().as_deref(), Some("failfast-after"));
    clock.advance(ms(100));
    std::thread::sleep(ms(20));
    assert_eq!(runs.get(), 1, "once only");
}

#[test]
fn an_after_function_that_blocks_on_another_deadline_does_not_stall_the_timers() {
    let ctx = Context::background().with_timeout(ms(10));
    let (sender, receiver) = std::sync::mpsc::channel();
    let _handle = ctx.after(move || {
        // Waits on the default timer: possible only because `f` is not on the timer's thread.
        let other = Context::background().with_timeout(ms(50));
        futures::executor::block_on(other.done());
        sender.send(other.err()).unwrap();
    });
    let waited = receiver.recv_timeout(Duration::from_secs(10));
    assert_eq!(waited, Ok(Some(ContextError::DeadlineExceeded)));
    // And the timer still serves everyone else.
    let start = Instant::now();
    futures::executor::block_on(Context::background().with_timeout(ms(20)).done());
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn an_after_function_runs_at_the_deadline_on_the_default_timer() {
    let ctx = Context::background().with_timeout(ms(30));
    let (sender, receiver) = std::sync::mpsc::channel();
    let start = Instant::now();
    let _handle = ctx.after(move || sender.send(Instant::now()).unwrap());
    let ran = receiver
        .recv_timeout(Duration::from_secs(10))
        .expect("ran at the deadline");
    assert!(ran - start >= ms(30));
    assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
}

#[cfg(feature = "tokio")]
#[test]
fn an_after_function_runs_at_the_deadline_on_tokios_timer() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let timer = failfast::timer::Tokio::new(runtime.handle().clone());
    let ctx = Context::background().with_timer(timer).with_timeout(ms(30));
    let (sender, receiver) = std::sync::mpsc::channel();
    let _handle = ctx.after(move || sender.send(()).unwrap()); // made outside the runtime
    receiver
        .recv_timeout(Duration::from_secs(10))
        .expect("ran at the deadline");
}

#[test]
fn after_on_a_context_already_done_runs_now() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let runs = Runs::default();
    let handle = ctx.after(runs.f());
    assert_eq!(runs.get(), 1);
    assert!(!handle.stop(), "it already ran");

    let expired = Context::background().with_timeout(Duration::ZERO);
    let handle = expired.after(runs.f());
    assert_eq!(runs.get(), 2);
    assert!(!handle.stop());
}

#[test]
fn stop_before_the_context_is_done_keeps_the_function_from_running() {
    let clock = Manual::new();
    let (ctx, cancel) = Context::background()
        .with_timer(clock.clone())
        .with_cancel();
    let ctx = ctx.with_timeout(ms(10));
    let runs = Runs::default();
    let handle = ctx.after(runs.f());
    assert_eq!(clock.sleepers(), 1);
    assert!(handle.stop());
    assert!(!handle.stop(), "a second stop says it did nothing");
    assert_eq!(clock.sleepers(), 0, "stop drops the deadline's sleep");
    clock.advance(ms(10));
    assert!(cancel.cancel());
    assert!(!cancel.cancel(), "a second cancel says it did nothing");
    std::thread::sleep(ms(20));
    assert_eq!(runs.get(), 0);
    assert!(format!("{handle:?}").contains("stopped"));
}

#[test]
fn dropping_the_handle_leaves_the_function_registered() {
    let (ctx, cancel) = Context::background().with_cancel();
    let runs = Runs::default();
    drop(ctx.after(runs.f()));
    cancel.cancel();
    assert_eq!(runs.get(), 1);
}

#[test]
fn an_after_function_on_a_context_that_can_never_be_done_never_runs() {
    let runs = Runs::default();
    let handle = Context::background().after(runs.f());
    assert!(handle.stop());
    assert_eq!(runs.get(), 0);
}

#[test]
fn an_after_function_may_cancel_and_derive_contexts_including_its_own() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (other, cancel_other) = Context::background().with_cancel();
    let inner = ctx.clone();
    let again = cancel.clone();
    let _handle = ctx.after(move || {
        again.cancel(); // its own context: already cancelled, a no-op, no deadlock
        let (child, _) = inner.with_cancel(); // derived from a cancelled context
        assert!(child.is_cancelled());
        cancel_other.cancel_with("cascade");
    });
    cancel.cancel();
    assert_eq!(other.cause().unwrap().to_string(), "cascade");
}

#[test]
fn a_panicking_after_function_does_not_stop_the_rest_of_the_tree_from_being_cancelled() {
    let (root, cancel) = Context::background().with_cancel();
    let (child, _) = root.with_cancel();
    let runs = Runs::default();
    let _a = root.after(|| panic!("after-function exploded"));
    let _b = child.after(runs.f());
    let _c = root.after(runs.f());
    cancel.cancel();
    assert!(child.is_cancelled());
    assert_eq!(runs.get(), 2);
    // Nothing is poisoned: the tree still works.
    let (grandchild, _) = child.with_cancel();
    assert!(grandchild.is_cancelled());
    let _d = root.after(runs.f());
    assert_eq!(runs.get(), 3);
}

#[test]
fn a_panicking_after_function_on_the_timers_thread_is_contained() {
    let clock = Manual::new();
    let ctx = Context::background()
        .with_timer(clock.clone())
        .with_timeout(ms(5));
    let runs = Runs::default();
    let _a = ctx.after(|| panic!("after-function exploded at the deadline"));
    let _b = ctx.after(runs.f());
    clock.advance(ms(5)); // does not unwind into the test
    wait_for(&runs, 1);
    let later = Context::background()
        .with_timer(clock.clone())
        .with_timeout(ms(5));
    let _c = later.after(runs.f());
    clock.advance(ms(5));
    wait_for(&runs, 2); // the after-function thread survived the panic
}

#[test]
fn stop_racing_cancel_from_another_thread_either_stops_or_runs_never_both() {
    for _ in 0..2_000 {
        let (ctx, cancel) = Context::background().with_cancel();
        let runs = Runs::default();
        let handle = ctx.after(runs.f());
        let canceller = std::thread::spawn(move || cancel.cancel());
        let stopped = handle.stop();
        canceller.join().unwrap();
        assert_eq!(runs.get(), usize::from(!stopped), "stopped: {stopped}");
    }
}

#[test]
fn stopped_functions_do_not_pile_up_on_a_long_lived_context() {
    let (ctx, cancel) = Context::background().with_cancel();
    let payload = Arc::new(());
    for _ in 0..10_000 {
        let held = payload.clone();
        let handle = ctx.after(move || drop(held));
        assert!(handle.stop());
    }
    assert_eq!(
        Arc::strong_count(&payload),
        1,
        "stopped functions are dropped at once"
    );
    cancel.cancel();
}

#[test]
fn stop_while_the_function_runs_returns_false_at_once_without_waiting_for_it() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (started_tx, started) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let handle = ctx.after(move || {
        started_tx.send(()).unwrap();
        release_rx.recv().unwrap();
    });
    let canceller = std::thread::spawn(move || cancel.cancel());
    started.recv_timeout(SLACK).expect("the function started");
    let asked = Instant::now();
    assert!(!handle.stop(), "too late: the function is running");
    assert!(asked.elapsed() < SLACK, "stop() waited for the function");
    release.send(()).unwrap();
    assert!(canceller.join().unwrap());
}

#[test]
fn an_after_function_registered_while_another_thread_cancels_runs_exactly_once() {
    // A stress test: the window it aims at (between `after`'s first look at the flag and its
    // registration) is a few instructions wide, so it may not catch every bug there.
    let go = Arc::new(std::sync::Barrier::new(2));
    let (tx, rx) = std::sync::mpsc::channel::<failfast::CancelHandle>();
    let canceller = {
        let go = go.clone();
        std::thread::spawn(move || {
            for cancel in rx {
                go.wait();
                cancel.cancel();
                go.wait();
            }
        })
    };
    for round in 0..5_000 {
        let (ctx, cancel) = Context::background().with_cancel();
        let runs = Runs::default();
        tx.send(cancel).unwrap();
        go.wait(); // both start together
        let _handle = ctx.after(runs.f());
        go.wait(); // the cancel returned
        // Whoever saw the other (the canceller the registration, or `after` the flag) ran it.
        assert_eq!(runs.get(), 1, "round {round}");
    }
    drop(tx);
    canceller.join().unwrap();
}
