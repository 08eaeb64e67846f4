//! The Alibaba Cloud API Gateway signature scheme (`X-Ca-*` headers).
//!
//! String to sign, lines joined with `\n`:
//!
//! ```text
//! HTTPMethod
//! Accept
//! Content-MD5
//! Content-Type
//! Date
//! name:value\n        (one per signed header, names lower-cased and sorted)
//! PathAndParameters
//! ```
//!
//! PathAndParameters is the path, then `?` and the query parameters merged
//! with the form parameters of a urlencoded body, sorted by key, as
//! `key=value` (or `key` when the value is empty) joined with `&`. Values are
//! URL-decoded; a key given several times keeps its first value.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use std::collections::BTreeMap;
use std::fmt::Write;

pub use gateway_common::params::{url_decode, url_decoded, ParameterError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureMethod {
    HmacSha256,
    HmacSha1,
}

impl SignatureMethod {
    /// Parses `X-Ca-Signature-Method`; absent means HmacSHA256.
    pub fn from_header(value: Option<&str>) -> Option<Self> {
        match value.map(str::trim) {
            None | Some("") => Some(Self::HmacSha256),
            Some(v) if v.eq_ignore_ascii_case("HmacSHA256") => Some(Self::HmacSha256),
            Some(v) if v.eq_ignore_ascii_case("HmacSHA1") => Some(Self::HmacSha1),
            Some(_) => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::HmacSha256 => "HmacSHA256",
            Self::HmacSha1 => "HmacSHA1",
        }
    }
}

/// Headers that are part of the fixed lines or of the signature itself, and
/// so never appear among the signed headers.
const NEVER_SIGNED_HEADERS: [&str; 6] = [
    "x-ca-signature",
    "x-ca-signature-headers",
    "accept",
    "content-md5",
    "content-type",
    "date",
];

/// The names listed in `X-Ca-Signature-Headers`, lower-cased, sorted,
/// without duplicates and without the headers that are never signed.
pub fn signed_header_names(list: &str) -> Vec<String> {
    let mut names: Vec<String> = list
        .split(',')
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty() && !NEVER_SIGNED_HEADERS.contains(&name.as_str()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// What goes into the string to sign.
#[derive(Debug, Clone, Default)]
pub struct SigningInput<'a> {
    pub method: &'a str,
    pub accept: Option<&'a str>,
    pub content_md5: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub date: Option<&'a str>,
    /// (lower-case name, value), sorted by name.
    pub signed_headers: Vec<(String, String)>,
    /// The path without the query string.
    pub path: &'a str,
    /// Query and form parameters, decoded; first value of each key.
    pub parameters: BTreeMap<String, String>,
}

impl SigningInput<'_> {
    pub fn string_to_sign(&self) -> String {
        let mut out = String::with_capacity(128 + self.path.len());
        for line in [
            Some(self.method),
            self.accept,
            self.content_md5,
            self.content_type,
            self.date,
        ] {
            out.push_str(line.unwrap_or(""));
            out.push('\n');
        }
        for (name, value) in &self.signed_headers {
            let _ = writeln!(out, "{name}:{value}");
        }
        out.push_str(self.path);
        let mut separator = '?';
        for (key, value) in &self.parameters {
            out.push(separator);
            separator = '&';
            out.push_str(key);
            if !value.is_empty() {
                out.push('=');
                out.push_str(value);
            }
        }
        out
    }
}

/// Adds the parameters of a query string or urlencoded form to `into`,
/// keeping the first value of a repeated key.
pub fn add_parameters(
    encoded: &str,
    into: &mut BTreeMap<String, String>,
) -> Result<(), ParameterError> {
    for pair in encoded.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = url_decoded(key)?;
        if into.contains_key(key.as_ref()) {
            continue;
        }
        let value = url_decode(value)?;
        into.insert(key.into_owned(), value);
    }
    Ok(())
}

/// Base64 of the HMAC of `string_to_sign` keyed with `secret`.
pub fn sign(method: SignatureMethod, secret: &[u8], string_to_sign: &str) -> String {
    Secret::new(secret)
        .map(|secret| secret.sign(method, string_to_sign))
        .unwrap_or_default()
}

