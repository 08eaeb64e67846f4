//! threat-protection's part in one request, written against the stream
//! seam: the rule is chosen on the request headers and the query, path
//! variables, chosen headers and cookies are checked there; a form or JSON
//! body the rule reads is checked once it has arrived (the request held
//! meanwhile). A finding refuses the request, or under `mode: log` is
//! logged and counted and the request goes on.

use crate::policy::{codes, Finding, Mode, RequestParts, Rule, Threats};
use crate::FILTER_NAME;
use gateway_common::error::GatewayError;
use gateway_common::host::RequestFacts;
use gateway_common::identity;
use gateway_common::matching::Captures;
use gateway_common::metrics::{Counter, DefineMetrics, DenialCounters};
use gateway_common::stream::{
    declared_body_length, refuse, HeldBody, HeldForBody, Level, PolicySteps, Stream, Verdict,
};
use std::cell::OnceCell;
use std::rc::Rc;

const DENIAL_CODES: [GatewayError; 6] = [
    codes::SQL_INJECTION,
    codes::SCRIPT_INJECTION,
    codes::STRUCTURE,
    codes::MALFORMED,
    codes::UNREADABLE_BODY,
    codes::BODY_TOO_LARGE,
];

/// Every check a finding can name, for `found.<check>`.
const CHECKS: [&str; 14] = [
    "sql",
    "script",
    "json_depth",
    "json_entries",
    "json_array",
    "json_string",
    "json_number",
    "json_malformed",
    "form_fields",
    "form_size",
    "form_malformed",
    "body_type",
    "body_encoding",
    "body_size",
];

/// `passed`, `unmatched` (no rule), `found.<check>` (blocked or logged),
/// `logged` (found under `mode: log`, let through), `denied.<code>`.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    passed: Counter,
    unmatched: Counter,
    logged: Counter,
    found: [Counter; CHECKS.len()],
    denied: DenialCounters<6>,
}

impl Metrics {
    pub fn define(host: &mut dyn DefineMetrics) -> Self {
        Self {
            passed: host.define_counter(FILTER_NAME, "passed"),
            unmatched: host.define_counter(FILTER_NAME, "unmatched"),
            logged: host.define_counter(FILTER_NAME, "logged"),
            found: CHECKS.map(|check| host.define_counter(FILTER_NAME, &format!("found.{check}"))),
            denied: DenialCounters::define_with(host, FILTER_NAME, &DENIAL_CODES),
        }
    }

    fn found(&self, check: &str) -> Counter {
        CHECKS
            .iter()
            .position(|c| *c == check)
            .map(|i| self.found[i])
            .unwrap_or_default()
    }
}

/// `rule.<name>.passed` and `rule.<name>.found` of one rule (an API).
#[derive(Debug, Clone, Copy)]
struct RuleCounters {
    passed: Counter,
    found: Counter,
}

/// The compiled policy with its per-rule counters, defined once the
/// configuration is accepted (they are named after the rules).
pub struct Compiled {
    pub policy: Threats,
    rule_counters: OnceCell<Vec<RuleCounters>>,
}

impl Compiled {
    pub fn new(policy: Threats) -> Self {
        Self {
            policy,
            rule_counters: OnceCell::new(),
        }
    }

    /// Defines the per-rule counters (once).
    pub fn define_rule_counters(&self, host: &mut dyn DefineMetrics) {
        let counters = self
            .policy
            .rules
            .iter()
            .map(|rule| RuleCounters {
                passed: host.define_counter(FILTER_NAME, &format!("rule.{}.passed", rule.name)),
                found: host.define_counter(FILTER_NAME, &format!("rule.{}.found", rule.name)),
            })
            .collect();
        let _ = self.rule_counters.set(counters);
    }

    fn rule_counters(&self, rule: usize) -> Option<RuleCounters> {
        self.rule_counters.get()?.get(rule).copied()
    }
}

/// What a request held for its body keeps from its headers.
struct Waiting {
    rule: usize,
    content_type: Option<String>,
    /// A finding before the body was logged (`mode: log`).
    logged: bool,
}

pub struct ThreatSteps {
    compiled: Rc<Compiled>,
    metrics: Metrics,
    waiting: HeldForBody<Waiting>,
}

impl ThreatSteps {
    pub fn new(compiled: Rc<Compiled>, metrics: Metrics) -> Self {
        Self {
            compiled,
            metrics,
            waiting: HeldForBody::default(),
        }
    }

    /// The request passed the rule's checks.
    fn passed(&self, stream: &mut dyn Stream, rule: usize) -> Verdict {
        stream.increment(self.metrics.passed, 1);
        if let Some(counters) = self.compiled.rule_counters(rule) {
            stream.increment(counters.passed, 1);
        }
        Verdict::Continue
    }

