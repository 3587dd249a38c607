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
//! runs on default features; with the `smol`, `tokio` or `async-std` feature the adapters
//! `executor::Smol::new(ex)`, `executor::Tokio::new(handle)` and `executor::AsyncStd` do the
//! same, and also keep each task's handle to free the finished task on the group's thread.

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
    let orders_fate = fate(&order_calls).await;
    print_result(&result);
    println!(
        "  slow poke (timeout 1s, orders take 2s): gave up after {elapsed:.2?}; orders call: {orders_fate}"
    );
    ok &= matches!(result, Err(AggregateError::DeadlineExceeded { .. }))
        && orders_fate == Fate::CancelledInFlight;

    // Domino Effect: the Profile service fails almost at once, the Order service would take
    // 10 s. The 20 ms let the orders call get going, so that its cancellation is seen; failing
    // at once, it often ends it before its service is called at all.
    let orders = mock::orders(5).delay(Duration::from_secs(10));
    let order_calls = orders.calls();
    let agg = UserAggregator::builder(
        mock::profile("Alice")
            .delay(Duration::from_millis(20))
            .fail("profile service unavailable"),
        orders,
    )
    .executor(ex)
    .timeout(Duration::from_secs(30))
    .build()
    .expect("30 s is a valid timeout");
    let (result, elapsed) = timed(agg.aggregate(&ctx, 42)).await;
    let orders_fate = fate(&order_calls).await;
    print_result(&result);
    println!(
        "  domino effect (profile fails after 20ms, orders take 10s): failed after {elapsed:.1?}; orders call: {orders_fate}"
    );
    ok &= matches!(
        &result,
        Err(AggregateError::Service { service, .. }) if service == "profile"
    ) && orders_fate == Fate::CancelledInFlight;

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

/// What became of a mock's call once the aggregate had returned.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    /// Its service was called, and dropped before it answered.
    CancelledInFlight,
    /// Its service was never called: the failure came first (a spawned call may not have
    /// reached its executor's thread yet).
    NeverStarted,
    /// Still running, or it finished: not cancelled.
    LeftRunning,
}

impl std::fmt::Display for Fate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fate::CancelledInFlight => "cancelled in flight",
            Fate::NeverStarted => "never started (the failure came first)",
            Fate::LeftRunning => "NOT cancelled",
        })
    }
}

/// What became of the mock's call. Waits up to a second: a spawned call is dropped on its
/// executor shortly after the aggregate returns.
async fn fate(calls: &mock::Calls) -> Fate {
    let start = Instant::now();
    while calls.in_flight() > 0 && start.elapsed() < Duration::from_secs(1) {
        futures_timer::Delay::new(Duration::from_millis(1)).await;
    }
    if calls.in_flight() > 0 || calls.finished() > 0 {
        Fate::LeftRunning
    } else if calls.started() == 0 {
        Fate::NeverStarted
    } else {
        Fate::CancelledInFlight
    }
}
