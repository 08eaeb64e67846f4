//! The ways a caller proves it is an app, and the credentials an app holds
//! for each: Alibaba's `X-Ca-*` signature ([`crate::signature`]), Huawei
//! APIG's `SDK-HMAC-SHA256` signature ([`crate::huawei`]), an AppCode
//! (Alibaba's `Authorization: APPCODE <code>`, Huawei's `X-Apig-AppCode`)
//! and HTTP Basic (RFC 7617). What is read from a request is here; the
//! decisions are in [`crate::policy`].

use crate::huawei::{self, HuaweiSecret};
use crate::jwt::{cookie_value, Jwt, TokenPlace};
use crate::policy::codes;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use gateway_common::config::ConfigError;
use gateway_common::error::GatewayError;
use gateway_common::fleet::unhex;
use gateway_common::host::{Host, RequestLine};
use gateway_common::params::url_decoded;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use subtle::ConstantTimeEq;

/// How a caller authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Alibaba Cloud API Gateway's `X-Ca-*` signature.
    App,
    /// Huawei Cloud APIG's `SDK-HMAC-SHA256` signature.
    HuaweiApp,
    /// An AppCode, in `Authorization: APPCODE …`, `X-Apig-AppCode` or,
    /// where a rule allows it, a query parameter.
    Appcode,
    /// `Authorization: Basic …` with a username and password of an app.
    Basic,
    /// A JSON Web Token of a configured issuer ([`crate::jwt`]).
    Jwt,
}

impl Mode {
    const ALL: [Mode; 5] = [
        Mode::App,
        Mode::HuaweiApp,
        Mode::Appcode,
        Mode::Jwt,
        Mode::Basic,
    ];

    fn bit(self) -> u8 {
        1 << self as u8
    }

    fn credential(self) -> &'static str {
        match self {
            Mode::App => "an X-Ca-* signature",
            Mode::HuaweiApp => "an SDK-HMAC-SHA256 signature",
            Mode::Appcode => "an AppCode",
            Mode::Basic => "Basic credentials",
            Mode::Jwt => "a JWT",
        }
    }
}

/// A set of [`Mode`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes(u8);

impl Modes {
    pub const APP: Modes = Modes(1);

    pub fn of(list: &[Mode]) -> Self {
        Self(list.iter().fold(0, |bits, mode| bits | mode.bit()))
    }

    pub fn contains(self, mode: Mode) -> bool {
        self.0 & mode.bit() != 0
    }

    /// "an X-Ca-* signature or an AppCode", for error messages.
    pub fn credentials(self) -> String {
        let names: Vec<&str> = Mode::ALL
            .into_iter()
            .filter(|mode| self.contains(*mode))
            .map(Mode::credential)
            .collect();
        names.join(" or ")
    }
}

/// A Huawei AppKey and its AppSecrets (several during a rotation).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HuaweiKeyConfig {
    pub key: String,
    pub secrets: Vec<String>,
}

/// A Basic username of an app and its password, as is or `sha256:<hex>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicUserConfig {
    pub username: String,
    pub password: String,
}

/// The token clients of an app: values of an issuer's app claims.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtClientConfig {
    /// The issuer's `name` in `jwt.issuers`.
    pub issuer: String,
    /// Values of the issuer's `app_claims` (`azp` or `client_id` by
    /// default) that name the app.
    pub clients: Vec<String>,
}

/// The credentials of every app but the Alibaba key's, looked up by what a
/// request presents; each names its app by the app's key.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    huawei: HashMap<String, HuaweiKey>,
    /// SHA-256 of each AppCode.
    appcodes: HashMap<[u8; 32], String>,
    basic: HashMap<String, BasicUser>,
    /// (issuer index, client) to app.
    token_clients: HashMap<(usize, String), String>,
}

#[derive(Debug, Clone)]
pub struct HuaweiKey {
    pub app: String,
    pub secrets: Vec<HuaweiSecret>,
}

#[derive(Debug, Clone)]
struct BasicUser {
    app: String,
    /// SHA-256 of each accepted password.
    passwords: Vec<[u8; 32]>,
}

