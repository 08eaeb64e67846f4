//! The sinks' wire formats: how a batch of records becomes one HTTP request
//! each store documents.
//!
//! - `clickhouse`: `INSERT INTO <table> FORMAT JSONEachRow` over the HTTP
//!   interface, one JSON object per line; `time` in epoch seconds (reads
//!   into `DateTime`), unknown fields skipped by the server.
//! - `ndjson`: one JSON object per line to any HTTP endpoint.
//! - `elasticsearch`: the `_bulk` API (Elasticsearch and OpenSearch), a
//!   `create` action line before each record, `@timestamp` as the time.
//! - `loki`: the push API (`/loki/api/v1/push`), JSON streams of
//!   `[nanoseconds, line]` pairs, the record as the line.
//! - `kafka_rest`: Confluent REST Proxy v2, `POST /topics/<topic>` with
//!   `application/vnd.kafka.json.v2+json` records.
//! - `otlp`: OpenTelemetry logs over OTLP/HTTP with JSON encoding
//!   (`/v1/logs`), one log record per call.
//! - `kafka`: Kafka itself, through the native module's own idempotent
//!   producer: each record a message (the JSON record as the value, as
//!   `kafka_rest` writes it), not an HTTP request.

use crate::config::SinkConfig;
use crate::record::{write_json_str, Field, FieldValue, Layout, Record, TimeStyle};
use gateway_common::config::{is_header_name, ConfigError};
use gateway_common::kafka::{KafkaRecord, KafkaTarget};
use gateway_common::upstream::{Upstream, UpstreamFields, UpstreamKind};
use serde::Deserialize;
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Clickhouse,
    Ndjson,
    Elasticsearch,
    Loki,
    KafkaRest,
    Otlp,
    Kafka,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Clickhouse => "clickhouse",
            Format::Ndjson => "ndjson",
            Format::Elasticsearch => "elasticsearch",
            Format::Loki => "loki",
            Format::KafkaRest => "kafka_rest",
            Format::Otlp => "otlp",
            Format::Kafka => "kafka",
        }
    }
}

/// The sink as an upstream: each format has its path (ndjson's is
/// required), and a batch may take 5 s by default, an hour at most (a
/// sink's timeout was never bounded before; large batches to a slow
/// warehouse may need minutes).
const SINK: UpstreamKind = UpstreamKind {
    name: "the sink",
    default_path: None,
    default_timeout_ms: 5_000,
    max_timeout_ms: 3_600_000,
};

/// Where a sink's batches go.
#[derive(Debug, Clone)]
pub enum Destination {
    /// An Envoy cluster, called over HTTP; with every request header but
    /// the pseudo-headers, content type included.
    Http {
        upstream: Upstream,
        headers: Vec<(String, String)>,
    },
    /// Kafka, produced to by the native module itself.
    Kafka(KafkaTarget),
}

/// A compiled sink: where batches go and how they are written.
#[derive(Debug, Clone)]
pub struct Sink {
    pub format: Format,
    pub destination: Destination,
    index: String,
    key_field: Option<Field>,
    labels: Vec<(String, String)>,
    label_fields: Vec<Field>,
    service_name: String,
}

fn required<'c>(
    value: &'c Option<String>,
    field: &str,
    format: Format,
) -> Result<&'c str, ConfigError> {
    match value.as_deref() {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(ConfigError::new(
            field,
            format!("required for format `{}`", format.name()),
        )),
    }
}

fn field_named(name: &str, at: &str) -> Result<Field, ConfigError> {
    Field::from_name(name).ok_or_else(|| ConfigError::new(at, format!("unknown field `{name}`")))
}

/// Percent-encodes a value for a query string.
fn query_encode(text: &str) -> String {
    gateway_common::params::encode_component(text)
}

