//! Kafka as a sink the native module produces to on a connection of its
//! own: where the brokers are, the topic, and how a batch is written. The
//! producer itself is the native module's (`filters/native-host`); the Wasm
//! modules reach Kafka through a REST proxy over an Envoy cluster.

use crate::config::{check_host_port, ConfigError};
use serde::Deserialize;
use std::time::Duration;

/// The most bootstrap brokers a sink may list.
const MAX_BROKERS: usize = 16;
/// Kafka's own bound on a topic name.
const MAX_TOPIC: usize = 249;
/// How long a batch may take to be acknowledged, retries included, by
/// default (Kafka's producers wait 120 s) and at most.
const DEFAULT_DELIVERY_TIMEOUT_MS: u64 = 120_000;
const MAX_DELIVERY_TIMEOUT_MS: u64 = 3_600_000;

/// How a batch's records are compressed on the wire and in the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

/// A checked Kafka sink: one producer per process serves every
/// configuration naming the same one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KafkaTarget {
    /// `host:port` of the brokers asked for the cluster's metadata, in turn.
    pub brokers: Vec<String>,
    pub topic: String,
    pub compression: Compression,
    /// How long a batch may take to be acknowledged, retries included;
    /// past it the batch is answered as failed.
    pub delivery_timeout: Duration,
}

/// One record of a batch: its key (which picks its partition) and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

impl KafkaTarget {
    /// Checks the sink's fields (errors name them as in the sink's section).
    pub fn compile(
        brokers: &[String],
        topic: &str,
        compression: Compression,
        delivery_timeout_ms: Option<u64>,
    ) -> Result<Self, ConfigError> {
        if cfg!(target_arch = "wasm32") {
            return Err(ConfigError::new(
                "brokers".to_string(),
                "the Wasm modules cannot open connections of their own: send to a Kafka REST proxy \
                 with format `kafka_rest` (`kafka` is the native module's)",
            ));
        }
        if brokers.is_empty() || brokers.len() > MAX_BROKERS {
            return Err(ConfigError::new(
                "brokers".to_string(),
                format!("1 to {MAX_BROKERS} brokers (host:port)"),
            ));
        }
        for (i, broker) in brokers.iter().enumerate() {
            check_host_port(&format!("brokers[{i}]"), broker)?;
        }
        let topic_ok = (1..=MAX_TOPIC).contains(&topic.len())
            && topic != "."
            && topic != ".."
            && topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !topic_ok {
            return Err(ConfigError::new(
                "topic",
                format!("`{topic}` is not a Kafka topic name (1 to {MAX_TOPIC} letters, digits and `._-`)"),
            ));
        }
        let timeout_ms = delivery_timeout_ms.unwrap_or(DEFAULT_DELIVERY_TIMEOUT_MS);
        if !(1_000..=MAX_DELIVERY_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(ConfigError::new(
                "timeout_ms",
                format!("1000 to {MAX_DELIVERY_TIMEOUT_MS}: how long a batch may take to be acknowledged, retries included"),
            ));
        }
        Ok(Self {
            brokers: brokers.to_vec(),
            topic: topic.to_string(),
            compression,
            delivery_timeout: Duration::from_millis(timeout_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(
        brokers: &[&str],
        topic: &str,
        timeout_ms: Option<u64>,
    ) -> Result<KafkaTarget, String> {
        let brokers: Vec<String> = brokers.iter().map(|b| b.to_string()).collect();
        KafkaTarget::compile(&brokers, topic, Compression::Gzip, timeout_ms)
            .map_err(|error| error.within("sink").to_string())
    }

    #[test]
    fn a_sink_names_brokers_a_topic_and_a_delivery_timeout() {
        let target =
            compile(&["kafka-1:9092", "[::1]:9092"], "gateway.calls-v1", None).expect("valid");
        assert_eq!(target.delivery_timeout, Duration::from_secs(120));
        assert_eq!(target.compression, Compression::Gzip);
        for (brokers, topic, timeout, field) in [
            (&[][..], "t", None, "sink.brokers"),
            (&["kafka"][..], "t", None, "sink.brokers[0]"),
            (&["k:1", "k:0"][..], "t", None, "sink.brokers[1]"),
            (&["k:1"][..], "", None, "sink.topic"),
            (&["k:1"][..], "a/b", None, "sink.topic"),
            (&["k:1"][..], "..", None, "sink.topic"),
            (&["k:1"][..], "t", Some(999), "sink.timeout_ms"),
        ] {
            let error = compile(brokers, topic, timeout).expect_err(topic);
            assert!(error.starts_with(field), "{error} names {field}");
        }
        let many: Vec<&str> = vec!["k:1"; MAX_BROKERS + 1];
        assert!(compile(&many, "t", None).is_err());
    }
}
