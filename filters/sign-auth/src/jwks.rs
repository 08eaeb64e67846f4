//! Fetching the issuers' keys (a JWKS, or an OpenID Connect discovery
//! document and then its JWKS) through an Envoy cluster, from the root's
//! timer: at load, every `refresh_seconds`, sooner after a failure (1 s,
//! doubling to a minute) and when a token names a key id the issuer does
//! not have (at most every 30 s). A failed fetch keeps the keys there are.
//! The state is shared by the roots of a configuration (in the native
//! module, the main thread's root fetches for every worker).

use crate::jwt::{Jwt, KeySet};
use gateway_common::hosting::RootHost;
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
}

#[derive(Debug)]
struct InFlight {
    token: u32,
    /// Fetching the discovery document (else the JWKS).
    discovery: bool,
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
