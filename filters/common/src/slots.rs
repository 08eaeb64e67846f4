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