/// A secret of the configuration as its SHA-256 digest: `sha256:<64 hex
/// digits>` is a digest already (so a leaked configuration does not leak
/// the secret); anything else is the secret itself.
pub fn secret_digest(value: &str) -> Result<[u8; 32], &'static str> {
    match value.strip_prefix("sha256:") {
        Some(hex) => unhex(&hex.to_ascii_lowercase())
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or("`sha256:` must be followed by 64 hex digits"),
        None if value.is_empty() => Err("must not be empty"),
        None => Ok(Sha256::digest(value.as_bytes()).into()),
    }
}

impl Credentials {
    /// Adds the credentials of the app `key` configured at `at`.
    pub fn add(
        &mut self,
        at: &str,
        key: &str,
        huawei: &[HuaweiKeyConfig],
        appcodes: &[String],
        basic: &[BasicUserConfig],
    ) -> Result<(), ConfigError> {
        for (i, pair) in huawei.iter().enumerate() {
            let field = format!("{at}.huawei[{i}]");
            if pair.key.trim().is_empty() {
                return Err(ConfigError::new(
                    format!("{field}.key"),
                    "must not be empty",
                ));
            }
            if pair.secrets.is_empty() || pair.secrets.iter().any(String::is_empty) {
                return Err(ConfigError::new(
                    format!("{field}.secrets"),
                    "needs at least one secret, and no empty secret",
                ));
            }
            let compiled = HuaweiKey {
                app: key.to_string(),
                secrets: pair
                    .secrets
                    .iter()
                    .filter_map(|s| HuaweiSecret::new(s.as_bytes()))
                    .collect(),
            };
            if self.huawei.insert(pair.key.clone(), compiled).is_some() {
                return Err(ConfigError::new(
                    format!("{field}.key"),
                    format!("Huawei AppKey `{}` is defined twice", pair.key),
                ));
            }
        }
        for (i, code) in appcodes.iter().enumerate() {
            let field = format!("{at}.appcodes[{i}]");
            let digest = secret_digest(code).map_err(|why| ConfigError::new(&field, why))?;
            if self.appcodes.insert(digest, key.to_string()).is_some() {
                return Err(ConfigError::new(field, "this AppCode is defined twice"));
            }
        }
        for (i, user) in basic.iter().enumerate() {
            let field = format!("{at}.basic[{i}]");
            if user.username.is_empty()
                || user.username.contains(':')
                || user.username.chars().any(char::is_control)
            {
                return Err(ConfigError::new(
                    format!("{field}.username"),
                    "must not be empty nor contain `:` or control characters",
                ));
            }
            let digest = secret_digest(&user.password)
                .map_err(|why| ConfigError::new(format!("{field}.password"), why))?;
            let entry = self
                .basic
                .entry(user.username.clone())
                .or_insert_with(|| BasicUser {
                    app: key.to_string(),
                    passwords: Vec::new(),
                });
            // The same username again adds a password (a rotation), but
            // only within one app.
            if entry.app != key {
                return Err(ConfigError::new(
                    format!("{field}.username"),
                    format!("`{}` is another app's username", user.username),
                ));
            }
            entry.passwords.push(digest);
        }
        Ok(())
    }

