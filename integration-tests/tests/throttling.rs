//! throttling in a real Envoy with two workers, an echo upstream counting
//! what got through, and sign-auth in front for per-app quotas. Windows are
//! aligned to the wall clock, so tests that cross a window first wait for a
//! window to begin; the others use an hour window and stay clear of its end.

use integration_tests::echo::EchoServer;
use integration_tests::envoy::{
    gateway_config, shipped_config, start_yaml, validate, wasm_module, Envoy, WasmFilter,
};
use integration_tests::http::{self, Response};
use integration_tests::signing::{now_ms, pairs, signed_headers};
use serde_json::{json, Value};
use std::thread;
use std::time::Duration;

const WORKERS: u32 = 2;
const HOUR_MS: u64 = 3_600_000;
/// An admin listener on an ephemeral port, for the shipped example (which has none).
const ADMIN: &str =
    "admin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }\n";

struct Gateway {
    envoy: Envoy,
    upstream: EchoServer,
}

fn gateway(filters: &[WasmFilter]) -> Gateway {
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let envoy = Envoy::start_with(&gateway_config(filters, &[upstream.port()]), WORKERS)
        .unwrap_or_else(|e| panic!("{e}"));
    Gateway { envoy, upstream }
}

fn throttling(config: Value) -> WasmFilter {
    WasmFilter::json("throttling", &config)
}

impl Gateway {
    /// One request on a connection of its own.
    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        http::get(&self.envoy.url(path), headers).expect("response from Envoy")
    }

    fn stat(&self, name: &str) -> u64 {
        self.envoy.stat(&format!("wasmcustom.gw.throttling.{name}"))
    }

    /// Connections each worker accepted (Envoy names the listener's stats
    /// after its configured address, `listener.127.0.0.1_0.worker_N.…`).
    fn connections_per_worker(&self) -> Vec<u64> {
        let (_, stats) = self
            .envoy
            .admin_get("/stats?filter=^listener\\.127\\.0\\.0\\.1_.*downstream_cx_total$")
            .expect("admin /stats");
        (0..WORKERS)
            .map(|w| {
                let suffix = format!(".worker_{w}.downstream_cx_total");
                stats
                    .lines()
                    .filter_map(|line| line.split_once(": "))
                    .filter(|(name, _)| name.ends_with(&suffix))
                    .filter_map(|(_, value)| value.trim().parse::<u64>().ok())
                    .sum()
            })
            .collect()
    }
}

/// Sleeps until `offset_ms` into the next window of `window_ms` (UTC, like the filter).
fn sleep_until_into_window(window_ms: u64, offset_ms: u64) {
    let now = now_ms();
    let target = (now / window_ms + 1) * window_ms + offset_ms;
    thread::sleep(Duration::from_millis(target - now));
}

/// Makes sure at least `needed_ms` are left in the current hour window.
fn stay_clear_of_the_hour_edge(needed_ms: u64) {
    if HOUR_MS - now_ms() % HOUR_MS < needed_ms {
        sleep_until_into_window(HOUR_MS, 100);
    }
}

fn statuses(responses: &[Response]) -> Vec<u16> {
    responses.iter().map(|r| r.status).collect()
}

fn assert_error(response: &Response, status: u16, code: &str, message: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.header("x-ca-error-code"), Some(code));
    assert_eq!(response.header("x-ca-error-message"), Some(message));
    assert_eq!(
        response.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let body = response.json();
    assert_eq!(body["code"], code);
    assert_eq!(body["message"], message);
    let request_id = body["request_id"].as_str().expect("request_id");
    assert!(!request_id.is_empty());
    assert_eq!(response.header("x-ca-request-id"), Some(request_id));
}

