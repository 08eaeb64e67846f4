//! The hooks Envoy calls (`envoy_dynamic_module_on_http_filter_*`): each
//! takes back the pointers it handed Envoy and passes them to
//! [`crate::host`], which catches panics in module code; a panic in the
//! host itself gives the hook's harmless answer. The hooks the host has no
//! use for (streamed callouts, watermarks) must still exist for Envoy 1.40
//! to load the module.

use crate::abi::*;
use crate::envoy::{EnvoyAnswer, EnvoyConfig, EnvoyFilter};
use crate::host::{self, Hook, NativeStream};
use crate::root::{self, Config};
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `hook`; a panic outside module code (a host bug) gives `fallback`.
fn guarded<R>(fallback: R, hook: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(hook)).unwrap_or(fallback)
}

/// The configuration behind the pointer config-new returned.
///
/// # Safety
/// `config` is that pointer, and Envoy has not destroyed it (it does so
/// only after the configuration's streams and outside its hooks).
unsafe fn config_of<'a>(config: *const c_void) -> &'a Config {
    &*config.cast::<Config>()
}

/// The stream behind the pointer filter-new returned; `None` for a
/// stream the module left alone (filter-new returned null).
fn stream_of(stream: *const c_void) -> Option<*mut NativeStream> {
    (!stream.is_null()).then(|| stream.cast_mut().cast::<NativeStream>())
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: ConfigEnvoyPtr,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    guarded(std::ptr::null(), || {
        // SAFETY: the configuration's bytes, read during config-new; the
        // handle is dropped with the configuration (config-destroy).
        let (bytes, envoy) = unsafe { (config.bytes(), EnvoyConfig::new(config_envoy)) };
        root::config_new(envoy, bytes).map_or(std::ptr::null(), |c| Box::into_raw(c).cast())
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    guarded((), || {
        // SAFETY: the pointer config-new returned, destroyed once, here.
        let config = unsafe { Box::from_raw(config.cast_mut().cast::<Config>()) };
        root::config_destroy(*config);
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _config_envoy: ConfigEnvoyPtr,
    config: *const c_void,
    event_id: u64,
) {
    // SAFETY: a hook of the live configuration.
    guarded((), || {
        host::config_scheduled(unsafe { config_of(config) }, event_id)
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _config_envoy: ConfigEnvoyPtr,
    config: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    chunks: *const EnvoyBuffer,
    chunks_size: usize,
) {
    guarded((), || {
        // SAFETY: Envoy's answer, viewed only during this hook; a hook of
        // the live configuration.
        let (answer, config) = unsafe {
            (
                EnvoyAnswer::new(result, headers, headers_size, chunks, chunks_size),
                config_of(config),
            )
        };
        host::config_callout_done(config, callout_id, &answer);
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    filter: FilterEnvoyPtr,
) -> *const c_void {
    let _ = filter;
    guarded(std::ptr::null(), || {
        // SAFETY: the live configuration.
        let config = unsafe { config_of(config) };
        host::stream_new(config).map_or(std::ptr::null(), |s| Box::into_raw(s).cast())
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(stream: *const c_void) {
    guarded((), || {
        let Some(stream) = stream_of(stream) else {
            return;
        };
        // SAFETY: the pointer filter-new returned, destroyed once, here.
        host::stream_destroy(unsafe { Box::from_raw(stream) });
    })
}

fn hook(filter: FilterEnvoyPtr, stream: *const c_void, hook: Hook) -> u32 {
    guarded(0, || {
        let Some(stream) = stream_of(stream) else {
            return 0;
        };
        // SAFETY: a hook of the live stream, with its filter.
        unsafe { host::stream_hook(stream, EnvoyFilter::new(filter), hook) }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter: FilterEnvoyPtr,
    stream: *const c_void,
    end_of_stream: bool,
) -> u32 {
    hook(filter, stream, Hook::RequestHeaders { end_of_stream })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    filter: FilterEnvoyPtr,
    stream: *const c_void,
    end_of_stream: bool,
) -> u32 {
    hook(filter, stream, Hook::RequestBody { end_of_stream })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    filter: FilterEnvoyPtr,
    stream: *const c_void,
) -> u32 {
    hook(filter, stream, Hook::RequestTrailers)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter: FilterEnvoyPtr,
    stream: *const c_void,
    end_of_stream: bool,
) -> u32 {
    hook(filter, stream, Hook::ResponseHeaders { end_of_stream })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    filter: FilterEnvoyPtr,
    stream: *const c_void,
    end_of_stream: bool,
) -> u32 {
    hook(filter, stream, Hook::ResponseBody { end_of_stream })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    filter: FilterEnvoyPtr,
    stream: *const c_void,
) -> u32 {
    hook(filter, stream, Hook::ResponseTrailers)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    filter: FilterEnvoyPtr,
    stream: *const c_void,
) {
    guarded((), || {
        let Some(stream) = stream_of(stream) else {
            return;
        };
        // SAFETY: a hook of the live stream, with its filter.
        unsafe { host::stream_complete(stream, EnvoyFilter::new(filter)) };
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    filter: FilterEnvoyPtr,
    stream: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    chunks: *const EnvoyBuffer,
    chunks_size: usize,
) {
    guarded((), || {
        let Some(stream) = stream_of(stream) else {
            return;
        };
        // SAFETY: Envoy's answer, viewed only during this hook of the live
        // stream, with its filter.
        unsafe {
            let answer = EnvoyAnswer::new(result, headers, headers_size, chunks, chunks_size);
            host::stream_callout_done(stream, EnvoyFilter::new(filter), callout_id, &answer);
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    filter: FilterEnvoyPtr,
    stream: *const c_void,
    event_id: u64,
) {
    guarded((), || {
        let Some(stream) = stream_of(stream) else {
            return;
        };
        // SAFETY: a hook of the live stream, with its filter.
        unsafe { host::stream_scheduled(stream, EnvoyFilter::new(filter), event_id) };
    })
}

// ---- required by Envoy 1.40, unused by the host ----

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _filter: FilterEnvoyPtr,
    _stream: *const c_void,
    _stream_id: u64,
    _headers: *const EnvoyHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _filter: FilterEnvoyPtr,
    _stream: *const c_void,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _filter: FilterEnvoyPtr,
    _stream: *const c_void,
    _stream_id: u64,
    _trailers: *const EnvoyHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _filter: FilterEnvoyPtr,
    _stream: *const c_void,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _filter: FilterEnvoyPtr,
    _stream: *const c_void,
    _stream_id: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _filter: FilterEnvoyPtr,
    _stream: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _filter: FilterEnvoyPtr,
    _stream: *const c_void,
) {
}
