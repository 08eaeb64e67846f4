//! Signing requests in tests the way an Alibaba SDK does, with the
//! client side of the sign-auth crate.

use sign_auth::client::{sign_request, ClientRequest, Credentials};
use sign_auth::signature::SignatureMethod;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A nonce never used before in this test process.
pub fn unique_nonce() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "nonce-{}-{}",
        now_ms(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Every header to send for a request signed now with HmacSHA256: the given
/// headers (include `accept`: the HTTP client would add its own otherwise)
/// plus the `X-Ca-*` ones.
pub fn signed_headers(
    key: &str,
    secret: &str,
    method: &str,
    path_and_query: &str,
    headers: &[(String, String)],
    form_body: Option<&str>,
) -> Vec<(String, String)> {
    let signed = sign_request(
        &Credentials {
            key: key.into(),
            secret: secret.into(),
            method: SignatureMethod::HmacSha256,
        },
        &ClientRequest {
            method: method.into(),
            path_and_query: path_and_query.into(),
            headers: headers.to_vec(),
            signed_extra: Vec::new(),
            form_body: form_body.map(str::to_string),
        },
        now_ms(),
        &unique_nonce(),
    )
    .unwrap_or_else(|e| panic!("cannot sign {path_and_query}: {e:?}"));
    let mut all = headers.to_vec();
    all.extend(signed.headers);
    all
}

/// Header pairs borrowed for `http::send`.
pub fn pairs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}
