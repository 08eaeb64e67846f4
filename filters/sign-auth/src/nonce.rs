//! Anti-replay nonce store in Envoy shared data, with bounded memory.
//!
//! Shared data has no delete, so one key per nonce would grow forever.
//! Instead a fixed table of `slots` keys is created when the configuration
//! loads; a nonce hashes to one slot, and each slot holds up to
//! [`ENTRIES_PER_SLOT`] (hash, expiry) pairs. Expired entries are reused. A
//! slot whose entries are all still live refuses the new nonce (fail closed):
//! size the table for the request rate times the timestamp window.

use gateway_common::slots::SlotTable;
use gateway_common::store::{SharedStore, StoreError};
use sha2::{Digest, Sha256};

pub const ENTRIES_PER_SLOT: usize = 8;
const ENTRY_BYTES: usize = 16;
const MAX_CAS_ATTEMPTS: u32 = 32;
const KEY_PREFIX: &str = "gw.sign_auth.nonce.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceOutcome {
    /// First use: recorded until it expires.
    Fresh,
    /// Seen before within the window.
    Replayed,
    /// The slot is full of live nonces.
    SlotFull,
}

#[derive(Debug, Clone)]
pub struct NonceTable {
    table: SlotTable,
}

impl NonceTable {
    pub fn new(slots: u32) -> Self {
        Self {
            table: SlotTable::new(KEY_PREFIX, slots),
        }
    }

    /// Creates every slot; call when the configuration loads.
    pub fn initialize(&self, store: &dyn SharedStore) -> Result<(), StoreError> {
        self.table.initialize(store, &[])
    }

    /// Records `nonce` of `app_key` until `expires_ms`, unless it is live already.
    pub fn check_and_record(
        &self,
        store: &dyn SharedStore,
        app_key: &str,
        nonce: &str,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<NonceOutcome, StoreError> {
        let digest = Sha256::new()
            .chain_update(app_key.as_bytes())
            .chain_update([0u8])
            .chain_update(nonce.as_bytes())
            .finalize();
        let fingerprint = u64::from_le_bytes(digest[0..8].try_into().unwrap_or_default()).max(1);
        let slot_hash = u64::from_le_bytes(digest[8..16].try_into().unwrap_or_default());
        let slot = self.table.slot_of(slot_hash);
        self.table.update(store, slot, MAX_CAS_ATTEMPTS, |current| {
            let mut entries = decode(current.unwrap_or_default());
            entries.retain(|(_, expiry)| *expiry > now_ms);
            if entries.iter().any(|(fp, _)| *fp == fingerprint) {
                return (None, NonceOutcome::Replayed);
            }
            if entries.len() >= ENTRIES_PER_SLOT {
                return (None, NonceOutcome::SlotFull);
            }
            entries.push((fingerprint, expires_ms));
            (Some(encode(&entries)), NonceOutcome::Fresh)
        })
    }
}

fn decode(bytes: &[u8]) -> Vec<(u64, u64)> {
    bytes
        .chunks_exact(ENTRY_BYTES)
        .map(|chunk| {
            let (fp, expiry) = chunk.split_at(8);
            (
                u64::from_le_bytes(fp.try_into().unwrap_or_default()),
                u64::from_le_bytes(expiry.try_into().unwrap_or_default()),
            )
        })
        .collect()
}

fn encode(entries: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for (fp, expiry) in entries {
        out.extend_from_slice(&fp.to_le_bytes());
        out.extend_from_slice(&expiry.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_common::store::MemoryStore;
    use std::sync::Arc;

    #[test]
    fn a_nonce_is_accepted_once_within_its_window() {
        let store = MemoryStore::new();
        let table = NonceTable::new(16);
        table.initialize(&store).unwrap();
        let check = |nonce, now| {
            table
                .check_and_record(&store, "app", nonce, now, now + 1000)
                .unwrap()
        };
        assert_eq!(check("n1", 0), NonceOutcome::Fresh);
        assert_eq!(check("n1", 10), NonceOutcome::Replayed);
        assert_eq!(check("n2", 10), NonceOutcome::Fresh);
    }

    #[test]
    fn the_same_nonce_of_another_app_is_distinct() {
        let store = MemoryStore::new();
        let table = NonceTable::new(4);
        assert_eq!(
            table.check_and_record(&store, "a", "n", 0, 100).unwrap(),
            NonceOutcome::Fresh
        );
        assert_eq!(
            table.check_and_record(&store, "b", "n", 0, 100).unwrap(),
            NonceOutcome::Fresh
        );
    }

    #[test]
    fn an_expired_nonce_may_be_used_again_and_its_entry_is_reused() {
        let store = MemoryStore::new();
        let table = NonceTable::new(1);
        assert_eq!(
            table.check_and_record(&store, "a", "n", 0, 100).unwrap(),
            NonceOutcome::Fresh
        );
        assert_eq!(
            table.check_and_record(&store, "a", "n", 100, 200).unwrap(),
            NonceOutcome::Fresh
        );
        let (value, _) = store.get(&table.table.key(0)).unwrap();
        assert_eq!(value.unwrap().len(), ENTRY_BYTES);
    }

    #[test]
    fn memory_stays_at_the_configured_capacity() {
        let store = MemoryStore::new();
        let table = NonceTable::new(8);
        table.initialize(&store).unwrap();
        let mut fresh = 0;
        let mut full = 0;
        for i in 0..10_000 {
            match table
                .check_and_record(&store, "a", &format!("n{i}"), 0, 1_000)
                .unwrap()
            {
                NonceOutcome::Fresh => fresh += 1,
                NonceOutcome::SlotFull => full += 1,
                NonceOutcome::Replayed => panic!("distinct nonces are never replays"),
            }
        }
        assert_eq!(store.key_count(), 8);
        assert_eq!(fresh, 8 * ENTRIES_PER_SLOT);
        assert_eq!(full, 10_000 - fresh);
        for slot in 0..8 {
            let (value, _) = store.get(&table.table.key(slot)).unwrap();
            assert!(value.unwrap().len() <= ENTRIES_PER_SLOT * ENTRY_BYTES);
        }
        // Once they expire, the slots take new nonces again.
        assert_eq!(
            table
                .check_and_record(&store, "a", "later", 1_000, 2_000)
                .unwrap(),
            NonceOutcome::Fresh
        );
    }

    #[test]
    fn concurrent_replays_are_accepted_exactly_once() {
        let store = Arc::new(MemoryStore::new());
        let table = Arc::new(NonceTable::new(64));
        table.initialize(&*store).unwrap();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (store, table) = (Arc::clone(&store), Arc::clone(&table));
                std::thread::spawn(move || {
                    (0..200)
                        .filter(|i| {
                            table
                                .check_and_record(&*store, "a", &format!("n{}", i % 50), 0, 1_000)
                                .unwrap()
                                == NonceOutcome::Fresh
                        })
                        .count()
                })
            })
            .collect();
        let fresh: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(fresh, 50);
    }
}
