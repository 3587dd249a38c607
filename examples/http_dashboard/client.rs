//! A small HTTP/1 client: hyper's connection API over smol's TCP, with a pool of idle
//! connections. A connection goes back to the pool only after a whole answer was read. A
//! request dropped midway (a call that failfast cancelled) drops its connection with it: the
//! task driving the connection is cancelled and the socket closes, which is how the backend
//! learns that its client went away.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use failfast::{BoxError, Context, ContextError};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, StatusCode};
use smol::net::TcpStream;
use smol_hyper::rt::FuturesIo;

/// An answer other than 200 OK.
#[derive(Debug)]
pub struct Status {
    pub code: StatusCode,
    pub body: String,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.code, self.body.trim_end())
    }
}

impl std::error::Error for Status {}

/// No connection could be made: the server is down, or not there.
#[derive(Debug)]
pub struct Unreachable {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot connect to {}", self.addr)
    }
}

impl std::error::Error for Unreachable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// One connection: its sender, and the task that drives it (cancelled when dropped).
struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    _driver: smol::Task<()>,
}

/// A pool of connections to one server.
pub struct Pool {
    addr: SocketAddr,
    ex: Arc<smol::Executor<'static>>,
    idle: Mutex<Vec<Conn>>,
    /// Connections opened.
    pub dials: AtomicU64,
}

impl Pool {
    pub fn new(addr: SocketAddr, ex: Arc<smol::Executor<'static>>) -> Pool {
        Pool {
            addr,
            ex,
            idle: Mutex::new(Vec::new()),
            dials: AtomicU64::new(0),
        }
    }

    /// GET `path` under `ctx`: the body of a 200, an error otherwise. Ends with the context's
    /// error as soon as `ctx` is done, dropping the request (and closing its connection).
    pub async fn get(&self, ctx: &Context, path: &str) -> Result<String, BoxError> {
        match ctx.run_until_cancelled(self.fetch(path)).await {
            Some(result) => result,
            None => Err(Box::new(ctx.err().unwrap_or(ContextError::Cancelled))),
        }
    }

    /// GET `path`: the status and the body, whatever the status.
    pub async fn fetch_any(&self, path: &str) -> Result<(StatusCode, String), BoxError> {
        let mut conn = self.checkout().await?;
        conn.sender.ready().await?;
        let request = Request::get(path)
            .header(hyper::header::HOST, self.addr.to_string())
            .body(Empty::<Bytes>::new())?;
        let response = conn.sender.send_request(request).await?;
        let code = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        self.idle.lock().unwrap().push(conn); // a whole answer was read: reusable
        Ok((code, String::from_utf8_lossy(&body).into_owned()))
    }

    async fn fetch(&self, path: &str) -> Result<String, BoxError> {
        match self.fetch_any(path).await? {
            (StatusCode::OK, body) => Ok(body),
            (code, body) => Err(Box::new(Status { code, body })),
        }
    }

    async fn checkout(&self) -> Result<Conn, BoxError> {
        loop {
            let idle = self.idle.lock().unwrap().pop();
            match idle {
                Some(conn) if !conn.sender.is_closed() => return Ok(conn),
                Some(_) => continue, // closed by the server: dropped
                None => return self.dial().await,
            }
        }
    }

    async fn dial(&self) -> Result<Conn, BoxError> {
        self.dials.fetch_add(1, Ordering::Relaxed);
        let addr = self.addr;
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| Unreachable { addr, source })?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(FuturesIo::new(stream)).await?;
        let driver = self.ex.spawn(async move {
            let _ = conn.await; // ends when either side closes
        });
        Ok(Conn {
            sender,
            _driver: driver,
        })
    }
}
