//! The `apis.yaml` format: the gateway, its backends, signature apps, named
//! policies, API groups and APIs. Policy bodies and per-filter settings are
//! written in the filters' own configuration shapes and left as JSON here:
//! the filters' parsers check them (see `check`), so the format never
//! drifts from the code that runs.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The format's version this tool reads.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub version: u32,
    #[serde(default)]
    pub gateway: Gateway,
    #[serde(default)]
    pub backends: Vec<Backend>,
    /// Signature apps, in sign-auth's shape (`key`, `secrets`, `name`, `disabled`).
    #[serde(default)]
    pub apps: Vec<Value>,
    #[serde(default)]
    pub policies: Vec<Policy>,
    /// Each filter's top-level fields other than its rules, in the filter's shape.
    #[serde(default)]
    pub settings: Settings,
    #[serde(default)]
    pub groups: Vec<Group>,
    pub apis: Vec<Api>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// `host:port` of Envoy's admin interface; none when absent.
    #[serde(default)]
    pub admin: Option<String>,
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// The domains of the virtual host (`*` when empty).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// How policies find the client's address, in the filters' shape.
    #[serde(default)]
    pub client_address: Option<Value>,
    #[serde(default)]
    pub cors: Option<Cors>,
    /// Where fleet-wide state is kept.
    #[serde(default)]
    pub fleet_store: Option<FleetStore>,
    /// How the filters find an API: by Envoy route name (`route`, the
    /// default: a policy applies exactly where Envoy routed) or by the
    /// request's method and path (`request`).
    #[serde(default, rename = "match")]
    pub match_by: MatchBy,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Per-connection buffer limit (request bodies policies read).
    #[serde(default = "default_buffer_bytes")]
    pub buffer_limit_bytes: u32,
}

fn default_buffer_bytes() -> u32 {
    1 << 20
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchBy {
    #[default]
    Route,
    Request,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    pub request_headers: String,
    pub request: String,
    pub stream_idle: String,
    pub connection_idle: String,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            request_headers: "10s".into(),
            request: "60s".into(),
            stream_idle: "30s".into(),
            connection_idle: "300s".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    /// `host:port`.
    pub address: String,
    #[serde(default)]
    pub tls: Option<Tls>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub certificate: String,
    pub private_key: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    pub allow_origins: Vec<String>,
    #[serde(default)]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default)]
    pub max_age_seconds: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    pub name: String,
    /// `host:port` each; an IP address makes a static cluster, a name a DNS one.
    pub endpoints: Vec<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: String,
    /// The route timeout of calls to this backend.
    #[serde(default = "default_timeout")]
    pub timeout: String,
    #[serde(default)]
    pub retries: Option<Retries>,
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    /// Envoy's circuit-breaker thresholds (connections, pending and active requests).
    #[serde(default)]
    pub max_requests: Option<u32>,
    /// Call the backend over TLS, with this SNI (empty: the first endpoint's host).
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
}

fn default_connect_timeout() -> String {
    "1s".into()
}

fn default_timeout() -> String {
    "15s".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    pub on: Vec<String>,
    pub attempts: u32,
    #[serde(default)]
    pub per_try_timeout: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub path: String,
    #[serde(default = "default_interval")]
    pub interval: String,
    #[serde(default = "default_health_timeout")]
    pub timeout: String,
    #[serde(default = "two")]
    pub unhealthy_threshold: u32,
    #[serde(default = "one")]
    pub healthy_threshold: u32,
}

fn default_interval() -> String {
    "5s".into()
}

fn default_health_timeout() -> String {
    "1s".into()
}

fn one() -> u32 {
    1
}

fn two() -> u32 {
    2
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    pub consecutive_5xx: u32,
    #[serde(default = "default_ejection")]
    pub base_ejection_time: String,
}

fn default_ejection() -> String {
    "30s".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    #[serde(default)]
    pub sni: Option<String>,
}

/// A named policy, bound to APIs or groups by name. Exactly one kind is
/// given; its body is the filter's rule without `name` and `match`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    /// A throttling rule: `key`, `limit`, `window`, `exceptions`, …
    #[serde(default)]
    pub quota: Option<Map<String, Value>>,
    /// An ip-acl rule: `allow`, `deny`, `apps`.
    #[serde(default)]
    pub ip_control: Option<Map<String, Value>>,
    /// A circuit-breaker rule: `window`, `trip`, `open`, `half_open`, `when_open`, …
    #[serde(default)]
    pub breaker: Option<Map<String, Value>>,
    /// An access-control rule: `parameters`, `checks`, `otherwise`.
    #[serde(default)]
    pub access_control: Option<Map<String, Value>>,
    /// Conditional routing: `parameters`, and `routes` (each a `name`, a
    /// `condition`, and a `backend` or a `mock`).
    #[serde(default)]
    pub routing: Option<Map<String, Value>>,
    /// Traffic mirroring: `backend`, `percent`.
    #[serde(default)]
    pub mirror: Option<Map<String, Value>>,
    /// Error-code mapping: `parameters`, `condition`, `error_code`,
    /// `mappings`, `default`, `body`.
    #[serde(default)]
    pub error_mapping: Option<Map<String, Value>>,
    /// A response cache rule: `ttl_seconds`, `key`, `statuses`, …
    #[serde(default)]
    pub cache: Option<Map<String, Value>>,
    /// A threat-protection rule: `mode`, `sensitivity`, `injection`,
    /// `locations`, `exempt`, `json`, `form`, …
    #[serde(default)]
    pub threat_protection: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    Quota,
    IpControl,
    Breaker,
    AccessControl,
    Routing,
    Mirror,
    ErrorMapping,
    Cache,
    ThreatProtection,
}

