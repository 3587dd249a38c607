//! Part two: a hundred thousand aggregates pending at once, then every one cancelled, half
//! through its context and half by dropping its future.

use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use failfast::mock::Calls;
use failfast::{AggregateError, Context, Executor, Timer, UserAggregator, mock};
use futures::stream::{FuturesUnordered, Stream, StreamExt};

use crate::measure::{Checked, Checks, Memory, bytes, nap, settle, signed_bytes};
use crate::{Job, Options, SETTLE};

/// `--rounds` rounds of `--concurrent` pending aggregates on one executor.
pub struct Concurrent<'a>(pub &'a Options);

impl Job for Concurrent<'_> {
    const PART: &'static str = "concurrent";

    async fn run<E: Executor + Clone, T: Timer>(self, name: &str, ex: E, timer: T) -> Checked {
        let options = self.0;
        let n = options.concurrent;
        let tag = format!("[concurrent {name}]");
        let (profiles, orders) = (mock::profile("Alice").hang(), mock::orders(5).hang());
        let (profile_calls, order_calls) = (profiles.calls(), orders.calls());
        let agg = Arc::new(
            UserAggregator::builder(profiles, orders)
                .executor(ex)
                .timer(timer)
                // Far enough never to fire, near enough that every aggregate arms its timer.
                .timeout(Duration::from_secs(3600))
                .build()
                .expect("a non-zero timeout is valid"),
        );
        let started = || profile_calls.started() + order_calls.started();
        // A leak of anything an aggregate owns (a task, a context, a timer entry) costs tens of
        // bytes or more per aggregate and round; capacity that flaps between rounds costs less.
        let heap_bound = (options.leak_bytes_per_aggregate * n as u64).max(64 * 1024);
        let mut checks = Checks::new(&tag);
        let mut after_first_round = None;
        let mut after = Memory::now();

        for round in 1..=options.rounds {
            let before = Memory::now();
            let base = started();
            let t = Instant::now();
            let (mut by_cancel, mut by_drop) = (FuturesUnordered::new(), FuturesUnordered::new());
            let mut cancels = Vec::with_capacity(n.div_ceil(2));
            for i in 0..n {
                let (ctx, cancel) = Context::background().with_cancel();
                let agg = Arc::clone(&agg);
                let aggregate = async move { agg.aggregate(&ctx, i as u64).await };
                if i % 2 == 0 {
                    cancels.push(cancel);
                    by_cancel.push(aggregate);
                } else {
                    by_drop.push(aggregate);
                }
            }
            // Poll every aggregate until each of its calls runs (and hangs) on the executor.
            let pending = pend(&mut by_cancel, &mut by_drop, || started() == base + 2 * n).await;
            let t_pending = t.elapsed();
            let during = Memory::now();

            let t = Instant::now();
            for cancel in &cancels {
                cancel.cancel();
            }
            let drained = drain(&mut by_cancel).await;
            let t_cancel = t.elapsed();
            let t = Instant::now();
            drop(by_drop);
            let t_drop = t.elapsed();
            let settled = settle(SETTLE, || {
                profile_calls.in_flight() == 0 && order_calls.in_flight() == 0
            })
            .await;
            drop((by_cancel, cancels));
            // Timers and executors free some of their entries asynchronously, on their threads.
            let quiet = quiesce().await;
            after = Memory::now();
            let first = *after_first_round.get_or_insert(after);

            let per_aggregate = during.heap_growth(&before).max(0) as u64 / n.max(1) as u64;
            println!(
                "{tag} round {round}: {n} aggregates pending in {t_pending:.2?}; before {before}; during {during} ({}; {} of heap per pending aggregate); after {after} ({})",
                during.since(&before),
                bytes(per_aggregate),
                after.since(&before),
            );
            println!(
                "{tag} round {round}: {} cancelled by context in {t_cancel:.2?}, {} dropped in {t_drop:.2?}; calls {}; heap {}",
                n.div_ceil(2),
                n / 2,
                settled
                    .as_ref()
                    .map_or_else(Clone::clone, |t| format!("settled in {t:.1?}")),
                quiet
                    .as_ref()
                    .map_or_else(Clone::clone, |t| format!("still after {t:.1?}")),
            );
            checks.expect(
                pending.is_ok(),
                format!(
                    "round {round}: all {n} aggregates pending with both calls running: {pending:?}"
                ),
            );
            checks.expect(
                drained.as_ref().is_ok_and(|&(cancelled, total)| {
                    cancelled == total && total == n.div_ceil(2)
                }),
                format!("round {round}: each aggregate cancelled through its context returned Cancelled: {drained:?}"),
            );
            for (service, calls) in [("profile", &profile_calls), ("orders", &order_calls)] {
                checks.expect(
                    settled.is_ok()
                        && calls.started() == round * n
                        && calls.finished() == 0
                        && calls.cancelled() == calls.started()
                        && calls.in_flight() == 0,
                    format!(
                        "round {round}: every {service} call was cancelled: {}",
                        counters(calls)
                    ),
                );
            }
            if round == 1 {
                // What the first round leaves is capacity kept for the next (a timer's heap, an
                // executor's task slab): later rounds must not add to it.
                println!(
                    "{tag} round 1 left {} of live heap: capacity kept by the timer and the executor, {}",
                    signed_bytes(after.heap_growth(&before)),
                    if options.rounds > 1 {
                        "which later rounds must not add to"
                    } else {
                        "not told apart from a leak with one round (--rounds 2)"
                    },
                );
            } else {
                checks.expect(
                    after.heap_growth(&first) <= heap_bound as i64,
                    format!(
                        "round {round}: live heap back to its level after round 1 ({} <= {}, {} B per aggregate)",
                        signed_bytes(after.heap_growth(&first)),
                        bytes(heap_bound),
                        options.leak_bytes_per_aggregate,
                    ),
                );
            }
        }

        let first = after_first_round.unwrap_or(after);
        let rss = after.rss_growth(&first);
        checks.expect(
            rss.is_none_or(|kib| kib <= options.concurrent_rss_bound_kib as i64),
            format!(
                "RSS growth from the end of round 1 to the end of round {}: {} KiB <= {} KiB",
                options.rounds,
                rss.map_or("n/a".into(), |k| format!("{k:+}")),
                options.concurrent_rss_bound_kib
            ),
        );
        checks.done()
    }
}

