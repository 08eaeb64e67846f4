//! The sign-auth policy: configuration, and the verification of one request
//! in two steps: [`SignAuth::begin`] on the headers, then, only when the
//! body is part of the signature (urlencoded form) or of a `Content-MD5`
//! check, [`SignAuth::finish`] with the body. No proxy-wasm calls here.

use crate::backend::{BackendFormat, BackendKey, BackendSignatureConfig};
use crate::huawei::{self, HuaweiSecret};
use crate::jwt::{CacheUse, Jwt, JwtConfig, TokenError};
use crate::modes::{
    basic_credentials, presented, BasicUserConfig, Credentials, HuaweiKeyConfig, HuaweiRequest,
    JwtClientConfig, Mode, Modes, Places, Presented, Source,
};
use crate::nonce::{NonceOutcome, NonceTable};
use crate::signature::{
    add_parameters, content_md5, for_error_message, signed_header_names, Secret, SignatureMethod,
    SigningInput,
};
use gateway_common::config::{ConfigError, OnFailure};
use gateway_common::error::GatewayError;
use gateway_common::fleet::wire::{Failure, Op, OpResult, State};
use gateway_common::fleet::{self, FailureMode as FleetFailureMode, Store, StoreConfig};
use gateway_common::host::{Host, RequestFacts, RequestLine};
use gateway_common::identity::Identity;
use gateway_common::matching::{
    any_by_route_name, compile_rule_match, first_match_index, rule_name, rule_path, MatchConfig,
    Matcher,
};
use gateway_common::params::{body_kind, BodyKind};
use gateway_common::store::{SharedStore, StoreError};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// The documented error codes of sign-auth.
pub mod codes {
    use gateway_common::error::GatewayError;

    pub const MISSING_HEADER: GatewayError = GatewayError::new(401, "A401MH", "Missing Header");
    pub const INVALID_HEADER: GatewayError = GatewayError::new(400, "A400IH", "Invalid Header");
    pub const INVALID_APP_KEY: GatewayError = GatewayError::new(401, "A401AK", "Invalid AppKey");
    pub const APP_DISABLED: GatewayError = GatewayError::new(403, "A403AD", "App Disabled");
    pub const INVALID_SIGNATURE: GatewayError =
        GatewayError::new(400, "A400IS", "Invalid Signature");
    pub const UNSUPPORTED_METHOD: GatewayError =
        GatewayError::new(400, "A400SM", "Unsupported Signature Method");
    pub const INVALID_TIMESTAMP: GatewayError =
        GatewayError::new(400, "A400IT", "Invalid Timestamp");
    pub const NONCE_USED: GatewayError = GatewayError::new(400, "A400IN", "Nonce Used");
    pub const INVALID_CONTENT_MD5: GatewayError =
        GatewayError::new(400, "A400IM", "Invalid Content-MD5");
    pub const INVALID_PARAMETER: GatewayError =
        GatewayError::new(400, "A400IP", "Invalid Parameter Encoding");
    pub const UNAUTHORIZED: GatewayError =
        GatewayError::new(403, "A403UA", "Unauthorized: the app may not call this API");
    pub const BODY_TOO_LARGE: GatewayError =
        GatewayError::new(413, "A413BL", "Request Body Too Large");
    pub const NONCE_STORE_FULL: GatewayError =
        GatewayError::new(503, "A503NS", "Nonce Store Full, retry later");
    pub const NONCE_STORE_UNAVAILABLE: GatewayError =
        GatewayError::new(503, "A503NU", "Nonce Store Unavailable");
    pub const MISSING_CREDENTIALS: GatewayError =
        GatewayError::new(401, "A401MC", "Missing Credentials");
    pub const INVALID_BODY_DIGEST: GatewayError = GatewayError::new(
        400,
        "A400IB",
        "Invalid Body Digest: X-Sdk-Content-Sha256 does not match the body",
    );
    pub const UNSIGNED_PAYLOAD: GatewayError = GatewayError::new(
        400,
        "A400UP",
        "Unsigned Payload Not Allowed: sign the body's SHA-256",
    );
    pub const INVALID_APPCODE: GatewayError = GatewayError::new(401, "A401AC", "Invalid AppCode");
    pub const INVALID_BASIC: GatewayError =
        GatewayError::new(401, "A401BC", "Invalid Basic Credentials");
    pub const TLS_REQUIRED: GatewayError = GatewayError::new(
        403,
        "A403TL",
        "TLS Required: this API takes AppCode and Basic credentials over HTTPS only",
    );
    pub const INVALID_TOKEN: GatewayError = GatewayError::new(401, "A401JT", "Invalid Token");
    pub const UNKNOWN_TOKEN_KEY: GatewayError = GatewayError::new(
        401,
        "A401JK",
        "Invalid Token: no key of the issuer has its kid and algorithm",
    );
    pub const INVALID_TOKEN_SIGNATURE: GatewayError =
        GatewayError::new(401, "A401JS", "Invalid Token Signature");
    pub const TOKEN_EXPIRED: GatewayError =
        GatewayError::new(401, "A401JE", "Token Expired or Not Yet Valid");
    pub const INVALID_TOKEN_CLAIMS: GatewayError =
        GatewayError::new(401, "A401JC", "Invalid Token Claims");
    pub const TOKEN_KEYS_UNAVAILABLE: GatewayError = GatewayError::new(
        503,
        "A503JK",
        "Token Keys Unavailable: the issuer's keys are not fetched yet",
    );

    /// Every code, for per-code counters.
    pub const COUNT: usize = 26;
    pub const ALL: [GatewayError; COUNT] = [
        MISSING_HEADER,
        INVALID_HEADER,
        INVALID_APP_KEY,
        APP_DISABLED,
        INVALID_SIGNATURE,
        UNSUPPORTED_METHOD,
        INVALID_TIMESTAMP,
        NONCE_USED,
        INVALID_CONTENT_MD5,
        INVALID_PARAMETER,
        UNAUTHORIZED,
        BODY_TOO_LARGE,
        NONCE_STORE_FULL,
        NONCE_STORE_UNAVAILABLE,
        MISSING_CREDENTIALS,
        INVALID_BODY_DIGEST,
        UNSIGNED_PAYLOAD,
        INVALID_APPCODE,
        INVALID_BASIC,
        TLS_REQUIRED,
        INVALID_TOKEN,
        UNKNOWN_TOKEN_KEY,
        INVALID_TOKEN_SIGNATURE,
        TOKEN_EXPIRED,
        INVALID_TOKEN_CLAIMS,
        TOKEN_KEYS_UNAVAILABLE,
    ];
}

const DEFAULT_WINDOW_SECONDS: u64 = 900;
const DEFAULT_NONCE_SLOTS: u32 = 16_384;
const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignAuthConfig {
    pub apps: Vec<AppConfig>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Requests matching no rule may come without a signature.
    #[serde(default)]
    pub anonymous: bool,
    /// How requests matching no rule authenticate (default `app`).
    #[serde(default)]
    pub modes: Option<Vec<Mode>>,
    /// Accept each Huawei signature once within the timestamp window (the
    /// scheme has no nonce), in this Envoy's nonce table or the fleet's.
    #[serde(default)]
    pub huawei_replay_protection: bool,
    /// The realm of the `WWW-Authenticate` challenges (Basic, Bearer).
    #[serde(default)]
    pub realm: Option<String>,
    /// JSON Web Token issuers and where tokens are (see [`crate::jwt`]).
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    #[serde(default)]
    pub timestamp_window_seconds: Option<u64>,
    /// Accepted `X-Ca-Signature-Method` values (default both).
    #[serde(default)]
    pub signature_methods: Option<Vec<String>>,
    /// Remove `X-Ca-Signature*` headers before the upstream (default true).
    #[serde(default)]
    pub strip_signature_headers: Option<bool>,
    /// Largest body read for form parameters and Content-MD5 (default 1 MiB).
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// Slots of the nonce table (default 16384, 8 nonces each).
    #[serde(default)]
    pub nonce_slots: Option<u32>,
    /// Send the verified app and API to the upstream as `x-gw-app-key`,
    /// `x-gw-app-name`, `x-gw-api` (default true). Client-sent copies of
    /// these headers are always removed.
    #[serde(default)]
    pub forward_identity_headers: Option<bool>,
    /// Sign every forwarded request for the backend (see [`crate::backend`]).
    #[serde(default)]
    pub backend_signature: Option<BackendSignatureConfig>,
    /// What happens when the nonce table cannot record a nonce (slot full or
    /// shared data failing): `deny` (503, the default) or `allow` (the
    /// request passes without replay protection, and is counted). Formerly
    /// `nonce_failure_mode`, still accepted.
    #[serde(default = "OnFailure::deny", alias = "nonce_failure_mode")]
    pub failure_mode: OnFailure,
    /// Record nonces in the fleet store, so each is accepted once by the
    /// whole fleet (see [`gateway_common::fleet`]).
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    pub store: StoreConfig,
    /// When the store fails: `local` (this Envoy's nonce table, the
    /// default), `allow` (unchecked, counted) or `deny` (503 `A503NU`).
    #[serde(default)]
    pub failure_mode: FleetFailureMode,
}