    /// A finding: refused, or under `mode: log` logged and let through.
    /// The value found is never written anywhere.
    fn found(&self, stream: &mut dyn Stream, index: usize, finding: &Finding) -> Verdict {
        let Some(rule) = self.compiled.policy.rules.get(index) else {
            return Verdict::Continue;
        };
        stream.increment(self.metrics.found(finding.check), 1);
        if let Some(counters) = self.compiled.rule_counters(index) {
            stream.increment(counters.found, 1);
        }
        let place = finding.location.map_or("body", |location| location.name());
        identity::publish_threat(stream, finding.check, place, finding.fingerprint.as_deref());
        let fingerprint = finding.fingerprint.as_deref().unwrap_or("-");
        match rule.mode {
            Mode::Log => {
                stream.log(
                    Level::Info,
                    format_args!(
                        "{FILTER_NAME}: {}: {} found in {place} (fingerprint {fingerprint}); mode log: let through",
                        rule.name, finding.check
                    ),
                );
                stream.increment(self.metrics.logged, 1);
                Verdict::Continue
            }
            Mode::Block => {
                stream.log(
                    Level::Debug,
                    format_args!(
                        "{FILTER_NAME}: {}: {} found in {place} (fingerprint {fingerprint}): refused",
                        rule.name, finding.check
                    ),
                );
                refuse(stream, &self.metrics.denied, &finding.error)
            }
        }
    }

    /// The body's checks, once it has arrived.
    fn check_body(&self, stream: &mut dyn Stream, waiting: &Waiting, body: &[u8]) -> Verdict {
        let Some(rule) = self.compiled.policy.rules.get(waiting.rule) else {
            return Verdict::Continue;
        };
        match rule.inspect_body(waiting.content_type.as_deref(), body) {
            Some(finding) => self.found(stream, waiting.rule, &finding),
            None if waiting.logged => Verdict::Continue,
            None => self.passed(stream, waiting.rule),
        }
    }
}

/// The finding, if any, in what comes before the body. Repeated headers
/// are checked together, each value in turn.
fn inspect_head(
    rule: &Rule,
    stream: &dyn Stream,
    path: &str,
    captures: &Captures<'_>,
) -> Option<Finding> {
    let query = path.split_once('?').map_or("", |(_, query)| query);
    let header = |name: &str| {
        let values = stream.request_header_values(name);
        let separator = if name.eq_ignore_ascii_case("cookie") {
            "; "
        } else {
            ", "
        };
        (!values.is_empty()).then(|| values.join(separator))
    };
    rule.inspect_head(&RequestParts {
        query,
        captures,
        header: &header,
        content_type: None,
        body: None,
    })
}

impl PolicySteps for ThreatSteps {
    fn on_request_headers(&mut self, stream: &mut dyn Stream, end_of_stream: bool) -> Verdict {
        let compiled = Rc::clone(&self.compiled);
        let facts = RequestFacts::read(stream, compiled.policy.rules.uses_route_name());
        let Some((index, captures)) = compiled.policy.rules.first_for(&facts.attrs()) else {
            stream.increment(self.metrics.unmatched, 1);
            return Verdict::Continue;
        };
        let Some(rule) = compiled.policy.rules.get(index) else {
            return Verdict::Continue;
        };
        // Under `mode: log` a finding lets the request go on, and what is
        // left is still checked (and logged).
        let mut logged = false;
        if let Some(finding) = inspect_head(rule, stream, &facts.line.path, &captures) {
            match self.found(stream, index, &finding) {
                Verdict::Continue => logged = true,
                refused => return refused,
            }
        }
        let verdict_so_far = |steps: &Self, stream: &mut dyn Stream| {
            if logged {
                Verdict::Continue
            } else {
                steps.passed(stream, index)
            }
        };
        if end_of_stream {
            return verdict_so_far(self, stream);
        }
        let content_types = stream.request_header_values("content-type");
        let encodings = stream.request_header_values("content-encoding");
        if let Some(finding) = rule.unreadable_body(&content_types, &encodings) {
            return self.found(stream, index, &finding);
        }
        let content_type = content_types.into_iter().next();
        if !rule.reads_body(content_type.as_deref()) {
            return verdict_so_far(self, stream);
        }
        if declared_body_length(stream).is_some_and(|len| len > rule.max_body_bytes) {
            return self.found(stream, index, &Finding::body_too_large());
        }
        self.waiting.hold(
            Waiting {
                rule: index,
                content_type,
                logged,
            },
            rule.max_body_bytes,
        );
        Verdict::Pause
    }

    fn on_request_body(
        &mut self,
        stream: &mut dyn Stream,
        body_size: usize,
        end_of_stream: bool,
    ) -> Verdict {
        match self.waiting.body(stream, body_size, end_of_stream) {
            HeldBody::NotHeld => Verdict::Continue,
            HeldBody::Incomplete => Verdict::Pause,
            HeldBody::TooLarge(waiting) => {
                self.found(stream, waiting.rule, &Finding::body_too_large())
            }
            HeldBody::Complete(waiting, bytes) => self.check_body(stream, &waiting, &bytes),
        }
    }
}
