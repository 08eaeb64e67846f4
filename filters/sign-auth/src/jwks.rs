//! Fetching the issuers' keys (a JWKS, or an OpenID Connect discovery
//! document and then its JWKS) through an Envoy cluster, from the root's
//! timer: at load, every `refresh_seconds`, sooner after a failure (1 s,
//! doubling to a minute) and when a token names a key id the issuer does
//! not have (at most every 30 s). A failed fetch keeps the keys there are.
//!
//! The state is shared by the roots of a configuration (in the native
//! module, the main thread's root fetches for every worker). Under Wasm each
//! worker's VM has roots of its own: a root that fetched keys leaves the
//! JWKS in shared data and the others take it at their next tick, so a
//! rotation one worker saw reaches every worker within a tick.

use crate::jwt::{Jwt, KeySet};
use gateway_common::hosting::RootHost;
use gateway_common::store::{self, SharedStore};
use gateway_common::stream::CallAnswer;
use gateway_common::sync::lock;
use serde_json::Value;
use std::sync::Arc;

/// A JWKS or discovery document larger than this is refused.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Longest wait after failures.
const MAX_BACKOFF_MS: u64 = 60_000;
/// Fewest milliseconds between fetches asked for by an unknown key id.
const UNKNOWN_KID_REFETCH_MS: u64 = 30_000;

/// Every issuer's fetched keys and fetch in flight.
#[derive(Debug, Default)]
pub struct JwksState {
    issuers: Vec<IssuerKeys>,
}

#[derive(Debug, Default)]
struct IssuerKeys {
    keys: Option<Arc<KeySet>>,
    /// When the next fetch is due (0: at once).
    next_ms: u64,
    in_flight: Option<InFlight>,
    failures: u32,
    /// A token named a key id the keys lack.
    wanted: bool,
    last_wanted_fetch_ms: u64,
    /// The generation of the shared entry these keys are (0: none yet).
    generation: u64,
}

#[derive(Debug)]
struct InFlight {
    token: u32,
    /// Fetching the discovery document (else the JWKS).
    discovery: bool,
    /// When the fetch was sent: its keys are as new as that.
    sent_ms: u64,
}

/// What an answer did, for the counters and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// New keys for the issuer.
    Keys {
        issuer: usize,
        count: usize,
    },
    /// The discovery document named the JWKS, which is being fetched.
    Discovered {
        issuer: usize,
    },
    Failed {
        issuer: usize,
        why: String,
    },
}

impl JwksState {
    pub fn new(issuers: usize) -> Self {
        Self {
            issuers: (0..issuers).map(|_| IssuerKeys::default()).collect(),
        }
    }

    pub fn keys(&self, issuer: usize) -> Option<Arc<KeySet>> {
        self.issuers.get(issuer)?.keys.clone()
    }

    /// A token named a key id the issuer's keys lack: fetch them again
    /// soon (rate-limited).
    pub fn want(&mut self, issuer: usize) {
        if let Some(state) = self.issuers.get_mut(issuer) {
            state.wanted = true;
        }
    }
}

/// Sends the fetches that are due at `now_ms`; returns the failures to
/// send them.
pub fn tick(jwt: &Jwt, host: &mut dyn RootHost, now_ms: u64) -> Vec<Fetched> {
    let Some(state) = jwt.state.get() else {
        return Vec::new();
    };
    let mut state = lock(state);
    let mut failed = Vec::new();
    for (issuer, config) in jwt.issuers.iter().enumerate() {
        let (Some(fetch), Some(keys)) = (&config.fetch, state.issuers.get_mut(issuer)) else {
            continue;
        };
        adopt(
            keys,
            host.shared_data(),
            &jwt.shared_keys_entry(issuer),
            fetch.refresh_ms,
        );
        if keys.in_flight.is_some() {
            continue;
        }
        let wanted = keys.wanted
            && now_ms.saturating_sub(keys.last_wanted_fetch_ms) >= UNKNOWN_KID_REFETCH_MS;
        if now_ms < keys.next_ms && !wanted {
            continue;
        }
        if wanted {
            keys.last_wanted_fetch_ms = now_ms;
        }
        keys.wanted = false;
        let call = fetch
            .upstream
            .call("GET", [("accept", "application/json")], None);
        match host.dispatch_call(call) {
            Ok(token) => {
                keys.in_flight = Some(InFlight {
                    token,
                    discovery: fetch.discovery,
                    sent_ms: now_ms,
                })
            }
            Err(_) => {
                fail(keys, fetch.refresh_ms, now_ms);
                failed.push(Fetched::Failed {
                    issuer,
                    why: format!("cannot call cluster `{}`", fetch.upstream.cluster),
                });
            }
        }
    }
    failed
}

