//! request-mapping as a host loads it: its `.wasm` filter, the gateway
//! module's section and the native module. The request's work is
//! [`MappingSteps`], written against the stream seam. Re-exported from the
//! crate root.

use crate::policy::Mapping;
use crate::steps::{MappingSteps, Metrics};
use crate::*;
use gateway_common::config::ConfigError;
use gateway_common::hosting::Filter;
use gateway_common::metrics::DefineMetrics;
use gateway_common::stream::PolicySteps;
use std::rc::Rc;

/// The filter, as the shared root context sees it.
pub struct RequestMappingFilter;

impl Filter for RequestMappingFilter {
    const NAME: &'static str = FILTER_NAME;
    type Policy = Mapping;
    type Metrics = Metrics;

    fn compile(bytes: &[u8]) -> Result<Mapping, ConfigError> {
        compile_config(bytes)
    }

    fn define_metrics(metrics: &mut dyn DefineMetrics) -> Metrics {
        Metrics::define(metrics)
    }

    fn steps(mapping: &Rc<Mapping>, metrics: Metrics) -> Box<dyn PolicySteps> {
        Box::new(MappingSteps::new(Rc::clone(mapping), metrics))
    }
}