/// The compiled fleet settings.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub store: Arc<Store>,
    pub failure_mode: FleetFailureMode,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The app's identity, and its Alibaba AppKey (`X-Ca-Key`).
    pub key: String,
    /// Alibaba AppSecrets; several are accepted at once, for rotation
    /// without downtime. None: the app does not sign with `X-Ca-*`.
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub disabled: bool,
    /// Huawei AppKeys and AppSecrets (`SDK-HMAC-SHA256`).
    #[serde(default)]
    pub huawei: Vec<HuaweiKeyConfig>,
    /// AppCodes, each as is or `sha256:<hex>`.
    #[serde(default)]
    pub appcodes: Vec<String>,
    /// Basic usernames and passwords (as is or `sha256:<hex>`).
    #[serde(default)]
    pub basic: Vec<BasicUserConfig>,
    /// The token clients of the app, per issuer.
    #[serde(default)]
    pub jwt: Vec<JwtClientConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    /// App keys allowed to call this API; absent: every enabled app.
    #[serde(default)]
    pub apps: Option<Vec<String>>,
    /// Unsigned requests are let through (signed ones are still verified).
    #[serde(default)]
    pub anonymous: bool,
    /// How callers of this API authenticate (default: the top-level `modes`).
    #[serde(default)]
    pub modes: Option<Vec<Mode>>,
    /// An AppCode may also come in this query parameter.
    #[serde(default)]
    pub appcode_query: Option<String>,
    /// AppCode and Basic credentials are accepted over TLS only.
    #[serde(default)]
    pub require_tls: bool,
    /// A Huawei signature may sign `UNSIGNED-PAYLOAD` instead of the body.
    #[serde(default)]
    pub unsigned_payload: bool,
    /// Forward the client's credentials to the upstream.
    #[serde(default)]
    pub keep_credentials: bool,
    /// The issuers whose tokens this API takes (default: every issuer).
    #[serde(default)]
    pub jwt_issuers: Option<Vec<String>>,
    /// Token claims sent to the upstream as headers.
    #[serde(default)]
    pub claims_to_headers: Vec<ClaimHeaderConfig>,
}

/// A token claim and the request header that carries it upstream.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimHeaderConfig {
    pub claim: String,
    pub header: String,
}

#[derive(Debug, Clone)]
struct App {
    name: Option<String>,
    secrets: Vec<Secret>,
    disabled: bool,
}

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    matcher: Matcher,
    apps: Option<HashSet<String>>,
    anonymous: bool,
    modes: Modes,
    appcode_query: Option<String>,
    require_tls: bool,
    unsigned_payload: bool,
    keep_credentials: bool,
    /// Indices of the issuers taken (`None`: every issuer).
    jwt_issuers: Option<Vec<usize>>,
    claims_to_headers: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct SignAuth {
    apps: HashMap<String, App>,
    credentials: Credentials,
    rules: Vec<Rule>,
    anonymous: bool,
    modes: Modes,
    huawei_replay_protection: bool,
    realm: String,
    jwt: Option<Arc<Jwt>>,
    /// Every header `claims_to_headers` writes, removed from every request.
    claim_headers: Vec<String>,
    window_ms: u64,
    methods: Vec<SignatureMethod>,
    strip_signature_headers: bool,
    max_body_bytes: usize,
    nonces: NonceTable,
    uses_route_name: bool,
    forward_identity_headers: bool,
    backend_signer: Option<BackendSigner>,
    failure_mode: OnFailure,
    fleet: Option<Fleet>,
}

/// The compiled backend-signature settings.
#[derive(Debug, Clone)]
pub struct BackendSigner {
    pub key: BackendKey,
    /// The key's HMAC state, prepared once.
    pub secret: Secret,
    /// The same key for Huawei's form.
    pub huawei_secret: HuaweiSecret,
    pub format: BackendFormat,
    pub headers: Vec<String>,
}

/// A request whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub identity: Identity,
    /// The nonce could not be recorded and `failure_mode` is `allow`.
    pub nonce_unchecked: bool,
    /// Where the credential came from, to remove before the upstream;
    /// `None` when the API keeps credentials.
    pub strip: Option<Source>,
    /// Headers to send upstream (a token's claims).
    pub headers: Vec<(String, String)>,
    /// What the verified-token table did, for a token.
    pub token_cache: Option<CacheUse>,
}

/// What the adapter does next.
#[derive(Debug)]
pub enum Step {
    /// Authenticated (or anonymous allowed, `None`).
    Pass(Option<Verified>),
    Reject(GatewayError),
    /// A 401 on an API that takes Basic credentials or tokens, with the
    /// `WWW-Authenticate` value.
    Challenge(GatewayError, String),
    /// Buffer the body (up to `max_body_bytes`) and call `finish`.
    NeedBody(Box<Pending>),
    /// The signature checks out; the fleet store must record the nonce:
    /// send [`SignAuth::fleet_ops`] and call [`SignAuth::conclude`].
    CheckFleet(Box<FleetCheck>),
}

/// A verified request whose nonce is still to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetCheck {
    pub verified: Verified,
    nonce: String,
    now_ms: u64,
    expires_ms: u64,
}

/// A request waiting for its body.
#[derive(Debug)]
pub enum Pending {
    Alibaba(AlibabaPending),
    Huawei {
        request: HuaweiRequest,
        rule: Option<usize>,
    },
}

/// What a check decided before the nonce.
enum Checked {
    /// Nothing to record.
    Done(Verified),
    Nonce(FleetCheck),
}

/// An `X-Ca-*` signed request waiting for its body.
#[derive(Debug)]
pub struct AlibabaPending {
    app_key: String,
    method: SignatureMethod,
    signature: String,
    nonce: String,
    timestamp_ms: u64,
    http_method: String,
    accept: Option<String>,
    content_md5: Option<String>,
    content_type: Option<String>,
    date: Option<String>,
    signed_headers: Vec<(String, String)>,
    path: String,
    parameters: BTreeMap<String, String>,
    form_body: bool,
    rule: Option<usize>,
}

