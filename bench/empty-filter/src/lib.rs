//! empty-filter: a proxy-wasm HTTP filter that only continues.
//!
//! The benchmark's baseline (`make bench`): loading it in Envoy costs the Wasm
//! VM and the proxy-wasm ABI round trips of every request, and nothing else.
//! Each gateway filter's own cost is measured against it. It is built with the
//! same SDK, the same release profile and the same stream callbacks as the
//! filters, so the difference is the policy work alone.

#[cfg(feature = "wasm")]
pub use wasm::*;

#[cfg(feature = "wasm")]
mod wasm {
    use proxy_wasm::traits::{Context, HttpContext};
    use proxy_wasm::types::Action;

    /// One per request. Every callback keeps the SDK's default: continue.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct EmptyHttp;

    impl Context for EmptyHttp {}

    impl HttpContext for EmptyHttp {}

    /// What the filter does with a request or response: nothing.
    pub const ACTION: Action = Action::Continue;

    #[cfg(target_arch = "wasm32")]
    proxy_wasm::main! {{
        proxy_wasm::set_http_context(|_context_id, _root_context_id| -> Box<dyn HttpContext> {
            Box::new(EmptyHttp)
        });
    }}
}

/// The native module's baseline: a module whose every stream callback
/// continues.
#[cfg(feature = "native")]
mod native {
    use gateway_common::hosting::{RequestHost, RootHost};
    use native_host::{InternalErrorReply, Module, ModuleRequest, ModuleRoot};

    pub struct Empty;

    impl Module for Empty {
        fn load(&self, _: &[u8], _: &mut dyn RootHost) -> Option<Box<dyn ModuleRoot>> {
            Some(Box::new(Empty))
        }

        fn internal_error(&self, _: Option<&str>) -> InternalErrorReply {
            InternalErrorReply {
                status: 500,
                headers: Vec::new(),
                body: Vec::new(),
            }
        }
    }

    impl ModuleRoot for Empty {
        fn request(&self) -> Option<Box<dyn ModuleRequest>> {
            Some(Box::new(Empty))
        }
    }

    impl ModuleRequest for Empty {
        fn on_request_headers(&mut self, _: &mut dyn RequestHost, _: bool) -> bool {
            true
        }

        fn on_request_body(&mut self, _: &mut dyn RequestHost, _: usize, _: bool) -> bool {
            true
        }

        fn on_request_trailers(&mut self, _: &mut dyn RequestHost) -> bool {
            true
        }

        fn on_response_headers(&mut self, _: &mut dyn RequestHost, _: bool) -> bool {
            true
        }
    }

    static EMPTY: Empty = Empty;
    native_host::module!(EMPTY);
}

#[cfg(all(test, feature = "wasm"))]
mod tests {
    use super::*;
    use proxy_wasm::traits::HttpContext;

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
}
