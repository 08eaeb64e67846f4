//! What the host keeps between Envoy's calls, and how a call into the
//! proxy-wasm code is made: the configurations, each thread's root
//! contexts, the streams, and the actions deferred until the code returns.
//!
//! The host keeps the SDK's contexts itself, per thread (each Envoy thread
//! is one "VM", as each worker runs its own Wasm VM), and calls them inside
//! `catch_unwind`. A
//! configuration has a root context on the main thread (made in
//! config-new, where the configuration is checked and the metrics defined,
//! and the only one that ticks and makes root HTTP calls) and one on each
//! worker, made when the worker's first stream of that configuration comes.

use crate::abi::*;
use proxy_wasm::traits::{HttpContext, RootContext};
use proxy_wasm::types::{Action, MetricType, NewRootContext};
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::Duration;

/// The answer to a request whose proxy-wasm code panicked.
pub struct InternalErrorReply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Builds [`InternalErrorReply`] from the request's `x-request-id`.
pub type InternalErrorFactory = fn(Option<&str>) -> InternalErrorReply;

pub(crate) struct Module {
    pub root: NewRootContext,
    pub internal_error: InternalErrorFactory,
}

pub(crate) static MODULE: OnceLock<Module> = OnceLock::new();

/// A metric defined in config-new: proxy-wasm's metric id is its index.
pub(crate) struct Metric {
    pub name: String,
    pub handle: MetricHandle,
}

/// What updating a metric takes: its kind and Envoy's id for it.
#[derive(Clone, Copy)]
pub(crate) struct MetricHandle {
    pub kind: MetricType,
    pub envoy_id: usize,
}

/// One filter configuration: what Envoy's config-new handed over, and the
/// main thread's side of it.
pub(crate) struct Config {
    pub envoy: ConfigEnvoyPtr,
    /// Unique in the process: roots and shared state are keyed by it.
    pub id: u64,
    pub configuration: Vec<u8>,
    pub metrics: Vec<Metric>,
    pub main_thread: ThreadId,
    /// Cleared when Envoy destroys the configuration; each thread then
    /// deletes its root of it.
    pub alive: Arc<AtomicBool>,
    pub ticker: Option<Ticker>,
    /// The main root's calls in flight: Envoy's callout id, proxy-wasm's token.
    pub callouts: Mutex<Vec<(u64, u32)>>,
}

// Envoy's config pointer is used only as its threading rules allow: from
// the main thread, or for metrics, which Envoy updates atomically.
unsafe impl Send for Config {}
unsafe impl Sync for Config {}

/// One stream: Envoy's filter and the proxy-wasm HTTP context serving it.
pub(crate) struct Stream {
    pub envoy: FilterEnvoyPtr,
    pub config: *const Config,
    /// The proxy-wasm HTTP context; out of its place while its code runs,
    /// gone once it panicked.
    http: Option<Box<dyn HttpContext>>,
    /// When the stream began (proxy-wasm's `request.time`), in ns since the epoch.
    pub started_nanos: u64,
    /// Calls in flight: Envoy's callout id, proxy-wasm's token.
    pub callouts: Vec<(u64, u32)>,
    pub completed: bool,
    /// The proxy-wasm context id of its HTTP context.
    pub context: u32,
}

/// Which body a body hook is for (only there are received bytes readable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Request,
    Response,
}

/// What the running proxy-wasm code acts on.
#[derive(Clone, Copy)]
pub(crate) struct Current {
    pub config: *const Config,
    pub stream: *mut Stream,
    pub body: Option<Direction>,
}

impl Current {
    const NONE: Self = Self {
        config: ptr::null(),
        stream: ptr::null_mut(),
        body: None,
    };
}

/// An answer to an HTTP call, copied out of Envoy's buffers.
#[derive(Default)]
pub(crate) struct CallResponse {
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// Something the proxy-wasm code asked for that calls back into the
/// filter (a local reply runs the response hooks; resuming a stream may
/// run the next hook), done once the code has returned, as Envoy's Wasm
/// host does.
pub(crate) enum After {
    Reply {
        filter: FilterEnvoyPtr,
        status: u32,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
        body: Vec<u8>,
        details: Vec<u8>,
    },
    ContinueDecoding(FilterEnvoyPtr),
    ContinueEncoding(FilterEnvoyPtr),
}

/// Whose HTTP call an answer is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Caller {
    Stream(*mut Stream),
    Config(*const Config),
}

