//! sign-auth's other ways in, in a real Envoy: requests signed by Huawei
//! Cloud's own SDK (SDK-HMAC-SHA256), AppCodes in Alibaba's and Huawei's
//! headers, Basic credentials; checked against what the echo upstream
//! received, with per-app quotas counting the app whatever the mode.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use integration_tests::echo::EchoServer;
use integration_tests::envoy::{gateway_config, Envoy, WasmFilter};
use integration_tests::http::{self, Response};
use integration_tests::signing::{huawei_sdk_signed, pairs, HuaweiSdkRequest, HuaweiSigned};
use serde_json::{json, Value};

fn config() -> Value {
    json!({
        "apps": [
            {"key": "203751", "name": "mobile", "secrets": ["ali-secret"],
             "huawei": [{"key": "hw-mobile", "secrets": ["hw-new", "hw-old"]}],
             "appcodes": ["code-mobile"],
             "basic": [{"username": "alice", "password":
                 "sha256:cefd4bcd86ca3d6d9d1064593870b4cd4fdb3fef0136b1c43684cb7f58a29036"}]},
            {"key": "203752", "name": "web",
             "huawei": [{"key": "hw-web", "secrets": ["hw-web-secret"]}],
             "appcodes": ["code-web"]}
        ],
        "modes": ["app", "huawei_app", "appcode", "basic"],
        "rules": [
            {"name": "orders", "match": {"path": {"prefix": "/orders"}}, "apps": ["203751"]},
            {"name": "upload", "match": {"path": {"prefix": "/upload"}},
             "modes": ["huawei_app"], "unsigned_payload": true},
            {"name": "query", "match": {"path": {"prefix": "/q"}},
             "modes": ["appcode"], "appcode_query": "AppCode"},
            {"name": "secure", "match": {"path": {"prefix": "/secure"}},
             "modes": ["appcode"], "require_tls": true}
        ],
        "max_body_bytes": 4096
    })
}

struct Gateway {
    envoy: Envoy,
    upstream: EchoServer,
}

fn gateway_with(filters: &[WasmFilter]) -> Gateway {
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let envoy = Envoy::start_with(&gateway_config(filters, &[upstream.port()]), 1)
        .unwrap_or_else(|e| panic!("{e}"));
    Gateway { envoy, upstream }
}

fn gateway() -> Gateway {
    gateway_with(&[WasmFilter::json("sign_auth", &config())])
}

impl Gateway {
    fn host(&self) -> String {
        let url = self.envoy.url("/");
        url.trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    }

    fn send(&self, method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let body = (!body.is_empty() || method != "GET").then_some(body);
        http::send(&http::agent(), method, &self.envoy.url(uri), headers, body).expect("response")
    }

    /// Signs with Huawei's SDK and sends what it signed.
    fn huawei(
        &self,
        key: &str,
        secret: &str,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: &str,
    ) -> Response {
        let signed = self.sign_huawei(key, secret, method, path, query, body);
        self.send_signed(method, &signed, body)
    }

    fn sign_huawei(
        &self,
        key: &str,
        secret: &str,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: &str,
    ) -> HuaweiSigned {
        huawei_sdk_signed(&HuaweiSdkRequest {
            key,
            secret,
            method,
            host: &self.host(),
            path,
            query,
            headers: &[("Content-Type", "application/json")],
            body,
        })
    }

    fn send_signed(&self, method: &str, signed: &HuaweiSigned, body: &str) -> Response {
        // The HTTP client sends the same `Host` itself.
        let headers: Vec<(String, String)> = signed
            .headers
            .iter()
            .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
            .cloned()
            .collect();
        self.send(method, &signed.uri, &pairs(&headers), body.as_bytes())
    }

    fn stat(&self, name: &str) -> u64 {
        self.envoy.stat(&format!("wasmcustom.gw.sign_auth.{name}"))
    }
}

fn basic(credentials: &str) -> String {
    format!("Basic {}", BASE64.encode(credentials))
}

#[test]
fn requests_signed_by_huaweis_sdk_reach_the_upstream_as_their_app() {
    let gw = gateway();
    let response = gw.huawei(
        "hw-mobile",
        "hw-new",
        "GET",
        "/orders/7",
        &[("b", "2"), ("a", "x y"), ("a", "1")],
        "",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = response.json();
    assert_eq!(seen["path"], "/orders/7");
    assert_eq!(seen["query"], "a=1&a=x%20y&b=2");
    assert_eq!(seen["headers"]["x-gw-app-key"], "203751");
    assert_eq!(seen["headers"]["x-gw-api"], "orders");
    assert!(seen["headers"].get("authorization").is_none());
    // A JSON body is signed by its SHA-256, and the old secret still signs.
    let body = r#"{"item":"book","qty":2}"#;
    let response = gw.huawei("hw-mobile", "hw-old", "POST", "/orders", &[], body);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["body"], body);
    assert_eq!(gw.stat("allowed"), 2);
}

