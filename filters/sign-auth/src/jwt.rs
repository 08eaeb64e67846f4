//! JSON Web Tokens (RFC 7519) as a way in: the token's issuer is one of
//! the configured issuers, its signature verifies with one of the issuer's
//! keys (inline, or fetched from its JWKS; see [`crate::jwks`]), with the
//! algorithm the key allows (never one the token chooses), and its claims
//! pass the issuer's checks. A verified token is remembered in a table
//! shared by the workers until it expires, so it is verified once.
//!
//! Signatures are checked by the `jsonwebtoken` crate (RustCrypto
//! backends); the clock, the claims and the choice of key are this module's,
//! and the claims are read once.

use crate::jwks::JwksState;
use gateway_common::config::ConfigError;
use gateway_common::slots::{CacheKey, ExpiringCache, Stored};
use gateway_common::store::SharedStore;
use gateway_common::upstream::{Upstream, UpstreamFields, UpstreamKind};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::{Arc, Mutex};

const DEFAULT_REFRESH_SECONDS: u64 = 300;
const DEFAULT_LEEWAY_SECONDS: u64 = 60;
const DEFAULT_CACHE_SLOTS: u32 = 4096;
const DEFAULT_CACHE_MAX_TTL_SECONDS: u64 = 300;
const DEFAULT_MAX_TOKEN_BYTES: usize = 8192;
const CACHE_ENTRIES_PER_SLOT: usize = 4;
const CACHE_PREFIX: &str = "gw.sign_auth.jwt.";

/// `jwt` in sign-auth's configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    pub issuers: Vec<IssuerConfig>,
    /// Where tokens are looked for, in order (default `Authorization:
    /// Bearer`).
    #[serde(default)]
    pub from: Option<Vec<SourceConfig>>,
    /// Slots of the verified-token table (4 tokens each).
    #[serde(default)]
    pub cache_slots: Option<u32>,
    /// Longest a verified token is remembered (also capped by its `exp`).
    #[serde(default)]
    pub cache_max_ttl_seconds: Option<u64>,
    /// Longer tokens are refused unread.
    #[serde(default)]
    pub max_token_bytes: Option<usize>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// How apps and rules name the issuer.
    pub name: String,
    /// The `iss` its tokens carry (checked; picks the issuer of a token).
    #[serde(default)]
    pub issuer: Option<String>,
    /// A token's `aud` must hold one of these (not checked when empty).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Keys given inline, a JWKS (`{"keys": [...]}`).
    #[serde(default)]
    pub jwks: Option<Value>,
    /// Keys fetched from a JWKS through an Envoy cluster.
    #[serde(default)]
    pub jwks_uri: Option<EndpointConfig>,
    /// An OpenID Connect discovery document through an Envoy cluster,
    /// whose `jwks_uri` path is then fetched from the same cluster.
    #[serde(default)]
    pub discovery: Option<EndpointConfig>,
    #[serde(default)]
    pub refresh_seconds: Option<u64>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default)]
    pub leeway_seconds: Option<u64>,
    /// Claims naming the app, the first present wins (default `azp`,
    /// `client_id`).
    #[serde(default)]
    pub app_claims: Option<Vec<String>>,
    /// The claim naming the user (default `sub`).
    #[serde(default)]
    pub user_claim: Option<String>,
    /// Claims a token must have (default `exp`).
    #[serde(default)]
    pub required_claims: Option<Vec<String>>,
    /// Expired tokens pass (dangerous: a leaked token never ends).
    #[serde(default)]
    pub ignore_expiration: bool,
    /// A token's `jti` is accepted once (fleet-wide with a fleet store).
    #[serde(default)]
    pub prevent_jti_replay: bool,
}

/// An Envoy cluster and path.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub cluster: String,
    pub path: String,
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// One place a token may be: exactly one of `header` (with a `prefix`,
/// default `Bearer `), `query` or `cookie`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
}

/// A place a token may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenPlace {
    /// A header, with the scheme prefix (matched in any case).
    Header {
        name: String,
        prefix: String,
    },
    Query(String),
    Cookie(String),
}

