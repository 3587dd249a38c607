//! The crate's one locking rule.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, ignoring poisoning. Every mutex in this crate guards data that each update
/// leaves consistent (a list of weak pointers, a virtual clock, the last context a mock saw),
/// so a panic elsewhere while it was held cannot leave it half-updated.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
