//! The ext-auth policy: which requests to authorize, what identifies their
//! caller, how the authorizer is asked, and what its answer decides. No
//! host calls here; the host is reached through [`Host`].

use crate::cache::{CacheKey, DecisionCache};
use crate::config::*;
use gateway_common::client_ip::{ClientAddressError, ClientAddressResolver};
use gateway_common::config::{ConfigError, OnFailure};
use gateway_common::error::{codes as common_codes, GatewayError};
use gateway_common::host::{Host, RequestFacts, RequestLine};
use gateway_common::identity;
use gateway_common::matching::{
    any_by_route_name, compile_rule_match, first_match_index, rule_name, rule_path,
};
use gateway_common::params::parse_pairs;
use serde_json::{json, Map, Value};

/// The error codes ext-auth answers with itself (a denial by the
/// authorizer is its own answer, passed on).
pub mod codes {
    use gateway_common::error::GatewayError;

    /// An identity source the rule needs is absent from the request.
    pub const MISSING_IDENTITY: GatewayError =
        GatewayError::new(401, "A401IS", "Identity Source Missing");
    /// The authorizer did not answer usably and the failure mode is `deny`.
    pub const AUTHORIZER_FAILED: GatewayError =
        GatewayError::new(503, "A503AU", "Authorizer Unavailable");

    pub const COUNT: usize = 3;
    pub const ALL: [GatewayError; COUNT] = [
        MISSING_IDENTITY,
        AUTHORIZER_FAILED,
        gateway_common::error::codes::INVALID_HEADER,
    ];
}

/// The compiled configuration.
#[derive(Debug)]
pub struct ExtAuth {
    pub authorizer: Authorizer,
    identity: Vec<IdentitySource>,
    rules: Vec<Rule>,
    upstream_headers: Vec<String>,
    client_headers: Vec<String>,
    /// Every header of an answer the policy reads.
    answer_headers: Vec<String>,
    user_header: Option<String>,
    failure_mode: OnFailure,
    cache: Option<DecisionCache>,
    client_address: ClientAddressResolver,
    uses_route_name: bool,
    /// Mixed into every cache key: a decision made under another
    /// configuration never answers for this one.
    config_digest: [u8; 16],
}

/// What a request needs from the authorizer.
#[derive(Debug)]
pub enum Check {
    /// No rule applies, or the rule lets requests through unasked.
    Skip,
    /// Refused without asking (an identity source is missing).
    Refuse(GatewayError),
    Ask(Box<Pending>),
}

/// A request to ask the authorizer about.
#[derive(Debug, Clone)]
pub struct Pending {
    pub key: CacheKey,
    pub line: std::rc::Rc<RequestLine>,
    /// Each identity source's value, in the configured order.
    pub values: Vec<String>,
}

/// The call to make: its headers (pseudo-headers first) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizerCall {
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// The authorizer's answer, as the adapter read it: the status and the
/// headers of [`ExtAuth::answer_headers`] only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why the authorizer gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The call could not be made (unknown cluster…).
    Dispatch,
    /// No answer within the timeout, or the connection failed.
    NoAnswer,
    /// A status that neither allows nor denies.
    Status(u32),
    /// An answer larger than `max_answer_bytes`.
    TooLarge(usize),
}

impl Failure {
    /// The metric suffix (`failure.<name>`).
    pub fn name(&self) -> &'static str {
        match self {
            Failure::Dispatch => "dispatch",
            Failure::NoAnswer => "no_answer",
            Failure::Status(_) => "status",
            Failure::TooLarge(_) => "too_large",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Dispatch => write!(f, "the call could not be made"),
            Failure::NoAnswer => write!(f, "no answer within the timeout"),
            Failure::Status(status) => write!(f, "status {status}"),
            Failure::TooLarge(size) => write!(f, "an answer of {size} bytes"),
        }
    }
}

/// What the authorizer decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let the request in, with these headers added.
    Allow { headers: Vec<(String, String)> },
    /// Refuse it with the authorizer's status, headers and body.
    Deny {
        status: u32,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// No usable answer: the failure mode decides.
    Failed(Failure),
}