struct DeferredAnswer {
    caller: Caller,
    callout: u64,
    response: CallResponse,
}

/// A root context on this thread.
struct Root {
    config: u64,
    alive: Arc<AtomicBool>,
    /// Out of its place while its code runs.
    root: Option<Box<dyn RootContext>>,
}

thread_local! {
    static CURRENT: Cell<Current> = const { Cell::new(Current::NONE) };
    /// How deep in proxy-wasm code this thread is.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    static AFTER: RefCell<Vec<After>> = const { RefCell::new(Vec::new()) };
    /// Answers Envoy gave while the code was running (a call that failed at
    /// once): delivered when it has returned.
    static DEFERRED: RefCell<Vec<DeferredAnswer>> = const { RefCell::new(Vec::new()) };
    pub(crate) static CALL_RESPONSE: RefCell<Option<CallResponse>> = const { RefCell::new(None) };
    /// Metrics being defined: set only during config-new.
    pub(crate) static DEFINING: RefCell<Option<Vec<Metric>>> = const { RefCell::new(None) };
    /// The tick period the main root asked for during config-new.
    pub(crate) static TICK_PERIOD: Cell<Option<u32>> = const { Cell::new(None) };
    static ROOTS: RefCell<Vec<Root>> = const { RefCell::new(Vec::new()) };
    static NEXT_CONTEXT: Cell<u32> = const { Cell::new(0) };
    /// This thread's streams by context id, for `set_effective_context`.
    static STREAMS: RefCell<std::collections::HashMap<u32, *mut Stream>> =
        RefCell::new(std::collections::HashMap::new());
    static NEXT_TOKEN: Cell<u32> = const { Cell::new(0) };
}

static NEXT_CONFIG: AtomicU64 = AtomicU64::new(1);

pub(crate) fn current() -> Current {
    CURRENT.with(Cell::get)
}

/// The stream the code runs for, if any.
pub(crate) fn current_stream<'a>() -> Option<&'a mut Stream> {
    let stream = current().stream;
    // Set only while Envoy's hook for that stream runs.
    unsafe { stream.as_mut() }
}

pub(crate) fn current_config<'a>() -> Option<&'a Config> {
    unsafe { current().config.as_ref() }
}

pub(crate) fn push_after(action: After) {
    AFTER.with(|after| after.borrow_mut().push(action));
}

fn next_id(cell: &'static std::thread::LocalKey<Cell<u32>>) -> u32 {
    cell.with(|next| {
        let id = next.get().wrapping_add(1).max(1);
        next.set(id);
        id
    })
}

/// A proxy-wasm token for an HTTP call, unique on this thread (the SDK
/// keeps one table of calls per thread).
pub(crate) fn next_token() -> u32 {
    next_id(&NEXT_TOKEN)
}

/// Runs proxy-wasm code for `current`, catching a panic.
fn enter<R>(current: Current, code: impl FnOnce() -> R) -> Result<R, ()> {
    let saved = CURRENT.with(|c| c.replace(current));
    DEPTH.with(|d| d.set(d.get() + 1));
    let result = catch_unwind(AssertUnwindSafe(code));
    DEPTH.with(|d| d.set(d.get() - 1));
    CURRENT.with(|c| c.set(saved));
    result.map_err(|_| ())
}

/// After the code returned: the deferred actions, then (at the outermost
/// level) the answers that came while it ran.
fn after_code() {
    let actions = AFTER.with(|after| std::mem::take(&mut *after.borrow_mut()));
    for action in actions {
        run_after(action);
    }
    if DEPTH.with(Cell::get) == 0 {
        loop {
            let next = DEFERRED.with(|deferred| {
                let mut deferred = deferred.borrow_mut();
                (!deferred.is_empty()).then(|| deferred.remove(0))
            });
            let Some(answer) = next else { break };
            deliver(answer.caller, answer.callout, answer.response);
        }
    }
}

fn run_after(action: After) {
    unsafe {
        match action {
            After::Reply {
                filter,
                status,
                headers,
                body,
                details,
            } => {
                let mut pairs = ModuleHeader::list(&headers);
                envoy_dynamic_module_callback_http_send_response(
                    filter,
                    status,
                    pairs.as_mut_ptr(),
                    pairs.len(),
                    ModuleBuffer::of(&body),
                    if details.is_empty() {
                        ModuleBuffer::NULL
                    } else {
                        ModuleBuffer::of(&details)
                    },
                );
            }
            After::ContinueDecoding(filter) => {
                envoy_dynamic_module_callback_http_filter_continue_decoding(filter)
            }
            After::ContinueEncoding(filter) => {
                envoy_dynamic_module_callback_http_filter_continue_encoding(filter)
            }
        }
    }
}

