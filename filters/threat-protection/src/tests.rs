//! The policy's steps over a stream: what is checked when, what a finding
//! does in each mode, what is counted.

use crate::compile_config;
use crate::steps::{Compiled, Metrics, ThreatSteps};
use crate::FILTER_NAME;
use gateway_common::host::FakeHost;
use gateway_common::identity;
use gateway_common::stream::{FakeStream, PolicySteps, Verdict};
use std::rc::Rc;

/// Search blocks; comments are only logged; /files is not checked.
const CONFIG: &str = r#"{
  "rules": [{
    "name": "search",
    "match": {"path": {"template": "/items/{id}"}},
    "locations": ["query", "path", "header", "cookie", "form", "json"],
    "headers": ["x-search"],
    "json": {"max_depth": 4},
    "max_body_bytes": 256
  }, {
    "name": "comments",
    "match": {"path": {"prefix": "/comments"}},
    "mode": "log"
  }]
}"#;

fn steps(stream: &mut FakeStream) -> ThreatSteps {
    let compiled = Compiled::new(compile_config(CONFIG.as_bytes()).expect("config"));
    compiled.define_rule_counters(stream);
    let metrics = Metrics::define(stream);
    ThreatSteps::new(Rc::new(compiled), metrics)
}

fn request(method: &str, path: &str) -> FakeHost {
    FakeHost::new()
        .with_header(":method", method)
        .with_header(":path", path)
        .with_header(":authority", "shop")
}

fn json(host: FakeHost) -> FakeHost {
    host.with_header("content-type", "application/json")
}

/// Runs the headers (and the body, if any) through the policy.
fn run(host: FakeHost, body: Option<&str>) -> (Verdict, FakeStream) {
    let mut stream = FakeStream::new(host);
    let mut steps = steps(&mut stream);
    let verdict = steps.on_request_headers(&mut stream, body.is_none());
    let verdict = match (verdict, body) {
        (Verdict::Pause, Some(body)) => {
            stream.body = body.as_bytes().to_vec();
            steps.on_request_body(&mut stream, body.len(), true)
        }
        (verdict, _) => verdict,
    };
    (verdict, stream)
}

fn code(run: &(Verdict, FakeStream)) -> Option<(u32, String)> {
    let reply = run.1.reply()?;
    Some((
        reply.status,
        reply
            .header("x-ca-error-code")
            .unwrap_or_default()
            .to_string(),
    ))
}

fn counted(run: &(Verdict, FakeStream), name: &str) -> u64 {
    run.1.counted(FILTER_NAME, name)
}

#[test]
fn each_place_is_checked_before_the_body_is_awaited() {
    let payload = "1%27%20OR%20%271%27%3D%271";
    let query = run(request("GET", &format!("/items/1?q={payload}")), None);
    assert_eq!(code(&query), Some((403, "A403SQ".into())));
    let path = run(request("GET", &format!("/items/{payload}")), None);
    assert_eq!(code(&path), Some((403, "A403SQ".into())));
    let header = run(
        request("GET", "/items/1").with_header("x-search", "<script>alert(1)</script>"),
        None,
    );
    assert_eq!(code(&header), Some((403, "A403XS".into())));
    // A repeated header: every value is checked, not only the first.
    let repeated = run(
        request("GET", "/items/1")
            .with_header("x-search", "shoes")
            .with_header("x-search", "1' OR '1'='1"),
        None,
    );
    assert_eq!(code(&repeated), Some((403, "A403SQ".into())));
    // Found in the query, a JSON request is refused without its body.
    let early = run(
        json(request("POST", &format!("/items/1?q={payload}"))),
        Some("{}"),
    );
    assert_eq!(early.0, Verdict::Answered);
    assert_eq!(counted(&early, "found.sql"), 1);
    assert_eq!(counted(&early, "rule.search.found"), 1);
    assert_eq!(counted(&early, "denied.A403SQ"), 1);
    // The reply names the check, never the payload.
    let reply = String::from_utf8_lossy(&query.1.reply().expect("reply").body).into_owned();
    assert!(!reply.contains("OR"), "{reply}");
}

