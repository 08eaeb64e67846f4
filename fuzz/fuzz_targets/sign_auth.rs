//! sign-auth's whole request check: headers, query, form or JSON body and
//! Content-MD5. Half the inputs are signed correctly (the fuzzer picks the
//! method, path, parameters, body and extra headers), so the check runs to
//! its end; such a request must pass, anything else must get an error of
//! sign-auth's own, never a panic.
#![no_main]

use gateway_common::host::FakeHost;
use gateway_common::params::{body_kind, BodyKind};
use gateway_common::store::MemoryStore;
use gateway_fuzz::{config, Request, NOW_MS};
use libfuzzer_sys::fuzz_target;
use sign_auth::client::{sign_request, ClientRequest, Credentials};
use sign_auth::policy::{codes, SignAuth, Step};
use sign_auth::signature::{content_md5, SignatureMethod};
use std::sync::OnceLock;

const APP_KEY: &str = "203751";
const SECRET: &str = "fuzz-secret";

fn policy() -> &'static SignAuth {
    static POLICY: OnceLock<SignAuth> = OnceLock::new();
    POLICY.get_or_init(|| {
        config(sign_auth::compile_config(
            br#"{
                "apps": [{ "key": "203751", "secrets": ["old", "fuzz-secret"], "name": "fuzz" },
                         { "key": "disabled", "secrets": ["x"], "disabled": true }],
                "rules": [{ "name": "open", "match": { "path": { "prefix": "/open" } }, "anonymous": true },
                          { "name": "orders", "match": { "path": { "prefix": "/orders" } }, "apps": ["203751"] }],
                "max_body_bytes": 4096,
                "backend_signature": { "keys": [{ "id": "k1", "secret": "backend" }] }
            }"#,
        ))
    })
}

/// The request, and how the fuzzer's client signs it: `@sign` (signed
/// correctly), `@md5` (with its Content-MD5), `@sha1`, `@nonce: N`, `@skew: MS`
/// (the client clock against the gateway's).
struct Input {
    request: Request,
    signed: bool,
    with_md5: bool,
    sha1: bool,
    nonce: String,
    skew_ms: i32,
}

impl Input {
    fn parse(data: &[u8]) -> Self {
        let request = Request::parse(data);
        Self {
            signed: request.option("sign").is_some(),
            with_md5: request.option("md5").is_some(),
            sha1: request.option("sha1").is_some(),
            nonce: request.option("nonce").unwrap_or_default().to_string(),
            skew_ms: request
                .option("skew")
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
            request,
        }
    }
}

/// The headers a client adds to sign the request (sign-auth's own client
/// side), or `None` when the fuzzer's parameters are not valid encoding (no
/// client could sign them).
fn signature_headers(input: &Input, timestamp_ms: u64) -> Option<Vec<(String, String)>> {
    let request = &input.request;
    let md5 = input
        .with_md5
        .then(|| ("content-md5".to_string(), content_md5(&request.body)));
    let mut headers = request.headers.clone();
    headers.extend(md5.clone());
    let form_body = match body_kind(request.header("content-type")) {
        BodyKind::Form => Some(std::str::from_utf8(&request.body).ok()?.to_string()),
        _ => None,
    };
    let credentials = Credentials {
        key: APP_KEY.into(),
        secret: SECRET.into(),
        method: if input.sha1 {
            SignatureMethod::HmacSha1
        } else {
            SignatureMethod::HmacSha256
        },
    };
    let client_request = ClientRequest {
        method: request.method.clone(),
        path_and_query: request.path.clone(),
        headers,
        signed_extra: Vec::new(),
        form_body,
    };
    let mut signed = sign_request(&credentials, &client_request, timestamp_ms, &input.nonce)
        .ok()?
        .headers;
    signed.extend(md5);
    Some(signed)
}

/// Whether a correctly signed request is one sign-auth must let in.
fn must_pass(input: &Input) -> bool {
    let request = &input.request;
    let ours = |name: &str| {
        name.eq_ignore_ascii_case("content-md5")
            || name.to_ascii_lowercase().starts_with("x-ca-")
            || name.starts_with(':')
    };
    !input.nonce.is_empty()
        && input.nonce.len() <= 128
        && input.skew_ms.unsigned_abs() < 900_000
        && request.body.len() <= 4096
        && !request.headers.iter().any(|(name, _)| ours(name))
        && (input.with_md5 || request.header("content-md5").is_none())
}

fn run(policy: &SignAuth, host: &FakeHost, store: &MemoryStore, body: &[u8]) -> Step {
    match policy.begin(host, store, body.is_empty()) {
        Step::NeedBody(pending) => policy.finish(*pending, body, store, NOW_MS),
        step => step,
    }
}

fuzz_target!(|data: &[u8]| {
    let input = Input::parse(data);
    let policy = policy();
    let timestamp_ms = NOW_MS.saturating_add_signed(i64::from(input.skew_ms));
    let timestamp = timestamp_ms.to_string();
    let signature = if input.signed {
        signature_headers(&input, timestamp_ms)
    } else {
        None
    };
    // Unsigned: the X-Ca-* headers alone, so the check reads on to the
    // client's own signature headers, if any.
    let unsigned = [
        ("x-ca-key", APP_KEY),
        ("x-ca-nonce", input.nonce.as_str()),
        ("x-ca-timestamp", timestamp.as_str()),
    ];
    let first: Vec<(&str, &str)> = match &signature {
        Some(headers) => headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect(),
        None => unsigned.to_vec(),
    };
    let host = input.request.host(&first);
    let store = MemoryStore::new();
    let step = run(policy, &host, &store, &input.request.body);
    match step {
        Step::Pass(_) => {}
        Step::Reject(error) | Step::Challenge(error, _) => {
            assert!(
                codes::ALL.iter().any(|code| code.code == error.code),
                "an error sign-auth does not document: {error:?}"
            );
            assert!(
                signature.is_none() || !must_pass(&input),
                "a correctly signed request was refused: {error:?}"
            );
        }
        Step::NeedBody(_) => panic!("the body was given and still asked for"),
        Step::CheckFleet(_) => panic!("a fleet check without a fleet store"),
    }
    // The same nonce again is a replay, whatever else the request is.
    if signature.is_some() && must_pass(&input) {
        match run(policy, &host, &store, &input.request.body) {
            Step::Reject(error) => assert_eq!(error.code, codes::NONCE_USED.code),
            other => panic!("a replayed nonce was not refused: {other:?}"),
        }
    }
});