impl ExtAuth {
    pub fn compile(config: &ExtAuthConfig, config_bytes: &[u8]) -> Result<Self, ConfigError> {
        let authorizer = Authorizer::compile(&config.authorizer)?;
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, rule) in config.rules.iter().enumerate() {
            let at = rule_path(i);
            rules.push(Rule {
                name: rule_name(rule.name.as_deref(), &at),
                matcher: compile_rule_match(&rule.matcher).map_err(|e| e.within(&at))?,
                authorize: rule.authorize,
            });
        }
        check_identity(&config.identity, &rules)?;
        let upstream_headers = header_list(&config.upstream_headers, "upstream_headers")?;
        let client_headers = header_list(&config.client_headers, "client_headers")?;
        for (field, list) in [
            ("upstream_headers", &upstream_headers),
            ("client_headers", &client_headers),
        ] {
            if let Some(name) = list
                .iter()
                .find(|name| name.starts_with(':') || RESERVED_HEADERS.contains(&name.as_str()))
            {
                return Err(ConfigError::new(
                    field,
                    format!("`{name}` cannot be taken from the authorizer"),
                ));
            }
        }
        let user_header = match &config.user_header {
            Some(name) if upstream_headers.contains(&name.to_ascii_lowercase()) => {
                Some(name.to_ascii_lowercase())
            }
            Some(name) => {
                return Err(ConfigError::new(
                    "user_header",
                    format!("`{name}` must be one of upstream_headers"),
                ))
            }
            None => None,
        };
        let cache = config
            .cache
            .as_ref()
            .map(CacheSettings::compile)
            .transpose()?
            .map(DecisionCache::new);
        let mut answer_headers: Vec<String> = ["cache-control", "content-type"]
            .into_iter()
            .map(String::from)
            .collect();
        for name in upstream_headers.iter().chain(&client_headers) {
            if !answer_headers.contains(name) {
                answer_headers.push(name.clone());
            }
        }
        let config_digest = CacheKey::of(&[config_bytes]).0;
        Ok(Self {
            authorizer,
            identity: config.identity.clone(),
            uses_route_name: any_by_route_name(&rules, |r| &r.matcher),
            rules,
            upstream_headers,
            client_headers,
            answer_headers,
            user_header,
            failure_mode: config.failure_mode,
            cache,
            client_address: ClientAddressResolver::new(&config.client_address),
            config_digest,
        })
    }

    pub fn cache(&self) -> Option<&DecisionCache> {
        self.cache.as_ref()
    }

    /// Headers the gateway removes from every request: a client cannot
    /// pose as what the authorizer says.
    pub fn upstream_headers(&self) -> &[String] {
        &self.upstream_headers
    }

    /// The headers of an answer the policy reads.
    pub fn answer_headers(&self) -> &[String] {
        &self.answer_headers
    }

    /// The header of an allowing decision that names the user.
    pub fn user_header(&self) -> Option<&str> {
        self.user_header.as_deref()
    }

    pub fn failure_mode(&self) -> OnFailure {
        self.failure_mode
    }

    /// Whether the current request is to be authorized, and for whom.
    pub fn check(&self, host: &dyn Host) -> Check {
        let facts = RequestFacts::read(host, self.uses_route_name);
        let (rule_index, captures) = if self.rules.is_empty() {
            (u32::MAX, Vec::new())
        } else {
            let attrs = facts.attrs();
            let Some((index, captures)) = first_match_index(&self.rules, |r| &r.matcher, &attrs)
            else {
                return Check::Skip;
            };
            if !self.rules[index].authorize {
                return Check::Skip;
            }
            let captures: Vec<(String, String)> = captures
                .into_iter()
                .map(|(name, value)| (name.to_string(), value))
                .collect();
            (u32::try_from(index).unwrap_or(u32::MAX - 1), captures)
        };
        let mut values = Vec::with_capacity(self.identity.len());
        let mut query: Option<Vec<(String, String)>> = None;
        for source in &self.identity {
            let value = match source {
                IdentitySource::Header { name } => {
                    let all = host.request_header_values(name);
                    (!all.is_empty()).then(|| all.join(","))
                }
                IdentitySource::Query { name } => {
                    let pairs = query.get_or_insert_with(|| query_pairs(&facts.line.path));
                    pairs
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                }
                IdentitySource::PathParam { name } => captures
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone()),
                IdentitySource::ClientIp => match self.client_address.client_of(host) {
                    Ok(ip) => Some(ip.to_string()),
                    Err(ClientAddressError::MalformedForwardedFor(_)) => {
                        return Check::Refuse(common_codes::INVALID_HEADER.with_message(
                            "Invalid Header: X-Forwarded-For holds an entry that is not an address",
                        ))
                    }
                    Err(ClientAddressError::UnknownPeer) => None,
                },
                IdentitySource::App => identity::app_key(host),
            };
            match value.filter(|v| !v.is_empty()) {
                Some(value) => values.push(value),
                None => {
                    return Check::Refuse(
                        codes::MISSING_IDENTITY
                            .with_message(format!("Identity Source Missing: {}", source.label())),
                    )
                }
            }
        }
        let key = self.key(rule_index, &values);
        Check::Ask(Box::new(Pending {
            key,
            line: facts.line,
            values,
        }))
    }

    /// The cache key: the configuration, the rule and every source's value.
    fn key(&self, rule: u32, values: &[String]) -> CacheKey {
        let rule = rule.to_le_bytes();
        let mut parts: Vec<&[u8]> = vec![&self.config_digest, &rule];
        parts.extend(values.iter().map(String::as_bytes));
        CacheKey::of(&parts)
    }

    /// The authorizer call for `pending`; `host` gives the forwarded headers.
    pub fn call(&self, pending: &Pending, host: &dyn Host) -> AuthorizerCall {
        let authorizer = &self.authorizer;
        let line = &pending.line;
        let mut headers: Vec<(String, String)> = vec![
            (":method".into(), authorizer.method.clone()),
            (":path".into(), authorizer.upstream.path.clone()),
            (":authority".into(), authorizer.upstream.authority.clone()),
        ];
        match authorizer.shape {
            Shape::Forward => {
                headers.push(("x-forwarded-method".into(), line.method.clone()));
                headers.push(("x-forwarded-uri".into(), line.path.clone()));
                headers.push(("x-forwarded-host".into(), line.authority.clone()));
                for (source, value) in self.identity.iter().zip(&pending.values) {
                    let name = match source {
                        IdentitySource::Header { name } => name.to_ascii_lowercase(),
                        IdentitySource::Query { name } => format!("x-auth-query-{name}"),
                        IdentitySource::PathParam { name } => format!("x-auth-path-{name}"),
                        IdentitySource::ClientIp => "x-auth-client-ip".into(),
                        IdentitySource::App => "x-auth-app".into(),
                    };
                    headers.push((name, value.clone()));
                }
                for name in &authorizer.forward_headers {
                    if headers.iter().any(|(n, _)| n == name) {
                        continue;
                    }
                    if let Some(value) = host.request_header(name) {
                        headers.push((name.clone(), value));
                    }
                }
                AuthorizerCall {
                    headers,
                    body: None,
                }
            }
            Shape::Json => {
                let mut identity = Map::new();
                for (source, value) in self.identity.iter().zip(&pending.values) {
                    let (group, name) = match source {
                        IdentitySource::Header { name } => ("header", name.to_ascii_lowercase()),
                        IdentitySource::Query { name } => ("query", name.clone()),
                        IdentitySource::PathParam { name } => ("path_param", name.clone()),
                        IdentitySource::ClientIp => {
                            identity.insert("client_ip".into(), value.clone().into());
                            continue;
                        }
                        IdentitySource::App => {
                            identity.insert("app".into(), value.clone().into());
                            continue;
                        }
                    };
                    if let Value::Object(names) = identity
                        .entry(group)
                        .or_insert_with(|| Value::Object(Map::new()))
                    {
                        names.insert(name, value.clone().into());
                    }
                }
                let body = json!({
                    "method": line.method,
                    "path": line.path,
                    "host": line.authority,
                    "identity": identity,
                });
                headers.push(("content-type".into(), "application/json".into()));
                AuthorizerCall {
                    headers,
                    body: Some(body.to_string().into_bytes()),
                }
            }
        }
    }

    /// What the answer decides, and how long the decision may be cached
    /// (`None`: not at all).
    pub fn decide(&self, answer: Result<Answer, Failure>) -> (Decision, Option<u64>) {
        let answer = match answer {
            Ok(answer) => answer,
            Err(failure) => return (Decision::Failed(failure), None),
        };
        let pick = |names: &[String]| -> Vec<(String, String)> {
            names
                .iter()
                .filter_map(|name| {
                    answer
                        .headers
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(name))
                        .map(|(_, v)| (name.clone(), v.clone()))
                })
                .collect()
        };
        let (decision, default_ttl) = match answer.status {
            200..=299 => (
                Decision::Allow {
                    headers: pick(&self.upstream_headers),
                },
                self.cache.as_ref().map(|c| c.settings.ttl_ms),
            ),
            401 | 403 => {
                let mut headers = pick(&self.client_headers);
                if !answer.body.is_empty() && !headers.iter().any(|(n, _)| n == "content-type") {
                    if let Some(kind) = header(&answer.headers, "content-type") {
                        headers.push(("content-type".into(), kind.to_string()));
                    }
                }
                (
                    Decision::Deny {
                        status: answer.status,
                        headers,
                        body: answer.body.clone(),
                    },
                    self.cache.as_ref().map(|c| c.settings.deny_ttl_ms),
                )
            }
            other => return (Decision::Failed(Failure::Status(other)), None),
        };
        let Some(cache) = &self.cache else {
            return (decision, None);
        };
        let ttl = match header(&answer.headers, "cache-control").map(cache_lifetime) {
            Some(Lifetime::NoStore) => None,
            Some(Lifetime::MaxAge(seconds)) => Some(seconds.saturating_mul(1000)),
            Some(Lifetime::Unsaid) | None => default_ttl,
        };
        let ttl = ttl
            .map(|ttl| ttl.min(cache.settings.max_ttl_ms))
            .filter(|ttl| *ttl > 0);
        (decision, ttl)
    }
}

