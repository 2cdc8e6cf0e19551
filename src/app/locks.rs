//! Locking that survives a panic in another thread.
//!
//! Every critical section in this crate changes its state in single steps, so a
//! thread that panicked while holding a lock cannot have left the state half
//! updated; the data behind a poisoned lock is still valid and the program goes on.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Locks `mutex`, taking over the lock if a panicking thread poisoned it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `condvar` while `blocked` holds.
pub(crate) fn wait_while<'a, T>(
    condvar: &Condvar,
    guard: MutexGuard<'a, T>,
    blocked: impl FnMut(&mut T) -> bool,
) -> MutexGuard<'a, T> {
    condvar
        .wait_while(guard, blocked)
        .unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `condvar` while `blocked` holds, for at most `timeout`.
pub(crate) fn wait_timeout_while<'a, T>(
    condvar: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
    blocked: impl FnMut(&mut T) -> bool,
) -> MutexGuard<'a, T> {
    condvar
        .wait_timeout_while(guard, timeout, blocked)
        .map_or_else(|poisoned| poisoned.into_inner().0, |(guard, _)| guard)
}
