//! circuit-breaker's part in one request, written against the stream seam:
//! on the request headers the matching rule's breaker (this Envoy's, or
//! the fleet's through this Envoy's view of it, claiming a probe from the
//! store when its decision needs one) admits the call or degrades it (the
//! configured answer, or the fallback route); the call's outcome is
//! recorded at the response headers, or when the stream ends without one.
//! A fleet rule's outcomes wait in the worker's queue for its next sync,
//! which the host's adapter sends.

use crate::breaker::{Admission, CallOutcome, State, Ticket, Transition};
use crate::degraded::WhenOpen;
use crate::fleet::{self, Claim, ClaimVerdict, FleetAdmission, Outcomes, View};
use crate::outcome::ResponseFacts;
use crate::policy::{now_ms, CircuitBreaker, Rule};
use crate::FILTER_NAME;
use gateway_common::fleet::wire::{Answer, Failure};
use gateway_common::fleet::{FailureMode, FleetMetrics};
use gateway_common::metrics::{Counter, DefineMetrics, Gauge};
use gateway_common::store::{SharedStore, StoreError};
use gateway_common::stream::{send_error, Level, PolicySteps, Stream, Telemetry, Verdict};
use gateway_common::sync::lock;
use std::cell::OnceCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};

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
    pub fn define(host: &mut dyn DefineMetrics, rule: &str) -> Self {
        Self {
            counters: RuleCounter::ALL.map(|counter| {
                host.define_counter(FILTER_NAME, &format!("{rule}.{}", counter.name()))
            }),
            state: host.define_gauge(FILTER_NAME, &format!("{rule}.{STATE_GAUGE}")),
            open_duration_ms: host
                .define_gauge(FILTER_NAME, &format!("{rule}.{OPEN_DURATION_GAUGE}")),
        }
    }

    fn inc(&self, telemetry: &mut dyn Telemetry, counter: RuleCounter) {
        telemetry.increment(self.counters[counter as usize], 1);
    }

    fn count_call(&self, telemetry: &mut dyn Telemetry, outcome: CallOutcome) {
        let counter = if outcome.failed {
            RuleCounter::Failed
        } else {
            RuleCounter::Succeeded
        };
        self.inc(telemetry, counter);
        if outcome.slow {
            self.inc(telemetry, RuleCounter::Slow);
        }
    }

    fn count_transition(&self, telemetry: &mut dyn Telemetry, transition: &Transition) {
        telemetry.set_gauge(self.state, transition.to.gauge_value());
        let counter = match transition.to {
            State::Open => RuleCounter::Opened,
            State::HalfOpen => RuleCounter::HalfOpened,
            State::Closed => RuleCounter::Closed,
        };
        self.inc(telemetry, counter);
        if let Some(ms) = transition.open_ms {
            telemetry.set_gauge(self.open_duration_ms, ms);
        }
    }
}

/// The filter-wide counters.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    /// Shared data failed (or stayed contended) for a decision or an update.
    pub store_errors: Counter,
    pub fleet: FleetMetrics,
    /// Outcomes a worker could not keep while the fleet store did not answer.
    pub outcomes_dropped: Counter,
}

impl Metrics {
    pub fn define(host: &mut dyn DefineMetrics) -> Self {
        Self {
            store_errors: host.define_counter(FILTER_NAME, "store_errors"),
            fleet: FleetMetrics::define_with(host, FILTER_NAME),
            outcomes_dropped: host.define_counter(FILTER_NAME, "fleet.outcomes_dropped"),
        }
    }
}

/// The compiled policy and, once loaded, the metrics of each rule (their
/// names come from the configuration) and the worker's queues of fleet
/// outcomes (one per rule) waiting for the next sync.
pub struct Deployed {
    pub breaker: CircuitBreaker,
    rule_metrics: OnceCell<Vec<RuleMetrics>>,
    outcomes: OnceCell<Arc<Mutex<Vec<Outcomes>>>>,
}

