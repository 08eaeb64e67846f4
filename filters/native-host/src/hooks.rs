//! The hooks Envoy calls (`envoy_dynamic_module_on_http_filter_*`). Each
//! one hands over to [`crate::host`], which catches panics; the hooks the
//! suite has no use for (streamed callouts, per-stream schedulers,
//! watermarks) must still exist for Envoy 1.40 to load the module.

use crate::abi::*;
use crate::host::{self, Config, Stream, StreamHook};
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `hook`; a panic outside the proxy-wasm code (a host bug) gives `fallback`.
fn guarded<R>(fallback: R, hook: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(hook)).unwrap_or(fallback)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: ConfigEnvoyPtr,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    guarded(std::ptr::null(), || {
        let bytes = unsafe { config.bytes() };
        host::config_new(config_envoy, bytes).map_or(std::ptr::null(), |c| c.cast())
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    guarded((), || host::config_destroy(config.cast()))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _config_envoy: ConfigEnvoyPtr,
    config: *const c_void,
    _event_id: u64,
) {
    guarded((), || {
        host::config_tick(unsafe { &*config.cast::<Config>() })
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
        let response =
            unsafe { host::copy_response(result == 0, headers, headers_size, chunks, chunks_size) };
        host::config_answer(config.cast(), callout_id, response);
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    filter: FilterEnvoyPtr,
) -> *const c_void {
    guarded(std::ptr::null(), || {
        let config = unsafe { &*config.cast::<Config>() };
        host::stream_new(config, filter).map_or(std::ptr::null(), |s| s.cast_const().cast())
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(stream: *const c_void) {
    guarded((), || host::stream_destroy(stream.cast_mut().cast()))
}

fn hook(stream: *const c_void, hook: StreamHook) -> u32 {
    guarded(0, || {
        host::stream_hook(stream.cast_mut().cast::<Stream>(), hook)
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    _filter: FilterEnvoyPtr,
    stream: *const c_void,
    end_of_stream: bool,
) -> u32 {
    hook(stream, StreamHook::RequestHeaders { end_of_stream })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _filter: FilterEnvoyPtr,
    stream: *const c_void,
    end_of_stream: bool,
) -> u32 {
    hook(stream, StreamHook::RequestBody { end_of_stream })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _filter: FilterEnvoyPtr,
    stream: *const c_void,
) -> u32 {
    hook(stream, StreamHook::RequestTrailers)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _filter: FilterEnvoyPtr,
    stream: *const c_void,
    end_of_stream: bool,
) -> u32 {
    hook(stream, StreamHook::ResponseHeaders { end_of_stream })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _filter: FilterEnvoyPtr,
    stream: *const c_void,
    end_of_stream: bool,
) -> u32 {
    hook(stream, StreamHook::ResponseBody { end_of_stream })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _filter: FilterEnvoyPtr,
    stream: *const c_void,
) -> u32 {
    hook(stream, StreamHook::ResponseTrailers)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _filter: FilterEnvoyPtr,
    stream: *const c_void,
) {
    guarded((), || host::stream_complete(stream.cast_mut().cast()))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _filter: FilterEnvoyPtr,
    stream: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    chunks: *const EnvoyBuffer,
    chunks_size: usize,
) {
    guarded((), || {
        let response =
            unsafe { host::copy_response(result == 0, headers, headers_size, chunks, chunks_size) };
        host::stream_answer(stream.cast_mut().cast(), callout_id, response);
    })
}

// ---- required by Envoy 1.40, unused by the suite ----

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
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _filter: FilterEnvoyPtr,
    _stream: *const c_void,
    _event_id: u64,
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
