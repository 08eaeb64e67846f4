//! request-mapping in a real Envoy: the echo upstream shows the mapped
//! request exactly (path, query, headers, body), hostile values are refused,
//! and response headers change as configured.

use integration_tests::echo::EchoServer;
use integration_tests::envoy::{gateway_config, shipped_config, start_yaml, Envoy, WasmFilter};
use integration_tests::http::{self, Response};
use integration_tests::signing::{pairs, signed_headers};
use serde_json::{json, Value};

struct Gateway {
    envoy: Envoy,
    upstream: EchoServer,
}

fn config() -> Value {
    json!({"rules": [
        {
            "name": "profile",
            "match": {"methods": ["GET"], "path": {"template": "/users/{id}"}},
            "backend": {"path": "/v2/accounts/{id}/profile", "host": "accounts.internal"},
            "parameters": [
                {"from": {"in": "query", "name": "lang"}, "to": {"in": "header", "name": "X-Lang"}},
                {"from": {"in": "query", "name": "fields"}, "to": {"in": "query", "name": "select"}},
                {"from": {"in": "header", "name": "x-debug"}}
            ],
            "constants": [{"to": {"in": "header", "name": "X-Source"}, "value": "gateway"}],
            "system": [
                {"value": "client_ip", "to": {"in": "header", "name": "X-Client-IP"}},
                {"value": "request_id", "to": {"in": "query", "name": "rid"}},
                {"value": "api", "to": {"in": "header", "name": "X-Api"}}
            ],
            "response_headers": {
                "add": [{"name": "Cache-Control", "value": "no-store"}],
                "remove": ["x-envoy-upstream-service-time"],
                "rename": [{"from": "x-echo-upstream", "to": "x-served-by"}]
            }
        },
        {
            "name": "create-order",
            "match": {"methods": ["POST"], "path": {"template": "/users/{id}/orders"}},
            "backend": {"path": "/orders", "method": "PUT"},
            "parameters": [
                {"from": {"in": "path", "name": "id"}, "to": {"in": "body", "name": "/customer/id"}, "type": "integer"},
                {"from": {"in": "body", "name": "/qty"}, "to": {"in": "body", "name": "/item/quantity"}, "type": "integer"},
                {"from": {"in": "body", "name": "/note"}, "to": {"in": "header", "name": "X-Note"}},
                {"from": {"in": "query", "name": "coupon"}, "to": {"in": "body", "name": "/coupon"}},
                {"from": {"in": "body", "name": "/internal"}}
            ],
            "constants": [{"to": {"in": "body", "name": "/channel"}, "value": "public-api"}],
            "max_body_bytes": 256
        },
        {
            "name": "legacy-form",
            "match": {"methods": ["POST"], "path": {"exact": "/legacy"}},
            "parameters": [
                {"from": {"in": "form", "name": "user"}, "to": {"in": "query", "name": "u"}},
                {"from": {"in": "query", "name": "lang"}, "to": {"in": "form", "name": "locale"}}
            ]
        }
    ]})
}

fn gateway() -> Gateway {
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let envoy = Envoy::start(&gateway_config(
        &[WasmFilter::json("request_mapping", &config())],
        &[upstream.port()],
    ));
    Gateway { envoy, upstream }
}

impl Gateway {
    fn stat(&self, name: &str) -> u64 {
        self.envoy
            .stat(&format!("wasmcustom.gw.request_mapping.{name}"))
    }
}

fn assert_refused(response: &Response, status: u16, code: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.header("x-ca-error-code"), Some(code));
    assert_eq!(response.json()["code"], code);
}

