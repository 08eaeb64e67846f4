//! ext-auth's configuration as written, and its compiled form.

use gateway_common::client_ip::ClientAddressConfig;
use gateway_common::config::{is_header_name, is_http_token, ConfigError, OnFailure};
use gateway_common::matching::{MatchConfig, Matcher};
use gateway_common::upstream::{Upstream, UpstreamFields, UpstreamKind};
use serde::Deserialize;

/// The authorizer as an upstream: it answers on `/` unless told, within
/// 200 ms by default.
const AUTHORIZER: UpstreamKind = UpstreamKind {
    name: "the authorizer",
    default_path: Some("/"),
    default_timeout_ms: 200,
    max_timeout_ms: 10_000,
};
const DEFAULT_MAX_ANSWER_BYTES: usize = 16 * 1024;
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
const DEFAULT_SLOTS: u32 = 4096;
const MAX_SLOTS: u32 = 1 << 20;
const DEFAULT_TTL_SECONDS: u64 = 60;
const DEFAULT_DENY_TTL_SECONDS: u64 = 5;
const DEFAULT_MAX_TTL_SECONDS: u64 = 3600;
const DEFAULT_MAX_ENTRY_BYTES: usize = 4096;
const MAX_ENTRY_BYTES: usize = 60 * 1024;
const MAX_LISTED_HEADERS: usize = 32;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtAuthConfig {
    pub authorizer: AuthorizerConfig,
    /// What identifies a caller to the authorizer: the cache key, and what
    /// the authorizer is sent.
    #[serde(default)]
    pub identity: Vec<IdentitySource>,
    /// The APIs to authorize; the first rule whose `match` holds applies.
    /// Without rules every request is authorized.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Headers of an allowing answer added to the upstream request. A
    /// client's own copies are removed from every request.
    #[serde(default)]
    pub upstream_headers: Vec<String>,
    /// Headers of a denying answer passed to the client.
    #[serde(default)]
    pub client_headers: Vec<String>,
    /// One of `upstream_headers` whose value is the caller's user id,
    /// published as filter state `gw_user`.
    #[serde(default)]
    pub user_header: Option<String>,
    /// When the authorizer gives no usable answer: `deny` (503 `A503AU`,
    /// the default) or `allow` (through, without its headers).
    #[serde(default = "OnFailure::deny")]
    pub failure_mode: OnFailure,
    /// Caches decisions; absent, every request asks the authorizer.
    #[serde(default)]
    pub cache: Option<CacheConfig>,
    /// How the client IP is found (as in ip-acl).
    #[serde(default)]
    pub client_address: ClientAddressConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizerConfig {
    /// The Envoy cluster of the authorizer.
    pub cluster: String,
    /// The `:authority` of the calls (default: the cluster name).
    #[serde(default)]
    pub authority: Option<String>,
    /// The path the authorizer answers on (default `/`).
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub shape: Shape,
    /// The calls' method (default `GET` for `forward`, `POST` for `json`).
    #[serde(default)]
    pub method: Option<String>,
    /// How long a request waits for the authorizer (default 200 ms).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Request headers passed to the authorizer as they are (`forward` shape).
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// A larger answer is a failure (default 16 KiB).
    #[serde(default)]
    pub max_answer_bytes: Option<usize>,
}

/// How a request is put to the authorizer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Forward-auth: the original request line and the identity as headers.
    #[default]
    Forward,
    /// A JSON body naming the request and the identity sources.
    Json,
}

/// One identity source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case", deny_unknown_fields)]
pub enum IdentitySource {
    Header {
        name: String,
    },
    Query {
        name: String,
    },
    /// A variable of the matched rule's path template.
    PathParam {
        name: String,
    },
    /// The client address, resolved as ip-acl does.
    ClientIp,
    /// The app sign-auth verified.
    App,
}