/// Headers an authorizer cannot set on the upstream request or the
/// client's answer (the gateway's own, or the connection's).
const RESERVED_HEADERS: [&str; 7] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "x-ca-error-code",
    "x-request-id",
    "x-envoy-original-path",
];

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn query_pairs(path: &str) -> Vec<(String, String)> {
    path.split_once('?')
        .and_then(|(_, query)| parse_pairs(query.split('#').next().unwrap_or_default()).ok())
        .unwrap_or_default()
}

/// What `Cache-Control` says about keeping a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    NoStore,
    MaxAge(u64),
    Unsaid,
}

/// Reads `Cache-Control` as a shared cache would: `no-store`, `no-cache`
/// and `private` forbid keeping it; `s-maxage` wins over `max-age`.
pub fn cache_lifetime(value: &str) -> Lifetime {
    let mut max_age = None;
    let mut shared_max_age = None;
    for directive in value.split(',') {
        let directive = directive.trim().to_ascii_lowercase();
        let (name, argument) = match directive.split_once('=') {
            Some((name, argument)) => (
                name.trim().to_string(),
                Some(argument.trim().trim_matches('"').to_string()),
            ),
            None => (directive.clone(), None),
        };
        match name.as_str() {
            "no-store" | "no-cache" | "private" => return Lifetime::NoStore,
            "max-age" => max_age = argument.and_then(|a| a.parse::<u64>().ok()),
            "s-maxage" => shared_max_age = argument.and_then(|a| a.parse::<u64>().ok()),
            _ => {}
        }
    }
    match shared_max_age.or(max_age) {
        Some(seconds) => Lifetime::MaxAge(seconds),
        None => Lifetime::Unsaid,
    }
}
