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
//! 3. bad input: a malformed id, a port in use, a backend that is down;
//! 4. a bounded load run, plain and then with orders hedged: p50, p99 and p99.9, and a
//!    picture of the tail (`--svg`);
//! 5. shutdown: requests after it get a clear answer.
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
mod chart;
mod client;
mod front;
mod load;
mod serve;
mod spans;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use failfast::{Budget, Hedge};
use hyper::StatusCode;

use crate::backend::{Backend, Counters, Kind, UNKNOWN_USERS};
use crate::client::Pool;
use crate::front::{Backends, Settings};
use crate::spans::PRINTING;

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

/// What a smoke run checks: each check is printed, and the failed ones returned.
#[derive(Default)]
struct Checks {
    on: bool,
    failed: Vec<String>,
}

impl Checks {
    fn check(&mut self, ok: bool, what: &str) {
        if self.on {
            println!("   check: {what}: {}", if ok { "ok" } else { "FAILED" });
            if !ok {
                self.failed.push(what.to_owned());
            }
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
    let backends = |profile_addr| Backends {
        profile: Arc::new(Pool::new(profile_addr, ex.clone())),
        orders: Arc::new(Pool::new(orders.addr, ex.clone())),
        recs: Arc::new(Pool::new(recs.addr, ex.clone())),
    };
    let hedge = Hedge::builder()
        .attempts(2)
        .delay(args.hedge_after)
        // Hedges may add at most 10% to the orders calls (and 10 a second).
        .budget(Budget::new(0.1, 10).map_err(|err| err.to_string())?)
        .build()
        .map_err(|err| err.to_string())?;
    let settings = |hedge| Settings {
        deadline: args.deadline,
        hedge,
        recs_timeout: args.recs_timeout,
        header_timeout: serve::HEADER_TIMEOUT,
    };
    let listen = |port: u16| move |err| format!("cannot listen on 127.0.0.1:{port}: {err}");
    let dashboard = front::start(ex, args.port, backends(profile.addr), settings(Some(hedge)))
        .await
        .map_err(listen(args.port))?;
    let plain = front::start(ex, 0, backends(profile.addr), settings(None))
        .await
        .map_err(listen(0))?;
    println!(
        "dashboard on http://{}/dashboard/{{id}} (orders hedged after {} ms), and without hedging on http://{}",
        dashboard.addr,
        args.hedge_after.as_millis(),
        plain.addr
    );
    let client = Pool::new(dashboard.addr, ex.clone());

    PRINTING.store(args.trace, Ordering::SeqCst);
    println!("\n1. a dashboard");
    let (code, body) = get(&client, "/dashboard/42").await;
    println!("   GET /dashboard/42 -> {} {body}", show(code));
    checks.check(
        code == Some(StatusCode::OK) && body.starts_with("User: Alice | Orders: 5"),
        "the dashboard answered",
    );

    // The kata's Domino Effect, on the wire: orders would take a second here.
    let slow = args::Spec {
        min_ms: 1000,
        max_ms: 1000,
        ..args.orders
    };
    let slow_orders = started(Kind::Orders, slow).await.map_err(io)?;
    let domino = Backends {
        orders: Arc::new(Pool::new(slow_orders.addr, ex.clone())),
        ..backends(profile.addr)
    };
    let domino = front::start(ex, 0, domino, settings(None))
        .await
        .map_err(listen(0))?;
    let client2 = Pool::new(domino.addr, ex.clone());
    println!(
        "\n2. fail fast on the wire: profile answers 404, orders (1 s here, on http://{}) is in flight",
        slow_orders.addr
    );
    let received = slow_orders.counters.received.load(Ordering::SeqCst);
    let before = slow_orders.counters.went_away.load(Ordering::SeqCst);
    let tries = 20;
    let mut not_found = 0;
    let mut slowest = Duration::ZERO;
    for i in 0..tries {
        let sent = Instant::now();
        let (code, body) = get(&client2, &format!("/dashboard/{}", UNKNOWN_USERS + i)).await;
        PRINTING.store(false, Ordering::SeqCst); // spans of the first one only
        slowest = slowest.max(sent.elapsed());
        if code == Some(StatusCode::NOT_FOUND) {
            not_found += 1;
        }
        if i == 0 {
            println!("   GET /dashboard/{UNKNOWN_USERS} -> {} {body}", show(code));
        }
    }
    // The backend notices a closed connection a moment later, on its own task.
    let went_away = settle(|| slow_orders.counters.went_away.load(Ordering::SeqCst) - before).await;
    let received = slow_orders.counters.received.load(Ordering::SeqCst) - received;
    println!(
        "   {tries} such requests: {not_found} answered 404, the slowest in {:.1} ms",
        ms(slowest)
    );
    let unsent = if received < tries {
        " (the others were cancelled before they were sent)"
    } else {
        ""
    };
    println!(
        "   the orders backend received {received} of their orders requests{unsent}, and {went_away} of those {received} went away: dropped mid-work when the dashboard closed their connection"
    );
    domino.shut_down();
    checks.check(not_found == tries, "an unknown user is a 404");
    checks.check(
        slowest < Duration::from_millis(500),
        "the 404 came back long before orders would have answered",
    );
    checks.check(
        went_away > 0 && went_away == received,
        "every orders request in flight was cancelled on the wire",
    );

    println!("\n3. bad input");
    let (code, body) = get(&client, "/dashboard/forty-two").await;
    println!("   GET /dashboard/forty-two -> {} {body}", show(code));
    checks.check(
        code == Some(StatusCode::BAD_REQUEST),
        "a malformed id is a 400",
    );
    let taken = dashboard.addr.port();
    let clash = front::start(ex, taken, backends(profile.addr), settings(None)).await;
    let in_use = matches!(&clash, Err(err) if err.kind() == std::io::ErrorKind::AddrInUse);
    if let Err(err) = clash {
        println!("   a second dashboard: {}", listen(taken)(err));
    }
    checks.check(in_use, "a port in use is a clear error");
    let nowhere = free_addr().await.map_err(|err| err.to_string())?;
    let down = front::start(ex, 0, backends(nowhere), settings(None))
        .await
        .map_err(listen(0))?;
    let (code, body) = get(&Pool::new(down.addr, ex.clone()), "/dashboard/42").await;
    println!(
        "   with the profile backend down: GET /dashboard/42 -> {} {body}",
        show(code)
    );
    checks.check(
        code == Some(StatusCode::BAD_GATEWAY) && body.contains("profile"),
        "a backend that is down is a 502 naming it",
    );
    down.shut_down();

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
    let mut runs = Vec::new();
    for (label, front) in [("plain", &plain), ("hedged", &dashboard)] {
        let pool = Arc::new(Pool::new(front.addr, ex.clone()));
        let asked = orders.counters.received.load(Ordering::SeqCst);
        // No request waits past the deadline and a second of slack on the client's side.
        let patience = args.deadline + Duration::from_secs(1);
        let samples = load::run(ex, &pool, args.requests, args.rate, patience).await;
        let asked = orders.counters.received.load(Ordering::SeqCst) - asked;
        let ok = samples
            .iter()
            .filter(|s| s.status == Some(StatusCode::OK))
            .count();
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
        checks.check(
            ok == args.requests,
            &format!("every {label} request answered 200"),
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
    dashboard.shut_down();
    let (code, body) = get(&client, "/dashboard/42").await;
    println!(
        "   on a connection opened before: GET /dashboard/42 -> {} {body}",
        show(code)
    );
    let fresh = Pool::new(dashboard.addr, ex.clone());
    let (code2, body2) = get(&fresh, "/dashboard/42").await;
    println!("   on a new connection: {} {body2}", show(code2));
    checks.check(
        code == Some(StatusCode::SERVICE_UNAVAILABLE) && code2.is_none(),
        "after shutdown: 503 on an open connection, refused on a new one",
    );

    println!("\nbackends: requests answered / refused (4xx, 5xx) / whose client went away");
    for (label, backend) in [
        ("profile", &profile),
        ("orders", &orders),
        ("recs", &recs),
        ("slow orders (step 2)", &slow_orders),
    ] {
        report(label, backend);
    }
    plain.shut_down();
    if args.trace {
        spans_closed(&mut checks);
    }
    Ok(checks.failed)
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

/// GET `path`: the status, or `None` and the error when there was no HTTP answer.
async fn get(pool: &Pool, path: &str) -> (Option<StatusCode>, String) {
    match pool.fetch_any(path).await {
        Ok((code, body)) => (Some(code), body.trim_end().to_owned()),
        Err(err) => (None, chain(&*err)),
    }
}

fn show(code: Option<StatusCode>) -> String {
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

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
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

/// A loopback address nobody listens on.
async fn free_addr() -> std::io::Result<std::net::SocketAddr> {
    let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
    listener.local_addr() // the listener closes here
}

/// Reads `count` until it has not changed for 50 ms (at most 1 s): counters that backends
/// update on their own tasks.
async fn settle(count: impl Fn() -> u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut last = count();
    while Instant::now() < deadline {
        smol::Timer::after(Duration::from_millis(50)).await;
        let now = count();
        if now == last && now > 0 {
            break;
        }
        last = now;
    }
    last
}

fn report(label: &str, backend: &Backend) {
    let c: &Counters = &backend.counters;
    println!(
        "   {label:>20}: {} / {} / {}",
        c.answered.load(Ordering::SeqCst),
        c.refused.load(Ordering::SeqCst),
        c.went_away.load(Ordering::SeqCst)
    );
}
