//! Resource bounds, checked by hand: a million aggregates one after another, then a hundred
//! thousand pending at once, watching resident memory, live heap bytes and the mock services'
//! call counters.
//!
//! ```text
//! cargo run --release --example soak                  # closure executors, timer::FuturesTimer
//! cargo run --release --all-features --example soak   # executor::Smol/Tokio, timer::AsyncIo/Tokio
//! cargo run --release --example soak -- --sequential 200000 --concurrent 20000 --executors smol
//! ```
//!
//! **Sequential**, on each executor: `--sequential` aggregates (default 1,000,000) one after
//! another under one long-lived cancellable context, cycling through every outcome: ok,
//! profile error, orders error, panic, deadline (virtual time), caller cancels, caller drops
//! the future, context already cancelled, and every 1000th a real 1 ms deadline. Every result
//! is checked, and memory is printed every tenth. It fails if RSS grows by more than
//! `--rss-bound-kib` (default 1024) or the live heap by more than `--heap-bound-kib` (default
//! 64) from the end of the first tenth (the warm-up) to the end, or if the mocks' counters show
//! a call that never ended.
//!
//! **Concurrent**, on each executor: `--rounds` (default 2) rounds of `--concurrent`
//! aggregates (default 100,000) whose services hang, all pending at once with both calls
//! running; then half are cancelled through their context and half are dropped. It fails
//! unless each cancelled one returned `Cancelled` and the mocks show every call cancelled
//! (started == cancelled, none finished, none in flight); and, from the second round on, if
//! the live heap after a round exceeds its level after the first by more than
//! `--leak-bytes-per-aggregate` (default 32) per aggregate, or RSS by more than
//! `--concurrent-rss-bound-kib` (default 32768, a coarse backstop: the allocator's arenas move
//! RSS by a few MiB from round to round). The first round leaves capacity behind (futures-timer's
//! heap, the smol executor's bookkeeping), kept for the next; and RSS does not fall back after
//! a round, because the allocator keeps the freed pages. For clean per-executor figures, run
//! one executor per process (`--parts concurrent --executors tokio`).
//!
//! `--executors` (default `inline,smol,tokio`) and `--parts` (default `sequential,concurrent`)
//! pick what runs; `--log off` turns off the null logger that otherwise formats every record.
//! Each option can also be set in the environment: `SOAK_SEQUENTIAL=200000`, and so on. RSS is
//! read from `/proc/self/status` (Linux); the live heap is counted by a wrapper around the
//! system allocator. The exit code is non-zero if any check fails.

mod concurrent;
mod measure;
mod sequential;

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use failfast::{Executor, Timer, executor, timer};

use crate::concurrent::Concurrent;
use crate::measure::{Checked, Memory, NULL_LOGGER};
use crate::sequential::Sequential;

const USAGE: &str = "usage: soak [--sequential N] [--concurrent N] [--rounds N] \
[--executors inline,smol,tokio] [--parts sequential,concurrent] [--rss-bound-kib K] \
[--heap-bound-kib K] [--leak-bytes-per-aggregate B] [--concurrent-rss-bound-kib K] \
[--log on|off]   (or SOAK_SEQUENTIAL=N, ...)";

/// The mocks' panic message, kept off stderr by the panic hook.
const PLANNED_PANIC: &str = "soak: planned panic";
/// How long any wait may take before the soak calls it a hang.
const SETTLE: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let options = match Options::parse() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    quiet_planned_panics();
    if options.log && log::set_logger(&NULL_LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
    println!("soak: {options:?}");
    println!("soak: adapters: {}", ADAPTERS.join("; "));
    println!("soak: at start {}", Memory::now());

    let mut failures = Vec::new();
    for &part in &options.parts {
        for &runtime in &options.executors {
            let result = match part {
                Part::Sequential => run_on(runtime, Sequential(&options)),
                Part::Concurrent => run_on(runtime, Concurrent(&options)),
            };
            if let Err(mut errors) = result {
                failures.append(&mut errors);
            }
        }
    }

    println!(
        "soak: at end {}; {} log records formatted",
        Memory::now(),
        NULL_LOGGER.records()
    );
    if failures.is_empty() {
        println!("soak: OK");
        ExitCode::SUCCESS
    } else {
        println!("soak: FAILED");
        for failure in &failures {
            println!("  {failure}");
        }
        ExitCode::FAILURE
    }
}

/// Keeps the mocks' planned panics off stderr; every other panic is reported as usual.
fn quiet_planned_panics() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied());
        if message != Some(PLANNED_PANIC) {
            report(info);
        }
    }));
}

// ---------------------------------------------------------------------------------------------
// Runtimes: the same job on each executor, with that runtime's own timer.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runtime {
    Inline,
    Smol,
    Tokio,
}

