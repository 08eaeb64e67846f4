//! The counters of one rule: a fixed table in Envoy shared data.
//!
//! Shared data has no delete, so a key per (client, window) would grow
//! forever. Each rule instead owns `slots` keys, created when the
//! configuration loads and never more. A counting key (say, one client IP)
//! hashes to one slot; a slot holds [`WAYS`] entries of (fingerprint of the
//! key, window number, count in that window, count in the window before).
//! Entries of finished windows are reused by new keys.
//!
//! When a key finds no entry of its own and none free (all [`WAYS`] hold
//! other keys counting in the current window), it **shares** one of them,
//! chosen by its fingerprint: its requests are counted together with that
//! key's, against its own limit. Sharing only ever counts more, never less:
//! no key is admitted beyond its limit because of a collision; a key that
//! shares may be throttled early. Size the table so that the distinct keys
//! per window stay well under `slots × WAYS`, and watch the `shared_slot`
//! counter.
//!
//! Every update is a compare-and-swap on the slot, retried up to
//! [`MAX_CAS_ATTEMPTS`] times, so counts are exact across Envoy's workers.

use crate::window::{Algorithm, Counting, Counts};
use gateway_common::key::ShortKey;
use gateway_common::slots::SlotTable;
use gateway_common::store::{SharedStore, StoreError};

/// Entries per slot.
pub const WAYS: usize = 4;
const ENTRY_BYTES: usize = 24;
/// The size of every slot's value in shared data.
pub const SLOT_BYTES: usize = WAYS * ENTRY_BYTES;
/// Compare-and-swap attempts before an update counts as a store failure.
pub const MAX_CAS_ATTEMPTS: u32 = 256;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Entry {
    /// 0: never used.
    fingerprint: u64,
    window: u64,
    count: u32,
    previous: u32,
}

/// Where an entry's window stands relative to the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Age {
    Empty,
    Current,
    /// One window ahead: another worker read the clock a moment later.
    Ahead,
    Previous,
    /// Older, or from a configuration with another window length.
    Stale,
}

impl Entry {
    fn age(&self, window: u64) -> Age {
        if self.fingerprint == 0 {
            Age::Empty
        } else if self.window == window {
            Age::Current
        } else if self.window == window.wrapping_add(1) {
            Age::Ahead
        } else if self.window.wrapping_add(1) == window {
            Age::Previous
        } else {
            Age::Stale
        }
    }

    /// Free for another key: nothing in it still counts.
    fn reusable(&self, window: u64, algorithm: Algorithm) -> bool {
        match self.age(window) {
            Age::Empty | Age::Stale => true,
            Age::Previous => algorithm == Algorithm::Fixed,
            Age::Current | Age::Ahead => false,
        }
    }

    /// The entry brought to the current window: rolled over or started afresh.
    fn brought_to(self, window: u64, algorithm: Algorithm) -> Entry {
        match self.age(window) {
            Age::Current | Age::Ahead => self,
            Age::Previous => Entry {
                window,
                count: 0,
                previous: if algorithm == Algorithm::Sliding {
                    self.count
                } else {
                    0
                },
                ..self
            },
            Age::Empty | Age::Stale => Entry {
                window,
                count: 0,
                previous: 0,
                ..self
            },
        }
    }

    fn counts(&self) -> Counts {
        Counts {
            previous: self.previous,
            current: self.count,
        }
    }
}

type Slot = [Entry; WAYS];

fn decode(bytes: Option<&[u8]>) -> Slot {
    let mut slot = Slot::default();
    // Anything but a well-formed slot (absent, another format) reads as empty.
    let Some(bytes) = bytes.filter(|b| b.len() == SLOT_BYTES) else {
        return slot;
    };
    for (entry, chunk) in slot.iter_mut().zip(bytes.chunks_exact(ENTRY_BYTES)) {
        let u64_at = |at: usize| {
            chunk
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_le_bytes)
        };
        let u32_at = |at: usize| {
            chunk
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u32::from_le_bytes)
        };
        *entry = Entry {
            fingerprint: u64_at(0),
            window: u64_at(8),
            count: u32_at(16),
            previous: u32_at(20),
        };
    }
    slot
}

