//! ext-auth in a real Envoy with two workers: a real authorizer process
//! (a scripted HTTP server started by the test, deciding by the
//! `Authorization` header and counting the calls it gets) and an echo
//! upstream reporting what got through.

use integration_tests::echo::{EchoServer, ReceivedRequest, Reply};
use integration_tests::envoy::{
    add_cluster, gateway_config, shipped_config, start_yaml, validate, wasm_module, Envoy,
    WasmFilter,
};
use integration_tests::http::{self, Response};
use serde_json::{json, Value};
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const WORKERS: u32 = 2;
const SLOW_MS: u64 = 400;

/// The provider's authorizer: what it answers for each bearer token.
fn authorize(request: &ReceivedRequest) -> Reply {
    let token = request
        .header("authorization")
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    match token {
        "alice" | "carol" => Reply::new(200, "")
            .header("x-user-id", token)
            .header("x-tenant", "t-1")
            .header("x-admin", "yes"),
        "short" => Reply::new(200, "")
            .header("x-user-id", "short")
            .header("cache-control", "max-age=2"),
        "nostore" => Reply::new(200, "")
            .header("x-user-id", "nostore")
            .header("cache-control", "no-store"),
        "denied" => Reply::new(403, r#"{"error":"subscription expired"}"#)
            .header("content-type", "application/json")
            .header("www-authenticate", "Bearer error=\"expired\"")
            .header("x-internal", "secret"),
        "slow" => Reply::new(200, "")
            .header("x-user-id", "slow")
            .after(Duration::from_millis(SLOW_MS)),
        "crash" => Reply::new(500, "boom"),
        "huge" => Reply::new(200, vec![b'x'; 100 * 1024]),
        "hang" => Reply::new(200, "").after(Duration::from_secs(3)),
        _ => Reply::new(401, "unknown token").header("www-authenticate", "Bearer"),
    }
}

fn config() -> Value {
    json!({
        "authorizer": {"cluster": "authorizer", "path": "/check", "timeout_ms": 500},
        "identity": [{"from": "header", "name": "authorization"}],
        "rules": [
            {"name": "public", "match": {"path": {"prefix": "/public"}}, "authorize": false},
            {"name": "all", "match": {"path": {"prefix": "/"}}}
        ],
        "upstream_headers": ["x-user-id", "x-tenant"],
        "client_headers": ["www-authenticate"],
        "user_header": "x-user-id",
        "cache": {"ttl_seconds": 60, "deny_ttl_seconds": 2}
    })
}

struct Gateway {
    envoy: Envoy,
    upstream: EchoServer,
    authorizer: EchoServer,
}

fn gateway_with(filters: &[WasmFilter]) -> Gateway {
    gateway_with_clusters(filters, &[])
}

/// [`gateway_with`] and more clusters (a log sink…).
fn gateway_with_clusters(filters: &[WasmFilter], clusters: &[(&str, u16)]) -> Gateway {
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let authorizer = EchoServer::start_scripted("authorizer", authorize).expect("authorizer");
    let mut config = gateway_config(filters, &[upstream.port()]);
    add_cluster(&mut config, "authorizer", authorizer.port());
    for (name, port) in clusters {
        add_cluster(&mut config, name, *port);
    }
    let envoy = Envoy::start_with(&config, WORKERS).unwrap_or_else(|e| panic!("{e}"));
    Gateway {
        envoy,
        upstream,
        authorizer,
    }
}

fn gateway(config: &Value) -> Gateway {
    gateway_with(&[WasmFilter::json("ext_auth", config)])
}

impl Gateway {
    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        http::get(&self.envoy.url(path), headers).expect("response from Envoy")
    }

    fn as_user(&self, token: &str) -> Response {
        self.get(
            "/orders/7",
            &[("authorization", &format!("Bearer {token}"))],
        )
    }

    fn stat(&self, name: &str) -> u64 {
        self.envoy.stat(&format!("wasmcustom.gw.ext_auth.{name}"))
    }

    fn calls(&self) -> usize {
        self.authorizer.request_count()
    }
}

