//! The accept loop the backends and the dashboard share: each connection served over HTTP/1
//! on its own task, until `until` is done (then the listener closes: new connections are
//! refused).
//!
//! hyper drops a handler whose connection closes mid-request (the client went away) as long
//! as `half_close` stays off, its default: that is what the backends count.
//!
//! Each connection has a header read timeout (hyper's, on smol-hyper's timer): a client that
//! does not finish its request's headers in time, or keeps a connection idle that long
//! between requests, has its connection closed. Without a timer hyper has no timeout at all,
//! and such a client would hold its connection (and its task) forever.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use failfast::Context;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use smol::net::TcpListener;
use smol_hyper::rt::{FuturesIo, SmolTimer};

/// How long the backends give a client to send its headers (and keep an idle connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

pub fn spawn<F, Fut>(
    ex: &Arc<smol::Executor<'static>>,
    listener: TcpListener,
    until: Context,
    header_timeout: Duration,
    handle: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let spawner = ex.clone();
    ex.spawn(async move {
        while let Some(Ok((stream, _))) = until.run_until_cancelled(listener.accept()).await {
            let _ = stream.set_nodelay(true);
            let handle = handle.clone();
            spawner
                .spawn(async move {
                    // An error here is a client that went away mid-request, or that took
                    // longer than `header_timeout` to send its headers.
                    let _ = http1::Builder::new()
                        .timer(SmolTimer::new())
                        .header_read_timeout(header_timeout)
                        .serve_connection(FuturesIo::new(stream), service_fn(handle))
                        .await;
                })
                .detach();
        }
    })
    .detach();
}

/// An id in a path: plain decimal digits that fit a `u64` (no sign, no spaces).
pub fn parse_id(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `text`, cut to its first `max` characters (and an ellipsis) if it is longer: for echoing
/// what a client sent.
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}