fn encode(slot: &Slot) -> Vec<u8> {
    let mut out = Vec::with_capacity(SLOT_BYTES);
    for entry in slot {
        out.extend_from_slice(&entry.fingerprint.to_le_bytes());
        out.extend_from_slice(&entry.window.to_le_bytes());
        out.extend_from_slice(&entry.count.to_le_bytes());
        out.extend_from_slice(&entry.previous.to_le_bytes());
    }
    out
}

/// The quota left for a counted key, for the `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub remaining: u32,
    /// Milliseconds until the current window ends.
    pub reset_ms: u64,
}

/// Proof of one admitted request, to take it back if a later rule refuses
/// the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    slot: u32,
    way: usize,
    fingerprint: u64,
    window: u64,
    /// The request was counted in another key's entry.
    pub shared: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    Admitted(Ticket, Quota),
    Throttled {
        wait_ms: u64,
        quota: Quota,
        /// The key found its slot full and was checked against another key's count.
        shared: bool,
    },
}

/// One rule's slots: keys `<prefix><n>` for n in `0..slots`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    table: SlotTable,
}

impl Table {
    pub fn new(prefix: String, slots: u32) -> Self {
        Self {
            table: SlotTable::new(prefix, slots),
        }
    }

    pub fn slots(&self) -> u32 {
        self.table.slots()
    }

    /// The shared-data key of a slot; the only keys this table ever writes.
    pub fn key(&self, slot: u32) -> ShortKey {
        self.table.key(slot)
    }

    /// The slot a key hash falls in.
    pub fn slot_of(&self, slot_hash: u64) -> u32 {
        self.table.slot_of(slot_hash)
    }

    /// Creates every slot (empty) unless it exists; call when the
    /// configuration loads, so shared data holds exactly `slots` keys.
    pub fn initialize(&self, store: &dyn SharedStore) -> Result<(), StoreError> {
        self.table.initialize(store, &encode(&Slot::default()))
    }

    /// Counts one request of the key with `fingerprint` (never 0) in `slot`,
    /// if `counting` admits it now.
    pub fn acquire(
        &self,
        store: &dyn SharedStore,
        slot: u32,
        fingerprint: u64,
        counting: &Counting,
        now_ms: u64,
    ) -> Result<Acquired, StoreError> {
        let window = counting.window.index(now_ms);
        let algorithm = counting.algorithm;
        let reset_ms = counting.window.until_end(now_ms);
        self.table.update(store, slot, MAX_CAS_ATTEMPTS, |current| {
            let mut entries = decode(current);
            let (way, shared) = locate(&entries, fingerprint, window, algorithm);
            let mut entry = entries[way].brought_to(window, algorithm);
            if !shared {
                entry.fingerprint = fingerprint;
            }
            let counts = entry.counts();
            if !counting.admits(counts, now_ms) {
                let quota = Quota {
                    limit: counting.limit,
                    remaining: 0,
                    reset_ms,
                };
                let wait_ms = counting.wait_ms(counts, now_ms);
                return (
                    None,
                    Acquired::Throttled {
                        wait_ms,
                        quota,
                        shared,
                    },
                );
            }
            entry.count = entry.count.saturating_add(1);
            entries[way] = entry;
            let ticket = Ticket {
                slot,
                way,
                fingerprint: entry.fingerprint,
                window: entry.window,
                shared,
            };
            let quota = Quota {
                limit: counting.limit,
                remaining: counting.remaining(entry.counts(), now_ms),
                reset_ms,
            };
            (Some(encode(&entries)), Acquired::Admitted(ticket, quota))
        })
    }

    /// Takes back an admitted request, if its entry still counts the same
    /// key in the same window.
    pub fn release(&self, store: &dyn SharedStore, ticket: &Ticket) -> Result<(), StoreError> {
        self.table
            .update(store, ticket.slot, MAX_CAS_ATTEMPTS, |current| {
                let mut entries = decode(current);
                let Some(entry) = entries.get_mut(ticket.way) else {
                    return (None, ());
                };
                if entry.fingerprint != ticket.fingerprint
                    || entry.window != ticket.window
                    || entry.count == 0
                {
                    return (None, ());
                }
                entry.count -= 1;
                (Some(encode(&entries)), ())
            })
    }
}

