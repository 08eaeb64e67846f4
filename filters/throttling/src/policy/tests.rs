use super::*;
use crate::lease::Leases;
use crate::table::WAYS;
use crate::window::tests::utc;
use gateway_common::config::parse_json;
use gateway_common::host::FakeHost;
use gateway_common::identity::APP_KEY_PROPERTY;
use gateway_common::store::{MemoryStore, StoreError, Versioned};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// 2026-05-17T09:00:00Z, the start of every window up to a day.
fn t0() -> u64 {
    utc((2026, 5, 17), (9, 0, 0), 0)
}

fn throttling(config: serde_json::Value) -> Throttling {
    let config: ThrottlingConfig = parse_json(config.to_string().as_bytes()).unwrap();
    Throttling::compile(&config).unwrap()
}

fn prepared(config: serde_json::Value) -> (Throttling, MemoryStore) {
    let policy = throttling(config);
    let store = MemoryStore::new();
    policy.initialize(&store).unwrap();
    (policy, store)
}

fn config_error(json: &str) -> String {
    parse_json::<ThrottlingConfig>(json.as_bytes())
        .and_then(|config| Throttling::compile(&config))
        .unwrap_err()
        .to_string()
}

/// A request at `at_ms` from 192.0.2.10.
fn request(path: &str, at_ms: u64) -> FakeHost {
    let host = FakeHost::new()
        .with_header(":authority", "api.example.com")
        .with_header(":method", "GET")
        .with_header(":path", path)
        .with_property(&["source", "address"], "192.0.2.10:5555");
    host.clock.set(Duration::from_millis(at_ms));
    host
}

fn signed_by(app: &str, path: &str, at_ms: u64) -> FakeHost {
    request(path, at_ms).with_property(&[APP_KEY_PROPERTY], app)
}

/// How many of `hosts` are admitted, in order.
fn admitted(policy: &Throttling, store: &MemoryStore, hosts: &[FakeHost]) -> usize {
    hosts
        .iter()
        .filter(|host| policy.decide(*host, store).verdict == Verdict::Allowed)
        .count()
}

fn times<T>(n: usize, make: impl Fn() -> T) -> Vec<T> {
    (0..n).map(|_| make()).collect()
}

fn error_code(decision: &Decision) -> Option<&'static str> {
    decision.verdict.error().map(|e| e.code)
}

fn rule(name: &str, limit: u32, window: &str) -> serde_json::Value {
    json!({"name": name, "limit": limit, "window": window})
}

#[test]
fn an_api_rule_admits_exactly_its_limit_per_window_and_then_refuses_with_429() {
    let (policy, store) = prepared(json!({"rules": [rule("all", 3, "1m")]}));
    let now = t0() + 45_250;
    assert_eq!(
        admitted(&policy, &store, &times(5, || request("/", now))),
        3
    );
    let refused = policy.decide(&request("/", now), &store);
    assert_eq!(
        refused.verdict,
        Verdict::Throttled {
            rule: 0,
            error: codes::API,
            retry_after_secs: 15
        }
    );
    assert_eq!(refused.verdict.error().map(|e| e.status), Some(429));
    assert_eq!(refused.events, [(0, RuleEvent::Throttled)]);
    // The next minute admits again.
    let next = t0() + 60_000;
    assert_eq!(
        admitted(&policy, &store, &times(5, || request("/", next))),
        3
    );
}

#[test]
fn the_quota_reports_the_limit_what_is_left_and_the_reset() {
    let (policy, store) = prepared(json!({"rules": [rule("all", 3, "1h")]}));
    let now = t0() + 20 * 60_000;
    let first = policy.decide(&request("/", now), &store);
    assert_eq!(
        first.quota,
        Some(Quota {
            limit: 3,
            remaining: 2,
            reset_ms: 40 * 60_000
        })
    );
    policy.decide(&request("/", now), &store);
    policy.decide(&request("/", now), &store);
    let refused = policy.decide(&request("/", now), &store);
    assert_eq!(refused.quota.map(|q| q.remaining), Some(0));
}

#[test]
fn every_matching_rule_applies_and_all_must_pass() {
    let (policy, store) = prepared(json!({"rules": [
        {"name": "orders", "match": {"path": {"prefix": "/orders"}}, "limit": 2, "window": "1m"},
        {"name": "everything", "limit": 3, "window": "1m"}
    ]}));
    let now = t0();
    // /orders counts in both rules; /other only in `everything`.
    let first = policy.decide(&request("/orders/1", now), &store);
    assert_eq!(
        first.events,
        [(0, RuleEvent::Allowed), (1, RuleEvent::Allowed)]
    );
    assert_eq!(
        first.quota.map(|q| (q.limit, q.remaining)),
        Some((2, 1)),
        "the tightest rule is reported"
    );
    assert_eq!(
        policy.decide(&request("/other", now), &store).verdict,
        Verdict::Allowed
    );
    // `everything` has 1 left, `orders` 1: the next /orders passes both…
    assert_eq!(
        policy.decide(&request("/orders/2", now), &store).verdict,
        Verdict::Allowed
    );
    // …and now `everything` is spent for all paths.
    let refused = policy.decide(&request("/orders/3", now), &store);
    assert!(matches!(
        refused.verdict,
        Verdict::Throttled { rule: 0, .. }
    ));
    assert!(matches!(
        policy.decide(&request("/other", now), &store).verdict,
        Verdict::Throttled { rule: 1, .. }
    ));
}

#[test]
fn a_request_refused_by_a_later_rule_is_given_back_to_the_earlier_ones() {
    let (policy, store) = prepared(json!({"rules": [
        {"name": "per-app", "key": "app", "limit": 1, "window": "1m"},
        {"name": "total", "limit": 2, "window": "1m"}
    ]}));
    let now = t0();
    assert_eq!(
        policy.decide(&signed_by("a", "/", now), &store).verdict,
        Verdict::Allowed
    );
    assert_eq!(
        policy.decide(&signed_by("b", "/", now), &store).verdict,
        Verdict::Allowed
    );
    // `total` is spent: app c's request is refused by it, and does not
    // stay counted against c's own per-app quota.
    let refused = policy.decide(&signed_by("c", "/", now), &store);
    assert!(matches!(
        refused.verdict,
        Verdict::Throttled { rule: 1, .. }
    ));
    assert_eq!(
        refused.events,
        [(0, RuleEvent::Allowed), (1, RuleEvent::Throttled)]
    );
    // Where only a narrower rule refuses, the given-back request leaves
    // room in the per-app counter:
    let (policy, store) = prepared(json!({"rules": [
        {"name": "per-app", "key": "app", "limit": 1, "window": "1m"},
        {"name": "total", "limit": 1, "window": "1m", "match": {"path": {"prefix": "/scarce"}}}
    ]}));
    assert_eq!(
        policy
            .decide(&signed_by("x", "/scarce", now), &store)
            .verdict,
        Verdict::Allowed
    );
    assert!(matches!(
        policy
            .decide(&signed_by("c", "/scarce", now), &store)
            .verdict,
        Verdict::Throttled { rule: 1, .. }
    ));
    assert_eq!(
        policy
            .decide(&signed_by("c", "/plenty", now), &store)
            .verdict,
        Verdict::Allowed
    );
}