#[test]
fn a_public_path_maps_onto_the_backend_path_host_headers_and_query() {
    let gw = gateway();
    let response = http::get(
        &gw.envoy
            .url("/users/a%20b?lang=zh%20CN&fields=name,email&keep=1"),
        &[("x-debug", "1")],
    )
    .expect("response");
    assert_eq!(response.status, 200, "{}", response.text());
    let echoed = response.json();
    assert_eq!(echoed["path"], "/v2/accounts/a%20b/profile");
    let headers = &echoed["headers"];
    let request_id = headers["x-request-id"]
        .as_str()
        .expect("Envoy's request id");
    assert_eq!(
        echoed["query"],
        format!("keep=1&select=name%2Cemail&rid={request_id}")
    );
    assert_eq!(headers["host"], "accounts.internal");
    assert_eq!(headers["x-lang"], "zh CN");
    assert_eq!(headers["x-source"], "gateway");
    assert_eq!(headers["x-client-ip"], "127.0.0.1");
    assert_eq!(headers["x-api"], "profile");
    assert_eq!(headers.get("x-debug"), None);
    assert_eq!(gw.stat("mapped"), 1);
}

#[test]
fn response_headers_are_added_removed_and_renamed() {
    let gw = gateway();
    let response = http::get(&gw.envoy.url("/users/7"), &[]).expect("response");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(response.header("x-served-by"), Some("echo"));
    assert_eq!(response.header("x-echo-upstream"), None);
    assert_eq!(response.header("x-envoy-upstream-service-time"), None);
    // Unmatched requests keep the backend's headers.
    let other = http::get(&gw.envoy.url("/other"), &[]).expect("response");
    assert_eq!(other.header("x-echo-upstream"), Some("echo"));
    assert!(other.header("x-envoy-upstream-service-time").is_some());
    assert_eq!(gw.stat("unmatched"), 1);
}

#[test]
fn a_json_body_is_reshaped_with_types_and_a_consistent_content_length() {
    let gw = gateway();
    let response = http::post(
        &gw.envoy.url("/users/42/orders?coupon=SPRING"),
        &[("content-type", "application/json")],
        br#"{"sku": "A-1", "qty": "2", "note": "ring twice", "internal": {"cost": 3}}"#,
    )
    .expect("response");
    assert_eq!(response.status, 200, "{}", response.text());
    let echoed = response.json();
    assert_eq!(echoed["method"], "PUT");
    assert_eq!(echoed["path"], "/orders");
    assert_eq!(echoed["query"], "");
    assert_eq!(echoed["headers"]["x-note"], "ring twice");
    let body: Value = serde_json::from_str(echoed["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"sku": "A-1", "item": {"quantity": 2}, "customer": {"id": 42},
               "coupon": "SPRING", "channel": "public-api"})
    );
    assert_eq!(
        echoed["headers"]["content-length"],
        echoed["body_length"].to_string()
    );
    assert_eq!(gw.stat("body_rewritten"), 1);
}

#[test]
fn a_form_body_and_the_query_trade_fields() {
    let gw = gateway();
    let response = http::post(
        &gw.envoy.url("/legacy?lang=de"),
        &[("content-type", "application/x-www-form-urlencoded")],
        b"user=ann%20lee&note=keep+this",
    )
    .expect("response");
    assert_eq!(response.status, 200, "{}", response.text());
    let echoed = response.json();
    assert_eq!(echoed["query"], "u=ann%20lee");
    assert_eq!(echoed["body"], "note=keep+this&locale=de");
    assert_eq!(echoed["headers"]["content-length"], "24");
}

#[test]
fn header_injection_and_path_escapes_are_refused_or_neutralised() {
    let gw = gateway();
    let injected =
        http::get(&gw.envoy.url("/users/1?lang=en%0D%0AX-Admin:%20true"), &[]).expect("response");
    assert_refused(&injected, 400, "A400MV");
    let body = http::post(
        &gw.envoy.url("/users/1/orders"),
        &[("content-type", "application/json")],
        br#"{"note": "a\nX-Admin: true"}"#,
    )
    .expect("response");
    assert_refused(&body, 400, "A400MV");
    // An encoded slash stays one segment of the backend template.
    let escape = http::get(&gw.envoy.url("/users/..%2F..%2Fadmin"), &[]).expect("response");
    assert_eq!(escape.status, 200, "{}", escape.text());
    assert_eq!(
        escape.json()["path"],
        "/v2/accounts/..%2F..%2Fadmin/profile"
    );
    assert_eq!(gw.upstream.request_count(), 1);
    assert_eq!(gw.stat("denied.A400MV"), 2);
}

