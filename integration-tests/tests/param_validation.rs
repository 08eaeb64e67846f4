//! param-validation in a real Envoy: what the upstream sees after validation,
//! and what a client gets for each violation.

use integration_tests::echo::EchoServer;
use integration_tests::envoy::{gateway_config, Envoy, WasmFilter};
use integration_tests::http::{self, Response};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

struct Gateway {
    envoy: Envoy,
    upstream: EchoServer,
}

fn config() -> Value {
    json!({"rules": [
        {
            "name": "create-order",
            "match": {"methods": ["POST"], "path": {"template": "/users/{id}/orders"}},
            "parameters": [
                {"name": "id", "in": "path", "type": "integer", "minimum": 1},
                {"name": "dry_run", "in": "query", "type": "boolean", "default": "false"},
                {"name": "x-trace", "in": "header", "pattern": "[0-9a-f]{8}"},
                {"name": "qty", "in": "body", "pointer": "/order/qty", "type": "integer", "minimum": 1, "maximum": 100, "required": true}
            ],
            "body_schema": {
                "type": "object",
                "required": ["order"],
                "properties": {"order": {"type": "object", "required": ["sku"], "properties": {"sku": {"type": "string", "minLength": 3}}}}
            },
            "max_body_bytes": 4096
        },
        {
            "name": "search",
            "match": {"path": {"exact": "/search"}},
            "parameters": [
                {"name": "q", "in": "query", "required": true, "max_length": 50},
                {"name": "page", "in": "query", "type": "integer", "minimum": 1, "maximum": 1000},
                {"name": "qty", "in": "form", "type": "integer", "minimum": 1}
            ]
        },
        {
            "name": "profile",
            "match": {"path": {"prefix": "/profile"}},
            "parameters": [{"name": "ids", "in": "query", "type": "array", "max_items": 3, "items": {"type": "integer"}}],
            "allowed_headers": ["accept", "user-agent", "host"],
            "other_content_types": "reject"
        }
    ]})
}

fn gateway() -> Gateway {
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let envoy = Envoy::start(&gateway_config(
        &[WasmFilter::json("param_validation", &config())],
        &[upstream.port()],
    ));
    Gateway { envoy, upstream }
}

fn assert_invalid(response: &Response, status: u16, code: &str, message: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.header("x-ca-error-code"), Some(code));
    assert_eq!(response.json()["message"], message, "{}", response.text());
}

#[test]
fn a_valid_request_reaches_the_upstream_without_undefined_query_parameters() {
    let gw = gateway();
    let response = http::get(
        &gw.envoy.url("/search?q=shoes&debug=1&page=2&admin=true"),
        &[],
    )
    .expect("response");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["query"], "q=shoes&page=2");
    assert_eq!(gw.upstream.request_count(), 1);
}

#[test]
fn a_json_body_is_validated_and_defaults_are_added() {
    let gw = gateway();
    let body = br#"{"order":{"sku":"abc-1","qty":3}}"#;
    let response = http::post(
        &gw.envoy.url("/users/7/orders"),
        &[
            ("content-type", "application/json"),
            ("x-trace", "0a1b2c3d"),
        ],
        body,
    )
    .expect("response");
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = response.json();
    assert_eq!(seen["query"], "dry_run=false");
    assert_eq!(seen["body"], String::from_utf8_lossy(body).as_ref());
}

