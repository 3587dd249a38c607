//! The cost of a fail-fast [`Group`](failfast::Group) per call: N calls that answer at once,
//! joined with `try_join_all`, so everything measured is the group (or the hand-written code
//! it replaces), not the services. Throughput is in elements (calls), so criterion also shows
//! the cost of one call.
//!
//! Each group holds failfast and its hand-written baseline, measured in the same run:
//!
//! | group | N | failfast | baseline |
//! |---|---|---|---|
//! | `group-inline/async-io/{n}` | 2, 16, 256, 1024 | `Inline` + `AsyncIo` | `try_join_all`, raced against an async-io `Timer` made only if the join is pending after its first poll; and "hand-written, same guarantees": a shared child context cancelled on return, panics caught, the first failure seen whatever the order (`try_join_all` up to 30 calls, a `FuturesUnordered` above), the same race |
//! | `group-inline/tokio-timer/{n}` | 2, 16, 256, 1024 | `Inline` + `timer::Tokio` | `tokio::time::timeout(try_join_all(..))` |
//! | `group-spawn/tokio/{n}` | 16, 256 | `Tokio` + `timer::Tokio` | `JoinSet` x N + `timeout`, `abort_all` on the first error |
//! | `group-spawn/smol/{n}` | 16, 256 | `Smol` + `AsyncIo` | `smol::Executor::spawn` x N, `try_join_all` of the tasks raced against a `Timer` |
//!
//! The inline groups are driven by criterion's `FuturesExecutor` (the tokio-timer one inside
//! the runtime's context, whose worker threads drive the timer); `group-spawn/tokio` runs on a
//! multi-thread runtime; `group-spawn/smol` runs on a `smol::Executor` with one background
//! thread. Every variant returns the values in input order.
//!
//! ```text
//! cargo bench --all-features --bench group
//! cargo bench --all-features --bench group -- --quick     # a fast, rougher run
//! cargo bench --all-features --bench group -- group-spawn  # only the groups matching a filter
//! ```
//! Without `--all-features` only the baseline of `group-inline/async-io` runs (`AsyncIo` needs
//! the `smol` or `async-std` feature, the others need `tokio` or `smol`).

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

mod common;

#[cfg(feature = "smol")]
use common::SmolThread;
use criterion::async_executor::FuturesExecutor;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use failfast::BoxError;
#[cfg(any(feature = "smol", feature = "async-std", feature = "tokio"))]
use failfast::{Context, Executor, FailFast, Timer};
use futures::FutureExt;
use futures::executor::block_on;
use futures::future::try_join_all;

/// The deadline of every measured group: far away, never reached.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The numbers of calls of the inline groups.
const INLINE_SIZES: [usize; 4] = [2, 16, 256, 1024];

/// The numbers of calls of the spawned groups.
#[cfg(any(feature = "tokio", feature = "smol"))]
const SPAWN_SIZES: [usize; 2] = [16, 256];

/// One shard's service: answers at once, with its index.
async fn shard(i: usize) -> Result<usize, BoxError> {
    Ok(i)
}

/// failfast: `n` calls of [`shard`] in one group, joined in input order.
#[cfg(any(feature = "smol", feature = "async-std", feature = "tokio"))]
async fn fan_out<E: Executor, T: Timer>(
    ff: &FailFast<E, T>,
    ctx: &Context,
    n: usize,
) -> Result<Vec<usize>, failfast::Error> {
    let group = ff.group(ctx);
    group
        .run(try_join_all(
            (0..n).map(|i| group.call("shard", move |_ctx| shard(i))),
        ))
        .await
}

/// Awaits `iters` runs of `one`, one after the other; returns how long they took.
#[cfg(any(feature = "smol", feature = "async-std"))]
async fn timed<F: Future>(iters: u64, mut one: impl FnMut() -> F) -> std::time::Duration {
    let start = std::time::Instant::now();
    for _ in 0..iters {
        std::hint::black_box(one().await);
    }
    start.elapsed()
}

