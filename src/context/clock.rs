//! Where a context's deadline gets its clock: a [`Timer`] behind a trait object.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use crate::timer::Timer;

/// A sleep made by a [`Clock`], boxed: made only when someone waits on a deadline.
pub(crate) type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A [`Timer`] without its `Sleep` type, so that contexts can carry any timer.
pub(crate) trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
    fn sleep_until(&self, deadline: Instant) -> Sleep;
}

impl<T: Timer> Clock for T {
    fn now(&self) -> Instant {
        Timer::now(self)
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        Box::pin(Timer::sleep_until(self, deadline))
    }
}

/// The clock of contexts that were given none: `timer::FuturesTimer` (feature `futures-timer`).
#[cfg(feature = "futures-timer")]
pub(crate) fn default_clock() -> Option<&'static dyn Clock> {
    static DEFAULT: crate::timer::FuturesTimer = crate::timer::FuturesTimer;
    Some(&DEFAULT)
}

/// Without the `futures-timer` feature, contexts that were given no clock have none: their
/// deadlines are noticed when someone asks, and never fire on their own.
#[cfg(not(feature = "futures-timer"))]
pub(crate) fn default_clock() -> Option<&'static dyn Clock> {
    None
}
