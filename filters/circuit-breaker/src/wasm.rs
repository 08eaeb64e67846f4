//! The proxy-wasm adapter of circuit-breaker: the filter as a `.wasm` module
//! and as the gateway module's section. Re-exported from the crate root.

use crate::breaker::{Admission, CallOutcome, State, Ticket, Transition};
use crate::degraded::WhenOpen;
use crate::fleet::{Claim, ClaimVerdict, FleetAdmission, Outcomes, SyncPlan, View};
use crate::outcome::ResponseFacts;
use crate::policy::{now_ms, CircuitBreaker, Rule};
use crate::*;
use gateway_common::adapter::{self, Filter};
use gateway_common::config::ConfigError;
use gateway_common::fleet::client::{self as fleet_client, Waiting};
use gateway_common::fleet::{FailureMode, FleetMetrics};
use gateway_common::host::ProxyWasmHost;
use gateway_common::metrics::{Counter, Gauge};
use gateway_common::store::{ProxyWasmStore, StoreError};
use gateway_common::stream::PolicySteps;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};
use std::cell::OnceCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A rule's counters, `gw.circuit_breaker.<rule>.<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleCounter {
    Opened,
    HalfOpened,
    Closed,
    /// Calls answered with the degraded response.
    Responded,
    /// Calls routed to the fallback.
    FellBack,
    Probes,
    Succeeded,
    Failed,
    Slow,
}

impl RuleCounter {
    pub const ALL: [RuleCounter; 9] = [
        RuleCounter::Opened,
        RuleCounter::HalfOpened,
        RuleCounter::Closed,
        RuleCounter::Responded,
        RuleCounter::FellBack,
        RuleCounter::Probes,
        RuleCounter::Succeeded,
        RuleCounter::Failed,
        RuleCounter::Slow,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RuleCounter::Opened => "transitions.open",
            RuleCounter::HalfOpened => "transitions.half_open",
            RuleCounter::Closed => "transitions.closed",
            RuleCounter::Responded => "degraded.respond",
            RuleCounter::FellBack => "degraded.fallback",
            RuleCounter::Probes => "probes",
            RuleCounter::Succeeded => "calls.success",
            RuleCounter::Failed => "calls.failure",
            RuleCounter::Slow => "calls.slow",
        }
    }
}

/// A rule's gauges: its state (0 closed, 1 open, 2 half-open) and the
/// duration of its latest opening.
pub const STATE_GAUGE: &str = "state";
pub const OPEN_DURATION_GAUGE: &str = "open_duration_ms";

/// One rule's metric handles, defined when the configuration loads.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuleMetrics {
    counters: [Counter; RuleCounter::ALL.len()],
    state: Gauge,
    open_duration_ms: Gauge,
}

impl RuleMetrics {
    pub fn define(rule: &str) -> Self {
        Self {
            counters: RuleCounter::ALL
                .map(|counter| Counter::define(FILTER_NAME, &format!("{rule}.{}", counter.name()))),
            state: Gauge::define(FILTER_NAME, &format!("{rule}.{STATE_GAUGE}")),
            open_duration_ms: Gauge::define(FILTER_NAME, &format!("{rule}.{OPEN_DURATION_GAUGE}")),
        }
    }

    fn inc(&self, counter: RuleCounter) {
        self.counters[counter as usize].inc();
    }

    fn count_call(&self, outcome: CallOutcome) {
        self.inc(if outcome.failed {
            RuleCounter::Failed
        } else {
            RuleCounter::Succeeded
        });
        if outcome.slow {
            self.inc(RuleCounter::Slow);
        }
    }

    fn count_transition(&self, transition: &Transition) {
        self.state.set(transition.to.gauge_value());
        match transition.to {
            State::Open => self.inc(RuleCounter::Opened),
            State::HalfOpen => self.inc(RuleCounter::HalfOpened),
            State::Closed => self.inc(RuleCounter::Closed),
        }
        if let Some(ms) = transition.open_ms {
            self.open_duration_ms.set(ms);
        }
    }
}

/// The filter-wide counters.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    /// Shared data failed (or stayed contended) for a decision or an update.
    store_errors: Counter,
    fleet: FleetMetrics,
    /// Outcomes a worker could not keep while the fleet store did not answer.
    outcomes_dropped: Counter,
}

