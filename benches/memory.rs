//! Memory, counted by a global allocator that wraps the system's (here, in the bench; the
//! library never installs one):
//!
//! 1. **Per in-flight aggregate**: 10k and 100k aggregates pending at once (both services
//!    hang) on smol and tokio: live bytes and allocations per aggregate, next to the same
//!    number of hand-written "spawn two tasks" aggregates in flight.
//! 2. **Per completed aggregate**: allocations and bytes allocated by one aggregate with
//!    services that answer at once, on each executor, next to the hand-written baseline.
//!
//! ```text
//! cargo bench --all-features --bench memory
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use failfast::{BoxError, Context, OrderService, Profile, ProfileService, UserAggregator, UserId};

/// Counts allocations and live bytes.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` unchanged; the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone, Copy)]
struct Snapshot {
    allocations: usize,
    allocated: usize,
    live: usize,
}

fn snapshot() -> Snapshot {
    Snapshot {
        allocations: ALLOCATIONS.load(Ordering::SeqCst),
        allocated: ALLOCATED.load(Ordering::SeqCst),
        live: LIVE.load(Ordering::SeqCst),
    }
}

/// Answers at once.
struct Ready;

impl ProfileService for Ready {
    async fn profile(&self, _: Context, _: UserId) -> Result<Profile, BoxError> {
        Ok(Profile::new("Alice"))
    }
}

impl OrderService for Ready {
    async fn order_count(&self, _: Context, _: UserId) -> Result<u32, BoxError> {
        Ok(5)
    }
}

/// Never answers; counts the calls that started.
#[derive(Clone, Default)]
struct Hangs(Arc<AtomicUsize>);

impl ProfileService for Hangs {
    async fn profile(&self, _: Context, _: UserId) -> Result<Profile, BoxError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
}

impl OrderService for Hangs {
    async fn order_count(&self, _: Context, _: UserId) -> Result<u32, BoxError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
}

const TIMEOUT: Duration = Duration::from_secs(600);

/// Waits (really) until `done`, for at most a minute.
fn wait_until(done: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(60), "did not settle");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
}

/// Prints one table row: per-aggregate live bytes and allocations between two snapshots.
fn row(what: &str, n: usize, before: Snapshot, during: Snapshot) {
    let live = during.live.saturating_sub(before.live) as f64 / n as f64;
    let allocations = (during.allocations - before.allocations) as f64 / n as f64;
    println!("| {what} | {n} | {live:.0} | {allocations:.1} |");
}

#[cfg(feature = "tokio")]
fn in_flight_tokio(n: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Hangs::default();
    let agg = Arc::new(
        UserAggregator::builder(started.clone(), started.clone())
            .executor(failfast::executor::Tokio::new(rt.handle().clone()))
            .timer(failfast::timer::Tokio::new(rt.handle().clone()))
            .timeout(TIMEOUT)
            .build()
            .unwrap(),
    );
    // Each aggregate is itself a spawned task, as in a server; its own task is part of the cost.
    let before = snapshot();
    let handles: Vec<_> = (0..n)
        .map(|id| {
            let agg = agg.clone();
            rt.spawn(async move { agg.aggregate(&Context::background(), id as u64).await })
        })
        .collect();
    wait_until(|| started.0.load(Ordering::SeqCst) == 2 * n);
    row(
        "tokio, failfast (incl. the caller's own task)",
        n,
        before,
        snapshot(),
    );
    for handle in &handles {
        handle.abort();
    }
    drop(handles);
    drop(rt);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Hangs::default();
    let before = snapshot();
    let handles: Vec<_> = (0..n)
        .map(|id| {
            let (p, o) = (started.clone(), started.clone());
            rt.spawn(async move {
                let mut set = tokio::task::JoinSet::new();
                let ctx = Context::background();
                let c = ctx.clone();
                set.spawn(async move { p.profile(c, id as u64).await.map(|_| ()) });
                set.spawn(async move { o.order_count(ctx, id as u64).await.map(|_| ()) });
                tokio::time::timeout(
                    TIMEOUT,
                    async move { while set.join_next().await.is_some() {} },
                )
                .await
            })
        })
        .collect();
    wait_until(|| started.0.load(Ordering::SeqCst) == 2 * n);
    row(
        "tokio, baseline JoinSet x2 + timeout (incl. the caller's task)",
        n,
        before,
        snapshot(),
    );
    for handle in &handles {
        handle.abort();
    }
}

