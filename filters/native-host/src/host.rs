//! What the host keeps between Envoy's calls, and how a call into the
//! proxy-wasm code is made: the configurations, each thread's root
//! contexts, the streams, and the actions deferred until the code returns.
//!
//! Contexts live in the proxy-wasm SDK's dispatcher, which is per thread:
//! each Envoy thread is one "VM", as each worker runs its own Wasm VM. A
//! configuration has a root context on the main thread (made in
//! config-new, where the configuration is checked and the metrics defined,
//! and the only one that ticks and makes root HTTP calls) and one on each
//! worker, made when the worker's first stream of that configuration comes.

use crate::abi::*;
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
    pub main_root: u32,
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
    pub context: u32,
    /// When the stream began (proxy-wasm's `request.time`), in ns since the epoch.
    pub started_nanos: u64,
    /// Calls in flight: Envoy's callout id, proxy-wasm's token.
    pub callouts: Vec<(u64, u32)>,
    /// The context panicked and was deleted; Envoy's later calls pass through.
    pub broken: bool,
    pub completed: bool,
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
    context: u32,
    alive: Arc<AtomicBool>,
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
    static ROOT_FACTORY_SET: Cell<bool> = const { Cell::new(false) };
    static NEXT_CONTEXT: Cell<u32> = const { Cell::new(0) };
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
                let mut pairs: Vec<ModuleHeader> = headers
                    .iter()
                    .map(|(k, v)| ModuleHeader {
                        key: ModuleBuffer::of(k),
                        value: ModuleBuffer::of(v),
                    })
                    .collect();
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

// The SDK's exported entry points (its dispatcher), linked into this library.
extern "C" {
    fn proxy_on_context_create(context_id: u32, root_context_id: u32);
    fn proxy_on_vm_start(context_id: u32, vm_configuration_size: usize) -> bool;
    fn proxy_on_configure(context_id: u32, plugin_configuration_size: usize) -> bool;
    fn proxy_on_tick(context_id: u32);
    fn proxy_on_done(context_id: u32) -> bool;
    fn proxy_on_log(context_id: u32);
    fn proxy_on_delete(context_id: u32);
    fn proxy_on_request_headers(context_id: u32, headers: usize, end_of_stream: bool) -> Action;
    fn proxy_on_request_body(context_id: u32, body_size: usize, end_of_stream: bool) -> Action;
    fn proxy_on_request_trailers(context_id: u32, trailers: usize) -> Action;
    fn proxy_on_response_headers(context_id: u32, headers: usize, end_of_stream: bool) -> Action;
    fn proxy_on_response_body(context_id: u32, body_size: usize, end_of_stream: bool) -> Action;
    fn proxy_on_response_trailers(context_id: u32, trailers: usize) -> Action;
    fn proxy_on_http_call_response(
        context_id: u32,
        token: u32,
        headers: usize,
        body_size: usize,
        trailers: usize,
    );
}

// ---- configurations and roots ----

/// Deletes this thread's roots of destroyed configurations.
fn delete_dead_roots() {
    let dead: Vec<u32> = ROOTS.with(|roots| {
        let mut roots = roots.borrow_mut();
        let dead = roots
            .iter()
            .filter(|root| !root.alive.load(Ordering::Acquire))
            .map(|root| root.context)
            .collect();
        roots.retain(|root| root.alive.load(Ordering::Acquire));
        dead
    });
    for context in dead {
        let _ = enter(Current::NONE, || unsafe { proxy_on_delete(context) });
    }
}

/// Makes and configures a root context of `config` on this thread.
fn create_root(config: &Config) -> Option<u32> {
    let module = MODULE.get()?;
    if !ROOT_FACTORY_SET.with(|set| set.replace(true)) {
        proxy_wasm::set_root_context(module.root);
    }
    let context = next_id(&NEXT_CONTEXT);
    let current = Current {
        config,
        ..Current::NONE
    };
    let configured = enter(current, || unsafe {
        proxy_on_context_create(context, 0);
        proxy_on_vm_start(context, 0) && proxy_on_configure(context, config.configuration.len())
    });
    after_code();
    if configured != Ok(true) {
        let _ = enter(current, || unsafe { proxy_on_delete(context) });
        return None;
    }
    ROOTS.with(|roots| {
        roots.borrow_mut().push(Root {
            config: config.id,
            context,
            alive: Arc::clone(&config.alive),
        })
    });
    Some(context)
}

fn root_of(config: &Config) -> Option<u32> {
    let found = ROOTS.with(|roots| {
        roots
            .borrow()
            .iter()
            .find(|root| root.config == config.id)
            .map(|root| root.context)
    });
    found.or_else(|| create_root(config))
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
        main_root: 0,
        alive: Arc::new(AtomicBool::new(true)),
        ticker: None,
        callouts: Mutex::new(Vec::new()),
    });
    DEFINING.with(|defining| *defining.borrow_mut() = Some(Vec::new()));
    TICK_PERIOD.with(|period| period.set(None));
    let root = create_root(&config);
    let metrics = DEFINING.with(|defining| defining.borrow_mut().take());
    let tick_ms = TICK_PERIOD.with(|period| period.take());
    let Some(root) = root else {
        config.alive.store(false, Ordering::Release);
        return None;
    };
    config.main_root = root;
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
    delete_dead_roots();
}

pub(crate) fn config_tick(config: &Config) {
    if thread::current().id() != config.main_thread || !config.alive.load(Ordering::Acquire) {
        return;
    }
    let root = config.main_root;
    let current = Current {
        config,
        ..Current::NONE
    };
    let _ = enter(current, || unsafe { proxy_on_tick(root) });
    after_code();
}

// ---- streams ----