/// Checks, before measuring, that a variant returns the `n` values in input order.
fn check<E: std::fmt::Debug>(variant: &str, result: Result<Vec<usize>, E>, n: usize) {
    let expected: Vec<usize> = (0..n).collect();
    assert_eq!(result.unwrap(), expected, "{variant} with {n} calls");
}

/// Races `work` against the sleep made by `sleep`, results first: the baseline's fail-fast
/// core. As in failfast, the sleep is made only if `work` is still pending after its first
/// poll, so work that is ready at once needs no timer.
async fn race_lazy<T, S: Future>(
    work: impl Future<Output = Result<T, BoxError>>,
    sleep: impl FnOnce() -> S,
) -> Result<T, BoxError> {
    let mut work = pin!(work.fuse());
    if let Poll::Ready(result) = futures::poll!(work.as_mut()) {
        return result;
    }
    let mut sleep = pin!(sleep().fuse());
    futures::select_biased! {
        result = work => result,
        _ = sleep => Err("deadline exceeded".into()),
    }
}

/// The baseline of `group-inline/async-io`.
fn async_io_baseline(n: usize) -> impl Future<Output = Result<Vec<usize>, BoxError>> {
    race_lazy(try_join_all((0..n).map(shard)), || {
        async_io::Timer::after(TIMEOUT)
    })
}

/// Hand-written code with the group's guarantees, for calls of one type: the calls share a
/// child context that is cancelled when it returns; each call's panic (making its future or
/// polling it) is caught and named; the first failure returns at once whatever the order of
/// the calls; raced against the same deadline as the baseline. Up to 30 calls `try_join_all`
/// already returns the first failure wherever it is, and is used as is; above, it waits in
/// input order, so the calls go in a `FuturesUnordered` and their values are put back in
/// order. What it leaves out: calls of different types (it would box each one), logs, the
/// observer, limits, optional calls and per-call timeouts. Not in the issue's bar; it shows how
/// much of the gap to the bare `try_join_all` is these guarantees rather than the group.
#[cfg(any(feature = "smol", feature = "async-std"))]
fn same_guarantees(
    ctx: &Context,
    n: usize,
) -> impl Future<Output = Result<Vec<usize>, BoxError>> + '_ {
    use futures::StreamExt;
    use futures::stream::FuturesUnordered;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    async move {
        let (scope, cancel) = ctx.with_cancel();
        let _cancel = cancel.drop_guard();
        // Call `i`, its panics contained and its failure named.
        let call = |i: usize| {
            let factory = move |_ctx: Context| shard(i);
            let made = catch_unwind(AssertUnwindSafe(|| factory(scope.clone())));
            async move {
                let outcome = match made {
                    Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
                    Err(panic) => Err(panic),
                };
                match outcome {
                    Ok(Ok(value)) => Ok(value),
                    Ok(Err(err)) => Err(BoxError::from(format!("shard {i} failed: {err}"))),
                    Err(_) => Err(BoxError::from(format!("shard {i} panicked"))),
                }
            }
        };
        let work = async {
            if n <= 30 {
                return try_join_all((0..n).map(call)).await;
            }
            let mut calls: FuturesUnordered<_> = (0..n)
                .map(|i| call(i).map(move |outcome| (i, outcome)))
                .collect();
            let mut values = vec![None; n];
            while let Some((i, outcome)) = calls.next().await {
                values[i] = Some(outcome?);
            }
            Ok(values.into_iter().flatten().collect())
        };
        race_lazy(work, || async_io::Timer::after(TIMEOUT)).await
    }
}

