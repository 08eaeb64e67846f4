//! request-mapping's part in one request, written against the stream seam:
//! the rule is chosen on the request headers, a body the rule reads or
//! writes is buffered (the request held) until whole, the frontend request
//! is mapped onto the backend's (headers, path, host, method, body), and
//! the rule's response headers are set on the way back.

use crate::policy::{codes, response_changes, Frontend, Mapped, Mapping, SystemValue};
use crate::FILTER_NAME;
use gateway_common::error::GatewayError;
use gateway_common::host::{now_ms, RequestFacts, RequestLine};
use gateway_common::identity;
use gateway_common::matching::KeptCaptures;
use gateway_common::metrics::{Counter, DefineMetrics, DenialCounters};
use gateway_common::stream::{
    declared_body_length, refuse, HeldBody, HeldForBody, PolicySteps, Stream, Verdict,
};
use std::rc::Rc;

const DENIAL_CODES: [GatewayError; 4] = [
    codes::INVALID_VALUE,
    codes::BODY_REQUIRED,
    codes::BODY_TOO_LARGE,
    codes::UNSUPPORTED_MEDIA_TYPE,
];

/// `mapped`, `unmatched` (no rule), `body_rewritten`, `denied.<code>`.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    mapped: Counter,
    unmatched: Counter,
    body_rewritten: Counter,
    denied: DenialCounters<4>,
}

impl Metrics {
    pub fn define(host: &mut dyn DefineMetrics) -> Self {
        Self {
            mapped: host.define_counter(FILTER_NAME, "mapped"),
            unmatched: host.define_counter(FILTER_NAME, "unmatched"),
            body_rewritten: host.define_counter(FILTER_NAME, "body_rewritten"),
            denied: DenialCounters::define_with(host, FILTER_NAME, &DENIAL_CODES),
        }
    }
}

/// What the mapping needs of the request headers, kept while the body arrives.
struct Waiting {
    line: Rc<RequestLine>,
    captures: KeptCaptures,
    content_type: Option<String>,
}

pub struct MappingSteps {
    mapping: Rc<Mapping>,
    metrics: Metrics,
    /// The matched rule, for the response side.
    rule: Option<usize>,
    waiting: HeldForBody<Waiting>,
}

impl MappingSteps {
    pub fn new(mapping: Rc<Mapping>, metrics: Metrics) -> Self {
        Self {
            mapping,
            metrics,
            rule: None,
            waiting: HeldForBody::default(),
        }
    }

    fn reject(&self, stream: &mut dyn Stream, error: &GatewayError) -> Verdict {
        refuse(stream, &self.metrics.denied, error)
    }

    fn system_value(
        &self,
        stream: &dyn Stream,
        kind: SystemValue,
        rule_name: &str,
    ) -> Option<String> {
        match kind {
            SystemValue::ClientIp => self
                .mapping
                .client_address
                .client_of(stream)
                .ok()
                .map(|ip| ip.to_string()),
            SystemValue::RequestId => stream.request_header("x-request-id"),
            SystemValue::AppKey => identity::app_key(stream),
            SystemValue::AppName => identity::read_identity(stream).and_then(|i| i.app_name),
            // The API sign-auth matched, else this rule's name.
            SystemValue::Api => Some(
                identity::read_identity(stream)
                    .and_then(|i| i.api)
                    .unwrap_or_else(|| rule_name.to_string()),
            ),
            SystemValue::RequestTime => Some(now_ms(stream).to_string()),
            SystemValue::User => identity::user(stream),
        }
    }