    /// Adds the token clients of the app `key` configured at `at`.
    pub fn add_token_clients(
        &mut self,
        at: &str,
        key: &str,
        clients: &[JwtClientConfig],
        jwt: Option<&Jwt>,
    ) -> Result<(), ConfigError> {
        for (i, entry) in clients.iter().enumerate() {
            let field = format!("{at}.jwt[{i}]");
            let issuer = jwt
                .and_then(|jwt| jwt.issuer_index(&entry.issuer))
                .ok_or_else(|| {
                    ConfigError::new(
                        format!("{field}.issuer"),
                        format!("`{}` names no issuer in `jwt`", entry.issuer),
                    )
                })?;
            if entry.clients.is_empty() || entry.clients.iter().any(String::is_empty) {
                return Err(ConfigError::new(
                    format!("{field}.clients"),
                    "needs at least one client, and no empty one",
                ));
            }
            for client in &entry.clients {
                if let Some(other) = self
                    .token_clients
                    .insert((issuer, client.clone()), key.to_string())
                {
                    return Err(ConfigError::new(
                        format!("{field}.clients"),
                        format!(
                            "`{client}` of `{}` is app `{other}`'s already",
                            entry.issuer
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The app of a token client of the issuer.
    pub fn token_app(&self, issuer: usize, client: &str) -> Option<&str> {
        self.token_clients
            .get(&(issuer, client.to_string()))
            .map(String::as_str)
    }

    pub fn huawei_key(&self, access: &str) -> Option<&HuaweiKey> {
        self.huawei.get(access)
    }

    /// The app an AppCode belongs to. Looked up by its digest: timing tells
    /// a prober nothing of a code's digest it does not already know.
    pub fn appcode_app(&self, code: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(code.as_bytes()).into();
        self.appcodes.get(&digest).map(String::as_str)
    }

    /// The app of a Basic username whose password matches, compared by
    /// digest in constant time.
    pub fn basic_app(&self, username: &str, password: &str) -> Option<&str> {
        let user = self.basic.get(username)?;
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let matches = user
            .passwords
            .iter()
            .fold(subtle::Choice::from(0), |any, known| {
                any | known.ct_eq(&digest)
            });
        bool::from(matches).then_some(user.app.as_str())
    }
}

/// Where a credential came from, so it can be removed before the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The `X-Ca-*` headers.
    CaHeaders,
    /// The header of that (lower-case) name.
    Header(String),
    /// The query parameter of that name.
    Query(String),
    /// A cookie, which stays (the other cookies of its header are not the
    /// gateway's to drop).
    Cookie,
}

impl Source {
    pub fn authorization() -> Self {
        Source::Header("authorization".into())
    }
}

/// The credential a request presents, of the modes its API accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    None,
    /// `X-Ca-Key`.
    Alibaba(String),
    /// The whole `Authorization` value.
    Huawei(String),
    AppCode(String, Source),
    /// What follows `Basic ` in `Authorization`.
    Basic(String),
    /// A token, and where it was.
    Jwt(String, Source),
}

pub const APPCODE_HEADER: &str = "x-apig-appcode";

/// Where an API looks for credentials besides the fixed places.
#[derive(Debug, Clone, Copy, Default)]
pub struct Places<'a> {
    /// The query parameter of an AppCode.
    pub appcode_query: Option<&'a str>,
    /// Where tokens are, in order.
    pub tokens: &'a [TokenPlace],
}

/// The first credential of an accepted mode the request carries: a Huawei
/// signature, an `X-Ca-*` signature, an AppCode (`Authorization`, then
/// `X-Apig-AppCode`, then the query parameter), a token (its places in
/// order), Basic.
pub fn presented(host: &dyn Host, line: &RequestLine, modes: Modes, places: Places) -> Presented {
    let appcode_query = places.appcode_query;
    let authorization = [Mode::HuaweiApp, Mode::Appcode, Mode::Basic, Mode::Jwt]
        .into_iter()
        .any(|mode| modes.contains(mode))
        .then(|| host.request_header("authorization"))
        .flatten();
    let authorization = authorization.as_deref();
    if modes.contains(Mode::HuaweiApp) {
        if let Some(value) = authorization.filter(|v| huawei::is_scheme(v)) {
            return Presented::Huawei(value.to_string());
        }
    }
    if modes.contains(Mode::App) {
        if let Some(key) = host.request_header("x-ca-key") {
            return Presented::Alibaba(key);
        }
    }
    if modes.contains(Mode::Appcode) {
        if let Some(code) = authorization.and_then(|v| scheme_value(v, "APPCODE")) {
            return Presented::AppCode(code.to_string(), Source::authorization());
        }
        if let Some(code) = host.request_header(APPCODE_HEADER) {
            return Presented::AppCode(
                code.trim().to_string(),
                Source::Header(APPCODE_HEADER.into()),
            );
        }
        if let Some(name) = appcode_query {
            if let Some(code) = query_value(&line.path, name) {
                return Presented::AppCode(code, Source::Query(name.to_string()));
            }
        }
    }
    if modes.contains(Mode::Jwt) {
        if let Some((token, source)) = token_of(host, line, authorization, places.tokens) {
            return Presented::Jwt(token, source);
        }
    }
    if modes.contains(Mode::Basic) {
        if let Some(encoded) = authorization.and_then(|v| scheme_value(v, "Basic")) {
            return Presented::Basic(encoded.to_string());
        }
    }
    Presented::None
}

/// The first token in `places`.
fn token_of(
    host: &dyn Host,
    line: &RequestLine,
    authorization: Option<&str>,
    places: &[TokenPlace],
) -> Option<(String, Source)> {
    places.iter().find_map(|place| match place {
        TokenPlace::Header { name, prefix } => {
            let value = match name.as_str() {
                "authorization" => authorization.map(str::to_string),
                name => host.request_header(name),
            }?;
            let token = value
                .get(..prefix.len())
                .filter(|head| head.eq_ignore_ascii_case(prefix))
                .map(|_| value[prefix.len()..].trim())?;
            Some((token.to_string(), Source::Header(name.clone())))
        }
        TokenPlace::Query(name) => {
            query_value(&line.path, name).map(|token| (token, Source::Query(name.clone())))
        }
        TokenPlace::Cookie(name) => host
            .request_header_values("cookie")
            .iter()
            .find_map(|cookies| cookie_value(cookies, name).map(str::to_string))
            .map(|token| (token, Source::Cookie)),
    })
}

/// The value after `scheme ` in an `Authorization` value (scheme in any case).
fn scheme_value<'a>(authorization: &'a str, scheme: &str) -> Option<&'a str> {
    let (name, rest) = authorization.trim_start().split_once(' ')?;
    name.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// The first value of query parameter `name`; a value that cannot be
/// decoded is taken as given (and then matches no AppCode).
fn query_value(path: &str, name: &str) -> Option<String> {
    let (_, query) = path.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (url_decoded(key).ok()? == name).then(|| {
            url_decoded(value)
                .map(|v| v.into_owned())
                .unwrap_or_else(|_| value.to_string())
        })
    })
}

/// Longest `Authorization: Basic` value read: 4 KiB of Base64.
const MAX_BASIC_LEN: usize = 4096;

/// The username and password of a Basic credential; `None` for malformed
/// Base64, a value that is not UTF-8, or one without `:`.
pub fn basic_credentials(encoded: &str) -> Option<(String, String)> {
    if encoded.len() > MAX_BASIC_LEN {
        return None;
    }
    let text = String::from_utf8(BASE64.decode(encoded).ok()?).ok()?;
    let (username, password) = text.split_once(':')?;
    Some((username.to_string(), password.to_string()))
}

/// The `Authorization` value a client sends for Basic credentials.
pub fn basic_authorization(username: &str, password: &str) -> String {
    format!("Basic {}", BASE64.encode(format!("{username}:{password}")))
}

/// A Huawei-signed request, read from its headers; the body's hash (or the
/// client's `X-Sdk-Content-Sha256`) completes it.
#[derive(Debug)]
pub struct HuaweiRequest {
    pub access: String,
    pub signature: String,
    signed_headers: String,
    header_values: Vec<Vec<String>>,
    method: String,
    path_and_query: String,
    pub sdk_date: String,
    pub date_ms: u64,
    /// `X-Sdk-Content-Sha256`, when sent.
    content_sha256: Option<String>,
    /// The API takes `UNSIGNED-PAYLOAD`.
    unsigned_allowed: bool,
}

impl HuaweiRequest {
    /// Reads what the signature covers; `unsigned_allowed` says whether
    /// the API takes `UNSIGNED-PAYLOAD`, `end_of_stream` that there is no
    /// body.
    pub fn read(
        host: &dyn Host,
        line: &RequestLine,
        authorization: &str,
        unsigned_allowed: bool,
        end_of_stream: bool,
    ) -> Result<Self, GatewayError> {
        let invalid = |why: &str| {
            codes::INVALID_HEADER.with_message(format!("Invalid Header `Authorization`: {why}"))
        };
        let parsed = huawei::parse_authorization(authorization).map_err(invalid)?;
        let names = huawei::signed_header_names(parsed.signed_headers).map_err(invalid)?;
        let sdk_date = host
            .request_header(huawei::DATE_HEADER)
            .ok_or_else(|| codes::MISSING_HEADER.with_message("Header `X-Sdk-Date` is Required"))?;
        let date_ms = huawei::parse_sdk_date(sdk_date.trim()).ok_or_else(|| {
            codes::INVALID_HEADER
                .with_message("Invalid Header `X-Sdk-Date`: YYYYMMDDTHHMMSSZ (UTC) expected")
        })?;
        let content_sha256 = host
            .request_header(huawei::CONTENT_SHA256_HEADER)
            .map(|v| v.trim().to_string());
        let unsigned = content_sha256.as_deref() == Some(huawei::UNSIGNED_PAYLOAD);
        if unsigned && !unsigned_allowed && !end_of_stream {
            return Err(codes::UNSIGNED_PAYLOAD);
        }
        let header_values = names
            .iter()
            .map(|name| match *name {
                "host" => vec![line.authority.clone()],
                name => host.request_header_values(name),
            })
            .collect();
        Ok(Self {
            access: parsed.access.to_string(),
            signature: parsed.signature.to_string(),
            signed_headers: parsed.signed_headers.to_string(),
            header_values,
            method: line.method.clone(),
            path_and_query: line.path.clone(),
            sdk_date: sdk_date.trim().to_string(),
            date_ms,
            content_sha256,
            unsigned_allowed,
        })
    }

