//! throttling's part in one request, written against the stream seam: the
//! request is counted on its headers, in this Envoy's shared data or in
//! the fleet store, refused with `429` (and `Retry-After`) when a rule's
//! quota is used up, and, when configured, the quota reported on the
//! response (`X-RateLimit-*`).

use crate::lease::Leases;
use crate::policy::{self, codes, Decision, Plan, RuleEvent, Throttling, Verdict as Outcome};
use crate::table::Quota;
use crate::window::whole_seconds;
use crate::FILTER_NAME;
use gateway_common::fleet::wire::Answer;
use gateway_common::fleet::{FleetMetrics, Store};
use gateway_common::metrics::{Counter, DefineMetrics, DenialCounters};
use gateway_common::stream::{send_error, Level, PolicySteps, Stream, Verdict};
use std::cell::{OnceCell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

/// Filter-wide counters: `allowed`, `denied.<code>`, `dry_run.throttled`,
/// `failure.allowed`, and the fleet store's.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    allowed: Counter,
    /// Requests admitted from a lease, without a store call.
    leased: Counter,
    /// Units the store counted for leases (each lease's request included).
    lease_units: Counter,
    dry_run_throttled: Counter,
    failure_allowed: Counter,
    denied: DenialCounters<{ codes::COUNT }>,
    fleet: FleetMetrics,
}

impl Metrics {
    pub fn define(host: &mut dyn DefineMetrics) -> Self {
        Self {
            allowed: host.define_counter(FILTER_NAME, "allowed"),
            leased: host.define_counter(FILTER_NAME, "fleet.leased"),
            lease_units: host.define_counter(FILTER_NAME, "fleet.lease_units"),
            dry_run_throttled: host.define_counter(FILTER_NAME, "dry_run.throttled"),
            failure_allowed: host.define_counter(FILTER_NAME, "failure.allowed"),
            denied: DenialCounters::define_with(host, FILTER_NAME, &codes::ALL),
            fleet: FleetMetrics::define_with(host, FILTER_NAME),
        }
    }
}

/// `rule.<name>.<event>` for one rule.
#[derive(Debug, Clone, Copy)]
struct RuleCounters([Counter; RuleEvent::ALL.len()]);

impl RuleCounters {
    fn define(host: &mut dyn DefineMetrics, rule: &str) -> Self {
        Self(RuleEvent::ALL.map(|event| {
            host.define_counter(FILTER_NAME, &format!("rule.{rule}.{}", event.name()))
        }))
    }

    fn counter(&self, event: RuleEvent) -> Counter {
        RuleEvent::ALL
            .iter()
            .position(|e| *e == event)
            .map(|i| self.0[i])
            .unwrap_or_default()
    }
}

/// The compiled policy with its per-rule counters, defined once the
/// configuration is accepted (they are named after the rules).
pub struct Compiled {
    pub policy: Throttling,
    rule_counters: OnceCell<Vec<RuleCounters>>,
    /// This worker's fleet quota leases.
    leases: RefCell<Leases>,
}

impl Compiled {
    pub fn new(policy: Throttling) -> Self {
        Self {
            policy,
            rule_counters: OnceCell::new(),
            leases: RefCell::default(),
        }
    }

    /// Defines the per-rule counters (once).
    pub fn define_rule_counters(&self, host: &mut dyn DefineMetrics) {
        let counters = self
            .policy
            .rule_names()
            .map(|rule| RuleCounters::define(host, rule))
            .collect();
        let _ = self.rule_counters.set(counters);
    }

    fn count(&self, stream: &mut dyn Stream, metrics: &Metrics, decision: &Decision) {
        if let Some(counters) = self.rule_counters.get() {
            for (rule, event) in &decision.events {
                if let Some(counters) = counters.get(*rule) {
                    stream.increment(counters.counter(*event), 1);
                }
            }
        }
        if decision.has(RuleEvent::DryRunThrottled) {
            stream.increment(metrics.dry_run_throttled, 1);
        }
        match &decision.verdict {
            Outcome::Allowed => {
                stream.increment(metrics.allowed, 1);
                if decision.has(RuleEvent::StoreFailure) {
                    stream.increment(metrics.failure_allowed, 1);
                }
            }
            other => {
                if let Some(counter) = other.error().and_then(|e| metrics.denied.counter(&e)) {
                    stream.increment(counter, 1);
                }
            }
        }
    }
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

pub struct ThrottlingSteps {
    compiled: Rc<Compiled>,
    metrics: Metrics,
    /// The quota to report on the response, when `rate_limit_headers` is on.
    quota: Option<Quota>,
    /// The request's counters on their way to the fleet store.
    fleet: Option<Plan>,
}

impl ThrottlingSteps {
    pub fn new(compiled: Rc<Compiled>, metrics: Metrics) -> Self {
        Self {
            compiled,
            metrics,
            quota: None,
            fleet: None,
        }
    }

