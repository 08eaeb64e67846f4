//! response-cache as a host loads it: its `.wasm` filter, the gateway
//! module's section and the native module. The request's work is
//! [`CacheSteps`], written against the stream seam. Re-exported from the
//! crate root.

use crate::steps::{CacheSteps, CacheWorker, Metrics};
use crate::*;
use gateway_common::config::ConfigError;
use gateway_common::hosting::{Filter, RootHost};
use gateway_common::metrics::DefineMetrics;
use gateway_common::stream::PolicySteps;
use std::rc::Rc;

/// The filter, as the shared root context sees it.
pub struct ResponseCacheFilter;

impl Filter for ResponseCacheFilter {
    const NAME: &'static str = FILTER_NAME;
    type Policy = CacheWorker;
    type Metrics = Metrics;

    fn compile(bytes: &[u8]) -> Result<CacheWorker, ConfigError> {
        Ok(CacheWorker::new(compile_config(bytes)?))
    }

    /// The table's slots are made once, so its memory is fixed.
    fn prepare(worker: &CacheWorker, host: &mut dyn RootHost) -> Result<(), String> {
        worker
            .policy
            .table
            .initialize(host.shared_data())
            .map_err(|e| format!("cannot create the response cache in shared data: {e:?}"))
    }

    fn define_metrics(metrics: &mut dyn DefineMetrics) -> Metrics {
        Metrics::define(metrics)
    }

    fn steps(worker: &Rc<CacheWorker>, metrics: Metrics) -> Box<dyn PolicySteps> {
        Box::new(CacheSteps::new(Rc::clone(worker), metrics))
    }

    /// A request waiting for another's fetch is woken by it.
    fn wakes(_worker: &CacheWorker) -> bool {
        true
    }
}
