//! The policy's decisions for every mode but the `X-Ca-*` signature's
//! (those are in `policy.rs`): Huawei signatures, AppCodes, Basic, and
//! which modes an API takes.

use crate::huawei::{self, ClientRequest};
use crate::modes::Source;
use crate::policy::tests::NOW_MS;
use crate::policy::{SignAuth, SignAuthConfig, Step, Verified};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use gateway_common::config::parse_json;
use gateway_common::error::GatewayError;
use gateway_common::fleet::hex;
use gateway_common::host::FakeHost;
use gateway_common::store::MemoryStore;
use sha2::{Digest, Sha256};
use std::time::Duration;

fn config() -> String {
    let alice = hex(&Sha256::digest(b"alice-pw"));
    format!(
        r#"{{
        "apps": [
            {{"key": "203751", "name": "mobile", "secrets": ["ali-secret"],
              "huawei": [{{"key": "hw-key", "secrets": ["hw-new", "hw-old"]}}],
              "appcodes": ["code-mobile"],
              "basic": [{{"username": "alice", "password": "sha256:{alice}"}}]}},
            {{"key": "203752", "appcodes": ["code-web"],
              "basic": [{{"username": "bob", "password": "bob-pw"}}],
              "huawei": [{{"key": "hw-web", "secrets": ["web"]}}]}},
            {{"key": "203753", "disabled": true, "appcodes": ["code-off"]}}
        ],
        "modes": ["app", "huawei_app", "appcode", "basic"],
        "rules": [
            {{"name": "orders", "match": {{"path": {{"prefix": "/orders"}}}}, "apps": ["203751"]}},
            {{"name": "secure", "match": {{"path": {{"prefix": "/secure"}}}},
              "modes": ["appcode", "basic"], "require_tls": true}},
            {{"name": "upload", "match": {{"path": {{"prefix": "/upload"}}}},
              "modes": ["huawei_app"], "unsigned_payload": true}},
            {{"name": "query", "match": {{"path": {{"prefix": "/q"}}}},
              "modes": ["appcode"], "appcode_query": "AppCode"}},
            {{"name": "kept", "match": {{"path": {{"prefix": "/kept"}}}},
              "modes": ["basic"], "keep_credentials": true}},
            {{"name": "alibaba", "match": {{"path": {{"prefix": "/ali"}}}}, "modes": ["app"]}},
            {{"name": "public", "match": {{"path": {{"prefix": "/public"}}}},
              "modes": ["basic"], "anonymous": true}}
        ]
    }}"#
    )
}

fn policy_with(extra: &str) -> SignAuth {
    let text = config().replacen('{', &format!("{{{extra}"), 1);
    SignAuth::compile(&parse_json::<SignAuthConfig>(text.as_bytes()).unwrap()).unwrap()
}

fn policy() -> SignAuth {
    policy_with("")
}

fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> FakeHost {
    let host = FakeHost::new()
        .with_header(":method", method)
        .with_header(":path", path)
        .with_header(":authority", "api.example.com");
    let host = headers
        .iter()
        .fold(host, |host, (name, value)| host.with_header(name, value));
    host.clock.set(Duration::from_millis(NOW_MS));
    host
}

