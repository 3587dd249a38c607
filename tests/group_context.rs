//! The context a group hands its calls: it fires on the group's timer, carries the caller's
//! values, and is cancelled with the first failure as its cause; the caller's cause reaches
//! the group's error.

// `ex` is cloned where a test builds two groups; on `Inline` that is a copy.
#![allow(clippy::clone_on_copy)]

mod common;

use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{drive_until, finish, ms, on_clock, on_every_executor};
use failfast::timer::Manual;
use failfast::{BoxError, Context, ContextError, Error, FailFast};
use futures::future::{try_join, try_join3};

/// Where a call leaves the context it was given, to look at it after `run` returns.
type Kept = Arc<Mutex<Option<Context>>>;

on_every_executor!(
    async fn a_calls_context_is_done_at_its_own_timeout_on_the_groups_virtual_clock(ex) {
        let clock = Manual::new();
        let ff = on_clock(ex, &clock).build().unwrap();
        let group = ff.group(&Context::background());
        let mut run = pin!(group.run(group.call("poller", |ctx: Context| async move {
            // A deadline made inside the call counts from the group's clock and fires on it.
            let budget = ctx.with_timeout(Duration::from_secs(3600));
            budget.done().await;
            Ok::<_, BoxError>(budget.err())
        })));
        assert!(drive_until(run.as_mut(), || clock.sleepers() == 1).await.is_none());
        clock.advance(Duration::from_secs(3600));
        assert_eq!(finish(run).await.unwrap(), Some(ContextError::DeadlineExceeded));
    }
);

