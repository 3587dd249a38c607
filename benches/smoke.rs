//! CI's guard against overhead regressions: a few seconds, no criterion.
//!
//! Each check runs failfast and its hand-written baseline in alternating rounds and keeps the
//! fastest round of each (the least disturbed by whatever else the machine runs), then
//! compares their ratio with a bound about twice today's ratio: it fails on a bad regression,
//! not on noise. Allocations are counted exactly and compared with today's count. The figures
//! to publish are criterion's (`benches/overhead.rs`, `benches/group.rs`), not these.
//!
//! ```text
//! cargo bench --all-features --bench smoke
//! ```

use std::future::Future;
use std::hint::black_box;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use failfast::{
    BoxError, Context, FailFast, OrderService, Profile, ProfileService, UserAggregator,
};
use futures::FutureExt;
use futures::executor::block_on;
use futures::future::try_join_all;

mod common;

use common::ALLOCATIONS;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

const TIMEOUT: Duration = Duration::from_secs(2);

struct Ready;

impl ProfileService for Ready {
    async fn profile(&self, _: Context, _: u64) -> Result<Profile, BoxError> {
        Ok(Profile::new("Alice"))
    }
}

impl OrderService for Ready {
    async fn order_count(&self, _: Context, _: u64) -> Result<u32, BoxError> {
        Ok(5)
    }
}

/// The hand-written aggregate: `try_join` raced against the same timer, as in
/// `benches/overhead.rs` (an async-io `Timer` is registered only when polled).
async fn baseline(ctx: &Context) -> Result<(Profile, u32), BoxError> {
    let work = futures::future::try_join(
        Ready.profile(ctx.clone(), 42),
        Ready.order_count(ctx.clone(), 42),
    );
    let sleep = async_io::Timer::after(TIMEOUT);
    futures::select_biased! {
        result = work.fuse() => result,
        _ = sleep.fuse() => Err("deadline exceeded".into()),
    }
}

/// The time per run of `a` and of `b` in their fastest of `rounds` rounds of `iterations` runs
/// each; the rounds of `a` and `b` alternate.
fn best_of<A, B>(rounds: usize, iterations: usize, mut a: A, mut b: B) -> (Duration, Duration)
where
    A: FnMut(),
    B: FnMut(),
{
    let (mut best_a, mut best_b) = (Duration::MAX, Duration::MAX);
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..iterations {
            a();
        }
        best_a = best_a.min(start.elapsed() / iterations as u32);
        let start = Instant::now();
        for _ in 0..iterations {
            b();
        }
        best_b = best_b.min(start.elapsed() / iterations as u32);
    }
    (best_a, best_b)
}

/// Allocations made by one run of `one` (after a warm-up run).
fn allocations<F: Future>(mut one: impl FnMut() -> F) -> usize {
    black_box(block_on(one()));
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    black_box(block_on(one()));
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

struct Checks {
    failed: usize,
}

impl Checks {
    fn ratio(&mut self, what: &str, (ours, theirs): (Duration, Duration), bound: f64) {
        let ratio = ours.as_secs_f64() / theirs.as_secs_f64();
        let ok = ratio <= bound;
        println!(
            "{} {what}: failfast {ours:?}, baseline {theirs:?}, ratio {ratio:.2}x (bound {bound}x)",
            if ok { "ok  " } else { "FAIL" },
        );
        self.failed += usize::from(!ok);
    }

    fn count(&mut self, what: &str, ours: usize, theirs: usize, bound: usize) {
        let ok = ours <= bound;
        println!(
            "{} {what}: failfast {ours}, baseline {theirs} (bound {bound})",
            if ok { "ok  " } else { "FAIL" },
        );
        self.failed += usize::from(!ok);
    }
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    let ctx = Context::background();
    let mut checks = Checks { failed: 0 };

    let agg = UserAggregator::builder(Ready, Ready)
        .timer(failfast::timer::AsyncIo)
        .timeout(TIMEOUT)
        .build()
        .expect("a valid aggregator");
    let aggregate = || {
        black_box(block_on(agg.aggregate(&ctx, 42)).expect("answers"));
    };
    let hand_written = || {
        black_box(block_on(baseline(&ctx)).expect("answers"));
    };
    checks.ratio(
        "inline aggregate, async-io timer",
        best_of(20, 20_000, aggregate, hand_written),
        16.0,
    );
    checks.count(
        "allocations per inline aggregate",
        allocations(|| agg.aggregate(&ctx, 42)),
        allocations(|| baseline(&ctx)),
        6,
    );

    const N: u64 = 256;
    let ff = FailFast::builder()
        .timer(failfast::timer::AsyncIo)
        .timeout(TIMEOUT)
        .build()
        .expect("a valid FailFast");
    let group = || {
        let group = ff.group(&ctx);
        let calls =
            (0..N).map(|i| group.call("shard", move |_| async move { Ok::<_, BoxError>(i) }));
        black_box(block_on(group.run(try_join_all(calls))).expect("answers"));
    };
    let join = || {
        let calls = (0..N).map(|i| async move { Ok::<_, BoxError>(i) });
        black_box(block_on(try_join_all(calls)).expect("answers"));
    };
    checks.ratio(
        "inline group of 256 ready calls",
        best_of(20, 100, group, join),
        5.0,
    );

    if checks.failed > 0 {
        println!("{} overhead check(s) failed", checks.failed);
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
