//! The proxy-wasm host functions (the `env.proxy_*` imports of a Wasm
//! module), defined natively over Envoy's dynamic-module callbacks. The
//! SDK's `hostcalls` call them; the signatures are the SDK's.
//!
//! Every import the SDK declares is defined, because the SDK's code that
//! names it is linked in. Those the suite does not use answer as a host
//! without the feature would. Status values the SDK does not expect from a
//! call make it panic, which the hook's `catch_unwind` turns into an
//! internal error for that one request, so each function answers only with
//! the statuses its SDK wrapper handles.

use crate::abi::*;
use crate::host::{self, After, Direction, Metric, MetricHandle};
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, Status, StreamType};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Hands `bytes` to the SDK, which frees them as a `Vec<u8>` of exactly
/// that length.
unsafe fn give(bytes: Vec<u8>, data: *mut *mut u8, size: *mut usize) {
    let boxed = bytes.into_boxed_slice();
    *size = boxed.len();
    *data = Box::into_raw(boxed) as *mut u8;
}

unsafe fn input<'a>(data: *const u8, size: usize) -> &'a [u8] {
    if data.is_null() || size == 0 {
        &[]
    } else {
        std::slice::from_raw_parts(data, size)
    }
}

unsafe fn input_str<'a>(data: *const u8, size: usize) -> &'a str {
    std::str::from_utf8(input(data, size)).unwrap_or("")
}

/// proxy-wasm's serialized map: count, each (key, value) length, then each
/// key and value NUL-terminated.
fn serialize_map<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    let (count, size) = pairs.clone().fold((0usize, 4usize), |(n, size), (k, v)| {
        (n + 1, size + 10 + k.len() + v.len())
    });
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(count as u32).to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// The inverse of [`serialize_map`]; `None` if the bytes are not one.
fn deserialize_map(bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let word = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = word(0)?;
    let mut data = 4usize.checked_add(count.checked_mul(8)?)?;
    let mut pairs = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        let key_len = word(4 + i * 8)?;
        let value_len = word(8 + i * 8)?;
        let key = bytes.get(data..data.checked_add(key_len)?)?.to_vec();
        data += key_len + 1;
        let value = bytes.get(data..data.checked_add(value_len)?)?.to_vec();
        data += value_len + 1;
        pairs.push((key, value));
    }
    Some(pairs)
}

fn header_type_of(map: MapType) -> Option<u32> {
    match map {
        MapType::HttpRequestHeaders => Some(header_type::REQUEST_HEADER),
        MapType::HttpRequestTrailers => Some(header_type::REQUEST_TRAILER),
        MapType::HttpResponseHeaders => Some(header_type::RESPONSE_HEADER),
        MapType::HttpResponseTrailers => Some(header_type::RESPONSE_TRAILER),
        _ => None,
    }
}

fn stream_filter() -> Option<FilterEnvoyPtr> {
    host::current_stream().map(|stream| stream.envoy)
}

/// The first value of a header of the stream.
pub(crate) fn header(filter: FilterEnvoyPtr, kind: u32, name: &str) -> Option<Vec<u8>> {
    let mut value = EnvoyBuffer::EMPTY;
    let found = unsafe {
        envoy_dynamic_module_callback_http_get_header(
            filter,
            kind,
            ModuleBuffer::of(name.as_bytes()),
            &mut value,
            0,
            std::ptr::null_mut(),
        )
    };
    found.then(|| unsafe { value.bytes() }.to_vec())
}

fn chunks(filter: FilterEnvoyPtr, kind: u32) -> Vec<EnvoyBuffer> {
    unsafe {
        let n = envoy_dynamic_module_callback_http_get_body_chunks_size(filter, kind);
        let mut chunks = vec![EnvoyBuffer::EMPTY; n];
        if n == 0
            || !envoy_dynamic_module_callback_http_get_body_chunks(
                filter,
                kind,
                chunks.as_mut_ptr(),
            )
        {
            return Vec::new();
        }
        chunks
    }
}

fn body_types(direction: Direction) -> (u32, u32) {
    match direction {
        Direction::Request => (body_type::BUFFERED_REQUEST, body_type::RECEIVED_REQUEST),
        Direction::Response => (body_type::BUFFERED_RESPONSE, body_type::RECEIVED_RESPONSE),
    }
}

/// Whether the bytes just received are a body apart from the buffered one
/// (inside that body's hook, unless an earlier filter passed the buffered
/// body on whole).
fn received_apart(filter: FilterEnvoyPtr, direction: Direction, in_hook: bool) -> bool {
    in_hook
        && unsafe {
            match direction {
                Direction::Request => {
                    !envoy_dynamic_module_callback_http_received_buffered_request_body(filter)
                }
                Direction::Response => {
                    !envoy_dynamic_module_callback_http_received_buffered_response_body(filter)
                }
            }
        }
}

