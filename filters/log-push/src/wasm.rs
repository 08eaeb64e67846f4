//! The proxy-wasm adapter of log-push: the filter as a `.wasm` module
//! and as the gateway module's section. Re-exported from the crate root.

use crate::config::LogPush;
use crate::record::{redact_query, response_flag_names, Record, RecordIds, REDACTED};
use crate::shipper::{Finished, Shipper};
use crate::*;
use gateway_common::adapter::{self, LoadedPolicy};
use gateway_common::host::{Host, ProxyWasmHost, RequestFacts, RequestLine};
use gateway_common::identity::{self, Identity};
use gateway_common::metrics::{Counter, Gauge};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Counters and gauges, `gw.log_push.*`.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    records_queued: Counter,
    records_sent: Counter,
    records_retried: Counter,
    records_rejected: Counter,
    records_sampled_out: Counter,
    dropped_queue_full: Counter,
    dropped_sink_failed: Counter,
    batches_sent: Counter,
    batches_failed: Counter,
    queue_records: Gauge,
    queue_bytes: Gauge,
}

impl Metrics {
    pub fn define() -> Self {
        let counter = |name| Counter::define(FILTER_NAME, name);
        Self {
            records_queued: counter("records.queued"),
            records_sent: counter("records.sent"),
            records_retried: counter("records.retried"),
            records_rejected: counter("records.rejected_by_sink"),
            records_sampled_out: counter("records.sampled_out"),
            dropped_queue_full: counter("records.dropped.queue_full"),
            dropped_sink_failed: counter("records.dropped.sink_failed"),
            batches_sent: counter("batches.sent"),
            batches_failed: counter("batches.failed"),
            queue_records: Gauge::define(FILTER_NAME, "queue.records"),
            queue_bytes: Gauge::define(FILTER_NAME, "queue.bytes"),
        }
    }
}

fn now_ms() -> u64 {
    gateway_common::host::now_ms(&ProxyWasmHost)
}

/// One worker's queue and sending state, shared by its root and HTTP
/// contexts. In the native module every worker's requests share the one
/// queue the main thread's root sends (see `adapter::shared_by_roots`).
struct Worker {
    push: Arc<LogPush>,
    record_ids: RecordIds,
    shipper: Mutex<Shipper>,
    metrics: Metrics,
    /// The gauges' last contribution from this queue.
    reported: Mutex<(usize, usize)>,
    in_flight: Mutex<Option<u32>>,
    sink_failing: AtomicBool,
}

impl Worker {
    fn in_flight(&self) -> Option<u32> {
        *adapter::lock(&self.in_flight)
    }

    /// Moves the gauges to what the worker holds now; called from the timer
    /// and when a batch ends, not per record.
    fn report_queue(&self) {
        let (records, bytes) = adapter::lock(&self.shipper).held();
        let (old_records, old_bytes) =
            std::mem::replace(&mut *adapter::lock(&self.reported), (records, bytes));
        self.metrics
            .queue_records
            .add(records as i64 - old_records as i64);
        self.metrics
            .queue_bytes
            .add(bytes as i64 - old_bytes as i64);
    }

    fn push(&self, record: Record) {
        let dropped = adapter::lock(&self.shipper).push(record);
        self.metrics.records_queued.inc();
        self.metrics.dropped_queue_full.add(dropped as u64);
    }

