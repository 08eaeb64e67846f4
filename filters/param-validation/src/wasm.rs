//! The proxy-wasm adapter of param-validation: the filter as a `.wasm` module
//! and as the gateway module's section. Re-exported from the crate root.

use crate::policy::{codes, RequestParts, Rewrite, Rule, Validation};
use crate::*;
use gateway_common::adapter::{self, BufferedBody, Filter};
use gateway_common::config::ConfigError;
use gateway_common::error::GatewayError;
use gateway_common::host::{ProxyWasmHost, RequestFacts};
use gateway_common::metrics::{Counter, DenialCounters};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

/// `passed`, `unmatched` (no rule), `rewritten`, `denied.<code>`.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    passed: Counter,
    unmatched: Counter,
    rewritten: Counter,
    denied: DenialCounters<4>,
}

const DENIAL_CODES: [GatewayError; 4] = [
    codes::INVALID_PARAMETER,
    codes::INVALID_BODY,
    codes::BODY_TOO_LARGE,
    codes::UNSUPPORTED_MEDIA_TYPE,
];

impl Metrics {
    pub fn define() -> Self {
        Self {
            passed: Counter::define(FILTER_NAME, "passed"),
            unmatched: Counter::define(FILTER_NAME, "unmatched"),
            rewritten: Counter::define(FILTER_NAME, "rewritten"),
            denied: DenialCounters::define(FILTER_NAME, &DENIAL_CODES),
        }
    }
}

/// The filter, as the shared root context sees it.
pub struct ParamValidationFilter;

impl Filter for ParamValidationFilter {
    const NAME: &'static str = FILTER_NAME;
    type Policy = Validation;
    type Metrics = Metrics;

    fn compile(bytes: &[u8]) -> Result<Validation, ConfigError> {
        compile_config(bytes)
    }

    fn define_metrics() -> Metrics {
        Metrics::define()
    }

    fn http_context(validation: Rc<Validation>, metrics: Metrics) -> Box<dyn HttpContext> {
        Box::new(ParamValidationHttp {
            validation,
            metrics,
            waiting: None,
        })
    }
}

/// A request held until its body has arrived.
struct Waiting {
    rule: usize,
    captures: Vec<(String, String)>,
    path_and_query: String,
    content_type: Option<String>,
}

pub struct ParamValidationHttp {
    validation: Rc<Validation>,
    metrics: Metrics,
    waiting: Option<Waiting>,
}

impl ParamValidationHttp {
    fn reject(&self, error: &GatewayError) -> Action {
        self.metrics.denied.inc(error);
        adapter::send_error(error);
        Action::Pause
    }

    fn check(
        &self,
        rule: &Rule,
        path_and_query: &str,
        captures: &[(&str, String)],
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> Action {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let header = |name: &str| adapter::request_header(name);
        let parts = RequestParts {
            query,
            header: Some(&header),
            captures,
            content_type,
            body,
        };
        match rule.validate(&parts) {
            Ok(rewrite) => {
                self.apply(path, &rewrite, body.map_or(0, <[u8]>::len));
                self.metrics.passed.inc();
                Action::Continue
            }
            Err(error) => self.reject(&error),
        }
    }

    fn apply(&self, path: &str, rewrite: &Rewrite, body_len: usize) {
        if *rewrite == Rewrite::default() {
            return;
        }
        self.metrics.rewritten.inc();
        if let Some(query) = &rewrite.query {
            let new_path = if query.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{query}")
            };
            adapter::set_request_header(":path", Some(&new_path));
        }
        for (name, value) in &rewrite.headers_to_set {
            adapter::set_request_header(name, Some(value));
        }
        if let Some(form) = &rewrite.form_body {
            adapter::replace_request_body(body_len, form.as_bytes());
            adapter::set_request_header("content-length", Some(&form.len().to_string()));
        }
    }
}

impl Context for ParamValidationHttp {}

impl HttpContext for ParamValidationHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let _reads = gateway_common::host::callback_scope();
        let facts = RequestFacts::read(&ProxyWasmHost, self.validation.uses_route_name());
        let line = &facts.line;
        let Some((index, captures)) = self.validation.rule_index_for(&facts.attrs()) else {
            self.metrics.unmatched.inc();
            return Action::Continue;
        };
        let Some(rule) = self.validation.rule(index) else {
            return Action::Continue;
        };
        if rule.has_header_allowlist() {
            // Names only; the snapshot is let go before the removals update it.
            let names: Vec<String> = ProxyWasmHost
                .request_headers()
                .iter()
                .map(|(name, _)| gateway_common::header_map::text(name))
                .collect();
            for name in rule.headers_to_remove(names.iter().map(String::as_str)) {
                adapter::set_request_header(&name, None);
            }
        }
        let content_type = adapter::request_header("content-type");
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
            return self.reject(&error);
        }
        if !end_of_stream && rule.needs_body(content_type.as_deref()) {
            let declared = adapter::declared_body_length();
            if declared.is_some_and(|len| len > rule.max_body_bytes) {
                return self.reject(&codes::BODY_TOO_LARGE);
            }
            self.waiting = Some(Waiting {
                rule: index,
                captures: captures
                    .into_iter()
                    .map(|(n, v)| (n.to_string(), v))
                    .collect(),
                path_and_query: facts.line.path,
                content_type,
            });
            return Action::Pause;
        }
        self.check(rule, &line.path, &captures, content_type.as_deref(), None)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let _reads = gateway_common::host::callback_scope();
        let Some(waiting) = &self.waiting else {
            return Action::Continue;
        };
        let max = self
            .validation
            .rule(waiting.rule)
            .map_or(0, |r| r.max_body_bytes);
        match adapter::buffer_request_body(body_size, end_of_stream, max) {
            BufferedBody::Incomplete => Action::Pause,
            BufferedBody::TooLarge => {
                self.waiting = None;
                self.reject(&codes::BODY_TOO_LARGE)
            }
            BufferedBody::Complete(body) => {
                let Some(waiting) = self.waiting.take() else {
                    return Action::Continue;
                };
                let Some(rule) = self.validation.rule(waiting.rule) else {
                    return Action::Continue;
                };
                let captures: Vec<(&str, String)> = waiting
                    .captures
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.clone()))
                    .collect();
                self.check(
                    rule,
                    &waiting.path_and_query,
                    &captures,
                    waiting.content_type.as_deref(),
                    Some(&body),
                )
            }
        }
    }
}

#[cfg(feature = "entrypoint")]
gateway_common::declare_root!(
    gateway_common::adapter::RootRank::Filter,
    gateway_common::adapter::FilterRoot::<ParamValidationFilter>::default()
);