fn inline_async_io(c: &mut Criterion) {
    #[cfg(any(feature = "smol", feature = "async-std"))]
    let ctx = Context::background();
    #[cfg(any(feature = "smol", feature = "async-std"))]
    let ff = FailFast::builder()
        .timer(failfast::timer::AsyncIo)
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    for n in INLINE_SIZES {
        let mut group = c.benchmark_group(format!("group-inline/async-io/{n}"));
        group.throughput(Throughput::Elements(n as u64));
        #[cfg(any(feature = "smol", feature = "async-std"))]
        {
            check("failfast", block_on(fan_out(&ff, &ctx, n)), n);
            group.bench_function("failfast", |b| {
                b.to_async(FuturesExecutor).iter(|| fan_out(&ff, &ctx, n))
            });
        }
        check("baseline", block_on(async_io_baseline(n)), n);
        group.bench_function("baseline", |b| {
            b.to_async(FuturesExecutor).iter(|| async_io_baseline(n))
        });
        #[cfg(any(feature = "smol", feature = "async-std"))]
        {
            check("same guarantees", block_on(same_guarantees(&ctx, n)), n);
            group.bench_function("hand-written, same guarantees", |b| {
                b.to_async(FuturesExecutor)
                    .iter(|| same_guarantees(&ctx, n))
            });
        }
        group.finish();
    }
}

/// A multi-thread runtime with a time driver. Its workers drive the timer of the inline
/// groups and run the tasks of `group-spawn/tokio`.
#[cfg(feature = "tokio")]
fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

#[cfg(feature = "tokio")]
fn inline_tokio_timer(c: &mut Criterion) {
    let rt = tokio_runtime();
    // The baseline's `tokio::time::timeout` needs the runtime's context; the benchmark itself
    // runs on criterion's `FuturesExecutor`, as a group on `Inline` would.
    let _runtime = rt.enter();
    let ff = FailFast::builder()
        .timer(failfast::timer::Tokio::new(rt.handle().clone()))
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let ctx = Context::background();
    for n in INLINE_SIZES {
        let mut group = c.benchmark_group(format!("group-inline/tokio-timer/{n}"));
        group.throughput(Throughput::Elements(n as u64));
        let baseline = || tokio::time::timeout(TIMEOUT, try_join_all((0..n).map(shard)));
        check("failfast", block_on(fan_out(&ff, &ctx, n)), n);
        check("baseline", block_on(baseline()).unwrap(), n);
        group.bench_function("failfast", |b| {
            b.to_async(FuturesExecutor).iter(|| fan_out(&ff, &ctx, n))
        });
        group.bench_function("baseline", |b| b.to_async(FuturesExecutor).iter(baseline));
        group.finish();
    }
}

/// The baseline of `group-spawn/tokio`, tokio's idiom: a `JoinSet` (which aborts its tasks
/// when dropped) under a timeout, aborting the rest at the first error; the results are put
/// back in input order.
#[cfg(feature = "tokio")]
async fn join_set(n: usize) -> Result<Vec<usize>, BoxError> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        set.spawn(async move { (i, shard(i).await) });
    }
    let collected = tokio::time::timeout(TIMEOUT, async {
        let mut values = vec![0; n];
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((i, Ok(value))) => values[i] = value,
                Ok((_, Err(error))) => {
                    set.abort_all();
                    return Err(error);
                }
                Err(error) => {
                    set.abort_all();
                    return Err(BoxError::from(error));
                }
            }
        }
        Ok(values)
    })
    .await;
    collected.map_err(BoxError::from)?
}

#[cfg(feature = "tokio")]
fn spawn_tokio(c: &mut Criterion) {
    let rt = tokio_runtime();
    let ff = FailFast::builder()
        .executor(failfast::executor::Tokio::new(rt.handle().clone()))
        .timer(failfast::timer::Tokio::new(rt.handle().clone()))
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let ctx = Context::background();
    for n in SPAWN_SIZES {
        let mut group = c.benchmark_group(format!("group-spawn/tokio/{n}"));
        group.throughput(Throughput::Elements(n as u64));
        check("failfast", rt.block_on(fan_out(&ff, &ctx, n)), n);
        check("baseline", rt.block_on(join_set(n)), n);
        group.bench_function("failfast", |b| {
            b.to_async(&rt).iter(|| fan_out(&ff, &ctx, n))
        });
        group.bench_function("baseline", |b| b.to_async(&rt).iter(|| join_set(n)));
        group.finish();
    }
}

