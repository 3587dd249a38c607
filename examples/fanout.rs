//! Scatter-gather over N shards with failfast's group, on smol: a limit on calls in flight, an
//! optional call with its own timeout, and a shard that fails (fail fast).
//!
//! ```text
//! cargo run --example fanout                     # 12 shards, 4 at a time
//! cargo run --example fanout -- --shards 40 --limit 8
//! RUST_LOG=failfast=debug cargo run --example fanout   # and the library's records
//! ```
//!
//! Each call's outcome is printed as it happens, with its timing, by an `Observer`; then the
//! group's result. The exit code is non-zero if a scenario does not behave as it should.

mod common;

use common::SmolRunner;
use std::process::ExitCode;

use std::time::{Duration, Instant};

use failfast::{
    BoxError, CallFinished, CallStarted, Context, Error, FailFast, GroupFinished, Observer, Outcome,
};
use futures::future::{try_join, try_join_all};

const USAGE: &str = "usage: fanout [--shards N] [--limit N]";

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("failfast=warn"))
        .init();
    let (shards, limit) = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let runner = SmolRunner::new();
    let ff = FailFast::builder()
        .executor(runner.executor())
        .timeout(Duration::from_secs(2))
        .limit(limit)
        .observer(Printer::new())
        .build();
    let ok = match ff {
        Ok(ff) => smol::block_on(scenarios(&ff, shards)),
        Err(err) => {
            eprintln!("invalid settings: {err}");
            false
        }
    };
    drop(runner);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn parse_args() -> Result<(usize, usize), String> {
    let (mut shards, mut limit) = (12, 4);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let target = match arg.as_str() {
            "--shards" => &mut shards,
            "--limit" => &mut limit,
            other => return Err(format!("unknown argument {other:?}")),
        };
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        *target = value
            .parse()
            .map_err(|_| format!("{arg}: not a number: {value:?}"))?;
    }
    if shards < 4 {
        return Err("--shards must be at least 4 (shard 3 is the one that fails)".into());
    }
    Ok((shards, limit))
}

/// Runs both scenarios; true if each behaved as it should.
async fn scenarios<E: failfast::Executor>(ff: &FailFast<E>, shards: usize) -> bool {
    let ctx = Context::background();

    println!(
        "gather: {shards} shards, at most {} at once, recs optional with a 50 ms timeout",
        ff.limit().unwrap_or(shards)
    );
    let start = Instant::now();
    let group = ff.group(&ctx);
    let result = group
        .run(try_join(
            group
                .call("recs", recommendations)
                .timeout(Duration::from_millis(50))
                .optional(),
            try_join_all(
                (0..shards)
                    .map(|i| group.call(format!("shard-{i}"), move |ctx| shard(ctx, i, None))),
            ),
        ))
        .await;
    let gathered = match &result {
        Ok((recs, rows)) => {
            println!(
                "=> {} rows from {} shards, recs: {:?}, in {:.0?}\n",
                rows.iter().sum::<u64>(),
                rows.len(),
                recs,
                start.elapsed()
            );
            recs.is_none() && rows.len() == shards
        }
        Err(err) => {
            println!("=> failed: {err:#}\n");
            false
        }
    };

    println!("fail fast: the same, but shard-3 fails 30 ms after it starts");
    let start = Instant::now();
    let group = ff.group(&ctx);
    let result = group
        .run(try_join_all((0..shards).map(|i| {
            let fails = (i == 3).then_some("replica unavailable");
            group.call(format!("shard-{i}"), move |ctx| shard(ctx, i, fails))
        })))
        .await;
    let elapsed = start.elapsed();
    let failed_fast = match &result {
        Err(err @ Error::Service { .. }) if err.service() == Some("shard-3") => {
            println!("=> failed after {elapsed:.0?}: {err:#}");
            true
        }
        Err(err) => {
            println!("=> failed, but not as expected: {err:#}");
            false
        }
        Ok(rows) => {
            println!("=> {} rows: shard-3 did not fail?", rows.len());
            false
        }
    };
    gathered && failed_fast && elapsed < Duration::from_secs(1)
}

/// One shard: answers its row count after 20 to 120 ms, or fails after 30 ms.
async fn shard(ctx: Context, i: usize, fails: Option<&'static str>) -> Result<u64, BoxError> {
    if let Some(message) = fails {
        smol::Timer::after(Duration::from_millis(30)).await;
        return Err(message.into());
    }
    let latency = 20 + (i as u64 * 37) % 100;
    smol::Timer::after(Duration::from_millis(latency)).await;
    if ctx.is_cancelled() {
        return Err("cancelled".into());
    }
    Ok(100 + i as u64)
}

/// Recommendations: nice to have, and slower than their 50 ms budget.
async fn recommendations(_ctx: Context) -> Result<Vec<String>, BoxError> {
    smol::Timer::after(Duration::from_millis(200)).await;
    Ok(vec!["book".into()])
}

/// Prints each call as it starts and ends, with the time since the program started.
struct Printer {
    start: Instant,
}

impl Printer {
    fn new() -> Printer {
        Printer {
            start: Instant::now(),
        }
    }

    fn at(&self) -> String {
        format!("{:>6.0?}", self.start.elapsed())
    }
}

impl Observer for Printer {
    fn call_started(&self, call: &CallStarted<'_>) {
        println!("  {}  {:<9} started", self.at(), call.name);
    }

    fn call_finished(&self, call: &CallFinished<'_>) {
        let outcome = match (call.outcome, call.error) {
            (Outcome::Succeeded, _) => "answered".to_owned(),
            (Outcome::Cancelled, _) => "cancelled".to_owned(),
            (_, Some(err)) if call.optional => format!("left out (optional): {err}"),
            (_, Some(err)) => format!("failed: {err:#}"),
            (other, None) => format!("{other:?}"),
        };
        println!(
            "  {}  {:<9} {outcome} ({:.0?})",
            self.at(),
            call.name,
            call.elapsed
        );
    }

    fn group_finished(&self, group: &GroupFinished<'_>) {
        let how = if group.error.is_some() {
            "failed"
        } else {
            "succeeded"
        };
        println!(
            "  {}  group {} {how}: {} calls in {:.0?}",
            self.at(),
            group.group,
            group.calls,
            group.elapsed
        );
    }
}