impl PolicyKind {
    pub fn field(self) -> &'static str {
        match self {
            PolicyKind::Quota => "quota",
            PolicyKind::IpControl => "ip_control",
            PolicyKind::Breaker => "breaker",
            PolicyKind::AccessControl => "access_control",
            PolicyKind::Routing => "routing",
            PolicyKind::Mirror => "mirror",
            PolicyKind::ErrorMapping => "error_mapping",
            PolicyKind::Cache => "cache",
            PolicyKind::ThreatProtection => "threat_protection",
        }
    }
}

impl Policy {
    /// The kinds given (a valid policy has exactly one).
    pub fn kinds(&self) -> Vec<(PolicyKind, &Map<String, Value>)> {
        [
            (PolicyKind::Quota, &self.quota),
            (PolicyKind::IpControl, &self.ip_control),
            (PolicyKind::Breaker, &self.breaker),
            (PolicyKind::AccessControl, &self.access_control),
            (PolicyKind::Routing, &self.routing),
            (PolicyKind::Mirror, &self.mirror),
            (PolicyKind::ErrorMapping, &self.error_mapping),
            (PolicyKind::Cache, &self.cache),
            (PolicyKind::ThreatProtection, &self.threat_protection),
        ]
        .into_iter()
        .filter_map(|(kind, body)| body.as_ref().map(|body| (kind, body)))
        .collect()
    }
}

/// Each filter's settings: its configuration's top-level fields other
/// than `rules` (which are made from the APIs).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub sign_auth: Option<Map<String, Value>>,
    #[serde(default)]
    pub ip_acl: Option<Map<String, Value>>,
    #[serde(default)]
    pub ext_auth: Option<Map<String, Value>>,
    #[serde(default)]
    pub access_control: Option<Map<String, Value>>,
    #[serde(default)]
    pub routing: Option<Map<String, Value>>,
    #[serde(default)]
    pub throttling: Option<Map<String, Value>>,
    #[serde(default)]
    pub param_validation: Option<Map<String, Value>>,
    #[serde(default)]
    pub threat_protection: Option<Map<String, Value>>,
    #[serde(default)]
    pub response_cache: Option<Map<String, Value>>,
    #[serde(default)]
    pub error_mapping: Option<Map<String, Value>>,
    #[serde(default)]
    pub request_mapping: Option<Map<String, Value>>,
    #[serde(default)]
    pub circuit_breaker: Option<Map<String, Value>>,
    #[serde(default)]
    pub log_push: Option<Map<String, Value>>,
}

/// One way to call an API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// An Alibaba `X-Ca-*` signature of one of the API's apps (sign-auth).
    App,
    /// A Huawei `SDK-HMAC-SHA256` signature of one of the API's apps.
    HuaweiApp,
    /// An AppCode of one of the API's apps.
    Appcode,
    /// Basic credentials of a user of one of the API's apps.
    Basic,
    /// A JSON Web Token of an issuer in `settings.sign_auth.jwt`, of a
    /// client of one of the API's apps.
    Jwt,
    /// Anyone; with other modes, credentials are optional (and checked).
    Anonymous,
    /// The authorizer of `settings.ext_auth` decides.
    ExtAuth,
}

impl AuthMode {
    /// Its name in `apis.yaml` (and, for the app modes, in sign-auth).
    pub fn name(self) -> &'static str {
        match self {
            AuthMode::App => "app",
            AuthMode::HuaweiApp => "huawei_app",
            AuthMode::Appcode => "appcode",
            AuthMode::Basic => "basic",
            AuthMode::Jwt => "jwt",
            AuthMode::Anonymous => "anonymous",
            AuthMode::ExtAuth => "ext_auth",
        }
    }

    /// The modes sign-auth checks, by their name there.
    pub fn sign_auth_name(self) -> Option<&'static str> {
        match self {
            AuthMode::Anonymous | AuthMode::ExtAuth => None,
            mode => Some(mode.name()),
        }
    }
}

/// Who may call an API: one mode (`auth: app`) or several (`auth: [app,
/// appcode]`, any of which lets a caller in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub modes: Vec<AuthMode>,
}

impl Auth {
    pub fn has(&self, mode: AuthMode) -> bool {
        self.modes.contains(&mode)
    }

