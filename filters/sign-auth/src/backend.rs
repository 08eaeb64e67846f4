//! Backend signature: the gateway signs each request it forwards, so the
//! backend can check that the request came through the gateway (and that the
//! identity headers it carries were set by the gateway).
//!
//! Headers added:
//!
//! | header | value |
//! |---|---|
//! | `x-gw-signature-key-id` | id of the key used |
//! | `x-gw-signature-timestamp` | epoch milliseconds |
//! | `x-gw-signed-headers` | signed header names, lower-case, comma-separated |
//! | `x-gw-signature` | Base64(HMAC-SHA256(secret, string to sign)) |
//!
//! String to sign, lines joined with `\n` (no trailing newline):
//!
//! ```text
//! GW-HMAC-SHA256
//! <timestamp>
//! <METHOD>
//! <path, without query>
//! <query parameters, URL-decoded, sorted by key then value, key=value joined with &>
//! <name>:<value>            one line per signed header, in x-gw-signed-headers order
//! ```

use crate::signature::{self, url_decoded, ParameterError, Secret, SignatureMethod};
use serde::Deserialize;
use std::fmt::Write;

pub const KEY_ID_HEADER: &str = "x-gw-signature-key-id";
pub const TIMESTAMP_HEADER: &str = "x-gw-signature-timestamp";
pub const SIGNED_HEADERS_HEADER: &str = "x-gw-signed-headers";
pub const SIGNATURE_HEADER: &str = "x-gw-signature";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendKey {
    pub id: String,
    pub secret: String,
}

/// How forwarded requests are signed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendFormat {
    /// The `x-gw-signature*` headers (this module).
    #[default]
    Gateway,
    /// Huawei APIG's `SDK-HMAC-SHA256` (its "signature key" policy): the key
    /// id as `Access`, the body left out (`UNSIGNED-PAYLOAD`).
    Huawei,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSignatureConfig {
    /// The first key signs; list the next key first to rotate, keep the old
    /// one second until every backend knows the new one.
    pub keys: Vec<BackendKey>,
    #[serde(default)]
    pub format: BackendFormat,
    /// Request headers to sign besides the request line (default: the
    /// identity headers `x-gw-app-key`, `x-gw-app-name`, `x-gw-api`).
    #[serde(default)]
    pub headers: Option<Vec<String>>,
}

pub fn string_to_sign(
    timestamp_ms: u64,
    method: &str,
    path_and_query: &str,
    headers: &[(String, String)],
) -> Result<String, ParameterError> {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut parameters = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        parameters.push((url_decoded(key)?, url_decoded(value)?));
    }
    parameters.sort_unstable();
    let header_bytes: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 2).sum();
    let mut out =
        String::with_capacity(48 + method.len() + path_and_query.len() * 2 + header_bytes);
    let _ = write!(out, "GW-HMAC-SHA256\n{timestamp_ms}\n{method}\n{path}\n");
    for (i, (key, value)) in parameters.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    for (name, value) in headers {
        out.push('\n');
        out.push_str(name);
        out.push(':');
        out.push_str(value);
    }
    Ok(out)
}

/// The headers to add to a forwarded request, signed with the key's HMAC
/// state prepared once ([`Secret`]).
pub fn sign(
    key_id: &str,
    secret: &Secret,
    timestamp_ms: u64,
    method: &str,
    path_and_query: &str,
    headers: &[(String, String)],
) -> Result<Vec<(&'static str, String)>, ParameterError> {
    let text = string_to_sign(timestamp_ms, method, path_and_query, headers)?;
    let signature = secret.sign(SignatureMethod::HmacSha256, &text);
    Ok(signed_headers(key_id, timestamp_ms, headers, signature))
}

