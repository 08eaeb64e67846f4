//! routing as a host loads it: its `.wasm` filter, the gateway module's
//! section and the native module. The request's work is [`RoutingSteps`],
//! written against the stream seam. Re-exported from the crate root.

use crate::policy::Routing;
use crate::steps::{Metrics, RoutingSteps};
use crate::*;
use gateway_common::config::ConfigError;
use gateway_common::hosting::Filter;
use gateway_common::metrics::DefineMetrics;
use gateway_common::stream::PolicySteps;
use std::rc::Rc;

/// The filter, as the shared root context sees it.
pub struct RoutingFilter;

impl Filter for RoutingFilter {
    const NAME: &'static str = FILTER_NAME;
    type Policy = Routing;
    type Metrics = Metrics;

    fn compile(bytes: &[u8]) -> Result<Routing, ConfigError> {
        compile_config(bytes)
    }

    fn define_metrics(metrics: &mut dyn DefineMetrics) -> Metrics {
        Metrics::define(metrics)
    }

    fn steps(policy: &Rc<Routing>, metrics: Metrics) -> Box<dyn PolicySteps> {
        Box::new(RoutingSteps::new(Rc::clone(policy), metrics))
    }
}