#[test]
fn an_allowed_request_reaches_the_upstream_with_the_authorizers_headers_and_no_client_copies() {
    let gateway = gateway(&config());
    let response = gateway.get(
        "/orders/7?x=1",
        &[
            ("authorization", "Bearer alice"),
            ("x-user-id", "mallory"),
            ("x-tenant", "evil"),
        ],
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = gateway.upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-user-id"), Some("alice"));
    assert_eq!(seen[0].header("x-tenant"), Some("t-1"));
    assert_eq!(seen[0].header("x-admin"), None, "not an upstream header");
    let asked = gateway.authorizer.requests();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].method, "GET");
    assert_eq!(asked[0].path, "/check");
    assert_eq!(asked[0].header("authorization"), Some("Bearer alice"));
    assert_eq!(asked[0].header("x-forwarded-method"), Some("GET"));
    assert_eq!(asked[0].header("x-forwarded-uri"), Some("/orders/7?x=1"));
    // An API its rules exempt: no call, and still no client copies.
    let public = gateway.get("/public/info", &[("x-user-id", "mallory")]);
    assert_eq!(public.status, 200);
    assert_eq!(gateway.upstream.requests()[1].header("x-user-id"), None);
    assert_eq!(gateway.calls(), 1);
    assert_eq!(gateway.stat("allowed"), 1);
    assert_eq!(gateway.stat("skipped"), 1);
}

#[test]
fn a_denial_passes_the_authorizers_status_body_and_listed_headers_to_the_client() {
    let gateway = gateway(&config());
    let response = gateway.as_user("denied");
    assert_eq!(response.status, 403);
    assert_eq!(response.text(), r#"{"error":"subscription expired"}"#);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer error=\"expired\"")
    );
    assert_eq!(response.header("x-internal"), None);
    let unknown = gateway.as_user("nobody");
    assert_eq!(unknown.status, 401);
    assert_eq!(unknown.header("www-authenticate"), Some("Bearer"));
    assert_eq!(gateway.upstream.request_count(), 0);
    assert_eq!(gateway.stat("authorizer_denied"), 2);
}

#[test]
fn a_request_without_its_identity_source_is_refused_without_asking() {
    let gateway = gateway(&config());
    let response = gateway.get("/orders/7", &[]);
    assert_eq!(response.status, 401);
    assert_eq!(response.header("x-ca-error-code"), Some("A401IS"));
    assert_eq!(
        response.json()["message"],
        "Identity Source Missing: header authorization"
    );
    assert_eq!(gateway.calls(), 0);
    assert_eq!(gateway.stat("denied.A401IS"), 1);
}

#[test]
fn cached_decisions_answer_without_a_call_and_every_lookup_is_counted() {
    let gateway = gateway(&config());
    for _ in 0..3 {
        assert_eq!(gateway.as_user("alice").status, 200);
    }
    assert_eq!(gateway.as_user("carol").status, 200);
    assert_eq!(gateway.as_user("denied").status, 403);
    assert_eq!(gateway.as_user("denied").status, 403);
    assert_eq!(gateway.calls(), 3, "alice, carol and denied once each");
    assert_eq!(gateway.stat("calls"), 3);
    assert_eq!(gateway.stat("cache_miss"), 3);
    assert_eq!(gateway.stat("cache_hit"), 3);
    // A cached allow still injects the authorizer's headers.
    let seen = gateway.upstream.requests();
    assert_eq!(seen.len(), 4);
    assert!(seen[..3]
        .iter()
        .all(|r| r.header("x-user-id") == Some("alice")));
    assert_eq!(gateway.stat("allowed"), 4);
}

#[test]
fn max_age_the_denial_ttl_and_no_store_bound_what_is_cached() {
    let gateway = gateway(&config());
    let calls_for = |token: &str| {
        let before = gateway.calls();
        let status = gateway.as_user(token).status;
        (status, gateway.calls() - before)
    };
    assert_eq!(calls_for("short"), (200, 1));
    assert_eq!(calls_for("short"), (200, 0), "max-age=2 holds");
    assert_eq!(calls_for("denied"), (403, 1));
    assert_eq!(calls_for("denied"), (403, 0), "the denial TTL holds");
    assert_eq!(calls_for("alice"), (200, 1));
    assert_eq!(calls_for("nostore"), (200, 1));
    assert_eq!(calls_for("nostore"), (200, 1), "no-store is never kept");
    thread::sleep(Duration::from_millis(2_300));
    assert_eq!(calls_for("short"), (200, 1), "max-age passed");
    assert_eq!(calls_for("denied"), (403, 1), "the denial TTL passed");
    assert_eq!(calls_for("alice"), (200, 0), "the 60 s TTL still holds");
}

