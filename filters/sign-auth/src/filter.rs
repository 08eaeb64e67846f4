//! sign-auth as a host loads it: its `.wasm` filter, the gateway module's
//! section and the native module. The request's work is [`SignAuthSteps`],
//! written against the stream seam. Re-exported from the crate root.

use crate::policy::SignAuth;
use crate::steps::{Metrics, SignAuthSteps};
use crate::*;
use gateway_common::config::ConfigError;
use gateway_common::hosting::{Filter, RootHost};
use gateway_common::metrics::DefineMetrics;
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

    fn prepare(policy: &SignAuth, host: &mut dyn RootHost) -> Result<(), String> {
        policy
            .nonce_table()
            .initialize(host.shared_data())
            .map_err(|e| format!("cannot create the nonce table in shared data: {e:?}"))
    }

    fn define_metrics(metrics: &mut dyn DefineMetrics) -> Metrics {
        Metrics::define(metrics)
    }

    fn uses_fleet(policy: &SignAuth) -> bool {
        policy.fleet().is_some()
    }

    fn steps(policy: &Rc<SignAuth>, metrics: Metrics) -> Box<dyn PolicySteps> {
        Box::new(SignAuthSteps::new(Rc::clone(policy), metrics))
    }
}
