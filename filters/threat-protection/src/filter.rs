//! threat-protection as a host loads it: its `.wasm` filter, the gateway
//! module's section and the native module. The request's work is
//! [`ThreatSteps`], written against the stream seam. Re-exported from the
//! crate root.

use crate::steps::{Compiled, Metrics, ThreatSteps};
use crate::*;
use gateway_common::config::ConfigError;
use gateway_common::hosting::{Filter, RootHost};
use gateway_common::metrics::DefineMetrics;
use gateway_common::stream::PolicySteps;
use std::rc::Rc;

/// The filter, as the shared root context sees it.
pub struct ThreatProtectionFilter;

impl Filter for ThreatProtectionFilter {
    const NAME: &'static str = FILTER_NAME;
    type Policy = Compiled;
    type Metrics = Metrics;

    fn compile(bytes: &[u8]) -> Result<Compiled, ConfigError> {
        Ok(Compiled::new(compile_config(bytes)?))
    }

    fn prepare(compiled: &Compiled, host: &mut dyn RootHost) -> Result<(), String> {
        compiled.define_rule_counters(host);
        Ok(())
    }

    fn define_metrics(metrics: &mut dyn DefineMetrics) -> Metrics {
        Metrics::define(metrics)
    }

    fn steps(compiled: &Rc<Compiled>, metrics: Metrics) -> Box<dyn PolicySteps> {
        Box::new(ThreatSteps::new(Rc::clone(compiled), metrics))
    }
}