#[test]
fn a_clean_request_passes_and_is_counted_for_its_api() {
    let clean = run(
        json(request("POST", "/items/42?q=O%27Brien+shoes")).with_header("cookie", "s=abc; t=1"),
        Some(r#"{"note": "I'd drop the union rep; select one"}"#),
    );
    assert_eq!(clean.0, Verdict::Continue);
    assert_eq!(code(&clean), None);
    assert_eq!(counted(&clean, "passed"), 1);
    assert_eq!(counted(&clean, "rule.search.passed"), 1);
    let elsewhere = run(request("GET", "/files?q=1'+OR+'1'='1"), None);
    assert_eq!(elsewhere.0, Verdict::Continue);
    assert_eq!(counted(&elsewhere, "unmatched"), 1);
}

#[test]
fn a_body_is_checked_once_it_has_arrived() {
    let injected = run(
        json(request("POST", "/items/1")),
        Some(r#"{"a": {"b": "1 UNION SELECT password FROM users--"}}"#),
    );
    assert_eq!(code(&injected), Some((403, "A403SQ".into())));
    let deep = run(json(request("POST", "/items/1")), Some("[[[[[1]]]]]"));
    assert_eq!(code(&deep), Some((400, "A400TS".into())));
    assert_eq!(counted(&deep, "found.json_depth"), 1);
    let broken = run(json(request("POST", "/items/1")), Some("{\"a\": "));
    assert_eq!(code(&broken), Some((400, "A400TM".into())));
    let form = run(
        request("POST", "/items/1")
            .with_header("content-type", "application/x-www-form-urlencoded"),
        Some("bio=%3Cimg+src%3Dx+onerror%3Dalert(1)%3E"),
    );
    assert_eq!(code(&form), Some((403, "A403XS".into())));
    // A body the rule does not read is not held.
    let text = run(
        request("POST", "/items/1").with_header("content-type", "text/plain"),
        Some("<script>alert(1)</script>"),
    );
    assert_eq!(text.0, Verdict::Continue);
}

#[test]
fn a_body_the_policy_cannot_read_as_the_backend_will_is_refused_415() {
    let gzip = run(
        json(request("POST", "/items/1")).with_header("content-encoding", "gzip"),
        Some("\u{1f}\u{8b}compressed"),
    );
    assert_eq!(code(&gzip), Some((415, "A415TU".into())));
    assert_eq!(counted(&gzip, "found.body_encoding"), 1);
    let two_types = run(
        request("POST", "/items/1")
            .with_header("content-type", "text/plain")
            .with_header("content-type", "application/json"),
        Some("{}"),
    );
    assert_eq!(code(&two_types), Some((415, "A415TU".into())));
    assert_eq!(counted(&two_types, "found.body_type"), 1);
    // Joined into one header, as Envoy passes them on.
    let joined = run(
        request("POST", "/items/1").with_header("content-type", "text/plain,application/json"),
        Some("{}"),
    );
    assert_eq!(code(&joined), Some((415, "A415TU".into())));
    // A charset a backend may honour, read by the detectors as bytes.
    for content_type in [
        "application/x-www-form-urlencoded; charset=ibm037",
        "application/json; charset=\"UTF-16LE\"",
    ] {
        let other_charset = run(
            request("POST", "/items/1").with_header("content-type", content_type),
            Some("{}"),
        );
        assert_eq!(
            code(&other_charset),
            Some((415, "A415TU".into())),
            "{content_type}"
        );
    }
    let plain = run(
        request("POST", "/items/1").with_header(
            "content-type",
            "application/x-www-form-urlencoded; Charset=ISO-8859-1",
        ),
        Some("a=b"),
    );
    assert_eq!(plain.0, Verdict::Continue);
    // `identity` is no encoding; a body the rule does not read may be
    // compressed; an empty JSON body is no body.
    let identity = run(
        json(request("POST", "/items/1")).with_header("content-encoding", "identity"),
        Some("{}"),
    );
    assert_eq!(identity.0, Verdict::Continue);
    let other = run(
        request("POST", "/items/1")
            .with_header("content-type", "image/png")
            .with_header("content-encoding", "gzip"),
        Some("png"),
    );
    assert_eq!(other.0, Verdict::Continue);
    let empty = run(json(request("POST", "/items/1")), Some(""));
    assert_eq!(empty.0, Verdict::Continue);
}

#[test]
fn a_body_over_the_limit_is_refused_413() {
    let declared = run(
        json(request("POST", "/items/1")).with_header("content-length", "100000"),
        Some("{}"),
    );
    assert_eq!(code(&declared), Some((413, "A413TB".into())));
    let body = format!(r#"{{"pad": "{}"}}"#, "x".repeat(300));
    let sent = run(json(request("POST", "/items/1")), Some(&body));
    assert_eq!(code(&sent), Some((413, "A413TB".into())));
    assert_eq!(counted(&sent, "found.body_size"), 1);
}

#[test]
fn in_log_mode_a_finding_is_counted_and_the_request_goes_on() {
    let logged = run(
        json(request("POST", "/comments")),
        Some(r#"{"text": "<script>alert(1)</script>"}"#),
    );
    assert_eq!(logged.0, Verdict::Continue);
    assert_eq!(code(&logged), None);
    assert_eq!(counted(&logged, "logged"), 1);
    assert_eq!(counted(&logged, "found.script"), 1);
    assert_eq!(counted(&logged, "rule.comments.found"), 1);
    assert_eq!(counted(&logged, "denied.A403XS"), 0);
    // A finding in the query is logged, and the body is still checked.
    let both = run(
        json(request("POST", "/comments?q=1%27+OR+%271%27%3D%271")),
        Some(r#"{"text": "<script>alert(1)</script>"}"#),
    );
    assert_eq!(both.0, Verdict::Continue);
    assert_eq!(counted(&both, "found.sql"), 1);
    assert_eq!(counted(&both, "found.script"), 1);
    assert_eq!(counted(&both, "logged"), 2);
    assert_eq!(counted(&both, "passed"), 0);
}

#[test]
fn a_finding_is_published_for_log_push_without_the_value_in_both_modes() {
    let blocked = run(
        request("GET", "/items/1?q=1%27%20OR%20%271%27%3D%271"),
        None,
    );
    let threat = identity::threat(&blocked.1).expect("published");
    assert_eq!(
        (threat.check.as_str(), threat.place.as_str()),
        ("sql", "query")
    );
    assert!(!threat.fingerprint.is_empty());
    let logged = run(
        json(request("POST", "/comments")),
        Some(r#"{"note": "<script>x</script>"}"#),
    );
    assert_eq!(logged.0, Verdict::Continue);
    let threat = identity::threat(&logged.1).expect("published");
    assert_eq!(
        (
            threat.check.as_str(),
            threat.place.as_str(),
            threat.fingerprint.as_str()
        ),
        ("script", "json", "")
    );
    let clean = run(request("GET", "/items/1?q=shoes"), None);
    assert_eq!(identity::threat(&clean.1), None);
}
