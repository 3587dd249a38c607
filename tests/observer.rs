//! What a group tells its observer and its logger: every call started and finished (name,
//! elapsed, outcome), every group finished, records that carry the group's id and fields.

#![allow(clippy::clone_on_copy)]

mod common;

use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Capture, drive_until, eventually, finish, ms, on_every_executor, order};
use failfast::mock::Mock;
use failfast::timer::Manual;
use failfast::{
    BoxError, CallFinished, CallStarted, Context, FailFast, GroupFinished, Observer, Outcome,
};
use futures::FutureExt;
use futures::future::try_join_all;

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Started(String),
    Finished(String, Outcome, Duration, bool),
    Group(usize, Option<String>),
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Event>>>);

impl Recorder {
    fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }
}

impl Observer for Recorder {
    fn call_started(&self, call: &CallStarted<'_>) {
        self.0
            .lock()
            .unwrap()
            .push(Event::Started(call.name.to_owned()));
    }

    fn call_finished(&self, call: &CallFinished<'_>) {
        assert_eq!(
            call.error.is_some(),
            !matches!(call.outcome, Outcome::Succeeded | Outcome::Cancelled)
        );
        let event = Event::Finished(
            call.name.to_owned(),
            call.outcome,
            call.elapsed,
            call.optional,
        );
        self.0.lock().unwrap().push(event);
    }

    fn group_finished(&self, group: &GroupFinished<'_>) {
        let error = group.error.map(|error| error.to_string());
        self.0
            .lock()
            .unwrap()
            .push(Event::Group(group.calls, error));
    }
}

on_every_executor!(
    async fn the_observer_sees_each_call_with_its_elapsed_time_and_outcome(ex) {
        let clock = Manual::new();
        let recorder = Recorder::default();
        let ff = FailFast::builder()
            .executor(ex)
            .timer(clock.clone())
            .observer(recorder.clone())
            .build()
            .unwrap();
        let group = ff.group(&Context::background());
        let quick = Mock::new(1_u32).delay(ms(30)).timer(clock.clone());
        // The optional call fails before the required one: at the same instant, whether it saw
        // the group fail first would be a race between the executor's threads.
        let flaky = Mock::new(4_u32).delay(ms(30)).fail("flaky").timer(clock.clone());
        let broken = Mock::new(2_u32).delay(ms(70)).fail("down").timer(clock.clone());
        let hanging = Mock::new(3_u32).hang().timer(clock.clone());
        let mut run = pin!(group.run(try_join_all([
            group.call("quick", order(&quick)).boxed(),
            group.call("optional", order(&flaky)).optional_as_zero(),
            group.call("hanging", order(&hanging)).boxed(),
            group.call("broken", order(&broken)).boxed(),
        ])));
        assert!(drive_until(run.as_mut(), || clock.sleepers() == 3).await.is_none());
        clock.advance(ms(30));
        assert!(drive_until(run.as_mut(), || recorder.events().len() == 6).await.is_none());
        clock.advance(ms(40));
        let err = finish(run).await.unwrap_err();
        assert_eq!(err.service(), Some("broken"));
        eventually("every call reported", || {
            recorder.events().iter().filter(|e| matches!(e, Event::Finished(..))).count() == 4
        })
        .await;

        let events = recorder.events();
        let started: Vec<_> = events.iter().filter(|e| matches!(e, Event::Started(_))).collect();
        assert_eq!(started.len(), 4, "{events:#?}");
        let finished = |name: &str| {
            events
                .iter()
                .find_map(|e| match e {
                    Event::Finished(n, outcome, elapsed, optional) if n == name => {
                        Some((*outcome, *elapsed, *optional))
                    }
                    _ => None,
                })
                .unwrap_or_else(|| panic!("no event for {name}: {events:#?}"))
        };
        assert_eq!(finished("quick"), (Outcome::Succeeded, ms(30), false));
        assert_eq!(finished("optional"), (Outcome::Failed, ms(30), true));
        assert_eq!(finished("broken"), (Outcome::Failed, ms(70), false));
        assert_eq!(finished("hanging"), (Outcome::Cancelled, ms(70), false));
        let groups: Vec<_> = events.iter().filter(|e| matches!(e, Event::Group(..))).collect();
        assert_eq!(groups, [&Event::Group(4, Some("broken service failed".into()))]);
    }
);

/// An optional call whose `None` reads as zero, so that it joins with required `u32` calls.
trait OptionalAsZero<'g> {
    fn optional_as_zero(self) -> futures::future::BoxFuture<'g, Result<u32, failfast::Error>>;
}

impl<'g> OptionalAsZero<'g> for failfast::Call<'g, u32> {
    fn optional_as_zero(self) -> futures::future::BoxFuture<'g, Result<u32, failfast::Error>> {
        use futures::TryFutureExt;
        Box::pin(self.optional().map_ok(Option::unwrap_or_default))
    }
}