/// The body as proxy-wasm sees it: what is buffered, then what just came.
fn body(filter: FilterEnvoyPtr, direction: Direction) -> Vec<u8> {
    let in_hook = host::current().body == Some(direction);
    let (buffered, received) = body_types(direction);
    let mut parts = chunks(filter, buffered);
    if received_apart(filter, direction, in_hook) {
        parts.extend(chunks(filter, received));
    }
    let mut body = Vec::with_capacity(parts.iter().map(|c| c.length).sum());
    for chunk in parts {
        body.extend_from_slice(unsafe { chunk.bytes() });
    }
    body
}

/// The size proxy-wasm's body hook is given.
pub(crate) fn body_size(filter: FilterEnvoyPtr, direction: Direction, in_hook: bool) -> usize {
    let (buffered, received) = body_types(direction);
    unsafe {
        let mut size = envoy_dynamic_module_callback_http_get_body_size(filter, buffered);
        if received_apart(filter, direction, in_hook) {
            size += envoy_dynamic_module_callback_http_get_body_size(filter, received);
        }
        size
    }
}

fn replace_body(filter: FilterEnvoyPtr, direction: Direction, new: &[u8]) -> bool {
    let in_hook = host::current().body == Some(direction);
    let (buffered, received) = body_types(direction);
    unsafe {
        let apart = received_apart(filter, direction, in_hook);
        let drain = |kind| {
            let size = envoy_dynamic_module_callback_http_get_body_size(filter, kind);
            size == 0 || envoy_dynamic_module_callback_http_drain_body(filter, kind, size)
        };
        let mut ok = drain(buffered);
        if apart {
            ok &= drain(received);
        }
        // In the hook, the new body goes where Envoy takes what came from.
        let target = if apart { received } else { buffered };
        ok && (new.is_empty()
            || envoy_dynamic_module_callback_http_append_body(
                filter,
                target,
                ModuleBuffer::of(new),
            ))
    }
}

#[no_mangle]
pub extern "C" fn proxy_log(
    level: LogLevel,
    message_data: *const u8,
    message_size: usize,
) -> Status {
    unsafe {
        envoy_dynamic_module_callback_log(
            level as u32,
            ModuleBuffer::of(input(message_data, message_size)),
        )
    };
    Status::Ok
}

#[no_mangle]
pub extern "C" fn proxy_get_log_level(return_level: *mut LogLevel) -> Status {
    let level = match unsafe { envoy_dynamic_module_callback_get_log_level() } {
        0 => LogLevel::Trace,
        1 => LogLevel::Debug,
        2 => LogLevel::Info,
        3 => LogLevel::Warn,
        4 => LogLevel::Error,
        _ => LogLevel::Critical,
    };
    unsafe { *return_level = level };
    Status::Ok
}

#[no_mangle]
pub extern "C" fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> Status {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    unsafe { *return_time = now };
    Status::Ok
}

/// Only the main thread's root ticks (see [`crate::host`]); the period it
/// asks for during config-new starts the configuration's timer.
#[no_mangle]
pub extern "C" fn proxy_set_tick_period_milliseconds(period: u32) -> Status {
    host::DEFINING.with(|defining| {
        if defining.borrow().is_some() {
            host::TICK_PERIOD.with(|tick| tick.set(Some(period)));
        }
    });
    Status::Ok
}

#[no_mangle]
pub extern "C" fn proxy_get_buffer_bytes(
    buffer_type: BufferType,
    start: usize,
    max_size: usize,
    return_buffer_data: *mut *mut u8,
    return_buffer_size: *mut usize,
) -> Status {
    let whole = match buffer_type {
        BufferType::PluginConfiguration => match host::current_config() {
            Some(config) => config.configuration.clone(),
            None => return Status::NotFound,
        },
        BufferType::HttpRequestBody | BufferType::HttpResponseBody => {
            let Some(filter) = stream_filter() else {
                return Status::NotFound;
            };
            let direction = if buffer_type == BufferType::HttpRequestBody {
                Direction::Request
            } else {
                Direction::Response
            };
            body(filter, direction)
        }
        BufferType::HttpCallResponseBody => {
            let body =
                host::CALL_RESPONSE.with(|slot| slot.borrow().as_ref().map(|r| r.body.clone()));
            match body {
                Some(body) => body,
                None => return Status::NotFound,
            }
        }
        _ => return Status::NotFound,
    };
    let start = start.min(whole.len());
    let end = start.saturating_add(max_size).min(whole.len());
    let part = if start == 0 && end == whole.len() {
        whole
    } else {
        whole[start..end].to_vec()
    };
    unsafe { give(part, return_buffer_data, return_buffer_size) };
    Status::Ok
}

