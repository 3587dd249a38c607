//! The `tracing` feature: a span per group, per call and per attempt, nested as a tracing
//! user expects (the caller's span, then the group, then its calls, then the service's own
//! spans), with how each ended, on every executor.
#![cfg(feature = "tracing")]

mod common;

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use common::{finish, ms, on_clock, on_every_executor};
use failfast::timer::Manual;
use failfast::{BoxError, Context, FailFast, Hedge, Retry, Timer};
use futures::future::try_join3;
use tracing::Instrument;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// One span as the capture saw it. `serial` is unique, unlike tracing's ids, which are reused.
#[derive(Debug, Clone)]
struct Seen {
    serial: u64,
    name: &'static str,
    parent: Option<u64>,
    fields: BTreeMap<String, String>,
    /// How many times `outcome` was recorded: exactly once for a span that ended.
    outcomes: usize,
    closed: bool,
}

impl Seen {
    fn field(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }
}

struct Serial(u64);

/// Every span of every test in this binary: tests tell theirs apart by group id.
fn seen() -> &'static Mutex<Vec<Seen>> {
    static SEEN: OnceLock<Mutex<Vec<Seen>>> = OnceLock::new();
    SEEN.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(Capture);
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        Mutex::default()
    })
}

struct Capture;

struct Fields<'a>(&'a mut Seen);

impl Fields<'_> {
    fn keep(&mut self, field: &Field, value: String) {
        if field.name() == "outcome" {
            self.0.outcomes += 1;
        }
        self.0.fields.insert(field.name().into(), value);
    }
}

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.keep(field, format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.keep(field, value.into());
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let serial = NEXT.fetch_add(1, Ordering::Relaxed);
        let span = ctx.span(id).expect("a new span");
        let parent = span
            .parent()
            .and_then(|parent| parent.extensions().get::<Serial>().map(|s| s.0));
        span.extensions_mut().insert(Serial(serial));
        let mut new = Seen {
            serial,
            name: attrs.metadata().name(),
            parent,
            fields: BTreeMap::new(),
            outcomes: 0,
            closed: false,
        };
        attrs.record(&mut Fields(&mut new));
        seen().lock().unwrap().push(new);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        let Some(serial) = ctx
            .span(id)
            .and_then(|span| span.extensions().get::<Serial>().map(|s| s.0))
        else {
            return;
        };
        let mut seen = seen().lock().unwrap();
        if let Some(span) = seen.iter_mut().find(|span| span.serial == serial) {
            values.record(&mut Fields(span));
        }
    }

    fn on_close(&self, id: Id, ctx: LayerContext<'_, S>) {
        let Some(serial) = ctx
            .span(&id)
            .and_then(|span| span.extensions().get::<Serial>().map(|s| s.0))
        else {
            return;
        };
        let mut seen = seen().lock().unwrap();
        if let Some(span) = seen.iter_mut().find(|span| span.serial == serial) {
            span.closed = true;
        }
    }
}

/// The spans of group `id`: the group's, then every span below it.
fn tree(id: u64) -> (Seen, Vec<Seen>) {
    let seen = seen().lock().unwrap();
    let group = seen
        .iter()
        .find(|span| span.name == "group" && span.field("group_id") == Some(&id.to_string()))
        .cloned()
        .expect("the group's span");
    let mut below: Vec<Seen> = Vec::new();
    let mut parents = vec![group.serial];
    while let Some(parent) = parents.pop() {
        for span in seen.iter().filter(|span| span.parent == Some(parent)) {
            parents.push(span.serial);
            below.push(span.clone());
        }
    }
    below.sort_by_key(|span| span.serial);
    (group, below)
}

fn child<'a>(spans: &'a [Seen], parent: &Seen, name: &str, key: &str, value: &str) -> &'a Seen {
    spans
        .iter()
        .find(|span| {
            span.parent == Some(parent.serial)
                && span.name == name
                && span.field(key) == Some(value)
        })
        .unwrap_or_else(|| panic!("no {name} span with {key}={value} under {parent:?}: {spans:#?}"))
}

