//! The decision cache: an [`ExpiringCache`] of [`ENTRIES_PER_SLOT`]
//! decisions a slot, so its memory is bounded and every worker sees the
//! same decisions; an eviction is counted.

use crate::config::CacheSettings;
use crate::policy::Decision;
use gateway_common::slots::ExpiringCache;
use gateway_common::store::{SharedStore, StoreError};

pub use gateway_common::slots::{CacheKey, Stored};

pub const ENTRIES_PER_SLOT: usize = 4;
const KEY_PREFIX: &str = "gw.ext_auth.cache.";
const ALLOW: u8 = 1;
const DENY: u8 = 2;

#[derive(Debug, Clone)]
pub struct DecisionCache {
    pub settings: CacheSettings,
    table: ExpiringCache,
}

impl DecisionCache {
    pub fn new(settings: CacheSettings) -> Self {
        let table = ExpiringCache::new(
            KEY_PREFIX,
            settings.slots,
            ENTRIES_PER_SLOT,
            settings.max_entry_bytes,
        );
        Self { settings, table }
    }

    /// Creates every slot; call when the configuration loads.
    pub fn initialize(&self, store: &dyn SharedStore) -> Result<(), StoreError> {
        self.table.initialize(store)
    }

    /// The live decision for `key`, if any.
    pub fn lookup(
        &self,
        store: &dyn SharedStore,
        key: &CacheKey,
        now_ms: u64,
    ) -> Result<Option<Decision>, StoreError> {
        Ok(self
            .table
            .lookup(store, key, now_ms)?
            .and_then(|payload| decode_decision(&payload)))
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
        self.table.store(store, key, &payload, now_ms, expires_ms)
    }
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