    /// Whether the body is part of the check (it is, unless unsigned).
    pub fn needs_body(&self) -> bool {
        self.content_sha256.as_deref() != Some(huawei::UNSIGNED_PAYLOAD)
    }

    /// The canonical requests the client may have signed, with the body
    /// (`None`: the request has none): one, but two for a request without
    /// a body that says `UNSIGNED-PAYLOAD`, as Huawei's SDKs differ there
    /// (the Python SDK core signs the empty body's hash, the APIG signing
    /// samples the header's value).
    pub fn canonical_requests(&self, body: Option<&[u8]>) -> Result<Vec<String>, GatewayError> {
        let body = body.unwrap_or_default();
        let hashes = match self.content_sha256.as_deref() {
            Some(huawei::UNSIGNED_PAYLOAD) if body.is_empty() && self.unsigned_allowed => {
                vec![
                    huawei::UNSIGNED_PAYLOAD.to_string(),
                    huawei::payload_hash(b""),
                ]
            }
            Some(huawei::UNSIGNED_PAYLOAD) if body.is_empty() => vec![huawei::payload_hash(b"")],
            Some(huawei::UNSIGNED_PAYLOAD) if self.unsigned_allowed => {
                vec![huawei::UNSIGNED_PAYLOAD.to_string()]
            }
            Some(huawei::UNSIGNED_PAYLOAD) => return Err(codes::UNSIGNED_PAYLOAD),
            Some(claimed) => {
                if !claimed.eq_ignore_ascii_case(&huawei::payload_hash(body)) {
                    return Err(codes::INVALID_BODY_DIGEST);
                }
                vec![claimed.to_string()]
            }
            None => vec![huawei::payload_hash(body)],
        };
        Ok(hashes
            .iter()
            .map(|payload_hash| {
                huawei::CanonicalInput {
                    method: &self.method,
                    path_and_query: &self.path_and_query,
                    signed_headers: &self.signed_headers,
                    header_values: &self.header_values,
                    payload_hash,
                }
                .canonical_request()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_common::host::FakeHost;

    fn line(path: &str) -> RequestLine {
        RequestLine {
            method: "GET".into(),
            path: path.into(),
            authority: "api.example.com".into(),
        }
    }

    const EVERY: [Mode; 5] = Mode::ALL;

    #[test]
    fn the_first_credential_of_an_accepted_mode_is_taken() {
        let every = Modes::of(&EVERY);
        let host = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .fold(FakeHost::new(), |h, (k, v)| h.with_header(k, v))
        };
        let huawei = "SDK-HMAC-SHA256 Access=k, SignedHeaders=host, Signature=00";
        for (headers, path, modes, expected) in [
            (
                vec![("authorization", huawei), ("x-ca-key", "1")],
                "/",
                every,
                Presented::Huawei(huawei.into()),
            ),
            (
                vec![("authorization", huawei), ("x-ca-key", "1")],
                "/",
                Modes::APP,
                Presented::Alibaba("1".into()),
            ),
            (
                vec![("authorization", "APPCODE abc ")],
                "/",
                every,
                Presented::AppCode("abc".into(), Source::authorization()),
            ),
            (
                vec![("authorization", "appcode abc")],
                "/",
                every,
                Presented::AppCode("abc".into(), Source::authorization()),
            ),
            (
                vec![("x-apig-appcode", "def")],
                "/",
                every,
                Presented::AppCode("def".into(), Source::Header(APPCODE_HEADER.into())),
            ),
            (
                vec![],
                "/x?a=1&AppCode=g%20h",
                every,
                Presented::AppCode("g h".into(), Source::Query("AppCode".into())),
            ),
            (
                vec![("authorization", "Basic dTpw")],
                "/",
                every,
                Presented::Basic("dTpw".into()),
            ),
            (
                vec![("authorization", "Basic dTpw")],
                "/",
                Modes::of(&[Mode::App, Mode::Appcode]),
                Presented::None,
            ),
            (
                vec![("authorization", "Bearer t")],
                "/",
                every,
                Presented::None,
            ),
        ] {
            let host = host(&headers);
            assert_eq!(
                presented(
                    &host,
                    &line(path),
                    modes,
                    Places {
                        appcode_query: Some("AppCode"),
                        tokens: &[]
                    }
                ),
                expected,
                "{headers:?} {path}"
            );
        }
    }

    #[test]
    fn basic_credentials_decode_or_are_refused() {
        let encode = |text: &[u8]| BASE64.encode(text);
        assert_eq!(
            basic_credentials(&encode(b"alice:pa:ss")),
            Some(("alice".into(), "pa:ss".into()))
        );
        assert_eq!(
            basic_credentials(&encode(b"alice:")),
            Some(("alice".into(), String::new()))
        );
        for bad in [
            encode(b"no-colon"),
            encode(b"\xff\xfe:x"),
            "not base64!".to_string(),
            "YWxpY2U6cA".to_string(),
            "A".repeat(MAX_BASIC_LEN + 4),
        ] {
            assert_eq!(basic_credentials(&bad), None, "{bad:.40}");
        }
    }

    #[test]
    fn secrets_are_kept_as_digests_and_given_as_digests() {
        let plain = secret_digest("code-1").unwrap();
        let hex = gateway_common::fleet::hex(&plain);
        assert_eq!(secret_digest(&format!("sha256:{hex}")), Ok(plain));
        assert!(secret_digest("sha256:abc").is_err());
        assert!(secret_digest(&format!("sha256:{}", "g".repeat(64))).is_err());
        assert!(secret_digest("").is_err());
    }

    #[test]
    fn credentials_find_their_app() {
        let mut credentials = Credentials::default();
        let hashed = format!(
            "sha256:{}",
            gateway_common::fleet::hex(&Sha256::digest(b"s3cret"))
        );
        credentials
            .add(
                "apps[0]",
                "app-1",
                &[],
                &["code-1".into()],
                &[
                    BasicUserConfig {
                        username: "alice".into(),
                        password: hashed,
                    },
                    BasicUserConfig {
                        username: "alice".into(),
                        password: "next".into(),
                    },
                ],
            )
            .unwrap();
        assert_eq!(credentials.appcode_app("code-1"), Some("app-1"));
        assert_eq!(credentials.appcode_app("code-2"), None);
        assert_eq!(credentials.basic_app("alice", "s3cret"), Some("app-1"));
        assert_eq!(credentials.basic_app("alice", "next"), Some("app-1"));
        assert_eq!(credentials.basic_app("alice", "wrong"), None);
        assert_eq!(credentials.basic_app("bob", "s3cret"), None);
        let error = credentials
            .add(
                "apps[1]",
                "app-2",
                &[],
                &[],
                &[BasicUserConfig {
                    username: "alice".into(),
                    password: "p".into(),
                }],
            )
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "apps[1].basic[0].username: `alice` is another app's username"
        );
        let error = credentials
            .add("apps[1]", "app-2", &[], &["code-1".into()], &[])
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "apps[1].appcodes[0]: this AppCode is defined twice"
        );
    }
}
