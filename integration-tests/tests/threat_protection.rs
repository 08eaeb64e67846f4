//! threat-protection in a real Envoy: SQL and script injection refused in
//! every place it checks (query, path variable, chosen header, cookie, form
//! and JSON bodies), benign look-alikes and exempt values passed to the
//! echo upstream unchanged, hostile bodies (deep nesting, many keys, a huge
//! string, bytes that are not UTF-8) refused in the shared error shape while
//! the worker keeps serving, and `mode: log` letting a finding through;
//! log-push records what was found (never the value).

use integration_tests::echo::EchoServer;
use integration_tests::envoy::{add_cluster, gateway_config, Envoy, WasmFilter};
use integration_tests::http::{self, Response};
use serde_json::{json, Value};
use std::time::Duration;

fn threat_protection() -> Value {
    json!({
        "rules": [{
            "name": "items",
            "match": {"path": {"template": "/items/{id}"}},
            "locations": ["query", "path", "header", "cookie", "form", "json"],
            "headers": ["x-search"],
            "exempt": ["query.sql_help", "json.code_snippet"],
            "json": {"max_depth": 32, "max_entries": 1000, "max_string": 65536}
        }, {
            "name": "legacy",
            "match": {"path": {"prefix": "/legacy"}},
            "mode": "log"
        }]
    })
}

struct Gateway {
    envoy: Envoy,
    upstream: EchoServer,
    log_sink: EchoServer,
}

/// threat-protection, then log-push recording each call with its finding.
fn gateway() -> Gateway {
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let log_sink = EchoServer::start("sink").expect("log sink");
    let log_push = json!({
        "sink": {"cluster": "log_sink", "format": "ndjson", "path": "/ingest"},
        "batch": {"max_records": 1, "flush_interval_ms": 100},
        "fields": ["path", "status", "error_code", "threat", "threat_place", "threat_fingerprint"]
    });
    let filters = [
        WasmFilter::json("threat_protection", &threat_protection()),
        WasmFilter::json("log_push", &log_push),
    ];
    let mut config = gateway_config(&filters, &[upstream.port()]);
    add_cluster(&mut config, "log_sink", log_sink.port());
    let envoy = Envoy::start(&config);
    Gateway {
        envoy,
        upstream,
        log_sink,
    }
}

impl Gateway {
    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        http::send(&http::agent(), method, &self.envoy.url(path), headers, body).expect("response")
    }

    fn json(&self, body: &[u8]) -> Response {
        self.send(
            "POST",
            "/items/1",
            &[("content-type", "application/json")],
            Some(body),
        )
    }

    fn stat(&self, name: &str) -> u64 {
        self.envoy
            .stat(&format!("wasmcustom.gw.threat_protection.{name}"))
    }

    /// The log-push record of the call to `path`, once it has arrived.
    fn record_of(&self, path: &str) -> Value {
        let find = || {
            self.log_sink.requests().iter().find_map(|request| {
                let record: Value = serde_json::from_slice(&request.body).ok()?;
                (record["path"] == path).then_some(record)
            })
        };
        assert!(
            self.envoy
                .wait_for(Duration::from_secs(10), |_| find().is_some()),
            "no record of {path}: {}",
            self.envoy.log()
        );
        find().expect("the record")
    }
}

fn assert_refused(response: &Response, status: u16, code: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.header("x-ca-error-code"), Some(code));
    assert_eq!(response.json()["code"], code, "{}", response.text());
}