#[test]
fn a_burst_with_one_identity_on_a_cold_cache_makes_one_call_per_worker() {
    let quota = json!({"user": {"header": "x-user-id"}, "rules": [{"name": "per-user",
        "match": {"path": {"prefix": "/"}}, "limit": 1000, "window": "1h", "key": "user"}]});
    let gateway = Arc::new(gateway_with(&[
        WasmFilter::json("ext_auth", &config()),
        WasmFilter::json("throttling", &quota),
    ]));
    let burst = 20;
    let barrier = Arc::new(Barrier::new(burst));
    let clients: Vec<_> = (0..burst)
        .map(|_| {
            let gateway = Arc::clone(&gateway);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                gateway.as_user("slow").status
            })
        })
        .collect();
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let calls = gateway.calls();
    assert!(
        (1..=WORKERS as usize).contains(&calls),
        "{calls} authorizer calls for a burst of {burst} on {WORKERS} workers"
    );
    assert_eq!(gateway.stat("calls"), calls as u64);
    assert_eq!(gateway.stat("cache_miss"), burst as u64);
    assert_eq!(gateway.stat("coalesced"), (burst - calls) as u64);
    // Every woken request went on through the policies after ext-auth.
    let seen = gateway.upstream.requests();
    assert_eq!(seen.len(), burst);
    assert!(seen.iter().all(|r| r.header("x-user-id") == Some("slow")));
    assert_eq!(
        gateway.envoy.stat("wasmcustom.gw.throttling.allowed"),
        burst as u64
    );
}

#[test]
fn the_requests_waiting_for_a_caller_that_went_away_ask_again_and_are_served() {
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let authorizer = EchoServer::start_scripted("authorizer", authorize).expect("authorizer");
    let mut envoy_config = gateway_config(
        &[WasmFilter::json("ext_auth", &config())],
        &[upstream.port()],
    );
    add_cluster(&mut envoy_config, "authorizer", authorizer.port());
    // One worker: every request of the burst waits for the first one.
    let envoy = Envoy::start_with(&envoy_config, 1).unwrap_or_else(|e| panic!("{e}"));
    let mut leader =
        TcpStream::connect(("127.0.0.1", envoy.listener_port("main"))).expect("connect");
    leader
        .write_all(b"GET /orders/7 HTTP/1.1\r\nhost: api\r\nauthorization: Bearer slow\r\n\r\n")
        .expect("send the first request");
    assert!(envoy.wait_for(Duration::from_secs(5), |e| {
        e.stat("wasmcustom.gw.ext_auth.calls") == 1
    }));
    let url = envoy.url("/orders/7");
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || {
                http::get(&url, &[("authorization", "Bearer slow")])
                    .expect("response")
                    .status
            })
        })
        .collect();
    assert!(envoy.wait_for(Duration::from_secs(5), |e| {
        e.stat("wasmcustom.gw.ext_auth.coalesced") == 5
    }));
    // The first caller goes away before the authorizer answers it.
    drop(leader);
    let statuses: Vec<u16> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(statuses, [200; 5]);
    assert_eq!(
        authorizer.request_count(),
        2,
        "one waiter asked again for all"
    );
    assert_eq!(upstream.request_count(), 5);
}

