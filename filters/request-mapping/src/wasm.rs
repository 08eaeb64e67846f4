//! The proxy-wasm adapter of request-mapping: the filter as a `.wasm` module
//! and as the gateway module's section. Re-exported from the crate root.

use crate::policy::{codes, response_changes, Frontend, Mapped, Mapping, SystemValue};
use crate::*;
use gateway_common::adapter::{self, BufferedBody, Filter};
use gateway_common::config::ConfigError;
use gateway_common::error::GatewayError;
use gateway_common::host::{Host, ProxyWasmHost, RequestFacts, RequestLine};
use gateway_common::identity;
use gateway_common::metrics::{Counter, DenialCounters};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

/// `mapped`, `unmatched` (no rule), `body_rewritten`, `denied.<code>`.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    mapped: Counter,
    unmatched: Counter,
    body_rewritten: Counter,
    denied: DenialCounters<4>,
}

const DENIAL_CODES: [GatewayError; 4] = [
    codes::INVALID_VALUE,
    codes::BODY_REQUIRED,
    codes::BODY_TOO_LARGE,
    codes::UNSUPPORTED_MEDIA_TYPE,
];

impl Metrics {
    pub fn define() -> Self {
        Self {
            mapped: Counter::define(FILTER_NAME, "mapped"),
            unmatched: Counter::define(FILTER_NAME, "unmatched"),
            body_rewritten: Counter::define(FILTER_NAME, "body_rewritten"),
            denied: DenialCounters::define(FILTER_NAME, &DENIAL_CODES),
        }
    }
}

/// The filter, as the shared root context sees it.
pub struct RequestMappingFilter;

impl Filter for RequestMappingFilter {
    const NAME: &'static str = FILTER_NAME;
    type Policy = Mapping;
    type Metrics = Metrics;

    fn compile(bytes: &[u8]) -> Result<Mapping, ConfigError> {
        compile_config(bytes)
    }

    fn define_metrics() -> Metrics {
        Metrics::define()
    }

    fn http_context(mapping: Rc<Mapping>, metrics: Metrics) -> Box<dyn HttpContext> {
        Box::new(RequestMappingHttp {
            mapping,
            metrics,
            rule: None,
            waiting: None,
        })
    }
}

/// What the mapping needs of the request headers, kept while the body arrives.
struct Waiting {
    line: RequestLine,
    captures: Vec<(String, String)>,
    content_type: Option<String>,
}

pub struct RequestMappingHttp {
    mapping: Rc<Mapping>,
    metrics: Metrics,
    /// The matched rule, for the response side.
    rule: Option<usize>,
    waiting: Option<Waiting>,
}

impl RequestMappingHttp {
    fn reject(&self, error: &GatewayError) -> Action {
        self.metrics.denied.inc(error);
        adapter::send_error(error);
        Action::Pause
    }

    fn system_value(&self, kind: SystemValue, rule_name: &str) -> Option<String> {
        let host = ProxyWasmHost;
        match kind {
            SystemValue::ClientIp => self
                .mapping
                .client_address
                .client_of(&host)
                .ok()
                .map(|ip| ip.to_string()),
            SystemValue::RequestId => host.request_header("x-request-id"),
            SystemValue::AppKey => identity::app_key(&host),
            SystemValue::AppName => identity::read_identity(&host).and_then(|i| i.app_name),
            // The API sign-auth matched, else this rule's name.
            SystemValue::Api => Some(
                identity::read_identity(&host)
                    .and_then(|i| i.api)
                    .unwrap_or_else(|| rule_name.to_string()),
            ),
            SystemValue::RequestTime => Some(gateway_common::host::now_ms(&host).to_string()),
            SystemValue::User => identity::user(&host),
        }
    }