#[test]
fn injection_is_refused_in_every_place_and_never_echoed() {
    let gw = gateway();
    let sql = "1%27%20OR%20%271%27%3D%271";
    let script = "%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    // Method, path, headers, body (content type, text), expected code.
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        Option<(&'a str, &'a str)>,
        &'a str,
    );
    let multipart = "--b1\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nshoes\r\n\
        --b1\r\nContent-Disposition: form-data; name=\"bio\"\r\n\r\n\
        1 UNION SELECT password FROM users--\r\n--b1--\r\n";
    let cases: [Case; 8] = [
        ("GET", &format!("/items/1?q={sql}"), vec![], None, "A403SQ"),
        (
            "GET",
            &format!("/items/1?q={script}"),
            vec![],
            None,
            "A403XS",
        ),
        ("GET", &format!("/items/{sql}"), vec![], None, "A403SQ"),
        (
            "GET",
            "/items/1",
            vec![("x-search", "1 UNION SELECT password FROM users--")],
            None,
            "A403SQ",
        ),
        (
            "GET",
            "/items/1",
            vec![("cookie", "theme=dark; s=%3Csvg%20onload%3Dalert(1)%3E")],
            None,
            "A403XS",
        ),
        (
            "POST",
            "/items/1",
            vec![],
            Some((
                "application/x-www-form-urlencoded",
                "name=x&bio=%3Cimg+src%3Dx+onerror%3Dalert(1)%3E",
            )),
            "A403XS",
        ),
        (
            "POST",
            "/items/1",
            vec![],
            Some((
                "application/json",
                r#"{"order": {"notes": ["ok", "1 UNION SELECT password FROM users--"]}}"#,
            )),
            "A403SQ",
        ),
        (
            "POST",
            "/items/1",
            vec![],
            Some(("multipart/form-data; boundary=b1", multipart)),
            "A403SQ",
        ),
    ];
    for (method, path, mut headers, body, code) in cases {
        if let Some((content_type, _)) = body {
            headers.push(("content-type", content_type));
        }
        let response = gw.send(method, path, &headers, body.map(|(_, b)| b.as_bytes()));
        assert_refused(&response, 403, code);
        let text = response.text();
        assert!(
            !text.contains("UNION") && !text.contains("alert"),
            "{path}: {text}"
        );
    }
    assert_eq!(
        gw.upstream.request_count(),
        0,
        "refused requests reach no one"
    );
    assert_eq!(gw.stat("denied.A403SQ"), 5);
    assert_eq!(gw.stat("denied.A403XS"), 3);
    assert_eq!(gw.stat("found.sql"), 5);
    assert_eq!(gw.stat("rule.items.found"), 8);
}

#[test]
fn benign_look_alikes_and_exempt_values_reach_the_backend_unchanged() {
    let gw = gateway();
    let query = "q=O%27Brien&text=please+select+a+union+rep&mail=a.b%40example.com\
                 &sql_help=1%27+OR+%271%27%3D%271&city=%E6%9D%B1%E4%BA%AC";
    let response = gw.send(
        "GET",
        &format!("/items/42?{query}"),
        &[("x-search", "Zoë's café"), ("cookie", "theme=dark")],
        None,
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let body = r#"{"comment": "I'd drop the union rep; select one", "code_snippet": "<script>alert(1)</script>", "html": "<b>bold</b>"}"#;
    let posted = gw.json(body.as_bytes());
    assert_eq!(posted.status, 200, "{}", posted.text());
    // An uploaded file's content is not read: only its filename.
    let upload = "--b2\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nO'Brien's\r\n\
        --b2\r\nContent-Disposition: form-data; name=\"page\"; filename=\"page.html\"\r\n\
        Content-Type: text/html\r\n\r\n<script>alert(1)</script>\r\n--b2--\r\n";
    let uploaded = gw.send(
        "POST",
        "/items/1",
        &[("content-type", "multipart/form-data; boundary=b2")],
        Some(upload.as_bytes()),
    );
    assert_eq!(uploaded.status, 200, "{}", uploaded.text());
    let seen = gw.upstream.requests();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].query, query);
    assert_eq!(String::from_utf8_lossy(&seen[1].body), body);
    assert_eq!(String::from_utf8_lossy(&seen[2].body), upload);
    assert_eq!(gw.stat("passed"), 3);
    assert_eq!(gw.stat("rule.items.passed"), 3);
}