#[test]
fn rules_whose_match_does_not_hold_are_not_counted() {
    let (policy, store) = prepared(json!({"rules": [
        {"name": "admin", "match": {"path": {"prefix": "/admin"}, "methods": ["POST"]}, "limit": 1, "window": "1m"}
    ]}));
    let now = t0();
    for _ in 0..3 {
        let decision = policy.decide(&request("/admin/x", now), &store);
        assert_eq!(decision.verdict, Verdict::Allowed);
        assert!(decision.events.is_empty());
        assert_eq!(decision.quota, None);
    }
}

#[test]
fn a_per_app_limit_counts_each_verified_app_apart_and_ignores_spoofed_headers() {
    let (policy, store) = prepared(json!({"rules": [
        {"name": "per-app", "key": "app", "limit": 2, "window": "1m"}
    ]}));
    let now = t0();
    // A header claiming an app is not an app: the rule does not apply.
    let spoofed = || {
        request("/", now)
            .with_header("x-gw-app-key", "a")
            .with_header("gw_app", "a")
    };
    for _ in 0..5 {
        let decision = policy.decide(&spoofed(), &store);
        assert_eq!(decision.verdict, Verdict::Allowed);
        assert_eq!(decision.events, [(0, RuleEvent::NoKey)]);
    }
    assert_eq!(
        admitted(&policy, &store, &times(3, || signed_by("a", "/", now))),
        2
    );
    assert_eq!(
        admitted(&policy, &store, &times(3, || signed_by("b", "/", now))),
        2
    );
    assert_eq!(
        error_code(&policy.decide(&signed_by("a", "/", now), &store)),
        Some("A429AK")
    );
}

#[test]
fn an_exception_gives_an_app_its_own_limit_or_exempts_it() {
    let (policy, store) = prepared(json!({"rules": [{
        "name": "per-app", "key": "app", "limit": 2, "window": "1m",
        "exceptions": [
            {"apps": ["partner"], "limit": 5},
            {"apps": ["internal", "monitor"], "exempt": true},
            {"apps": ["partner"], "exempt": true}
        ]
    }]}));
    let now = t0();
    assert_eq!(
        admitted(
            &policy,
            &store,
            &times(9, || signed_by("partner", "/", now))
        ),
        5,
        "the first exception listing the app wins"
    );
    assert_eq!(
        admitted(
            &policy,
            &store,
            &times(9, || signed_by("regular", "/", now))
        ),
        2
    );
    assert_eq!(
        admitted(
            &policy,
            &store,
            &times(50, || signed_by("monitor", "/", now))
        ),
        50
    );
    let exempt = policy.decide(&signed_by("internal", "/", now), &store);
    assert_eq!(exempt.events, [(0, RuleEvent::Exempt)]);
    assert_eq!(exempt.quota, None);
}

#[test]
fn an_exception_on_an_api_rule_is_a_separate_pool_for_that_app() {
    let (policy, store) = prepared(json!({"rules": [{
        "name": "total", "limit": 2, "window": "1m",
        "exceptions": [{"apps": ["vip"], "limit": 3}, {"apps": ["ops"], "exempt": true}]
    }]}));
    assert_eq!(policy.shared_data_keys(), 3);
    let now = t0();
    assert_eq!(
        admitted(&policy, &store, &times(4, || request("/", now))),
        2
    );
    assert_eq!(
        admitted(&policy, &store, &times(4, || signed_by("vip", "/", now))),
        3
    );
    assert_eq!(
        admitted(&policy, &store, &times(4, || signed_by("ops", "/", now))),
        4
    );
    assert_eq!(
        admitted(&policy, &store, &times(4, || signed_by("other", "/", now))),
        0
    );
}

#[test]
fn a_user_exception_applies_to_the_user_read_from_the_configured_source() {
    let (policy, store) = prepared(json!({
        "user": {"header": "X-User-Id"},
        "rules": [{
            "name": "per-user", "key": "user", "limit": 1, "window": "1m",
            "exceptions": [{"users": ["admin"], "exempt": true}, {"users": ["batch"], "limit": 3}]
        }]
    }));
    let now = t0();
    let as_user = |user: &str| request("/", now).with_header("x-user-id", user);
    assert_eq!(admitted(&policy, &store, &times(3, || as_user("alice"))), 1);
    assert_eq!(admitted(&policy, &store, &times(3, || as_user("bob"))), 1);
    assert_eq!(admitted(&policy, &store, &times(9, || as_user("admin"))), 9);
    assert_eq!(admitted(&policy, &store, &times(9, || as_user("batch"))), 3);
    assert_eq!(
        error_code(&policy.decide(&as_user("alice"), &store)),
        Some("A429US")
    );
    // No user header: the rule does not apply.
    assert_eq!(
        policy.decide(&request("/", now), &store).events,
        [(0, RuleEvent::NoKey)]
    );
}

#[test]
fn users_can_come_from_a_query_parameter_or_a_jwt_claim() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let now = t0();
    let (policy, store) = prepared(json!({
        "user": {"query": "uid"},
        "rules": [{"name": "per-user", "key": "user", "limit": 1, "window": "1m"}]
    }));
    assert_eq!(
        admitted(&policy, &store, &times(2, || request("/?uid=al%69ce", now))),
        1
    );
    assert_eq!(
        admitted(
            &policy,
            &store,
            &times(2, || request("/?x=1&uid=alice", now))
        ),
        0
    );
    assert_eq!(
        admitted(&policy, &store, &times(2, || request("/?uid=bob", now))),
        1
    );

    let (policy, store) = prepared(json!({
        "user": {"jwt_claim": "sub"},
        "rules": [{"name": "per-user", "key": "user", "limit": 1, "window": "1m"}]
    }));
    let token = |sub: &str| {
        let payload = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"{sub}"}}"#));
        format!("Bearer h.{payload}.s")
    };
    let with = |sub: &str| request("/", now).with_header("authorization", &token(sub));
    assert_eq!(admitted(&policy, &store, &times(2, || with("u1"))), 1);
    assert_eq!(admitted(&policy, &store, &times(2, || with("u2"))), 1);
}

#[test]
fn client_ips_are_counted_apart_and_xff_is_believed_only_from_trusted_proxies() {
    let config = json!({
        "client_address": {"trusted_proxies": ["10.0.0.0/8"]},
        "rules": [{"name": "per-ip", "key": "client_ip", "limit": 1, "window": "1m"}]
    });
    let (policy, store) = prepared(config);
    let now = t0();
    let from = |peer: &str, xff: Option<&str>| {
        let host = FakeHost::new()
            .with_header(":authority", "api.example.com")
            .with_header(":method", "GET")
            .with_header(":path", "/")
            .with_property(&["source", "address"], peer);
        host.clock.set(Duration::from_millis(now));
        match xff {
            Some(xff) => host.with_header("x-forwarded-for", xff),
            None => host,
        }
    };
    assert_eq!(
        policy.decide(&from("198.51.100.1:1", None), &store).verdict,
        Verdict::Allowed
    );
    // An untrusted peer cannot pose as someone else with X-Forwarded-For.
    let spoofing = policy.decide(&from("198.51.100.1:2", Some("203.0.113.50")), &store);
    assert_eq!(error_code(&spoofing), Some("A429IP"));
    // Behind a trusted proxy, each forwarded client has its own quota.
    assert_eq!(
        policy
            .decide(&from("10.0.0.2:1", Some("203.0.113.7")), &store)
            .verdict,
        Verdict::Allowed
    );
    assert_eq!(
        policy
            .decide(&from("10.0.0.3:1", Some("203.0.113.8")), &store)
            .verdict,
        Verdict::Allowed
    );
    assert_eq!(
        error_code(&policy.decide(&from("10.0.0.2:1", Some("203.0.113.7")), &store)),
        Some("A429IP")
    );
    // Garbage handed on by a trusted proxy is a 400, not a free pass.
    let garbage = policy.decide(&from("10.0.0.2:1", Some("unknown")), &store);
    assert_eq!(garbage.verdict, Verdict::BadForwardedFor("unknown".into()));
    assert_eq!(error_code(&garbage), Some("I400HD"));
    // No IP peer (a Unix socket): no key, the rule does not apply.
    assert_eq!(
        policy.decide(&from("@socket", None), &store).events,
        [(0, RuleEvent::NoKey)]
    );
}

