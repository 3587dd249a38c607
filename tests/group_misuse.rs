//! A group used in ways that cannot work gets a clear error, never a panic or a hang; a timer
//! or an executor that does not run is noticed and named instead of silently losing the
//! deadline.

mod common;

use std::future::Future;
use std::pin::pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use common::{Capture, finish, ms, order};
use failfast::mock::Mock;
use failfast::{BoxError, Context, Error, FailFast, Timer, executor};
use futures::FutureExt;

#[test]
fn a_second_run_is_a_misuse_error_and_does_not_disturb_the_first() {
    let ff = FailFast::builder().build().unwrap();
    let group = ff.group(&Context::background());
    futures::executor::block_on(async {
        let first = group.run(group.call("a", |_ctx| async { Ok::<_, BoxError>(1) }));
        assert_eq!(first.await.unwrap(), 1);
        let err = group.run(async { Ok(()) }).await.unwrap_err();
        assert!(matches!(err, Error::Misuse { .. }), "{err:?}");
        assert!(err.to_string().contains("already run"), "{err}");
    });
}

#[test]
fn two_runs_at_once_the_second_is_refused_and_the_first_goes_on() {
    let ff = FailFast::builder().build().unwrap();
    let group = ff.group(&Context::background());
    futures::executor::block_on(async {
        let mut first = pin!(group.run(group.call("a", |_ctx| async {
            futures_timer::Delay::new(ms(20)).await;
            Ok::<_, BoxError>(1)
        })));
        assert!(first.as_mut().now_or_never().is_none());
        let err = group.run(async { Ok(()) }).await.unwrap_err();
        assert!(matches!(err, Error::Misuse { .. }), "{err:?}");
        assert_eq!(finish(first).await.unwrap(), 1);
    });
}

#[test]
fn a_call_made_after_run_returned_is_a_misuse_error_and_never_runs() {
    let ff = FailFast::builder().build().unwrap();
    let group = ff.group(&Context::background());
    let service = Mock::new(1_u32);
    futures::executor::block_on(async {
        group.run(async { Ok(()) }).await.unwrap();
        let err = group.call("late", order(&service)).await.unwrap_err();
        assert!(matches!(err, Error::Misuse { .. }), "{err:?}");
    });
    assert_eq!(service.calls().started(), 0);
}

