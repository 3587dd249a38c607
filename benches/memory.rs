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

// Without the runtime features the in-flight part has nothing to measure.
#![cfg_attr(not(any(feature = "smol", feature = "tokio")), allow(dead_code))]

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

/// Spawns `n` aggregates with `spawn` on a fresh tokio runtime, waits until every call has
/// started, prints the memory they hold, then tears everything down.
#[cfg(feature = "tokio")]
fn in_flight_tokio<F>(
    what: &str,
    n: usize,
    spawn: impl Fn(&tokio::runtime::Handle, Hangs, u64) -> F,
) where
    F: Future<Output = ()> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Hangs::default();
    let mut handles = Vec::with_capacity(n);
    let before = snapshot();
    for id in 0..n {
        handles.push(rt.spawn(spawn(rt.handle(), started.clone(), id as u64)));
    }
    wait_until(|| started.0.load(Ordering::SeqCst) == 2 * n);
    row(what, n, before, snapshot());
    for handle in &handles {
        handle.abort();
    }
    drop(handles);
    drop(rt); // waits for the aborted tasks to be dropped
}

/// The same on a fresh smol executor run by one thread.
#[cfg(feature = "smol")]
fn in_flight_smol<F>(
    what: &str,
    n: usize,
    spawn: impl Fn(&Arc<smol::Executor<'static>>, Hangs, u64) -> F,
) where
    F: Future<Output = ()> + Send + 'static,
{
    let ex = Arc::new(smol::Executor::new());
    let (stop, stopped) = smol::channel::bounded::<()>(1);
    let runner = ex.clone();
    let thread = std::thread::spawn(move || {
        let _ = smol::block_on(runner.run(stopped.recv()));
    });
    let started = Hangs::default();
    let mut tasks = Vec::with_capacity(n);
    let before = snapshot();
    for id in 0..n {
        tasks.push(ex.spawn(spawn(&ex, started.clone(), id as u64)));
    }
    wait_until(|| started.0.load(Ordering::SeqCst) == 2 * n);
    row(what, n, before, snapshot());
    drop(tasks); // cancels them
    drop(stop);
    let _ = thread.join();
    drop(ex);
}

/// Awaits `one()` 100 times to warm up, then `N` times between two snapshots.
async fn measure<F: Future>(mut one: impl FnMut() -> F) -> (Snapshot, Snapshot) {
    const N: usize = 10_000;
    for _ in 0..100 {
        std::hint::black_box(one().await);
    }
    let before = snapshot();
    for _ in 0..N {
        std::hint::black_box(one().await);
    }
    (before, snapshot())
}

/// Prints allocations and bytes per completed aggregate from [`measure`]'s snapshots.
fn completed(what: &str, (before, after): (Snapshot, Snapshot)) {
    const N: f64 = 10_000.0;
    let allocations = (after.allocations - before.allocations) as f64 / N;
    let bytes = (after.allocated - before.allocated) as f64 / N;
    println!("| {what} | {allocations:.1} | {bytes:.0} |");
}

/// The hand-written two calls, joined.
fn calls(ctx: &Context) -> impl Future<Output = Result<(Profile, u32), BoxError>> + use<> {
    futures::future::try_join(
        Ready.profile(ctx.clone(), 1),
        Ready.order_count(ctx.clone(), 1),
    )
}

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        return; // `cargo test --benches`: nothing to check
    }
    let ctx = Context::background();

    println!("## Allocations per completed aggregate (services answer at once)\n");
    println!("| executor + timer | allocations | bytes allocated |");
    println!("|---|---|---|");
    let agg = UserAggregator::builder(Ready, Ready)
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    completed(
        "inline + FuturesTimer: failfast",
        futures::executor::block_on(measure(|| agg.aggregate(&ctx, 1))),
    );
    completed(
        "inline + FuturesTimer: baseline try_join + select! on a Delay",
        futures::executor::block_on(measure(|| {
            futures::future::select(Box::pin(calls(&ctx)), futures_timer::Delay::new(TIMEOUT))
        })),
    );
    #[cfg(feature = "tokio")]
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let timer = failfast::timer::Tokio::new(rt.handle().clone());
        let agg = UserAggregator::builder(Ready, Ready)
            .timer(timer.clone())
            .timeout(TIMEOUT)
            .build()
            .unwrap();
        completed(
            "inline + Tokio timer: failfast",
            rt.block_on(measure(|| agg.aggregate(&ctx, 1))),
        );
        completed(
            "inline + Tokio timer: baseline timeout(try_join)",
            rt.block_on(measure(|| tokio::time::timeout(TIMEOUT, calls(&ctx)))),
        );
        let agg = UserAggregator::builder(Ready, Ready)
            .executor(failfast::executor::Tokio::new(rt.handle().clone()))
            .timer(timer)
            .timeout(TIMEOUT)
            .build()
            .unwrap();
        completed(
            "tokio + Tokio timer: failfast",
            rt.block_on(measure(|| agg.aggregate(&ctx, 1))),
        );
        completed(
            "tokio + Tokio timer: baseline spawn x2 + timeout(try_join)",
            rt.block_on(measure(|| {
                let profile = tokio::spawn(Ready.profile(ctx.clone(), 1));
                let count = tokio::spawn(Ready.order_count(ctx.clone(), 1));
                tokio::time::timeout(TIMEOUT, futures::future::join(profile, count))
            })),
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
            smol::block_on(ex.run(measure(|| agg.aggregate(&ctx, 1)))),
        );
        completed(
            "smol + AsyncIo: baseline spawn x2 raced against a Timer",
            smol::block_on(ex.run(measure(|| {
                let profile = ex.spawn(Ready.profile(ctx.clone(), 1));
                let count = ex.spawn(Ready.order_count(ctx.clone(), 1));
                futures::future::select(
                    futures::future::try_join(profile, count),
                    async_io::Timer::after(TIMEOUT),
                )
            }))),
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
            async_std::task::block_on(measure(|| agg.aggregate(&ctx, 1))),
        );
        completed(
            "async-std + AsyncIo: baseline spawn x2 + future::timeout",
            async_std::task::block_on(measure(|| {
                let profile = async_std::task::spawn(Ready.profile(ctx.clone(), 1));
                let count = async_std::task::spawn(Ready.order_count(ctx.clone(), 1));
                async_std::future::timeout(TIMEOUT, futures::future::try_join(profile, count))
            })),
        );
    }

    println!("\n## Memory per in-flight aggregate (both services pending)\n");
    println!("Each aggregate runs in its own spawned task, as in a server; the bench keeps its");
    println!("handle (8 bytes). Both columns include that task and handle.\n");
    println!("| runtime | in flight | live bytes per aggregate | allocations per aggregate |");
    println!("|---|---|---|---|");
    for n in [10_000, 100_000] {
        #[cfg(feature = "smol")]
        {
            // One aggregator for all, as a server has (built by the first aggregate).
            let shared = std::sync::OnceLock::new();
            in_flight_smol("smol: failfast Smol + AsyncIo", n, |ex, hangs, id| {
                let agg = Arc::clone(shared.get_or_init(|| {
                    Arc::new(
                        UserAggregator::builder(hangs.clone(), hangs)
                            .executor(failfast::executor::Smol::new(ex.clone()))
                            .timer(failfast::timer::AsyncIo)
                            .timeout(TIMEOUT)
                            .build()
                            .unwrap(),
                    )
                }));
                async move {
                    let _ = agg.aggregate(&Context::background(), id).await;
                }
            });
            in_flight_smol("smol: baseline spawn x2 + Timer", n, |ex, hangs, id| {
                let ex = ex.clone();
                async move {
                    let ctx = Context::background();
                    let (p, o, c) = (hangs.clone(), hangs, ctx.clone());
                    let profile = ex.spawn(async move { p.profile(c, id).await });
                    let count = ex.spawn(async move { o.order_count(ctx, id).await });
                    let calls = futures::future::try_join(profile, count);
                    let _ =
                        futures::future::select(Box::pin(calls), async_io::Timer::after(TIMEOUT))
                            .await;
                }
            });
        }
        #[cfg(feature = "tokio")]
        {
            let shared = std::sync::OnceLock::new();
            in_flight_tokio(
                "tokio: failfast Tokio + Tokio timer",
                n,
                |handle, hangs, id| {
                    let agg = Arc::clone(shared.get_or_init(|| {
                        Arc::new(
                            UserAggregator::builder(hangs.clone(), hangs)
                                .executor(failfast::executor::Tokio::new(handle.clone()))
                                .timer(failfast::timer::Tokio::new(handle.clone()))
                                .timeout(TIMEOUT)
                                .build()
                                .unwrap(),
                        )
                    }));
                    async move {
                        let _ = agg.aggregate(&Context::background(), id).await;
                    }
                },
            );
            in_flight_tokio(
                "tokio: baseline JoinSet x2 + timeout",
                n,
                |_, hangs, id| async move {
                    let mut set = tokio::task::JoinSet::new();
                    let ctx = Context::background();
                    let (p, o) = (hangs.clone(), hangs);
                    let c = ctx.clone();
                    set.spawn(async move { p.profile(c, id).await.map(|_| ()) });
                    set.spawn(async move { o.order_count(ctx, id).await.map(|_| ()) });
                    let _ = tokio::time::timeout(TIMEOUT, async move {
                        while set.join_next().await.is_some() {}
                    })
                    .await;
                },
            );
        }
        let _ = n;
    }
}