pub(crate) fn log(level: u32, message: &str) {
    unsafe { envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message.as_bytes())) }
}

const LOG_ERROR: u32 = 4;
const LOG_CRITICAL: u32 = 5;

// The SDK records each HTTP call it dispatches in its own table, to route
// the answer through its dispatcher, which this host does not use (its
// `extern "C"` entry points cannot be unwound through, so the host keeps
// the contexts and calls them itself). Giving the SDK the answer for a
// context it does not know removes the record and does nothing else.
extern "C" {
    fn proxy_on_http_call_response(
        context_id: u32,
        token: u32,
        headers: usize,
        body_size: usize,
        trailers: usize,
    );
}

/// Removes the SDK's record of a call whose answer came (or never will).
fn forget_call(token: u32) {
    unsafe { proxy_on_http_call_response(0, token, 0, 0, 0) };
}

/// [`forget_call`] for every call of a list that will get no answer.
fn forget_calls(callouts: &mut Vec<(u64, u32)>) {
    for (_, token) in callouts.drain(..) {
        forget_call(token);
    }
}

// ---- configurations and roots ----

/// Deletes this thread's roots of destroyed configurations.
fn delete_dead_roots() {
    let dead: Vec<Root> = ROOTS.with(|roots| {
        let mut roots = roots.borrow_mut();
        if roots.iter().all(|root| root.alive.load(Ordering::Acquire)) {
            return Vec::new();
        }
        let (dead, alive) = std::mem::take(&mut *roots)
            .into_iter()
            .partition(|root| !root.alive.load(Ordering::Acquire));
        *roots = alive;
        dead
    });
    for root in dead {
        let _ = enter(Current::NONE, || drop(root));
    }
}

/// Makes and configures a root context of `config` on this thread.
fn create_root(config: &Config) -> bool {
    let Some(module) = MODULE.get() else {
        return false;
    };
    let context = next_id(&NEXT_CONTEXT);
    let current = Current {
        config,
        ..Current::NONE
    };
    let configured = enter(current, || {
        let mut root = (module.root)(context);
        let ok = root.on_vm_start(0) && root.on_configure(config.configuration.len());
        (ok, root)
    });
    after_code();
    let root = match configured {
        Ok((true, root)) => root,
        Ok((false, root)) => {
            let _ = enter(current, || drop(root));
            return false;
        }
        Err(()) => return false,
    };
    ROOTS.with(|roots| {
        roots.borrow_mut().push(Root {
            config: config.id,
            alive: Arc::clone(&config.alive),
            root: Some(root),
        })
    });
    true
}

/// Runs `code` on this thread's root of `config` (made first if `make` and
/// there is none); `None` if there is no root or its code panicked. The
/// root is out of its place while the code runs.
fn with_root<R>(
    config: &Config,
    make: bool,
    code: impl FnOnce(&mut dyn RootContext) -> R,
) -> Option<R> {
    let take = || {
        ROOTS.with(|roots| {
            roots
                .borrow_mut()
                .iter_mut()
                .find(|root| root.config == config.id)
                .and_then(|root| root.root.take())
        })
    };
    let mut found = take();
    if found.is_none() && make && create_root(config) {
        found = take();
    }
    let mut root = found?;
    let current = Current {
        config,
        ..Current::NONE
    };
    let result = enter(current, || code(&mut *root));
    ROOTS.with(|roots| {
        if let Some(slot) = roots
            .borrow_mut()
            .iter_mut()
            .find(|slot| slot.config == config.id)
        {
            slot.root = Some(root);
        }
    });
    result.ok()
}

/// config-new: checks the configuration in a main-thread root; `None`
/// refuses it (the root logged why).
pub(crate) fn config_new(envoy: ConfigEnvoyPtr, configuration: &[u8]) -> Option<*const Config> {
    delete_dead_roots();
    let mut config = Box::new(Config {
        envoy,
        id: NEXT_CONFIG.fetch_add(1, Ordering::Relaxed),
        configuration: configuration.to_vec(),
        metrics: Vec::new(),
        main_thread: thread::current().id(),
        alive: Arc::new(AtomicBool::new(true)),
        ticker: None,
        callouts: Mutex::new(Vec::new()),
    });
    DEFINING.with(|defining| *defining.borrow_mut() = Some(Vec::new()));
    TICK_PERIOD.with(|period| period.set(None));
    let created = create_root(&config);
    let metrics = DEFINING.with(|defining| defining.borrow_mut().take());
    let tick_ms = TICK_PERIOD.with(|period| period.take());
    if !created {
        config.alive.store(false, Ordering::Release);
        return None;
    }
    config.metrics = metrics.unwrap_or_default();
    if let Some(ms) = tick_ms.filter(|ms| *ms > 0) {
        config.ticker = Ticker::start(envoy, ms);
    }
    Some(Box::into_raw(config))
}

