//! throttling as a host loads it: its `.wasm` filter, the gateway module's
//! section and the native module. The request's work is [`ThrottlingSteps`],
//! written against the stream seam. Re-exported from the crate root.

use crate::steps::{Compiled, Metrics, ThrottlingSteps};
use crate::*;
use gateway_common::config::ConfigError;
use gateway_common::hosting::{Filter, RootHost};
use gateway_common::metrics::DefineMetrics;
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

    fn prepare(compiled: &Compiled, host: &mut dyn RootHost) -> Result<(), String> {
        compiled.policy.initialize(host.shared_data())?;
        compiled.define_rule_counters(host);
        let keys = host.define_gauge(FILTER_NAME, "shared_data_keys");
        host.set_gauge(keys, compiled.policy.shared_data_keys());
        Ok(())
    }

    fn define_metrics(metrics: &mut dyn DefineMetrics) -> Metrics {
        Metrics::define(metrics)
    }

    fn uses_fleet(compiled: &Compiled) -> bool {
        compiled.policy.fleet().is_some()
    }

    fn steps(compiled: &Rc<Compiled>, metrics: Metrics) -> Box<dyn PolicySteps> {
        Box::new(ThrottlingSteps::new(Rc::clone(compiled), metrics))
    }
}
