//! The shipped configs in `envoy/`: every one passes `envoy --mode validate`,
//! and the demo gateway itself (TLS, balancing, health checks, the filter
//! chain) is started and exercised with ephemeral ports: `gateway.yaml`, the
//! chain of single filters, or in module mode `gateway-module.yaml`, the
//! same demo with every policy in the gateway module.

use integration_tests::clickhouse::ClickHouse;
use integration_tests::echo::{bearer_authorizer, EchoServer};
use integration_tests::envoy::{
    make_certs, module_mode, native_mode, shipped_config, start_yaml, validate, workspace_root,
    Envoy,
};
use integration_tests::http;
use integration_tests::process::free_port;
use integration_tests::redis::FleetStore;
use integration_tests::tokens::token_issuer;
use std::collections::HashMap;
use std::time::Duration;

/// Every `.yaml` in `envoy/` (Istio manifests live in a subfolder).
fn shipped_envoy_configs() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(workspace_root().join("envoy"))
        .expect("envoy/ folder")
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    names.sort();
    names
}

/// The demo: the chain of single filters, or in module mode the gateway
/// module (the same listeners, clusters and policies).
fn demo_file() -> &'static str {
    if native_mode() {
        "gateway-native.yaml"
    } else if module_mode() {
        "gateway-module.yaml"
    } else {
        "gateway.yaml"
    }
}

#[test]
fn every_shipped_envoy_config_validates() {
    let (certs, _) = make_certs();
    let names = shipped_envoy_configs();
    assert!(names.contains(&"gateway.yaml".to_string()));
    assert!(names.contains(&"gateway-module.yaml".to_string()));
    assert!(names.contains(&"gateway-native.yaml".to_string()));
    assert!(names.contains(&"ip-acl.yaml".to_string()));
    for name in names {
        let path = workspace_root().join("envoy").join(&name);
        let mut text = std::fs::read_to_string(&path).expect("read config");
        text = text.replace(".run/tls/", &format!("{}/", certs.path().display()));
        let (ok, output) = validate(&text, "yaml");
        assert!(ok, "envoy/{name} is refused:\n{output}");
        assert!(output.contains("OK"), "{output}");
    }
}

#[test]
fn a_broken_filter_config_in_the_gateway_fails_validation_with_the_reason() {
    let (certs, _) = make_certs();
    let text = shipped_config(
        demo_file(),
        &[
            (".run/tls/", format!("{}/", certs.path().display())),
            (
                r#""deny": ["203.0.113.0/24"]"#,
                r#""deny": ["203.0.113.0/99"]"#.to_string(),
            ),
        ],
    );
    let (ok, output) = validate(&text, "yaml");
    assert!(!ok, "a broken CIDR must be refused:\n{output}");
    assert!(
        output.contains("ip_acl: invalid configuration: deny[0]: `203.0.113.0/99`"),
        "{output}"
    );
}

struct Demo {
    envoy: Envoy,
    upstreams: [EchoServer; 2],
    /// ext-auth's authorizer, as `make run` starts it.
    authorizer: EchoServer,
    /// The token issuer, as `make run` starts it.
    issuer: EchoServer,
    cert: Vec<u8>,
    _certs: tempfile::TempDir,
    /// The demo's fleet store (Redis behind Webdis).
    store: std::rc::Rc<FleetStore>,
}

/// The demo; log-push's sink is a closed port (its records are dropped,
/// which never affects a request).
fn demo_gateway() -> Demo {
    let closed_port = free_port();
    demo_gateway_logging_to(closed_port)
}

/// The demo with log-push writing to the ClickHouse HTTP port given.
fn demo_gateway_logging_to(sink_port: u16) -> Demo {
    demo_from(demo_file(), sink_port)
}

/// `envoy/<file>`, one of the demo's two forms, started with test ports
/// and a fleet store of its own.
fn demo_from(file: &str, sink_port: u16) -> Demo {
    demo_with_store(file, sink_port, std::rc::Rc::new(FleetStore::start()))
}