/// The compiled `jwt` settings.
#[derive(Debug)]
pub struct Jwt {
    pub issuers: Vec<Issuer>,
    pub places: Vec<TokenPlace>,
    cache: ExpiringCache,
    cache_max_ttl_ms: u64,
    max_token_bytes: usize,
    /// A digest of the whole `jwt` configuration, part of every table key:
    /// shared data outlives a configuration, and a token another
    /// configuration (other issuers, in another order) verified must not
    /// pass here unchecked.
    fingerprint: [u8; 32],
    /// Fetched keys, shared by the roots of the configuration (set when it
    /// loads, see [`crate::jwks`]).
    pub state: OnceLock<Arc<Mutex<JwksState>>>,
}

#[derive(Debug)]
pub struct Issuer {
    pub name: String,
    pub issuer: Option<String>,
    audiences: Vec<String>,
    /// Keys given inline.
    pub inline: Option<Arc<KeySet>>,
    pub fetch: Option<Fetch>,
    pub leeway_s: u64,
    pub app_claims: Vec<String>,
    pub user_claim: String,
    required: Vec<String>,
    ignore_expiration: bool,
    pub prevent_jti_replay: bool,
}

/// Where an issuer's keys are fetched.
#[derive(Debug, Clone)]
pub struct Fetch {
    pub upstream: Upstream,
    /// `upstream` serves a discovery document, not the JWKS.
    pub discovery: bool,
    pub refresh_ms: u64,
}

const JWKS_UPSTREAM: UpstreamKind = UpstreamKind {
    name: "the issuer's keys",
    default_path: None,
    default_timeout_ms: 2_000,
    max_timeout_ms: 30_000,
};

