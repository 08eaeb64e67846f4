//! The proxy-wasm adapter of ip-acl: the filter as a `.wasm` module and as
//! the gateway module's section. The request's work is [`IpAclSteps`],
//! written against the stream seam. Re-exported from the crate root.

use crate::policy::{IpAcl, IpAclSteps, Metrics};
use crate::*;
use gateway_common::adapter::Filter;
use gateway_common::config::ConfigError;
use gateway_common::metrics::ProxyWasmMetrics;
use gateway_common::stream::PolicySteps;
use std::rc::Rc;

/// The filter, as the shared root context sees it.
pub struct IpAclFilter;

impl Filter for IpAclFilter {
    const NAME: &'static str = FILTER_NAME;
    type Policy = IpAcl;
    type Metrics = Metrics;

    fn compile(bytes: &[u8]) -> Result<IpAcl, ConfigError> {
        compile_config(bytes)
    }

    fn define_metrics() -> Metrics {
        Metrics::define(&mut ProxyWasmMetrics)
    }

    fn steps(acl: &Rc<IpAcl>, metrics: Metrics) -> Box<dyn PolicySteps> {
        Box::new(IpAclSteps {
            acl: Rc::clone(acl),
            metrics,
        })
    }
}

#[cfg(feature = "entrypoint")]
gateway_common::declare_root!(
    gateway_common::adapter::RootRank::Filter,
    gateway_common::adapter::FilterRoot::<IpAclFilter>::default()
);
