use crate::cache::{CacheKey, Stored, ENTRIES_PER_SLOT};
use crate::policy::*;
use crate::*;
use gateway_common::flights::{Flights, Joined};
use gateway_common::host::FakeHost;
use gateway_common::store::MemoryStore;
use serde_json::{json, Value};
use std::rc::Rc;

fn compile(config: Value) -> ExtAuth {
    compile_config(config.to_string().as_bytes()).expect("valid configuration")
}

fn error_of(config: Value) -> String {
    compile_config(config.to_string().as_bytes())
        .expect_err("invalid configuration")
        .to_string()
}

fn base() -> Value {
    json!({
        "authorizer": {"cluster": "authorizer", "path": "/check"},
        "identity": [{"from": "header", "name": "authorization"}],
        "upstream_headers": ["x-user-id", "x-tenant"],
        "client_headers": ["www-authenticate"],
        "user_header": "x-user-id",
        "cache": {}
    })
}

fn with(mut config: Value, field: &str, value: Value) -> Value {
    config[field] = value;
    config
}

fn request(path: &str) -> FakeHost {
    FakeHost::new()
        .with_header(":method", "GET")
        .with_header(":path", path)
        .with_header(":authority", "api.example.com")
        .with_property(&["source", "address"], "10.0.0.7:4711")
}

fn ask(policy: &ExtAuth, host: &FakeHost) -> Pending {
    match policy.check(host) {
        Check::Ask(pending) => *pending,
        other => panic!("expected a call, got {other:?}"),
    }
}

fn answer(status: u32, headers: &[(&str, &str)], body: &str) -> Result<Answer, Failure> {
    Ok(Answer {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: body.as_bytes().to_vec(),
    })
}

#[test]
fn configuration_errors_name_the_field() {
    let cases = [
        (
            json!({"authorizer": {"cluster": "a b"}}),
            "authorizer.cluster",
        ),
        (
            json!({"authorizer": {"cluster": "a", "path": "check"}}),
            "authorizer.path",
        ),
        (
            json!({"authorizer": {"cluster": "a", "timeout_ms": 0}}),
            "authorizer.timeout_ms",
        ),
        (
            json!({"authorizer": {"cluster": "a", "forward_headers": ["host"]}}),
            "authorizer.forward_headers",
        ),
        (
            json!({"authorizer": {"cluster": "a", "max_answer_bytes": 0}}),
            "authorizer.max_answer_bytes",
        ),
        (
            json!({"authorizer": {"cluster": "a"}, "identity": [{"from": "header", "name": "a b"}]}),
            "identity[0].name",
        ),
        (
            json!({"authorizer": {"cluster": "a"}, "identity": [{"from": "app"}, {"from": "app"}]}),
            "identity[1]",
        ),
        (
            json!({"authorizer": {"cluster": "a"}, "identity": [{"from": "path_param", "name": "id"}]}),
            "identity[0]",
        ),
        (
            json!({"authorizer": {"cluster": "a"}, "upstream_headers": ["content-length"]}),
            "upstream_headers",
        ),
        (
            json!({"authorizer": {"cluster": "a"}, "client_headers": ["x", "X"]}),
            "client_headers[1]",
        ),
        (
            json!({"authorizer": {"cluster": "a"}, "user_header": "x-user"}),
            "user_header",
        ),
        (
            json!({"authorizer": {"cluster": "a"}, "cache": {"slots": 0}}),
            "cache.slots",
        ),
        (
            json!({"authorizer": {"cluster": "a"}, "cache": {"ttl_seconds": 10, "max_ttl_seconds": 5}}),
            "cache.ttl_seconds",
        ),
        (
            json!({"authorizer": {"cluster": "a"}, "cache": {"max_entry_bytes": 10}}),
            "cache.max_entry_bytes",
        ),
        (
            json!({"authorizer": {"cluster": "a"}, "rules": [{"match": {"path": {"template": "/x/{"}}}]}),
            "rules[0].match",
        ),
        (
            json!({"authorizer": {"cluster": "a"}, "failure_mode": "maybe"}),
            "failure_mode",
        ),
        (
            json!({"authorizer": {"cluster": "a"}, "identity": [{"from": "cookie", "name": "s"}]}),
            "identity[0]",
        ),
        (json!({"authoriser": {"cluster": "a"}}), "authoriser"),
    ];
    for (config, field) in cases {
        let error = error_of(config.clone());
        assert!(
            error.starts_with(field),
            "{config}: expected an error at `{field}`, got `{error}`"
        );
    }
}