/// Waits (up to 5 s) until the live heap stops changing for 50 ms; returns how long it took.
async fn quiesce() -> Result<Duration, String> {
    let start = Instant::now();
    let mut last = (Instant::now(), Memory::now().heap);
    while last.0.elapsed() < Duration::from_millis(50) {
        if start.elapsed() > Duration::from_secs(5) {
            return Err("still changing after 5s".into());
        }
        nap().await;
        let heap = Memory::now().heap;
        if heap != last.1 {
            last = (Instant::now(), heap);
        }
    }
    Ok(start.elapsed())
}

fn counters(calls: &Calls) -> String {
    format!(
        "started {}, finished {}, cancelled {}, in flight {}",
        calls.started(),
        calls.finished(),
        calls.cancelled(),
        calls.in_flight()
    )
}

/// Polls both sets until `ready` holds (bounded); an aggregate that completes is an error.
async fn pend<S>(a: &mut S, b: &mut S, ready: impl Fn() -> bool) -> Result<(), String>
where
    S: Stream + Unpin,
    S::Item: std::fmt::Debug,
{
    let start = Instant::now();
    while !ready() {
        if start.elapsed() > SETTLE {
            return Err(format!("the calls had not all started after {SETTLE:?}"));
        }
        for set in [&mut *a, &mut *b] {
            if let Poll::Ready(item) = futures::poll!(set.next()) {
                return Err(format!("an aggregate whose services hang ended: {item:?}"));
            }
        }
        nap().await;
    }
    Ok(())
}

/// Waits (bounded) for every aggregate in `set`; returns how many were `Cancelled`, of how many.
async fn drain<S, D>(set: &mut S) -> Result<(usize, usize), String>
where
    S: Stream<Item = Result<D, AggregateError>> + Unpin,
{
    let start = Instant::now();
    let (mut cancelled, mut total) = (0, 0);
    loop {
        match futures::poll!(set.next()) {
            Poll::Ready(None) => return Ok((cancelled, total)),
            Poll::Ready(Some(result)) => {
                total += 1;
                cancelled += usize::from(matches!(result, Err(AggregateError::Cancelled { .. })));
            }
            Poll::Pending if start.elapsed() > SETTLE => {
                return Err(format!("only {total} had returned after {SETTLE:?}"));
            }
            Poll::Pending => nap().await,
        }
    }
}
