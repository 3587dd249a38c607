//! The dashboard: `GET /dashboard/{id}` over HTTP/1, built with one failfast group per request
//! over three backends through the pooled HTTP client. Profile and orders are required, orders
//! may be hedged, recommendations are optional with a timeout of their own. Every request runs
//! under the server's context: shutting the server down cancels the requests in flight.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use failfast::{CancelHandle, Context, Error, FailFast, Hedge};
use futures::future::try_join3;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use smol::net::TcpListener;
use tracing::Instrument;

use crate::client::{Pool, Status, Unreachable};
use crate::serve;

/// The dashboard's backends.
pub struct Backends {
    pub profile: Arc<Pool>,
    pub orders: Arc<Pool>,
    pub recs: Arc<Pool>,
}

/// How the dashboard calls them.
pub struct Settings {
    pub deadline: Duration,
    /// Hedge the orders call; `None`: call it once.
    pub hedge: Option<Hedge>,
    pub recs_timeout: Duration,
    /// How long a client may take to send its headers, or keep a connection idle.
    pub header_timeout: Duration,
}

/// How much of a malformed id the 400 echoes.
const ECHOED_ID_CHARS: usize = 64;

/// A running dashboard.
pub struct Front {
    pub addr: SocketAddr,
    shutdown: CancelHandle,
}

impl Front {
    /// Stops accepting connections and cancels every request in flight; requests that still
    /// arrive on open connections are answered 503.
    pub fn shut_down(&self) {
        self.shutdown.cancel();
    }
}

struct State {
    ff: FailFast,
    backends: Backends,
    settings: Settings,
    /// Cancelled at shutdown: the parent of every request's context.
    server: Context,
}

/// Binds the dashboard on `127.0.0.1:port` and serves it on `ex`.
///
/// # Errors
///
/// The bind's error (`AddrInUse` for a port already in use, say).
pub async fn start(
    ex: &Arc<smol::Executor<'static>>,
    port: u16,
    backends: Backends,
    settings: Settings,
) -> std::io::Result<Front> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let addr = listener.local_addr()?;
    let ff = FailFast::builder()
        .timeout(settings.deadline)
        .build()
        .map_err(std::io::Error::other)?;
    let (server, shutdown) = Context::background().with_cancel();
    let state = Arc::new(State {
        ff,
        backends,
        settings,
        server: server.clone(),
    });
    // Accepts until shutdown; then the listener closes and new connections are refused.
    let header_timeout = state.settings.header_timeout;
    serve::spawn(ex, listener, server, header_timeout, move |req| {
        route(req, state.clone())
    });
    Ok(Front { addr, shutdown })
}

async fn route(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let (code, body) = match (req.method(), path.strip_prefix("/dashboard/")) {
        (&Method::GET, Some(id)) => match serve::parse_id(id) {
            Some(id) => {
                let span = tracing::info_span!("GET /dashboard", id);
                dashboard(&state, id).instrument(span).await
            }
            None => (StatusCode::BAD_REQUEST, malformed(id)),
        },
        (_, Some(_)) => (
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is served".to_owned(),
        ),
        (_, None) => (
            StatusCode::NOT_FOUND,
            "not found: try GET /dashboard/{id}".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body + "\n")));
    *response.status_mut() = code;
    Ok(response)
}

/// The 400's body for a malformed id: the id echoed, cut short if it is long.
fn malformed(id: &str) -> String {
    let shown = serve::clip(id, ECHOED_ID_CHARS);
    let size = if shown != id {
        format!(" ({} bytes)", id.len())
    } else {
        String::new()
    };
    format!("malformed id {shown:?}{size}: expected decimal digits, as in /dashboard/42")
}

/// One dashboard: a failfast group over the three backends.
async fn dashboard(state: &State, id: u64) -> (StatusCode, String) {
    if state.server.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down: no new requests".to_owned(),
        );
    }
    let Backends {
        profile,
        orders,
        recs,
    } = &state.backends;
    let group = state.ff.group(&state.server);
    let profile = profile.clone();
    let profile = group.call("profile", move |ctx| async move {
        profile.get(&ctx, &format!("/profile/{id}")).await
    });
    let pool = orders.clone();
    let count = move |ctx: Context| {
        let pool = pool.clone();
        async move {
            let body = pool.get(&ctx, &format!("/orders/{id}")).await?;
            Ok::<u32, failfast::BoxError>(body.trim().parse()?)
        }
    };
    let orders = group.idempotent("orders", count);
    let orders = match &state.settings.hedge {
        Some(hedge) => orders.hedge(hedge.clone()),
        None => orders,
    };
    let recs = recs.clone();
    let recs = group
        .call("recs", move |ctx| async move {
            recs.get(&ctx, &format!("/recs/{id}")).await
        })
        .timeout(state.settings.recs_timeout)
        .optional();
    match group.run(try_join3(profile, orders, recs)).await {
        Ok((name, orders, recs)) => {
            let recs = recs.unwrap_or_else(|| "unavailable".to_owned());
            (
                StatusCode::OK,
                format!("User: {name} | Orders: {orders} | Recs: {recs}"),
            )
        }
        Err(err) => match status_of(&err) {
            StatusCode::SERVICE_UNAVAILABLE => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("shutting down: {err:#}"),
            ),
            code => (code, format!("{err:#}")),
        },
    }
}

/// The HTTP status a failed group stands for.
fn status_of(err: &Error) -> StatusCode {
    if err.is_deadline_exceeded() || matches!(err, Error::TimedOut { .. }) {
        return StatusCode::GATEWAY_TIMEOUT;
    }
    if err.is_cancelled() {
        return StatusCode::SERVICE_UNAVAILABLE; // the server is shutting down
    }
    if matches!(err, Error::Panicked { .. }) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    // A backend's own answer: its 404 is ours ("no such user").
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(status) = cause.downcast_ref::<Status>() {
            if status.code == StatusCode::NOT_FOUND {
                return StatusCode::NOT_FOUND;
            }
        }
        if cause.is::<Unreachable>() {
            return StatusCode::BAD_GATEWAY;
        }
        source = cause.source();
    }
    StatusCode::BAD_GATEWAY
}
