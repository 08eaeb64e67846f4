//! log-push's part in one request, written against the stream seam: what
//! the record needs of the request is read as the request arrives (a later
//! policy may rewrite it), the upstream's latency on the response, and the
//! record is built when the stream is over and queued on the worker's
//! shipper, which the host's adapter sends in batches from its timer.

use crate::config::LogPush;
use crate::record::{self, redact_query, response_flag_names, Record, RecordIds, REDACTED};
use crate::shipper::Shipper;
use crate::FILTER_NAME;
use gateway_common::host::{now_ms, route_name, Host, RequestFacts, RequestLine};
use gateway_common::identity::{self, Identity};
use gateway_common::metrics::{Counter, DefineMetrics, Gauge};
use gateway_common::stream::{PolicySteps, Stream, Telemetry, Verdict};
use gateway_common::sync::lock;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

/// The counters and gauges, defined once per configuration.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    pub records_queued: Counter,
    pub records_sent: Counter,
    pub records_retried: Counter,
    pub records_rejected: Counter,
    pub records_sampled_out: Counter,
    pub dropped_queue_full: Counter,
    pub dropped_sink_failed: Counter,
    pub batches_sent: Counter,
    pub batches_failed: Counter,
    pub queue_records: Gauge,
    pub queue_bytes: Gauge,
}

impl Metrics {
    pub fn define(host: &mut dyn DefineMetrics) -> Self {
        let mut counter = |name| host.define_counter(FILTER_NAME, name);
        let records_queued = counter("records.queued");
        let records_sent = counter("records.sent");
        let records_retried = counter("records.retried");
        let records_rejected = counter("records.rejected_by_sink");
        let records_sampled_out = counter("records.sampled_out");
        let dropped_queue_full = counter("records.dropped.queue_full");
        let dropped_sink_failed = counter("records.dropped.sink_failed");
        let batches_sent = counter("batches.sent");
        let batches_failed = counter("batches.failed");
        Self {
            records_queued,
            records_sent,
            records_retried,
            records_rejected,
            records_sampled_out,
            dropped_queue_full,
            dropped_sink_failed,
            batches_sent,
            batches_failed,
            queue_records: host.define_gauge(FILTER_NAME, "queue.records"),
            queue_bytes: host.define_gauge(FILTER_NAME, "queue.bytes"),
        }
    }
}

/// A worker's records on their way to the sink (in the native module one
/// for every worker, which the main thread's root sends).
pub struct Worker {
    pub push: Arc<LogPush>,
    pub record_ids: RecordIds,
    pub shipper: Mutex<Shipper>,
    pub metrics: Metrics,
    /// The queue's size last reported to the gauges.
    pub reported: Mutex<(usize, usize)>,
    /// The token of the batch on its way to the sink.
    pub in_flight: Mutex<Option<u32>>,
    pub sink_failing: AtomicBool,
}

impl Worker {
    pub fn new(push: LogPush, metrics: Metrics, record_prefix: u64, now_ms: u64) -> Self {
        Self {
            record_ids: RecordIds::new(record_prefix),
            shipper: Mutex::new(Shipper::new(push.limits, now_ms)),
            push: Arc::new(push),
            metrics,
            reported: Mutex::new((0, 0)),
            in_flight: Mutex::new(None),
            sink_failing: AtomicBool::new(false),
        }
    }

    /// Queues a record (dropping the oldest when the queue is full).
    pub fn push(&self, telemetry: &mut dyn Telemetry, record: Record) {
        let dropped = lock(&self.shipper).push(record);
        telemetry.increment(self.metrics.records_queued, 1);
        telemetry.increment(self.metrics.dropped_queue_full, dropped as u64);
    }

    /// Moves the queue gauges by what changed since the last report.
    pub fn report_queue(&self, telemetry: &mut dyn Telemetry) {
        let (records, bytes) = lock(&self.shipper).held();
        let (old_records, old_bytes) =
            std::mem::replace(&mut *lock(&self.reported), (records, bytes));
        telemetry.add_to_gauge(
            self.metrics.queue_records,
            records as i64 - old_records as i64,
        );
        telemetry.add_to_gauge(self.metrics.queue_bytes, bytes as i64 - old_bytes as i64);
    }

