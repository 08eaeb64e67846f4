//! throttling's key extraction (query parameters, headers, JWT claims, the
//! client address behind X-Forwarded-For) and the counting that follows,
//! in this Envoy's shared data (an in-memory store). Options: `@peer: ip:port`
//! (Envoy's `source.address`), `@claim: name`, `@parameter: name`. Planning a request is
//! deterministic, and counting it never panics.
#![no_main]

use gateway_common::store::MemoryStore;
use gateway_fuzz::{config, Request};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use throttling::key::{jwt_claim, query_value};
use throttling::policy::Throttling;

fn policy() -> &'static Throttling {
    static POLICY: OnceLock<Throttling> = OnceLock::new();
    POLICY.get_or_init(|| {
        config(throttling::compile_config(
            br#"{
              "client_address": { "trusted_proxies": ["127.0.0.1", "10.0.0.0/8"], "envoy_appended_xff": true },
              "user": { "jwt_claim": "sub" },
              "slots": 64,
              "rules": [
                { "name": "per-user", "key": "user", "limit": 5, "window": "1m",
                  "exceptions": [{ "users": ["vip"], "limit": 50 }] },
                { "name": "per-region", "key": { "parameter": { "query": "region" } }, "limit": 3, "window": "10s", "missing_key": "shared" },
                { "name": "per-tenant", "key": { "parameter": { "header": "x-tenant" } }, "limit": 3, "window": "1s", "algorithm": "sliding" },
                { "name": "per-client", "key": "client_ip", "limit": 2, "window": "1m" },
                { "name": "per-api", "match": { "path": { "template": "/items/{id}" } }, "key": { "parameter": { "path": "id" } }, "limit": 1, "window": "1h" }
              ]
            }"#,
        ))
    })
}

fuzz_target!(|data: &[u8]| {
    let request = Request::parse(data);
    let option = |name: &str| request.option(name).unwrap_or_default();
    if let Some(authorization) = request.header("authorization") {
        let _ = jwt_claim(authorization, option("claim"));
    }
    let _ = query_value(&request.path, option("parameter"));

    let policy = policy();
    let host = request
        .host(&[])
        .with_property(&["source", "address"], option("peer"));
    let plan = policy.plan(&host);
    assert_eq!(
        format!("{plan:?}"),
        format!("{:?}", policy.plan(&host)),
        "the same request planned twice differs"
    );
    let store = MemoryStore::new();
    if policy.initialize(&store).is_ok() {
        let _ = policy.decide_locally(&plan, &store, 1);
        let _ = policy.decide_locally(&plan, &store, 3);
    }
});