#[test]
fn a_huawei_signed_request_changed_on_the_way_is_refused_before_the_upstream() {
    let gw = gateway();
    let body = r#"{"qty":2}"#;
    let signed = gw.sign_huawei(
        "hw-mobile",
        "hw-new",
        "POST",
        "/orders/7",
        &[("a", "1")],
        body,
    );
    let changed_body = gw.send_signed("POST", &signed, r#"{"qty":9}"#);
    changed_body.assert_error(400, "A400IS");
    assert!(changed_body
        .header("x-ca-error-message")
        .unwrap_or_default()
        .starts_with("Invalid Signature, Server CanonicalRequest:`POST|/orders/7/|a=1|"));
    let moved = HuaweiSigned {
        uri: "/orders/8?a=1".into(),
        ..signed.clone()
    };
    gw.send_signed("POST", &moved, body)
        .assert_error(400, "A400IS");
    let wrong_secret = gw.huawei("hw-mobile", "guess", "GET", "/orders/7", &[], "");
    wrong_secret.assert_error(400, "A400IS");
    let unknown = gw.huawei("hw-nobody", "x", "GET", "/orders/7", &[], "");
    unknown.assert_error(401, "A401AK");
    // Another app, well signed, is not authorized for this API.
    let web = gw.huawei("hw-web", "hw-web-secret", "GET", "/orders/7", &[], "");
    web.assert_error(403, "A403UA");
    assert_eq!(gw.upstream.request_count(), 0);
}

#[test]
fn huaweis_sdk_signs_a_non_json_body_unsigned_and_only_apis_that_allow_it_take_it() {
    let gw = gateway();
    let sign_text = |path: &str| {
        huawei_sdk_signed(&HuaweiSdkRequest {
            key: "hw-mobile",
            secret: "hw-new",
            method: "PUT",
            host: &gw.host(),
            path,
            headers: &[("Content-Type", "text/plain")],
            body: "plain text",
            ..Default::default()
        })
    };
    let signed = sign_text("/upload/1");
    assert!(signed
        .headers
        .iter()
        .any(|(k, v)| k == "X-Sdk-Content-Sha256" && v == "UNSIGNED-PAYLOAD"));
    let response = gw.send_signed("PUT", &signed, "plain text");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["body"], "plain text");
    gw.send_signed("PUT", &sign_text("/orders/1"), "plain text")
        .assert_error(400, "A400UP");
}

#[test]
fn appcodes_in_alibabas_and_huaweis_forms_authenticate_and_are_not_forwarded() {
    let gw = gateway();
    for (uri, headers) in [
        ("/orders/1", vec![("authorization", "APPCODE code-mobile")]),
        ("/orders/1", vec![("x-apig-appcode", "code-mobile")]),
        ("/q/1?AppCode=code-mobile&page=2", vec![]),
    ] {
        let response = gw.send("GET", uri, &headers, b"");
        assert_eq!(response.status, 200, "{uri}: {}", response.text());
        let seen = response.json();
        assert_eq!(seen["headers"]["x-gw-app-key"], "203751", "{uri}");
        assert!(seen["headers"].get("authorization").is_none());
        assert!(seen["headers"].get("x-apig-appcode").is_none());
        assert!(!seen["query"]
            .as_str()
            .unwrap_or_default()
            .contains("AppCode"));
    }
    assert_eq!(
        gw.send("GET", "/q/1?AppCode=code-mobile&page=2", &[], b"")
            .json()["query"],
        "page=2"
    );
    gw.send(
        "GET",
        "/orders/1",
        &[("x-apig-appcode", "code-nobody")],
        b"",
    )
    .assert_error(401, "A401AC");
    // Over plain HTTP, an API that requires TLS refuses even a good code.
    gw.send("GET", "/secure", &[("x-apig-appcode", "code-web")], b"")
        .assert_error(403, "A403TL");
    assert_eq!(gw.stat("allowed"), 4);
}