#[test]
fn a_path_variable_must_be_in_every_authorizing_rule() {
    let config = json!({
        "authorizer": {"cluster": "a"},
        "identity": [{"from": "path_param", "name": "id"}],
        "rules": [
            {"name": "orders", "match": {"path": {"template": "/orders/{id}"}}},
            {"name": "health", "match": {"path": {"exact": "/health"}}, "authorize": false},
            {"name": "users", "match": {"path": {"prefix": "/users"}}}
        ]
    });
    let error = error_of(config.clone());
    assert!(
        error.contains("rule `users` has no path variable `{id}`"),
        "{error}"
    );
    let mut fixed = config;
    fixed["rules"].as_array_mut().unwrap().pop();
    compile(fixed);
}

#[test]
fn requests_without_a_matching_rule_or_under_an_exempt_rule_are_not_asked_about() {
    let policy = compile(with(
        base(),
        "rules",
        json!([
            {"match": {"path": {"exact": "/orders/public"}}, "authorize": false},
            {"match": {"path": {"prefix": "/orders"}}}
        ]),
    ));
    let signed = |path| request(path).with_header("authorization", "Bearer t");
    assert!(matches!(policy.check(&signed("/users")), Check::Skip));
    assert!(matches!(
        policy.check(&signed("/orders/public")),
        Check::Skip
    ));
    assert!(matches!(policy.check(&signed("/orders/7")), Check::Ask(_)));
}

#[test]
fn a_missing_identity_source_is_refused_with_its_name() {
    let policy = compile(base());
    let Check::Refuse(error) = policy.check(&request("/orders")) else {
        panic!("expected a refusal");
    };
    assert_eq!(error.status, 401);
    assert_eq!(error.code, "A401IS");
    assert_eq!(
        error.message,
        "Identity Source Missing: header authorization"
    );
    let empty = request("/orders").with_header("authorization", "");
    assert!(matches!(policy.check(&empty), Check::Refuse(_)));
}

#[test]
fn every_kind_of_identity_source_is_read() {
    let policy = compile(json!({
        "authorizer": {"cluster": "a"},
        "identity": [
            {"from": "header", "name": "Authorization"},
            {"from": "query", "name": "token"},
            {"from": "path_param", "name": "id"},
            {"from": "client_ip"},
            {"from": "app"}
        ],
        "rules": [{"match": {"path": {"template": "/orders/{id}"}}}],
        "client_address": {"trusted_proxies": ["10.0.0.0/8"]}
    }));
    let host = request("/orders/42?token=a%20b&x=1")
        .with_header("authorization", "Bearer t")
        .with_header("x-forwarded-for", "203.0.113.9")
        .with_property(&["gw_app"], "app-1");
    let pending = ask(&policy, &host);
    assert_eq!(
        pending.values,
        ["Bearer t", "a b", "42", "203.0.113.9", "app-1"]
    );
    let no_app = request("/orders/42?token=a").with_header("authorization", "Bearer t");
    let Check::Refuse(error) = policy.check(&no_app) else {
        panic!("expected a refusal");
    };
    assert_eq!(error.message, "Identity Source Missing: app");
    let spoofed = request("/orders/42?token=a")
        .with_header("authorization", "Bearer t")
        .with_header("x-forwarded-for", "not-an-address")
        .with_property(&["gw_app"], "app-1");
    let Check::Refuse(error) = policy.check(&spoofed) else {
        panic!("expected a refusal");
    };
    assert_eq!(error.status, 400);
}

#[test]
fn the_key_is_the_same_for_the_same_identity_and_differs_otherwise() {
    let policy = compile(base());
    let key = |token: &str, path: &str| {
        ask(&policy, &request(path).with_header("authorization", token)).key
    };
    assert_eq!(key("a", "/x"), key("a", "/y"), "the path is not a source");
    assert_ne!(key("a", "/x"), key("b", "/x"));
    let other_config = compile(with(base(), "failure_mode", json!("allow")));
    let other = ask(
        &other_config,
        &request("/x").with_header("authorization", "a"),
    )
    .key;
    assert_ne!(key("a", "/x"), other, "another configuration, another key");
    // Values are length-prefixed: ("ab","c") is not ("a","bc").
    let two = compile(json!({
        "authorizer": {"cluster": "a"},
        "identity": [{"from": "header", "name": "x-a"}, {"from": "header", "name": "x-b"}]
    }));
    let pair = |a: &str, b: &str| {
        ask(
            &two,
            &request("/").with_header("x-a", a).with_header("x-b", b),
        )
        .key
    };
    assert_ne!(pair("ab", "c"), pair("a", "bc"));
}