#[test]
fn bodies_that_cannot_be_mapped_get_a_clear_error() {
    let gw = gateway();
    let url = gw.envoy.url("/users/1/orders");
    let not_json = http::post(&url, &[("content-type", "text/plain")], b"qty=1").unwrap();
    assert_refused(&not_json, 415, "A415MT");
    let broken = http::post(&url, &[("content-type", "application/json")], b"{\"qty\":").unwrap();
    assert_refused(&broken, 400, "A400MV");
    let wrong_type = http::post(
        &url,
        &[("content-type", "application/json")],
        br#"{"qty": "two"}"#,
    )
    .unwrap();
    assert_refused(&wrong_type, 400, "A400MV");
    let large = vec![b' '; 300];
    let too_large = http::post(&url, &[("content-type", "application/json")], &large).unwrap();
    assert_refused(&too_large, 413, "A413MB");
    let bodiless = http::post(&url, &[], b"").unwrap();
    assert_refused(&bodiless, 400, "A400MB");
    assert_eq!(gw.upstream.request_count(), 0);
}

#[test]
fn a_malformed_mapping_is_refused_by_envoy_with_the_field_named() {
    let log = Envoy::expect_refused(&gateway_config(
        &[WasmFilter::json(
            "request_mapping",
            &json!({"rules": [{"match": {"path": {"template": "/users/{id}"}},
                               "backend": {"path": "/v2/{user}"}}]}),
        )],
        &[1],
    ));
    assert!(
        log.contains("request_mapping: invalid configuration: rules[0].backend.path: variable `user` has no value"),
        "{log}"
    );
}

#[test]
fn the_shipped_example_maps_a_public_api_onto_its_backend() {
    let upstream = EchoServer::start("accounts").expect("echo upstream");
    let text = shipped_config(
        "request-mapping.yaml",
        &[
            ("port_value: 9901", "port_value: 0".into()),
            ("port_value: 10000", "port_value: 0".into()),
            (
                "port_value: 18081",
                format!("port_value: {}", upstream.port()),
            ),
        ],
    );
    let envoy = start_yaml(&text, 1);
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", envoy.listener_port("http"));
    let profile = http::get(&url("/users/42?lang=zh"), &[("cookie", "s=1")]).unwrap();
    assert_eq!(profile.status, 200, "{}", profile.text());
    let echoed = profile.json();
    assert_eq!(echoed["path"], "/v2/accounts/42/profile");
    assert_eq!(echoed["headers"]["host"], "accounts.internal");
    assert_eq!(echoed["headers"]["x-lang"], "zh");
    assert_eq!(echoed["headers"].get("cookie"), None);
    assert_eq!(profile.header("cache-control"), Some("private, max-age=60"));
    let order = http::post(
        &url("/users/42/orders?coupon=C"),
        &[("content-type", "application/json")],
        br#"{"sku": "A-1", "qty": 2}"#,
    )
    .unwrap();
    assert_eq!(order.status, 200, "{}", order.text());
    let echoed = order.json();
    assert_eq!(echoed["method"], "PUT");
    assert_eq!(echoed["path"], "/orders");
    let body: Value = serde_json::from_str(echoed["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"customer": {"id": 42}, "item": {"sku": "A-1", "quantity": 2},
               "coupon": "C", "channel": "public-api"})
    );
}