/// Waits until every span below the group is closed (spawned calls close theirs on their own
/// tasks, a moment after `run` returns), then checks that each of failfast's recorded its
/// outcome exactly once.
async fn all_closed(id: u64) -> (Seen, Vec<Seen>) {
    common::eventually("every span closed", || {
        let (group, below) = tree(id);
        group.closed && below.iter().all(|span| span.closed)
    })
    .await;
    let (group, below) = tree(id);
    for span in std::iter::once(&group).chain(&below) {
        if ["group", "call", "attempt"].contains(&span.name) {
            assert_eq!(span.outcomes, 1, "one outcome: {span:#?}");
        }
    }
    (group, below)
}

/// A service whose first attempt sleeps `first` of virtual time and every later one `then`,
/// answering its attempt's number.
fn slow_first(
    clock: &Manual,
    first: u64,
    then: u64,
) -> impl FnMut(Context) -> futures::future::BoxFuture<'static, Result<u64, BoxError>> + Send + 'static
{
    let clock = clock.clone();
    let made = std::sync::Arc::new(AtomicU64::new(0));
    move |_ctx: Context| {
        let n = made.fetch_add(1, Ordering::SeqCst) + 1;
        let clock = clock.clone();
        Box::pin(async move {
            clock.sleep(ms(if n == 1 { first } else { then })).await;
            Ok(n)
        })
    }
}

/// Drives `run` through `steps`: each time `sleepers` are asleep on `clock`, advances it by
/// `by` milliseconds.
async fn schedule<F: std::future::Future>(
    mut run: std::pin::Pin<&mut F>,
    clock: &Manual,
    steps: &[(usize, u64)],
) {
    for &(sleepers, by) in steps {
        let asleep = || clock.sleepers() == sleepers;
        assert!(common::drive_until(run.as_mut(), asleep).await.is_none());
        clock.advance(ms(by));
    }
}

on_every_executor!(
    async fn a_group_and_its_calls_are_spans_that_say_how_each_ended(ex) {
        seen();
        let ff = FailFast::builder().executor(ex).build().unwrap();
        let request = tracing::info_span!("request");
        let group = request.in_scope(|| ff.group(&Context::background()));
        let run = group.run(try_join3(
            group.call("profile", |_ctx| async {
                // The service's own span nests under its call's.
                async { Ok::<_, BoxError>("Alice") }
                    .instrument(tracing::info_span!("db"))
                    .await
            }),
            group.call("orders", |_ctx| async {
                futures_timer::Delay::new(ms(20)).await;
                Err::<u32, BoxError>("orders down".into())
            }),
            group.call("recs", |_ctx| async {
                futures_timer::Delay::new(Duration::from_secs(10)).await;
                Ok::<_, BoxError>(())
            }),
        ));
        let err = run.instrument(request.clone()).await.unwrap_err();
        assert_eq!(err.service(), Some("orders"));

        let (group_span, below) = all_closed(group.id()).await;
        let parent = seen()
            .lock()
            .unwrap()
            .iter()
            .find(|span| span.serial == group_span.parent.unwrap_or(0))
            .map(|span| span.name);
        assert_eq!(parent, Some("request"), "the group is a child of the caller's span");
        assert_eq!(group_span.field("outcome"), Some("failed"));
        assert!(group_span.field("error").unwrap().contains("orders down"));
        assert!(group_span.field("elapsed_ms").is_some());

        let profile = child(&below, &group_span, "call", "service", "profile");
        assert_eq!(profile.field("outcome"), Some("succeeded"));
        assert_eq!(profile.field("optional"), Some("false"));
        assert!(
            below
                .iter()
                .any(|span| span.name == "db" && span.parent == Some(profile.serial)),
            "the service's own span is a child of its call's: {below:#?}"
        );
        let orders = child(&below, &group_span, "call", "service", "orders");
        assert_eq!(orders.field("outcome"), Some("failed"));
        assert!(orders.field("error").unwrap().contains("orders down"));
        assert!(orders.field("elapsed_ms").is_some());
        let recs = child(&below, &group_span, "call", "service", "recs");
        assert_eq!(recs.field("outcome"), Some("cancelled"), "cut by the failure");
        assert!(recs.field("elapsed_ms").is_some(), "a cancelled call is timed too");
    }
);

