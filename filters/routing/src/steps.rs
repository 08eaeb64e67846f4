//! routing's part in one request, written against the stream seam: on the
//! request headers, a client's own `x-gw-route` is removed, the API's
//! routes are tried in order, and the chosen one is set in `x-gw-route`
//! with Envoy asked to choose its route again.

use crate::policy::{choose, Routing, ROUTE_HEADER};
use crate::FILTER_NAME;
use gateway_common::condition::Body;
use gateway_common::host::RequestFacts;
use gateway_common::metrics::{Counter, DefineMetrics};
use gateway_common::stream::{PolicySteps, Stream, Verdict};
use std::rc::Rc;

/// `routed` (a route chosen), `default` (the API's own backend),
/// `unmatched` (no rule), `removed` (a client's `x-gw-route` dropped).
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    routed: Counter,
    default: Counter,
    unmatched: Counter,
    removed: Counter,
}

impl Metrics {
    pub fn define(host: &mut dyn DefineMetrics) -> Self {
        Self {
            routed: host.define_counter(FILTER_NAME, "routed"),
            default: host.define_counter(FILTER_NAME, "default"),
            unmatched: host.define_counter(FILTER_NAME, "unmatched"),
            removed: host.define_counter(FILTER_NAME, "removed"),
        }
    }
}

pub struct RoutingSteps {
    policy: Rc<Routing>,
    metrics: Metrics,
}

impl RoutingSteps {
    pub fn new(policy: Rc<Routing>, metrics: Metrics) -> Self {
        Self { policy, metrics }
    }
}

impl PolicySteps for RoutingSteps {
    fn on_request_headers(&mut self, stream: &mut dyn Stream, _end_of_stream: bool) -> Verdict {
        let sent_by_client = stream.request_header(ROUTE_HEADER).is_some();
        if sent_by_client {
            stream.set_request_header(ROUTE_HEADER, None);
            stream.increment(self.metrics.removed, 1);
        }
        let policy = Rc::clone(&self.policy);
        let rules = &policy.rules;
        let facts = RequestFacts::read(stream, rules.uses_route_name());
        let chosen = match rules.rule_for(&facts.attrs()) {
            None => {
                stream.increment(self.metrics.unmatched, 1);
                if sent_by_client {
                    stream.clear_route_cache();
                }
                return Verdict::Continue;
            }
            Some((index, captures)) => rules.rule(index).and_then(|rule| {
                let host: &dyn Stream = stream;
                let values = rules.request_values(host, &facts.line, &captures, &Body::None);
                choose(rule, values).map(str::to_string)
            }),
        };
        match chosen {
            Some(route) => {
                stream.set_request_header(ROUTE_HEADER, Some(&route));
                stream.clear_route_cache();
                stream.increment(self.metrics.routed, 1);
            }
            None => {
                // The route Envoy chose while the client's header was there
                // is dropped.
                if sent_by_client {
                    stream.clear_route_cache();
                }
                stream.increment(self.metrics.default, 1);
            }
        }
        Verdict::Continue
    }
}