    /// The token of the batch on its way to the sink.
    pub fn in_flight(&self) -> Option<u32> {
        *lock(&self.in_flight)
    }
}

/// What a record needs of the request, read as it arrives.
struct SeenRequest {
    line: Rc<RequestLine>,
    request_id: String,
    user_agent: String,
    stage: String,
    headers: Vec<String>,
}

impl SeenRequest {
    fn read(host: &dyn Host, push: &LogPush) -> Self {
        let header = |name: &str| host.request_header(name).unwrap_or_default();
        Self {
            line: RequestLine::read(host),
            request_id: header("x-request-id"),
            user_agent: if push.layout.fields.contains(record::Field::UserAgent) {
                header("user-agent")
            } else {
                String::new()
            },
            stage: if push.layout.fields.contains(record::Field::Stage) {
                record::stage(host.request_header("x-ca-stage").as_deref())
            } else {
                String::new()
            },
            headers: push
                .headers
                .iter()
                .map(|(name, redacted)| match host.request_header(name) {
                    Some(_) if *redacted => REDACTED.to_string(),
                    Some(value) => value,
                    None => String::new(),
                })
                .collect(),
        }
    }
}

fn property_int(host: &dyn Host, path: &[&str]) -> Option<i64> {
    let bytes = host.property(path)?;
    Some(i64::from_le_bytes(bytes.get(..8)?.try_into().ok()?))
}

fn property_text(host: &dyn Host, path: &[&str]) -> String {
    host.property(path)
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default()
}

/// The status the client got: the response's `:status` (a local reply has
/// one too), else Envoy's `response.code` (0 when no response was sent).
/// The status sent: the `:status` header, else Envoy's response code (a
/// stream reset before any response).
fn status_sent(stream: &dyn Stream) -> u16 {
    gateway_common::stream::response_status(stream)
        .or_else(|| property_int(stream, &["response", "code"]).and_then(|c| u16::try_from(c).ok()))
        .unwrap_or(0)
}

fn upstream_service_time(stream: &dyn Stream) -> Option<u64> {
    stream
        .response_header("x-envoy-upstream-service-time")
        .and_then(|v| v.trim().parse().ok())
}

pub struct LogPushSteps {
    worker: Arc<Worker>,
    request: Option<SeenRequest>,
    upstream_latency_ms: Option<u64>,
}

impl LogPushSteps {
    pub fn new(worker: Arc<Worker>) -> Self {
        Self {
            worker,
            request: None,
            upstream_latency_ms: None,
        }
    }
}