on_every_executor!(
    async fn the_calls_context_is_cancelled_with_the_first_failure_as_its_cause(ex) {
        let ff = FailFast::builder().executor(ex).build().unwrap();
        let group = ff.group(&Context::background());
        let kept: Kept = Arc::default();
        let keep = kept.clone();
        let (started, waiting) = futures::channel::oneshot::channel::<()>();
        let err = group
            .run(try_join(
                group.call("waiter", move |ctx: Context| async move {
                    *keep.lock().unwrap() = Some(ctx.clone());
                    let _ = started.send(());
                    ctx.done().await;
                    Ok::<_, BoxError>(())
                }),
                group.call("profile", |_ctx| async {
                    let _ = waiting.await; // fails once the waiter holds its context
                    Err::<(), _>("profile db down")
                }),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.service(), Some("profile"));
        let ctx = kept.lock().unwrap().take().expect("the waiter kept its context");
        let (why, cause) = (ctx.err(), ctx.cause());
        assert_eq!(why, Some(ContextError::Cancelled));
        let cause = cause.unwrap();
        let failure = cause.downcast_ref::<Error>().expect("the group's error is the cause");
        assert_eq!(failure.service(), Some("profile"));
        assert_eq!(format!("{failure:#}"), "profile service failed: profile db down");
    }
);

on_every_executor!(
    async fn after_a_successful_run_the_calls_context_is_cancelled_without_a_cause(ex) {
        let ff = FailFast::builder().executor(ex).build().unwrap();
        let group = ff.group(&Context::background());
        let kept: Kept = Arc::default();
        let keep = kept.clone();
        group
            .run(group.call("keeper", move |ctx| async move {
                *keep.lock().unwrap() = Some(ctx);
                Ok::<_, BoxError>(())
            }))
            .await
            .unwrap();
        let ctx = kept.lock().unwrap().take().unwrap();
        assert_eq!(ctx.err(), Some(ContextError::Cancelled));
        assert_eq!(ctx.cause().unwrap().to_string(), "context cancelled");
    }
);

on_every_executor!(
    async fn at_the_groups_deadline_the_calls_context_reports_deadline_exceeded(ex) {
        let clock = Manual::new();
        let ff = on_clock(ex, &clock)
            .timeout(ms(100))
            .build()
            .unwrap();
        let group = ff.group(&Context::background());
        let kept: Kept = Arc::default();
        let keep = kept.clone();
        let mut run = pin!(group.run(group.call("stuck", move |ctx| async move {
            *keep.lock().unwrap() = Some(ctx);
            std::future::pending::<Result<(), BoxError>>().await
        })));
        assert!(drive_until(run.as_mut(), || kept.lock().unwrap().is_some()).await.is_none());
        let ctx = kept.lock().unwrap().take().unwrap();
        assert_eq!(ctx.remaining(), Some(ms(100)), "the group's deadline, by its clock");
        clock.advance(ms(100));
        assert!(finish(run).await.unwrap_err().is_deadline_exceeded());
        assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
    }
);

on_every_executor!(
    async fn the_callers_cause_reaches_the_groups_error(ex) {
        let ff = FailFast::builder().executor(ex).build().unwrap();
        let (ctx, cancel) = Context::background().with_cancel();
        let group = ff.group(&ctx);
        let mut run = pin!(group.run(group.call("slow", |ctx: Context| async move {
            ctx.done().await; // a service that honours its context fails because of it
            Err::<(), BoxError>(ctx.cause().expect("done").into())
        })));
        assert!(drive_until(run.as_mut(), || true).await.is_none());
        cancel.cancel_with("client disconnected");
        let err = finish(run).await.unwrap_err();
        assert!(err.is_cancelled(), "{err:?}");
        assert!(matches!(&err, Error::Cancelled { cause: Some(cause), .. } if cause.to_string() == "client disconnected"));
        assert!(format!("{err:#}").ends_with(": client disconnected"), "{err:#}");
        assert_eq!(std::error::Error::source(&err).unwrap().to_string(), "client disconnected");
    }
);

on_every_executor!(
    async fn an_already_cancelled_callers_cause_is_in_the_error_too(ex) {
        let ff = FailFast::builder().executor(ex).build().unwrap();
        let (ctx, cancel) = Context::background().with_cancel();
        cancel.cancel_with("shutting down");
        let group = ff.group(&ctx);
        let err = group
            .run(group.call("never", |_ctx| async { Ok::<_, BoxError>(()) }))
            .await
            .unwrap_err();
        assert_eq!(format!("{err:#}"), "cancelled by the caller after 0.0ns: shutting down");
    }
);

on_every_executor!(
    async fn a_callers_deadline_that_passed_before_its_cancel_is_the_groups_error(ex) {
        // As the caller's own `err()` says: the deadline came first, so it is the reason,
        // whether the group starts after both or is running when the cancel comes.
        let (ctx, cancel) = Context::background().with_cancel();
        let spent = ctx.with_timeout_cause(Duration::ZERO, "budget spent");
        cancel.cancel_with("a later cancel");
        assert_eq!(spent.err(), Some(ContextError::DeadlineExceeded));
        let ff = FailFast::builder().executor(ex.clone()).build().unwrap();
        let group = ff.group(&spent);
        let err = group
            .run(group.call("never", |_ctx| async { Ok::<_, BoxError>(()) }))
            .await
            .unwrap_err();
        assert!(err.is_deadline_exceeded(), "before the run: {err:#}");

        let clock = Manual::new();
        let ff = on_clock(ex, &clock).build().unwrap();
        let (ctx, cancel) = Context::background().with_timer(clock.clone()).with_cancel();
        let caller = ctx.with_timeout(ms(100));
        let group = ff.group(&caller);
        let mut run = pin!(group.run(group.call("slow", |ctx: Context| async move {
            ctx.done().await;
            Err::<(), BoxError>(ctx.cause().expect("done").into())
        })));
        assert!(drive_until(run.as_mut(), || clock.sleepers() > 0).await.is_none());
        clock.advance(ms(100));
        cancel.cancel_with("a later cancel");
        assert_eq!(caller.err(), Some(ContextError::DeadlineExceeded));
        let err = finish(run).await.unwrap_err();
        assert!(err.is_deadline_exceeded(), "during the run: {err:#}");
    }
);

on_every_executor!(
    async fn calls_see_the_callers_values_and_nested_groups_pass_them_on(ex) {
        #[derive(Debug, PartialEq)]
        struct TraceId(u32);

        let ff = Arc::new(FailFast::builder().executor(ex).build().unwrap());
        let ctx = Context::background().with_value(TraceId(42));
        let group = ff.group(&ctx);
        let inner = ff.clone();
        let (a, b, nested) = group
            .run(try_join3(
                group.call("a", |ctx: Context| async move {
                    Ok::<_, BoxError>(ctx.value::<TraceId>().map(|id| id.0))
                }),
                group.call("b", |ctx: Context| async move {
                    Ok::<_, BoxError>(ctx.with_value(TraceId(7)).value::<TraceId>().map(|id| id.0))
                }),
                group.call("nested", move |ctx: Context| async move {
                    let group = inner.group(&ctx);
                    let id = group
                        .run(group.call("leaf", |ctx: Context| async move {
                            Ok::<_, BoxError>(ctx.value::<TraceId>().map(|id| id.0))
                        }))
                        .await?;
                    Ok::<_, BoxError>(id)
                }),
            ))
            .await
            .unwrap();
        assert_eq!((a, b, nested), (Some(42), Some(7), Some(42)));
    }
);

on_every_executor!(
    async fn on_a_virtual_clock_a_callers_cancel_is_a_cancellation_not_the_deadline(ex) {
        let clock = Manual::new();
        std::thread::sleep(ms(30)); // the real clock moves past the group's virtual deadline
        let ff = on_clock(ex, &clock)
            .timeout(ms(10))
            .build()
            .unwrap();
        let (caller, cancel) = Context::background().with_cancel();
        let group = ff.group(&caller);
        let kept: Kept = Arc::default();
        let keep = kept.clone();
        let mut run = pin!(group.run(group.call("slow", move |ctx: Context| async move {
            *keep.lock().unwrap() = Some(ctx.clone());
            ctx.done().await;
            Err::<(), BoxError>(ctx.cause().expect("done").into())
        })));
        assert!(drive_until(run.as_mut(), || kept.lock().unwrap().is_some()).await.is_none());
        cancel.cancel_with("client gone");
        let err = finish(run).await.unwrap_err();
        assert_eq!(format!("{err:#}"), "cancelled by the caller after 0.0ns: client gone");
        let ctx = kept.lock().unwrap().take().unwrap();
        assert_eq!(ctx.err(), Some(ContextError::Cancelled));
        assert_eq!(ctx.cause().unwrap().to_string(), "client gone");
        assert_eq!(ctx.remaining(), Some(ms(10)), "no virtual time passed");
    }
);

/// What the run of two calls yields.
type Outcome = Result<((), ()), Error>;

/// Polls the run it holds whenever it is woken, from inside `wake`: the group then settles
/// while the call that woke it is still inside its failure (no lock of the group may be held
/// across that wake-up).
struct SettlesInWake {
    run: Mutex<Option<futures::future::BoxFuture<'static, Outcome>>>,
    result: Mutex<Option<Outcome>>,
}

impl std::task::Wake for SettlesInWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let Ok(mut run) = self.run.try_lock() else {
            return; // being polled already
        };
        let Some(future) = run.as_mut() else { return };
        let waker = std::task::Waker::from(self.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        if let std::task::Poll::Ready(result) = future.as_mut().poll(&mut cx) {
            *run = None;
            *self.result.lock().unwrap() = Some(result);
        }
    }
}

