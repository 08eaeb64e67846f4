use crate::compile_config;
use crate::steps::{AccessControlSteps, Metrics};
use crate::FILTER_NAME;
use gateway_common::host::{FakeHost, Host};
use gateway_common::identity::{self, Identity};
use gateway_common::stream::{FakeStream, PolicySteps, Verdict};
use proptest::prelude::*;
use std::rc::Rc;

/// Orders: admins do anything, a user only their own orders, nobody
/// deletes from TEST; reports: by a JSON body's fields; a deny-by-default
/// API; a dry-run copy of the orders rule is in DRY_RUN.
const CONFIG: &str = r#"{
  "client_address": {"trusted_proxies": ["10.0.0.0/8"]},
  "max_body_bytes": 256,
  "rules": [{
    "name": "orders",
    "match": {"path": {"template": "/users/{userId}/orders"}},
    "parameters": {"kind": "Header:X-User-Type"},
    "checks": [
      {"name": "admins", "condition": "$kind == 'admin'", "if_true": "allow"},
      {"name": "no-delete-on-test", "condition": "method == 'DELETE' && stage == 'TEST'",
       "if_true": "deny", "status": 405, "message": "No deletes on TEST"},
      {"name": "owner", "condition": "user == param.userId || app in ['203751']",
       "if_false": "DENY"}
    ]
  }, {
    "name": "reports",
    "match": {"path": {"prefix": "/reports"}},
    "checks": [
      {"name": "small", "condition": "json.range.days <= 31 || form.days <= 31", "if_false": "deny"},
      {"name": "office", "condition": "client_ip starts_with '192.168.'", "if_false": "deny"}
    ]
  }, {
    "name": "closed",
    "match": {"path": {"prefix": "/closed"}},
    "checks": [{"condition": "query.token == 'open-sesame'", "if_true": "allow"}],
    "otherwise": "deny"
  }]
}"#;

fn steps(config: &str, stream: &mut FakeStream) -> AccessControlSteps {
    let policy = compile_config(config.as_bytes()).expect("config");
    let metrics = Metrics::define(stream);
    AccessControlSteps::new(Rc::new(policy), metrics)
}

fn request(method: &str, path: &str) -> FakeHost {
    FakeHost::new()
        .with_header(":method", method)
        .with_header(":path", path)
        .with_header(":authority", "shop")
        .with_property(&["source", "address"], "192.168.1.20:5000")
}

fn with_identity(host: FakeHost, app: &str, user: Option<&str>) -> FakeHost {
    identity::publish(
        &host,
        &Identity {
            app_key: app.into(),
            user: user.map(str::to_string),
            ..Identity::default()
        },
    );
    host
}