    /// The sign-auth modes, in sign-auth's names.
    pub fn sign_auth_modes(&self) -> Vec<&'static str> {
        self.modes
            .iter()
            .filter_map(|mode| mode.sign_auth_name())
            .collect()
    }
}

impl<'de> Deserialize<'de> for Auth {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(AuthMode),
            Many(Vec<AuthMode>),
        }
        match OneOrMany::deserialize(deserializer) {
            Ok(OneOrMany::One(mode)) => Ok(Auth { modes: vec![mode] }),
            Ok(OneOrMany::Many(modes)) => Ok(Auth { modes }),
            Err(_) => Err(serde::de::Error::custom(
                "`auth` is one of app, huawei_app, appcode, basic, jwt, anonymous, ext_auth, or a list of them",
            )),
        }
    }
}

/// Where fleet-wide state is kept: the backend of Webdis in front of
/// Redis (every form), or Redis itself (the native module's own
/// connection), or both: each form then calls the one it can.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetStore {
    pub webdis: Option<String>,
    /// The filters' `redis` object, checked with the sections.
    pub redis: Option<Value>,
}

impl FleetStore {
    /// Where the Webdis backend is written: the whole field when it is
    /// given as a name, else its `webdis`.
    pub fn webdis_at(&self) -> &'static str {
        if self.redis.is_some() {
            "gateway.fleet_store.webdis"
        } else {
            "gateway.fleet_store"
        }
    }

    /// The `fleet.store` of the sections that name none.
    pub fn store_config(&self) -> Value {
        let mut store = Map::new();
        if let Some(webdis) = &self.webdis {
            store.insert("cluster".into(), Value::String(webdis.clone()));
        }
        if let Some(redis) = &self.redis {
            store.insert("redis".into(), redis.clone());
        }
        Value::Object(store)
    }
}

impl<'de> Deserialize<'de> for FleetStore {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Stores {
            #[serde(default)]
            webdis: Option<String>,
            #[serde(default)]
            redis: Option<Value>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            Webdis(String),
            Stores(Stores),
        }
        match Given::deserialize(deserializer) {
            Ok(Given::Webdis(webdis)) => Ok(FleetStore {
                webdis: Some(webdis),
                redis: None,
            }),
            Ok(Given::Stores(Stores { webdis, redis })) if webdis.is_some() || redis.is_some() => {
                Ok(FleetStore { webdis, redis })
            }
            _ => Err(serde::de::Error::custom(
                "`fleet_store` is the backend of Webdis, or `{webdis: BACKEND, redis: {…}}` \
                 with either or both (`redis`: the native module's own connection to Redis)",
            )),
        }
    }
}

/// What an API's group gives each of its APIs that does not say otherwise.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub stages: BTreeMap<String, String>,
    #[serde(default)]
    pub auth: Option<Auth>,
    #[serde(default)]
    pub apps: Option<Vec<String>>,
    /// Bound to every API of the group (before the API's own).
    #[serde(default)]
    pub policies: Vec<String>,
    #[serde(default)]
    pub log: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    pub name: String,
    #[serde(default)]
    pub group: Option<String>,
    /// Any method when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// `/orders` (exact) or `/orders/{id}` (a template: `{name}` is one segment).
    #[serde(default)]
    pub path: Option<String>,
    /// Every path under it.
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub backend: Option<String>,
    /// `X-Ca-Stage` values other than RELEASE and their backends.
    #[serde(default)]
    pub stages: BTreeMap<String, String>,
    /// Overrides the backend's route timeout.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Answered by Envoy, no backend called (every policy still applies).
    #[serde(default)]
    pub mock: Option<Mock>,
    #[serde(default)]
    pub auth: Option<Auth>,
    /// The app keys allowed (with an app mode); every app when absent.
    #[serde(default)]
    pub apps: Option<Vec<String>>,
    /// sign-auth's per-API options: `appcode_query`, `require_tls`,
    /// `unsigned_payload`, `keep_credentials`, `jwt_issuers`,
    /// `claims_to_headers`.
    #[serde(default)]
    pub auth_options: Option<Map<String, Value>>,
    #[serde(default)]
    pub policies: Vec<String>,
    /// Declared parameters, in param-validation's shape.
    #[serde(default)]
    pub parameters: Vec<Value>,
    /// The JSON Schema of a JSON request body.
    #[serde(default)]
    pub body_schema: Option<Value>,
    /// The rest of param-validation's rule: `drop_undefined`, `allowed_headers`, …
    #[serde(default)]
    pub validation: Option<Map<String, Value>>,
    /// request-mapping's rule without `name` and `match`: `backend`,
    /// `parameters`, `constants`, `system`, `response_headers`.
    #[serde(default)]
    pub mapping: Option<Map<String, Value>>,
    /// Recorded by log-push (when `settings.log_push` is given); default yes.
    #[serde(default)]
    pub log: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mock {
    #[serde(default = "ok")]
    pub status: u16,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn ok() -> u16 {
    200
}