    fn map(
        &self,
        stream: &mut dyn Stream,
        line: &RequestLine,
        captures: &[(&str, String)],
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> Verdict {
        let Some(rule) = self.rule.and_then(|i| self.mapping.rules.get(i)) else {
            return Verdict::Continue;
        };
        let (path, query) = line.path.split_once('?').unwrap_or((&line.path, ""));
        let result = {
            let reader: &dyn Stream = stream;
            let header = |name: &str| reader.request_header(name);
            let system = |kind: SystemValue| self.system_value(reader, kind, &rule.name);
            rule.apply(&Frontend {
                path,
                query,
                captures,
                header: Some(&header),
                system: Some(&system),
                content_type,
                body,
            })
        };
        match result {
            Ok(mapped) => {
                self.write(stream, line, &mapped, body.map_or(0, <[u8]>::len));
                stream.increment(self.metrics.mapped, 1);
                Verdict::Continue
            }
            Err(error) => self.reject(stream, &error),
        }
    }

    /// Writes the mapping back; `line` is the request line as this policy
    /// received it, published for log-push when the mapping changes it.
    fn write(&self, stream: &mut dyn Stream, line: &RequestLine, mapped: &Mapped, body_len: usize) {
        if mapped.path.is_some() || mapped.method.is_some() {
            identity::publish_original_request(stream, &line.method, &line.path);
        }
        for name in &mapped.remove_headers {
            stream.set_request_header(name, None);
        }
        for (name, value) in &mapped.set_headers {
            stream.set_request_header(name, Some(value));
        }
        if let Some(path) = &mapped.path {
            stream.set_request_header(":path", Some(path));
        }
        if let Some(authority) = &mapped.authority {
            stream.set_request_header(":authority", Some(authority));
        }
        if let Some(method) = &mapped.method {
            stream.set_request_header(":method", Some(method));
        }
        if let Some(body) = &mapped.body {
            stream.replace_request_body(body_len, body);
            stream.set_request_header("content-length", Some(&body.len().to_string()));
            stream.increment(self.metrics.body_rewritten, 1);
        }
    }
}

impl PolicySteps for MappingSteps {
    fn on_request_headers(&mut self, stream: &mut dyn Stream, end_of_stream: bool) -> Verdict {
        let mapping = Rc::clone(&self.mapping);
        let facts = RequestFacts::read(stream, mapping.rules.uses_route_name());
        let Some((index, captures)) = mapping.rules.first_for(&facts.attrs()) else {
            stream.increment(self.metrics.unmatched, 1);
            return Verdict::Continue;
        };
        self.rule = Some(index);
        let Some(rule) = mapping.rules.get(index) else {
            return Verdict::Continue;
        };
        let content_type = rule
            .needs_body()
            .then(|| stream.request_header("content-type"))
            .flatten();
        if rule.needs_body() && !end_of_stream {
            if declared_body_length(stream).is_some_and(|len| len > rule.max_body_bytes) {
                return self.reject(stream, &codes::BODY_TOO_LARGE);
            }
            let waiting = Waiting {
                line: facts.line,
                captures: KeptCaptures::keep(captures),
                content_type,
            };
            self.waiting.hold(waiting, rule.max_body_bytes);
            return Verdict::Pause;
        }
        self.map(
            stream,
            &facts.line,
            &captures,
            content_type.as_deref(),
            None,
        )
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
            HeldBody::TooLarge(_) => self.reject(stream, &codes::BODY_TOO_LARGE),
            HeldBody::Complete(waiting, body) => self.map(
                stream,
                &waiting.line,
                &waiting.captures.captures(),
                waiting.content_type.as_deref(),
                Some(&body),
            ),
        }
    }

