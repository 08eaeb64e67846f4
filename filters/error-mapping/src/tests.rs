use crate::compile_config;
use crate::steps::{ErrorMappingSteps, Metrics};
use crate::FILTER_NAME;
use gateway_common::host::{FakeHost, Host};
use gateway_common::identity::{self, Identity};
use gateway_common::stream::{Effect, FakeStream, PolicySteps, Verdict};
use proptest::prelude::*;
use std::rc::Rc;

/// Roles: Alibaba's own example (a 200 whose JSON `result_code` is not
/// OK); legacy: by status, the backend's body kept; apps: by a response
/// header, per app.
const CONFIG: &str = r#"{
  "max_body_bytes": 256,
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
       "message": "Role Not Exists, RequestId=${resultId}"},
      {"code": "INVALID_PARAMETER", "status": 400,
       "message": "Invalid Parameter ${param.roleId}, RequestId=${resultId}"}
    ],
    "default": {"status": 500, "message": "Unknown Error, ${resultCode}, RequestId=${resultId}"}
  }, {
    "name": "legacy",
    "match": {"path": {"prefix": "/legacy"}},
    "mappings": [
      {"code": "404", "status": 410, "message": "Gone"},
      {"code": "503", "status": 502, "error_code": "B502LG", "message": "Legacy backend down"}
    ],
    "body": "backend"
  }, {
    "name": "apps",
    "match": {"path": {"prefix": "/apps"}},
    "condition": "status >= 500 && app == '203751'",
    "error_code": "response.header.x-backend-error",
    "mappings": [{"code": "QUOTA", "status": 429, "message": "Try later (${app})"}]
  }]
}"#;

fn steps(config: &str, stream: &mut FakeStream) -> ErrorMappingSteps {
    let policy = compile_config(config.as_bytes()).expect("config");
    let metrics = Metrics::define(stream);
    ErrorMappingSteps::new(Rc::new(policy), metrics)
}

fn request(path: &str) -> FakeHost {
    FakeHost::new()
        .with_header(":method", "GET")
        .with_header(":path", path)
        .with_header(":authority", "shop")
        .with_header("x-request-id", "req-7")
}

/// A backend's answer as the policy receives it.
struct Answer<'a> {
    status: u16,
    headers: &'a [(&'a str, &'a str)],
    /// The body in chunks; none: the headers end the response.
    chunks: &'a [&'a str],
}

impl<'a> Answer<'a> {
    fn json(status: u16, body: &'a [&'a str]) -> Self {
        Self {
            status,
            headers: &[("content-type", "application/json")],
            chunks: body,
        }
    }
}

/// What the client gets: the verdicts of each callback, and the stream
/// with the response as the policy left it.
struct Outcome {
    verdicts: Vec<Verdict>,
    stream: FakeStream,
}

impl Outcome {
    fn status(&self) -> Option<String> {
        self.header(":status")
    }

    fn header(&self, name: &str) -> Option<String> {
        use gateway_common::stream::Stream;
        self.stream.response_header(name)
    }

    fn body(&self) -> String {
        String::from_utf8_lossy(&self.stream.response_body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stream.response_body).unwrap_or_default()
    }

    fn counted(&self, name: &str) -> u64 {
        self.stream.counted(FILTER_NAME, name)
    }
}

/// Runs a request and the backend's answer through the policy. Chunks are
/// delivered as a host does: while the policy holds the body, each
/// callback shows all of it so far; otherwise only the new chunk, which
/// the policy may replace.
fn run(config: &str, host: FakeHost, answer: Answer<'_>) -> Outcome {
    let mut stream = FakeStream::new(host);
    let mut steps = steps(config, &mut stream);
    let mut verdicts = vec![steps.on_request_headers(&mut stream, true)];
    stream.response_headers = std::iter::once((":status".to_string(), answer.status.to_string()))
        .chain(
            answer
                .headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string())),
        )
        .collect();
    // The upstream's answer, unless the test says who answered.
    if stream
        .host
        .property(&["response", "code_details"])
        .is_none()
    {
        stream.set_property(&["response", "code_details"], b"via_upstream");
    }
    verdicts.push(steps.on_response_headers(&mut stream, answer.chunks.is_empty()));
    let mut sent = Vec::new();
    let mut holding = verdicts.last() == Some(&Verdict::Pause);
    for (index, chunk) in answer.chunks.iter().enumerate() {
        let end = index + 1 == answer.chunks.len();
        stream.response_body.extend_from_slice(chunk.as_bytes());
        let size = stream.response_body.len();
        let verdict = steps.on_response_body(&mut stream, size, end);
        verdicts.push(verdict);
        holding = verdict == Verdict::Pause;
        if !holding {
            sent.append(&mut stream.response_body);
        }
    }
    if !holding {
        stream.response_body = sent;
    }
    Outcome { verdicts, stream }
}

