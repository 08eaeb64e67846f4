//! ext-auth as a host loads it: its `.wasm` filter, the gateway module's
//! section and the native module. The request's work is [`ExtAuthSteps`],
//! written against the stream seam. Re-exported from the crate root.

use crate::steps::{ExtAuthSteps, ExtAuthWorker, Metrics};
use crate::*;
use gateway_common::config::ConfigError;
use gateway_common::hosting::{Filter, RootHost};
use gateway_common::metrics::DefineMetrics;
use gateway_common::stream::PolicySteps;
use std::rc::Rc;

/// The filter, as the shared root context sees it.
pub struct ExtAuthFilter;

impl Filter for ExtAuthFilter {
    const NAME: &'static str = FILTER_NAME;
    type Policy = ExtAuthWorker;
    type Metrics = Metrics;

    fn compile(bytes: &[u8]) -> Result<ExtAuthWorker, ConfigError> {
        Ok(ExtAuthWorker::new(compile_config(bytes)?))
    }

    fn prepare(worker: &ExtAuthWorker, host: &mut dyn RootHost) -> Result<(), String> {
        match worker.policy.cache() {
            Some(cache) => cache
                .initialize(host.shared_data())
                .map_err(|e| format!("cannot create the decision cache in shared data: {e:?}")),
            None => Ok(()),
        }
    }

    fn define_metrics(metrics: &mut dyn DefineMetrics) -> Metrics {
        Metrics::define(metrics)
    }

    fn steps(worker: &Rc<ExtAuthWorker>, metrics: Metrics) -> Box<dyn PolicySteps> {
        Box::new(ExtAuthSteps::new(Rc::clone(worker), metrics))
    }

    fn wakes(_worker: &ExtAuthWorker) -> bool {
        true
    }
}
