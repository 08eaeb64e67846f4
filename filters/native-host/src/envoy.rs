//! Safe handles over Envoy's callbacks: a stream's filter
//! ([`EnvoyFilter`]) and a filter configuration ([`EnvoyConfig`]). Every
//! call into Envoy the host makes is here, each `unsafe` block with the
//! reason it holds; what Envoy hands back is borrowed for as short as its
//! lifetime rules allow, or copied.

use crate::abi::*;
use gateway_common::stream::HttpCall;

/// Envoy's filter of one stream. Valid from `on_http_filter_new` until
/// `on_http_filter_destroy`, and used only on the stream's worker thread:
/// the host makes one only from the pointer a hook of that stream was
/// given, and drops it before the hook returns.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EnvoyFilter(FilterEnvoyPtr);

/// Which body a read or write is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

impl Direction {
    fn body_types(self) -> (u32, u32) {
        match self {
            Direction::Request => (body_type::BUFFERED_REQUEST, body_type::RECEIVED_REQUEST),
            Direction::Response => (body_type::BUFFERED_RESPONSE, body_type::RECEIVED_RESPONSE),
        }
    }
}

impl EnvoyFilter {
    /// # Safety
    /// `filter` is the pointer Envoy passed to the running hook of a live
    /// stream, and the handle does not outlive that hook.
    pub unsafe fn new(filter: FilterEnvoyPtr) -> Self {
        Self(filter)
    }

    /// The `index`th value of a header, with the number of values, read in
    /// place and handed to `read`.
    fn with_header<R>(
        self,
        kind: u32,
        name: &str,
        index: usize,
        read: impl FnOnce(&[u8], usize) -> R,
    ) -> Option<R> {
        let mut value = EnvoyBuffer::EMPTY;
        let mut count = 0usize;
        // SAFETY: a live filter (see the type); Envoy reads the key during
        // the call and fills `value` and `count`, both owned here.
        let found = unsafe {
            envoy_dynamic_module_callback_http_get_header(
                self.0,
                kind,
                ModuleBuffer::of(name.as_bytes()),
                &mut value,
                index,
                &mut count,
            )
        };
        // SAFETY: the value is Envoy's until the map changes; it is read
        // here, before any write.
        found.then(|| read(unsafe { value.bytes() }, count))
    }

    /// The first value of a header (lossily as text).
    pub fn header(self, kind: u32, name: &str) -> Option<String> {
        self.with_header(kind, name, 0, |value, _| {
            String::from_utf8_lossy(value).into_owned()
        })
    }

    /// Every value of a header, in order.
    pub fn header_values(self, kind: u32, name: &str) -> Vec<String> {
        let Some((first, count)) = self.with_header(kind, name, 0, |value, count| {
            (String::from_utf8_lossy(value).into_owned(), count)
        }) else {
            return Vec::new();
        };
        let mut values = Vec::with_capacity(count.max(1));
        values.push(first);
        for index in 1..count {
            if let Some(value) = self.with_header(kind, name, index, |value, _| {
                String::from_utf8_lossy(value).into_owned()
            }) {
                values.push(value);
            }
        }
        values
    }

    /// Every header's name and value, in order, in two calls.
    pub fn headers(self, kind: u32, mut each: impl FnMut(&[u8], &[u8])) {
        // SAFETY: a live filter.
        let size = unsafe { envoy_dynamic_module_callback_http_get_headers_size(self.0, kind) };
        if size == 0 {
            return;
        }
        let empty = EnvoyHeader {
            key: EnvoyBuffer::EMPTY,
            value: EnvoyBuffer::EMPTY,
        };
        let mut headers = vec![empty; size];
        // SAFETY: `headers` has room for the `size` entries Envoy reported.
        let read = unsafe {
            envoy_dynamic_module_callback_http_get_headers(self.0, kind, headers.as_mut_ptr())
        };
        if !read {
            return;
        }
        for header in &headers {
            // SAFETY: Envoy's map is not changed while these are read.
            unsafe { each(header.key.bytes(), header.value.bytes()) };
        }
    }

