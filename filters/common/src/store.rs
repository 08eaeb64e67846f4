//! Shared state across Envoy workers (nonces, quota counters, breaker state)
//! behind one small trait: Envoy shared data in the filters, an in-memory
//! store with the same semantics in native tests.
//!
//! Envoy's shared data has no delete and no atomic create: `set` without a
//! CAS token, or on a key that does not exist yet, writes unconditionally.
//! Filters that need exact counts therefore create their (fixed set of) keys
//! up front with [`ensure_initialized`] and only ever update them with
//! [`update`], which retries on CAS conflicts up to a bound.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Another worker wrote the key between our read and our write.
    CasMismatch,
    /// Still conflicting after the allowed number of attempts.
    Contention,
    /// The host refused the operation.
    Unavailable,
}

/// A value and the CAS token to write it back with.
pub type Versioned = (Option<Vec<u8>>, Option<u32>);

pub trait SharedStore {
    fn get(&self, key: &str) -> Result<Versioned, StoreError>;
    /// Writes `value` if the key still has version `cas` (`None`: unconditionally).
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

/// Read-modify-write with compare-and-swap. `change` sees the current value
/// and returns what to write (or `None` to leave it) and a result. It may run
/// several times, so it must not have side effects.
pub fn update<S, T>(
    store: &S,
    key: &str,
    max_attempts: u32,
    mut change: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, T),
) -> Result<T, StoreError>
where
    S: SharedStore + ?Sized,
{
    for _ in 0..max_attempts {
        let (current, cas) = store.get(key)?;
        let (new_value, result) = change(current.as_deref());
        let Some(new_value) = new_value else {
            return Ok(result);
        };
        match store.set(key, &new_value, cas) {
            Ok(()) => return Ok(result),
            Err(StoreError::CasMismatch) => continue,
            Err(other) => return Err(other),
        }
    }
    Err(StoreError::Contention)
}

/// Creates `key` with `initial` unless it exists. Call from `on_configure`,
/// before traffic, so later updates always carry a CAS token.
pub fn ensure_initialized<S: SharedStore + ?Sized>(
    store: &S,
    key: &str,
    initial: &[u8],
) -> Result<(), StoreError> {
    match store.get(key)? {
        (Some(_), _) => Ok(()),
        (None, _) => store.set(key, initial, None),
    }
}

/// In-memory store with Envoy's shared-data semantics: the native module's
/// shared data (one for the process), and native tests'.
#[derive(Debug, Default)]
pub struct MemoryStore {
    data: Mutex<MemoryData>,
}

