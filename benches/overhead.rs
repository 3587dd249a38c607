//! The cost of the machinery itself: both services answer at once, so everything measured is
//! failfast (or the hand-written code it replaces), not the services.
//!
//! Each group holds failfast and its hand-written baseline, measured in the same run:
//!
//! | group | failfast | baseline |
//! |---|---|---|
//! | `inline/futures-timer` | `Inline` + `FuturesTimer` | `try_join` + `select!` against a futures-timer `Delay` |
//! | `inline/async-io` | `Inline` + `AsyncIo` | the same against an async-io `Timer` |
//! | `inline/tokio-timer` | `Inline` + `timer::Tokio` | `tokio::time::timeout(try_join(..))` |
//! | `spawn/tokio` | `Tokio` + `timer::Tokio` | `JoinSet` x2 + `timeout`, aborting the rest on the first error |
//! | `spawn/smol` | `Smol` + `AsyncIo` | `smol::Executor::spawn` x2 raced against a `Timer` |
//! | `spawn/async-std` | `AsyncStd` + `AsyncIo` | `async_std::task::spawn` x2 + `future::timeout` |
//!
//! ```text
//! cargo bench --all-features --bench overhead
//! cargo bench --all-features --bench overhead -- --quick     # a fast, rougher run
//! ```
//! Without `--all-features` only the groups that need no runtime feature run.

use std::future::Future;
#[cfg(any(feature = "tokio", feature = "smol", feature = "async-std"))]
use std::sync::Arc;
use std::time::Duration;

mod common;

#[cfg(feature = "smol")]
use common::SmolThread;
use criterion::async_executor::FuturesExecutor;
use criterion::{Criterion, criterion_group, criterion_main};
use failfast::{BoxError, Context, OrderService, Profile, ProfileService, UserAggregator, UserId};
use futures::FutureExt;

/// The deadline of every measured call: far away, never reached.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Answers at once.
struct Profiles;

impl ProfileService for Profiles {
    async fn profile(&self, _: Context, _: UserId) -> Result<Profile, BoxError> {
        Ok(Profile::new("Alice"))
    }
}

/// Answers at once.
struct Orders;

impl OrderService for Orders {
    async fn order_count(&self, _: Context, _: UserId) -> Result<u32, BoxError> {
        Ok(5)
    }
}

/// The two calls, joined, as a hand-written aggregate would make them.
fn calls(
    profiles: &Profiles,
    orders: &Orders,
    ctx: &Context,
) -> impl Future<Output = Result<(Profile, u32), BoxError>> {
    futures::future::try_join(
        profiles.profile(ctx.clone(), 42),
        orders.order_count(ctx.clone(), 42),
    )
}

/// Races `work` against `sleep`, results first: the baseline's fail-fast core.
async fn race<T>(
    work: impl Future<Output = Result<T, BoxError>>,
    sleep: impl Future,
) -> Result<T, BoxError> {
    futures::select_biased! {
        result = work.fuse() => result,
        _ = sleep.fuse() => Err("deadline exceeded".into()),
    }
}

fn inline_futures_timer(c: &mut Criterion) {
    let mut group = c.benchmark_group("inline/futures-timer");
    let agg = UserAggregator::builder(Profiles, Orders)
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let ctx = Context::background();
    group.bench_function("failfast", |b| {
        b.to_async(FuturesExecutor).iter(|| agg.aggregate(&ctx, 42))
    });
    group.bench_function("baseline", |b| {
        b.to_async(FuturesExecutor).iter(|| {
            race(
                calls(&Profiles, &Orders, &ctx),
                futures_timer::Delay::new(TIMEOUT),
            )
        })
    });
    group.finish();
}

fn inline_async_io(c: &mut Criterion) {
    let mut group = c.benchmark_group("inline/async-io");
    let ctx = Context::background();
    #[cfg(any(feature = "smol", feature = "async-std"))]
    {
        let agg = UserAggregator::builder(Profiles, Orders)
            .timer(failfast::timer::AsyncIo)
            .timeout(TIMEOUT)
            .build()
            .unwrap();
        group.bench_function("failfast", |b| {
            b.to_async(FuturesExecutor).iter(|| agg.aggregate(&ctx, 42))
        });
    }
    group.bench_function("baseline", |b| {
        b.to_async(FuturesExecutor).iter(|| {
            race(
                calls(&Profiles, &Orders, &ctx),
                async_io::Timer::after(TIMEOUT),
            )
        })
    });
    group.finish();
}

#[cfg(feature = "tokio")]
fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[cfg(feature = "tokio")]
fn inline_tokio_timer(c: &mut Criterion) {
    let mut group = c.benchmark_group("inline/tokio-timer");
    let rt = tokio_runtime();
    let agg = UserAggregator::builder(Profiles, Orders)
        .timer(failfast::timer::Tokio::new(rt.handle().clone()))
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let ctx = Context::background();
    group.bench_function("failfast", |b| {
        b.to_async(&rt).iter(|| agg.aggregate(&ctx, 42))
    });
    group.bench_function("baseline", |b| {
        b.to_async(&rt)
            .iter(|| tokio::time::timeout(TIMEOUT, calls(&Profiles, &Orders, &ctx)))
    });
    group.finish();
}

