//! What a hostile authorizer can answer ext-auth: any status, headers and
//! body give a decision without a panic, and a decision the cache keeps
//! reads back the same from the shared table.
#![no_main]

use ext_auth::cache::{CacheKey, Stored};
use ext_auth::policy::{Answer, Decision, ExtAuth};
use gateway_common::store::MemoryStore;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const CONFIG: &str = r#"{
  "authorizer": {"cluster": "authz"},
  "upstream_headers": ["x-user-id", "x-tenant"],
  "client_headers": ["www-authenticate"],
  "cache": {"slots": 4, "max_entry_bytes": 1024}
}"#;

fn policy() -> &'static ExtAuth {
    static POLICY: OnceLock<ExtAuth> = OnceLock::new();
    POLICY.get_or_init(|| {
        ext_auth::compile_config(CONFIG.as_bytes()).expect("the target's configuration")
    })
}

// Two bytes of status, then header lines (`name: value`) up to a NUL, then the body.
fuzz_target!(|data: &[u8]| {
    let [high, low, rest @ ..] = data else {
        return;
    };
    let status = u32::from(u16::from_be_bytes([*high, *low]));
    let (head, body) = match rest.iter().position(|b| *b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let headers = String::from_utf8_lossy(head)
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect();
    let answer = Answer {
        status,
        headers,
        body: body.to_vec(),
    };
    let (decision, ttl) = policy().decide(Ok(answer));
    if matches!(decision, Decision::Failed(_)) {
        assert_eq!(ttl, None, "a failure is never cached");
    }
    let (Some(cache), Some(ttl)) = (policy().cache(), ttl) else {
        return;
    };
    let store = MemoryStore::new();
    let key = CacheKey([7; 16]);
    match cache.store(&store, &key, &decision, 0, ttl) {
        Ok(Stored::Kept | Stored::Evicted) => {
            let found = cache
                .lookup(&store, &key, 0)
                .expect("a memory store answers");
            assert_eq!(found.as_ref(), Some(&decision));
        }
        Ok(Stored::TooLarge) => {}
        Err(error) => panic!("a memory store failed: {error:?}"),
    }
});
