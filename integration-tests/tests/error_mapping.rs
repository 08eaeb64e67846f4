//! error-mapping in a real Envoy, before a circuit breaker: a scripted
//! backend answers errors in its own ways (a 200 whose JSON carries an
//! error code, plain statuses); the client sees them mapped, the backend's
//! successes and large bodies pass untouched, and the gateway's own
//! answers (the breaker's) are never mapped.

use integration_tests::echo::{EchoServer, Reply};
use integration_tests::envoy::{gateway_config, Envoy, WasmFilter};
use integration_tests::http::{self, Response};
use serde_json::{json, Value};

/// A success larger than `max_body_bytes`, and than Envoy's buffer limit.
const LARGE_BODY_BYTES: usize = 5 * 1024 * 1024;

fn error_mapping() -> Value {
    json!({
        "max_body_bytes": 65536,
        "rules": [{
            "name": "roles",
            "match": {"path": {"template": "/roles/{roleId}"}},
            "parameters": {
                "statusCode": "StatusCode",
                "resultCode": "BodyJsonField:$.result_code",
                "resultId": "BodyJsonField:$.req_msg_id"
            },
            "condition": "$statusCode = 200 and $resultCode <> 'OK'",
            "error_code": "resultCode",
            "mappings": [
                {"code": "ROLE_NOT_EXISTS", "status": 404, "error_code": "B404RN",
                 "message": "Role ${param.roleId} Not Exists, RequestId=${resultId}"}
            ],
            "default": {"status": 500, "message": "Unknown Error, ${resultCode}"}
        }, {
            "name": "legacy",
            "match": {"path": {"prefix": "/legacy"}},
            "mappings": [
                {"code": "404", "status": 410, "message": "Gone"},
                {"code": "503", "status": 422, "error_code": "B422LG", "message": "Legacy backend down"}
            ],
            "body": "backend"
        }]
    })
}

