//! The backends: small HTTP/1 servers on loopback whose latency, stalls and failures follow a
//! [`Spec`]. Each counts the requests it answered, and those whose client went away first:
//! hyper drops a handler whose connection closes mid-request, and the handler's guard counts
//! that drop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use failfast::Context;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use smol::net::TcpListener;

use crate::args::Spec;
use crate::serve;

/// Profile ids from here on belong to nobody: the profile backend answers them 404.
pub const UNKNOWN_USERS: u64 = 1_000_000;

/// What a backend counted.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests that reached a handler.
    pub received: AtomicU64,
    /// Requests answered 200.
    pub answered: AtomicU64,
    /// Requests answered 4xx or 5xx.
    pub refused: AtomicU64,
    /// Requests whose client closed the connection before the answer: the handler was
    /// dropped mid-work.
    pub went_away: AtomicU64,
}

/// Which backend: its path prefix and its answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Profile,
    Orders,
    Recs,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Profile => "profile",
            Kind::Orders => "orders",
            Kind::Recs => "recs",
        }
    }

    fn answer(self, id: u64) -> String {
        const NAMES: [&str; 5] = ["Bob", "Carol", "Alice", "Dan", "Erin"];
        match self {
            Kind::Profile => NAMES[(id % 5) as usize].to_owned(), // 42: Alice
            Kind::Orders => (id % 8 + 3).to_string(),             // 42: 5
            Kind::Recs => "tea,lamp,atlas".to_owned(),
        }
    }
}

/// A running backend.
pub struct Backend {
    pub kind: Kind,
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
}

/// Binds `kind` on an ephemeral loopback port and serves it on `ex` until the program ends.
pub async fn start(
    ex: &Arc<smol::Executor<'static>>,
    kind: Kind,
    spec: Spec,
    seed: u64,
) -> std::io::Result<Backend> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let counters = Arc::new(Counters::default());
    let state = Arc::new(State {
        kind,
        spec,
        seed,
        draws: AtomicU64::new(0),
        counters: counters.clone(),
    });
    let until = Context::background(); // until the program ends
    serve::spawn(ex, listener, until, serve::HEADER_TIMEOUT, move |req| {
        handle(req, state.clone())
    });
    Ok(Backend {
        kind,
        addr,
        counters,
    })
}

struct State {
    kind: Kind,
    spec: Spec,
    seed: u64,
    draws: AtomicU64,
    counters: Arc<Counters>,
}

impl State {
    /// A uniform draw in [0, 1), from a seeded sequence.
    fn draw(&self) -> f64 {
        let n = self.draws.fetch_add(1, Ordering::Relaxed);
        let mut z = self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// How long this request takes, and whether it fails.
    fn plan(&self) -> (Duration, bool) {
        let spec = &self.spec;
        let span = (spec.max_ms - spec.min_ms) as f64;
        let mut ms = spec.min_ms as f64 + self.draw() * span;
        if self.draw() < spec.stall {
            ms = spec.stall_ms as f64;
        }
        let fail = self.draw() < spec.fail;
        (Duration::from_secs_f64(ms / 1000.0), fail)
    }
}

/// Counts the request as gone away unless it was answered first.
struct Pending {
    counters: Arc<Counters>,
    answered: bool,
}

impl Pending {
    fn answer(mut self, status: StatusCode, body: String) -> Response<Full<Bytes>> {
        self.answered = true;
        let counter = if status.is_success() {
            &self.counters.answered
        } else {
            &self.counters.refused
        };
        counter.fetch_add(1, Ordering::SeqCst);
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.answered {
            self.counters.went_away.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    state.counters.received.fetch_add(1, Ordering::SeqCst);
    let pending = Pending {
        counters: state.counters.clone(),
        answered: false,
    };
    let kind = state.kind;
    let id = req
        .uri()
        .path()
        .strip_prefix('/')
        .and_then(|path| path.strip_prefix(kind.name()))
        .and_then(|path| path.strip_prefix('/'))
        .and_then(serve::parse_id);
    let Some(id) = id.filter(|_| req.method() == Method::GET) else {
        let body = format!("try GET /{}/{{id}}\n", kind.name());
        return Ok(pending.answer(StatusCode::NOT_FOUND, body));
    };
    let (delay, fail) = state.plan();
    // If the client goes away now, hyper drops this future here: `pending` counts it.
    smol::Timer::after(delay).await;
    Ok(if kind == Kind::Profile && id >= UNKNOWN_USERS {
        pending.answer(StatusCode::NOT_FOUND, format!("no user {id}"))
    } else if fail {
        pending.answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{} failed", kind.name()),
        )
    } else {
        pending.answer(StatusCode::OK, kind.answer(id))
    })
}