#[no_mangle]
pub extern "C" fn proxy_set_buffer_bytes(
    buffer_type: BufferType,
    start: usize,
    size: usize,
    buffer_data: *const u8,
    buffer_size: usize,
) -> Status {
    let direction = match buffer_type {
        BufferType::HttpRequestBody => Direction::Request,
        BufferType::HttpResponseBody => Direction::Response,
        _ => return Status::Ok,
    };
    let Some(filter) = stream_filter() else {
        return Status::Ok;
    };
    let data = unsafe { input(buffer_data, buffer_size) };
    let old = body(filter, direction);
    let start = start.min(old.len());
    let end = start.saturating_add(size).min(old.len());
    let mut new = Vec::with_capacity(old.len() - (end - start) + data.len());
    new.extend_from_slice(&old[..start]);
    new.extend_from_slice(data);
    new.extend_from_slice(&old[end..]);
    if !replace_body(filter, direction, &new) {
        host::log(4, "native module: Envoy refused a body rewrite");
    }
    Status::Ok
}

#[no_mangle]
pub extern "C" fn proxy_get_header_map_pairs(
    map_type: MapType,
    return_map_data: *mut *mut u8,
    return_map_size: *mut usize,
) -> Status {
    let serialized = if map_type == MapType::HttpCallResponseHeaders {
        host::CALL_RESPONSE.with(|slot| {
            let slot = slot.borrow();
            serialize_map(
                slot.iter()
                    .flat_map(|r| r.headers.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))),
            )
        })
    } else {
        let (Some(kind), Some(filter)) = (header_type_of(map_type), stream_filter()) else {
            return Status::Ok;
        };
        unsafe {
            let n = envoy_dynamic_module_callback_http_get_headers_size(filter, kind);
            let empty = EnvoyHeader {
                key: EnvoyBuffer::EMPTY,
                value: EnvoyBuffer::EMPTY,
            };
            let mut headers = vec![empty; n];
            if n > 0
                && !envoy_dynamic_module_callback_http_get_headers(
                    filter,
                    kind,
                    headers.as_mut_ptr(),
                )
            {
                headers.clear();
            }
            serialize_map(headers.iter().map(|h| (h.key.bytes(), h.value.bytes())))
        }
    };
    unsafe { give(serialized, return_map_data, return_map_size) };
    Status::Ok
}

/// Replacing a whole map is not offered (the suite edits headers one by one).
#[no_mangle]
pub extern "C" fn proxy_set_header_map_pairs(
    _map_type: MapType,
    _map_data: *const u8,
    _map_size: usize,
) -> Status {
    host::log(
        4,
        "native module: replacing a whole header map is not supported",
    );
    Status::Ok
}

#[no_mangle]
pub extern "C" fn proxy_get_header_map_value(
    map_type: MapType,
    key_data: *const u8,
    key_size: usize,
    return_value_data: *mut *mut u8,
    return_value_size: *mut usize,
) -> Status {
    let key = unsafe { input_str(key_data, key_size) };
    let value = if map_type == MapType::HttpCallResponseHeaders {
        host::CALL_RESPONSE.with(|slot| {
            slot.borrow().as_ref().and_then(|r| {
                r.headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key.as_bytes()))
                    .map(|(_, v)| v.clone())
            })
        })
    } else {
        match (header_type_of(map_type), stream_filter()) {
            (Some(kind), Some(filter)) => header(filter, kind, key),
            _ => None,
        }
    };
    match value {
        Some(value) => {
            unsafe { give(value, return_value_data, return_value_size) };
            Status::Ok
        }
        None => Status::NotFound,
    }
}

/// A request header change makes Envoy pick the route again, as Envoy's
/// Wasm host does (a fallback route chosen by a header, a marker removed).
fn edit_header(map_type: MapType, key: &[u8], value: Option<&[u8]>, add: bool) -> Status {
    let (Some(kind), Some(filter)) = (header_type_of(map_type), stream_filter()) else {
        return Status::Ok;
    };
    if kind == header_type::REQUEST_HEADER {
        unsafe { envoy_dynamic_module_callback_http_clear_route_cache(filter) };
    }
    let (key, new) = (
        ModuleBuffer::of(key),
        value.map_or(ModuleBuffer::NULL, ModuleBuffer::of),
    );
    unsafe {
        // Setting a null value removes the header.
        if add && value.is_some() {
            envoy_dynamic_module_callback_http_add_header(filter, kind, key, new);
        } else {
            envoy_dynamic_module_callback_http_set_header(filter, kind, key, new);
        }
    }
    Status::Ok
}

