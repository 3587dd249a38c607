//! The Tail at Scale (Dean and Barroso, CACM 2013), reproduced with failfast: fan out to 1, 10
//! and 100 simulated backends per request, each usually fast (99%: 1-10 ms) and sometimes
//! stalled (1%: 50-1000 ms), and compare six strategies on request latency and extra calls:
//!
//! * `plain`: one attempt per backend;
//! * `retry`: a retry when an attempt takes more than 10 ms (per-attempt timeout), up to 3;
//! * `hedge-p95`: another attempt after 9.6 ms without an answer (the backends' p95), up to 3;
//! * `hedge`: another attempt after 10 ms without an answer (about the backends' p99), up to 3;
//! * `adaptive`: another attempt after the p95 of the recent successful latencies, up to 3;
//! * `adaptive+budget`: the same within a [`Budget`] of 5% more calls (plus 1 a second).
//!
//! In virtual time (`timer::Manual`, inline) the run is exact and replayable: the numbers
//! depend only on the seed. `--real` runs a smaller load in real time on smol instead.
//!
//! ```text
//! cargo run --release --example tail_at_scale                      # virtual time, 10k requests
//! cargo run --release --example tail_at_scale -- --requests 100000
//! cargo run --release --example tail_at_scale -- --real --requests 300
//! cargo run --release --example tail_at_scale -- --csv target/tail.csv   # for the chart
//! ```
//!
//! The chart in `docs/tail_at_scale.svg` is drawn from the CSV by
//! `python3 scripts/tail_chart.py target/tail.csv docs/tail_at_scale.svg`.

mod common;

use common::SmolRunner;
use std::fmt::Write as _;
use std::pin::pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use failfast::timer::Manual;
use failfast::{BoxError, Budget, Context, FailFast, Hedge, Retry, Timer};
use futures::future::try_join_all;

const USAGE: &str = "usage: tail_at_scale [--requests N] [--seed N] [--real] [--csv PATH]";
const FANOUTS: [usize; 3] = [1, 10, 100];
const STRATEGIES: [&str; 6] = [
    "plain",
    "retry",
    "hedge-p95",
    "hedge",
    "adaptive",
    "adaptive+budget",
];

struct Args {
    requests: usize,
    seed: u64,
    real: bool,
    csv: Option<String>,
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mode = if args.real {
        "real time on smol"
    } else {
        "virtual time"
    };
    println!(
        "The Tail at Scale: {} requests per row, {mode}, seed {}",
        args.requests, args.seed
    );
    println!(
        "{:>6} {:>15} {:>10} {:>10} {:>10} {:>12} {:>8}",
        "fanout", "strategy", "p50 ms", "p99 ms", "p99.9 ms", "extra calls", "failed"
    );
    let mut csv =
        String::from("fanout,strategy,p50_ms,p99_ms,p999_ms,extra_calls_pct,failed_pct\n");
    for fanout in FANOUTS {
        for strategy in STRATEGIES {
            let row = if args.real {
                real::run(fanout, strategy, args.requests, args.seed)
            } else {
                simulate(fanout, strategy, args.requests, args.seed)
            };
            let row = match row {
                Ok(row) => row,
                Err(err) => {
                    eprintln!("{fanout} x {strategy}: {err:#}");
                    return ExitCode::FAILURE;
                }
            };
            println!(
                "{fanout:>6} {strategy:>15} {:>10.1} {:>10.1} {:>10.1} {:>11.2}% {:>7.3}%",
                row.p50, row.p99, row.p999, row.extra, row.failed
            );
            let _ = writeln!(
                csv,
                "{fanout},{strategy},{:.3},{:.3},{:.3},{:.3},{:.4}",
                row.p50, row.p99, row.p999, row.extra, row.failed
            );
        }
    }
    if let Some(path) = args.csv {
        if let Err(err) = std::fs::write(&path, csv) {
            eprintln!("cannot write {path}: {err}");
            return ExitCode::FAILURE;
        }
        println!("wrote {path}");
    }
    ExitCode::SUCCESS
}