    /// Sets (`Some`) or removes (`None`) a header.
    pub fn set_header(self, kind: u32, name: &str, value: Option<&str>) {
        let value = value.map_or(ModuleBuffer::NULL, |v| ModuleBuffer::of(v.as_bytes()));
        // SAFETY: a live filter; Envoy copies both buffers during the call.
        // A null value removes the header.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.0,
                kind,
                ModuleBuffer::of(name.as_bytes()),
                value,
            )
        };
    }

    pub fn clear_route_cache(self) {
        // SAFETY: a live filter.
        unsafe { envoy_dynamic_module_callback_http_clear_route_cache(self.0) };
    }

    fn chunks(self, kind: u32, mut each: impl FnMut(&[u8])) {
        // SAFETY: a live filter; the array has room for every chunk, and
        // the chunks are read before the body changes.
        unsafe {
            let n = envoy_dynamic_module_callback_http_get_body_chunks_size(self.0, kind);
            if n == 0 {
                return;
            }
            let mut chunks = vec![EnvoyBuffer::EMPTY; n];
            if !envoy_dynamic_module_callback_http_get_body_chunks(
                self.0,
                kind,
                chunks.as_mut_ptr(),
            ) {
                return;
            }
            for chunk in &chunks {
                each(chunk.bytes());
            }
        }
    }

    /// Whether the bytes just received are a body apart from the buffered
    /// one (inside that body's hook, unless an earlier filter passed the
    /// buffered body on whole).
    fn received_apart(self, direction: Direction, in_hook: bool) -> bool {
        // SAFETY: a live filter.
        in_hook
            && unsafe {
                match direction {
                    Direction::Request => {
                        !envoy_dynamic_module_callback_http_received_buffered_request_body(self.0)
                    }
                    Direction::Response => {
                        !envoy_dynamic_module_callback_http_received_buffered_response_body(self.0)
                    }
                }
            }
    }

    /// The body as a policy sees it: what is buffered, then what just came
    /// (`in_hook`: inside this direction's body hook), up to `limit` bytes.
    pub fn body(self, direction: Direction, in_hook: bool, limit: usize) -> Vec<u8> {
        let (buffered, received) = direction.body_types();
        let mut body = Vec::with_capacity(self.body_size(direction, in_hook).min(limit));
        let mut take = |chunk: &[u8]| {
            let room = limit - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        };
        self.chunks(buffered, &mut take);
        if self.received_apart(direction, in_hook) {
            self.chunks(received, &mut take);
        }
        body
    }

    /// The size of the body a policy sees.
    pub fn body_size(self, direction: Direction, in_hook: bool) -> usize {
        let (buffered, received) = direction.body_types();
        // SAFETY: a live filter.
        unsafe {
            let mut size = envoy_dynamic_module_callback_http_get_body_size(self.0, buffered);
            if self.received_apart(direction, in_hook) {
                size += envoy_dynamic_module_callback_http_get_body_size(self.0, received);
            }
            size
        }
    }

    /// Replaces the whole body a policy sees with `new`; false when Envoy
    /// refused a part of it.
    pub fn replace_body(self, direction: Direction, in_hook: bool, new: &[u8]) -> bool {
        let (buffered, received) = direction.body_types();
        let apart = self.received_apart(direction, in_hook);
        // SAFETY: a live filter; Envoy copies `new` during the call.
        unsafe {
            let drain = |kind| {
                let size = envoy_dynamic_module_callback_http_get_body_size(self.0, kind);
                size == 0 || envoy_dynamic_module_callback_http_drain_body(self.0, kind, size)
            };
            let mut ok = drain(buffered);
            if apart {
                ok &= drain(received);
            }
            // In the hook, the new body goes where Envoy takes what came from.
            let target = if apart { received } else { buffered };
            ok && (new.is_empty()
                || envoy_dynamic_module_callback_http_append_body(
                    self.0,
                    target,
                    ModuleBuffer::of(new),
                ))
        }
    }

    pub fn attribute_string(self, id: u32) -> Option<Vec<u8>> {
        let mut value = EnvoyBuffer::EMPTY;
        // SAFETY: a live filter; the value is copied before the hook goes on.
        unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_string(self.0, id, &mut value)
                .then(|| value.bytes().to_vec())
        }
    }

    pub fn attribute_int(self, id: u32) -> Option<u64> {
        let mut value = 0u64;
        // SAFETY: a live filter; `value` is owned here.
        unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_int(self.0, id, &mut value)
                .then_some(value)
        }
    }

    pub fn filter_state(self, key: &str) -> Option<Vec<u8>> {
        let mut value = EnvoyBuffer::EMPTY;
        // SAFETY: a live filter; the value is copied at once.
        unsafe {
            envoy_dynamic_module_callback_http_get_filter_state_bytes(
                self.0,
                ModuleBuffer::of(key.as_bytes()),
                &mut value,
            )
            .then(|| value.bytes().to_vec())
        }
    }

    pub fn set_filter_state(self, key: &str, value: &[u8]) -> bool {
        // SAFETY: a live filter; Envoy copies both buffers.
        unsafe {
            envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.0,
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value),
            )
        }
    }

    /// Answers the stream from the module. Envoy runs the response through
    /// the filter chain at once, this filter's hooks included, so the host
    /// calls it only once no hook of the stream is running.
    pub fn send_response(
        self,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
        details: Option<&str>,
    ) {
        let mut pairs = ModuleHeader::list(headers);
        // SAFETY: a live filter; Envoy copies the headers, body and details.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.0,
                status,
                pairs.as_mut_ptr(),
                pairs.len(),
                ModuleBuffer::of(body),
                details.map_or(ModuleBuffer::NULL, |d| ModuleBuffer::of(d.as_bytes())),
            )
        };
    }

    /// Resumes the request held by this filter (outside its hooks, as
    /// [`EnvoyFilter::send_response`]).
    pub fn continue_decoding(self) {
        // SAFETY: a live filter.
        unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(self.0) };
    }

    /// Starts an HTTP call; Envoy's id for it, `None` when it could not.
    pub fn callout(self, call: &HttpCall<'_>) -> Option<u64> {
        // SAFETY: a live filter.
        unsafe {
            callout(
                envoy_dynamic_module_callback_http_filter_http_callout,
                self.0,
                call,
            )
        }
    }

    /// A scheduler for this stream (see [`StreamScheduler`]).
    pub fn scheduler(self) -> Option<StreamScheduler> {
        // SAFETY: a live filter; the scheduler is deleted by its drop.
        let scheduler = unsafe { envoy_dynamic_module_callback_http_filter_scheduler_new(self.0) };
        (!scheduler.is_null()).then_some(StreamScheduler(scheduler))
    }
}

