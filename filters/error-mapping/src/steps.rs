//! error-mapping's part in one request, written against the stream seam.
//! The rule is chosen on the request headers, and what its values read of
//! the request is kept. Only the upstream's own answers are looked at (not
//! a policy's reply, a mock or Envoy's own 503). A rule that reads no
//! response body decides on the response headers; one that reads the JSON
//! body holds the headers until the body has arrived (up to
//! `max_body_bytes`; an answer without a readable body passes), then
//! decides. A mapped answer gets the mapping's status and `X-Ca-Error-*`
//! headers and, in the error shape, the shared JSON body in place of the
//! backend's: the headers are held until the backend's body has ended
//! (its chunks dropped as they come), so the new one goes with its length.

use crate::policy::{decide, Body, Decision, ErrorMapping, Mapped, ResponseValues, Shape};
use crate::FILTER_NAME;
use gateway_common::condition::request_headers_read;
use gateway_common::error::render_parts;
use gateway_common::host::{from_upstream, Host, RequestFacts, RequestLine};
use gateway_common::identity;
use gateway_common::matching::KeptCaptures;
use gateway_common::metrics::{Counter, DefineMetrics};
use gateway_common::stream::{
    buffer_response_body, declared_response_length, response_status, BufferedBody, Level,
    PolicySteps, Stream, Verdict,
};
use std::rc::Rc;
use std::time::SystemTime;

/// `mapped`, `unmapped` (an error no mapping names), `body_too_large` (a
/// response body over `max_body_bytes`, passed unmapped), `unreadable` (a
/// rule reads the body and the answer has none it can read: HEAD, no
/// body, compressed).
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    mapped: Counter,
    unmapped: Counter,
    body_too_large: Counter,
    unreadable: Counter,
}

impl Metrics {
    pub fn define(host: &mut dyn DefineMetrics) -> Self {
        Self {
            mapped: host.define_counter(FILTER_NAME, "mapped"),
            unmapped: host.define_counter(FILTER_NAME, "unmapped"),
            body_too_large: host.define_counter(FILTER_NAME, "body_too_large"),
            unreadable: host.define_counter(FILTER_NAME, "unreadable"),
        }
    }
}

/// Headers of the backend's body that do not describe the error body put
/// in its place.
const BODY_HEADERS: [&str; 9] = [
    "content-encoding",
    "content-range",
    "content-md5",
    "content-digest",
    "repr-digest",
    "digest",
    "etag",
    "last-modified",
    "accept-ranges",
];

/// The request's rule, with what its values read of the request as the
/// client sent it (a later policy may rewrite the path; Envoy's Wasm host
/// shows no request headers on the way back).
struct Matched {
    rule: usize,
    captures: KeptCaptures,
    line: Rc<RequestLine>,
    /// The request headers the rule reads, and `x-request-id`.
    headers: Vec<(String, String)>,
}

/// The request as kept: its headers from [`Matched`], the rest (properties:
/// the app, the client's address) from the stream.
struct KeptRequest<'s> {
    headers: &'s [(String, String)],
    stream: &'s dyn Stream,
}

impl Host for KeptRequest<'_> {
    fn request_header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    }

    fn request_header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .collect()
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.stream.property(path)
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> bool {
        self.stream.set_property(path, value)
    }

    fn now(&self) -> SystemTime {
        self.stream.now()
    }
}

/// Where the response stands.
enum Response {
    /// Not (or no longer) this policy's concern.
    Passing,
    /// Headers held until the JSON body has arrived.
    AwaitingBody { content_type: Option<String> },
    /// Mapped to the error shape: the headers are held until the backend's
    /// body ends, each chunk of it dropped as it comes (nothing is kept),
    /// then `body` takes its place, with its length.
    Holding { body: Vec<u8> },
}

pub struct ErrorMappingSteps {
    policy: Rc<ErrorMapping>,
    metrics: Metrics,
    matched: Option<Matched>,
    response: Response,
}

impl ErrorMappingSteps {
    pub fn new(policy: Rc<ErrorMapping>, metrics: Metrics) -> Self {
        Self {
            policy,
            metrics,
            matched: None,
            response: Response::Passing,
        }
    }