    /// Counts a request in the fleet store: a single filter holds it for
    /// the answer; in the gateway module its counters join the request's
    /// one call and the answer may refuse it later.
    fn count_in_fleet(
        &mut self,
        stream: &mut dyn Stream,
        store: &Arc<Store>,
        mut plan: Plan,
    ) -> Verdict {
        let ops = self
            .compiled
            .policy
            .fleet_ops(&mut plan, &mut self.compiled.leases.borrow_mut());
        match stream.send_to_fleet(store, ops) {
            Ok(call) => {
                self.fleet = Some(plan);
                call.verdict()
            }
            Err(failure) => {
                let decision = self.conclude(stream, &plan, Err(failure));
                self.apply(stream, decision)
            }
        }
    }

    fn conclude(&self, stream: &mut dyn Stream, plan: &Plan, answer: Answer) -> Decision {
        let policy = &self.compiled.policy;
        let mode = policy.fleet().map(|f| f.failure_mode).unwrap_or_default();
        let failure = policy::fleet_failure(policy, plan, &answer);
        let now = gateway_common::host::now_ms(&*stream);
        self.metrics
            .fleet
            .count(stream, FILTER_NAME, failure.as_ref(), mode, now);
        let mut leases = self.compiled.leases.borrow_mut();
        let decision = policy.conclude(plan, &answer, stream.shared_data(), &mut leases);
        if decision.leased_units > 0 {
            stream.increment(self.metrics.lease_units, decision.leased_units);
        }
        decision
    }

    /// Counts the decision and answers or lets the request go on.
    fn apply(&mut self, stream: &mut dyn Stream, decision: Decision) -> Verdict {
        let policy = &self.compiled.policy;
        self.compiled.count(stream, &self.metrics, &decision);
        if policy.dry_run() && decision.has(RuleEvent::DryRunThrottled) && stream.logs(Level::Debug)
        {
            let rules: Vec<&str> = decision
                .events
                .iter()
                .filter(|(_, event)| *event == RuleEvent::DryRunThrottled)
                .map(|(rule, _)| policy.rule_name(*rule))
                .collect();
            stream.log(
                Level::Debug,
                format_args!("{FILTER_NAME}: dry run, would throttle by {rules:?}"),
            );
        }
        if decision.verdict == Outcome::Allowed {
            if policy.rate_limit_headers() {
                self.quota = decision.quota;
            }
            return Verdict::Continue;
        }
        self.refuse(stream, &decision.verdict, decision.quota)
    }

    /// Answers a refused request; a 429 carries `Retry-After` and, when
    /// enabled, the quota of the rule that refused it.
    fn refuse(&self, stream: &mut dyn Stream, outcome: &Outcome, quota: Option<Quota>) -> Verdict {
        let Some(error) = outcome.error() else {
            return Verdict::Continue;
        };
        let mut extra = Vec::new();
        match outcome {
            Outcome::Throttled {
                retry_after_secs, ..
            } => {
                extra.push(("retry-after", retry_after_secs.to_string()));
                if let (true, Some(quota)) = (self.compiled.policy.rate_limit_headers(), quota) {
                    extra.extend(rate_limit_headers(&quota));
                }
            }
            Outcome::BadForwardedFor(entry) => stream.log(
                Level::Debug,
                format_args!("{FILTER_NAME}: malformed X-Forwarded-For entry {entry:?}"),
            ),
            Outcome::Allowed | Outcome::Unavailable { .. } => {}
        }
        send_error(stream, &error, &extra)
    }
}

impl PolicySteps for ThrottlingSteps {
    fn on_request_headers(&mut self, stream: &mut dyn Stream, _end_of_stream: bool) -> Verdict {
        let compiled = Rc::clone(&self.compiled);
        let policy = &compiled.policy;
        let decision = match policy.fleet() {
            None => policy.decide(&*stream, stream.shared_data()),
            Some(fleet) => {
                let plan = policy.plan(&*stream);
                if plan.counts() {
                    let leased = policy.admit_leased(&plan, &mut compiled.leases.borrow_mut());
                    if let Some(decision) = leased {
                        stream.increment(self.metrics.leased, 1);
                        return self.apply(stream, decision);
                    }
                    return self.count_in_fleet(stream, &fleet.store, plan);
                }
                policy.decide_locally(&plan, stream.shared_data(), 1)
            }
        };
        self.apply(stream, decision)
    }