/// One row of results: latency percentiles in ms, and extra calls in percent of the first
/// attempts.
struct Row {
    p50: f64,
    p99: f64,
    p999: f64,
    extra: f64,
    /// Requests that failed (every attempt of a call failed), in percent.
    failed: f64,
}

/// The latency of backend call number `k`: 99% uniform in 1-10 ms, 1% uniform in 50-1000 ms.
/// A hash of `(seed, k)`, so every strategy sees the same backends in the same order.
fn latency(seed: u64, k: u64) -> Duration {
    // splitmix64's finaliser, and a stream per call seeded from it: calls are independent.
    let mix = |mut x: u64| {
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    };
    let mut z = mix(seed ^ mix(k.wrapping_add(0x9E37_79B9_7F4A_7C15)));
    let mut next = || {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        (mix(z) >> 11) as f64 / (1u64 << 53) as f64
    };
    let micros = if next() < 0.99 {
        1_000.0 + next() * 9_000.0
    } else {
        50_000.0 + next() * 950_000.0
    };
    Duration::from_micros(micros as u64)
}

/// The policies of each strategy; `None` for plain calls.
enum Policy {
    Plain,
    Retry(Retry),
    Hedge(Hedge),
}

fn policy(strategy: &str, seed: u64) -> Result<Policy, BoxError> {
    let ms = Duration::from_millis;
    Ok(match strategy {
        "plain" => Policy::Plain,
        "retry" => Policy::Retry(
            Retry::builder()
                .attempts(3)
                .attempt_timeout(ms(10))
                .backoff(Duration::ZERO, Duration::ZERO)
                .seed(seed)
                .build()?,
        ),
        // The backends' p95: 1 + 9 * 0.95 / 0.99 = 9.64 ms (99% of calls are uniform in 1-10).
        "hedge-p95" => Policy::Hedge(
            Hedge::builder()
                .attempts(3)
                .delay(Duration::from_micros(9_600))
                .build()?,
        ),
        "hedge" => Policy::Hedge(Hedge::builder().attempts(3).delay(ms(10)).build()?),
        "adaptive" => Policy::Hedge(
            Hedge::builder()
                .attempts(3)
                .percentile(95.0)
                .window(Duration::from_secs(10), 100)
                .build()?,
        ),
        _ => Policy::Hedge(
            Hedge::builder()
                .attempts(3)
                .percentile(95.0)
                .window(Duration::from_secs(10), 100)
                .budget(Budget::new(0.05, 1)?) // at most 5% more calls, plus 1 a second
                .build()?,
        ),
    })
}

/// `requests` requests of `fanout` calls each, one after the other, in virtual time.
fn simulate(fanout: usize, strategy: &str, requests: usize, seed: u64) -> Result<Row, BoxError> {
    let clock = Manual::new();
    let ff = FailFast::builder()
        .timer(clock.clone())
        .timeout(Duration::from_secs(5))
        .build()?;
    let policy = policy(strategy, seed)?;
    let made = Arc::new(AtomicU64::new(0));
    let mut latencies = Vec::with_capacity(requests);
    let mut failed = 0;
    let ctx = Context::background();
    for _ in 0..requests {
        let group = ff.group(&ctx);
        let calls = (0..fanout).map(|_| {
            let (clock, made) = (clock.clone(), made.clone());
            let backend = move |_ctx: Context| {
                let k = made.fetch_add(1, Ordering::Relaxed);
                clock.sleep(latency(seed, k))
            };
            // One name for every backend: one service behind many replicas, whose latencies
            // the adaptive hedge pools.
            let call = group.idempotent("backend", move |ctx| {
                let sleep = backend(ctx);
                async move {
                    sleep.await;
                    Ok::<_, BoxError>(())
                }
            });
            match &policy {
                Policy::Plain => call,
                Policy::Retry(retry) => call.retry(retry.clone()),
                Policy::Hedge(hedge) => call.hedge(hedge.clone()),
            }
        });
        let start = clock.now();
        let mut run = pin!(group.run(try_join_all(calls)));
        let mut cx = TaskContext::from_waker(Waker::noop());
        loop {
            match run.as_mut().poll(&mut cx) {
                Poll::Ready(result) => {
                    failed += usize::from(result.is_err());
                    break;
                }
                Poll::Pending => {
                    let next = clock.next_deadline().ok_or("stuck: nothing asleep")?;
                    clock.advance(next.saturating_duration_since(clock.now()));
                }
            }
        }
        latencies.push(clock.now() - start);
    }
    Ok(row(latencies, made.load(Ordering::Relaxed), fanout, failed))
}

