//! circuit-breaker in a real Envoy with two workers (`--concurrency 2`), in
//! front of echo upstreams that fail or delay on demand. What reached the
//! upstream is counted at the upstream. Open durations are about a second,
//! so a test waits that long at most a few times.

use integration_tests::echo::EchoServer;
use integration_tests::envoy::{
    gateway_config, shipped_config, start_yaml, validate, wasm_module, Envoy, WasmFilter,
};
use integration_tests::http::{self, Response};
use serde_json::{json, Value};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

const WORKERS: u32 = 2;
/// Longer than the 1 s open duration the tests configure.
const OPEN_DURATION_ELAPSED: Duration = Duration::from_millis(1300);

struct Gateway {
    envoy: Envoy,
    upstream: EchoServer,
}

/// Envoy with the filter configured with `rules`, in front of one echo
/// upstream; `adjust` may change the Envoy config first.
fn gateway_with(rules: Value, adjust: impl FnOnce(&mut Value)) -> Gateway {
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let mut config = gateway_config(
        &[WasmFilter::json(
            "circuit_breaker",
            &json!({ "rules": rules }),
        )],
        &[upstream.port()],
    );
    adjust(&mut config);
    let envoy = Envoy::start_with(&config, WORKERS).unwrap_or_else(|err| panic!("{err}"));
    Gateway { envoy, upstream }
}

fn gateway(rules: Value) -> Gateway {
    gateway_with(rules, |_| {})
}

/// The route list of [`gateway_config`]'s only virtual host.
fn routes(config: &mut Value) -> &mut Vec<Value> {
    config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["route_config"]["virtual_hosts"][0]["routes"]
        .as_array_mut()
        .expect("routes")
}

impl Gateway {
    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        http::get(&self.envoy.url(path), headers).expect("response from Envoy")
    }

    fn stat(&self, name: &str) -> u64 {
        self.envoy
            .stat(&format!("wasmcustom.gw.circuit_breaker.{name}"))
    }

    fn statuses(&self, path: &str, headers: &[(&str, &str)], count: usize) -> Vec<u16> {
        (0..count).map(|_| self.get(path, headers).status).collect()
    }
}