#[test]
fn ipv6_clients_in_one_prefix_share_a_quota() {
    let (policy, store) = prepared(json!({
        "rules": [{"name": "per-ip", "key": "client_ip", "limit": 2, "window": "1m"}]
    }));
    let now = t0();
    let from = |peer: &str| {
        let host = request("/", now);
        host.set_property(&["source", "address"], peer.as_bytes());
        host
    };
    assert_eq!(
        policy.decide(&from("[2001:db8:1:2::1]:1"), &store).verdict,
        Verdict::Allowed
    );
    assert_eq!(
        policy.decide(&from("[2001:db8:1:2::99]:1"), &store).verdict,
        Verdict::Allowed
    );
    assert!(
        policy
            .decide(&from("[2001:db8:1:2::abc]:1"), &store)
            .verdict
            != Verdict::Allowed
    );
    assert_eq!(
        policy.decide(&from("[2001:db8:1:3::1]:1"), &store).verdict,
        Verdict::Allowed
    );
}

#[test]
fn parameter_values_key_by_query_header_or_path_variable() {
    let now = t0();
    let (policy, store) = prepared(json!({"rules": [
        {"name": "by-region", "key": {"parameter": {"query": "region"}}, "limit": 1, "window": "1m"}
    ]}));
    assert_eq!(
        admitted(&policy, &store, &times(2, || request("/?region=eu", now))),
        1
    );
    assert_eq!(
        admitted(&policy, &store, &times(2, || request("/?region=us", now))),
        1
    );
    assert_eq!(
        error_code(&policy.decide(&request("/?region=eu", now), &store)),
        Some("A429PV")
    );

    let (policy, store) = prepared(json!({"rules": [
        {"name": "by-tenant", "key": {"parameter": {"header": "X-Tenant"}}, "limit": 1, "window": "1m"}
    ]}));
    let tenant = |t: &str| request("/", now).with_header("x-tenant", t);
    assert_eq!(admitted(&policy, &store, &times(2, || tenant("acme"))), 1);
    assert_eq!(admitted(&policy, &store, &times(2, || tenant("globex"))), 1);

    let (policy, store) = prepared(json!({"rules": [{
        "name": "per-order", "match": {"path": {"template": "/orders/{id}"}},
        "key": {"parameter": {"path": "id"}}, "limit": 1, "window": "1m"
    }]}));
    assert_eq!(
        admitted(&policy, &store, &times(2, || request("/orders/7", now))),
        1
    );
    assert_eq!(
        admitted(&policy, &store, &times(2, || request("/orders/8?x=1", now))),
        1
    );
}

#[test]
fn requests_without_the_key_are_skipped_or_share_one_counter() {
    let now = t0();
    let rule = |missing: &str| {
        json!({"rules": [{
            "name": "by-tenant", "key": {"parameter": {"header": "x-tenant"}},
            "limit": 2, "window": "1m", "missing_key": missing
        }]})
    };
    let (skip, store) = prepared(rule("skip"));
    assert_eq!(admitted(&skip, &store, &times(5, || request("/", now))), 5);
    let (shared, store) = prepared(rule("shared"));
    assert_eq!(
        admitted(&shared, &store, &times(5, || request("/", now))),
        2
    );
    let empty = || request("/", now).with_header("x-tenant", "");
    assert_eq!(admitted(&shared, &store, &[empty()]), 0, "empty is absent");
    let with_key = || request("/", now).with_header("x-tenant", "acme");
    assert_eq!(admitted(&shared, &store, &times(5, with_key)), 2);
}

#[test]
fn a_sliding_rule_smooths_the_burst_at_the_window_edge() {
    let config = |algorithm: &str| json!({"rules": [{"name": "api", "limit": 10, "window": "1s", "algorithm": algorithm}]});
    let end_of_second = t0() + 900;
    let next_second = t0() + 1_100;
    let (fixed, store) = prepared(config("fixed"));
    assert_eq!(
        admitted(&fixed, &store, &times(10, || request("/", end_of_second))),
        10
    );
    assert_eq!(
        admitted(&fixed, &store, &times(10, || request("/", next_second))),
        10
    );
    let (sliding, store) = prepared(config("sliding"));
    assert_eq!(
        admitted(&sliding, &store, &times(10, || request("/", end_of_second))),
        10
    );
    // 100 ms into the next second the previous 10 weigh 9: one more fits.
    assert_eq!(
        admitted(&sliding, &store, &times(10, || request("/", next_second))),
        1
    );
    let refused = sliding.decide(&request("/", next_second), &store);
    // 10·(1000 − e)/1000 + 1 ≤ 9 from e = 200 ms: 100 ms on, Retry-After rounds up to 1 s.
    assert!(matches!(
        refused.verdict,
        Verdict::Throttled {
            retry_after_secs: 1,
            ..
        }
    ));
    assert_eq!(
        admitted(&sliding, &store, &times(5, || request("/", t0() + 1_200))),
        1
    );
}

#[test]
fn retry_after_counts_to_the_end_of_a_day_window() {
    let (policy, store) = prepared(json!({"rules": [rule("daily", 1, "1d")]}));
    let evening = utc((2026, 5, 17), (22, 30, 0), 0);
    assert_eq!(
        policy.decide(&request("/", evening), &store).verdict,
        Verdict::Allowed
    );
    assert!(matches!(
        policy.decide(&request("/", evening), &store).verdict,
        Verdict::Throttled {
            retry_after_secs: 5_400,
            ..
        }
    ));
    let last_ms = utc((2026, 5, 17), (23, 59, 59), 999);
    assert!(matches!(
        policy.decide(&request("/", last_ms), &store).verdict,
        Verdict::Throttled {
            retry_after_secs: 1,
            ..
        }
    ));
    let midnight = utc((2026, 5, 18), (0, 0, 0), 0);
    assert_eq!(
        policy.decide(&request("/", midnight), &store).verdict,
        Verdict::Allowed
    );
}

#[test]
fn dry_run_lets_throttled_requests_through_and_says_so() {
    let (policy, store) = prepared(json!({"dry_run": true, "rules": [rule("all", 1, "1m")]}));
    let now = t0();
    assert_eq!(
        policy.decide(&request("/", now), &store).verdict,
        Verdict::Allowed
    );
    let would = policy.decide(&request("/", now), &store);
    assert_eq!(would.verdict, Verdict::Allowed);
    assert!(would.has(RuleEvent::DryRunThrottled));
    assert_eq!(would.quota.map(|q| q.remaining), Some(0));
}

/// A store that always fails, or always loses the compare-and-swap.
struct BrokenStore(StoreError);

impl SharedStore for BrokenStore {
    fn get(&self, _key: &str) -> Result<Versioned, StoreError> {
        match self.0 {
            StoreError::CasMismatch => Ok((None, Some(1))),
            other => Err(other),
        }
    }

