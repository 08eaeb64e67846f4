//! The log-push configuration and its compiled form.

use crate::format::{Format, Sink};
use crate::mask::{MaskConfig, Masking};
use crate::record::{
    header_column, Field, FieldSet, Layout, CREDENTIAL_HEADERS, CREDENTIAL_QUERY_PARAMETERS,
};
use crate::shipper::Limits;
use gateway_common::client_ip::{ClientAddressConfig, ClientAddressResolver};
use gateway_common::config::{is_header_name, ConfigError};
use gateway_common::matching::{
    any_by_route_name, compile_rule_match, first_match, rule_path, MatchConfig, Matcher,
    RequestAttrs,
};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogPushConfig {
    pub sink: SinkConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub queue: QueueConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    /// Share of requests recorded, 0.0 to 1.0 (default 1.0).
    #[serde(default)]
    pub sample_rate: Option<f64>,
    /// Record every response with status >= 400 whatever the sampling (default true).
    #[serde(default)]
    pub always_log_errors: Option<bool>,
    /// The fields to record (default: all but `query`).
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// Extra request headers to record, as `header_<name>` fields.
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub redact: RedactConfig,
    /// Values masked before a record leaves Envoy.
    #[serde(default)]
    pub mask: MaskConfig,
    #[serde(default)]
    pub client_address: ClientAddressConfig,
    /// Names APIs (and may sample them differently); first match wins.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// The Envoy cluster the batches are sent to (every format but `kafka`).
    #[serde(default)]
    pub cluster: Option<String>,
    pub format: Format,
    /// `kafka`: the brokers asked for the topic's metadata (`host:port`).
    #[serde(default)]
    pub brokers: Vec<String>,
    /// `kafka`: how record batches are compressed (`none` or `gzip`).
    #[serde(default)]
    pub compression: Option<gateway_common::kafka::Compression>,
    /// The request path; each format has a default.
    #[serde(default)]
    pub path: Option<String>,
    /// The `:authority` sent (default: the cluster name).
    #[serde(default)]
    pub authority: Option<String>,
    /// Extra request headers, e.g. credentials of the sink.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// ClickHouse: the table (`db.table`).
    #[serde(default)]
    pub table: Option<String>,
    /// Elasticsearch/OpenSearch: the index or data stream.
    #[serde(default)]
    pub index: Option<String>,
    /// Kafka (and its REST Proxy): the topic.
    #[serde(default)]
    pub topic: Option<String>,
    /// Kafka (and its REST Proxy): the record field used as the message key.
    #[serde(default)]
    pub key_field: Option<String>,
    /// Loki: static stream labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Loki: record fields that become stream labels too (keep them few).
    #[serde(default)]
    pub label_fields: Vec<String>,
    /// OTLP: the `service.name` resource attribute.
    #[serde(default)]
    pub service_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    #[serde(default)]
    pub max_records: Option<usize>,
    #[serde(default)]
    pub max_bytes: Option<usize>,
    #[serde(default)]
    pub flush_interval_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    #[serde(default)]
    pub max_records: Option<usize>,
    #[serde(default)]
    pub max_bytes: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default)]
    pub max_retries: Option<u32>,
    #[serde(default)]
    pub initial_backoff_ms: Option<u64>,
    #[serde(default)]
    pub max_backoff_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactConfig {
    /// More header names whose values are never recorded.
    #[serde(default)]
    pub headers: Vec<String>,
    /// More query parameter names whose values are redacted.
    #[serde(default)]
    pub query: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    #[serde(default)]
    pub sample_rate: Option<f64>,
}

#[derive(Debug)]
pub struct Rule {
    pub name: String,
    matcher: Matcher,
    pub sample_rate: Option<f64>,
}

/// The compiled configuration.
#[derive(Debug)]
pub struct LogPush {
    pub sink: Sink,
    pub limits: Limits,
    pub tick_ms: u64,
    pub sample_rate: f64,
    pub always_log_errors: bool,
    pub layout: Layout,
    /// Extra headers to record (lower case), with whether each is redacted.
    pub headers: Vec<(String, bool)>,
    pub redacted_query: Vec<String>,
    pub masking: Masking,
    pub client_address: ClientAddressResolver,
    rules: Vec<Rule>,
    uses_route_name: bool,
}

/// How often each worker looks at its queue. Size-triggered flushes wait
/// at most this long.
const MAX_TICK_MS: u64 = 100;

fn rate(value: Option<f64>, at: &str) -> Result<Option<f64>, ConfigError> {
    match value {
        Some(r) if !(0.0..=1.0).contains(&r) => {
            Err(ConfigError::new(at, "must be between 0.0 and 1.0"))
        }
        other => Ok(other),
    }
}

