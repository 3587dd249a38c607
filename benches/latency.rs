//! Tail latencies that criterion's means hide, printed as percentile tables:
//!
//! 1. **Fail-fast latency**: from the moment the failing service returns its error to the
//!    moment `aggregate` returns, while the sibling is still pending (it never answers); next
//!    to a hand-written aggregate that spawns both calls and `try_join`s their tasks.
//! 2. **Deadline overshoot**: how late `DeadlineExceeded` arrives after the deadline, per
//!    timer, with the machine idle and with every core busy. A negative value (early) is
//!    counted separately and must be zero.
//!
//! ```text
//! cargo bench --all-features --bench latency
//! FAILFAST_SAMPLES=2000 cargo bench --all-features --bench latency   # fewer samples
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use failfast::{
    BoxError, Context, Executor, OrderService, Profile, ProfileService, Timer, UserAggregator,
    UserId, executor,
};

/// When the failing service returned, in nanoseconds since [`base`].
static FAILED_AT: AtomicU64 = AtomicU64::new(0);

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn nanos_since_base(at: Instant) -> u64 {
    u64::try_from(at.duration_since(base()).as_nanos()).unwrap_or(u64::MAX)
}

/// Yields once (so that the sibling is started and pending), then records the time and fails.
struct FailsAfterAYield;

impl ProfileService for FailsAfterAYield {
    async fn profile(&self, _: Context, _: UserId) -> Result<Profile, BoxError> {
        let mut yielded = false;
        futures::future::poll_fn(|cx| {
            if yielded {
                std::task::Poll::Ready(())
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        })
        .await;
        FAILED_AT.store(nanos_since_base(Instant::now()), Ordering::SeqCst);
        Err("profile db down".into())
    }
}

/// Never answers.
struct Hangs;

impl OrderService for Hangs {
    async fn order_count(&self, _: Context, _: UserId) -> Result<u32, BoxError> {
        std::future::pending().await
    }
}

impl ProfileService for Hangs {
    async fn profile(&self, _: Context, _: UserId) -> Result<Profile, BoxError> {
        std::future::pending().await
    }
}

/// p50, p99 and max of `samples` (nanoseconds), in microseconds.
fn percentiles(samples: &mut [u64]) -> (f64, f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| {
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[index] as f64 / 1_000.0
    };
    (at(0.50), at(0.99), at(1.0))
}

fn samples() -> usize {
    std::env::var("FAILFAST_SAMPLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000)
}

/// Measures fail-fast latency on `ex`; the aggregate itself is driven by `block_on` on this
/// thread, the calls run on `ex`.
fn fail_fast<E: Executor>(name: &str, ex: E) {
    let agg = UserAggregator::builder(FailsAfterAYield, Hangs)
        .executor(ex)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let ctx = Context::background();
    let n = samples();
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let err = futures::executor::block_on(agg.aggregate(&ctx, 1)).unwrap_err();
        let returned = nanos_since_base(Instant::now());
        assert_eq!(err.service(), Some("profile"));
        latencies.push(returned.saturating_sub(FAILED_AT.load(Ordering::SeqCst)));
    }
    let (p50, p99, max) = percentiles(&mut latencies);
    println!("| {name} | {n} | {p50:.1} | {p99:.1} | {max:.1} |");
}

/// A spawned call as a hand-written aggregate would await it: its task's result.
#[cfg_attr(
    not(any(feature = "smol", feature = "tokio", feature = "async-std")),
    allow(dead_code)
)]
type Spawned = futures::future::BoxFuture<'static, Result<(), BoxError>>;

/// The same measurement for a hand-written aggregate: both calls spawned with `spawn` (which
/// returns a future of the task's result that cancels the task when dropped), joined with
/// `try_join`.
#[cfg_attr(
    not(any(feature = "smol", feature = "tokio", feature = "async-std")),
    allow(dead_code)
)]
fn fail_fast_baseline(name: &str, spawn: impl Fn(Spawned) -> Spawned) {
    let n = samples();
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let (for_profile, for_orders) = (Context::background(), Context::background());
        let profile = spawn(Box::pin(async move {
            let service = FailsAfterAYield;
            service.profile(for_profile, 1).await.map(drop)
        }));
        let orders = spawn(Box::pin(async move {
            let service = Hangs;
            OrderService::order_count(&service, for_orders, 1)
                .await
                .map(drop)
        }));
        let joined = futures::executor::block_on(futures::future::try_join(profile, orders));
        let returned = nanos_since_base(Instant::now());
        assert!(joined.is_err());
        latencies.push(returned.saturating_sub(FAILED_AT.load(Ordering::SeqCst)));
    }
    let (p50, p99, max) = percentiles(&mut latencies);
    println!("| {name} | {n} | {p50:.1} | {p99:.1} | {max:.1} |");
}

