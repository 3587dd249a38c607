//! One attempt at a call, wherever it runs: the service's future is made with the call's
//! context on the first poll, polled with its panics caught, cut off at the call's own
//! deadline, and dropped (catching a panic in its destructor) as soon as it has ended. Then
//! [`ended`] hands the failure of a required call to the group, frees its slot and reports it.

use std::borrow::Cow;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use log::Level;
use log::kv::Value;
use pin_project_lite::pin_project;

use crate::context::{CancelHandle, Context};
use crate::error::{BoxError, Error, panic_message};
use crate::observer::{CallFinished, CallStarted, Outcome};
use crate::records::{chain, millis};
use crate::state::Shared;
use crate::timer::Timer;
use crate::trace::{Span, outcome_name};

/// What a call whose group finished before it answered yields.
pub(crate) const GROUP_FINISHED: &str = "the group finished before this call answered, so the call was cancelled: await calls inside `run`";

/// How far a call has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Made, waiting for the group to launch it (for a slot, under a limit).
    Registered,
    /// Launched: handed to the executor, which has not polled it yet.
    Launched,
    /// Its service was called.
    Running,
    /// It has ended (or was cancelled).
    Done,
}

/// A call's own settings, fixed when it is launched.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Settings {
    pub(crate) timeout: Option<Duration>,
    pub(crate) optional: bool,
}

pin_project! {
    /// Runs one service: `Mk` makes its future `Fut`; `S` is the timer's sleep.
    #[project = AttemptProj]
    pub(crate) struct Attempt<Mk, Fut, S> {
        // The maker, then the service's future, then nothing: one field the size of the
        // larger of the two, not both.
        #[pin]
        stage: Stage<Mk, Fut>,
        // The service was called (its future made).
        made: bool,
        // When the service was called, if the call times itself.
        started: Option<Instant>,
        // The call's own deadline, when it is earlier than the group's: boxed, because few
        // calls have one and a sleep can be large.
        own: Option<Pin<Box<Own<S>>>>,
        // The call's `tracing` span, from when its service is made until it ends.
        span: Span,
    }

    impl<Mk, Fut, S> PinnedDrop for Attempt<Mk, Fut, S> {
        fn drop(this: Pin<&mut Self>) {
            let _ = this.stop();
        }
    }
}

