//! A dynamic module whose code panics on request: the proof, in a real
//! Envoy, that a panic in a native module costs one request and never
//! Envoy (integration-tests/tests/native_host.rs). `x-panic: request`
//! panics in the request headers, `x-panic: response` in the response
//! headers, `x-panic: log` at the end of the stream; anything else passes.
//!
//! Built by `make build`:
//! `cargo build --profile native -p native-host --example panic_probe`.
// Panicking on request is the probe's whole job.
#![allow(clippy::panic)]

use gateway_common::hosting::{RequestHost, RootHost};
use native_host::{InternalErrorReply, Module, ModuleRequest, ModuleRoot};

struct Probe;

impl Module for Probe {
    fn load(&self, _configuration: &[u8], _host: &mut dyn RootHost) -> Option<Box<dyn ModuleRoot>> {
        Some(Box::new(Probe))
    }

    fn internal_error(&self, request_id: Option<&str>) -> InternalErrorReply {
        InternalErrorReply {
            status: 500,
            headers: vec![("x-probe-error".into(), "panicked".into())],
            body: format!("{{\"request_id\":{request_id:?}}}").into_bytes(),
        }
    }
}

impl ModuleRoot for Probe {
    fn request(&self) -> Option<Box<dyn ModuleRequest>> {
        Some(Box::new(ProbeRequest { panic_at: None }))
    }
}

struct ProbeRequest {
    panic_at: Option<String>,
}

impl ModuleRequest for ProbeRequest {
    fn on_request_headers(&mut self, host: &mut dyn RequestHost, _end_of_stream: bool) -> bool {
        self.panic_at = host.request_header("x-panic");
        if self.panic_at.as_deref() == Some("request") {
            panic!("panic probe: in the request headers");
        }
        true
    }

    fn on_request_body(&mut self, _: &mut dyn RequestHost, _: usize, _: bool) -> bool {
        true
    }

    fn on_request_trailers(&mut self, _: &mut dyn RequestHost) -> bool {
        true
    }

    fn on_response_headers(&mut self, host: &mut dyn RequestHost, _end_of_stream: bool) -> bool {
        if self.panic_at.as_deref() == Some("response") {
            panic!("panic probe: in the response headers");
        }
        host.set_response_header("x-probe", Some("passed"));
        true
    }

    fn on_log(&mut self, _: &mut dyn RequestHost) {
        if self.panic_at.as_deref() == Some("log") {
            panic!("panic probe: at the end of the stream");
        }
    }
}

static PROBE: Probe = Probe;
native_host::module!(PROBE);
