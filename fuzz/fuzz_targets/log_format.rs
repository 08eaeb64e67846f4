//! log-push's record formatting in every sink format, with any text in
//! every field (the fuzzer's records stand for what clients sent: paths,
//! user agents, header values). Every body is the JSON its sink parses, and
//! the line formats give each record back with its text exact; the sinks'
//! answers are read without a panic.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use log_push::config::LogPush;
use log_push::format::{rejected_in_response, Format};
use log_push::record::{Record, RecordIds};
use serde_json::Value;
use std::sync::OnceLock;

const SINKS: [(&str, Format); 7] = [
    (
        r#"{"format": "clickhouse", "table": "gateway_calls"}"#,
        Format::Clickhouse,
    ),
    (r#"{"format": "ndjson", "path": "/ingest"}"#, Format::Ndjson),
    (
        r#"{"format": "elasticsearch", "index": "gateway"}"#,
        Format::Elasticsearch,
    ),
    (
        r#"{"format": "loki", "labels": {"job": "gw"}, "label_fields": ["api", "status"]}"#,
        Format::Loki,
    ),
    (
        r#"{"format": "kafka_rest", "topic": "calls", "key_field": "app_key"}"#,
        Format::KafkaRest,
    ),
    (r#"{"format": "otlp", "service_name": "gw"}"#, Format::Otlp),
    (
        r#"{"format": "kafka", "topic": "calls", "key_field": "user_agent"}"#,
        Format::Kafka,
    ),
];

fn policies() -> &'static Vec<(LogPush, Format)> {
    static POLICIES: OnceLock<Vec<(LogPush, Format)>> = OnceLock::new();
    POLICIES.get_or_init(|| {
        SINKS
            .iter()
            .map(|(sink, format)| {
                let mut sink: Value = serde_json::from_str(sink).expect("a sink");
                if *format == Format::Kafka {
                    sink["brokers"] = serde_json::json!(["127.0.0.1:9092"]);
                } else {
                    sink["cluster"] = "log_sink".into();
                }
                let document = serde_json::json!({ "sink": sink, "headers": ["x-tenant"] });
                let policy =
                    gateway_fuzz::config(log_push::compile_config(document.to_string().as_bytes()));
                (policy, *format)
            })
            .collect()
    })
}

#[derive(Debug, Arbitrary)]
struct Fields {
    timestamp_ms: u64,
    texts: [String; 16],
    status: u16,
    numbers: [u64; 3],
    upstream_latency_ms: Option<u64>,
    tenant: String,
}

impl Fields {
    fn record(self) -> Record {
        let [request_id, api, app_key, app_name, client_ip, method, host, path, query, error_code, upstream_cluster, upstream_host, user_agent, response_flags, stage, user] =
            self.texts;
        Record {
            // Within what the time formats can show (year 9999).
            timestamp_ms: self.timestamp_ms % 253_402_300_799_000,
            record_id: Default::default(),
            request_id,
            api,
            app_key,
            app_name,
            client_ip,
            method,
            host,
            path,
            query,
            status: self.status,
            error_code,
            latency_ms: self.numbers[0],
            upstream_latency_ms: self.upstream_latency_ms,
            request_bytes: self.numbers[1],
            response_bytes: self.numbers[2],
            upstream_cluster,
            upstream_host,
            user_agent,
            response_flags,
            stage,
            user,
            headers: vec![self.tenant],
            backend_status: Some(self.status).filter(|status| status % 2 == 1),
            backend_error_code: String::new(),
            threat: "sql".into(),
            threat_place: "query".into(),
            threat_fingerprint: "s&sos".into(),
        }
    }
}

fn json(bytes: &[u8], what: &str) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "{what} is not JSON ({e}): {}",
            String::from_utf8_lossy(bytes)
        )
    })
}

fuzz_target!(|input: (Vec<Fields>, Vec<u8>)| {
    let (fields, answer) = input;
    let ids = RecordIds::new(0x5eed);
    let records: Vec<Record> = fields
        .into_iter()
        .take(8)
        .map(|f| Record {
            record_id: ids.next(),
            ..f.record()
        })
        .collect();
    for (policy, format) in policies() {
        if *format == Format::Kafka {
            // One message per record: its key the field, its value the record.
            let messages = policy.sink.kafka_records(&policy.layout, &records);
            assert_eq!(messages.len(), records.len());
            for (message, record) in messages.iter().zip(&records) {
                assert_eq!(message.key.as_deref(), Some(record.user_agent.as_bytes()));
                let value = json(&message.value, "a message");
                assert_eq!(value["record_id"].as_str(), Some(record.record_id.as_str()));
            }
            let _ = rejected_in_response(*format, &answer);
            continue;
        }
        let body = policy.sink.encode(&policy.layout, &records);
        match format {
            Format::Clickhouse | Format::Ndjson => {
                let lines: Vec<&[u8]> = body
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .collect();
                assert_eq!(lines.len(), records.len());
                for (line, record) in lines.iter().zip(&records) {
                    let row = json(line, "a row");
                    assert_eq!(row["record_id"].as_str(), Some(record.record_id.as_str()));
                    assert_eq!(row["request_id"].as_str(), Some(record.request_id.as_str()));
                    assert_eq!(row["user_agent"].as_str(), Some(record.user_agent.as_str()));
                    assert_eq!(
                        row["header_x_tenant"].as_str(),
                        Some(record.headers[0].as_str())
                    );
                }
            }
            Format::Elasticsearch => {
                let lines: Vec<&[u8]> = body
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .collect();
                assert_eq!(lines.len(), 2 * records.len());
                for (pair, record) in lines.chunks(2).zip(&records) {
                    let action = json(pair[0], "a bulk action");
                    assert_eq!(
                        action["create"]["_id"].as_str(),
                        Some(record.record_id.as_str())
                    );
                    json(pair[1], "a bulk document");
                }
            }
            Format::Loki | Format::KafkaRest | Format::Otlp | Format::Kafka => {
                if !records.is_empty() {
                    json(&body, "the body");
                }
            }
        }
        let _ = rejected_in_response(*format, &answer);
    }
});