impl IdentitySource {
    /// How the source is named in logs, errors and the JSON shape.
    pub fn label(&self) -> String {
        match self {
            IdentitySource::Header { name } => format!("header {name}"),
            IdentitySource::Query { name } => format!("query {name}"),
            IdentitySource::PathParam { name } => format!("path_param {name}"),
            IdentitySource::ClientIp => "client_ip".into(),
            IdentitySource::App => "app".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Names the API in logs; defaults to `rules[i]`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    /// `false` lets the matched requests through unasked (a public API
    /// under a broader rule).
    #[serde(default = "yes")]
    pub authorize: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Shared-data keys of the table (default 4096); each holds up to
    /// four decisions.
    #[serde(default)]
    pub slots: Option<u32>,
    /// How long an allowing decision is kept (default 60 s).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// How long a denial is kept (default 5 s; 0: never cached).
    #[serde(default)]
    pub deny_ttl_seconds: Option<u64>,
    /// The most any decision is kept, `max-age` included (default 3600 s).
    #[serde(default)]
    pub max_ttl_seconds: Option<u64>,
    /// A decision larger than this (headers and body) is not cached
    /// (default 4096 bytes).
    #[serde(default)]
    pub max_entry_bytes: Option<usize>,
}

/// A checked [`AuthorizerConfig`].
#[derive(Debug, Clone)]
pub struct Authorizer {
    pub upstream: Upstream,
    pub shape: Shape,
    pub method: String,
    pub forward_headers: Vec<String>,
    pub max_answer_bytes: usize,
}

/// A checked [`CacheConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    pub slots: u32,
    pub ttl_ms: u64,
    pub deny_ttl_ms: u64,
    pub max_ttl_ms: u64,
    pub max_entry_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub matcher: Matcher,
    pub authorize: bool,
}

impl Authorizer {
    pub fn compile(config: &AuthorizerConfig) -> Result<Self, ConfigError> {
        let at = |field: &str| format!("authorizer.{field}");
        let upstream = Upstream::compile(
            UpstreamFields {
                cluster: &config.cluster,
                authority: config.authority.as_deref(),
                path: config.path.as_deref(),
                timeout_ms: config.timeout_ms,
            },
            AUTHORIZER,
        )
        .map_err(|e| e.within("authorizer"))?;
        let method = match &config.method {
            Some(method) if is_http_token(method) => method.to_ascii_uppercase(),
            Some(_) => return Err(ConfigError::new(at("method"), "is not an HTTP method")),
            None if config.shape == Shape::Json => "POST".into(),
            None => "GET".into(),
        };
        let forward_headers = header_list(&config.forward_headers, &at("forward_headers"))?;
        if let Some(reserved) = forward_headers
            .iter()
            .find(|name| name.starts_with(':') || name.as_str() == "host")
        {
            return Err(ConfigError::new(
                at("forward_headers"),
                format!("`{reserved}` is set by the gateway"),
            ));
        }
        let max_answer_bytes = config.max_answer_bytes.unwrap_or(DEFAULT_MAX_ANSWER_BYTES);
        if !(1..=MAX_ANSWER_BYTES).contains(&max_answer_bytes) {
            return Err(ConfigError::new(
                at("max_answer_bytes"),
                format!("must be between 1 and {MAX_ANSWER_BYTES}"),
            ));
        }
        Ok(Self {
            upstream,
            shape: config.shape,
            method,
            forward_headers,
            max_answer_bytes,
        })
    }
}

impl CacheSettings {
    pub fn compile(config: &CacheConfig) -> Result<Self, ConfigError> {
        let slots = config.slots.unwrap_or(DEFAULT_SLOTS);
        if !(1..=MAX_SLOTS).contains(&slots) {
            return Err(ConfigError::new(
                "cache.slots",
                format!("must be between 1 and {MAX_SLOTS}"),
            ));
        }
        let max_ttl = config.max_ttl_seconds.unwrap_or(DEFAULT_MAX_TTL_SECONDS);
        if max_ttl == 0 || max_ttl > 86_400 * 7 {
            return Err(ConfigError::new(
                "cache.max_ttl_seconds",
                "must be between 1 and 604800 (a week)",
            ));
        }
        let ttl = config.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
        if ttl > max_ttl {
            return Err(ConfigError::new(
                "cache.ttl_seconds",
                format!("must not exceed max_ttl_seconds ({max_ttl})"),
            ));
        }
        let deny_ttl = config.deny_ttl_seconds.unwrap_or(DEFAULT_DENY_TTL_SECONDS);
        if deny_ttl > max_ttl {
            return Err(ConfigError::new(
                "cache.deny_ttl_seconds",
                format!("must not exceed max_ttl_seconds ({max_ttl})"),
            ));
        }
        let max_entry_bytes = config.max_entry_bytes.unwrap_or(DEFAULT_MAX_ENTRY_BYTES);
        if !(64..=MAX_ENTRY_BYTES).contains(&max_entry_bytes) {
            return Err(ConfigError::new(
                "cache.max_entry_bytes",
                format!("must be between 64 and {MAX_ENTRY_BYTES}"),
            ));
        }
        Ok(Self {
            slots,
            ttl_ms: ttl * 1000,
            deny_ttl_ms: deny_ttl * 1000,
            max_ttl_ms: max_ttl * 1000,
            max_entry_bytes,
        })
    }
}

/// Header names in lower case, checked.
pub fn header_list(names: &[String], at: &str) -> Result<Vec<String>, ConfigError> {
    if names.len() > MAX_LISTED_HEADERS {
        return Err(ConfigError::new(
            at,
            format!("at most {MAX_LISTED_HEADERS} headers"),
        ));
    }
    let mut list: Vec<String> = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        if !is_header_name(name) {
            return Err(ConfigError::new(
                format!("{at}[{i}]"),
                format!("`{name}` is not a header name"),
            ));
        }
        let lower = name.to_ascii_lowercase();
        if list.contains(&lower) {
            return Err(ConfigError::new(
                format!("{at}[{i}]"),
                format!("`{name}` is listed twice"),
            ));
        }
        list.push(lower);
    }
    Ok(list)
}