/// The answer to a fetch, if `token` is one; `None` when it is not.
pub fn answered(
    jwt: &Jwt,
    token: u32,
    answer: &dyn CallAnswer,
    host: &mut dyn RootHost,
    now_ms: u64,
) -> Option<Fetched> {
    let mut state = lock(jwt.state.get()?);
    let (issuer, in_flight) = state.issuers.iter_mut().enumerate().find_map(|(i, keys)| {
        keys.in_flight
            .take_if(|flight| flight.token == token)
            .map(|flight| (i, flight))
    })?;
    let fetch = jwt.issuers.get(issuer)?.fetch.as_ref()?;
    let keys = state.issuers.get_mut(issuer)?;
    let document = match read_document(answer) {
        Ok(document) => document,
        Err(why) => {
            fail(keys, fetch.refresh_ms, now_ms);
            return Some(Fetched::Failed { issuer, why });
        }
    };
    if in_flight.discovery {
        let path = document
            .get("jwks_uri")
            .and_then(Value::as_str)
            .and_then(path_of);
        let Some(path) = path else {
            fail(keys, fetch.refresh_ms, now_ms);
            return Some(Fetched::Failed {
                issuer,
                why: "the discovery document has no `jwks_uri`".into(),
            });
        };
        let mut call = fetch
            .upstream
            .call("GET", [("accept", "application/json")], None);
        // The upstream's path is the discovery document's.
        call.headers[1] = (":path", path);
        return Some(match host.dispatch_call(call) {
            Ok(token) => {
                keys.in_flight = Some(InFlight {
                    token,
                    discovery: false,
                    sent_ms: in_flight.sent_ms,
                });
                Fetched::Discovered { issuer }
            }
            Err(_) => {
                fail(keys, fetch.refresh_ms, now_ms);
                Fetched::Failed {
                    issuer,
                    why: format!("cannot call cluster `{}`", fetch.upstream.cluster),
                }
            }
        });
    }
    Some(match KeySet::from_jwks(&document) {
        Ok(set) => {
            let count = set.len();
            keys.keys = Some(Arc::new(set));
            keys.failures = 0;
            keys.next_ms = now_ms + fetch.refresh_ms;
            let entry = jwt.shared_keys_entry(issuer);
            let jwks = serde_json::to_vec(&document).unwrap_or_default();
            match publish(host.shared_data(), &entry, in_flight.sent_ms, &jwks) {
                Some(generation) => keys.generation = generation,
                // Another root's keys were fetched later than these.
                None => {
                    adopt(keys, host.shared_data(), &entry, fetch.refresh_ms);
                }
            }
            Fetched::Keys { issuer, count }
        }
        Err(why) => {
            fail(keys, fetch.refresh_ms, now_ms);
            Fetched::Failed {
                issuer,
                why: format!("the JWKS {why}"),
            }
        }
    })
}

/// A shared entry: its generation and when it was fetched (big-endian
/// `u64`s), then the JWKS.
const ENTRY_HEADER: usize = 16;

fn read_entry(entry: &[u8]) -> Option<(u64, u64, &[u8])> {
    let generation = u64::from_be_bytes(entry.get(..8)?.try_into().ok()?);
    let fetched_ms = u64::from_be_bytes(entry.get(8..ENTRY_HEADER)?.try_into().ok()?);
    Some((generation, fetched_ms, entry.get(ENTRY_HEADER..)?))
}

/// The empty entry [`crate::jwt::Jwt::initialize`] creates, so that every
/// publish is a compare-and-swap.
pub const EMPTY_ENTRY: [u8; ENTRY_HEADER] = [0; ENTRY_HEADER];

/// Leaves a JWKS fetched by a call sent at `fetched_ms` for the other
/// roots; returns its generation. `None` when the entry holds keys fetched
/// later (an older fetch answered last must not bring retired keys back)
/// or shared data refused it (the other roots fetch for themselves).
fn publish(store: &dyn SharedStore, key: &str, fetched_ms: u64, jwks: &[u8]) -> Option<u64> {
    store::update(store, key, 8, |current| {
        let (generation, newest_ms) = current
            .and_then(read_entry)
            .map_or((0, 0), |(g, f, _)| (g, f));
        if newest_ms > fetched_ms {
            return (None, None);
        }
        let generation = generation + 1;
        let mut entry = Vec::with_capacity(ENTRY_HEADER + jwks.len());
        entry.extend_from_slice(&generation.to_be_bytes());
        entry.extend_from_slice(&fetched_ms.to_be_bytes());
        entry.extend_from_slice(jwks);
        (Some(entry), Some(generation))
    })
    .ok()
    .flatten()
}

