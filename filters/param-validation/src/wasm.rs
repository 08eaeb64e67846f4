//! The proxy-wasm adapter of param-validation: the filter as a `.wasm`
//! module and as the gateway module's section. The request's work is
//! [`ValidationSteps`], written against the stream seam. Re-exported from
//! the crate root.

use crate::policy::Validation;
use crate::steps::{Metrics, ValidationSteps};
use crate::*;
use gateway_common::adapter::Filter;
use gateway_common::config::ConfigError;
use gateway_common::metrics::ProxyWasmMetrics;
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

    fn define_metrics() -> Metrics {
        Metrics::define(&mut ProxyWasmMetrics)
    }

    fn steps(validation: &Rc<Validation>, metrics: Metrics) -> Box<dyn PolicySteps> {
        Box::new(ValidationSteps::new(Rc::clone(validation), metrics))
    }
}

#[cfg(feature = "entrypoint")]
gateway_common::declare_root!(
    gateway_common::adapter::RootRank::Filter,
    gateway_common::adapter::FilterRoot::<ParamValidationFilter>::default()
);
