//! `tracing` spans, behind the `tracing` feature: one per group, one per call, and one per
//! attempt of a call that retries or hedges. Without the feature every type here is empty and
//! every method does nothing, so the rest of the crate calls them unconditionally.
//!
//! What the spans are and what they record is documented in the crate's docs (`# Tracing`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;

use crate::error::BoxError;
use crate::observer::Outcome;

/// The name of a call's or an attempt's outcome in its span.
pub(crate) fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded => "succeeded",
        Outcome::Failed => "failed",
        Outcome::Panicked => "panicked",
        Outcome::TimedOut => "timed_out",
        Outcome::Cancelled => "cancelled",
        Outcome::Dropped => "dropped",
    }
}

#[cfg(feature = "tracing")]
mod on {
    use super::*;
    use crate::sync::lock;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use tracing::field::Empty;

    /// A span of the crate: allocated, and only when a subscriber wants it, so that a disabled
    /// span costs a pointer in the call's future and no allocation. Shared by its
    /// [`handle`](Span::handle)s: whichever records the outcome first does.
    #[derive(Debug)]
    pub(crate) struct Span(Option<Arc<Live>>);

    /// A span a subscriber wants: `finished` once its outcome is recorded.
    #[derive(Debug)]
    struct Live {
        span: tracing::Span,
        finished: AtomicBool,
    }

    /// A call's span, with its parent given or the current span.
    macro_rules! call_span {
        ($($parent:expr)?; $id:expr, $name:expr, $optional:expr) => {
            tracing::info_span!(
                target: "failfast",
                $(parent: $parent,)?
                "call",
                group_id = $id,
                service = $name,
                optional = $optional,
                attempts = Empty,
                outcome = Empty,
                elapsed_ms = Empty,
                error = Empty,
            )
        };
    }

    impl Span {
        /// No span (a call whose service was never made).
        pub(crate) fn none() -> Span {
            Span(None)
        }

        fn of(span: tracing::Span) -> Span {
            if span.is_disabled() {
                return Span(None);
            }
            Span(Some(Arc::new(Live {
                span,
                finished: AtomicBool::new(false),
            })))
        }

        /// A call's span, a child of its group's (of the current span once the group's has
        /// ended, or if nobody wants the group's).
        pub(crate) fn call(group: &GroupSpan, id: u64, name: &str, optional: bool) -> Span {
            let span = match group.handle() {
                Some(group) => call_span!(&group; id, name, optional),
                None => call_span!(; id, name, optional),
            };
            Span::of(span)
        }

        /// An attempt's span, a child of the current span (its call's).
        pub(crate) fn attempt(group: u64, name: &str, attempt: u32, hedge: bool) -> Span {
            let span = tracing::info_span!(
                target: "failfast",
                "attempt",
                group_id = group,
                service = name,
                attempt,
                hedge,
                outcome = Empty,
                elapsed_ms = Empty,
                error = Empty,
            );
            Span::of(span)
        }

        /// Whether a subscriber wants this span: then its end is timed.
        pub(crate) fn enabled(&self) -> bool {
            self.0.is_some()
        }

        /// Another handle on the same span: to record how its work ended from outside the
        /// future that holds it (a hedge attempt dropped because another won).
        pub(crate) fn handle(&self) -> Span {
            Span(self.0.clone())
        }

        /// Enters the span until the guard drops.
        pub(crate) fn enter(&self) -> Option<tracing::span::Entered<'_>> {
            self.0.as_ref().map(|live| live.span.enter())
        }

