//! The API lifecycle on Envoy, with the policies around it: Envoy's own CORS
//! filter answering preflights before any policy sees them, an API still
//! under construction answered by a `direct_response` route (a mock
//! backend) with the policies applied, and stages (`X-Ca-Stage`: RELEASE,
//! TEST, PRE) routed to a backend each by route header matching, signed
//! and recorded by log-push.

use integration_tests::echo::{EchoServer, Reply};
use integration_tests::envoy::{add_cluster, gateway_config, Envoy, WasmFilter};
use integration_tests::http::{self, Response};
use integration_tests::signing::{now_ms, pairs, signed_headers, unique_nonce};
use serde_json::{json, Value};
use sign_auth::client::{sign_request, ClientRequest, Credentials};
use sign_auth::signature::SignatureMethod;
use std::time::{Duration, Instant};

const APP: (&str, &str) = ("203751", "s3cret");
const ORIGIN: &str = "https://app.example.com";

struct Lifecycle {
    envoy: Envoy,
    release: EchoServer,
    test: EchoServer,
    pre: EchoServer,
    authorizer: EchoServer,
    sink: EchoServer,
}

fn policies() -> Vec<WasmFilter> {
    vec![
        WasmFilter::json(
            "sign_auth",
            &json!({"apps": [{"key": APP.0, "secrets": [APP.1]}]}),
        ),
        WasmFilter::json(
            "ext_auth",
            &json!({
                "authorizer": {"cluster": "authorizer", "timeout_ms": 1000},
                "identity": [{"from": "app"}],
                "rules": [{"match": {"path": {"prefix": "/orders"}}}]
            }),
        ),
        WasmFilter::json(
            "throttling",
            &json!({"rules": [{"name": "mock", "match": {"path": {"prefix": "/mock"}},
                               "limit": 2, "window": "1h"}]}),
        ),
        WasmFilter::json(
            "param_validation",
            &json!({"rules": [{"match": {"path": {"prefix": "/orders"}},
                               "parameters": [{"name": "q", "in": "query", "required": true}]}]}),
        ),
        WasmFilter::json(
            "log_push",
            &json!({
                "sink": {"cluster": "log_sink", "format": "ndjson", "path": "/ingest"},
                "batch": {"max_records": 100, "flush_interval_ms": 100},
                "fields": ["api", "path", "status", "stage", "upstream_cluster", "app_key"]
            }),
        ),
    ]
}

fn stage_route(stage: &str, cluster: &str) -> Value {
    json!({
        "name": format!("orders-{}", stage.to_ascii_lowercase()),
        "match": {"prefix": "/orders", "headers": [
            {"name": "x-ca-stage", "string_match": {"exact": stage, "ignore_case": true}}
        ]},
        "route": {"cluster": cluster, "timeout": "5s"}
    })
}

fn lifecycle() -> Lifecycle {
    let [release, test, pre] = ["release", "test", "pre"].map(|id| EchoServer::start(id).unwrap());
    let authorizer =
        EchoServer::start_scripted("authorizer", |_| Reply::new(200, "")).expect("authorizer");
    let sink = EchoServer::start("sink").expect("sink");
    let mut config = gateway_config(&policies(), &[release.port()]);
    add_cluster(&mut config, "backend_test", test.port());
    add_cluster(&mut config, "backend_pre", pre.port());
    add_cluster(&mut config, "authorizer", authorizer.port());
    add_cluster(&mut config, "log_sink", sink.port());
    let manager = config
        .pointer_mut("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config")
        .expect("the HTTP connection manager");
    // Envoy's CORS filter first: it answers a preflight before any policy.
    manager["http_filters"]
        .as_array_mut()
        .expect("http filters")
        .insert(
            0,
            json!({"name": "envoy.filters.http.cors", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}}),
        );
    let host = &mut manager["route_config"]["virtual_hosts"][0];
    host["typed_per_filter_config"] = json!({"envoy.filters.http.cors": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
        "allow_origin_string_match": [{"exact": ORIGIN}],
        "allow_methods": "GET, POST",
        "allow_headers": "content-type, x-ca-key, x-ca-signature, x-ca-signature-headers, x-ca-timestamp, x-ca-nonce, x-ca-stage",
        "expose_headers": "x-ca-request-id, x-ca-error-code, x-ca-error-message",
        "allow_credentials": true,
        "max_age": "600"
    }});
    host["routes"] = json!([
        {"name": "mock-orders", "match": {"prefix": "/mock/orders"},
         "direct_response": {"status": 200, "body": {"inline_string": "{\"order\":\"mock-7\",\"status\":\"paid\"}"}},
         "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"}}]},
        stage_route("TEST", "backend_test"),
        stage_route("PRE", "backend_pre"),
        stage_route("RELEASE", "backend"),
        {"name": "orders-unknown-stage", "match": {"prefix": "/orders", "headers": [
            {"name": "x-ca-stage", "present_match": true}]},
         "direct_response": {"status": 404, "body": {"inline_string": "{\"code\":\"S404ST\",\"message\":\"No Such Stage\"}"}}},
        {"name": "default", "match": {"prefix": "/"}, "route": {"cluster": "backend", "timeout": "5s"}}
    ]);
    let envoy = Envoy::start_with(&config, 2).unwrap_or_else(|e| panic!("{e}"));
    Lifecycle {
        envoy,
        release,
        test,
        pre,
        authorizer,
        sink,
    }
}

