//! What a request is counted by: where a value is read from (header, query
//! parameter, path variable, JWT claim) and how a key is hashed into a
//! table slot and a fingerprint.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use gateway_common::host::Host;
use gateway_common::matching::Captures;
use gateway_common::params::url_decode;
use serde::Deserialize;
use std::net::IpAddr;

/// Tokens longer than this are not decoded (the claim reads as absent).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Where a value comes from: `{"header": "x-user-id"}`, `{"query": "uid"}`,
/// `{"path": "id"}` (a variable of the rule's path template) or
/// `{"jwt_claim": "sub"}` (from `Authorization: Bearer <JWT>`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ValueSource {
    Header(String),
    Query(String),
    Path(String),
    JwtClaim(String),
}

impl ValueSource {
    /// Checks the name and normalises it (header names to lower case).
    /// Errors name the field under the source.
    pub fn compile(&self) -> Result<Self, (&'static str, String)> {
        let (field, name) = match self {
            ValueSource::Header(name) => ("header", name),
            ValueSource::Query(name) => ("query", name),
            ValueSource::Path(name) => ("path", name),
            ValueSource::JwtClaim(name) => ("jwt_claim", name),
        };
        if name.is_empty() {
            return Err((field, "must not be empty".into()));
        }
        Ok(match self {
            ValueSource::Header(name) => {
                if !gateway_common::config::is_http_token(name) {
                    return Err((field, format!("`{name}` is not a header name")));
                }
                ValueSource::Header(name.to_ascii_lowercase())
            }
            other => other.clone(),
        })
    }

    /// The value in the current request; `None` when absent or empty.
    pub fn read(&self, host: &dyn Host, path: &str, captures: &Captures<'_>) -> Option<String> {
        let value = match self {
            ValueSource::Header(name) => host.request_header(name),
            ValueSource::Query(name) => query_value(path, name),
            ValueSource::Path(name) => captures
                .iter()
                .find(|(variable, _)| variable == name)
                .map(|(_, value)| value.clone()),
            ValueSource::JwtClaim(claim) => host
                .request_header("authorization")
                .and_then(|header| jwt_claim(&header, claim)),
        };
        value.filter(|v| !v.is_empty())
    }
}

/// The first value of query parameter `name` in `:path`, URL-decoded (the
/// raw text when it is not valid percent-encoding).
pub fn query_value(path: &str, name: &str) -> Option<String> {
    let query = path.split_once('?')?.1;
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let same = key == name || url_decode(key).is_ok_and(|k| k == name);
        same.then(|| url_decode(value).unwrap_or_else(|_| value.to_string()))
    })
}

/// A claim of the JWT in an `Authorization: Bearer` header, as text. The
/// token is **not** verified here: verify it first (Envoy's `jwt_authn`).
pub fn jwt_claim(authorization: &str, claim: &str) -> Option<String> {
    let authorization = authorization.trim();
    let scheme = authorization.get(..7)?;
    if !scheme.eq_ignore_ascii_case("bearer ") || authorization.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let payload = authorization[7..].trim().split('.').nth(1)?;
    let json = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&json).ok()?;
    match claims.get(claim)? {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        serde_json::Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// The part of a client address a `client_ip` key counts by: the whole IPv4
/// address, the IPv6 address cut to `v6_prefix` bits (a /64 is usually one
/// subscriber).
pub fn client_ip_bytes(ip: IpAddr, v6_prefix: u8) -> ([u8; 16], usize) {
    let mut bytes = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            bytes[..4].copy_from_slice(&v4.octets());
            (bytes, 4)
        }
        IpAddr::V6(v6) => {
            let bits = u32::from(v6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            bytes = (u128::from(v6) & mask).to_be_bytes();
            (bytes, 16)
        }
    }
}

/// FNV-1a over length-prefixed fields, finished with a splitmix64 mix. Not
/// cryptographic, and it need not be: two keys that collide share a
/// counter, which can only throttle them earlier, never admit more.
#[derive(Debug, Clone, Copy)]
pub struct KeyHasher(u64);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Default for KeyHasher {
    fn default() -> Self {
        Self(FNV_OFFSET)
    }
}

impl KeyHasher {
    fn bytes(mut self, data: &[u8]) -> Self {
        for byte in data {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
        self
    }

    /// One field; its length first, so `("ab", "c")` and `("a", "bc")` differ.
    pub fn field(self, data: &[u8]) -> Self {
        self.bytes(&(data.len() as u64).to_le_bytes()).bytes(data)
    }

    pub fn number(self, value: u64) -> Self {
        self.bytes(&value.to_le_bytes())
    }

    /// (slot hash, fingerprint): two independent mixes; the fingerprint is never 0.
    pub fn finish(self) -> (u64, u64) {
        (mix(self.0 ^ 0x9e37_79b9_7f4a_7c15), mix(self.0).max(1))
    }
}

/// splitmix64's finaliser: every input bit affects every output bit.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_common::host::FakeHost;

