//! access-control in a real Envoy, after sign-auth (Basic users of an app):
//! conditions on the verified user and app, path variables, headers, the
//! stage and JSON and form body fields decide; the echo upstream shows
//! what got through, and refusals come in the shared error shape.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use integration_tests::echo::EchoServer;
use integration_tests::envoy::{gateway_config, Envoy, WasmFilter};
use integration_tests::http::{self, Response};
use serde_json::{json, Value};

fn sign_auth() -> Value {
    // alice's password is `alice-pw`, bob's `bob-pw` (stored as digests).
    json!({
        "apps": [
            {"key": "203751", "name": "mobile", "secrets": ["ali-secret"],
             "basic": [
                {"username": "alice", "password":
                 "sha256:cefd4bcd86ca3d6d9d1064593870b4cd4fdb3fef0136b1c43684cb7f58a29036"},
                {"username": "bob", "password":
                 "sha256:a023c4e07c00f0beb6f452a7da3699d38b42c3527ff00d9a9c65a65f254e768f"}]}
        ],
        "modes": ["basic"],
        "anonymous": true,
        "rules": []
    })
}

fn access_control() -> Value {
    json!({
        "max_body_bytes": 1024,
        "rules": [{
            "name": "user-orders",
            "match": {"path": {"template": "/users/{userId}/orders"}},
            "parameters": {"userType": "Header:X-User-Type"},
            "checks": [
                {"name": "support", "condition": "$userType == 'support' && app == '203751'", "if_true": "allow"},
                {"name": "no-test-deletes", "condition": "method == 'DELETE' && stage == 'TEST'",
                 "if_true": "deny", "status": 405, "message": "No deletes on TEST"},
                {"name": "owner", "condition": "user == param.userId", "if_false": "deny",
                 "message": "Only your own orders"}
            ]
        }, {
            "name": "reports",
            "match": {"path": {"prefix": "/reports"}},
            "checks": [
                {"name": "a-month", "condition": "json.range.days <= 31 || form.days <= 31",
                 "if_false": "deny", "status": 400, "message": "A report covers at most 31 days"}
            ]
        }]
    })
}

struct Gateway {
    envoy: Envoy,
    upstream: EchoServer,
}

fn gateway() -> Gateway {
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let filters = [
        WasmFilter::json("sign_auth", &sign_auth()),
        WasmFilter::json("access_control", &access_control()),
    ];
    let envoy = Envoy::start(&gateway_config(&filters, &[upstream.port()]));
    Gateway { envoy, upstream }
}

impl Gateway {
    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response {
        http::send(
            &http::agent(),
            method,
            &self.envoy.url(path),
            headers,
            body.map(str::as_bytes),
        )
        .expect("response")
    }

    fn stat(&self, name: &str) -> u64 {
        self.envoy
            .stat(&format!("wasmcustom.gw.access_control.{name}"))
    }
}

fn basic(credentials: &str) -> String {
    format!("Basic {}", BASE64.encode(credentials))
}

fn assert_denied(response: &Response, status: u16, message: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.header("x-ca-error-code"), Some("A403AC"));
    assert_eq!(response.json()["message"], message, "{}", response.text());
}

#[test]
fn the_verified_user_reaches_their_own_orders_and_nobody_elses() {
    let gw = gateway();
    let alice = basic("alice:alice-pw");
    let own = gw.send(
        "GET",
        "/users/alice/orders",
        &[("authorization", &alice)],
        None,
    );
    assert_eq!(own.status, 200, "{}", own.text());
    assert_eq!(gw.upstream.request_count(), 1);

    let other = gw.send(
        "GET",
        "/users/bob/orders",
        &[("authorization", &alice)],
        None,
    );
    assert_denied(&other, 403, "Only your own orders");
    // A client cannot claim to be a user: identity comes from sign-auth only.
    let claimed = gw.send(
        "GET",
        "/users/bob/orders",
        &[("x-gw-user", "bob"), ("gw_user", "bob")],
        None,
    );
    assert_denied(&claimed, 403, "Only your own orders");
    assert_eq!(
        gw.upstream.request_count(),
        1,
        "refused requests reach no one"
    );

    // Support staff of the app may read anyone's orders; the header alone
    // (without the app) may not.
    let support = gw.send(
        "GET",
        "/users/bob/orders",
        &[("authorization", &alice), ("x-user-type", "support")],
        None,
    );
    assert_eq!(support.status, 200, "{}", support.text());
    let anonymous_support = gw.send(
        "GET",
        "/users/bob/orders",
        &[("x-user-type", "support")],
        None,
    );
    assert_denied(&anonymous_support, 403, "Only your own orders");

    let delete_on_test = gw.send(
        "DELETE",
        "/users/alice/orders",
        &[("authorization", &alice), ("x-ca-stage", "TEST")],
        None,
    );
    assert_denied(&delete_on_test, 405, "No deletes on TEST");
    assert_eq!(gw.upstream.request_count(), 2);
    assert_eq!(gw.stat("allowed"), 2);
    assert_eq!(gw.stat("denied.A403AC"), 4);
}

#[test]
fn body_fields_decide_and_the_upstream_gets_the_body_unchanged() {
    let gw = gateway();
    let json_body = r#"{"range": {"days": 30}, "name": "q3"}"#;
    let ok = gw.send(
        "POST",
        "/reports",
        &[("content-type", "application/json")],
        Some(json_body),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    let seen = gw.upstream.requests();
    assert_eq!(String::from_utf8_lossy(&seen[0].body), json_body);

    let long = gw.send(
        "POST",
        "/reports",
        &[("content-type", "application/json")],
        Some(r#"{"range": {"days": 90}}"#),
    );
    assert_denied(&long, 400, "A report covers at most 31 days");
    let form = gw.send(
        "POST",
        "/reports",
        &[("content-type", "application/x-www-form-urlencoded")],
        Some("days=7&name=q3"),
    );
    assert_eq!(form.status, 200, "{}", form.text());
    // Not a body checks read, or no body at all: the fields are null.
    for (content_type, body) in [("text/plain", Some("days=7")), ("application/json", None)] {
        let response = gw.send("POST", "/reports", &[("content-type", content_type)], body);
        assert_denied(&response, 400, "A report covers at most 31 days");
    }
    let huge = format!(
        r#"{{"range": {{"days": 1}}, "pad": "{}"}}"#,
        "x".repeat(4096)
    );
    let too_large = gw.send(
        "POST",
        "/reports",
        &[("content-type", "application/json")],
        Some(&huge),
    );
    assert_eq!(too_large.status, 413, "{}", too_large.text());
    assert_eq!(too_large.header("x-ca-error-code"), Some("A413AC"));
    assert_eq!(gw.upstream.request_count(), 2);
}