/// Sends `count` requests at once, each on its own connection, so both
/// workers take some; returns their statuses.
fn concurrent_statuses(
    envoy: &Envoy,
    path: &str,
    headers: &[(&str, &str)],
    count: usize,
) -> Vec<u16> {
    let url = envoy.url(path);
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let start = Arc::new(Barrier::new(count));
    let handles: Vec<_> = (0..count)
        .map(|_| {
            let (url, headers, start) = (url.clone(), headers.clone(), Arc::clone(&start));
            thread::spawn(move || {
                let pairs: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                start.wait();
                http::get(&url, &pairs).expect("response from Envoy").status
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("request thread"))
        .collect()
}

/// Connections each worker accepted (`listener.<address>.worker_<n>.downstream_cx_total`).
fn connections_per_worker(envoy: &Envoy) -> Vec<u64> {
    let (_, body) = envoy
        .admin_get("/stats?filter=worker_[0-9]+\\.downstream_cx_total$")
        .expect("admin /stats");
    body.lines()
        .filter(|line| line.starts_with("listener.127.0.0.1_"))
        .filter_map(|line| line.rsplit(": ").next()?.trim().parse().ok())
        .collect()
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

fn assert_degraded(response: &Response) {
    assert_eq!(response.status, 503, "{}", response.text());
    assert_eq!(response.header("x-ca-error-code"), Some("A503CB"));
    assert_eq!(
        response.header("x-ca-error-message"),
        Some("API Circuit Breaker Open")
    );
    let body = response.json();
    assert_eq!(body["code"], "A503CB");
    assert_eq!(body["message"], "API Circuit Breaker Open");
    let request_id = body["request_id"].as_str().expect("request_id");
    assert_eq!(response.header("x-ca-request-id"), Some(request_id));
    assert!(response.header("x-echo-upstream").is_none());
}

fn retry_after(response: &Response) -> u64 {
    response
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {:?}", response.headers))
}

#[test]
fn after_the_trip_condition_calls_get_the_degraded_answer_and_the_upstream_sees_none() {
    let gw = gateway(json!([{
        "name": "api",
        "trip": {"min_calls": 4, "failure_rate_percent": 50},
        "open": {"duration_ms": 60000}
    }]));
    gw.upstream.set_forced_status(Some(500));
    assert_eq!(gw.statuses("/orders/1", &[], 4), [500; 4]);
    for _ in 0..10 {
        let response = gw.get("/orders/1", &[]);
        assert_degraded(&response);
        assert!((1..=60).contains(&retry_after(&response)));
    }
    assert_eq!(gw.upstream.request_count(), 4);
    assert_eq!(gw.stat("api.state"), 1);
    assert_eq!(gw.stat("api.transitions.open"), 1);
    assert_eq!(gw.stat("api.calls.failure"), 4);
    assert_eq!(gw.stat("api.degraded.respond"), 10);
    assert_eq!(gw.stat("api.open_duration_ms"), 60000);
    assert!(
        gw.envoy.log().contains(
            "circuit_breaker: api: closed -> open for 60000 ms: 4 of 4 calls failed (100%, threshold 50%)"
        ),
        "{}",
        gw.envoy.log()
    );
    let prometheus = gw.envoy.prometheus();
    assert!(
        prometheus
            .lines()
            .any(|l| l.starts_with("gw_circuit_breaker_api_state") && l.ends_with(" 1")),
        "{prometheus}"
    );
}

#[test]
fn below_the_minimum_number_of_calls_failures_do_not_trip_it() {
    let gw = gateway(json!([{
        "name": "api",
        "trip": {"min_calls": 5, "failure_rate_percent": 50}
    }]));
    assert_eq!(gw.statuses("/", &[("x-echo-status", "502")], 2), [502, 502]);
    assert_eq!(gw.statuses("/", &[], 2), [200, 200]);
    // 3 of 5 failed: 60 % trips it on the fifth call, which still went through.
    assert_eq!(gw.get("/", &[("x-echo-status", "503")]).status, 503);
    assert_degraded(&gw.get("/", &[]));
    assert_eq!(gw.upstream.request_count(), 5);
}

#[test]
fn after_the_open_duration_exactly_the_configured_probes_reach_the_upstream_and_their_success_closes_it(
) {
    let gw = gateway(json!([{
        "name": "api",
        "trip": {"consecutive_failures": 2},
        "open": {"duration_ms": 1000},
        "half_open": {"probes": 3, "timeout_ms": 10000}
    }]));
    gw.upstream.set_forced_status(Some(500));
    assert_eq!(gw.statuses("/", &[], 2), [500, 500]);
    assert_degraded(&gw.get("/", &[]));
    gw.upstream.set_forced_status(None);
    thread::sleep(OPEN_DURATION_ELAPSED);

    // Slow probes keep their slots while the other calls arrive.
    let statuses = concurrent_statuses(&gw.envoy, "/", &[("x-echo-delay-ms", "1000")], 16);
    assert_eq!(count(&statuses, 200), 3, "{statuses:?}");
    assert_eq!(count(&statuses, 503), 13, "{statuses:?}");
    let per_worker = connections_per_worker(&gw.envoy);
    assert!(
        per_worker.len() == 2 && per_worker.iter().all(|n| *n > 0),
        "both workers took calls: {per_worker:?}"
    );
    assert_eq!(gw.upstream.request_count(), 2 + 3);
    assert_eq!(gw.stat("api.probes"), 3);
    assert_eq!(gw.stat("api.transitions.half_open"), 1);
    assert_eq!(gw.stat("api.transitions.closed"), 1);
    assert_eq!(gw.stat("api.state"), 0);
    assert!(gw
        .envoy
        .log()
        .contains("circuit_breaker: api: half-open -> closed: 3 probe calls succeeded"));

    assert_eq!(gw.statuses("/", &[], 3), [200; 3]);
    assert_eq!(gw.upstream.request_count(), 2 + 3 + 3);
}

#[test]
fn a_failed_probe_opens_the_breaker_again_for_longer() {
    let gw = gateway(json!([{
        "name": "api",
        "trip": {"consecutive_failures": 2},
        "open": {"duration_ms": 1000, "multiplier": 3, "max_duration_ms": 10000},
        "half_open": {"probes": 1}
    }]));
    gw.upstream.set_forced_status(Some(500));
    assert_eq!(gw.statuses("/", &[], 2), [500, 500]);
    thread::sleep(OPEN_DURATION_ELAPSED);
    // The one probe reaches the upstream and fails.
    assert_eq!(gw.get("/", &[]).status, 500);
    let response = gw.get("/", &[]);
    assert_degraded(&response);
    assert!(retry_after(&response) >= 2, "{:?}", response.headers);
    assert_eq!(gw.upstream.request_count(), 3);
    assert_eq!(gw.stat("api.transitions.open"), 2);
    assert_eq!(gw.stat("api.open_duration_ms"), 3000);
    assert_eq!(gw.stat("api.state"), 1);
    assert!(gw
        .envoy
        .log()
        .contains("circuit_breaker: api: half-open -> open for 3000 ms: a probe call failed"));
}

#[test]
fn slow_calls_trip_the_breaker() {
    let gw = gateway(json!([{
        "name": "api",
        "slow_call_ms": 150,
        "trip": {"min_calls": 3, "slow_call_rate_percent": 60}
    }]));
    let slow = [("x-echo-delay-ms", "300")];
    assert_eq!(gw.statuses("/", &[], 1), [200]);
    assert_eq!(gw.statuses("/", &slow, 1), [200]);
    // 2 of 3 slow: 66 %.
    assert_eq!(gw.statuses("/", &slow, 1), [200]);
    assert_degraded(&gw.get("/", &[]));
    assert_eq!(gw.upstream.request_count(), 3);
    assert_eq!(gw.stat("api.calls.slow"), 2);
    assert_eq!(gw.stat("api.calls.success"), 3);
    assert!(gw
        .envoy
        .log()
        .contains("closed -> open for 5000 ms: 2 of 3 calls were slow (66%, threshold 60%)"));
}

#[test]
fn upstream_timeouts_count_as_failures_whatever_the_failure_statuses() {
    let gw = gateway_with(
        json!([{
            "name": "api",
            "failure_statuses": [],
            "trip": {"consecutive_failures": 2}
        }]),
        |config| routes(config)[0]["route"]["timeout"] = json!("0.25s"),
    );
    // A 500 is not a failure under this rule.
    assert_eq!(gw.get("/", &[("x-echo-status", "500")]).status, 500);
    let late = [("x-echo-delay-ms", "1000")];
    assert_eq!(gw.statuses("/", &late, 2), [504, 504]);
    assert_degraded(&gw.get("/", &[]));
    assert_eq!(gw.upstream.request_count(), 3);
    assert_eq!(gw.stat("api.calls.failure"), 2);
}

#[test]
fn a_refused_upstream_connection_counts_as_a_failure() {
    let closed_port = {
        let gone = EchoServer::start("gone").expect("echo");
        gone.port()
    };
    let envoy = Envoy::start_with(
        &gateway_config(
            &[WasmFilter::json(
                "circuit_breaker",
                &json!({"rules": [{"name": "api", "failure_statuses": [], "trip": {"consecutive_failures": 2}}]}),
            )],
            &[closed_port],
        ),
        WORKERS,
    )
    .unwrap_or_else(|err| panic!("{err}"));
    for _ in 0..2 {
        let response = http::get(&envoy.url("/"), &[]).expect("response");
        assert_eq!(response.status, 503);
        assert_eq!(response.header("x-ca-error-code"), None, "Envoy's own 503");
    }
    assert_degraded(&http::get(&envoy.url("/"), &[]).expect("response"));
}

#[test]
fn answers_that_did_not_come_from_the_upstream_do_not_count() {
    let gw = gateway_with(
        json!([{"name": "api", "trip": {"consecutive_failures": 2}}]),
        |config| {
            routes(config).insert(
                0,
                json!({
                    "name": "maintenance",
                    "match": {"prefix": "/maintenance"},
                    "direct_response": {"status": 503, "body": {"inline_string": "down"}}
                }),
            );
        },
    );
    assert_eq!(gw.statuses("/maintenance", &[], 5), [503; 5]);
    assert_eq!(gw.get("/", &[]).status, 200);
    assert_eq!(gw.stat("api.state"), 0);
    assert_eq!(gw.stat("api.calls.failure"), 0);
}

#[test]
fn only_the_matching_api_is_broken() {
    let gw = gateway(json!([
        {"name": "orders", "match": {"path": {"prefix": "/orders"}}, "trip": {"consecutive_failures": 1}},
        {"name": "catalog", "match": {"path": {"prefix": "/catalog"}}, "trip": {"consecutive_failures": 1}}
    ]));
    assert_eq!(gw.get("/orders/1", &[("x-echo-status", "500")]).status, 500);
    assert_degraded(&gw.get("/orders/2", &[]));
    assert_eq!(gw.get("/catalog/1", &[]).status, 200);
    assert_eq!(gw.get("/other", &[("x-echo-status", "500")]).status, 500);
    assert_eq!(gw.get("/other", &[]).status, 200);
    assert_eq!(gw.stat("orders.state"), 1);
    assert_eq!(gw.stat("catalog.state"), 0);
}

#[test]
fn a_configured_degraded_answer_replaces_the_default() {
    let gw = gateway(json!([{
        "name": "api",
        "trip": {"consecutive_failures": 1},
        "when_open": {"respond": {
            "status": 200,
            "headers": {"cache-control": "no-store", "x-degraded": "true"},
            "body": "{\"items\":[]}",
            "content_type": "application/json",
            "retry_after": false
        }}
    }]));
    assert_eq!(gw.get("/", &[("x-echo-status", "503")]).status, 503);
    let response = gw.get("/", &[]);
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "{\"items\":[]}");
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("x-degraded"), Some("true"));
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(response.header("x-ca-error-code"), Some("A200CB"));
    assert_eq!(response.header("retry-after"), None);
    assert_eq!(gw.upstream.request_count(), 1);
}

/// `envoy/circuit-breaker.yaml` with test ports, the built module, and a
/// one-second open duration for `catalog`.
fn shipped_example(backend: &EchoServer, fallback: &EchoServer) -> String {
    let module = wasm_module("circuit_breaker").display().to_string();
    shipped_config(
        "circuit-breaker.yaml",
        &[
            ("port_value: 9901", "port_value: 0".into()),
            ("port_value: 10000", "port_value: 0".into()),
            (
                "port_value: 18081",
                format!("port_value: {}", backend.port()),
            ),
            (
                "port_value: 18082",
                format!("port_value: {}", fallback.port()),
            ),
            ("target/wasm32-wasip1/release/circuit_breaker.wasm", module),
            (
                r#""open": { "duration_ms": 10000 }"#,
                r#""open": { "duration_ms": 1000 }"#.into(),
            ),
        ],
    )
}

#[test]
fn the_shipped_example_config_validates() {
    let backend = EchoServer::start("backend").expect("echo");
    let fallback = EchoServer::start("fallback").expect("echo");
    let (ok, output) = validate(&shipped_example(&backend, &fallback), "yaml");
    assert!(ok, "envoy/circuit-breaker.yaml is refused:\n{output}");
}

#[test]
fn while_open_the_fallback_route_takes_the_calls_and_probes_close_it_again() {
    let backend = EchoServer::start("backend").expect("echo");
    let fallback = EchoServer::start("fallback").expect("echo");
    let envoy = start_yaml(&shipped_example(&backend, &fallback), WORKERS);
    let port = envoy.listener_port("http");
    let get = |path: &str, headers: &[(&str, &str)]| {
        http::get(&format!("http://127.0.0.1:{port}{path}"), headers).expect("response")
    };

    // A client cannot pick the fallback by sending the marker.
    let spoofed = get("/catalog/1", &[("x-gw-circuit", "open")]);
    assert_eq!(spoofed.header("x-echo-upstream"), Some("backend"));
    assert_eq!(spoofed.json()["headers"]["x-gw-circuit"], Value::Null);

    backend.set_forced_status(Some(500));
    for _ in 0..5 {
        assert_eq!(get("/catalog/1", &[]).status, 500);
    }
    let before = backend.request_count();
    for _ in 0..4 {
        let response = get("/catalog/1", &[]);
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.header("x-echo-upstream"), Some("fallback"));
        assert_eq!(response.json()["headers"]["x-gw-circuit"], "open");
    }
    assert_eq!(backend.request_count(), before);
    assert_eq!(fallback.request_count(), 4);
    // Another API on the same backend is not affected.
    assert_eq!(get("/orders/1", &[]).status, 500);

    backend.set_forced_status(None);
    thread::sleep(OPEN_DURATION_ELAPSED);
    // Two probes go to the backend and close the breaker; no more fallback.
    for _ in 0..4 {
        let response = get("/catalog/1", &[]);
        assert_eq!(response.header("x-echo-upstream"), Some("backend"));
    }
    assert_eq!(fallback.request_count(), 4);
    assert_eq!(
        envoy.stat("wasmcustom.gw.circuit_breaker.catalog.degraded.fallback"),
        4
    );
    assert_eq!(
        envoy.stat("wasmcustom.gw.circuit_breaker.catalog.transitions.closed"),
        1
    );
}

#[test]
fn a_malformed_config_is_refused_by_envoy_with_the_field_named() {
    let log = Envoy::expect_refused(&gateway_config(
        &[WasmFilter::new(
            "circuit_breaker",
            r#"{"rules":[{"name":"api","window":{"duration_ms":10001,"buckets":10}}]}"#,
        )],
        &[1],
    ));
    assert!(
        log.contains("circuit_breaker: invalid configuration: rules[0].window.duration_ms: 10001 is not a multiple of window.buckets (10)"),
        "{log}"
    );
    let log = Envoy::expect_refused(&gateway_config(
        &[WasmFilter::new(
            "circuit_breaker",
            r#"{"rules":[{"name":"api","when_open":{"fallback":{"header":"bad header"}}}]}"#,
        )],
        &[1],
    ));
    assert!(
        log.contains("circuit_breaker: invalid configuration: rules[0].when_open.fallback.header: `bad header` is not a valid header name"),
        "{log}"
    );
}
