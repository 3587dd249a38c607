//! Fail-fast fan-out for async Rust: Go's errgroup + context, on any executor.
//!
//! A [`UserAggregator`] asks a [`ProfileService`] and an [`OrderService`] for a user's data
//! concurrently and answers `User: Alice | Orders: 5`. If either call fails or panics, or the
//! deadline passes, or the caller cancels, it answers at once with an [`AggregateError`] that
//! names the cause, and cancels the call still in flight: its future is dropped, not left to
//! finish. It runs the same way inline (no spawn), on async-std, smol and tokio.
//!
//! # Examples
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
//! | `errgroup.WithContext` + `g.Go` + `g.Wait` | [`UserAggregator::aggregate`]: fan out, race the deadline, abort the rest on the first error |
//! | `ctx context.Context` first argument | `&Context` first argument: deadline + cancellation, parent to child |
//! | `context.WithTimeout`, `WithCancel` | [`Context::with_timeout`], [`Context::with_cancel`], builder `.timeout(d)`; the earlier deadline wins |
//! | `context.DeadlineExceeded` | [`AggregateError::DeadlineExceeded`] |
//! | functional options `New(WithTimeout(2*time.Second))` | `UserAggregator::builder(p, o).timeout(..).build()` |
//! | `log/slog` | the `log` facade with key-values, target `failfast` |
//! | a goroutine's panic crashes the process | [`AggregateError::Panicked`], the other call cancelled |
//!
//! # Features
//!
//! * `futures-timer` (default): `timer::FuturesTimer`, the default timer. Without it there is
//!   no default timer: set one with `.timer(..)` on the builder and on each `mock::Mock`.
//! * `smol`: `executor::Smol` and `timer::AsyncIo`.
//! * `tokio`: `executor::Tokio` and `timer::Tokio`.
//! * `async-std`: `executor::AsyncStd` and `timer::AsyncIo` (async-std is deprecated
//!   upstream in favour of smol).
//!
//! # Logging
//!
//! Records go through the [`log`] facade with key-values, target `failfast`: `debug` when an
//! aggregate starts (`user_id`, `budget_ms`), as each call finishes (`service`, `elapsed_ms`,
//! `error` if it failed) and when it succeeds; one `warn` when it fails, times out, is
//! cancelled or a call panics (`error` with its causes, `cancelled`: the calls it cancelled,
//! `elapsed_ms`). The library never installs a logger.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod aggregator;
mod context;
mod error;
mod fanout;
mod logger;
mod service;
mod sync;

pub mod executor;
pub mod mock;
pub mod timer;

pub use aggregator::{Dashboard, UserAggregator, UserAggregatorBuilder};
pub use context::{CancelHandle, Cancelled, Context};
pub use error::{AggregateError, BoxError, BuildError};
pub use executor::Executor;
pub use service::{OrderService, Profile, ProfileService, UserId};
pub use timer::Timer;
