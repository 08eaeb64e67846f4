//! The proxy-wasm adapter of sign-auth: the filter as a `.wasm` module
//! and as the gateway module's section. The request's work is
//! [`SignAuthSteps`], written against the stream seam. Re-exported from the
//! crate root.

use crate::policy::SignAuth;
use crate::steps::{Metrics, SignAuthSteps};
use crate::*;
use gateway_common::adapter::Filter;
use gateway_common::config::ConfigError;
use gateway_common::metrics::ProxyWasmMetrics;
use gateway_common::store::ProxyWasmStore;
use gateway_common::stream::PolicySteps;
use std::rc::Rc;

/// The filter, as the shared root context sees it.
pub struct SignAuthFilter;

impl Filter for SignAuthFilter {
    const NAME: &'static str = FILTER_NAME;
    type Policy = SignAuth;
    type Metrics = Metrics;

    fn compile(bytes: &[u8]) -> Result<SignAuth, ConfigError> {
        compile_config(bytes)
    }

    fn prepare(policy: &SignAuth) -> Result<(), String> {
        policy
            .nonce_table()
            .initialize(&ProxyWasmStore)
            .map_err(|e| format!("cannot create the nonce table in shared data: {e:?}"))
    }

    fn define_metrics() -> Metrics {
        Metrics::define(&mut ProxyWasmMetrics)
    }

    fn uses_fleet(policy: &SignAuth) -> bool {
        policy.fleet().is_some()
    }

    fn steps(policy: &Rc<SignAuth>, metrics: Metrics) -> Box<dyn PolicySteps> {
        Box::new(SignAuthSteps::new(Rc::clone(policy), metrics))
    }
}

#[cfg(feature = "entrypoint")]
gateway_common::declare_root!(
    gateway_common::adapter::RootRank::Filter,
    gateway_common::adapter::FilterRoot::<SignAuthFilter>::default()
);
