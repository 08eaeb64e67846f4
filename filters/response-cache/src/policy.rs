//! The response-cache policy: configuration, compilation, the key of a
//! request and what may be stored. Per API (a rule), GET answers are kept
//! for `ttl_seconds` (capped; the backend's `Cache-Control` may shorten it
//! or forbid storing) under a key made of the API, the path, the query
//! parameters and headers the rule names, and optionally the app; HEAD is
//! answered from a GET's entry. The entries live in a bounded table of
//! shared data every worker reads ([`ExpiringCache`]).

use gateway_common::config::ConfigError;
use gateway_common::host::{Host, RequestLine};
use gateway_common::identity;
use gateway_common::matching::{
    compile_rule_match, host_without_port, rule_name, rule_path, MatchConfig, MatchedRule, Matcher,
    RuleList,
};
use gateway_common::params::parse_pairs_lenient;
use gateway_common::slots::{CacheKey, ExpiringCache};
use serde::Deserialize;

/// The longest a rule may keep an answer.
pub const MAX_TTL_SECONDS: u64 = 86_400;
/// Entries share a slot two by two.
const ENTRIES_PER_SLOT: u32 = 2;
/// The shared-data keys of the table: `gw.response_cache.<n>`.
const SLOT_PREFIX: &str = "gw.response_cache.";
/// At most this many entries (slots × 2).
pub const MAX_ENTRIES: u32 = 1 << 22;
/// An entry is at most this large, whatever the configuration says (a miss
/// is held whole: keep it within Envoy's buffer limit).
pub const MAX_ENTRY_BYTES: usize = 16 << 20;

fn default_max_entries() -> u32 {
    1024
}

fn default_max_entry_bytes() -> usize {
    128 << 10
}

fn default_statuses() -> Vec<u16> {
    vec![200]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseCacheConfig {
    /// Per API: the first rule whose `match` holds applies.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// How many answers the table holds (all workers together).
    #[serde(default = "default_max_entries")]
    pub max_entries: u32,
    /// The largest answer kept (status, headers and body); a larger one
    /// passes, not stored. Keep it within Envoy's buffer limit (1 MiB by
    /// default): a miss is buffered whole before it is stored.
    #[serde(default = "default_max_entry_bytes")]
    pub max_entry_bytes: usize,
    /// Part of every key: a new generation purges everything stored.
    #[serde(default)]
    pub generation: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    /// How long an answer is kept (at most [`MAX_TTL_SECONDS`]).
    pub ttl_seconds: u64,
    #[serde(default)]
    pub key: KeyConfig,
    /// The statuses of answers that are kept.
    #[serde(default = "default_statuses")]
    pub statuses: Vec<u16>,
    /// Requests with `Authorization` or `Cookie` are answered from the
    /// cache and stored too (with `key.app`, per app).
    #[serde(default)]
    pub cache_authorized: bool,
    /// Answers with `Set-Cookie` are stored too.
    #[serde(default)]
    pub cache_set_cookie: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The query parameters that tell answers apart; every one when absent.
    #[serde(default)]
    pub query: Option<Vec<String>>,
    /// The request headers that tell answers apart.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Each app has answers of its own.
    #[serde(default)]
    pub app: bool,
    /// Each user (a Basic user, a token's subject, the authorizer's user)
    /// has answers of their own.
    #[serde(default)]
    pub user: bool,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    matcher: Matcher,
    pub ttl_ms: u64,
    /// Sorted; `None`: every parameter.
    query: Option<Vec<String>>,
    /// Lower case.
    headers: Vec<String>,
    per_app: bool,
    per_user: bool,
    statuses: Vec<u16>,
    /// The rule as configured: a changed rule never reads what the one
    /// before stored.
    digest: [u8; 16],
    pub cache_authorized: bool,
    pub cache_set_cookie: bool,
}

/// The compiled policy.
#[derive(Debug, Clone)]
pub struct ResponseCache {
    pub rules: RuleList<Rule>,
    pub table: ExpiringCache,
    pub max_entry_bytes: usize,
    generation: [u8; 8],
}

/// Why an answer is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// Its status is not among the rule's `statuses`.
    Status,
    /// `Cache-Control: no-store`, `private`, `no-cache` or a zero age.
    CacheControl,
    /// It sets a cookie.
    SetCookie,
    /// `Vary` names a header the key does not read.
    Vary,
    /// More headers than an entry keeps.
    Headers,
}

