//! The load run: a fixed number of requests at a fixed rate (open loop: each starts on its
//! schedule, however slow the others are), to loopback only, ending by itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{Either, select};
use hyper::StatusCode;

use crate::client::Pool;

/// One request's latency and status (`None`: no HTTP answer at all).
pub struct Sample {
    pub latency: Duration,
    pub status: Option<StatusCode>,
}

/// Sends `requests` GETs of `/dashboard/{id}` at `rate` per second through `pool`, each given
/// up (no answer) after `patience`.
pub async fn run(
    ex: &Arc<smol::Executor<'static>>,
    pool: &Arc<Pool>,
    requests: usize,
    rate: u32,
    patience: Duration,
) -> Vec<Sample> {
    let interval = Duration::from_secs(1) / rate;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(requests);
    for i in 0..requests {
        smol::Timer::at(start + interval * i as u32).await;
        let pool = pool.clone();
        let id = 1 + (i as u64 * 7919) % 100_000; // known users only
        tasks.push(ex.spawn(async move {
            let sent = Instant::now();
            let path = format!("/dashboard/{id}");
            let get = pool.fetch_any(&path);
            let status = match select(Box::pin(get), smol::Timer::after(patience)).await {
                Either::Left((Ok((status, _)), _)) => Some(status),
                _ => None, // an error, or no answer in time (the request is dropped)
            };
            Sample {
                latency: sent.elapsed(),
                status,
            }
        }));
    }
    let mut samples = Vec::with_capacity(requests);
    for task in tasks {
        samples.push(task.await);
    }
    samples
}

/// Latencies in milliseconds, sorted.
pub fn sorted_ms(samples: &[Sample]) -> Vec<f64> {
    let mut ms: Vec<f64> = samples
        .iter()
        .map(|sample| sample.latency.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    ms
}

/// The `q` quantile (0..=1) of sorted values: the smallest value with at least `q` of all
/// values at or below it.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