/// Runs the headers (and the body, if any) through the policy.
fn run(config: &str, host: FakeHost, body: Option<&str>) -> (Verdict, FakeStream) {
    let mut stream = FakeStream::new(host);
    let mut steps = steps(config, &mut stream);
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

fn status(run: &(Verdict, FakeStream)) -> Option<(u32, String)> {
    let reply = run.1.reply()?;
    Some((
        reply.status,
        reply
            .header("x-ca-error-code")
            .unwrap_or_default()
            .to_string(),
    ))
}

#[test]
fn a_user_reaches_their_own_orders_only() {
    let own = run(
        CONFIG,
        with_identity(request("GET", "/users/u-7/orders"), "app-1", Some("u-7")),
        None,
    );
    assert_eq!(own.0, Verdict::Continue);
    assert_eq!(own.1.counted(FILTER_NAME, "allowed"), 1);
    let other = run(
        CONFIG,
        with_identity(request("GET", "/users/u-8/orders"), "app-1", Some("u-7")),
        None,
    );
    assert_eq!(other.0, Verdict::Answered);
    assert_eq!(status(&other), Some((403, "A403AC".into())));
    let reply = other.1.reply().unwrap();
    assert_eq!(
        reply.json()["message"],
        "Access denied by Access Control Policy"
    );
    assert_eq!(other.1.counted(FILTER_NAME, "denied.A403AC"), 1);
}

#[test]
fn the_first_check_that_decides_wins() {
    // An admin header allows at once, before the later checks.
    let admin = run(
        CONFIG,
        request("DELETE", "/users/u-8/orders")
            .with_header("x-user-type", "admin")
            .with_header("x-ca-stage", "TEST"),
        None,
    );
    assert_eq!(admin.0, Verdict::Continue);
    // Without it, the TEST stage check denies with its own status and message.
    let test = run(
        CONFIG,
        with_identity(request("DELETE", "/users/u-7/orders"), "a", Some("u-7"))
            .with_header("x-ca-stage", "TEST"),
        None,
    );
    assert_eq!(status(&test), Some((405, "A403AC".into())));
    assert_eq!(
        test.1.reply().unwrap().json()["message"],
        "No deletes on TEST"
    );
    // The app list of the last check lets an app in for anyone's orders.
    let app = run(
        CONFIG,
        with_identity(request("GET", "/users/u-9/orders"), "203751", None),
        None,
    );
    assert_eq!(app.0, Verdict::Continue);
}

#[test]
fn an_anonymous_request_has_no_user_and_no_app() {
    let anonymous = run(CONFIG, request("GET", "/users/u-7/orders"), None);
    assert_eq!(status(&anonymous), Some((403, "A403AC".into())));
}

#[test]
fn json_and_form_bodies_are_read_when_a_check_needs_them() {
    let json = |days: &str| {
        run(
            CONFIG,
            request("POST", "/reports")
                .with_header("content-type", "application/json")
                .with_header("content-length", "40"),
            Some(&format!(r#"{{"range": {{"days": {days}}}}}"#)),
        )
    };
    assert_eq!(json("30").0, Verdict::Continue);
    assert_eq!(status(&json("90")), Some((403, "A403AC".into())));
    assert_eq!(status(&json("\"x\"")), Some((403, "A403AC".into())));
    let form = run(
        CONFIG,
        request("POST", "/reports")
            .with_header("content-type", "application/x-www-form-urlencoded"),
        Some("days=7&x=1"),
    );
    assert_eq!(form.0, Verdict::Continue);
    // A body that does not parse has no fields.
    let broken = run(
        CONFIG,
        request("POST", "/reports").with_header("content-type", "application/json"),
        Some("{\"range\": "),
    );
    assert_eq!(status(&broken), Some((403, "A403AC".into())));
}

#[test]
fn a_body_over_the_limit_is_refused_413() {
    let declared = run(
        CONFIG,
        request("POST", "/reports")
            .with_header("content-type", "application/json")
            .with_header("content-length", "100000"),
        Some("{}"),
    );
    assert_eq!(status(&declared), Some((413, "A413AC".into())));
    let body = format!(r#"{{"pad": "{}"}}"#, "x".repeat(300));
    let sent = run(
        CONFIG,
        request("POST", "/reports").with_header("content-type", "application/json"),
        Some(&body),
    );
    assert_eq!(status(&sent), Some((413, "A413AC".into())));
}

#[test]
fn the_client_address_is_resolved_behind_trusted_proxies_only() {
    let body = Some(r#"{"range": {"days": 1}}"#);
    let json = |host: FakeHost| host.with_header("content-type", "application/json");
    let direct = run(CONFIG, json(request("POST", "/reports")), body);
    assert_eq!(direct.0, Verdict::Continue);
    let proxied = run(
        CONFIG,
        json(request("POST", "/reports"))
            .with_property(&["source", "address"], "10.1.1.1:4000")
            .with_header("x-forwarded-for", "192.168.7.7"),
        body,
    );
    assert_eq!(proxied.0, Verdict::Continue);
    let spoofed = run(
        CONFIG,
        json(request("POST", "/reports"))
            .with_property(&["source", "address"], "203.0.113.9:4000")
            .with_header("x-forwarded-for", "192.168.7.7"),
        body,
    );
    assert_eq!(status(&spoofed), Some((403, "A403AC".into())));
}

#[test]
fn otherwise_decides_what_no_check_did() {
    let open = run(CONFIG, request("GET", "/closed?token=open-sesame"), None);
    assert_eq!(open.0, Verdict::Continue);
    let shut = run(CONFIG, request("GET", "/closed?token=nope"), None);
    assert_eq!(status(&shut), Some((403, "A403AC".into())));
    // A bad escape elsewhere in the query hides nothing.
    let bad_escape = run(
        CONFIG,
        request("GET", "/closed?x=%zz&token=open-sesame&%=1"),
        None,
    );
    assert_eq!(bad_escape.0, Verdict::Continue);
}

#[test]
fn requests_outside_every_rule_pass_and_are_counted() {
    let other = run(CONFIG, request("GET", "/elsewhere"), None);
    assert_eq!(other.0, Verdict::Continue);
    assert_eq!(other.1.counted(FILTER_NAME, "unmatched"), 1);
}

#[test]
fn dry_run_counts_and_logs_but_lets_through() {
    let config = CONFIG.replacen(
        "\"max_body_bytes\"",
        "\"dry_run\": true, \"max_body_bytes\"",
        1,
    );
    let other = run(
        &config,
        with_identity(request("GET", "/users/u-8/orders"), "a", Some("u-7")),
        None,
    );
    assert_eq!(other.0, Verdict::Continue);
    assert_eq!(other.1.counted(FILTER_NAME, "dry_run.denied"), 1);
    assert!(other
        .1
        .logs
        .borrow()
        .iter()
        .any(|(_, line)| line.contains("`owner` would deny")));
    let large = run(
        &config,
        request("POST", "/reports")
            .with_header("content-type", "application/json")
            .with_header("content-length", "100000"),
        Some("{}"),
    );
    assert_eq!(large.0, Verdict::Continue, "not refused under dry_run");
    assert_eq!(large.1.counted(FILTER_NAME, "dry_run.denied"), 1);
}

#[test]
fn a_request_without_a_body_kind_checks_reads_is_decided_on_its_headers() {
    let text = run(
        CONFIG,
        request("POST", "/reports").with_header("content-type", "text/plain"),
        None,
    );
    assert_eq!(status(&text), Some((403, "A403AC".into())));
    // A body-less request to a body-reading rule is not held.
    let mut stream = FakeStream::new(request("GET", "/reports"));
    let mut steps = steps(CONFIG, &mut stream);
    assert_eq!(
        steps.on_request_headers(&mut stream, true),
        Verdict::Answered
    );
    assert_eq!(stream.request_header(":path").as_deref(), Some("/reports"));
}

#[test]
fn bad_configurations_name_the_field() {
    for (config, path, reason) in [
        (
            r#"{"rules":[{"checks":[{"condition":"query.a ==","if_true":"deny"}]}]}"#,
            "rules[0].checks[0].condition",
            "at the end",
        ),
        (
            r#"{"rules":[{"checks":[{"condition":"query.a"}]}]}"#,
            "rules[0].checks[0].if_true",
            "if_false",
        ),
        (
            r#"{"rules":[{"checks":[{"condition":"app","if_true":"deny","status":302}]}]}"#,
            "rules[0].checks[0].status",
            "400 to 499",
        ),
        (
            r#"{"rules":[{"checks":[{"condition":"app","if_true":"deny","message":"a\nb"}]}]}"#,
            "rules[0].checks[0].message",
            "control",
        ),
        (
            r#"{"rules":[{"checks":[]}]}"#,
            "rules[0].checks",
            "at least one",
        ),
        (
            r#"{"rules":[{"match":{"path":{"template":"/u/{id}"}},"checks":[{"condition":"param.uid","if_true":"deny"}]}]}"#,
            "rules[0].checks",
            "no variable `{uid}` (its variables: id)",
        ),
        (
            r#"{"rules":[{"parameters":{"t":"Token:x"},"checks":[{"condition":"$t","if_true":"deny"}]}]}"#,
            "rules[0].parameters.t",
            "claims_to_headers",
        ),
        (
            r#"{"rules":[{"checks":[{"condition":"app","if_true":"maybe"}]}]}"#,
            "rules[0].checks[0].if_true",
            "unknown variant",
        ),
        (r#"{"max_body_bytes":0}"#, "max_body_bytes", "at least 1"),
    ] {
        let err = compile_config(config.as_bytes()).expect_err(config);
        assert_eq!(err.path, path, "{config}: {err}");
        assert!(err.message.contains(reason), "{config}: {err}");
    }
}

#[test]
fn hostile_values_are_compared_not_interpreted() {
    for path in [
        "/users/%27%20or%201%3D1/orders",
        "/users/u-8/orders?a=%zz&user=u-8",
        "/users/..%2F..%2Fetc/orders",
    ] {
        let hostile = run(
            CONFIG,
            with_identity(request("GET", path), "a", Some("u-7")),
            None,
        );
        assert_eq!(status(&hostile), Some((403, "A403AC".into())), "{path}");
    }
}

proptest! {
    #[test]
    fn any_request_is_decided_without_panicking(
        path in "/[a-z/%?=&0-9]{0,40}",
        header in "\\PC{0,20}",
        body in "\\PC{0,64}",
    ) {
        let host = request("POST", &path)
            .with_header("x-user-type", &header)
            .with_header("content-type", "application/json");
        let (verdict, _) = run(CONFIG, host, Some(&body));
        prop_assert!(verdict != Verdict::Pause);
    }
}