pin_project! {
    /// Where an attempt is: not started (its maker), running (its service), or over.
    #[project = StageProj]
    #[project_replace = StageOwned]
    enum Stage<Mk, Fut> {
        Make { make: Mk },
        Run { #[pin] fut: Fut },
        Over,
    }
}

pin_project! {
    /// A call's own deadline: when, the handle that cancels its own context, and the sleep
    /// (made only if the call is pending).
    struct Own<S> {
        deadline: Instant,
        cancel: CancelHandle,
        #[pin]
        sleep: Option<S>,
    }
}

impl<Mk, Fut, S> Attempt<Mk, Fut, S> {
    pub(crate) fn new(make: Mk) -> Self {
        Attempt {
            stage: Stage::Make { make },
            made: false,
            started: None,
            own: None,
            span: Span::none(),
        }
    }

    /// Whether the service was called.
    pub(crate) fn made(&self) -> bool {
        self.made
    }

    /// Time since the service was called, if the call times itself (no clock read if not).
    pub(crate) fn elapsed<T: Timer>(&self, timer: &T) -> Duration {
        self.started.map_or(Duration::ZERO, |started| {
            timer.now().saturating_duration_since(started)
        })
    }

    /// Drops the service, its maker and the sleep, catching their panics, and cancels the
    /// call's own context. Returns the message of a panic raised by the service's destructor.
    pub(crate) fn stop(self: Pin<&mut Self>) -> Option<String> {
        let this = self.project();
        let (mut stage, own) = (this.stage, this.own);
        if matches!(*stage, Stage::Over) && own.is_none() && !this.span.enabled() {
            return None; // stopped already: nothing left to drop
        }
        let panicked = {
            let _entered = this.span.enter();
            // The maker or the service; a maker's panic while dropped is not the service's.
            let was_running = matches!(*stage, Stage::Run { .. });
            catch_unwind(AssertUnwindSafe(|| stage.set(Stage::Over)))
                .err()
                .map(contain)
                .filter(|_| was_running)
        };
        // Closes the span: `cancelled` unless the call recorded how it ended.
        *this.span = Span::none();
        if let Some(own) = own.as_ref() {
            own.cancel.cancel();
        }
        let _ = catch_unwind(AssertUnwindSafe(|| *own = None));
        panicked
    }

    /// Polls the attempt: `Ready` once, with the call's result, after which the service has
    /// been dropped; `Pending` forever after that, or once stopped.
    ///
    /// `name` is a `&Cow` (here and below) so that a `&'static str` name goes into errors
    /// without an allocation.
    #[allow(clippy::ptr_arg)]
    pub(crate) fn poll_attempt<V, Er, T>(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        shared: &Shared,
        name: &Cow<'static, str>,
        settings: Settings,
        timer: &T,
    ) -> Poll<Result<V, Error>>
    where
        Mk: FnOnce(Context) -> Fut,
        Fut: Future<Output = Result<V, Er>>,
        Er: Into<BoxError>,
        T: Timer<Sleep = S>,
    {
        let timeout = settings.timeout;
        let mut this = self.as_mut().project();
        if !*this.made {
            // Not made: the stage is the maker, or over if the call was stopped first.
            let StageOwned::Make { make } = this.stage.as_mut().project_replace(Stage::Over) else {
                return Poll::Pending; // stopped before it started
            };
            *this.made = true;
            *this.span = Span::call(&shared.span, shared.id, name, settings.optional);
            let timing = shared.timing || timeout.is_some() || this.span.enabled();
            let now = timing.then(|| timer.now());
            *this.started = now;
            let mut ctx = shared.ctx.clone();
            if let (Some(now), Some(timeout)) = (now, timeout) {
                let own = now.checked_add(timeout);
                if let Some(own) = own.filter(|&own| shared.deadline.is_none_or(|d| own < d)) {
                    let (own_ctx, cancel) = ctx.with_deadline(own).with_cancel();
                    ctx = own_ctx;
                    *this.own = Some(Box::pin(Own {
                        deadline: own,
                        cancel,
                        sleep: None,
                    }));
                }
            }
            if let Some(observer) = &shared.observer {
                observer.call_started(&CallStarted {
                    group: shared.id,
                    name,
                });
            }
            if this
                .own
                .as_ref()
                .is_some_and(|own| Some(own.deadline) <= now)
            {
                // A zero timeout: the service is not called at all.
                let result = Err(timed_out(name, timeout));
                let span = std::mem::replace(this.span, Span::none());
                close(span, *this.started, shared, &result, timer);
                return Poll::Ready(result);
            }
            let made = {
                let _entered = this.span.enter();
                catch_unwind(AssertUnwindSafe(|| make(ctx)))
            };
            match made {
                Ok(fut) => this.stage.set(Stage::Run { fut }),
                Err(payload) => {
                    let result = Err(panicked(name, payload));
                    let span = std::mem::replace(this.span, Span::none());
                    close(span, *this.started, shared, &result, timer);
                    return Poll::Ready(result);
                }
            }
        }

        let StageProj::Run { fut } = this.stage.as_mut().project() else {
            return Poll::Pending;
        };
        let polled = {
            let _entered = this.span.enter();
            catch_unwind(AssertUnwindSafe(|| fut.poll(cx)))
        };
        let mut result = match polled {
            Ok(Poll::Ready(Ok(value))) => Ok(value),
            // An error once the call's own deadline has passed is the service obeying its
            // context, whose deadline that is (a retried call's attempt cut there, say): the
            // call timed out, as an error past the group's deadline is the deadline.
            Ok(Poll::Ready(Err(_)))
                if this
                    .own
                    .as_ref()
                    .is_some_and(|own| timer.now() >= own.deadline) =>
            {
                Err(timed_out(name, timeout))
            }
            Ok(Poll::Ready(Err(error))) => Err(Error::Service {
                service: name.clone(),
                source: Arc::from(error.into()),
            }),
            Err(payload) => Err(panicked(name, payload)),
            Ok(Poll::Pending) => match poll_own_deadline(&mut this, cx, timer) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => Err(timed_out(name, timeout)),
                Poll::Ready(Err(error)) => Err(error),
            },
        };
        // Ended: drop the service here, where a panic in its destructor is still caught.
        // The span stays open (and entered) while the service drops, and then records how
        // the call ended.
        let span = std::mem::replace(self.as_mut().project().span, Span::none());
        let stopped = {
            let _entered = span.enter();
            self.as_mut().stop()
        };
        if let Some(message) = stopped {
            result = Err(Error::Panicked {
                service: name.clone(),
                message,
            });
        }
        close(span, self.started, shared, &result, timer);
        Poll::Ready(result)
    }

    /// Ends the call's span, if it is open, as `outcome`: a call its executor dropped.
    pub(crate) fn close_span<T: Timer>(self: Pin<&mut Self>, outcome: Outcome, timer: &T) {
        let this = self.project();
        let span = std::mem::replace(this.span, Span::none());
        end_span(span, *this.started, outcome, None, timer);
    }
}

/// Ends a call's span with how the call ended, timed from `started`.
fn close<V, T: Timer>(
    span: Span,
    started: Option<Instant>,
    shared: &Shared,
    result: &Result<V, Error>,
    timer: &T,
) {
    if !span.enabled() {
        return;
    }
    let outcome = match result {
        Ok(_) => Outcome::Succeeded,
        // The service obeying the group's cancellation, as `ended` reports it.
        Err(Error::Service { .. }) if shared.ctx.is_cancelled() => Outcome::Cancelled,
        Err(error) => Outcome::of(error),
    };
    end_span(span, started, outcome, result.as_ref().err(), timer);
}