/// The compiled policy and, once loaded, the metrics of each rule (their
/// names come from the configuration) and the worker's fleet sync.
pub struct Deployed {
    breaker: CircuitBreaker,
    rule_metrics: OnceCell<Vec<RuleMetrics>>,
    /// The worker's sync state; in the native module one for every worker,
    /// which the main thread's root sends (see `adapter::shared_by_roots`).
    sync: OnceCell<Arc<Mutex<WorkerSync>>>,
}

/// A worker's part of the fleet breakers: its calls' outcomes not yet in
/// the store (one queue per rule), and the sync in flight.
struct WorkerSync {
    outcomes: Vec<Outcomes>,
    in_flight: Waiting<SyncPlan>,
}

impl WorkerSync {
    fn new(rules: usize) -> Self {
        Self {
            outcomes: vec![Outcomes::default(); rules],
            in_flight: Waiting::default(),
        }
    }
}

impl Deployed {
    fn metrics(&self, rule: usize) -> RuleMetrics {
        self.rule_metrics
            .get()
            .and_then(|metrics| metrics.get(rule))
            .copied()
            .unwrap_or_default()
    }

    fn worker_sync(&self) -> MutexGuard<'_, WorkerSync> {
        let rules = self.breaker.rules().len();
        adapter::lock(
            self.sync
                .get_or_init(|| Arc::new(Mutex::new(WorkerSync::new(rules)))),
        )
    }

    /// Queues a fleet rule's call outcome for the next sync.
    fn queue_outcome(
        &self,
        metrics: &Metrics,
        index: usize,
        rule: &Rule,
        now: u64,
        ticket: Ticket,
        outcome: Option<CallOutcome>,
    ) {
        let kept = self
            .worker_sync()
            .outcomes
            .get_mut(index)
            .is_some_and(|queue| queue.push(&rule.settings, now, ticket, outcome));
        if !kept {
            metrics.outcomes_dropped.inc();
        }
    }

    /// Sends the worker's outcomes and reads stale views, unless a sync is
    /// in flight.
    fn sync(&self, metrics: &Metrics) {
        let Some(fleet) = self.breaker.fleet() else {
            return;
        };
        let mut sync = self.worker_sync();
        if sync.in_flight.is_waiting() {
            return;
        }
        let views: Vec<Option<View>> = self
            .breaker
            .rules()
            .iter()
            .map(|rule| {
                rule.fleet_key()
                    .and_then(|_| rule.view(&ProxyWasmStore).ok().flatten())
            })
            .collect();
        let now = now_ms(&ProxyWasmHost);
        let (ops, plan) = self.breaker.sync_ops(
            fleet,
            &views,
            &mut sync.outcomes,
            now,
            gateway_common::host::random_u64(),
        );
        if ops.is_empty() {
            return;
        }
        match fleet_client::submit(&fleet.store, ops) {
            Ok(ticket) => sync.in_flight.start(plan, ticket),
            Err(failure) => {
                let (synced, _) =
                    self.breaker
                        .conclude_sync(plan, &Err(failure.clone()), &mut sync.outcomes);
                metrics.outcomes_dropped.add(synced.dropped);
                metrics
                    .fleet
                    .call_failed(FILTER_NAME, &failure, fleet.failure_mode, now);
            }
        }
    }

    /// The sync's answer, if `token` brings it; returns whether it did.
    fn synced(&self, metrics: &Metrics, token: u32, body_size: usize) -> bool {
        let Some(fleet) = self.breaker.fleet() else {
            return false;
        };
        let answered = self.worker_sync().in_flight.answered(token, body_size);
        let Some((plan, _ticket, answer)) = answered else {
            return false;
        };
        let now = now_ms(&ProxyWasmHost);
        let (synced, failure) = {
            let mut sync = self.worker_sync();
            self.breaker
                .conclude_sync(plan, &answer, &mut sync.outcomes)
        };
        metrics.outcomes_dropped.add(synced.dropped);
        match &failure {
            Some(failure) => {
                metrics
                    .fleet
                    .call_failed(FILTER_NAME, failure, fleet.failure_mode, now)
            }
            None => metrics.fleet.answered(),
        }
        for update in &synced.updates {
            if let Some(rule) = self.breaker.rules().get(update.rule) {
                self.show_view(
                    metrics,
                    update.rule,
                    rule,
                    &update.view,
                    &update.transitions,
                );
            }
        }
        if synced.again {
            self.sync(metrics);
        }
        true
    }

    /// Keeps a view the store sent and reports the state change it brings:
    /// this worker's own `transitions` with their reasons, or the change
    /// read from the store.
    fn show_view(
        &self,
        metrics: &Metrics,
        index: usize,
        rule: &Rule,
        view: &View,
        transitions: &[Transition],
    ) {
        let rule_metrics = self.metrics(index);
        match rule.store_view(&ProxyWasmStore, view) {
            Ok(Some(before)) if before != view.breaker.state() => {
                if transitions.is_empty() {
                    let now = now_ms(&ProxyWasmHost);
                    report(rule, &rule_metrics, &fleet::observed(before, view, now));
                }
                for transition in transitions {
                    report(rule, &rule_metrics, transition);
                }
            }
            Ok(_) => {}
            Err(_) => metrics.store_errors.inc(),
        }
    }
}