    fn map(
        &self,
        line: &RequestLine,
        captures: &[(&str, String)],
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> Action {
        let Some(rule) = self.rule.and_then(|i| self.mapping.rule(i)) else {
            return Action::Continue;
        };
        let (path, query) = line.path.split_once('?').unwrap_or((&line.path, ""));
        let header = |name: &str| adapter::request_header(name);
        let system = |kind: SystemValue| self.system_value(kind, &rule.name);
        let frontend = Frontend {
            path,
            query,
            captures,
            header: Some(&header),
            system: Some(&system),
            content_type,
            body,
        };
        match rule.apply(&frontend) {
            Ok(mapped) => {
                self.write(line, &mapped, body.map_or(0, <[u8]>::len));
                self.metrics.mapped.inc();
                Action::Continue
            }
            Err(error) => self.reject(&error),
        }
    }

    /// Writes the mapping back; `line` is the request line as this filter
    /// received it, published for log-push when the mapping changes it.
    fn write(&self, line: &RequestLine, mapped: &Mapped, body_len: usize) {
        if mapped.path.is_some() || mapped.method.is_some() {
            identity::publish_original_request(&ProxyWasmHost, &line.method, &line.path);
        }
        for name in &mapped.remove_headers {
            adapter::set_request_header(name, None);
        }
        for (name, value) in &mapped.set_headers {
            adapter::set_request_header(name, Some(value));
        }
        if let Some(path) = &mapped.path {
            adapter::set_request_header(":path", Some(path));
        }
        if let Some(authority) = &mapped.authority {
            adapter::set_request_header(":authority", Some(authority));
        }
        if let Some(method) = &mapped.method {
            adapter::set_request_header(":method", Some(method));
        }
        if let Some(body) = &mapped.body {
            adapter::replace_request_body(body_len, body);
            adapter::set_request_header("content-length", Some(&body.len().to_string()));
            self.metrics.body_rewritten.inc();
        }
    }
}

impl Context for RequestMappingHttp {}

impl HttpContext for RequestMappingHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let _reads = gateway_common::host::callback_scope();
        let facts = RequestFacts::read(&ProxyWasmHost, self.mapping.uses_route_name());
        let Some((index, captures)) = self.mapping.rule_index_for(&facts.attrs()) else {
            self.metrics.unmatched.inc();
            return Action::Continue;
        };
        self.rule = Some(index);
        let Some(rule) = self.mapping.rule(index) else {
            return Action::Continue;
        };
        let content_type = rule
            .needs_body()
            .then(|| adapter::request_header("content-type"))
            .flatten();
        if rule.needs_body() && !end_of_stream {
            if adapter::declared_body_length().is_some_and(|len| len > rule.max_body_bytes) {
                return self.reject(&codes::BODY_TOO_LARGE);
            }
            self.waiting = Some(Waiting {
                line: facts.line,
                captures: captures
                    .into_iter()
                    .map(|(n, v)| (n.to_string(), v))
                    .collect(),
                content_type,
            });
            return Action::Pause;
        }
        self.map(&facts.line, &captures, content_type.as_deref(), None)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let _reads = gateway_common::host::callback_scope();
        let Some(waiting) = &self.waiting else {
            return Action::Continue;
        };
        let max = self
            .rule
            .and_then(|i| self.mapping.rule(i))
            .map_or(0, |r| r.max_body_bytes);
        match adapter::buffer_request_body(body_size, end_of_stream, max) {
            BufferedBody::Incomplete => Action::Pause,
            BufferedBody::TooLarge => {
                self.waiting = None;
                self.reject(&codes::BODY_TOO_LARGE)
            }
            BufferedBody::Complete(body) => {
                let captures: Vec<(&str, String)> = waiting
                    .captures
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.clone()))
                    .collect();
                let action = self.map(
                    &waiting.line,
                    &captures,
                    waiting.content_type.as_deref(),
                    Some(&body),
                );
                self.waiting = None;
                action
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let _reads = gateway_common::host::callback_scope();
        let Some(rule) = self.rule.and_then(|i| self.mapping.rule(i)) else {
            return Action::Continue;
        };
        if rule.response.is_empty() {
            return Action::Continue;
        }
        let header = |name: &str| adapter::response_header(name);
        let (set, remove) = response_changes(&rule.response, &header);
        for name in &remove {
            adapter::set_response_header(name, None);
        }
        for (name, value) in &set {
            adapter::set_response_header(name, Some(value));
        }
        Action::Continue
    }
}

#[cfg(feature = "entrypoint")]
gateway_common::declare_root!(
    gateway_common::adapter::RootRank::Filter,
    gateway_common::adapter::FilterRoot::<RequestMappingFilter>::default()
);
