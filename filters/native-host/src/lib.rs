//! native-host: the native module's host, over Envoy's dynamic-module ABI
//! (`envoy.filters.http.dynamic_modules`), with no Wasm VM and no
//! proxy-wasm in between.
//!
//! A module ([`Module`]) is loaded per configuration on each Envoy thread
//! that needs it ([`ModuleRoot`]: the main thread's, made in config-new
//! where the configuration is checked and the metrics defined, is the one
//! that ticks and calls out; each worker's is made with its first stream)
//! and runs each stream ([`ModuleRequest`]) over the same host traits the
//! proxy-wasm host implements (`gateway_common::hosting`): header values are
//! read in place from Envoy's maps, answers to calls handed over as views
//! into Envoy's buffers, a woken stream scheduled on its worker with the
//! stream's own scheduler.
//!
//! `unsafe` is confined to this crate: [`abi`] declares Envoy's callbacks,
//! `envoy` wraps each call with the reason it is sound, and `hooks` takes
//! Envoy's pointers back; every hook catches a panic (the `native` profile
//! unwinds), so a failing request is answered with an internal error
//! instead of taking Envoy down.

mod abi;
mod cluster;
mod envoy;
mod hooks;
mod host;
mod kafka;
mod mailbox;
mod redis;
mod request;
mod root;
mod tls;

use gateway_common::hosting::{RequestHost, RootHost};
use gateway_common::stream::CallAnswer;
use std::time::Duration;

/// The ABI version this module is built for (Envoy 1.40).
pub const ABI_VERSION: &std::ffi::CStr = c"v0.2.0";

/// The answer to a request whose module code panicked.
pub struct InternalErrorReply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What a dynamic module built on this host runs.
pub trait Module: Send + Sync + 'static {
    /// Loads a configuration on this thread; `None` refuses it (the
    /// module logged why).
    fn load(&self, configuration: &[u8], host: &mut dyn RootHost) -> Option<Box<dyn ModuleRoot>>;

    /// The reply to a request whose code panicked (given its
    /// `x-request-id`).
    fn internal_error(&self, request_id: Option<&str>) -> InternalErrorReply;
}

/// A configuration loaded on one thread.
pub trait ModuleRoot {
    /// A stream's part; `None` lets the stream pass untouched.
    fn request(&self) -> Option<Box<dyn ModuleRequest>>;

    /// How often the main thread's root wants [`ModuleRoot::on_tick`].
    fn tick_period(&self) -> Option<Duration> {
        None
    }

    /// Its streams may be woken by other streams of the worker.
    fn wakes(&self) -> bool {
        false
    }

    fn on_tick(&mut self, _host: &mut dyn RootHost) {}

    /// The answer to a call the root made.
    fn on_call_answer(&mut self, _token: u32, _answer: &dyn CallAnswer, _host: &mut dyn RootHost) {}
}

/// What the module does with one stream. Request callbacks return whether
/// the request goes on (`false` holds it, or it was answered); a call's
/// answer and a wake return whether the request held is resumed.
pub trait ModuleRequest {
    fn on_request_headers(&mut self, host: &mut dyn RequestHost, end_of_stream: bool) -> bool;
    fn on_request_body(
        &mut self,
        host: &mut dyn RequestHost,
        body_size: usize,
        end_of_stream: bool,
    ) -> bool;
    fn on_request_trailers(&mut self, host: &mut dyn RequestHost) -> bool;
    fn on_response_headers(&mut self, host: &mut dyn RequestHost, end_of_stream: bool) -> bool;
    fn on_response_body(
        &mut self,
        _host: &mut dyn RequestHost,
        _body_size: usize,
        _end_of_stream: bool,
    ) -> bool {
        true
    }
    fn on_response_trailers(&mut self, _host: &mut dyn RequestHost) -> bool {
        true
    }
    fn on_call_answer(
        &mut self,
        _host: &mut dyn RequestHost,
        _token: u32,
        _answer: &dyn CallAnswer,
    ) -> bool {
        false
    }
    fn on_wake(&mut self, _host: &mut dyn RequestHost) -> bool {
        false
    }
    /// The stream is over (Envoy's access-log time).
    fn on_log(&mut self, _host: &mut dyn RequestHost) {}
    /// The stream goes (after `on_log`, or reset).
    fn on_end(&mut self, _host: &mut dyn RequestHost) {}
}

/// Called by [`module!`]'s `envoy_dynamic_module_on_program_init`.
pub fn program_init(module: &'static dyn Module) -> *const std::ffi::c_char {
    let _ = host::MODULE.set(module);
    std::panic::set_hook(Box::new(|info| {
        envoy::log(
            envoy::level::CRITICAL,
            &format!("native module panicked: {info}"),
        );
    }));
    ABI_VERSION.as_ptr()
}

/// Declares the dynamic module: a `static` value implementing [`Module`].
///
/// ```ignore
/// static MODULE: MyModule = MyModule;
/// native_host::module!(MODULE);
/// ```
#[macro_export]
macro_rules! module {
    ($module:expr) => {
        #[no_mangle]
        pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const ::std::ffi::c_char {
            $crate::program_init(&$module)
        }
    };
}
