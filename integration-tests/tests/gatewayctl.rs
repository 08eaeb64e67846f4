//! `gatewayctl build` output in a real Envoy: `examples/shop.yaml` built
//! for the mode under test (the gateway module, the chain of single filters
//! with no env, the native module with GATEWAY_NATIVE=1), validated, started
//! with test ports, and driven with requests whose outcome is asserted at
//! the echo upstreams.

use gatewayctl::envoy::Host;
use gatewayctl::source::Source;
use integration_tests::echo::EchoServer;
use integration_tests::envoy::{start_yaml, validate, workspace_root, Envoy};
use integration_tests::gatewayctl::{artifacts, host, load};
use integration_tests::http;
use integration_tests::signing::{pairs, signed_headers};

/// A file of the repository with some of its text replaced.
fn read_replaced(file: &str, replacements: &[(&str, String)]) -> String {
    let mut text = std::fs::read_to_string(workspace_root().join(file)).expect(file);
    for (from, to) in replacements {
        assert!(text.contains(from), "{file} has no `{from}`");
        text = text.replace(from, to);
    }
    text
}

/// The example with its addresses replaced by the test's, built for `host`.
fn built_example(replacements: &[(&str, String)], host: Host) -> String {
    let text = read_replaced("examples/shop.yaml", replacements);
    build(&text, "examples/shop.yaml", host)
}

/// An apis.yaml's text, checked and built for `host`.
fn build(text: &str, name: &str, host: Host) -> String {
    let (_, generated) = load(name, text);
    gatewayctl::build_envoy(&generated, name, host, &artifacts())
}

/// An OpenAPI document of the tests imported, built for the mode under test,
/// validated and started, its backend an echo upstream.
fn imported(file: &str, backend_port: &str) -> (Envoy, EchoServer) {
    let backend = EchoServer::start("backend").expect("echo");
    let path = format!("tools/gatewayctl/tests/openapi/{file}");
    let text = read_replaced(
        &path,
        &[
            ("127.0.0.1:9901", "127.0.0.1:0".into()),
            ("127.0.0.1:8080", "127.0.0.1:0".into()),
            (
                backend_port,
                backend_port.replace("18081", &backend.port().to_string()),
            ),
        ],
    );
    let source = Source::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    let checked = gatewayctl::openapi::import_checked(&source, "imported.yaml", false)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(checked.errors.is_empty(), "{:?}", checked.errors);
    let config = build(&checked.text, "imported.yaml", host());
    let (ok, output) = validate(&config, "yaml");
    assert!(ok, "{file} imported is refused:\n{output}\n{config}");
    (start_yaml(&config, 1), backend)
}