/// Percentiles (nearest rank) and extra calls.
fn row(mut latencies: Vec<Duration>, made: u64, fanout: usize, failed: usize) -> Row {
    let requests = latencies.len();
    latencies.sort_unstable();
    let at = |p: f64| {
        let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        latencies[rank.clamp(1, latencies.len()) - 1].as_secs_f64() * 1000.0
    };
    let firsts = (fanout * requests) as f64;
    Row {
        p50: at(50.0),
        p99: at(99.0),
        p999: at(99.9),
        extra: (made as f64 - firsts) / firsts * 100.0,
        failed: failed as f64 / requests as f64 * 100.0,
    }
}

/// The same load in real time, on a smol executor, requests 50 at a time.
mod real {
    use super::*;

    pub fn run(fanout: usize, strategy: &str, requests: usize, seed: u64) -> Result<Row, BoxError> {
        let runner = SmolRunner::new(); // stopped when dropped, however this returns
        let ff = Arc::new(
            FailFast::builder()
                .executor(runner.executor())
                .timeout(Duration::from_secs(5))
                .build()?,
        );
        let policy = Arc::new(policy(strategy, seed)?);
        let made = Arc::new(AtomicU64::new(0));
        let mut failed = 0;
        let latencies = smol::block_on(async {
            let mut latencies = Vec::with_capacity(requests);
            let mut next = 0;
            while next < requests {
                let batch = (requests - next).min(50);
                let runs = (0..batch).map(|_| {
                    let (ff, policy, made) = (ff.clone(), policy.clone(), made.clone());
                    async move {
                        let group = ff.group(&Context::background());
                        let calls = (0..fanout).map(|_| {
                            let made = made.clone();
                            let call = group.idempotent("backend", move |_ctx| {
                                let k = made.fetch_add(1, Ordering::Relaxed);
                                let nap = futures_timer::Delay::new(latency(seed, k));
                                async move {
                                    nap.await;
                                    Ok::<_, BoxError>(())
                                }
                            });
                            match &*policy {
                                Policy::Plain => call,
                                Policy::Retry(retry) => call.retry(retry.clone()),
                                Policy::Hedge(hedge) => call.hedge(hedge.clone()),
                            }
                        });
                        let start = Instant::now();
                        let ok = group.run(try_join_all(calls)).await.is_ok();
                        (start.elapsed(), ok)
                    }
                });
                for (latency, ok) in futures::future::join_all(runs).await {
                    latencies.push(latency);
                    failed += usize::from(!ok);
                }
                next += batch;
            }
            Ok::<_, BoxError>(latencies)
        })?;
        Ok(row(latencies, made.load(Ordering::Relaxed), fanout, failed))
    }
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        requests: 10_000,
        seed: 2013,
        real: false,
        csv: None,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        let mut value = |name: &str| argv.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--requests" => {
                args.requests = value("--requests")?
                    .parse()
                    .map_err(|err| format!("--requests: {err}"))?;
                if args.requests == 0 {
                    return Err("--requests must be at least 1".into());
                }
            }
            "--seed" => {
                args.seed = value("--seed")?
                    .parse()
                    .map_err(|err| format!("--seed: {err}"))?;
            }
            "--csv" => args.csv = Some(value("--csv")?),
            "--real" => args.real = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}