impl Jwt {
    pub fn compile(config: &JwtConfig) -> Result<Self, ConfigError> {
        if config.issuers.is_empty() {
            return Err(ConfigError::new("issuers", "needs at least one issuer"));
        }
        let mut issuers: Vec<Issuer> = Vec::with_capacity(config.issuers.len());
        for (i, issuer) in config.issuers.iter().enumerate() {
            let compiled =
                compile_issuer(issuer).map_err(|e| e.within(&format!("issuers[{i}]")))?;
            if issuers.iter().any(|known| known.name == compiled.name) {
                return Err(ConfigError::new(
                    format!("issuers[{i}].name"),
                    format!("`{}` names another issuer", compiled.name),
                ));
            }
            if compiled.issuer.is_some()
                && issuers.iter().any(|known| known.issuer == compiled.issuer)
            {
                return Err(ConfigError::new(
                    format!("issuers[{i}].issuer"),
                    "another issuer has this `iss`: a token could not tell them apart",
                ));
            }
            issuers.push(compiled);
        }
        let places = match config.from.as_deref() {
            None => vec![TokenPlace::Header {
                name: "authorization".into(),
                prefix: "Bearer ".into(),
            }],
            Some([]) => return Err(ConfigError::new("from", "needs at least one place")),
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, source)| {
                    compile_place(source).map_err(|e| e.within(&format!("from[{i}]")))
                })
                .collect::<Result<_, _>>()?,
        };
        let slots = config.cache_slots.unwrap_or(DEFAULT_CACHE_SLOTS);
        if slots == 0 || slots > 1 << 20 {
            return Err(ConfigError::new(
                "cache_slots",
                "must be between 1 and 1048576",
            ));
        }
        let max_ttl = config
            .cache_max_ttl_seconds
            .unwrap_or(DEFAULT_CACHE_MAX_TTL_SECONDS);
        if max_ttl > 86_400 {
            return Err(ConfigError::new(
                "cache_max_ttl_seconds",
                "must be at most 86400 (0 turns the cache off)",
            ));
        }
        let max_token_bytes = config.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES);
        if !(64..=65_536).contains(&max_token_bytes) {
            return Err(ConfigError::new(
                "max_token_bytes",
                "must be between 64 and 65536",
            ));
        }
        let fingerprint = Sha256::digest(serde_json::to_vec(config).unwrap_or_default()).into();
        Ok(Self {
            issuers,
            places,
            fingerprint,
            cache: ExpiringCache::new(CACHE_PREFIX, slots, CACHE_ENTRIES_PER_SLOT, 64),
            cache_max_ttl_ms: max_ttl * 1000,
            max_token_bytes,
            state: OnceLock::new(),
        })
    }

    /// The shared-data key where a root leaves an issuer's fetched keys for
    /// the others (see [`crate::jwks`]).
    pub(crate) fn shared_keys_entry(&self, issuer: usize) -> String {
        let configuration = gateway_common::fleet::hex(&self.fingerprint[..8]);
        format!("{CACHE_PREFIX}keys.{configuration}.{issuer}")
    }

    /// Creates the verified-token table and the entries where fetched keys
    /// are shared; call when the configuration loads.
    pub fn initialize(
        &self,
        store: &dyn SharedStore,
    ) -> Result<(), gateway_common::store::StoreError> {
        self.cache.initialize(store)?;
        for (issuer, config) in self.issuers.iter().enumerate() {
            if config.fetch.is_some() {
                gateway_common::store::ensure_initialized(
                    store,
                    &self.shared_keys_entry(issuer),
                    &crate::jwks::EMPTY_ENTRY,
                )?;
            }
        }
        Ok(())
    }

    pub fn issuer_index(&self, name: &str) -> Option<usize> {
        self.issuers.iter().position(|issuer| issuer.name == name)
    }

    /// The keys an issuer verifies with now: inline, or the last fetched.
    fn keys(&self, issuer: usize) -> Option<Arc<KeySet>> {
        let inline = self.issuers.get(issuer)?.inline.clone();
        inline.or_else(|| {
            let state = self.state.get()?;
            gateway_common::sync::lock(state).keys(issuer)
        })
    }

    /// Verifies `token` for an API taking the issuers `allowed` (`None`:
    /// every issuer), at `now_ms`; a token verified before and still live
    /// in the shared table is taken from it.
    pub fn verify(
        &self,
        token: &str,
        allowed: Option<&[usize]>,
        store: &dyn SharedStore,
        now_ms: u64,
    ) -> Result<Verified, TokenError> {
        if token.len() > self.max_token_bytes {
            return Err(TokenError::Malformed("longer than the gateway reads"));
        }
        if token.bytes().filter(|b| *b == b'.').count() != 2 {
            return Err(TokenError::Malformed("not three parts"));
        }
        let key = cache_key(&self.fingerprint, token);
        if self.cache_max_ttl_ms > 0 {
            if let Ok(Some(payload)) = self.cache.lookup(store, &key, now_ms) {
                let issuer = usize::from(u16::from_le_bytes(
                    payload
                        .get(..2)
                        .and_then(|b| b.try_into().ok())
                        .unwrap_or_default(),
                ));
                if issuer < self.issuers.len() && allowed.is_none_or(|list| list.contains(&issuer))
                {
                    let claims = claims_unverified(token)
                        .map_err(|_| TokenError::Malformed("unreadable claims"))?;
                    return Ok(Verified {
                        issuer,
                        claims,
                        cache: CacheUse::Hit,
                    });
                }
            }
        }
        let (issuer, claims) = self.verify_signature(token, allowed, now_ms)?;
        // An issuer that ignores expiration keeps an expired token for the
        // cap, as it would pass again anyway.
        let expires_ms = claims
            .get("exp")
            .and_then(Value::as_u64)
            .filter(|_| !self.issuers[issuer].ignore_expiration)
            .map(|exp| exp.saturating_mul(1000));
        let until = expires_ms
            .unwrap_or(u64::MAX)
            .min(now_ms.saturating_add(self.cache_max_ttl_ms));
        let cache = if self.cache_max_ttl_ms == 0 || until <= now_ms {
            CacheUse::Missed(Stored::TooLarge)
        } else {
            let index = u16::try_from(issuer).unwrap_or(u16::MAX);
            CacheUse::Missed(
                self.cache
                    .store(store, &key, &index.to_le_bytes(), now_ms, until)
                    .unwrap_or(Stored::TooLarge),
            )
        };
        Ok(Verified {
            issuer,
            claims,
            cache,
        })
    }

    fn verify_signature(
        &self,
        token: &str,
        allowed: Option<&[usize]>,
        now_ms: u64,
    ) -> Result<(usize, Map<String, Value>), TokenError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenError::Malformed("unreadable header or algorithm"))?;
        if header.jku.is_some()
            || header.x5u.is_some()
            || header.jwk.is_some()
            || header.x5c.is_some()
        {
            return Err(TokenError::Malformed(
                "keys named or carried by the token (jku, x5u, jwk, x5c) are not taken",
            ));
        }
        if header.crit.is_some() {
            return Err(TokenError::Malformed(
                "critical header extensions are not understood",
            ));
        }
        let unverified =
            claims_unverified(token).map_err(|_| TokenError::Malformed("unreadable claims"))?;
        let issuer = self.issuer_of(&unverified, allowed)?;
        let keys = self
            .keys(issuer)
            .ok_or(TokenError::KeysUnavailable(issuer))?;
        let mut candidates = keys
            .candidates(header.kid.as_deref(), header.alg)
            .peekable();
        if candidates.peek().is_none() {
            return Err(TokenError::UnknownKey(issuer));
        }
        // The signature alone: the claims were read above, and are checked
        // below against this module's clock.
        let (message, signature) = token
            .rsplit_once('.')
            .ok_or(TokenError::Malformed("not three parts"))?;
        let mut signed = false;
        for key in candidates {
            match jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, header.alg) {
                Ok(true) => {
                    signed = true;
                    break;
                }
                Ok(false) => continue,
                Err(_) => return Err(TokenError::Malformed("the signature cannot be checked")),
            }
        }
        if !signed {
            return Err(TokenError::BadSignature);
        }
        self.issuers[issuer].check_claims(&unverified, now_ms)?;
        Ok((issuer, unverified))
    }

    /// The issuer of a token: the one whose `issuer` its `iss` names, else
    /// the only allowed issuer without an `issuer`.
    fn issuer_of(
        &self,
        claims: &Map<String, Value>,
        allowed: Option<&[usize]>,
    ) -> Result<usize, TokenError> {
        let takes = |i: &usize| allowed.is_none_or(|list| list.contains(i));
        let iss = claims.get("iss").and_then(Value::as_str);
        let named = (0..self.issuers.len())
            .filter(takes)
            .find(|&i| iss.is_some() && self.issuers[i].issuer.as_deref() == iss);
        if let Some(issuer) = named {
            return Ok(issuer);
        }
        let mut unnamed = (0..self.issuers.len())
            .filter(takes)
            .filter(|&i| self.issuers[i].issuer.is_none());
        match (unnamed.next(), unnamed.next()) {
            (Some(issuer), None) => Ok(issuer),
            _ => Err(TokenError::Claims(
                "`iss` names no issuer this API takes".into(),
            )),
        }
    }
}

