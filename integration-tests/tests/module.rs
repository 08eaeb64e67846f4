//! Every policy on one request: in chain mode through the chain of the seven
//! single filters, in module mode (`GATEWAY_MODULE=1`) through the gateway
//! module with seven sections; the same case, so both stay equivalent. And
//! the module's own configuration errors, which only the module has.

use integration_tests::echo::EchoServer;
use integration_tests::envoy::{add_cluster, chain_config, gateway_config, Envoy, WasmFilter};
use integration_tests::http::{self, Response};
use integration_tests::signing::{pairs, signed_headers};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const FORM: &str = "application/x-www-form-urlencoded";

/// The seven policies around `POST /orders/{id}` with a form body: three of
/// them (sign-auth, param-validation, request-mapping) read the body.
fn seven_policies() -> [WasmFilter; 7] {
    let trusted = json!({"trusted_proxies": ["127.0.0.1"], "envoy_appended_xff": true});
    let orders = json!({"methods": ["POST"], "path": {"template": "/orders/{id}"}});
    [
        WasmFilter::json(
            "sign_auth",
            &json!({
                "apps": [{"key": "203751", "secrets": ["s3cret"], "name": "mobile"}],
                "rules": [{"name": "orders", "match": orders, "apps": ["203751"]}],
                "backend_signature": {"keys": [{"id": "k1", "secret": "backend-secret"}]}
            }),
        ),
        WasmFilter::json(
            "ip_acl",
            &json!({"client_address": trusted, "deny": ["203.0.113.0/24"]}),
        ),
        WasmFilter::json(
            "throttling",
            &json!({"rate_limit_headers": true, "rules": [
                {"name": "per-app", "match": orders, "key": "app", "limit": 5, "window": "1m"}
            ]}),
        ),
        WasmFilter::json(
            "param_validation",
            &json!({"rules": [{"name": "create-order", "match": orders, "parameters": [
                {"name": "id", "in": "path", "type": "integer", "minimum": 1},
                {"name": "qty", "in": "form", "type": "integer", "minimum": 1, "required": true},
                {"name": "sku", "in": "form", "required": true},
                {"name": "note", "in": "form"}
            ]}]}),
        ),
        WasmFilter::json(
            "request_mapping",
            &json!({"rules": [{"name": "create-order", "match": orders,
                "backend": {"path": "/v2/orders/{id}"},
                "parameters": [
                    {"from": {"in": "form", "name": "qty"}, "to": {"in": "header", "name": "X-Qty"}},
                    {"from": {"in": "form", "name": "sku"}, "to": {"in": "query", "name": "sku"}}
                ],
                "system": [{"value": "app_key", "to": {"in": "header", "name": "X-App-Key"}}]
            }]}),
        ),
        WasmFilter::json(
            "circuit_breaker",
            // It sees the request as mapped for the backend.
            &json!({"rules": [{"name": "orders", "match": {"path": {"prefix": "/v2/orders"}},
                "trip": {"consecutive_failures": 3}}]}),
        ),
        WasmFilter::json(
            "log_push",
            &json!({
                "sink": {"cluster": "log_sink", "format": "ndjson", "path": "/ingest"},
                "batch": {"max_records": 1, "flush_interval_ms": 50},
                "client_address": trusted,
                "rules": [{"name": "orders", "match": {"path": {"prefix": "/orders"}}}]
            }),
        ),
    ]
}

fn signed_form_post(envoy: &Envoy, path: &str, form: &str, extra: &[(&str, &str)]) -> Response {
    let mut headers = vec![
        ("accept".to_string(), "application/json".to_string()),
        ("content-type".to_string(), FORM.to_string()),
    ];
    let mut signed = signed_headers("203751", "s3cret", "POST", path, &headers, Some(form));
    headers.clear();
    signed.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    http::send(
        &http::agent(),
        "POST",
        &envoy.url(path),
        &pairs(&signed),
        Some(form.as_bytes()),
    )
    .expect("response")
}

fn records(sink: &EchoServer, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.request_count() < count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut records: Vec<Value> = sink
        .requests()
        .iter()
        .flat_map(|request| {
            String::from_utf8_lossy(&request.body)
                .lines()
                .map(|line| serde_json::from_str(line).unwrap_or(Value::Null))
                .collect::<Vec<_>>()
        })
        .collect();
    records.sort_by_key(|record| record["status"].as_u64());
    records
}