impl Sink {
    pub fn compile(config: &SinkConfig) -> Result<Self, ConfigError> {
        let format = config.format;
        let key_field = config
            .key_field
            .as_deref()
            .map(|name| field_named(name, "key_field"))
            .transpose()?;
        let mut label_fields = Vec::new();
        for (i, name) in config.label_fields.iter().enumerate() {
            label_fields.push(field_named(name, &format!("label_fields[{i}]"))?);
        }
        let destination = if format == Format::Kafka {
            Destination::Kafka(kafka_target(config)?)
        } else {
            http_destination(config)?
        };
        Ok(Self {
            format,
            destination,
            index: config.index.clone().unwrap_or_default(),
            key_field,
            labels: config
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            label_fields,
            service_name: config
                .service_name
                .clone()
                .unwrap_or_else(|| "envoy-gateway".to_string()),
        })
    }

    /// A batch as Kafka messages: the record (as `kafka_rest` writes it) as
    /// the value, `key_field` as the key.
    pub fn kafka_records(&self, layout: &Layout, records: &[Record]) -> Vec<KafkaRecord> {
        records
            .iter()
            .map(|record| {
                let mut value = Vec::with_capacity(512);
                layout.write_json(&mut value, record, TimeStyle::Rfc3339("time"));
                KafkaRecord {
                    key: self
                        .key_field
                        .map(|field| text_of(record, field).into_bytes()),
                    value,
                }
            })
            .collect()
    }

    /// How long a batch may take: the HTTP call's timeout, or Kafka's
    /// delivery timeout (retries included).
    pub fn timeout(&self) -> std::time::Duration {
        match &self.destination {
            Destination::Http { upstream, .. } => upstream.timeout,
            Destination::Kafka(target) => target.delivery_timeout,
        }
    }