impl Deployed {
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self {
            breaker,
            rule_metrics: OnceCell::new(),
            outcomes: OnceCell::new(),
        }
    }

    /// Empty queues of fleet outcomes, one per rule.
    pub fn new_outcomes(&self) -> Mutex<Vec<Outcomes>> {
        Mutex::new(vec![Outcomes::default(); self.breaker.rules().len()])
    }

    /// Where the worker's fleet outcomes wait (in the native module, one
    /// place for every worker, which the main thread's root sends).
    pub fn keep_outcomes_in(&self, outcomes: Arc<Mutex<Vec<Outcomes>>>) {
        let _ = self.outcomes.set(outcomes);
    }

    /// Defines each rule's metrics.
    pub fn define_rule_metrics(&self, host: &mut dyn DefineMetrics) {
        let metrics = self
            .breaker
            .rules()
            .iter()
            .map(|rule| RuleMetrics::define(host, rule.name()))
            .collect();
        let _ = self.rule_metrics.set(metrics);
    }

    /// Shows each rule's state in its gauge.
    pub fn show_rule_states(&self, telemetry: &mut dyn Telemetry, store: &dyn SharedStore) {
        for (index, rule) in self.breaker.rules().iter().enumerate() {
            if let Ok(state) = rule.state(store) {
                telemetry.set_gauge(self.metrics(index).state, state.gauge_value());
            }
        }
    }

    pub fn metrics(&self, rule: usize) -> RuleMetrics {
        self.rule_metrics
            .get()
            .and_then(|metrics| metrics.get(rule))
            .copied()
            .unwrap_or_default()
    }

    /// The worker's queues of fleet outcomes.
    pub fn outcomes(&self) -> MutexGuard<'_, Vec<Outcomes>> {
        lock(self.outcomes.get_or_init(|| Arc::new(self.new_outcomes())))
    }

    /// Queues a fleet rule's call outcome for the next sync.
    #[allow(clippy::too_many_arguments)]
    fn queue_outcome(
        &self,
        telemetry: &mut dyn Telemetry,
        metrics: &Metrics,
        index: usize,
        rule: &Rule,
        now: u64,
        ticket: Ticket,
        outcome: Option<CallOutcome>,
    ) {
        let kept = self
            .outcomes()
            .get_mut(index)
            .is_some_and(|queue| queue.push(&rule.settings, now, ticket, outcome));
        if !kept {
            telemetry.increment(metrics.outcomes_dropped, 1);
        }
    }

    /// Keeps a view the store sent; the state changes it brings, to
    /// [`Deployed::report_changes`]: this worker's own `transitions` with
    /// their reasons, or the change read from the store.
    pub fn keep_view(
        &self,
        store: &dyn SharedStore,
        index: usize,
        view: &View,
        transitions: &[Transition],
        now: u64,
    ) -> Result<Vec<Transition>, StoreError> {
        let Some(rule) = self.breaker.rules().get(index) else {
            return Ok(Vec::new());
        };
        match rule.store_view(store, view)? {
            Some(before) if before != view.breaker.state() => {
                if transitions.is_empty() {
                    Ok(vec![fleet::observed(before, view, now)])
                } else {
                    Ok(transitions.to_vec())
                }
            }
            _ => Ok(Vec::new()),
        }
    }

    /// Logs and counts what [`Deployed::keep_view`] found.
    pub fn report_changes(
        &self,
        telemetry: &mut dyn Telemetry,
        metrics: &Metrics,
        index: usize,
        changes: Result<Vec<Transition>, StoreError>,
    ) {
        let Some(rule) = self.breaker.rules().get(index) else {
            return;
        };
        match changes {
            Ok(transitions) => {
                let rule_metrics = self.metrics(index);
                for transition in &transitions {
                    report(telemetry, rule, &rule_metrics, transition);
                }
            }
            Err(_) => telemetry.increment(metrics.store_errors, 1),
        }
    }
}

