//! native-host: runs proxy-wasm filters natively, as an Envoy dynamic
//! module (`envoy.filters.http.dynamic_modules`), with no Wasm VM.
//!
//! It is a host of the proxy-wasm interface, the way Envoy's own "null VM"
//! runs C++ proxy-wasm plugins compiled in: the filter's code (its SDK
//! contexts, adapters and policies) is the same code the `.wasm` module
//! runs, linked into a shared library, and the `proxy_*` host functions it
//! imports are defined here over Envoy's dynamic-module callbacks
//! ([`hostcalls`]). So the Wasm module and the native module cannot
//! behave differently except where the host does; `docs/native-module.md`
//! lists those places.
//!
//! A crate makes a module with [`module!`], naming its root context; this
//! crate exports every hook Envoy 1.40 requires. `unsafe` is confined to
//! this crate: [`abi`] declares Envoy's callbacks, [`host`] keeps the
//! contexts, and every hook catches a panic (the `native` profile unwinds),
//! so a failing request is answered with an internal error instead of
//! taking Envoy down.

mod abi;
mod hooks;
mod host;
mod hostcalls;

pub use host::{InternalErrorFactory, InternalErrorReply};
pub use proxy_wasm::types::NewRootContext;

/// The ABI version this module is built for (Envoy 1.40).
pub const ABI_VERSION: &std::ffi::CStr = c"v0.2.0";

/// Called by [`module!`]'s `envoy_dynamic_module_on_program_init`.
pub fn program_init(
    root: NewRootContext,
    internal_error: InternalErrorFactory,
) -> *const std::ffi::c_char {
    let _ = host::MODULE.set(host::Module {
        root,
        internal_error,
    });
    std::panic::set_hook(Box::new(|info| {
        host::log(5, &format!("native module panicked: {info}"));
    }));
    ABI_VERSION.as_ptr()
}

/// Declares the dynamic module: its root context (made once per
/// configuration per Envoy thread) and the reply to a request whose code
/// panicked.
///
/// ```ignore
/// native_host::module!(|_| Box::new(MyRoot::default()), my_internal_error);
/// ```
#[macro_export]
macro_rules! module {
    ($root:expr, $internal_error:expr) => {
        #[no_mangle]
        pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const ::std::ffi::c_char {
            $crate::program_init($root, $internal_error)
        }
    };
}
