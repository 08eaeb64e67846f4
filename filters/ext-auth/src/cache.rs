//! The decision cache: a fixed table of shared-data keys, as sign-auth's
//! nonce table, so its memory is bounded and every worker sees the same
//! decisions.
//!
//! A key hashes to one slot; a slot holds up to [`ENTRIES_PER_SLOT`]
//! decisions with their expiry. Expired entries make room first; when all
//! are live, the one expiring soonest is evicted (and counted).

use crate::config::CacheSettings;
use crate::policy::Decision;
use gateway_common::slots::SlotTable;
use gateway_common::store::{SharedStore, StoreError};

pub const ENTRIES_PER_SLOT: usize = 4;
const MAX_CAS_ATTEMPTS: u32 = 16;
const KEY_PREFIX: &str = "gw.ext_auth.cache.";
/// fingerprint, expiry, payload length.
const ENTRY_HEADER: usize = 8 + 8 + 4;
const ALLOW: u8 = 1;
const DENY: u8 = 2;

/// A digest of the configuration, the rule and the identity values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 16]);

impl CacheKey {
    fn fingerprint(&self) -> u64 {
        u64::from_le_bytes(self.0[..8].try_into().unwrap_or_default()).max(1)
    }

    fn slot_hash(&self) -> u64 {
        u64::from_le_bytes(self.0[8..].try_into().unwrap_or_default())
    }
}

#[derive(Debug, Clone)]
pub struct DecisionCache {
    pub settings: CacheSettings,
    table: SlotTable,
}

/// What storing a decision did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Kept,
    /// Kept, and a live decision made room for it.
    Evicted,
    /// Larger than `max_entry_bytes`: not kept.
    TooLarge,
}

struct Entry {
    fingerprint: u64,
    expires_ms: u64,
    payload: Vec<u8>,
}

impl DecisionCache {
    pub fn new(settings: CacheSettings) -> Self {
        let table = SlotTable::new(KEY_PREFIX, settings.slots);
        Self { settings, table }
    }

    /// Creates every slot; call when the configuration loads.
    pub fn initialize(&self, store: &dyn SharedStore) -> Result<(), StoreError> {
        self.table.initialize(store, &[])
    }

    /// The live decision for `key`, if any.
    pub fn lookup(
        &self,
        store: &dyn SharedStore,
        key: &CacheKey,
        now_ms: u64,
    ) -> Result<Option<Decision>, StoreError> {
        let value = self
            .table
            .read(store, self.table.slot_of(key.slot_hash()))?;
        let fingerprint = key.fingerprint();
        Ok(decode_slot(value.as_deref().unwrap_or_default())
            .into_iter()
            .find(|entry| entry.fingerprint == fingerprint && entry.expires_ms > now_ms)
            .and_then(|entry| decode_decision(&entry.payload)))
    }

    /// Keeps `decision` for `key` until `expires_ms`. Failed decisions are
    /// never given here.
    pub fn store(
        &self,
        store: &dyn SharedStore,
        key: &CacheKey,
        decision: &Decision,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<Stored, StoreError> {
        let Some(payload) = encode_decision(decision) else {
            return Ok(Stored::TooLarge);
        };
        if payload.len() + ENTRY_HEADER > self.settings.max_entry_bytes {
            return Ok(Stored::TooLarge);
        }
        let fingerprint = key.fingerprint();
        let slot = self.table.slot_of(key.slot_hash());
        self.table.update(store, slot, MAX_CAS_ATTEMPTS, |current| {
            let mut entries = decode_slot(current.unwrap_or_default());
            entries.retain(|e| e.expires_ms > now_ms && e.fingerprint != fingerprint);
            let mut outcome = Stored::Kept;
            if entries.len() >= ENTRIES_PER_SLOT {
                if let Some(soonest) = (0..entries.len()).min_by_key(|&i| entries[i].expires_ms) {
                    entries.swap_remove(soonest);
                    outcome = Stored::Evicted;
                }
            }
            entries.push(Entry {
                fingerprint,
                expires_ms,
                payload: payload.clone(),
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

/// kind, status (u16), header count (u8), each header as name (u8 length)
/// and value (u16 length), then the body (u32 length).
fn encode_decision(decision: &Decision) -> Option<Vec<u8>> {
    let (kind, status, headers, body): (u8, u32, &[(String, String)], &[u8]) = match decision {
        Decision::Allow { headers } => (ALLOW, 200, headers, &[]),
        Decision::Deny {
            status,
            headers,
            body,
        } => (DENY, *status, headers, body),
        Decision::Failed(_) => return None,
    };
    let mut out = vec![kind];
    out.extend_from_slice(&u16::try_from(status).ok()?.to_le_bytes());
    out.push(u8::try_from(headers.len()).ok()?);
    for (name, value) in headers {
        out.push(u8::try_from(name.len()).ok()?);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&u16::try_from(value.len()).ok()?.to_le_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(&u32::try_from(body.len()).ok()?.to_le_bytes());
    out.extend_from_slice(body);
    Some(out)
}

fn decode_decision(bytes: &[u8]) -> Option<Decision> {
    let mut reader = Reader(bytes);
    let kind = reader.take(1)?[0];
    let status = u32::from(u16::from_le_bytes(reader.take(2)?.try_into().ok()?));
    let count = reader.take(1)?[0];
    let mut headers = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let name_len = usize::from(reader.take(1)?[0]);
        let name = String::from_utf8(reader.take(name_len)?.to_vec()).ok()?;
        let value_len = usize::from(u16::from_le_bytes(reader.take(2)?.try_into().ok()?));
        let value = String::from_utf8(reader.take(value_len)?.to_vec()).ok()?;
        headers.push((name, value));
    }
    let body_len = u32::from_le_bytes(reader.take(4)?.try_into().ok()?) as usize;
    let body = reader.take(body_len)?.to_vec();
    match kind {
        ALLOW => Some(Decision::Allow { headers }),
        DENY => Some(Decision::Deny {
            status,
            headers,
            body,
        }),
        _ => None,
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
}
