//! Huawei Cloud APIG's app signature, `SDK-HMAC-SHA256`, as its SDKs sign.
//!
//! Canonical request, lines joined with `\n`:
//!
//! ```text
//! METHOD
//! CanonicalURI          the path percent-decoded, split at `/`, each segment
//!                       re-encoded (RFC 3986 unreserved kept), ending in `/`
//! CanonicalQueryString  name=value pairs decoded, sorted by name then value,
//!                       re-encoded the same way, joined with `&`
//! CanonicalHeaders      `name:trimmed value` per signed header and value, each
//!                       followed by `\n` (so an empty line follows the last)
//! SignedHeaders         the names as listed in `Authorization`
//! HexEncode(SHA256(body)), or `X-Sdk-Content-Sha256` when the client sent it
//! ```
//!
//! String to sign: `SDK-HMAC-SHA256\n<X-Sdk-Date>\n<hex SHA-256 of the
//! canonical request>`; signature: lower-case hex of HMAC-SHA256(AppSecret,
//! string to sign); header `Authorization: SDK-HMAC-SHA256 Access=<AppKey>,
//! SignedHeaders=<a;b>, Signature=<hex>`.
//!
//! Where Huawei's SDKs differ (a raw `+` in a query, which the Go SDK reads
//! as a space and the Python SDK as a plus; neither sends one, both send the
//! canonical query they signed), this follows the Go SDK.

use gateway_common::fleet::{hex, unhex};
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{percent_decode, percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use std::fmt::Write;

pub const ALGORITHM: &str = "SDK-HMAC-SHA256";
pub const DATE_HEADER: &str = "x-sdk-date";
pub const CONTENT_SHA256_HEADER: &str = "x-sdk-content-sha256";
/// The `X-Sdk-Content-Sha256` value of a request whose body is not signed.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// More signed headers than this is not a request an SDK sends.
pub const MAX_SIGNED_HEADERS: usize = 64;

/// What RFC 3986 leaves unencoded: letters, digits, `-`, `.`, `_`, `~`.
const ENCODED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The parts of an `Authorization: SDK-HMAC-SHA256 …` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization<'a> {
    pub access: &'a str,
    /// As listed, the canonical request's `SignedHeaders` line.
    pub signed_headers: &'a str,
    pub signature: &'a str,
}

/// Whether an `Authorization` value is of this scheme.
pub fn is_scheme(authorization: &str) -> bool {
    authorization
        .get(..ALGORITHM.len())
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(ALGORITHM))
        && authorization[ALGORITHM.len()..].starts_with([' ', '\t'])
}

/// Parses `SDK-HMAC-SHA256 Access=…, SignedHeaders=…, Signature=…`; the
/// error says what is wrong, for the client.
pub fn parse_authorization(value: &str) -> Result<Authorization<'_>, &'static str> {
    if !is_scheme(value) {
        return Err("the scheme is not SDK-HMAC-SHA256");
    }
    let (mut access, mut signed_headers, mut signature) = (None, None, None);
    for part in value[ALGORITHM.len()..].split(',') {
        let (name, field) = part
            .trim()
            .split_once('=')
            .ok_or("fields are Name=value, separated by commas")?;
        let slot = match name.trim() {
            "Access" => &mut access,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => return Err("the fields are Access, SignedHeaders and Signature"),
        };
        if slot.replace(field.trim()).is_some() {
            return Err("a field is given twice");
        }
    }
    let access = access
        .filter(|a| !a.is_empty())
        .ok_or("Access is missing")?;
    let signed_headers = signed_headers
        .filter(|s| !s.is_empty())
        .ok_or("SignedHeaders is missing")?;
    let signature = signature
        .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or("Signature must be 64 hex digits")?;
    Ok(Authorization {
        access,
        signed_headers,
        signature,
    })
}

/// The names of a `SignedHeaders` list, in its order; lower case is
/// required, as every SDK sends it.
pub fn signed_header_names(list: &str) -> Result<Vec<&str>, &'static str> {
    let names: Vec<&str> = list.split(';').collect();
    if names.len() > MAX_SIGNED_HEADERS {
        return Err("more than 64 signed headers");
    }
    let valid = |name: &&str| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
    };
    if !names.iter().all(valid) {
        return Err("SignedHeaders lists lower-case header names separated by `;`");
    }
    let mut sorted = names.clone();
    sorted.sort_unstable();
    if sorted.windows(2).any(|pair| pair[0] == pair[1]) {
        return Err("SignedHeaders names a header twice");
    }
    Ok(names)
}