impl Issuer {
    /// `exp`, `nbf`, `aud` and the required claims, at `now_ms`.
    fn check_claims(&self, claims: &Map<String, Value>, now_ms: u64) -> Result<(), TokenError> {
        let now = now_ms / 1000;
        for name in &self.required {
            if !claims.contains_key(name) {
                return Err(TokenError::Claims(format!(
                    "the `{name}` claim is required"
                )));
            }
        }
        let time = |name: &str| -> Result<Option<u64>, TokenError> {
            match claims.get(name) {
                None => Ok(None),
                Some(value) => value
                    .as_u64()
                    .or_else(|| value.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                    .map(Some)
                    .ok_or_else(|| TokenError::Claims(format!("`{name}` is not a time"))),
            }
        };
        if let (Some(exp), false) = (time("exp")?, self.ignore_expiration) {
            if now > exp.saturating_add(self.leeway_s) {
                return Err(TokenError::Expired);
            }
        }
        if let Some(nbf) = time("nbf")? {
            if now.saturating_add(self.leeway_s) < nbf {
                return Err(TokenError::NotYetValid);
            }
        }
        if let Some(issuer) = &self.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
                return Err(TokenError::Claims("`iss` is not the issuer's".into()));
            }
        }
        if !self.audiences.is_empty() {
            let listed = |aud: &str| self.audiences.iter().any(|a| a == aud);
            let matches = match claims.get("aud") {
                Some(Value::String(aud)) => listed(aud),
                Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(listed),
                _ => false,
            };
            if !matches {
                return Err(TokenError::Claims(
                    "`aud` names no audience of the issuer".into(),
                ));
            }
        }
        Ok(())
    }

    /// The value of the first app claim the token has.
    pub fn app_claim<'c>(&self, claims: &'c Map<String, Value>) -> Option<&'c str> {
        self.app_claims
            .iter()
            .find_map(|name| claims.get(name).and_then(Value::as_str))
    }
}