#[test]
fn the_forward_shape_passes_the_request_line_and_the_identity_as_headers() {
    let policy = compile(json!({
        "authorizer": {"cluster": "authz", "authority": "auth.internal", "path": "/verify",
                       "forward_headers": ["x-trace", "authorization"]},
        "identity": [{"from": "header", "name": "authorization"}, {"from": "query", "name": "t"},
                     {"from": "client_ip"}]
    }));
    let host = request("/orders?t=1")
        .with_header("authorization", "Bearer t")
        .with_header("x-trace", "abc");
    let call = policy.call(&ask(&policy, &host), &host);
    let headers: Vec<(&str, &str)> = call
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        headers,
        [
            (":method", "GET"),
            (":path", "/verify"),
            (":authority", "auth.internal"),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/orders?t=1"),
            ("x-forwarded-host", "api.example.com"),
            ("authorization", "Bearer t"),
            ("x-auth-query-t", "1"),
            ("x-auth-client-ip", "10.0.0.7"),
            ("x-trace", "abc"),
        ]
    );
    assert_eq!(call.body, None);
}

#[test]
fn the_json_shape_names_every_source() {
    let policy = compile(json!({
        "authorizer": {"cluster": "authz", "shape": "json"},
        "identity": [{"from": "header", "name": "Authorization"}, {"from": "query", "name": "t"},
                     {"from": "client_ip"}, {"from": "app"}]
    }));
    let host = request("/orders?t=1")
        .with_header("authorization", "Bearer t")
        .with_property(&["gw_app"], "app-1");
    let call = policy.call(&ask(&policy, &host), &host);
    assert_eq!(call.headers[0], (":method".into(), "POST".into()));
    let body: Value = serde_json::from_slice(&call.body.expect("a body")).unwrap();
    assert_eq!(
        body,
        json!({
            "method": "GET", "path": "/orders?t=1", "host": "api.example.com",
            "identity": {"header": {"authorization": "Bearer t"}, "query": {"t": "1"},
                         "client_ip": "10.0.0.7", "app": "app-1"}
        })
    );
}

#[test]
fn a_2xx_allows_with_the_listed_headers_only() {
    let policy = compile(base());
    let (decision, ttl) = policy.decide(answer(
        204,
        &[
            ("X-User-Id", "u-1"),
            ("x-admin", "yes"),
            ("x-tenant", "t-9"),
        ],
        "",
    ));
    assert_eq!(
        decision,
        Decision::Allow {
            headers: vec![
                ("x-user-id".into(), "u-1".into()),
                ("x-tenant".into(), "t-9".into())
            ]
        }
    );
    assert_eq!(ttl, Some(60_000));
}

#[test]
fn a_401_or_403_is_passed_on_with_its_body_and_listed_headers() {
    let policy = compile(base());
    for status in [401, 403] {
        let (decision, ttl) = policy.decide(answer(
            status,
            &[
                ("www-authenticate", "Bearer"),
                ("content-type", "application/json"),
                ("x-internal", "secret"),
            ],
            r#"{"error":"expired"}"#,
        ));
        assert_eq!(
            decision,
            Decision::Deny {
                status,
                headers: vec![
                    ("www-authenticate".into(), "Bearer".into()),
                    ("content-type".into(), "application/json".into())
                ],
                body: br#"{"error":"expired"}"#.to_vec()
            }
        );
        assert_eq!(ttl, Some(5_000), "the denial TTL");
    }
}

#[test]
fn any_other_status_or_no_answer_is_a_failure_and_never_cached() {
    let policy = compile(base());
    for status in [100, 302, 400, 404, 429, 500, 503] {
        assert_eq!(
            policy.decide(answer(status, &[("cache-control", "max-age=60")], "")),
            (Decision::Failed(Failure::Status(status)), None)
        );
    }
    for failure in [
        Failure::NoAnswer,
        Failure::Dispatch,
        Failure::TooLarge(1 << 20),
    ] {
        assert_eq!(
            policy.decide(Err(failure.clone())),
            (Decision::Failed(failure), None)
        );
    }
}

