//! The proxy-wasm adapter of ip-acl: the filter as a `.wasm` module
//! and as the gateway module's section. Re-exported from the crate root.

use crate::policy::{IpAcl, Metric};
use crate::*;
use gateway_common::adapter::{self, Filter, ProxyWasmStream};
use gateway_common::config::ConfigError;
use gateway_common::metrics::Counter;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

/// The counters, defined once per VM.
#[derive(Debug, Clone, Copy)]
pub struct Metrics([Counter; Metric::ALL.len()]);

impl Metrics {
    pub fn define() -> Self {
        Self(Metric::ALL.map(|metric| Counter::define(FILTER_NAME, metric.name())))
    }

    pub fn inc(&self, metric: Metric) {
        self.0[metric as usize].inc();
    }
}

/// Applies the policy to the current request: `Continue`, or an error
/// response sent and `Pause`.
pub fn on_request_headers(acl: &IpAcl, metrics: &Metrics) -> Action {
    let (verdict, metric) = acl.on_request_headers(&mut ProxyWasmStream);
    metrics.inc(metric);
    adapter::action(verdict)
}

/// The filter, as the shared root context sees it.
pub struct IpAclFilter;

impl Filter for IpAclFilter {
    const NAME: &'static str = FILTER_NAME;
    type Policy = IpAcl;
    type Metrics = Metrics;

    fn compile(bytes: &[u8]) -> Result<IpAcl, ConfigError> {
        compile_config(bytes)
    }

    fn define_metrics() -> Metrics {
        Metrics::define()
    }

    fn http_context(acl: Rc<IpAcl>, metrics: Metrics) -> Box<dyn HttpContext> {
        Box::new(IpAclHttp { acl, metrics })
    }
}

/// Per-request context.
pub struct IpAclHttp {
    acl: Rc<IpAcl>,
    metrics: Metrics,
}

impl Context for IpAclHttp {}

impl HttpContext for IpAclHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let _reads = gateway_common::host::callback_scope();
        on_request_headers(&self.acl, &self.metrics)
    }
}

#[cfg(feature = "entrypoint")]
gateway_common::declare_root!(
    gateway_common::adapter::RootRank::Filter,
    gateway_common::adapter::FilterRoot::<IpAclFilter>::default()
);