#[test]
fn a_panicking_and_a_timed_out_call_are_told_apart() {
    let clock = Manual::new();
    let recorder = Recorder::default();
    let ff = FailFast::builder()
        .timer(clock.clone())
        .observer(recorder.clone())
        .build()
        .unwrap();
    let group = ff.group(&Context::background());
    let crashing = Mock::new(1_u32).panic("boom").timer(clock.clone());
    let slow = Mock::new(2_u32)
        .delay(Duration::from_secs(1))
        .timer(clock.clone());
    futures::executor::block_on(async {
        let mut run = pin!(group.run(futures::future::try_join(
            group.call("crashing", order(&crashing)).optional(),
            group.call("slow", order(&slow)).timeout(ms(10)).optional(),
        )));
        assert!(
            drive_until(run.as_mut(), || clock.sleepers() == 2)
                .await
                .is_none()
        );
        clock.advance(ms(10));
        assert_eq!(finish(run).await.unwrap(), (None, None));
    });
    let outcomes: Vec<_> = recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Finished(name, outcome, ..) => Some((name, outcome)),
            _ => None,
        })
        .collect();
    assert!(
        outcomes.contains(&("crashing".into(), Outcome::Panicked)),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&("slow".into(), Outcome::TimedOut)),
        "{outcomes:?}"
    );
}

#[test]
fn records_carry_the_group_id_and_its_fields_so_concurrent_groups_are_told_apart() {
    let capture = Capture::new();
    let ff = FailFast::builder().logger(capture.clone()).build().unwrap();
    let (a, b) = (
        ff.group(&Context::background()),
        ff.group(&Context::background()),
    );
    let (a, b) = (a.log_field("user_id", 42), b.log_field("user_id", 42));
    assert_ne!(a.id(), b.id());
    futures::executor::block_on(futures::future::try_join(
        a.run(a.call("profile", |_ctx| async { Ok::<_, BoxError>(1) })),
        b.run(b.call("profile", |_ctx| async { Ok::<_, BoxError>(2) })),
    ))
    .unwrap();

    let finished = capture.with_message("fetch finished");
    assert_eq!(finished.len(), 2, "{:#?}", capture.lines());
    for (group, id) in [("a", a.id()), ("b", b.id())] {
        let expected = format!("group_id={id}");
        let (level, _, kvs) = finished
            .iter()
            .find(|(_, _, kvs)| kvs.contains(&expected))
            .unwrap_or_else(|| panic!("no record of group {group}: {finished:#?}"));
        assert_eq!(*level, log::Level::Debug);
        for key in ["user_id=42", "service=profile"] {
            assert!(kvs.contains(&key.to_owned()), "{kvs:?}");
        }
        assert!(
            kvs.iter().any(|kv| kv.starts_with("elapsed_ms=")),
            "{kvs:?}"
        );
    }
}

#[test]
fn a_group_refused_at_the_start_logs_one_warning_and_no_start() {
    let capture = Capture::new();
    let ff = FailFast::builder()
        .logger(capture.clone())
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let group = ff.group(&ctx).log_field("user_id", 7);
    let err = futures::executor::block_on(
        group.run(group.call("never", |_ctx| async { Ok::<_, BoxError>(()) })),
    )
    .unwrap_err();
    assert!(err.is_cancelled());

    let lines = capture.lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let (level, message, kvs) = &lines[0];
    assert_eq!(*level, log::Level::Warn);
    assert!(
        message.contains("already cancelled, nothing started"),
        "{message}"
    );
    assert!(kvs.contains(&"user_id=7".to_owned()), "{kvs:?}");
}

#[test]
fn a_failure_with_nothing_else_in_flight_has_no_empty_cancelled_field() {
    let capture = Capture::new();
    let ff = FailFast::builder().logger(capture.clone()).build().unwrap();
    let group = ff.group(&Context::background());
    futures::executor::block_on(
        group.run(group.call("alone", |_ctx| async { Err::<(), BoxError>("down".into()) })),
    )
    .unwrap_err();

    let warnings: Vec<_> = capture
        .lines()
        .into_iter()
        .filter(|l| l.0 == log::Level::Warn)
        .collect();
    assert_eq!(warnings.len(), 1, "{:#?}", capture.lines());
    let kvs = &warnings[0].2;
    assert!(
        kvs.contains(&"error=alone service failed: down".to_owned()),
        "{kvs:?}"
    );
    assert!(
        !kvs.iter().any(|kv| kv.starts_with("cancelled=")),
        "{kvs:?}"
    );
}

#[test]
fn dropping_run_logs_the_end_of_the_group_at_debug() {
    let capture = Capture::new();
    let ff = FailFast::builder().logger(capture.clone()).build().unwrap();
    let group = ff.group(&Context::background());
    let hanging = Mock::new(1_u32).hang();
    futures::executor::block_on(async {
        let mut run = pin!(group.run(group.call("hangs", order(&hanging))));
        assert!(
            drive_until(run.as_mut(), || hanging.calls().started() == 1)
                .await
                .is_none()
        );
    });
    let dropped = capture.with_message("dropped by the caller");
    assert_eq!(dropped.len(), 1, "{:#?}", capture.lines());
    assert_eq!(dropped[0].0, log::Level::Debug);
    assert_eq!(hanging.calls().cancelled(), 1);
}