#[no_mangle]
pub extern "C" fn proxy_remove_header_map_value(
    map_type: MapType,
    key_data: *const u8,
    key_size: usize,
) -> Status {
    edit_header(map_type, unsafe { input(key_data, key_size) }, None, false)
}

/// Envoy's ABI removes a header set to an empty value; proxy-wasm keeps
/// it empty. The suite never sets an empty value.
#[no_mangle]
pub extern "C" fn proxy_replace_header_map_value(
    map_type: MapType,
    key_data: *const u8,
    key_size: usize,
    value_data: *const u8,
    value_size: usize,
) -> Status {
    let (key, value) = unsafe { (input(key_data, key_size), input(value_data, value_size)) };
    edit_header(map_type, key, Some(value), false)
}

#[no_mangle]
pub extern "C" fn proxy_add_header_map_value(
    map_type: MapType,
    key_data: *const u8,
    key_size: usize,
    value_data: *const u8,
    value_size: usize,
) -> Status {
    let (key, value) = unsafe { (input(key_data, key_size), input(value_data, value_size)) };
    edit_header(map_type, key, Some(value), true)
}

/// Filter state keys of proxy-wasm properties, as Envoy's Wasm host names
/// them (so `%FILTER_STATE(wasm.gw_app)%` reads the same in both).
fn filter_state_key(name: &str) -> String {
    format!("wasm.{name}")
}

fn attribute_string(filter: FilterEnvoyPtr, id: u32) -> Option<Vec<u8>> {
    let mut value = EnvoyBuffer::EMPTY;
    let found = unsafe {
        envoy_dynamic_module_callback_http_filter_get_attribute_string(filter, id, &mut value)
    };
    found.then(|| unsafe { value.bytes() }.to_vec())
}

fn attribute_int(filter: FilterEnvoyPtr, id: u32) -> Option<Vec<u8>> {
    let mut value = 0u64;
    let found = unsafe {
        envoy_dynamic_module_callback_http_filter_get_attribute_int(filter, id, &mut value)
    };
    found.then(|| (value as i64).to_le_bytes().to_vec())
}

/// The properties the suite reads, by proxy-wasm path; integers as 8-byte
/// little-endian, as Envoy's Wasm host gives them.
fn property(stream: &host::Stream, path: &[&str]) -> Option<Vec<u8>> {
    let filter = stream.envoy;
    match path {
        ["source", "address"] => attribute_string(filter, attribute::SOURCE_ADDRESS),
        ["xds", "route_name"] => attribute_string(filter, attribute::XDS_ROUTE_NAME),
        ["xds", "cluster_name"] => attribute_string(filter, attribute::XDS_CLUSTER_NAME),
        ["upstream", "address"] => attribute_string(filter, attribute::UPSTREAM_ADDRESS),
        ["request", "time"] => Some((stream.started_nanos as i64).to_le_bytes().to_vec()),
        ["request", "total_size"] => attribute_int(filter, attribute::REQUEST_TOTAL_SIZE),
        ["response", "code"] => attribute_int(filter, attribute::RESPONSE_CODE),
        ["response", "code_details"] => attribute_string(filter, attribute::RESPONSE_CODE_DETAILS),
        ["response", "flags"] => attribute_int(filter, attribute::RESPONSE_FLAGS),
        ["response", "total_size"] => attribute_int(filter, attribute::RESPONSE_TOTAL_SIZE),
        [name] => {
            let mut value = EnvoyBuffer::EMPTY;
            let key = filter_state_key(name);
            let found = unsafe {
                envoy_dynamic_module_callback_http_get_filter_state_bytes(
                    filter,
                    ModuleBuffer::of(key.as_bytes()),
                    &mut value,
                )
            };
            found.then(|| unsafe { value.bytes() }.to_vec())
        }
        _ => None,
    }
}

#[no_mangle]
pub extern "C" fn proxy_get_property(
    path_data: *const u8,
    path_size: usize,
    return_value_data: *mut *mut u8,
    return_value_size: *mut usize,
) -> Status {
    let Some(stream) = host::current_stream() else {
        return Status::NotFound;
    };
    let path: Vec<&str> = unsafe { input_str(path_data, path_size) }
        .split('\0')
        .collect();
    match property(stream, &path) {
        Some(value) => {
            unsafe { give(value, return_value_data, return_value_size) };
            Status::Ok
        }
        None => Status::NotFound,
    }
}

