//! The proxy-wasm adapter of throttling: the filter as a `.wasm` module
//! and as the gateway module's section. Re-exported from the crate root.

use crate::policy::{codes, Decision, Plan, RuleEvent, Throttling, Verdict};
use crate::table::Quota;
use crate::window::whole_seconds;
use crate::*;
use gateway_common::adapter::{self, Filter};
use gateway_common::config::ConfigError;
use gateway_common::fleet::client::{self as fleet_client, Answer, Waiting};
use gateway_common::fleet::{FleetMetrics, Store};
use gateway_common::host::ProxyWasmHost;
use gateway_common::metrics::{Counter, DenialCounters, Gauge};
use gateway_common::store::ProxyWasmStore;
use gateway_common::stream::PolicySteps;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};
use std::cell::OnceCell;
use std::rc::Rc;
use std::sync::Arc;

/// Filter-wide counters: `allowed`, `denied.<code>`, `dry_run.throttled`,
/// `failure.allowed`.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    allowed: Counter,
    dry_run_throttled: Counter,
    failure_allowed: Counter,
    denied: DenialCounters<{ codes::COUNT }>,
    fleet: FleetMetrics,
}

impl Metrics {
    pub fn define() -> Self {
        Self {
            allowed: Counter::define(FILTER_NAME, "allowed"),
            dry_run_throttled: Counter::define(FILTER_NAME, "dry_run.throttled"),
            failure_allowed: Counter::define(FILTER_NAME, "failure.allowed"),
            denied: DenialCounters::define(FILTER_NAME, &codes::ALL),
            fleet: FleetMetrics::define(FILTER_NAME),
        }
    }
}

/// `rule.<name>.<event>` for one rule.
#[derive(Debug, Clone, Copy)]
struct RuleCounters([Counter; RuleEvent::ALL.len()]);

impl RuleCounters {
    fn define(rule: &str) -> Self {
        Self(
            RuleEvent::ALL.map(|event| {
                Counter::define(FILTER_NAME, &format!("rule.{rule}.{}", event.name()))
            }),
        )
    }

    fn inc(&self, event: RuleEvent) {
        if let Some(i) = RuleEvent::ALL.iter().position(|e| *e == event) {
            self.0[i].inc();
        }
    }
}

/// The compiled policy with its per-rule counters, defined once the
/// configuration is accepted (they are named after the rules).
pub struct Compiled {
    policy: Throttling,
    rule_counters: OnceCell<Vec<RuleCounters>>,
}

impl Compiled {
    fn count(&self, metrics: &Metrics, decision: &Decision) {
        if let Some(counters) = self.rule_counters.get() {
            for (rule, event) in &decision.events {
                if let Some(c) = counters.get(*rule) {
                    c.inc(*event);
                }
            }
        }
        if decision.has(RuleEvent::DryRunThrottled) {
            metrics.dry_run_throttled.inc();
        }
        match &decision.verdict {
            Verdict::Allowed => {
                metrics.allowed.inc();
                if decision.has(RuleEvent::StoreFailure) {
                    metrics.failure_allowed.inc();
                }
            }
            other => {
                if let Some(error) = other.error() {
                    metrics.denied.inc(&error);
                }
            }
        }
    }
}

/// The filter, as the shared root context sees it.
pub struct ThrottlingFilter;

impl Filter for ThrottlingFilter {
    const NAME: &'static str = FILTER_NAME;
    type Policy = Compiled;
    type Metrics = Metrics;

    fn compile(bytes: &[u8]) -> Result<Compiled, ConfigError> {
        Ok(Compiled {
            policy: compile_config(bytes)?,
            rule_counters: OnceCell::new(),
        })
    }

    fn prepare(compiled: &Compiled) -> Result<(), String> {
        compiled.policy.initialize(&ProxyWasmStore)?;
        let counters = compiled.policy.rule_names().map(RuleCounters::define);
        let _ = compiled.rule_counters.set(counters.collect());
        Gauge::define(FILTER_NAME, "shared_data_keys").set(compiled.policy.shared_data_keys());
        Ok(())
    }

    fn define_metrics() -> Metrics {
        Metrics::define()
    }

    fn uses_fleet(compiled: &Compiled) -> bool {
        compiled.policy.fleet().is_some()
    }

    /// Still a proxy-wasm context of its own (see `http_context`).
    fn steps(_: &Rc<Self::Policy>, _: Self::Metrics) -> Option<Box<dyn PolicySteps>> {
        None
    }

    fn http_context(compiled: Rc<Compiled>, metrics: Metrics) -> Box<dyn HttpContext> {
        Box::new(ThrottlingHttp {
            compiled,
            metrics,
            quota: None,
            fleet: Waiting::default(),
        })
    }
}

/// Per-request context.
pub struct ThrottlingHttp {
    compiled: Rc<Compiled>,
    metrics: Metrics,
    /// The quota to report on the response, when `rate_limit_headers` is on.
    quota: Option<Quota>,
    /// The request's counters on their way to the fleet store.
    fleet: Waiting<Plan>,
}