#[cfg(feature = "tokio")]
fn spawn_tokio(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn/tokio");
    let rt = tokio_runtime();
    let agg = UserAggregator::builder(Profiles, Orders)
        .executor(failfast::executor::Tokio::new(rt.handle().clone()))
        .timer(failfast::timer::Tokio::new(rt.handle().clone()))
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let ctx = Context::background();
    group.bench_function("failfast", |b| {
        b.to_async(&rt).iter(|| agg.aggregate(&ctx, 42))
    });

    let (profiles, orders) = (Arc::new(Profiles), Arc::new(Orders));
    group.bench_function("baseline", |b| {
        b.to_async(&rt).iter(|| {
            let (profiles, orders, ctx) = (profiles.clone(), orders.clone(), ctx.clone());
            async move {
                // The tokio idiom: a JoinSet (aborts its tasks when dropped) under a timeout.
                enum Answer {
                    Profile(Profile),
                    Orders(u32),
                }
                let mut set = tokio::task::JoinSet::new();
                let c = ctx.clone();
                set.spawn(async move { profiles.profile(c, 42).await.map(Answer::Profile) });
                set.spawn(async move { orders.order_count(ctx, 42).await.map(Answer::Orders) });
                tokio::time::timeout(TIMEOUT, async move {
                    let (mut profile, mut count) = (None, None);
                    while let Some(joined) = set.join_next().await {
                        match joined.map_err(BoxError::from)?? {
                            Answer::Profile(p) => profile = Some(p),
                            Answer::Orders(n) => count = Some(n),
                        }
                    }
                    Ok::<_, BoxError>((profile, count))
                })
                .await
            }
        })
    });
    group.finish();
}

#[cfg(feature = "smol")]
fn spawn_smol(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn/smol");
    let runtime = SmolThread::start();
    let ex = runtime.ex.clone();
    let agg = UserAggregator::builder(Profiles, Orders)
        .executor(failfast::executor::Smol::new(ex.clone()))
        .timer(failfast::timer::AsyncIo)
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let ctx = Context::background();
    group.bench_function("failfast", |b| {
        b.iter_custom(|iters| {
            // The whole loop runs inside the executor, as an application's task would.
            smol::block_on(ex.run(async {
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(agg.aggregate(&ctx, 42).await.ok());
                }
                start.elapsed()
            }))
        })
    });

    let (profiles, orders) = (Arc::new(Profiles), Arc::new(Orders));
    group.bench_function("baseline", |b| {
        b.iter_custom(|iters| {
            smol::block_on(ex.run(async {
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    // smol's idiom: tasks cancel when dropped; race them against a Timer.
                    let (p, o, c) = (profiles.clone(), orders.clone(), ctx.clone());
                    let profile = ex.spawn(async move { p.profile(c, 42).await });
                    let (o2, c) = (o, ctx.clone());
                    let count = ex.spawn(async move { o2.order_count(c, 42).await });
                    let result = race(
                        futures::future::try_join(profile, count),
                        async_io::Timer::after(TIMEOUT),
                    )
                    .await;
                    std::hint::black_box(result.ok());
                }
                start.elapsed()
            }))
        })
    });
    group.finish();
}

#[cfg(feature = "async-std")]
fn spawn_async_std(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn/async-std");
    let agg = UserAggregator::builder(Profiles, Orders)
        .executor(failfast::executor::AsyncStd)
        .timer(failfast::timer::AsyncIo)
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let ctx = Context::background();
    group.bench_function("failfast", |b| {
        b.iter_custom(|iters| {
            async_std::task::block_on(async {
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(agg.aggregate(&ctx, 42).await.ok());
                }
                start.elapsed()
            })
        })
    });

    let (profiles, orders) = (Arc::new(Profiles), Arc::new(Orders));
    group.bench_function("baseline", |b| {
        b.iter_custom(|iters| {
            async_std::task::block_on(async {
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    // async-std's idiom. Its JoinHandles detach when dropped: on an error or a
                    // timeout the other task keeps running, which failfast does not allow.
                    let (p, o, c) = (profiles.clone(), orders.clone(), ctx.clone());
                    let profile = async_std::task::spawn(async move { p.profile(c, 42).await });
                    let c = ctx.clone();
                    let count = async_std::task::spawn(async move { o.order_count(c, 42).await });
                    let result = async_std::future::timeout(
                        TIMEOUT,
                        futures::future::try_join(profile, count),
                    )
                    .await;
                    std::hint::black_box(result.ok());
                }
                start.elapsed()
            })
        })
    });
    group.finish();
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
    inline_futures_timer,
    inline_async_io,
    inline_tokio_timer,
    spawn_tokio,
    spawn_smol,
    spawn_async_std
);
criterion_main!(benches);