/// Logs and counts a state change.
fn report(rule: &Rule, metrics: &RuleMetrics, transition: &Transition) {
    let level = if transition.to == State::Open {
        LogLevel::Warn
    } else {
        LogLevel::Info
    };
    let scope = if rule.fleet_key().is_some() {
        " (fleet)"
    } else {
        ""
    };
    adapter::log(
        level,
        &format!("{FILTER_NAME}: {}{scope}: {transition}", rule.name()),
    );
    metrics.count_transition(transition);
}

/// The filter, as the shared root context sees it.
pub struct CircuitBreakerFilter;

impl Filter for CircuitBreakerFilter {
    const NAME: &'static str = FILTER_NAME;
    type Policy = Deployed;
    type Metrics = Metrics;

    fn compile(bytes: &[u8]) -> Result<Deployed, ConfigError> {
        let breaker = compile_config(bytes)?;
        Ok(Deployed {
            breaker,
            rule_metrics: OnceCell::new(),
            sync: OnceCell::new(),
        })
    }

    fn prepare(deployed: &Deployed) -> Result<(), String> {
        let breaker = &deployed.breaker;
        let rules = breaker.rules().len();
        let _ = deployed
            .sync
            .set(adapter::shared_by_roots("circuit_breaker.sync", || {
                Mutex::new(WorkerSync::new(rules))
            }));
        breaker
            .initialize(&ProxyWasmStore, now_ms(&ProxyWasmHost))
            .map_err(|e| format!("cannot create the breakers in shared data: {e:?}"))?;
        let metrics: Vec<RuleMetrics> = breaker
            .rules()
            .iter()
            .map(|rule| {
                let metrics = RuleMetrics::define(rule.name());
                if let Ok(state) = rule.state(&ProxyWasmStore) {
                    metrics.state.set(state.gauge_value());
                }
                metrics
            })
            .collect();
        let _ = deployed.rule_metrics.set(metrics);
        Ok(())
    }

    fn define_metrics() -> Metrics {
        Metrics {
            store_errors: Counter::define(FILTER_NAME, "store_errors"),
            fleet: FleetMetrics::define(FILTER_NAME),
            outcomes_dropped: Counter::define(FILTER_NAME, "fleet.outcomes_dropped"),
        }
    }

    fn uses_fleet(deployed: &Deployed) -> bool {
        deployed.breaker.fleet().is_some()
    }

    /// Still a proxy-wasm context of its own (see `http_context`).
    fn steps(_: &Rc<Self::Policy>, _: Self::Metrics) -> Option<Box<dyn PolicySteps>> {
        None
    }

    fn http_context(deployed: Rc<Deployed>, metrics: Metrics) -> Box<dyn HttpContext> {
        Box::new(CircuitBreakerHttp {
            deployed,
            metrics,
            call: None,
            claim: Waiting::default(),
        })
    }

    fn tick_period(deployed: &Deployed) -> Option<Duration> {
        let fleet = deployed.breaker.fleet()?;
        Some(Duration::from_millis(fleet.sync_ms))
    }

    fn on_tick(deployed: &Deployed, metrics: Metrics) {
        let _reads = gateway_common::host::callback_scope();
        deployed.sync(&metrics);
    }