impl Runtime {
    fn name(self) -> &'static str {
        match self {
            Runtime::Inline => "inline",
            Runtime::Smol => "smol",
            Runtime::Tokio => "tokio",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Sequential,
    Concurrent,
}

/// A soak job, generic over the executor and the timer it runs with.
trait Job {
    /// Which part of the soak this is, for the log.
    const PART: &'static str;

    fn run<E: Executor + Clone, T: Timer>(
        self,
        name: &str,
        ex: E,
        timer: T,
    ) -> impl Future<Output = Checked>;
}

/// Runs `job` on `runtime`, then checks that no task was left on the runtime's executor.
fn run_on<J: Job>(runtime: Runtime, job: J) -> Checked {
    let tag = format!("[{} {}]", J::PART, runtime.name());
    match runtime {
        Runtime::Inline => {
            futures::executor::block_on(job.run("inline", executor::Inline, timer::FuturesTimer))
        }
        Runtime::Smol => {
            let threads = SmolThreads::new(2);
            let ex = smol_executor(&threads.executor);
            let checked = smol::block_on(job.run("smol", ex, smol_timer()));
            let tasks = || usize::from(!threads.executor.is_empty());
            both(
                checked,
                no_task_left(
                    &tag,
                    "tasks on the smol executor, 0 when it is empty",
                    tasks,
                ),
            )
        }
        Runtime::Tokio => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|err| vec![format!("cannot start tokio: {err}")])?;
            let handle = runtime.handle().clone();
            let (ex, timer) = (tokio_executor(&handle), tokio_timer(&handle));
            let checked = runtime.block_on(job.run("tokio", ex, timer));
            let tasks = || runtime.metrics().num_alive_tasks();
            both(checked, no_task_left(&tag, "tokio's alive tasks", tasks))
        }
    }
}

/// Waits (bounded) until `tasks()` is zero: every aborted call's task has ended.
fn no_task_left(tag: &str, what: &str, tasks: impl Fn() -> usize) -> Checked {
    let start = std::time::Instant::now();
    while tasks() != 0 && start.elapsed() < SETTLE {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut checks = measure::Checks::new(tag);
    checks.expect(
        tasks() == 0,
        format!("no task left on the executor ({what}: {})", tasks()),
    );
    checks.done()
}

fn both(a: Checked, b: Checked) -> Checked {
    match (a, b) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(mut a), Err(b)) => {
            a.extend(b);
            Err(a)
        }
        (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
    }
}

/// Which executor and timer each runtime gets: the adapters when their feature is on.
const ADAPTERS: [&str; 3] = [
    "inline: executor::Inline + timer::FuturesTimer",
    #[cfg(feature = "smol")]
    "smol: executor::Smol + timer::AsyncIo",
    #[cfg(not(feature = "smol"))]
    "smol: a spawning closure + timer::FuturesTimer (feature smol: executor::Smol + timer::AsyncIo)",
    #[cfg(feature = "tokio")]
    "tokio: executor::Tokio + timer::Tokio",
    #[cfg(not(feature = "tokio"))]
    "tokio: a spawning closure + timer::FuturesTimer (feature tokio: executor::Tokio + timer::Tokio)",
];

#[cfg(feature = "smol")]
fn smol_executor(ex: &Arc<smol::Executor<'static>>) -> executor::Smol {
    executor::Smol::new(ex.clone())
}

#[cfg(not(feature = "smol"))]
fn smol_executor(ex: &Arc<smol::Executor<'static>>) -> impl Executor + Clone {
    let ex = ex.clone();
    move |task: futures::future::BoxFuture<'static, ()>| ex.spawn(task).detach()
}

#[cfg(feature = "smol")]
fn smol_timer() -> timer::AsyncIo {
    timer::AsyncIo
}

#[cfg(not(feature = "smol"))]
fn smol_timer() -> timer::FuturesTimer {
    timer::FuturesTimer
}

#[cfg(feature = "tokio")]
fn tokio_executor(handle: &tokio::runtime::Handle) -> executor::Tokio {
    executor::Tokio::new(handle.clone())
}

#[cfg(not(feature = "tokio"))]
fn tokio_executor(handle: &tokio::runtime::Handle) -> impl Executor + Clone {
    let handle = handle.clone();
    move |task: futures::future::BoxFuture<'static, ()>| drop(handle.spawn(task))
}

#[cfg(feature = "tokio")]
fn tokio_timer(handle: &tokio::runtime::Handle) -> timer::Tokio {
    timer::Tokio::new(handle.clone())
}

#[cfg(not(feature = "tokio"))]
fn tokio_timer(_: &tokio::runtime::Handle) -> timer::FuturesTimer {
    timer::FuturesTimer
}

