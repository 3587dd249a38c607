//! What the smoke run tries that a well-behaved HTTP client cannot: a client that never
//! finishes its headers, and this very program started again on a port already taken.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

/// Set in the environment of a copy of the program that a probe starts: it probes nothing
/// itself (no copy starts another).
const CHILD: &str = "HTTP_DASHBOARD_PROBE_CHILD";

/// Sends the start of a request without the blank line that ends its headers, then waits (at
/// most `wait`) for the server to close the connection: how long it took, `None` if it did
/// not.
pub async fn unfinished_headers(
    addr: SocketAddr,
    wait: Duration,
) -> std::io::Result<Option<Duration>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /dashboard/42 HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await?;
    let sent = Instant::now();
    let closed = async {
        let mut buf = [0u8; 512];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Some(sent.elapsed()),
                Ok(_) => {} // an answer to half a request: read on until the close
            }
        }
    };
    let waited = async {
        smol::Timer::after(wait).await;
        None
    };
    Ok(smol::future::or(closed, waited).await)
}

/// How a copy of this program, told `--port port`, ended.
pub struct Run {
    /// Its exit code (`None`: killed, or it did not end within the time given).
    pub code: Option<i32>,
    pub stderr: String,
    /// Whether it left its picture behind.
    pub left_svg: bool,
}

/// Whether this process is a probe's copy.
pub fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// Runs this program again with `--port port` (a short smoke run, in case the port is free
/// after all), killing it after `wait`.
pub async fn command_line_port(port: u16, wait: Duration) -> std::io::Result<Run> {
    let exe = std::env::current_exe()?;
    let svg: PathBuf =
        std::env::temp_dir().join(format!("http_dashboard-{}-port.svg", std::process::id()));
    let _ = std::fs::remove_file(&svg);
    let child = smol::process::Command::new(exe)
        .args(["--port", &port.to_string(), "--smoke", "--requests", "1"])
        .arg("--svg")
        .arg(&svg)
        .env(CHILD, "1")
        .stdin(smol::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let waited = async {
        smol::Timer::after(wait).await;
        Err(std::io::ErrorKind::TimedOut.into())
    };
    let output = smol::future::or(child, waited).await;
    let left_svg = svg.exists();
    let _ = std::fs::remove_file(&svg);
    let (code, stderr) = match output {
        Ok(output) => (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ),
        Err(err) if err.kind() == std::io::ErrorKind::TimedOut => {
            (None, format!("still running after {wait:?}: killed"))
        }
        Err(err) => return Err(err),
    };
    Ok(Run {
        code,
        stderr,
        left_svg,
    })
}