#[test]
fn a_signed_form_request_passes_all_seven_policies_in_order_and_is_logged() {
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let sink = EchoServer::start("ndjson").expect("sink");
    let mut config = gateway_config(&seven_policies(), &[upstream.port()]);
    add_cluster(&mut config, "log_sink", sink.port());
    let envoy = Envoy::start(&config);
    let stat = |name: &str| envoy.stat(&format!("wasmcustom.gw.{name}"));

    let response = signed_form_post(&envoy, "/orders/7", "qty=2&sku=A-1&note=hi&debug=1", &[]);
    assert_eq!(response.status, 200, "{}", response.text());
    // throttling answered on the response.
    assert_eq!(response.header("x-ratelimit-limit"), Some("5"));
    assert_eq!(response.header("x-ratelimit-remaining"), Some("4"));
    let seen = response.json();
    // request-mapping mapped what param-validation left (`debug` dropped),
    // with the app sign-auth verified from the signed body.
    assert_eq!(seen["path"], "/v2/orders/7");
    assert_eq!(seen["query"], "sku=A-1");
    assert_eq!(seen["headers"]["x-qty"], "2");
    assert_eq!(seen["headers"]["x-app-key"], "203751");
    assert_eq!(seen["headers"]["x-gw-signature-key-id"], "k1");
    assert_eq!(seen["body"], "note=hi");
    assert_eq!(seen["headers"]["content-length"], "7");

    // Refused on the way: by sign-auth (unsigned), by ip-acl (denied address).
    let unsigned = http::post(
        &envoy.url("/orders/8"),
        &[("content-type", FORM)],
        b"qty=1&sku=B-2",
    )
    .expect("response");
    assert_eq!(unsigned.status, 401, "{}", unsigned.text());
    let denied = signed_form_post(
        &envoy,
        "/orders/9",
        "qty=1&sku=C-3",
        &[("x-forwarded-for", "203.0.113.9")],
    );
    assert_eq!(denied.status, 403, "{}", denied.text());
    assert_eq!(denied.header("x-ca-error-code"), Some("A403IP"));
    assert_eq!(upstream.request_count(), 1);

    // Each policy counted the one request that reached it, under its own name.
    assert_eq!(stat("sign_auth.allowed"), 2);
    assert_eq!(stat("ip_acl.allowed"), 1);
    assert_eq!(stat("ip_acl.denied.deny_list"), 1);
    assert_eq!(stat("throttling.allowed"), 1);
    assert_eq!(stat("param_validation.passed"), 1);
    assert_eq!(stat("param_validation.rewritten"), 1);
    assert_eq!(stat("request_mapping.mapped"), 1);
    assert_eq!(stat("circuit_breaker.orders.calls.success"), 1);

    // log-push recorded all three, refused ones included, each with the
    // client's request line.
    let records = records(&sink, 3);
    let summary: Vec<(u64, &str, &str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["status"].as_u64().unwrap_or(0),
                r["path"].as_str().unwrap_or("?"),
                r["app_key"].as_str().unwrap_or("?"),
                r["error_code"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (200, "/orders/7", "203751", ""),
            (401, "/orders/8", "", "A401MH"),
            (403, "/orders/9", "203751", "A403IP"),
        ],
        "{records:?}"
    );
    assert!(records.iter().all(|r| r["api"] == "orders"), "{records:?}");
}

/// The gateway module with this configuration, as the only filter.
fn refused_module(config: &str) -> String {
    Envoy::expect_refused(&chain_config(&[WasmFilter::new("gateway", config)], &[1]))
}

#[test]
fn a_module_configuration_that_is_not_an_object_of_known_sections_is_refused() {
    let log = refused_module(r#"{"ip-acl": {"deny": ["10.0.0.0/8"]}}"#);
    assert!(
        log.contains(
            "gateway: invalid configuration: ip-acl: unknown field `ip-acl`, expected one of \
             `sign_auth`, `ip_acl`, `ext_auth`, `access_control`, `routing`, `throttling`, `param_validation`, `threat_protection`, `response_cache`, `error_mapping`, `request_mapping`, \
             `circuit_breaker`, `log_push`"
        ),
        "{log}"
    );
    let log = refused_module(r#"[{"ip_acl": {}}]"#);
    assert!(
        log.contains(
            "gateway: invalid configuration: the filter configuration must be a JSON object"
        ),
        "{log}"
    );
    let log = refused_module("{}");
    assert!(
        log.contains("gateway: invalid configuration: no policy is configured"),
        "{log}"
    );
}

#[test]
fn every_faulty_section_is_reported_under_its_policy_name() {
    let log = refused_module(
        r#"{"ip_acl": {"deny": ["10.0.0.0/99"]}, "throttling": {"rules": []},
            "log_push": {"sink": {"cluster": "log_sink", "format": "clickhouse"}}}"#,
    );
    assert!(
        log.contains("ip_acl: invalid configuration: deny[0]: `10.0.0.0/99`"),
        "{log}"
    );
    assert!(
        log.contains(
            "log_push: invalid configuration: sink.table: required for format `clickhouse`"
        ),
        "{log}"
    );
}

#[test]
fn the_module_reports_its_wasm_vm_memory_summed_over_workers() {
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let config = chain_config(
        &[WasmFilter::gateway_module(&[WasmFilter::json(
            "ip_acl",
            &json!({"deny": ["203.0.113.0/24"]}),
        )])],
        &[upstream.port()],
    );
    let envoy = Envoy::start_with(&config, 2).unwrap_or_else(|e| panic!("{e}"));
    let name = "wasmcustom.gw.gateway.vm_memory_bytes";
    if integration_tests::envoy::native_mode() {
        // No VM: the native module defines no such gauge.
        assert!(!envoy.prometheus().contains("gw_gateway_vm_memory_bytes"));
        return;
    }
    // Every worker's VM (and the main thread's) reports its pages.
    assert!(envoy.wait_for(Duration::from_secs(5), |e| e.stat(name) >= 3 * 65536));
    assert_eq!(envoy.stat(name) % 65536, 0, "whole Wasm pages");
    assert_eq!(
        http::get(&envoy.url("/x"), &[]).expect("response").status,
        200
    );
}
