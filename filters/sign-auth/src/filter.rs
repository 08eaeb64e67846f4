//! sign-auth as a host loads it: its `.wasm` filter, the gateway module's
//! section and the native module. The request's work is [`SignAuthSteps`],
//! written against the stream seam. Re-exported from the crate root.

use crate::jwks::{self, Fetched, JwksState};
use crate::jwt::Jwt;
use crate::policy::SignAuth;
use crate::steps::{Metrics, SignAuthSteps};
use crate::*;
use gateway_common::config::ConfigError;
use gateway_common::hosting::{self, Filter, RootHost};

use gateway_common::metrics::DefineMetrics;
use gateway_common::stream::PolicySteps;
use gateway_common::stream::{CallAnswer, Level};
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Duration;

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
            .map_err(|e| format!("cannot create the nonce table in shared data: {e:?}"))?;
        if let Some(jwt) = policy.jwt() {
            jwt.initialize(host.shared_data())
                .map_err(|e| format!("cannot create the token table in shared data: {e:?}"))?;
            let issuers = jwt.issuers.len();
            let state = hosting::shared_by_roots(host, "sign_auth.jwks", || {
                Mutex::new(JwksState::new(issuers))
            });
            let _ = jwt.state.set(state);
        }
        Ok(())
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

    /// The timer fetches the issuers' keys, when some are fetched.
    fn tick_period(policy: &SignAuth) -> Option<Duration> {
        policy
            .jwt()
            .filter(|jwt| jwt.issuers.iter().any(|issuer| issuer.fetch.is_some()))
            .map(|_| JWKS_TICK)
    }

    fn on_tick(policy: &SignAuth, metrics: Metrics, host: &mut dyn RootHost) {
        let Some(jwt) = policy.jwt() else {
            return;
        };
        let now = hosting::root_now_ms(host);
        for failed in jwks::tick(jwt, host, now) {
            report(jwt, &metrics, host, &failed);
        }
    }

    fn on_call_answer(
        policy: &SignAuth,
        metrics: Metrics,
        token: u32,
        answer: &dyn CallAnswer,
        host: &mut dyn RootHost,
    ) -> bool {
        let Some(jwt) = policy.jwt() else {
            return false;
        };
        let now = hosting::root_now_ms(host);
        match jwks::answered(jwt, token, answer, host, now) {
            Some(fetched) => {
                report(jwt, &metrics, host, &fetched);
                true
            }
            None => false,
        }
    }
}

/// How often the root looks whether a fetch of keys is due.
const JWKS_TICK: Duration = Duration::from_millis(500);

/// Counts and logs what a fetch of keys did.
fn report(jwt: &Jwt, metrics: &Metrics, host: &mut dyn RootHost, fetched: &Fetched) {
    let name = |issuer: &usize| jwt.issuers.get(*issuer).map_or("?", |i| i.name.as_str());
    match fetched {
        Fetched::Keys { issuer, count } => {
            host.increment(metrics.jwks_fetched, 1);
            host.log(
                Level::Info,
                format_args!(
                    "{FILTER_NAME}: issuer `{}`: {count} keys fetched",
                    name(issuer)
                ),
            );
        }
        Fetched::Discovered { .. } => {}
        Fetched::Failed { issuer, why } => {
            host.increment(metrics.jwks_failed, 1);
            host.log(
                Level::Warn,
                format_args!(
                    "{FILTER_NAME}: issuer `{}`: fetching keys failed ({why}); the keys there are stay",
                    name(issuer)
                ),
            );
        }
    }
}