/// sign-auth checks the signature of the request as the client sent it,
/// param-validation checks its parameters, and only then is it mapped.
#[test]
fn mapping_runs_after_signature_and_validation_on_the_frontend_request() {
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let sign_auth = json!({
        "apps": [{"key": "203751", "secrets": ["s3cret"], "name": "mobile"}],
        "rules": [{"name": "profile", "match": {"path": {"prefix": "/users"}}}]
    });
    let validation = json!({"rules": [{
        "match": {"path": {"template": "/users/{id}"}},
        "parameters": [
            {"name": "id", "in": "path", "type": "integer", "minimum": 1},
            {"name": "lang", "in": "query", "enum": ["en", "zh"]}
        ]
    }]});
    let mapping = json!({"rules": [{
        "match": {"path": {"template": "/users/{id}"}},
        "backend": {"path": "/v2/accounts/{id}"},
        "parameters": [{"from": {"in": "query", "name": "lang"}, "to": {"in": "header", "name": "X-Lang"}}],
        "system": [
            {"value": "app_key", "to": {"in": "header", "name": "X-App-Key"}},
            {"value": "app_name", "to": {"in": "query", "name": "app"}}
        ]
    }]});
    let envoy = Envoy::start(&gateway_config(
        &[
            WasmFilter::json("sign_auth", &sign_auth),
            WasmFilter::json("param_validation", &validation),
            WasmFilter::json("request_mapping", &mapping),
        ],
        &[upstream.port()],
    ));
    let accept = vec![("accept".to_string(), "application/json".to_string())];
    let signed = |path: &str| signed_headers("203751", "s3cret", "GET", path, &accept, None);

    let ok = http::get(
        &envoy.url("/users/9?lang=zh"),
        &pairs(&signed("/users/9?lang=zh")),
    )
    .expect("response");
    assert_eq!(ok.status, 200, "{}", ok.text());
    let echoed = ok.json();
    assert_eq!(echoed["path"], "/v2/accounts/9");
    assert_eq!(echoed["query"], "app=mobile");
    assert_eq!(echoed["headers"]["x-lang"], "zh");
    assert_eq!(echoed["headers"]["x-app-key"], "203751");

    // A client's own X-App-Key is not the signed app.
    let mut spoofed = signed("/users/9?lang=en");
    spoofed.push(("x-app-key".into(), "999".into()));
    let ok = http::get(&envoy.url("/users/9?lang=en"), &pairs(&spoofed)).expect("response");
    assert_eq!(ok.json()["headers"]["x-app-key"], "203751");

    let invalid = http::get(
        &envoy.url("/users/9?lang=fr"),
        &pairs(&signed("/users/9?lang=fr")),
    )
    .expect("response");
    assert_eq!(invalid.header("x-ca-error-code"), Some("A400PV"));
    let unsigned = http::get(&envoy.url("/users/9?lang=zh"), &pairs(&accept)).expect("response");
    assert_eq!(unsigned.status, 401, "{}", unsigned.text());
    assert_eq!(upstream.request_count(), 2);
}

/// Envoy clears its route cache when a Wasm filter changes request headers,
/// so routes see the mapped request: a backend path can pick its cluster.
#[test]
fn envoy_routes_the_mapped_request_by_its_backend_path() {
    let frontend = EchoServer::start("frontend-route").expect("echo upstream");
    let backend = EchoServer::start("backend-route").expect("echo upstream");
    let mut text = shipped_config(
        "request-mapping.yaml",
        &[
            ("port_value: 9901", "port_value: 0".into()),
            ("port_value: 10000", "port_value: 0".into()),
            ("port_value: 18081", format!("port_value: {}", frontend.port())),
            (
                "              - match: { prefix: \"/\" }\n",
                "              - match: { prefix: \"/v2/\" }\n                route: { cluster: v2 }\n              - match: { prefix: \"/\" }\n".into(),
            ),
        ],
    );
    text.push_str(&format!(
        "  - name: v2\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: v2\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n",
        backend.port()
    ));
    let envoy = start_yaml(&text, 1);
    let url = format!("http://127.0.0.1:{}/users/1", envoy.listener_port("http"));
    let response = http::get(&url, &[]).expect("response");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["upstream"], "backend-route");
    assert_eq!(response.json()["path"], "/v2/accounts/1/profile");
    assert_eq!(frontend.request_count(), 0);
}