/// Envoy's callout of a stream or of a configuration (the same signature).
type CalloutFn = unsafe extern "C" fn(
    *mut std::ffi::c_void,
    *mut u64,
    ModuleBuffer,
    *mut ModuleHeader,
    usize,
    ModuleBuffer,
    u64,
) -> u32;

/// Starts `call` with `start` for `owner`; Envoy's id for it, `None` when
/// it could not.
///
/// # Safety
/// `owner` is what `start` takes, live, on the thread `start` allows.
unsafe fn callout(
    start: CalloutFn,
    owner: *mut std::ffi::c_void,
    call: &HttpCall<'_>,
) -> Option<u64> {
    let mut pairs = ModuleHeader::list(&call.headers);
    let mut callout = 0u64;
    let timeout_ms = u64::try_from(call.timeout.as_millis()).unwrap_or(u64::MAX);
    // Envoy copies the request during the call.
    let started = start(
        owner,
        &mut callout,
        ModuleBuffer::of(call.cluster.as_bytes()),
        pairs.as_mut_ptr(),
        pairs.len(),
        ModuleBuffer::of(call.body.unwrap_or_default()),
        timeout_ms,
    );
    (started == CALLOUT_INIT_SUCCESS).then_some(callout)
}

/// Wakes a stream on its worker: each [`StreamScheduler::commit`] makes
/// Envoy run the stream's `on_http_filter_scheduled` hook (never after the
/// stream is gone).
pub struct StreamScheduler(FilterSchedulerPtr);