fn positive<T: PartialOrd + Default + Copy>(
    value: Option<T>,
    default: T,
    at: &str,
) -> Result<T, ConfigError> {
    match value {
        Some(v) if v <= T::default() => Err(ConfigError::new(at, "must be greater than 0")),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

impl LogPush {
    pub fn compile(config: &LogPushConfig) -> Result<Self, ConfigError> {
        let sink = Sink::compile(&config.sink).map_err(|e| e.within("sink"))?;
        let batch = &config.batch;
        let queue = &config.queue;
        let retry = &config.retry;
        let limits = Limits {
            batch_records: positive(batch.max_records, 500, "batch.max_records")?,
            batch_bytes: positive(batch.max_bytes, 1 << 20, "batch.max_bytes")?,
            flush_interval_ms: positive(batch.flush_interval_ms, 1_000, "batch.flush_interval_ms")?,
            queue_records: positive(queue.max_records, 10_000, "queue.max_records")?,
            queue_bytes: positive(queue.max_bytes, 8 << 20, "queue.max_bytes")?,
            max_retries: retry.max_retries.unwrap_or(3),
            initial_backoff_ms: positive(
                retry.initial_backoff_ms,
                500,
                "retry.initial_backoff_ms",
            )?,
            max_backoff_ms: positive(retry.max_backoff_ms, 30_000, "retry.max_backoff_ms")?,
        };
        if limits.queue_records < limits.batch_records {
            return Err(ConfigError::new(
                "queue.max_records",
                format!(
                    "must be at least batch.max_records ({})",
                    limits.batch_records
                ),
            ));
        }
        let fields = match &config.fields {
            None => FieldSet::default_set(),
            Some(names) => {
                let mut fields = Vec::new();
                for (i, name) in names.iter().enumerate() {
                    fields.push(Field::from_name(name).ok_or_else(|| {
                        ConfigError::new(format!("fields[{i}]"), format!("unknown field `{name}`"))
                    })?);
                }
                FieldSet::of(&fields)
            }
        };
        let mut redacted_headers: Vec<String> =
            CREDENTIAL_HEADERS.iter().map(|h| h.to_string()).collect();
        for (i, name) in config.redact.headers.iter().enumerate() {
            if !is_header_name(name) {
                return Err(ConfigError::new(
                    format!("redact.headers[{i}]"),
                    format!("`{name}` is not a header name"),
                ));
            }
            redacted_headers.push(name.to_ascii_lowercase());
        }
        let mut headers = Vec::new();
        for (i, name) in config.headers.iter().enumerate() {
            if !is_header_name(name) {
                return Err(ConfigError::new(
                    format!("headers[{i}]"),
                    format!("`{name}` is not a header name"),
                ));
            }
            let lower = name.to_ascii_lowercase();
            let redacted = redacted_headers.contains(&lower);
            headers.push((lower, redacted));
        }
        let recorded: Vec<String> = headers.iter().map(|(h, _)| h.clone()).collect();
        let masking = Masking::compile(&config.mask, &recorded)?;
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, rule) in config.rules.iter().enumerate() {
            let at = rule_path(i);
            rules.push(Rule {
                name: rule.name.clone(),
                matcher: compile_rule_match(&rule.matcher).map_err(|e| e.within(&at))?,
                sample_rate: rate(rule.sample_rate, &format!("{at}.sample_rate"))?,
            });
        }
        Ok(Self {
            tick_ms: limits.flush_interval_ms.clamp(10, MAX_TICK_MS),
            limits,
            sample_rate: rate(config.sample_rate, "sample_rate")?.unwrap_or(1.0),
            always_log_errors: config.always_log_errors.unwrap_or(true),
            layout: Layout {
                fields,
                header_columns: headers.iter().map(|(h, _)| header_column(h)).collect(),
            },
            headers,
            redacted_query: CREDENTIAL_QUERY_PARAMETERS
                .iter()
                .map(|q| q.to_string())
                .chain(config.redact.query.iter().cloned())
                .collect(),
            masking,
            client_address: ClientAddressResolver::new(&config.client_address),
            uses_route_name: any_by_route_name(&rules, |r| &r.matcher),
            rules,
            sink,
        })
    }

    pub fn timeout_ms(&self) -> u64 {
        u64::try_from(self.sink.timeout().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn uses_route_name(&self) -> bool {
        self.uses_route_name
    }

    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// The rule naming this request, if any.
    pub fn rule_for(&self, request: &RequestAttrs<'_>) -> Option<&Rule> {
        first_match(&self.rules, |r| &r.matcher, request).map(|(rule, _)| rule)
    }

    /// Whether a call with this outcome is recorded.
    pub fn keeps(&self, request_id: &str, status: u16, rule: Option<&Rule>) -> bool {
        if self.always_log_errors && status >= 400 {
            return true;
        }
        let rate = rule.and_then(|r| r.sample_rate).unwrap_or(self.sample_rate);
        crate::record::sampled(request_id, rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_common::config::parse_json;
    use serde_json::json;

    fn compile(config: serde_json::Value) -> Result<LogPush, String> {
        parse_json::<LogPushConfig>(config.to_string().as_bytes())
            .and_then(|c| LogPush::compile(&c))
            .map_err(|e| e.to_string())
    }

    fn sink() -> serde_json::Value {
        json!({"cluster": "clickhouse", "format": "clickhouse", "table": "gw.calls"})
    }

    #[test]
    fn defaults_are_documented_values() {
        let push = compile(json!({"sink": sink()})).unwrap();
        assert_eq!(push.limits.batch_records, 500);
        assert_eq!(push.limits.queue_records, 10_000);
        assert_eq!(push.limits.max_retries, 3);
        assert_eq!(push.sample_rate, 1.0);
        assert!(push.always_log_errors);
        assert_eq!(push.tick_ms, 100);
        assert_eq!(push.timeout_ms(), 5_000);
    }

    #[test]
    fn credentials_are_redacted_even_when_listed_as_extra_headers() {
        let push = compile(json!({
            "sink": sink(),
            "headers": ["X-Tenant", "Authorization", "X-Secret"],
            "redact": {"headers": ["x-secret"]}
        }))
        .unwrap();
        assert_eq!(
            push.headers,
            vec![
                ("x-tenant".to_string(), false),
                ("authorization".to_string(), true),
                ("x-secret".to_string(), true)
            ]
        );
        assert_eq!(
            push.layout.header_columns,
            ["header_x_tenant", "header_authorization", "header_x_secret"]
        );
    }

    #[test]
    fn errors_are_kept_whatever_the_sampling() {
        let push = compile(json!({
            "sink": sink(),
            "sample_rate": 0.0,
            "rules": [{"name": "health", "match": {"path": {"exact": "/healthz"}}, "sample_rate": 0.0},
                      {"name": "orders", "match": {"path": {"prefix": "/orders"}}, "sample_rate": 1.0}]
        }))
        .unwrap();
        let rule = |path: &str| {
            push.rule_for(&RequestAttrs {
                path,
                ..Default::default()
            })
        };
        assert!(!push.keeps("r", 200, rule("/healthz")));
        assert!(push.keeps("r", 503, rule("/healthz")));
        assert!(push.keeps("r", 200, rule("/orders/1")));
        assert!(!push.keeps("r", 200, rule("/other")));
        assert_eq!(rule("/orders/1").map(|r| r.name.as_str()), Some("orders"));
    }

    #[test]
    fn bad_configs_are_refused_with_the_field_named() {
        let cases = [
            (
                json!({"sink": {"cluster": "c", "format": "clickhouse"}}),
                "sink.table: required for format `clickhouse`",
            ),
            (
                json!({"sink": {"cluster": "c", "format": "clickhouse", "table": "x; DROP"}}),
                "sink.table: `x; DROP` is not a table name",
            ),
            (
                json!({"sink": {"cluster": "", "format": "ndjson", "path": "/"}}),
                "sink.cluster: name the Envoy cluster of the sink (printable characters, no spaces)",
            ),
            (
                json!({"sink": {"cluster": "c", "format": "ndjson"}}),
                "sink.path: required for format `ndjson`",
            ),
            (
                json!({"sink": {"cluster": "c", "format": "ndjson", "path": "logs"}}),
                "sink.path: must start with `/`",
            ),
            (
                json!({"sink": {"cluster": "c", "format": "elasticsearch"}}),
                "sink.index: required for format `elasticsearch`",
            ),
            (
                json!({"sink": {"cluster": "c", "format": "kafka_rest"}}),
                "sink.topic: required for format `kafka_rest`",
            ),
            (
                json!({"sink": {"cluster": "c", "format": "kafka_rest", "topic": "t", "key_field": "nope"}}),
                "sink.key_field: unknown field `nope`",
            ),
            (
                json!({"sink": {"cluster": "c", "format": "loki", "label_fields": ["latency"]}}),
                "sink.label_fields[0]: unknown field `latency`",
            ),
            (
                json!({"sink": {"cluster": "c", "format": "syslog"}}),
                "sink.format: unknown variant `syslog`",
            ),
            (
                json!({"sink": {"cluster": "c", "format": "otlp", "headers": {"bad name": "x"}}}),
                "sink.headers: `bad name` is not a header name",
            ),
            (
                json!({"sink": sink(), "sample_rate": 1.5}),
                "sample_rate: must be between 0.0 and 1.0",
            ),
            (
                json!({"sink": sink(), "fields": ["status", "password"]}),
                "fields[1]: unknown field `password`",
            ),
            (
                json!({"sink": sink(), "batch": {"max_records": 0}}),
                "batch.max_records: must be greater than 0",
            ),
            (
                json!({"sink": sink(), "batch": {"max_records": 50}, "queue": {"max_records": 10}}),
                "queue.max_records: must be at least batch.max_records (50)",
            ),
            (
                json!({"sink": sink(), "headers": ["x tenant"]}),
                "headers[0]: `x tenant` is not a header name",
            ),
            (
                json!({"sink": sink(), "rules": [{"name": "a", "sample_rate": -1}]}),
                "rules[0].sample_rate: must be between 0.0 and 1.0",
            ),
            (json!({"sink": sink(), "bogus": 1}), "unknown field `bogus`"),
        ];
        for (config, expected) in cases {
            let error = compile(config.clone()).err().unwrap_or_default();
            assert!(
                error.contains(expected),
                "{config}\n got: {error}\nwant: {expected}"
            );
        }
    }
}