#[test]
fn cache_control_sets_or_forbids_the_lifetime_within_the_cap() {
    let policy = compile(with(base(), "cache", json!({"max_ttl_seconds": 120})));
    let ttl = |value: &str| {
        policy
            .decide(answer(200, &[("Cache-Control", value)], ""))
            .1
    };
    assert_eq!(ttl("max-age=30"), Some(30_000));
    assert_eq!(ttl("public, max-age=30, s-maxage=10"), Some(10_000));
    assert_eq!(ttl("max-age=100000"), Some(120_000));
    assert_eq!(ttl("max-age=0"), None);
    assert_eq!(ttl("no-store"), None);
    assert_eq!(ttl("no-cache, max-age=30"), None);
    assert_eq!(ttl("private"), None);
    assert_eq!(ttl("max-age=\"20\""), Some(20_000));
    assert_eq!(
        ttl("must-revalidate"),
        Some(60_000),
        "unsaid: the configured TTL"
    );
    assert_eq!(ttl("max-age=abc"), Some(60_000));
    let deny = policy
        .decide(answer(403, &[("cache-control", "max-age=30")], ""))
        .1;
    assert_eq!(deny, Some(30_000), "max-age holds for denials too");
    let never = compile(with(base(), "cache", json!({"deny_ttl_seconds": 0})));
    assert_eq!(never.decide(answer(401, &[], "")).1, None);
    let uncached = compile(with(base(), "cache", Value::Null));
    assert_eq!(uncached.decide(answer(200, &[], "")).1, None);
}

fn key(n: u8) -> CacheKey {
    CacheKey([n; 16])
}

fn allow(user: &str) -> Decision {
    Decision::Allow {
        headers: vec![("x-user-id".into(), user.into())],
    }
}

#[test]
fn a_cached_decision_is_found_until_it_expires() {
    let policy = compile(base());
    let cache = policy.cache().unwrap();
    let store = MemoryStore::new();
    cache.initialize(&store).unwrap();
    assert_eq!(cache.lookup(&store, &key(1), 0).unwrap(), None);
    let deny = Decision::Deny {
        status: 403,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: b"no".to_vec(),
    };
    assert_eq!(
        cache.store(&store, &key(1), &allow("u1"), 0, 1000),
        Ok(Stored::Kept)
    );
    assert_eq!(
        cache.store(&store, &key(2), &deny, 0, 500),
        Ok(Stored::Kept)
    );
    assert_eq!(
        cache.lookup(&store, &key(1), 999).unwrap(),
        Some(allow("u1"))
    );
    assert_eq!(cache.lookup(&store, &key(2), 499).unwrap(), Some(deny));
    assert_eq!(cache.lookup(&store, &key(2), 500).unwrap(), None);
    assert_eq!(cache.lookup(&store, &key(1), 1000).unwrap(), None);
    // A new decision for the same key replaces the old one.
    cache.store(&store, &key(1), &allow("u2"), 0, 2000).unwrap();
    assert_eq!(
        cache.lookup(&store, &key(1), 10).unwrap(),
        Some(allow("u2"))
    );
}

#[test]
fn a_full_slot_evicts_the_decision_expiring_soonest() {
    let policy = compile(with(base(), "cache", json!({"slots": 1})));
    let cache = policy.cache().unwrap();
    let store = MemoryStore::new();
    cache.initialize(&store).unwrap();
    for n in 0..ENTRIES_PER_SLOT as u8 {
        let stored = cache.store(&store, &key(n), &allow("u"), 0, 1000 + u64::from(n));
        assert_eq!(stored, Ok(Stored::Kept));
    }
    assert_eq!(
        cache.store(&store, &key(9), &allow("u"), 0, 5000),
        Ok(Stored::Evicted)
    );
    assert_eq!(
        cache.lookup(&store, &key(0), 1).unwrap(),
        None,
        "soonest evicted"
    );
    assert!(cache.lookup(&store, &key(1), 1).unwrap().is_some());
    assert!(cache.lookup(&store, &key(9), 1).unwrap().is_some());
    // Expired entries make room without an eviction.
    assert_eq!(
        cache.store(&store, &key(10), &allow("u"), 1002, 9000),
        Ok(Stored::Kept)
    );
    assert_eq!(store.key_count(), 1, "the table never grows");
}