#[test]
fn a_run_polled_from_inside_the_failures_wake_up_settles_with_the_failure_as_the_cause() {
    // Tasks polled by hand; `ff` and the group leaked so that the run can live in the waker.
    let tasks: Arc<Mutex<Vec<futures::future::BoxFuture<'static, ()>>>> = Arc::default();
    let queue = tasks.clone();
    let ff = Box::leak(Box::new(
        FailFast::builder()
            .executor(move |task| queue.lock().unwrap().push(task))
            .build()
            .unwrap(),
    ));
    let group = Box::leak(Box::new(ff.group(&Context::background())));
    let kept: Kept = Arc::default();
    let keep = kept.clone();
    let run = group.run(try_join(
        group.call("waiter", move |ctx: Context| async move {
            *keep.lock().unwrap() = Some(ctx.clone());
            ctx.done().await;
            Ok::<_, BoxError>(())
        }),
        group.call("profile", |_ctx| async { Err::<(), _>("profile db down") }),
    ));
    let driver = Arc::new(SettlesInWake {
        run: Mutex::new(Some(Box::pin(run))),
        result: Mutex::new(None),
    });
    std::task::Wake::wake_by_ref(&driver); // the first poll launches both calls
    let [mut waiter, mut profile]: [futures::future::BoxFuture<'static, ()>; 2] =
        std::mem::take(&mut *tasks.lock().unwrap())
            .try_into()
            .ok()
            .unwrap();
    let mut noop = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(waiter.as_mut().poll(&mut noop).is_pending());

    // The run, re-polled inside the wake-up the failure makes, settles right there.
    assert!(profile.as_mut().poll(&mut noop).is_ready());
    let err = driver
        .result
        .lock()
        .unwrap()
        .take()
        .expect("settled")
        .unwrap_err();
    assert_eq!(err.service(), Some("profile"));
    let ctx = kept
        .lock()
        .unwrap()
        .take()
        .expect("the waiter kept its context");
    let cause = ctx.cause().expect("cancelled");
    let failure = cause
        .downcast_ref::<Error>()
        .expect("the group's error is the cause");
    assert_eq!(failure.service(), Some("profile"));
}