impl LogPushSteps {
    fn record(
        &self,
        stream: &dyn Stream,
        status: u16,
        api: String,
        seen: SeenRequest,
        line: &RequestLine,
        identity: Option<Identity>,
    ) -> Record {
        let push = &self.worker.push;
        let wants = |field| push.layout.fields.contains(field);
        let int = |field, path: &[&str]| {
            if wants(field) {
                property_int(stream, path).map_or(0, |n| u64::try_from(n).unwrap_or(0))
            } else {
                0
            }
        };
        let text = |field, path: &[&str]| {
            if wants(field) {
                property_text(stream, path)
            } else {
                String::new()
            }
        };
        let (path, query) = line.path.split_once('?').unwrap_or((&line.path, ""));
        // Envoy's start time; the call ends now, as Envoy logs it.
        let now = now_ms(stream);
        let started_ms = property_int(stream, &["request", "time"])
            .map(|nanos| u64::try_from(nanos / 1_000_000).unwrap_or(0))
            .unwrap_or(now);
        let mut record = Record {
            timestamp_ms: started_ms,
            record_id: self.worker.record_ids.next(),
            request_id: seen.request_id,
            api,
            app_key: identity
                .as_ref()
                .map(|i| i.app_key.clone())
                .unwrap_or_default(),
            app_name: identity.and_then(|i| i.app_name).unwrap_or_default(),
            client_ip: if wants(record::Field::ClientIp) {
                push.client_address
                    .client_of(stream)
                    .map(|ip| ip.to_string())
                    .unwrap_or_default()
            } else {
                String::new()
            },
            method: line.method.clone(),
            host: line.authority.clone(),
            path: path.to_string(),
            query: if wants(record::Field::Query) {
                redact_query(query, &push.redacted_query)
            } else {
                String::new()
            },
            status,
            error_code: stream
                .response_header("x-ca-error-code")
                .unwrap_or_default(),
            latency_ms: now.saturating_sub(started_ms),
            upstream_latency_ms: self
                .upstream_latency_ms
                .or_else(|| upstream_service_time(stream)),
            request_bytes: int(record::Field::RequestBytes, &["request", "total_size"]),
            response_bytes: int(record::Field::ResponseBytes, &["response", "total_size"]),
            upstream_cluster: text(record::Field::UpstreamCluster, &["xds", "cluster_name"]),
            upstream_host: text(record::Field::UpstreamHost, &["upstream", "address"]),
            user_agent: seen.user_agent,
            stage: seen.stage,
            user: if wants(record::Field::User) {
                identity::user(stream).unwrap_or_default()
            } else {
                String::new()
            },
            response_flags: if wants(record::Field::ResponseFlags) {
                property_int(stream, &["response", "flags"])
                    .map(|bits| response_flag_names(bits as u64))
                    .unwrap_or_default()
            } else {
                String::new()
            },
            headers: seen.headers,
            backend_status: None,
            backend_error_code: String::new(),
            threat: String::new(),
            threat_place: String::new(),
            threat_fingerprint: String::new(),
        };
        if wants(record::Field::BackendStatus) || wants(record::Field::BackendErrorCode) {
            let (status, code) = identity::backend_answer(stream);
            record.backend_status = status;
            record.backend_error_code = code.unwrap_or_default();
        }
        let threat_fields = [
            record::Field::Threat,
            record::Field::ThreatPlace,
            record::Field::ThreatFingerprint,
        ];
        if threat_fields.into_iter().any(wants) {
            if let Some(threat) = identity::threat(stream) {
                record.threat = threat.check;
                record.threat_place = threat.place;
                record.threat_fingerprint = threat.fingerprint;
            }
        }
        push.masking.apply(&mut record);
        record
    }
}

impl PolicySteps for LogPushSteps {
    fn on_request_headers(&mut self, stream: &mut dyn Stream, _end_of_stream: bool) -> Verdict {
        self.request = Some(SeenRequest::read(&*stream, &self.worker.push));
        Verdict::Continue
    }

    fn on_response_headers(&mut self, stream: &mut dyn Stream, _end_of_stream: bool) -> Verdict {
        self.upstream_latency_ms = upstream_service_time(&*stream);
        Verdict::Continue
    }