/// A one-segment path is the stream's own value (filter state, as in
/// Envoy's Wasm host); Envoy's attributes cannot be written.
#[no_mangle]
pub extern "C" fn proxy_set_property(
    path_data: *const u8,
    path_size: usize,
    value_data: *const u8,
    value_size: usize,
) -> Status {
    let Some(stream) = host::current_stream() else {
        return Status::Ok;
    };
    let path = unsafe { input_str(path_data, path_size) };
    if path.is_empty() || path.contains('\0') {
        return Status::Ok;
    }
    let key = filter_state_key(path);
    let value = unsafe { input(value_data, value_size) };
    unsafe {
        envoy_dynamic_module_callback_http_set_filter_state_bytes(
            stream.envoy,
            ModuleBuffer::of(key.as_bytes()),
            ModuleBuffer::of(value),
        )
    };
    Status::Ok
}

/// Shared data: one table for the process, with Envoy's compare-and-swap
/// versions (a version of 0 never conflicts).
struct SharedData {
    entries: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
}

fn shared_data() -> &'static Mutex<SharedData> {
    static SHARED: OnceLock<Mutex<SharedData>> = OnceLock::new();
    SHARED.get_or_init(|| {
        Mutex::new(SharedData {
            entries: HashMap::new(),
            next_cas: 0,
        })
    })
}

#[no_mangle]
pub extern "C" fn proxy_get_shared_data(
    key_data: *const u8,
    key_size: usize,
    return_value_data: *mut *mut u8,
    return_value_size: *mut usize,
    return_cas: *mut u32,
) -> Status {
    let key = unsafe { input_str(key_data, key_size) };
    let found = {
        let shared = shared_data().lock().unwrap_or_else(|p| p.into_inner());
        shared
            .entries
            .get(key)
            .map(|(value, cas)| (value.clone(), *cas))
    };
    match found {
        Some((value, cas)) => {
            unsafe {
                give(value, return_value_data, return_value_size);
                *return_cas = cas;
            }
            Status::Ok
        }
        None => Status::NotFound,
    }
}

#[no_mangle]
pub extern "C" fn proxy_set_shared_data(
    key_data: *const u8,
    key_size: usize,
    value_data: *const u8,
    value_size: usize,
    cas: u32,
) -> Status {
    let (key, value) = unsafe { (input_str(key_data, key_size), input(value_data, value_size)) };
    let mut shared = shared_data().lock().unwrap_or_else(|p| p.into_inner());
    let shared = &mut *shared;
    let next = shared.next_cas.wrapping_add(1).max(1);
    match shared.entries.get_mut(key) {
        Some((_, current)) if cas != 0 && *current != cas => return Status::CasMismatch,
        Some(entry) => {
            entry.0.clear();
            entry.0.extend_from_slice(value);
            entry.1 = next;
        }
        None => {
            shared
                .entries
                .insert(key.to_string(), (value.to_vec(), next));
        }
    }
    shared.next_cas = next;
    Status::Ok
}

#[no_mangle]
pub extern "C" fn proxy_register_shared_queue(
    _name_data: *const u8,
    _name_size: usize,
    return_id: *mut u32,
) -> Status {
    unsafe { *return_id = 0 };
    Status::Ok
}

#[no_mangle]
pub extern "C" fn proxy_resolve_shared_queue(
    _vm_id_data: *const u8,
    _vm_id_size: usize,
    _name_data: *const u8,
    _name_size: usize,
    _return_id: *mut u32,
) -> Status {
    Status::NotFound
}

#[no_mangle]
pub extern "C" fn proxy_dequeue_shared_queue(
    _queue_id: u32,
    _return_value_data: *mut *mut u8,
    _return_value_size: *mut usize,
) -> Status {
    Status::NotFound
}

#[no_mangle]
pub extern "C" fn proxy_enqueue_shared_queue(
    _queue_id: u32,
    _value_data: *const u8,
    _value_size: usize,
) -> Status {
    Status::NotFound
}

#[no_mangle]
pub extern "C" fn proxy_continue_stream(stream_type: StreamType) -> Status {
    if let Some(filter) = stream_filter() {
        match stream_type {
            StreamType::HttpRequest => host::push_after(After::ContinueDecoding(filter)),
            StreamType::HttpResponse => host::push_after(After::ContinueEncoding(filter)),
            _ => {}
        }
    }
    Status::Ok
}