    fn on_http_call_response(
        deployed: &Deployed,
        metrics: Metrics,
        token: u32,
        body_size: usize,
    ) -> bool {
        let _reads = gateway_common::host::callback_scope();
        deployed.synced(&metrics, token, body_size)
    }
}

/// An admitted call, waiting for its outcome: the ticket of the breaker
/// that admitted it, and what else records it.
#[derive(Debug, Clone, Copy)]
struct Call {
    rule: usize,
    started_ms: u64,
    /// This Envoy's own breaker records it (every rule without fleet mode;
    /// a fleet rule under failure mode `local`).
    local: Option<Ticket>,
    /// The fleet breaker records it (a fleet rule).
    fleet: Option<Ticket>,
}

/// Which breakers record a call, by the one that admitted it.
#[derive(Debug, Clone, Copy)]
enum Admitted {
    /// This Envoy's own breaker; the fleet's too (counted) when its store
    /// failed and failure mode `local` decided.
    Locally { also_fleet: bool },
    /// The fleet breaker; under failure mode `local` the own breaker counts
    /// the call too, to decide when the store fails (the fleet's probe
    /// tickets mean nothing to it).
    ByFleet { also_local: bool },
    /// Failure mode `allow`: only the fleet counts it, once it answers.
    Unchecked,
}

impl Admitted {
    fn call(self, rule: usize, started_ms: u64, ticket: Ticket) -> Call {
        let (local, fleet) = match self {
            Admitted::Locally { also_fleet } => {
                (Some(ticket), also_fleet.then_some(Ticket::Counted))
            }
            Admitted::ByFleet { also_local } => {
                (also_local.then_some(Ticket::Counted), Some(ticket))
            }
            Admitted::Unchecked => (None, Some(Ticket::Counted)),
        };
        Call {
            rule,
            started_ms,
            local,
            fleet,
        }
    }
}

/// A claim on its way to the fleet store.
struct PendingClaim {
    rule: usize,
    claim: Claim,
    started_ms: u64,
}

/// Per-request context.
pub struct CircuitBreakerHttp {
    deployed: Rc<Deployed>,
    metrics: Metrics,
    call: Option<Call>,
    claim: Waiting<Box<PendingClaim>>,
}

impl CircuitBreakerHttp {
    /// A client cannot choose the fallback route by sending the marker.
    fn strip_fallback_markers(&self) {
        for name in self.deployed.breaker.fallback_headers() {
            if adapter::request_header(name).is_some() {
                adapter::set_request_header(name, None);
            }
        }
    }

    fn degrade(&self, rule: &Rule, metrics: &RuleMetrics, retry_after_ms: u64) -> Action {
        match rule.when_open() {
            WhenOpen::Respond(answer) => {
                metrics.inc(RuleCounter::Responded);
                let request_id = adapter::request_header("x-request-id");
                let rendered = answer.render(request_id.as_deref(), retry_after_ms);
                adapter::send_local_reply(
                    rendered.status,
                    rendered.header_pairs(answer.extra_headers()),
                    &rendered.body,
                );
                Action::Pause
            }
            WhenOpen::Fallback(route) => {
                metrics.inc(RuleCounter::FellBack);
                adapter::set_request_header(&route.header, Some(&route.value));
                // Envoy 1.40 already re-routes after a Wasm header change;
                // saying so explicitly keeps that true where it does not.
                let _ = proxy_wasm::hostcalls::call_foreign_function("clear_route_cache", None);
                Action::Continue
            }
        }
    }

    fn store_failed(&self, rule: &Rule, error: StoreError) -> Action {
        self.metrics.store_errors.inc();
        let mode = self.deployed.breaker.store_failure_mode();
        adapter::log(
            LogLevel::Debug,
            &format!(
                "{FILTER_NAME}: {}: shared data failed ({error:?}), store_failure_mode {mode:?}",
                rule.name()
            ),
        );
        match self.deployed.breaker.on_store_failure() {
            None => Action::Continue,
            Some(error) => {
                adapter::send_error(&error);
                Action::Pause
            }
        }
    }

