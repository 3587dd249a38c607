//! The dashboard as a real service: HTTP/1 over loopback, on smol with hyper.
//!
//! It starts three backends (profile, orders, recommendations) on ephemeral ports, and a
//! dashboard that serves `GET /dashboard/{id}` with one failfast group per request over a real
//! HTTP client. Then it shows, in order:
//!
//! 1. a dashboard answered;
//! 2. fail fast on the wire: profile answers 404 at once, so the group cancels the orders
//!    request in flight, its connection closes, and the orders backend counts a client that
//!    went away;
//! 3. bad input: a malformed id, a port in use, a backend that is down, a client that never
//!    finishes its headers;
//! 4. a bounded load run, plain and then with orders hedged: p50, p99 and p99.9, and a
//!    picture of the tail (`--svg`);
//! 5. shutdown: a request in flight and the requests after it get a clear answer.
//!
//! With `--smoke` it checks what it shows and exits 1 if a check failed; each of its own
//! requests is given up, as a failed check, after the dashboard's deadline and a margin.
//!
//! ```text
//! cargo run --example http_dashboard                      # the whole tour, ~15 s
//! cargo run --example http_dashboard -- --smoke           # short, and checks what it shows
//! cargo run --example http_dashboard --features tracing -- --trace   # with failfast's spans
//! cargo run --example http_dashboard -- --help
//! ```

#[path = "../common/mod.rs"]
mod common;

mod args;
mod backend;
mod bad_input;
mod chart;
mod checks;
mod client;
mod front;
mod load;
mod probes;
mod rig;
mod serve;
mod spans;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use failfast::{Budget, Hedge};
use hyper::StatusCode;

use crate::backend::{Backend, Counters, Kind, UNKNOWN_USERS};
use crate::checks::{Checks, get, ms, settle, show, tolerated};
use crate::client::Pool;
use crate::front::{Backends, Front, Settings};
use crate::rig::{MARGIN, Rig};
use crate::spans::PRINTING;