/// The demo with `store` as its fleet store (instances of one fleet share it).
fn demo_with_store(file: &str, sink_port: u16, store: std::rc::Rc<FleetStore>) -> Demo {
    let upstreams = [
        EchoServer::start("backend-1").expect("echo"),
        EchoServer::start("backend-2").expect("echo"),
    ];
    let authorizer = EchoServer::start_scripted(
        "authorizer",
        bearer_authorizer(vec![("demo-token".into(), "demo-user".into())]),
    )
    .expect("authorizer");
    let issuer = EchoServer::start_scripted("issuer", token_issuer(DEMO_ISSUER.into()))
        .expect("token issuer");
    let (certs, cert) = make_certs();
    let text = shipped_config(
        file,
        &[
            ("port_value: 9901", "port_value: 0".into()),
            ("port_value: 8080", "port_value: 0".into()),
            ("port_value: 8443", "port_value: 0".into()),
            (
                "port_value: 18081",
                format!("port_value: {}", upstreams[0].port()),
            ),
            (
                "port_value: 18082",
                format!("port_value: {}", upstreams[1].port()),
            ),
            (
                "port_value: 18084",
                format!("port_value: {}", authorizer.port()),
            ),
            (
                "port_value: 18085",
                format!("port_value: {}", issuer.port()),
            ),
            (".run/tls/", format!("{}/", certs.path().display())),
            ("port_value: 18123", format!("port_value: {sink_port}")),
            (
                "port_value: 17379",
                format!("port_value: {}", store.webdis_port()),
            ),
            // The native module's own connection to the store's Redis.
            (
                "127.0.0.1:16379",
                format!("127.0.0.1:{}", store.redis_port()),
            ),
        ],
    );
    let envoy = start_yaml(&text, 2);
    let demo = Demo {
        envoy,
        upstreams,
        authorizer,
        issuer,
        cert,
        _certs: certs,
        store,
    };
    assert!(
        demo.envoy.wait_for(Duration::from_secs(10), |e| {
            e.stat("cluster.backend.membership_healthy") == 2
        }),
        "both upstreams should pass health checks"
    );
    // Workers pick up the healthy host set shortly after the stat changes.
    assert!(
        demo.envoy
            .wait_for(Duration::from_secs(5), |_| demo.spread(4).len() == 2),
        "both upstreams should receive traffic"
    );
    demo
}

impl Demo {
    fn http_url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}{path}",
            self.envoy.listener_port("http")
        )
    }

    fn https_url(&self, path: &str) -> String {
        format!(
            "https://localhost:{}{path}",
            self.envoy.listener_port("https")
        )
    }

    /// Which upstream answered each of `count` requests.
    fn spread(&self, count: usize) -> HashMap<String, usize> {
        let agent = http::agent();
        let mut seen = HashMap::new();
        for _ in 0..count {
            let response = http::send(&agent, "GET", &self.http_url("/api/spread"), &[], None)
                .expect("response");
            assert_eq!(response.status, 200, "{}", response.text());
            let upstream = response.json()["upstream"]
                .as_str()
                .unwrap_or("?")
                .to_string();
            *seen.entry(upstream).or_default() += 1;
        }
        seen
    }
}

#[test]
fn an_https_request_passes_the_filters_and_reaches_the_upstream() {
    let demo = demo_gateway();
    let before: usize = demo.upstreams.iter().map(EchoServer::request_count).sum();
    let agent = http::agent_trusting(&demo.cert);
    let response = http::send(&agent, "GET", &demo.https_url("/api/items?id=3"), &[], None)
        .expect("TLS response");
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = response.json();
    assert_eq!(seen["path"], "/api/items");
    assert_eq!(seen["query"], "id=3");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    // The demo's ip-acl trusts 127.0.0.1 as a proxy and denies 203.0.113.0/24.
    let denied = http::send(
        &agent,
        "GET",
        &demo.https_url("/api/items"),
        &[("x-forwarded-for", "203.0.113.7")],
        None,
    )
    .expect("TLS response");
    assert_eq!(denied.status, 403);
    assert_eq!(denied.header("x-ca-error-code"), Some("A403IP"));
    let total: usize = demo.upstreams.iter().map(EchoServer::request_count).sum();
    assert_eq!(
        total - before,
        1,
        "only the allowed request reaches an upstream"
    );
}

#[test]
fn the_demo_admin_rule_refuses_clients_outside_its_allow_list() {
    let demo = demo_gateway();
    let response = http::get(&demo.http_url("/admin/stats"), &[]).expect("response");
    assert_eq!(response.status, 403);
    let inside = http::get(
        &demo.http_url("/admin/stats"),
        &[("x-forwarded-for", "10.1.2.3")],
    )
    .expect("response");
    assert_eq!(inside.status, 200, "{}", inside.text());
}