/// `X-RateLimit-Limit`, `-Remaining` and `-Reset` (seconds until the window ends).
pub fn rate_limit_headers(quota: &Quota) -> [(&'static str, String); 3] {
    [
        ("x-ratelimit-limit", quota.limit.to_string()),
        ("x-ratelimit-remaining", quota.remaining.to_string()),
        (
            "x-ratelimit-reset",
            whole_seconds(quota.reset_ms).to_string(),
        ),
    ]
}

impl ThrottlingHttp {
    /// Answers a refused request; a 429 carries `Retry-After` and, when
    /// enabled, the quota of the rule that refused it.
    fn refuse(&self, verdict: &Verdict, quota: Option<Quota>) -> Action {
        let Some(error) = verdict.error() else {
            return Action::Continue;
        };
        let mut extra = Vec::new();
        match verdict {
            Verdict::Throttled {
                retry_after_secs, ..
            } => {
                extra.push(("retry-after", retry_after_secs.to_string()));
                if let (true, Some(quota)) = (self.compiled.policy.rate_limit_headers(), quota) {
                    extra.extend(rate_limit_headers(&quota));
                }
            }
            Verdict::BadForwardedFor(entry) => adapter::log(
                LogLevel::Debug,
                &format!("{FILTER_NAME}: malformed X-Forwarded-For entry {entry:?}"),
            ),
            Verdict::Allowed | Verdict::Unavailable { .. } => {}
        }
        adapter::send_error_with_headers(&error, &extra);
        Action::Pause
    }
}

impl ThrottlingHttp {
    /// Counts a request in the fleet store: the single filter holds it for
    /// the answer; in the gateway module its counters join the request's
    /// one call and the answer may refuse it later.
    fn count_in_fleet(&mut self, store: &Arc<Store>, plan: Plan) -> Action {
        match fleet_client::submit(store, self.compiled.policy.fleet_ops(&plan)) {
            Ok(ticket) => {
                let holds = ticket.holds_request();
                self.fleet.start(plan, ticket);
                if holds {
                    Action::Pause
                } else {
                    Action::Continue
                }
            }
            Err(failure) => {
                let decision = self.conclude(&plan, Err(failure));
                self.apply(decision)
            }
        }
    }

    fn conclude(&self, plan: &Plan, answer: Answer) -> Decision {
        let policy = &self.compiled.policy;
        let mode = policy.fleet().map(|f| f.failure_mode).unwrap_or_default();
        let failure = policy::fleet_failure(policy, plan, &answer);
        let now = gateway_common::host::now_ms(&ProxyWasmHost);
        self.metrics
            .fleet
            .note(FILTER_NAME, failure.as_ref(), mode, now);
        policy.conclude(plan, &answer, &ProxyWasmStore)
    }

    /// Counts the decision and answers or lets the request go on.
    fn apply(&mut self, decision: Decision) -> Action {
        let policy = &self.compiled.policy;
        self.compiled.count(&self.metrics, &decision);
        if policy.dry_run() && decision.has(RuleEvent::DryRunThrottled) {
            let rules: Vec<&str> = decision
                .events
                .iter()
                .filter(|(_, event)| *event == RuleEvent::DryRunThrottled)
                .map(|(rule, _)| policy.rule_name(*rule))
                .collect();
            adapter::log(
                LogLevel::Debug,
                &format!("{FILTER_NAME}: dry run, would throttle by {rules:?}"),
            );
        }
        if decision.verdict == Verdict::Allowed {
            if policy.rate_limit_headers() {
                self.quota = decision.quota;
            }
            return Action::Continue;
        }
        self.refuse(&decision.verdict, decision.quota)
    }
}

impl Context for ThrottlingHttp {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _: usize) {
        let Some((plan, ticket, answer)) = self.fleet.answered(token, body_size) else {
            return;
        };
        let _reads = gateway_common::host::callback_scope();
        let decision = self.conclude(&plan, answer);
        if self.apply(decision) == Action::Continue && ticket.holds_request() {
            fleet_client::resume_request();
        }
    }
}

impl HttpContext for ThrottlingHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let _reads = gateway_common::host::callback_scope();
        let compiled = Rc::clone(&self.compiled);
        let policy = &compiled.policy;
        let decision = match policy.fleet() {
            None => policy.decide(&ProxyWasmHost, &ProxyWasmStore),
            Some(fleet) => {
                let plan = policy.plan(&ProxyWasmHost);
                if plan.counts() {
                    return self.count_in_fleet(&fleet.store, plan);
                }
                policy.decide_locally(&plan, &ProxyWasmStore, 1)
            }
        };
        self.apply(decision)
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        // Holding the headers alone would not hold the body back.
        if self.fleet.holds_request() {
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.fleet.holds_request() {
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let _reads = gateway_common::host::callback_scope();
        if let Some(quota) = self.quota.take() {
            for (name, value) in rate_limit_headers(&quota) {
                adapter::set_response_header(name, Some(&value));
            }
        }
        Action::Continue
    }
}

#[cfg(feature = "entrypoint")]
gateway_common::declare_root!(
    gateway_common::adapter::RootRank::Filter,
    gateway_common::adapter::FilterRoot::<ThrottlingFilter>::default()
);