/// Takes the keys another root left, when they are newer than these: the
/// next fetch is then due a refresh after theirs, and a key id wanted is
/// looked for in them first. Returns whether it took them.
fn adopt(keys: &mut IssuerKeys, store: &dyn SharedStore, key: &str, refresh_ms: u64) -> bool {
    let Ok((Some(entry), _)) = store.get(key) else {
        return false;
    };
    let Some((generation, fetched_ms, jwks)) = read_entry(&entry) else {
        return false;
    };
    if generation <= keys.generation {
        return false;
    }
    keys.generation = generation;
    let set = serde_json::from_slice(jwks)
        .ok()
        .and_then(|document| KeySet::from_jwks(&document).ok());
    let Some(set) = set else {
        return false;
    };
    keys.keys = Some(Arc::new(set));
    keys.failures = 0;
    keys.next_ms = fetched_ms + refresh_ms;
    keys.wanted = false;
    true
}

/// A failed fetch: the keys stay, the next try comes sooner than a refresh.
fn fail(keys: &mut IssuerKeys, refresh_ms: u64, now_ms: u64) {
    keys.failures = keys.failures.saturating_add(1);
    let backoff = 1000u64 << (keys.failures.min(7) - 1);
    keys.next_ms = now_ms + backoff.min(MAX_BACKOFF_MS).min(refresh_ms);
}

fn read_document(answer: &dyn CallAnswer) -> Result<Value, String> {
    match answer.status() {
        Some(200) => {}
        Some(status) => return Err(format!("answered {status}")),
        None => return Err("no answer (timeout or connection failure)".into()),
    }
    if answer.body_size() > MAX_DOCUMENT_BYTES {
        return Err(format!(
            "answered {} bytes, more than {MAX_DOCUMENT_BYTES}",
            answer.body_size()
        ));
    }
    serde_json::from_slice(&answer.body()).map_err(|e| format!("answered no JSON: {e}"))
}

/// The path (and query) of a `jwks_uri`: fetched from the issuer's
/// cluster, whatever host the URI names.
fn path_of(uri: &str) -> Option<&str> {
    let rest = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let path = &rest[rest.find('/')?..];
    (!path.contains(|c: char| c.is_control() || c == ' ')).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwks_uri_gives_its_path() {
        assert_eq!(
            path_of("https://idp.example/.well-known/jwks.json"),
            Some("/.well-known/jwks.json")
        );
        assert_eq!(path_of("http://idp:8080/keys?v=2"), Some("/keys?v=2"));
        assert_eq!(path_of("/keys"), Some("/keys"));
        assert_eq!(path_of("https://idp.example"), None);
        assert_eq!(path_of("https://idp.example/a b"), None);
    }

    #[test]
    fn keys_one_root_fetched_reach_the_others_once_and_newer_ones_again() {
        let store = gateway_common::store::MemoryStore::default();
        let entry = "gw.sign_auth.jwt.keys.test.0";
        let jwks = |kid: &str| {
            format!(
                r#"{{"keys":[{{"kty":"oct","k":"c2VjcmV0LWtleS1vZi10aGlydHktdHdvLWJ5dGVzISE","kid":"{kid}","alg":"HS256"}}]}}"#
            )
        };
        let mut other = IssuerKeys {
            wanted: true,
            failures: 3,
            ..IssuerKeys::default()
        };
        assert!(
            !adopt(&mut other, &store, entry, 10_000),
            "nothing left yet"
        );

        assert_eq!(publish(&store, entry, 5_000, jwks("a").as_bytes()), Some(1));
        assert!(adopt(&mut other, &store, entry, 10_000));
        let kids = |keys: &IssuerKeys| keys.keys.as_ref().map(|set| set.len());
        assert_eq!(kids(&other), Some(1));
        assert_eq!(
            (
                other.generation,
                other.next_ms,
                other.failures,
                other.wanted
            ),
            (1, 15_000, 0, false)
        );
        assert!(!adopt(&mut other, &store, entry, 10_000), "taken once");

        assert_eq!(publish(&store, entry, 7_000, jwks("b").as_bytes()), Some(2));
        assert!(adopt(&mut other, &store, entry, 10_000));
        assert_eq!((other.generation, other.next_ms), (2, 17_000));

        // Keys from a fetch sent before the entry's are not published.
        assert_eq!(publish(&store, entry, 6_000, jwks("old").as_bytes()), None);
        assert!(!adopt(&mut other, &store, entry, 10_000));
        // An entry that is no JWKS is passed over, once, and the keys stay.
        assert_eq!(publish(&store, entry, 8_000, b"not json"), Some(3));
        assert!(!adopt(&mut other, &store, entry, 10_000));
        assert_eq!((other.generation, kids(&other)), (3, Some(1)));
        store.set(entry, b"short", None).unwrap();
        assert!(!adopt(&mut other, &store, entry, 10_000));
    }

    #[test]
    fn failures_back_off_to_a_minute_at_most_and_never_past_a_refresh() {
        let mut keys = IssuerKeys::default();
        let waits: Vec<u64> = (0..8)
            .map(|_| {
                fail(&mut keys, 300_000, 0);
                keys.next_ms
            })
            .collect();
        assert_eq!(
            waits,
            [1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000]
        );
        fail(&mut keys, 10_000, 0);
        assert_eq!(keys.next_ms, 10_000);
    }
}