on_every_executor!(
    async fn a_hedged_call_has_a_span_per_attempt_and_the_loser_is_cancelled(ex) {
        seen();
        let clock = Manual::new();
        let ff = on_clock(ex, &clock).build().unwrap();
        let group = ff.group(&Context::background());
        // The first attempt is slow: the hedge, 10 ms later, wins.
        let kv = slow_first(&clock, 100, 5);
        let hedge = Hedge::builder().attempts(2).delay(ms(10)).build().unwrap();
        let mut run = pin!(group.run(group.idempotent("kv", kv).hedge(hedge)));
        // The first attempt and the hedge's timer asleep; then both attempts.
        schedule(run.as_mut(), &clock, &[(2, 10), (2, 5)]).await;
        assert_eq!(finish(run).await.unwrap(), 2);

        let (group_span, below) = all_closed(group.id()).await;
        assert_eq!(group_span.field("outcome"), Some("succeeded"));
        let call = child(&below, &group_span, "call", "service", "kv");
        assert_eq!(call.field("outcome"), Some("succeeded"));
        assert_eq!(call.field("elapsed_ms"), Some("15"), "virtual time");
        assert_eq!(call.field("attempts"), Some("2"), "the call says how many it started");
        let first = child(&below, call, "attempt", "attempt", "1");
        assert_eq!(first.field("hedge"), Some("false"));
        assert_eq!(first.field("outcome"), Some("cancelled"), "the loser");
        assert_eq!(first.field("elapsed_ms"), Some("15"), "how long the loser ran");
        let second = child(&below, call, "attempt", "attempt", "2");
        assert_eq!(second.field("hedge"), Some("true"));
        assert_eq!(second.field("group_id"), Some(&*group.id().to_string()));
        assert_eq!(second.field("outcome"), Some("succeeded"));
        assert_eq!(second.field("elapsed_ms"), Some("5"));
    }
);

on_every_executor!(
    async fn attempts_the_groups_deadline_cuts_short_record_how_long_they_ran(ex) {
        seen();
        let clock = Manual::new();
        let ff = on_clock(ex, &clock).timeout(ms(50)).build().unwrap();
        let group = ff.group(&Context::background());
        // Both attempts outlast the deadline at 50 ms: the hedge starts at 10 ms.
        let kv = slow_first(&clock, 1000, 1000);
        let hedge = Hedge::builder().attempts(2).delay(ms(10)).build().unwrap();
        let mut run = pin!(group.run(group.idempotent("kv", kv).hedge(hedge)));
        // The deadline, attempt 1 and the hedge's timer; then the deadline and both attempts.
        schedule(run.as_mut(), &clock, &[(3, 10), (3, 40)]).await;
        assert!(finish(run).await.unwrap_err().is_deadline_exceeded());

        let (group_span, below) = all_closed(group.id()).await;
        let call = child(&below, &group_span, "call", "service", "kv");
        for (attempt, ran) in [("1", "50"), ("2", "40")] {
            let span = child(&below, call, "attempt", "attempt", attempt);
            assert_eq!(span.field("outcome"), Some("cancelled"), "attempt {attempt}");
            assert_eq!(span.field("elapsed_ms"), Some(ran), "attempt {attempt}");
        }
    }
);

on_every_executor!(
    async fn a_retried_call_has_a_span_per_attempt_with_its_error(ex) {
        seen();
        let ff = FailFast::builder().executor(ex).build().unwrap();
        let group = ff.group(&Context::background());
        let made = std::sync::Arc::new(AtomicU64::new(0));
        let flaky = {
            let made = made.clone();
            move |_ctx: Context| {
                let n = made.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if n < 3 {
                        Err::<u64, BoxError>(format!("try {n} failed").into())
                    } else {
                        Ok(n)
                    }
                }
            }
        };
        let retry = Retry::builder()
            .attempts(3)
            .backoff(Duration::ZERO, Duration::ZERO)
            .build()
            .unwrap();
        let value = group.run(group.idempotent("flaky", flaky).retry(retry)).await;
        assert_eq!(value.unwrap(), 3);

        let (group_span, below) = all_closed(group.id()).await;
        let call = child(&below, &group_span, "call", "service", "flaky");
        assert_eq!(call.field("outcome"), Some("succeeded"));
        for n in 1..=2 {
            let attempt = child(&below, call, "attempt", "attempt", &n.to_string());
            assert_eq!(attempt.field("outcome"), Some("failed"));
            assert_eq!(attempt.field("error"), Some(&*format!("try {n} failed")));
        }
        assert_eq!(call.field("attempts"), Some("3"));
        let third = child(&below, call, "attempt", "attempt", "3");
        assert_eq!(third.field("outcome"), Some("succeeded"));
    }
);