#[derive(Debug, Default)]
struct MemoryData {
    entries: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn key_count(&self) -> usize {
        self.data.lock().map(|d| d.entries.len()).unwrap_or(0)
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Versioned, StoreError> {
        let data = self.data.lock().map_err(|_| StoreError::Unavailable)?;
        Ok(match data.entries.get(key) {
            Some((value, cas)) => (Some(value.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut data = self.data.lock().map_err(|_| StoreError::Unavailable)?;
        // Envoy: a token of 0 (none) or a missing key never conflicts.
        if let (Some(expected), Some((_, current))) =
            (cas.filter(|c| *c != 0), data.entries.get(key))
        {
            if expected != *current {
                return Err(StoreError::CasMismatch);
            }
        }
        data.next_cas = data.next_cas.wrapping_add(1).max(1);
        let next = data.next_cas;
        match data.entries.get_mut(key) {
            // The entry's buffer is reused: no allocation per update.
            Some(entry) => {
                entry.0.clear();
                entry.0.extend_from_slice(value);
                entry.1 = next;
            }
            None => {
                data.entries.insert(key.to_string(), (value.to_vec(), next));
            }
        }
        Ok(())
    }
}

/// Envoy shared data, through the proxy-wasm host.
#[cfg(feature = "wasm")]
#[derive(Debug, Default, Clone, Copy)]
pub struct ProxyWasmStore;

#[cfg(feature = "wasm")]
impl SharedStore for ProxyWasmStore {
    fn get(&self, key: &str) -> Result<Versioned, StoreError> {
        match proxy_wasm::hostcalls::get_shared_data(key) {
            Ok((value, cas)) => Ok((value, cas)),
            Err(_) => Err(StoreError::Unavailable),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match proxy_wasm::hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(proxy_wasm::types::Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(_) => Err(StoreError::Unavailable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    fn counter_value(bytes: Option<&[u8]>) -> u64 {
        bytes
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0)
    }

    fn increment(store: &MemoryStore, key: &str, attempts: u32) -> Result<u64, StoreError> {
        update(store, key, attempts, |current| {
            let next = counter_value(current) + 1;
            (Some(next.to_le_bytes().to_vec()), next)
        })
    }

    #[test]
    fn a_stale_cas_token_is_refused() {
        let store = MemoryStore::new();
        store.set("k", b"1", None).unwrap();
        let (_, cas) = store.get("k").unwrap();
        store.set("k", b"2", cas).unwrap();
        assert_eq!(store.set("k", b"3", cas), Err(StoreError::CasMismatch));
        assert_eq!(store.get("k").unwrap().0.as_deref(), Some(&b"2"[..]));
    }

    #[test]
    fn update_leaves_the_value_alone_when_asked() {
        let store = MemoryStore::new();
        let seen = update(&store, "k", 3, |current| (None, current.is_none())).unwrap();
        assert!(seen);
        assert_eq!(store.key_count(), 0);
    }

    #[test]
    fn ensure_initialized_does_not_overwrite() {
        let store = MemoryStore::new();
        ensure_initialized(&store, "k", b"0").unwrap();
        store.set("k", b"5", None).unwrap();
        ensure_initialized(&store, "k", b"0").unwrap();
        assert_eq!(store.get("k").unwrap().0.as_deref(), Some(&b"5"[..]));
    }

    #[test]
    fn update_gives_up_after_the_allowed_attempts() {
        /// A store where another writer always wins the race.
        struct AlwaysConflicting;
        impl SharedStore for AlwaysConflicting {
            fn get(&self, _: &str) -> Result<Versioned, StoreError> {
                Ok((None, Some(1)))
            }
            fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), StoreError> {
                Err(StoreError::CasMismatch)
            }
        }
        let mut calls = 0;
        let result = update(&AlwaysConflicting, "k", 4, |_| {
            calls += 1;
            (Some(vec![1]), ())
        });
        assert_eq!(result, Err(StoreError::Contention));
        assert_eq!(calls, 4);
    }

    #[test]
    fn concurrent_increments_lose_no_update() {
        let store = Arc::new(MemoryStore::new());
        ensure_initialized(&*store, "counter", &0u64.to_le_bytes()).unwrap();
        let threads = 8;
        let per_thread = 2_000;
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let store = Arc::clone(&store);
                thread::spawn(move || {
                    for _ in 0..per_thread {
                        increment(&store, "counter", u32::MAX).unwrap();
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        let (value, _) = store.get("counter").unwrap();
        assert_eq!(counter_value(value.as_deref()), threads * per_thread);
    }

    #[test]
    fn concurrent_bounded_admission_never_over_admits() {
        // The pattern quotas use: admit while the counter is below a limit.
        let store = Arc::new(MemoryStore::new());
        ensure_initialized(&*store, "quota", &0u64.to_le_bytes()).unwrap();
        let limit = 500;
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let store = Arc::clone(&store);
                thread::spawn(move || {
                    let mut admitted = 0u64;
                    for _ in 0..200 {
                        let ok = update(&*store, "quota", u32::MAX, |current| {
                            let used = counter_value(current);
                            if used < limit {
                                (Some((used + 1).to_le_bytes().to_vec()), true)
                            } else {
                                (None, false)
                            }
                        })
                        .unwrap();
                        admitted += u64::from(ok);
                    }
                    admitted
                })
            })
            .collect();
        let admitted: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(admitted, limit);
    }
}
