//! The JSON configuration and its compilation into [`CircuitBreaker`].
//! Every error names the field it is about.

use crate::breaker::{Settings, MAX_BUCKETS, MAX_PROBES};
use crate::degraded::{DegradedResponse, FallbackRoute, WhenOpen};
use crate::fleet::{Fleet, DEFAULT_SYNC_MS, MAX_SYNC_MS, MIN_SYNC_MS};
use crate::policy::{CircuitBreaker, Rule, StatusSet, KEY_PREFIX};
use gateway_common::config::{is_http_token, ConfigError, OnFailure};
use gateway_common::fleet::{FailureMode, Store, StoreConfig};
use gateway_common::matching::{compile_rule_match, rule_path, MatchConfig};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// Longest window, open duration and probe timeout: one day.
pub const MAX_DURATION_MS: u64 = 86_400_000;
/// Default cap of a growing open duration: five minutes.
pub const DEFAULT_MAX_OPEN_MS: u64 = 300_000;
const MAX_RULE_NAME_LEN: usize = 64;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// One breaker per rule; the first rule whose `match` holds applies.
    pub rules: Vec<RuleConfig>,
    /// What a request gets when shared data fails: `allow` (through,
    /// unprotected, counted in `store_errors`; the default) or `deny`
    /// (500 `X500ER`). Formerly `store_failure_mode`, still accepted.
    #[serde(default = "OnFailure::allow", alias = "store_failure_mode")]
    pub failure_mode: OnFailure,
    /// Share every rule's breaker with the fleet through the fleet store.
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    pub store: StoreConfig,
    /// While the store does not answer: `local` (this Envoy's own breaker,
    /// the default), `allow` or `deny` (the rule's `when_open` answer).
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// How often each worker sends its calls' outcomes and reads the
    /// fleet's state (default 100 ms).
    #[serde(default)]
    pub sync_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Names the breaker in logs, metrics and shared data.
    pub name: String,
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    /// Upstream statuses that count as failures; default `["5xx"]`.
    #[serde(default)]
    pub failure_statuses: Option<Vec<StatusPattern>>,
    /// A call slower than this (to the response headers) is slow.
    #[serde(default)]
    pub slow_call_ms: Option<u64>,
    #[serde(default)]
    pub window: WindowConfig,
    /// Absent: `{"min_calls": 20, "failure_rate_percent": 50}`.
    #[serde(default)]
    pub trip: Option<TripConfig>,
    #[serde(default)]
    pub open: OpenConfig,
    #[serde(default)]
    pub half_open: HalfOpenConfig,
    #[serde(default)]
    pub when_open: WhenOpenConfig,
    /// With the filter's `fleet`: `false` keeps this breaker per Envoy.
    #[serde(default)]
    pub fleet: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowConfig {
    pub duration_ms: u64,
    pub buckets: u32,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            duration_ms: 10_000,
            buckets: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TripConfig {
    #[serde(default = "default_min_calls")]
    pub min_calls: u32,
    #[serde(default)]
    pub failure_rate_percent: Option<u32>,
    #[serde(default)]
    pub slow_call_rate_percent: Option<u32>,
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
}

fn default_min_calls() -> u32 {
    20
}

impl TripConfig {
    /// The conditions of a rule without a `trip` block.
    fn recommended() -> Self {
        Self {
            min_calls: default_min_calls(),
            failure_rate_percent: Some(50),
            slow_call_rate_percent: None,
            consecutive_failures: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenConfig {
    pub duration_ms: u64,
    pub multiplier: f64,
    pub max_duration_ms: Option<u64>,
}

impl Default for OpenConfig {
    fn default() -> Self {
        Self {
            duration_ms: 5_000,
            multiplier: 1.0,
            max_duration_ms: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HalfOpenConfig {
    pub probes: u32,
    pub timeout_ms: u64,
}

impl Default for HalfOpenConfig {
    fn default() -> Self {
        Self {
            probes: 3,
            timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WhenOpenConfig {
    /// Answer the client directly.
    Respond(RespondConfig),
    /// Mark the request with a header and let the route config send it elsewhere.
    Fallback(FallbackConfig),
}

impl Default for WhenOpenConfig {
    fn default() -> Self {
        Self::Respond(RespondConfig::default())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RespondConfig {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    /// Replaces the shared JSON error body.
    pub body: Option<String>,
    pub content_type: Option<String>,
    pub retry_after: bool,
}

impl Default for RespondConfig {
    fn default() -> Self {
        Self {
            status: 503,
            headers: BTreeMap::new(),
            body: None,
            content_type: None,
            retry_after: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FallbackConfig {
    pub header: String,
    pub value: String,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        Self {
            header: "x-gw-circuit".into(),
            value: "open".into(),
        }
    }
}

/// One entry of `failure_statuses`: `503`, `"503"`, `"5xx"` or `"500-504"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusPattern {
    pub first: u16,
    pub last: u16,
}

impl StatusPattern {
    const EXPECTED: &'static str =
        "a status code (100-599), a class such as `5xx` or a range such as `500-504`";

    fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let code = |s: &str| {
            s.parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c) && s.len() == 3)
        };
        if let Some(class) = text.strip_suffix("xx").or_else(|| text.strip_suffix("XX")) {
            let digit = class.parse::<u16>().ok().filter(|d| (1..=5).contains(d))?;
            return (class.len() == 1).then_some(Self {
                first: digit * 100,
                last: digit * 100 + 99,
            });
        }
        if let Some((first, last)) = text.split_once('-') {
            let (first, last) = (code(first.trim())?, code(last.trim())?);
            return (first <= last).then_some(Self { first, last });
        }
        code(text).map(|c| Self { first: c, last: c })
    }
}

impl<'de> Deserialize<'de> for StatusPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PatternVisitor;

        impl Visitor<'_> for PatternVisitor {
            type Value = StatusPattern;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(StatusPattern::EXPECTED)
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<StatusPattern, E> {
                u16::try_from(value)
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .map(|c| StatusPattern { first: c, last: c })
                    .ok_or_else(|| {
                        E::custom(format!("`{value}` is not {}", StatusPattern::EXPECTED))
                    })
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<StatusPattern, E> {
                Err(E::custom(format!(
                    "`{value}` is not {}",
                    StatusPattern::EXPECTED
                )))
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<StatusPattern, E> {
                StatusPattern::parse(value).ok_or_else(|| {
                    E::custom(format!("`{value}` is not {}", StatusPattern::EXPECTED))
                })
            }
        }

        deserializer.deserialize_any(PatternVisitor)
    }
}

/// Compiles a parsed configuration; the result is immutable and shared by
/// every request.
pub fn compile(config: &CircuitBreakerConfig) -> Result<CircuitBreaker, ConfigError> {
    if config.rules.is_empty() {
        return Err(ConfigError::new(
            "rules",
            "at least one rule is needed; a breaker without rules protects nothing",
        ));
    }
    let fleet = config
        .fleet
        .as_ref()
        .map(compile_fleet)
        .transpose()
        .map_err(|err| err.within("fleet"))?;
    let mut rules: Vec<Rule> = Vec::with_capacity(config.rules.len());
    for (index, rule) in config.rules.iter().enumerate() {
        let at = rule_path(index);
        let mut compiled = compile_rule(rule).map_err(|err| err.within(&at))?;
        match (&fleet, rule.fleet) {
            (Some(fleet), None | Some(true)) => compiled.fleet_key = Some(fleet.key(&compiled)),
            (None, Some(true)) => {
                return Err(ConfigError::new(
                    format!("{at}.fleet"),
                    "needs the filter's `fleet` object, which names the fleet store",
                ))
            }
            _ => {}
        }
        if let Some(first) = rules.iter().position(|r| r.name == compiled.name) {
            return Err(ConfigError::new(
                format!("{at}.name"),
                format!(
                    "`{}` is already the name of rules[{first}]; names must be unique",
                    compiled.name
                ),
            ));
        }
        rules.push(compiled);
    }
    Ok(CircuitBreaker::new(rules, config.failure_mode, fleet))
}

fn compile_fleet(config: &FleetConfig) -> Result<Fleet, ConfigError> {
    let store = Store::compile(&config.store).map_err(|e| e.within("store"))?;
    let sync_ms = config.sync_ms.unwrap_or(DEFAULT_SYNC_MS);
    if !(MIN_SYNC_MS..=MAX_SYNC_MS).contains(&sync_ms) {
        return Err(ConfigError::new(
            "sync_ms",
            format!("must be between {MIN_SYNC_MS} and {MAX_SYNC_MS}"),
        ));
    }
    Ok(Fleet::new(store, config.failure_mode, sync_ms))
}

fn compile_rule(rule: &RuleConfig) -> Result<Rule, ConfigError> {
    check_rule_name(&rule.name)?;
    let matcher = compile_rule_match(&rule.matcher)?;
    let failure_statuses = match &rule.failure_statuses {
        Some(patterns) => StatusSet::from_patterns(patterns),
        None => StatusSet::from_patterns(&[StatusPattern {
            first: 500,
            last: 599,
        }]),
    };
    if rule.slow_call_ms == Some(0) {
        return Err(ConfigError::new("slow_call_ms", "must be at least 1"));
    }
    let (bucket_ms, buckets) = compile_window(&rule.window).map_err(|e| e.within("window"))?;
    let trip = rule.trip.clone().unwrap_or_else(TripConfig::recommended);
    check_trip(&trip, rule.slow_call_ms).map_err(|e| e.within("trip"))?;
    let (open_ms, max_open_ms) = compile_open(&rule.open).map_err(|e| e.within("open"))?;
    let probes = u16::try_from(rule.half_open.probes)
        .ok()
        .filter(|p| (1..=MAX_PROBES).contains(p))
        .ok_or_else(|| {
            ConfigError::new(
                "half_open.probes",
                format!("must be between 1 and {MAX_PROBES}"),
            )
        })?;
    check_duration("half_open.timeout_ms", rule.half_open.timeout_ms)?;
    let when_open = compile_when_open(&rule.when_open).map_err(|e| e.within("when_open"))?;
    Ok(Rule {
        name: rule.name.clone(),
        key: format!("{KEY_PREFIX}{}", rule.name),
        fleet_key: None,
        view_key: format!("{KEY_PREFIX}{}.fleet", rule.name),
        matcher,
        settings: Settings {
            bucket_ms,
            buckets,
            min_calls: trip.min_calls,
            failure_rate_percent: trip.failure_rate_percent,
            slow_call_rate_percent: trip.slow_call_rate_percent,
            consecutive_failures: trip.consecutive_failures,
            open_ms,
            open_multiplier: rule.open.multiplier,
            max_open_ms,
            probes,
            probe_timeout_ms: rule.half_open.timeout_ms,
        },
        failure_statuses,
        slow_call_ms: rule.slow_call_ms,
        when_open,
    })
}

fn check_rule_name(name: &str) -> Result<(), ConfigError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_RULE_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(ConfigError::new(
            "name",
            format!(
                "`{name}` is not a valid rule name (1-{MAX_RULE_NAME_LEN} letters, digits, `_` or `-`; it names metrics)"
            ),
        ))
    }
}

fn check_duration(path: &str, ms: u64) -> Result<(), ConfigError> {
    if (1..=MAX_DURATION_MS).contains(&ms) {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            format!("must be between 1 and {MAX_DURATION_MS} ms"),
        ))
    }
}

fn compile_window(window: &WindowConfig) -> Result<(u32, u8), ConfigError> {
    let buckets = u8::try_from(window.buckets)
        .ok()
        .filter(|b| (1..=MAX_BUCKETS as u8).contains(b))
        .ok_or_else(|| {
            ConfigError::new("buckets", format!("must be between 1 and {MAX_BUCKETS}"))
        })?;
    check_duration("duration_ms", window.duration_ms)?;
    if window.duration_ms % u64::from(buckets) != 0 {
        return Err(ConfigError::new(
            "duration_ms",
            format!(
                "{} is not a multiple of window.buckets ({buckets})",
                window.duration_ms
            ),
        ));
    }
    let bucket_ms = u32::try_from(window.duration_ms / u64::from(buckets))
        .map_err(|_| ConfigError::new("duration_ms", "too long"))?;
    Ok((bucket_ms, buckets))
}

fn check_trip(trip: &TripConfig, slow_call_ms: Option<u64>) -> Result<(), ConfigError> {
    if trip.min_calls == 0 {
        return Err(ConfigError::new("min_calls", "must be at least 1"));
    }
    for (field, value) in [
        ("failure_rate_percent", trip.failure_rate_percent),
        ("slow_call_rate_percent", trip.slow_call_rate_percent),
    ] {
        if value.is_some_and(|p| !(1..=100).contains(&p)) {
            return Err(ConfigError::new(field, "must be between 1 and 100"));
        }
    }
    if trip.slow_call_rate_percent.is_some() && slow_call_ms.is_none() {
        return Err(ConfigError::new(
            "slow_call_rate_percent",
            "needs the rule's slow_call_ms, the duration above which a call is slow",
        ));
    }
    if trip.consecutive_failures == Some(0) {
        return Err(ConfigError::new(
            "consecutive_failures",
            "must be at least 1",
        ));
    }
    if trip.failure_rate_percent.is_none()
        && trip.slow_call_rate_percent.is_none()
        && trip.consecutive_failures.is_none()
    {
        return Err(ConfigError::new(
            "",
            "no trip condition: set failure_rate_percent, slow_call_rate_percent or consecutive_failures",
        ));
    }
    Ok(())
}

fn compile_open(open: &OpenConfig) -> Result<(u64, u64), ConfigError> {
    check_duration("duration_ms", open.duration_ms)?;
    if !(open.multiplier.is_finite() && (1.0..=100.0).contains(&open.multiplier)) {
        return Err(ConfigError::new("multiplier", "must be between 1 and 100"));
    }
    let max = match open.max_duration_ms {
        Some(max) => {
            check_duration("max_duration_ms", max)?;
            if max < open.duration_ms {
                return Err(ConfigError::new(
                    "max_duration_ms",
                    format!("must be at least open.duration_ms ({})", open.duration_ms),
                ));
            }
            max
        }
        None if open.multiplier > 1.0 => open.duration_ms.max(DEFAULT_MAX_OPEN_MS),
        None => open.duration_ms,
    };
    Ok((open.duration_ms, max))
}

fn compile_when_open(config: &WhenOpenConfig) -> Result<WhenOpen, ConfigError> {
    match config {
        WhenOpenConfig::Respond(respond) => compile_respond(respond)
            .map(WhenOpen::Respond)
            .map_err(|e| e.within("respond")),
        WhenOpenConfig::Fallback(fallback) => compile_fallback(fallback)
            .map(WhenOpen::Fallback)
            .map_err(|e| e.within("fallback")),
    }
}

/// Response headers the filter writes itself.
const RESERVED_RESPONSE_HEADERS: [(&str, &str); 8] = [
    ("content-type", "set it with content_type"),
    ("content-length", "Envoy sets it"),
    ("transfer-encoding", "Envoy sets it"),
    ("connection", "Envoy sets it"),
    (
        "retry-after",
        "the filter sets it (turn it off with retry_after: false)",
    ),
    ("x-ca-error-code", "the filter sets it"),
    ("x-ca-error-message", "the filter sets it"),
    ("x-ca-request-id", "the filter sets it"),
];

fn compile_respond(respond: &RespondConfig) -> Result<DegradedResponse, ConfigError> {
    if !(200..=599).contains(&respond.status) {
        return Err(ConfigError::new("status", "must be between 200 and 599"));
    }
    let mut headers = Vec::with_capacity(respond.headers.len());
    for (name, value) in &respond.headers {
        let at = format!("headers.{name}");
        let lower = name.to_ascii_lowercase();
        if !is_http_token(&lower) {
            return Err(ConfigError::new(at, "is not a valid header name"));
        }
        if let Some((_, why)) = RESERVED_RESPONSE_HEADERS.iter().find(|(n, _)| *n == lower) {
            return Err(ConfigError::new(at, format!("cannot be configured: {why}")));
        }
        if !is_header_value(value) {
            return Err(ConfigError::new(
                at,
                "the value must not contain control characters",
            ));
        }
        headers.push((lower, value.clone()));
    }
    let body = match (&respond.body, &respond.content_type) {
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "content_type",
                "only applies with body (the shared error body is JSON)",
            ))
        }
        (Some(body), content_type) => {
            let content_type = content_type
                .clone()
                .unwrap_or_else(|| "text/plain; charset=utf-8".into());
            if content_type.is_empty() || !is_header_value(&content_type) {
                return Err(ConfigError::new(
                    "content_type",
                    "must be a non-empty header value without control characters",
                ));
            }
            Some((body.clone().into_bytes(), content_type))
        }
        (None, None) => None,
    };
    Ok(DegradedResponse::new(
        respond.status,
        headers,
        body,
        respond.retry_after,
    ))
}

fn compile_fallback(fallback: &FallbackConfig) -> Result<FallbackRoute, ConfigError> {
    let header = fallback.header.to_ascii_lowercase();
    if !is_http_token(&header) {
        return Err(ConfigError::new(
            "header",
            format!("`{}` is not a valid header name", fallback.header),
        ));
    }
    if matches!(
        header.as_str(),
        "host" | "content-length" | "transfer-encoding"
    ) {
        return Err(ConfigError::new(
            "header",
            format!("`{header}` cannot mark a request for fallback"),
        ));
    }
    if fallback.value.is_empty() || !is_header_value(&fallback.value) {
        return Err(ConfigError::new(
            "value",
            "must be a non-empty header value without control characters",
        ));
    }
    Ok(FallbackRoute {
        header,
        value: fallback.value.clone(),
    })
}

fn is_header_value(value: &str) -> bool {
    !value.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_common::config::parse_json;

    fn compile_json(json: &str) -> Result<CircuitBreaker, ConfigError> {
        compile(&parse_json::<CircuitBreakerConfig>(json.as_bytes())?)
    }

    fn error(json: &str) -> String {
        match compile_json(json) {
            Ok(_) => panic!("accepted: {json}"),
            Err(err) => err.to_string(),
        }
    }

    fn rule_with(fields: &str) -> String {
        format!(r#"{{"rules":[{{"name":"api",{fields}}}]}}"#)
    }

    #[test]
    fn a_minimal_rule_gets_the_documented_defaults() {
        let breaker = compile_json(r#"{"rules":[{"name":"orders"}]}"#).unwrap();
        let rule = &breaker.rules()[0];
        assert_eq!(
            rule.settings,
            Settings {
                bucket_ms: 1000,
                buckets: 10,
                min_calls: 20,
                failure_rate_percent: Some(50),
                slow_call_rate_percent: None,
                consecutive_failures: None,
                open_ms: 5000,
                open_multiplier: 1.0,
                max_open_ms: 5000,
                probes: 3,
                probe_timeout_ms: 30_000,
            }
        );
        assert_eq!(rule.slow_call_ms, None);
        assert!(rule.failure_statuses.contains(500) && rule.failure_statuses.contains(599));
        assert!(!rule.failure_statuses.contains(499) && !rule.failure_statuses.contains(200));
        assert!(matches!(rule.when_open, WhenOpen::Respond(_)));
        assert_eq!(breaker.failure_mode(), OnFailure::Allow);
        assert!(breaker.fallback_headers().is_empty());
    }

    #[test]
    fn a_growing_open_duration_is_capped_at_five_minutes_by_default() {
        let breaker =
            compile_json(&rule_with(r#""open":{"duration_ms":1000,"multiplier":2}"#)).unwrap();
        assert_eq!(breaker.rules()[0].settings.max_open_ms, 300_000);
        let long = compile_json(&rule_with(
            r#""open":{"duration_ms":600000,"multiplier":2}"#,
        ))
        .unwrap();
        assert_eq!(long.rules()[0].settings.max_open_ms, 600_000);
    }

    #[test]
    fn failure_statuses_accept_codes_classes_and_ranges() {
        let breaker = compile_json(&rule_with(
            r#""failure_statuses":[429,"502","503-504","4XX"]"#,
        ))
        .unwrap();
        let statuses = &breaker.rules()[0].failure_statuses;
        for code in [429, 502, 503, 504, 400, 404, 499] {
            assert!(statuses.contains(code), "{code}");
        }
        for code in [500, 501, 505, 200, 399] {
            assert!(!statuses.contains(code), "{code}");
        }
        let none = compile_json(&rule_with(r#""failure_statuses":[]"#)).unwrap();
        assert!(!none.rules()[0].failure_statuses.contains(503));
    }

    #[test]
    fn a_trip_block_means_exactly_the_conditions_written() {
        let breaker = compile_json(&rule_with(r#""trip":{"consecutive_failures":5}"#)).unwrap();
        let settings = &breaker.rules()[0].settings;
        assert_eq!(settings.consecutive_failures, Some(5));
        assert_eq!(settings.failure_rate_percent, None);
        assert_eq!(settings.min_calls, 20);
    }

    #[test]
    fn fallback_headers_are_collected_once_each() {
        let breaker = compile_json(
            r#"{"rules":[
                {"name":"a","when_open":{"fallback":{}}},
                {"name":"b","when_open":{"fallback":{"header":"X-GW-Circuit","value":"b"}}},
                {"name":"c","when_open":{"fallback":{"header":"x-other"}}}
            ]}"#,
        )
        .unwrap();
        assert_eq!(breaker.fallback_headers(), ["x-gw-circuit", "x-other"]);
    }

    #[test]
    fn malformed_configs_are_refused_with_the_field_named() {
        let cases = [
            (r#"{"rules":[]}"#.to_string(), "rules: at least one rule is needed; a breaker without rules protects nothing"),
            (r#"{}"#.to_string(), "missing field `rules`"),
            (r#"{"rules":[{}]}"#.to_string(), "rules[0]: missing field `name`"),
            (r#"{"rules":[{"name":"a b"}]}"#.to_string(), "rules[0].name: `a b` is not a valid rule name (1-64 letters, digits, `_` or `-`; it names metrics)"),
            (r#"{"rules":[{"name":"x"},{"name":"x"}]}"#.to_string(), "rules[1].name: `x` is already the name of rules[0]; names must be unique"),
            (r#"{"rules":[{"name":"x","windw":{}}]}"#.to_string(), "rules[0].windw: unknown field `windw`"),
            (r#"{"rules":[{"name":"x"}],"failure_mode":"maybe"}"#.to_string(), "failure_mode: unknown variant `maybe`, expected `allow` or `deny`"),
            (rule_with(r#""match":{"path":{"prefix":"x"}}"#), "rules[0].match.path.prefix: `x` must start with `/`"),
            (rule_with(r#""failure_statuses":["5xx","6xx"]"#), "rules[0].failure_statuses[1]: `6xx` is not a status code (100-599), a class such as `5xx` or a range such as `500-504`"),
            (rule_with(r#""failure_statuses":[700]"#), "rules[0].failure_statuses[0]: `700` is not a status code"),
            (rule_with(r#""failure_statuses":["504-500"]"#), "rules[0].failure_statuses[0]: `504-500` is not a status code"),
            (rule_with(r#""failure_statuses":[-1]"#), "rules[0].failure_statuses[0]: `-1` is not a status code"),
            (rule_with(r#""failure_statuses":[true]"#), "rules[0].failure_statuses[0]: invalid type: boolean `true`, expected a status code (100-599)"),
            (rule_with(r#""slow_call_ms":0"#), "rules[0].slow_call_ms: must be at least 1"),
            (rule_with(r#""window":{"buckets":0}"#), "rules[0].window.buckets: must be between 1 and 60"),
            (rule_with(r#""window":{"buckets":61,"duration_ms":61000}"#), "rules[0].window.buckets: must be between 1 and 60"),
            (rule_with(r#""window":{"duration_ms":10001}"#), "rules[0].window.duration_ms: 10001 is not a multiple of window.buckets (10)"),
            (rule_with(r#""window":{"duration_ms":0}"#), "rules[0].window.duration_ms: must be between 1 and 86400000 ms"),
            (rule_with(r#""trip":{}"#), "rules[0].trip: no trip condition: set failure_rate_percent, slow_call_rate_percent or consecutive_failures"),
            (rule_with(r#""trip":{"failure_rate_percent":0}"#), "rules[0].trip.failure_rate_percent: must be between 1 and 100"),
            (rule_with(r#""trip":{"failure_rate_percent":101}"#), "rules[0].trip.failure_rate_percent: must be between 1 and 100"),
            (rule_with(r#""trip":{"slow_call_rate_percent":50}"#), "rules[0].trip.slow_call_rate_percent: needs the rule's slow_call_ms, the duration above which a call is slow"),
            (rule_with(r#""trip":{"min_calls":0,"consecutive_failures":1}"#), "rules[0].trip.min_calls: must be at least 1"),
            (rule_with(r#""trip":{"consecutive_failures":0}"#), "rules[0].trip.consecutive_failures: must be at least 1"),
            (rule_with(r#""trip":{"failure_rate_percent":50.5}"#), "rules[0].trip.failure_rate_percent: invalid type: floating point `50.5`, expected u32"),
            (rule_with(r#""open":{"duration_ms":0}"#), "rules[0].open.duration_ms: must be between 1 and 86400000 ms"),
            (rule_with(r#""open":{"multiplier":0.5}"#), "rules[0].open.multiplier: must be between 1 and 100"),
            (rule_with(r#""open":{"duration_ms":5000,"max_duration_ms":1000}"#), "rules[0].open.max_duration_ms: must be at least open.duration_ms (5000)"),
            (rule_with(r#""half_open":{"probes":0}"#), "rules[0].half_open.probes: must be between 1 and 1000"),
            (rule_with(r#""half_open":{"probes":1001}"#), "rules[0].half_open.probes: must be between 1 and 1000"),
            (rule_with(r#""half_open":{"timeout_ms":0}"#), "rules[0].half_open.timeout_ms: must be between 1 and 86400000 ms"),
            (rule_with(r#""when_open":{"redirect":{}}"#), "rules[0].when_open: unknown variant `redirect`, expected `respond` or `fallback`"),
            (rule_with(r#""when_open":{"respond":{"status":99}}"#), "rules[0].when_open.respond.status: must be between 200 and 599"),
            (rule_with(r#""when_open":{"respond":{"stauts":503}}"#), "rules[0].when_open.respond.stauts: unknown field `stauts`"),
            (rule_with(r#""when_open":{"respond":{"headers":{"bad header":"x"}}}"#), "rules[0].when_open.respond.headers.bad header: is not a valid header name"),
            (rule_with(r#""when_open":{"respond":{"headers":{"x-a":"1\r\nx-b: 2"}}}"#), "rules[0].when_open.respond.headers.x-a: the value must not contain control characters"),
            (rule_with(r#""when_open":{"respond":{"headers":{"Content-Type":"text/html"}}}"#), "rules[0].when_open.respond.headers.Content-Type: cannot be configured: set it with content_type"),
            (rule_with(r#""when_open":{"respond":{"headers":{"retry-after":"5"}}}"#), "rules[0].when_open.respond.headers.retry-after: cannot be configured: the filter sets it (turn it off with retry_after: false)"),
            (rule_with(r#""when_open":{"respond":{"content_type":"text/html"}}"#), "rules[0].when_open.respond.content_type: only applies with body (the shared error body is JSON)"),
            (rule_with(r#""when_open":{"fallback":{"header":":authority"}}"#), "rules[0].when_open.fallback.header: `:authority` is not a valid header name"),
            (rule_with(r#""when_open":{"fallback":{"header":"host"}}"#), "rules[0].when_open.fallback.header: `host` cannot mark a request for fallback"),
            (rule_with(r#""when_open":{"fallback":{"value":""}}"#), "rules[0].when_open.fallback.value: must be a non-empty header value without control characters"),
        ];
        for (json, expected) in cases {
            let error = error(&json);
            assert!(
                error.starts_with(expected),
                "{json}\n  got: {error}\n want: {expected}"
            );
        }
    }
}
