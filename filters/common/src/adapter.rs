//! The few proxy-wasm steps every filter's adapter repeats: loading the
//! plugin configuration in `on_configure`, and answering with the shared
//! error shape.

use crate::config::ConfigError;
use crate::error::{render, GatewayError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MapType};
use std::rc::Rc;

/// Reads the plugin configuration and compiles it. On error, logs
/// `<filter>: invalid configuration: <path>: <reason>` and returns `None`,
/// so `on_configure` returns false and Envoy refuses the configuration.
pub fn load_config<C>(
    filter: &str,
    compile: impl FnOnce(&[u8]) -> Result<C, ConfigError>,
) -> Option<C> {
    let bytes = hostcalls::get_buffer(
        proxy_wasm::types::BufferType::PluginConfiguration,
        0,
        usize::MAX,
    )
    .ok()
    .flatten()
    .unwrap_or_default();
    match compile(&bytes) {
        Ok(config) => Some(config),
        Err(err) => {
            let _ = hostcalls::log(
                LogLevel::Error,
                &format!("{filter}: invalid configuration: {err}"),
            );
            None
        }
    }
}

/// Answers the current request with `error` in the shared shape; the caller
/// then returns `Action::Pause`.
pub fn send_error(error: &GatewayError) {
    send_error_with_headers(error, &[]);
}

/// [`send_error`] with extra response headers (`Retry-After`, a quota…).
pub fn send_error_with_headers(error: &GatewayError, extra: &[(&'static str, String)]) {
    let request_id = hostcalls::get_map_value(MapType::HttpRequestHeaders, "x-request-id")
        .ok()
        .flatten();
    let mut response = render(error, request_id.as_deref());
    response.headers.extend_from_slice(extra);
    let _ = hostcalls::send_http_response(
        response.status,
        response.header_pairs(),
        Some(&response.body),
    );
}

pub fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

/// What a filter tells the shared root context about itself.
pub trait Filter: 'static {
    /// Names the filter in logs and metrics (`ip_acl`).
    const NAME: &'static str;
    /// The compiled, immutable configuration.
    type Policy: 'static;
    /// The counters, defined once per VM.
    type Metrics: Copy + 'static;

    fn compile(bytes: &[u8]) -> Result<Self::Policy, ConfigError>;

    /// Work with the host once the policy is compiled (e.g. creating shared
    /// data); an error refuses the configuration.
    fn prepare(_policy: &Self::Policy) -> Result<(), String> {
        Ok(())
    }

    fn define_metrics() -> Self::Metrics;

    fn http_context(
        policy: Rc<Self::Policy>,
        metrics: Self::Metrics,
    ) -> Box<dyn proxy_wasm::traits::HttpContext>;
}

/// The root context every filter uses: compiles the configuration in
/// `on_configure` (refusing it with a logged reason) and hands the compiled
/// policy to each request's context.
pub struct FilterRoot<F: Filter> {
    policy: Option<Rc<F::Policy>>,
    metrics: Option<F::Metrics>,
}

impl<F: Filter> Default for FilterRoot<F> {
    fn default() -> Self {
        Self {
            policy: None,
            metrics: None,
        }
    }
}

impl<F: Filter> proxy_wasm::traits::Context for FilterRoot<F> {}

impl<F: Filter> proxy_wasm::traits::RootContext for FilterRoot<F> {
    fn on_configure(&mut self, _config_size: usize) -> bool {
        let Some(policy) = load_config(F::NAME, F::compile) else {
            return false;
        };
        if let Err(reason) = F::prepare(&policy) {
            log(LogLevel::Error, &format!("{}: {reason}", F::NAME));
            return false;
        }
        self.policy = Some(Rc::new(policy));
        self.metrics.get_or_insert_with(F::define_metrics);
        true
    }

    fn create_http_context(
        &self,
        _context_id: u32,
    ) -> Option<Box<dyn proxy_wasm::traits::HttpContext>> {
        Some(F::http_context(self.policy.clone()?, self.metrics?))
    }

    fn get_type(&self) -> Option<proxy_wasm::types::ContextType> {
        Some(proxy_wasm::types::ContextType::HttpContext)
    }
}

/// The request's declared `Content-Length`, if any, so a body over a limit
/// is refused before it is buffered.
pub fn declared_body_length() -> Option<usize> {
    hostcalls::get_map_value(MapType::HttpRequestHeaders, "content-length")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse().ok())
}