#[test]
fn basic_credentials_authenticate_a_user_of_an_app_and_bad_ones_are_challenged() {
    let gw = gateway();
    let response = gw.send(
        "GET",
        "/orders/1",
        &[
            ("authorization", &basic("alice:alice-pw")),
            ("x-gw-user", "forged"),
        ],
        b"",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = response.json();
    assert_eq!(seen["headers"]["x-gw-app-key"], "203751");
    assert_eq!(seen["headers"]["x-gw-user"], "alice");
    assert!(seen["headers"].get("authorization").is_none());
    for bad in [
        basic("alice:wrong"),
        basic("nobody:alice-pw"),
        basic("no-colon"),
        "Basic !!!not-base64".to_string(),
        format!("Basic {}", BASE64.encode(b"\xff\xfe:\x80")),
        format!("Basic {}", "QUFB".repeat(2_000)),
    ] {
        let response = gw.send("GET", "/orders/1", &[("authorization", &bad)], b"");
        response.assert_error(401, "A401BC");
        assert_eq!(
            response.header("www-authenticate"),
            Some("Basic realm=\"gateway\", charset=\"UTF-8\"")
        );
    }
    let bare = gw.send("GET", "/orders/1", &[], b"");
    bare.assert_error(401, "A401MC");
    assert!(bare.header("www-authenticate").is_some());
    assert_eq!(gw.upstream.request_count(), 1);
}

#[test]
fn hostile_huawei_authorizations_get_a_clean_400() {
    let gw = gateway();
    let many = vec!["x-a"; 1000].join(";");
    for authorization in [
        format!(
            "SDK-HMAC-SHA256 Access=hw-mobile, SignedHeaders={many}, Signature={}",
            "0".repeat(64)
        ),
        "SDK-HMAC-SHA256 Access=hw-mobile, SignedHeaders=host, Signature=zz".to_string(),
        format!("SDK-HMAC-SHA256 {}", ",".repeat(20_000)),
        "SDK-HMAC-SHA256 Access=hw-mobile, SignedHeaders=Host;;X, Signature=00".to_string(),
    ] {
        let response = gw.send(
            "GET",
            "/orders/1",
            &[
                ("authorization", &authorization),
                ("x-sdk-date", "20260101T000000Z"),
            ],
            b"",
        );
        response.assert_error(400, "A400IH");
    }
    let bad_date = gw.send(
        "GET",
        "/orders/1",
        &[
            (
                "authorization",
                &format!(
                    "SDK-HMAC-SHA256 Access=hw-mobile, SignedHeaders=host, Signature={}",
                    "0".repeat(64)
                ),
            ),
            ("x-sdk-date", "99999999T999999Z"),
        ],
        b"",
    );
    bad_date.assert_error(400, "A400IH");
    assert_eq!(gw.upstream.request_count(), 0);
}

#[test]
fn a_per_app_quota_counts_the_app_whatever_credential_it_came_with() {
    let gw = gateway_with(&[
        WasmFilter::json("sign_auth", &config()),
        WasmFilter::json(
            "throttling",
            &json!({"rules": [{"name": "per-app", "key": "app", "limit": 3, "window": "1h"}]}),
        ),
    ]);
    let alice = basic("alice:alice-pw");
    let statuses: Vec<u16> = [
        gw.send(
            "GET",
            "/orders/1",
            &[("x-apig-appcode", "code-mobile")],
            b"",
        )
        .status,
        gw.send("GET", "/orders/1", &[("authorization", &alice)], b"")
            .status,
        gw.huawei("hw-mobile", "hw-new", "GET", "/orders/1", &[], "")
            .status,
        gw.send(
            "GET",
            "/orders/1",
            &[("authorization", "APPCODE code-mobile")],
            b"",
        )
        .status,
    ]
    .to_vec();
    assert_eq!(statuses, [200, 200, 200, 429]);
    // Another app has its own count.
    let web = gw.send("GET", "/x", &[("x-apig-appcode", "code-web")], b"");
    assert_eq!(web.status, 200, "{}", web.text());
}

#[test]
fn a_backend_signature_in_huaweis_form_verifies_at_the_upstream() {
    use gateway_common::host::FakeHost;
    use gateway_common::store::MemoryStore;
    use sign_auth::policy::{SignAuth, SignAuthConfig, Step};
    let mut signing = config();
    signing["backend_signature"] =
        json!({"format": "huawei", "keys": [{"id": "gw-2026", "secret": "backend-secret"}]});
    let gw = gateway_with(&[WasmFilter::json("sign_auth", &signing)]);
    let response = gw.send(
        "GET",
        "/orders/1?b=2&a=x%20y",
        &[("x-apig-appcode", "code-mobile")],
        b"",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = response.json();
    let authorization = seen["headers"]["authorization"]
        .as_str()
        .unwrap_or_default();
    assert!(
        authorization.starts_with("SDK-HMAC-SHA256 Access=gw-2026, SignedHeaders=host;"),
        "{authorization}"
    );
    // The upstream checks it as sign-auth checks a Huawei client: what it
    // received, read by a sign-auth of its own that knows the gateway's key.
    let backend = SignAuth::compile(
        &serde_json::from_value::<SignAuthConfig>(json!({
            "apps": [{"key": "gateway", "huawei": [{"key": "gw-2026", "secrets": ["backend-secret"]}]}],
            "modes": ["huawei_app"], "rules": [{"unsigned_payload": true}]
        }))
        .expect("a backend configuration"),
    )
    .expect("compiled");
    let received = |path: &str| {
        let host = seen["header_list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|pair| Some((pair[0].as_str()?, pair[1].as_str()?)))
            .fold(
                FakeHost::new()
                    .with_header(":method", "GET")
                    .with_header(":path", path)
                    .with_header(
                        ":authority",
                        seen["headers"]["host"].as_str().unwrap_or_default(),
                    ),
                |host, (name, value)| host.with_header(name, value),
            );
        host.clock.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        host
    };
    let uri = seen["uri"].as_str().unwrap_or_default().to_string();
    let store = MemoryStore::new();
    assert!(matches!(
        backend.begin(&received(&uri), &store, true),
        Step::Pass(Some(v)) if v.identity.app_key == "gateway"
    ));
    assert!(!matches!(
        backend.begin(&received("/orders/2?b=2&a=x%20y"), &store, true),
        Step::Pass(_)
    ));
}
