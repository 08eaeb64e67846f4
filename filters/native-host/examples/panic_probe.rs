//! A dynamic module whose policy code panics on request: the proof, in a
//! real Envoy, that a panic in a native module costs one request and never
//! Envoy (integration-tests/tests/native_host.rs). `x-panic: request`
//! panics in the request headers, `x-panic: response` in the response
//! headers, `x-panic: log` at the end of the stream; anything else passes.
//!
//! Built by `make build`:
//! `cargo build --profile native -p native-host --example panic_probe`.
// Panicking on request is the probe's whole job.
#![allow(clippy::panic)]

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

struct ProbeRoot;

impl Context for ProbeRoot {}

impl RootContext for ProbeRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe { panic_at: None }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Probe {
    panic_at: Option<String>,
}

impl Context for Probe {}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        self.panic_at = self.get_http_request_header("x-panic");
        if self.panic_at.as_deref() == Some("request") {
            panic!("panic probe: in the request headers");
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if self.panic_at.as_deref() == Some("response") {
            panic!("panic probe: in the response headers");
        }
        self.set_http_response_header("x-probe", Some("passed"));
        Action::Continue
    }

    fn on_log(&mut self) {
        if self.panic_at.as_deref() == Some("log") {
            panic!("panic probe: at the end of the stream");
        }
    }
}

native_host::module!(|_| Box::new(ProbeRoot), |request_id| {
    native_host::InternalErrorReply {
        status: 500,
        headers: vec![("x-probe-error".into(), "panicked".into())],
        body: format!("{{\"request_id\":{request_id:?}}}").into_bytes(),
    }
});