/// Header values that are not UTF-8 reach the filters (HTTP/1 allows any
/// octet but NUL, CR and LF). The proxy-wasm SDK's header getters panic on
/// them, which would abort the VM; the filters read them as text with
/// replacement characters, so the request gets an answer and the gateway
/// keeps serving.
#[test]
fn header_values_that_are_not_utf8_get_an_answer_and_break_nothing() {
    let demo = demo_gateway();
    let port = demo.envoy.listener_port("http");
    let hostile: &[(&str, &[u8])] = &[
        // sign-auth reads the key; ip-acl and throttling the forwarded-for chain.
        (
            "/orders/42",
            b"X-Ca-Key: \xff\xfe203751\r\nX-Ca-Signature: \xc3\x28\r\n",
        ),
        ("/admin/stats", b"X-Forwarded-For: 10.1.2.3, \xff\r\n"),
        (
            "/limited",
            b"User-Agent: \xe2\x82\r\nX-Request-Id: \xff\r\n",
        ),
        ("/search?q=shoes", b"Content-Type: text/\xff\r\n"),
    ];
    for (path, headers) in hostile {
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: api.example.com\r\n").into_bytes();
        request.extend_from_slice(headers);
        request.extend_from_slice(b"Connection: close\r\n\r\n");
        let response = http::send_raw(port, &request).expect("an answer");
        assert!(
            (200..500).contains(&response.status),
            "{path}: {} {}",
            response.status,
            response.text()
        );
        if response.status >= 400 {
            let body = response.json();
            assert!(
                body["code"].is_string(),
                "{path}: shared error shape: {body}"
            );
        }
    }
    // Every worker's filters still answer as before.
    for _ in 0..8 {
        let admin = http::get(&demo.http_url("/admin/stats"), &[]).expect("response");
        assert_eq!(admin.status, 403, "{}", admin.text());
        let open = http::get(&demo.http_url("/api/hello"), &[]).expect("response");
        assert_eq!(open.status, 200, "{}", open.text());
    }
}

#[test]
fn requests_are_balanced_over_both_upstreams() {
    let demo = demo_gateway();
    let seen = demo.spread(20);
    assert_eq!(
        seen.get("backend-1").copied().unwrap_or(0) + seen.get("backend-2").copied().unwrap_or(0),
        20,
        "{seen:?}"
    );
    assert!(seen.get("backend-1").copied().unwrap_or(0) >= 5, "{seen:?}");
    assert!(seen.get("backend-2").copied().unwrap_or(0) >= 5, "{seen:?}");
}

#[test]
fn a_failed_upstream_is_taken_out_by_health_checking() {
    let demo = demo_gateway();
    demo.upstreams[1].set_healthy(false);
    assert!(
        demo.envoy.wait_for(Duration::from_secs(10), |e| {
            e.stat("cluster.backend.membership_healthy") == 1
        }),
        "the unhealthy upstream should be ejected"
    );
    // Workers pick up the new host set shortly after the stat changes.
    assert!(
        demo.envoy
            .wait_for(Duration::from_secs(5), |_| demo.spread(4).get("backend-1")
                == Some(&4)),
        "traffic should move to the healthy upstream"
    );
    let before = demo.upstreams[1].request_count();
    let seen = demo.spread(10);
    assert_eq!(seen.get("backend-1"), Some(&10), "{seen:?}");
    assert_eq!(demo.upstreams[1].request_count(), before);

    demo.upstreams[1].set_healthy(true);
    assert!(
        demo.envoy.wait_for(Duration::from_secs(10), |e| {
            e.stat("cluster.backend.membership_healthy") == 2
        }),
        "the recovered upstream should come back"
    );
}

#[test]
fn the_demo_orders_api_needs_a_signed_request() {
    use integration_tests::signing::{pairs, signed_headers};
    let demo = demo_gateway();
    let unsigned = http::get(&demo.http_url("/orders/42"), &[]).expect("response");
    assert_eq!(unsigned.status, 401, "{}", unsigned.text());
    let accept = [("accept".to_string(), "application/json".to_string())];
    let headers = signed_headers("203751", "demo-secret", "GET", "/orders/42", &accept, None);
    let response = http::get(&demo.http_url("/orders/42"), &pairs(&headers)).expect("response");
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = response.json();
    assert_eq!(seen["headers"]["x-gw-app-name"], "demo-app");
    assert_eq!(seen["headers"]["x-gw-signature-key-id"], "demo-2026");
}