fn header_number(response: &Response, name: &str) -> u64 {
    response
        .header(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing or not a number: {:?}", response.headers))
}

#[test]
fn a_limit_admits_exactly_that_many_across_two_workers_under_many_parallel_connections() {
    let gw = gateway(&[throttling(json!({
        "rules": [{"name": "burst", "limit": 25, "window": "1h"}]
    }))]);
    stay_clear_of_the_hour_edge(30_000);
    let url = gw.envoy.url("/burst");
    let statuses: Vec<u16> = thread::scope(|scope| {
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let url = &url;
                scope.spawn(move || {
                    // A fresh client per request: every request is a new connection.
                    (0..5)
                        .map(|_| {
                            http::send(&http::agent(), "GET", url, &[], None)
                                .map_or(0, |r| r.status)
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_default())
            .collect()
    });
    assert_eq!(statuses.len(), 80);
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        25,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        55,
        "{statuses:?}"
    );
    assert_eq!(gw.upstream.request_count(), 25);
    let per_worker = gw.connections_per_worker();
    assert!(
        per_worker.iter().all(|n| *n > 0),
        "both workers served connections: {per_worker:?}"
    );
    assert_eq!(gw.stat("rule.burst.allowed"), 25);
    assert_eq!(gw.stat("rule.burst.throttled"), 55);
    assert_eq!(gw.stat("denied.A429AP"), 55);
    assert_eq!(gw.stat("allowed"), 25);
    let prometheus = gw.envoy.prometheus();
    assert!(
        prometheus
            .lines()
            .any(|l| l.contains("gw_throttling_rule_burst_throttled") && l.ends_with(" 55")),
        "{prometheus}"
    );
}

#[test]
fn a_throttled_request_gets_429_with_retry_after_and_the_shared_error_shape() {
    let gw = gateway(&[throttling(json!({
        "rate_limit_headers": true,
        "rules": [{"name": "orders", "match": {"path": {"prefix": "/orders"}}, "limit": 2, "window": "1h"}]
    }))]);
    stay_clear_of_the_hour_edge(30_000);
    let first = gw.get("/orders/1", &[]);
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["path"], "/orders/1", "the upstream answered");
    assert_eq!(header_number(&first, "x-ratelimit-limit"), 2);
    assert_eq!(header_number(&first, "x-ratelimit-remaining"), 1);
    let reset = header_number(&first, "x-ratelimit-reset");
    assert!((1..=3_600).contains(&reset), "{reset}");
    assert_eq!(
        header_number(&gw.get("/orders/2", &[]), "x-ratelimit-remaining"),
        0
    );

    let refused = gw.get("/orders/3", &[]);
    assert_error(&refused, 429, "A429AP", "Throttled by API Flow Control");
    let retry_after = header_number(&refused, "retry-after");
    assert!((1..=3_600).contains(&retry_after), "{retry_after}");
    assert!(retry_after.abs_diff(reset) <= 2, "{retry_after} vs {reset}");
    assert_eq!(header_number(&refused, "x-ratelimit-remaining"), 0);
    for response in [&first, &refused] {
        let copies = response
            .headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("x-ratelimit-limit"))
            .count();
        assert_eq!(copies, 1, "{:?}", response.headers);
    }
    assert_eq!(gw.upstream.request_count(), 2);

    // Other APIs are not limited and carry no quota headers.
    let other = gw.get("/health", &[]);
    assert_eq!(other.status, 200);
    assert_eq!(other.header("x-ratelimit-limit"), None);
}

fn per_app_gateway() -> Gateway {
    let sign_auth = WasmFilter::json(
        "sign_auth",
        &json!({
            "apps": [
                {"key": "203751", "secrets": ["mobile-secret"]},
                {"key": "203752", "secrets": ["web-secret"]},
                {"key": "vip", "secrets": ["vip-secret"]}
            ],
            "anonymous": true
        }),
    );
    let throttling = throttling(json!({
        "rules": [{
            "name": "per-app", "key": "app", "limit": 2, "window": "1h",
            "exceptions": [{"apps": ["vip"], "exempt": true}]
        }]
    }));
    gateway(&[sign_auth, throttling])
}

impl Gateway {
    fn signed_get(&self, key: &str, secret: &str, extra: &[(&str, &str)]) -> Response {
        let mut headers = vec![("accept".to_string(), "*/*".to_string())];
        headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let all = signed_headers(key, secret, "GET", "/orders/7", &headers, None);
        http::get(&self.envoy.url("/orders/7"), &pairs(&all)).expect("response")
    }
}

#[test]
fn per_app_limits_count_the_app_sign_auth_verified_and_ignore_spoofed_identity_headers() {
    let gw = per_app_gateway();
    stay_clear_of_the_hour_edge(30_000);
    // Unsigned requests that claim app 203751 in headers are not that app.
    let spoof = [("x-gw-app-key", "203751"), ("gw_app", "203751")];
    for _ in 0..4 {
        assert_eq!(gw.get("/orders/7", &spoof).status, 200);
    }
    assert_eq!(gw.stat("rule.per-app.no_key"), 4);
    let mobile = || gw.signed_get("203751", "mobile-secret", &[]);
    assert_eq!(statuses(&[mobile(), mobile()]), [200, 200]);
    // App 203752 posing as 203751 in a header is still counted as 203752.
    let web = || gw.signed_get("203752", "web-secret", &[("x-gw-app-key", "203751")]);
    assert_eq!(statuses(&[web(), web()]), [200, 200]);
    assert_error(&web(), 429, "A429AK", "Throttled by APP Flow Control");
    assert_error(&mobile(), 429, "A429AK", "Throttled by APP Flow Control");
    assert_eq!(gw.upstream.request_count(), 4 + 4);
    assert_eq!(gw.stat("rule.per-app.allowed"), 4);
    assert_eq!(gw.stat("denied.A429AK"), 2);
}

#[test]
fn an_exempt_app_is_never_throttled() {
    let gw = per_app_gateway();
    for _ in 0..10 {
        let response = gw.signed_get("vip", "vip-secret", &[]);
        assert_eq!(response.status, 200, "{}", response.text());
    }
    assert_eq!(gw.stat("rule.per-app.exempt"), 10);
    assert_eq!(gw.stat("rule.per-app.throttled"), 0);
}

#[test]
fn a_new_window_admits_again() {
    let gw = gateway(&[throttling(json!({
        "rules": [{"name": "per-2s", "limit": 3, "window": "2s"}]
    }))]);
    let agent = http::agent();
    let burst = || {
        (0..4)
            .map(|_| http::send(&agent, "GET", &gw.envoy.url("/"), &[], None).expect("response"))
            .collect::<Vec<_>>()
    };
    sleep_until_into_window(2_000, 100);
    let first = burst();
    assert_eq!(statuses(&first), [200, 200, 200, 429]);
    assert!((1..=2).contains(&header_number(&first[3], "retry-after")));
    sleep_until_into_window(2_000, 100);
    assert_eq!(statuses(&burst()), [200, 200, 200, 429]);
    assert_eq!(gw.upstream.request_count(), 6);
}

#[test]
fn a_sliding_window_refuses_a_second_burst_right_after_the_edge() {
    let gw = gateway(&[throttling(json!({
        "rules": [{"name": "smooth", "limit": 4, "window": "4s", "algorithm": "sliding"}]
    }))]);
    let agent = http::agent();
    let send = |n: usize| {
        (0..n)
            .map(|_| {
                http::send(&agent, "GET", &gw.envoy.url("/"), &[], None)
                    .expect("response")
                    .status
            })
            .collect::<Vec<_>>()
    };
    // Windows of 4 s leave a busy machine room: each step has >= 0.6 s.
    // 4 in the second half of one window…
    sleep_until_into_window(4_000, 2_000);
    assert_eq!(send(5), [200, 200, 200, 200, 429]);
    // …then 10% into the next they still weigh 3.6 (more than 3 until 25%):
    // a fixed window would admit 4 more here, the sliding one none.
    sleep_until_into_window(4_000, 400);
    assert_eq!(send(2), [429, 429]);
    // 80% in they weigh 0.8, so 3 fit.
    let now = now_ms();
    thread::sleep(Duration::from_millis(
        (now / 4_000 * 4_000 + 3_200).saturating_sub(now),
    ));
    assert_eq!(send(4), [200, 200, 200, 429]);
    assert_eq!(gw.upstream.request_count(), 7);
}

#[test]
fn many_distinct_keys_leave_shared_data_at_the_configured_capacity() {
    let gw = gateway(&[throttling(json!({
        "rules": [{
            "name": "by-key", "key": {"parameter": {"query": "k"}},
            "limit": 1, "window": "1h", "slots": 4
        }]
    }))]);
    stay_clear_of_the_hour_edge(60_000);
    assert_eq!(gw.stat("shared_data_keys"), 4);
    let agent = http::agent();
    let get = |k: usize| {
        http::send(&agent, "GET", &gw.envoy.url(&format!("/?k={k}")), &[], None)
            .expect("response")
            .status
    };
    let admitted = (0..300).filter(|k| get(*k) == 200).count();
    // 4 slots × 4 entries: the first key in each entry is admitted; the
    // others find their slot full, share a count that is at its limit,
    // and are refused rather than given new memory.
    assert_eq!(admitted, 16);
    assert_eq!(gw.upstream.request_count(), 16);
    assert_eq!(gw.stat("rule.by-key.shared_slot"), 300 - 16);
    assert_eq!(gw.stat("shared_data_keys"), 4);
    assert_eq!(get(0), 429, "an admitted key is still at its limit");
}

#[test]
fn a_client_ip_rule_counts_each_client_a_trusted_proxy_forwards() {
    let gw = gateway(&[throttling(json!({
        "client_address": {"trusted_proxies": ["127.0.0.1"], "envoy_appended_xff": true},
        "rules": [{"name": "per-ip", "key": "client_ip", "limit": 1, "window": "1h"}]
    }))]);
    stay_clear_of_the_hour_edge(30_000);
    let from = |client: &str| gw.get("/", &[("x-forwarded-for", client)]);
    assert_eq!(from("203.0.113.7").status, 200);
    assert_error(
        &from("203.0.113.7"),
        429,
        "A429IP",
        "Throttled by IP Flow Control",
    );
    // The proxy appended the real client; what the client wrote left of it is ignored.
    assert_eq!(from("203.0.113.7, 203.0.113.8").status, 200);
    let garbage = from("not-an-address");
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.header("x-ca-error-code"), Some("I400HD"));
    assert_eq!(gw.upstream.request_count(), 2);
}