    /// Records the admitted call's outcome: at the response headers, or at
    /// the end of the stream when none came. A fleet breaker's outcome is
    /// queued for the worker's next sync: no call, nothing waits for it.
    fn finish_call(&mut self) {
        let Some(call) = self.call.take() else {
            return;
        };
        let deployed = Rc::clone(&self.deployed);
        let Some(rule) = deployed.breaker.rules().get(call.rule) else {
            return;
        };
        let metrics = deployed.metrics(call.rule);
        let now = now_ms(&ProxyWasmHost);
        let answer = ResponseFacts::read(&ProxyWasmHost).answer();
        let outcome = rule.classify(answer, now.saturating_sub(call.started_ms));
        if let Some(outcome) = outcome {
            metrics.count_call(outcome);
        }
        if let Some(ticket) = call.fleet {
            deployed.queue_outcome(&self.metrics, call.rule, rule, now, ticket, outcome);
        }
        let Some(ticket) = call.local else {
            return;
        };
        match rule.finish(&ProxyWasmStore, now, ticket, outcome) {
            Ok(Some(transition)) => report(rule, &metrics, &transition),
            Ok(None) => {}
            Err(error) => {
                self.metrics.store_errors.inc();
                adapter::log(
                    LogLevel::Debug,
                    &format!(
                        "{FILTER_NAME}: {}: outcome not recorded, shared data failed ({error:?})",
                        rule.name()
                    ),
                );
            }
        }
    }

    /// Applies a decision: the call (started at `started_ms`) goes on and
    /// its outcome is awaited, or it gets the degraded answer.
    fn decide(
        &mut self,
        index: usize,
        admission: Admission,
        started_ms: u64,
        admitted: Admitted,
    ) -> Action {
        let deployed = Rc::clone(&self.deployed);
        let Some(rule) = deployed.breaker.rules().get(index) else {
            return Action::Continue;
        };
        let metrics = deployed.metrics(index);
        match admission {
            Admission::Admit(ticket) => {
                if let Ticket::Probe { .. } = ticket {
                    metrics.inc(RuleCounter::Probes);
                }
                self.call = Some(admitted.call(index, started_ms, ticket));
                Action::Continue
            }
            Admission::Reject { retry_after_ms } => self.degrade(rule, &metrics, retry_after_ms),
        }
    }

    /// Decides with this Envoy's own breaker.
    fn admit_locally(&mut self, index: usize, rule: &Rule, now: u64, also_fleet: bool) -> Action {
        let (admission, transition) = match rule.admit(&ProxyWasmStore, now) {
            Ok(decision) => decision,
            Err(error) => return self.store_failed(rule, error),
        };
        if let Some(transition) = transition {
            report(rule, &self.deployed.metrics(index), &transition);
        }
        self.decide(index, admission, now, Admitted::Locally { also_fleet })
    }

    /// A fleet rule whose store does not answer: the failure mode decides.
    fn by_failure_mode(
        &mut self,
        index: usize,
        rule: &Rule,
        now: u64,
        mode: FailureMode,
    ) -> Action {
        self.metrics.fleet.decided_by(mode);
        match mode {
            FailureMode::Local => self.admit_locally(index, rule, now, true),
            FailureMode::Allow => {
                let admission = Admission::Admit(Ticket::Counted);
                self.decide(index, admission, now, Admitted::Unchecked)
            }
            FailureMode::Deny => {
                let retry_after_ms = self.deployed.breaker.fleet().map_or(1000, |f| f.sync_ms);
                let admission = Admission::Reject { retry_after_ms };
                self.decide(index, admission, now, Admitted::Unchecked)
            }
        }
    }

    /// How the fleet breaker's admitted calls are recorded.
    fn by_fleet(&self) -> Admitted {
        let also_local = self
            .deployed
            .breaker
            .fleet()
            .is_some_and(|f| f.failure_mode == FailureMode::Local);
        Admitted::ByFleet { also_local }
    }

