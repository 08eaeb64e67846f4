//! ip-acl in a real Envoy, with an echo upstream that reports what it got.
//! The test client always connects from 127.0.0.1.

use integration_tests::echo::EchoServer;
use integration_tests::envoy::{gateway_config, Envoy, WasmFilter};
use integration_tests::http::{self, Response};
use serde_json::{json, Value};

struct Gateway {
    envoy: Envoy,
    upstream: EchoServer,
}

fn gateway(config: Value) -> Gateway {
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let envoy = Envoy::start(&gateway_config(
        &[WasmFilter::json("ip_acl", &config)],
        &[upstream.port()],
    ));
    Gateway { envoy, upstream }
}

impl Gateway {
    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        http::get(&self.envoy.url(path), headers).expect("response from Envoy")
    }

    fn stat(&self, name: &str) -> u64 {
        self.envoy.stat(&format!("wasmcustom.gw.ip_acl.{name}"))
    }
}

fn assert_denied(response: &Response, code: &str, status: u16) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.header("x-ca-error-code"), Some(code));
    assert_eq!(
        response.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let body = response.json();
    assert_eq!(body["code"], code);
    assert_eq!(
        body["message"].as_str(),
        response.header("x-ca-error-message")
    );
    let request_id = body["request_id"].as_str().expect("request_id");
    assert!(!request_id.is_empty());
    assert_eq!(response.header("x-ca-request-id"), Some(request_id));
}

#[test]
fn an_allowed_request_reaches_the_upstream_unchanged() {
    let gw = gateway(json!({"deny": ["203.0.113.0/24"]}));
    let response = http::post(
        &gw.envoy.url("/orders/7?b=2&a=1"),
        &[("x-custom", "value"), ("content-type", "text/plain")],
        b"hello upstream",
    )
    .expect("response");
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = response.json();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/orders/7");
    assert_eq!(seen["query"], "b=2&a=1");
    assert_eq!(seen["headers"]["x-custom"], "value");
    assert_eq!(seen["headers"]["content-type"], "text/plain");
    assert_eq!(seen["body"], "hello upstream");
    assert_eq!(gw.upstream.request_count(), 1);
    assert_eq!(gw.stat("allowed"), 1);
}

#[test]
fn a_denied_client_gets_403_in_the_shared_shape_and_the_upstream_sees_nothing() {
    let gw = gateway(json!({"deny": ["127.0.0.0/8"]}));
    let response = gw.get("/anything", &[]);
    assert_denied(&response, "A403IP", 403);
    assert_eq!(
        response.header("x-ca-error-message"),
        Some("Access denied by IP Control Policy")
    );
    assert_eq!(gw.upstream.request_count(), 0);
    assert_eq!(gw.stat("denied.deny_list"), 1);
    assert_eq!(gw.stat("allowed"), 0);
}

#[test]
fn an_allow_list_refuses_every_other_client() {
    let gw = gateway(json!({"allow": ["10.0.0.0/8", "2001:db8::/32"]}));
    assert_denied(&gw.get("/", &[]), "A403IP", 403);
    assert_eq!(gw.upstream.request_count(), 0);
    assert_eq!(gw.stat("denied.not_allowed"), 1);
}

#[test]
fn per_api_rules_apply_only_to_their_api() {
    let gw = gateway(json!({
        "rules": [{
            "name": "admin",
            "match": {"path": {"prefix": "/admin"}},
            "allow": ["10.0.0.0/8"]
        }]
    }));
    assert_denied(&gw.get("/admin/users", &[]), "A403IP", 403);
    assert_denied(&gw.get("/%61dmin/users", &[]), "A403IP", 403);
    assert_eq!(gw.get("/public", &[]).status, 200);
    assert_eq!(gw.upstream.request_count(), 1);
}

#[test]
fn rules_can_match_envoy_route_names() {
    let gw = gateway(json!({
        "rules": [{"match": {"route_names": ["default"]}, "deny": ["127.0.0.1"]}]
    }));
    assert_denied(&gw.get("/", &[]), "A403IP", 403);
}

#[test]
fn a_spoofed_x_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    // 127.0.0.1 is not a trusted proxy here, so its X-Forwarded-For is ignored.
    let gw = gateway(json!({
        "allow": ["10.0.0.0/8"],
        "deny": ["127.0.0.1"],
        "client_address": {"envoy_appended_xff": true, "trusted_proxies": ["192.0.2.0/24"]}
    }));
    for xff in ["10.1.1.1", "10.1.1.1, 10.2.2.2", "192.0.2.1"] {
        assert_denied(&gw.get("/", &[("x-forwarded-for", xff)]), "A403IP", 403);
    }
    assert_eq!(gw.upstream.request_count(), 0);
    assert_eq!(gw.stat("denied.deny_list"), 3);
}

#[test]
fn x_forwarded_for_from_a_trusted_proxy_names_the_client() {
    let gw = gateway(json!({
        "deny": ["203.0.113.0/24"],
        "client_address": {"envoy_appended_xff": true, "trusted_proxies": ["127.0.0.1"]}
    }));
    assert_denied(
        &gw.get("/", &[("x-forwarded-for", "203.0.113.9")]),
        "A403IP",
        403,
    );
    // The proxy appended the real client; the left entry is the client's own claim.
    let spoof = gw.get("/", &[("x-forwarded-for", "198.51.100.1, 203.0.113.9")]);
    assert_eq!(spoof.status, 403);
    let allowed = gw.get("/", &[("x-forwarded-for", "203.0.113.9, 198.51.100.1")]);
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    // Several headers read as one list, in order.
    let split = gw.get(
        "/",
        &[
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-for", "203.0.113.9"),
        ],
    );
    assert_eq!(split.status, 403);
    assert_eq!(gw.upstream.request_count(), 1);
}

