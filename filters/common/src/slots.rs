//! A fixed table of shared-data keys: what every bounded table the
//! policies keep in shared data stands on (sign-auth's nonces, ext-auth's
//! decisions, throttling's counters).
//!
//! Shared data has no delete, so a key per item would grow forever.
//! Instead a table owns `slots` keys `<prefix><n>`, created when the
//! configuration loads and never more; an item hashes to one slot, whose
//! value the table's owner encodes (a few entries per slot, reused as they
//! expire) and changes only by compare-and-swap ([`update`]), so every
//! worker sees every change exactly once.

use crate::key::ShortKey;
use crate::store::{ensure_initialized, update, SharedStore, StoreError};

/// A table of `slots` shared-data keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotTable {
    prefix: String,
    slots: u32,
}

impl SlotTable {
    /// Keys `<prefix><n>` for `n` in `0..slots` (at least one).
    pub fn new(prefix: impl Into<String>, slots: u32) -> Self {
        Self {
            prefix: prefix.into(),
            slots: slots.max(1),
        }
    }

    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// The slot a hash falls in.
    pub fn slot_of(&self, hash: u64) -> u32 {
        u32::try_from(hash % u64::from(self.slots)).unwrap_or(0)
    }

    /// The shared-data key of a slot; the only keys the table ever writes.
    pub fn key(&self, slot: u32) -> ShortKey {
        ShortKey::format(format_args!("{}{}", self.prefix, slot % self.slots))
    }

    /// Creates every slot with `empty` unless it exists (a configuration
    /// pushed again keeps what the slots hold); call when the
    /// configuration loads.
    pub fn initialize(&self, store: &dyn SharedStore, empty: &[u8]) -> Result<(), StoreError> {
        (0..self.slots).try_for_each(|slot| ensure_initialized(store, &self.key(slot), empty))
    }

    /// A slot's value.
    pub fn read(&self, store: &dyn SharedStore, slot: u32) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(store.get(&self.key(slot))?.0)
    }

    /// Changes a slot by compare-and-swap (see [`update`]).
    pub fn update<T>(
        &self,
        store: &dyn SharedStore,
        slot: u32,
        max_attempts: u32,
        change: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, T),
    ) -> Result<T, StoreError> {
        update(store, &self.key(slot), max_attempts, change)
    }
}

/// A digest naming a cache entry: 8 bytes that tell entries of one slot
/// apart, 8 that pick the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 16]);

impl CacheKey {
    /// The key of `parts` (each length-prefixed, so no two lists of parts
    /// share a key): the first 16 bytes of their SHA-256.
    pub fn of(parts: &[&[u8]]) -> Self {
        let digest = crate::fleet::sha256(parts);
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        Self(key)
    }

    fn fingerprint(&self) -> u64 {
        u64::from_le_bytes(self.0[..8].try_into().unwrap_or_default()).max(1)
    }

    fn slot_hash(&self) -> u64 {
        u64::from_le_bytes(self.0[8..].try_into().unwrap_or_default())
    }
}

/// What storing an entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Kept,
    /// Kept, and a live entry made room for it.
    Evicted,
    /// Larger than the table's `max_entry_bytes`: not kept.
    TooLarge,
}

/// A bounded cache over a [`SlotTable`] (ext-auth's decisions, sign-auth's
/// verified tokens): a key hashes to one slot, which holds up to
/// `entries_per_slot` payloads with their expiry. Expired entries make room
/// first; when all are live, the one expiring soonest is evicted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiringCache {
    table: SlotTable,
    entries_per_slot: usize,
    max_entry_bytes: usize,
}

/// fingerprint, expiry, payload length.
const ENTRY_HEADER: usize = 8 + 8 + 4;
const MAX_CAS_ATTEMPTS: u32 = 16;

struct Entry {
    fingerprint: u64,
    expires_ms: u64,
    payload: Vec<u8>,
}

impl ExpiringCache {
    pub fn new(
        prefix: impl Into<String>,
        slots: u32,
        entries_per_slot: usize,
        max_entry_bytes: usize,
    ) -> Self {
        Self {
            table: SlotTable::new(prefix, slots),
            entries_per_slot: entries_per_slot.max(1),
            max_entry_bytes,
        }
    }

    /// Creates every slot; call when the configuration loads.
    pub fn initialize(&self, store: &dyn SharedStore) -> Result<(), StoreError> {
        self.table.initialize(store, &[])
    }

