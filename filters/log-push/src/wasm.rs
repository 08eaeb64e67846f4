//! The proxy-wasm root of log-push's own `.wasm` filter: its configuration,
//! the worker's queue and the flush timer.

use crate::steps::Metrics;
use crate::LogPushWorker;
use gateway_common::adapter::{
    self, LoadedPolicy, ProxyWasmCallAnswer, ProxyWasmRoot, StreamContext,
};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

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
        let answer = ProxyWasmCallAnswer { body_size };
        if worker.on_call_answer(token, &answer, &mut ProxyWasmRoot)
            && self.shutting_down
            && worker.idle()
        {
            self.done();
        }
    }

    fn on_done(&mut self) -> bool {
        self.shutting_down = true;
        self.worker
            .as_mut()
            .is_none_or(|worker| worker.on_done(&mut ProxyWasmRoot))
    }
}

impl RootContext for LogPushRoot {
    fn on_configure(&mut self, _config_size: usize) -> bool {
        let metrics = &mut self.metrics;
        let configuration = adapter::plugin_configuration();
        let Some(worker) = LogPushWorker::load(&configuration, &mut ProxyWasmRoot, |host| {
            *metrics.get_or_insert_with(|| Metrics::define(host))
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
            worker.on_tick(&mut ProxyWasmRoot);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let worker = self.worker.as_ref()?;
        Some(Box::new(StreamContext::new(worker.steps(), context_id)))
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