pub(crate) fn stream_new(config: &Config, envoy: FilterEnvoyPtr) -> Option<*mut Stream> {
    delete_dead_roots();
    let Some(root) = root_of(config) else {
        log(
            LOG_ERROR,
            "native module: the configuration was refused on this worker; the stream is closed",
        );
        return None;
    };
    let started_nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut stream = Box::new(Stream {
        envoy,
        config,
        context: next_id(&NEXT_CONTEXT),
        started_nanos,
        callouts: Vec::new(),
        broken: false,
        completed: false,
    });
    let context = stream.context;
    let current = Current {
        config,
        stream: &mut *stream,
        body: None,
    };
    let created = enter(current, || unsafe {
        proxy_on_context_create(context, root)
    });
    after_code();
    created.ok()?;
    Some(Box::into_raw(stream))
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
}

/// Runs one hook; returns Envoy's status value (proxy-wasm's `Continue` 0
/// and `Pause` 1 are the same numbers as Envoy's `Continue` and
/// `StopIteration` / `StopIterationAndBuffer` for every hook).
pub(crate) fn stream_hook(stream: *mut Stream, hook: StreamHook) -> u32 {
    let stream = unsafe { &mut *stream };
    if stream.broken {
        return 0;
    }
    let envoy = stream.envoy;
    let context = stream.context;
    let current = Current {
        config: stream.config,
        stream,
        body: hook.body(),
    };
    let result = enter(current, || unsafe {
        match hook {
            StreamHook::RequestHeaders { end_of_stream } => {
                let n = envoy_dynamic_module_callback_http_get_headers_size(
                    envoy,
                    header_type::REQUEST_HEADER,
                );
                proxy_on_request_headers(context, n, end_of_stream)
            }
            StreamHook::RequestBody { end_of_stream } => {
                let size = crate::hostcalls::body_size(envoy, Direction::Request, true);
                proxy_on_request_body(context, size, end_of_stream)
            }
            StreamHook::RequestTrailers => {
                let n = envoy_dynamic_module_callback_http_get_headers_size(
                    envoy,
                    header_type::REQUEST_TRAILER,
                );
                proxy_on_request_trailers(context, n)
            }
            StreamHook::ResponseHeaders { end_of_stream } => {
                let n = envoy_dynamic_module_callback_http_get_headers_size(
                    envoy,
                    header_type::RESPONSE_HEADER,
                );
                proxy_on_response_headers(context, n, end_of_stream)
            }
            StreamHook::ResponseBody { end_of_stream } => {
                let size = crate::hostcalls::body_size(envoy, Direction::Response, true);
                proxy_on_response_body(context, size, end_of_stream)
            }
            StreamHook::ResponseTrailers => {
                let n = envoy_dynamic_module_callback_http_get_headers_size(
                    envoy,
                    header_type::RESPONSE_TRAILER,
                );
                proxy_on_response_trailers(context, n)
            }
        }
    });
    match result {
        Ok(action) => {
            after_code();
            action as u32
        }
        Err(()) => {
            let answered = stream_failed(stream, hook.in_request());
            after_code();
            u32::from(answered)
        }
    }
}

/// A context panicked: it is deleted, and a request not yet sent on is
/// answered with the internal error. Returns whether it was answered.
fn stream_failed(stream: &mut Stream, in_request: bool) -> bool {
    stream.broken = true;
    // Whatever the failed code asked for is dropped.
    AFTER.with(|after| {
        after
            .borrow_mut()
            .retain(|action| !targets(action, stream.envoy))
    });
    let context = stream.context;
    let current = Current {
        config: stream.config,
        stream,
        body: None,
    };
    let _ = enter(current, || unsafe { proxy_on_delete(context) });
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
    if stream.broken || stream.completed {
        return;
    }
    stream.completed = true;
    let context = stream.context;
    let current = Current {
        config: stream.config,
        stream,
        body: None,
    };
    let done = enter(current, || unsafe {
        proxy_on_done(context);
        proxy_on_log(context);
    });
    if done.is_err() {
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
    if !stream.broken {
        let context = stream.context;
        let current = Current {
            config: stream.config,
            stream: pointer,
            body: None,
        };
        let _ = enter(current, || unsafe { proxy_on_delete(context) });
    }
    AFTER.with(|after| after.borrow_mut().retain(|a| !targets(a, stream.envoy)));
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
    let give = |context: u32, token: u32| {
        move || unsafe {
            CALL_RESPONSE.with(|slot| *slot.borrow_mut() = Some(response));
            proxy_on_http_call_response(context, token, headers, body_size, 0);
            CALL_RESPONSE.with(|slot| slot.borrow_mut().take());
        }
    };
    match caller {
        Caller::Stream(pointer) => {
            let stream = unsafe { &mut *pointer };
            let Some(token) = take_token(&mut stream.callouts, callout) else {
                return;
            };
            if stream.broken {
                return;
            }
            let current = Current {
                config: stream.config,
                stream: pointer,
                body: None,
            };
            let delivered = enter(current, give(stream.context, token));
            CALL_RESPONSE.with(|slot| slot.borrow_mut().take());
            if delivered.is_err() {
                stream_failed(stream, true);
            }
            after_code();
        }
        Caller::Config(config) => {
            let config = unsafe { &*config };
            let token = take_token(
                &mut config.callouts.lock().unwrap_or_else(|p| p.into_inner()),
                callout,
            );
            let Some(token) = token else { return };
            let current = Current {
                config,
                ..Current::NONE
            };
            let _ = enter(current, give(config.main_root, token));
            CALL_RESPONSE.with(|slot| slot.borrow_mut().take());
            after_code();
        }
    }
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