#[test]
fn hostile_bodies_are_refused_and_the_worker_keeps_serving() {
    let gw = gateway();
    let deep = "[".repeat(100_000);
    assert_refused(&gw.json(deep.as_bytes()), 400, "A400TS");
    let mut keys = String::from("{");
    for i in 0..60_000 {
        keys.push_str(&format!("\"k{i}\":0,"));
    }
    keys.push_str("\"end\":0}");
    assert_refused(&gw.json(keys.as_bytes()), 400, "A400TS");
    let long = format!(r#"{{"s": "{}"}}"#, "a".repeat(900_000));
    assert_refused(&gw.json(long.as_bytes()), 400, "A400TS");
    assert_refused(&gw.json(b"{\"s\": \"\xff\xfe\"}"), 400, "A400TM");
    assert_refused(&gw.json(b"{\"s\": "), 400, "A400TM");
    let over = format!(r#"{{"s": "{}"}}"#, "a".repeat(1_100_000));
    let response = gw.json(over.as_bytes());
    assert_eq!(response.status, 413, "{}", response.text());
    // A body the policy cannot read as the backend will: compressed, or
    // with two content types.
    let gzip = gw.send(
        "POST",
        "/items/1",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        Some(b"\x1f\x8b\x08\x00"),
    );
    assert_refused(&gzip, 415, "A415TU");
    let two = gw.send(
        "POST",
        "/items/1",
        &[
            ("content-type", "text/plain"),
            ("content-type", "application/json"),
        ],
        Some(b"{}"),
    );
    assert_refused(&two, 415, "A415TU");
    // A multipart body a backend might read otherwise (LF line ends, a
    // part without a name, no closing line), and 10,000 parts.
    let multipart = |boundary_and_body: (&str, String)| {
        let (boundary, body) = boundary_and_body;
        gw.send(
            "POST",
            "/items/1",
            &[(
                "content-type",
                &format!("multipart/form-data; boundary={boundary}"),
            )],
            Some(body.as_bytes()),
        )
    };
    for odd in [
        (
            "b",
            "--b\nContent-Disposition: form-data; name=a\n\nx\n--b--\n".to_string(),
        ),
        (
            "b",
            "--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n".to_string(),
        ),
        (
            "b",
            "--b\r\nContent-Disposition: form-data; name=a\r\n\r\nx".to_string(),
        ),
    ] {
        assert_refused(&multipart(odd), 400, "A400TM");
    }
    let many = "--b\r\nContent-Disposition: form-data; name=f\r\n\r\nv\r\n".repeat(10_000);
    assert_refused(&multipart(("b", many + "--b--\r\n")), 400, "A400TS");
    // Decoding work is bounded: ten thousand `%25`s are one pass.
    let encoded = "%25".repeat(10_000);
    let response = gw.send("GET", &format!("/items/1?q={encoded}"), &[], None);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(gw.stat("found.json_depth"), 1);
    assert_eq!(gw.stat("found.json_entries"), 1);
    assert_eq!(gw.stat("found.json_string"), 1);
    assert_eq!(gw.stat("found.json_malformed"), 2);
    assert_eq!(gw.stat("found.form_malformed"), 3);
    assert_eq!(gw.stat("found.form_fields"), 1);
    // The worker still serves.
    let clean = gw.json(br#"{"a": [1, 2, {"b": "c"}]}"#);
    assert_eq!(clean.status, 200, "{}", clean.text());
}

#[test]
fn in_log_mode_a_finding_is_counted_and_the_request_goes_on() {
    let gw = gateway();
    let response = gw.send("GET", "/legacy/find?q=1%27+OR+%271%27%3D%271", &[], None);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(gw.upstream.request_count(), 1);
    assert_eq!(gw.stat("logged"), 1);
    assert_eq!(gw.stat("found.sql"), 1);
    assert_eq!(gw.stat("rule.legacy.found"), 1);
    assert_eq!(gw.stat("denied.A403SQ"), 0);
}

#[test]
fn log_push_records_the_finding_and_never_the_value() {
    let gw = gateway();
    let logged = gw.send("GET", "/legacy/find?q=1%27+OR+%271%27%3D%271", &[], None);
    assert_eq!(logged.status, 200, "{}", logged.text());
    let blocked = gw.send(
        "GET",
        "/items/2",
        &[("x-search", "<script>alert(1)</script>")],
        None,
    );
    assert_refused(&blocked, 403, "A403XS");
    let deep = gw.json("[".repeat(100).as_bytes());
    assert_refused(&deep, 400, "A400TS");
    let clean = gw.send("GET", "/items/3?q=O%27Brien", &[], None);
    assert_eq!(clean.status, 200, "{}", clean.text());

    let record = gw.record_of("/legacy/find");
    assert_eq!(
        (
            &record["status"],
            &record["error_code"],
            &record["threat"],
            &record["threat_place"]
        ),
        (&json!(200), &json!(""), &json!("sql"), &json!("query"))
    );
    let fingerprint = record["threat_fingerprint"].as_str().unwrap_or_default();
    assert!(
        !fingerprint.is_empty() && !fingerprint.contains("OR"),
        "{record}"
    );
    let record = gw.record_of("/items/2");
    assert_eq!(
        (
            &record["error_code"],
            &record["threat"],
            &record["threat_place"],
            &record["threat_fingerprint"]
        ),
        (
            &json!("A403XS"),
            &json!("script"),
            &json!("header"),
            &json!("")
        )
    );
    let record = gw.record_of("/items/1");
    assert_eq!(
        (&record["threat"], &record["threat_place"]),
        (&json!("json_depth"), &json!("json"))
    );
    let record = gw.record_of("/items/3");
    assert_eq!(
        (&record["status"], &record["threat"]),
        (&json!(200), &json!(""))
    );
    for request in gw.log_sink.requests() {
        let text = String::from_utf8_lossy(&request.body);
        assert!(!text.contains("script>") && !text.contains("'1'"), "{text}");
    }
}