    fn on_log(&mut self, stream: &mut dyn Stream) {
        let push = Arc::clone(&self.worker.push);
        let status = status_sent(&*stream);
        // Seen in the request phase, unless a filter before this one answered.
        let mut seen = self
            .request
            .take()
            .unwrap_or_else(|| SeenRequest::read(&*stream, &push));
        let mut line = std::mem::take(&mut seen.line);
        // The client's request line, when request-mapping rewrote it.
        if let Some((method, path)) = identity::original_request(&*stream) {
            let original = Rc::make_mut(&mut line);
            original.method = method;
            original.path = path;
        }
        let facts = RequestFacts {
            line,
            route_name: push
                .uses_route_name()
                .then(|| route_name(&*stream))
                .flatten(),
        };
        let rule = if push.has_rules() {
            push.rule_for(&facts.attrs())
        } else {
            None
        };
        if !push.keeps(&seen.request_id, status, rule) {
            stream.increment(self.worker.metrics.records_sampled_out, 1);
            return;
        }
        let fields = push.layout.fields;
        let identity = if fields.contains(record::Field::AppKey)
            || fields.contains(record::Field::AppName)
            || (rule.is_none() && fields.contains(record::Field::Api))
        {
            identity::read_identity(&*stream)
        } else {
            None
        };
        let api = match rule {
            Some(rule) => rule.name.clone(),
            None => identity
                .as_ref()
                .and_then(|i| i.api.clone())
                .or_else(|| match &facts.route_name {
                    Some(name) => Some(name.to_string()),
                    None => route_name(&*stream).map(|name| name.to_string()),
                })
                .unwrap_or_default(),
        };
        let record = self.record(&*stream, status, api, seen, &facts.line, identity);
        self.worker.push(stream, record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile_config;
    use gateway_common::host::FakeHost;
    use gateway_common::identity::{
        APP_KEY_PROPERTY, ORIGINAL_METHOD_PROPERTY, ORIGINAL_PATH_PROPERTY,
    };
    use gateway_common::stream::FakeStream;
    use serde_json::{json, Value};

    const T0: u64 = 1_700_000_000_000;

    fn worker(config: Value, stream: &mut FakeStream) -> Arc<Worker> {
        let push = compile_config(config.to_string().as_bytes()).unwrap();
        Arc::new(Worker::new(push, Metrics::define(stream), 7, T0))
    }

    fn config() -> Value {
        json!({
            "sink": {"cluster": "logs", "format": "ndjson", "path": "/ingest"},
            "headers": ["x-tenant", "authorization"],
            "redact": {"query": ["token"]},
            "fields": ["request_id", "api", "app_key", "method", "path", "query", "status",
                       "error_code", "upstream_latency_ms", "latency_ms"],
            "rules": [{"name": "orders", "match": {"path": {"prefix": "/orders"}}}]
        })
    }

    fn stream(path: &str) -> FakeStream {
        let host = FakeHost::new()
            .with_header(":method", "GET")
            .with_header(":path", path)
            .with_header(":authority", "api.example.com")
            .with_header("x-request-id", "r-1")
            .with_header("x-tenant", "acme")
            .with_header("authorization", "Bearer secret");
        host.clock.set(std::time::Duration::from_millis(T0 + 25));
        host.set_property(
            &["request", "time"],
            &((T0 as i64) * 1_000_000).to_le_bytes(),
        );
        FakeStream::new(host)
    }

    /// The records the worker holds.
    fn queued(worker: &Worker) -> Vec<Record> {
        lock(&worker.shipper)
            .drain(T0 + 1_000)
            .map(<[Record]>::to_vec)
            .unwrap_or_default()
    }

    /// The one record the worker holds.
    fn only_record(worker: &Worker) -> Record {
        let records = queued(worker);
        let [record] = records.as_slice() else {
            panic!("one record: {records:?}")
        };
        record.clone()
    }

    /// The record of a call to `path` answered `status`, with what
    /// `publish` left for log-push (as a filter before it would) between
    /// the request and the log.
    fn record_of_call(
        fields: Value,
        path: &str,
        status: &str,
        publish: impl FnOnce(&FakeStream),
    ) -> Record {
        let mut stream = stream(path);
        let worker = worker(fields, &mut stream);
        let mut steps = LogPushSteps::new(Arc::clone(&worker));
        steps.on_request_headers(&mut stream, true);
        publish(&stream);
        stream
            .response_headers
            .push((":status".into(), status.into()));
        steps.on_log(&mut stream);
        only_record(&worker)
    }

    #[test]
    fn a_call_is_recorded_as_the_client_sent_it_and_as_it_was_answered() {
        let mut stream = stream("/orders/7?token=abc&page=2");
        let worker = worker(config(), &mut stream);
        let mut steps = LogPushSteps::new(Arc::clone(&worker));
        assert_eq!(
            steps.on_request_headers(&mut stream, true),
            Verdict::Continue
        );
        // A later policy rewrites the request, and published who called.
        stream.set_request_header(":path", Some("/internal/orders/7"));
        stream.set_property(&[APP_KEY_PROPERTY], b"203751");
        stream
            .response_headers
            .push((":status".into(), "429".into()));
        stream
            .response_headers
            .push(("x-ca-error-code".into(), "A429AK".into()));
        stream
            .response_headers
            .push(("x-envoy-upstream-service-time".into(), "12".into()));
        assert_eq!(
            steps.on_response_headers(&mut stream, true),
            Verdict::Continue
        );
        steps.on_log(&mut stream);

        let record = only_record(&worker);
        assert_eq!(record.request_id, "r-1");
        assert_eq!(record.api, "orders");
        assert_eq!(record.app_key, "203751");
        assert_eq!(record.method, "GET");
        assert_eq!(record.path, "/orders/7");
        assert!(record.query.contains("page=2"), "{}", record.query);
        assert!(!record.query.contains("abc"), "redacted: {}", record.query);
        assert_eq!(record.status, 429);
        assert_eq!(record.error_code, "A429AK");
        assert_eq!(record.upstream_latency_ms, Some(12));
        assert_eq!(record.latency_ms, 25);
        assert_eq!(record.headers, ["acme", REDACTED]);
        assert_eq!(stream.counted(FILTER_NAME, "records.queued"), 1);
    }

    #[test]
    fn a_threat_finding_is_recorded_when_asked_for() {
        let mut with_fields = config();
        with_fields["fields"] = json!(["status", "threat", "threat_place", "threat_fingerprint"]);
        for (fields, finding, expected) in [
            (with_fields.clone(), true, ("sql", "query", "s&sos")),
            (with_fields, false, ("", "", "")),
            (config(), true, ("", "", "")),
        ] {
            let record = record_of_call(fields, "/search?q=x", "403", |stream| {
                if finding {
                    identity::publish_threat(stream, "sql", "query", Some("s&sos"));
                }
            });
            assert_eq!(
                (
                    record.threat.as_str(),
                    record.threat_place.as_str(),
                    record.threat_fingerprint.as_str()
                ),
                expected
            );
        }
    }

    #[test]
    fn the_backends_own_answer_is_recorded_when_asked_for_and_error_mapping_changed_it() {
        let mut with_fields = config();
        with_fields["fields"] = json!([
            "status",
            "error_code",
            "backend_status",
            "backend_error_code"
        ]);
        for (fields, expected) in [
            (with_fields, (Some(200), "ROLE_NOT_EXISTS")),
            (config(), (None, "")),
        ] {
            let record = record_of_call(fields, "/orders/7", "404", |stream| {
                identity::publish_backend_answer(stream, Some(200), Some("ROLE_NOT_EXISTS"));
            });
            assert_eq!(record.status, 404);
            assert_eq!(
                (record.backend_status, record.backend_error_code.as_str()),
                expected
            );
        }
    }

    #[test]
    fn a_request_answered_before_log_push_saw_it_is_recorded_from_the_stream_end() {
        let mut stream = stream("/orders/7");
        let worker = worker(config(), &mut stream);
        let mut steps = LogPushSteps::new(Arc::clone(&worker));
        stream
            .response_headers
            .push((":status".into(), "403".into()));
        steps.on_log(&mut stream);
        let records = queued(&worker);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].status, 403);
        assert_eq!(records[0].path, "/orders/7");
    }

