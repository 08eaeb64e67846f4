//! log-push as a root holds it (its single filter's and the gateway
//! module's): the request's work is [`LogPushSteps`], written against the
//! stream seam; here the worker's batches leave for the sink, from the
//! root's timer and the sink's answers. Re-exported from the crate root.

use crate::format::Destination;
use crate::shipper::Finished;
use crate::steps::{LogPushSteps, Metrics, Worker};
use crate::*;
use gateway_common::hosting::{self, LoadedPolicy, RootHost};
use gateway_common::stream::{CallAnswer, Level, PolicySteps};
use gateway_common::sync::lock;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Sends the worker's due batch, unless one is on its way.
fn send_due(worker: &Worker, drain: bool, host: &mut dyn RootHost) {
    if worker.in_flight().is_some() {
        return;
    }
    let now = hosting::root_now_ms(host);
    let sink = &worker.push.sink;
    let dispatched = {
        let mut shipper = lock(&worker.shipper);
        let batch = if drain {
            shipper.drain(now)
        } else {
            shipper.poll(now)
        };
        let Some(batch) = batch else { return };
        match &sink.destination {
            Destination::Http { upstream, headers } => {
                let body = sink.encode(&worker.push.layout, batch);
                let call = upstream.call(
                    "POST",
                    headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    Some(&body),
                );
                host.dispatch_call(call)
            }
            Destination::Kafka(target) => {
                host.dispatch_kafka(target, sink.kafka_records(&worker.push.layout, batch))
            }
        }
    };
    match dispatched {
        Ok(token) => *lock(&worker.in_flight) = Some(token),
        Err(_) => {
            let why = match &sink.destination {
                Destination::Http { upstream, .. } => {
                    format!("cannot call cluster `{}`; is it defined?", upstream.cluster)
                }
                Destination::Kafka(_) => "cannot hand the batch to the Kafka producer".to_string(),
            };
            sink_failed(worker, &why, host);
            finish(worker, false, &[], host);
        }
    }
}

fn sink_failed(worker: &Worker, reason: &str, host: &mut dyn RootHost) {
    if !worker.sink_failing.swap(true, Ordering::Relaxed) {
        host.log(
            Level::Warn,
            format_args!("{FILTER_NAME}: sink failing, records are kept and retried: {reason}"),
        );
    }
}

/// The batch on its way is done with: sent (`ok`, with the sink's answer
/// `body`) or failed.
fn finish(worker: &Worker, ok: bool, body: &[u8], telemetry: &mut dyn RootHost) {
    *lock(&worker.in_flight) = None;
    let finished = lock(&worker.shipper).finish(ok, hosting::root_now_ms(telemetry));
    let metrics = &worker.metrics;
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
/// root (`modules/log-push`) holds one, and so does the gateway module's.
pub struct LogPushWorker {
    worker: Arc<Worker>,
    shutting_down: bool,
}

impl LogPushWorker {
    /// Compiles `bytes` and starts an empty queue. On error, logs
    /// `log_push: invalid configuration: …` and returns `None`.
    pub fn load(
        bytes: &[u8],
        host: &mut dyn RootHost,
        metrics: impl FnOnce(&mut dyn RootHost) -> Metrics,
    ) -> Option<Self> {
        let push = hosting::compile_or_log(host, FILTER_NAME, bytes, compile_config)?;
        let metrics = metrics(host);
        let now = hosting::root_now_ms(host);
        let worker = hosting::shared_by_roots(host, "log_push.worker", || {
            Worker::new(push, metrics, gateway_common::host::random_u64(), now)
        });
        Some(Self {
            worker,
            shutting_down: false,
        })
    }
}

impl LoadedPolicy for LogPushWorker {
    fn steps(&self) -> Box<dyn PolicySteps> {
        Box::new(LogPushSteps::new(Arc::clone(&self.worker)))
    }

    fn tick_period(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.worker.push.tick_ms))
    }

    fn on_tick(&mut self, host: &mut dyn RootHost) {
        send_due(&self.worker, false, host);
        self.worker.report_queue(host);
    }

    fn on_call_answer(
        &mut self,
        token: u32,
        answer: &dyn CallAnswer,
        host: &mut dyn RootHost,
    ) -> bool {
        let worker = &self.worker;
        if worker.in_flight() != Some(token) {
            return false;
        }
        let status = answer.status();
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        let body = if ok {
            answer.body()
        } else {
            sink_failed(
                worker,
                &match (status, &worker.push.sink.destination) {
                    (Some(s), _) => format!("status {s}"),
                    (None, Destination::Kafka(_)) => {
                        "Kafka acknowledged none of the batch (the native module logs why)"
                            .to_string()
                    }
                    (None, Destination::Http { .. }) => {
                        "no response (timeout or connection failure)".to_string()
                    }
                },
                host,
            );
            Vec::new()
        };
        finish(worker, ok, &body, host);
        send_due(worker, self.shutting_down, host);
        true
    }

    fn on_done(&mut self, host: &mut dyn RootHost) -> bool {
        self.shutting_down = true;
        // One last batch, best effort: Envoy may not wait for it.
        send_due(&self.worker, true, host);
        self.worker.in_flight().is_none()
    }

    fn idle(&self) -> bool {
        !lock(&self.worker.shipper).busy() && self.worker.in_flight().is_none()
    }
}