/// A request as a Huawei SDK signs it, at `signed_ms`.
fn huawei_signed(
    key: &str,
    secret: &str,
    method: &str,
    path: &str,
    body: &[u8],
    signed_ms: u64,
) -> FakeHost {
    let headers = vec![
        ("host".to_string(), "api.example.com".to_string()),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    let signed = huawei::sign_request(
        key,
        secret,
        &ClientRequest {
            method,
            path_and_query: path,
            headers: &headers,
            body,
            unsigned_payload: false,
        },
        signed_ms,
    );
    let mut all = vec![("content-type", "application/json")];
    all.extend(signed.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    request(method, path, &all)
}

/// The step's outcome: the verified request, or the error and whether it
/// came with a Basic challenge.
fn decide(
    policy: &SignAuth,
    host: &FakeHost,
    store: &MemoryStore,
    body: Option<&[u8]>,
) -> Result<Option<Verified>, (GatewayError, bool)> {
    let step = match policy.begin(host, store, body.is_none()) {
        Step::NeedBody(pending) => {
            policy.finish(*pending, body.expect("a body was announced"), store, NOW_MS)
        }
        step => step,
    };
    match step {
        Step::Pass(verified) => Ok(verified),
        Step::Reject(error) => Err((error, false)),
        Step::Challenge(error, _) => Err((error, true)),
        other => panic!("not a local decision: {other:?}"),
    }
}

fn code(result: &Result<Option<Verified>, (GatewayError, bool)>) -> &'static str {
    match result {
        Ok(Some(_)) => "OK",
        Ok(None) => "ANONYMOUS",
        Err((error, _)) => error.code,
    }
}

fn verified(result: Result<Option<Verified>, (GatewayError, bool)>) -> Verified {
    result
        .unwrap_or_else(|(e, _)| panic!("refused: {e:?}"))
        .expect("authenticated")
}

#[test]
fn a_huawei_signed_request_authenticates_its_app_and_strips_the_authorization() {
    let p = policy();
    let store = MemoryStore::new();
    let host = huawei_signed("hw-key", "hw-new", "GET", "/orders/7?b=2&a=1", b"", NOW_MS);
    let v = verified(decide(&p, &host, &store, None));
    assert_eq!(v.identity.app_key, "203751");
    assert_eq!(v.identity.app_name.as_deref(), Some("mobile"));
    assert_eq!(v.identity.api.as_deref(), Some("orders"));
    assert_eq!(v.strip, Some(Source::authorization()));
    // Rotation: the older secret verifies too.
    let host = huawei_signed("hw-key", "hw-old", "GET", "/orders/7", b"", NOW_MS);
    assert_eq!(code(&decide(&p, &host, &store, None)), "OK");
}

#[test]
fn a_huawei_signed_body_is_checked_and_a_changed_one_is_refused() {
    let p = policy();
    let store = MemoryStore::new();
    let body = br#"{"qty":2}"#;
    let host = huawei_signed("hw-key", "hw-new", "POST", "/orders", body, NOW_MS);
    assert!(matches!(p.begin(&host, &store, false), Step::NeedBody(_)));
    assert_eq!(code(&decide(&p, &host, &store, Some(body))), "OK");
    let result = decide(&p, &host, &store, Some(br#"{"qty":9}"#));
    let (error, _) = result.unwrap_err();
    assert_eq!(error.code, "A400IS");
    assert!(
        error
            .message
            .starts_with("Invalid Signature, Server CanonicalRequest:`POST|/orders/||content-type:application/json|host:api.example.com|x-sdk-date:"),
        "{}",
        error.message
    );
}

#[test]
fn tampering_with_a_huawei_request_breaks_its_signature() {
    let p = policy();
    let store = MemoryStore::new();
    for (name, value) in [
        (":path", "/orders/8"),
        (":method", "DELETE"),
        (":authority", "other.example.com"),
        ("content-type", "text/plain"),
    ] {
        let mut host = huawei_signed("hw-key", "hw-new", "GET", "/orders/7", b"", NOW_MS);
        host.headers.retain(|(k, _)| k != name);
        host = host.with_header(name, value);
        assert_eq!(code(&decide(&p, &host, &store, None)), "A400IS", "{name}");
    }
    // Another app's secret under this app's key.
    let host = huawei_signed("hw-key", "web", "GET", "/orders/7", b"", NOW_MS);
    assert_eq!(code(&decide(&p, &host, &store, None)), "A400IS");
}

#[test]
fn huawei_refusals_name_what_is_wrong() {
    let p = policy();
    let store = MemoryStore::new();
    let signed = |key: &str, ms: u64| huawei_signed(key, "hw-new", "GET", "/x", b"", ms);
    assert_eq!(
        code(&decide(&p, &signed("nobody", NOW_MS), &store, None)),
        "A401AK"
    );
    let late = NOW_MS + 16 * 60 * 1000;
    assert_eq!(
        code(&decide(&p, &signed("hw-key", late), &store, None)),
        "A400IT"
    );
    let mut host = signed("hw-key", NOW_MS);
    host.headers.retain(|(k, _)| k != "x-sdk-date");
    assert_eq!(code(&decide(&p, &host, &store, None)), "A401MH");
    let host = host.with_header("x-sdk-date", "2023-11-14");
    assert_eq!(code(&decide(&p, &host, &store, None)), "A400IH");
    for authorization in [
        "SDK-HMAC-SHA256 Access=hw-key".to_string(),
        format!(
            "SDK-HMAC-SHA256 Access=hw-key, SignedHeaders={}, Signature={}",
            vec!["x"; 1000].join(";"),
            "0".repeat(64)
        ),
    ] {
        let host = request(
            "GET",
            "/x",
            &[
                ("authorization", &authorization),
                ("x-sdk-date", "20231114T221320Z"),
            ],
        );
        let (error, _) = decide(&p, &host, &store, None).unwrap_err();
        assert_eq!(error.code, "A400IH", "{authorization:.60}");
        assert!(error
            .message
            .starts_with("Invalid Header `Authorization`: "));
    }
}

#[test]
fn the_body_digest_header_must_match_and_unsigned_payloads_need_the_apis_consent() {
    let p = policy();
    let store = MemoryStore::new();
    let body = b"payload";
    let lying = request(
        "POST",
        "/x",
        &[
            ("x-sdk-date", "20231114T221320Z"),
            ("x-sdk-content-sha256", &huawei::payload_hash(b"other")),
            (
                "authorization",
                &format!(
                    "SDK-HMAC-SHA256 Access=hw-key, SignedHeaders=host, Signature={}",
                    "0".repeat(64)
                ),
            ),
        ],
    );
    assert_eq!(code(&decide(&p, &lying, &store, Some(body))), "A400IB");
    let sign_unsigned = |path: &str| {
        let headers = vec![("host".to_string(), "api.example.com".to_string())];
        let signed = huawei::sign_request(
            "hw-key",
            "hw-new",
            &ClientRequest {
                method: "PUT",
                path_and_query: path,
                headers: &headers,
                body: b"ignored",
                unsigned_payload: true,
            },
            NOW_MS,
        );
        let pairs: Vec<(&str, &str)> = signed
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        request("PUT", path, &pairs)
    };
    // Without a body, UNSIGNED-PAYLOAD signed as the empty body's hash (as
    // Huawei's Python SDK core does) passes anywhere, and signed as is
    // where the API takes it.
    let empty_hash_signed = |path: &str| {
        let headers = vec![
            ("host".to_string(), "api.example.com".to_string()),
            (
                "x-sdk-content-sha256".to_string(),
                "UNSIGNED-PAYLOAD".to_string(),
            ),
        ];
        let signed = huawei::sign_request(
            "hw-key",
            "hw-new",
            &ClientRequest {
                method: "GET",
                path_and_query: path,
                headers: &headers,
                body: b"",
                unsigned_payload: false,
            },
            NOW_MS,
        );
        let mut pairs = vec![("x-sdk-content-sha256", "UNSIGNED-PAYLOAD")];
        pairs.extend(signed.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        request("GET", path, &pairs)
    };
    assert_eq!(
        code(&decide(&p, &empty_hash_signed("/orders/1"), &store, None)),
        "OK"
    );
    assert_eq!(
        code(&decide(&p, &empty_hash_signed("/upload/1"), &store, None)),
        "OK"
    );
    assert_eq!(
        code(&decide(&p, &sign_unsigned("/upload/2"), &store, None)),
        "OK"
    );
    assert_eq!(
        code(&decide(&p, &sign_unsigned("/orders/2"), &store, None)),
        "A400IS"
    );
    // Unsigned: the body is not read.
    let upload = sign_unsigned("/upload/1");
    assert!(matches!(
        p.begin(&upload, &store, false),
        Step::Pass(Some(_))
    ));
    assert_eq!(
        code(&decide(&p, &sign_unsigned("/orders/1"), &store, Some(b"x"))),
        "A400UP"
    );
}

#[test]
fn huawei_signatures_are_accepted_once_when_replay_protection_is_on() {
    let store = MemoryStore::new();
    let host = huawei_signed("hw-key", "hw-new", "GET", "/orders/1", b"", NOW_MS);
    let plain = policy();
    assert_eq!(code(&decide(&plain, &host, &store, None)), "OK");
    assert_eq!(code(&decide(&plain, &host, &store, None)), "OK");
    let once = policy_with(r#""huawei_replay_protection": true,"#);
    let store = MemoryStore::new();
    assert_eq!(code(&decide(&once, &host, &store, None)), "OK");
    assert_eq!(code(&decide(&once, &host, &store, None)), "A400IN");
}

#[test]
fn appcodes_come_in_either_gateways_header_or_the_apis_query_parameter() {
    let p = policy();
    let store = MemoryStore::new();
    for (path, headers, source) in [
        (
            "/orders/1",
            vec![("authorization", "APPCODE code-mobile")],
            Source::authorization(),
        ),
        (
            "/orders/1",
            vec![("x-apig-appcode", "code-mobile")],
            Source::Header("x-apig-appcode".into()),
        ),
        (
            "/q?x=1&AppCode=code-mobile",
            vec![],
            Source::Query("AppCode".into()),
        ),
    ] {
        let v = verified(decide(&p, &request("GET", path, &headers), &store, None));
        assert_eq!(v.identity.app_key, "203751", "{path} {headers:?}");
        assert_eq!(v.strip, Some(source));
    }
    let wrong = request("GET", "/x", &[("authorization", "APPCODE code-nobody")]);
    assert_eq!(code(&decide(&p, &wrong, &store, None)), "A401AC");
    // The query parameter counts only where the API names it.
    let elsewhere = request("GET", "/orders/1?AppCode=code-mobile", &[]);
    assert_eq!(code(&decide(&p, &elsewhere, &store, None)), "A401MC");
}

#[test]
fn app_to_api_authorization_and_disabled_apps_hold_in_every_mode() {
    let p = policy();
    let store = MemoryStore::new();
    let web_basic = format!("Basic {}", BASE64.encode("bob:bob-pw"));
    for headers in [
        vec![("authorization", "APPCODE code-web")],
        vec![("authorization", web_basic.as_str())],
    ] {
        let host = request("GET", "/orders/1", &headers);
        assert_eq!(code(&decide(&p, &host, &store, None)), "A403UA");
    }
    let host = huawei_signed("hw-web", "web", "GET", "/orders/1", b"", NOW_MS);
    assert_eq!(code(&decide(&p, &host, &store, None)), "A403UA");
    let host = request("GET", "/x", &[("x-apig-appcode", "code-off")]);
    assert_eq!(code(&decide(&p, &host, &store, None)), "A403AD");
}

#[test]
fn basic_credentials_name_the_user_and_bad_ones_get_a_challenge() {
    let p = policy();
    let store = MemoryStore::new();
    let basic = |text: &str| format!("Basic {}", BASE64.encode(text));
    let host = request("GET", "/x", &[("authorization", &basic("alice:alice-pw"))]);
    let v = verified(decide(&p, &host, &store, None));
    assert_eq!(v.identity.app_key, "203751");
    assert_eq!(v.identity.user.as_deref(), Some("alice"));
    for bad in [
        basic("alice:wrong"),
        basic("nobody:alice-pw"),
        basic("no-colon"),
        "Basic %%%".to_string(),
        format!("Basic {}", BASE64.encode(b"\xff:\xfe")),
    ] {
        let host = request("GET", "/x", &[("authorization", &bad)]);
        let (error, challenged) = decide(&p, &host, &store, None).unwrap_err();
        assert_eq!((error.code, challenged), ("A401BC", true), "{bad}");
    }
    let wrong = request("GET", "/x", &[("authorization", &basic("alice:wrong"))]);
    match p.begin(&wrong, &store, true) {
        Step::Challenge(_, challenge) => {
            assert_eq!(challenge, "Basic realm=\"gateway\", charset=\"UTF-8\"")
        }
        other => panic!("no challenge: {other:?}"),
    }
    // Kept where the API says so.
    let host = request("GET", "/kept", &[("authorization", &basic("bob:bob-pw"))]);
    assert_eq!(verified(decide(&p, &host, &store, None)).strip, None);
}

#[test]
fn appcode_and_basic_need_tls_where_the_api_requires_it() {
    let p = policy();
    let store = MemoryStore::new();
    let plain = request("GET", "/secure", &[("x-apig-appcode", "code-web")]);
    assert_eq!(code(&decide(&p, &plain, &store, None)), "A403TL");
    let tls = plain.with_property(&["connection", "tls_version"], "TLSv1.3");
    assert_eq!(code(&decide(&p, &tls, &store, None)), "OK");
}

#[test]
fn a_request_without_an_accepted_credential_is_told_what_the_api_takes() {
    let p = policy();
    let store = MemoryStore::new();
    let bare = request("GET", "/secure", &[]);
    let (error, challenged) = decide(&p, &bare, &store, None).unwrap_err();
    assert_eq!(error.code, "A401MC");
    assert_eq!(
        error.message,
        "Missing Credentials: this API takes an AppCode or Basic credentials"
    );
    assert!(challenged);
    // An API of X-Ca signatures only keeps its former answer, and ignores
    // credentials of other modes.
    let appcode = request("GET", "/ali", &[("authorization", "APPCODE code-mobile")]);
    let (error, challenged) = decide(&p, &appcode, &store, None).unwrap_err();
    assert_eq!(
        (error.code, error.message.as_ref(), challenged),
        ("A401MH", "Header `X-Ca-Key` is Required", false)
    );
    // On an anonymous API, no credential passes and a credential is checked.
    let anonymous = request("GET", "/public", &[]);
    assert_eq!(code(&decide(&p, &anonymous, &store, None)), "ANONYMOUS");
    let wrong = request(
        "GET",
        "/public",
        &[(
            "authorization",
            &format!("Basic {}", BASE64.encode("bob:x")),
        )],
    );
    assert_eq!(code(&decide(&p, &wrong, &store, None)), "A401BC");
}

/// What the upstream or the client sees, through the policy's steps.
mod forwarded {
    use super::*;
    use crate::steps::{Metrics, SignAuthSteps};
    use crate::FILTER_NAME;
    use gateway_common::host::Host;
    use gateway_common::stream::{FakeStream, PolicySteps, Verdict};
    use std::rc::Rc;

    fn through_steps(host: FakeHost) -> (FakeStream, Verdict) {
        let mut stream = FakeStream::new(host);
        let mut steps = SignAuthSteps::new(Rc::new(policy()), Metrics::define(&mut stream));
        let verdict = steps.on_request_headers(&mut stream, true);
        (stream, verdict)
    }

    #[test]
    fn an_appcode_query_parameter_is_removed_and_the_rest_of_the_query_kept() {
        for (path, forwarded) in [
            ("/q?x=1&AppCode=code-mobile&y=%20", "/q?x=1&y=%20"),
            ("/q?AppCode=code-mobile", "/q"),
        ] {
            let (stream, verdict) = through_steps(request("GET", path, &[]));
            assert_eq!(verdict, Verdict::Continue);
            assert_eq!(stream.request_header(":path").as_deref(), Some(forwarded));
        }
    }

    #[test]
    fn basic_credentials_leave_and_the_verified_user_is_sent_in_their_place() {
        let basic = format!("Basic {}", BASE64.encode("alice:alice-pw"));
        let host = request(
            "GET",
            "/x",
            &[("authorization", &basic), ("x-gw-user", "forged")],
        );
        let (stream, verdict) = through_steps(host);
        assert_eq!(verdict, Verdict::Continue);
        assert_eq!(stream.request_header("authorization"), None);
        assert_eq!(stream.request_header("x-gw-user").as_deref(), Some("alice"));
        assert_eq!(
            stream.request_header("x-gw-app-key").as_deref(),
            Some("203751")
        );
        assert_eq!(stream.counted(FILTER_NAME, "allowed"), 1);
    }

    #[test]
    fn a_refused_basic_request_is_challenged_in_the_shared_error_shape() {
        let host = request("GET", "/x", &[("authorization", "Basic bm9ib2R5Og==")]);
        let (stream, verdict) = through_steps(host);
        assert_eq!(verdict, Verdict::Answered);
        let reply = stream.reply().expect("a reply");
        assert_eq!(reply.status, 401);
        let header = |name: &str| {
            reply
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            header("www-authenticate"),
            Some("Basic realm=\"gateway\", charset=\"UTF-8\"")
        );
        assert_eq!(header("x-ca-error-code"), Some("A401BC"));
        assert_eq!(stream.counted(FILTER_NAME, "denied.A401BC"), 1);
    }

    #[test]
    fn a_backend_signature_in_huaweis_form_verifies_as_a_huawei_signature() {
        let mut stream = FakeStream::new(request(
            "POST",
            "/orders/9?b=2&a=1",
            &[
                ("x-apig-appcode", "code-mobile"),
                ("content-type", "text/plain"),
            ],
        ));
        let signing = policy_with(
            r#""backend_signature": {"format": "huawei", "keys": [{"id": "gw-2026", "secret": "backend-secret"}]},"#,
        );
        let mut steps = SignAuthSteps::new(Rc::new(signing), Metrics::define(&mut stream));
        assert_eq!(
            steps.on_request_headers(&mut stream, false),
            Verdict::Continue
        );
        let authorization = stream.request_header("authorization").expect("signed");
        assert!(authorization.starts_with(
            "SDK-HMAC-SHA256 Access=gw-2026, SignedHeaders=host;x-gw-api;x-gw-app-key;x-gw-app-name;x-sdk-content-sha256;x-sdk-date, Signature="
        ), "{authorization}");
        // The backend checks it as sign-auth checks a Huawei client's, the
        // body unsigned: what reached it, read by a sign-auth of its own.
        let backend = SignAuth::compile(
            &parse_json::<SignAuthConfig>(
                br#"{"apps": [{"key": "gateway", "huawei": [{"key": "gw-2026", "secrets": ["backend-secret"]}]}],
                     "modes": ["huawei_app"], "rules": [{"unsigned_payload": true}]}"#,
            )
            .unwrap(),
        )
        .unwrap();
        let received = |path: Option<&str>| {
            let host = stream
                .host
                .headers
                .iter()
                .filter(|(name, _)| path.is_none() || name != ":path")
                .fold(FakeHost::new(), |host, (name, value)| {
                    host.with_header(name, value)
                });
            let host = match path {
                Some(path) => host.with_header(":path", path),
                None => host,
            };
            host.clock.set(Duration::from_millis(NOW_MS));
            host
        };
        let store = MemoryStore::new();
        assert!(matches!(
            backend.begin(&received(None), &store, false),
            Step::Pass(Some(v)) if v.identity.app_key == "gateway"
        ));
        let moved = received(Some("/orders/10"));
        assert!(matches!(
            backend.begin(&moved, &store, false),
            Step::Reject(_) | Step::Challenge(..)
        ));
    }

    #[test]
    fn a_huawei_request_goes_on_without_its_authorization() {
        let host = huawei_signed("hw-key", "hw-new", "GET", "/orders/1", b"", NOW_MS);
        let (stream, verdict) = through_steps(host);
        assert_eq!(verdict, Verdict::Continue);
        assert_eq!(stream.request_header("authorization"), None);
        assert!(stream.request_header("x-sdk-date").is_some());
        assert_eq!(stream.request_header("x-gw-api").as_deref(), Some("orders"));
    }
}