on_every_executor!(
    async fn a_group_past_its_deadline_and_a_dropped_run_close_their_spans(ex) {
        seen();
        let ff = FailFast::builder()
            .executor(ex)
            .timeout(ms(20))
            .build()
            .unwrap();
        let slow = || {
            |_ctx: Context| async {
                futures_timer::Delay::new(Duration::from_secs(10)).await;
                Ok::<_, BoxError>(())
            }
        };
        let late = ff.group(&Context::background());
        let err = late.run(late.call("slow", slow())).await.unwrap_err();
        assert!(err.is_deadline_exceeded());
        let (group_span, below) = all_closed(late.id()).await;
        assert_eq!(group_span.field("outcome"), Some("deadline_exceeded"));
        let call = child(&below, &group_span, "call", "service", "slow");
        assert_eq!(call.field("outcome"), Some("cancelled"));

        let dropped = ff.group(&Context::background());
        {
            let mut run = Box::pin(dropped.run(dropped.call("slow", slow())));
            assert!(futures::poll!(run.as_mut()).is_pending());
        }
        let (group_span, _) = all_closed(dropped.id()).await;
        assert_eq!(group_span.field("outcome"), Some("cancelled"));
    }
);

on_every_executor!(
    async fn a_call_span_says_timed_out_panicked_or_optional(ex) {
        seen();
        let ff = FailFast::builder().executor(ex).build().unwrap();
        let group = ff.group(&Context::background());
        let slow = |_ctx: Context| async {
            futures_timer::Delay::new(Duration::from_secs(10)).await;
            Ok::<_, BoxError>(())
        };
        let run = group.run(async {
            let optional = group
                .call("flaky", |_ctx| async { Err::<(), BoxError>("flaky down".into()) })
                .optional();
            let timed = group.call("slow", slow).timeout(ms(20)).optional();
            let never = group.call("never", slow).timeout(Duration::ZERO).optional();
            let panics = group
                .call("panics", |_ctx| async {
                    if true {
                        panic!("boom");
                    }
                    Ok::<(), BoxError>(())
                })
                .optional();
            let made_panics = group
                .call("make-panics", |_ctx: Context| -> futures::future::Ready<Result<(), BoxError>> {
                    panic!("no future")
                })
                .optional();
            Ok(futures::join!(optional, timed, never, panics, made_panics))
        });
        let (a, b, c, d, e) = run.await.unwrap();
        assert!(a.unwrap().is_none() && b.unwrap().is_none() && c.unwrap().is_none());
        assert!(d.unwrap().is_none() && e.unwrap().is_none());

        let (group_span, below) = all_closed(group.id()).await;
        assert_eq!(group_span.field("outcome"), Some("succeeded"));
        let outcome = |name| {
            let call = child(&below, &group_span, "call", "service", name);
            assert_eq!(call.field("optional"), Some("true"));
            call.field("outcome").map(str::to_owned)
        };
        assert_eq!(outcome("flaky").as_deref(), Some("failed"));
        assert_eq!(outcome("slow").as_deref(), Some("timed_out"));
        assert_eq!(outcome("never").as_deref(), Some("timed_out"));
        assert_eq!(outcome("panics").as_deref(), Some("panicked"));
        assert_eq!(outcome("make-panics").as_deref(), Some("panicked"));
        // Never called, so never waited for: a few ms at most in real time on a busy machine
        // (it read "2" once in CI-like runs), not the 10 s its service would take.
        let never = child(&below, &group_span, "call", "service", "never");
        let elapsed: f64 = never.field("elapsed_ms").unwrap().parse().unwrap();
        assert!(elapsed < 1_000.0, "{elapsed} ms");
    }
);

