//! State a worker's requests (or, in the native module, every worker's
//! roots) share behind a mutex.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks shared state; a panic that poisoned it (answered as an internal
/// error where it happened) leaves nothing half-done the next user cannot
/// take up.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
