//! The gateway module as an Envoy dynamic module, `libgateway.so`: the
//! module's policies and requests ([`GatewayPolicies`], [`GatewayRequest`])
//! over the native host (`filters/native-host`), no proxy-wasm in between.

use crate::module::{GatewayPolicies, GatewayRequest};
use crate::pipeline::Flow;
use gateway_common::hosting::{RequestHost, RootHost};
use gateway_common::stream::CallAnswer;
use native_host::{InternalErrorReply, Module, ModuleRequest, ModuleRoot};
use std::time::Duration;

/// The gateway module.
pub struct GatewayModule;

impl Module for GatewayModule {
    fn load(&self, document: &[u8], host: &mut dyn RootHost) -> Option<Box<dyn ModuleRoot>> {
        Some(Box::new(NativeRoot(GatewayPolicies::load(document, host)?)))
    }

    /// The shared error shape, for a request whose policy code panicked.
    fn internal_error(&self, request_id: Option<&str>) -> InternalErrorReply {
        let rendered =
            gateway_common::error::render(&gateway_common::error::codes::INTERNAL, request_id);
        InternalErrorReply {
            status: rendered.status,
            headers: rendered
                .headers
                .into_iter()
                .map(|(name, value)| (name.to_string(), value))
                .collect(),
            body: rendered.body,
        }
    }
}

struct NativeRoot(GatewayPolicies);

impl ModuleRoot for NativeRoot {
    fn request(&self) -> Option<Box<dyn ModuleRequest>> {
        Some(Box::new(NativeRequest(self.0.request()?)))
    }

    fn tick_period(&self) -> Option<Duration> {
        self.0.tick_period()
    }

    fn wakes(&self) -> bool {
        self.0.wakes()
    }

    fn on_tick(&mut self, host: &mut dyn RootHost) {
        self.0.on_tick(host);
    }

    fn on_call_answer(&mut self, token: u32, answer: &dyn CallAnswer, host: &mut dyn RootHost) {
        self.0.on_call_answer(token, answer, host);
    }
}

struct NativeRequest(GatewayRequest);

fn go_on(flow: Flow) -> bool {
    flow == Flow::Continue
}

impl ModuleRequest for NativeRequest {
    fn on_request_headers(&mut self, host: &mut dyn RequestHost, end_of_stream: bool) -> bool {
        go_on(self.0.on_request_headers(host, end_of_stream))
    }

    fn on_request_body(
        &mut self,
        host: &mut dyn RequestHost,
        body_size: usize,
        end_of_stream: bool,
    ) -> bool {
        go_on(self.0.on_request_body(host, body_size, end_of_stream))
    }

    fn on_request_trailers(&mut self, host: &mut dyn RequestHost) -> bool {
        go_on(self.0.on_request_trailers(host))
    }

    fn on_response_headers(&mut self, host: &mut dyn RequestHost, end_of_stream: bool) -> bool {
        go_on(self.0.on_response_headers(host, end_of_stream))
    }

    fn on_response_body(
        &mut self,
        host: &mut dyn RequestHost,
        body_size: usize,
        end_of_stream: bool,
    ) -> bool {
        go_on(self.0.on_response_body(host, body_size, end_of_stream))
    }

    fn on_response_trailers(&mut self, host: &mut dyn RequestHost) -> bool {
        go_on(self.0.on_response_trailers(host))
    }

    fn on_call_answer(
        &mut self,
        host: &mut dyn RequestHost,
        token: u32,
        answer: &dyn CallAnswer,
    ) -> bool {
        go_on(self.0.on_call_answer(host, token, answer))
    }

    fn on_wake(&mut self, host: &mut dyn RequestHost) -> bool {
        go_on(self.0.on_wake(host))
    }

    fn on_log(&mut self, host: &mut dyn RequestHost) {
        self.0.on_log(host);
    }

    fn on_end(&mut self, host: &mut dyn RequestHost) {
        self.0.end(host);
    }
}
