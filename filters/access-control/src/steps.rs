//! access-control's part in one request, written against the stream seam:
//! the rule is chosen on the request headers and its checks run there, or,
//! when a check reads a form or JSON body field, once the body has arrived
//! (the request held meanwhile).

use crate::policy::{codes, decide, AccessControl, Body, Decision};
use crate::FILTER_NAME;
use gateway_common::error::GatewayError;
use gateway_common::host::RequestFacts;
use gateway_common::matching::{Captures, KeptCaptures};
use gateway_common::metrics::{Counter, DefineMetrics, DenialCounters};
use gateway_common::stream::{
    declared_body_length, refuse, HeldBody, HeldForBody, Level, PolicySteps, Stream, Verdict,
};
use std::rc::Rc;

const DENIAL_CODES: [GatewayError; 2] = [codes::DENIED, codes::BODY_TOO_LARGE];

/// `allowed`, `unmatched` (no rule), `denied.<code>`, `dry_run.denied`.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    allowed: Counter,
    unmatched: Counter,
    dry_run_denied: Counter,
    denied: DenialCounters<2>,
}

impl Metrics {
    pub fn define(host: &mut dyn DefineMetrics) -> Self {
        Self {
            allowed: host.define_counter(FILTER_NAME, "allowed"),
            unmatched: host.define_counter(FILTER_NAME, "unmatched"),
            dry_run_denied: host.define_counter(FILTER_NAME, "dry_run.denied"),
            denied: DenialCounters::define_with(host, FILTER_NAME, &DENIAL_CODES),
        }
    }
}

/// What a request held for its body keeps from its headers.
struct Waiting {
    rule: usize,
    captures: KeptCaptures,
    content_type: Option<String>,
}

pub struct AccessControlSteps {
    policy: Rc<AccessControl>,
    metrics: Metrics,
    waiting: HeldForBody<Waiting>,
}

impl AccessControlSteps {
    pub fn new(policy: Rc<AccessControl>, metrics: Metrics) -> Self {
        Self {
            policy,
            metrics,
            waiting: HeldForBody::default(),
        }
    }

    fn decide(
        &self,
        stream: &mut dyn Stream,
        rule: usize,
        captures: &Captures<'_>,
        body: &Body,
    ) -> Verdict {
        let Some(rule) = self.policy.rules.rule(rule) else {
            return Verdict::Continue;
        };
        let decision = {
            let host: &dyn Stream = stream;
            let line = host.request_line();
            decide(
                rule,
                self.policy
                    .rules
                    .request_values(host, &line, captures, body),
            )
        };
        match decision {
            Decision::Allowed { .. } => {
                stream.increment(self.metrics.allowed, 1);
                Verdict::Continue
            }
            Decision::Denied { by, error } => {
                let by = by.as_deref().unwrap_or("otherwise");
                if self.policy.dry_run {
                    stream.log(
                        Level::Info,
                        format_args!(
                            "{FILTER_NAME}: dry run: {} `{by}` would deny the request",
                            rule.name
                        ),
                    );
                    stream.increment(self.metrics.dry_run_denied, 1);
                    return Verdict::Continue;
                }
                stream.log(
                    Level::Debug,
                    format_args!("{FILTER_NAME}: {} `{by}` denied the request", rule.name),
                );
                refuse(stream, &self.metrics.denied, &error)
            }
        }
    }
}

impl AccessControlSteps {
    /// A body over `max_body_bytes`: refused (413), or under `dry_run`
    /// logged, counted and let through.
    fn body_too_large(&self, stream: &mut dyn Stream) -> Verdict {
        if self.policy.dry_run {
            stream.log(
                Level::Info,
                format_args!("{FILTER_NAME}: dry run: a body over max_body_bytes would be refused"),
            );
            stream.increment(self.metrics.dry_run_denied, 1);
            return Verdict::Continue;
        }
        refuse(stream, &self.metrics.denied, &codes::BODY_TOO_LARGE)
    }
}

impl PolicySteps for AccessControlSteps {
    fn on_request_headers(&mut self, stream: &mut dyn Stream, end_of_stream: bool) -> Verdict {
        let policy = Rc::clone(&self.policy);
        let facts = RequestFacts::read(stream, policy.rules.uses_route_name());
        let Some((index, captures)) = policy.rules.rule_for(&facts.attrs()) else {
            stream.increment(self.metrics.unmatched, 1);
            return Verdict::Continue;
        };
        let reads_body = policy
            .rules
            .rule(index)
            .is_some_and(|rule| rule.reads_body());
        let content_type = stream.request_header("content-type");
        if reads_body && !end_of_stream && Body::readable(content_type.as_deref()) {
            if declared_body_length(stream).is_some_and(|len| len > policy.max_body_bytes) {
                return self.body_too_large(stream);
            }
            let waiting = Waiting {
                rule: index,
                captures: KeptCaptures::keep(captures),
                content_type,
            };
            self.waiting.hold(waiting, policy.max_body_bytes);
            return Verdict::Pause;
        }
        self.decide(stream, index, &captures, &Body::None)
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
            HeldBody::TooLarge(_) => self.body_too_large(stream),
            HeldBody::Complete(waiting, bytes) => {
                let body = Body::parse(waiting.content_type.as_deref(), &bytes);
                self.decide(stream, waiting.rule, &waiting.captures.captures(), &body)
            }
        }
    }
}