/// Why a request does not use the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// Not GET or HEAD.
    Method,
    /// A GET with a body, which the key does not read.
    Body,
    /// A `Range` request: a part of an answer.
    Range,
    /// It carries `Authorization` or `Cookie`, or authentication found an
    /// app or a user, and the rule does not say `cache_authorized`.
    Credentials,
}

impl MatchedRule for Rule {
    fn matcher(&self) -> &Matcher {
        &self.matcher
    }
}

impl ResponseCache {
    pub fn compile(config: &ResponseCacheConfig) -> Result<Self, ConfigError> {
        if config.max_entries == 0 || config.max_entries > MAX_ENTRIES {
            return Err(ConfigError::new(
                "max_entries",
                format!("must be 1 to {MAX_ENTRIES}"),
            ));
        }
        if config.max_entry_bytes < 64 || config.max_entry_bytes > MAX_ENTRY_BYTES {
            return Err(ConfigError::new(
                "max_entry_bytes",
                format!("must be 64 to {MAX_ENTRY_BYTES}"),
            ));
        }
        let rules = config
            .rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                let at = rule_path(index);
                Rule::compile(rule, &at).map_err(|err| err.within(&at))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let slots = config.max_entries.div_ceil(ENTRIES_PER_SLOT);
        Ok(Self {
            rules: RuleList::new(rules),
            table: ExpiringCache::new(
                SLOT_PREFIX,
                slots,
                ENTRIES_PER_SLOT as usize,
                config.max_entry_bytes,
            ),
            max_entry_bytes: config.max_entry_bytes,
            generation: config.generation.to_le_bytes(),
        })
    }

    /// The key of a request under rule `index`: the generation, the rule
    /// (as configured), the host, Envoy's route, the path, the query
    /// parameters and headers the rule reads (every value, in order), the
    /// routing policy's choice, the app and the user. GET and HEAD share it.
    pub fn key(&self, index: usize, host: &dyn Host, line: &RequestLine) -> Option<CacheKey> {
        let rule = self.rules.get(index)?;
        let (path, query) = line.path.split_once('?').unwrap_or((&line.path, ""));
        let absent = || vec![0xff];
        let mut parts: Vec<Vec<u8>> = vec![
            host_without_port(&line.authority)
                .to_ascii_lowercase()
                .into_bytes(),
            host.route_name()
                .map_or_else(absent, |route| route.as_bytes().to_vec()),
        ];
        let mut pairs = parse_pairs_lenient(query);
        match &rule.query {
            None => {
                // By name; a name's values keep their order.
                pairs.sort_by(|a, b| a.0.cmp(&b.0));
                for (name, value) in pairs {
                    parts.push(name.into_bytes());
                    parts.push(value.into_bytes());
                }
            }
            Some(names) => {
                for name in names {
                    let values: Vec<&str> = pairs
                        .iter()
                        .filter(|(key, _)| key == name)
                        .map(|(_, value)| value.as_str())
                        .collect();
                    // A parameter absent and one present but empty differ.
                    parts.push(if values.is_empty() {
                        absent()
                    } else {
                        values.join("&").into_bytes()
                    });
                }
            }
        }
        for name in &rule.headers {
            let values = host.request_header_values(name);
            parts.push(if values.is_empty() {
                absent()
            } else {
                values.join(",").into_bytes()
            });
        }
        // The route the routing policy chose: another backend's answers.
        parts.push(
            host.request_header(identity::ROUTE_HEADER)
                .map_or_else(absent, String::into_bytes),
        );
        if rule.per_app {
            parts.push(identity::app_key(host).map_or_else(absent, String::into_bytes));
        }
        if rule.per_user {
            parts.push(identity::user(host).map_or_else(absent, String::into_bytes));
        }
        let mut all: Vec<&[u8]> = vec![&self.generation, &rule.digest, path.as_bytes()];
        all.extend(parts.iter().map(Vec::as_slice));
        Some(CacheKey::of(&all))
    }
}