#[test]
fn request_mapping_and_log_push_take_the_user_the_authorizer_named() {
    let sink = EchoServer::start("sink").expect("sink");
    let gateway = gateway_with_clusters(
        &[
            WasmFilter::json("ext_auth", &config()),
            WasmFilter::json(
                "request_mapping",
                &json!({"rules": [{"match": {"path": {"prefix": "/orders"}},
                    "system": [{"value": "user", "to": {"in": "header", "name": "X-Caller"}}]}]}),
            ),
            WasmFilter::json(
                "log_push",
                &json!({"sink": {"cluster": "log_sink", "format": "ndjson", "path": "/ingest"},
                        "batch": {"max_records": 1, "flush_interval_ms": 100},
                        "fields": ["path", "status", "user"]}),
            ),
        ],
        &[("log_sink", sink.port())],
    );
    let response = gateway.get(
        "/orders/7",
        &[("authorization", "Bearer carol"), ("x-caller", "mallory")],
    );
    assert_eq!(response.status, 200);
    assert_eq!(
        gateway.upstream.requests()[0].header("x-caller"),
        Some("carol")
    );
    assert!(gateway
        .envoy
        .wait_for(Duration::from_secs(10), |_| sink.request_count() >= 1));
    let record: Value = serde_json::from_slice(&sink.requests()[0].body).expect("a record");
    assert_eq!(record["user"], "carol");
}

#[test]
fn throttling_counts_by_the_user_the_authorizer_named() {
    let quota = json!({"user": {"header": "x-user-id"}, "rules": [{"name": "per-user",
        "match": {"path": {"prefix": "/"}}, "limit": 2, "window": "1h", "key": "user"}]});
    let gateway = gateway_with(&[
        WasmFilter::json("ext_auth", &config()),
        WasmFilter::json("throttling", &quota),
    ]);
    // A client's own x-user-id does not pick the counter.
    let spoofing = |token: &str| {
        gateway
            .get(
                "/orders/7",
                &[
                    ("authorization", &format!("Bearer {token}")),
                    ("x-user-id", "someone-else"),
                ],
            )
            .status
    };
    assert_eq!(spoofing("alice"), 200);
    assert_eq!(spoofing("alice"), 200);
    assert_eq!(spoofing("alice"), 429);
    assert_eq!(spoofing("carol"), 200);
}

#[test]
fn failures_are_answered_by_the_failure_mode_within_the_timeout() {
    let gateway = gateway(&config());
    let started = Instant::now();
    let hung = gateway.as_user("hang");
    assert_eq!(hung.status, 503);
    assert_eq!(hung.header("x-ca-error-code"), Some("A503AU"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered by the 500 ms timeout, not by the authorizer"
    );
    assert_eq!(gateway.as_user("crash").status, 503);
    assert_eq!(gateway.as_user("huge").status, 503);
    assert_eq!(
        gateway.as_user("crash").status,
        503,
        "failures are not cached"
    );
    // Envoy answers a call past its timeout itself, with 504.
    assert_eq!(gateway.stat("failure.status"), 3);
    assert_eq!(gateway.stat("failure.too_large"), 1);
    assert_eq!(gateway.stat("denied.A503AU"), 4);
    assert_eq!(gateway.upstream.request_count(), 0);

    let open = gateway_with(&[WasmFilter::json(
        "ext_auth",
        &json!({
            "authorizer": {"cluster": "authorizer", "timeout_ms": 500},
            "identity": [{"from": "header", "name": "authorization"}],
            "upstream_headers": ["x-user-id"],
            "failure_mode": "allow"
        }),
    )]);
    let response = open.get(
        "/orders/7",
        &[("authorization", "Bearer crash"), ("x-user-id", "mallory")],
    );
    assert_eq!(response.status, 200);
    assert_eq!(open.upstream.requests()[0].header("x-user-id"), None);
    assert_eq!(open.stat("failure_allowed"), 1);
}

#[test]
fn an_authorizer_that_is_down_is_a_failure_not_a_hung_request() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let mut config = gateway_config(
        &[WasmFilter::json("ext_auth", &config())],
        &[upstream.port()],
    );
    add_cluster(&mut config, "authorizer", port);
    let envoy = Envoy::start_with(&config, 1).unwrap_or_else(|e| panic!("{e}"));
    let response = http::get(
        &envoy.url("/orders/7"),
        &[("authorization", "Bearer alice")],
    )
    .expect("response");
    assert_eq!(response.status, 503);
    assert_eq!(response.header("x-ca-error-code"), Some("A503AU"));
    // Envoy answers a call it cannot connect itself, with 503.
    assert_eq!(envoy.stat("wasmcustom.gw.ext_auth.failure.status"), 1);
}