#[test]
fn the_demo_partner_api_takes_every_credential_of_its_app() {
    use integration_tests::signing::{huawei_sdk_signed, pairs, HuaweiSdkRequest};
    let demo = demo_gateway();
    let host = demo.http_url("");
    let signed = huawei_sdk_signed(&HuaweiSdkRequest {
        key: "demo-hw-key",
        secret: "demo-hw-secret",
        method: "GET",
        host: host.trim_start_matches("http://"),
        path: "/partner/1",
        ..Default::default()
    });
    let headers: Vec<(String, String)> = signed
        .headers
        .into_iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
        .collect();
    let huawei = http::get(&demo.http_url(&signed.uri), &pairs(&headers)).expect("response");
    assert_eq!(huawei.status, 200, "{}", huawei.text());
    assert_eq!(huawei.json()["headers"]["x-gw-app-name"], "demo-app");
    let tls = http::agent_trusting(&demo.cert);
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "demo-user:demo-password"
        )
    );
    for header in [
        ("authorization", "APPCODE demo-appcode"),
        ("x-apig-appcode", "demo-appcode"),
        ("authorization", basic.as_str()),
    ] {
        let over_tls = http::send(&tls, "GET", &demo.https_url("/partner/1"), &[header], None)
            .expect("TLS response");
        assert_eq!(over_tls.status, 200, "{header:?}: {}", over_tls.text());
        let seen = over_tls.json();
        assert_eq!(seen["headers"]["x-gw-app-key"], "203751");
        assert!(seen["headers"].get("authorization").is_none());
        assert!(seen["headers"].get("x-apig-appcode").is_none());
        let plain = http::get(&demo.http_url("/partner/1"), &[header]).expect("response");
        assert_eq!(plain.status, 403, "{header:?}: {}", plain.text());
        assert_eq!(plain.header("x-ca-error-code"), Some("A403TL"));
    }
    let user = http::send(
        &tls,
        "GET",
        &demo.https_url("/partner/1"),
        &[("authorization", basic.as_str())],
        None,
    )
    .expect("TLS response");
    assert_eq!(user.json()["headers"]["x-gw-user"], "demo-user");
    // The demo's notes: access-control lets a user read their own only.
    let notes = |path: &str| {
        http::get(&demo.http_url(path), &[("authorization", basic.as_str())]).expect("response")
    };
    let own = notes("/users/demo-user/notes");
    assert_eq!(own.status, 200, "{}", own.text());
    let other = notes("/users/someone/notes");
    assert_eq!(other.status, 403, "{}", other.text());
    assert_eq!(other.header("x-ca-error-code"), Some("A403AC"));
    assert_eq!(other.json()["message"], "Only your own notes");
}

/// The `iss` of the demo issuer's tokens (`scripts/run-demo.sh`).
const DEMO_ISSUER: &str = "http://127.0.0.1:18085";

