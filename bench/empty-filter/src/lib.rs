//! empty-filter: a proxy-wasm HTTP filter that only continues.
//!
//! The benchmark's baseline (`make bench`): loading it in Envoy costs the Wasm
//! VM and the proxy-wasm ABI round trips of every request, and nothing else.
//! Each gateway filter's own cost is measured against it. It is built with the
//! same SDK, the same release profile and the same stream callbacks as the
//! filters, so the difference is the policy work alone.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

/// One per request. Every callback keeps the SDK's default: continue.
#[derive(Debug, Default, Clone, Copy)]
pub struct EmptyHttp;

impl Context for EmptyHttp {}

impl HttpContext for EmptyHttp {}

/// What the filter does with a request or response: nothing.
pub const ACTION: Action = Action::Continue;

/// The native module's root: the native host makes HTTP contexts through a
/// root (the `.wasm` module names its HTTP context directly).
#[derive(Debug, Default)]
pub struct EmptyRoot;

impl Context for EmptyRoot {}

impl RootContext for EmptyRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(EmptyHttp))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[cfg(feature = "native")]
native_host::module!(|_| Box::new(EmptyRoot), |_| {
    native_host::InternalErrorReply {
        status: 500,
        headers: Vec::new(),
        body: Vec::new(),
    }
});

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_context_id, _root_context_id| -> Box<dyn HttpContext> {
        Box::new(EmptyHttp)
    });
}}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stream_callback_continues() {
        let mut http = EmptyHttp;
        assert_eq!(http.on_http_request_headers(3, false), ACTION);
        assert_eq!(http.on_http_request_body(10, true), ACTION);
        assert_eq!(http.on_http_request_trailers(0), ACTION);
        assert_eq!(http.on_http_response_headers(2, false), ACTION);
        assert_eq!(http.on_http_response_body(10, true), ACTION);
        assert_eq!(http.on_http_response_trailers(0), ACTION);
    }

    #[test]
    fn the_native_root_makes_http_contexts() {
        assert_eq!(EmptyRoot.get_type(), Some(ContextType::HttpContext));
    }
}