fn send(
    envoy: &Envoy,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> http::Response {
    let url = format!("http://127.0.0.1:{}{path}", envoy.listener_port("http"));
    http::send(&http::agent(), method, &url, headers, body).expect("response")
}

#[test]
fn an_imported_openapi_3_0_document_checks_parameters_bodies_and_maps_paths() {
    let (envoy, backend) = imported("orders-3.0.yaml", "127.0.0.1:18081");
    let get = |path: &str| send(&envoy, "GET", path, &[], None);
    // listOrders: a $ref'd allOf parameter, an enum, an array; undeclared dropped.
    let ok = get("/v1/orders?limit=5&status=open&tags=ab&junk=1");
    assert_eq!(ok.status, 200, "{}", ok.text());
    let seen = backend.requests().pop().expect("the backend was called");
    assert_eq!(seen.path, "/v1/orders");
    assert_eq!(
        seen.query, "limit=5&status=open&tags=ab",
        "undeclared `junk` is dropped"
    );
    for bad in [
        "/v1/orders?limit=500",
        "/v1/orders?limit=x",
        "/v1/orders?status=lost",
        "/v1/orders?tags=a",
    ] {
        let refused = get(bad);
        assert_eq!(refused.status, 400, "{bad}: {}", refused.text());
    }
    // createOrder: the Order schema with its components (Line, Sku, a recursive Category).
    let json = [("content-type", "application/json")];
    let body = br#"{"lines":[{"sku":"ABC-1","quantity":2}],"note":null,"category":{"name":"a","parent":{"name":"b"}}}"#;
    let created = send(&envoy, "POST", "/v1/orders", &json, Some(body));
    assert_eq!(created.status, 200, "{}", created.text());
    assert_eq!(
        backend.requests().pop().expect("called").body,
        body.to_vec()
    );
    for bad in [
        &br#"{"lines":[]}"#[..],
        br#"{"lines":[{"sku":"abc","quantity":2}]}"#,
        br#"{"lines":[{"sku":"ABC-1","quantity":1}],"category":{"parent":{"name":7}}}"#,
    ] {
        let refused = send(&envoy, "POST", "/v1/orders", &json, Some(bad));
        assert_eq!(
            refused.status,
            400,
            "{}: {}",
            String::from_utf8_lossy(bad),
            refused.text()
        );
    }
    // getOrder: a path-level $ref'd path parameter; the backend path is mapped.
    backend.forget_requests();
    let order = get("/v1/orders/42?lang=en");
    assert_eq!(order.status, 200, "{}", order.text());
    let seen = backend.requests().pop().expect("the backend was called");
    assert_eq!(seen.path, "/internal/orders/42");
    assert!(
        seen.headers.contains(&("x-lang".into(), "en".into())),
        "{:?}",
        seen.headers
    );
    for bad in ["/v1/orders/0", "/v1/orders/abc", "/v1/orders/42?lang=fr"] {
        assert_eq!(get(bad).status, 400, "{bad}");
    }
    // cancelOrder: x-gateway-auth: anonymous; an operation OpenAPI lacks is 404.
    assert_eq!(
        send(&envoy, "DELETE", "/v1/orders/42", &[], None).status,
        200
    );
    assert_eq!(
        send(&envoy, "PATCH", "/v1/orders/42", &[], None).status,
        404
    );
    assert_eq!(
        backend
            .requests()
            .iter()
            .filter(|r| r.path.contains("/0"))
            .count(),
        0
    );
}

#[test]
fn an_imported_openapi_3_1_json_document_checks_its_constraints() {
    let (envoy, backend) = imported("inventory-3.1.json", "\"18081\"");
    let get = |path: &str| send(&envoy, "GET", path, &[], None);
    assert_eq!(get("/items/abc?warehouse=main&min_stock=2").status, 200);
    assert_eq!(backend.request_count(), 1);
    for bad in [
        "/items/ab?warehouse=main",
        "/items/abc",
        "/items/abc?warehouse=other",
        "/items/abc?warehouse=main&min_stock=0",
    ] {
        assert_eq!(get(bad).status, 400, "{bad}");
    }
    let json = [("content-type", "application/json")];
    let put = |body: &[u8]| send(&envoy, "PUT", "/items/abc", &json, Some(body)).status;
    assert_eq!(put(br#"{"price":2.5,"label":null}"#), 200);
    assert_eq!(put(br#"{"price":0}"#), 400, "exclusiveMinimum: 0");
    assert_eq!(
        put(br#"{"price":1,"extra":true}"#),
        400,
        "additionalProperties: false"
    );
    assert_eq!(backend.request_count(), 2);
}

struct Shop {
    envoy: Envoy,
    shop: EchoServer,
    staging: EchoServer,
}

impl Shop {
    fn start() -> Self {
        let shop = EchoServer::start("shop").expect("echo");
        let staging = EchoServer::start("shop-staging").expect("echo");
        let text = built_example(
            &[
                ("127.0.0.1:9901", "127.0.0.1:0".into()),
                ("127.0.0.1:8080", "127.0.0.1:0".into()),
                ("127.0.0.1:18081", format!("127.0.0.1:{}", shop.port())),
                ("127.0.0.1:18082", format!("127.0.0.1:{}", staging.port())),
            ],
            host(),
        );
        Shop {
            envoy: start_yaml(&text, 1),
            shop,
            staging,
        }
    }

    fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}{path}",
            self.envoy.listener_port("http")
        )
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> http::Response {
        http::get(&self.url(path), headers).expect("response")
    }

    fn signed(
        &self,
        key: &str,
        secret: &str,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> http::Response {
        let mut extra = vec![("accept".to_string(), "application/json".to_string())];
        if !body.is_empty() {
            extra.push(("content-type".into(), "application/json".into()));
            extra.push((
                "content-md5".into(),
                sign_auth::signature::content_md5(body),
            ));
        }
        let headers = signed_headers(key, secret, method, path, &extra, None);
        let body = (!body.is_empty()).then_some(body);
        http::send(
            &http::agent(),
            method,
            &self.url(path),
            &pairs(&headers),
            body,
        )
        .expect("response")
    }
}

#[test]
fn every_form_of_the_example_passes_envoy_validation() {
    for host in [Host::Module, Host::Chain, Host::Native] {
        let text = built_example(&[], host);
        let (ok, output) = validate(&text, "yaml");
        assert!(
            ok && output.contains("OK"),
            "{host:?} is refused:\n{output}\n{text}"
        );
    }
}

#[test]
fn declared_parameters_are_checked_and_undeclared_ones_dropped() {
    let shop = Shop::start();
    let ok = shop.get("/search?q=shoes&page=2", &[]);
    assert_eq!(ok.status, 200, "{}", ok.text());
    let seen = shop.shop.requests().pop().expect("the backend was called");
    assert_eq!(seen.path, "/search");
    assert_eq!(seen.query, "q=shoes&page=2");

    let missing = shop.get("/search?page=2", &[]);
    assert_eq!(missing.status, 400, "{}", missing.text());
    assert!(missing.text().contains("q"), "{}", missing.text());
    let out_of_range = shop.get("/search?q=x&page=0", &[]);
    assert_eq!(out_of_range.status, 400, "{}", out_of_range.text());

    // get-order: `id` is an integer path parameter; `fields` an array of an
    // enum; drop_undefined removes the rest before the backend sees it.
    shop.shop.forget_requests();
    let order = shop.signed(
        "203751",
        "demo-secret",
        "GET",
        "/orders/42?fields=items&junk=1",
        b"",
    );
    assert_eq!(order.status, 200, "{}", order.text());
    let seen = shop.shop.requests().pop().expect("the backend was called");
    assert_eq!(seen.path, "/orders/42");
    assert_eq!(seen.query, "fields=items", "undeclared `junk` is dropped");
    let bad_id = shop.signed("203751", "demo-secret", "GET", "/orders/abc", b"");
    assert_eq!(bad_id.status, 400, "{}", bad_id.text());
    let bad_field = shop.signed(
        "203751",
        "demo-secret",
        "GET",
        "/orders/42?fields=price",
        b"",
    );
    assert_eq!(bad_field.status, 400, "{}", bad_field.text());
    assert_eq!(
        shop.shop.request_count(),
        1,
        "refused calls never reach the backend"
    );
}

#[test]
fn an_api_written_once_gets_its_auth_stages_body_schema_and_mapping() {
    let shop = Shop::start();
    // auth: app from the group; unsigned is refused by sign-auth.
    let unsigned = shop.get("/orders/42", &[]);
    assert_eq!(unsigned.status, 401, "{}", unsigned.text());
    assert!(unsigned.header("x-ca-error-code").is_some());

    // The group's TEST stage goes to the staging backend; an unknown stage is 404.
    let accept = [
        ("accept".to_string(), "application/json".to_string()),
        ("x-ca-stage".into(), "TEST".into()),
    ];
    let headers = signed_headers("203751", "demo-secret", "GET", "/orders/7", &accept, None);
    let staged = http::get(&shop.url("/orders/7"), &pairs(&headers)).expect("response");
    assert_eq!(staged.status, 200, "{}", staged.text());
    assert_eq!(shop.staging.request_count(), 1, "TEST goes to shop-staging");
    let unknown = shop.get("/orders/7", &[("x-ca-stage", "NOPE")]);
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.header("x-ca-error-code"), Some("S404ST"));

    // create-order allows app 203751 only, and its body must match the schema.
    let partner = shop.signed(
        "204000",
        "partner-secret",
        "POST",
        "/orders",
        br#"{"items":[{"sku":"a"}]}"#,
    );
    assert_eq!(partner.status, 403, "{}", partner.text());
    let empty = shop.signed(
        "203751",
        "demo-secret",
        "POST",
        "/orders",
        br#"{"items":[]}"#,
    );
    assert_eq!(empty.status, 400, "{}", empty.text());
    shop.shop.forget_requests();
    let created = shop.signed(
        "203751",
        "demo-secret",
        "POST",
        "/orders",
        br#"{"items":[{"sku":"a"}]}"#,
    );
    assert_eq!(created.status, 200, "{}", created.text());
    let seen = shop.shop.requests().pop().expect("the backend was called");
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/orders")
    );
    assert_eq!(seen.body, br#"{"items":[{"sku":"a"}]}"#);

    // profile: the frontend path mapped to the backend's, a query to a header.
    shop.shop.forget_requests();
    let profile = shop.get("/v1/users/7?lang=en", &[]);
    assert_eq!(profile.status, 200, "{}", profile.text());
    let seen = shop.shop.requests().pop().expect("the backend was called");
    assert_eq!(seen.path, "/internal/accounts/7/profile");
    assert!(
        seen.headers.contains(&("x-lang".into(), "en".into())),
        "{:?}",
        seen.headers
    );
    assert!(seen.headers.iter().any(|(k, _)| k == "x-client-ip"));
}

#[test]
fn mocks_unknown_apis_and_wrong_methods_are_answered_by_the_gateway() {
    let shop = Shop::start();
    let coupons = shop.get("/coupons", &[]);
    assert_eq!(coupons.status, 200);
    assert_eq!(coupons.text(), r#"{"coupon":"DEMO-10"}"#);
    assert_eq!(coupons.header("content-type"), Some("application/json"));
    for (method, path) in [
        ("GET", "/nothing/here"),
        ("DELETE", "/search"),
        ("POST", "/coupons"),
    ] {
        let response =
            http::send(&http::agent(), method, &shop.url(path), &[], None).expect("response");
        assert_eq!(response.status, 404, "{method} {path}");
        assert_eq!(
            response.header("x-ca-error-code"),
            Some("S404NF"),
            "{method} {path}"
        );
        assert_eq!(response.json()["code"], "S404NF");
    }
    assert_eq!(shop.shop.request_count() + shop.staging.request_count(), 0);
}

#[test]
fn bound_policies_apply_to_their_apis_only() {
    let shop = Shop::start();
    // per-client: 3 calls per 10 s window. Seven calls span at most two
    // windows, so at least one is refused whatever the timing.
    let statuses: Vec<u16> = (0..7)
        .map(|_| shop.get("/search?q=x", &[]).status)
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    // Another API is not throttled by it.
    for _ in 0..4 {
        assert_eq!(shop.get("/v1/users/1", &[]).status, 200);
    }
    // office-only allows 127.0.0.0/8 (the test's address) on /admin; a
    // client the trusted proxy (127.0.0.1) names from elsewhere is refused.
    assert_eq!(shop.get("/admin/stats", &[]).status, 200);
    let outside = shop.get("/admin/stats", &[("x-forwarded-for", "203.0.113.9")]);
    assert_eq!(outside.status, 403, "{}", outside.text());
    assert_eq!(outside.header("x-ca-error-code"), Some("A403IP"));
    assert_eq!(
        shop.get("/search?q=y", &[("x-forwarded-for", "203.0.113.9")])
            .status
            / 100,
        2
    );
}

#[test]
fn the_istio_envoy_filter_of_the_demo_passes_envoy_validation() {
    // For Istio, request-mapping rewrites the path before log-push reads it:
    // the demo's mapped API is refused while it is logged.
    let text = read_replaced("examples/demo.yaml", &[]);
    let source = Source::parse("examples/demo.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    let refused = gatewayctl::load_for(&source, gatewayctl::generate::Target::Istio)
        .err()
        .unwrap_or_default();
    assert!(
        refused.first().is_some_and(|e| e.to_string().contains(
            "apis[6] (public-profile): mapping.backend.path: for Istio, request-mapping rewrites the path"
        )),
        "{refused:?}"
    );
    let text = read_replaced(
        "examples/demo.yaml",
        &[(
            "    path: /v1/users/{id}\n",
            "    path: /v1/users/{id}\n    log: false\n".into(),
        )],
    );
    let source = Source::parse("examples/demo.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    let generated = gatewayctl::load_for(&source, gatewayctl::generate::Target::Istio)
        .unwrap_or_else(|errors| panic!("{errors:?}"));
    let manifest = gatewayctl::build_istio(
        &generated,
        "examples/demo.yaml",
        host(),
        &artifacts(),
        &gatewayctl::istio::Placement::default(),
    );
    let envoy_filter = Source::parse("istio.yaml", &manifest)
        .unwrap_or_else(|e| panic!("{e}"))
        .value;
    assert_eq!(envoy_filter["kind"], "EnvoyFilter");
    // Istio's routes are not ours: the policies match by method and path.
    assert!(!manifest.contains("route_names"), "{manifest}");
    assert!(
        manifest.contains(r#""template": "/v1/users/{id}""#)
            || manifest.contains(r#"{"template":"/v1/users/{id}"}"#),
        "{manifest}"
    );
    let mut config = integration_tests::istio::minimal_gateway();
    integration_tests::istio::apply_envoy_filter(&mut config, &envoy_filter);
    let clusters: Vec<&str> = config["static_resources"]["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    // The listener's own backend, then the clusters the filters call.
    assert_eq!(
        clusters,
        ["backend", "fleet_store", "authorizer", "log_sink"]
    );
    let (ok, output) = validate(&config.to_string(), "json");
    assert!(ok && output.contains("OK"), "{output}\n{manifest}");
}

/// Waits up to 5 s for an upstream to have seen `count` requests.
fn seen(upstream: &EchoServer, count: usize) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if upstream.request_count() >= count {
            return upstream.request_count() == count;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

#[test]
fn routing_and_mirroring_policies_send_requests_where_they_say() {
    let main = EchoServer::start("main").expect("echo");
    let eu = EchoServer::start("eu").expect("echo");
    let copy = EchoServer::start("copy").expect("echo");
    // alice's password is `alice-pw`.
    let text = format!(
        r#"version: 1
gateway:
  admin: 127.0.0.1:0
  listeners: [ {{ name: http, address: "127.0.0.1:0" }} ]
backends:
  - {{ name: main, endpoints: ["127.0.0.1:{main}"] }}
  - {{ name: eu, endpoints: ["127.0.0.1:{eu}"] }}
  - {{ name: copy, endpoints: ["127.0.0.1:{copy}"] }}
apps:
  - key: "203751"
    secrets: [s]
    basic: [ {{ username: alice, password: "sha256:cefd4bcd86ca3d6d9d1064593870b4cd4fdb3fef0136b1c43684cb7f58a29036" }} ]
policies:
  - name: by-region
    routing:
      routes:
        - {{ name: maintenance, condition: "header.x-maintenance == 'on'", mock: {{ status: 503, body: "back soon" }} }}
        - {{ name: eu, condition: "param.region == 'eu' || user == 'alice'", backend: eu }}
  - name: copy-all
    mirror: {{ backend: copy }}
apis:
  - {{ name: catalog, path: "/catalog/{{region}}/items", backend: main, auth: [basic, anonymous], apps: ["203751"], policies: [by-region, copy-all] }}
"#,
        main = main.port(),
        eu = eu.port(),
        copy = copy.port()
    );
    let config = build(&text, "routing.yaml", host());
    let (ok, output) = validate(&config, "yaml");
    assert!(ok, "refused:\n{output}\n{config}");
    let envoy = start_yaml(&config, 1);
    let get = |path: &str, headers: &[(&str, &str)]| send(&envoy, "GET", path, headers, None);

    // No route holds: the API's backend, and a copy to the mirror.
    assert_eq!(get("/catalog/us/items", &[]).status, 200);
    assert!(seen(&main, 1) && seen(&copy, 1), "main and its copy");
    // A route holds: its backend (and the copy).
    assert_eq!(get("/catalog/eu/items", &[]).status, 200);
    assert!(seen(&eu, 1) && seen(&copy, 2), "eu and its copy");
    let mirrored = copy.requests();
    assert!(
        mirrored.iter().all(|r| r
            .headers
            .iter()
            .any(|(k, v)| k == "host" && v.contains("-shadow:"))),
        "{mirrored:?}"
    );
    // A route may depend on the verified user.
    let alice = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:alice-pw")
    );
    assert_eq!(
        get("/catalog/us/items", &[("authorization", &alice)]).status,
        200
    );
    assert!(seen(&eu, 2), "alice goes to eu");
    // The client cannot choose: its x-gw-route is removed.
    assert_eq!(
        get("/catalog/us/items", &[("x-gw-route", "eu")]).status,
        200
    );
    assert!(seen(&main, 2), "the spoofed route is not taken");
    assert_eq!(eu.request_count(), 2);
    assert!(seen(&copy, 4));
    // A mock route answers without a backend, and is not mirrored: the
    // next copy is the fifth.
    let mock = get("/catalog/us/items", &[("x-maintenance", "on")]);
    assert_eq!((mock.status, mock.text().as_str()), (503, "back soon"));
    assert_eq!(get("/catalog/us/items", &[]).status, 200);
    assert!(
        seen(&main, 3) && seen(&copy, 5),
        "the mock was not mirrored"
    );
    assert_eq!(eu.request_count(), 2);
    // The mirror's failure never fails the call.
    drop(copy);
    assert_eq!(get("/catalog/us/items", &[]).status, 200);
    assert!(seen(&main, 4));
}

#[test]
fn a_document_with_constructs_the_gateway_cannot_carry_imports_the_rest_and_runs() {
    let (envoy, backend) = imported("awkward-3.0.yaml", "127.0.0.1:18081");
    let get = |path: &str| send(&envoy, "GET", path, &[], None);
    assert_eq!(get("/health").status, 200);
    // A path variable's default is left out; its other constraints stay.
    assert_eq!(get("/items/5?sort=desc").status, 200);
    assert_eq!(get("/items/0").status, 400, "minimum: 1");
    // An enum that repeated a value is kept once each.
    assert_eq!(get("/items/5?sort=up").status, 400);
    // A pattern is searched for in the value, as OpenAPI means it.
    assert_eq!(get("/items/5?ref=a1b").status, 200);
    assert_eq!(get("/items/5?ref=abc").status, 400);
    // A pattern with lookahead is not checked, not refused.
    assert_eq!(get("/items/5?code=abc").status, 200);
    // The body schema: its enum and its ECMA-262 pattern, translated.
    let json = [("content-type", "application/json")];
    let post = |body: &[u8]| send(&envoy, "POST", "/things", &json, Some(body)).status;
    assert_eq!(post(br#"{"kind":"a","guid":"{abcd}"}"#), 200);
    assert_eq!(post(br#"{"kind":"a","guid":"{abcdef01}"}"#), 200);
    assert_eq!(post(br#"{"kind":"c"}"#), 400);
    assert_eq!(post(br#"{"kind":"a","guid":"abcd"}"#), 400);
    // The operations left out are not routed.
    let anything = get("/anything/1/go/1");
    assert_eq!(anything.status, 404);
    assert_eq!(anything.header("x-ca-error-code"), Some("S404NF"));
    assert_eq!(backend.request_count(), 6);
}

#[test]
fn every_document_of_the_openapi_corpus_imports_builds_and_validates() {
    let corpus = workspace_root().join("tools/gatewayctl/tests/openapi/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .expect("corpus")
        .map(|entry| entry.expect("entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    for file in files {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(&file).expect("read");
        let source = Source::parse(&name, &text).unwrap_or_else(|e| panic!("{e}"));
        let checked = gatewayctl::openapi::import_checked(&source, "imported.yaml", false)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(checked.errors.is_empty(), "{name}: {:?}", checked.errors);
        let apis = checked.imported.document["apis"]
            .as_array()
            .map_or(0, Vec::len);
        assert!(apis > 0, "{name}: no API");
        let config = build(&checked.text, "imported.yaml", host());
        let (ok, output) = validate(&config, "yaml");
        assert!(
            ok,
            "{name} imported is refused by Envoy:\n{output}\n{config}"
        );
        eprintln!(
            "{name}: {apis} APIs, {} notes",
            checked.imported.untranslated.len()
        );
    }
}
