//! param-validation's part in one request, written against the stream
//! seam: the rule is chosen and the query and headers checked on the
//! request headers; a body the rule reads is buffered (the request held)
//! and checked when whole. What passes is rewritten (undeclared
//! parameters dropped, defaults added, headers outside an allow list
//! removed); what does not is answered in the shared error shape.

use crate::policy::{codes, RequestParts, Rewrite, Rule, Validation};
use crate::FILTER_NAME;
use gateway_common::error::GatewayError;
use gateway_common::host::RequestFacts;
use gateway_common::matching::KeptCaptures;
use gateway_common::metrics::{Counter, DefineMetrics, DenialCounters};
use gateway_common::stream::{
    declared_body_length, refuse, HeldBody, HeldForBody, PolicySteps, Stream, Verdict,
};
use std::rc::Rc;

const DENIAL_CODES: [GatewayError; 4] = [
    codes::INVALID_PARAMETER,
    codes::INVALID_BODY,
    codes::BODY_TOO_LARGE,
    codes::UNSUPPORTED_MEDIA_TYPE,
];

/// `passed`, `unmatched` (no rule), `rewritten`, `denied.<code>`.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    passed: Counter,
    unmatched: Counter,
    rewritten: Counter,
    denied: DenialCounters<4>,
}

impl Metrics {
    pub fn define(host: &mut dyn DefineMetrics) -> Self {
        Self {
            passed: host.define_counter(FILTER_NAME, "passed"),
            unmatched: host.define_counter(FILTER_NAME, "unmatched"),
            rewritten: host.define_counter(FILTER_NAME, "rewritten"),
            denied: DenialCounters::define_with(host, FILTER_NAME, &DENIAL_CODES),
        }
    }
}

/// What a request held for its body keeps from its headers.
struct Waiting {
    rule: usize,
    captures: KeptCaptures,
    path_and_query: String,
    content_type: Option<String>,
}

pub struct ValidationSteps {
    validation: Rc<Validation>,
    metrics: Metrics,
    waiting: HeldForBody<Waiting>,
}

impl ValidationSteps {
    pub fn new(validation: Rc<Validation>, metrics: Metrics) -> Self {
        Self {
            validation,
            metrics,
            waiting: HeldForBody::default(),
        }
    }

    fn reject(&self, stream: &mut dyn Stream, error: &GatewayError) -> Verdict {
        refuse(stream, &self.metrics.denied, error)
    }

    fn check(
        &self,
        stream: &mut dyn Stream,
        rule: &Rule,
        path_and_query: &str,
        captures: &[(&str, String)],
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> Verdict {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let result = {
            let reader: &dyn Stream = stream;
            let header = |name: &str| reader.request_header(name);
            rule.validate(&RequestParts {
                query,
                header: Some(&header),
                captures,
                content_type,
                body,
            })
        };
        match result {
            Ok(rewrite) => {
                self.apply(stream, path, &rewrite, body.map_or(0, <[u8]>::len));
                stream.increment(self.metrics.passed, 1);
                Verdict::Continue
            }
            Err(error) => self.reject(stream, &error),
        }
    }

    fn apply(&self, stream: &mut dyn Stream, path: &str, rewrite: &Rewrite, body_len: usize) {
        if *rewrite == Rewrite::default() {
            return;
        }
        stream.increment(self.metrics.rewritten, 1);
        if let Some(query) = &rewrite.query {
            let new_path = if query.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{query}")
            };
            stream.set_request_header(":path", Some(&new_path));
        }
        for (name, value) in &rewrite.headers_to_set {
            stream.set_request_header(name, Some(value));
        }
        if let Some(form) = &rewrite.form_body {
            stream.replace_request_body(body_len, form.as_bytes());
            stream.set_request_header("content-length", Some(&form.len().to_string()));
        }
    }
}