#[test]
fn alibabas_example_maps_a_200_with_an_error_code_to_a_404_in_the_error_shape() {
    let outcome = run(
        CONFIG,
        request("/roles/7"),
        Answer::json(
            200,
            &[r#"{"req_msg_id":"d02afa56","result_code":"ROLE_NOT_EXISTS"}"#],
        ),
    );
    assert_eq!(
        outcome.verdicts,
        [Verdict::Continue, Verdict::Pause, Verdict::Continue]
    );
    assert_eq!(outcome.status().as_deref(), Some("404"));
    assert_eq!(outcome.header("x-ca-error-code").as_deref(), Some("B404RN"));
    assert_eq!(
        outcome.header("x-ca-error-message").as_deref(),
        Some("Role Not Exists, RequestId=d02afa56")
    );
    assert_eq!(outcome.header("x-ca-request-id").as_deref(), Some("req-7"));
    assert_eq!(
        outcome.json(),
        serde_json::json!({"code": "B404RN", "message": "Role Not Exists, RequestId=d02afa56", "request_id": "req-7"})
    );
    assert_eq!(
        outcome.header("content-length"),
        Some(outcome.body().len().to_string())
    );
    assert_eq!(outcome.counted("mapped"), 1);
    // The backend's own answer is kept for the logs.
    assert_eq!(
        identity::backend_answer(&outcome.stream),
        (Some(200), Some("ROLE_NOT_EXISTS".to_string()))
    );
}

#[test]
fn a_message_reads_the_requests_values_and_a_mapping_without_error_code_gets_the_default_one() {
    let outcome = run(
        CONFIG,
        request("/roles/abc"),
        Answer::json(
            200,
            &[r#"{"req_msg_id":"r1","result_code":"INVALID_PARAMETER"}"#],
        ),
    );
    assert_eq!(outcome.status().as_deref(), Some("400"));
    assert_eq!(outcome.header("x-ca-error-code").as_deref(), Some("B400EM"));
    assert_eq!(
        outcome.json()["message"],
        "Invalid Parameter abc, RequestId=r1"
    );
}

#[test]
fn an_error_no_mapping_names_gets_the_default() {
    let outcome = run(
        CONFIG,
        request("/roles/7"),
        Answer::json(200, &[r#"{"req_msg_id":"r2","result_code":"DISK_FULL"}"#]),
    );
    assert_eq!(outcome.status().as_deref(), Some("500"));
    assert_eq!(
        outcome.json()["message"],
        "Unknown Error, DISK_FULL, RequestId=r2"
    );
}

#[test]
fn a_success_passes_untouched_however_it_arrives() {
    for chunks in [
        &[r#"{"result_code":"OK","data":[1,2,3]}"#][..],
        &[r#"{"result_code":"#, r#""OK","data":[1,2,3]}"#][..],
    ] {
        let outcome = run(CONFIG, request("/roles/7"), Answer::json(200, chunks));
        assert_eq!(outcome.status().as_deref(), Some("200"));
        assert_eq!(outcome.body(), r#"{"result_code":"OK","data":[1,2,3]}"#);
        assert!(!outcome.stream.effects.iter().any(|e| matches!(
            e,
            Effect::SetResponseHeader(..) | Effect::ReplaceResponseBody(_)
        )));
        assert_eq!(outcome.counted("mapped"), 0);
        assert_eq!(identity::backend_answer(&outcome.stream), (None, None));
    }
}

#[test]
fn a_body_in_chunks_is_held_and_read_whole() {
    let outcome = run(
        CONFIG,
        request("/roles/7"),
        Answer::json(
            200,
            &[
                r#"{"req_msg_id":"r3","#,
                r#""result_code":"ROLE_"#,
                r#"NOT_EXISTS"}"#,
            ],
        ),
    );
    assert_eq!(
        outcome.verdicts,
        [
            Verdict::Continue,
            Verdict::Pause,
            Verdict::Pause,
            Verdict::Pause,
            Verdict::Continue
        ]
    );
    assert_eq!(outcome.status().as_deref(), Some("404"));
}

#[test]
fn a_body_over_the_limit_passes_unmapped_and_counted() {
    let big = format!(
        r#"{{"result_code":"ROLE_NOT_EXISTS","pad":"{}"}}"#,
        "x".repeat(300)
    );
    // Declared too large: not even held.
    let declared = run(
        CONFIG,
        request("/roles/7"),
        Answer {
            status: 200,
            headers: &[
                ("content-type", "application/json"),
                ("content-length", &big.len().to_string()),
            ],
            chunks: &[&big],
        },
    );
    assert_eq!(declared.verdicts[1], Verdict::Continue);
    assert_eq!(declared.status().as_deref(), Some("200"));
    assert_eq!(declared.body(), big);
    assert_eq!(declared.counted("body_too_large"), 1);
    // Found too large while held: let go.
    let (head, tail) = big.split_at(200);
    let held = run(
        CONFIG,
        request("/roles/7"),
        Answer::json(200, &[head, tail]),
    );
    assert_eq!(held.status().as_deref(), Some("200"));
    assert_eq!(held.body(), big);
    assert_eq!(held.counted("body_too_large"), 1);
}

#[test]
fn a_body_that_is_not_json_is_not_held_and_passes_unmapped() {
    let outcome = run(
        CONFIG,
        request("/roles/7"),
        Answer {
            status: 200,
            headers: &[("content-type", "text/plain")],
            chunks: &["result_code=ROLE_NOT_EXISTS"],
        },
    );
    // Its fields would be null, and `null <> 'OK'` would map a success.
    assert_eq!(outcome.verdicts, [Verdict::Continue; 3]);
    assert_eq!(outcome.status().as_deref(), Some("200"));
    assert_eq!(outcome.body(), "result_code=ROLE_NOT_EXISTS");
    assert_eq!(outcome.counted("unreadable"), 1);
}

#[test]
fn a_json_body_that_does_not_parse_is_one_without_fields() {
    let outcome = run(
        CONFIG,
        request("/roles/7"),
        Answer::json(200, &[r#"{"result_code": "ROLE_NOT_EXISTS""#]),
    );
    assert_eq!(outcome.status().as_deref(), Some("500"));
    assert_eq!(outcome.json()["message"], "Unknown Error, , RequestId=");
}

#[test]
fn by_status_with_the_backends_body_kept() {
    let outcome = run(
        CONFIG,
        request("/legacy/items"),
        Answer {
            status: 503,
            headers: &[("content-type", "text/html")],
            chunks: &["<h1>down</h1>"],
        },
    );
    assert_eq!(outcome.verdicts, [Verdict::Continue; 3]);
    assert_eq!(outcome.status().as_deref(), Some("502"));
    assert_eq!(outcome.header("x-ca-error-code").as_deref(), Some("B502LG"));
    assert_eq!(outcome.header("content-type").as_deref(), Some("text/html"));
    assert_eq!(outcome.body(), "<h1>down</h1>");
    assert_eq!(identity::backend_answer(&outcome.stream), (Some(503), None));
}

#[test]
fn by_status_a_status_no_mapping_names_passes_and_is_counted() {
    let outcome = run(
        CONFIG,
        request("/legacy/items"),
        Answer {
            status: 500,
            headers: &[],
            chunks: &["oops"],
        },
    );
    assert_eq!(outcome.status().as_deref(), Some("500"));
    assert_eq!(outcome.body(), "oops");
    assert_eq!(outcome.counted("unmapped"), 1);
    // Not an error at all: neither counted.
    let ok = run(
        CONFIG,
        request("/legacy/items"),
        Answer {
            status: 200,
            headers: &[],
            chunks: &["fine"],
        },
    );
    assert_eq!((ok.counted("unmapped"), ok.counted("mapped")), (0, 0));
}

#[test]
fn a_status_mapped_on_the_headers_holds_the_backends_body_and_replaces_it_with_its_length() {
    let outcome = run(
        CONFIG,
        request("/legacy/gone"),
        Answer {
            status: 404,
            headers: &[("content-length", "9")],
            chunks: &["not ", "found"],
        },
    );
    // Body "backend": the backend's body is kept.
    assert_eq!(outcome.body(), "not found");
    let error_shape = CONFIG.replace(r#""body": "backend""#, r#""body": "error""#);
    let outcome = run(
        &error_shape,
        request("/legacy/gone"),
        Answer {
            status: 404,
            headers: &[("content-length", "9")],
            chunks: &["not ", "found"],
        },
    );
    assert_eq!(
        outcome.verdicts,
        [
            Verdict::Continue,
            Verdict::Pause,
            Verdict::Pause,
            Verdict::Continue
        ]
    );
    assert_eq!(outcome.status().as_deref(), Some("410"));
    assert_eq!(
        outcome.header("content-length"),
        Some(outcome.body().len().to_string())
    );
    assert_eq!(outcome.json()["message"], "Gone");
    assert_eq!(outcome.json()["code"], "B410EM");
}

#[test]
fn a_large_backend_error_body_is_dropped_as_it_streams() {
    let error_shape = CONFIG.replace(r#""body": "backend""#, r#""body": "error""#);
    let big = "x".repeat(300);
    let outcome = run(
        &error_shape,
        request("/legacy/gone"),
        Answer {
            status: 404,
            headers: &[],
            chunks: &["<html>", &big, "more", "</html>"],
        },
    );
    // Dropped as it comes, the headers held so the error body goes with
    // its length.
    assert_eq!(
        outcome.verdicts,
        [
            Verdict::Continue,
            Verdict::Pause,
            Verdict::Pause,
            Verdict::Pause,
            Verdict::Pause,
            Verdict::Continue
        ]
    );
    assert_eq!(outcome.json()["message"], "Gone");
    assert_eq!(
        outcome.header("content-length"),
        Some(outcome.body().len().to_string())
    );
}

#[test]
fn a_response_without_body_gets_the_status_and_headers_only() {
    let error_shape = CONFIG.replace(r#""body": "backend""#, r#""body": "error""#);
    let outcome = run(
        &error_shape,
        request("/legacy/gone"),
        Answer {
            status: 404,
            headers: &[],
            chunks: &[],
        },
    );
    assert_eq!(outcome.status().as_deref(), Some("410"));
    assert_eq!(outcome.header("x-ca-error-code").as_deref(), Some("B410EM"));
    assert_eq!(outcome.body(), "");
}

#[test]
fn by_a_response_header_and_the_verified_app() {
    let host = request("/apps/x");
    identity::publish(
        &host,
        &Identity {
            app_key: "203751".into(),
            ..Identity::default()
        },
    );
    let answer = || Answer {
        status: 500,
        headers: &[("x-backend-error", "QUOTA")],
        chunks: &["{}"],
    };
    let outcome = run(CONFIG, host, answer());
    assert_eq!(outcome.status().as_deref(), Some("429"));
    assert_eq!(outcome.json()["message"], "Try later (203751)");
    assert_eq!(
        identity::backend_answer(&outcome.stream),
        (Some(500), Some("QUOTA".into()))
    );
    // Another app's error is not this rule's.
    let other = run(CONFIG, request("/apps/x"), answer());
    assert_eq!(other.status().as_deref(), Some("500"));
}

#[test]
fn only_the_upstreams_own_answers_are_mapped() {
    // A policy's reply, a mock, Envoy's own 503: not the backend's answer.
    let host = request("/legacy/items").with_property(&["response", "code_details"], "wasm_filter");
    let outcome = run(
        CONFIG,
        host,
        Answer {
            status: 503,
            headers: &[("x-ca-error-code", "A503CB")],
            chunks: &["{}"],
        },
    );
    assert_eq!(outcome.status().as_deref(), Some("503"));
    assert_eq!(outcome.header("x-ca-error-code").as_deref(), Some("A503CB"));
}

#[test]
fn a_request_no_rule_matches_is_left_alone() {
    let outcome = run(
        CONFIG,
        request("/other"),
        Answer::json(500, &[r#"{"result_code":"X"}"#]),
    );
    assert_eq!(outcome.verdicts, [Verdict::Continue; 3]);
    assert_eq!(outcome.status().as_deref(), Some("500"));
    assert!(outcome.stream.effects.is_empty());
}

#[test]
fn hostile_backend_values_cannot_inject_headers_or_break_the_body() {
    let outcome = run(
        CONFIG,
        request("/roles/7"),
        Answer::json(
            200,
            &[r#"{"req_msg_id":"a\r\nset-cookie: x=1\"}","result_code":"ROLE_NOT_EXISTS"}"#],
        ),
    );
    let message = outcome.header("x-ca-error-message").unwrap_or_default();
    assert!(!message.contains('\r') && !message.contains('\n'));
    assert_eq!(outcome.json()["code"], "B404RN");
    assert!(outcome.json()["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("Role Not Exists, RequestId=a")));
}

#[test]
fn an_answer_whose_body_cannot_be_read_passes_unmapped() {
    // HEAD, a body-less answer, a compressed one: `$resultCode` would be
    // null and `null <> 'OK'` would map a success.
    let head = FakeHost::new()
        .with_header(":method", "HEAD")
        .with_header(":path", "/roles/7")
        .with_header(":authority", "shop");
    let gzip = Answer {
        status: 200,
        headers: &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        chunks: &["(gzip bytes)"],
    };
    for (host, answer) in [
        (head, Answer::json(200, &[])),
        (request("/roles/7"), Answer::json(200, &[])),
        (request("/roles/7"), gzip),
    ] {
        let outcome = run(CONFIG, host, answer);
        assert_eq!(outcome.status().as_deref(), Some("200"));
        assert_eq!(outcome.counted("unreadable"), 1);
        assert_eq!(outcome.counted("mapped"), 0);
    }
}

#[test]
fn trailers_without_a_body_let_held_headers_go_unmapped() {
    let mut stream = FakeStream::new(request("/roles/7"));
    let mut steps = steps(CONFIG, &mut stream);
    steps.on_request_headers(&mut stream, true);
    stream.set_property(&["response", "code_details"], b"via_upstream");
    stream.response_headers = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "application/json".into()),
    ];
    assert_eq!(
        steps.on_response_headers(&mut stream, false),
        Verdict::Pause
    );
    assert_eq!(steps.on_response_trailers(&mut stream), Verdict::Continue);
    assert_eq!(stream.counted(FILTER_NAME, "unreadable"), 1);
    assert!(stream.effects.is_empty(), "{:?}", stream.effects);
}

#[test]
fn a_mapped_head_gets_the_length_a_get_would_get_and_no_backend_body_headers() {
    let error_shape = CONFIG.replace(r#""body": "backend""#, r#""body": "error""#);
    let head = FakeHost::new()
        .with_header(":method", "HEAD")
        .with_header(":path", "/legacy/gone")
        .with_header(":authority", "shop")
        .with_header("x-request-id", "req-7");
    let outcome = run(
        &error_shape,
        head,
        Answer {
            status: 404,
            headers: &[
                ("content-length", "9"),
                ("etag", "\"v1\""),
                ("content-encoding", "br"),
            ],
            chunks: &[],
        },
    );
    assert_eq!(outcome.status().as_deref(), Some("410"));
    let get = run(
        &error_shape,
        request("/legacy/gone"),
        Answer {
            status: 404,
            headers: &[],
            chunks: &["not found"],
        },
    );
    assert_eq!(
        outcome.header("content-length"),
        get.header("content-length")
    );
    assert_eq!(outcome.header("etag"), None);
    assert_eq!(outcome.header("content-encoding"), None);
}

#[test]
fn alibabas_own_field_names_are_read_as_written() {
    let alibaba = r#"{"rules": [{
        "match": {"path": {"prefix": "/roles"}},
        "parameters": {"statusCode": "StatusCode", "resultCode": "BodyJsonField:$.result_code"},
        "errorCondition": "$statusCode = 200 and $resultCode <> 'OK'",
        "errorCode": "resultCode",
        "mappings": [{"code": "ROLE_NOT_EXISTS", "statusCode": 404, "errorMessage": "Role Not Exists"}],
        "defaultMapping": {"statusCode": 500, "errorMessage": "Unknown Error, ${resultCode}"}
    }]}"#;
    let outcome = run(
        alibaba,
        request("/roles/7"),
        Answer::json(200, &[r#"{"result_code":"ROLE_NOT_EXISTS"}"#]),
    );
    assert_eq!(outcome.status().as_deref(), Some("404"));
    assert_eq!(outcome.json()["message"], "Role Not Exists");
}

#[test]
fn a_bad_configuration_names_the_field() {
    for (config, field, says) in [
        (
            r#"{"rules":[{"mappings":[]}]}"#,
            "rules[0].mappings",
            "at least one mapping",
        ),
        (
            r#"{"rules":[{"mappings":[{"status":404}]}]}"#,
            "rules[0].mappings[0].code",
            "needs the `code`",
        ),
        (
            r#"{"rules":[{"mappings":[{"code":"1","status":700}]}]}"#,
            "rules[0].mappings[0].status",
            "200 to 599",
        ),
        (
            r#"{"rules":[{"mappings":[{"code":"1","status":304}]}]}"#,
            "rules[0].mappings[0].status",
            "not 204, 205 or 304",
        ),
        (
            r#"{"max_body_bytes":999999999,"rules":[]}"#,
            "max_body_bytes",
            "buffer limit",
        ),
        (
            r#"{"rules":[{"mappings":[{"code":"1","status":404},{"code":"1","status":400}]}]}"#,
            "rules[0].mappings[1].code",
            "mapped twice",
        ),
        (
            r#"{"rules":[{"default":{"code":"1","status":500}}]}"#,
            "rules[0].default.code",
            "takes no `code`",
        ),
        (
            r#"{"rules":[{"condition":"json.code == 1","default":{"status":500}}]}"#,
            "rules[0].condition",
            "request body is not kept",
        ),
        (
            r#"{"rules":[{"condition":"status >","default":{"status":500}}]}"#,
            "rules[0].condition",
            "at ",
        ),
        (
            r#"{"rules":[{"default":{"status":500,"message":"${nope}"}}]}"#,
            "rules[0].default.message",
            "nope",
        ),
        (
            r#"{"rules":[{"default":{"status":500,"message":"${open"}}]}"#,
            "rules[0].default.message",
            "not closed",
        ),
        (
            r#"{"rules":[{"error_code":"'x'","default":{"status":500}}]}"#,
            "rules[0].error_code",
            "not a literal",
        ),
        (
            r#"{"rules":[{"parameters":{"s":"Form:x"},"default":{"status":500}}]}"#,
            "rules[0].parameters.s",
            "request body is not kept",
        ),
        (
            r#"{"max_body_bytes":0,"rules":[]}"#,
            "max_body_bytes",
            "must be 1 to",
        ),
        (
            r#"{"rules":[{"default":{"status":500}, "extra":1}]}"#,
            "extra",
            "unknown field",
        ),
    ] {
        let err = compile_config(config.as_bytes()).expect_err(config);
        let text = err.to_string();
        assert!(
            text.contains(field) && text.contains(says),
            "{config}: {text}"
        );
    }
}

#[test]
fn a_request_condition_cannot_read_the_response() {
    let mut compiler = gateway_common::condition::Compiler::new(&Default::default()).unwrap();
    let err = compiler
        .compile("status == 500")
        .expect_err("request phase");
    assert!(err.contains("only a response condition"), "{err}");
}

proptest! {
    /// Whatever codes and ids a backend's JSON carries, the mapped answer's
    /// headers carry no line break and its body is the shared shape, with
    /// the backend's id in the message as far as it is header-safe.
    #[test]
    fn any_backend_values_give_a_safe_mapped_answer(
        code in prop_oneof![Just("ROLE_NOT_EXISTS".to_string()), Just("INVALID_PARAMETER".to_string()), "\\PC{0,40}"],
        id in "\\PC{0,600}",
        split in 0usize..200,
    ) {
        let body = serde_json::json!({"req_msg_id": id, "result_code": code}).to_string();
        let split = body.char_indices().map(|(i, _)| i).find(|i| *i >= split).unwrap_or(body.len());
        let (head, tail) = body.split_at(split);
        let outcome = run(CONFIG, request("/roles/1"), Answer::json(200, &[head, tail]));
        if code == "OK" {
            return Ok(());
        }
        if body.len() > 256 {
            prop_assert_eq!(outcome.counted("body_too_large"), 1);
            return Ok(());
        }
        prop_assert_eq!(outcome.counted("mapped"), 1);
        for (name, value) in &outcome.stream.response_headers {
            prop_assert!(!value.contains('\n') && !value.contains('\r'), "{}: {}", name, value);
            prop_assert!(value.len() <= 512, "{}", name);
        }
        let json = outcome.json();
        prop_assert!(json["code"].is_string() && json["message"].is_string());
    }
}