#[test]
fn the_demo_me_api_takes_a_fresh_token_of_the_demo_issuer_once() {
    let demo = demo_gateway();
    let token = || {
        http::get(
            &format!("http://127.0.0.1:{}/token", demo.issuer.port()),
            &[],
        )
        .expect("a token")
        .text()
    };
    let call = |token: &str| {
        http::get(
            &demo.http_url("/me"),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .expect("response")
    };
    // The keys are fetched from the issuer when the configuration loads.
    let first = token();
    assert!(
        demo.envoy
            .wait_for(Duration::from_secs(5), |_| call(&token()).status == 200),
        "{}",
        demo.envoy.log()
    );
    let response = call(&first);
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = response.json();
    assert_eq!(seen["headers"]["x-gw-app-name"], "demo-app");
    assert_eq!(seen["headers"]["x-user-sub"], "demo-user");
    // The same token again: its jti was used.
    let replayed = call(&first);
    assert_eq!(replayed.status, 400, "{}", replayed.text());
    assert_eq!(replayed.header("x-ca-error-code"), Some("A400IN"));
    let bare = http::get(&demo.http_url("/me"), &[]).expect("response");
    assert_eq!(bare.status, 401);
    assert_eq!(
        bare.header("www-authenticate"),
        Some("Bearer realm=\"gateway\"")
    );
}

#[test]
fn the_demo_account_api_asks_the_authorizer_once_per_caller() {
    let demo = demo_gateway();
    let get = |headers: &[(&str, &str)]| {
        http::get(&demo.http_url("/account"), headers).expect("response")
    };
    let anonymous = get(&[]);
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.header("x-ca-error-code"), Some("A401IS"));
    let token = ("authorization", "Bearer demo-token");
    for _ in 0..2 {
        let allowed = get(&[token, ("x-user-id", "mallory")]);
        assert_eq!(allowed.status, 200, "{}", allowed.text());
        assert_eq!(allowed.json()["headers"]["x-user-id"], "demo-user");
    }
    assert_eq!(
        demo.authorizer.request_count(),
        1,
        "the second call was cached"
    );
    let revoked = get(&[("authorization", "Bearer revoked")]);
    assert_eq!(revoked.status, 403);
    assert_eq!(revoked.text(), r#"{"error":"the token was revoked"}"#);
    // Other APIs are not the authorizer's.
    assert_eq!(
        http::get(&demo.http_url("/api/hello"), &[])
            .expect("response")
            .status,
        200
    );
    assert_eq!(demo.authorizer.request_count(), 2);
    assert_eq!(demo.envoy.stat("wasmcustom.gw.ext_auth.cache_hit"), 1);
}

#[test]
fn the_demo_answers_preflights_serves_a_mock_and_routes_stages() {
    use integration_tests::signing::{pairs, signed_headers};
    let demo = demo_gateway();
    let upstream_calls = || {
        demo.upstreams
            .iter()
            .map(EchoServer::request_count)
            .sum::<usize>()
    };
    let before = upstream_calls();
    let preflight = http::send(
        &http::agent(),
        "OPTIONS",
        &demo.http_url("/orders/42"),
        &[
            ("origin", "http://localhost:3000"),
            ("access-control-request-method", "GET"),
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
        Some("http://localhost:3000")
    );
    assert_eq!(
        upstream_calls(),
        before,
        "answered by the CORS filter, unsigned"
    );

    let mock = http::get(&demo.http_url("/mock/coupons"), &[]).expect("response");
    assert_eq!(mock.status, 200);
    assert_eq!(mock.json()["coupon"], "DEMO-10");
    let refused = http::get(
        &demo.http_url("/mock/coupons"),
        &[("x-forwarded-for", "203.0.113.7")],
    )
    .expect("response");
    assert_eq!(refused.status, 403, "ip-acl applies to the mock API");
    assert_eq!(upstream_calls(), before, "no backend behind the mock");

    let accept = ("accept".to_string(), "application/json".to_string());
    let staged = |stage: &str| {
        let headers = [
            accept.clone(),
            ("x-ca-stage".to_string(), stage.to_string()),
        ];
        let signed = signed_headers("203751", "demo-secret", "GET", "/orders/42", &headers, None);
        http::get(&demo.http_url("/orders/42"), &pairs(&signed)).expect("response")
    };
    for stage in ["TEST", "pre"] {
        let response = staged(stage);
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(
            response.json()["upstream"],
            "backend-2",
            "{stage}: the staging backend"
        );
    }
    assert_eq!(staged("RELEASE").status, 200);
    let unknown = staged("DEV");
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["code"], "S404ST");
}

#[test]
fn the_demo_search_api_validates_its_parameters() {
    let demo = demo_gateway();
    let invalid = http::get(&demo.http_url("/search?page=0"), &[]).expect("response");
    assert_eq!(invalid.status, 400, "{}", invalid.text());
    assert_eq!(
        invalid.json()["message"],
        "Invalid Parameter: q is required; page must be >= 1"
    );
    let valid = http::get(&demo.http_url("/search?q=shoes&debug=1"), &[]).expect("response");
    assert_eq!(valid.status, 200, "{}", valid.text());
    assert_eq!(valid.json()["query"], "q=shoes&page=1");
    // Free text, after validation: threat-protection's checks.
    let injected =
        http::get(&demo.http_url("/search?q=1%27%20OR%20%271%27%3D%271"), &[]).expect("response");
    assert_eq!(injected.status, 403, "{}", injected.text());
    assert_eq!(injected.header("x-ca-error-code"), Some("A403SQ"));
    let name = http::get(&demo.http_url("/search?q=O%27Brien"), &[]).expect("response");
    assert_eq!(name.status, 200, "{}", name.text());
    // A multipart form's fields too (README's `curl -F` line).
    let form = |value: &str| {
        let body = format!(
            "--demo\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n{value}\r\n--demo--\r\n"
        );
        let content_type = [("content-type", "multipart/form-data; boundary=demo")];
        http::post(
            &demo.http_url("/search?q=shoes"),
            &content_type,
            body.as_bytes(),
        )
        .expect("response")
    };
    let injected = form("1' OR '1'='1");
    assert_eq!(injected.status, 403, "{}", injected.text());
    assert_eq!(injected.header("x-ca-error-code"), Some("A403SQ"));
    assert_eq!(form("O'Brien's shoes").status, 200);
}

#[test]
fn the_demo_maps_requests_and_errors_and_serves_products_from_its_cache() {
    let demo = demo_gateway();
    let response = http::get(
        &demo.http_url("/v1/users/42?lang=zh"),
        &[("x-forwarded-for", "198.51.100.8")],
    )
    .expect("response");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("cache-control"),
        Some("private, max-age=60")
    );
    let seen = response.json();
    assert_eq!(seen["path"], "/internal/accounts/42/profile");
    let request_id = seen["headers"]["x-request-id"]
        .as_str()
        .expect("request id");
    assert_eq!(seen["query"], format!("trace={request_id}"));
    assert_eq!(seen["headers"]["x-lang"], "zh");
    assert_eq!(seen["headers"]["x-client-ip"], "198.51.100.8");

    // error-mapping: the legacy backend's 404 is the API's 410, in the
    // shared error shape; its 503 a 502; a success passes untouched.
    let legacy = |status: &str| {
        http::get(
            &demo.http_url("/legacy/orders/42"),
            &[("x-echo-status", status)],
        )
        .expect("response")
    };
    let gone = legacy("404");
    assert_eq!(gone.status, 410, "{}", gone.text());
    assert_eq!(gone.header("x-ca-error-code"), Some("B410LG"));
    assert_eq!(gone.json()["message"], "Order 42 is gone");
    let down = legacy("503");
    assert_eq!(down.status, 502);
    assert_eq!(down.json()["code"], "B502EM");
    let fine = legacy("200");
    assert_eq!(fine.status, 200);
    assert_eq!(fine.json()["path"], "/legacy/orders/42");

    // response-cache: a product's second call is answered without a backend.
    let received = || -> usize { demo.upstreams.iter().map(EchoServer::request_count).sum() };
    let first = http::get(&demo.http_url("/products/7"), &[]).expect("response");
    let before = received();
    let second = http::get(&demo.http_url("/products/7"), &[]).expect("response");
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-ca-caching"), Some("true"));
    assert_eq!(second.body, first.body);
    assert_eq!(received(), before, "the hit reached no backend");
}