/// The scheduler event of a wake or a tick (other events: see
/// `mailbox::ANSWERS`).
pub const WAKE: u64 = 0;

// SAFETY: Envoy allows a commit from any thread; the owner deletes it (the
// drop) on the stream's worker, after no other thread can commit it (see
// `mailbox::Mailbox::close`).
unsafe impl Send for StreamScheduler {}
unsafe impl Sync for StreamScheduler {}

impl StreamScheduler {
    /// Runs the stream's scheduled hook with `event_id`.
    pub fn commit(&self, event_id: u64) {
        // SAFETY: a scheduler Envoy made and not yet deleted; committing is
        // allowed from any thread.
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_commit(self.0, event_id) };
    }
}

impl Drop for StreamScheduler {
    fn drop(&mut self) {
        // SAFETY: deleted once, here.
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_delete(self.0) };
    }
}

/// Envoy's filter configuration. Valid from config-new until
/// config-destroy; its metrics may be updated from any thread (Envoy's
/// stats are atomic), its calls and scheduler made on the main thread.
#[derive(Clone, Copy)]
pub struct EnvoyConfig(ConfigEnvoyPtr);

// SAFETY: used only as the type's documentation says.
unsafe impl Send for EnvoyConfig {}
unsafe impl Sync for EnvoyConfig {}

/// The kinds of metric a policy defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

impl EnvoyConfig {
    /// # Safety
    /// `config` is the pointer Envoy passed to config-new, and the handle
    /// lives no longer than the configuration.
    pub unsafe fn new(config: ConfigEnvoyPtr) -> Self {
        Self(config)
    }

    /// Defines a metric (only inside config-new); Envoy's id for it.
    pub fn define(self, kind: MetricKind, name: &str) -> Option<usize> {
        let mut id = 0usize;
        let name = ModuleBuffer::of(name.as_bytes());
        let none = std::ptr::null_mut();
        // SAFETY: a live configuration; Envoy copies the name.
        let result = unsafe {
            match kind {
                MetricKind::Counter => {
                    envoy_dynamic_module_callback_http_filter_config_define_counter(
                        self.0, name, none, 0, &mut id,
                    )
                }
                MetricKind::Gauge => envoy_dynamic_module_callback_http_filter_config_define_gauge(
                    self.0, name, none, 0, &mut id,
                ),
            }
        };
        (result == METRICS_SUCCESS).then_some(id)
    }

    pub fn increment_counter(self, id: usize, by: u64) {
        // SAFETY: a live configuration; a metric it defined.
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_increment_counter(
                self.0,
                id,
                std::ptr::null_mut(),
                0,
                by,
            )
        };
    }

    pub fn set_gauge(self, id: usize, value: u64) {
        // SAFETY: as `increment_counter`.
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_set_gauge(
                self.0,
                id,
                std::ptr::null_mut(),
                0,
                value,
            )
        };
    }

    pub fn add_to_gauge(self, id: usize, delta: i64) {
        let by = delta.unsigned_abs();
        // SAFETY: as `increment_counter`.
        unsafe {
            if delta > 0 {
                envoy_dynamic_module_callback_http_filter_config_increment_gauge(
                    self.0,
                    id,
                    std::ptr::null_mut(),
                    0,
                    by,
                );
            } else if delta < 0 {
                envoy_dynamic_module_callback_http_filter_config_decrement_gauge(
                    self.0,
                    id,
                    std::ptr::null_mut(),
                    0,
                    by,
                );
            }
        }
    }

    /// Starts an HTTP call from the configuration (main thread only).
    pub fn callout(self, call: &HttpCall<'_>) -> Option<u64> {
        // SAFETY: a live configuration, on the main thread.
        unsafe {
            callout(
                envoy_dynamic_module_callback_http_filter_config_http_callout,
                self.0,
                call,
            )
        }
    }

    /// A scheduler for the configuration's timer.
    pub fn scheduler(self) -> Option<ConfigScheduler> {
        // SAFETY: a live configuration; deleted by the scheduler's drop,
        // before config-destroy returns.
        let scheduler =
            unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_new(self.0) };
        (!scheduler.is_null()).then_some(ConfigScheduler(scheduler))
    }
}