#[test]
fn each_violation_gets_400_naming_the_parameter_and_the_upstream_sees_nothing() {
    let gw = gateway();
    let json_post = |path: &str, headers: &[(&str, &str)], body: &str| {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        http::post(&gw.envoy.url(path), &all, body.as_bytes()).expect("response")
    };
    let good = r#"{"order":{"sku":"abc","qty":3}}"#;
    assert_invalid(
        &json_post("/users/0/orders", &[], good),
        400,
        "A400PV",
        "Invalid Parameter: id must be >= 1",
    );
    assert_invalid(
        &json_post("/users/7/orders?dry_run=maybe", &[], good),
        400,
        "A400PV",
        "Invalid Parameter: dry_run must be true or false",
    );
    assert_invalid(
        &json_post("/users/7/orders", &[("x-trace", "xyz")], good),
        400,
        "A400PV",
        "Invalid Parameter: x-trace does not match the required pattern",
    );
    assert_invalid(
        &json_post(
            "/users/7/orders",
            &[],
            r#"{"order":{"sku":"abc","qty":101}}"#,
        ),
        400,
        "A400PV",
        "Invalid Parameter: qty must be <= 100",
    );
    assert_invalid(
        &json_post("/users/7/orders", &[], r#"{"order":{"sku":"abc"}}"#),
        400,
        "A400PV",
        "Invalid Parameter: qty is required",
    );
    let schema = json_post("/users/7/orders", &[], r#"{"order":{"sku":"a","qty":1}}"#);
    assert_eq!(schema.status, 400);
    assert!(
        schema.json()["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("Invalid Parameter: body "),
        "{}",
        schema.text()
    );
    let malformed = json_post("/users/7/orders", &[], r#"{"order":"#);
    assert_eq!(malformed.header("x-ca-error-code"), Some("A400BD"));
    assert_invalid(
        &http::get(&gw.envoy.url("/search?page=0"), &[]).expect("response"),
        400,
        "A400PV",
        "Invalid Parameter: q is required; page must be >= 1",
    );
    assert_eq!(
        http::get(&gw.envoy.url("/search?q=%zz"), &[])
            .expect("response")
            .status,
        400
    );
    assert_eq!(gw.upstream.request_count(), 0);
    assert_eq!(
        gw.envoy
            .stat("wasmcustom.gw.param_validation.denied.A400PV"),
        8
    );
}

#[test]
fn undefined_form_fields_are_dropped_and_the_length_stays_consistent() {
    let gw = gateway();
    let response = http::post(
        &gw.envoy.url("/search?q=x"),
        &[("content-type", "application/x-www-form-urlencoded")],
        b"qty=2&role=admin&debug=1",
    )
    .expect("response");
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = response.json();
    assert_eq!(seen["body"], "qty=2");
    assert_eq!(seen["headers"]["content-length"], "5");
}

#[test]
fn an_oversized_body_gets_413() {
    let gw = gateway();
    let big = format!(r#"{{"order":{{"sku":"{}","qty":1}}}}"#, "x".repeat(5000));
    let response = http::post(
        &gw.envoy.url("/users/7/orders"),
        &[("content-type", "application/json")],
        big.as_bytes(),
    )
    .expect("response");
    assert_eq!(response.status, 413, "{}", response.text());
    assert_eq!(response.header("x-ca-error-code"), Some("A413PB"));
    assert_eq!(gw.upstream.request_count(), 0);
}

/// Sends a POST with a chunked body, one piece at a time, and returns the status.
fn post_in_chunks(port: u16, path: &str, pieces: &[&str]) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("write");
    for piece in pieces {
        stream
            .write_all(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes())
            .expect("write");
        stream.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(30));
    }
    stream.write_all(b"0\r\n\r\n").expect("write");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_body_sent_in_several_chunks_is_validated_whole() {
    let gw = gateway();
    let port = gw.envoy.listener_port("main");
    assert_eq!(
        post_in_chunks(
            port,
            "/users/7/orders",
            &[r#"{"order":"#, r#"{"sku":"abc","#, r#""qty":5}}"#]
        ),
        200
    );
    assert_eq!(
        post_in_chunks(
            port,
            "/users/7/orders",
            &[r#"{"order":"#, r#"{"sku":"ab","#, r#""qty":5}}"#]
        ),
        400
    );
    assert_eq!(gw.upstream.request_count(), 1);
    assert_eq!(
        gw.upstream.requests()[0].body,
        br#"{"order":{"sku":"abc","qty":5}}"#
    );
}

#[test]
fn a_broken_regex_or_schema_is_refused_by_envoy_with_the_reason() {
    let bad_regex =
        json!({"rules": [{"parameters": [{"name": "a", "in": "query", "pattern": "(unclosed"}]}]});
    let log = Envoy::expect_refused(&gateway_config(
        &[WasmFilter::json("param_validation", &bad_regex)],
        &[1],
    ));
    assert!(log.contains("param_validation: invalid configuration: rules[0].parameters[0].pattern: invalid regular expression"), "{log}");
    let bad_schema = json!({"rules": [{"body_schema": {"type": "no-such-type"}}]});
    let log = Envoy::expect_refused(&gateway_config(
        &[WasmFilter::json("param_validation", &bad_schema)],
        &[1],
    ));
    assert!(log.contains("param_validation: invalid configuration: rules[0].body_schema: not a valid draft 7 schema"), "{log}");
}

#[test]
fn header_allowlists_arrays_and_content_types_apply_per_api() {
    let gw = gateway();
    let response = http::get(
        &gw.envoy.url("/profile?ids=1&ids=2"),
        &[
            ("accept", "application/json"),
            ("x-debug", "1"),
            ("cookie", "session=abc"),
        ],
    )
    .expect("response");
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = response.json();
    assert_eq!(seen["query"], "ids=1&ids=2");
    assert_eq!(seen["headers"]["accept"], "application/json");
    assert!(seen["headers"].get("x-debug").is_none(), "{seen}");
    assert!(seen["headers"].get("cookie").is_none(), "{seen}");
    let too_many =
        http::get(&gw.envoy.url("/profile?ids=1&ids=2&ids=3&ids=4"), &[]).expect("response");
    assert_invalid(
        &too_many,
        400,
        "A400PV",
        "Invalid Parameter: ids must have at most 3 items",
    );
    let upload = http::post(
        &gw.envoy.url("/profile"),
        &[("content-type", "image/png")],
        b"\x89PNG",
    )
    .expect("response");
    assert_eq!(upload.status, 415, "{}", upload.text());
    assert_eq!(upload.header("x-ca-error-code"), Some("A415CT"));
    assert_eq!(gw.upstream.request_count(), 1);
}