/// The canonical URI of a path (without its query).
pub fn canonical_uri(path: &str) -> String {
    let decoded: Vec<u8> = percent_decode(path.as_bytes()).collect();
    let mut out = String::with_capacity(path.len() + 8);
    for (i, segment) in decoded.split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.extend(percent_encode(segment, ENCODED));
    }
    if !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// The canonical query string of a raw query (without `?`).
pub fn canonical_query(query: &str) -> String {
    let decode = |text: &str| -> Vec<u8> {
        if text.contains('+') {
            percent_decode(text.replace('+', " ").as_bytes()).collect()
        } else {
            percent_decode(text.as_bytes()).collect()
        }
    };
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect();
    pairs.sort();
    let mut out = String::with_capacity(query.len() + 8);
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.extend(percent_encode(name, ENCODED));
        out.push('=');
        out.extend(percent_encode(value, ENCODED));
    }
    out
}

/// What the canonical request is made of.
#[derive(Debug, Clone)]
pub struct CanonicalInput<'a> {
    pub method: &'a str,
    /// The path and query as sent.
    pub path_and_query: &'a str,
    /// The `SignedHeaders` list as sent.
    pub signed_headers: &'a str,
    /// The values of each signed header, in the list's order (`host` is the
    /// request's authority). A header absent from the request has none.
    pub header_values: &'a [Vec<String>],
    /// Hex SHA-256 of the body, or what `X-Sdk-Content-Sha256` says.
    pub payload_hash: &'a str,
}

impl CanonicalInput<'_> {
    pub fn canonical_request(&self) -> String {
        let (path, query) = self
            .path_and_query
            .split_once('?')
            .unwrap_or((self.path_and_query, ""));
        let mut out = String::with_capacity(256 + self.path_and_query.len());
        out.push_str(&self.method.to_ascii_uppercase());
        out.push('\n');
        out.push_str(&canonical_uri(path));
        out.push('\n');
        out.push_str(&canonical_query(query));
        out.push('\n');
        for (name, values) in self.signed_headers.split(';').zip(self.header_values) {
            let mut values: Vec<&str> = values.iter().map(|v| v.trim()).collect();
            values.sort_unstable();
            for value in values {
                let _ = writeln!(out, "{name}:{value}");
            }
        }
        out.push('\n');
        out.push_str(self.signed_headers);
        out.push('\n');
        out.push_str(self.payload_hash);
        out
    }
}

/// `SDK-HMAC-SHA256\n<date>\n<hex SHA-256 of the canonical request>`.
pub fn string_to_sign(sdk_date: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{sdk_date}\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    )
}

/// Hex SHA-256 of a body.
pub fn payload_hash(body: &[u8]) -> String {
    hex(&Sha256::digest(body))
}

/// An AppSecret with its HMAC key blocks hashed once.
#[derive(Clone)]
pub struct HuaweiSecret(Hmac<Sha256>);

impl HuaweiSecret {
    pub fn new(secret: &[u8]) -> Option<Self> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .ok()
            .map(Self)
    }

    /// The empty key (HMAC takes any key; this one never fails).
    fn empty() -> Self {
        Self(<Hmac<Sha256> as KeyInit>::new(&Default::default()))
    }

    /// Lower-case hex of the MAC of `string_to_sign`.
    pub fn sign(&self, string_to_sign: &str) -> String {
        hex(&self
            .0
            .clone()
            .chain_update(string_to_sign.as_bytes())
            .finalize()
            .into_bytes())
    }

    /// Checks a hex signature in constant time.
    pub fn verifies(&self, string_to_sign: &str, signature: &str) -> bool {
        let Some(given) = unhex(&signature.to_ascii_lowercase()) else {
            return false;
        };
        self.0
            .clone()
            .chain_update(string_to_sign.as_bytes())
            .verify_slice(&given)
            .is_ok()
    }
}

impl std::fmt::Debug for HuaweiSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HuaweiSecret(..)")
    }
}

/// Reads `X-Sdk-Date` (`YYYYMMDDTHHMMSSZ`, UTC) as epoch milliseconds.
pub fn parse_sdk_date(value: &str) -> Option<u64> {
    let bytes = value.as_bytes();
    if bytes.len() != 16 || bytes[8] != b'T' || bytes[15] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = value.get(range)?;
        digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
    let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + u64::from(hour * 3600 + minute * 60 + second)) * 1000)
}