#[no_mangle]
pub extern "C" fn proxy_close_stream(_stream_type: StreamType) -> Status {
    Status::Ok
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn proxy_send_local_response(
    status_code: u32,
    status_code_details_data: *const u8,
    status_code_details_size: usize,
    body_data: *const u8,
    body_size: usize,
    headers_data: *const u8,
    headers_size: usize,
    _grpc_status: i32,
) -> Status {
    let Some(filter) = stream_filter() else {
        return Status::Ok;
    };
    let (details, body, headers) = unsafe {
        (
            input(status_code_details_data, status_code_details_size),
            input(body_data, body_size),
            input(headers_data, headers_size),
        )
    };
    host::push_after(After::Reply {
        filter,
        status: status_code,
        headers: deserialize_map(headers).unwrap_or_default(),
        body: body.to_vec(),
        details: details.to_vec(),
    });
    Status::Ok
}

/// A stream's call goes out with the stream (Envoy cancels it if the stream
/// ends first); a root's call only from the main thread's root, through the
/// configuration. A worker's root cannot call.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn proxy_http_call(
    upstream_data: *const u8,
    upstream_size: usize,
    headers_data: *const u8,
    headers_size: usize,
    body_data: *const u8,
    body_size: usize,
    _trailers_data: *const u8,
    _trailers_size: usize,
    timeout: u32,
    return_token: *mut u32,
) -> Status {
    let (cluster, headers, body) = unsafe {
        (
            input(upstream_data, upstream_size),
            input(headers_data, headers_size),
            input(body_data, body_size),
        )
    };
    let Some(headers) = deserialize_map(headers) else {
        return Status::BadArgument;
    };
    let mut pairs = ModuleHeader::list(&headers);
    let mut callout = 0u64;
    let stream = host::current_stream();
    let config = host::current_config();
    let started = unsafe {
        match (&stream, config) {
            (Some(stream), _) => envoy_dynamic_module_callback_http_filter_http_callout(
                stream.envoy,
                &mut callout,
                ModuleBuffer::of(cluster),
                pairs.as_mut_ptr(),
                pairs.len(),
                ModuleBuffer::of(body),
                u64::from(timeout),
            ),
            (None, Some(config)) if std::thread::current().id() == config.main_thread => {
                envoy_dynamic_module_callback_http_filter_config_http_callout(
                    config.envoy,
                    &mut callout,
                    ModuleBuffer::of(cluster),
                    pairs.as_mut_ptr(),
                    pairs.len(),
                    ModuleBuffer::of(body),
                    u64::from(timeout),
                )
            }
            _ => return Status::InternalFailure,
        }
    };
    match started {
        CALLOUT_INIT_SUCCESS => {}
        // Cluster not found.
        2 => return Status::BadArgument,
        _ => return Status::InternalFailure,
    }
    let token = host::next_token();
    match stream {
        Some(stream) => stream.callouts.push((callout, token)),
        None => {
            if let Some(config) = config {
                host::lock(&config.callouts).push((callout, token));
            }
        }
    }
    unsafe { *return_token = token };
    Status::Ok
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn proxy_grpc_call(
    _upstream_data: *const u8,
    _upstream_size: usize,
    _service_name_data: *const u8,
    _service_name_size: usize,
    _method_name_data: *const u8,
    _method_name_size: usize,
    _initial_metadata_data: *const u8,
    _initial_metadata_size: usize,
    _message_data_data: *const u8,
    _message_data_size: usize,
    _timeout: u32,
    _return_callout_id: *mut u32,
) -> Status {
    Status::InternalFailure
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn proxy_grpc_stream(
    _upstream_data: *const u8,
    _upstream_size: usize,
    _service_name_data: *const u8,
    _service_name_size: usize,
    _method_name_data: *const u8,
    _method_name_size: usize,
    _initial_metadata_data: *const u8,
    _initial_metadata_size: usize,
    _return_stream_id: *mut u32,
) -> Status {
    Status::InternalFailure
}

#[no_mangle]
pub extern "C" fn proxy_grpc_send(
    _token: u32,
    _message_ptr: *const u8,
    _message_len: usize,
    _end_stream: bool,
) -> Status {
    Status::NotFound
}

#[no_mangle]
pub extern "C" fn proxy_grpc_cancel(_token_id: u32) -> Status {
    Status::NotFound
}

#[no_mangle]
pub extern "C" fn proxy_grpc_close(_token_id: u32) -> Status {
    Status::NotFound
}

#[no_mangle]
pub extern "C" fn proxy_get_status(
    return_code: *mut u32,
    _return_message_data: *mut *mut u8,
    _return_message_size: *mut usize,
) -> Status {
    unsafe { *return_code = 0 };
    Status::Ok
}

/// Another stream of the thread becomes the one the code acts on (a
/// request woken by another); `BadArgument` for an unknown id.
#[no_mangle]
pub extern "C" fn proxy_set_effective_context(context_id: u32) -> Status {
    if host::set_effective_stream(context_id) {
        Status::Ok
    } else {
        Status::BadArgument
    }
}

/// The foreign functions this host offers: `clear_route_cache` (as Envoy's
/// Wasm host), and `configuration_id`, the 8-byte id every root context of
/// one configuration shares in this process (Envoy's Wasm host has none:
/// each of its VMs is apart).
#[no_mangle]
pub extern "C" fn proxy_call_foreign_function(
    function_name_data: *const u8,
    function_name_size: usize,
    _arguments_data: *const u8,
    _arguments_size: usize,
    results_data: *mut *mut u8,
    results_size: *mut usize,
) -> Status {
    match unsafe { input_str(function_name_data, function_name_size) } {
        "clear_route_cache" => {
            if let Some(filter) = stream_filter() {
                unsafe { envoy_dynamic_module_callback_http_clear_route_cache(filter) };
            }
            Status::Ok
        }
        "configuration_id" => match host::current_config() {
            Some(config) => {
                unsafe { give(config.id.to_le_bytes().to_vec(), results_data, results_size) };
                Status::Ok
            }
            None => Status::NotFound,
        },
        _ => Status::NotFound,
    }
}

#[no_mangle]
pub extern "C" fn proxy_done() -> Status {
    Status::Ok
}

/// During config-new each name is defined in Envoy once; afterwards (a
/// worker's root) a name gets the id it was defined with, and an unknown
/// one an id that counts nothing (Envoy freezes its metrics there).
#[no_mangle]
pub extern "C" fn proxy_define_metric(
    metric_type: MetricType,
    name_data: *const u8,
    name_size: usize,
    return_id: *mut u32,
) -> Status {
    let name = unsafe { input_str(name_data, name_size) };
    let defined = host::DEFINING.with(|defining| {
        let mut defining = defining.borrow_mut();
        let metrics = defining.as_mut()?;
        if let Some(at) = metrics.iter().position(|m| m.name == name) {
            return Some(at as u32);
        }
        let config = host::current_config()?;
        let mut envoy_id = 0usize;
        let name_buffer = ModuleBuffer::of(name.as_bytes());
        let result = unsafe {
            match metric_type {
                MetricType::Counter => {
                    envoy_dynamic_module_callback_http_filter_config_define_counter(
                        config.envoy,
                        name_buffer,
                        std::ptr::null_mut(),
                        0,
                        &mut envoy_id,
                    )
                }
                MetricType::Gauge => envoy_dynamic_module_callback_http_filter_config_define_gauge(
                    config.envoy,
                    name_buffer,
                    std::ptr::null_mut(),
                    0,
                    &mut envoy_id,
                ),
                MetricType::Histogram => {
                    envoy_dynamic_module_callback_http_filter_config_define_histogram(
                        config.envoy,
                        name_buffer,
                        std::ptr::null_mut(),
                        0,
                        &mut envoy_id,
                    )
                }
                _ => return Some(u32::MAX),
            }
        };
        if result != METRICS_SUCCESS {
            return Some(u32::MAX);
        }
        metrics.push(Metric {
            name: name.to_string(),
            handle: MetricHandle {
                kind: metric_type,
                envoy_id,
            },
        });
        Some(metrics.len() as u32 - 1)
    });
    let id = defined.unwrap_or_else(|| {
        host::current_config()
            .and_then(|config| config.metrics.iter().position(|m| m.name == name))
            .map_or(u32::MAX, |at| at as u32)
    });
    unsafe { *return_id = id };
    Status::Ok
}

/// The metric behind a proxy-wasm id, in the configuration that runs: its
/// metrics, or those being defined while its config-new runs.
fn with_metric(id: u32, update: impl FnOnce(ConfigEnvoyPtr, MetricHandle)) {
    let Some(config) = host::current_config() else {
        return;
    };
    let handle = config
        .metrics
        .get(id as usize)
        .map(|m| m.handle)
        .or_else(|| {
            host::DEFINING
                .with(|defining| Some(defining.borrow().as_ref()?.get(id as usize)?.handle))
        });
    if let Some(handle) = handle {
        update(config.envoy, handle);
    }
}

#[no_mangle]
pub extern "C" fn proxy_get_metric(_metric_id: u32, _return_value: *mut u64) -> Status {
    Status::NotFound
}

#[no_mangle]
pub extern "C" fn proxy_record_metric(metric_id: u32, value: u64) -> Status {
    with_metric(metric_id, |config, metric| unsafe {
        let none = std::ptr::null_mut();
        match metric.kind {
            MetricType::Gauge => {
                envoy_dynamic_module_callback_http_filter_config_set_gauge(
                    config,
                    metric.envoy_id,
                    none,
                    0,
                    value,
                );
            }
            MetricType::Histogram => {
                envoy_dynamic_module_callback_http_filter_config_record_histogram_value(
                    config,
                    metric.envoy_id,
                    none,
                    0,
                    value,
                );
            }
            _ => {}
        }
    });
    Status::Ok
}

#[no_mangle]
pub extern "C" fn proxy_increment_metric(metric_id: u32, offset: i64) -> Status {
    with_metric(metric_id, |config, metric| unsafe {
        let none = std::ptr::null_mut();
        let by = offset.unsigned_abs();
        match metric.kind {
            MetricType::Counter if offset > 0 => {
                envoy_dynamic_module_callback_http_filter_config_increment_counter(
                    config,
                    metric.envoy_id,
                    none,
                    0,
                    by,
                );
            }
            MetricType::Gauge if offset > 0 => {
                envoy_dynamic_module_callback_http_filter_config_increment_gauge(
                    config,
                    metric.envoy_id,
                    none,
                    0,
                    by,
                );
            }
            MetricType::Gauge if offset < 0 => {
                envoy_dynamic_module_callback_http_filter_config_decrement_gauge(
                    config,
                    metric.envoy_id,
                    none,
                    0,
                    by,
                );
            }
            _ => {}
        }
    });
    Status::Ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_round_trip_in_the_sdk_layout() {
        let pairs: Vec<(&[u8], &[u8])> =
            vec![(b":status", b"200"), (b"x-empty", b""), (b"k", b"v\xff")];
        let bytes = serialize_map(pairs.iter().copied());
        assert_eq!(&bytes[..4], &3u32.to_le_bytes());
        let back = deserialize_map(&bytes).expect("a map");
        let back: Vec<(&[u8], &[u8])> = back
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        assert_eq!(back, pairs);
    }

    #[test]
    fn a_truncated_or_lying_map_is_refused_not_read_past() {
        let bytes = serialize_map([(b"key".as_slice(), b"value".as_slice())].into_iter());
        for cut in 1..bytes.len() - 1 {
            assert!(deserialize_map(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        let mut lying = bytes.clone();
        lying[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(deserialize_map(&lying).is_none());
        assert_eq!(deserialize_map(&[]), Some(Vec::new()));
    }

    fn get(key: &str) -> (Status, Option<Vec<u8>>, u32) {
        let (mut data, mut size, mut cas) = (std::ptr::null_mut(), 0usize, 0u32);
        let status = proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas);
        let value =
            (status == Status::Ok).then(|| unsafe { Vec::from_raw_parts(data, size, size) });
        (status, value, cas)
    }

    fn set(key: &str, value: &[u8], cas: u32) -> Status {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    }

    #[test]
    fn shared_data_has_envoys_compare_and_swap_versions() {
        let key = "test.shared_data.cas";
        assert_eq!(get(key).0, Status::NotFound);
        assert_eq!(set(key, b"one", 0), Status::Ok);
        let (status, value, first) = get(key);
        assert_eq!((status, value.as_deref()), (Status::Ok, Some(&b"one"[..])));
        assert_ne!(first, 0, "a stored value has a version");
        assert_eq!(set(key, b"two", first), Status::Ok);
        let (_, value, second) = get(key);
        assert_eq!(value.as_deref(), Some(&b"two"[..]));
        assert_ne!(second, first, "every write makes a new version");
        assert_eq!(set(key, b"stale", first), Status::CasMismatch);
        assert_eq!(
            get(key).1.as_deref(),
            Some(&b"two"[..]),
            "a refused write changes nothing"
        );
        assert_eq!(
            set(key, b"forced", 0),
            Status::Ok,
            "version 0 never conflicts"
        );
        assert_eq!(get(key).1.as_deref(), Some(&b"forced"[..]));
    }

    #[test]
    fn shared_data_writes_from_many_threads_are_each_counted_once() {
        let key = "test.shared_data.counter";
        assert_eq!(set(key, &0u64.to_le_bytes(), 0), Status::Ok);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        loop {
                            let (_, value, cas) = get(key);
                            let n = u64::from_le_bytes(value.unwrap().try_into().unwrap());
                            if set(key, &(n + 1).to_le_bytes(), cas) == Status::Ok {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let total = u64::from_le_bytes(get(key).1.unwrap().try_into().unwrap());
        assert_eq!(total, 2000);
    }
}