/// Logs and counts a state change.
pub fn report(
    telemetry: &mut dyn Telemetry,
    rule: &Rule,
    metrics: &RuleMetrics,
    transition: &Transition,
) {
    let level = if transition.to == State::Open {
        Level::Warn
    } else {
        Level::Info
    };
    let scope = if rule.fleet_key().is_some() {
        " (fleet)"
    } else {
        ""
    };
    telemetry.log(
        level,
        format_args!("{FILTER_NAME}: {}{scope}: {transition}", rule.name()),
    );
    metrics.count_transition(telemetry, transition);
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

pub struct BreakerSteps {
    deployed: Rc<Deployed>,
    metrics: Metrics,
    call: Option<Call>,
    claim: Option<Box<PendingClaim>>,
}

impl BreakerSteps {
    pub fn new(deployed: Rc<Deployed>, metrics: Metrics) -> Self {
        Self {
            deployed,
            metrics,
            call: None,
            claim: None,
        }
    }

    /// A client cannot choose the fallback route by sending the marker.
    fn strip_fallback_markers(&self, stream: &mut dyn Stream) {
        for name in self.deployed.breaker.fallback_headers() {
            if stream.request_header(name).is_some() {
                stream.set_request_header(name, None);
            }
        }
    }

    fn degrade(
        &self,
        stream: &mut dyn Stream,
        rule: &Rule,
        metrics: &RuleMetrics,
        retry_after_ms: u64,
    ) -> Verdict {
        match rule.when_open() {
            WhenOpen::Respond(answer) => {
                metrics.inc(stream, RuleCounter::Responded);
                let request_id = stream.request_header("x-request-id");
                let rendered = answer.render(request_id.as_deref(), retry_after_ms);
                stream.send_local_reply(
                    rendered.status,
                    &rendered.header_pairs(answer.extra_headers()),
                    &rendered.body,
                );
                Verdict::Answered
            }
            WhenOpen::Fallback(route) => {
                metrics.inc(stream, RuleCounter::FellBack);
                stream.set_request_header(&route.header, Some(&route.value));
                stream.clear_route_cache();
                Verdict::Continue
            }
        }
    }

    fn store_failed(&self, stream: &mut dyn Stream, rule: &Rule, error: StoreError) -> Verdict {
        stream.increment(self.metrics.store_errors, 1);
        let mode = self.deployed.breaker.failure_mode();
        stream.log(
            Level::Debug,
            format_args!(
                "{FILTER_NAME}: {}: shared data failed ({error:?}), failure_mode {mode:?}",
                rule.name()
            ),
        );
        match self.deployed.breaker.on_store_failure() {
            None => Verdict::Continue,
            Some(error) => send_error(stream, &error, &[]),
        }
    }

    /// Records the admitted call's outcome: at the response headers, or at
    /// the end of the stream when none came. A fleet breaker's outcome is
    /// queued for the worker's next sync: no call, nothing waits for it.
    fn finish_call(&mut self, stream: &mut dyn Stream) {
        let Some(call) = self.call.take() else {
            return;
        };
        let deployed = Rc::clone(&self.deployed);
        let Some(rule) = deployed.breaker.rules().get(call.rule) else {
            return;
        };
        let metrics = deployed.metrics(call.rule);
        let now = now_ms(&*stream);
        let answer = ResponseFacts::read(&*stream).answer();
        let outcome = rule.classify(answer, now.saturating_sub(call.started_ms));
        if let Some(outcome) = outcome {
            metrics.count_call(stream, outcome);
        }
        if let Some(ticket) = call.fleet {
            deployed.queue_outcome(stream, &self.metrics, call.rule, rule, now, ticket, outcome);
        }
        let Some(ticket) = call.local else {
            return;
        };
        match rule.finish(stream.shared_data(), now, ticket, outcome) {
            Ok(Some(transition)) => report(stream, rule, &metrics, &transition),
            Ok(None) => {}
            Err(error) => {
                stream.increment(self.metrics.store_errors, 1);
                stream.log(
                    Level::Debug,
                    format_args!(
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
        stream: &mut dyn Stream,
        index: usize,
        admission: Admission,
        started_ms: u64,
        admitted: Admitted,
    ) -> Verdict {
        let deployed = Rc::clone(&self.deployed);
        let Some(rule) = deployed.breaker.rules().get(index) else {
            return Verdict::Continue;
        };
        let metrics = deployed.metrics(index);
        match admission {
            Admission::Admit(ticket) => {
                if let Ticket::Probe { .. } = ticket {
                    metrics.inc(stream, RuleCounter::Probes);
                }
                self.call = Some(admitted.call(index, started_ms, ticket));
                Verdict::Continue
            }
            Admission::Reject { retry_after_ms } => {
                self.degrade(stream, rule, &metrics, retry_after_ms)
            }
        }
    }

    /// Decides with this Envoy's own breaker.
    fn admit_locally(
        &mut self,
        stream: &mut dyn Stream,
        index: usize,
        rule: &Rule,
        now: u64,
        also_fleet: bool,
    ) -> Verdict {
        let (admission, transition) = match rule.admit(stream.shared_data(), now) {
            Ok(decision) => decision,
            Err(error) => return self.store_failed(stream, rule, error),
        };
        if let Some(transition) = transition {
            report(stream, rule, &self.deployed.metrics(index), &transition);
        }
        self.decide(
            stream,
            index,
            admission,
            now,
            Admitted::Locally { also_fleet },
        )
    }

    /// A fleet rule whose store does not answer: the failure mode decides.
    fn by_failure_mode(
        &mut self,
        stream: &mut dyn Stream,
        index: usize,
        rule: &Rule,
        now: u64,
        mode: FailureMode,
    ) -> Verdict {
        self.metrics.fleet.count_decided_by(stream, mode);
        match mode {
            FailureMode::Local => self.admit_locally(stream, index, rule, now, true),
            FailureMode::Allow => {
                let admission = Admission::Admit(Ticket::Counted);
                self.decide(stream, index, admission, now, Admitted::Unchecked)
            }
            FailureMode::Deny => {
                let retry_after_ms = self.deployed.breaker.fleet().map_or(1000, |f| f.sync_ms);
                let admission = Admission::Reject { retry_after_ms };
                self.decide(stream, index, admission, now, Admitted::Unchecked)
            }
        }
    }

    /// A fleet rule's claim the store did not decide: counted and logged,
    /// then the failure mode decides the call started at `started_ms`.
    fn fleet_failed(
        &mut self,
        stream: &mut dyn Stream,
        index: usize,
        rule: &Rule,
        failure: &Failure,
        now: u64,
        started_ms: u64,
    ) -> Verdict {
        let mode = self
            .deployed
            .breaker
            .fleet()
            .map(|fleet| fleet.failure_mode)
            .unwrap_or_default();
        self.metrics
            .fleet
            .count_failure(stream, FILTER_NAME, failure, mode, now);
        self.by_failure_mode(stream, index, rule, started_ms, mode)
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
    fn admit_fleet(
        &mut self,
        stream: &mut dyn Stream,
        index: usize,
        rule: &Rule,
        now: u64,
    ) -> Verdict {
        let deployed = Rc::clone(&self.deployed);
        let Some(fleet) = deployed.breaker.fleet() else {
            return self.admit_locally(stream, index, rule, now, false);
        };
        let view = match rule.view(stream.shared_data()) {
            Ok(view) => view,
            Err(error) => return self.store_failed(stream, rule, error),
        };
        match rule.admit_fleet(view, fleet, now) {
            FleetAdmission::Decided(admission) => {
                self.decide(stream, index, admission, now, self.by_fleet())
            }
            FleetAdmission::Stale => {
                self.by_failure_mode(stream, index, rule, now, fleet.failure_mode)
            }
            FleetAdmission::Claim(claim) => {
                let ops = rule.claim_ops(&claim, gateway_common::host::random_u64());
                match stream.send_to_fleet(&fleet.store, ops) {
                    Ok(call) => {
                        self.claim = Some(Box::new(PendingClaim {
                            rule: index,
                            claim: *claim,
                            started_ms: now,
                        }));
                        call.verdict()
                    }
                    Err(failure) => self.fleet_failed(stream, index, rule, &failure, now, now),
                }
            }
        }
    }

    /// Decides a claimed call from the store's answer.
    fn conclude_claim(
        &mut self,
        stream: &mut dyn Stream,
        pending: PendingClaim,
        answer: Answer,
    ) -> Verdict {
        let deployed = Rc::clone(&self.deployed);
        let index = pending.rule;
        let (Some(rule), Some(_)) = (
            deployed.breaker.rules().get(index),
            deployed.breaker.fleet(),
        ) else {
            return Verdict::Continue;
        };
        let now = now_ms(&*stream);
        match rule.conclude_claim(pending.claim, &answer) {
            ClaimVerdict::Taken {
                admission,
                transition,
                view,
            } => {
                self.metrics.fleet.count_answered(stream);
                let changes = deployed.keep_view(
                    stream.shared_data(),
                    index,
                    &view,
                    transition.as_slice(),
                    now,
                );
                deployed.report_changes(stream, &self.metrics, index, changes);
                self.decide(
                    stream,
                    index,
                    admission,
                    pending.started_ms,
                    self.by_fleet(),
                )
            }
            ClaimVerdict::Lost {
                retry_after_ms,
                view,
            } => {
                self.metrics.fleet.count_answered(stream);
                let changes = deployed.keep_view(stream.shared_data(), index, &view, &[], now);
                deployed.report_changes(stream, &self.metrics, index, changes);
                let admission = Admission::Reject { retry_after_ms };
                self.decide(
                    stream,
                    index,
                    admission,
                    pending.started_ms,
                    self.by_fleet(),
                )
            }
            // An earlier policy's check refused the request; it answers.
            ClaimVerdict::NotRun => Verdict::Pause,
            ClaimVerdict::Failed(failure) => {
                self.fleet_failed(stream, index, rule, &failure, now, pending.started_ms)
            }
        }
    }
}

impl PolicySteps for BreakerSteps {
    fn on_request_headers(&mut self, stream: &mut dyn Stream, _end_of_stream: bool) -> Verdict {
        self.strip_fallback_markers(stream);
        let deployed = Rc::clone(&self.deployed);
        let Some((index, rule)) = deployed.breaker.matching_rule(&*stream) else {
            return Verdict::Continue;
        };
        let now = now_ms(&*stream);
        if rule.fleet_key().is_some() {
            self.admit_fleet(stream, index, rule, now)
        } else {
            self.admit_locally(stream, index, rule, now, false)
        }
    }

    fn on_response_headers(&mut self, stream: &mut dyn Stream, _end_of_stream: bool) -> Verdict {
        self.finish_call(stream);
        Verdict::Continue
    }

    fn on_log(&mut self, stream: &mut dyn Stream) {
        self.finish_call(stream);
    }

    fn on_fleet_answer(&mut self, stream: &mut dyn Stream, answer: Answer) -> Verdict {
        let Some(pending) = self.claim.take() else {
            return Verdict::Continue;
        };
        self.conclude_claim(stream, *pending, answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{compile, CircuitBreakerConfig};
    use crate::outcome::{UPSTREAM_REMOTE_RESET, VIA_UPSTREAM};
    use gateway_common::config::parse_json;
    use gateway_common::fleet::model::ScriptModel;
    use gateway_common::fleet::wire::Op;
    use gateway_common::host::{FakeHost, Host};
    use gateway_common::store::MemoryStore;
    use gateway_common::stream::{Effect, FakeStream};
    use std::time::Duration;

    const T0: u64 = 1_700_000_000_000;

    fn deployed(json: &str) -> Rc<Deployed> {
        let breaker =
            compile(&parse_json::<CircuitBreakerConfig>(json.as_bytes()).unwrap()).unwrap();
        Rc::new(Deployed::new(breaker))
    }

    /// One Envoy's shared data and metric names, carried from request to
    /// request.
    struct Envoy {
        deployed: Rc<Deployed>,
        shared: MemoryStore,
    }

    impl Envoy {
        fn start(json: &str) -> Self {
            let deployed = deployed(json);
            let shared = MemoryStore::new();
            deployed.breaker.initialize(&shared, T0).unwrap();
            deployed.define_rule_metrics(&mut FakeStream::default());
            deployed.show_rule_states(&mut FakeStream::default(), &shared);
            Self { deployed, shared }
        }

        /// A request's stream at `at` ms after T0, on this Envoy's data, with
        /// its metrics defined as the host defines them.
        fn stream(&mut self, path: &str, at: u64) -> (FakeStream, BreakerSteps) {
            let host = FakeHost::new()
                .with_header(":method", "GET")
                .with_header(":path", path);
            host.clock.set(Duration::from_millis(T0 + at));
            let mut stream = FakeStream::new(host);
            stream.shared = std::mem::take(&mut self.shared);
            let metrics = Metrics::define(&mut stream);
            // Rule metrics are defined once per configuration: define them
            // again on this stream, so it counts them by name.
            let deployed = Rc::new(Deployed::new(self.deployed.breaker.clone()));
            deployed.define_rule_metrics(&mut stream);
            deployed.keep_outcomes_in(Arc::clone(self.outcomes()));
            (stream, BreakerSteps::new(deployed, metrics))
        }

        fn outcomes(&self) -> &Arc<Mutex<Vec<Outcomes>>> {
            self.deployed
                .outcomes
                .get_or_init(|| Arc::new(self.deployed.new_outcomes()))
        }

        fn done(&mut self, mut stream: FakeStream) -> FakeStream {
            self.shared = std::mem::take(&mut stream.shared);
            stream
        }
    }

    /// The upstream's answer as Envoy reports it.
    fn upstream_answered(stream: &FakeStream, status: u64) {
        stream.set_property(&["response", "code"], &status.to_le_bytes());
        stream.set_property(&["response", "code_details"], VIA_UPSTREAM.as_bytes());
    }

    /// A call through the steps at `at`; `status`: what the upstream
    /// answered, when the call went on.
    fn call(envoy: &mut Envoy, at: u64, status: u64) -> (Verdict, FakeStream) {
        let (mut stream, mut steps) = envoy.stream("/orders/1", at);
        let verdict = steps.on_request_headers(&mut stream, true);
        if verdict == Verdict::Continue {
            upstream_answered(&stream, status);
            steps.on_response_headers(&mut stream, true);
        }
        (verdict, envoy.done(stream))
    }

    const LOCAL: &str = r#"{"rules":[{"name":"orders","trip":{"consecutive_failures":2},"open":{"duration_ms":1000}}]}"#;

    #[test]
    fn failures_open_the_breaker_and_an_open_breaker_answers_at_once() {
        let mut envoy = Envoy::start(LOCAL);
        let (verdict, first) = call(&mut envoy, 0, 503);
        assert_eq!(verdict, Verdict::Continue);
        assert_eq!(first.counted(FILTER_NAME, "orders.calls.failure"), 1);
        let (_, second) = call(&mut envoy, 10, 502);
        assert_eq!(second.counted(FILTER_NAME, "orders.transitions.open"), 1);
        assert_eq!(second.gauge(FILTER_NAME, "orders.state"), Some(1));
        assert!(second
            .logs
            .borrow()
            .iter()
            .any(|(level, line)| *level == Level::Warn && line.contains("orders")));
        let (verdict, refused) = call(&mut envoy, 20, 200);
        assert_eq!(verdict, Verdict::Answered);
        let reply = refused.reply().expect("the degraded answer");
        assert_eq!(reply.status, 503);
        assert_eq!(reply.header("x-ca-error-code"), Some("A503CB"));
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert_eq!(refused.counted(FILTER_NAME, "orders.degraded.respond"), 1);
    }

    #[test]
    fn an_open_breaker_with_a_fallback_marks_the_request_and_routes_again() {
        let mut envoy = Envoy::start(
            r#"{"rules":[{"name":"orders","trip":{"consecutive_failures":1},
                "when_open":{"fallback":{"header":"x-gw-circuit","value":"orders"}}}]}"#,
        );
        call(&mut envoy, 0, 500);
        let (verdict, marked) = call(&mut envoy, 10, 200);
        assert_eq!(verdict, Verdict::Continue);
        assert_eq!(
            marked.request_header("x-gw-circuit").as_deref(),
            Some("orders")
        );
        assert!(marked.effects.contains(&Effect::ClearRouteCache));
        assert_eq!(marked.counted(FILTER_NAME, "orders.degraded.fallback"), 1);
    }

    #[test]
    fn a_client_cannot_choose_the_fallback_by_sending_the_marker() {
        let mut envoy = Envoy::start(
            r#"{"rules":[{"name":"orders","when_open":{"fallback":{"header":"x-gw-circuit"}}}]}"#,
        );
        let (mut stream, mut steps) = envoy.stream("/orders/1", 0);
        stream
            .host
            .headers
            .push(("x-gw-circuit".into(), "1".into()));
        assert_eq!(
            steps.on_request_headers(&mut stream, true),
            Verdict::Continue
        );
        assert_eq!(stream.request_header("x-gw-circuit"), None);
    }

    #[test]
    fn a_call_without_a_response_is_recorded_when_the_stream_ends() {
        let mut envoy = Envoy::start(LOCAL);
        let (mut stream, mut steps) = envoy.stream("/orders/1", 0);
        assert_eq!(
            steps.on_request_headers(&mut stream, true),
            Verdict::Continue
        );
        stream.set_property(&["response", "flags"], &UPSTREAM_REMOTE_RESET.to_le_bytes());
        steps.on_log(&mut stream);
        assert_eq!(stream.counted(FILTER_NAME, "orders.calls.failure"), 1);
        // Recorded once, whatever comes after.
        steps.on_log(&mut stream);
        assert_eq!(stream.counted(FILTER_NAME, "orders.calls.failure"), 1);
    }

    const FLEET: &str = r#"{"fleet": {"store": {"cluster": "redis"}, "sync_ms": 100},
        "rules": [{"name": "orders", "trip": {"consecutive_failures": 2},
                   "open": {"duration_ms": 100}, "half_open": {"probes": 1}}]}"#;

    /// The worker's sync, as the adapter sends it on its timer, answered
    /// by the script's model; its telemetry is `stream`'s.
    fn sync(envoy: &mut Envoy, store: &mut ScriptModel, at: u64, stream: &mut FakeStream) {
        let deployed = Rc::clone(&envoy.deployed);
        let breaker = &deployed.breaker;
        let views: Vec<_> = breaker
            .rules()
            .iter()
            .map(|rule| rule.view(&envoy.shared).unwrap())
            .collect();
        let outcomes = Arc::clone(envoy.outcomes());
        let mut outcomes = outcomes.lock().unwrap();
        let fleet = breaker.fleet().unwrap();
        let (ops, plan) = breaker.sync_ops(fleet, &views, &mut outcomes, T0 + at, at);
        store.now_ms = T0 + at;
        let answer = Ok(store.run(&ops));
        let (synced, failure) = breaker.conclude_sync(plan, &answer, &mut outcomes);
        assert_eq!(failure, None);
        let metrics = Metrics::define(&mut FakeStream::default());
        for update in &synced.updates {
            let changes = deployed.keep_view(
                &envoy.shared,
                update.rule,
                &update.view,
                &update.transitions,
                T0 + at,
            );
            deployed.report_changes(stream, &metrics, update.rule, changes);
        }
    }

    #[test]
    fn fleet_outcomes_open_the_fleet_breaker_and_a_probe_is_claimed_from_the_store() {
        let mut envoy = Envoy::start(FLEET);
        let mut store = ScriptModel::new();
        // The first sync writes the record; the view is fresh from then on.
        sync(&mut envoy, &mut store, 0, &mut FakeStream::default());
        call(&mut envoy, 10, 503);
        call(&mut envoy, 20, 503);
        // Named as the Envoy's rule metrics were defined (the same ids).
        let mut telemetry = FakeStream::default();
        RuleMetrics::define(&mut telemetry, "orders");
        sync(&mut envoy, &mut store, 30, &mut telemetry);
        assert_eq!(telemetry.counted(FILTER_NAME, "orders.transitions.open"), 1);
        assert_eq!(telemetry.gauge(FILTER_NAME, "orders.state"), Some(1));
        let (verdict, refused) = call(&mut envoy, 40, 200);
        assert_eq!(verdict, Verdict::Answered);
        assert_eq!(refused.reply().map(|r| r.status), Some(503));

        // Past the open duration: the first call claims the probe.
        let (mut stream, mut steps) = envoy.stream("/orders/1", 140);
        assert_eq!(steps.on_request_headers(&mut stream, true), Verdict::Pause);
        let sent = stream.sent_to_fleet();
        let [ops] = sent.as_slice() else {
            panic!("one claim: {sent:?}")
        };
        assert!(matches!(ops, [Op::Record(_)]), "{ops:?}");
        store.now_ms = T0 + 140;
        let answer = Ok(store.run(ops));
        assert_eq!(
            steps.on_fleet_answer(&mut stream, answer),
            Verdict::Continue
        );
        assert_eq!(stream.counted(FILTER_NAME, "orders.probes"), 1);
        assert_eq!(
            stream.counted(FILTER_NAME, "orders.transitions.half_open"),
            1
        );
        assert_eq!(stream.counted(FILTER_NAME, "fleet.answered"), 1);
        envoy.done(stream);
        // The one probe is out: the next call is refused.
        let (verdict, _) = call(&mut envoy, 150, 200);
        assert_eq!(verdict, Verdict::Answered);
    }

    #[test]
    fn a_stale_fleet_view_is_decided_by_the_failure_mode() {
        let mut envoy = Envoy::start(&FLEET.replacen(
            r#""sync_ms": 100"#,
            r#""sync_ms": 100, "failure_mode": "deny""#,
            1,
        ));
        // Never synced since the view was made at start: stale by now.
        let (verdict, refused) = call(&mut envoy, 10_000, 200);
        assert_eq!(verdict, Verdict::Answered);
        assert_eq!(refused.counted(FILTER_NAME, "fleet.failure_mode.deny"), 1);
    }

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