    /// The request body for a batch.
    pub fn encode(&self, layout: &Layout, records: &[Record]) -> Vec<u8> {
        let mut out = Vec::with_capacity(records.len() * 512);
        match self.format {
            Format::Clickhouse => {
                for record in records {
                    layout.write_json(&mut out, record, TimeStyle::EpochSeconds);
                    out.push(b'\n');
                }
            }
            Format::Ndjson => {
                for record in records {
                    layout.write_json(&mut out, record, TimeStyle::Rfc3339("time"));
                    out.push(b'\n');
                }
            }
            Format::Elasticsearch => {
                let mut action = Vec::new();
                action.extend_from_slice(b"{\"create\":{\"_index\":");
                write_json_str(&mut action, &self.index);
                action.extend_from_slice(b",\"_id\":\"");
                for record in records {
                    // `create` with the record id: a resent record is refused
                    // as a conflict instead of stored twice.
                    out.extend_from_slice(&action);
                    out.extend_from_slice(record.record_id.as_str().as_bytes());
                    out.extend_from_slice(b"\"}}\n");
                    layout.write_json(&mut out, record, TimeStyle::Rfc3339("@timestamp"));
                    out.push(b'\n');
                }
            }
            Format::KafkaRest => {
                out.extend_from_slice(b"{\"records\":[");
                for (i, record) in records.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.push(b'{');
                    if let Some(field) = self.key_field {
                        out.extend_from_slice(b"\"key\":");
                        write_json_str(&mut out, &text_of(record, field));
                        out.push(b',');
                    }
                    out.extend_from_slice(b"\"value\":");
                    layout.write_json(&mut out, record, TimeStyle::Rfc3339("time"));
                    out.push(b'}');
                }
                out.extend_from_slice(b"]}");
            }
            Format::Loki => self.encode_loki(&mut out, layout, records),
            Format::Otlp => self.encode_otlp(&mut out, layout, records),
            // Never sent over HTTP: see `kafka_records`.
            Format::Kafka => {}
        }
        out
    }

    fn encode_loki(&self, out: &mut Vec<u8>, layout: &Layout, records: &[Record]) {
        // One stream per distinct label set, streams in order of first record.
        let mut streams: Vec<(Vec<String>, Vec<&Record>)> = Vec::new();
        for record in records {
            let values: Vec<String> = self
                .label_fields
                .iter()
                .map(|f| text_of(record, *f))
                .collect();
            match streams.iter_mut().find(|(v, _)| *v == values) {
                Some((_, members)) => members.push(record),
                None => streams.push((values, vec![record])),
            }
        }
        out.extend_from_slice(b"{\"streams\":[");
        let mut line = Vec::new();
        for (i, (values, members)) in streams.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"stream\":{");
            let labels = self
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .chain(
                    self.label_fields
                        .iter()
                        .zip(values)
                        .map(|(f, v)| (f.name(), v.as_str())),
                );
            for (j, (key, value)) in labels.enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                write_json_str(out, key);
                out.push(b':');
                write_json_str(out, value);
            }
            out.extend_from_slice(b"},\"values\":[");
            for (j, record) in members.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                line.clear();
                layout.write_json(&mut line, record, TimeStyle::Rfc3339("time"));
                let _ = write!(out, "[\"{}\",", nanos(record));
                write_json_str(out, std::str::from_utf8(&line).unwrap_or_default());
                out.push(b']');
            }
            out.extend_from_slice(b"]}");
        }
        out.extend_from_slice(b"]}");
    }

    fn encode_otlp(&self, out: &mut Vec<u8>, layout: &Layout, records: &[Record]) {
        out.extend_from_slice(
            b"{\"resourceLogs\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":",
        );
        write_json_str(out, &self.service_name);
        out.extend_from_slice(
            b"}}]},\"scopeLogs\":[{\"scope\":{\"name\":\"gateway.log_push\"},\"logRecords\":[",
        );
        for (i, record) in records.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let (severity, text) = match record.status {
                500.. => (17, "ERROR"),
                400..=499 => (13, "WARN"),
                0 => (13, "WARN"),
                _ => (9, "INFO"),
            };
            let time = nanos(record);
            let _ = write!(
                out,
                "{{\"timeUnixNano\":\"{time}\",\"observedTimeUnixNano\":\"{time}\",\"severityNumber\":{severity},\"severityText\":\"{text}\",\"body\":{{\"stringValue\":"
            );
            write_json_str(
                out,
                &format!("{} {} {}", record.method, record.path, record.status),
            );
            out.extend_from_slice(b"},\"attributes\":[");
            let mut first = true;
            let mut attribute = |out: &mut Vec<u8>, key: &str, value: FieldValue<'_>| {
                let (open, text) = match value {
                    FieldValue::Text(t) => ("{\"stringValue\":", t.to_string()),
                    FieldValue::Int(n) => ("{\"intValue\":", n.to_string()),
                    FieldValue::Absent => return,
                };
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(b"{\"key\":");
                write_json_str(out, key);
                out.extend_from_slice(b",\"value\":");
                out.extend_from_slice(open.as_bytes());
                write_json_str(out, &text);
                out.extend_from_slice(b"}}");
            };
            for field in layout.fields.iter() {
                if matches!(field, Field::Time | Field::TimestampMs) {
                    continue;
                }
                attribute(out, otel_name(field), record.value(field));
            }
            for (column, value) in layout.header_columns.iter().zip(&record.headers) {
                attribute(out, column, FieldValue::Text(value));
            }
            out.extend_from_slice(b"]}");
        }
        out.extend_from_slice(b"]}]}]}");
    }
}

fn nanos(record: &Record) -> u128 {
    u128::from(record.timestamp_ms) * 1_000_000
}