/// A verified token.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub issuer: usize,
    pub claims: Map<String, Value>,
    pub cache: CacheUse,
}

/// What the verified-token table did for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    Hit,
    /// Verified now; what keeping it did (`TooLarge`: not kept).
    Missed(Stored),
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    Malformed(&'static str),
    /// The issuer's keys have not been fetched yet.
    KeysUnavailable(usize),
    /// No key of the issuer has the token's `kid` and algorithm.
    UnknownKey(usize),
    BadSignature,
    Expired,
    NotYetValid,
    Claims(String),
}

/// The digest a token is remembered by, within a configuration.
fn cache_key(fingerprint: &[u8; 32], token: &str) -> CacheKey {
    let digest = Sha256::new()
        .chain_update(fingerprint)
        .chain_update(token.as_bytes())
        .finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    CacheKey(key)
}

/// An issuer's verification keys, each with the algorithms it allows.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

struct Key {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

impl KeySet {
    /// The signature keys of a JWKS (`{"keys": [...]}`); keys for
    /// encryption or of unsupported types are left out, and a set with no
    /// usable key is an error.
    pub fn from_jwks(jwks: &Value) -> Result<Self, String> {
        let set: JwkSet = serde_json::from_value(jwks.clone())
            .map_err(|e| format!("not a JWKS ({{\"keys\": [...]}}): {e}"))?;
        let keys: Vec<Key> = set
            .keys
            .iter()
            .filter(|jwk| {
                !matches!(
                    jwk.common.public_key_use,
                    Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
                )
            })
            .filter_map(|jwk| {
                let allowed = key_algorithms(&jwk.algorithm);
                let algorithms = match &jwk.common.key_algorithm {
                    Some(named) => {
                        let named = Algorithm::from_str(&format!("{named:?}")).ok()?;
                        allowed.contains(&named).then(|| vec![named])?
                    }
                    None => allowed,
                };
                if algorithms.is_empty() {
                    return None;
                }
                Some(Key {
                    kid: jwk.common.key_id.clone(),
                    algorithms,
                    key: DecodingKey::from_jwk(jwk).ok()?,
                })
            })
            .collect();
        if keys.is_empty() {
            return Err(
                "holds no signature key of a supported type (RSA, EC P-256/P-384, Ed25519, oct)"
                    .into(),
            );
        }
        Ok(Self { keys })
    }