#[test]
fn a_setting_changed_after_the_call_started_is_a_misuse_error() {
    let ff = FailFast::builder().build().unwrap();
    let group = ff.group(&Context::background());
    let service = Mock::new(1_u32).hang();
    let err = futures::executor::block_on(group.run(async {
        let call = group.call("early", order(&service));
        // `run` launches the call made in its join before polling the join again.
        let mut yielded = false;
        futures::future::poll_fn(|_| {
            if std::mem::replace(&mut yielded, true) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        call.timeout(ms(10)).await
    }))
    .unwrap_err();
    assert!(matches!(err, Error::Misuse { .. }), "{err:?}");
    assert!(
        err.to_string().contains("after the call had started"),
        "{err}"
    );
    assert_eq!(service.calls().started(), 1);
    assert_eq!(
        service.calls().cancelled(),
        1,
        "the started call was cancelled"
    );
}

#[test]
fn run_polled_again_after_it_completed_is_an_error_not_a_panic() {
    let ff = FailFast::builder().build().unwrap();
    let group = ff.group(&Context::background());
    let mut run = pin!(group.run(async { Ok(5) }));
    let waker = futures::task::noop_waker();
    let mut cx = TaskContext::from_waker(&waker);
    assert!(matches!(run.as_mut().poll(&mut cx), Poll::Ready(Ok(5))));
    assert!(matches!(
        run.as_mut().poll(&mut cx),
        Poll::Ready(Err(Error::Misuse { .. }))
    ));
}

#[test]
fn a_group_dropped_without_running_drops_its_calls_unstarted() {
    let ff = FailFast::builder().build().unwrap();
    let service = Mock::new(1_u32).hang();
    {
        let group = ff.group(&Context::background());
        let call = group.call("orphan", order(&service));
        std::mem::forget(call); // even a leaked handle keeps nothing alive
    }
    assert_eq!(service.calls().started(), 0);
}

/// A timer whose sleeps never fire: what a tokio timer on a runtime nobody drives looks like.
#[derive(Debug, Clone)]
struct Stuck;

impl Timer for Stuck {
    type Sleep = futures::future::Pending<()>;

    fn sleep(&self, _: Duration) -> Self::Sleep {
        futures::future::pending()
    }
}

#[test]
fn a_deadline_whose_timer_never_fires_is_still_reported_and_the_timer_named() {
    let capture = Capture::new();
    let ff = FailFast::builder()
        .timer(Stuck)
        .timeout(ms(50))
        .logger(capture.clone())
        .build()
        .unwrap();
    let group = ff.group(&Context::background());
    let start = Instant::now();
    let result = futures::executor::block_on(group.run(group.call("slow", |_ctx| async {
        futures_timer::Delay::new(ms(300)).await;
        Ok::<_, BoxError>("late")
    })));
    let elapsed = start.elapsed();

    // Without a timer nothing ended the group at 50 ms; but an answer 250 ms past the
    // deadline is not reported as a success.
    let err = result.unwrap_err();
    assert!(err.is_deadline_exceeded(), "{err:?}");
    assert!(elapsed >= ms(300), "{elapsed:?}");
    let warnings = capture.with_message("timer never fired");
    assert_eq!(warnings.len(), 1, "{:#?}", capture.lines());
    assert_eq!(warnings[0].0, log::Level::Warn);
    assert!(warnings[0].2.iter().any(|kv| kv.starts_with("late_ms=")));
}

#[test]
fn an_answer_just_at_the_deadline_of_a_working_timer_is_not_flagged() {
    let capture = Capture::new();
    let ff = FailFast::builder()
        .timeout(ms(100))
        .logger(capture.clone())
        .build()
        .unwrap();
    let group = ff.group(&Context::background());
    let value = futures::executor::block_on(group.run(group.call("quick", |_ctx| async {
        futures_timer::Delay::new(ms(20)).await;
        Ok::<_, BoxError>(1)
    })))
    .unwrap();
    assert_eq!(value, 1);
    assert!(
        capture.with_message("never fired").is_empty(),
        "{:#?}",
        capture.lines()
    );
}

#[cfg(feature = "smol")]
#[test]
fn a_smol_executor_nobody_runs_is_named_when_the_deadline_passes() {
    let capture = Capture::new();
    let ex = std::sync::Arc::new(smol::Executor::new());
    let ff = FailFast::builder()
        .executor(executor::Smol::new(ex.clone()))
        .timeout(ms(50))
        .logger(capture.clone())
        .build()
        .unwrap();
    let service = Mock::new(1_u32);
    let group = ff.group(&Context::background());
    let err = futures::executor::block_on(group.run(group.call("never-polled", order(&service))))
        .unwrap_err();

    assert!(err.is_deadline_exceeded(), "{err:?}");
    assert_eq!(service.calls().started(), 0);
    let warnings = capture.with_message("never polled");
    assert_eq!(warnings.len(), 1, "{:#?}", capture.lines());
    assert!(
        warnings[0].2.contains(&"unpolled=1".to_owned()),
        "{:?}",
        warnings[0]
    );
    drop(ex); // drops the queued task: nothing leaks
}

#[cfg(feature = "tokio")]
#[test]
fn a_tokio_timer_on_a_current_thread_runtime_nobody_drives_does_not_lose_the_deadline() {
    let capture = Capture::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let ff = FailFast::builder()
        .timer(failfast::timer::Tokio::new(runtime.handle().clone()))
        .timeout(ms(50))
        .logger(capture.clone())
        .build()
        .unwrap();
    let group = ff.group(&Context::background());
    let run = pin!(group.run(group.call("slow", |_ctx| async {
        futures_timer::Delay::new(ms(200)).await;
        Ok::<_, BoxError>(1)
    })));
    let err = futures::executor::block_on(finish(run)).unwrap_err();
    assert!(err.is_deadline_exceeded(), "{err:?}");
    assert_eq!(
        capture.with_message("timer never fired").len(),
        1,
        "{:#?}",
        capture.lines()
    );
}

/// An executor whose `spawn` panics the second time: the panic reaches the caller of `run`,
/// and the call already started is cancelled on the way.
#[derive(Debug, Default)]
struct PanicsOnSecondSpawn(std::sync::atomic::AtomicUsize);

impl executor::Executor for PanicsOnSecondSpawn {
    type Handle = ();

    fn spawn<F>(&self, task: F) -> Result<(), F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            panic!("executor is full");
        }
        Err(task)
    }
}

#[test]
fn an_executor_that_panics_in_spawn_unwinds_to_the_caller_and_leaves_nothing_running() {
    let ff = FailFast::builder()
        .executor(PanicsOnSecondSpawn::default())
        .build()
        .unwrap();
    let service = Mock::new(1_u32).hang();
    let group = ff.group(&Context::background());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        futures::executor::block_on(group.run(futures::future::try_join(
            group.call("first", order(&service)),
            group.call("second", order(&service)),
        )))
    }));
    assert!(outcome.is_err(), "the executor's panic was swallowed");
    drop(group);
    assert_eq!(service.calls().in_flight(), 0);
}