    fn on_response_headers(&mut self, stream: &mut dyn Stream, _end_of_stream: bool) -> Verdict {
        let Some(rule) = self.rule.and_then(|i| self.mapping.rules.get(i)) else {
            return Verdict::Continue;
        };
        if rule.response.is_empty() {
            return Verdict::Continue;
        }
        let (set, remove) = {
            let reader: &dyn Stream = stream;
            let header = |name: &str| reader.response_header(name);
            response_changes(&rule.response, &header)
        };
        for name in &remove {
            stream.set_response_header(name, None);
        }
        for (name, value) in &set {
            stream.set_response_header(name, Some(value));
        }
        Verdict::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile_config;
    use gateway_common::host::{FakeHost, Host};
    use gateway_common::identity::{ORIGINAL_METHOD_PROPERTY, ORIGINAL_PATH_PROPERTY};
    use gateway_common::stream::{Effect, FakeStream};
    use std::time::Duration;

    const CONFIG: &str = r#"{"rules":[{
        "name": "profile",
        "match": {"path": {"template": "/v1/users/{id}"}},
        "backend": {"path": "/internal/accounts/{id}/profile", "host": "accounts.internal"},
        "parameters": [{"from": {"in": "query", "name": "lang"}, "to": {"in": "header", "name": "X-Lang"}}],
        "system": [
            {"value": "request_id", "to": {"in": "query", "name": "trace"}},
            {"value": "api", "to": {"in": "header", "name": "X-Api"}},
            {"value": "request_time", "to": {"in": "header", "name": "X-At"}}
        ],
        "response_headers": {
            "add": [{"name": "Cache-Control", "value": "private"}],
            "remove": ["server"]
        }
    }, {
        "name": "orders",
        "match": {"path": {"exact": "/orders"}},
        "parameters": [{"from": {"in": "query", "name": "n"}, "to": {"in": "body", "name": "/order/n"}, "type": "integer"}],
        "max_body_bytes": 64
    }]}"#;

    fn steps_for(stream: &mut FakeStream) -> MappingSteps {
        let mapping = compile_config(CONFIG.as_bytes()).expect("config");
        let metrics = Metrics::define(stream);
        MappingSteps::new(Rc::new(mapping), metrics)
    }

    fn request(method: &str, path: &str) -> FakeStream {
        let host = FakeHost::new()
            .with_header(":method", method)
            .with_header(":path", path)
            .with_header(":authority", "api.example.com")
            .with_header("x-request-id", "r-42");
        host.clock.set(Duration::from_millis(1_700_000_000_123));
        FakeStream::new(host)
    }

    #[test]
    fn the_frontend_request_is_mapped_onto_the_backend_and_the_original_published() {
        let mut stream = request("GET", "/v1/users/7?lang=zh");
        let mut steps = steps_for(&mut stream);
        assert_eq!(
            steps.on_request_headers(&mut stream, true),
            Verdict::Continue
        );
        assert_eq!(
            stream.request_header(":path").as_deref(),
            Some("/internal/accounts/7/profile?trace=r-42")
        );
        assert_eq!(
            stream.request_header(":authority").as_deref(),
            Some("accounts.internal")
        );
        assert_eq!(stream.request_header("x-lang").as_deref(), Some("zh"));
        assert_eq!(stream.request_header("x-api").as_deref(), Some("profile"));
        assert_eq!(
            stream.request_header("x-at").as_deref(),
            Some("1700000000123")
        );
        assert_eq!(
            stream.property(&[ORIGINAL_PATH_PROPERTY]).as_deref(),
            Some(&b"/v1/users/7?lang=zh"[..])
        );
        assert_eq!(
            stream.property(&[ORIGINAL_METHOD_PROPERTY]).as_deref(),
            Some(&b"GET"[..])
        );
        assert_eq!(stream.counted(FILTER_NAME, "mapped"), 1);
    }

    #[test]
    fn the_rules_response_headers_are_set_on_the_way_back() {
        let mut stream = request("GET", "/v1/users/7");
        let mut steps = steps_for(&mut stream);
        steps.on_request_headers(&mut stream, true);
        stream.response_headers = vec![("server".into(), "nginx".into())];
        stream.effects.clear();
        assert_eq!(
            steps.on_response_headers(&mut stream, false),
            Verdict::Continue
        );
        assert_eq!(stream.response_header("server"), None);
        assert_eq!(
            stream.response_header("cache-control").as_deref(),
            Some("private")
        );
        assert!(stream
            .effects
            .iter()
            .all(|effect| matches!(effect, Effect::SetResponseHeader(..))));
    }

    #[test]
    fn an_unmatched_request_is_counted_and_untouched_both_ways() {
        let mut stream = request("GET", "/elsewhere");
        let mut steps = steps_for(&mut stream);
        assert_eq!(
            steps.on_request_headers(&mut stream, true),
            Verdict::Continue
        );
        stream.response_headers = vec![("server".into(), "nginx".into())];
        assert_eq!(
            steps.on_response_headers(&mut stream, false),
            Verdict::Continue
        );
        assert!(stream.effects.is_empty());
        assert_eq!(stream.counted(FILTER_NAME, "unmatched"), 1);
    }

    #[test]
    fn a_json_body_is_held_until_whole_then_rewritten_with_its_length() {
        let mut stream = request("POST", "/orders?n=3");
        stream.set_request_header("content-type", Some("application/json"));
        stream.body = br#"{"order":{"id":"a"}}"#.to_vec();
        stream.effects.clear();
        let mut steps = steps_for(&mut stream);
        assert_eq!(steps.on_request_headers(&mut stream, false), Verdict::Pause);
        assert_eq!(steps.on_request_body(&mut stream, 5, false), Verdict::Pause);
        let size = stream.body.len();
        assert_eq!(
            steps.on_request_body(&mut stream, size, true),
            Verdict::Continue
        );
        let body: serde_json::Value = serde_json::from_slice(&stream.body).expect("JSON");
        assert_eq!(body, serde_json::json!({"order": {"id": "a", "n": 3}}));
        assert_eq!(
            stream.request_header("content-length"),
            Some(stream.body.len().to_string())
        );
        assert_eq!(stream.counted(FILTER_NAME, "body_rewritten"), 1);
    }

    #[test]
    fn a_value_that_cannot_be_placed_is_answered_400() {
        let mut stream = request("POST", "/orders?n=three");
        stream.set_request_header("content-type", Some("application/json"));
        stream.body = b"{}".to_vec();
        let mut steps = steps_for(&mut stream);
        assert_eq!(steps.on_request_headers(&mut stream, false), Verdict::Pause);
        assert_eq!(
            steps.on_request_body(&mut stream, 2, true),
            Verdict::Answered
        );
        let reply = stream.reply().expect("a reply");
        assert_eq!(
            (reply.status, reply.header("x-ca-error-code")),
            (400, Some("A400MV"))
        );
        assert_eq!(stream.counted(FILTER_NAME, "denied.A400MV"), 1);
    }

    #[test]
    fn a_body_over_the_limit_is_answered_413() {
        let mut stream = request("POST", "/orders?n=1");
        stream.set_request_header("content-type", Some("application/json"));
        stream.set_request_header("content-length", Some("100"));
        let mut steps = steps_for(&mut stream);
        assert_eq!(
            steps.on_request_headers(&mut stream, false),
            Verdict::Answered
        );
        assert_eq!(stream.reply().map(|reply| reply.status), Some(413));
    }
}