/// Runs the configuration's `on_http_filter_config_scheduled` on the main
/// thread, once per commit, from any thread.
pub struct ConfigScheduler(ConfigSchedulerPtr);

// SAFETY: Envoy allows a commit from any thread.
unsafe impl Send for ConfigScheduler {}
unsafe impl Sync for ConfigScheduler {}

impl ConfigScheduler {
    /// Runs the configuration's scheduled hook with `event_id`.
    pub fn commit(&self, event_id: u64) {
        // SAFETY: not yet deleted (the drop deletes it).
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_scheduler_commit(self.0, event_id)
        };
    }
}

impl Drop for ConfigScheduler {
    fn drop(&mut self) {
        // SAFETY: deleted once, here.
        unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.0) };
    }
}

/// Envoy's log levels (`envoy_dynamic_module_type_log_level`).
pub mod level {
    pub const TRACE: u32 = 0;
    pub const DEBUG: u32 = 1;
    pub const INFO: u32 = 2;
    pub const WARN: u32 = 3;
    pub const ERROR: u32 = 4;
    pub const CRITICAL: u32 = 5;
}

pub fn log_enabled(level: u32) -> bool {
    // SAFETY: a plain query.
    unsafe { envoy_dynamic_module_callback_log_enabled(level) }
}

pub fn log(level: u32, message: &str) {
    // SAFETY: Envoy copies the message.
    unsafe { envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message.as_bytes())) };
}

/// An answer to an HTTP call, as Envoy hands it to a callout-done hook:
/// borrowed views, valid only during the hook.
pub struct EnvoyAnswer<'a> {
    pub succeeded: bool,
    pub headers: &'a [EnvoyHeader],
    pub chunks: &'a [EnvoyBuffer],
}

impl EnvoyAnswer<'_> {
    /// # Safety
    /// The pointers and sizes Envoy passed to the running callout-done
    /// hook; the answer is dropped before the hook returns.
    pub unsafe fn new<'a>(
        result: u32,
        headers: *const EnvoyHeader,
        headers_size: usize,
        chunks: *const EnvoyBuffer,
        chunks_size: usize,
    ) -> EnvoyAnswer<'a> {
        let headers = if headers.is_null() {
            &[][..]
        } else {
            std::slice::from_raw_parts(headers, headers_size)
        };
        let chunks = if chunks.is_null() {
            &[][..]
        } else {
            std::slice::from_raw_parts(chunks, chunks_size)
        };
        EnvoyAnswer {
            succeeded: result == 0,
            headers,
            chunks,
        }
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        if !self.succeeded {
            return None;
        }
        self.headers
            .iter()
            // SAFETY: the views live as long as the hook (see `new`).
            .map(|header| unsafe { (header.key.bytes(), header.value.bytes()) })
            .find(|(key, _)| key.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| value)
    }

    pub fn body_size(&self) -> usize {
        if !self.succeeded {
            return 0;
        }
        self.chunks.iter().map(|chunk| chunk.length).sum()
    }

    pub fn body(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.body_size());
        if self.succeeded {
            for chunk in self.chunks {
                // SAFETY: as `header`.
                body.extend_from_slice(unsafe { chunk.bytes() });
            }
        }
        body
    }

    /// A copy that outlives the hook (an answer that came while the
    /// stream's code was running, delivered after it).
    pub fn copied(&self) -> OwnedAnswer {
        OwnedAnswer {
            succeeded: self.succeeded,
            headers: self
                .headers
                .iter()
                // SAFETY: as `header`.
                .map(|h| unsafe { (h.key.bytes().to_vec(), h.value.bytes().to_vec()) })
                .collect(),
            body: self.body(),
        }
    }
}

/// An answer copied out of Envoy's buffers.
pub struct OwnedAnswer {
    pub succeeded: bool,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
}