/// A smol executor run by `n` threads until dropped.
struct SmolThreads {
    executor: Arc<smol::Executor<'static>>,
    stop: Option<smol::channel::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl SmolThreads {
    fn new(n: usize) -> SmolThreads {
        let executor = Arc::new(smol::Executor::new());
        let (stop, stopped) = smol::channel::bounded::<()>(1);
        let threads = (0..n)
            .map(|_| {
                let (executor, stopped) = (executor.clone(), stopped.clone());
                std::thread::spawn(move || {
                    let _ = smol::block_on(executor.run(stopped.recv()));
                })
            })
            .collect();
        SmolThreads {
            executor,
            stop: Some(stop),
            threads,
        }
    }
}

impl Drop for SmolThreads {
    fn drop(&mut self) {
        drop(self.stop.take()); // closes the channel: every `recv` ends
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Options.

#[derive(Debug)]
struct Options {
    sequential: usize,
    concurrent: usize,
    rounds: usize,
    executors: Vec<Runtime>,
    parts: Vec<Part>,
    rss_bound_kib: u64,
    heap_bound_kib: u64,
    leak_bytes_per_aggregate: u64,
    concurrent_rss_bound_kib: u64,
    log: bool,
}

const NAMES: [&str; 10] = [
    "sequential",
    "concurrent",
    "rounds",
    "executors",
    "parts",
    "rss-bound-kib",
    "heap-bound-kib",
    "leak-bytes-per-aggregate",
    "concurrent-rss-bound-kib",
    "log",
];

impl Options {
    /// Defaults, then `SOAK_*` variables, then arguments.
    fn parse() -> Result<Options, String> {
        let mut settings = Vec::new();
        for name in NAMES {
            let var = format!("SOAK_{}", name.to_uppercase().replace('-', "_"));
            if let Ok(value) = std::env::var(&var) {
                settings.push((name.to_owned(), value));
            }
        }
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let Some(arg) = arg.strip_prefix("--").filter(|a| *a != "help") else {
                return Err(format!("unexpected argument {arg:?}"));
            };
            let setting = match arg.split_once('=') {
                Some((name, value)) => (name.to_owned(), value.to_owned()),
                None => (
                    arg.to_owned(),
                    args.next().ok_or(format!("--{arg} needs a value"))?,
                ),
            };
            settings.push(setting);
        }

        let mut options = Options {
            sequential: 1_000_000,
            concurrent: 100_000,
            rounds: 2,
            executors: vec![Runtime::Inline, Runtime::Smol, Runtime::Tokio],
            parts: vec![Part::Sequential, Part::Concurrent],
            rss_bound_kib: 1024,
            heap_bound_kib: 64,
            leak_bytes_per_aggregate: 32,
            concurrent_rss_bound_kib: 32 * 1024,
            log: true,
        };
        for (name, value) in settings {
            let number = || -> Result<u64, String> {
                value
                    .replace('_', "")
                    .parse()
                    .map_err(|_| format!("--{name}: not a number: {value:?}"))
            };
            match name.as_str() {
                "sequential" => options.sequential = number()? as usize,
                "concurrent" => options.concurrent = number()? as usize,
                "rounds" => options.rounds = (number()? as usize).max(1),
                "rss-bound-kib" => options.rss_bound_kib = number()?,
                "heap-bound-kib" => options.heap_bound_kib = number()?,
                "leak-bytes-per-aggregate" => options.leak_bytes_per_aggregate = number()?,
                "concurrent-rss-bound-kib" => options.concurrent_rss_bound_kib = number()?,
                "executors" => options.executors = list(&value, runtime)?,
                "parts" => options.parts = list(&value, part)?,
                "log" => {
                    options.log = match value.as_str() {
                        "on" | "1" | "true" => true,
                        "off" | "0" | "false" => false,
                        _ => return Err(format!("--log: on or off, not {value:?}")),
                    }
                }
                _ => return Err(format!("unknown option --{name}")),
            }
        }
        Ok(options)
    }
}

fn list<T>(value: &str, item: fn(&str) -> Option<T>) -> Result<Vec<T>, String> {
    value
        .split(',')
        .map(|name| item(name.trim()).ok_or(format!("unknown name {name:?}")))
        .collect()
}

fn runtime(name: &str) -> Option<Runtime> {
    match name {
        "inline" => Some(Runtime::Inline),
        "smol" => Some(Runtime::Smol),
        "tokio" => Some(Runtime::Tokio),
        _ => None,
    }
}

fn part(name: &str) -> Option<Part> {
    match name {
        "sequential" => Some(Part::Sequential),
        "concurrent" => Some(Part::Concurrent),
        _ => None,
    }
}
