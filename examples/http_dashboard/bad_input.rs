//! Step 3 of the tour, bad input: a malformed id, a port in use, a backend that is down, a
//! client that never finishes its headers. Each gets a clear status or error message.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::StatusCode;

use crate::backend::Kind;
use crate::checks::{Checks, get, ms, show};
use crate::client::Pool;
use crate::front::{self, Front, Settings};
use crate::rig::{MARGIN, Rig, listen_error};
use crate::{probes, serve};

pub async fn tour(
    rig: &Rig<'_>,
    checks: &mut Checks,
    dashboard: &Front,
    client: &Pool,
) -> Result<(), String> {
    println!("\n3. bad input");
    malformed_ids(rig, checks, client).await;
    port_in_use(rig, checks, dashboard.addr.port()).await?;
    backends_down(rig, checks).await?;
    unfinished_headers(rig, checks).await
}

async fn malformed_ids(rig: &Rig<'_>, checks: &mut Checks, client: &Pool) {
    for (path, what) in [
        ("/dashboard/forty-two", "a malformed id is a 400"),
        ("/dashboard/+42", "an id with a sign is a 400"),
    ] {
        let (code, body) = get(checks, client, path, rig.limit()).await;
        println!("   GET {path} -> {} {body}", show(code));
        checks.check(code == Some(StatusCode::BAD_REQUEST), what);
    }
    let long = format!("/dashboard/{}", "7x".repeat(10_000));
    let (code, body) = get(checks, client, &long, rig.limit()).await;
    println!(
        "   GET /dashboard/7x7x... (a 20 kB id) -> {} {}",
        show(code),
        serve::clip(&body, 200)
    );
    checks.check(
        code == Some(StatusCode::BAD_REQUEST) && body.len() < 300 && body.contains('…'),
        "a 20 kB malformed id is a 400 that echoes it cut short",
    );
}

/// A second dashboard on the port of the first: in this process, and from the command line.
async fn port_in_use(rig: &Rig<'_>, checks: &mut Checks, taken: u16) -> Result<(), String> {
    let clash = front::start(rig.ex, taken, rig.backends(), rig.settings(None)).await;
    let (in_use, message) = match clash {
        Ok(_) => (false, "it started".to_owned()),
        Err(err) => (
            err.kind() == std::io::ErrorKind::AddrInUse,
            listen_error(taken, &err),
        ),
    };
    println!("   a second dashboard: {message}");
    let clear = |message: &str| {
        message.contains(&format!("cannot listen on 127.0.0.1:{taken}: "))
            && message.contains("in use")
    };
    checks.check(in_use && clear(&message), "a port in use is a clear error");
    if !checks.on || probes::is_child() {
        return Ok(());
    }
    // This program again, with --port taken: it must end at once, and say why.
    let run = probes::command_line_port(taken, Duration::from_secs(30))
        .await
        .map_err(|err| format!("cannot start the example again: {err}"))?;
    let said = run
        .stderr
        .lines()
        .find(|line| line.starts_with("error:"))
        .unwrap_or(run.stderr.trim());
    let code = run.code.map_or("none".to_owned(), |code| code.to_string());
    println!("   --port {taken} on the command line: exit {code}, {said}");
    checks.check(
        run.code == Some(2) && clear(said) && !run.stderr.contains("panicked"),
        "--port in use exits 2 with a clear error",
    );
    checks.check(
        !run.left_svg,
        "a run that fails early leaves no picture behind",
    );
    Ok(())
}

/// One backend down at a time: profile and orders are required (502), recs is optional (200).
async fn backends_down(rig: &Rig<'_>, checks: &mut Checks) -> Result<(), String> {
    let nowhere = free_addr().await.map_err(|err| err.to_string())?;
    let (profile, orders, recs) = (rig.profile, rig.orders, rig.recs);
    for (kind, backends) in [
        (Kind::Profile, rig.pools(nowhere, orders, recs)),
        (Kind::Orders, rig.pools(profile, nowhere, recs)),
        (Kind::Recs, rig.pools(profile, orders, nowhere)),
    ] {
        let down = rig.front(0, backends, rig.settings(None)).await?;
        let pool = Pool::new(down.addr, rig.ex.clone());
        let (code, body) = get(checks, &pool, "/dashboard/42", rig.limit()).await;
        down.shut_down();
        let name = kind.name();
        println!(
            "   with the {name} backend down: GET /dashboard/42 -> {} {body}",
            show(code)
        );
        if kind == Kind::Recs {
            checks.check(
                code == Some(StatusCode::OK)
                    && body == "User: Alice | Orders: 5 | Recs: unavailable",
                "the optional recs backend down is a 200 without recs",
            );
        } else {
            checks.check(
                code == Some(StatusCode::BAD_GATEWAY)
                    && body.starts_with(&format!("{name} service failed")),
                &format!("the {name} backend down is a 502 naming it"),
            );
        }
    }
    Ok(())
}

/// hyper closes a connection whose headers do not come in time (here 300 ms).
async fn unfinished_headers(rig: &Rig<'_>, checks: &mut Checks) -> Result<(), String> {
    let patience = Duration::from_millis(300);
    let settings = Settings {
        header_timeout: patience,
        ..rig.settings(None)
    };
    let front = rig.front(0, rig.backends(), settings).await?;
    let wait = patience + MARGIN;
    let closed = probes::unfinished_headers(front.addr, wait)
        .await
        .map_err(|err| format!("cannot reach the dashboard: {err}"))?;
    front.shut_down();
    match closed {
        Some(after) => println!(
            "   headers never finished: the dashboard closed the connection after {:.0} ms (a test front's {} ms header timeout; the dashboard's own is {} s)",
            ms(after),
            patience.as_millis(),
            serve::HEADER_TIMEOUT.as_secs()
        ),
        None => println!(
            "   headers never finished: the connection was still open after {:.1} s",
            wait.as_secs_f64()
        ),
    }
    checks.check(
        closed.is_some_and(|after| after >= patience / 2),
        "a client that never finishes its headers is cut off after the header timeout",
    );
    Ok(())
}

/// A loopback address nobody listens on.
async fn free_addr() -> std::io::Result<SocketAddr> {
    let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
    listener.local_addr() // the listener closes here
}