/// The way a key counts in: its own entry, a reusable one, or (when every
/// way still counts another key) the one its fingerprint picks, shared.
fn locate(slot: &Slot, fingerprint: u64, window: u64, algorithm: Algorithm) -> (usize, bool) {
    if let Some(way) = slot.iter().position(|e| e.fingerprint == fingerprint) {
        return (way, false);
    }
    if let Some(way) = slot.iter().position(|e| e.reusable(window, algorithm)) {
        return (way, false);
    }
    let way = usize::try_from(fingerprint % WAYS as u64).unwrap_or(0);
    (way, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::{Window, MINUTE_MS};
    use gateway_common::store::MemoryStore;
    use std::sync::Arc;

    const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    fn counting(limit: u32, window: &str, algorithm: Algorithm) -> Counting {
        Counting {
            window: Window::parse(window).unwrap(),
            algorithm,
            limit,
        }
    }

    fn fixed(limit: u32) -> Counting {
        counting(limit, "1m", Algorithm::Fixed)
    }

    fn admitted(result: Acquired) -> bool {
        matches!(result, Acquired::Admitted(..))
    }

    fn table(slots: u32) -> (MemoryStore, Table) {
        let store = MemoryStore::new();
        let table = Table::new("gw.throttling.test.".into(), slots);
        table.initialize(&store).unwrap();
        (store, table)
    }

    #[test]
    fn a_slot_round_trips_through_its_bytes() {
        let mut slot = Slot::default();
        slot[1] = Entry {
            fingerprint: u64::MAX,
            window: 29_000_000,
            count: 7,
            previous: u32::MAX,
        };
        let bytes = encode(&slot);
        assert_eq!(bytes.len(), SLOT_BYTES);
        assert_eq!(decode(Some(&bytes)), slot);
        assert_eq!(decode(Some(&bytes[1..])), Slot::default());
        assert_eq!(decode(None), Slot::default());
    }

    #[test]
    fn initializing_creates_exactly_the_slots_and_keeps_existing_counts() {
        let (store, table) = table(8);
        assert_eq!(store.key_count(), 8);
        table.acquire(&store, 3, 42, &fixed(5), T0).unwrap();
        table.initialize(&store).unwrap();
        assert_eq!(store.key_count(), 8);
        let (value, _) = store.get(&table.key(3)).unwrap();
        assert_eq!(decode(value.as_deref())[0].count, 1);
    }

    #[test]
    fn a_key_is_admitted_up_to_its_limit_with_the_quota_left() {
        let (store, table) = table(1);
        let quota = fixed(3);
        let mut remaining = Vec::new();
        for _ in 0..3 {
            match table.acquire(&store, 0, 7, &quota, T0 + 20_000).unwrap() {
                Acquired::Admitted(ticket, q) => {
                    assert!(!ticket.shared);
                    assert_eq!(q.reset_ms, 40_000);
                    remaining.push(q.remaining);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(remaining, [2, 1, 0]);
        assert_eq!(
            table.acquire(&store, 0, 7, &quota, T0 + 30_000).unwrap(),
            Acquired::Throttled {
                wait_ms: 30_000,
                quota: Quota {
                    limit: 3,
                    remaining: 0,
                    reset_ms: 30_000
                },
                shared: false
            }
        );
    }

    #[test]
    fn a_new_window_admits_again_and_reuses_the_entry() {
        let (store, table) = table(1);
        let quota = fixed(1);
        assert!(admitted(table.acquire(&store, 0, 7, &quota, T0).unwrap()));
        assert!(!admitted(
            table
                .acquire(&store, 0, 7, &quota, T0 + MINUTE_MS - 1)
                .unwrap()
        ));
        assert!(admitted(
            table.acquire(&store, 0, 7, &quota, T0 + MINUTE_MS).unwrap()
        ));
        let (value, _) = store.get(&table.key(0)).unwrap();
        let slot = decode(value.as_deref());
        assert_eq!(slot.iter().filter(|e| e.fingerprint != 0).count(), 1);
    }

    #[test]
    fn keys_in_one_slot_count_apart_while_there_are_free_ways() {
        let (store, table) = table(1);
        let quota = fixed(1);
        for fingerprint in 1..=WAYS as u64 {
            assert!(admitted(
                table.acquire(&store, 0, fingerprint, &quota, T0).unwrap()
            ));
        }
        for fingerprint in 1..=WAYS as u64 {
            assert!(!admitted(
                table.acquire(&store, 0, fingerprint, &quota, T0).unwrap()
            ));
        }
    }

    #[test]
    fn a_key_that_finds_the_slot_full_shares_a_count_and_is_never_admitted_beyond_its_limit() {
        let (store, table) = table(1);
        let quota = fixed(3);
        for fingerprint in 1..=WAYS as u64 {
            assert!(admitted(
                table.acquire(&store, 0, fingerprint, &quota, T0).unwrap()
            ));
        }
        // Key 100 shares way 100 % 4 = 0, which holds key 1 with a count of 1.
        let mut shared_admissions = 0;
        while let Acquired::Admitted(ticket, _) = table.acquire(&store, 0, 100, &quota, T0).unwrap()
        {
            assert!(ticket.shared);
            shared_admissions += 1;
        }
        assert_eq!(
            shared_admissions, 2,
            "1 of key 1 + 2 of key 100 = the limit 3"
        );
        // Key 1 now sees the shared count: conservative, not lenient.
        assert!(!admitted(table.acquire(&store, 0, 1, &quota, T0).unwrap()));
        // Next window, key 100 takes a way of its own.
        match table
            .acquire(&store, 0, 100, &quota, T0 + MINUTE_MS)
            .unwrap()
        {
            Acquired::Admitted(ticket, q) => {
                assert!(!ticket.shared);
                assert_eq!(q.remaining, 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_sliding_entry_keeps_its_previous_window_and_is_not_reused_by_other_keys() {
        let (store, table) = table(1);
        let quota = counting(4, "1m", Algorithm::Sliding);
        for _ in 0..4 {
            assert!(admitted(
                table.acquire(&store, 0, 1, &quota, T0 + 50_000).unwrap()
            ));
        }
        // 30 s into the next minute, the 4 weigh 2: two more fit.
        let later = T0 + MINUTE_MS + 30_000;
        assert!(admitted(
            table.acquire(&store, 0, 1, &quota, later).unwrap()
        ));
        assert!(admitted(
            table.acquire(&store, 0, 1, &quota, later).unwrap()
        ));
        match table.acquire(&store, 0, 1, &quota, later).unwrap() {
            Acquired::Throttled {
                wait_ms, shared, ..
            } => {
                assert_eq!(wait_ms, 15_000);
                assert!(!shared);
            }
            other => panic!("{other:?}"),
        }
        // Fill the other ways; a fifth key must share rather than evict key 1.
        for fingerprint in 2..=WAYS as u64 {
            assert!(admitted(
                table
                    .acquire(&store, 0, fingerprint, &quota, later)
                    .unwrap()
            ));
        }
        assert!(matches!(
            table.acquire(&store, 0, 5, &quota, later).unwrap(),
            Acquired::Admitted(Ticket { shared: true, .. }, _)
        ));
    }

    #[test]
    fn a_fixed_entry_of_the_previous_window_is_free_for_another_key() {
        let (store, table) = table(1);
        let quota = fixed(1);
        for fingerprint in 1..=WAYS as u64 {
            assert!(admitted(
                table.acquire(&store, 0, fingerprint, &quota, T0).unwrap()
            ));
        }
        assert!(matches!(
            table
                .acquire(&store, 0, 99, &quota, T0 + MINUTE_MS)
                .unwrap(),
            Acquired::Admitted(Ticket { shared: false, .. }, _)
        ));
    }

    #[test]
    fn entries_left_by_another_window_length_do_not_block_the_table() {
        let (store, table) = table(1);
        // Filled under a 1 s window (window numbers ~1.7e9)…
        let per_second = counting(1, "1s", Algorithm::Fixed);
        for fingerprint in 1..=WAYS as u64 {
            assert!(admitted(
                table
                    .acquire(&store, 0, fingerprint, &per_second, T0)
                    .unwrap()
            ));
        }
        // …then reconfigured to 1 h (window numbers ~4.9e5): all stale.
        let per_hour = counting(1, "1h", Algorithm::Sliding);
        assert!(matches!(
            table.acquire(&store, 0, 99, &per_hour, T0).unwrap(),
            Acquired::Admitted(Ticket { shared: false, .. }, _)
        ));
    }

    #[test]
    fn an_entry_one_window_ahead_is_counted_into_not_reset() {
        let (store, table) = table(1);
        let quota = fixed(2);
        // A worker whose clock already reads the next minute…
        assert!(admitted(
            table.acquire(&store, 0, 7, &quota, T0 + MINUTE_MS).unwrap()
        ));
        assert!(admitted(
            table.acquire(&store, 0, 7, &quota, T0 + MINUTE_MS).unwrap()
        ));
        // …and one still a millisecond behind: it may not start afresh.
        assert!(!admitted(
            table
                .acquire(&store, 0, 7, &quota, T0 + MINUTE_MS - 1)
                .unwrap()
        ));
    }

    #[test]
    fn a_released_ticket_gives_the_request_back() {
        let (store, table) = table(1);
        let quota = fixed(1);
        let Acquired::Admitted(ticket, _) = table.acquire(&store, 0, 7, &quota, T0).unwrap() else {
            panic!("first request is admitted");
        };
        table.release(&store, &ticket).unwrap();
        assert!(admitted(table.acquire(&store, 0, 7, &quota, T0).unwrap()));
        // A ticket of a finished window changes nothing.
        let (before, _) = store.get(&table.key(0)).unwrap();
        let old = Ticket {
            window: ticket.window - 1,
            ..ticket
        };
        table.release(&store, &old).unwrap();
        assert_eq!(store.get(&table.key(0)).unwrap().0, before);
    }

    #[test]
    fn memory_stays_at_the_configured_number_of_keys_whatever_the_number_of_clients() {
        let (store, table) = table(16);
        let quota = fixed(1);
        let (mut own, mut shared) = (0, 0);
        for key in 0..10_000u64 {
            let fingerprint = crate::key::mix(key).max(1);
            let slot = table.slot_of(crate::key::mix(!key));
            match table
                .acquire(&store, slot, fingerprint, &quota, T0)
                .unwrap()
            {
                Acquired::Admitted(ticket, _) => {
                    assert!(!ticket.shared, "a shared entry is full at limit 1");
                    own += 1;
                }
                Acquired::Throttled { shared: true, .. } => shared += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(store.key_count(), 16);
        assert_eq!(own, 16 * WAYS);
        assert_eq!(shared, 10_000 - own);
        for slot in 0..16 {
            let (value, _) = store.get(&table.key(slot)).unwrap();
            assert_eq!(value.map(|v| v.len()), Some(SLOT_BYTES));
        }
    }

    proptest::proptest! {
        /// Whatever keys collide in a one-slot table and whenever they
        /// come, no key is ever admitted beyond its limit in a window.
        #[test]
        fn no_key_is_admitted_beyond_its_limit_whatever_collides(
            sliding in proptest::bool::ANY,
            limit in 1u32..4,
            requests in proptest::collection::vec((1u64..12, 0u64..500), 1..300),
        ) {
            let algorithm = if sliding { Algorithm::Sliding } else { Algorithm::Fixed };
            let quota = counting(limit, "1s", algorithm);
            let (store, table) = table(1);
            let mut times: Vec<u64> = requests.iter().map(|(_, t)| T0 + t * 7).collect();
            times.sort_unstable();
            let mut per_window = std::collections::HashMap::new();
            for ((fingerprint, _), now) in requests.iter().zip(times) {
                if admitted(table.acquire(&store, 0, *fingerprint, &quota, now).unwrap()) {
                    let seen = per_window.entry((*fingerprint, now / 1_000)).or_insert(0u32);
                    *seen += 1;
                    proptest::prop_assert!(*seen <= limit, "{fingerprint} at {now}");
                }
            }
        }
    }

    #[test]
    fn concurrent_workers_never_admit_more_than_the_limit() {
        let store = Arc::new(MemoryStore::new());
        let table = Arc::new(Table::new("gw.throttling.hot.".into(), 1));
        table.initialize(&*store).unwrap();
        let quota = fixed(500);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (store, table) = (Arc::clone(&store), Arc::clone(&table));
                std::thread::spawn(move || {
                    (0..200)
                        .filter(|_| admitted(table.acquire(&*store, 0, 7, &quota, T0).unwrap()))
                        .count()
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 500);
    }
}