/// Ends a call's span as `outcome`, timed from `started` (no clock read if nobody wants it).
fn end_span<T: Timer>(
    span: Span,
    started: Option<Instant>,
    outcome: Outcome,
    error: Option<&Error>,
    timer: &T,
) {
    if !span.enabled() {
        return;
    }
    let elapsed = started.map(|started| timer.now().saturating_duration_since(started));
    let error = error.map(|error| error as &(dyn std::error::Error + 'static));
    span.end(outcome_name(outcome), elapsed, error);
}

/// Polls the call's own deadline, creating its sleep the first time: a call that answers at
/// its first poll needs no timer. `Ready(Err)` when the timer panicked.
fn poll_own_deadline<Mk, Fut, T: Timer>(
    this: &mut AttemptProj<'_, Mk, Fut, T::Sleep>,
    cx: &mut TaskContext<'_>,
    timer: &T,
) -> Poll<Result<(), Error>> {
    let Some(own) = this.own.as_mut() else {
        return Poll::Pending;
    };
    let mut own = own.as_mut().project();
    if own.sleep.is_none() {
        let deadline = *own.deadline;
        match catch_unwind(AssertUnwindSafe(|| timer.sleep_until(deadline))) {
            Ok(sleep) => own.sleep.set(Some(sleep)),
            Err(payload) => return Poll::Ready(Err(timer_failed(payload))),
        }
    }
    let Some(sleep) = own.sleep.as_mut().as_pin_mut() else {
        return Poll::Pending;
    };
    match catch_unwind(AssertUnwindSafe(|| sleep.poll(cx))) {
        Ok(Poll::Pending) => Poll::Pending,
        Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
        Err(payload) => Poll::Ready(Err(timer_failed(payload))),
    }
}

/// What every call does once it has ended: hands the failure of a required call to the group,
/// frees its slot, and reports it (only if its service was called).
pub(crate) fn ended(
    shared: &Shared,
    name: &str,
    error: Option<&Error>,
    settings: Settings,
    made: bool,
    cancelled: bool,
    elapsed: Duration,
) {
    // A service error once the group has cancelled the call's context (at its first failure,
    // the caller's cancellation or its end) is the service obeying that cancellation: it is
    // reported as cancelled, as `run` itself reports it. (Read before this call's own failure
    // cancels the context.)
    let obeyed = matches!(error, Some(Error::Service { .. })) && shared.ctx.is_cancelled();
    if let Some(error) = error {
        if !cancelled && !settings.optional {
            // The first failure of a required call, even one caused by the caller's
            // cancellation: `run` reports that as `Cancelled`, keeping the documented order.
            shared.fail(error.clone());
        }
    }
    shared.finished();
    if made {
        report(
            shared,
            name,
            error,
            elapsed,
            settings.optional,
            cancelled || obeyed,
        );
    }
}

/// The record and the event of a call that started and ended.
fn report(
    shared: &Shared,
    name: &str,
    error: Option<&Error>,
    elapsed: Duration,
    optional: bool,
    cancelled: bool,
) {
    let records = &shared.records;
    let (level, message) = match error {
        _ if cancelled => (Level::Debug, "fetch cancelled"),
        None => (Level::Debug, "fetch finished"),
        Some(_) if optional => (Level::Info, "optional fetch failed, going on without it"),
        Some(_) => (Level::Debug, "fetch failed"),
    };
    if records.enabled(level) {
        let mut keys = vec![
            ("service", Value::from(name)),
            ("elapsed_ms", Value::from(millis(elapsed))),
        ];
        let text = error.filter(|_| !cancelled).map(|error| chain(error));
        if let Some(text) = &text {
            keys.push(("error", Value::from(text.as_str())));
        }
        records.write(level, message, &keys);
    }
    if let Some(observer) = &shared.observer {
        let outcome = match error {
            _ if cancelled => Outcome::Cancelled,
            None => Outcome::Succeeded,
            Some(error) => Outcome::of(error),
        };
        observer.call_finished(&CallFinished {
            group: shared.id,
            name,
            elapsed,
            outcome,
            optional,
            error: error.filter(|_| !cancelled),
        });
    }
}

#[allow(clippy::ptr_arg)]
fn timed_out(name: &Cow<'static, str>, timeout: Option<Duration>) -> Error {
    Error::TimedOut {
        service: name.clone(),
        timeout: timeout.unwrap_or_default(),
    }
}

#[allow(clippy::ptr_arg)]
fn panicked(name: &Cow<'static, str>, payload: Box<dyn std::any::Any + Send>) -> Error {
    Error::Panicked {
        service: name.clone(),
        message: contain(payload),
    }
}

/// The error of a timer that panicked.
pub(crate) fn timer_failed(payload: Box<dyn std::any::Any + Send>) -> Error {
    Error::Timer {
        message: contain(payload),
    }
}

/// The message of a caught panic. The payload is dropped inside `catch_unwind` too: a payload
/// whose own destructor panics must not escape either.
pub(crate) fn contain(payload: Box<dyn std::any::Any + Send>) -> String {
    let message = panic_message(&*payload);
    let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
    message
}