impl Lifecycle {
    fn get(&self, path: &str, headers: &[(String, String)]) -> Response {
        http::get(&self.envoy.url(path), &pairs(headers)).expect("response")
    }

    fn stat(&self, name: &str) -> u64 {
        self.envoy.stat(&format!("wasmcustom.gw.{name}"))
    }

    /// log-push's records, once `count` have arrived.
    fn records(&self, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let records: Vec<Value> = self
                .sink
                .requests()
                .iter()
                .flat_map(|r| {
                    String::from_utf8_lossy(&r.body)
                        .lines()
                        .map(|line| serde_json::from_str(line).expect("a JSON record"))
                        .collect::<Vec<Value>>()
                })
                .collect();
            if records.len() >= count || Instant::now() > deadline {
                return records;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn signed(path: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    // ureq sends `Accept: */*` unless told otherwise; it is signed.
    let headers: Vec<(String, String)> = [("accept", "application/json")]
        .iter()
        .chain(extra)
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    signed_headers(APP.0, APP.1, "GET", path, &headers, None)
}

/// Signed with X-Ca-Stage listed among the signed headers.
fn signed_with_stage(path: &str, stage: &str) -> Vec<(String, String)> {
    let headers = vec![
        ("accept".to_string(), "application/json".to_string()),
        ("x-ca-stage".to_string(), stage.to_string()),
    ];
    let signed = sign_request(
        &Credentials {
            key: APP.0.into(),
            secret: APP.1.into(),
            method: SignatureMethod::HmacSha256,
        },
        &ClientRequest {
            method: "GET".into(),
            path_and_query: path.into(),
            headers: headers.clone(),
            signed_extra: vec!["x-ca-stage".into()],
            form_body: None,
        },
        now_ms(),
        &unique_nonce(),
    )
    .expect("signed");
    headers.into_iter().chain(signed.headers).collect()
}

#[test]
fn a_preflight_is_answered_at_the_edge_and_never_reaches_a_policy() {
    let gateway = lifecycle();
    let preflight = http::send(
        &http::agent(),
        "OPTIONS",
        &gateway.envoy.url("/orders/7"),
        &[
            ("origin", ORIGIN),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "x-ca-signature, x-ca-stage",
            ),
        ],
        None,
    )
    .expect("response");
    assert_eq!(preflight.status, 200, "{}", preflight.text());
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some(ORIGIN)
    );
    assert_eq!(
        preflight.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(preflight.header("access-control-max-age"), Some("600"));
    assert!(preflight
        .header("access-control-allow-headers")
        .is_some_and(|h| h.contains("x-ca-signature")));
    // No policy saw it: not sign-auth, ext-auth nor param-validation.
    assert_eq!(gateway.stat("sign_auth.denied.A401MH"), 0);
    assert_eq!(gateway.authorizer.request_count(), 0);
    assert_eq!(gateway.release.request_count(), 0);

    // The actual call carries the CORS answer headers, after every policy.
    let mut headers = signed("/orders/7?q=x", &[]);
    headers.push(("origin".into(), ORIGIN.into()));
    let call = gateway.get("/orders/7?q=x", &headers);
    assert_eq!(call.status, 200, "{}", call.text());
    assert_eq!(call.header("access-control-allow-origin"), Some(ORIGIN));
    assert!(call
        .header("access-control-expose-headers")
        .is_some_and(|h| h.contains("x-ca-error-code")));
    assert_eq!(gateway.authorizer.request_count(), 1);

    // An origin that is not allowed gets no CORS answer: its preflight
    // goes on and the policies refuse it, unsigned.
    let foreign = http::send(
        &http::agent(),
        "OPTIONS",
        &gateway.envoy.url("/orders/7"),
        &[
            ("origin", "https://evil.example.net"),
            ("access-control-request-method", "POST"),
        ],
        None,
    )
    .expect("response");
    assert_eq!(foreign.status, 401);
    assert_eq!(foreign.header("access-control-allow-origin"), None);
}

#[test]
fn a_mock_backend_answers_with_every_policy_applied() {
    let gateway = lifecycle();
    let unsigned = gateway.get("/mock/orders/7", &[]);
    assert_eq!(unsigned.status, 401, "sign-auth applies to the mock API");
    for _ in 0..2 {
        let mocked = gateway.get("/mock/orders/7", &signed("/mock/orders/7", &[]));
        assert_eq!(mocked.status, 200, "{}", mocked.text());
        assert_eq!(mocked.json(), json!({"order": "mock-7", "status": "paid"}));
        assert_eq!(mocked.header("content-type"), Some("application/json"));
    }
    let third = gateway.get("/mock/orders/7", &signed("/mock/orders/7", &[]));
    assert_eq!(third.status, 429, "throttling applies to the mock API");
    assert_eq!(gateway.release.request_count(), 0, "no backend was called");
    let records = gateway.records(4);
    let mocked: Vec<&Value> = records
        .iter()
        .filter(|r| r["path"] == "/mock/orders/7" && r["status"] == 200)
        .collect();
    assert_eq!(
        mocked.len(),
        2,
        "log-push records the mock calls: {records:?}"
    );
    assert!(mocked.iter().all(|r| r["app_key"] == APP.0));
    assert!(mocked
        .iter()
        .all(|r| r["upstream_cluster"] == "" || r["upstream_cluster"].is_null()));
}

#[test]
fn a_stage_is_picked_by_x_ca_stage_signed_and_recorded() {
    let gateway = lifecycle();
    let call = |stage: Option<&str>| {
        let extra: Vec<(&str, &str)> = stage.map(|s| ("x-ca-stage", s)).into_iter().collect();
        gateway.get("/orders/7?q=x", &signed("/orders/7?q=x", &extra))
    };
    assert_eq!(call(None).json()["upstream"], "release");
    assert_eq!(call(Some("RELEASE")).json()["upstream"], "release");
    assert_eq!(call(Some("TEST")).json()["upstream"], "test");
    assert_eq!(call(Some("pre")).json()["upstream"], "pre");
    let unknown = call(Some("DEV"));
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["code"], "S404ST");
    assert_eq!(
        (
            gateway.release.request_count(),
            gateway.test.request_count(),
            gateway.pre.request_count()
        ),
        (2, 1, 1)
    );
    // A client that lists X-Ca-Stage in X-Ca-Signature-Headers signs it:
    // the stage cannot be changed on the way. (Unlisted, it is not signed,
    // as with Alibaba's gateway.)
    let listed = signed_with_stage("/orders/7?q=x", "TEST");
    assert!(listed
        .iter()
        .any(|(n, v)| n == "x-ca-signature-headers" && v.contains("x-ca-stage")));
    assert_eq!(
        gateway.get("/orders/7?q=x", &listed).json()["upstream"],
        "test"
    );
    let mut moved = signed_with_stage("/orders/7?q=x", "TEST");
    for (name, value) in &mut moved {
        if name == "x-ca-stage" {
            *value = "PRE".into();
        }
    }
    let tampered = gateway.get("/orders/7?q=x", &moved);
    assert_eq!(tampered.status, 400, "{}", tampered.text());
    assert_eq!(gateway.pre.request_count(), 1);

    let records = gateway.records(7);
    let stages: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| r["status"] == 200)
        .map(|r| {
            (
                r["stage"].as_str().unwrap_or_default(),
                r["upstream_cluster"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    for expected in [
        ("RELEASE", "backend"),
        ("TEST", "backend_test"),
        ("PRE", "backend_pre"),
    ] {
        assert!(stages.contains(&expected), "{expected:?} in {stages:?}");
    }
    assert_eq!(stages.len(), 5);
}