#[test]
fn trusted_hops_limits_how_far_x_forwarded_for_is_believed() {
    let gw = gateway(json!({
        "deny": ["203.0.113.0/24"],
        "client_address": {"envoy_appended_xff": true, "trusted_proxies": ["0.0.0.0/0"], "trusted_hops": 1}
    }));
    // One hop: the rightmost entry is the client; the one left of it is not read.
    let response = gw.get("/", &[("x-forwarded-for", "203.0.113.9, 198.51.100.1")]);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        gw.get("/", &[("x-forwarded-for", "198.51.100.1, 203.0.113.9")])
            .status,
        403
    );
}

#[test]
fn a_malformed_x_forwarded_for_from_a_trusted_proxy_gets_400() {
    let gw = gateway(
        json!({"client_address": {"envoy_appended_xff": true, "trusted_proxies": ["127.0.0.1"]}}),
    );
    let response = gw.get("/", &[("x-forwarded-for", "not-an-address")]);
    assert_denied(&response, "I400HD", 400);
    assert!(response.json()["message"]
        .as_str()
        .is_some_and(|m| m.contains("X-Forwarded-For")));
    assert_eq!(gw.upstream.request_count(), 0);
    assert_eq!(gw.stat("denied.bad_forwarded_for"), 1);
}

#[test]
fn a_huge_x_forwarded_for_chain_is_handled_and_the_worker_keeps_serving() {
    let gw = gateway(json!({
        "deny": ["203.0.113.0/24"],
        "client_address": {"envoy_appended_xff": true, "trusted_proxies": ["127.0.0.0/8"]}
    }));
    let chain = std::iter::once("203.0.113.9".to_string())
        .chain((0..2000).map(|i| format!("127.0.{}.{}", i / 250, i % 250)))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(gw.get("/", &[("x-forwarded-for", &chain)]).status, 403);
    assert_eq!(gw.get("/", &[]).status, 200);
}

#[test]
fn dry_run_counts_denials_but_lets_requests_through() {
    let gw = gateway(json!({"deny": ["127.0.0.1"], "dry_run": true}));
    assert_eq!(gw.get("/", &[]).status, 200);
    assert_eq!(gw.upstream.request_count(), 1);
    assert_eq!(gw.stat("dry_run.denied"), 1);
    assert!(gw.envoy.log().contains("dry run, would deny"));
}

#[test]
fn counters_are_visible_to_prometheus() {
    let gw = gateway(json!({"deny": ["127.0.0.1"]}));
    gw.get("/", &[]);
    let body = gw.envoy.prometheus();
    assert!(
        body.lines()
            .any(|l| l.starts_with("gw_ip_acl_denied_deny_list") && l.ends_with(" 1")),
        "{body}"
    );
}

#[test]
fn a_malformed_config_is_refused_by_envoy_with_the_field_named() {
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let log = Envoy::expect_refused(&gateway_config(
        &[WasmFilter::new(
            "ip_acl",
            r#"{"rules":[{"match":{"path":{"prefix":"/a"}},"deny":["10.0.0.0/8","10.0.0.300/8"]}]}"#,
        )],
        &[upstream.port()],
    ));
    assert!(
        log.contains("ip_acl: invalid configuration: rules[0].deny[1]: `10.0.0.300/8` is not a valid CIDR block"),
        "{log}"
    );
}

#[test]
fn an_unknown_config_field_is_refused_by_envoy() {
    let log = Envoy::expect_refused(&gateway_config(
        &[WasmFilter::new("ip_acl", r#"{"denny":["10.0.0.0/8"]}"#)],
        &[1],
    ));
    assert!(
        log.contains("ip_acl: invalid configuration: denny: unknown field `denny`"),
        "{log}"
    );
}

#[test]
fn per_app_lists_use_the_app_that_sign_auth_verified() {
    use integration_tests::signing::{pairs, signed_headers};
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let sign_auth = WasmFilter::json(
        "sign_auth",
        &json!({
            "apps": [
                {"key": "blocked-app", "secrets": ["s1"]},
                {"key": "other-app", "secrets": ["s2"]}
            ],
            "anonymous": true
        }),
    );
    let ip_acl = WasmFilter::json(
        "ip_acl",
        &json!({"apps": {"blocked-app": {"deny": ["127.0.0.1"]}}}),
    );
    let envoy = Envoy::start(&gateway_config(&[sign_auth, ip_acl], &[upstream.port()]));
    let signed_get = |key: &str, secret: &str| {
        let accept = [("accept".to_string(), "*/*".to_string())];
        let headers = signed_headers(key, secret, "GET", "/x", &accept, None);
        http::get(&envoy.url("/x"), &pairs(&headers)).expect("response")
    };
    assert_denied(&signed_get("blocked-app", "s1"), "A403IP", 403);
    assert_eq!(signed_get("other-app", "s2").status, 200);
    // An unsigned request that claims the app in a header is not that app.
    let spoofed = http::get(
        &envoy.url("/x"),
        &[("x-gw-app-key", "blocked-app"), ("gw_app", "blocked-app")],
    )
    .expect("response");
    assert_eq!(spoofed.status, 200);
    assert_eq!(upstream.request_count(), 2);
}
