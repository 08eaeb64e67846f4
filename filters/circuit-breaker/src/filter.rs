//! circuit-breaker as a host loads it: its `.wasm` filter, the gateway
//! module's section and the native module. The request's work is
//! [`BreakerSteps`], written against the stream seam; here is the worker's
//! fleet sync, which the root sends on its timer. Re-exported from the crate
//! root.

use crate::fleet::{Outcomes, SyncPlan};
use crate::steps::{BreakerSteps, Deployed, Metrics};
use crate::*;
use gateway_common::config::ConfigError;
use gateway_common::fleet::client::{self as fleet_client, Waiting};
use gateway_common::hosting::{self, Filter, RootHost};
use gateway_common::metrics::DefineMetrics;
use gateway_common::stream::{CallAnswer, PolicySteps};
use gateway_common::sync::lock;
use std::cell::OnceCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The deployed policy and the worker's fleet sync in flight: in the
/// native module one for every worker, which the main thread's root sends
/// (see `adapter::shared_by_roots`).
pub struct Loaded {
    deployed: Rc<Deployed>,
    sync: OnceCell<Arc<Mutex<Waiting<SyncPlan>>>>,
}

impl Loaded {
    /// Sends the worker's outcomes and reads stale views, unless a sync is
    /// in flight.
    fn sync(&self, metrics: &Metrics, host: &mut dyn RootHost) {
        let breaker = &self.deployed.breaker;
        let Some(fleet) = breaker.fleet() else {
            return;
        };
        let Some(in_flight) = self.sync.get() else {
            return;
        };
        let mut in_flight = lock(in_flight);
        if in_flight.is_waiting() {
            return;
        }
        let views: Vec<_> = breaker
            .rules()
            .iter()
            .map(|rule| {
                rule.fleet_key()
                    .and_then(|_| rule.view(host.shared_data()).ok().flatten())
            })
            .collect();
        let now = hosting::root_now_ms(host);
        let (ops, plan) = {
            let mut outcomes = self.deployed.outcomes();
            breaker.sync_ops(
                fleet,
                &views,
                &mut outcomes,
                now,
                gateway_common::host::random_u64(),
            )
        };
        if ops.is_empty() {
            return;
        }
        match fleet_client::submit(&fleet.store, ops, host) {
            Ok(ticket) => in_flight.start(plan, ticket),
            Err(failure) => {
                let (synced, _) = breaker.conclude_sync(
                    plan,
                    &Err(failure.clone()),
                    &mut self.deployed.outcomes(),
                );
                host.increment(metrics.outcomes_dropped, synced.dropped);
                metrics
                    .fleet
                    .count_failure(host, FILTER_NAME, &failure, fleet.failure_mode, now);
            }
        }
    }

    /// The sync's answer, if `token` brings it; returns whether it did.
    fn synced(
        &self,
        metrics: &Metrics,
        token: u32,
        answer: &dyn CallAnswer,
        host: &mut dyn RootHost,
    ) -> bool {
        let breaker = &self.deployed.breaker;
        let (Some(fleet), Some(in_flight)) = (breaker.fleet(), self.sync.get()) else {
            return false;
        };
        let answered = lock(in_flight).answered(token, answer, host);
        let Some((plan, _ticket, answer)) = answered else {
            return false;
        };
        let now = hosting::root_now_ms(host);
        let (synced, failure) = breaker.conclude_sync(plan, &answer, &mut self.deployed.outcomes());
        host.increment(metrics.outcomes_dropped, synced.dropped);
        match &failure {
            Some(failure) => {
                metrics
                    .fleet
                    .count_failure(host, FILTER_NAME, failure, fleet.failure_mode, now)
            }
            None => metrics.fleet.count_answered(host),
        }
        for update in &synced.updates {
            let changes = self.deployed.keep_view(
                host.shared_data(),
                update.rule,
                &update.view,
                &update.transitions,
                now,
            );
            self.deployed
                .report_changes(host, metrics, update.rule, changes);
        }
        if synced.again {
            self.sync(metrics, host);
        }
        true
    }
}

/// The filter, as the shared root context sees it.
pub struct CircuitBreakerFilter;

impl Filter for CircuitBreakerFilter {
    const NAME: &'static str = FILTER_NAME;
    type Policy = Loaded;
    type Metrics = Metrics;

    fn compile(bytes: &[u8]) -> Result<Loaded, ConfigError> {
        Ok(Loaded {
            deployed: Rc::new(Deployed::new(compile_config(bytes)?)),
            sync: OnceCell::new(),
        })
    }

    fn prepare(loaded: &Loaded, host: &mut dyn RootHost) -> Result<(), String> {
        let deployed = &loaded.deployed;
        let _ = loaded.sync.set(hosting::shared_by_roots(
            host,
            "circuit_breaker.sync",
            || Mutex::new(Waiting::default()),
        ));
        let outcomes: Arc<Mutex<Vec<Outcomes>>> =
            hosting::shared_by_roots(host, "circuit_breaker.outcomes", || deployed.new_outcomes());
        deployed.keep_outcomes_in(outcomes);
        deployed
            .breaker
            .initialize(host.shared_data(), hosting::root_now_ms(host))
            .map_err(|e| format!("cannot create the breakers in shared data: {e:?}"))?;
        deployed.define_rule_metrics(host);
        let store = host.shared_data();
        deployed.show_rule_states(host, store);
        Ok(())
    }

    fn define_metrics(metrics: &mut dyn DefineMetrics) -> Metrics {
        Metrics::define(metrics)
    }

    fn uses_fleet(loaded: &Loaded) -> bool {
        loaded.deployed.breaker.fleet().is_some()
    }

    fn steps(loaded: &Rc<Loaded>, metrics: Metrics) -> Box<dyn PolicySteps> {
        Box::new(BreakerSteps::new(Rc::clone(&loaded.deployed), metrics))
    }

    fn tick_period(loaded: &Loaded) -> Option<Duration> {
        let fleet = loaded.deployed.breaker.fleet()?;
        Some(Duration::from_millis(fleet.sync_ms))
    }

    fn on_tick(loaded: &Loaded, metrics: Metrics, host: &mut dyn RootHost) {
        loaded.sync(&metrics, host);
    }

    fn on_call_answer(
        loaded: &Loaded,
        metrics: Metrics,
        token: u32,
        answer: &dyn CallAnswer,
        host: &mut dyn RootHost,
    ) -> bool {
        loaded.synced(&metrics, token, answer, host)
    }
}