on_every_executor!(
    async fn a_retry_attempt_cut_at_its_own_timeout_says_timed_out(ex) {
        seen();
        let clock = Manual::new();
        let ff = on_clock(ex, &clock).build().unwrap();
        let group = ff.group(&Context::background());
        let kv = slow_first(&clock, 100, 5); // the first attempt hangs
        let retry = Retry::builder()
            .attempts(2)
            .attempt_timeout(ms(10))
            .backoff(Duration::ZERO, Duration::ZERO)
            .build()
            .unwrap();
        let mut run = pin!(group.run(group.idempotent("kv", kv).retry(retry)));
        // Each attempt: its service and its own timeout asleep.
        schedule(run.as_mut(), &clock, &[(2, 10), (2, 5)]).await;
        assert_eq!(finish(run).await.unwrap(), 2);

        let (group_span, below) = all_closed(group.id()).await;
        let call = child(&below, &group_span, "call", "service", "kv");
        let first = child(&below, call, "attempt", "attempt", "1");
        assert_eq!(first.field("outcome"), Some("timed_out"));
        assert_eq!(first.field("elapsed_ms"), Some("10"));
        let second = child(&below, call, "attempt", "attempt", "2");
        assert_eq!(second.field("outcome"), Some("succeeded"));
    }
);

on_every_executor!(
    async fn a_panicking_retry_attempt_says_panicked(ex) {
        seen();
        let ff = FailFast::builder().executor(ex).build().unwrap();
        let group = ff.group(&Context::background());
        let boom = |_ctx: Context| async {
            if true {
                panic!("boom");
            }
            Ok::<u32, BoxError>(1)
        };
        let retry = Retry::builder().attempts(3).build().unwrap();
        let err = group
            .run(group.idempotent("boom", boom).retry(retry))
            .await
            .unwrap_err();
        assert!(matches!(err, failfast::Error::Panicked { .. }), "{err:?}");
        let (group_span, below) = all_closed(group.id()).await;
        let call = child(&below, &group_span, "call", "service", "boom");
        assert_eq!(call.field("outcome"), Some("panicked"));
        let first = child(&below, call, "attempt", "attempt", "1");
        assert_eq!(first.field("outcome"), Some("panicked"));
    }
);

#[test]
fn a_call_whose_task_the_executor_drops_says_dropped() {
    seen();
    // Polls each task once, then drops it.
    let careless = |mut task: futures::future::BoxFuture<'static, ()>| {
        let waker = futures::task::noop_waker();
        let _ = task
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker));
    };
    let ff = FailFast::builder().executor(careless).build().unwrap();
    let group = ff.group(&Context::background());
    let slow = group.call("slow", |_ctx| async {
        futures_timer::Delay::new(Duration::from_secs(10)).await;
        Ok::<_, BoxError>(())
    });
    let err = futures::executor::block_on(group.run(slow)).unwrap_err();
    assert!(matches!(err, failfast::Error::Dropped { .. }), "{err:?}");
    let (group_span, below) = futures::executor::block_on(all_closed(group.id()));
    let call = child(&below, &group_span, "call", "service", "slow");
    assert_eq!(call.field("outcome"), Some("dropped"));
    assert!(call.field("elapsed_ms").is_some());
}

on_every_executor!(
    async fn a_dropped_run_cancels_its_call_spans(ex) {
        seen();
        let ff = FailFast::builder().executor(ex).build().unwrap();
        let group = ff.group(&Context::background());
        {
            let slow = group.call("slow", |_ctx| async {
                futures_timer::Delay::new(Duration::from_secs(10)).await;
                Ok::<_, BoxError>(())
            });
            let mut run = Box::pin(group.run(slow));
            let started = || tree(group.id()).1.iter().any(|span| span.name == "call");
            assert!(common::drive_until(run.as_mut(), started).await.is_none());
        }
        let (group_span, below) = all_closed(group.id()).await;
        assert_eq!(group_span.field("outcome"), Some("cancelled"));
        let call = child(&below, &group_span, "call", "service", "slow");
        assert_eq!(call.field("outcome"), Some("cancelled"));
        assert!(call.field("elapsed_ms").is_some());
    }
);

/// With the feature on, `run` is still `Send`: a group runs inside a spawned task.
#[test]
fn run_is_send() {
    fn send<T: Send>(_: &T) {}
    let ff = FailFast::builder().build().unwrap();
    let group = ff.group(&Context::background());
    let run = group.run(group.call("one", |_ctx| async { Ok::<_, BoxError>(1) }));
    send(&run);
}