impl PolicySteps for ValidationSteps {
    fn on_request_headers(&mut self, stream: &mut dyn Stream, end_of_stream: bool) -> Verdict {
        let validation = Rc::clone(&self.validation);
        let facts = RequestFacts::read(stream, validation.rules.uses_route_name());
        let Some((index, captures)) = validation.rules.first_for(&facts.attrs()) else {
            stream.increment(self.metrics.unmatched, 1);
            return Verdict::Continue;
        };
        let Some(rule) = validation.rules.get(index) else {
            return Verdict::Continue;
        };
        if rule.has_header_allowlist() {
            let names = stream.request_header_names();
            for name in rule.headers_to_remove(names.iter().map(String::as_str)) {
                stream.set_request_header(&name, None);
            }
        }
        let content_type = stream.request_header("content-type");
        if !end_of_stream && rule.rejects_content_type(content_type.as_deref()) {
            let error = codes::UNSUPPORTED_MEDIA_TYPE.with_message(format!(
                "Unsupported Content-Type `{}`",
                content_type
                    .as_deref()
                    .unwrap_or("")
                    .chars()
                    .take(64)
                    .collect::<String>()
            ));
            return self.reject(stream, &error);
        }
        if !end_of_stream && rule.needs_body(content_type.as_deref()) {
            if declared_body_length(stream).is_some_and(|len| len > rule.max_body_bytes) {
                return self.reject(stream, &codes::BODY_TOO_LARGE);
            }
            let waiting = Waiting {
                rule: index,
                captures: KeptCaptures::keep(captures),
                path_and_query: facts.line.path.clone(),
                content_type,
            };
            self.waiting.hold(waiting, rule.max_body_bytes);
            return Verdict::Pause;
        }
        let path = facts.line.path.clone();
        self.check(
            stream,
            rule,
            &path,
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
        let (waiting, body) = match self.waiting.body(stream, body_size, end_of_stream) {
            HeldBody::NotHeld => return Verdict::Continue,
            HeldBody::Incomplete => return Verdict::Pause,
            HeldBody::TooLarge(_) => return self.reject(stream, &codes::BODY_TOO_LARGE),
            HeldBody::Complete(waiting, body) => (waiting, body),
        };
        let validation = Rc::clone(&self.validation);
        let Some(rule) = validation.rules.get(waiting.rule) else {
            return Verdict::Continue;
        };
        self.check(
            stream,
            rule,
            &waiting.path_and_query,
            &waiting.captures.captures(),
            waiting.content_type.as_deref(),
            Some(&body),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile_config;
    use gateway_common::host::{FakeHost, Host};
    use gateway_common::stream::{Effect, FakeStream};

    const CONFIG: &str = r#"{"rules":[{
        "match": {"path": {"prefix": "/search"}},
        "parameters": [
            {"name": "q", "in": "query", "required": true, "max_length": 10},
            {"name": "page", "in": "query", "type": "integer", "minimum": 1, "default": "1"}
        ]
    }, {
        "match": {"path": {"prefix": "/form"}},
        "parameters": [{"name": "n", "in": "form", "type": "integer", "required": true}],
        "max_body_bytes": 64
    }, {
        "match": {"path": {"prefix": "/strict"}},
        "allowed_headers": ["accept"]
    }]}"#;

    fn steps_for(stream: &mut FakeStream) -> ValidationSteps {
        let validation = compile_config(CONFIG.as_bytes()).expect("config");
        let metrics = Metrics::define(stream);
        ValidationSteps::new(Rc::new(validation), metrics)
    }

    fn get(path: &str) -> FakeStream {
        FakeStream::new(
            FakeHost::new()
                .with_header(":method", "GET")
                .with_header(":path", path)
                .with_header("accept", "*/*")
                .with_header("x-debug", "1"),
        )
    }

    fn post_form(path: &str, body: &str) -> FakeStream {
        let mut stream = FakeStream::new(
            FakeHost::new()
                .with_header(":method", "POST")
                .with_header(":path", path)
                .with_header("content-type", "application/x-www-form-urlencoded")
                .with_header("content-length", &body.len().to_string()),
        );
        stream.body = body.as_bytes().to_vec();
        stream
    }

    #[test]
    fn a_valid_query_goes_on_with_undeclared_parameters_dropped_and_defaults_added() {
        let mut stream = get("/search?q=shoes&debug=1");
        let mut steps = steps_for(&mut stream);
        assert_eq!(
            steps.on_request_headers(&mut stream, true),
            Verdict::Continue
        );
        assert_eq!(
            stream.request_header(":path").as_deref(),
            Some("/search?q=shoes&page=1")
        );
        assert_eq!(stream.counted(FILTER_NAME, "passed"), 1);
        assert_eq!(stream.counted(FILTER_NAME, "rewritten"), 1);
    }