    /// Decides a fleet rule's call from this Envoy's view, or sends the
    /// claim its decision needs.
    fn admit_fleet(&mut self, index: usize, rule: &Rule, now: u64) -> Action {
        let deployed = Rc::clone(&self.deployed);
        let Some(fleet) = deployed.breaker.fleet() else {
            return self.admit_locally(index, rule, now, false);
        };
        let view = match rule.view(&ProxyWasmStore) {
            Ok(view) => view,
            Err(error) => return self.store_failed(rule, error),
        };
        match rule.admit_fleet(view, fleet, now) {
            FleetAdmission::Decided(admission) => {
                self.decide(index, admission, now, self.by_fleet())
            }
            FleetAdmission::Stale => self.by_failure_mode(index, rule, now, fleet.failure_mode),
            FleetAdmission::Claim(claim) => {
                match fleet_client::submit(
                    &fleet.store,
                    rule.claim_ops(&claim, gateway_common::host::random_u64()),
                ) {
                    Ok(ticket) => {
                        let holds = ticket.holds_request();
                        let pending = PendingClaim {
                            rule: index,
                            claim: *claim,
                            started_ms: now,
                        };
                        self.claim.start(Box::new(pending), ticket);
                        if holds {
                            Action::Pause
                        } else {
                            Action::Continue
                        }
                    }
                    Err(failure) => {
                        self.metrics.fleet.call_failed(
                            FILTER_NAME,
                            &failure,
                            fleet.failure_mode,
                            now,
                        );
                        self.by_failure_mode(index, rule, now, fleet.failure_mode)
                    }
                }
            }
        }
    }

    /// Decides a claimed call from the store's answer.
    fn conclude_claim(&mut self, pending: PendingClaim, answer: fleet_client::Answer) -> Action {
        let deployed = Rc::clone(&self.deployed);
        let index = pending.rule;
        let (Some(rule), Some(fleet)) = (
            deployed.breaker.rules().get(index),
            deployed.breaker.fleet(),
        ) else {
            return Action::Continue;
        };
        let now = now_ms(&ProxyWasmHost);
        match rule.conclude_claim(pending.claim, &answer) {
            ClaimVerdict::Taken {
                admission,
                transition,
                view,
            } => {
                self.metrics.fleet.answered();
                deployed.show_view(&self.metrics, index, rule, &view, transition.as_slice());
                self.decide(index, admission, pending.started_ms, self.by_fleet())
            }
            ClaimVerdict::Lost {
                retry_after_ms,
                view,
            } => {
                self.metrics.fleet.answered();
                deployed.show_view(&self.metrics, index, rule, &view, &[]);
                let admission = Admission::Reject { retry_after_ms };
                self.decide(index, admission, pending.started_ms, self.by_fleet())
            }
            // An earlier policy's check refused the request; it answers.
            ClaimVerdict::NotRun => Action::Pause,
            ClaimVerdict::Failed(failure) => {
                self.metrics
                    .fleet
                    .call_failed(FILTER_NAME, &failure, fleet.failure_mode, now);
                self.by_failure_mode(index, rule, pending.started_ms, fleet.failure_mode)
            }
        }
    }
}

impl Context for CircuitBreakerHttp {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _: usize) {
        let Some((pending, ticket, answer)) = self.claim.answered(token, body_size) else {
            return;
        };
        let _reads = gateway_common::host::callback_scope();
        let action = self.conclude_claim(*pending, answer);
        if ticket.holds_request() && action == Action::Continue {
            fleet_client::resume_request();
        }
    }
}

impl HttpContext for CircuitBreakerHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let _reads = gateway_common::host::callback_scope();
        self.strip_fallback_markers();
        let deployed = Rc::clone(&self.deployed);
        let Some((index, rule)) = deployed.breaker.matching_rule(&ProxyWasmHost) else {
            return Action::Continue;
        };
        let now = now_ms(&ProxyWasmHost);
        if rule.fleet_key().is_some() {
            self.admit_fleet(index, rule, now)
        } else {
            self.admit_locally(index, rule, now, false)
        }
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        if self.claim.holds_request() {
            // Holding the headers alone would not hold the body back.
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.claim.holds_request() {
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let _reads = gateway_common::host::callback_scope();
        self.finish_call();
        Action::Continue
    }

    fn on_log(&mut self) {
        let _reads = gateway_common::host::callback_scope();
        self.finish_call();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_counter_has_its_own_name() {
        let names: Vec<&str> = RuleCounter::ALL.iter().map(|c| c.name()).collect();
        for (i, counter) in RuleCounter::ALL.iter().enumerate() {
            assert_eq!(*counter as usize, i);
            assert!(!names[i + 1..].contains(&names[i]));
            assert!(![STATE_GAUGE, OPEN_DURATION_GAUGE].contains(&names[i]));
        }
    }
}

#[cfg(feature = "entrypoint")]
gateway_common::declare_root!(
    gateway_common::adapter::RootRank::Filter,
    gateway_common::adapter::FilterRoot::<CircuitBreakerFilter>::default()
);
