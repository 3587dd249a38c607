//! The cost of [`Context`](failfast::Context) operations, next to tokio-util's
//! `CancellationToken` doing the same thing, in the same criterion group:
//!
//! | group | failfast | baseline |
//! |---|---|---|
//! | `context/clone` | clone + drop of a cancellable context | clone + drop of a token |
//! | `context/child` | `with_cancel()` + drop, under a long-lived parent | `child_token()` + drop |
//! | `context/cancel` | `with_cancel()`, then `cancel()` | `CancellationToken::new()`, then `cancel()` |
//! | `context/deadline` | `with_timeout(d)` + drop | (none: a token has no deadline) |
//! | `context/err` | `err()` on a context with a deadline (reads the clock) | `is_cancelled()` |
//! | `context/deep-chain` | a chain of 100k `with_cancel()` scopes: made, cancelled from the root, dropped | the same with `child_token()` |
//!
//! Before criterion runs, it prints the allocations each operation makes (counted by a global
//! allocator that wraps the system's, here in the bench only).
//!
//! ```text
//! cargo bench --bench context
//! ```

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use failfast::Context;
use tokio_util::sync::CancellationToken;

mod common;

use common::ALLOCATIONS;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

/// Levels of the deep chain, as in the test that it cancels and drops without overflowing the
/// stack.
const DEPTH: usize = 100_000;

/// Allocations made by `f`, averaged over many runs (amortised list growth included).
fn allocations(mut f: impl FnMut()) -> f64 {
    const RUNS: usize = 10_000;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..RUNS {
        f();
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / RUNS as f64
}

fn print_allocations() {
    let (parent, _cancel) = Context::background().with_cancel();
    let token = CancellationToken::new();
    let rows: [(&str, f64); 9] = [
        (
            "failfast background()",
            allocations(|| drop(black_box(Context::background()))),
        ),
        (
            "failfast clone",
            allocations(|| drop(black_box(parent.clone()))),
        ),
        (
            "failfast with_timeout",
            allocations(|| drop(black_box(parent.with_timeout(Duration::from_secs(1))))),
        ),
        (
            "failfast with_cancel",
            allocations(|| drop(black_box(parent.with_cancel()))),
        ),
        (
            "failfast with_cancel + cancel",
            allocations(|| {
                black_box(Context::background().with_cancel()).1.cancel();
            }),
        ),
        (
            "tokio-util clone",
            allocations(|| drop(black_box(token.clone()))),
        ),
        (
            "tokio-util child_token",
            allocations(|| drop(black_box(token.child_token()))),
        ),
        (
            "tokio-util new + cancel",
            allocations(|| black_box(CancellationToken::new()).cancel()),
        ),
        (
            "failfast done() made, not polled",
            allocations(|| {
                drop(black_box(
                    parent.with_timeout(Duration::from_secs(1)).done(),
                ))
            }),
        ),
    ];
    println!("allocations per operation:");
    for (what, n) in rows {
        println!("  {what:<36} {n:.2}");
    }
}

fn bench(c: &mut Criterion) {
    print_allocations();

    let mut group = c.benchmark_group("context/clone");
    let (ctx, _cancel) = Context::background().with_cancel();
    group.bench_function("failfast", |b| b.iter(|| drop(black_box(ctx.clone()))));
    let token = CancellationToken::new();
    group.bench_function("tokio-util", |b| b.iter(|| drop(black_box(token.clone()))));
    group.finish();

    let mut group = c.benchmark_group("context/child");
    group.bench_function("failfast", |b| {
        b.iter(|| drop(black_box(ctx.with_cancel())))
    });
    group.bench_function("tokio-util", |b| {
        b.iter(|| drop(black_box(token.child_token())))
    });
    group.finish();

    let mut group = c.benchmark_group("context/cancel");
    group.bench_function("failfast", |b| {
        b.iter(|| black_box(Context::background().with_cancel()).1.cancel())
    });
    group.bench_function("tokio-util", |b| {
        b.iter(|| black_box(CancellationToken::new()).cancel())
    });
    group.finish();

    let mut group = c.benchmark_group("context/deadline");
    group.bench_function("failfast", |b| {
        b.iter(|| drop(black_box(ctx.with_timeout(Duration::from_secs(1)))))
    });
    group.finish();

    let mut group = c.benchmark_group("context/deep-chain");
    group.sample_size(10);
    group.bench_function("failfast", |b| {
        b.iter(|| {
            let (root, cancel) = Context::background().with_cancel();
            let mut chain = Vec::with_capacity(DEPTH);
            chain.push(root);
            for _ in 1..DEPTH {
                let child = chain.last().expect("the root").with_cancel().0;
                chain.push(child);
            }
            cancel.cancel();
            assert!(chain.last().expect("a leaf").is_cancelled());
            drop(black_box(chain));
        })
    });
    group.bench_function("tokio-util", |b| {
        b.iter(|| {
            let mut chain = Vec::with_capacity(DEPTH);
            chain.push(CancellationToken::new());
            for _ in 1..DEPTH {
                let child = chain.last().expect("the root").child_token();
                chain.push(child);
            }
            chain[0].cancel();
            assert!(chain.last().expect("a leaf").is_cancelled());
            drop(black_box(chain));
        })
    });
    group.finish();

    let mut group = c.benchmark_group("context/err");
    let timed = ctx.with_timeout(Duration::from_secs(3600));
    group.bench_function("failfast", |b| b.iter(|| black_box(timed.err())));
    group.bench_function("tokio-util", |b| b.iter(|| black_box(token.is_cancelled())));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