    fn set(&self, _key: &str, _value: &[u8], _cas: Option<u32>) -> Result<(), StoreError> {
        Err(self.0)
    }
}

#[test]
fn a_failing_store_lets_requests_through_by_default_and_counts_it() {
    let policy = throttling(json!({"rules": [rule("all", 1, "1m")]}));
    for failure in [StoreError::Unavailable, StoreError::CasMismatch] {
        let decision = policy.decide(&request("/", t0()), &BrokenStore(failure));
        assert_eq!(decision.verdict, Verdict::Allowed, "{failure:?}");
        assert_eq!(decision.events, [(0, RuleEvent::StoreFailure)]);
    }
}

#[test]
fn a_failing_store_refuses_with_503_under_failure_mode_deny() {
    let policy = throttling(json!({"failure_mode": "deny", "rules": [rule("all", 1, "1m")]}));
    for failure in [StoreError::Unavailable, StoreError::CasMismatch] {
        let decision = policy.decide(&request("/", t0()), &BrokenStore(failure));
        assert_eq!(decision.verdict, Verdict::Unavailable { rule: 0 });
        let error = decision.verdict.error().unwrap();
        assert_eq!((error.status, error.code), (503, "A503TU"));
    }
}

#[test]
fn many_workers_hammering_one_quota_admit_exactly_the_limit() {
    let policy = Arc::new(throttling(json!({"rules": [
        {"name": "api", "limit": 300, "window": "1h"},
        {"name": "per-ip", "key": "client_ip", "limit": 1000, "window": "1h", "slots": 4}
    ]})));
    let store = Arc::new(MemoryStore::new());
    policy.initialize(&*store).unwrap();
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let (policy, store) = (Arc::clone(&policy), Arc::clone(&store));
            std::thread::spawn(move || {
                let mut admitted = 0;
                for i in 0..150 {
                    let host = request("/", t0() + 1_000 + i);
                    host.set_property(
                        &["source", "address"],
                        format!("198.51.100.{worker}:1").as_bytes(),
                    );
                    let decision = policy.decide(&host, &*store);
                    assert!(!decision.has(RuleEvent::StoreFailure), "{decision:?}");
                    if decision.verdict == Verdict::Allowed {
                        admitted += 1;
                    }
                }
                admitted
            })
        })
        .collect();
    let total: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(total, 300);
    assert_eq!(store.key_count(), 1 + 4);
}

#[test]
fn many_distinct_clients_never_grow_shared_data_beyond_the_table() {
    let (policy, store) = prepared(json!({"rules": [
        {"name": "per-ip", "key": "client_ip", "limit": 1, "window": "1m", "slots": 32}
    ]}));
    assert_eq!(store.key_count(), 32);
    assert_eq!(policy.shared_data_keys(), 32);
    let mut admitted = 0;
    let mut shared = 0;
    for i in 0..5_000u32 {
        let host = request("/", t0());
        let peer = format!("10.{}.{}.{}:1", i >> 16, (i >> 8) & 255, i & 255);
        host.set_property(&["source", "address"], peer.as_bytes());
        let decision = policy.decide(&host, &store);
        admitted += usize::from(decision.verdict == Verdict::Allowed);
        shared += usize::from(decision.has(RuleEvent::SharedSlot));
    }
    assert_eq!(store.key_count(), 32);
    // Each way of each slot is claimed once; later clients share a full count.
    assert_eq!(admitted, 32 * WAYS);
    assert_eq!(shared, 5_000 - admitted, "the rest found their slot full");
}

#[test]
fn a_changed_window_starts_the_counts_afresh() {
    let store = MemoryStore::new();
    let per_minute = throttling(json!({"rules": [rule("all", 1, "1m")]}));
    per_minute.initialize(&store).unwrap();
    assert_eq!(
        per_minute.decide(&request("/", t0()), &store).verdict,
        Verdict::Allowed
    );
    assert_ne!(
        per_minute.decide(&request("/", t0()), &store).verdict,
        Verdict::Allowed
    );
    let per_hour = throttling(json!({"rules": [rule("all", 1, "1h")]}));
    per_hour.initialize(&store).unwrap();
    assert_eq!(
        per_hour.decide(&request("/", t0()), &store).verdict,
        Verdict::Allowed
    );
    assert_eq!(store.key_count(), 1);
}

#[test]
fn route_names_are_read_only_when_a_rule_uses_them() {
    let (policy, store) = prepared(json!({"rules": [
        {"name": "internal", "match": {"route_names": ["internal"]}, "limit": 1, "window": "1m"}
    ]}));
    let on_route = |route: &str| request("/", t0()).with_property(&["xds", "route_name"], route);
    assert_eq!(
        admitted(&policy, &store, &times(3, || on_route("internal"))),
        1
    );
    assert_eq!(
        admitted(&policy, &store, &times(3, || on_route("public"))),
        3
    );
}