/// A sink called over HTTP: its cluster, path and headers.
fn http_destination(config: &SinkConfig) -> Result<Destination, ConfigError> {
    let format = config.format;
    for (field, given) in [
        ("brokers", !config.brokers.is_empty()),
        ("compression", config.compression.is_some()),
    ] {
        if given {
            return Err(ConfigError::new(field, "only for format `kafka`"));
        }
    }

    const NDJSON: &str = "application/x-ndjson";
    let (default_path, content_type) = match format {
        Format::Clickhouse => {
            let table = required(&config.table, "table", format)?;
            if !table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
            {
                return Err(ConfigError::new(
                    "table",
                    format!("`{table}` is not a table name"),
                ));
            }
            let path = format!(
                "/?query={}&input_format_skip_unknown_fields=1",
                query_encode(&format!("INSERT INTO {table} FORMAT JSONEachRow"))
            );
            (path, NDJSON)
        }
        Format::Ndjson => (required(&config.path, "path", format)?.to_string(), NDJSON),
        Format::Elasticsearch => {
            required(&config.index, "index", format)?;
            ("/_bulk".to_string(), NDJSON)
        }
        Format::Loki => ("/loki/api/v1/push".to_string(), "application/json"),
        Format::KafkaRest => {
            let topic = required(&config.topic, "topic", format)?;
            let path = format!("/topics/{}", query_encode(topic));
            (path, "application/vnd.kafka.json.v2+json")
        }
        Format::Otlp => ("/v1/logs".to_string(), "application/json"),
        Format::Kafka => {
            return Err(ConfigError::new(
                "format",
                "`kafka` produces to `brokers`, not over HTTP",
            ))
        }
    };
    let cluster = config.cluster.as_deref().ok_or_else(|| {
        ConfigError::new(
            "cluster",
            format!("required for format `{}`", format.name()),
        )
    })?;
    let upstream = Upstream::compile(
        UpstreamFields {
            cluster,
            authority: config.authority.as_deref(),
            path: Some(config.path.as_deref().unwrap_or(&default_path)),
            timeout_ms: config.timeout_ms,
        },
        SINK,
    )?;
    let mut headers = vec![("content-type".to_string(), content_type.to_string())];
    if format == Format::KafkaRest {
        headers.push(("accept".into(), "application/vnd.kafka.v2+json".into()));
    }
    for (name, value) in &config.headers {
        if !is_header_name(name) {
            return Err(ConfigError::new(
                "headers",
                format!("`{name}` is not a header name"),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(ConfigError::new(
                format!("headers.{name}"),
                "must not contain control characters",
            ));
        }
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        headers.push((name.to_ascii_lowercase(), value.clone()));
    }
    Ok(Destination::Http { upstream, headers })
}

/// A sink the native module produces to: brokers and a topic, no HTTP.
fn kafka_target(config: &SinkConfig) -> Result<KafkaTarget, ConfigError> {
    for (field, given) in [
        ("cluster", config.cluster.is_some()),
        ("path", config.path.is_some()),
        ("authority", config.authority.is_some()),
        ("headers", !config.headers.is_empty()),
        ("table", config.table.is_some()),
        ("index", config.index.is_some()),
        ("labels", !config.labels.is_empty()),
        ("label_fields", !config.label_fields.is_empty()),
        ("service_name", config.service_name.is_some()),
    ] {
        if given {
            return Err(ConfigError::new(
                field,
                "not for format `kafka`: it produces to `brokers` itself",
            ));
        }
    }
    let topic = required(&config.topic, "topic", config.format)?;
    KafkaTarget::compile(
        &config.brokers,
        topic,
        config.compression.unwrap_or_default(),
        config.timeout_ms,
    )
}

fn text_of(record: &Record, field: Field) -> String {
    match record.value(field) {
        FieldValue::Text(t) => t.to_string(),
        FieldValue::Int(n) => n.to_string(),
        FieldValue::Absent => String::new(),
    }
}

/// OpenTelemetry semantic-convention names where one exists.
fn otel_name(field: Field) -> &'static str {
    match field {
        Field::Method => "http.request.method",
        Field::Path => "url.path",
        Field::Query => "url.query",
        Field::Status => "http.response.status_code",
        Field::ClientIp => "client.address",
        Field::Host => "server.address",
        Field::UserAgent => "user_agent.original",
        Field::RecordId => "log.record.uid",
        other => other.name(),
    }
}

/// Records the sink refused inside a successful answer: Elasticsearch bulk
/// items with an `error` (but a 409 conflict, which means stored before),
/// Kafka REST offsets with an `error_code`, and the records the Kafka
/// producer answers it could not write after writing others (its answer
/// is their number).
pub fn rejected_in_response(format: Format, body: &[u8]) -> usize {
    let parsed = || serde_json::from_slice::<serde_json::Value>(body).ok();
    match format {
        Format::Elasticsearch => parsed()
            .filter(|v| v["errors"] == serde_json::Value::Bool(true))
            .and_then(|v| v["items"].as_array().cloned())
            .map_or(0, |items| {
                items
                    .iter()
                    .filter(|item| {
                        item.as_object()
                            .and_then(|o| o.values().next())
                            .is_some_and(|action| {
                                // 409: a document with this record id is stored
                                // already (an earlier attempt of this batch).
                                !action["error"].is_null() && action["status"] != 409
                            })
                    })
                    .count()
            }),
        Format::KafkaRest => parsed()
            .and_then(|v| v["offsets"].as_array().cloned())
            .map_or(0, |offsets| {
                offsets
                    .iter()
                    .filter(|o| !o["error_code"].is_null())
                    .count()
            }),
        Format::Kafka => std::str::from_utf8(body)
            .ok()
            .and_then(|count| count.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{FieldSet, RecordIds};
    use serde_json::{json, Value};

    fn sink(config: Value) -> Sink {
        let config: SinkConfig = serde_json::from_value(config).unwrap();
        Sink::compile(&config).unwrap()
    }

    fn layout() -> Layout {
        Layout {
            fields: FieldSet::of(&[
                Field::Time,
                Field::Api,
                Field::Method,
                Field::Path,
                Field::Status,
            ]),
            header_columns: vec!["header_x_tenant".into()],
        }
    }

    const FIRST_ID: &str = "00000000000000ab0000000000000000";
    const SECOND_ID: &str = "00000000000000ab0000000000000001";

    fn records() -> Vec<Record> {
        let ids = RecordIds::new(0xab);
        vec![
            Record {
                timestamp_ms: 1_795_435_200_123,
                record_id: ids.next(),
                api: "orders".into(),
                method: "GET".into(),
                path: "/orders/1".into(),
                status: 200,
                headers: vec!["t1".into()],
                ..Default::default()
            },
            Record {
                timestamp_ms: 1_795_435_200_456,
                record_id: ids.next(),
                api: "search".into(),
                method: "POST".into(),
                path: "/search".into(),
                status: 503,
                headers: vec!["t\"2".into()],
                ..Default::default()
            },
        ]
    }

    fn upstream(sink: &Sink) -> &Upstream {
        match &sink.destination {
            Destination::Http { upstream, .. } => upstream,
            Destination::Kafka(_) => panic!("a Kafka sink"),
        }
    }

    fn headers(sink: &Sink) -> &[(String, String)] {
        match &sink.destination {
            Destination::Http { headers, .. } => headers,
            Destination::Kafka(_) => panic!("a Kafka sink"),
        }
    }

    fn text(body: Vec<u8>) -> String {
        String::from_utf8(body).unwrap()
    }

    #[test]
    fn clickhouse_gets_an_insert_with_one_object_per_line() {
        let sink = sink(json!({"cluster": "ch", "format": "clickhouse", "table": "gw.calls"}));
        assert_eq!(
            upstream(&sink).path,
            "/?query=INSERT%20INTO%20gw.calls%20FORMAT%20JSONEachRow&input_format_skip_unknown_fields=1"
        );
        assert_eq!(
            text(sink.encode(&layout(), &records())),
            format!(
                "{{\"time\":1795435200,\"record_id\":\"{FIRST_ID}\",\"api\":\"orders\",\"method\":\"GET\",\"path\":\"/orders/1\",\"status\":200,\"header_x_tenant\":\"t1\"}}\n\
                 {{\"time\":1795435200,\"record_id\":\"{SECOND_ID}\",\"api\":\"search\",\"method\":\"POST\",\"path\":\"/search\",\"status\":503,\"header_x_tenant\":\"t\\\"2\"}}\n"
            )
        );
        assert_eq!(upstream(&sink).authority, "ch");
    }

    #[test]
    fn elasticsearch_gets_a_bulk_body_of_create_actions() {
        let sink = sink(json!({"cluster": "es", "format": "elasticsearch", "index": "gw-calls"}));
        assert_eq!(upstream(&sink).path, "/_bulk");
        let body = text(sink.encode(&layout(), &records()));
        let lines: Vec<&str> = body.split_terminator('\n').collect();
        assert!(body.ends_with('\n'), "the bulk API needs a final newline");
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            format!(r#"{{"create":{{"_index":"gw-calls","_id":"{FIRST_ID}"}}}}"#)
        );
        assert_eq!(
            lines[2],
            format!(r#"{{"create":{{"_index":"gw-calls","_id":"{SECOND_ID}"}}}}"#)
        );
        let doc: Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(doc["@timestamp"], "2026-11-23T12:00:00.123Z");
        assert_eq!(doc["api"], "orders");
        assert_eq!(
            headers(&sink)[0],
            ("content-type".into(), "application/x-ndjson".into())
        );
    }

    #[test]
    fn loki_gets_streams_of_nanosecond_lines_grouped_by_labels() {
        let sink = sink(json!({"cluster": "loki", "format": "loki",
                               "labels": {"job": "gateway"}, "label_fields": ["api"]}));
        let body: Value = serde_json::from_slice(&sink.encode(&layout(), &records())).unwrap();
        let streams = body["streams"].as_array().unwrap();
        assert_eq!(streams.len(), 2);
        assert_eq!(
            streams[0]["stream"],
            json!({"job": "gateway", "api": "orders"})
        );
        let value = &streams[0]["values"][0];
        assert_eq!(value[0], "1795435200123000000");
        let line: Value = serde_json::from_str(value[1].as_str().unwrap()).unwrap();
        assert_eq!(line["path"], "/orders/1");
        assert_eq!(upstream(&sink).path, "/loki/api/v1/push");
    }

    #[test]
    fn kafka_rest_gets_json_records_with_an_optional_key() {
        let sink = sink(
            json!({"cluster": "kafka", "format": "kafka_rest", "topic": "gw calls", "key_field": "api"}),
        );
        assert_eq!(upstream(&sink).path, "/topics/gw%20calls");
        assert!(headers(&sink).contains(&(
            "content-type".into(),
            "application/vnd.kafka.json.v2+json".into()
        )));
        let body: Value = serde_json::from_slice(&sink.encode(&layout(), &records())).unwrap();
        assert_eq!(body["records"][1]["key"], "search");
        assert_eq!(body["records"][1]["value"]["status"], 503);
    }

    #[test]
    fn kafka_gets_one_message_per_record_with_the_rest_proxy_s_value() {
        let kafka = sink(json!({
            "format": "kafka", "brokers": ["127.0.0.1:9092"], "topic": "gw.calls",
            "key_field": "api", "compression": "gzip", "timeout_ms": 30000
        }));
        let Destination::Kafka(target) = &kafka.destination else {
            panic!("a Kafka sink")
        };
        assert_eq!(target.topic, "gw.calls");
        assert_eq!(target.compression, gateway_common::kafka::Compression::Gzip);
        assert_eq!(kafka.timeout(), std::time::Duration::from_secs(30));
        let messages = kafka.kafka_records(&layout(), &records());
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1].key.as_deref(), Some(&b"search"[..]));
        // The value is the record as `kafka_rest` sends it.
        let rest = sink_of_rest();
        let keyless_config = json!({"format": "kafka", "brokers": ["k:9092"], "topic": "t"});
        let body: Value = serde_json::from_slice(&rest.encode(&layout(), &records())).unwrap();
        let value: Value = serde_json::from_slice(&messages[1].value).unwrap();
        assert_eq!(value, body["records"][1]["value"]);
        // Without `key_field`, no key: the producer spreads batches.
        let keyless = sink(keyless_config);
        assert!(keyless.kafka_records(&layout(), &records())[0]
            .key
            .is_none());
    }

    fn sink_of_rest() -> Sink {
        sink(json!({"cluster": "k", "format": "kafka_rest", "topic": "t", "key_field": "api"}))
    }

    #[test]
    fn a_kafka_sink_takes_brokers_and_no_http_fields_and_http_sinks_no_brokers() {
        for (config, error) in [
            (
                json!({"format": "kafka", "topic": "t"}),
                "brokers: 1 to 16 brokers (host:port)",
            ),
            (
                json!({"format": "kafka", "brokers": ["k:1"]}),
                "topic: required for format `kafka`",
            ),
            (
                json!({"format": "kafka", "brokers": ["k:1"], "topic": "t", "cluster": "c"}),
                "cluster: not for format `kafka`: it produces to `brokers` itself",
            ),
            (
                json!({"format": "kafka", "brokers": ["k:1"], "topic": "t", "headers": {"x": "y"}}),
                "headers: not for format `kafka`: it produces to `brokers` itself",
            ),
            (
                json!({"format": "kafka", "brokers": ["k"], "topic": "t"}),
                "brokers[0]: `k` is not host:port",
            ),
            (
                json!({"format": "kafka", "brokers": ["k:1"], "topic": "a b"}),
                "topic: `a b` is not a Kafka topic name (1 to 249 letters, digits and `._-`)",
            ),
            (
                json!({"cluster": "c", "format": "ndjson", "path": "/", "brokers": ["k:1"]}),
                "brokers: only for format `kafka`",
            ),
            (
                json!({"format": "ndjson", "path": "/"}),
                "cluster: required for format `ndjson`",
            ),
        ] {
            let config: SinkConfig = serde_json::from_value(config).unwrap();
            assert_eq!(Sink::compile(&config).unwrap_err().to_string(), error);
        }
    }

    #[test]
    fn otlp_gets_log_records_with_typed_attributes() {
        let sink = sink(json!({"cluster": "otel", "format": "otlp", "service_name": "edge"}));
        let body: Value = serde_json::from_slice(&sink.encode(&layout(), &records())).unwrap();
        let resource = &body["resourceLogs"][0];
        assert_eq!(
            resource["resource"]["attributes"][0],
            json!({"key": "service.name", "value": {"stringValue": "edge"}})
        );
        let log = &resource["scopeLogs"][0]["logRecords"][1];
        assert_eq!(log["timeUnixNano"], "1795435200456000000");
        assert_eq!(log["severityNumber"], 17);
        assert_eq!(log["body"]["stringValue"], "POST /search 503");
        let attributes = log["attributes"].as_array().unwrap();
        assert!(attributes
            .contains(&json!({"key": "http.response.status_code", "value": {"intValue": "503"}})));
        assert!(attributes
            .contains(&json!({"key": "header_x_tenant", "value": {"stringValue": "t\"2"}})));
        assert!(attributes
            .contains(&json!({"key": "log.record.uid", "value": {"stringValue": SECOND_ID}})));
    }

    #[test]
    fn sink_headers_override_the_defaults() {
        let sink = sink(
            json!({"cluster": "c", "format": "ndjson", "path": "/ingest",
                               "headers": {"Content-Type": "application/json", "X-Api-Key": "k"}}),
        );
        assert_eq!(
            headers(&sink),
            vec![
                ("content-type".to_string(), "application/json".to_string()),
                ("x-api-key".to_string(), "k".to_string())
            ]
        );
    }

    #[test]
    fn partial_failures_inside_a_success_are_counted() {
        let es = br#"{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":400,"error":{"type":"mapper_parsing_exception"}}}]}"#;
        assert_eq!(rejected_in_response(Format::Elasticsearch, es), 1);
        assert_eq!(
            rejected_in_response(Format::Elasticsearch, br#"{"errors":false,"items":[]}"#),
            0
        );
        let resent = br#"{"errors":true,"items":[{"create":{"status":409,"error":{"type":"version_conflict_engine_exception"}}},{"create":{"status":201}}]}"#;
        assert_eq!(
            rejected_in_response(Format::Elasticsearch, resent),
            0,
            "a conflict on the record id is a record stored by an earlier attempt"
        );
        let kafka = br#"{"offsets":[{"partition":0,"offset":1,"error_code":null},{"partition":null,"offset":null,"error_code":40403,"error":"x"}]}"#;
        assert_eq!(rejected_in_response(Format::KafkaRest, kafka), 1);
        assert_eq!(rejected_in_response(Format::Clickhouse, b"garbage"), 0);
    }
}