impl Rule {
    fn compile(config: &RuleConfig, at: &str) -> Result<Self, ConfigError> {
        let matcher = compile_rule_match(&config.matcher)?;
        if config.ttl_seconds == 0 || config.ttl_seconds > MAX_TTL_SECONDS {
            return Err(ConfigError::new(
                "ttl_seconds",
                format!("must be 1 to {MAX_TTL_SECONDS}"),
            ));
        }
        if config.statuses.is_empty() {
            return Err(ConfigError::new("statuses", "name at least one status"));
        }
        for (i, status) in config.statuses.iter().enumerate() {
            if !(200..=599).contains(status) || [206, 304].contains(status) {
                return Err(ConfigError::new(
                    format!("statuses[{i}]"),
                    format!(
                        "a status is 200 to 599 and a whole answer (not 206 or 304), not {status}"
                    ),
                ));
            }
        }
        if config.cache_authorized && !config.key.app && !config.key.user {
            return Err(ConfigError::new(
                "cache_authorized",
                "needs `key.app` or `key.user`: else one caller's answers would be served to others",
            ));
        }
        let query = config.key.query.clone().map(|mut names| {
            names.sort();
            names.dedup();
            names
        });
        let mut headers = Vec::with_capacity(config.key.headers.len());
        for (i, name) in config.key.headers.iter().enumerate() {
            let name = name.trim().to_ascii_lowercase();
            if name.is_empty() || name.starts_with(':') || !name.bytes().all(is_token_byte) {
                return Err(ConfigError::new(
                    format!("key.headers[{i}]"),
                    format!("`{name}` is not a header name"),
                ));
            }
            headers.push(name);
        }
        Ok(Self {
            name: rule_name(config.name.as_deref(), at),
            matcher,
            ttl_ms: config.ttl_seconds * 1000,
            query,
            headers,
            per_app: config.key.app,
            per_user: config.key.user,
            statuses: config.statuses.clone(),
            digest: CacheKey::of(&[format!("{config:?}").as_bytes()]).0,
            cache_authorized: config.cache_authorized,
            cache_set_cookie: config.cache_set_cookie,
        })
    }

    /// Whether a request may use the cache (`end_of_stream`: its headers
    /// end it).
    pub fn bypass(&self, method: &str, host: &dyn Host, end_of_stream: bool) -> Option<Bypass> {
        if method != "GET" && method != "HEAD" {
            return Some(Bypass::Method);
        }
        if !end_of_stream {
            return Some(Bypass::Body);
        }
        if host.request_header("range").is_some() {
            return Some(Bypass::Range);
        }
        if self.cache_authorized {
            return None;
        }
        let credentials = host.request_header("authorization").is_some()
            || host.request_header("cookie").is_some()
            || identity::app_key(host).is_some()
            || identity::user(host).is_some();
        credentials.then_some(Bypass::Credentials)
    }

    /// How long an answer may be kept, from its status and headers
    /// (`header`: a response header by lower-case name, every line of it
    /// joined with `,`).
    pub fn storable(
        &self,
        status: Option<u16>,
        header: &dyn Fn(&str) -> Option<String>,
    ) -> Result<u64, NotStored> {
        if !status.is_some_and(|status| self.statuses.contains(&status)) {
            return Err(NotStored::Status);
        }
        if !self.cache_set_cookie && header("set-cookie").is_some() {
            return Err(NotStored::SetCookie);
        }
        if let Some(vary) = header("vary") {
            let unread = vary.split(',').map(str::trim).any(|name| {
                !name.is_empty() && !self.headers.iter().any(|h| h.eq_ignore_ascii_case(name))
            });
            if unread {
                return Err(NotStored::Vary);
            }
        }
        let ttl_ms = match header("cache-control") {
            Some(value) => cache_control_ttl_ms(&value)?,
            None => None,
        };
        Ok(ttl_ms.map_or(self.ttl_ms, |ttl| ttl.min(self.ttl_ms)))
    }
}

/// What the backend's `Cache-Control` allows: `None` when it sets no age.
/// `s-maxage` (for shared caches like this one) wins over `max-age`.
fn cache_control_ttl_ms(value: &str) -> Result<Option<u64>, NotStored> {
    let mut max_age = None;
    let mut s_maxage = None;
    for directive in value.split(',') {
        let (name, argument) = match directive.split_once('=') {
            Some((name, argument)) => (name.trim(), Some(argument.trim().trim_matches('"'))),
            None => (directive.trim(), None),
        };
        let seconds = || argument.and_then(|a| a.parse::<u64>().ok());
        match name.to_ascii_lowercase().as_str() {
            "no-store" | "private" | "no-cache" => return Err(NotStored::CacheControl),
            "max-age" => max_age = seconds().or(Some(0)),
            "s-maxage" => s_maxage = seconds().or(Some(0)),
            _ => {}
        }
    }
    match s_maxage.or(max_age) {
        Some(0) => Err(NotStored::CacheControl),
        Some(seconds) => Ok(Some(seconds.saturating_mul(1000))),
        None => Ok(None),
    }
}

/// RFC 9110's token characters.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}