    fn on_response_headers(&mut self, stream: &mut dyn Stream, _end_of_stream: bool) -> Verdict {
        if let Some(quota) = self.quota.take() {
            for (name, value) in rate_limit_headers(&quota) {
                stream.set_response_header(name, Some(&value));
            }
        }
        Verdict::Continue
    }

    fn on_fleet_answer(&mut self, stream: &mut dyn Stream, answer: Answer) -> Verdict {
        let Some(plan) = self.fleet.take() else {
            return Verdict::Continue;
        };
        let decision = self.conclude(stream, &plan, answer);
        self.apply(stream, decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ThrottlingConfig;
    use crate::window::tests::utc;
    use gateway_common::config::parse_json;
    use gateway_common::fleet::model::ScriptModel;
    use gateway_common::fleet::wire::{Failure, Op};
    use gateway_common::host::FakeHost;
    use gateway_common::stream::FakeStream;
    use serde_json::json;
    use std::time::Duration;

    /// 2026-05-17T09:00:45.250Z.
    fn now() -> u64 {
        utc((2026, 5, 17), (9, 0, 45), 250)
    }

    fn compiled(config: serde_json::Value) -> Rc<Compiled> {
        let config: ThrottlingConfig = parse_json(config.to_string().as_bytes()).unwrap();
        Rc::new(Compiled::new(Throttling::compile(&config).unwrap()))
    }

    /// A stream of a request from 192.0.2.10, sharing `shared`'s data.
    fn stream(shared: &mut FakeStream) -> FakeStream {
        let host = FakeHost::new()
            .with_header(":authority", "api.example.com")
            .with_header(":method", "GET")
            .with_header(":path", "/orders")
            .with_property(&["source", "address"], "192.0.2.10:5555");
        host.clock.set(Duration::from_millis(now()));
        let mut stream = FakeStream::new(host);
        stream.shared = std::mem::take(&mut shared.shared);
        stream
    }

    /// Runs requests through fresh steps, each on its own stream over the
    /// same shared data; the streams, for what each recorded.
    fn requests(compiled: &Rc<Compiled>, n: usize) -> Vec<(Verdict, FakeStream)> {
        let mut shared = FakeStream::default();
        compiled.policy.initialize(&shared.shared).unwrap();
        (0..n)
            .map(|_| {
                let mut stream = stream(&mut shared);
                compiled.define_rule_counters(&mut stream);
                let metrics = Metrics::define(&mut stream);
                let mut steps = ThrottlingSteps::new(Rc::clone(compiled), metrics);
                let verdict = steps.on_request_headers(&mut stream, true);
                steps.on_response_headers(&mut stream, true);
                shared.shared = std::mem::take(&mut stream.shared);
                (verdict, stream)
            })
            .collect()
    }

    fn limit(n: u32) -> serde_json::Value {
        json!({"rules": [{"name": "all", "limit": n, "window": "1m"}], "rate_limit_headers": true})
    }

    #[test]
    fn the_limit_is_admitted_then_refused_with_retry_after_and_the_quota() {
        let compiled = compiled(limit(2));
        let taken = requests(&compiled, 3);
        let verdicts: Vec<Verdict> = taken.iter().map(|(v, _)| *v).collect();
        assert_eq!(
            verdicts,
            [Verdict::Continue, Verdict::Continue, Verdict::Answered]
        );
        let (_, refused) = &taken[2];
        let reply = refused.reply().expect("a reply");
        assert_eq!(reply.status, 429);
        assert_eq!(reply.header("x-ca-error-code"), Some("A429AP"));
        assert_eq!(reply.header("retry-after"), Some("15"));
        assert_eq!(reply.header("x-ratelimit-remaining"), Some("0"));
        assert_eq!(refused.counted(FILTER_NAME, "denied.A429AP"), 1);
        assert_eq!(refused.counted(FILTER_NAME, "rule.all.throttled"), 1);
        // An admitted request reports its quota on the response.
        let (_, first) = &taken[0];
        assert_eq!(
            first.response_header("x-ratelimit-limit").as_deref(),
            Some("2")
        );
        assert_eq!(
            first.response_header("x-ratelimit-remaining").as_deref(),
            Some("1")
        );
        assert_eq!(
            first.response_header("x-ratelimit-reset").as_deref(),
            Some("15")
        );
        assert_eq!(first.counted(FILTER_NAME, "allowed"), 1);
        assert_eq!(first.counted(FILTER_NAME, "rule.all.allowed"), 1);
    }

    #[test]
    fn without_rate_limit_headers_the_response_is_untouched() {
        let mut config = limit(2);
        config["rate_limit_headers"] = json!(false);
        let taken = requests(&compiled(config), 1);
        assert_eq!(taken[0].1.response_header("x-ratelimit-limit"), None);
    }

    #[test]
    fn a_dry_run_lets_the_request_through_and_says_which_rule_would_refuse_it() {
        let mut config = limit(1);
        config["dry_run"] = json!(true);
        let taken = requests(&compiled(config), 2);
        let (verdict, second) = &taken[1];
        assert_eq!(*verdict, Verdict::Continue);
        assert_eq!(second.counted(FILTER_NAME, "dry_run.throttled"), 1);
        let logs = second.logs.borrow();
        assert!(
            logs.iter()
                .any(|(_, line)| line.contains("would throttle by [\"all\"]")),
            "{logs:?}"
        );
    }

    fn fleet(mode: &str) -> Rc<Compiled> {
        let mut config = limit(1);
        config["fleet"] =
            json!({"store": {"cluster": "redis", "key_prefix": "t:"}, "failure_mode": mode});
        compiled(config)
    }

    fn fleet_steps(compiled: &Rc<Compiled>, stream: &mut FakeStream) -> ThrottlingSteps {
        compiled.define_rule_counters(stream);
        let metrics = Metrics::define(stream);
        ThrottlingSteps::new(Rc::clone(compiled), metrics)
    }

    #[test]
    fn fleet_counts_are_answered_by_the_store_which_refuses_over_the_limit() {
        let compiled = fleet("deny");
        let mut model = ScriptModel::new();
        model.now_ms = now();
        for (n, expected) in [(1, Verdict::Continue), (2, Verdict::Answered)] {
            let mut stream = stream(&mut FakeStream::default());
            let mut steps = fleet_steps(&compiled, &mut stream);
            assert_eq!(
                steps.on_request_headers(&mut stream, true),
                Verdict::Pause,
                "#{n}"
            );
            let sent = stream.sent_to_fleet();
            let [ops] = sent.as_slice() else {
                panic!("one call: {sent:?}")
            };
            assert!(matches!(ops, [Op::Quotas(_)]), "{ops:?}");
            let answer = Ok(model.run(ops));
            assert_eq!(steps.on_fleet_answer(&mut stream, answer), expected, "#{n}");
            assert_eq!(stream.counted(FILTER_NAME, "fleet.answered"), 1);
        }
    }

    #[test]
    fn batched_fleet_counts_let_the_request_go_on_until_the_answer() {
        let compiled = fleet("deny");
        let mut stream = stream(&mut FakeStream::default());
        stream.fleet_batches = true;
        let mut steps = fleet_steps(&compiled, &mut stream);
        assert_eq!(
            steps.on_request_headers(&mut stream, true),
            Verdict::Continue
        );
        assert_eq!(
            steps.on_fleet_answer(&mut stream, Err(Failure::NoAnswer)),
            Verdict::Answered
        );
        assert_eq!(stream.reply().map(|r| r.status), Some(503));
        assert_eq!(stream.counted(FILTER_NAME, "fleet.failure.no_answer"), 1);
        assert_eq!(stream.counted(FILTER_NAME, "denied.A503TU"), 1);
    }

    #[test]
    fn an_unreachable_store_is_decided_by_the_failure_mode_at_once() {
        for (mode, expected) in [
            ("deny", Verdict::Answered),
            ("allow", Verdict::Continue),
            ("local", Verdict::Continue),
        ] {
            let compiled = fleet(mode);
            let mut shared = FakeStream::default();
            compiled.policy.initialize(&shared.shared).unwrap();
            let mut stream = stream(&mut shared);
            stream.fleet_unreachable = Some(Failure::Dispatch);
            let mut steps = fleet_steps(&compiled, &mut stream);
            assert_eq!(
                steps.on_request_headers(&mut stream, true),
                expected,
                "{mode}"
            );
            assert!(stream.sent_to_fleet().is_empty());
            assert_eq!(
                stream.counted(FILTER_NAME, &format!("fleet.failure_mode.{mode}")),
                1,
                "{mode}"
            );
        }
    }
}