#[cfg(feature = "smol")]
fn in_flight_smol(n: usize) {
    let ex = Arc::new(smol::Executor::new());
    let (stop, stopped) = smol::channel::bounded::<()>(1);
    let runner = ex.clone();
    let thread = std::thread::spawn(move || {
        let _ = smol::block_on(runner.run(stopped.recv()));
    });
    let started = Hangs::default();
    let agg = Arc::new(
        UserAggregator::builder(started.clone(), started.clone())
            .executor(failfast::executor::Smol::new(ex.clone()))
            .timer(failfast::timer::AsyncIo)
            .timeout(TIMEOUT)
            .build()
            .unwrap(),
    );
    let before = snapshot();
    let tasks: Vec<_> = (0..n)
        .map(|id| {
            let agg = agg.clone();
            ex.spawn(async move { agg.aggregate(&Context::background(), id as u64).await })
        })
        .collect();
    wait_until(|| started.0.load(Ordering::SeqCst) == 2 * n);
    row(
        "smol, failfast (incl. the caller's own task)",
        n,
        before,
        snapshot(),
    );
    drop(tasks);

    let started = Hangs::default();
    let before = snapshot();
    let tasks: Vec<_> = (0..n)
        .map(|id| {
            let (p, o, inner) = (started.clone(), started.clone(), ex.clone());
            ex.spawn(async move {
                let ctx = Context::background();
                let c = ctx.clone();
                let profile = inner.spawn(async move { p.profile(c, id as u64).await });
                let count = inner.spawn(async move { o.order_count(ctx, id as u64).await });
                futures::future::select(
                    Box::pin(futures::future::try_join(profile, count)),
                    async_io::Timer::after(TIMEOUT),
                )
                .await;
            })
        })
        .collect();
    wait_until(|| started.0.load(Ordering::SeqCst) == 2 * n);
    row(
        "smol, baseline spawn x2 + Timer (incl. the caller's task)",
        n,
        before,
        snapshot(),
    );
    drop(tasks);
    drop(stop);
    let _ = thread.join();
}

/// Allocations and bytes of one completed aggregate, averaged over many.
fn completed<F: Future>(what: &str, mut one: impl FnMut() -> F, block_on: impl Fn(F) -> F::Output) {
    const N: usize = 10_000;
    for _ in 0..100 {
        block_on(one()); // warm-up: lazily initialised runtime state
    }
    let before = snapshot();
    for _ in 0..N {
        block_on(one());
    }
    let after = snapshot();
    let allocations = (after.allocations - before.allocations) as f64 / N as f64;
    let bytes = (after.allocated - before.allocated) as f64 / N as f64;
    println!("| {what} | {allocations:.1} | {bytes:.0} |");
}

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        return; // `cargo test --benches`: nothing to check
    }

    println!("## Allocations per completed aggregate (services answer at once)\n");
    println!("| executor + timer | allocations | bytes allocated |");
    println!("|---|---|---|");
    let ctx = Context::background();
    let agg = UserAggregator::builder(Ready, Ready)
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    completed(
        "inline + FuturesTimer: failfast",
        || agg.aggregate(&ctx, 1),
        futures::executor::block_on,
    );
    completed(
        "inline + FuturesTimer: baseline try_join + select! on a Delay",
        || async {
            let calls = futures::future::try_join(
                Ready.profile(ctx.clone(), 1),
                Ready.order_count(ctx.clone(), 1),
            );
            futures::future::select(Box::pin(calls), futures_timer::Delay::new(TIMEOUT)).await;
        },
        futures::executor::block_on,
    );
    #[cfg(feature = "tokio")]
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let agg = UserAggregator::builder(Ready, Ready)
            .executor(failfast::executor::Tokio::new(rt.handle().clone()))
            .timer(failfast::timer::Tokio::new(rt.handle().clone()))
            .timeout(TIMEOUT)
            .build()
            .unwrap();
        completed(
            "tokio + Tokio timer: failfast",
            || agg.aggregate(&ctx, 1),
            |f| rt.block_on(f),
        );
        let agg = UserAggregator::builder(Ready, Ready)
            .timer(failfast::timer::Tokio::new(rt.handle().clone()))
            .timeout(TIMEOUT)
            .build()
            .unwrap();
        completed(
            "inline + Tokio timer: failfast",
            || agg.aggregate(&ctx, 1),
            |f| rt.block_on(f),
        );
        completed(
            "inline + Tokio timer: baseline timeout(try_join)",
            || async {
                let calls = futures::future::try_join(
                    Ready.profile(ctx.clone(), 1),
                    Ready.order_count(ctx.clone(), 1),
                );
                tokio::time::timeout(TIMEOUT, calls).await
            },
            |f| rt.block_on(f),
        );
    }
    #[cfg(feature = "smol")]
    {
        let ex = Arc::new(smol::Executor::new());
        let agg = UserAggregator::builder(Ready, Ready)
            .executor(failfast::executor::Smol::new(ex.clone()))
            .timer(failfast::timer::AsyncIo)
            .timeout(TIMEOUT)
            .build()
            .unwrap();
        completed(
            "smol + AsyncIo: failfast",
            || agg.aggregate(&ctx, 1),
            |f| smol::block_on(ex.run(f)),
        );
    }
    #[cfg(feature = "async-std")]
    {
        let agg = UserAggregator::builder(Ready, Ready)
            .executor(failfast::executor::AsyncStd)
            .timer(failfast::timer::AsyncIo)
            .timeout(TIMEOUT)
            .build()
            .unwrap();
        completed(
            "async-std + AsyncIo: failfast",
            || agg.aggregate(&ctx, 1),
            async_std::task::block_on,
        );
    }

    println!("\n## Memory per in-flight aggregate (both services pending)\n");
    println!("| runtime | in flight | live bytes per aggregate | allocations per aggregate |");
    println!("|---|---|---|---|");
    for n in [10_000, 100_000] {
        #[cfg(feature = "smol")]
        in_flight_smol(n);
        #[cfg(feature = "tokio")]
        in_flight_tokio(n);
        let _ = n;
    }
}
