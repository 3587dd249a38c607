//! The Fail-Fast Data Aggregator kata, runnable: the happy path, Slow Poke and Domino Effect.
//!
//! ```text
//! cargo run --example dashboard                          # on smol
//! cargo run --example dashboard -- --executor tokio      # inline | async-std | smol | tokio
//! RUST_LOG=failfast=warn cargo run --example dashboard   # quieter logs (default: failfast=debug)
//! ```
//!
//! Results go to stdout, one line each, then a line on timing and cancellation; the library's
//! structured logs (env_logger with key-values) go to stderr. The exit code is non-zero if a
//! scenario did not behave as the kata requires.
//!
//! The runtimes are plugged in with the one-line closure form of `Executor`, so the example
//! runs on default features; with the `smol`, `tokio` or `async-std` feature the same is
//! `executor::Smol::new(ex)`, `executor::Tokio::new(handle)` or `executor::AsyncStd`.

mod common;

use common::SmolRunner;
use std::error::Error;
use std::process::ExitCode;

use std::time::{Duration, Instant};

use failfast::{AggregateError, Context, Executor, UserAggregator, executor, mock};
use futures::future::BoxFuture;

const USAGE: &str = "usage: dashboard [--executor inline|async-std|smol|tokio]";

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("failfast=debug"))
        .init();

    let executor = match parse_args() {
        Ok(executor) => executor,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let all_ok = match executor.as_str() {
        "inline" => futures::executor::block_on(scenarios(executor::Inline, "inline")),
        "async-std" => async_std::task::block_on(scenarios(
            |task: BoxFuture<'static, ()>| drop(async_std::task::spawn(task)),
            "async-std",
        )),
        "tokio" => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(err) => {
                    eprintln!("cannot start tokio: {err}");
                    return ExitCode::FAILURE;
                }
            };
            let handle = runtime.handle().clone();
            runtime.block_on(scenarios(
                move |task: BoxFuture<'static, ()>| drop(handle.spawn(task)),
                "tokio",
            ))
        }
        _ => {
            // smol: an executor run by two threads until the scenarios are done.
            let runner = SmolRunner::new();
            smol::block_on(scenarios(runner.executor(), "smol"))
        }
    };
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn parse_args() -> Result<String, String> {
    let mut args = std::env::args().skip(1);
    let mut executor = String::from("smol");
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--executor" => args.next().ok_or("--executor needs a value")?,
            other => match other.strip_prefix("--executor=") {
                Some(value) => value.to_owned(),
                None => return Err(format!("unknown argument {other:?}")),
            },
        };
        if !["inline", "async-std", "smol", "tokio"].contains(&value.as_str()) {
            return Err(format!("unknown executor {value:?}"));
        }
        executor = value;
    }
    Ok(executor)
}

/// Runs the three scenarios on `ex`; true if each behaved as the kata requires.
async fn scenarios<E: Executor + Clone>(ex: E, name: &str) -> bool {
    let ctx = Context::background();
    let mut ok = true;

    // Happy path: both services answer; the dashboard is ready when the slower one is.
    let agg = UserAggregator::builder(
        mock::profile("Alice").delay(Duration::from_millis(100)),
        mock::orders(5).delay(Duration::from_millis(50)),
    )
    .executor(ex.clone())
    .build()
    .expect("the default timeout is valid");
    let (result, elapsed) = timed(agg.aggregate(&ctx, 42)).await;
    print_result(&result);
    println!(
        "  happy path on {name}: answered in {elapsed:.1?} (profile takes 100ms, orders 50ms, concurrently)"
    );
    ok &= result.is_ok();

    // Slow Poke: timeout 1 s, the Order service takes 2 s.
    let orders = mock::orders(5).delay(Duration::from_secs(2));
    let order_calls = orders.calls();
    let agg = UserAggregator::builder(mock::profile("Alice"), orders)
        .executor(ex.clone())
        .timeout(Duration::from_secs(1))
        .build()
        .expect("1 s is a valid timeout");
    let (result, elapsed) = timed(agg.aggregate(&ctx, 42)).await;
    let cancelled = was_cancelled(&order_calls).await;
    print_result(&result);
    println!(
        "  slow poke (timeout 1s, orders take 2s): gave up after {elapsed:.2?}; orders call cancelled: {}",
        yes_no(cancelled)
    );
    ok &= matches!(result, Err(AggregateError::DeadlineExceeded { .. })) && cancelled;

    // Domino Effect: the Profile service fails at once, the Order service would take 10 s.
    let orders = mock::orders(5).delay(Duration::from_secs(10));
    let order_calls = orders.calls();
    let agg = UserAggregator::builder(
        mock::profile("Alice").fail("profile service unavailable"),
        orders,
    )
    .executor(ex)
    .timeout(Duration::from_secs(30))
    .build()
    .expect("30 s is a valid timeout");
    let (result, elapsed) = timed(agg.aggregate(&ctx, 42)).await;
    let cancelled = was_cancelled(&order_calls).await;
    print_result(&result);
    println!(
        "  domino effect (profile fails at once, orders take 10s): failed after {elapsed:.1?}; orders call cancelled: {}",
        yes_no(cancelled)
    );
    ok &= matches!(
        &result,
        Err(AggregateError::Service { service, .. }) if service == "profile"
    ) && cancelled;

    ok
}

fn print_result(result: &Result<failfast::Dashboard, AggregateError>) {
    match result {
        Ok(dashboard) => println!("{dashboard}"),
        Err(err) => println!("Error: {}", report(err)),
    }
}

/// An error and its sources, as `outer: inner: ...`.
fn report(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Awaits `future` and says how long it took.
async fn timed<T>(future: impl std::future::Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let output = future.await;
    (output, start.elapsed())
}

/// Whether the mock's call was stopped (cancelled, or never started) rather than left to
/// finish. Waits up to a second: a spawned call is dropped on its executor shortly after the
/// aggregate returns.
async fn was_cancelled(calls: &mock::Calls) -> bool {
    let start = Instant::now();
    while calls.in_flight() > 0 && start.elapsed() < Duration::from_secs(1) {
        futures_timer::Delay::new(Duration::from_millis(1)).await;
    }
    calls.in_flight() == 0 && calls.finished() == 0
}

fn yes_no(yes: bool) -> &'static str {
    if yes { "yes" } else { "NO" }
}
