//! What a smoke run checks with: named checks, and the example's own requests, each given up
//! after a time limit (a failed check) so that a stalled dashboard cannot hang the run.

use std::time::{Duration, Instant};

use hyper::StatusCode;

use crate::client::Pool;
use crate::serve;

/// The checks of a smoke run: each is printed, and the failed ones kept. Off (nothing
/// printed or kept) outside a smoke run.
#[derive(Debug, Default)]
pub struct Checks {
    pub on: bool,
    pub failed: Vec<String>,
}

impl Checks {
    pub fn check(&mut self, ok: bool, what: &str) {
        if self.on {
            println!("   check: {what}: {}", if ok { "ok" } else { "FAILED" });
            if !ok {
                self.failed.push(what.to_owned());
            }
        }
    }
}

/// How many of `n` requests may miss the dashboard's deadline (answered 504) on a slow,
/// shared machine: 2%, and at least one. Any other failure fails the check.
pub fn tolerated(n: usize) -> usize {
    (n / 50).max(1)
}

/// GET `path`: the status, or `None` and the error when there was no HTTP answer. Given up
/// after `limit`, which fails a check naming the request.
pub async fn get(
    checks: &mut Checks,
    pool: &Pool,
    path: &str,
    limit: Duration,
) -> (Option<StatusCode>, String) {
    let answer = async { Some(pool.fetch_any(path).await) };
    let timeout = async {
        smol::Timer::after(limit).await;
        None // the request is dropped, and its connection closed
    };
    match smol::future::or(answer, timeout).await {
        Some(Ok((code, body))) => (Some(code), body.trim_end().to_owned()),
        Some(Err(err)) => (None, chain(&*err)),
        None => {
            let secs = limit.as_secs_f64();
            let what = format!("GET {} answered within {secs:.1} s", serve::clip(path, 40));
            checks.check(false, &what);
            (None, format!("no answer in {secs:.1} s: given up"))
        }
    }
}

/// The status, or what stands for none.
pub fn show(code: Option<StatusCode>) -> String {
    code.map_or("no answer:".to_owned(), |code| code.to_string())
}

/// An error and its causes, on one line.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Waits until `done` (looking every 10 ms, at most `at_most`): whether it came true. For
/// counters that backends update on their own tasks.
pub async fn settle(done: impl Fn() -> bool, at_most: Duration) -> bool {
    let deadline = Instant::now() + at_most;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        smol::Timer::after(Duration::from_millis(10)).await;
    }
    true
}
