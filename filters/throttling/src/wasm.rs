//! The proxy-wasm adapter of throttling: the filter as a `.wasm` module
//! and as the gateway module's section. The request's work is
//! [`ThrottlingSteps`], written against the stream seam. Re-exported from
//! the crate root.

use crate::steps::{Compiled, Metrics, ThrottlingSteps};
use crate::*;
use gateway_common::adapter::Filter;
use gateway_common::config::ConfigError;
use gateway_common::metrics::{Gauge, ProxyWasmMetrics};
use gateway_common::store::ProxyWasmStore;
use gateway_common::stream::PolicySteps;
use std::rc::Rc;

/// The filter, as the shared root context sees it.
pub struct ThrottlingFilter;

impl Filter for ThrottlingFilter {
    const NAME: &'static str = FILTER_NAME;
    type Policy = Compiled;
    type Metrics = Metrics;

    fn compile(bytes: &[u8]) -> Result<Compiled, ConfigError> {
        Ok(Compiled::new(compile_config(bytes)?))
    }

    fn prepare(compiled: &Compiled) -> Result<(), String> {
        compiled.policy.initialize(&ProxyWasmStore)?;
        compiled.define_rule_counters(&mut ProxyWasmMetrics);
        Gauge::define(FILTER_NAME, "shared_data_keys").set(compiled.policy.shared_data_keys());
        Ok(())
    }

    fn define_metrics() -> Metrics {
        Metrics::define(&mut ProxyWasmMetrics)
    }

    fn uses_fleet(compiled: &Compiled) -> bool {
        compiled.policy.fleet().is_some()
    }

    fn steps(compiled: &Rc<Compiled>, metrics: Metrics) -> Box<dyn PolicySteps> {
        Box::new(ThrottlingSteps::new(Rc::clone(compiled), metrics))
    }
}

#[cfg(feature = "entrypoint")]
gateway_common::declare_root!(
    gateway_common::adapter::RootRank::Filter,
    gateway_common::adapter::FilterRoot::<ThrottlingFilter>::default()
);