#[test]
fn the_demo_records_every_call_in_clickhouse() {
    let clickhouse = ClickHouse::start();
    clickhouse.create_log_tables(&["header_x_tenant"]);
    let demo = demo_gateway_logging_to(clickhouse.http_port());
    let ok =
        http::get(&demo.http_url("/search?q=shoes"), &[("x-tenant", "acme")]).expect("response");
    assert_eq!(ok.status, 200);
    let denied = http::get(&demo.http_url("/orders/42"), &[]).expect("response");
    assert_eq!(denied.status, 401);
    let mapped = http::get(&demo.http_url("/v1/users/alice@example.com"), &[]).expect("response");
    assert_eq!(
        mapped.json()["path"],
        "/internal/accounts/alice@example.com/profile"
    );
    let injected = http::get(
        &demo.http_url("/search?q=1%27%20OR%20%271%27%3D%271"),
        &[("x-tenant", "evil")],
    )
    .expect("response");
    assert_eq!(injected.status, 403);
    let rows = || {
        clickhouse.query(
            "SELECT api, method, path, status, error_code, header_x_tenant, threat, threat_place, \
             threat_fingerprint != '' FROM gateway_calls WHERE api != 'api' \
             ORDER BY api, status FORMAT TSV",
        )
    };
    assert!(
        demo.envoy
            .wait_for(Duration::from_secs(10), |_| rows().lines().count() == 4),
        "rows: {}\n{}",
        rows(),
        demo.envoy.log()
    );
    // The client's request line, even where request-mapping rewrote it,
    // with the e-mail address masked (a keyed digest) before it left Envoy.
    let rows = rows();
    let lines: Vec<&str> = rows.lines().collect();
    assert_eq!(lines[0], "orders\tGET\t/orders/42\t401\tA401MH\t\t\t\t0");
    let profile: Vec<&str> = lines[1].split('\t').collect();
    assert_eq!(profile[0], "public-profile");
    let masked = profile[2].strip_prefix("/v1/users/~").unwrap_or_default();
    assert!(
        masked.len() == 16 && masked.bytes().all(|b| b.is_ascii_hexdigit()),
        "{rows}"
    );
    assert_eq!(lines[2], "search\tGET\t/search\t200\t\tacme\t\t\t0");
    // What threat-protection found, never the value.
    assert_eq!(
        lines[3],
        "search\tGET\t/search\t403\tA403SQ\tevil\tsql\tquery\t1"
    );
    assert!(!rows.contains("OR"), "{rows}");
}