    fn jwt(payload: &str) -> String {
        format!(
            "Bearer eyJhbGciOiJIUzI1NiJ9.{}.c2lnbmF0dXJl",
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn query_values_are_decoded_and_the_first_one_wins() {
        let path = "/a?x=1&uid=al%69ce&uid=bob&sp=a+b#frag";
        assert_eq!(query_value(path, "uid").as_deref(), Some("alice"));
        assert_eq!(query_value(path, "sp").as_deref(), Some("a b"));
        assert_eq!(
            query_value("/a?%75id=carol", "uid").as_deref(),
            Some("carol")
        );
        assert_eq!(query_value("/a?uid", "uid").as_deref(), Some(""));
        assert_eq!(query_value("/a?uid=%zz", "uid").as_deref(), Some("%zz"));
        assert_eq!(query_value("/a?x=uid", "uid"), None);
        assert_eq!(query_value("/a", "uid"), None);
        assert_eq!(query_value("/a?b=1#uid=2", "uid"), None);
    }

    #[test]
    fn a_jwt_claim_is_read_from_a_bearer_token() {
        let header = jwt(r#"{"sub":"user-7","tenant":42,"admin":true,"groups":["a"]}"#);
        assert_eq!(jwt_claim(&header, "sub").as_deref(), Some("user-7"));
        assert_eq!(jwt_claim(&header, "tenant").as_deref(), Some("42"));
        assert_eq!(jwt_claim(&header, "admin").as_deref(), Some("true"));
        assert_eq!(jwt_claim(&header, "groups"), None);
        assert_eq!(jwt_claim(&header, "missing"), None);
        let lower = header.replacen("Bearer", "bearer", 1);
        assert_eq!(jwt_claim(&lower, "sub").as_deref(), Some("user-7"));
    }

    #[test]
    fn a_malformed_or_oversized_token_has_no_claims() {
        for header in [
            "Basic dXNlcjpwYXNz".to_string(),
            "Bearer".to_string(),
            "Bearer onlyonepart".to_string(),
            "Bearer a.!!!.c".to_string(),
            format!("Bearer a.{}.c", URL_SAFE_NO_PAD.encode("not json")),
            format!("Bearer a.{}.c", URL_SAFE_NO_PAD.encode("[1,2]")),
            jwt(&format!(
                r#"{{"sub":"x","pad":"{}"}}"#,
                "p".repeat(MAX_TOKEN_BYTES)
            )),
        ] {
            assert_eq!(jwt_claim(&header, "sub"), None, "{header:.40}");
        }
    }

    #[test]
    fn values_are_read_from_where_the_source_says_and_empty_is_absent() {
        let host = FakeHost::new()
            .with_header("x-user-id", "u1")
            .with_header("x-empty", "")
            .with_header("authorization", &jwt(r#"{"sub":"from-jwt"}"#));
        let captures = vec![("id", "42".to_string())];
        let read = |source: ValueSource| source.read(&host, "/o/42?uid=q1", &captures);
        assert_eq!(
            read(ValueSource::Header("x-user-id".into())).as_deref(),
            Some("u1")
        );
        assert_eq!(read(ValueSource::Header("x-empty".into())), None);
        assert_eq!(read(ValueSource::Header("x-none".into())), None);
        assert_eq!(
            read(ValueSource::Query("uid".into())).as_deref(),
            Some("q1")
        );
        assert_eq!(read(ValueSource::Path("id".into())).as_deref(), Some("42"));
        assert_eq!(read(ValueSource::Path("other".into())), None);
        assert_eq!(
            read(ValueSource::JwtClaim("sub".into())).as_deref(),
            Some("from-jwt")
        );
    }

    #[test]
    fn header_names_are_checked_and_lower_cased() {
        assert_eq!(
            ValueSource::Header("X-User-Id".into()).compile(),
            Ok(ValueSource::Header("x-user-id".into()))
        );
        assert_eq!(
            ValueSource::Header("x user".into()).compile(),
            Err(("header", "`x user` is not a header name".into()))
        );
        assert_eq!(
            ValueSource::Query(String::new()).compile(),
            Err(("query", "must not be empty".into()))
        );
    }

    #[test]
    fn ipv6_clients_are_counted_by_prefix_and_ipv4_by_address() {
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        let same_64 = [ip("2001:db8:1:2::1"), ip("2001:db8:1:2:ffff::9")];
        assert_eq!(
            client_ip_bytes(same_64[0], 64),
            client_ip_bytes(same_64[1], 64)
        );
        assert_ne!(
            client_ip_bytes(same_64[0], 128),
            client_ip_bytes(same_64[1], 128)
        );
        assert_ne!(
            client_ip_bytes(ip("2001:db8:1:3::1"), 64),
            client_ip_bytes(same_64[0], 64)
        );
        let (v4, len) = client_ip_bytes(ip("192.0.2.7"), 64);
        assert_eq!(&v4[..len], &[192, 0, 2, 7]);
        assert_ne!(
            client_ip_bytes(ip("192.0.2.7"), 64),
            client_ip_bytes(ip("192.0.2.8"), 64)
        );
    }

    #[test]
    fn fields_are_hashed_with_their_boundaries() {
        let h = |parts: &[&str]| {
            parts
                .iter()
                .fold(KeyHasher::default(), |h, p| h.field(p.as_bytes()))
                .finish()
        };
        assert_ne!(h(&["ab", "c"]), h(&["a", "bc"]));
        assert_eq!(h(&["ab", "c"]), h(&["ab", "c"]));
        let (slot, fingerprint) = h(&["x"]);
        assert_ne!(slot, fingerprint);
        assert_ne!(fingerprint, 0);
    }

    #[test]
    fn slots_spread_evenly() {
        let mut buckets = [0u32; 16];
        for i in 0..16_000u32 {
            let (slot, _) = KeyHasher::default()
                .field(format!("10.0.{}.{}", i / 256, i % 256).as_bytes())
                .finish();
            buckets[(slot % 16) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (850..1150).contains(&n)),
            "{buckets:?}"
        );
    }
}