    #[test]
    fn the_clients_request_line_is_recorded_when_a_policy_rewrote_it() {
        let mut stream = stream("/v2/orders");
        let worker = worker(config(), &mut stream);
        let mut steps = LogPushSteps::new(Arc::clone(&worker));
        stream.set_property(&[ORIGINAL_METHOD_PROPERTY], b"POST");
        stream.set_property(&[ORIGINAL_PATH_PROPERTY], b"/orders/new");
        steps.on_log(&mut stream);
        let records = queued(&worker);
        assert_eq!(records[0].method, "POST");
        assert_eq!(records[0].path, "/orders/new");
        assert_eq!(records[0].api, "orders");
    }

    #[test]
    fn sampled_out_calls_are_counted_not_queued() {
        let mut config = config();
        config["sample_rate"] = json!(0.0);
        config["rules"] = json!([]);
        let mut stream = stream("/health");
        let worker = worker(config, &mut stream);
        let mut steps = LogPushSteps::new(Arc::clone(&worker));
        stream
            .response_headers
            .push((":status".into(), "200".into()));
        steps.on_log(&mut stream);
        assert!(queued(&worker).is_empty());
        assert_eq!(stream.counted(FILTER_NAME, "records.sampled_out"), 1);
        assert_eq!(stream.counted(FILTER_NAME, "records.queued"), 0);
    }

    #[test]
    fn the_queue_gauges_move_by_what_changed() {
        let mut stream = stream("/orders/1");
        let worker = worker(config(), &mut stream);
        for _ in 0..3 {
            LogPushSteps::new(Arc::clone(&worker)).on_log(&mut stream);
        }
        worker.report_queue(&mut stream);
        assert_eq!(stream.gauge(FILTER_NAME, "queue.records"), Some(3));
        // Sent: the batch leaves the queue.
        queued(&worker);
        lock(&worker.shipper).finish(true, T0 + 1_000);
        worker.report_queue(&mut stream);
        assert_eq!(stream.gauge(FILTER_NAME, "queue.records"), Some(0));
    }
}