#[test]
fn the_demo_flaky_api_trips_its_circuit_breaker_on_both_instances() {
    let demo = demo_gateway();
    let second = demo_with_store(demo_file(), free_port(), demo.store.clone());
    let received = || -> usize {
        [&demo, &second]
            .iter()
            .flat_map(|d| d.upstreams.iter())
            .map(EchoServer::request_count)
            .sum()
    };
    for _ in 0..5 {
        let failing =
            http::get(&demo.http_url("/flaky"), &[("x-echo-status", "503")]).expect("response");
        assert_eq!(failing.status, 503);
        assert_eq!(
            failing.header("x-ca-error-code"),
            None,
            "the upstream's own 503"
        );
    }
    // The breaker is the fleet's: the instance that saw no failure opens too,
    // within a sync period or two.
    // Under the load of the whole suite on two cores a store call can time
    // out (then each Envoy goes on alone, as `failure_mode: local` says):
    // the wait is generous, and a failure shows the breaker's counters.
    for (index, instance) in [&demo, &second].iter().enumerate() {
        assert!(
            instance.envoy.wait_for(Duration::from_secs(15), |e| {
                e.stat("wasmcustom.gw.circuit_breaker.flaky.state") == 1
            }),
            "the flaky breaker opens on instance {index}:\n{}",
            instance
                .envoy
                .prometheus()
                .lines()
                .filter(|line| line.starts_with("gw_circuit_breaker"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let before = received();
    for instance in [&demo, &second] {
        let degraded = http::get(&instance.http_url("/flaky"), &[]).expect("response");
        assert_eq!(degraded.status, 503, "{}", degraded.text());
        assert_eq!(degraded.header("x-ca-error-code"), Some("A503CB"));
        assert!(degraded.header("retry-after").is_some());
    }
    assert_eq!(
        received(),
        before,
        "the open breaker keeps calls from the upstream"
    );
    let other = http::get(&demo.http_url("/api/hello"), &[]).expect("response");
    assert_eq!(other.status, 200, "other APIs are not affected");
}

#[test]
fn the_demo_limited_api_admits_three_calls_per_client_and_window() {
    let demo = demo_gateway();
    let statuses: Vec<u16> = (0..5)
        .map(|_| {
            http::get(&demo.http_url("/limited"), &[])
                .expect("response")
                .status
        })
        .collect();
    // A window boundary may fall inside the loop; never more than 3 per window.
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert!((3..=5).contains(&admitted), "{statuses:?}");
    let mut refused = None;
    for _ in 0..4 {
        let response = http::get(&demo.http_url("/limited"), &[]).expect("response");
        if response.status == 429 {
            refused = Some(response);
            break;
        }
    }
    let refused = refused.expect("a fourth call in one window is refused");
    assert_eq!(refused.header("x-ca-error-code"), Some("A429IP"));
    assert!(refused.header("retry-after").is_some());
    assert_eq!(refused.header("x-ratelimit-limit"), Some("3"));
}

#[test]
fn the_shipped_gateway_module_runs_every_policy_of_the_demo_in_one_wasm_filter() {
    use integration_tests::signing::{pairs, signed_headers};
    // The native module's file is the same demo with the module loaded natively.
    let (file, filter_type) = if native_mode() {
        (
            "gateway-native.yaml",
            "envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
        )
    } else {
        (
            "gateway-module.yaml",
            "envoy.extensions.filters.http.wasm.v3.Wasm",
        )
    };
    let text = std::fs::read_to_string(workspace_root().join("envoy").join(file)).expect(file);
    assert_eq!(text.matches(filter_type).count(), 1, "one gateway filter");
    let closed_port = free_port();
    let demo = demo_from(file, closed_port);
    let get = |path: &str, headers: &[(&str, &str)]| {
        http::get(&demo.http_url(path), headers).expect("response")
    };

    let accept = [("accept".to_string(), "application/json".to_string())];
    let headers = signed_headers("203751", "demo-secret", "GET", "/orders/42", &accept, None);
    let signed = get("/orders/42", &pairs(&headers));
    assert_eq!(signed.status, 200, "{}", signed.text());
    assert_eq!(
        signed.json()["headers"]["x-gw-signature-key-id"],
        "demo-2026"
    );
    assert_eq!(signed.header("x-ratelimit-limit"), Some("100"));
    assert_eq!(get("/orders/42", &[]).status, 401);
    assert_eq!(
        get("/api/items", &[("x-forwarded-for", "203.0.113.7")]).status,
        403
    );
    assert_eq!(get("/search?page=0", &[]).status, 400);
    let mapped = get("/v1/users/42?lang=zh", &[]);
    assert_eq!(mapped.json()["path"], "/internal/accounts/42/profile");

    // The policies count under their own names, as the single filters do.
    for stat in [
        "sign_auth.allowed",
        "ip_acl.denied.deny_list",
        "ext_auth.skipped",
        "throttling.allowed",
        "param_validation.denied.A400PV",
        "request_mapping.mapped",
    ] {
        let name = format!("wasmcustom.gw.{stat}");
        assert!(demo.envoy.stat(&name) >= 1, "{name}");
    }
}

#[test]
fn the_demos_two_instances_share_nonces_and_quotas_through_its_redis() {
    use integration_tests::signing::{pairs, signed_headers};
    let first = demo_from(demo_file(), free_port());
    let second = demo_with_store(demo_file(), free_port(), first.store.clone());
    let accept = [("accept".to_string(), "application/json".to_string())];
    let headers = signed_headers("203751", "demo-secret", "GET", "/orders/42", &accept, None);
    let accepted = http::get(&first.http_url("/orders/42"), &pairs(&headers)).expect("response");
    assert_eq!(accepted.status, 200, "{}", accepted.text());
    let replayed = http::get(&second.http_url("/orders/42"), &pairs(&headers)).expect("response");
    assert_eq!(replayed.status, 400, "{}", replayed.text());
    assert_eq!(replayed.header("x-ca-error-code"), Some("A400IN"));
    // /limited: 3 calls per 10 s per client, for the fleet. A window may end
    // inside the loop, so count until the first refusal.
    let demos = [&first, &second];
    let mut admitted = 0;
    let refused = (0..8).find_map(|i| {
        let response = http::get(&demos[i % 2].http_url("/limited"), &[]).expect("response");
        if response.status == 200 {
            admitted += 1;
            return None;
        }
        Some(response)
    });
    let refused = refused.expect("the fleet refuses a call beyond the shared limit");
    assert_eq!(refused.header("x-ca-error-code"), Some("A429IP"));
    assert!((3..=6).contains(&admitted), "{admitted}");
    assert!(!first.store.keys("gw:q:limited_per-client:*").is_empty());
    // The native module calls Redis itself; the Wasm modules call Webdis.
    for demo in demos {
        let through_webdis = demo.envoy.stat("cluster.fleet_store.upstream_rq_total");
        if native_mode() {
            assert_eq!(through_webdis, 0, "the native module skips Webdis");
        } else {
            assert!(through_webdis >= 1, "the Wasm modules call Webdis");
        }
    }
    for demo in demos {
        assert!(demo.envoy.stat("wasmcustom.gw.throttling.fleet.answered") >= 1);
        assert_eq!(
            demo.envoy
                .stat("wasmcustom.gw.throttling.fleet.failure.status"),
            0
        );
    }
}

#[test]
fn the_demo_catalog_is_routed_by_region_and_half_mirrored_to_staging() {
    let demo = demo_gateway();
    let upstream_of = |path: &str, headers: &[(&str, &str)]| {
        let response = http::get(&demo.http_url(path), headers).expect("response");
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        response.json()["upstream"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    // European regions go to staging (backend-2) every time.
    for _ in 0..4 {
        assert_eq!(upstream_of("/catalog/fr/items", &[]), "backend-2");
    }
    // Others are balanced over both, whatever x-gw-route the client sends.
    let seen: std::collections::BTreeSet<String> = (0..16)
        .map(|_| upstream_of("/catalog/us/items", &[("x-gw-route", "eu")]))
        .collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let maintenance = http::get(
        &demo.http_url("/catalog/us/items"),
        &[("x-maintenance", "on")],
    )
    .expect("response");
    assert_eq!(maintenance.status, 503);
    assert_eq!(maintenance.json()["message"], "back soon");
    // Half of the calls to a backend are copied to staging (of 20, some
    // and not all; the copies carry Host `127.0.0.1-shadow:port`).
    let copies = || {
        demo.upstreams[1]
            .requests()
            .iter()
            .filter(|r| {
                r.headers
                    .iter()
                    .any(|(k, v)| k == "host" && v.contains("-shadow"))
            })
            .count()
    };
    assert!(
        demo.envoy
            .wait_for(Duration::from_secs(5), |_| copies() >= 1),
        "no copy reached staging"
    );
    assert!(copies() < 20, "{} copies of 20 calls", copies());
}
