//! What the benches share.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
#[cfg(feature = "smol")]
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts allocations. A bench that wants the count installs it:
/// `#[global_allocator] static GLOBAL: common::Counting = common::Counting;` (the library
/// never installs an allocator).
pub struct Counting;

/// Allocations (and reallocations) made since the process started, when [`Counting`] is the
/// global allocator.
pub static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` unchanged; the counter is a plain atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs a smol executor on one thread (the other core runs the benchmark) until dropped.
#[cfg(feature = "smol")]
pub struct SmolThread {
    pub ex: Arc<smol::Executor<'static>>,
    stop: Option<smol::channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[cfg(feature = "smol")]
impl SmolThread {
    pub fn start() -> SmolThread {
        let ex = Arc::new(smol::Executor::new());
        let (stop, stopped) = smol::channel::bounded::<()>(1);
        let runner = ex.clone();
        let thread = std::thread::spawn(move || {
            let _ = smol::block_on(runner.run(stopped.recv()));
        });
        SmolThread {
            ex,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

#[cfg(feature = "smol")]
impl Drop for SmolThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