    #[test]
    fn an_invalid_query_is_answered_400_naming_the_parameter() {
        let mut stream = get("/search?page=0");
        let mut steps = steps_for(&mut stream);
        assert_eq!(
            steps.on_request_headers(&mut stream, true),
            Verdict::Answered
        );
        let reply = stream.reply().expect("a reply");
        assert_eq!(reply.status, 400);
        assert_eq!(reply.header("x-ca-error-code"), Some("A400PV"));
        let message = reply.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            message.contains('q') && message.contains("page"),
            "{message}"
        );
        assert_eq!(stream.counted(FILTER_NAME, "denied.A400PV"), 1);
        assert_eq!(stream.counted(FILTER_NAME, "passed"), 0);
    }

    #[test]
    fn a_request_no_rule_matches_is_counted_and_untouched() {
        let mut stream = get("/other?x=1");
        let mut steps = steps_for(&mut stream);
        assert_eq!(
            steps.on_request_headers(&mut stream, true),
            Verdict::Continue
        );
        assert!(stream.effects.is_empty());
        assert_eq!(stream.counted(FILTER_NAME, "unmatched"), 1);
    }

    #[test]
    fn headers_outside_the_allow_list_are_removed() {
        let mut stream = get("/strict");
        let mut steps = steps_for(&mut stream);
        assert_eq!(
            steps.on_request_headers(&mut stream, true),
            Verdict::Continue
        );
        assert_eq!(stream.request_header("x-debug"), None);
        assert_eq!(stream.request_header("accept").as_deref(), Some("*/*"));
        assert!(stream
            .effects
            .contains(&Effect::SetRequestHeader("x-debug".into(), None)));
    }

    #[test]
    fn a_form_body_is_held_until_whole_then_checked_and_rewritten() {
        let mut stream = post_form("/form", "n=7&junk=x");
        let mut steps = steps_for(&mut stream);
        assert_eq!(steps.on_request_headers(&mut stream, false), Verdict::Pause);
        assert_eq!(steps.on_request_body(&mut stream, 4, false), Verdict::Pause);
        assert_eq!(
            steps.on_request_body(&mut stream, 10, true),
            Verdict::Continue
        );
        assert_eq!(stream.body, b"n=7");
        assert_eq!(
            stream.request_header("content-length").as_deref(),
            Some("3")
        );
        assert!(stream
            .effects
            .contains(&Effect::ReplaceRequestBody(b"n=7".to_vec())));
    }

    #[test]
    fn an_invalid_form_body_is_answered_400() {
        let mut stream = post_form("/form", "n=seven");
        let mut steps = steps_for(&mut stream);
        assert_eq!(steps.on_request_headers(&mut stream, false), Verdict::Pause);
        assert_eq!(
            steps.on_request_body(&mut stream, 7, true),
            Verdict::Answered
        );
        assert_eq!(stream.reply().map(|reply| reply.status), Some(400));
    }

    #[test]
    fn a_body_over_the_limit_is_refused_before_or_while_it_arrives() {
        let long = format!("n=1&pad={}", "x".repeat(100));
        let mut declared = post_form("/form", &long);
        let mut steps = steps_for(&mut declared);
        assert_eq!(
            steps.on_request_headers(&mut declared, false),
            Verdict::Answered
        );
        assert_eq!(declared.reply().map(|reply| reply.status), Some(413));

        let mut chunked = post_form("/form", &long);
        chunked.set_request_header("content-length", None);
        let mut steps = steps_for(&mut chunked);
        assert_eq!(
            steps.on_request_headers(&mut chunked, false),
            Verdict::Pause
        );
        assert_eq!(
            steps.on_request_body(&mut chunked, long.len(), false),
            Verdict::Answered
        );
        assert_eq!(chunked.reply().map(|reply| reply.status), Some(413));
        assert_eq!(chunked.counted(FILTER_NAME, "denied.A413PB"), 1);
    }
}