/// Checks a Base64 signature in constant time.
pub fn verify(
    method: SignatureMethod,
    secret: &[u8],
    string_to_sign: &str,
    signature: &str,
) -> bool {
    Secret::new(secret).is_some_and(|secret| secret.verifies(method, string_to_sign, signature))
}

/// An HMAC key with its key blocks hashed once: the filter prepares each
/// secret when the configuration loads, so a check hashes only the string
/// to sign. [`sign`] and [`verify`] prepare one per call.
#[derive(Clone)]
pub struct Secret {
    sha256: Hmac<sha2::Sha256>,
    sha1: Hmac<sha1::Sha1>,
}

impl Secret {
    /// `None` only if HMAC refused the key, which it never does.
    pub fn new(secret: &[u8]) -> Option<Self> {
        Some(Self {
            sha256: <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret).ok()?,
            sha1: <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret).ok()?,
        })
    }

    /// Base64 of the MAC of `string_to_sign`.
    pub fn sign(&self, method: SignatureMethod, string_to_sign: &str) -> String {
        let bytes = string_to_sign.as_bytes();
        match method {
            SignatureMethod::HmacSha256 => BASE64.encode(
                self.sha256
                    .clone()
                    .chain_update(bytes)
                    .finalize()
                    .into_bytes(),
            ),
            SignatureMethod::HmacSha1 => BASE64.encode(
                self.sha1
                    .clone()
                    .chain_update(bytes)
                    .finalize()
                    .into_bytes(),
            ),
        }
    }

    /// Checks a Base64 signature in constant time.
    pub fn verifies(&self, method: SignatureMethod, string_to_sign: &str, signature: &str) -> bool {
        let Ok(given) = BASE64.decode(signature.trim()) else {
            return false;
        };
        let bytes = string_to_sign.as_bytes();
        match method {
            SignatureMethod::HmacSha256 => self
                .sha256
                .clone()
                .chain_update(bytes)
                .verify_slice(&given)
                .is_ok(),
            SignatureMethod::HmacSha1 => self
                .sha1
                .clone()
                .chain_update(bytes)
                .verify_slice(&given)
                .is_ok(),
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// `Content-MD5` of a body: Base64 of its MD5 digest.
pub fn content_md5(body: &[u8]) -> String {
    BASE64.encode(Md5::digest(body))
}

/// The string to sign as the `X-Ca-Error-Message` shows it: newlines as `#`.
pub fn for_error_message(string_to_sign: &str) -> String {
    string_to_sign.replace('\n', "#")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected signatures were computed with
    //   printf '%s' "$STRING_TO_SIGN" | openssl dgst -sha256 -hmac "$SECRET" -binary | base64
    // independently of this code.

    fn params(query: &str, form: &str) -> BTreeMap<String, String> {
        let mut all = BTreeMap::new();
        add_parameters(query, &mut all).unwrap();
        add_parameters(form, &mut all).unwrap();
        all
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut list: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        list.sort();
        list
    }

    #[test]
    fn get_with_query_matches_the_known_answer() {
        let input = SigningInput {
            method: "GET",
            accept: Some("application/json"),
            signed_headers: headers(&[
                ("X-Ca-Timestamp", "1525872629832"),
                ("X-Ca-Key", "203753"),
                ("X-Ca-Nonce", "c9f15cbf-f4ac-4a6c-b54d-f51abf4b5b44"),
            ]),
            path: "/http2test/test",
            parameters: params("param2=test2&param1=test", ""),
            ..Default::default()
        };
        let sts = input.string_to_sign();
        assert_eq!(
            sts,
            "GET\napplication/json\n\n\n\nx-ca-key:203753\nx-ca-nonce:c9f15cbf-f4ac-4a6c-b54d-f51abf4b5b44\nx-ca-timestamp:1525872629832\n/http2test/test?param1=test&param2=test2"
        );
        assert_eq!(
            sign(SignatureMethod::HmacSha256, b"secret-key-1", &sts),
            "J+ONvtG8bqT76KuQROnzjAQv0DKGCWPL60jbfR599ZY="
        );
        assert_eq!(
            sign(SignatureMethod::HmacSha1, b"secret-key-1", &sts),
            "qzIcSSm0OpHprT1dtH2X+Ykaw5E="
        );
    }

    #[test]
    fn form_post_merges_form_parameters_and_matches_the_known_answer() {
        let input = SigningInput {
            method: "POST",
            accept: Some("application/json"),
            content_type: Some("application/x-www-form-urlencoded; charset=utf-8"),
            signed_headers: headers(&[("x-ca-key", "203753"), ("x-ca-timestamp", "1525872629832")]),
            path: "/orders",
            parameters: params("z=last&a=1", "name=hello+world&empty&a=2"),
            ..Default::default()
        };
        let sts = input.string_to_sign();
        assert!(
            sts.ends_with("/orders?a=1&empty&name=hello world&z=last"),
            "{sts}"
        );
        assert_eq!(
            sign(SignatureMethod::HmacSha256, b"secret-key-1", &sts),
            "iFMhaGDqBpCU9r07zB34YEuPBs3ly9xZbaWtbdZBuk0="
        );
    }

    #[test]
    fn json_post_with_content_md5_matches_the_known_answer() {
        let body = r#"{"id":7,"name":"café"}"#;
        let md5 = content_md5(body.as_bytes());
        assert_eq!(md5, "JEGppK20l5wsNPpBSUOxGg==");
        let input = SigningInput {
            method: "POST",
            accept: Some("application/json"),
            content_md5: Some(&md5),
            content_type: Some("application/json; charset=utf-8"),
            signed_headers: headers(&[("x-ca-key", "203753"), ("x-ca-timestamp", "1525872629832")]),
            path: "/orders",
            ..Default::default()
        };
        assert_eq!(
            sign(
                SignatureMethod::HmacSha256,
                b"secret-key-1",
                &input.string_to_sign()
            ),
            "UhZXAvxyMKSZq2xrCZMBtocKPOtt1hPlAQh5nB3NFpU="
        );
    }

    #[test]
    fn extra_signed_headers_and_date_match_the_known_answer() {
        let input = SigningInput {
            method: "GET",
            date: Some("Wed, 09 May 2018 13:30:29 GMT"),
            signed_headers: headers(&[
                ("X-Custom-B", "beta value"),
                ("x-ca-key", "203753"),
                ("X-Custom-A", "Alpha"),
            ]),
            path: "/path",
            ..Default::default()
        };
        assert_eq!(
            sign(
                SignatureMethod::HmacSha256,
                b"secret-key-1",
                &input.string_to_sign()
            ),
            "uwjNv/ziMCi5z/kpHcJljTXxfzv/fgo/eoFm0RnkhyM="
        );
    }

    #[test]
    fn non_ascii_values_are_decoded_and_signed_as_utf8() {
        let input = SigningInput {
            method: "GET",
            signed_headers: headers(&[("x-ca-key", "203753")]),
            path: "/search",
            parameters: params("q=%C3%BC+ber&city=%E5%8C%97%E4%BA%AC", ""),
            ..Default::default()
        };
        let sts = input.string_to_sign();
        assert!(sts.ends_with("/search?city=北京&q=ü ber"), "{sts}");
        assert_eq!(
            sign(SignatureMethod::HmacSha256, "sécret".as_bytes(), &sts),
            "EPNR/9shWK7pOFfK29pHz86p0McaJm98n3iLq6de6WQ="
        );
    }

    #[test]
    fn a_path_without_parameters_has_no_question_mark() {
        let input = SigningInput {
            method: "GET",
            path: "/x",
            ..Default::default()
        };
        assert_eq!(input.string_to_sign(), "GET\n\n\n\n\n/x");
    }

    #[test]
    fn verification_accepts_only_the_right_signature() {
        let sts = "GET\n\n\n\n\n/x";
        let good = sign(SignatureMethod::HmacSha256, b"k", sts);
        assert!(verify(SignatureMethod::HmacSha256, b"k", sts, &good));
        assert!(!verify(SignatureMethod::HmacSha256, b"other", sts, &good));
        assert!(!verify(SignatureMethod::HmacSha1, b"k", sts, &good));
        assert!(!verify(
            SignatureMethod::HmacSha256,
            b"k",
            "GET\n\n\n\n\n/y",
            &good
        ));
        assert!(!verify(
            SignatureMethod::HmacSha256,
            b"k",
            sts,
            "not base64!"
        ));
        assert!(!verify(SignatureMethod::HmacSha256, b"k", sts, ""));
    }

    #[test]
    fn a_prepared_secret_checks_exactly_as_the_raw_secret_does_and_can_be_reused() {
        let secret =
            Secret::new(b"a key longer than one sha block, to be hashed first ........ 64+")
                .expect("any key");
        let raw = b"a key longer than one sha block, to be hashed first ........ 64+";
        for method in [SignatureMethod::HmacSha256, SignatureMethod::HmacSha1] {
            for sts in ["GET\n\n\n\n\n/x", "POST\napplication/json\n\n\n\n/y?a=1"] {
                let good = sign(method, raw, sts);
                assert!(secret.verifies(method, sts, &good));
                assert!(
                    secret.verifies(method, sts, &good),
                    "the prepared state is reused"
                );
                assert!(!secret.verifies(method, "other", &good));
                assert!(!secret.verifies(method, sts, "not base64!"));
                assert_eq!(secret.sign(method, sts), good);
            }
        }
        let other = Secret::new(b"k").expect("any key");
        let good = sign(SignatureMethod::HmacSha256, raw, "GET\n\n\n\n\n/x");
        assert!(!other.verifies(SignatureMethod::HmacSha256, "GET\n\n\n\n\n/x", &good));
    }

    #[test]
    fn signed_header_names_are_normalised() {
        assert_eq!(
            signed_header_names(
                " X-Ca-Timestamp,x-ca-key ,Content-Type,X-Ca-Key,,X-Ca-Signature,date"
            ),
            vec!["x-ca-key", "x-ca-timestamp"]
        );
    }

    #[test]
    fn signature_methods_parse() {
        assert_eq!(
            SignatureMethod::from_header(None),
            Some(SignatureMethod::HmacSha256)
        );
        assert_eq!(
            SignatureMethod::from_header(Some("HmacSHA1")),
            Some(SignatureMethod::HmacSha1)
        );
        assert_eq!(
            SignatureMethod::from_header(Some("hmacsha256")),
            Some(SignatureMethod::HmacSha256)
        );
        assert_eq!(SignatureMethod::from_header(Some("HmacMD5")), None);
    }

    #[test]
    fn malformed_encodings_are_errors_not_panics() {
        let mut all = BTreeMap::new();
        assert!(matches!(
            add_parameters("a=%zz", &mut all),
            Err(ParameterError::BadPercentEncoding(_))
        ));
        assert!(matches!(
            add_parameters("a=%4", &mut all),
            Err(ParameterError::BadPercentEncoding(_))
        ));
        assert!(matches!(
            add_parameters("a=%ff%fe", &mut all),
            Err(ParameterError::NotUtf8(_))
        ));
        assert!(matches!(
            add_parameters("a=%", &mut all),
            Err(ParameterError::BadPercentEncoding(_))
        ));
        assert!(matches!(
            add_parameters("%C3=x", &mut all),
            Err(ParameterError::NotUtf8(_))
        ));
    }

    #[test]
    fn repeated_keys_keep_their_first_value() {
        assert_eq!(
            params("a=1&a=2", "a=3").get("a").map(String::as_str),
            Some("1")
        );
    }

    #[test]
    fn the_error_message_form_replaces_newlines() {
        assert_eq!(for_error_message("GET\n\n/x"), "GET##/x");
    }

    proptest::proptest! {
        #[test]
        fn url_decoding_never_panics(text in ".{0,64}") {
            let _ = url_decode(&text);
        }

        #[test]
        fn url_decoding_inverts_percent_encoding(text in "\\PC{0,32}") {
            let encoded: String = percent_encoding::utf8_percent_encode(&text, percent_encoding::NON_ALPHANUMERIC).to_string();
            proptest::prop_assert_eq!(url_decode(&encoded).unwrap(), text);
        }
    }
}