impl SignAuth {
    pub fn compile(config: &SignAuthConfig) -> Result<Self, ConfigError> {
        let jwt = config
            .jwt
            .as_ref()
            .map(|jwt| Jwt::compile(jwt).map(Arc::new))
            .transpose()
            .map_err(|e| e.within("jwt"))?;
        let mut apps = HashMap::with_capacity(config.apps.len());
        let mut credentials = Credentials::default();
        for (i, app) in config.apps.iter().enumerate() {
            let at = format!("apps[{i}]");
            if app.key.trim().is_empty() {
                return Err(ConfigError::new(format!("{at}.key"), "must not be empty"));
            }
            if app.secrets.iter().any(String::is_empty) {
                return Err(ConfigError::new(
                    format!("{at}.secrets"),
                    "no secret may be empty",
                ));
            }
            if app.secrets.is_empty()
                && app.huawei.is_empty()
                && app.appcodes.is_empty()
                && app.basic.is_empty()
                && app.jwt.is_empty()
            {
                return Err(ConfigError::new(
                    at,
                    "has no credential: give `secrets`, `huawei`, `appcodes`, `basic` or `jwt`",
                ));
            }
            credentials.add(&at, &app.key, &app.huawei, &app.appcodes, &app.basic)?;
            credentials.add_token_clients(&at, &app.key, &app.jwt, jwt.as_deref())?;
            let compiled = App {
                name: app.name.clone(),
                secrets: app
                    .secrets
                    .iter()
                    .filter_map(|s| Secret::new(s.as_bytes()))
                    .collect(),
                disabled: app.disabled,
            };
            if apps.insert(app.key.clone(), compiled).is_some() {
                return Err(ConfigError::new(
                    format!("{at}.key"),
                    format!("app key `{}` is defined twice", app.key),
                ));
            }
        }
        let modes = compile_modes(config.modes.as_deref(), "modes")?.unwrap_or(Modes::APP);
        if modes.contains(Mode::Jwt) && jwt.is_none() {
            return Err(ConfigError::new(
                "modes",
                "`jwt` needs the issuers in `jwt`",
            ));
        }
        let realm = config.realm.as_deref().unwrap_or("gateway");
        if realm.contains(|c: char| c == '"' || c == '\\' || c.is_control()) {
            return Err(ConfigError::new(
                "realm",
                "must not contain quotes, backslashes or control characters",
            ));
        }
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, rule) in config.rules.iter().enumerate() {
            let at = rule_path(i);
            let matcher = compile_rule_match(&rule.matcher).map_err(|e| e.within(&at))?;
            if let Some(keys) = &rule.apps {
                if let Some((j, key)) = keys
                    .iter()
                    .enumerate()
                    .find(|(_, k)| !apps.contains_key(*k))
                {
                    return Err(ConfigError::new(
                        format!("{at}.apps[{j}]"),
                        format!("unknown app key `{key}`"),
                    ));
                }
            }
            let jwt_issuers = rule
                .jwt_issuers
                .as_ref()
                .map(|names| issuer_indices(names, jwt.as_deref()))
                .transpose()
                .map_err(|e| e.within(&format!("{at}.jwt_issuers")))?;
            let claims_to_headers = rule
                .claims_to_headers
                .iter()
                .enumerate()
                .map(|(j, mapping)| {
                    claim_header(mapping)
                        .map_err(|e| e.within(&format!("{at}.claims_to_headers[{j}]")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if rule.appcode_query.as_deref().is_some_and(str::is_empty) {
                return Err(ConfigError::new(
                    format!("{at}.appcode_query"),
                    "must name a query parameter",
                ));
            }
            rules.push(Rule {
                name: rule_name(rule.name.as_deref(), &at),
                matcher,
                apps: rule
                    .apps
                    .as_ref()
                    .map(|keys| keys.iter().cloned().collect()),
                anonymous: rule.anonymous,
                modes: compile_modes(rule.modes.as_deref(), &format!("{at}.modes"))?
                    .unwrap_or(modes),
                appcode_query: rule.appcode_query.clone(),
                require_tls: rule.require_tls,
                unsigned_payload: rule.unsigned_payload,
                keep_credentials: rule.keep_credentials,
                jwt_issuers,
                claims_to_headers,
            });
            let last = rules.len() - 1;
            if rules[last].modes.contains(Mode::Jwt) && jwt.is_none() {
                return Err(ConfigError::new(
                    format!("{at}.modes"),
                    "`jwt` needs the issuers in `jwt`",
                ));
            }
        }
        let methods = match &config.signature_methods {
            None => vec![SignatureMethod::HmacSha256, SignatureMethod::HmacSha1],
            Some(names) => names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    SignatureMethod::from_header(Some(name))
                        .filter(|_| !name.is_empty())
                        .ok_or_else(|| {
                            ConfigError::new(
                                format!("signature_methods[{i}]"),
                                format!("`{name}` is not HmacSHA256 or HmacSHA1"),
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let window = config
            .timestamp_window_seconds
            .unwrap_or(DEFAULT_WINDOW_SECONDS);
        if window == 0 || window > 86_400 {
            return Err(ConfigError::new(
                "timestamp_window_seconds",
                "must be between 1 and 86400",
            ));
        }
        let slots = config.nonce_slots.unwrap_or(DEFAULT_NONCE_SLOTS);
        if slots == 0 || slots > 1 << 20 {
            return Err(ConfigError::new(
                "nonce_slots",
                "must be between 1 and 1048576",
            ));
        }
        let uses_route_name = any_by_route_name(&rules, |r| &r.matcher);
        let mut claim_headers: Vec<String> = rules
            .iter()
            .flat_map(|r| r.claims_to_headers.iter().map(|(_, h)| h.clone()))
            .collect();
        claim_headers.sort();
        claim_headers.dedup();
        let backend_signer = config
            .backend_signature
            .as_ref()
            .map(compile_backend_signer)
            .transpose()
            .map_err(|e| e.within("backend_signature"))?;
        Ok(Self {
            apps,
            credentials,
            rules,
            anonymous: config.anonymous,
            modes,
            huawei_replay_protection: config.huawei_replay_protection,
            realm: realm.to_string(),
            claim_headers,
            jwt,
            window_ms: window * 1000,
            methods,
            strip_signature_headers: config.strip_signature_headers.unwrap_or(true),
            max_body_bytes: config.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
            nonces: NonceTable::new(slots),
            uses_route_name,
            forward_identity_headers: config.forward_identity_headers.unwrap_or(true),
            backend_signer,
            failure_mode: config.failure_mode,
            fleet: config
                .fleet
                .as_ref()
                .map(|fleet| {
                    Ok::<_, ConfigError>(Fleet {
                        store: Arc::new(
                            Store::compile(&fleet.store).map_err(|e| e.within("fleet.store"))?,
                        ),
                        failure_mode: fleet.failure_mode,
                    })
                })
                .transpose()?,
        })
    }

    pub fn nonce_table(&self) -> &NonceTable {
        &self.nonces
    }

    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    pub fn strip_signature_headers(&self) -> bool {
        self.strip_signature_headers
    }

    pub fn forward_identity_headers(&self) -> bool {
        self.forward_identity_headers
    }

    pub fn backend_signer(&self) -> Option<&BackendSigner> {
        self.backend_signer.as_ref()
    }

    /// The token settings, if the policy takes tokens.
    pub fn jwt(&self) -> Option<&Arc<Jwt>> {
        self.jwt.as_ref()
    }

    /// The headers `claims_to_headers` writes: a client's copies never
    /// reach the upstream.
    pub fn claim_headers(&self) -> &[String] {
        &self.claim_headers
    }

    /// The `WWW-Authenticate` value of a refusal on an API taking `modes`
    /// (`token`: a token was presented and refused).
    fn challenge(&self, modes: Modes, token: bool) -> Option<String> {
        let realm = &self.realm;
        if token {
            return Some(format!("Bearer realm=\"{realm}\", error=\"invalid_token\""));
        }
        if modes.contains(Mode::Basic) {
            return Some(format!("Basic realm=\"{realm}\", charset=\"UTF-8\""));
        }
        modes
            .contains(Mode::Jwt)
            .then(|| format!("Bearer realm=\"{realm}\""))
    }

    /// Verifies what the headers allow; `end_of_stream` says there is no body.
    pub fn begin(&self, host: &dyn Host, store: &dyn SharedStore, end_of_stream: bool) -> Step {
        let facts = RequestFacts::read(host, self.uses_route_name);
        let attrs = facts.attrs();
        let line = &facts.line;
        let index = first_match_index(&self.rules, |r| &r.matcher, &attrs).map(|(index, _)| index);
        let rule = index.map(|i| &self.rules[i]);
        let modes = rule.map_or(self.modes, |r| r.modes);
        let places = Places {
            appcode_query: rule.and_then(|r| r.appcode_query.as_deref()),
            tokens: self.jwt.as_ref().map_or(&[], |jwt| &jwt.places),
        };
        let presented = presented(host, line, modes, places);
        let token = matches!(presented, Presented::Jwt(..));
        let step = match presented {
            Presented::None if rule.map_or(self.anonymous, |r| r.anonymous) => Step::Pass(None),
            Presented::None if modes == Modes::APP => Step::Reject(missing("X-Ca-Key")),
            Presented::None => Step::Reject(codes::MISSING_CREDENTIALS.with_message(format!(
                "Missing Credentials: this API takes {}",
                modes.credentials()
            ))),
            Presented::Alibaba(app_key) => match self.read_headers(host, line, app_key, index) {
                Ok(pending) => {
                    let body_needed =
                        !end_of_stream && (pending.form_body || pending.content_md5.is_some());
                    self.check_or_wait(Pending::Alibaba(pending), body_needed, host, store)
                }
                Err(error) => Step::Reject(error),
            },
            Presented::Huawei(authorization) => {
                let unsigned_allowed = rule.is_some_and(|r| r.unsigned_payload);
                let read = HuaweiRequest::read(
                    host,
                    line,
                    &authorization,
                    unsigned_allowed,
                    end_of_stream,
                );
                match read {
                    Ok(request) => {
                        let body_needed = !end_of_stream && request.needs_body();
                        let pending = Pending::Huawei {
                            request,
                            rule: index,
                        };
                        self.check_or_wait(pending, body_needed, host, store)
                    }
                    Err(error) => Step::Reject(error),
                }
            }
            Presented::AppCode(code, source) => {
                let app = self.credentials.appcode_app(&code);
                self.check_plain(host, index, app.ok_or(codes::INVALID_APPCODE), source, None)
            }
            Presented::Basic(encoded) => {
                let (app, user) = match basic_credentials(&encoded) {
                    Some((user, password)) => (
                        self.credentials
                            .basic_app(&user, &password)
                            .ok_or(codes::INVALID_BASIC),
                        Some(user),
                    ),
                    None => (Err(codes::INVALID_BASIC), None),
                };
                self.check_plain(host, index, app, Source::authorization(), user)
            }
            Presented::Jwt(token, source) => self.settle(
                self.check_token(&token, source, index, store, now_ms(host)),
                store,
            ),
        };
        match step {
            Step::Reject(error) if error.status == 401 => match self.challenge(modes, token) {
                Some(challenge) => Step::Challenge(error, challenge),
                None => Step::Reject(error),
            },
            step => step,
        }
    }

    /// Verifies a token and names its app and user.
    fn check_token(
        &self,
        token: &str,
        source: Source,
        rule: Option<usize>,
        store: &dyn SharedStore,
        now_ms: u64,
    ) -> Result<Checked, GatewayError> {
        let Some(jwt) = &self.jwt else {
            return Err(codes::INVALID_TOKEN);
        };
        let allowed = rule.and_then(|i| self.rules[i].jwt_issuers.as_deref());
        let verified = jwt
            .verify(token, allowed, store, now_ms)
            .map_err(|error| self.token_error(jwt, error))?;
        let issuer = jwt
            .issuers
            .get(verified.issuer)
            .ok_or(codes::INVALID_TOKEN)?;
        let client = issuer.app_claim(&verified.claims);
        let app = client
            .and_then(|client| self.credentials.token_app(verified.issuer, client))
            .ok_or_else(|| {
                codes::INVALID_APP_KEY.with_message(format!(
                    "Invalid AppKey: the token's {} names no app",
                    issuer.app_claims.join(" or ")
                ))
            })?;
        let user = verified
            .claims
            .get(&issuer.user_claim)
            .and_then(Value::as_str)
            .filter(|user| header_value_fits(user))
            .map(str::to_string);
        let headers = rule
            .map(|i| claim_values(&self.rules[i].claims_to_headers, &verified.claims))
            .unwrap_or_default();
        let checked = Verified {
            headers,
            token_cache: Some(verified.cache),
            ..self.verified(app, rule, user, source)?
        };
        if !issuer.prevent_jti_replay {
            return Ok(Checked::Done(checked));
        }
        let jti = verified
            .claims
            .get("jti")
            .and_then(Value::as_str)
            .filter(|jti| !jti.is_empty() && jti.len() <= 256)
            .ok_or_else(|| {
                codes::INVALID_TOKEN_CLAIMS.with_message(
                    "Invalid Token Claims: a `jti` of 1 to 256 characters is required",
                )
            })?;
        // Kept as long as the token passes: its exp and the leeway (an
        // issuer that prevents replays requires exp and checks it).
        let passes_until_ms = verified
            .claims
            .get("exp")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .saturating_add(issuer.leeway_s)
            .saturating_mul(1000);
        if passes_until_ms > now_ms + MAX_JTI_LIFETIME_MS {
            return Err(codes::INVALID_TOKEN_CLAIMS.with_message(
                "Invalid Token Claims: a token whose jti is checked may live at most a day",
            ));
        }
        let expires_ms = passes_until_ms.max(now_ms + 1000);
        Ok(Checked::Nonce(FleetCheck {
            verified: checked,
            nonce: format!("jwt:{}:{jti}", issuer.name),
            now_ms,
            expires_ms,
        }))
    }

    /// The refusal of a token, asking for the issuer's keys again when it
    /// names a key id they lack.
    fn token_error(&self, jwt: &Jwt, error: TokenError) -> GatewayError {
        match error {
            TokenError::Malformed(why) => {
                codes::INVALID_TOKEN.with_message(format!("Invalid Token: {why}"))
            }
            TokenError::KeysUnavailable(_) => codes::TOKEN_KEYS_UNAVAILABLE,
            TokenError::UnknownKey(issuer) => {
                if let Some(state) = jwt.state.get() {
                    gateway_common::sync::lock(state).want(issuer);
                }
                codes::UNKNOWN_TOKEN_KEY
            }
            TokenError::BadSignature => codes::INVALID_TOKEN_SIGNATURE,
            TokenError::Expired => codes::TOKEN_EXPIRED.with_message("Token Expired"),
            TokenError::NotYetValid => {
                codes::TOKEN_EXPIRED.with_message("Token Not Yet Valid (nbf)")
            }
            TokenError::Claims(why) => {
                codes::INVALID_TOKEN_CLAIMS.with_message(format!("Invalid Token Claims: {why}"))
            }
        }
    }

    fn check_or_wait(
        &self,
        pending: Pending,
        body_needed: bool,
        host: &dyn Host,
        store: &dyn SharedStore,
    ) -> Step {
        if body_needed {
            return Step::NeedBody(Box::new(pending));
        }
        self.complete(pending, None, store, now_ms(host))
    }

    /// Decides an AppCode or Basic credential: `app` is the app it names.
    fn check_plain(
        &self,
        host: &dyn Host,
        rule: Option<usize>,
        app: Result<&str, GatewayError>,
        source: Source,
        user: Option<String>,
    ) -> Step {
        if rule.is_some_and(|i| self.rules[i].require_tls) && !is_tls(host) {
            return Step::Reject(codes::TLS_REQUIRED);
        }
        Step::from(app.and_then(|app| self.verified(app, rule, user, source)))
    }

    /// The identity of app `key` calling the API of `rule`, if the app is
    /// enabled and may call it.
    fn identify(
        &self,
        key: &str,
        rule: Option<usize>,
        user: Option<String>,
    ) -> Result<Identity, GatewayError> {
        let app = self.app(key)?;
        let rule = rule.and_then(|i| self.rules.get(i));
        if rule
            .and_then(|r| r.apps.as_ref())
            .is_some_and(|apps| !apps.contains(key))
        {
            return Err(codes::UNAUTHORIZED);
        }
        Ok(Identity {
            app_key: key.to_string(),
            app_name: app.name.clone(),
            api: rule.map(|r| r.name.clone()),
            user,
        })
    }

    fn app(&self, key: &str) -> Result<&App, GatewayError> {
        let app = self.apps.get(key).ok_or(codes::INVALID_APP_KEY)?;
        if app.disabled {
            return Err(codes::APP_DISABLED);
        }
        Ok(app)
    }

    /// A request of app `key` (and `user`) with its credential from
    /// `source`, as every mode passes it: identified and authorized for the
    /// API of `rule`.
    fn verified(
        &self,
        key: &str,
        rule: Option<usize>,
        user: Option<String>,
        source: Source,
    ) -> Result<Verified, GatewayError> {
        Ok(Verified {
            identity: self.identify(key, rule, user)?,
            nonce_unchecked: false,
            strip: self.strip(rule, source),
            headers: Vec::new(),
            token_cache: None,
        })
    }

    /// What to remove before the upstream, unless the API keeps credentials.
    fn strip(&self, rule: Option<usize>, source: Source) -> Option<Source> {
        (!rule.is_some_and(|i| self.rules[i].keep_credentials)).then_some(source)
    }

    /// Completes a request that needed its body.
    pub fn finish(
        &self,
        pending: Pending,
        body: &[u8],
        store: &dyn SharedStore,
        now_ms: u64,
    ) -> Step {
        self.complete(pending, Some(body), store, now_ms)
    }

    pub fn fleet(&self) -> Option<&Fleet> {
        self.fleet.as_ref()
    }

    /// The fleet operation of a check: `SET NX` of the app's nonce until the
    /// timestamp window has passed on both sides of the signed timestamp.
    pub fn fleet_ops(&self, check: &FleetCheck) -> Vec<Op> {
        let Some(fleet) = &self.fleet else {
            return Vec::new();
        };
        let digest = fleet::digest(&[
            check.verified.identity.app_key.as_bytes(),
            check.nonce.as_bytes(),
        ]);
        vec![Op::Nonce {
            key: fleet.store.key("n", &digest, &[]),
            ttl_ms: check.expires_ms.saturating_sub(check.now_ms) + fleet::CLOCK_GRACE_MS,
        }]
    }

    /// Decides a request from the store's answer to [`SignAuth::fleet_ops`];
    /// when the store failed, by the fleet failure mode (`local`: this
    /// Envoy's nonce table, as without a fleet store).
    pub fn conclude(
        &self,
        check: FleetCheck,
        answer: &Result<Vec<OpResult>, Failure>,
        store: &dyn SharedStore,
    ) -> Result<Verified, GatewayError> {
        let mode = self
            .fleet
            .as_ref()
            .map_or_else(Default::default, |f| f.failure_mode);
        match nonce_state(answer) {
            Ok(State::Done) => {
                // Kept in this Envoy's table too, so that `local`, should
                // the store fail later, still knows the nonces it accepted.
                let _ = self.record_in_table(&check, store);
                Ok(check.verified)
            }
            Ok(_) => Err(codes::NONCE_USED),
            Err(_) => match mode {
                FleetFailureMode::Local => self.record_locally(check, store),
                FleetFailureMode::Allow => Ok(Verified {
                    nonce_unchecked: true,
                    ..check.verified
                }),
                FleetFailureMode::Deny => Err(codes::NONCE_STORE_UNAVAILABLE),
            },
        }
    }

    fn record_in_table(
        &self,
        check: &FleetCheck,
        store: &dyn SharedStore,
    ) -> Result<NonceOutcome, StoreError> {
        self.nonces.check_and_record(
            store,
            &check.verified.identity.app_key,
            &check.nonce,
            check.now_ms,
            check.expires_ms,
        )
    }

    /// Records the nonce in this Envoy's table, deciding by what it says.
    fn record_locally(
        &self,
        check: FleetCheck,
        store: &dyn SharedStore,
    ) -> Result<Verified, GatewayError> {
        let failure = match self.record_in_table(&check, store) {
            Ok(NonceOutcome::Fresh) => None,
            Ok(NonceOutcome::Replayed) => return Err(codes::NONCE_USED),
            Ok(NonceOutcome::SlotFull) => Some(codes::NONCE_STORE_FULL),
            Err(_) => Some(codes::NONCE_STORE_UNAVAILABLE),
        };
        if let (Some(error), OnFailure::Deny) = (&failure, self.failure_mode) {
            return Err(error.clone());
        }
        Ok(Verified {
            nonce_unchecked: failure.is_some(),
            ..check.verified
        })
    }

    fn read_headers(
        &self,
        host: &dyn Host,
        line: &RequestLine,
        app_key: String,
        rule: Option<usize>,
    ) -> Result<AlibabaPending, GatewayError> {
        let header = |name: &str| host.request_header(name);
        let signature = header("x-ca-signature").ok_or_else(|| missing("X-Ca-Signature"))?;
        let method = SignatureMethod::from_header(header("x-ca-signature-method").as_deref())
            .filter(|m| self.methods.contains(m))
            .ok_or_else(|| {
                codes::UNSUPPORTED_METHOD.with_message(format!(
                    "Unsupported Signature Method `{}`",
                    header("x-ca-signature-method").unwrap_or_default()
                ))
            })?;
        let timestamp = header("x-ca-timestamp").ok_or_else(|| missing("X-Ca-Timestamp"))?;
        let timestamp_ms: u64 = timestamp.trim().parse().map_err(|_| {
            codes::INVALID_HEADER
                .with_message("Invalid Header `X-Ca-Timestamp`: epoch milliseconds expected")
        })?;
        let nonce = header("x-ca-nonce").ok_or_else(|| missing("X-Ca-Nonce"))?;
        if nonce.is_empty() || nonce.len() > 128 {
            return Err(codes::INVALID_HEADER
                .with_message("Invalid Header `X-Ca-Nonce`: 1 to 128 characters expected"));
        }
        let names = header("x-ca-signature-headers")
            .map(|list| signed_header_names(&list))
            .unwrap_or_default();
        let signed_headers = names
            .into_iter()
            .map(|name| {
                let value = header(&name).unwrap_or_default();
                (name, value)
            })
            .collect();
        let (path, query) = line.path.split_once('?').unwrap_or((&line.path, ""));
        let mut parameters = BTreeMap::new();
        add_parameters(query, &mut parameters).map_err(|_| codes::INVALID_PARAMETER)?;
        let content_type = header("content-type");
        let form_body = body_kind(content_type.as_deref()) == BodyKind::Form;
        Ok(AlibabaPending {
            app_key,
            method,
            signature,
            nonce,
            timestamp_ms,
            http_method: line.method.clone(),
            accept: header("accept"),
            content_md5: header("content-md5"),
            content_type,
            date: header("date"),
            signed_headers,
            path: path.to_string(),
            parameters,
            form_body,
            rule,
        })
    }

    fn complete(
        &self,
        pending: Pending,
        body: Option<&[u8]>,
        store: &dyn SharedStore,
        now_ms: u64,
    ) -> Step {
        let checked = match pending {
            Pending::Alibaba(pending) => self.verify(pending, body, now_ms),
            Pending::Huawei { request, rule } => self.verify_huawei(request, rule, body, now_ms),
        };
        self.settle(checked, store)
    }

    /// What a check leads to: passing, recording the nonce (in the fleet
    /// store or this Envoy's table) or refusing.
    fn settle(&self, checked: Result<Checked, GatewayError>, store: &dyn SharedStore) -> Step {
        match checked {
            Ok(Checked::Done(verified)) => Step::Pass(Some(verified)),
            Ok(Checked::Nonce(check)) if self.fleet.is_some() => Step::CheckFleet(Box::new(check)),
            Ok(Checked::Nonce(check)) => Step::from(self.record_locally(check, store)),
            Err(error) => Step::Reject(error),
        }
    }

    fn check_window(&self, signed_ms: u64, now_ms: u64) -> Result<(), GatewayError> {
        if now_ms.abs_diff(signed_ms) > self.window_ms {
            return Err(codes::INVALID_TIMESTAMP.with_message(format!(
                "Invalid Timestamp: more than {} s from the gateway clock",
                self.window_ms / 1000
            )));
        }
        Ok(())
    }

    /// Every check of a Huawei signature but the (optional) replay check.
    fn verify_huawei(
        &self,
        request: HuaweiRequest,
        rule: Option<usize>,
        body: Option<&[u8]>,
        now_ms: u64,
    ) -> Result<Checked, GatewayError> {
        let key = self
            .credentials
            .huawei_key(&request.access)
            .ok_or(codes::INVALID_APP_KEY)?;
        self.app(&key.app)?;
        self.check_window(request.date_ms, now_ms)?;
        let canonical_requests = request.canonical_requests(body)?;
        let signed = canonical_requests.iter().any(|canonical_request| {
            let string_to_sign = huawei::string_to_sign(&request.sdk_date, canonical_request);
            key.secrets
                .iter()
                .any(|secret| secret.verifies(&string_to_sign, &request.signature))
        });
        if !signed {
            return Err(codes::INVALID_SIGNATURE.with_message(format!(
                "Invalid Signature, Server CanonicalRequest:`{}`",
                canonical_requests[0].replace('\n', "|")
            )));
        }
        let verified = self.verified(&key.app, rule, None, Source::authorization())?;
        if !self.huawei_replay_protection {
            return Ok(Checked::Done(verified));
        }
        Ok(Checked::Nonce(FleetCheck {
            verified,
            nonce: format!("hw:{}", request.signature.to_ascii_lowercase()),
            now_ms,
            expires_ms: request.date_ms.max(now_ms) + self.window_ms,
        }))
    }

    /// Every check of an `X-Ca-*` signature but the nonce's.
    fn verify(
        &self,
        mut pending: AlibabaPending,
        body: Option<&[u8]>,
        now_ms: u64,
    ) -> Result<Checked, GatewayError> {
        let app = self.app(&pending.app_key)?;
        if app.secrets.is_empty() {
            return Err(codes::INVALID_APP_KEY);
        }
        self.check_window(pending.timestamp_ms, now_ms)?;
        if let Some(body) = body {
            if pending.form_body {
                let text = std::str::from_utf8(body).map_err(|_| codes::INVALID_PARAMETER)?;
                add_parameters(text, &mut pending.parameters)
                    .map_err(|_| codes::INVALID_PARAMETER)?;
            } else if let Some(expected) = &pending.content_md5 {
                if content_md5(body) != expected.trim() {
                    return Err(codes::INVALID_CONTENT_MD5);
                }
            }
        } else if pending
            .content_md5
            .as_deref()
            .is_some_and(|md5| md5.trim() != content_md5(b""))
        {
            return Err(codes::INVALID_CONTENT_MD5);
        }
        let input = SigningInput {
            method: &pending.http_method,
            accept: pending.accept.as_deref(),
            content_md5: pending.content_md5.as_deref(),
            content_type: pending.content_type.as_deref(),
            date: pending.date.as_deref(),
            signed_headers: std::mem::take(&mut pending.signed_headers),
            path: &pending.path,
            parameters: std::mem::take(&mut pending.parameters),
        };
        let string_to_sign = input.string_to_sign();
        let valid = app
            .secrets
            .iter()
            .any(|secret| secret.verifies(pending.method, &string_to_sign, &pending.signature));
        if !valid {
            return Err(codes::INVALID_SIGNATURE.with_message(format!(
                "Invalid Signature, Server StringToSign:`{}`",
                for_error_message(&string_to_sign)
            )));
        }
        Ok(Checked::Nonce(FleetCheck {
            verified: self.verified(&pending.app_key, pending.rule, None, Source::CaHeaders)?,
            nonce: pending.nonce,
            now_ms,
            expires_ms: pending.timestamp_ms.max(now_ms) + self.window_ms,
        }))
    }
}

/// Why the store's answer does not decide the nonce, if it does not.
pub fn fleet_failure(answer: &Result<Vec<OpResult>, Failure>) -> Option<Failure> {
    nonce_state(answer).err()
}

/// The state of the nonce in the store's answer (its first result).
fn nonce_state(answer: &Result<Vec<OpResult>, Failure>) -> Result<State, Failure> {
    match answer
        .as_ref()
        .map(|results| results.first().map(|r| r.state))
    {
        Ok(Some(state @ (State::Done | State::Refused))) => Ok(state),
        Ok(_) => Err(Failure::BadReply("no nonce result".into())),
        Err(failure) => Err(failure.clone()),
    }
}

impl From<Result<Verified, GatewayError>> for Step {
    fn from(result: Result<Verified, GatewayError>) -> Self {
        match result {
            Ok(verified) => Step::Pass(Some(verified)),
            Err(error) => Step::Reject(error),
        }
    }
}

fn compile_backend_signer(config: &BackendSignatureConfig) -> Result<BackendSigner, ConfigError> {
    let Some(key) = config.keys.first() else {
        return Err(ConfigError::new(
            "keys",
            "needs at least one key; the first one signs",
        ));
    };
    for (i, key) in config.keys.iter().enumerate() {
        if key.id.is_empty() || key.secret.is_empty() {
            return Err(ConfigError::new(
                format!("keys[{i}]"),
                "`id` and `secret` must not be empty",
            ));
        }
    }
    let headers = match &config.headers {
        Some(names) => names
            .iter()
            .map(|n| n.trim().to_ascii_lowercase())
            .collect(),
        None => crate::IDENTITY_HEADERS.map(String::from).to_vec(),
    };
    if let Some(bad) = headers
        .iter()
        .find(|n| n.is_empty() || n.contains([',', ':']))
    {
        return Err(ConfigError::new(
            "headers",
            format!("`{bad}` is not a header name"),
        ));
    }
    if config.format == BackendFormat::Huawei {
        let reserved = [
            "host",
            "authorization",
            huawei::DATE_HEADER,
            huawei::CONTENT_SHA256_HEADER,
        ];
        if let Some(bad) = headers.iter().find(|n| {
            n.contains(';')
                || huawei::signed_header_names(n).is_err()
                || reserved.contains(&n.as_str())
        }) {
            return Err(ConfigError::new(
                "headers",
                format!("`{bad}` cannot be signed in Huawei's form (host, Authorization and X-Sdk-* are signed or set by the gateway)"),
            ));
        }
    }
    let secret = Secret::new(key.secret.as_bytes()).ok_or_else(|| {
        ConfigError::new(
            "backend_signature.keys[0].secret",
            "not usable as an HMAC key",
        )
    })?;
    let huawei_secret = HuaweiSecret::new(key.secret.as_bytes()).ok_or_else(|| {
        ConfigError::new(
            "backend_signature.keys[0].secret",
            "not usable as an HMAC key",
        )
    })?;
    Ok(BackendSigner {
        key: key.clone(),
        secret,
        huawei_secret,
        format: config.format,
        headers,
    })
}

/// The indices of the issuers named.
fn issuer_indices(names: &[String], jwt: Option<&Jwt>) -> Result<Vec<usize>, ConfigError> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            jwt.and_then(|jwt| jwt.issuer_index(name)).ok_or_else(|| {
                ConfigError::new(
                    format!("[{i}]"),
                    format!("`{name}` names no issuer in `jwt`"),
                )
            })
        })
        .collect()
}

/// A claim and the header it goes to, checked.
fn claim_header(mapping: &ClaimHeaderConfig) -> Result<(String, String), ConfigError> {
    if mapping.claim.is_empty() {
        return Err(ConfigError::new("claim", "must name a claim"));
    }
    let header = mapping.header.to_ascii_lowercase();
    let token = !header.is_empty()
        && header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    // Claim headers are removed from every request before the check, so a
    // credential's header cannot be one.
    let credential = matches!(
        header.as_str(),
        "host" | "authorization" | "cookie" | "x-apig-appcode" | "content-md5" | "date"
    ) || header.starts_with("x-ca-")
        || header.starts_with("x-sdk-");
    if !token || crate::IDENTITY_HEADERS.contains(&header.as_str()) || credential {
        return Err(ConfigError::new(
            "header",
            format!(
                "`{}` is not a header the gateway may set for a claim",
                mapping.header
            ),
        ));
    }
    Ok((mapping.claim.clone(), header))
}

/// Longest claim value sent in a header.
const MAX_CLAIM_HEADER_BYTES: usize = 4096;

/// Longest a used jti is kept, and so the longest a token whose jti is
/// checked may live.
const MAX_JTI_LIFETIME_MS: u64 = 86_400_000;

/// Whether a value may go into a header: no control characters, at most
/// 4 KiB.
fn header_value_fits(value: &str) -> bool {
    value.len() <= MAX_CLAIM_HEADER_BYTES && !value.chars().any(char::is_control)
}

/// The headers of `mappings` a token's claims fill: strings as they are,
/// other values as JSON; a value with control characters or longer than
/// 4 KiB is left out.
fn claim_values(
    mappings: &[(String, String)],
    claims: &serde_json::Map<String, Value>,
) -> Vec<(String, String)> {
    mappings
        .iter()
        .filter_map(|(claim, header)| {
            let value = match claims.get(claim)? {
                Value::String(text) => text.clone(),
                Value::Null => return None,
                other => other.to_string(),
            };
            header_value_fits(&value).then(|| (header.clone(), value))
        })
        .collect()
}

/// The modes of a list (`None`: not given); an empty list is refused.
fn compile_modes(list: Option<&[Mode]>, at: &str) -> Result<Option<Modes>, ConfigError> {
    match list {
        Some([]) => Err(ConfigError::new(
            at,
            "needs at least one of app, huawei_app, appcode, basic, jwt",
        )),
        Some(list) => Ok(Some(Modes::of(list))),
        None => Ok(None),
    }
}

/// Whether the request came over TLS to this Envoy.
fn is_tls(host: &dyn Host) -> bool {
    host.property(&["connection", "tls_version"])
        .is_some_and(|version| !version.is_empty())
}

fn missing(header: &str) -> GatewayError {
    codes::MISSING_HEADER.with_message(format!("Header `{header}` is Required"))
}

pub use gateway_common::host::now_ms;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::signature::sign;
    use gateway_common::config::parse_json;
    use gateway_common::host::FakeHost;
    use gateway_common::store::MemoryStore;
    use std::time::Duration;

    pub(crate) const NOW_MS: u64 = 1_700_000_000_000;

    pub(crate) fn policy(json: &str) -> SignAuth {
        SignAuth::compile(&parse_json(json.as_bytes()).unwrap()).unwrap()
    }

    fn config_error(json: &str) -> String {
        parse_json::<SignAuthConfig>(json.as_bytes())
            .and_then(|c| SignAuth::compile(&c))
            .unwrap_err()
            .to_string()
    }

    pub(crate) const CONFIG: &str = r#"{
        "apps": [
            {"key": "203751", "secrets": ["old-secret", "new-secret"], "name": "mobile"},
            {"key": "203752", "secrets": ["web-secret"]},
            {"key": "203753", "secrets": ["off"], "disabled": true}
        ],
        "rules": [
            {"name": "public", "match": {"path": {"prefix": "/public"}}, "anonymous": true},
            {"name": "orders", "match": {"path": {"template": "/orders/{id}"}}, "apps": ["203751"]}
        ]
    }"#;

    /// A request signed as a client SDK would sign it.
    pub(crate) struct Client {
        pub key: &'static str,
        pub secret: &'static str,
        pub method: &'static str,
        pub path: &'static str,
        pub headers: Vec<(&'static str, String)>,
        pub form: &'static str,
        pub timestamp_ms: u64,
        pub nonce: String,
    }

    pub(crate) fn client(method: &'static str, path: &'static str) -> Client {
        Client {
            key: "203751",
            secret: "new-secret",
            method,
            path,
            headers: Vec::new(),
            form: "",
            timestamp_ms: NOW_MS,
            nonce: "nonce-1".into(),
        }
    }

    impl Client {
        pub(crate) fn host(&self) -> FakeHost {
            let mut parameters = BTreeMap::new();
            let (path, query) = self.path.split_once('?').unwrap_or((self.path, ""));
            add_parameters(query, &mut parameters).unwrap();
            add_parameters(self.form, &mut parameters).unwrap();
            let header = |name: &str| {
                self.headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
            };
            let signed = vec![
                ("x-ca-key".to_string(), self.key.to_string()),
                ("x-ca-nonce".to_string(), self.nonce.clone()),
                ("x-ca-timestamp".to_string(), self.timestamp_ms.to_string()),
            ];
            let input = SigningInput {
                method: self.method,
                accept: header("accept"),
                content_md5: header("content-md5"),
                content_type: header("content-type"),
                date: header("date"),
                signed_headers: signed,
                path,
                parameters,
            };
            let signature = sign(
                SignatureMethod::HmacSha256,
                self.secret.as_bytes(),
                &input.string_to_sign(),
            );
            let mut host = FakeHost::new()
                .with_header(":method", self.method)
                .with_header(":path", self.path)
                .with_header(":authority", "api.example.com")
                .with_header("x-ca-key", self.key)
                .with_header("x-ca-nonce", &self.nonce)
                .with_header("x-ca-timestamp", &self.timestamp_ms.to_string())
                .with_header(
                    "x-ca-signature-headers",
                    "x-ca-key,x-ca-nonce,x-ca-timestamp",
                )
                .with_header("x-ca-signature", &signature);
            for (name, value) in &self.headers {
                host = host.with_header(name, value);
            }
            host.clock.set(Duration::from_millis(NOW_MS));
            host
        }
    }

    fn run(
        policy: &SignAuth,
        host: &FakeHost,
        store: &MemoryStore,
        body: Option<&[u8]>,
    ) -> Result<Option<Identity>, GatewayError> {
        match policy.begin(host, store, body.is_none()) {
            Step::Pass(verified) => Ok(verified.map(|v| v.identity)),
            Step::Reject(error) | Step::Challenge(error, _) => Err(error),
            Step::NeedBody(pending) => {
                match policy.finish(*pending, body.unwrap_or_default(), store, NOW_MS) {
                    Step::Pass(verified) => Ok(verified.map(|v| v.identity)),
                    Step::Reject(error) => Err(error),
                    other => panic!("not a local decision: {other:?}"),
                }
            }
            Step::CheckFleet(check) => panic!("a fleet check without a fleet store: {check:?}"),
        }
    }

    fn code(result: Result<Option<Identity>, GatewayError>) -> &'static str {
        result.map(|_| "OK").unwrap_or_else(|e| e.code)
    }

    #[test]
    fn a_valid_signature_authenticates_the_app() {
        let p = policy(CONFIG);
        let identity = run(
            &p,
            &client("GET", "/orders/7?b=2&a=1").host(),
            &MemoryStore::new(),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            identity,
            Identity {
                app_key: "203751".into(),
                app_name: Some("mobile".into()),
                api: Some("orders".into()),
                user: None,
            }
        );
    }

    #[test]
    fn any_active_secret_verifies_during_rotation() {
        let p = policy(CONFIG);
        let mut c = client("GET", "/x");
        c.secret = "old-secret";
        assert_eq!(code(run(&p, &c.host(), &MemoryStore::new(), None)), "OK");
        c.secret = "retired-secret";
        assert_eq!(
            code(run(&p, &c.host(), &MemoryStore::new(), None)),
            "A400IS"
        );
    }

    #[test]
    fn tampering_with_the_request_breaks_the_signature() {
        let p = policy(CONFIG);
        let store = MemoryStore::new();
        for (name, value) in [
            (":path", "/x?a=2"),
            (":method", "DELETE"),
            ("x-ca-timestamp", &(NOW_MS + 1).to_string()),
        ] {
            let mut host = client("GET", "/x?a=1").host();
            host.headers.retain(|(k, _)| k != name);
            host = host.with_header(name, value);
            let error = run(&p, &host, &store, None).unwrap_err();
            assert_eq!(error.code, "A400IS", "{name}");
            assert!(
                error
                    .message
                    .starts_with("Invalid Signature, Server StringToSign:`"),
                "{}",
                error.message
            );
            assert!(error.message.contains('#') && !error.message.contains('\n'));
        }
    }

    #[test]
    fn the_error_message_shows_the_server_string_to_sign() {
        let p = policy(CONFIG);
        let mut host = client("GET", "/x?a=1").host();
        host.headers.retain(|(k, _)| k != "x-ca-signature");
        host = host.with_header("x-ca-signature", "AAAA");
        let error = run(&p, &host, &MemoryStore::new(), None).unwrap_err();
        assert_eq!(
            error.message,
            format!("Invalid Signature, Server StringToSign:`GET#####x-ca-key:203751#x-ca-nonce:nonce-1#x-ca-timestamp:{NOW_MS}#/x?a=1`")
        );
    }

    #[test]
    fn a_replayed_nonce_is_refused() {
        let p = policy(CONFIG);
        let store = MemoryStore::new();
        let host = client("GET", "/x").host();
        assert_eq!(code(run(&p, &host, &store, None)), "OK");
        assert_eq!(code(run(&p, &host, &store, None)), "A400IN");
    }

    #[test]
    fn a_failing_nonce_store_denies_by_default_and_allows_when_configured() {
        struct Broken;
        impl SharedStore for Broken {
            fn get(
                &self,
                _: &str,
            ) -> Result<gateway_common::store::Versioned, gateway_common::store::StoreError>
            {
                Err(gateway_common::store::StoreError::Unavailable)
            }
            fn set(
                &self,
                _: &str,
                _: &[u8],
                _: Option<u32>,
            ) -> Result<(), gateway_common::store::StoreError> {
                Err(gateway_common::store::StoreError::Unavailable)
            }
        }
        let host = client("GET", "/x").host();
        let deny = policy(CONFIG);
        match deny.begin(&host, &Broken, true) {
            Step::Reject(error) => assert_eq!((error.status, error.code), (503, "A503NU")),
            other => panic!("{other:?}"),
        }
        // `nonce_failure_mode`, the field's former name, still reads.
        for field in ["failure_mode", "nonce_failure_mode"] {
            let allow_config = CONFIG.replacen('{', &format!(r#"{{"{field}": "allow","#), 1);
            let allow = policy(&allow_config);
            match allow.begin(&host, &Broken, true) {
                Step::Pass(Some(verified)) => assert!(verified.nonce_unchecked, "{field}"),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn timestamps_outside_the_window_are_refused() {
        let p = policy(CONFIG);
        for offset in [-900_001i64, 900_001] {
            let mut c = client("GET", "/x");
            c.timestamp_ms = NOW_MS.checked_add_signed(offset).unwrap();
            assert_eq!(
                code(run(&p, &c.host(), &MemoryStore::new(), None)),
                "A400IT",
                "{offset}"
            );
        }
        let mut edge = client("GET", "/x");
        edge.timestamp_ms = NOW_MS - 900_000;
        assert_eq!(code(run(&p, &edge.host(), &MemoryStore::new(), None)), "OK");
    }

    #[test]
    fn unknown_and_disabled_apps_are_refused() {
        let p = policy(CONFIG);
        let mut c = client("GET", "/x");
        c.key = "999";
        assert_eq!(
            code(run(&p, &c.host(), &MemoryStore::new(), None)),
            "A401AK"
        );
        c.key = "203753";
        c.secret = "off";
        assert_eq!(
            code(run(&p, &c.host(), &MemoryStore::new(), None)),
            "A403AD"
        );
    }

    #[test]
    fn an_app_outside_the_rules_app_list_gets_403() {
        let p = policy(CONFIG);
        let mut c = client("GET", "/orders/7");
        c.key = "203752";
        c.secret = "web-secret";
        let error = run(&p, &c.host(), &MemoryStore::new(), None).unwrap_err();
        assert_eq!((error.status, error.code), (403, "A403UA"));
    }

    #[test]
    fn unsigned_requests_pass_only_where_anonymous_access_is_allowed() {
        let p = policy(CONFIG);
        let unsigned = |path: &str| {
            FakeHost::new()
                .with_header(":method", "GET")
                .with_header(":path", path)
        };
        assert!(matches!(
            p.begin(&unsigned("/public/x"), &MemoryStore::new(), true),
            Step::Pass(None)
        ));
        let error = run(&p, &unsigned("/orders/1"), &MemoryStore::new(), None).unwrap_err();
        assert_eq!((error.status, error.code), (401, "A401MH"));
        assert_eq!(error.message, "Header `X-Ca-Key` is Required");
    }

    #[test]
    fn missing_and_malformed_headers_are_named() {
        let p = policy(CONFIG);
        for (remove, add, expected) in [
            (
                "x-ca-signature",
                None,
                "Header `X-Ca-Signature` is Required",
            ),
            ("x-ca-nonce", None, "Header `X-Ca-Nonce` is Required"),
            (
                "x-ca-timestamp",
                Some("soon"),
                "Invalid Header `X-Ca-Timestamp`: epoch milliseconds expected",
            ),
        ] {
            let mut host = client("GET", "/x").host();
            host.headers.retain(|(k, _)| k != remove);
            if let Some(value) = add {
                host = host.with_header(remove, value);
            }
            assert_eq!(
                run(&p, &host, &MemoryStore::new(), None)
                    .unwrap_err()
                    .message,
                expected
            );
        }
        let host = client("GET", "/x")
            .host()
            .with_header("x-ca-signature-method", "HmacMD5");
        assert_eq!(code(run(&p, &host, &MemoryStore::new(), None)), "A400SM");
    }

    #[test]
    fn form_bodies_are_part_of_the_signature() {
        let p = policy(CONFIG);
        let mut c = client("POST", "/x?z=1");
        c.form = "name=hello+world&a=1";
        c.headers.push((
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8".into(),
        ));
        let host = c.host();
        assert_eq!(
            code(run(
                &p,
                &host,
                &MemoryStore::new(),
                Some(b"name=hello+world&a=1")
            )),
            "OK"
        );
        assert_eq!(
            code(run(&p, &host, &MemoryStore::new(), Some(b"name=evil&a=1"))),
            "A400IS"
        );
        assert_eq!(
            code(run(&p, &host, &MemoryStore::new(), Some(b"name=%zz"))),
            "A400IP"
        );
    }

    #[test]
    fn content_md5_guards_the_body() {
        let p = policy(CONFIG);
        let body = br#"{"id":7}"#;
        let mut c = client("POST", "/x");
        c.headers.push(("content-type", "application/json".into()));
        c.headers.push(("content-md5", content_md5(body)));
        let host = c.host();
        assert_eq!(code(run(&p, &host, &MemoryStore::new(), Some(body))), "OK");
        assert_eq!(
            code(run(&p, &host, &MemoryStore::new(), Some(br#"{"id":8}"#))),
            "A400IM"
        );
        assert_eq!(code(run(&p, &host, &MemoryStore::new(), None)), "A400IM");
    }

    #[test]
    fn json_bodies_without_content_md5_are_not_read() {
        let p = policy(CONFIG);
        let mut c = client("POST", "/x");
        c.headers.push(("content-type", "application/json".into()));
        assert!(matches!(
            p.begin(&c.host(), &MemoryStore::new(), false),
            Step::Pass(Some(_))
        ));
    }

    #[test]
    fn malformed_query_encoding_gets_400() {
        let p = policy(CONFIG);
        let host = client("GET", "/x").host().with_header(":path", "/x?a=%zz");
        let mut host = host;
        host.headers
            .retain(|(k, v)| k != ":path" || v == "/x?a=%zz");
        assert_eq!(code(run(&p, &host, &MemoryStore::new(), None)), "A400IP");
    }

    #[test]
    fn bad_configs_are_refused_with_the_field_named() {
        let cases = [
            (
                r#"{"apps":[{"key":"a","secrets":[]}]}"#,
                "apps[0]: has no credential: give `secrets`, `huawei`, `appcodes`, `basic` or `jwt`",
            ),
            (
                r#"{"apps":[{"key":"a","secrets":["s",""]}]}"#,
                "apps[0].secrets: no secret may be empty",
            ),
            (
                r#"{"apps":[{"key":"a","huawei":[{"key":"h","secrets":[]}]}]}"#,
                "apps[0].huawei[0].secrets: needs at least one secret, and no empty secret",
            ),
            (
                r#"{"apps":[{"key":"a","huawei":[{"key":"h","secrets":["s"]}]},{"key":"b","huawei":[{"key":"h","secrets":["t"]}]}]}"#,
                "apps[1].huawei[0].key: Huawei AppKey `h` is defined twice",
            ),
            (
                r#"{"apps":[{"key":"a","appcodes":["sha256:12"]}]}"#,
                "apps[0].appcodes[0]: `sha256:` must be followed by 64 hex digits",
            ),
            (
                r#"{"apps":[{"key":"a","basic":[{"username":"u:v","password":"p"}]}]}"#,
                "apps[0].basic[0].username: must not be empty nor contain `:`",
            ),
            (
                r#"{"apps":[{"key":"a","basic":[{"username":"u","password":""}]}]}"#,
                "apps[0].basic[0].password: must not be empty",
            ),
            (
                r#"{"apps":[],"rules":[{"modes":[]}]}"#,
                "rules[0].modes: needs at least one of app, huawei_app, appcode, basic, jwt",
            ),
            (
                r#"{"apps":[],"modes":["oauth"]}"#,
                "modes[0]: unknown variant `oauth`",
            ),
            (
                r#"{"apps":[],"rules":[{"appcode_query":""}]}"#,
                "rules[0].appcode_query: must name a query parameter",
            ),
            (
                r#"{"apps":[],"realm":"a\"b"}"#,
                "realm: must not contain quotes",
            ),
            (
                r#"{"apps":[{"key":"a","secrets":["s"]},{"key":"a","secrets":["t"]}]}"#,
                "apps[1].key: app key `a` is defined twice",
            ),
            (
                r#"{"apps":[{"key":" ","secrets":["s"]}]}"#,
                "apps[0].key: must not be empty",
            ),
            (
                r#"{"apps":[],"rules":[{"apps":["ghost"]}]}"#,
                "rules[0].apps[0]: unknown app key `ghost`",
            ),
            (
                r#"{"apps":[],"signature_methods":["HmacMD5"]}"#,
                "signature_methods[0]: `HmacMD5` is not HmacSHA256 or HmacSHA1",
            ),
            (
                r#"{"apps":[],"timestamp_window_seconds":0}"#,
                "timestamp_window_seconds: must be between 1 and 86400",
            ),
            (
                r#"{"apps":[],"nonce_slots":0}"#,
                "nonce_slots: must be between 1 and 1048576",
            ),
            (
                r#"{"apps":[{"key":"a","secret":"s"}]}"#,
                "apps[0].secret: unknown field `secret`",
            ),
            (r#"{}"#, "missing field `apps`"),
            (
                r#"{"apps":[],"backend_signature":{"keys":[]}}"#,
                "backend_signature.keys: needs at least one key; the first one signs",
            ),
            (
                r#"{"apps":[],"backend_signature":{"keys":[{"id":"k","secret":""}]}}"#,
                "backend_signature.keys[0]: `id` and `secret` must not be empty",
            ),
        ];
        for (json, expected) in cases {
            let error = config_error(json);
            assert!(
                error.starts_with(expected) || error.contains(expected),
                "{json}\n got: {error}\nwant: {expected}"
            );
        }
    }

    pub(crate) fn fleet_policy(mode: &str) -> SignAuth {
        let fleet = format!(
            r#"{{"fleet": {{"store": {{"cluster": "redis", "key_prefix": "t:"}}, "failure_mode": "{mode}"}},"#
        );
        policy(&CONFIG.replacen('{', &fleet, 1))
    }

    /// The fleet check of a valid signed request.
    fn fleet_check(policy: &SignAuth, nonce: &str) -> FleetCheck {
        let mut signed = client("GET", "/orders/7");
        signed.nonce = nonce.into();
        match policy.begin(&signed.host(), &MemoryStore::new(), true) {
            Step::CheckFleet(check) => *check,
            other => panic!("expected a fleet check, got {other:?}"),
        }
    }

    pub(crate) fn answer(state: State) -> Result<Vec<OpResult>, Failure> {
        Ok(vec![OpResult {
            state,
            previous: 0,
            current: 0,
            value: None,
        }])
    }

    #[test]
    fn with_a_fleet_store_the_nonce_is_a_set_nx_of_a_digest_for_the_whole_window() {
        let p = fleet_policy("local");
        let check = fleet_check(&p, "nonce/with:parts");
        let ops = p.fleet_ops(&check);
        let [Op::Nonce { key, ttl_ms }] = ops.as_slice() else {
            panic!("{ops:?}");
        };
        assert!(key.starts_with("t:n:"), "{key}");
        assert_eq!(key.len(), "t:n:".len() + 32);
        assert!(!key.contains("nonce"), "no client input in a key: {key}");
        // Signed at NOW_MS: recorded for the whole window after it, and
        // the grace for clocks a little behind.
        assert_eq!(*ttl_ms, 900_000 + fleet::CLOCK_GRACE_MS);
        // The same nonce of another app is another key.
        let other = FleetCheck {
            verified: Verified {
                identity: Identity {
                    app_key: "203752".into(),
                    ..check.verified.identity.clone()
                },
                ..check.verified.clone()
            },
            ..check.clone()
        };
        assert_ne!(p.fleet_ops(&other), ops);
    }

    #[test]
    fn the_stores_answer_decides_fresh_or_replayed() {
        let p = fleet_policy("deny");
        let store = MemoryStore::new();
        let fresh = p.conclude(fleet_check(&p, "a"), &answer(State::Done), &store);
        assert_eq!(fresh.unwrap().identity.app_key, "203751");
        let replay = p.conclude(fleet_check(&p, "a"), &answer(State::Refused), &store);
        assert_eq!(replay.unwrap_err().code, "A400IN");
    }

    #[test]
    fn a_nonce_the_store_accepted_is_refused_locally_should_the_store_fail_later() {
        let p = fleet_policy("local");
        let store = MemoryStore::new();
        let fresh = p.conclude(fleet_check(&p, "a"), &answer(State::Done), &store);
        assert!(fresh.is_ok());
        let down = Err(Failure::NoAnswer);
        let replay = p.conclude(fleet_check(&p, "a"), &down, &store);
        assert_eq!(replay.unwrap_err().code, "A400IN");
    }

    #[test]
    fn a_failing_store_is_handled_by_the_fleet_failure_mode() {
        let failures = [
            Err(Failure::NoAnswer),
            Err(Failure::Status(503)),
            Err(Failure::BadReply("x".into())),
            answer(State::NotRun),
            Ok(Vec::new()),
        ];
        for failure in failures {
            assert!(fleet_failure(&failure).is_some(), "{failure:?}");
            let deny = fleet_policy("deny");
            let denied = deny.conclude(fleet_check(&deny, "a"), &failure, &MemoryStore::new());
            assert_eq!(denied.unwrap_err().code, "A503NU");
            let allow = fleet_policy("allow");
            let allowed = allow.conclude(fleet_check(&allow, "a"), &failure, &MemoryStore::new());
            assert!(allowed.unwrap().nonce_unchecked);
            // local: this Envoy's table, which still refuses a local replay.
            let local = fleet_policy("local");
            let store = MemoryStore::new();
            let first = local.conclude(fleet_check(&local, "a"), &failure, &store);
            assert!(!first.unwrap().nonce_unchecked);
            let again = local.conclude(fleet_check(&local, "a"), &failure, &store);
            assert_eq!(again.unwrap_err().code, "A400IN");
        }
        assert_eq!(fleet_failure(&answer(State::Done)), None);
    }

    #[test]
    fn a_bad_fleet_store_is_refused_with_its_field() {
        let config = CONFIG.replacen('{', r#"{"fleet": {"store": {"cluster": ""}},"#, 1);
        let error = SignAuth::compile(&serde_json::from_str(&config).unwrap()).unwrap_err();
        assert_eq!(error.path, "fleet.store.cluster");
        let config = CONFIG.replacen(
            '{',
            r#"{"fleet": {"store": {"cluster": "r"}, "failure_mode": "maybe"},"#,
            1,
        );
        assert!(serde_json::from_str::<SignAuthConfig>(&config).is_err());
    }
}
