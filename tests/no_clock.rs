//! Without the `futures-timer` feature a root context has no clock: a passed deadline is
//! still reported when asked, and waiting on one still ahead warns and names the way out.
//! `.ci/run` runs it with `--no-default-features`; its own binary, so that the only records
//! its logger sees are its own.
#![cfg(not(feature = "futures-timer"))]

mod common;

use std::pin::pin;
use std::time::Duration;

use common::ms;
use failfast::timer::Manual;
use failfast::{Context, ContextError};
use futures::FutureExt;

#[test]
fn with_no_clock_a_passed_deadline_is_reported_and_done_warns_instead_of_hanging_silently() {
    let capture = common::Capture::new();
    log::set_boxed_logger(Box::new(capture.clone())).unwrap();

    // Asked, a passed deadline is reported, and `done()` completes at once.
    let ctx = Context::background().with_timeout(ms(20));
    std::thread::sleep(ms(40));
    assert!(ctx.is_done());
    assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
    assert!(ctx.done().now_or_never().is_some());
    assert!(
        capture.lines().is_empty(),
        "nothing to warn about: {:?}",
        capture.lines()
    );

    // Waiting on a deadline still ahead cannot end at it: a warning says so, and the way out.
    let later = Context::background().with_timeout(Duration::from_secs(3600));
    assert!(later.done().now_or_never().is_none());
    let warned = capture.with_message("no clock");
    assert_eq!(warned.len(), 1, "{:?}", capture.lines());
    assert_eq!(warned[0].0, log::Level::Warn);
    assert!(
        warned[0].1.contains("Context::with_timer"),
        "{}",
        warned[0].1
    );

    // The way out: a clock attached to the root.
    let clock = Manual::new();
    let ctx = Context::background()
        .with_timer(clock.clone())
        .with_timeout(ms(10));
    let mut done = pin!(ctx.done());
    assert!(done.as_mut().now_or_never().is_none());
    clock.advance(ms(10));
    assert!(done.now_or_never().is_some());
}