/// The backend: `/roles/<id>` answers 200 with a JSON result code (`OK`
/// for `ok`, a 5 MB `OK` for `large`), `/legacy/down` 503 and
/// `/legacy/gone` 404, with bodies of their own.
fn backend(request: &integration_tests::echo::ReceivedRequest) -> Reply {
    let json = |body: String| Reply::new(200, body).header("content-type", "application/json");
    match request.path.as_str() {
        "/roles/ok" => json(r#"{"result_code":"OK","roles":["admin"]}"#.into()),
        "/roles/large" => json(format!(
            r#"{{"result_code":"ROLE_NOT_EXISTS","pad":"{}"}}"#,
            "x".repeat(LARGE_BODY_BYTES)
        )),
        "/roles/odd" => json(r#"{"req_msg_id":"m2","result_code":"DISK_FULL"}"#.into()),
        path if path.starts_with("/roles/") => {
            json(r#"{"req_msg_id":"m1","result_code":"ROLE_NOT_EXISTS"}"#.into())
        }
        "/legacy/down" => Reply::new(503, "<h1>down</h1>").header("content-type", "text/html"),
        "/legacy/gone" => Reply::new(404, "no such page"),
        _ => Reply::new(200, "plain"),
    }
}

struct Gateway {
    envoy: Envoy,
    upstream: EchoServer,
}

fn gateway() -> Gateway {
    let upstream = EchoServer::start_scripted("backend", backend).expect("backend");
    let filters = [
        WasmFilter::json("error_mapping", &error_mapping()),
        WasmFilter::json(
            "circuit_breaker",
            &json!({"rules": [{
                "name": "legacy",
                "match": {"path": {"prefix": "/legacy/down"}},
                "trip": {"consecutive_failures": 2},
                "open": {"duration_ms": 60000}
            }]}),
        ),
    ];
    let envoy = Envoy::start(&gateway_config(&filters, &[upstream.port()]));
    Gateway { envoy, upstream }
}

impl Gateway {
    fn send(&self, method: &str, path: &str) -> Response {
        http::send(&http::agent(), method, &self.envoy.url(path), &[], None).expect("response")
    }

    fn stat(&self, name: &str) -> u64 {
        self.envoy
            .stat(&format!("wasmcustom.gw.error_mapping.{name}"))
    }
}

#[test]
fn a_200_carrying_an_error_code_reaches_the_client_as_the_mapped_error() {
    let gw = gateway();
    let response = gw.send("GET", "/roles/7");
    assert_eq!(response.status, 404, "{}", response.text());
    assert_eq!(response.header("x-ca-error-code"), Some("B404RN"));
    assert_eq!(
        response.header("x-ca-error-message"),
        Some("Role 7 Not Exists, RequestId=m1")
    );
    let request_id = response
        .header("x-ca-request-id")
        .expect("the request's id");
    assert_eq!(
        response.json(),
        json!({"code": "B404RN", "message": "Role 7 Not Exists, RequestId=m1", "request_id": request_id})
    );
    assert_eq!(
        response.header("content-length"),
        Some(response.body.len().to_string().as_str())
    );
    assert_eq!(gw.upstream.request_count(), 1, "the backend was called");

    let other = gw.send("GET", "/roles/odd");
    assert_eq!(other.status, 500);
    assert_eq!(other.json()["code"], "B500EM");
    assert_eq!(other.json()["message"], "Unknown Error, DISK_FULL");
    assert_eq!(gw.stat("mapped"), 2);
}

#[test]
fn a_success_and_a_body_too_large_to_read_pass_untouched() {
    let gw = gateway();
    let ok = gw.send("GET", "/roles/ok");
    assert_eq!(ok.status, 200);
    // A HEAD has no body to read: passed, not mapped on a missing field.
    assert_eq!(gw.send("HEAD", "/roles/7").status, 200);
    assert_eq!(gw.stat("unreadable"), 1);
    assert_eq!(ok.text(), r#"{"result_code":"OK","roles":["admin"]}"#);
    assert_eq!(ok.header("x-ca-error-code"), None);

    // Its code would map, but the body is over max_body_bytes: the client
    // gets it whole, as the backend sent it.
    let large = gw.send("GET", "/roles/large");
    assert_eq!(large.status, 200);
    let frame = r#"{"result_code":"ROLE_NOT_EXISTS","pad":""}"#.len();
    assert_eq!(large.body.len(), LARGE_BODY_BYTES + frame);
    assert!(large
        .text()
        .starts_with(r#"{"result_code":"ROLE_NOT_EXISTS","pad":"xxx"#));
    assert_eq!(gw.stat("body_too_large"), 1);
    assert_eq!(gw.stat("mapped"), 0);
}

#[test]
fn statuses_map_with_the_backends_body_kept_and_the_breaker_sees_the_real_one() {
    let gw = gateway();
    let gone = gw.send("GET", "/legacy/gone");
    assert_eq!(gone.status, 410);
    assert_eq!(gone.header("x-ca-error-code"), Some("B410EM"));
    assert_eq!(gone.header("x-ca-error-message"), Some("Gone"));
    assert_eq!(gone.text(), "no such page");

    let head = gw.send("HEAD", "/legacy/gone");
    assert_eq!(head.status, 410);
    assert!(head.body.is_empty());

    // The breaker (after error mapping in the chain, so before it on the
    // way back) counts the backend's 503s, which the client sees as 422s:
    // a 4xx it would not count.
    for _ in 0..2 {
        let down = gw.send("GET", "/legacy/down");
        assert_eq!(down.status, 422, "{}", down.text());
        assert_eq!(down.header("x-ca-error-code"), Some("B422LG"));
        assert_eq!(down.text(), "<h1>down</h1>");
        assert_eq!(down.header("content-type"), Some("text/html"));
    }
    // Open now: the breaker's own answer is the gateway's, never mapped.
    let calls = gw.upstream.request_count();
    let open = gw.send("GET", "/legacy/down");
    assert_eq!(open.status, 503, "{}", open.text());
    assert_eq!(open.header("x-ca-error-code"), Some("A503CB"));
    assert_eq!(gw.upstream.request_count(), calls);
    assert_eq!(gw.stat("mapped"), 4);
}

#[test]
fn a_request_no_rule_matches_is_passed_through() {
    let gw = gateway();
    assert_eq!(gw.send("GET", "/roles/7").status, 404);
    assert_eq!(gw.stat("mapped"), 1);
    let response = gw.send("GET", "/elsewhere");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "plain");
    assert_eq!((gw.stat("mapped"), gw.stat("unmapped")), (1, 0));
}
