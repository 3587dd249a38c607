//! The accept loop the backends and the dashboard share: each connection served over HTTP/1
//! on its own task, until `until` is done (then the listener closes: new connections are
//! refused).
//!
//! hyper drops a handler whose connection closes mid-request (the client went away) as long
//! as `half_close` stays off, its default: that is what the backends count.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use failfast::Context;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use smol::net::TcpListener;
use smol_hyper::rt::FuturesIo;

pub fn spawn<F, Fut>(
    ex: &Arc<smol::Executor<'static>>,
    listener: TcpListener,
    until: Context,
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
                    // An error here is a client that went away mid-request.
                    let _ = http1::Builder::new()
                        .serve_connection(FuturesIo::new(stream), service_fn(handle))
                        .await;
                })
                .detach();
        }
    })
    .detach();
}
