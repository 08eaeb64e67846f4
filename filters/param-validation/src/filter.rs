//! param-validation as a host loads it: its `.wasm` filter, the gateway
//! module's section and the native module. The request's work is
//! [`ValidationSteps`], written against the stream seam. Re-exported from
//! the crate root.

use crate::policy::Validation;
use crate::steps::{Metrics, ValidationSteps};
use crate::*;
use gateway_common::config::ConfigError;
use gateway_common::hosting::Filter;
use gateway_common::metrics::DefineMetrics;
use gateway_common::stream::PolicySteps;
use std::rc::Rc;

/// The filter, as the shared root context sees it.
pub struct ParamValidationFilter;

impl Filter for ParamValidationFilter {
    const NAME: &'static str = FILTER_NAME;
    type Policy = Validation;
    type Metrics = Metrics;

    fn compile(bytes: &[u8]) -> Result<Validation, ConfigError> {
        compile_config(bytes)
    }

    fn define_metrics(metrics: &mut dyn DefineMetrics) -> Metrics {
        Metrics::define(metrics)
    }

    fn steps(validation: &Rc<Validation>, metrics: Metrics) -> Box<dyn PolicySteps> {
        Box::new(ValidationSteps::new(Rc::clone(validation), metrics))
    }
}