fn signed_headers(
    key_id: &str,
    timestamp_ms: u64,
    headers: &[(String, String)],
    signature: String,
) -> Vec<(&'static str, String)> {
    let mut names = String::with_capacity(headers.iter().map(|(n, _)| n.len() + 1).sum());
    for (i, (name, _)) in headers.iter().enumerate() {
        if i > 0 {
            names.push(',');
        }
        names.push_str(name);
    }
    vec![
        (KEY_ID_HEADER, key_id.to_string()),
        (TIMESTAMP_HEADER, timestamp_ms.to_string()),
        (SIGNED_HEADERS_HEADER, names),
        (SIGNATURE_HEADER, signature),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendVerifyError {
    MissingHeader(&'static str),
    UnknownKey(String),
    Expired,
    BadSignature,
    BadEncoding,
}

/// What a backend does (shown in Rust; the README shows the same steps):
/// look up the key by id, check the timestamp, rebuild the string, compare.
pub fn verify(
    keys: &[BackendKey],
    method: &str,
    path_and_query: &str,
    header: impl Fn(&str) -> Option<String>,
    now_ms: u64,
    window_ms: u64,
) -> Result<String, BackendVerifyError> {
    let need = |name: &'static str| header(name).ok_or(BackendVerifyError::MissingHeader(name));
    let key_id = need(KEY_ID_HEADER)?;
    let key = keys
        .iter()
        .find(|k| k.id == key_id)
        .ok_or_else(|| BackendVerifyError::UnknownKey(key_id.clone()))?;
    let timestamp: u64 = need(TIMESTAMP_HEADER)?
        .parse()
        .map_err(|_| BackendVerifyError::Expired)?;
    if now_ms.abs_diff(timestamp) > window_ms {
        return Err(BackendVerifyError::Expired);
    }
    let names = need(SIGNED_HEADERS_HEADER)?;
    let headers: Vec<(String, String)> = names
        .split(',')
        .filter(|n| !n.is_empty())
        .map(|n| (n.to_string(), header(n).unwrap_or_default()))
        .collect();
    let text = string_to_sign(timestamp, method, path_and_query, &headers)
        .map_err(|_| BackendVerifyError::BadEncoding)?;
    let given = need(SIGNATURE_HEADER)?;
    let valid = signature::verify(
        SignatureMethod::HmacSha256,
        key.secret.as_bytes(),
        &text,
        &given,
    );
    if valid {
        Ok(key.id.clone())
    } else {
        Err(BackendVerifyError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, secret: &str) -> BackendKey {
        BackendKey {
            id: id.into(),
            secret: secret.into(),
        }
    }

    fn sign_with_key(
        key: &BackendKey,
        timestamp_ms: u64,
        method: &str,
        path_and_query: &str,
        headers: &[(String, String)],
    ) -> Result<Vec<(&'static str, String)>, ParameterError> {
        let secret = Secret::new(key.secret.as_bytes()).expect("HMAC takes any key");
        sign(
            &key.id,
            &secret,
            timestamp_ms,
            method,
            path_and_query,
            headers,
        )
    }

    #[test]
    fn the_string_to_sign_is_as_documented_and_matches_the_known_answer() {
        let headers = vec![("x-gw-app-key".to_string(), "203751".to_string())];
        let text = string_to_sign(
            1700000000000,
            "POST",
            "/v2/orders?b=2&a=%E5%8C%97&a=0",
            &headers,
        )
        .unwrap();
        assert_eq!(
            text,
            "GW-HMAC-SHA256\n1700000000000\nPOST\n/v2/orders\na=0&a=北&b=2\nx-gw-app-key:203751"
        );
        // printf '%s' "$text" | openssl dgst -sha256 -hmac backend-secret -binary | base64
        let signed = sign_with_key(
            &key("k1", "backend-secret"),
            1700000000000,
            "POST",
            "/v2/orders?b=2&a=%E5%8C%97&a=0",
            &headers,
        )
        .unwrap();
        assert_eq!(
            signed[3],
            (
                SIGNATURE_HEADER,
                "1orJXcLSV/OYHT10IsQPj9YGvWoovWzH0oTeUJPrWBU=".to_string()
            )
        );
    }

    fn verify_signed(
        keys: &[BackendKey],
        signer: &BackendKey,
        tamper: impl Fn(&mut Vec<(String, String)>),
    ) -> Result<String, BackendVerifyError> {
        let identity = vec![("x-gw-app-key".to_string(), "203751".to_string())];
        let mut all: Vec<(String, String)> = identity.clone();
        for (k, v) in sign_with_key(signer, 1000, "GET", "/x?a=1", &identity).unwrap() {
            all.push((k.to_string(), v));
        }
        tamper(&mut all);
        let lookup = |name: &str| all.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        verify(keys, "GET", "/x?a=1", lookup, 1500, 60_000)
    }

    #[test]
    fn a_backend_verifies_with_either_key_during_rotation() {
        let keys = [key("new", "s2"), key("old", "s1")];
        assert_eq!(
            verify_signed(&keys, &key("new", "s2"), |_| {}),
            Ok("new".into())
        );
        assert_eq!(
            verify_signed(&keys, &key("old", "s1"), |_| {}),
            Ok("old".into())
        );
        assert_eq!(
            verify_signed(&keys, &key("gone", "s0"), |_| {}),
            Err(BackendVerifyError::UnknownKey("gone".into()))
        );
    }

    #[test]
    fn a_changed_identity_header_fails_verification() {
        let keys = [key("k", "s")];
        let result = verify_signed(&keys, &key("k", "s"), |h| {
            h[0].1 = "someone-else".into();
        });
        assert_eq!(result, Err(BackendVerifyError::BadSignature));
    }
}