    /// Keys that may verify a token of `alg` naming `kid`: the key of that
    /// id (when the token names one), if it allows `alg`.
    pub(crate) fn candidates<'k>(
        &'k self,
        kid: Option<&'k str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'k DecodingKey> {
        self.keys
            .iter()
            .filter(move |key| kid.is_none_or(|kid| key.kid.as_deref() == Some(kid)))
            .filter(move |key| key.algorithms.contains(&alg))
            .map(|key| &key.key)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The algorithms a key's type allows: what keeps a token from choosing
/// HS256 with an RSA public key as the secret, or `none`.
fn key_algorithms(parameters: &AlgorithmParameters) -> Vec<Algorithm> {
    use Algorithm::*;
    match parameters {
        AlgorithmParameters::RSA(_) => vec![RS256, RS384, RS512, PS256, PS384, PS512],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![ES256],
            EllipticCurve::P384 => vec![ES384],
            _ => Vec::new(),
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            vec![EdDSA]
        }
        AlgorithmParameters::OctetKey(_) => vec![HS256, HS384, HS512],
        _ => Vec::new(),
    }
}

fn compile_issuer(config: &IssuerConfig) -> Result<Issuer, ConfigError> {
    if config.name.is_empty() {
        return Err(ConfigError::new("name", "must not be empty"));
    }
    let inline = config
        .jwks
        .as_ref()
        .map(|jwks| KeySet::from_jwks(jwks).map(Arc::new))
        .transpose()
        .map_err(|why| ConfigError::new("jwks", why))?;
    let endpoint = match (&config.jwks_uri, &config.discovery) {
        (Some(endpoint), None) => Some(("jwks_uri", endpoint, false)),
        (None, Some(endpoint)) => Some(("discovery", endpoint, true)),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "discovery",
                "give `jwks_uri` or `discovery`, not both",
            ))
        }
    };
    let refresh_s = config.refresh_seconds.unwrap_or(DEFAULT_REFRESH_SECONDS);
    if !(10..=86_400).contains(&refresh_s) {
        return Err(ConfigError::new(
            "refresh_seconds",
            "must be between 10 and 86400",
        ));
    }
    let fetch = endpoint
        .map(|(field, endpoint, discovery)| {
            let upstream = Upstream::compile(
                UpstreamFields {
                    cluster: &endpoint.cluster,
                    authority: endpoint.authority.as_deref(),
                    path: Some(&endpoint.path),
                    timeout_ms: endpoint.timeout_ms,
                },
                JWKS_UPSTREAM,
            )
            .map_err(|e| e.within(field))?;
            Ok::<_, ConfigError>(Fetch {
                upstream,
                discovery,
                refresh_ms: refresh_s * 1000,
            })
        })
        .transpose()?;
    match (&inline, &fetch) {
        (None, None) => {
            return Err(ConfigError::new(
                "jwks",
                "give the keys: `jwks` inline, `jwks_uri` or `discovery`",
            ))
        }
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "jwks",
                "give `jwks` inline or fetch them, not both",
            ))
        }
        _ => {}
    }
    let required = config
        .required_claims
        .clone()
        .unwrap_or_else(|| vec!["exp".into()]);
    if config.prevent_jti_replay
        && (config.ignore_expiration || !required.iter().any(|claim| claim == "exp"))
    {
        return Err(ConfigError::new(
            "prevent_jti_replay",
            "needs tokens that expire: keep `exp` required and expiration checked, so a used jti is kept as long as its token passes",
        ));
    }
    let leeway_s = config.leeway_seconds.unwrap_or(DEFAULT_LEEWAY_SECONDS);
    if leeway_s > 3600 {
        return Err(ConfigError::new("leeway_seconds", "must be at most 3600"));
    }
    let app_claims = config
        .app_claims
        .clone()
        .unwrap_or_else(|| vec!["azp".into(), "client_id".into()]);
    Ok(Issuer {
        name: config.name.clone(),
        issuer: config.issuer.clone(),
        audiences: config.audiences.clone(),
        inline,
        fetch,
        leeway_s,
        app_claims,
        user_claim: config.user_claim.clone().unwrap_or_else(|| "sub".into()),
        required,
        ignore_expiration: config.ignore_expiration,
        prevent_jti_replay: config.prevent_jti_replay,
    })
}

fn compile_place(config: &SourceConfig) -> Result<TokenPlace, ConfigError> {
    fn named(value: &Option<String>) -> Option<&str> {
        value.as_deref().filter(|v| !v.is_empty())
    }
    match (
        named(&config.header),
        named(&config.query),
        named(&config.cookie),
    ) {
        (Some(header), None, None) => Ok(TokenPlace::Header {
            name: header.to_ascii_lowercase(),
            prefix: config.prefix.clone().unwrap_or_else(|| "Bearer ".into()),
        }),
        (None, Some(query), None) if config.prefix.is_none() => Ok(TokenPlace::Query(query.into())),
        (None, None, Some(cookie)) if config.prefix.is_none() => {
            Ok(TokenPlace::Cookie(cookie.into()))
        }
        _ => Err(ConfigError::new(
            "header",
            "give one of `header` (with an optional `prefix`), `query` or `cookie`",
        )),
    }
}

/// A token's claims, unverified: to read its `iss` before choosing keys,
/// and a verified token's claims again.
fn claims_unverified(token: &str) -> Result<Map<String, Value>, ()> {
    jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(|_| ())
}

/// The token in a `Cookie` header value, by cookie name.
pub fn cookie_value<'a>(cookies: &'a str, name: &str) -> Option<&'a str> {
    cookies.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then_some(value)
    })
}