    /// The rule's decision on the response, `body` read or not.
    fn decide(&self, stream: &dyn Stream, matched: &Matched, body: &Body) -> Option<Decision> {
        let rules = &self.policy.rules;
        let rule = rules.rule(matched.rule)?;
        let captures = matched.captures.captures();
        let headers = |name: &str| stream.response_header(name);
        let request = KeptRequest {
            headers: &matched.headers,
            stream,
        };
        let values = ResponseValues {
            request: rules.request_values(&request, &matched.line, &captures, &Body::None),
            status: response_status(stream),
            headers: &headers,
            body,
        };
        Some(decide(rule, values))
    }

    /// Counts the decision, and on a mapping sets the response's status
    /// and headers; the error body to send, in the error shape.
    fn apply(&mut self, stream: &mut dyn Stream, decision: Option<Decision>) -> Option<Vec<u8>> {
        let mapped = match decision? {
            Decision::Passed => return None,
            Decision::Unmapped => {
                stream.increment(self.metrics.unmapped, 1);
                return None;
            }
            Decision::Mapped(mapped) => mapped,
        };
        let matched = self.matched.as_ref()?;
        stream.increment(self.metrics.mapped, 1);
        let backend_status = response_status(stream);
        identity::publish_backend_answer(stream, backend_status, mapped.backend_code.as_deref());
        if stream.logs(Level::Debug) {
            stream.log(
                Level::Debug,
                format_args!(
                    "{FILTER_NAME}: backend {} {} mapped to {} {}",
                    backend_status.map_or_else(|| "-".to_string(), |s| s.to_string()),
                    mapped.backend_code.as_deref().unwrap_or("-"),
                    mapped.status,
                    mapped.error_code
                ),
            );
        }
        let shape = self
            .policy
            .rules
            .rule(matched.rule)
            .map_or(Shape::Error, |rule| rule.body.shape);
        let request_id = KeptRequest {
            headers: &matched.headers,
            stream,
        }
        .request_header("x-request-id");
        set_headers(stream, &mapped, shape, request_id.as_deref())
    }

    /// Whether the request was a HEAD (its answer has no body to replace).
    fn head(&self) -> bool {
        self.matched
            .as_ref()
            .is_some_and(|matched| matched.line.method == "HEAD")
    }
}

/// Sets the mapped status and `X-Ca-Error-*` headers; in the error shape,
/// also its content type, drops what described the backend's body, and
/// returns the body to send.
fn set_headers(
    stream: &mut dyn Stream,
    mapped: &Mapped,
    shape: Shape,
    request_id: Option<&str>,
) -> Option<Vec<u8>> {
    let rendered = render_parts(
        mapped.status,
        &mapped.error_code,
        &mapped.message,
        request_id,
    );
    stream.set_response_header(":status", Some(&mapped.status.to_string()));
    for (name, value) in &rendered.headers {
        if shape == Shape::Backend && *name == "content-type" {
            continue;
        }
        stream.set_response_header(name, Some(value));
    }
    if shape == Shape::Backend {
        return None;
    }
    for name in BODY_HEADERS {
        stream.set_response_header(name, None);
    }
    Some(rendered.body)
}

/// Whether the body of an answer can be read: JSON (or a form), not
/// compressed.
fn readable(stream: &dyn Stream, content_type: Option<&str>) -> bool {
    let encoded = stream
        .response_header("content-encoding")
        .is_some_and(|encoding| !encoding.trim().eq_ignore_ascii_case("identity"));
    !encoded && Body::readable(content_type)
}

