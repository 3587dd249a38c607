//! Shared test harness: run one async test body on every executor, and drive futures in
//! virtual time with a real-time guard against hangs.
#![allow(dead_code, unused_macros, unused_imports)]

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::FutureExt;

/// How long any wait in a test may take before it is declared a hang. Generous: the machines
/// that run these tests are shared and noisy.
pub const HANG: Duration = Duration::from_secs(10);

/// Defines one `#[test]` per executor (inline, and async-std / smol / tokio when their
/// features are on), each running the same async body with `$ex` bound to that executor.
///
/// ```ignore
/// on_every_executor!(async fn happy_path(ex) { ... });
/// ```
macro_rules! on_every_executor {
    ($(#[$meta:meta])* async fn $name:ident($ex:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            $(#[$meta])*
            fn inline() {
                let $ex = failfast::executor::Inline;
                futures::executor::block_on(async move $body)
            }

            #[cfg(feature = "async-std")]
            #[test]
            $(#[$meta])*
            fn async_std() {
                let $ex = failfast::executor::AsyncStd;
                async_std::task::block_on(async move $body)
            }

            #[cfg(feature = "smol")]
            #[test]
            $(#[$meta])*
            fn smol() {
                let runtime = $crate::common::SmolRuntime::new();
                let $ex = runtime.executor();
                smol::block_on(async move $body)
            }

            #[cfg(feature = "tokio")]
            #[test]
            $(#[$meta])*
            fn tokio() {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                let $ex = failfast::executor::Tokio::new(runtime.handle().clone());
                runtime.block_on(async move $body)
            }
        }
    };
}
pub(crate) use on_every_executor;

/// A smol executor run by two threads until dropped.
#[cfg(feature = "smol")]
pub struct SmolRuntime {
    executor: std::sync::Arc<smol::Executor<'static>>,
    stop: Option<smol::channel::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

#[cfg(feature = "smol")]
impl SmolRuntime {
    pub fn new() -> SmolRuntime {
        let executor = std::sync::Arc::new(smol::Executor::new());
        let (stop, stopped) = smol::channel::bounded::<()>(1);
        let threads = (0..2)
            .map(|_| {
                let (executor, stopped) = (executor.clone(), stopped.clone());
                std::thread::spawn(move || {
                    let _ = smol::block_on(executor.run(stopped.recv()));
                })
            })
            .collect();
        SmolRuntime {
            executor,
            stop: Some(stop),
            threads,
        }
    }

    pub fn executor(&self) -> failfast::executor::Smol {
        failfast::executor::Smol::new(self.executor.clone())
    }
}

#[cfg(feature = "smol")]
impl Drop for SmolRuntime {
    fn drop(&mut self) {
        drop(self.stop.take()); // closes the channel: every `recv` ends
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Polls `future` until it completes, panicking if that takes longer than [`HANG`] of real time.
pub async fn finish<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let start = Instant::now();
    loop {
        if let Some(output) = (&mut future).now_or_never() {
            return output;
        }
        assert!(
            start.elapsed() < HANG,
            "future did not complete within {HANG:?}"
        );
        nap().await;
    }
}

/// Polls `future` until `condition` holds, and returns `None`; or returns `Some(output)` if the
/// future completes first. Panics after [`HANG`] of real time.
pub async fn drive_until<F: Future>(
    mut future: Pin<&mut F>,
    condition: impl Fn() -> bool,
) -> Option<F::Output> {
    let start = Instant::now();
    loop {
        if let Some(output) = future.as_mut().now_or_never() {
            return Some(output);
        }
        if condition() {
            return None;
        }
        assert!(
            start.elapsed() < HANG,
            "condition not reached within {HANG:?}"
        );
        nap().await;
    }
}

/// Keeps polling `future` for a short real-time while, and returns its output if it completes.
pub async fn drive_for<F: Future>(mut future: Pin<&mut F>, window: Duration) -> Option<F::Output> {
    let start = Instant::now();
    loop {
        if let Some(output) = future.as_mut().now_or_never() {
            return Some(output);
        }
        if start.elapsed() >= window {
            return None;
        }
        nap().await;
    }
}

/// Waits (in real time, up to [`HANG`]) until `condition` holds.
pub async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < HANG, "not true within {HANG:?}: {what}");
        nap().await;
    }
}

/// `n` milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A short real-time pause that works under any executor.
pub async fn nap() {
    futures_timer::Delay::new(Duration::from_millis(1)).await;
}

/// A group call to `mock`, as an Order service: the mock's counters prove what ran, and its
/// delay, failure, panic or hang decide how the call ends.
pub fn order<T: failfast::Timer>(
    mock: &failfast::mock::Mock<u32, T>,
) -> impl FnOnce(
    failfast::Context,
) -> futures::future::BoxFuture<'static, Result<u32, failfast::BoxError>>
+ Send
+ 'static {
    use failfast::OrderService;
    let mock = mock.clone();
    move |ctx| Box::pin(async move { mock.order_count(ctx, 0).await })
}

/// A log record captured by [`Capture`]: level, message and key-values as `key=value`.
pub type Line = (log::Level, String, Vec<String>);

/// A logger that keeps the crate's records, for tests that read them.
#[derive(Clone, Default)]
pub struct Capture(std::sync::Arc<std::sync::Mutex<Vec<Line>>>);

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target() == "failfast"
    }

    fn log(&self, record: &log::Record<'_>) {
        struct Collect(Vec<String>);
        impl<'kvs> log::kv::VisitSource<'kvs> for Collect {
            fn visit_pair(
                &mut self,
                key: log::kv::Key<'kvs>,
                value: log::kv::Value<'kvs>,
            ) -> Result<(), log::kv::Error> {
                self.0.push(format!("{key}={value}"));
                Ok(())
            }
        }
        let mut kvs = Collect(Vec::new());
        record.key_values().visit(&mut kvs).unwrap();
        self.0
            .lock()
            .unwrap()
            .push((record.level(), record.args().to_string(), kvs.0));
    }

    fn flush(&self) {}
}

impl Capture {
    /// Every record so far; turns logging on (`log::set_max_level`) first.
    pub fn new() -> Capture {
        log::set_max_level(log::LevelFilter::Trace);
        Capture::default()
    }

    pub fn lines(&self) -> Vec<Line> {
        self.0.lock().unwrap().clone()
    }

    /// The records whose message contains `text`.
    pub fn with_message(&self, text: &str) -> Vec<Line> {
        self.lines()
            .into_iter()
            .filter(|(_, message, _)| message.contains(text))
            .collect()
    }
}

/// A builder on the executor `ex` and the virtual clock `clock`: where most virtual-time tests
/// start.
pub fn on_clock<E: failfast::Executor>(
    ex: E,
    clock: &failfast::timer::Manual,
) -> failfast::FailFastBuilder<E, failfast::timer::Manual> {
    failfast::FailFast::builder()
        .executor(ex)
        .timer(clock.clone())
}
