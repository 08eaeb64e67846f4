//! sign-auth in a real Envoy: signed requests from the client side of the
//! scheme, checked against what the echo upstream received.

use integration_tests::echo::EchoServer;
use integration_tests::envoy::{gateway_config, Envoy, WasmFilter};
use integration_tests::http::{self, Response};
use integration_tests::signing::{now_ms, pairs, signed_headers};
use serde_json::{json, Value};
use sign_auth::signature::content_md5;

fn config() -> Value {
    json!({
        "apps": [
            {"key": "203751", "secrets": ["old-secret", "new-secret"], "name": "mobile"},
            {"key": "203752", "secrets": ["web-secret"], "name": "web"}
        ],
        "rules": [
            {"name": "public", "match": {"path": {"prefix": "/public"}}, "anonymous": true},
            {"name": "orders", "match": {"path": {"template": "/orders/{id}"}}, "apps": ["203751"]}
        ],
        "max_body_bytes": 1024
    })
}

struct Gateway {
    envoy: Envoy,
    upstream: EchoServer,
}

fn gateway_with(config: Value, concurrency: u32) -> Gateway {
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let envoy = Envoy::start_with(
        &gateway_config(
            &[WasmFilter::json("sign_auth", &config)],
            &[upstream.port()],
        ),
        concurrency,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    Gateway { envoy, upstream }
}

fn gateway() -> Gateway {
    gateway_with(config(), 1)
}

/// A request signed the way an Alibaba SDK signs it.
struct Call {
    key: &'static str,
    secret: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    form: bool,
}

fn call(method: &'static str, path: &str) -> Call {
    Call {
        key: "203751",
        secret: "new-secret",
        method,
        path: path.to_string(),
        // The HTTP client would add `Accept: */*` on its own; sign what is sent.
        headers: vec![("accept".to_string(), "application/json".to_string())],
        body: Vec::new(),
        form: false,
    }
}

impl Call {
    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn form(mut self, body: &str) -> Self {
        self.form = true;
        self.body = body.as_bytes().to_vec();
        self.header(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )
    }

    /// All headers to send, signature included.
    fn signed_headers(&self) -> Vec<(String, String)> {
        let form = self
            .form
            .then(|| String::from_utf8_lossy(&self.body).into_owned());
        signed_headers(
            self.key,
            self.secret,
            self.method,
            &self.path,
            &self.headers,
            form.as_deref(),
        )
    }
}

fn send(
    gw: &Gateway,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Response {
    let body = (!body.is_empty() || method == "POST").then_some(body);
    http::send(
        &http::agent(),
        method,
        &gw.envoy.url(path),
        &pairs(headers),
        body,
    )
    .expect("response")
}

fn send_call(gw: &Gateway, call: &Call) -> Response {
    send(
        gw,
        call.method,
        &call.path,
        &call.signed_headers(),
        &call.body,
    )
}

/// (what is tampered with, method sent, headers sent, body sent, expected code)
type TamperCase<'a> = (&'a str, &'a str, Vec<(String, String)>, &'a [u8], &'a str);

#[test]
fn a_signed_request_reaches_the_upstream_with_the_verified_identity() {
    let gw = gateway();
    let response = send_call(&gw, &call("GET", "/orders/7?b=2&a=%E5%8C%97"));
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = response.json();
    assert_eq!(seen["path"], "/orders/7");
    assert_eq!(seen["headers"]["x-gw-app-key"], "203751");
    assert_eq!(seen["headers"]["x-gw-app-name"], "mobile");
    assert_eq!(seen["headers"]["x-gw-api"], "orders");
    assert_eq!(seen["headers"]["x-ca-key"], "203751");
    assert!(
        seen["headers"].get("x-ca-signature").is_none(),
        "signature headers are stripped"
    );
    assert_eq!(gw.envoy.stat("wasmcustom.gw.sign_auth.allowed"), 1);
}

#[test]
fn each_kind_of_tampering_is_rejected_and_never_reaches_the_upstream() {
    let gw = gateway();
    let original = call("POST", "/orders/7?a=1").form("qty=2&item=book");
    let headers = original.signed_headers();
    let replace = |name: &str, value: &str| {
        let mut h: Vec<(String, String)> =
            headers.iter().filter(|(k, _)| k != name).cloned().collect();
        h.push((name.to_string(), value.to_string()));
        h
    };
    let cases: Vec<TamperCase> = vec![
        (
            "method",
            "PUT",
            headers.clone(),
            b"qty=2&item=book",
            "A400IS",
        ),
        (
            "path",
            "POST",
            headers.clone(),
            b"qty=2&item=book",
            "A400IS",
        ),
        (
            "query",
            "POST",
            headers.clone(),
            b"qty=2&item=book",
            "A400IS",
        ),
        (
            "form field",
            "POST",
            headers.clone(),
            b"qty=200&item=book",
            "A400IS",
        ),
        (
            "timestamp",
            "POST",
            replace("x-ca-timestamp", &(now_ms() + 1).to_string()),
            b"qty=2&item=book",
            "A400IS",
        ),
        (
            "old timestamp",
            "POST",
            replace("x-ca-timestamp", &(now_ms() - 3_600_000).to_string()),
            b"qty=2&item=book",
            "A400IT",
        ),
    ];
    for (what, method, headers, body, code) in cases {
        let path = match what {
            "path" => "/orders/8?a=1",
            "query" => "/orders/7?a=2",
            _ => "/orders/7?a=1",
        };
        let response = send(&gw, method, path, &headers, body);
        assert_eq!(
            response.header("x-ca-error-code"),
            Some(code),
            "{what}: {}",
            response.text()
        );
    }
    assert_eq!(gw.upstream.request_count(), 0);
}

#[test]
fn a_bad_signature_reports_the_server_string_to_sign() {
    let gw = gateway();
    let mut headers = call("GET", "/orders/1?x=1").signed_headers();
    headers.retain(|(k, _)| k != "x-ca-signature");
    headers.push(("x-ca-signature".into(), "AAAA".into()));
    let response = send(&gw, "GET", "/orders/1?x=1", &headers, b"");
    response.assert_error(400, "A400IS");
    let message = response.header("x-ca-error-message").unwrap_or_default();
    assert!(
        message.starts_with("Invalid Signature, Server StringToSign:`GET#"),
        "{message}"
    );
    assert!(message.ends_with("#/orders/1?x=1`"), "{message}");
}

#[test]
fn a_body_that_does_not_match_content_md5_is_rejected() {
    let gw = gateway();
    let body = br#"{"qty":2}"#;
    let call = call("POST", "/orders/7")
        .header("content-type", "application/json")
        .header("content-md5", &content_md5(body));
    let headers = call.signed_headers();
    assert_eq!(send(&gw, "POST", "/orders/7", &headers, body).status, 200);
    let tampered = send(
        &gw,
        "POST",
        "/orders/7",
        &call.signed_headers(),
        br#"{"qty":9}"#,
    );
    tampered.assert_error(400, "A400IM");
    assert_eq!(gw.upstream.request_count(), 1);
}

#[test]
fn a_replayed_request_is_rejected() {
    let gw = gateway();
    let headers = call("GET", "/orders/7").signed_headers();
    assert_eq!(send(&gw, "GET", "/orders/7", &headers, b"").status, 200);
    send(&gw, "GET", "/orders/7", &headers, b"").assert_error(400, "A400IN");
    assert_eq!(gw.upstream.request_count(), 1);
}

#[test]
fn a_concurrent_burst_of_one_signed_request_is_accepted_exactly_once() {
    let gw = gateway_with(config(), 2);
    let headers = call("GET", "/orders/7").signed_headers();
    let url = gw.envoy.url("/orders/7");
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..24)
            .map(|_| {
                let (headers, url) = (&headers, &url);
                scope.spawn(move || {
                    http::send(&http::agent(), "GET", url, &pairs(headers), None)
                        .map(|r| r.status)
                        .unwrap_or(0)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        23,
        "{statuses:?}"
    );
    assert_eq!(gw.upstream.request_count(), 1);
}

#[test]
fn both_secrets_work_during_rotation() {
    let gw = gateway();
    let mut old = call("GET", "/orders/7");
    old.secret = "old-secret";
    assert_eq!(send_call(&gw, &old).status, 200);
    let mut retired = call("GET", "/orders/7");
    retired.secret = "retired";
    send_call(&gw, &retired).assert_error(400, "A400IS");
}

#[test]
fn an_app_not_authorized_for_the_api_gets_403() {
    let gw = gateway();
    let mut web = call("GET", "/orders/7");
    web.key = "203752";
    web.secret = "web-secret";
    send_call(&gw, &web).assert_error(403, "A403UA");
    web.path = "/profile".into();
    assert_eq!(send_call(&gw, &web).status, 200);
    assert_eq!(gw.upstream.request_count(), 1);
}

#[test]
fn unsigned_requests_are_refused_except_on_anonymous_apis() {
    let gw = gateway();
    send(&gw, "GET", "/orders/7", &[], b"").assert_error(401, "A401MH");
    assert_eq!(send(&gw, "GET", "/public/info", &[], b"").status, 200);
}

#[test]
fn spoofed_identity_headers_never_reach_the_upstream() {
    let gw = gateway();
    let spoof = [
        ("x-gw-app-key".to_string(), "203751".to_string()),
        ("x-gw-api".to_string(), "orders".to_string()),
    ];
    let response = send(&gw, "GET", "/public/info", &spoof, b"");
    assert_eq!(response.status, 200);
    let seen = response.json();
    assert!(seen["headers"].get("x-gw-app-key").is_none(), "{seen}");
    assert!(seen["headers"].get("x-gw-api").is_none(), "{seen}");
    let mut signed = call("GET", "/orders/7")
        .header("x-gw-app-key", "someone-else")
        .signed_headers();
    signed.push(("x-gw-app-name".into(), "admin".into()));
    let seen = send(&gw, "GET", "/orders/7", &signed, b"").json();
    assert_eq!(seen["headers"]["x-gw-app-key"], "203751");
    assert_eq!(seen["headers"]["x-gw-app-name"], "mobile");
}

#[test]
fn a_body_over_the_limit_gets_413() {
    let gw = gateway();
    let big = "x=".to_string() + &"a".repeat(2000);
    let response = send_call(&gw, &call("POST", "/orders/7").form(&big));
    response.assert_error(413, "A413BL");
    assert_eq!(gw.upstream.request_count(), 0);
}

#[test]
fn a_malformed_config_is_refused_by_envoy_with_the_field_named() {
    let log = Envoy::expect_refused(&gateway_config(
        &[WasmFilter::new(
            "sign_auth",
            r#"{"apps":[{"key":"a","secrets":["s"]}],"rules":[{"apps":["b"]}]}"#,
        )],
        &[1],
    ));
    assert!(
        log.contains("sign_auth: invalid configuration: rules[0].apps[0]: unknown app key `b`"),
        "{log}"
    );
}

#[test]
fn the_backend_can_verify_that_a_request_came_through_the_gateway() {
    let mut config = config();
    config["backend_signature"] = json!({
        "keys": [{"id": "2026-11", "secret": "backend-new"}, {"id": "2026-10", "secret": "backend-old"}]
    });
    let gw = gateway_with(config, 1);
    let forged = [("x-gw-signature".to_string(), "forged".to_string())];
    assert_eq!(send(&gw, "GET", "/public/x", &forged, b"").status, 200);
    assert_eq!(
        send_call(&gw, &call("GET", "/orders/7?q=%E5%8C%97&a=1")).status,
        200
    );

    let backend_keys = [
        sign_auth::backend::BackendKey {
            id: "2026-11".into(),
            secret: "backend-new".into(),
        },
        sign_auth::backend::BackendKey {
            id: "2026-10".into(),
            secret: "backend-old".into(),
        },
    ];
    let received = gw.upstream.requests();
    assert_eq!(received.len(), 2);
    for request in &received {
        let header = |name: &str| request.header(name).map(str::to_string);
        let verified = sign_auth::backend::verify(
            &backend_keys,
            &request.method,
            &request.uri,
            header,
            now_ms(),
            60_000,
        );
        assert_eq!(verified, Ok("2026-11".to_string()), "{request:?}");
    }
    assert_eq!(
        received[1].header("x-gw-signed-headers"),
        Some("x-gw-app-key,x-gw-app-name,x-gw-api,x-gw-user")
    );
    // A backend that only knows the retired key refuses the new one.
    let old_only = &backend_keys[1..];
    let header = |name: &str| received[1].header(name).map(str::to_string);
    assert!(sign_auth::backend::verify(
        old_only,
        "GET",
        &received[1].uri,
        header,
        now_ms(),
        60_000
    )
    .is_err());
    // Any change on the way fails verification.
    let header = |name: &str| received[1].header(name).map(str::to_string);
    assert!(sign_auth::backend::verify(
        &backend_keys,
        "GET",
        "/orders/8?q=%E5%8C%97&a=1",
        header,
        now_ms(),
        60_000
    )
    .is_err());
}

#[test]
fn hmac_sha1_and_extra_signed_headers_verify_and_a_changed_signed_header_does_not() {
    use sign_auth::client::{sign_request, ClientRequest, Credentials};
    use sign_auth::signature::SignatureMethod;
    let gw = gateway();
    let mut headers = vec![
        ("accept".to_string(), "application/json".to_string()),
        ("x-tenant".to_string(), "acme".to_string()),
    ];
    let signed = sign_request(
        &Credentials {
            key: "203751".into(),
            secret: "new-secret".into(),
            method: SignatureMethod::HmacSha1,
        },
        &ClientRequest {
            method: "GET".into(),
            path_and_query: "/orders/7".into(),
            headers: headers.clone(),
            signed_extra: vec!["X-Tenant".into()],
            form_body: None,
        },
        now_ms(),
        "sha1-nonce",
    )
    .expect("sign");
    headers.extend(signed.headers);
    assert!(signed.string_to_sign.contains("\nx-tenant:acme\n"));
    let tampered: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            let v = if k == "x-tenant" {
                "evil".to_string()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect();
    send(&gw, "GET", "/orders/7", &tampered, b"").assert_error(400, "A400IS");
    assert_eq!(send(&gw, "GET", "/orders/7", &headers, b"").status, 200);
    assert_eq!(gw.upstream.request_count(), 1);
}