#[test]
fn a_decision_over_the_entry_limit_is_not_cached() {
    let policy = compile(with(base(), "cache", json!({"max_entry_bytes": 64})));
    let cache = policy.cache().unwrap();
    let store = MemoryStore::new();
    let big = Decision::Deny {
        status: 401,
        headers: vec![],
        body: vec![b'x'; 64],
    };
    assert_eq!(
        cache.store(&store, &key(1), &big, 0, 100),
        Ok(Stored::TooLarge)
    );
    assert_eq!(cache.lookup(&store, &key(1), 0).unwrap(), None);
}

#[test]
fn a_corrupt_slot_reads_as_empty() {
    let policy = compile(with(base(), "cache", json!({"slots": 1})));
    let cache = policy.cache().unwrap();
    let store = MemoryStore::new();
    use gateway_common::store::SharedStore;
    store
        .set(
            "gw.ext_auth.cache.0",
            &[1, 2, 3, 255, 255, 255, 255, 0, 9],
            None,
        )
        .unwrap();
    assert_eq!(cache.lookup(&store, &key(1), 0).unwrap(), None);
    assert_eq!(
        cache.store(&store, &key(1), &allow("u"), 0, 10),
        Ok(Stored::Kept)
    );
    assert_eq!(cache.lookup(&store, &key(1), 0).unwrap(), Some(allow("u")));
}

#[test]
fn the_first_request_for_a_key_leads_and_the_others_wait_for_its_decision() {
    let mut flights = Flights::<Rc<Decision>>::default();
    assert_eq!(flights.join(key(1), 10), Joined::Lead);
    assert_eq!(flights.join(key(1), 11), Joined::Wait);
    assert_eq!(flights.join(key(1), 12), Joined::Wait);
    assert_eq!(flights.join(key(2), 13), Joined::Lead);
    flights.leave(&key(1), 12);
    let decision = Rc::new(allow("u"));
    assert_eq!(
        flights.land(&key(1), 99, &decision),
        Vec::<u32>::new(),
        "not its leader"
    );
    assert_eq!(flights.land(&key(1), 10, &decision), [11]);
    assert_eq!(flights.take_mail(11).as_deref(), Some(&allow("u")));
    assert_eq!(flights.take_mail(11), None);
    assert_eq!(flights.take_mail(12), None);
    assert_eq!(flights.len(), 1);
    // A new burst for key 1 starts a new flight.
    assert_eq!(flights.join(key(1), 14), Joined::Lead);
}

#[test]
fn waiters_of_a_leader_that_went_away_ask_again_without_a_decision() {
    let mut flights = Flights::<Rc<Decision>>::default();
    flights.join(key(1), 10);
    flights.join(key(1), 11);
    flights.join(key(1), 12);
    assert_eq!(flights.abandon(&key(1), 10), [11, 12]);
    assert_eq!(flights.take_mail(11), None);
    assert!(flights.is_empty());
    assert_eq!(flights.join(key(1), 11), Joined::Lead);
    assert_eq!(flights.join(key(1), 12), Joined::Wait);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_cache_control_value_gives_a_lifetime_without_panicking(value in ".{0,80}") {
            let _ = cache_lifetime(&value);
        }

        #[test]
        fn any_decision_reads_back_from_the_table(
            user in "[ -~]{0,40}",
            body in proptest::collection::vec(any::<u8>(), 0..200),
            status in prop::sample::select(vec![401u32, 403]),
        ) {
            let policy = compile(with(base(), "cache", json!({"slots": 2})));
            let cache = policy.cache().unwrap();
            let store = MemoryStore::new();
            let decisions = [allow(&user), Decision::Deny { status, headers: vec![("www-authenticate".into(), user.clone())], body }];
            for (n, decision) in decisions.iter().enumerate() {
                cache.store(&store, &key(n as u8), decision, 0, 100).unwrap();
                let found = cache.lookup(&store, &key(n as u8), 1).unwrap();
                prop_assert_eq!(found.as_ref(), Some(decision));
            }
        }
    }
}
