//! What the soak measures and how it judges: resident memory, live heap bytes, bounded waits,
//! and the list of failed checks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The system allocator, counting the bytes currently allocated: unlike RSS, this is exact and
/// does not depend on what the allocator keeps cached, so it tells a leak from a cache.
pub struct CountingAlloc {
    live: AtomicUsize,
}

#[global_allocator]
static HEAP: CountingAlloc = CountingAlloc {
    live: AtomicUsize::new(0),
};

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, and only
// adds bookkeeping on an atomic counter.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            self.live.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc_zeroed`'s contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            self.live.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) };
        self.live.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            self.live.fetch_add(new_size, Ordering::Relaxed);
            self.live.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        new
    }
}

/// The process's memory at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Resident set size in KiB (`VmRSS`), if the platform tells.
    pub rss_kib: Option<u64>,
    /// Bytes allocated through the global allocator and not yet freed.
    pub heap: u64,
}

impl Memory {
    pub fn now() -> Memory {
        Memory {
            rss_kib: rss_kib(),
            heap: HEAP.live.load(Ordering::Relaxed) as u64,
        }
    }

    /// RSS growth since `earlier`, in KiB.
    pub fn rss_growth(&self, earlier: &Memory) -> Option<i64> {
        Some(self.rss_kib? as i64 - earlier.rss_kib? as i64)
    }

    /// Live heap growth since `earlier`, in bytes.
    pub fn heap_growth(&self, earlier: &Memory) -> i64 {
        self.heap as i64 - earlier.heap as i64
    }

    /// "RSS +12 KiB, heap +0 B" since `earlier`.
    pub fn since(&self, earlier: &Memory) -> String {
        let rss = self
            .rss_growth(earlier)
            .map_or("n/a".into(), |k| format!("{k:+} KiB"));
        format!(
            "RSS {rss}, heap {}",
            signed_bytes(self.heap_growth(earlier))
        )
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rss_kib {
            Some(k) => write!(f, "RSS {}", bytes(k * 1024))?,
            None => f.write_str("RSS n/a")?,
        }
        write!(f, " (heap {})", bytes(self.heap))
    }
}

/// This process's resident set size in KiB, read from `/proc/self/status` (Linux).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

pub fn bytes(n: u64) -> String {
    match n {
        n if n >= 10 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1 << 20)),
        n if n >= 10 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

pub fn signed_bytes(n: i64) -> String {
    let sign = if n < 0 { "-" } else { "+" };
    format!("{sign}{}", bytes(n.unsigned_abs()))
}

/// Waits (in real time, up to `limit`) until `done` holds; returns how long it took.
pub async fn settle(limit: Duration, done: impl Fn() -> bool) -> Result<Duration, String> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return Err(format!("not settled after {limit:?}"));
        }
        nap().await;
    }
    Ok(start.elapsed())
}

/// Spins (up to `limit`) until `done` holds, for events on an executor's threads that are
/// expected within microseconds.
pub fn spin(limit: Duration, done: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return false;
        }
        std::thread::yield_now();
    }
    true
}

/// A short real-time pause that works under any executor.
pub async fn nap() {
    futures_timer::Delay::new(Duration::from_millis(1)).await;
}

/// The outcome of one job: the checks that failed, if any.
pub type Checked = Result<(), Vec<String>>;

/// Prints each check as it is made and collects the failures of one job.
pub struct Checks {
    tag: String,
    failures: Vec<String>,
}

impl Checks {
    pub fn new(tag: &str) -> Checks {
        Checks {
            tag: tag.to_owned(),
            failures: Vec::new(),
        }
    }

    pub fn expect(&mut self, ok: bool, what: impl Into<String>) {
        let what = what.into();
        println!("{} {} {what}", self.tag, if ok { "ok:" } else { "FAIL:" });
        if !ok {
            self.failures.push(format!("{} {what}", self.tag));
        }
    }

    pub fn done(self) -> Checked {
        if self.failures.is_empty() {
            Ok(())
        } else {
            Err(self.failures)
        }
    }
}

/// A logger that formats every record, message and key-values, and throws it away, so that
/// the library's logging runs as it does in production.
pub struct NullLogger {
    records: AtomicU64,
}

pub static NULL_LOGGER: NullLogger = NullLogger {
    records: AtomicU64::new(0),
};

impl NullLogger {
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }
}

impl log::Log for NullLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        use std::fmt::Write as _;

        struct Discard;
        impl fmt::Write for Discard {
            fn write_str(&mut self, _: &str) -> fmt::Result {
                Ok(())
            }
        }
        impl<'kvs> log::kv::VisitSource<'kvs> for Discard {
            fn visit_pair(
                &mut self,
                key: log::kv::Key<'kvs>,
                value: log::kv::Value<'kvs>,
            ) -> Result<(), log::kv::Error> {
                let _ = write!(self, " {key}={value}");
                Ok(())
            }
        }
        let _ = write!(Discard, "{} {}", record.level(), record.args());
        let _ = record.key_values().visit(&mut Discard);
        self.records.fetch_add(1, Ordering::Relaxed);
    }

    fn flush(&self) {}
}