    /// Sends the next batch if one is due (`drain`: whatever is queued).
    fn send_due(&self, drain: bool) {
        if self.in_flight().is_some() {
            return;
        }
        let now = now_ms();
        let sink = &self.push.sink;
        let dispatched = {
            let mut shipper = adapter::lock(&self.shipper);
            let batch = if drain {
                shipper.drain(now)
            } else {
                shipper.poll(now)
            };
            let Some(batch) = batch else { return };
            let body = sink.encode(&self.push.layout, batch);
            let mut headers: Vec<(&str, &str)> = vec![
                (":method", "POST"),
                (":path", &sink.path),
                (":authority", &sink.authority),
            ];
            headers.extend(sink.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            proxy_wasm::hostcalls::dispatch_http_call(
                &sink.cluster,
                headers,
                Some(&body),
                vec![],
                Duration::from_millis(sink.timeout_ms),
            )
        };
        match dispatched {
            Ok(token) => *adapter::lock(&self.in_flight) = Some(token),
            Err(status) => {
                self.sink_failed(&format!(
                    "cannot call cluster `{}` ({status:?}); is it defined?",
                    sink.cluster
                ));
                self.finish(false, &[]);
            }
        }
    }

    fn sink_failed(&self, reason: &str) {
        if !self.sink_failing.swap(true, Ordering::Relaxed) {
            adapter::log(
                LogLevel::Warn,
                &format!("{FILTER_NAME}: sink failing, records are kept and retried: {reason}"),
            );
        }
    }

    fn finish(&self, ok: bool, body: &[u8]) {
        *adapter::lock(&self.in_flight) = None;
        let finished = adapter::lock(&self.shipper).finish(ok, now_ms());
        let metrics = &self.metrics;
        match finished {
            Finished::Sent(n) => {
                metrics.batches_sent.inc();
                metrics.records_sent.add(n as u64);
                let rejected = format::rejected_in_response(self.push.sink.format, body);
                metrics.records_rejected.add(rejected as u64);
                if self.sink_failing.swap(false, Ordering::Relaxed) {
                    adapter::log(LogLevel::Info, &format!("{FILTER_NAME}: sink recovered"));
                }
            }
            Finished::Retrying { records, .. } => {
                metrics.batches_failed.inc();
                metrics.records_retried.add(records as u64);
            }
            Finished::Dropped(n) => {
                metrics.batches_failed.inc();
                metrics.dropped_sink_failed.add(n as u64);
            }
            Finished::Unexpected => {}
        }
        self.report_queue();
    }
}

/// log-push's part of a root context: the worker's queue, the flush timer's
/// work, the sink's answers and the last batch at shutdown. The filter's own
/// root ([`LogPushRoot`]) holds one, and so does the gateway module's root.
pub struct LogPushWorker {
    worker: Arc<Worker>,
    shutting_down: bool,
}

impl LogPushWorker {
    /// Compiles `bytes` and starts an empty queue. On error, logs
    /// `log_push: invalid configuration: …` and returns `None`.
    pub fn load(bytes: &[u8], metrics: impl FnOnce() -> Metrics) -> Option<Self> {
        let push = adapter::compile_or_log(FILTER_NAME, bytes, compile_config)?;
        let metrics = metrics();
        let worker = adapter::shared_by_roots("log_push.worker", || Worker {
            record_ids: RecordIds::new(gateway_common::host::random_u64()),
            shipper: Mutex::new(Shipper::new(push.limits, now_ms())),
            push: Arc::new(push),
            metrics,
            reported: Mutex::new((0, 0)),
            in_flight: Mutex::new(None),
            sink_failing: AtomicBool::new(false),
        });
        Some(Self {
            worker,
            shutting_down: false,
        })
    }
}

impl LoadedPolicy for LogPushWorker {
    fn http_context(&self, _context_id: u32) -> Box<dyn HttpContext> {
        Box::new(LogPushHttp {
            worker: Arc::clone(&self.worker),
            request: None,
            upstream_latency_ms: None,
        })
    }

    fn tick_period(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.worker.push.tick_ms))
    }

    fn on_tick(&mut self) {
        self.worker.send_due(false);
        self.worker.report_queue();
    }

    fn on_http_call_response(&mut self, token: u32, body_size: usize) -> bool {
        let worker = &self.worker;
        if worker.in_flight() != Some(token) {
            return false;
        }
        let status =
            gateway_common::host::header_value(MapType::HttpCallResponseHeaders, ":status")
                .and_then(|s| s.parse::<u16>().ok());
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        let body = if ok {
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default()
        } else {
            worker.sink_failed(&match status {
                Some(s) => format!("status {s}"),
                None => "no response (timeout or connection failure)".to_string(),
            });
            Vec::new()
        };
        worker.finish(ok, &body);
        worker.send_due(self.shutting_down);
        true
    }

    fn on_done(&mut self) -> bool {
        self.shutting_down = true;
        // One last batch, best effort: Envoy may not wait for it.
        self.worker.send_due(true);
        self.worker.in_flight().is_none()
    }

    fn idle(&self) -> bool {
        !adapter::lock(&self.worker.shipper).busy() && self.worker.in_flight().is_none()
    }
}