/// Measures deadline overshoot with `timer`: a 5 ms deadline, both services hanging, inline.
fn overshoot<T: Timer>(name: &str, load: &str, timer: T) {
    const DEADLINE: Duration = Duration::from_millis(5);
    let agg = UserAggregator::builder(Hangs, Hangs)
        .timer(timer.clone())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let n = (samples() / 20).max(50);
    let mut late = Vec::with_capacity(n);
    let mut early = 0_usize;
    for _ in 0..n {
        let deadline = timer.now() + DEADLINE;
        let ctx = Context::background().with_deadline(deadline);
        let err = futures::executor::block_on(agg.aggregate(&ctx, 1)).unwrap_err();
        let now = timer.now();
        assert!(err.is_deadline_exceeded(), "{err:?}");
        match now.checked_duration_since(deadline) {
            Some(after) => late.push(u64::try_from(after.as_nanos()).unwrap_or(u64::MAX)),
            None => early += 1,
        }
    }
    let (p50, p99, max) = percentiles(&mut late);
    println!("| {name} | {load} | {n} | {p50:.0} | {p99:.0} | {max:.0} | {early} |");
}

/// Aborts a tokio task when dropped (its `JoinHandle` would detach it).
#[cfg(feature = "tokio")]
struct AbortOnDrop(tokio::task::AbortHandle);

#[cfg(feature = "tokio")]
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keeps every core busy until dropped.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start() -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0_u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        Load { stop, threads }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not and wants a quick check.
    let benching = std::env::args().any(|arg| arg == "--bench");
    if !benching {
        return;
    }
    base();

    println!("## Fail-fast latency (µs): failing service returns -> aggregate returns\n");
    println!("| executor | samples | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    fail_fast("inline", executor::Inline);
    #[cfg(feature = "smol")]
    {
        let ex = Arc::new(smol::Executor::new());
        let (stop, stopped) = smol::channel::bounded::<()>(1);
        let runner = ex.clone();
        let thread = std::thread::spawn(move || {
            let _ = smol::block_on(runner.run(stopped.recv()));
        });
        fail_fast("smol", executor::Smol::new(ex.clone()));
        fail_fast_baseline("smol: baseline spawn x2 + try_join", |call| {
            let task = ex.spawn(call); // a smol Task cancels when dropped
            Box::pin(task)
        });
        drop(stop);
        let _ = thread.join();
    }
    #[cfg(feature = "tokio")]
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        fail_fast("tokio", executor::Tokio::new(rt.handle().clone()));
        fail_fast_baseline("tokio: baseline spawn x2 + try_join", |call| {
            let task = rt.spawn(call);
            let abort = task.abort_handle();
            let guard = AbortOnDrop(abort);
            Box::pin(async move {
                let _guard = guard;
                task.await.map_err(BoxError::from)?
            })
        });
    }
    #[cfg(feature = "async-std")]
    {
        fail_fast("async-std", executor::AsyncStd);
        // async-std's JoinHandle detaches when dropped: the hanging calls are left behind.
        fail_fast_baseline("async-std: baseline spawn x2 + try_join", |call| {
            Box::pin(async_std::task::spawn(call))
        });
    }

    println!("\n## Deadline overshoot (µs after a 5 ms deadline; `early` must be 0)\n");
    println!("| timer | load | samples | p50 | p99 | max | early |");
    println!("|---|---|---|---|---|---|---|");
    for load in ["idle", "all cores busy"] {
        let _load = (load != "idle").then(Load::start);
        overshoot("FuturesTimer", load, failfast::timer::FuturesTimer);
        #[cfg(any(feature = "smol", feature = "async-std"))]
        overshoot("AsyncIo", load, failfast::timer::AsyncIo);
        #[cfg(feature = "tokio")]
        {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let timer = failfast::timer::Tokio::new(rt.handle().clone());
            overshoot("Tokio", load, timer);
        }
    }
}
