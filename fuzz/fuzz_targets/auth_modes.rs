//! sign-auth's other modes: the Huawei `Authorization` parser and
//! canonicalisation, AppCodes, Basic credentials and tokens (their parts,
//! header, claims and keys). With `@huawei`, the
//! request is signed correctly by the crate's Huawei client (the fuzzer
//! picks the method, path, query, headers and body) and must pass; anything
//! else must get an error of sign-auth's own, never a panic.
#![no_main]

use gateway_common::store::MemoryStore;
use gateway_fuzz::{config, Request, AUTHORITY, NOW_MS};
use libfuzzer_sys::fuzz_target;
use sign_auth::huawei::{self, ClientRequest};
use sign_auth::policy::{codes, SignAuth, Step};
use std::sync::OnceLock;

fn policy() -> &'static SignAuth {
    static POLICY: OnceLock<SignAuth> = OnceLock::new();
    POLICY.get_or_init(|| {
        config(sign_auth::compile_config(
            br#"{
                "apps": [{ "key": "203751", "name": "fuzz",
                           "huawei": [{ "key": "hw", "secrets": ["hw-secret"] }],
                           "appcodes": ["code-1"],
                           "basic": [{ "username": "alice", "password": "pw" }],
                           "jwt": [{ "issuer": "fuzz", "clients": ["fz"] }] }],
                "jwt": { "issuers": [{ "name": "fuzz", "issuer": "fuzz", "jwks": { "keys": [
                            { "kty": "oct", "kid": "k", "k": "ZnV6ei1zZWNyZXQtb2YtdGhpcnR5LXR3by1ieXRlcyE" }
                         ] } }],
                         "from": [{ "header": "authorization" }, { "query": "token" }, { "cookie": "t" }] },
                "modes": ["app", "huawei_app", "appcode", "basic", "jwt"],
                "rules": [{ "name": "q", "match": { "path": { "prefix": "/q" } },
                            "modes": ["appcode"], "appcode_query": "AppCode" },
                          { "name": "open", "match": { "path": { "prefix": "/open" } },
                            "anonymous": true, "unsigned_payload": true }],
                "max_body_bytes": 4096
            }"#,
        ))
    })
}

fn run(policy: &SignAuth, host: &gateway_common::host::FakeHost, body: &[u8]) -> Step {
    let store = MemoryStore::new();
    match policy.begin(host, &store, body.is_empty()) {
        Step::NeedBody(pending) => policy.finish(*pending, body, &store, NOW_MS),
        step => step,
    }
}

fuzz_target!(|data: &[u8]| {
    let request = Request::parse(data);
    let policy = policy();
    let signed = request.option("huawei").is_some().then(|| {
        let mut headers = vec![("host".to_string(), AUTHORITY.to_string())];
        headers.extend(
            request
                .headers
                .iter()
                .filter(|(name, _)| signable(&name.to_ascii_lowercase()))
                .map(|(name, value)| (name.to_ascii_lowercase(), value.clone())),
        );
        huawei::sign_request(
            "hw",
            "hw-secret",
            &ClientRequest {
                method: &request.method,
                path_and_query: &request.path,
                headers: &headers,
                body: &request.body,
                unsigned_payload: false,
            },
            NOW_MS,
        )
    });
    let first: Vec<(&str, &str)> = signed
        .iter()
        .flat_map(|s| s.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        .collect();
    let host = request.host(&first);
    match run(policy, &host, &request.body) {
        Step::Pass(_) => {}
        Step::Reject(error) | Step::Challenge(error, _) => {
            assert!(
                codes::ALL.iter().any(|code| code.code == error.code),
                "an error sign-auth does not document: {error:?}"
            );
            // A signed request the client could sign is refused only for what
            // the signature cannot cover: a route that takes no Huawei
            // signature, or a header whose value Envoy would not pass as is.
            if signed.is_some() && must_pass(&request) {
                panic!("a correctly signed request was refused: {error:?}");
            }
        }
        Step::NeedBody(_) => panic!("the body was given and still asked for"),
        Step::CheckFleet(_) => panic!("a fleet check without a fleet store"),
    }
});

/// Whether a request signed by the Huawei client must pass: not on the
/// AppCode-only route, with a method and headers as a real client sends
/// them (a header repeated under another case, or a value with leading or
/// control characters, is read back differently than it was signed).
fn must_pass(request: &Request) -> bool {
    let mut names: Vec<String> = request
        .headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    names.sort();
    let distinct = names.windows(2).all(|w| w[0] != w[1]);
    !request.path.starts_with("/q")
        && !request.method.is_empty()
        && request.method.bytes().all(|b| b.is_ascii_uppercase())
        && distinct
        && request.headers.iter().all(|(name, value)| {
            let name = name.to_ascii_lowercase();
            signable(&name)
                && !matches!(
                    name.as_str(),
                    "host" | "authorization" | "x-sdk-date" | "x-sdk-content-sha256"
                )
                && !value.chars().any(char::is_control)
        })
        && request.headers.len() < huawei::MAX_SIGNED_HEADERS - 2
}

/// A header name a client can send and sign: one HTTP token of the
/// characters a `SignedHeaders` list admits.
fn signable(name: &str) -> bool {
    !name.contains(';') && huawei::signed_header_names(name).is_ok()
}