/// How long the orders backend of steps 2 and 5 takes: long enough to be in flight.
const SLOW_ORDERS: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let args = match args::parse() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{}", args::USAGE); // --help
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    // The picture's path is checked before anything runs, not after the load runs.
    if let Err(err) = writable(&args.svg) {
        eprintln!("error: cannot write {}: {err}", args.svg);
        return ExitCode::from(2);
    }
    if args.trace {
        spans::install();
    }
    let runner = common::SmolRunner::new();
    let ex = runner.ex();
    let outcome = smol::block_on(tour(&ex, &args));
    drop(runner); // stops the servers' threads
    match outcome {
        Ok(failed) if failed.is_empty() => ExitCode::SUCCESS,
        Ok(failed) => {
            eprintln!("\nsmoke run FAILED: {}", failed.join("; "));
            ExitCode::FAILURE
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

async fn tour(ex: &Arc<smol::Executor<'static>>, args: &args::Args) -> Result<Vec<String>, String> {
    let mut checks = Checks {
        on: args.smoke,
        ..Checks::default()
    };
    let started = |kind, spec| backend::start(ex, kind, spec, args.seed);
    let io = |err: std::io::Error| format!("cannot start a backend: {err}");
    let profile = started(Kind::Profile, args.profile).await.map_err(io)?;
    let orders = started(Kind::Orders, args.orders).await.map_err(io)?;
    let recs = started(Kind::Recs, args.recs).await.map_err(io)?;
    for backend in [&profile, &orders, &recs] {
        println!(
            "{:>7} backend on http://{}",
            backend.kind.name(),
            backend.addr
        );
    }
    let rig = Rig {
        ex,
        args,
        profile: profile.addr,
        orders: orders.addr,
        recs: recs.addr,
    };
    let hedge = Hedge::builder()
        .attempts(2)
        .delay(args.hedge_after)
        // Hedges may add at most 10% to the orders calls (and 10 a second).
        .budget(Budget::new(0.1, 10).map_err(|err| err.to_string())?)
        .build()
        .map_err(|err| err.to_string())?;
    let dashboard = rig
        .front(args.port, rig.backends(), rig.settings(Some(hedge)))
        .await?;
    let plain = rig.front(0, rig.backends(), rig.settings(None)).await?;
    println!(
        "dashboard on http://{}/dashboard/{{id}} (orders hedged after {} ms), and without hedging on http://{}",
        dashboard.addr,
        args.hedge_after.as_millis(),
        plain.addr
    );
    let client = Pool::new(dashboard.addr, ex.clone());

    PRINTING.store(args.trace, Ordering::SeqCst);
    println!("\n1. a dashboard");
    let (code, body) = get(&mut checks, &client, "/dashboard/42", rig.limit()).await;
    println!("   GET /dashboard/42 -> {} {body}", show(code));
    checks.check(
        code == Some(StatusCode::OK) && body.starts_with("User: Alice | Orders: 5"),
        "the dashboard answered",
    );

    // The kata's Domino Effect, on the wire: orders would take a second here.
    let ms_of_slow = SLOW_ORDERS.as_millis() as u64;
    let slow = args::Spec {
        min_ms: ms_of_slow,
        max_ms: ms_of_slow,
        ..args.orders
    };
    let slow_orders = started(Kind::Orders, slow).await.map_err(io)?;
    let via_slow_orders = || Backends {
        orders: Arc::new(Pool::new(slow_orders.addr, ex.clone())),
        ..rig.backends()
    };
    let domino = rig.front(0, via_slow_orders(), rig.settings(None)).await?;
    println!(
        "\n2. fail fast on the wire: profile answers 404, orders (1 s here, on http://{}) is in flight",
        slow_orders.addr
    );
    fail_fast(&rig, &mut checks, &domino, &slow_orders.counters).await;
    domino.shut_down();

    bad_input::tour(&rig, &mut checks, &dashboard, &client).await?;

    println!(
        "\n4. load: {} requests at {}/s, deadline {} ms; orders stall {:.0}% of the time for {} ms",
        args.requests,
        args.rate,
        args.deadline.as_millis(),
        args.orders.stall * 100.0,
        args.orders.stall_ms
    );
    println!(
        "   {:<7} {:>6} {:>9} {:>9} {:>9} {:>9} {:>15}",
        "", "200 OK", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "orders/request"
    );
    if args.requests < 1000 {
        println!(
            "   ({} requests: p99 and p99.9 are the few slowest requests, noisy from run to run)",
            args.requests
        );
    }
    let mut runs = Vec::new();
    for (label, front) in [("plain", &plain), ("hedged", &dashboard)] {
        let pool = Arc::new(Pool::new(front.addr, ex.clone()));
        let asked = orders.counters.received.load(Ordering::SeqCst);
        // No request waits past the deadline and a second of slack on the client's side.
        let patience = args.deadline + Duration::from_secs(1);
        let samples = load::run(ex, &pool, args.requests, args.rate, patience).await;
        let asked = orders.counters.received.load(Ordering::SeqCst) - asked;
        let count = |status| samples.iter().filter(|s| s.status == status).count();
        let ok = count(Some(StatusCode::OK));
        let late = count(Some(StatusCode::GATEWAY_TIMEOUT));
        let sorted = load::sorted_ms(&samples);
        let q = |q| load::quantile(&sorted, q);
        println!(
            "   {label:<7} {ok:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>15.3}",
            q(0.5),
            q(0.99),
            q(0.999),
            q(1.0),
            asked as f64 / args.requests as f64
        );
        if ok < args.requests {
            println!(
                "   {label}: {late} past the deadline (504), {} otherwise failed",
                args.requests - ok - late
            );
        }
        checks.check(
            ok + late == args.requests && late <= tolerated(args.requests),
            &format!("every {label} request answered 200 (but for a few 504s)"),
        );
        runs.push((label, sorted));
    }
    let series: Vec<(&str, &[f64])> = runs.iter().map(|(l, s)| (*l, s.as_slice())).collect();
    let title = format!(
        "GET /dashboard on loopback: {} requests at {}/s, orders stall {:.0}% for {} ms",
        args.requests,
        args.rate,
        args.orders.stall * 100.0,
        args.orders.stall_ms
    );
    chart::write(&args.svg, &title, &series)?;
    println!("   picture: {}", args.svg);

    println!("\n5. shutdown");
    let busy = Settings {
        deadline: SLOW_ORDERS * 5, // only the shutdown ends the request early
        ..rig.settings(None)
    };
    let busy = rig.front(0, via_slow_orders(), busy).await?;
    in_flight_at_shutdown(&mut checks, &busy, &slow_orders.counters, ex).await;
    after_shutdown(&rig, &mut checks, &dashboard, &client).await;

    println!("\nbackends: requests answered / refused (4xx, 5xx) / whose client went away");
    for (label, backend) in [
        ("profile", &profile),
        ("orders", &orders),
        ("recs", &recs),
        ("slow orders (steps 2, 5)", &slow_orders),
    ] {
        report(label, backend);
    }
    plain.shut_down();
    if args.trace {
        spans_closed(&mut checks);
    }
    Ok(checks.failed)
}

/// Step 2: profile answers 404 at once, and the orders request in flight (a second long) is
/// cancelled, on the wire.
async fn fail_fast(rig: &Rig<'_>, checks: &mut Checks, domino: &Front, slow_orders: &Counters) {
    let client = Pool::new(domino.addr, rig.ex.clone());
    let counted = || {
        let c = slow_orders;
        [&c.received, &c.answered, &c.refused, &c.went_away].map(|n| n.load(Ordering::SeqCst))
    };
    let before = counted();
    let tries = 20;
    let (mut not_found, mut deadline_missed) = (0, 0);
    let mut latencies = Vec::with_capacity(tries);
    for i in 0..tries {
        let sent = Instant::now();
        let path = format!("/dashboard/{}", UNKNOWN_USERS + i as u64);
        let (code, body) = get(checks, &client, &path, rig.limit()).await;
        PRINTING.store(false, Ordering::SeqCst); // spans of the first one only
        latencies.push(sent.elapsed());
        match code {
            Some(StatusCode::NOT_FOUND) => not_found += 1,
            Some(StatusCode::GATEWAY_TIMEOUT) => deadline_missed += 1,
            _ => {}
        }
        if i == 0 {
            println!("   GET {path} -> {} {body}", show(code));
        }
    }
    // Each orders request the backend received ends answered, refused or gone away; the
    // backend notices a closed connection a moment later, on its own task.
    let since = || {
        let now = counted();
        [0, 1, 2, 3].map(|i| now[i] - before[i])
    };
    let all_ended = || {
        let [received, answered, refused, went_away] = since();
        answered + refused + went_away == received
    };
    let settled = settle(all_ended, SLOW_ORDERS * 3).await;
    let [received, answered, refused, went_away] = since();
    latencies.sort();
    let (median, slowest) = (latencies[tries / 2], latencies[tries - 1]);
    // Orders may have answered a request whose 404 took longer than orders: not the others.
    let slower_than_orders = latencies.iter().filter(|&&l| l >= SLOW_ORDERS).count() as u64;
    println!(
        "   {tries} such requests: {not_found} answered 404, {deadline_missed} 504; in {:.1} ms (median), {:.1} ms (slowest)",
        ms(median),
        ms(slowest)
    );
    let unsent = if received < tries as u64 {
        " (the others were cancelled before they were sent)"
    } else {
        ""
    };
    println!(
        "   the orders backend received {received} of their orders requests{unsent}, and {went_away} of those {received} went away: dropped mid-work when the dashboard closed their connection"
    );
    let finished = answered + refused;
    if finished > 0 {
        println!(
            "   {finished} finished before the dashboard gave up on them ({slower_than_orders} of the 404s took longer than orders)"
        );
    }
    checks.check(
        not_found + deadline_missed == tries && deadline_missed <= tolerated(tries),
        "an unknown user is a 404",
    );
    checks.check(
        median < SLOW_ORDERS / 2,
        "the 404 came back long before orders would have answered (median)",
    );
    checks.check(
        settled && went_away > 0 && finished <= slower_than_orders,
        "the orders requests in flight were cancelled on the wire",
    );
}

/// Step 5: a request in flight when `busy` shuts down (as soon as its orders request, which
/// takes a second, reached the backend) is answered 503.
async fn in_flight_at_shutdown(
    checks: &mut Checks,
    busy: &Front,
    slow_orders: &Counters,
    ex: &Arc<smol::Executor<'static>>,
) {
    let asked = slow_orders.received.load(Ordering::SeqCst);
    let client = Pool::new(busy.addr, ex.clone());
    let limit = SLOW_ORDERS * 5 + MARGIN;
    let in_flight = get(checks, &client, "/dashboard/42", limit);
    let shut_down = async {
        let reached = || slow_orders.received.load(Ordering::SeqCst) > asked;
        let reached = settle(reached, SLOW_ORDERS / 2).await;
        busy.shut_down();
        reached
    };
    let ((code, body), reached) = futures::join!(in_flight, shut_down);
    println!(
        "   in flight at shutdown: GET /dashboard/42 -> {} {body}",
        show(code)
    );
    checks.check(
        reached
            && code == Some(StatusCode::SERVICE_UNAVAILABLE)
            && body.starts_with("shutting down"),
        "a request in flight at shutdown is a 503 saying so",
    );
}

/// Step 5: after shutdown, a request on a connection opened before is answered 503, and a
/// new connection is refused.
async fn after_shutdown(rig: &Rig<'_>, checks: &mut Checks, dashboard: &Front, client: &Pool) {
    // A fresh answer first, so that the connection is open (not closed as idle) at shutdown.
    let (warm, _) = get(checks, client, "/dashboard/42", rig.limit()).await;
    dashboard.shut_down();
    let (code, body) = get(checks, client, "/dashboard/42", rig.limit()).await;
    println!(
        "   on a connection opened before: GET /dashboard/42 -> {} {body}",
        show(code)
    );
    let fresh = Pool::new(dashboard.addr, rig.ex.clone());
    let (code2, body2) = get(checks, &fresh, "/dashboard/42", rig.limit()).await;
    println!("   on a new connection: {} {body2}", show(code2));
    checks.check(
        warm == Some(StatusCode::OK)
            && code == Some(StatusCode::SERVICE_UNAVAILABLE)
            && code2.is_none(),
        "after shutdown: 503 on an open connection, refused on a new one",
    );
}

/// `--trace`: failfast's group and call spans closed, having recorded how they ended.
fn spans_closed(checks: &mut Checks) {
    let closed = |name| spans::CLOSED.of(name);
    println!("\nfailfast's spans closed (with outcome and elapsed_ms):");
    for name in ["group", "call", "attempt"] {
        let (all, full) = closed(name);
        println!("   {name:>8}: {all} ({full})");
    }
    let needs = if cfg!(feature = "tracing") {
        ""
    } else {
        " (needs --features tracing)"
    };
    checks.check(
        closed("group").1 > 0 && closed("call").1 > 0,
        &format!("failfast's group and call spans closed with their outcome and elapsed_ms{needs}"),
    );
}

/// Makes `path`'s folder if it is missing, and checks that `path` can be written (without
/// leaving an empty file: the picture is written once there is something to draw).
fn writable(path: &str) -> std::io::Result<()> {
    let path = std::path::Path::new(path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if !existed {
        std::fs::remove_file(path)?;
    }
    Ok(())
}

fn report(label: &str, backend: &Backend) {
    let c: &Counters = &backend.counters;
    println!(
        "   {label:>24}: {} / {} / {}",
        c.answered.load(Ordering::SeqCst),
        c.refused.load(Ordering::SeqCst),
        c.went_away.load(Ordering::SeqCst)
    );
}