/// config-destroy: stops the ticks; each thread deletes its root.
pub(crate) fn config_destroy(config: *const Config) {
    let config = unsafe { Box::from_raw(config as *mut Config) };
    config.alive.store(false, Ordering::Release);
    if let Some(ticker) = config.ticker {
        ticker.stop();
    }
    forget_calls(&mut lock(&config.callouts));
    delete_dead_roots();
}

pub(crate) fn config_tick(config: &Config) {
    if thread::current().id() != config.main_thread || !config.alive.load(Ordering::Acquire) {
        return;
    }
    with_root(config, false, |root| root.on_tick());
    after_code();
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

// ---- streams ----

pub(crate) fn stream_new(config: &Config, envoy: FilterEnvoyPtr) -> Option<*mut Stream> {
    delete_dead_roots();
    let started_nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut stream = Box::new(Stream {
        envoy,
        config,
        http: None,
        started_nanos,
        callouts: Vec::new(),
        completed: false,
        context: 0,
    });
    let context = next_id(&NEXT_CONTEXT);
    stream.context = context;
    let http = with_root(config, true, |root| root.create_http_context(context));
    after_code();
    let Some(http) = http.flatten() else {
        log(
            LOG_ERROR,
            "native module: no context for the stream (the configuration was refused on this \
             worker, or its code failed); the stream is closed",
        );
        return None;
    };
    stream.http = Some(http);
    let pointer = Box::into_raw(stream);
    STREAMS.with(|streams| streams.borrow_mut().insert(context, pointer));
    Some(pointer)
}

/// Makes the thread's stream with HTTP context `context` the one the
/// running code acts on (as Envoy's Wasm host does for a context of the
/// same VM); false when there is none.
pub(crate) fn set_effective_stream(context: u32) -> bool {
    let Some(pointer) = STREAMS.with(|streams| streams.borrow().get(&context).copied()) else {
        return false;
    };
    let config = unsafe { (*pointer).config };
    CURRENT.with(|current| {
        current.set(Current {
            config,
            stream: pointer,
            body: None,
        })
    });
    true
}

/// The proxy-wasm hooks of a stream Envoy calls.
#[derive(Clone, Copy)]
pub(crate) enum StreamHook {
    RequestHeaders { end_of_stream: bool },
    RequestBody { end_of_stream: bool },
    RequestTrailers,
    ResponseHeaders { end_of_stream: bool },
    ResponseBody { end_of_stream: bool },
    ResponseTrailers,
}

impl StreamHook {
    fn in_request(self) -> bool {
        matches!(
            self,
            Self::RequestHeaders { .. } | Self::RequestBody { .. } | Self::RequestTrailers
        )
    }

    fn body(self) -> Option<Direction> {
        match self {
            Self::RequestBody { .. } => Some(Direction::Request),
            Self::ResponseBody { .. } => Some(Direction::Response),
            _ => None,
        }
    }

    fn run(self, envoy: FilterEnvoyPtr, http: &mut dyn HttpContext) -> Action {
        let headers =
            |kind| unsafe { envoy_dynamic_module_callback_http_get_headers_size(envoy, kind) };
        match self {
            Self::RequestHeaders { end_of_stream } => {
                http.on_http_request_headers(headers(header_type::REQUEST_HEADER), end_of_stream)
            }
            Self::RequestBody { end_of_stream } => {
                let size = crate::hostcalls::body_size(envoy, Direction::Request, true);
                http.on_http_request_body(size, end_of_stream)
            }
            Self::RequestTrailers => {
                http.on_http_request_trailers(headers(header_type::REQUEST_TRAILER))
            }
            Self::ResponseHeaders { end_of_stream } => {
                http.on_http_response_headers(headers(header_type::RESPONSE_HEADER), end_of_stream)
            }
            Self::ResponseBody { end_of_stream } => {
                let size = crate::hostcalls::body_size(envoy, Direction::Response, true);
                http.on_http_response_body(size, end_of_stream)
            }
            Self::ResponseTrailers => {
                http.on_http_response_trailers(headers(header_type::RESPONSE_TRAILER))
            }
        }
    }
}

/// Runs `code` on the stream's HTTP context (out of its place meanwhile);
/// if it panics, the context is dropped, and Envoy's later calls for the
/// stream pass through.
fn with_http<R>(
    stream: &mut Stream,
    body: Option<Direction>,
    code: impl FnOnce(&mut dyn HttpContext) -> R,
) -> Option<Result<R, ()>> {
    let mut http = stream.http.take()?;
    let current = Current {
        config: stream.config,
        stream,
        body,
    };
    let result = enter(current, || code(&mut *http));
    match result {
        Ok(_) => stream.http = Some(http),
        Err(()) => {
            let _ = enter(current, || drop(http));
        }
    }
    Some(result)
}

/// Runs one hook; returns Envoy's status value (proxy-wasm's `Continue` 0
/// and `Pause` 1 are the same numbers as Envoy's `Continue` and
/// `StopIteration` / `StopIterationAndBuffer` for every hook).
pub(crate) fn stream_hook(stream: *mut Stream, hook: StreamHook) -> u32 {
    let stream = unsafe { &mut *stream };
    let envoy = stream.envoy;
    let status = match with_http(stream, hook.body(), |http| hook.run(envoy, http)) {
        None => 0,
        Some(Ok(action)) => action as u32,
        Some(Err(())) => u32::from(stream_failed(stream, hook.in_request())),
    };
    after_code();
    status
}

/// A context panicked (and is gone): a request not yet sent on is
/// answered with the internal error. Returns whether it was answered.
fn stream_failed(stream: &mut Stream, in_request: bool) -> bool {
    // Whatever the failed code asked for is dropped.
    AFTER.with(|after| {
        after
            .borrow_mut()
            .retain(|action| !targets(action, stream.envoy))
    });
    forget_calls(&mut stream.callouts);
    log(
        LOG_CRITICAL,
        "native module: a policy failed on this request (see the panic above); it is answered with an internal error",
    );
    if !in_request {
        return false;
    }
    let Some(module) = MODULE.get() else {
        return false;
    };
    let request_id =
        crate::hostcalls::header(stream.envoy, header_type::REQUEST_HEADER, "x-request-id")
            .map(|v| String::from_utf8_lossy(&v).into_owned());
    let reply = (module.internal_error)(request_id.as_deref());
    push_after(After::Reply {
        filter: stream.envoy,
        status: reply.status,
        headers: reply
            .headers
            .into_iter()
            .map(|(k, v)| (k.into_bytes(), v.into_bytes()))
            .collect(),
        body: reply.body,
        details: b"gateway_internal_error".to_vec(),
    });
    true
}

fn targets(action: &After, filter: FilterEnvoyPtr) -> bool {
    match action {
        After::Reply { filter: f, .. }
        | After::ContinueDecoding(f)
        | After::ContinueEncoding(f) => *f == filter,
    }
}

pub(crate) fn stream_complete(stream: *mut Stream) {
    let stream = unsafe { &mut *stream };
    if stream.completed {
        return;
    }
    stream.completed = true;
    let done = with_http(stream, None, |http| {
        http.on_done();
        http.on_log();
    });
    if let Some(Err(())) = done {
        stream_failed(stream, false);
    }
    after_code();
}

pub(crate) fn stream_destroy(stream: *mut Stream) {
    let mut stream = unsafe { Box::from_raw(stream) };
    let pointer: *mut Stream = &mut *stream;
    DEFERRED.with(|deferred| {
        deferred
            .borrow_mut()
            .retain(|answer| answer.caller != Caller::Stream(pointer))
    });
    AFTER.with(|after| after.borrow_mut().retain(|a| !targets(a, stream.envoy)));
    forget_calls(&mut stream.callouts);
    if let Some(http) = stream.http.take() {
        let current = Current {
            config: stream.config,
            stream: pointer,
            body: None,
        };
        let _ = enter(current, || drop(http));
        after_code();
    }
    STREAMS.with(|streams| streams.borrow_mut().remove(&stream.context));
}

// ---- HTTP call answers ----

/// Copies an answer out of Envoy's buffers (valid only during the hook).
///
/// # Safety
/// The pointers and sizes are those Envoy passed to the hook.
pub(crate) unsafe fn copy_response(
    succeeded: bool,
    headers: *const EnvoyHeader,
    headers_size: usize,
    chunks: *const EnvoyBuffer,
    chunks_size: usize,
) -> CallResponse {
    let mut response = CallResponse::default();
    if !succeeded {
        return response;
    }
    if !headers.is_null() {
        for header in std::slice::from_raw_parts(headers, headers_size) {
            response
                .headers
                .push((header.key.bytes().to_vec(), header.value.bytes().to_vec()));
        }
    }
    if !chunks.is_null() {
        for chunk in std::slice::from_raw_parts(chunks, chunks_size) {
            response.body.extend_from_slice(chunk.bytes());
        }
    }
    response
}

pub(crate) fn stream_answer(stream: *mut Stream, callout: u64, response: CallResponse) {
    answer(Caller::Stream(stream), callout, response);
}

pub(crate) fn config_answer(config: *const Config, callout: u64, response: CallResponse) {
    answer(Caller::Config(config), callout, response);
}

fn answer(caller: Caller, callout: u64, response: CallResponse) {
    if DEPTH.with(Cell::get) > 0 {
        DEFERRED.with(|deferred| {
            deferred.borrow_mut().push(DeferredAnswer {
                caller,
                callout,
                response,
            })
        });
    } else {
        deliver(caller, callout, response);
    }
}

fn take_token(callouts: &mut Vec<(u64, u32)>, callout: u64) -> Option<u32> {
    let at = callouts.iter().position(|(id, _)| *id == callout)?;
    Some(callouts.swap_remove(at).1)
}

fn deliver(caller: Caller, callout: u64, response: CallResponse) {
    let headers = response.headers.len();
    let body_size = response.body.len();
    let token = match caller {
        Caller::Stream(stream) => take_token(unsafe { &mut (*stream).callouts }, callout),
        Caller::Config(config) => take_token(&mut lock(unsafe { &(*config).callouts }), callout),
    };
    let Some(token) = token else { return };
    forget_call(token);
    CALL_RESPONSE.with(|slot| *slot.borrow_mut() = Some(response));
    match caller {
        Caller::Stream(pointer) => {
            let stream = unsafe { &mut *pointer };
            let delivered = with_http(stream, None, |http| {
                http.on_http_call_response(token, headers, body_size, 0)
            });
            CALL_RESPONSE.with(|slot| slot.borrow_mut().take());
            if let Some(Err(())) = delivered {
                stream_failed(stream, true);
            }
        }
        Caller::Config(config) => {
            let config = unsafe { &*config };
            with_root(config, false, |root| {
                root.on_http_call_response(token, headers, body_size, 0)
            });
            CALL_RESPONSE.with(|slot| slot.borrow_mut().take());
        }
    }
    after_code();
}

// ---- ticks: a thread commits the config scheduler every period ----

struct SchedulerPtr(ConfigSchedulerPtr);

// Envoy's scheduler may be committed from any thread.
unsafe impl Send for SchedulerPtr {}

struct TickerState {
    stop: Mutex<bool>,
    wake: Condvar,
}

pub(crate) struct Ticker {
    state: Arc<TickerState>,
    thread: JoinHandle<()>,
    scheduler: ConfigSchedulerPtr,
}

impl Ticker {
    fn start(config: ConfigEnvoyPtr, period_ms: u32) -> Option<Self> {
        let scheduler =
            unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_new(config) };
        if scheduler.is_null() {
            log(
                LOG_ERROR,
                "native module: cannot create the timer; no ticks",
            );
            return None;
        }
        let state = Arc::new(TickerState {
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let shared = Arc::clone(&state);
        let committed = SchedulerPtr(scheduler);
        let period = Duration::from_millis(u64::from(period_ms));
        let thread = thread::Builder::new()
            .name("gateway-ticks".into())
            .spawn(move || {
                let committed = committed;
                let mut stopped = shared.stop.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    let (guard, _) = shared
                        .wake
                        .wait_timeout(stopped, period)
                        .unwrap_or_else(|p| p.into_inner());
                    stopped = guard;
                    if *stopped {
                        break;
                    }
                    unsafe {
                        envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
                            committed.0,
                            0,
                        )
                    };
                }
            })
            .ok()?;
        Some(Self {
            state,
            thread,
            scheduler,
        })
    }

    fn stop(self) {
        *self.state.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.state.wake.notify_all();
        let _ = self.thread.join();
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.scheduler)
        };
    }
}
