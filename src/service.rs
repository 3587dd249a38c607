//! The two services of the kata, and the values they return.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::{BoxError, Context};

/// Identifies the user whose dashboard is built.
pub type UserId = u64;

/// What the Profile service knows about a user.
///
/// # Examples
///
/// ```
/// let profile = failfast::Profile::new("Alice");
/// assert_eq!(profile.name, "Alice");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Profile {
    /// The user's display name.
    pub name: String,
}

impl Profile {
    /// A profile with the given display name.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(failfast::Profile::new("Alice").name, "Alice");
    /// ```
    pub fn new(name: impl Into<String>) -> Profile {
        Profile { name: name.into() }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Fetches a user's profile.
///
/// Implementations may write `async fn profile(...)`; the returned future must be `Send`
/// because it may run on another thread.
///
/// The aggregate calls this with a child [`Context`] that carries the effective deadline; it
/// is cancelled when the aggregate gives up. A service that starts work of its own (a
/// downstream request, a spawned task) should honour it. The aggregate does not rely on that:
/// it cancels a call it no longer needs by dropping its future.
///
/// # Examples
///
/// ```
/// use failfast::{BoxError, Context, Profile, ProfileService, UserId};
///
/// struct Directory;
///
/// impl ProfileService for Directory {
///     async fn profile(&self, ctx: Context, id: UserId) -> Result<Profile, BoxError> {
///         if let Some(cause) = ctx.cause() {
///             return Err(cause.into()); // done: cancelled, or past its deadline
///         }
///         Ok(Profile::new(format!("user {id}")))
///     }
/// }
/// ```
///
/// A service that calls further downstream passes on what is left of the deadline (as gRPC's
/// `grpc-timeout` header does) and stops waiting as soon as its context is done:
///
/// ```
/// use std::time::Duration;
/// use failfast::{mock, BoxError, Context, Profile, ProfileService, UserAggregator, UserId};
/// use futures::FutureExt;
///
/// struct Remote;
///
/// /// Stands in for an HTTP client: answers after 10 ms, unless the budget is shorter.
/// async fn get(path: String, budget: Option<Duration>) -> Result<String, BoxError> {
///     if budget.is_some_and(|budget| budget < Duration::from_millis(10)) {
///         return Err(format!("{path}: not enough time left").into());
///     }
///     futures_timer::Delay::new(Duration::from_millis(10)).await;
///     Ok("Alice".to_owned())
/// }
///
/// impl ProfileService for Remote {
///     async fn profile(&self, ctx: Context, id: UserId) -> Result<Profile, BoxError> {
///         let request = get(format!("/users/{id}"), ctx.remaining()).fuse();
///         let mut done = ctx.done(); // cancelled, or at the deadline
///         futures::pin_mut!(request);
///         futures::select! {
///             name = request => Ok(Profile::new(name?)),
///             () = done => Err(ctx.cause().expect("done").into()),
///         }
///     }
/// }
///
/// let agg = UserAggregator::builder(Remote, mock::orders(5)).build()?;
/// # futures::executor::block_on(async {
/// let dashboard = agg.aggregate(&Context::background(), 42).await?;
/// assert_eq!(dashboard.to_string(), "User: Alice | Orders: 5");
/// # Ok::<_, failfast::Error>(()) })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
pub trait ProfileService: Send + Sync + 'static {
    /// Fetches the profile of `id`, within `ctx`'s deadline.
    fn profile(
        &self,
        ctx: Context,
        id: UserId,
    ) -> impl Future<Output = Result<Profile, BoxError>> + Send;
}

/// Counts a user's orders.
///
/// Same contract as [`ProfileService`]: a `Send` future, a child [`Context`] that carries the
/// deadline, cancelled by dropping.
///
/// # Examples
///
/// ```
/// use failfast::{BoxError, Context, OrderService, UserId};
///
/// struct Ledger;
///
/// impl OrderService for Ledger {
///     async fn order_count(&self, _ctx: Context, _id: UserId) -> Result<u32, BoxError> {
///         Ok(5)
///     }
/// }
/// ```
pub trait OrderService: Send + Sync + 'static {
    /// Counts the orders of `id`, within `ctx`'s deadline.
    fn order_count(
        &self,
        ctx: Context,
        id: UserId,
    ) -> impl Future<Output = Result<u32, BoxError>> + Send;
}

impl<S: ProfileService> ProfileService for Arc<S> {
    fn profile(
        &self,
        ctx: Context,
        id: UserId,
    ) -> impl Future<Output = Result<Profile, BoxError>> + Send {
        (**self).profile(ctx, id)
    }
}

impl<S: OrderService> OrderService for Arc<S> {
    fn order_count(
        &self,
        ctx: Context,
        id: UserId,
    ) -> impl Future<Output = Result<u32, BoxError>> + Send {
        (**self).order_count(ctx, id)
    }
}