#[test]
fn a_malformed_config_is_refused_by_envoy_with_the_field_named() {
    let log = Envoy::expect_refused(&gateway_config(
        &[WasmFilter::new(
            "throttling",
            r#"{"rules":[{"name":"api","limit":10,"window":"10x"}]}"#,
        )],
        &[1],
    ));
    assert!(
        log.contains("throttling: invalid configuration: rules[0].window: `10x` is not a window"),
        "{log}"
    );
    let log = Envoy::expect_refused(&gateway_config(
        &[WasmFilter::new(
            "throttling",
            r#"{"rules":[{"name":"api","limit":10,"window":"1s","key":"user"}]}"#,
        )],
        &[1],
    ));
    assert!(
        log.contains("throttling: invalid configuration: rules[0].key: `user` needs the top-level `user` source"),
        "{log}"
    );
}

#[test]
fn the_shipped_example_config_validates_and_serves() {
    let module = wasm_module("throttling").display().to_string();
    let wasm_path = "target/wasm32-wasip1/release/throttling.wasm";
    let text = shipped_config("throttling.yaml", &[(wasm_path, module.clone())]);
    let (ok, output) = validate(&text, "yaml");
    assert!(ok, "envoy/throttling.yaml is refused:\n{output}");
    let broken = text.replace(r#""window": "1m""#, r#""window": "1 minute""#);
    assert_ne!(broken, text, "the example has a one-minute window");
    let (ok, output) = validate(&broken, "yaml");
    assert!(!ok);
    assert!(
        output.contains(
            "throttling: invalid configuration: rules[1].window: `1 minute` is not a window"
        ),
        "{output}"
    );

    let upstream = EchoServer::start("echo").expect("echo upstream");
    let envoy = start_yaml(
        &shipped_config(
            "throttling.yaml",
            &[
                (wasm_path, module),
                ("static_resources:", format!("{ADMIN}static_resources:")),
                ("port_value: 10000", "port_value: 0".into()),
                (
                    "port_value: 18081",
                    format!("port_value: {}", upstream.port()),
                ),
            ],
        ),
        WORKERS,
    );
    let url = format!("http://127.0.0.1:{}/api/items", envoy.listener_port("http"));
    let response = http::get(&url, &[("x-user-id", "alice")]).expect("response");
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        response.header("x-ratelimit-limit").is_some(),
        "{:?}",
        response.headers
    );
    assert_eq!(upstream.request_count(), 1);
}
