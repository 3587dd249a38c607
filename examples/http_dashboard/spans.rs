//! `--trace`: failfast's spans printed as they close (for the first requests only), and
//! counted (for the whole run), so that a smoke run can check that they were there.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Subscriber, subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Whether spans are printed right now (only for the first steps: a load run would print
/// thousands of them).
pub static PRINTING: AtomicBool = AtomicBool::new(false);

/// failfast's spans that closed, by name, and how many of those had recorded both their
/// `outcome` and their `elapsed_ms`.
#[derive(Debug, Default)]
pub struct Closed {
    pub group: [AtomicU64; 2],
    pub call: [AtomicU64; 2],
    pub attempt: [AtomicU64; 2],
}

pub static CLOSED: Closed = Closed {
    group: [AtomicU64::new(0), AtomicU64::new(0)],
    call: [AtomicU64::new(0), AtomicU64::new(0)],
    attempt: [AtomicU64::new(0), AtomicU64::new(0)],
};

impl Closed {
    /// Closed, and closed with `outcome` and `elapsed_ms`, of the spans named `name`.
    pub fn of(&self, name: &str) -> (u64, u64) {
        let counts = match name {
            "group" => &self.group,
            "call" => &self.call,
            "attempt" => &self.attempt,
            _ => return (0, 0),
        };
        (
            counts[0].load(Ordering::SeqCst),
            counts[1].load(Ordering::SeqCst),
        )
    }
}

/// Prints spans as they close while [`PRINTING`] is on (failfast's among them when built with
/// `--features tracing`), and counts failfast's in [`CLOSED`].
pub fn install() {
    use tracing_subscriber::filter;
    use tracing_subscriber::fmt::format::FmtSpan;

    if !cfg!(feature = "tracing") {
        eprintln!(
            "note: failfast's own spans need `--features tracing`; printing the example's only"
        );
    }
    let printer = tracing_subscriber::fmt::layer()
        .with_span_events(FmtSpan::CLOSE)
        .with_filter(filter::dynamic_filter_fn(|_, _| {
            PRINTING.load(Ordering::Relaxed)
        }));
    let counter = Counter.with_filter(filter::filter_fn(|meta| meta.target() == "failfast"));
    let subscriber = tracing_subscriber::registry().with(printer).with(counter);
    if subscriber::set_global_default(subscriber).is_err() {
        eprintln!("note: a tracing subscriber was already installed");
    }
}

/// Counts closed spans by name, noting which fields they recorded.
struct Counter;

/// The fields of a span recorded so far that the count cares about.
#[derive(Default)]
struct Recorded {
    outcome: bool,
    elapsed_ms: bool,
}

impl Visit for Recorded {
    fn record_debug(&mut self, field: &Field, _: &dyn std::fmt::Debug) {
        match field.name() {
            "outcome" => self.outcome = true,
            "elapsed_ms" => self.elapsed_ms = true,
            _ => {}
        }
    }
}

impl<S> Layer<S> for Counter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut recorded = Recorded::default();
        attrs.record(&mut recorded);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(recorded);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(recorded) = span.extensions_mut().get_mut::<Recorded>() {
                values.record(recorded);
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let counts = match span.name() {
            "group" => &CLOSED.group,
            "call" => &CLOSED.call,
            "attempt" => &CLOSED.attempt,
            _ => return,
        };
        counts[0].fetch_add(1, Ordering::SeqCst);
        let extensions = span.extensions();
        if let Some(Recorded {
            outcome: true,
            elapsed_ms: true,
        }) = extensions.get::<Recorded>()
        {
            counts[1].fetch_add(1, Ordering::SeqCst);
        }
    }
}