        /// Records how the span's work ended, once.
        pub(crate) fn finish(
            &self,
            outcome: &'static str,
            elapsed: Option<Duration>,
            error: Option<&(dyn std::error::Error + 'static)>,
        ) {
            let Some(live) = &self.0 else {
                return;
            };
            if live.finished.swap(true, Ordering::Relaxed) {
                return;
            }
            live.span.record("outcome", outcome);
            if let Some(elapsed) = elapsed {
                live.span
                    .record("elapsed_ms", crate::records::millis(elapsed));
            }
            if let Some(error) = error {
                live.span
                    .record("error", crate::records::chain(error).as_str());
            }
        }

        /// Records how the span's work ended, and closes it.
        pub(crate) fn end(
            self,
            outcome: &'static str,
            elapsed: Option<Duration>,
            error: Option<&(dyn std::error::Error + 'static)>,
        ) {
            self.finish(outcome, elapsed, error);
        }
    }

    impl Drop for Span {
        /// The last handle of a span whose outcome nobody recorded says `cancelled`.
        fn drop(&mut self) {
            if let Some(live) = self.0.take().and_then(Arc::into_inner) {
                if !live.finished.into_inner() {
                    live.span.record("outcome", "cancelled");
                }
            }
        }
    }

    /// A group's span: open from the group's creation until `run` ends (or the group drops),
    /// then closed as soon as its calls' spans are.
    #[derive(Debug)]
    pub(crate) struct GroupSpan {
        span: Mutex<tracing::Span>,
        enabled: bool,
    }

    impl GroupSpan {
        /// A child of the current span.
        pub(crate) fn new(id: u64) -> GroupSpan {
            let span = tracing::info_span!(
                target: "failfast",
                "group",
                group_id = id,
                outcome = Empty,
                elapsed_ms = Empty,
                error = Empty,
            );
            GroupSpan {
                enabled: !span.is_disabled(),
                span: Mutex::new(span),
            }
        }

        pub(crate) fn enabled(&self) -> bool {
            self.enabled
        }

        /// A handle on the span, none once it has ended. The lock is held only to clone it.
        fn handle(&self) -> Option<tracing::Span> {
            if !self.enabled {
                return None;
            }
            let span = lock(&self.span).clone();
            (!span.is_none()).then_some(span)
        }

        /// Enters the span until the guard drops (nothing once it has ended).
        pub(crate) fn enter(&self) -> Option<tracing::span::EnteredSpan> {
            self.handle().map(tracing::Span::entered)
        }

        /// Records how the group ended and lets the span close, once.
        pub(crate) fn finish(
            &self,
            outcome: &'static str,
            elapsed: Option<Duration>,
            error: Option<&(dyn std::error::Error + 'static)>,
        ) {
            if !self.enabled {
                return;
            }
            let span = std::mem::replace(&mut *lock(&self.span), tracing::Span::none());
            if span.is_none() {
                return;
            }
            Span::of(span).end(outcome, elapsed, error);
        }
    }

    impl Drop for GroupSpan {
        fn drop(&mut self) {
            let span = match self.span.get_mut() {
                Ok(span) => span,
                Err(poisoned) => poisoned.into_inner(),
            };
            if !span.is_none() {
                span.record("outcome", "cancelled");
            }
        }
    }
}

#[cfg(not(feature = "tracing"))]
mod on {
    use super::*;

    /// Without the `tracing` feature: nothing.
    #[derive(Debug)]
    pub(crate) struct Span;

    /// Without the `tracing` feature: nothing entered.
    pub(crate) struct Entered;

    impl Span {
        pub(crate) fn none() -> Span {
            Span
        }
        pub(crate) fn call(_group: &GroupSpan, _id: u64, _name: &str, _optional: bool) -> Span {
            Span
        }
        pub(crate) fn attempt(_group: u64, _name: &str, _attempt: u32, _hedge: bool) -> Span {
            Span
        }
        #[inline(always)]
        pub(crate) fn enabled(&self) -> bool {
            false
        }
        #[inline(always)]
        pub(crate) fn handle(&self) -> Span {
            Span
        }
        #[inline(always)]
        pub(crate) fn enter(&self) -> Entered {
            Entered
        }
        #[inline(always)]
        pub(crate) fn finish(
            &self,
            _outcome: &'static str,
            _elapsed: Option<Duration>,
            _error: Option<&(dyn std::error::Error + 'static)>,
        ) {
        }
        #[inline(always)]
        pub(crate) fn end(
            self,
            _outcome: &'static str,
            _elapsed: Option<Duration>,
            _error: Option<&(dyn std::error::Error + 'static)>,
        ) {
        }
    }

    /// Without the `tracing` feature: nothing, as for a call.
    pub(crate) type GroupSpan = Span;

    impl Span {
        pub(crate) fn new(_id: u64) -> Span {
            Span
        }
    }
}

pub(crate) use on::{GroupSpan, Span};

/// Records on the current span, a retried or hedged call's (its runner is polled inside it),
/// how many attempts the call started.
pub(crate) fn record_attempts(attempts: u32) {
    #[cfg(feature = "tracing")]
    tracing::Span::current().record("attempts", attempts);
    #[cfg(not(feature = "tracing"))]
    let _ = attempts;
}

pin_project! {
    /// A future polled inside `span`, which it hands back with the output, for the caller to
    /// record how it ended. Dropped before it completes, its span records `cancelled`.
    pub(crate) struct Traced<F> {
        #[pin]
        fut: F,
        span: Option<Span>,
    }
}

impl<F> Traced<F> {
    pub(crate) fn new(fut: F, span: Span) -> Traced<F> {
        Traced {
            fut,
            span: Some(span),
        }
    }

    /// Takes the span of a future that will not complete, to record why.
    pub(crate) fn take_span(self: Pin<&mut Self>) -> Span {
        self.project().span.take().unwrap_or_else(Span::none)
    }
}

/// Records `panicked` on a span if dropped while a panic unwinds out of its future's poll
/// (forgotten when the poll returns).
struct Unwinding<'a>(&'a Span);

impl Drop for Unwinding<'_> {
    fn drop(&mut self) {
        self.0.finish(outcome_name(Outcome::Panicked), None, None);
    }
}

/// `error` as the crate's spans record it.
pub(crate) fn source(error: &BoxError) -> Option<&(dyn std::error::Error + 'static)> {
    Some(&**error)
}

impl<F: Future> Future for Traced<F> {
    type Output = (F::Output, Span);

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(span) = this.span.as_ref() else {
            return Poll::Pending; // completed before: fused
        };
        let ready = {
            let _entered = span.enter();
            let unwinding = Unwinding(span);
            let ready = this.fut.poll(cx);
            std::mem::forget(unwinding);
            ready
        };
        match ready {
            Poll::Ready(output) => {
                Poll::Ready((output, this.span.take().unwrap_or_else(Span::none)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
