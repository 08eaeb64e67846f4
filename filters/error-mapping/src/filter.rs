//! error-mapping as a host loads it: its `.wasm` filter, the gateway
//! module's section and the native module. The request's work is
//! [`ErrorMappingSteps`], written against the stream seam. Re-exported
//! from the crate root.

use crate::policy::ErrorMapping;
use crate::steps::{ErrorMappingSteps, Metrics};
use crate::*;
use gateway_common::config::ConfigError;
use gateway_common::hosting::Filter;
use gateway_common::metrics::DefineMetrics;
use gateway_common::stream::PolicySteps;
use std::rc::Rc;

/// The filter, as the shared root context sees it.
pub struct ErrorMappingFilter;

impl Filter for ErrorMappingFilter {
    const NAME: &'static str = FILTER_NAME;
    type Policy = ErrorMapping;
    type Metrics = Metrics;

    fn compile(bytes: &[u8]) -> Result<ErrorMapping, ConfigError> {
        compile_config(bytes)
    }

    fn define_metrics(metrics: &mut dyn DefineMetrics) -> Metrics {
        Metrics::define(metrics)
    }

    fn steps(policy: &Rc<ErrorMapping>, metrics: Metrics) -> Box<dyn PolicySteps> {
        Box::new(ErrorMappingSteps::new(Rc::clone(policy), metrics))
    }
}
