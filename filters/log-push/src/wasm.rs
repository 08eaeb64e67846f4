//! The proxy-wasm adapter of log-push: the filter as a `.wasm` module
//! and as the gateway module's section. The request's work is
//! [`LogPushSteps`], written against the stream seam; here the worker's
//! batches leave for the sink, from the root's timer and the sink's
//! answers. Re-exported from the crate root.

use crate::shipper::Finished;
use crate::steps::{LogPushSteps, Metrics, Worker};
use crate::*;
use gateway_common::adapter::{self, LoadedPolicy, ProxyWasmCallAnswer, StreamContext};
use gateway_common::host::ProxyWasmHost;
use gateway_common::metrics::ProxyWasmMetrics;
use gateway_common::stream::{CallAnswer, Level, PolicySteps, Telemetry};
use gateway_common::sync::lock;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn now_ms() -> u64 {
    gateway_common::host::now_ms(&ProxyWasmHost)
}

/// Sends the worker's due batch, unless one is on its way.
fn send_due(worker: &Worker, drain: bool) {
    if worker.in_flight().is_some() {
        return;
    }
    let now = now_ms();
    let sink = &worker.push.sink;
    let dispatched = {
        let mut shipper = lock(&worker.shipper);
        let batch = if drain {
            shipper.drain(now)
        } else {
            shipper.poll(now)
        };
        let Some(batch) = batch else { return };
        let body = sink.encode(&worker.push.layout, batch);
        let call = sink.upstream.call(
            "POST",
            sink.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            Some(&body),
        );
        proxy_wasm::hostcalls::dispatch_http_call(
            call.cluster,
            call.headers,
            call.body,
            vec![],
            call.timeout,
        )
    };
    match dispatched {
        Ok(token) => *lock(&worker.in_flight) = Some(token),
        Err(status) => {
            sink_failed(
                worker,
                &format!(
                    "cannot call cluster `{}` ({status:?}); is it defined?",
                    sink.upstream.cluster
                ),
            );
            finish(worker, false, &[]);
        }
    }
}

fn sink_failed(worker: &Worker, reason: &str) {
    if !worker.sink_failing.swap(true, Ordering::Relaxed) {
        ProxyWasmMetrics.log(
            Level::Warn,
            format_args!("{FILTER_NAME}: sink failing, records are kept and retried: {reason}"),
        );
    }
}

/// The batch on its way is done with: sent (`ok`, with the sink's answer
/// `body`) or failed.
fn finish(worker: &Worker, ok: bool, body: &[u8]) {
    *lock(&worker.in_flight) = None;
    let finished = lock(&worker.shipper).finish(ok, now_ms());
    let metrics = &worker.metrics;
    let telemetry = &mut ProxyWasmMetrics;
    match finished {
        Finished::Sent(n) => {
            telemetry.increment(metrics.batches_sent, 1);
            telemetry.increment(metrics.records_sent, n as u64);
            let rejected = format::rejected_in_response(worker.push.sink.format, body);
            telemetry.increment(metrics.records_rejected, rejected as u64);
            if worker.sink_failing.swap(false, Ordering::Relaxed) {
                telemetry.log(Level::Info, format_args!("{FILTER_NAME}: sink recovered"));
            }
        }
        Finished::Retrying { records, .. } => {
            telemetry.increment(metrics.batches_failed, 1);
            telemetry.increment(metrics.records_retried, records as u64);
        }
        Finished::Dropped(n) => {
            telemetry.increment(metrics.batches_failed, 1);
            telemetry.increment(metrics.dropped_sink_failed, n as u64);
        }
        Finished::Unexpected => {}
    }
    worker.report_queue(telemetry);
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
        let worker = adapter::shared_by_roots("log_push.worker", || {
            Worker::new(push, metrics, gateway_common::host::random_u64(), now_ms())
        });
        Some(Self {
            worker,
            shutting_down: false,
        })
    }

    fn http_context(&self, context_id: u32) -> Box<dyn HttpContext> {
        Box::new(StreamContext::new(self.steps(), context_id))
    }
}

impl LoadedPolicy for LogPushWorker {
    fn steps(&self) -> Box<dyn PolicySteps> {
        Box::new(LogPushSteps::new(Arc::clone(&self.worker)))
    }

    fn tick_period(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.worker.push.tick_ms))
    }

    fn on_tick(&mut self) {
        send_due(&self.worker, false);
        self.worker.report_queue(&mut ProxyWasmMetrics);
    }

    fn on_http_call_response(&mut self, token: u32, body_size: usize) -> bool {
        let worker = &self.worker;
        if worker.in_flight() != Some(token) {
            return false;
        }
        let answer = ProxyWasmCallAnswer { body_size };
        let status = answer.status();
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        let body = if ok {
            answer.body()
        } else {
            sink_failed(
                worker,
                &match status {
                    Some(s) => format!("status {s}"),
                    None => "no response (timeout or connection failure)".to_string(),
                },
            );
            Vec::new()
        };
        finish(worker, ok, &body);
        send_due(worker, self.shutting_down);
        true
    }

    fn on_done(&mut self) -> bool {
        self.shutting_down = true;
        // One last batch, best effort: Envoy may not wait for it.
        send_due(&self.worker, true);
        self.worker.in_flight().is_none()
    }

    fn idle(&self) -> bool {
        !lock(&self.worker.shipper).busy() && self.worker.in_flight().is_none()
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
            *metrics.get_or_insert_with(|| Metrics::define(&mut ProxyWasmMetrics))
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

#[cfg(feature = "entrypoint")]
gateway_common::declare_root!(
    gateway_common::adapter::RootRank::Filter,
    LogPushRoot::default()
);