/// Checks the identity sources against the rules (a path variable must be
/// in every authorizing rule's template).
pub fn check_identity(sources: &[IdentitySource], rules: &[Rule]) -> Result<(), ConfigError> {
    for (i, source) in sources.iter().enumerate() {
        let at = format!("identity[{i}]");
        if sources[..i].contains(source) {
            return Err(ConfigError::new(at, "is listed twice"));
        }
        match source {
            IdentitySource::Header { name } => {
                if !is_header_name(name) || name.starts_with(':') {
                    return Err(ConfigError::new(
                        format!("{at}.name"),
                        format!("`{name}` is not a header name"),
                    ));
                }
            }
            IdentitySource::Query { name } | IdentitySource::PathParam { name } => {
                if !is_header_name(name) {
                    return Err(ConfigError::new(
                        format!("{at}.name"),
                        "must be letters, digits, `-` and `_` (it is also sent in a header name)",
                    ));
                }
            }
            IdentitySource::ClientIp | IdentitySource::App => {}
        }
        if let IdentitySource::PathParam { name } = source {
            let authorizing: Vec<&Rule> = rules.iter().filter(|r| r.authorize).collect();
            if authorizing.is_empty() {
                return Err(ConfigError::new(
                    at,
                    "a path variable needs rules whose path templates name it",
                ));
            }
            if let Some(rule) = authorizing
                .iter()
                .find(|rule| !rule.matcher.template_variables().contains(&name.as_str()))
            {
                return Err(ConfigError::new(
                    at,
                    format!(
                        "rule `{}` has no path variable `{{{name}}}` in its template",
                        rule.name
                    ),
                ));
            }
        }
    }
    Ok(())
}