/// Formats epoch milliseconds as `X-Sdk-Date`.
pub fn format_sdk_date(epoch_ms: u64) -> String {
    let seconds = epoch_ms / 1000;
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let in_day = seconds % 86_400;
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    )
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a date from 1970 on (Howard Hinnant's
/// algorithm, with years counted from March).
fn days_from_civil(year: u32, month: u32, day: u32) -> u64 {
    let year = u64::from(if month <= 2 { year - 1 } else { year });
    let (era, year_of_era) = (year / 400, year % 400);
    let month = u64::from(month);
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + u64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day since 1970-01-01 (the inverse of [`days_from_civil`]).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let days = days + 719_468;
    let (era, day_of_era) = (days / 146_097, days % 146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A request as a Huawei SDK signs it: every header given (with `host`)
/// is signed, and `X-Sdk-Date` and `Authorization` are added.
#[derive(Debug, Clone)]
pub struct ClientRequest<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    /// (name, value); must include `host`.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
    /// Sign `UNSIGNED-PAYLOAD` (and send it as `X-Sdk-Content-Sha256`)
    /// instead of the body's hash.
    pub unsigned_payload: bool,
}

/// What a client adds to a request it signs.
#[derive(Debug, Clone)]
pub struct Signed {
    /// `x-sdk-date`, `authorization` and, for an unsigned payload,
    /// `x-sdk-content-sha256`.
    pub headers: Vec<(String, String)>,
    pub canonical_request: String,
    pub string_to_sign: String,
}

/// Signs `request` at `now_ms` with `key` and `secret`.
pub fn sign_request(key: &str, secret: &str, request: &ClientRequest, now_ms: u64) -> Signed {
    match HuaweiSecret::new(secret.as_bytes()) {
        Some(secret) => sign_with(key, &secret, request, now_ms),
        None => sign_with(key, &HuaweiSecret::empty(), request, now_ms),
    }
}

/// [`sign_request`] with a secret prepared once (the gateway's backend
/// signature).
pub fn sign_with(key: &str, secret: &HuaweiSecret, request: &ClientRequest, now_ms: u64) -> Signed {
    let date = format_sdk_date(now_ms);
    let mut all: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
        .collect();
    all.push((DATE_HEADER.to_string(), date.clone()));
    let payload_hash = if request.unsigned_payload {
        all.push((
            CONTENT_SHA256_HEADER.to_string(),
            UNSIGNED_PAYLOAD.to_string(),
        ));
        UNSIGNED_PAYLOAD.to_string()
    } else {
        payload_hash(request.body)
    };
    let mut names: Vec<&str> = all.iter().map(|(name, _)| name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let signed_headers = names.join(";");
    let header_values: Vec<Vec<String>> = names
        .iter()
        .map(|name| {
            all.iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .collect()
        })
        .collect();
    let canonical_request = CanonicalInput {
        method: request.method,
        path_and_query: request.path_and_query,
        signed_headers: &signed_headers,
        header_values: &header_values,
        payload_hash: &payload_hash,
    }
    .canonical_request();
    let string_to_sign = string_to_sign(&date, &canonical_request);
    let signature = secret.sign(&string_to_sign);
    let mut headers = vec![
        (DATE_HEADER.to_string(), date),
        (
            "authorization".to_string(),
            format!(
                "{ALGORITHM} Access={key}, SignedHeaders={signed_headers}, Signature={signature}"
            ),
        ),
    ];
    if request.unsigned_payload {
        headers.push((
            CONTENT_SHA256_HEADER.to_string(),
            UNSIGNED_PAYLOAD.to_string(),
        ));
    }
    Signed {
        headers,
        canonical_request,
        string_to_sign,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMPTY_HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// The canonical request of a request with `headers`, signing `signed`.
    fn canonical(
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        signed: &str,
    ) -> String {
        let header_values: Vec<Vec<String>> = signed
            .split(';')
            .map(|name| {
                headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_string())
                    .collect()
            })
            .collect();
        CanonicalInput {
            method,
            path_and_query,
            signed_headers: signed,
            header_values: &header_values,
            payload_hash: EMPTY_HASH,
        }
        .canonical_request()
    }

    /// The worked example of Huawei's signing guide ("Constructing a
    /// Standard Request" through "Calculating the Signature"): its hashed
    /// canonical request and its signature are the published figures.
    #[test]
    fn the_published_example_signs_to_the_published_signature() {
        let canonical = canonical(
            "GET",
            "/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs?limit=2&marker=13551d6b-755d-4757-b956-536f674975c0",
            &[
                ("Content-Type", "application/json"),
                ("Host", "service.region.example.com"),
                ("X-Sdk-Date", "20191115T033655Z"),
            ],
            "content-type;host;x-sdk-date",
        );
        assert_eq!(
            canonical,
            "GET\n/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs/\n\
             limit=2&marker=13551d6b-755d-4757-b956-536f674975c0\n\
             content-type:application/json\nhost:service.region.example.com\n\
             x-sdk-date:20191115T033655Z\n\ncontent-type;host;x-sdk-date\n"
                .to_string()
                + EMPTY_HASH
        );
        let to_sign = string_to_sign("20191115T033655Z", &canonical);
        assert_eq!(
            to_sign,
            "SDK-HMAC-SHA256\n20191115T033655Z\n\
             b25362e603ee30f4f25e7858e8a7160fd36e803bb2dfe206278659d71a9bcd7a"
        );
        let secret = HuaweiSecret::new(b"MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc").unwrap();
        let signature = "7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe";
        assert_eq!(secret.sign(&to_sign), signature);
        assert!(secret.verifies(&to_sign, signature));
        assert!(secret.verifies(&to_sign, &signature.to_ascii_uppercase()));
        assert!(!secret.verifies(&to_sign, &signature.replace('7', "8")));
    }

    // Expected canonical forms below were written from the specification
    // (module comment) and checked with Python: `quote(part, safe='~')`,
    // as Huawei's Python SDK signer encodes, on the path decoded with
    // `unquote` and the query's names and values with `unquote_plus`.

    #[test]
    fn canonical_uris_decode_then_encode_each_segment_and_end_in_a_slash() {
        for (path, expected) in [
            ("", "/"),
            ("/", "/"),
            ("/a/b", "/a/b/"),
            ("/a/b/", "/a/b/"),
            ("/with space", "/with%20space/"),
            ("/with%20space", "/with%20space/"),
            ("/a%2Fb", "/a/b/"),
            ("/a//b", "/a//b/"),
            ("/caf%C3%A9/é", "/caf%C3%A9/%C3%A9/"),
            ("/~user/x_y-z.1", "/~user/x_y-z.1/"),
            ("/a+b", "/a%2Bb/"),
            ("/%zz", "/%25zz/"),
            (
                "/x:y@z!$&'()*,;=",
                "/x%3Ay%40z%21%24%26%27%28%29%2A%2C%3B%3D/",
            ),
        ] {
            assert_eq!(canonical_uri(path), expected, "{path}");
        }
    }

    #[test]
    fn canonical_queries_sort_by_name_then_value_and_keep_empty_values() {
        for (query, expected) in [
            ("", ""),
            ("b=2&a=1", "a=1&b=2"),
            ("a=2&a=1&a=10", "a=1&a=10&a=2"),
            ("a&b=", "a=&b="),
            ("q=a%20b&r=a+b", "q=a%20b&r=a%20b"),
            ("x=%2B&y=%2F", "x=%2B&y=%2F"),
            ("name=%E4%B8%AD", "name=%E4%B8%AD"),
            ("&&a=1&&", "a=1"),
            ("k=v=w", "k=v%3Dw"),
            ("B=1&a=1", "B=1&a=1"),
        ] {
            assert_eq!(canonical_query(query), expected, "{query}");
        }
    }

    #[test]
    fn canonical_headers_trim_values_and_sort_repeated_ones() {
        let canonical = canonical(
            "post",
            "/p",
            &[
                ("host", "h.example"),
                ("x-b", "  2 "),
                ("x-a", "z"),
                ("x-a", "a"),
            ],
            "host;x-a;x-b;x-missing",
        );
        assert_eq!(
            canonical,
            format!("POST\n/p/\n\nhost:h.example\nx-a:a\nx-a:z\nx-b:2\n\nhost;x-a;x-b;x-missing\n{EMPTY_HASH}")
        );
    }

    #[test]
    fn authorization_headers_parse_or_say_what_is_wrong() {
        let sig = "a".repeat(64);
        let good =
            format!("SDK-HMAC-SHA256 Access=key1, SignedHeaders=host;x-sdk-date, Signature={sig}");
        assert_eq!(
            parse_authorization(&good),
            Ok(Authorization {
                access: "key1",
                signed_headers: "host;x-sdk-date",
                signature: &sig,
            })
        );
        assert!(parse_authorization(&good.replace("SDK-HMAC-SHA256", "sdk-hmac-sha256")).is_ok());
        for bad in [
            "SDK-HMAC-SHA256".to_string(),
            "SDK-HMAC-SHA256x Access=a".to_string(),
            "Basic abc".to_string(),
            format!("SDK-HMAC-SHA256 Access=, SignedHeaders=host, Signature={sig}"),
            format!("SDK-HMAC-SHA256 Access=a, Signature={sig}"),
            "SDK-HMAC-SHA256 Access=a, SignedHeaders=host, Signature=abc".to_string(),
            format!("SDK-HMAC-SHA256 Access=a, Access=b, SignedHeaders=host, Signature={sig}"),
            format!("SDK-HMAC-SHA256 Access=a, SignedHeaders=host, Signature={sig}, Extra=1"),
            format!("SDK-HMAC-SHA256 Access=a SignedHeaders=host Signature={sig}"),
        ] {
            assert!(parse_authorization(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signed_header_lists_are_bounded_and_lower_case() {
        assert_eq!(
            signed_header_names("host;x-sdk-date"),
            Ok(vec!["host", "x-sdk-date"])
        );
        assert!(signed_header_names("Host;x-sdk-date").is_err());
        assert!(signed_header_names("host;;x").is_err());
        assert!(signed_header_names("host:x").is_err());
        assert!(
            signed_header_names("host;x-big;x-big").is_err(),
            "a header twice"
        );
        let many = vec!["x"; 1000].join(";");
        assert!(signed_header_names(&many).is_err());
    }

    #[test]
    fn sdk_dates_read_and_write_utc() {
        assert_eq!(parse_sdk_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_sdk_date("20191115T033655Z"), Some(1_573_789_015_000));
        assert_eq!(format_sdk_date(1_573_789_015_000), "20191115T033655Z");
        assert_eq!(parse_sdk_date("20240229T235959Z"), Some(1_709_251_199_000));
        for bad in [
            "20230229T000000Z",
            "20191115T033655",
            "20191115 033655Z",
            "2019111ST033655Z",
            "20191315T033655Z",
            "20191115T243655Z",
            "+0191115T033655Z",
            "",
        ] {
            assert_eq!(parse_sdk_date(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn sdk_dates_round_trip(seconds in 0u64..253_402_300_799) {
            let ms = seconds * 1000;
            prop_assert_eq!(parse_sdk_date(&format_sdk_date(ms)), Some(ms));
        }

        #[test]
        fn a_signed_request_verifies_and_any_changed_byte_does_not(
            path in "/[a-z0-9%/ ]{0,20}",
            query in "[a-z0-9=&]{0,20}",
            body in proptest::collection::vec(any::<u8>(), 0..64),
            flip in any::<prop::sample::Index>(),
        ) {
            let headers = vec![("host".to_string(), "h.example".to_string())];
            let path_and_query = format!("{path}?{query}");
            let request = ClientRequest {
                method: "POST",
                path_and_query: &path_and_query,
                headers: &headers,
                body: &body,
                unsigned_payload: false,
            };
            let signed = sign_request("k", "s", &request, 1_700_000_000_000);
            let secret = HuaweiSecret::new(b"s").unwrap();
            let authorization = &signed.headers[1].1;
            let parsed = parse_authorization(authorization).unwrap();
            prop_assert!(secret.verifies(&signed.string_to_sign, parsed.signature));
            // Any change to the body changes its hash, so the string to sign.
            let mut changed = body.clone();
            if !changed.is_empty() {
                let at = flip.index(changed.len());
                changed[at] ^= 1;
                prop_assert_ne!(payload_hash(&changed), payload_hash(&body));
            }
            // Any change to the canonical request changes the string to sign.
            let mut bytes = signed.canonical_request.clone().into_bytes();
            let at = flip.index(bytes.len());
            bytes[at] ^= 1;
            let tampered = string_to_sign("20231114T221320Z", &String::from_utf8_lossy(&bytes));
            prop_assert!(!secret.verifies(&tampered, parsed.signature));
        }
    }
}