/// The baseline of `group-spawn/smol`, smol's idiom: tasks cancel when dropped; their join
/// is raced against a `Timer`. `try_join_all` keeps input order and drops the rest (so
/// cancels them) at the first error.
#[cfg(feature = "smol")]
async fn smol_tasks(ex: &smol::Executor<'static>, n: usize) -> Result<Vec<usize>, BoxError> {
    let tasks: Vec<_> = (0..n).map(|i| ex.spawn(shard(i))).collect();
    race_lazy(try_join_all(tasks), || async_io::Timer::after(TIMEOUT)).await
}

#[cfg(feature = "smol")]
fn spawn_smol(c: &mut Criterion) {
    let runtime = SmolThread::start();
    let ex = runtime.ex.clone();
    let ff = FailFast::builder()
        .executor(failfast::executor::Smol::new(ex.clone()))
        .timer(failfast::timer::AsyncIo)
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let ctx = Context::background();
    for n in SPAWN_SIZES {
        let mut group = c.benchmark_group(format!("group-spawn/smol/{n}"));
        group.throughput(Throughput::Elements(n as u64));
        check("failfast", smol::block_on(ex.run(fan_out(&ff, &ctx, n))), n);
        check("baseline", smol::block_on(ex.run(smol_tasks(&ex, n))), n);
        // The whole loop runs inside the executor, as an application's task would.
        group.bench_function("failfast", |b| {
            b.iter_custom(|iters| smol::block_on(ex.run(timed(iters, || fan_out(&ff, &ctx, n)))))
        });
        group.bench_function("baseline", |b| {
            b.iter_custom(|iters| smol::block_on(ex.run(timed(iters, || smol_tasks(&ex, n)))))
        });
        group.finish();
    }
}

/// The hand-written async-std fan-out: `n` tasks spawned on its global executor, their
/// handles joined in input order by `try_join_all` and raced against a `Timer`. (Dropping an
/// async-std handle detaches its task rather than cancelling it; here every shard answers at
/// once, so nothing is left running.)
#[cfg(feature = "async-std")]
async fn async_std_tasks(n: usize) -> Result<Vec<usize>, BoxError> {
    let tasks: Vec<_> = (0..n).map(|i| async_std::task::spawn(shard(i))).collect();
    race_lazy(try_join_all(tasks), || async_io::Timer::after(TIMEOUT)).await
}

#[cfg(feature = "async-std")]
fn spawn_async_std(c: &mut Criterion) {
    let ff = FailFast::builder()
        .executor(failfast::executor::AsyncStd)
        .timer(failfast::timer::AsyncIo)
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let ctx = Context::background();
    for n in SPAWN_SIZES {
        let mut group = c.benchmark_group(format!("group-spawn/async-std/{n}"));
        group.throughput(Throughput::Elements(n as u64));
        check(
            "failfast",
            async_std::task::block_on(fan_out(&ff, &ctx, n)),
            n,
        );
        check("baseline", async_std::task::block_on(async_std_tasks(n)), n);
        // The whole loop runs in one task, as an application's would.
        group.bench_function("failfast", |b| {
            b.iter_custom(|iters| async_std::task::block_on(timed(iters, || fan_out(&ff, &ctx, n))))
        });
        group.bench_function("baseline", |b| {
            b.iter_custom(|iters| async_std::task::block_on(timed(iters, || async_std_tasks(n))))
        });
        group.finish();
    }
}

#[cfg(not(feature = "tokio"))]
fn inline_tokio_timer(_: &mut Criterion) {}
#[cfg(not(feature = "tokio"))]
fn spawn_tokio(_: &mut Criterion) {}
#[cfg(not(feature = "smol"))]
fn spawn_smol(_: &mut Criterion) {}
#[cfg(not(feature = "async-std"))]
fn spawn_async_std(_: &mut Criterion) {}

criterion_group!(
    benches,
    inline_async_io,
    inline_tokio_timer,
    spawn_tokio,
    spawn_smol,
    spawn_async_std
);
criterion_main!(benches);