#[test]
fn the_json_shape_names_the_request_and_every_identity_source() {
    let gateway = gateway(&json!({
        "authorizer": {"cluster": "authorizer", "path": "/v1/authorize", "shape": "json"},
        "identity": [
            {"from": "header", "name": "authorization"},
            {"from": "query", "name": "tenant"},
            {"from": "path_param", "name": "id"},
            {"from": "client_ip"}
        ],
        "rules": [{"match": {"path": {"template": "/orders/{id}"}}}]
    }));
    let response = gateway.get(
        "/orders/42?tenant=acme",
        &[("authorization", "Bearer alice")],
    );
    // The JSON shape carries no Authorization header: the script says 401.
    assert_eq!(response.status, 401);
    let asked = gateway.authorizer.requests();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].method, "POST");
    assert_eq!(asked[0].path, "/v1/authorize");
    let body: Value = serde_json::from_slice(&asked[0].body).expect("a JSON body");
    assert_eq!(
        body,
        json!({"method": "GET", "path": "/orders/42?tenant=acme", "host": format!("127.0.0.1:{}", gateway.envoy.listener_port("main")),
               "identity": {"header": {"authorization": "Bearer alice"}, "query": {"tenant": "acme"},
                            "path_param": {"id": "42"}, "client_ip": "127.0.0.1"}})
    );
}

#[test]
fn a_bad_configuration_is_refused_with_the_field_named() {
    let mut bad = config();
    bad["authorizer"]["timeout_ms"] = json!(0);
    let log = Envoy::expect_refused(&gateway_config(&[WasmFilter::json("ext_auth", &bad)], &[1]));
    assert!(
        log.contains("ext_auth: invalid configuration: authorizer.timeout_ms"),
        "{log}"
    );
}

/// An admin listener on an ephemeral port, for the shipped example (which has none).
const ADMIN: &str =
    "admin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }\n";

#[test]
fn the_shipped_example_config_validates_and_serves() {
    let module = wasm_module("ext_auth").display().to_string();
    let wasm_path = "target/wasm32-wasip1/release/ext_auth.wasm";
    let text = shipped_config("ext-auth.yaml", &[(wasm_path, module.clone())]);
    let (ok, output) = validate(&text, "yaml");
    assert!(ok, "envoy/ext-auth.yaml is refused:\n{output}");
    let broken = text.replace(r#""timeout_ms": 200"#, r#""timeout_ms": 0"#);
    assert_ne!(broken, text, "the example has a 200 ms timeout");
    let (ok, output) = validate(&broken, "yaml");
    assert!(!ok);
    assert!(
        output.contains("ext_auth: invalid configuration: authorizer.timeout_ms"),
        "{output}"
    );

    let upstream = EchoServer::start("echo").expect("echo upstream");
    let authorizer = EchoServer::start_scripted("authorizer", authorize).expect("authorizer");
    let envoy = start_yaml(
        &shipped_config(
            "ext-auth.yaml",
            &[
                (wasm_path, module),
                ("static_resources:", format!("{ADMIN}static_resources:")),
                ("port_value: 10000", "port_value: 0".into()),
                (
                    "port_value: 18081",
                    format!("port_value: {}", upstream.port()),
                ),
                (
                    "port_value: 18084",
                    format!("port_value: {}", authorizer.port()),
                ),
            ],
        ),
        1,
    );
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", envoy.listener_port("http"));
    let health = http::get(&url("/health"), &[]).expect("response");
    assert_eq!(health.status, 200, "exempt from authorization");
    let allowed =
        http::get(&url("/orders"), &[("authorization", "Bearer alice")]).expect("response");
    assert_eq!(allowed.status, 200);
    assert_eq!(upstream.requests()[1].header("x-user-id"), Some("alice"));
    let refused = http::get(&url("/orders"), &[]).expect("response");
    assert_eq!(refused.status, 401);
    assert_eq!(authorizer.request_count(), 1);
}
