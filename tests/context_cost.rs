//! What contexts allocate, counted on the current thread by a wrapping global allocator:
//! `background()` and deadlines nothing, a cancel scope once, a wait on a deadline only when
//! it is polled.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use failfast::Context;
use futures::FutureExt;

/// Counts the allocations made by the current thread.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every method forwards to `System` unchanged; the counter is a thread-local `Cell`
// with a const initialiser, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// How many allocations `f` made on this thread.
fn allocations<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let before = ALLOCATIONS.with(Cell::get);
    let result = f();
    (ALLOCATIONS.with(Cell::get) - before, result)
}

#[test]
fn background_clones_and_deadlines_allocate_nothing() {
    let (n, ctx) = allocations(Context::background);
    assert_eq!(n, 0, "background");
    let (n, ctx) = allocations(|| ctx.with_timeout(Duration::from_secs(1)));
    assert_eq!(n, 0, "a deadline");
    let (n, _) = allocations(|| (ctx.clone(), ctx.err(), ctx.deadline(), ctx.is_done()));
    assert_eq!(n, 0, "clone and queries");
}

#[test]
fn a_cancel_scope_allocates_once_and_its_children_deadlines_and_clones_nothing_more() {
    let (n, (ctx, cancel)) = allocations(|| Context::background().with_cancel());
    assert_eq!(n, 1, "with_cancel");
    let (n, child) = allocations(|| ctx.with_timeout(Duration::from_secs(1)).clone());
    assert_eq!(n, 0, "deadline and clone under a scope");
    let (n, _) = allocations(|| cancel.cancel());
    assert_eq!(n, 0, "cancel without children, waiters or a cause");
    assert!(child.is_done());
}

#[test]
fn a_deadline_allocates_nothing_until_someone_waits_on_it() {
    let ctx = Context::background().with_timeout(Duration::from_secs(60));
    let (n, mut done) = allocations(|| ctx.done());
    assert_eq!(n, 0, "making the future");
    let (n, pending) = allocations(|| (&mut done).now_or_never());
    assert!(pending.is_none());
    assert!(n >= 1, "the first poll makes the sleep");
}