/// The filter's root context: configuration, the worker's queue, the flush timer.
#[derive(Default)]
pub struct LogPushRoot {
    worker: Option<LogPushWorker>,
    metrics: Option<Metrics>,
    shutting_down: bool,
}

impl Context for LogPushRoot {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _: usize) {
        let Some(worker) = &mut self.worker else {
            return;
        };
        if worker.on_http_call_response(token, body_size) && self.shutting_down && worker.idle() {
            self.done();
        }
    }

    fn on_done(&mut self) -> bool {
        self.shutting_down = true;
        self.worker.as_mut().is_none_or(LogPushWorker::on_done)
    }
}

impl RootContext for LogPushRoot {
    fn on_configure(&mut self, _config_size: usize) -> bool {
        let metrics = &mut self.metrics;
        let Some(worker) = LogPushWorker::load(&adapter::plugin_configuration(), || {
            *metrics.get_or_insert_with(Metrics::define)
        }) else {
            return false;
        };
        if let Some(period) = worker.tick_period() {
            self.set_tick_period(period);
        }
        self.worker = Some(worker);
        true
    }

    fn on_tick(&mut self) {
        if let Some(worker) = &mut self.worker {
            worker.on_tick();
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(self.worker.as_ref()?.http_context(context_id))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

pub struct LogPushHttp {
    worker: Arc<Worker>,
    /// The request line as this filter saw it (the client's, when it runs
    /// first in the chain); absent when an earlier filter answered.
    request: Option<SeenRequest>,
    upstream_latency_ms: Option<u64>,
}

/// What the record takes from the request headers, read in the request
/// phase from the snapshot the callback has anyway, so `on_log` need not
/// fetch the request headers again.
struct SeenRequest {
    line: RequestLine,
    request_id: String,
    user_agent: String,
    stage: String,
    /// The configured extra headers, redacted where they must be.
    headers: Vec<String>,
}

impl SeenRequest {
    fn read(host: &ProxyWasmHost, push: &LogPush) -> Self {
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

fn property_int(host: &ProxyWasmHost, path: &[&str]) -> Option<i64> {
    let bytes = host.property(path)?;
    Some(i64::from_le_bytes(bytes.get(..8)?.try_into().ok()?))
}

fn property_text(host: &ProxyWasmHost, path: &[&str]) -> String {
    host.property(path)
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default()
}

impl LogPushHttp {
    /// Every value a host call would fetch is read only when the layout
    /// records its field: each property the host hands over costs about as
    /// much as the rest of the record.
    fn record(
        &self,
        status: u16,
        api: String,
        seen: SeenRequest,
        line: &RequestLine,
        identity: Option<Identity>,
    ) -> Record {
        let host = ProxyWasmHost;
        let push = &self.worker.push;
        let wants = |field| push.layout.fields.contains(field);
        let int = |field, path: &[&str]| {
            if wants(field) {
                property_int(&host, path).map_or(0, |n| u64::try_from(n).unwrap_or(0))
            } else {
                0
            }
        };
        let text = |field, path: &[&str]| {
            if wants(field) {
                property_text(&host, path)
            } else {
                String::new()
            }
        };
        let (path, query) = line.path.split_once('?').unwrap_or((&line.path, ""));
        // Envoy's start time; the call ends now, as Envoy logs it.
        let now = now_ms();
        let started_ms = property_int(&host, &["request", "time"])
            .map(|nanos| u64::try_from(nanos / 1_000_000).unwrap_or(0))
            .unwrap_or(now);
        Record {
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
                    .client_of(&host)
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
            error_code: adapter::response_header("x-ca-error-code").unwrap_or_default(),
            latency_ms: now.saturating_sub(started_ms),
            upstream_latency_ms: self.upstream_latency_ms.or_else(upstream_service_time),
            request_bytes: int(record::Field::RequestBytes, &["request", "total_size"]),
            response_bytes: int(record::Field::ResponseBytes, &["response", "total_size"]),
            upstream_cluster: text(record::Field::UpstreamCluster, &["xds", "cluster_name"]),
            upstream_host: text(record::Field::UpstreamHost, &["upstream", "address"]),
            user_agent: seen.user_agent,
            stage: seen.stage,
            user: if wants(record::Field::User) {
                identity::user(&host).unwrap_or_default()
            } else {
                String::new()
            },
            response_flags: if wants(record::Field::ResponseFlags) {
                property_int(&host, &["response", "flags"])
                    .map(|bits| response_flag_names(bits as u64))
                    .unwrap_or_default()
            } else {
                String::new()
            },
            headers: seen.headers,
        }
    }
}

/// The status the client got: the response's `:status` (a local reply has
/// one too), else Envoy's `response.code` (0 when no response was sent).
fn response_status(host: &ProxyWasmHost) -> u16 {
    host.response_headers()
        .get_text(":status")
        .and_then(|status| status.trim().parse().ok())
        .or_else(|| property_int(host, &["response", "code"]).and_then(|c| u16::try_from(c).ok()))
        .unwrap_or(0)
}

fn upstream_service_time() -> Option<u64> {
    adapter::response_header("x-envoy-upstream-service-time").and_then(|v| v.trim().parse().ok())
}

impl Context for LogPushHttp {}

impl HttpContext for LogPushHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let _reads = gateway_common::host::callback_scope();
        self.request = Some(SeenRequest::read(&ProxyWasmHost, &self.worker.push));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let _reads = gateway_common::host::callback_scope();
        self.upstream_latency_ms = upstream_service_time();
        Action::Continue
    }

    fn on_log(&mut self) {
        let _reads = gateway_common::host::callback_scope();
        let host = ProxyWasmHost;
        let push = Arc::clone(&self.worker.push);
        let status = response_status(&host);
        // Seen in the request phase, unless a filter before this one answered.
        let mut seen = self
            .request
            .take()
            .unwrap_or_else(|| SeenRequest::read(&host, &push));
        let mut line = std::mem::take(&mut seen.line);
        // The client's request line, when request-mapping rewrote it.
        if let Some((method, path)) = identity::original_request(&host) {
            line.method = method;
            line.path = path;
        }
        let facts = RequestFacts {
            line,
            route_name: push
                .uses_route_name()
                .then(|| gateway_common::host::route_name(&host))
                .flatten(),
        };
        let rule = if push.has_rules() {
            push.rule_for(&facts.attrs())
        } else {
            None
        };
        if !push.keeps(&seen.request_id, status, rule) {
            self.worker.metrics.records_sampled_out.inc();
            return;
        }
        let fields = push.layout.fields;
        let identity = if fields.contains(record::Field::AppKey)
            || fields.contains(record::Field::AppName)
            || (rule.is_none() && fields.contains(record::Field::Api))
        {
            identity::read_identity(&host)
        } else {
            None
        };
        let api = match rule {
            Some(rule) => rule.name.clone(),
            None => identity
                .as_ref()
                .and_then(|i| i.api.clone())
                .or_else(|| match &facts.route_name {
                    Some(name) => Some(name.clone()),
                    None => gateway_common::host::route_name(&host),
                })
                .unwrap_or_default(),
        };
        let record = self.record(status, api, seen, &facts.line, identity);
        self.worker.push(record);
    }
}

#[cfg(feature = "entrypoint")]
gateway_common::declare_root!(
    gateway_common::adapter::RootRank::Filter,
    LogPushRoot::default()
);
