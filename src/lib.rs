//! Fail-fast fan-out for async Rust: Go's errgroup + context, on any executor.
//!
//! A [`Group`] runs named calls of any types concurrently. The first failure (an error, a
//! panic, a call's own timeout), the group's deadline or the caller's cancellation ends it at
//! once with an [`Error`] that names the cause, and every call still in flight is cancelled:
//! its future is dropped, not left to finish. It runs the same way inline (no spawn), on
//! async-std, smol and tokio, and in virtual time for tests.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use failfast::{BoxError, Context, FailFast};
//! use futures::future::try_join3;
//!
//! # async fn profile(_: Context) -> Result<&'static str, BoxError> { Ok("Alice") }
//! # async fn orders(_: Context) -> Result<u32, BoxError> { Ok(5) }
//! # async fn recs(_: Context) -> Result<Vec<&'static str>, BoxError> { Err("recs down".into()) }
//! let ff = FailFast::builder().timeout(Duration::from_secs(1)).build()?;
//! # futures::executor::block_on(async {
//! let group = ff.group(&Context::background());
//! let (name, count, recs) = group
//!     .run(try_join3(
//!         group.call("profile", profile),
//!         group.call("orders", orders),
//!         group.call("recs", recs).timeout(Duration::from_millis(50)).optional(),
//!     ))
//!     .await?;
//! assert_eq!((name, count, recs), ("Alice", 5, None)); // recs failed on its own: optional
//! # Ok::<_, failfast::Error>(()) })?;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
//!
//! Calls whose service may be called again ([`Group::idempotent`]) can [`Retry`] and
//! [`Hedge`] within the group's deadline and a shared [`Budget`]; [`Group::gather`] takes k
//! of n calls, or as many as the deadline allows.
//!
//! The kata that started the crate, a [`UserAggregator`] over a [`ProfileService`] and an
//! [`OrderService`], is a short client of the group:
//!
//! ```
//! use std::time::Duration;
//! use failfast::{mock, AggregateError, Context, UserAggregator};
//!
//! let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
//!     .timeout(Duration::from_secs(1))
//!     .build()?;
//! # futures::executor::block_on(async {
//! let dashboard = agg.aggregate(&Context::background(), 42).await?;
//! assert_eq!(dashboard.to_string(), "User: Alice | Orders: 5");
//! # Ok::<_, AggregateError>(()) })?;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
//!
//! # Go to Rust
//!
//! | Go | failfast |
//! |---|---|
//! | `errgroup.WithContext(ctx)` | [`FailFast::group`]`(&ctx)`, settings made once with [`FailFast::builder`] |
//! | `g.Go(func() error {..})` | [`Group::call`]`(name, \|ctx\| async {..})`: typed results, named in errors |
//! | `g.Wait()` | [`Group::run`]`(join)`: returns at the first failure, cancelling the rest |
//! | `g.SetLimit(n)` | [`FailFastBuilder::limit`]`(n)` |
//! | `ctx context.Context` first argument | `Context` first argument: deadline + cancellation, parent to child |
//! | `context.WithTimeout`, `WithCancel` | [`Context::with_timeout`], [`Context::with_cancel`], builder `.timeout(d)`, [`Call::timeout`]; the earlier deadline wins |
//! | `context.DeadlineExceeded` | [`Error::DeadlineExceeded`] from a group; [`ContextError::DeadlineExceeded`] from [`Context::err`] |
//! | `<-ctx.Done()`, `ctx.Err()` | [`Context::done`]`.await` (cancellation or deadline), [`Context::err`] |
//! | `WithCancelCause`, `WithTimeoutCause`, `context.Cause` | [`CancelHandle::cancel_with`], [`Context::with_timeout_cause`], [`Context::cause`]; a group cancels its calls with the first failure as the cause |
//! | `context.AfterFunc` | [`Context::after`], stopped with [`AfterHandle::stop`] |
//! | `WithoutCancel` | [`Context::without_cancel`] |
//! | `WithValue`, `ctx.Value(key)` | [`Context::with_value`], [`Context::value`]`::<T>()`: the type is the key |
//! | `defer cancel()` / tokio's `DropGuard` | [`CancelHandle::drop_guard`] |
//! | tokio's `run_until_cancelled` | [`Context::run_until_cancelled`] |
//! | functional options `New(WithTimeout(2*time.Second))` | `FailFast::builder().timeout(..).build()` |
//! | `log/slog` | the `log` facade with key-values, target `failfast` |
//! | a goroutine's panic crashes the process | [`Error::Panicked`], the other calls cancelled |
//!
//! # Features
//!
//! * `futures-timer` (default): `timer::FuturesTimer`, the default timer. Without it there is
//!   no default timer: set one with `.timer(..)` on the builder and on each `mock::Mock`,
//!   and attach one to a root context with [`Context::with_timer`] if anything waits on its
//!   deadline outside a group (its `err()` and `is_done()` report a passed deadline either
//!   way; `done()` warns once that it cannot fire).
//! * `smol`: `executor::Smol` and `timer::AsyncIo`.
//! * `tokio`: `executor::Tokio` and `timer::Tokio`.
//! * `async-std`: `executor::AsyncStd` and `timer::AsyncIo` (async-std is deprecated
//!   upstream in favour of smol).
//! * `tracing`: [`tracing`](https://docs.rs/tracing) spans for groups, calls and attempts
//!   (below). The `log` records are written either way.
//!
//! # Logging
//!
//! Records go through the [`log`](https://docs.rs/log) facade with key-values, target
//! `failfast`, each carrying `group_id` and the fields given with [`Group::log_field`] (the
//! kata adds `user_id`):
//!
//! * `debug` when a group starts (`calls`, `budget_ms` when there is a deadline), as each call
//!   finishes (`service`, `elapsed_ms`, and `error` if it failed: `fetch finished`,
//!   `fetch failed`, `fetch cancelled`), and when the group succeeds (`elapsed_ms`);
//! * `info` when an optional call fails (`service`, `elapsed_ms`, `error`);
//! * one `warn` when a group fails, times out or is cancelled (`error` with its causes,
//!   `elapsed_ms`, and `cancelled`: the calls it cancelled, when there were any), or could
//!   not start because the context was already cancelled or past its deadline; a `warn`
//!   when a deadline's timer did not fire or an executor never polled its calls.
//!
//! Dropping `run` logs `group dropped by the caller` at `debug`. The library never installs a
//! logger. The key-values are only printed by a logger that supports them: env_logger needs
//! its `kv` feature, or records read bare (`fetch finished`).
//!
//! # Tracing
//!
//! With the `tracing` feature, each group, call and attempt is a span at `INFO`, target
//! `failfast`, so that failfast shows in a tokio or tracing user's traces:
//!
//! * `group` (`group_id`), a child of the span current where the group was made ([`FailFast::group`]),
//!   entered while [`Group::run`] polls; it ends when `run` does;
//! * `call` (`group_id`, `service`, `optional`, and `attempts` for a call that retries or
//!   hedges), a child of its group's span, entered while its service is made and polled, on
//!   whatever thread polls it: the service's own spans (an HTTP client's, say) nest under it,
//!   spawned calls included;
//! * `attempt` (`group_id`, `service`, `attempt`, `hedge`), a child of its call's span, for
//!   each attempt of a call that retries or hedges ([`Group::idempotent`]).
//!
//! Each records `outcome` when it ends, with `elapsed_ms` (by the group's timer, so virtual
//! under `timer::Manual`) and `error` (with its causes) when it failed. A call's or an
//! attempt's outcome is `succeeded`, `failed`, `panicked`, `timed_out`, `cancelled` or
//! `dropped`, as [`Outcome`] names them; a group's is `succeeded`, `failed`, `cancelled` or
//! `deadline_exceeded`. An attempt dropped unfinished (a hedge that lost the race, or any
//! attempt of a call the group ended) records `cancelled` with the time it ran; a subscriber
//! can also time any span itself (fmt's `time.busy` and `time.idle`). Spans that no
//! subscriber wants cost a check each, and no clock read.
//!
//! The `log` records are written as well. A subscriber that bridges `log` into `tracing`
//! (tracing-subscriber's `tracing-log` feature, on by default) shows them as events without
//! their key-values; the spans carry the same facts, so such a subscriber may filter the
//! `failfast` target out of the bridge, or the application may keep a `log` logger for it.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod aggregator;
mod attempt;
mod call;
mod context;
mod error;
mod fail_fast;
mod gather;
mod group;
mod idempotent;
mod inline;
mod observer;
mod policy;
mod records;
mod registry;
mod repeat;
mod run;
mod service;
mod spawned;
mod state;
mod sync;
mod trace;

pub mod executor;
pub mod mock;
pub mod timer;

pub use aggregator::{Dashboard, UserAggregator, UserAggregatorBuilder};
pub use call::{Call, Optional};
pub use context::{
    AfterHandle, CancelHandle, Cancelled, Context, ContextError, Done, DropGuard, RunUntilCancelled,
};
pub use error::{AggregateError, BoxError, BuildError, Error, SharedError};
pub use executor::Executor;
pub use fail_fast::{FailFast, FailFastBuilder};
pub use gather::Gather;
pub use group::Group;
pub use idempotent::Idempotent;
pub use observer::{AttemptFinished, CallFinished, CallStarted, GroupFinished, Observer, Outcome};
pub use policy::budget::Budget;
pub use policy::hedge::{Hedge, HedgeBuilder};
pub use policy::retry::{AttemptFailure, GaveUp, Retry, RetryBuilder, StopReason};
pub use run::Run;
pub use service::{OrderService, Profile, ProfileService, UserId};
pub use timer::Timer;