#[test]
fn malformed_configs_are_refused_with_the_field_named() {
    let cases = [
        (r#"{}"#, "missing field `rules`"),
        (r#"{"rules":[]}"#, "rules: list at least one rule"),
        (
            r#"{"rules":[{"limit":1,"window":"1s"}]}"#,
            "rules[0]: missing field `name`",
        ),
        (
            r#"{"rules":[{"name":"a b","limit":1,"window":"1s"}]}"#,
            "rules[0].name: `a b` must be 1 to 64 letters, digits, `-` or `_`",
        ),
        (
            r#"{"rules":[{"name":"a","limit":1,"window":"1s"},{"name":"a","limit":1,"window":"1s"}]}"#,
            "rules[1].name: `a` is already the name of rules[0]",
        ),
        (
            r#"{"rules":[{"name":"a","limit":0,"window":"1s"}]}"#,
            "rules[0].limit: must be at least 1",
        ),
        (
            r#"{"rules":[{"name":"a","limit":-1,"window":"1s"}]}"#,
            "rules[0].limit: invalid value: integer `-1`, expected u32",
        ),
        (
            r#"{"rules":[{"name":"a","limit":1,"window":"10x"}]}"#,
            "rules[0].window: `10x` is not a window; use a whole number and a unit: `1s`, `10m`, `1h`, `1d`",
        ),
        (
            r#"{"rules":[{"name":"a","limit":1,"window":{"seconds":1}}]}"#,
            "rules[0].window: invalid type: map, expected a string",
        ),
        (
            r#"{"rules":[{"name":"a","limit":1,"window":"0s"}]}"#,
            "rules[0].window: `0s` is empty; a window is at least `1s`",
        ),
        (
            r#"{"rules":[{"name":"a","limit":1,"window":"1d","algorithm":"sliding"}]}"#,
            "rules[0].algorithm: `sliding` is for windows of seconds and minutes, up to `1h`; a `1d` window counts in fixed UTC windows",
        ),
        (
            r#"{"rules":[{"name":"a","limit":1,"window":"1s","algorithm":"leaky"}]}"#,
            "rules[0].algorithm: unknown variant `leaky`, expected `fixed` or `sliding`",
        ),
        (
            r#"{"rules":[{"name":"a","limit":1,"window":"1s","key":"ip"}]}"#,
            "rules[0].key: unknown variant `ip`, expected one of `api`, `app`, `user`, `client_ip`, `parameter`",
        ),
        (
            r#"{"rules":[{"name":"a","limit":1,"window":"1s","key":"user"}]}"#,
            "rules[0].key: `user` needs the top-level `user` source, for example {\"header\": \"x-user-id\"}",
        ),
        (
            r#"{"rules":[{"name":"a","limit":1,"window":"1s","key":{"parameter":{"cookie":"x"}}}]}"#,
            "rules[0].key.parameter: unknown variant `cookie`, expected one of `header`, `query`, `path`, `jwt_claim`",
        ),
        (
            r#"{"rules":[{"name":"a","limit":1,"window":"1s","key":{"parameter":{"header":"bad header"}}}]}"#,
            "rules[0].key.parameter.header: `bad header` is not a header name",
        ),
        (
            r#"{"rules":[{"name":"a","limit":1,"window":"1s","key":{"parameter":{"path":"id"}}}]}"#,
            "rules[0].key.parameter.path: `id` is not a variable of this rule's path template",
        ),
        (
            r#"{"rules":[{"name":"a","limit":1,"window":"1s","slots":8}]}"#,
            "rules[0].slots: a rule keyed by `api` keeps one counter; `slots` is for keyed rules",
        ),
        (
            r#"{"rules":[{"name":"a","limit":1,"window":"1s","missing_key":"shared"}]}"#,
            "rules[0].missing_key: a rule keyed by `api` always has its key",
        ),
        (
            r#"{"rules":[{"name":"a","limit":1,"window":"1s","key":"app","slots":0}]}"#,
            "rules[0].slots: must be between 1 and 1048576",
        ),
        (
            r#"{"slots":2000000,"rules":[{"name":"a","limit":1,"window":"1s"}]}"#,
            "slots: must be between 1 and 1048576",
        ),
        (
            r#"{"rules":[{"name":"a","limit":1,"window":"1s","exceptions":[{"limit":5}]}]}"#,
            "rules[0].exceptions[0]: list the `apps` or `users` it applies to",
        ),
        (
            r#"{"rules":[{"name":"a","limit":1,"window":"1s","exceptions":[{"apps":["x"]}]}]}"#,
            "rules[0].exceptions[0]: set either `limit` or `\"exempt\": true`",
        ),
        (
            r#"{"rules":[{"name":"a","limit":1,"window":"1s","exceptions":[{"apps":["x"],"limit":2,"exempt":true}]}]}"#,
            "rules[0].exceptions[0]: set either `limit` or `\"exempt\": true`",
        ),
        (
            r#"{"rules":[{"name":"a","limit":1,"window":"1s","exceptions":[{"apps":["x",""],"exempt":true}]}]}"#,
            "rules[0].exceptions[0].apps[1]: must not be empty",
        ),
        (
            r#"{"rules":[{"name":"a","limit":1,"window":"1s","exceptions":[{"apps":["x"],"limit":0}]}]}"#,
            "rules[0].exceptions[0].limit: must be at least 1",
        ),
        (
            r#"{"rules":[{"name":"a","limit":1,"window":"1s","exceptions":[{"users":["u"],"exempt":true}]}]}"#,
            "rules[0].exceptions[0].users: naming users needs the top-level `user` source, for example {\"header\": \"x-user-id\"}",
        ),
        (
            r#"{"rules":[{"name":"a","limit":1,"window":"1s","exceptions":[{"apps":["x"],"exempt":true,"note":1}]}]}"#,
            "rules[0].exceptions[0].note: unknown field `note`",
        ),
        (
            r#"{"user":{"path":"id"},"rules":[{"name":"a","limit":1,"window":"1s"}]}"#,
            "user: a user cannot come from a path variable; use `header`, `query` or `jwt_claim`",
        ),
        (
            r#"{"user":{"header":""},"rules":[{"name":"a","limit":1,"window":"1s"}]}"#,
            "user.header: must not be empty",
        ),
        (
            r#"{"client_ip_v6_prefix":0,"rules":[{"name":"a","limit":1,"window":"1s"}]}"#,
            "client_ip_v6_prefix: must be between 1 and 128",
        ),
        (
            r#"{"failure_mode":"open","rules":[{"name":"a","limit":1,"window":"1s"}]}"#,
            "failure_mode: unknown variant `open`, expected `allow` or `deny`",
        ),
        (
            r#"{"rules":[{"name":"a","limit":1,"window":"1s","match":{"path":{"prefix":"x"}}}]}"#,
            "rules[0].match.path.prefix: `x` must start with `/`",
        ),
        (
            r#"{"client_address":{"trusted_proxies":["10.0.0.300"]},"rules":[{"name":"a","limit":1,"window":"1s"}]}"#,
            "client_address.trusted_proxies[0]: `10.0.0.300` is not a valid IP address or CIDR block",
        ),
        (
            r#"{"rules":[{"name":"a","limit":1,"window":"1s"}],"rate_limit_header":true}"#,
            "rate_limit_header: unknown field `rate_limit_header`",
        ),
    ];
    let wrong: Vec<String> = cases
        .iter()
        .map(|(json, expected)| (json, expected, config_error(json)))
        .filter(|(_, expected, error)| !error.starts_with(*expected))
        .map(|(json, expected, error)| format!("{json}\n  got: {error}\n want: {expected}"))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_complete_configuration_compiles() {
    let policy = throttling(json!({
        "user": {"header": "x-user-id"},
        "client_address": {"trusted_proxies": ["10.0.0.0/8"], "envoy_appended_xff": true},
        "client_ip_v6_prefix": 56,
        "slots": 1024,
        "failure_mode": "deny",
        "rate_limit_headers": true,
        "dry_run": false,
        "rules": [
            {"name": "api", "match": {"hosts": ["api.example.com"]}, "limit": 1000, "window": "1s", "algorithm": "sliding"},
            {"name": "per-app", "key": "app", "limit": 100, "window": "1m",
             "exceptions": [{"apps": ["203751"], "limit": 1000}, {"apps": ["ops"], "exempt": true}]},
            {"name": "per-user", "key": "user", "limit": 10000, "window": "1d", "slots": 65536},
            {"name": "per-ip", "key": "client_ip", "limit": 60, "window": "1m", "missing_key": "shared"},
            {"name": "per-region", "key": {"parameter": {"query": "region"}}, "limit": 5, "window": "10m"}
        ]
    }));
    assert!(policy.rate_limit_headers());
    assert_eq!(
        policy.rule_names().collect::<Vec<_>>(),
        ["api", "per-app", "per-user", "per-ip", "per-region"]
    );
    assert_eq!(policy.shared_data_keys(), 1 + 3 * 1024 + 65536);
}

mod fleet {
    use super::*;
    use gateway_common::fleet::model::ScriptModel;
    use gateway_common::fleet::wire::{Failure, Op};

    fn joined(parts: Vec<Vec<FakeHost>>) -> Vec<FakeHost> {
        parts.into_iter().flatten().collect()
    }

    fn with_fleet(mut config: serde_json::Value, mode: &str) -> serde_json::Value {
        config["fleet"] =
            json!({"store": {"cluster": "redis", "key_prefix": "t:"}, "failure_mode": mode});
        if mode == "local" {
            config["fleet"]["replicas"] = json!(2);
        }
        config
    }

    /// One request through the fleet path, as the adapter takes it: the
    /// plan's operations answered by the script's model.
    fn via_fleet(policy: &Throttling, model: &mut ScriptModel, host: &FakeHost) -> Decision {
        let mut plan = policy.plan(host);
        if !plan.counts() {
            return policy.decide_locally(&plan, &MemoryStore::new(), 1);
        }
        model.now_ms = gateway_common::host::now_ms(host);
        let answer = Ok(model.run(&policy.fleet_ops(&mut plan, &mut Leases::default())));
        policy.conclude(&plan, &answer, &MemoryStore::new(), &mut Leases::default())
    }

    /// Events as the fleet path can know them (shared slots are the local
    /// table's own).
    fn comparable(decision: &Decision) -> (Verdict, Option<Quota>, Vec<(usize, RuleEvent)>) {
        let events = decision
            .events
            .iter()
            .copied()
            .filter(|(_, event)| *event != RuleEvent::SharedSlot)
            .collect();
        (decision.verdict.clone(), decision.quota, events)
    }

    /// Drives the same requests through this Envoy's counters and through
    /// the fleet store: every decision must be the same.
    fn same_decisions(config: serde_json::Value, requests: &[FakeHost]) {
        let (local, store) = prepared(config.clone());
        let fleet = throttling(with_fleet(config.clone(), "deny"));
        let mut model = ScriptModel::new();
        for (i, host) in requests.iter().enumerate() {
            let expected = comparable(&local.decide(host, &store));
            let got = comparable(&via_fleet(&fleet, &mut model, host));
            assert_eq!(got, expected, "request {i} of {config}");
        }
    }

    #[test]
    fn the_fleet_store_decides_as_the_local_counters_do() {
        let now = t0() + 45_250;
        let burst = |path: &'static str, at: u64| times(6, move || request(path, at));
        let apps = |at: u64| {
            ["a", "b", "a", "a", "c", "b", "a"]
                .iter()
                .map(|app| signed_by(app, "/orders/1", at))
                .collect::<Vec<_>>()
        };
        let scenarios: Vec<(serde_json::Value, Vec<FakeHost>)> = vec![
            (
                json!({"rules": [rule("all", 3, "1m")]}),
                joined(vec![burst("/", now), burst("/", now + 60_000)]),
            ),
            (
                json!({"rules": [
                    {"name": "orders", "match": {"path": {"prefix": "/orders"}}, "limit": 2, "window": "1m"},
                    {"name": "everything", "limit": 3, "window": "1m"}
                ]}),
                joined(vec![burst("/orders/1", now), burst("/other", now)]),
            ),
            (
                json!({"rules": [
                    {"name": "per-app", "key": "app", "limit": 2, "window": "1h"},
                    {"name": "total", "limit": 5, "window": "1h"}
                ]}),
                joined(vec![apps(now), apps(now + 3_600_000)]),
            ),
            (
                json!({"rules": [{"name": "per-app", "key": "app", "limit": 1, "window": "1d",
                    "exceptions": [{"apps": ["b"], "limit": 3}, {"apps": ["c"], "exempt": true}]}]}),
                apps(now),
            ),
            (
                json!({"rules": [{"name": "api", "limit": 10, "window": "1s", "algorithm": "sliding"}]}),
                joined(vec![
                    times(12, || request("/", t0() + 900)),
                    times(12, || request("/", t0() + 1_100)),
                    times(5, || request("/", t0() + 1_600)),
                ]),
            ),
            (
                json!({"dry_run": true, "rules": [rule("all", 2, "1m"), rule("more", 4, "1m")]}),
                burst("/", now),
            ),
            (
                json!({"rules": [{"name": "by-ip", "key": "client_ip", "limit": 2, "window": "10s"}]}),
                joined(vec![
                    burst("/", now),
                    times(3, || {
                        request("/", now).with_property(&["source", "address"], "192.0.2.77:1")
                    }),
                ]),
            ),
        ];
        for (config, requests) in scenarios {
            same_decisions(config, &requests);
        }
    }

    /// A worker of a leasing fleet: its policy and its leases.
    struct Worker {
        policy: Throttling,
        leases: Leases,
        store_calls: u32,
    }

    impl Worker {
        fn new(config: &serde_json::Value) -> Self {
            Self {
                policy: throttling(config.clone()),
                leases: Leases::default(),
                store_calls: 0,
            }
        }

        /// One request: from the worker's leases, or through the store.
        fn request(&mut self, model: &mut ScriptModel, host: &FakeHost) -> Decision {
            let mut plan = self.policy.plan(host);
            if let Some(decision) = self.policy.admit_leased(&plan, &mut self.leases) {
                return decision;
            }
            self.store_calls += 1;
            model.now_ms = gateway_common::host::now_ms(host);
            let answer = Ok(model.run(&self.policy.fleet_ops(&mut plan, &mut self.leases)));
            self.policy
                .conclude(&plan, &answer, &MemoryStore::new(), &mut self.leases)
        }
    }

    fn leasing(rules: serde_json::Value, units: u32, holders: u32) -> serde_json::Value {
        json!({"rules": rules, "fleet": {"store": {"cluster": "redis"}, "failure_mode": "deny",
               "lease": {"units": units, "holders": holders}}})
    }

    fn admitted(decisions: &[Decision]) -> usize {
        decisions
            .iter()
            .filter(|d| d.verdict == Verdict::Allowed)
            .count()
    }

    #[test]
    fn leases_never_admit_more_than_the_limit_and_use_it_all_when_every_worker_is_busy() {
        let config = leasing(json!([rule("all", 100, "1h")]), 10, 4);
        let mut model = ScriptModel::new();
        let mut workers: Vec<Worker> = (0..4).map(|_| Worker::new(&config)).collect();
        let at = t0() + 1_000;
        let mut send = |workers: &mut [Worker], n: usize| -> Vec<Decision> {
            (0..n)
                .map(|i| workers[i % 4].request(&mut model, &request("/", at)))
                .collect()
        };
        // Every worker keeps getting requests: no lease is stranded.
        let first = send(&mut workers, 100);
        assert_eq!(admitted(&first), 100);
        let calls: u32 = workers.iter().map(|w| w.store_calls).sum();
        assert!(calls <= 25, "{calls} store calls for 100 requests");
        let over = send(&mut workers, 60);
        assert_eq!(admitted(&over), 0, "never past the limit");
        // The next window starts afresh.
        let later = request("/", at + 3_600_000);
        assert_eq!(
            workers[0].request(&mut model, &later).verdict,
            Verdict::Allowed
        );
    }

    #[test]
    fn far_from_the_limit_a_worker_calls_the_store_once_per_lease() {
        let config = leasing(json!([rule("all", 100_000, "1h")]), 20, 16);
        let mut model = ScriptModel::new();
        let mut worker = Worker::new(&config);
        let decisions: Vec<Decision> = (0..200)
            .map(|i| worker.request(&mut model, &request("/", t0() + i)))
            .collect();
        assert_eq!(admitted(&decisions), 200);
        assert_eq!(worker.store_calls, 10, "one call per 20 requests");
        // The quota reported counts the units this worker holds as its own.
        let last = decisions.last().and_then(|d| d.quota).unwrap();
        assert_eq!(last.remaining, 100_000 - 200);
    }

    #[test]
    fn near_the_limit_leases_shrink_to_one_unit() {
        // 10 units asked, at most a quarter of what is left.
        let config = leasing(json!([rule("all", 30, "1h")]), 10, 4);
        let mut model = ScriptModel::new();
        let mut worker = Worker::new(&config);
        let mut units = Vec::new();
        for _ in 0..30 {
            let decision = worker.request(&mut model, &request("/", t0()));
            assert_eq!(decision.verdict, Verdict::Allowed);
            if decision.leased_units > 0 {
                units.push(decision.leased_units);
            }
        }
        assert_eq!(units, [7, 5, 4, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1]);
        assert_ne!(
            worker.request(&mut model, &request("/", t0())).verdict,
            Verdict::Allowed
        );
    }

    #[test]
    fn idle_workers_strand_at_most_units_minus_one_each() {
        // Four workers take a lease each, then only the first gets traffic.
        let (units, workers_n, limit) = (10, 4, 100);
        let config = leasing(json!([rule("all", limit, "1h")]), units, 1);
        let mut model = ScriptModel::new();
        let mut workers: Vec<Worker> = (0..workers_n).map(|_| Worker::new(&config)).collect();
        let mut decisions = Vec::new();
        for worker in &mut workers {
            decisions.push(worker.request(&mut model, &request("/", t0())));
        }
        for _ in 0..200 {
            decisions.push(workers[0].request(&mut model, &request("/", t0())));
        }
        let early = limit as usize - admitted(&decisions);
        assert_eq!(early, (workers_n - 1) * (units as usize - 1));
    }

    #[test]
    fn a_group_is_leased_only_when_every_counter_has_a_unit() {
        // A sliding rule is never leased: every request calls the store.
        let mixed = leasing(
            json!([rule("fixed", 1000, "1h"),
                   {"name": "smooth", "limit": 1000, "window": "1m", "algorithm": "sliding"}]),
            10,
            1,
        );
        let mut model = ScriptModel::new();
        let mut worker = Worker::new(&mixed);
        for _ in 0..5 {
            worker.request(&mut model, &request("/", t0()));
        }
        assert_eq!(worker.store_calls, 5);
        // Nor is the fixed rule beside it: its units could never be used.
        let mut plan = worker.policy.plan(&request("/", t0()));
        let ops = worker.policy.fleet_ops(&mut plan, &mut worker.leases);
        let [Op::Quotas(checks)] = ops.as_slice() else {
            panic!("{ops:?}");
        };
        assert_eq!((checks[0].lease, checks[1].lease), (None, None));
        assert_eq!(worker.leases.counters(), 0);
        // In dry run nothing is leased.
        let mut dry = leasing(json!([rule("all", 1000, "1h")]), 10, 1);
        dry["dry_run"] = json!(true);
        let mut worker = Worker::new(&dry);
        for _ in 0..3 {
            worker.request(&mut model, &request("/", t0()));
        }
        assert_eq!(worker.store_calls, 3);
    }

    #[test]
    fn a_lost_answer_keeps_its_units_reserved_and_a_call_never_made_does_not() {
        let config = leasing(json!([rule("all", 1000, "1h")]), 10, 1);
        let mut worker = Worker::new(&config);
        let host = request("/", t0());
        let ask = |worker: &mut Worker| {
            let mut plan = worker.policy.plan(&host);
            let ops = worker.policy.fleet_ops(&mut plan, &mut worker.leases);
            let [Op::Quotas(checks)] = ops.as_slice() else {
                panic!("{ops:?}");
            };
            (plan, checks[0].lease.map(|l| l.units))
        };
        let store = MemoryStore::new();
        // Not sent: nothing was counted, the next call asks again.
        let (plan, asked) = ask(&mut worker);
        assert_eq!(asked, Some(10));
        worker
            .policy
            .conclude(&plan, &Err(Failure::Dispatch), &store, &mut worker.leases);
        // No answer: the script may have counted 10; they stay reserved.
        let (plan, asked) = ask(&mut worker);
        assert_eq!(asked, Some(10));
        worker
            .policy
            .conclude(&plan, &Err(Failure::NoAnswer), &store, &mut worker.leases);
        assert_eq!(ask(&mut worker).1, Some(1));
    }

    #[test]
    fn a_grant_larger_than_asked_is_not_believed() {
        let config = leasing(json!([rule("all", 1000, "1h")]), 10, 1);
        let mut worker = Worker::new(&config);
        let mut plan = worker.policy.plan(&request("/", t0()));
        let ops = worker.policy.fleet_ops(&mut plan, &mut worker.leases);
        let mut model = ScriptModel::new();
        let mut results = model.run(&ops);
        results[0].previous = 500;
        let decision =
            worker
                .policy
                .conclude(&plan, &Ok(results), &MemoryStore::new(), &mut worker.leases);
        assert_eq!(decision.leased_units, 10);
        assert_eq!(decision.quota.map(|q| q.remaining), Some(1000 - 10 + 9));
    }

    #[test]
    fn a_lease_of_sliding_windows_only_is_refused() {
        let config = leasing(
            json!([{"name": "smooth", "limit": 10, "window": "1m", "algorithm": "sliding"}]),
            10,
            1,
        );
        let error = Throttling::compile(
            &parse_json::<ThrottlingConfig>(config.to_string().as_bytes()).unwrap(),
        )
        .unwrap_err();
        assert_eq!(error.path, "fleet.lease");
        let bad = leasing(json!([rule("all", 10, "1m")]), 1, 1);
        let error = Throttling::compile(
            &parse_json::<ThrottlingConfig>(bad.to_string().as_bytes()).unwrap(),
        )
        .unwrap_err();
        assert_eq!(error.path, "fleet.lease.units");
    }

    #[test]
    fn in_a_redis_cluster_a_policys_counters_share_its_slot_tag() {
        let config = |tag: serde_json::Value| {
            json!({
                "rules": [
                    {"name": "per-app", "key": "app", "limit": 5, "window": "1m"},
                    {"name": "all", "limit": 50, "window": "1m"}
                ],
                "fleet": {
                    "store": {"redis": {"cluster": {"addresses": ["r:7000"]}}},
                    "slot_tag": tag
                }
            })
        };
        let keys = |tag: serde_json::Value| {
            let policy = throttling(config(tag));
            let mut plan = policy.plan(&signed_by("app", "/", t0()));
            let ops = policy.fleet_ops(&mut plan, &mut Leases::default());
            let [Op::Quotas(checks)] = ops.as_slice() else {
                panic!("{ops:?}");
            };
            checks.iter().map(|c| c.key.clone()).collect::<Vec<_>>()
        };
        let default = keys(serde_json::Value::Null);
        assert!(
            default[0].starts_with("gw:q:{quotas}:per-app:"),
            "{default:?}"
        );
        assert!(default[1].starts_with("gw:q:{quotas}:all:"), "{default:?}");
        let own = keys(json!("orders"));
        assert!(own[0].starts_with("gw:q:{orders}:per-app:"), "{own:?}");
        for bad in [json!(""), json!("a}b"), json!("x".repeat(65))] {
            let error = Throttling::compile(
                &parse_json::<ThrottlingConfig>(config(bad).to_string().as_bytes()).unwrap(),
            )
            .unwrap_err();
            assert_eq!(error.path, "fleet.slot_tag");
        }
    }

    #[test]
    fn counters_are_keyed_by_rule_digest_and_window_and_expire_after_it() {
        let policy = throttling(with_fleet(
            json!({"rules": [
                {"name": "per-app", "key": "app", "limit": 5, "window": "1m"},
                {"name": "smooth", "limit": 5, "window": "10s", "algorithm": "sliding"}
            ]}),
            "deny",
        ));
        let at = t0() + 15_000;
        let mut plan = policy.plan(&signed_by("app/with:colon", "/", at));
        let ops = policy.fleet_ops(&mut plan, &mut Leases::default());
        let [Op::Quotas(checks)] = ops.as_slice() else {
            panic!("{ops:?}");
        };
        let window = (at / 60_000).to_string();
        let per_app = &checks[0];
        assert!(per_app.key.starts_with("t:q:per-app:"), "{}", per_app.key);
        assert!(per_app.key.ends_with(&format!(":{window}")));
        assert!(!per_app.key.contains("colon"), "no client input in keys");
        assert_eq!(per_app.previous_key, None);
        assert_eq!((per_app.window_weight, per_app.previous_weight), (1, 0));
        assert_eq!(
            per_app.ttl_ms,
            45_000 + gateway_common::fleet::CLOCK_GRACE_MS
        );
        let smooth = &checks[1];
        let index = at / 10_000;
        assert!(smooth.key.ends_with(&format!(":{index}")));
        assert!(smooth
            .previous_key
            .as_ref()
            .unwrap()
            .ends_with(&format!(":{}", index - 1)));
        assert_eq!(
            (smooth.window_weight, smooth.previous_weight),
            (10_000, 5_000)
        );
        assert_eq!(
            smooth.ttl_ms,
            5_000 + 10_000 + gateway_common::fleet::CLOCK_GRACE_MS
        );
        // Every counter is gone once its window (and grace) has passed.
        let mut model = ScriptModel::new();
        model.now_ms = at;
        model.run(&ops);
        assert_eq!(model.live_keys(), 2);
        model.now_ms = at + 45_000 + gateway_common::fleet::CLOCK_GRACE_MS;
        assert_eq!(model.live_keys(), 0);
    }

    #[test]
    fn another_app_or_exception_is_another_counter() {
        let policy = throttling(with_fleet(
            json!({"rules": [{"name": "r", "key": "app", "limit": 5, "window": "1m",
                "exceptions": [{"apps": ["vip"], "limit": 50}]}]}),
            "deny",
        ));
        let key = |app: &str| {
            let ops = policy.fleet_ops(
                &mut policy.plan(&signed_by(app, "/", t0())),
                &mut Leases::default(),
            );
            match ops.as_slice() {
                [Op::Quotas(checks)] => (checks[0].key.clone(), checks[0].limit),
                other => panic!("{other:?}"),
            }
        };
        assert_ne!(key("a").0, key("b").0);
        assert_eq!(key("vip").1, 50);
        assert_eq!(key("a"), key("a"));
    }

    #[test]
    fn nothing_is_sent_for_a_request_no_rule_counts() {
        let policy = throttling(with_fleet(
            json!({"rules": [{"name": "r", "key": "app", "limit": 5, "window": "1m"}]}),
            "deny",
        ));
        let mut plan = policy.plan(&request("/", t0()));
        assert!(!plan.counts());
        assert!(policy
            .fleet_ops(&mut plan, &mut Leases::default())
            .is_empty());
    }

    #[test]
    fn a_failing_store_is_handled_by_the_fleet_failure_mode() {
        let config = json!({"rules": [rule("all", 4, "1m")]});
        let host = request("/", t0());
        let failed: Result<Vec<gateway_common::fleet::wire::OpResult>, Failure> =
            Err(Failure::Status(503));
        let deny = throttling(with_fleet(config.clone(), "deny"));
        let plan = deny.plan(&host);
        assert_eq!(
            fleet_failure(&deny, &plan, &failed),
            Some(Failure::Status(503))
        );
        let denied = deny.conclude(&plan, &failed, &MemoryStore::new(), &mut Leases::default());
        assert_eq!(error_code(&denied), Some("A503TU"));
        assert_eq!(denied.events, [(0, RuleEvent::StoreFailure)]);
        let allow = throttling(with_fleet(config.clone(), "allow"));
        let allowed = allow.conclude(
            &allow.plan(&host),
            &failed,
            &MemoryStore::new(),
            &mut Leases::default(),
        );
        assert_eq!(allowed.verdict, Verdict::Allowed);
        assert!(allowed.has(RuleEvent::StoreFailure));
        // local: this Envoy's counters, the fleet limit divided by 2 replicas.
        let local = throttling(with_fleet(config, "local"));
        let store = MemoryStore::new();
        local.initialize(&store).unwrap();
        let admitted = (0..5)
            .filter(|_| {
                let plan = local.plan(&host);
                local
                    .conclude(&plan, &failed, &store, &mut Leases::default())
                    .verdict
                    == Verdict::Allowed
            })
            .count();
        assert_eq!(admitted, 2);
        // An answer with the wrong number of results is a failure too.
        let short = Ok(Vec::new());
        assert!(fleet_failure(&deny, &plan, &short).is_some());
    }

    #[test]
    fn answers_the_script_cannot_give_are_failures() {
        use gateway_common::fleet::wire::{OpResult, State};
        let policy = throttling(with_fleet(
            json!({"rules": [rule("a", 5, "1m"), rule("b", 5, "1m")]}),
            "deny",
        ));
        let plan = policy.plan(&request("/", t0()));
        let result = |state| OpResult {
            state,
            previous: 0,
            current: 1,
            value: None,
        };
        let bad = [
            [State::NotRun, State::Done],
            [State::NotCounted, State::Done],
            [State::DryRunRefused, State::Done],
        ];
        for states in bad {
            let answer = Ok(states.map(result).to_vec());
            assert!(
                fleet_failure(&policy, &plan, &answer).is_some(),
                "{states:?}"
            );
            assert_eq!(
                error_code(&policy.conclude(
                    &plan,
                    &answer,
                    &MemoryStore::new(),
                    &mut Leases::default()
                )),
                Some("A503TU")
            );
        }
        let good = [
            [State::NotRun, State::NotRun],
            [State::NotCounted, State::Refused],
            [State::Done, State::Done],
        ];
        for states in good {
            let answer = Ok(states.map(result).to_vec());
            assert_eq!(fleet_failure(&policy, &plan, &answer), None, "{states:?}");
        }
    }

    #[test]
    fn bad_fleet_settings_are_refused_with_the_field_named() {
        let cases = [
            (
                json!({"rules": [rule("a", 1, "1m")], "fleet": {"store": {"cluster": "r", "timeout_ms": 0}}}),
                "fleet.store.timeout_ms: must be between 1 and 10000",
            ),
            (
                json!({"rules": [rule("a", 1, "1m")], "fleet": {"store": {"cluster": "r"}, "replicas": 0}}),
                "fleet.replicas: must be between 1 and 10000",
            ),
            (
                json!({"rules": [rule("a", 5, "1m")], "fleet": {"store": {"cluster": "r"}, "failure_mode": "deny", "replicas": 2}}),
                "fleet.replicas: divides the limits under `failure_mode: local` only",
            ),
            (
                json!({"rules": [rule("a", 5, "1m"), rule("b", 2, "1m")], "fleet": {"store": {"cluster": "r"}, "replicas": 3}}),
                "fleet.replicas: 3 replicas would each still admit 1 request of rules[1] (`b`, limit 2)",
            ),
            (
                json!({"rules": [{"name": "s", "limit": 4_000_000_000u32, "window": "1h", "algorithm": "sliding"}],
                    "fleet": {"store": {"cluster": "r"}}}),
                "rules[0].limit: too large for a sliding window in the fleet store",
            ),
        ];
        for (config, expected) in cases {
            let error = config_error(&config.to_string());
            assert!(error.starts_with(expected), "{error}");
        }
    }
}