    /// The live payload of `key`, if any.
    pub fn lookup(
        &self,
        store: &dyn SharedStore,
        key: &CacheKey,
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self
            .table
            .read(store, self.table.slot_of(key.slot_hash()))?;
        let fingerprint = key.fingerprint();
        Ok(decode_slot(value.as_deref().unwrap_or_default())
            .into_iter()
            .find(|entry| entry.fingerprint == fingerprint && entry.expires_ms > now_ms)
            .map(|entry| entry.payload))
    }

    /// Keeps `payload` for `key` until `expires_ms`.
    pub fn store(
        &self,
        store: &dyn SharedStore,
        key: &CacheKey,
        payload: &[u8],
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<Stored, StoreError> {
        if payload.len() + ENTRY_HEADER > self.max_entry_bytes {
            return Ok(Stored::TooLarge);
        }
        let fingerprint = key.fingerprint();
        let slot = self.table.slot_of(key.slot_hash());
        self.table.update(store, slot, MAX_CAS_ATTEMPTS, |current| {
            let mut entries = decode_slot(current.unwrap_or_default());
            entries.retain(|e| e.expires_ms > now_ms && e.fingerprint != fingerprint);
            let mut outcome = Stored::Kept;
            if entries.len() >= self.entries_per_slot {
                if let Some(soonest) = (0..entries.len()).min_by_key(|&i| entries[i].expires_ms) {
                    entries.swap_remove(soonest);
                    outcome = Stored::Evicted;
                }
            }
            entries.push(Entry {
                fingerprint,
                expires_ms,
                payload: payload.to_vec(),
            });
            (Some(encode_slot(&entries)), outcome)
        })
    }
}

fn decode_slot(bytes: &[u8]) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut rest = bytes;
    while rest.len() >= ENTRY_HEADER {
        let fingerprint = u64::from_le_bytes(rest[..8].try_into().unwrap_or_default());
        let expires_ms = u64::from_le_bytes(rest[8..16].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(rest[16..20].try_into().unwrap_or_default()) as usize;
        let Some(payload) = rest.get(ENTRY_HEADER..ENTRY_HEADER + len) else {
            break;
        };
        entries.push(Entry {
            fingerprint,
            expires_ms,
            payload: payload.to_vec(),
        });
        rest = &rest[ENTRY_HEADER + len..];
    }
    entries
}

fn encode_slot(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.iter().map(|e| ENTRY_HEADER + e.payload.len()).sum());
    for entry in entries {
        out.extend_from_slice(&entry.fingerprint.to_le_bytes());
        out.extend_from_slice(&entry.expires_ms.to_le_bytes());
        out.extend_from_slice(&(entry.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&entry.payload);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn keys_are_the_prefix_and_the_slot_number_short_or_long() {
        let table = SlotTable::new("gw.t.", 1000);
        assert_eq!(table.key(0).as_str(), "gw.t.0");
        assert_eq!(table.key(999).as_str(), "gw.t.999");
        assert_eq!(table.key(1000).as_str(), "gw.t.0", "slots wrap");
        let long = "p".repeat(70);
        let table = SlotTable::new(long.clone(), u32::MAX);
        assert_eq!(
            table.key(u32::MAX - 1).as_str(),
            format!("{long}{}", u32::MAX - 1)
        );
        let table = SlotTable::new("x".repeat(crate::key::INLINE_KEY - 10), u32::MAX);
        let key = table.key(4_294_967_294);
        assert!(matches!(key, ShortKey::Inline { .. }));
        assert!(key.ends_with("4294967294"));
    }

    #[test]
    fn initializing_creates_exactly_the_slots_and_keeps_what_they_hold() {
        let store = MemoryStore::new();
        let table = SlotTable::new("gw.t.", 8);
        table.initialize(&store, b"empty").unwrap();
        assert_eq!(store.key_count(), 8);
        table
            .update(&store, 3, 4, |current| {
                assert_eq!(current, Some(&b"empty"[..]));
                (Some(b"kept".to_vec()), ())
            })
            .unwrap();
        table.initialize(&store, b"empty").unwrap();
        assert_eq!(store.key_count(), 8);
        assert_eq!(
            table.read(&store, 3).unwrap().as_deref(),
            Some(&b"kept"[..])
        );
        assert_eq!(table.slot_of(11), 3);
    }
}
