//! circuit-breaker: a per-API breaker for Envoy. When an API's calls fail or
//! slow down, the gateway stops sending it traffic for a while and answers
//! at once instead (or routes to a fallback), then lets a few probe calls
//! through before going back to normal.
//!
//! The state machine and its shared record are in [`breaker`], the
//! configuration in [`config`], who answered a call in [`outcome`], the
//! degraded answer in [`degraded`], the per-request decisions in [`policy`];
//! this file is the proxy-wasm adapter.

pub mod breaker;
pub mod config;
pub mod degraded;
pub mod outcome;
pub mod policy;

use breaker::{Admission, CallOutcome, State, Ticket, Transition};
use config::StoreFailureMode;
use degraded::WhenOpen;
use gateway_common::adapter::{self, Filter};
use gateway_common::config::{parse_json, ConfigError};
use gateway_common::error::codes;
use gateway_common::host::ProxyWasmHost;
use gateway_common::metrics::{Counter, Gauge};
use gateway_common::store::{ProxyWasmStore, StoreError};
use outcome::ResponseFacts;
use policy::{now_ms, CircuitBreaker, Rule};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};
use std::cell::OnceCell;
use std::rc::Rc;

pub const FILTER_NAME: &str = "circuit_breaker";

/// Parses and compiles a JSON configuration.
pub fn compile_config(bytes: &[u8]) -> Result<CircuitBreaker, ConfigError> {
    config::compile(&parse_json::<config::CircuitBreakerConfig>(bytes)?)
}

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

/// The filter-wide counter.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    /// Shared data failed (or stayed contended) for a decision or an update.
    store_errors: Counter,
}

/// The compiled policy and, once loaded, the metrics of each rule (their
/// names come from the configuration).
pub struct Deployed {
    breaker: CircuitBreaker,
    rule_metrics: OnceCell<Vec<RuleMetrics>>,
}

impl Deployed {
    fn metrics(&self, rule: usize) -> RuleMetrics {
        self.rule_metrics
            .get()
            .and_then(|metrics| metrics.get(rule))
            .copied()
            .unwrap_or_default()
    }
}

/// Logs and counts a state change.
fn report(rule: &Rule, metrics: &RuleMetrics, transition: &Transition) {
    let level = if transition.to == State::Open {
        LogLevel::Warn
    } else {
        LogLevel::Info
    };
    adapter::log(
        level,
        &format!("{FILTER_NAME}: {}: {transition}", rule.name()),
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
        Ok(Deployed {
            breaker: compile_config(bytes)?,
            rule_metrics: OnceCell::new(),
        })
    }

    fn prepare(deployed: &Deployed) -> Result<(), String> {
        let breaker = &deployed.breaker;
        breaker
            .initialize(&ProxyWasmStore)
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
        }
    }

    fn http_context(deployed: Rc<Deployed>, metrics: Metrics) -> Box<dyn HttpContext> {
        Box::new(CircuitBreakerHttp {
            deployed,
            metrics,
            call: None,
        })
    }
}

/// An admitted call, waiting for its outcome.
#[derive(Debug, Clone, Copy)]
struct Call {
    rule: usize,
    ticket: Ticket,
    started_ms: u64,
}

/// Per-request context.
pub struct CircuitBreakerHttp {
    deployed: Rc<Deployed>,
    metrics: Metrics,
    call: Option<Call>,
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
        match mode {
            StoreFailureMode::Allow => Action::Continue,
            StoreFailureMode::Deny => {
                adapter::send_error(&codes::INTERNAL);
                Action::Pause
            }
        }
    }

    /// Records the admitted call's outcome: at the response headers, or at
    /// the end of the stream when none came.
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
        match rule.finish(&ProxyWasmStore, now, call.ticket, outcome) {
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
}

impl Context for CircuitBreakerHttp {}

impl HttpContext for CircuitBreakerHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let _reads = gateway_common::host::callback_scope();
        self.strip_fallback_markers();
        let deployed = Rc::clone(&self.deployed);
        let Some((index, rule)) = deployed.breaker.matching_rule(&ProxyWasmHost) else {
            return Action::Continue;
        };
        let metrics = deployed.metrics(index);
        let now = now_ms(&ProxyWasmHost);
        let (admission, transition) = match rule.admit(&ProxyWasmStore, now) {
            Ok(decision) => decision,
            Err(error) => return self.store_failed(rule, error),
        };
        if let Some(transition) = transition {
            report(rule, &metrics, &transition);
        }
        match admission {
            Admission::Admit(ticket) => {
                if let Ticket::Probe { .. } = ticket {
                    metrics.inc(RuleCounter::Probes);
                }
                self.call = Some(Call {
                    rule: index,
                    ticket,
                    started_ms: now,
                });
                Action::Continue
            }
            Admission::Reject { retry_after_ms } => self.degrade(rule, &metrics, retry_after_ms),
        }
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