impl PolicySteps for ErrorMappingSteps {
    fn on_request_headers(&mut self, stream: &mut dyn Stream, _end_of_stream: bool) -> Verdict {
        let rules = &self.policy.rules;
        let facts = RequestFacts::read(stream, rules.uses_route_name());
        let Some((index, captures)) = rules.rule_for(&facts.attrs()) else {
            return Verdict::Continue;
        };
        let mut names = vec!["x-request-id"];
        if let Some(rule) = rules.rule(index) {
            names.extend(request_headers_read(rule.references()));
        }
        let headers = names
            .into_iter()
            .flat_map(|name| {
                stream
                    .request_header_values(name)
                    .into_iter()
                    .map(move |value| (name.to_string(), value))
            })
            .collect();
        self.matched = Some(Matched {
            rule: index,
            captures: KeptCaptures::keep(captures),
            line: facts.line,
            headers,
        });
        Verdict::Continue
    }

    fn on_response_headers(&mut self, stream: &mut dyn Stream, end_of_stream: bool) -> Verdict {
        let Some(matched) = &self.matched else {
            return Verdict::Continue;
        };
        if !from_upstream(stream) {
            self.matched = None;
            return Verdict::Continue;
        }
        let reads_body = self
            .policy
            .rules
            .rule(matched.rule)
            .is_some_and(|rule| rule.reads_response_body());
        if reads_body {
            let content_type = stream.response_header("content-type");
            if end_of_stream || self.head() || !readable(stream, content_type.as_deref()) {
                // Deciding on fields it cannot read would map successes.
                stream.increment(self.metrics.unreadable, 1);
                self.matched = None;
                return Verdict::Continue;
            }
            if declared_response_length(stream).is_some_and(|len| len > self.policy.max_body_bytes)
            {
                stream.increment(self.metrics.body_too_large, 1);
                self.matched = None;
                return Verdict::Continue;
            }
            self.response = Response::AwaitingBody { content_type };
            return Verdict::Pause;
        }
        let decision = self.decide(stream, matched, &Body::None);
        let Some(body) = self.apply(stream, decision) else {
            return Verdict::Continue;
        };
        if end_of_stream {
            if self.head() {
                // What a GET would get.
                stream.set_response_header("content-length", Some(&body.len().to_string()));
            }
            return Verdict::Continue;
        }
        self.response = Response::Holding { body };
        Verdict::Pause
    }

    fn on_response_body(
        &mut self,
        stream: &mut dyn Stream,
        body_size: usize,
        end_of_stream: bool,
    ) -> Verdict {
        match std::mem::replace(&mut self.response, Response::Passing) {
            Response::Passing => Verdict::Continue,
            Response::Holding { body } if end_of_stream => {
                stream.set_response_header("content-length", Some(&body.len().to_string()));
                stream.replace_response_body(body_size, &body);
                Verdict::Continue
            }
            Response::Holding { body } => {
                stream.replace_response_body(body_size, &[]);
                self.response = Response::Holding { body };
                Verdict::Pause
            }
            Response::AwaitingBody { content_type } => {
                match buffer_response_body(
                    stream,
                    body_size,
                    end_of_stream,
                    self.policy.max_body_bytes,
                ) {
                    BufferedBody::Incomplete => {
                        self.response = Response::AwaitingBody { content_type };
                        Verdict::Pause
                    }
                    BufferedBody::TooLarge => {
                        stream.increment(self.metrics.body_too_large, 1);
                        Verdict::Continue
                    }
                    BufferedBody::Complete(bytes) => {
                        let body = Body::parse(content_type.as_deref(), &bytes);
                        let decision = self
                            .matched
                            .as_ref()
                            .and_then(|matched| self.decide(stream, matched, &body));
                        if let Some(error_body) = self.apply(stream, decision) {
                            stream.set_response_header(
                                "content-length",
                                Some(&error_body.len().to_string()),
                            );
                            stream.replace_response_body(body_size, &error_body);
                        }
                        Verdict::Continue
                    }
                }
            }
        }
    }

    /// Trailers without a body: the held headers go as they are (an
    /// answer whose body a rule reads passes unmapped). A held body was
    /// shown whole, as ended, before.
    fn on_response_trailers(&mut self, stream: &mut dyn Stream) -> Verdict {
        if let Response::AwaitingBody { .. } =
            std::mem::replace(&mut self.response, Response::Passing)
        {
            stream.increment(self.metrics.unreadable, 1);
        }
        Verdict::Continue
    }
}
