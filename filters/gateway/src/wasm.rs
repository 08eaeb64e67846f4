//! The proxy-wasm side of the gateway module: its root context, which
//! loads the module's policies ([`GatewayPolicies`]), and each request's
//! HTTP context, which hands every callback to the request's
//! [`GatewayRequest`] with the proxy-wasm host. Re-exported from the crate
//! root.

use crate::module::{GatewayPolicies, GatewayRequest};
use crate::pipeline::Flow;
use crate::MODULE_NAME;
use gateway_common::adapter::{self, ProxyWasmCallAnswer, ProxyWasmRequest, ProxyWasmRoot};
use gateway_common::host::{stream_scope, StreamMemory};
use gateway_common::metrics::VmMemory;
use gateway_common::wake::{self, WakeableContext, WAKE_TOKEN};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::time::Duration;

/// The module's root context: the enabled policies, in order.
#[derive(Default)]
pub struct GatewayRoot {
    policies: GatewayPolicies,
    vm_memory: VmMemory,
}

/// How often the VM's memory is reported when no policy ticks sooner.
const VM_MEMORY_PERIOD: Duration = Duration::from_secs(1);

impl Context for GatewayRoot {
    fn on_http_call_response(
        &mut self,
        token: u32,
        headers: usize,
        body_size: usize,
        trailers: usize,
    ) {
        if wake::forward_call_answer(token, headers, body_size, trailers) {
            return;
        }
        let answer = ProxyWasmCallAnswer { body_size };
        if self
            .policies
            .on_call_answer(token, &answer, &mut ProxyWasmRoot)
        {
            self.done();
        }
    }

    fn on_done(&mut self) -> bool {
        self.vm_memory.withdraw();
        self.policies.on_done(&mut ProxyWasmRoot)
    }
}

impl RootContext for GatewayRoot {
    fn on_configure(&mut self, _config_size: usize) -> bool {
        let document = adapter::plugin_configuration();
        let Some(policies) = GatewayPolicies::load(&document, &mut ProxyWasmRoot) else {
            return false;
        };
        let period = policies
            .tick_period()
            .map_or(VM_MEMORY_PERIOD, |period| period.min(VM_MEMORY_PERIOD));
        self.set_tick_period(period);
        self.vm_memory.withdraw();
        self.vm_memory = VmMemory::define(MODULE_NAME);
        self.vm_memory.report();
        if policies.wakes() {
            wake::open_wake_queue();
        }
        self.policies = policies;
        true
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        wake::on_queue_ready(queue_id);
    }

    fn on_tick(&mut self) {
        self.policies.on_tick(&mut ProxyWasmRoot);
        self.vm_memory.report();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let http = Box::new(GatewayHttp {
            request: self.policies.request()?,
            host: ProxyWasmRequest::new(context_id),
            memory: StreamMemory::default(),
        });
        if self.policies.wakes() {
            return Some(Box::new(WakeableContext::new(context_id, http)));
        }
        Some(http)
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request's context: its [`GatewayRequest`] over the proxy-wasm host.
struct GatewayHttp {
    request: GatewayRequest,
    host: ProxyWasmRequest,
    /// Reads that hold for the whole stream, shared by its callbacks.
    memory: StreamMemory,
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

impl Drop for GatewayHttp {
    fn drop(&mut self) {
        self.request.end(&mut self.host);
    }
}

impl Context for GatewayHttp {
    fn on_http_call_response(&mut self, token: u32, _: usize, body_size: usize, _: usize) {
        let _reads = stream_scope(&mut self.memory);
        let flow = if token == WAKE_TOKEN {
            self.request.on_wake(&mut self.host)
        } else {
            let answer = ProxyWasmCallAnswer { body_size };
            self.request.on_call_answer(&mut self.host, token, &answer)
        };
        if flow == Flow::Continue {
            let _ = hostcalls::resume_http_request();
        }
    }
}

impl HttpContext for GatewayHttp {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        let _reads = stream_scope(&mut self.memory);
        action(
            self.request
                .on_request_headers(&mut self.host, end_of_stream),
        )
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let _reads = stream_scope(&mut self.memory);
        action(
            self.request
                .on_request_body(&mut self.host, body_size, end_of_stream),
        )
    }

    fn on_http_request_trailers(&mut self, _: usize) -> Action {
        let _reads = stream_scope(&mut self.memory);
        action(self.request.on_request_trailers(&mut self.host))
    }

    fn on_http_response_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        let _reads = stream_scope(&mut self.memory);
        action(
            self.request
                .on_response_headers(&mut self.host, end_of_stream),
        )
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let _reads = stream_scope(&mut self.memory);
        action(
            self.request
                .on_response_body(&mut self.host, body_size, end_of_stream),
        )
    }

    fn on_http_response_trailers(&mut self, _: usize) -> Action {
        let _reads = stream_scope(&mut self.memory);
        action(self.request.on_response_trailers(&mut self.host))
    }

    fn on_log(&mut self) {
        let _reads = stream_scope(&mut self.memory);
        self.request.on_log(&mut self.host);
    }
}
