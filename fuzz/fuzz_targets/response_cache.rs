//! response-cache's stored entries and its reading of a request and an
//! answer: the input's body is decoded as a stored entry (what decodes
//! encodes back to the same bytes); the request's path, query and headers
//! make a key under a rule keyed by `@query` and `@headers`, and the
//! `cache-control`, `vary` and `set-cookie` headers of the input decide
//! whether an answer of `@status` may be stored. Any bytes are decoded or
//! refused, and any request keyed, without a panic.
#![no_main]

use gateway_common::host::RequestLine;
use gateway_fuzz::{Request, AUTHORITY};
use libfuzzer_sys::fuzz_target;
use response_cache::entry::CachedResponse;

fuzz_target!(|data: &[u8]| {
    let request = Request::parse(data);
    if let Some(entry) = CachedResponse::decode(&request.body) {
        assert_eq!(entry.encode(), request.body);
    }
    let list = |name: &str| -> Vec<String> {
        request
            .option(name)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default()
    };
    let mut key = serde_json::json!({"headers": list("headers"), "app": true});
    if request.option("query").is_some() {
        key["query"] = serde_json::json!(list("query"));
    }
    let config = serde_json::json!({"rules": [{"ttl_seconds": 60, "key": key}]});
    let Ok(policy) = response_cache::compile_config(config.to_string().as_bytes()) else {
        return;
    };
    let Some((index, _)) = policy.rules.first_for(&request.attrs()) else {
        return;
    };
    let host = request.host(&[]);
    let line = RequestLine {
        authority: AUTHORITY.into(),
        method: request.method.clone(),
        path: request.path.clone(),
    };
    let _ = policy.key(index, &host, &line);
    if let Some(rule) = policy.rules.get(index) {
        let status = request.option("status").and_then(|s| s.parse().ok());
        let header = |name: &str| request.header(name).map(str::to_string);
        if let Ok(ttl_ms) = rule.storable(status, &header) {
            assert!(ttl_ms <= 60_000);
        }
    }
});
