//! The proxy-wasm host of the stream seam: [`ProxyWasmStream`] (a request's
//! stream as a policy's steps see it), [`StreamContext`] (a policy's steps
//! as a single filter's HTTP context), and the root context every filter
//! uses, which loads the plugin configuration in `on_configure` and hands
//! the compiled policy to each request.
//!
//! The same pieces let the gateway module run every policy in one VM: a
//! policy loads into a [`LoadedPolicy`] whatever root holds it, and gives
//! each request its steps.

use crate::config::ConfigError;
use crate::fleet::client::Batch;
use crate::host;
use crate::metrics::ProxyWasmMetrics;
use crate::stream::{Level, PolicySteps, Stream, Telemetry, Verdict};
use crate::sync::lock;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{HttpContext, RootContext};
use proxy_wasm::types::{BufferType, LogLevel, MapType};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// The plugin configuration Envoy handed over (empty when there is none).
pub fn plugin_configuration() -> Vec<u8> {
    hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// State every root context of one configuration shares, made by `make`
/// for the first and handed to the others.
///
/// Envoy's Wasm host runs a VM per worker, each with its own root, and
/// nothing is shared: every root gets a value of its own. The native
/// module runs every worker's root in one process, and only the main
/// thread's root has a timer and calls out, so what the workers' requests
/// leave for their root to send (log records, breaker outcomes) must be
/// the main root's: there, every root of one configuration gets the same
/// value (the host names the configuration with its foreign function
/// `configuration_id`). `make` must not call this function.
pub fn shared_by_roots<T: Send + Sync + 'static>(
    name: &'static str,
    make: impl FnOnce() -> T,
) -> Arc<T> {
    type Entry = (u64, &'static str, Weak<dyn Any + Send + Sync>);
    static SHARED: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
    let Some(configuration) = configuration_id() else {
        return Arc::new(make());
    };
    let mut shared = lock(&SHARED);
    shared.retain(|(_, _, value)| value.strong_count() > 0);
    let existing = shared
        .iter()
        .find(|(id, entry, _)| *id == configuration && *entry == name)
        .and_then(|(_, _, value)| value.upgrade());
    if let Some(value) = existing.and_then(|value| value.downcast::<T>().ok()) {
        return value;
    }
    let value = Arc::new(make());
    let erased: Arc<dyn Any + Send + Sync> = value.clone();
    shared.push((configuration, name, Arc::downgrade(&erased)));
    value
}

/// The host's id of the configuration being loaded, where roots share state.
fn configuration_id() -> Option<u64> {
    let bytes = hostcalls::call_foreign_function("configuration_id", None)
        .ok()
        .flatten()?;
    Some(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?))
}

/// Compiles a configuration. On error, logs
/// `<filter>: invalid configuration: <path>: <reason>` and returns `None`,
/// so `on_configure` returns false and Envoy refuses the configuration.
pub fn compile_or_log<C>(
    filter: &str,
    bytes: &[u8],
    compile: impl FnOnce(&[u8]) -> Result<C, ConfigError>,
) -> Option<C> {
    match compile(bytes) {
        Ok(config) => Some(config),
        Err(err) => {
            log(
                LogLevel::Error,
                &format!("{filter}: invalid configuration: {err}"),
            );
            None
        }
    }
}

/// Reads the plugin configuration and compiles it, as [`compile_or_log`].
pub fn load_config<C>(
    filter: &str,
    compile: impl FnOnce(&[u8]) -> Result<C, ConfigError>,
) -> Option<C> {
    compile_or_log(filter, &plugin_configuration(), compile)
}

pub fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

/// What a filter tells the shared root context about itself.
pub trait Filter: 'static {
    /// Names the filter in logs and metrics (`ip_acl`).
    const NAME: &'static str;
    /// The compiled, immutable configuration.
    type Policy: 'static;
    /// The counters, defined once per VM.
    type Metrics: Copy + 'static;

    fn compile(bytes: &[u8]) -> Result<Self::Policy, ConfigError>;

    /// Work with the host once the policy is compiled (e.g. creating shared
    /// data); an error refuses the configuration.
    fn prepare(_policy: &Self::Policy) -> Result<(), String> {
        Ok(())
    }

    fn define_metrics() -> Self::Metrics;

    /// The policy sends checks to the fleet store.
    fn uses_fleet(_policy: &Self::Policy) -> bool {
        false
    }

    /// The policy's part in one request, written against [`Stream`].
    fn steps(policy: &Rc<Self::Policy>, metrics: Self::Metrics) -> Box<dyn PolicySteps>;

    /// The policy's requests may be woken by other requests (see
    /// [`crate::wake`]).
    fn wakes(_policy: &Self::Policy) -> bool {
        false
    }

    /// How often the worker's root calls [`Filter::on_tick`].
    fn tick_period(_policy: &Self::Policy) -> Option<Duration> {
        None
    }

    /// Background work of the worker (each worker runs its own root).
    fn on_tick(_policy: &Self::Policy, _metrics: Self::Metrics) {}

    /// An HTTP call the root made answered; returns whether it was the policy's.
    fn on_http_call_response(
        _policy: &Self::Policy,
        _metrics: Self::Metrics,
        _token: u32,
        _body_size: usize,
    ) -> bool {
        false
    }
}

/// A policy whose configuration is loaded, as a root context holds it: it
/// makes each request's context and may take part in the root's timer,
/// HTTP call answers and shutdown. A single filter's root holds one; the
/// gateway module's root holds one per enabled policy, in order.
pub trait LoadedPolicy {
    /// The policy's part in one request.
    fn steps(&self) -> Box<dyn PolicySteps>;

    /// Its requests may be woken by other requests (see [`crate::wake`]).
    fn wakes(&self) -> bool {
        false
    }

    /// The policy sends checks to the fleet store.
    fn uses_fleet(&self) -> bool {
        false
    }

    /// How often the policy wants [`LoadedPolicy::on_tick`].
    fn tick_period(&self) -> Option<Duration> {
        None
    }

    fn on_tick(&mut self) {}

    /// An HTTP call answered; returns whether the call was this policy's.
    fn on_http_call_response(&mut self, _token: u32, _body_size: usize) -> bool {
        false
    }

    /// Envoy is removing the configuration; returns whether the policy is
    /// done at once (else it finishes later and becomes [`idle`](Self::idle)).
    fn on_done(&mut self) -> bool {
        true
    }

    /// Nothing in flight and nothing left to send.
    fn idle(&self) -> bool {
        true
    }
}

/// A [`Filter`]'s compiled policy and its metrics.
pub struct Loaded<F: Filter> {
    policy: Rc<F::Policy>,
    metrics: F::Metrics,
}

impl<F: Filter> Loaded<F> {
    /// Compiles `bytes`, prepares the host and gets the metrics. On error,
    /// logs `<filter>: invalid configuration: …` (or `<filter>: <reason>`
    /// when the host cannot be prepared) and returns `None`.
    pub fn load(bytes: &[u8], metrics: impl FnOnce() -> F::Metrics) -> Option<Self> {
        let policy = compile_or_log(F::NAME, bytes, F::compile)?;
        if let Err(reason) = F::prepare(&policy) {
            log(LogLevel::Error, &format!("{}: {reason}", F::NAME));
            return None;
        }
        Some(Self {
            policy: Rc::new(policy),
            metrics: metrics(),
        })
    }
}

impl<F: Filter> LoadedPolicy for Loaded<F> {
    fn steps(&self) -> Box<dyn PolicySteps> {
        F::steps(&self.policy, self.metrics)
    }

    fn wakes(&self) -> bool {
        F::wakes(&self.policy)
    }

    fn uses_fleet(&self) -> bool {
        F::uses_fleet(&self.policy)
    }

    fn tick_period(&self) -> Option<Duration> {
        F::tick_period(&self.policy)
    }

    fn on_tick(&mut self) {
        F::on_tick(&self.policy, self.metrics);
    }

    fn on_http_call_response(&mut self, token: u32, body_size: usize) -> bool {
        F::on_http_call_response(&self.policy, self.metrics, token, body_size)
    }
}

/// The root context every filter uses: compiles the configuration in
/// `on_configure` (refusing it with a logged reason) and hands the compiled
/// policy to each request's context.
pub struct FilterRoot<F: Filter> {
    loaded: Option<Loaded<F>>,
    metrics: Option<F::Metrics>,
}

impl<F: Filter> Default for FilterRoot<F> {
    fn default() -> Self {
        Self {
            loaded: None,
            metrics: None,
        }
    }
}

impl<F: Filter> proxy_wasm::traits::Context for FilterRoot<F> {
    fn on_http_call_response(
        &mut self,
        token: u32,
        headers: usize,
        body_size: usize,
        trailers: usize,
    ) {
        if crate::wake::forward_call_answer(token, headers, body_size, trailers) {
            return;
        }
        if let Some(loaded) = &mut self.loaded {
            loaded.on_http_call_response(token, body_size);
        }
    }
}

impl<F: Filter> proxy_wasm::traits::RootContext for FilterRoot<F> {
    fn on_configure(&mut self, _config_size: usize) -> bool {
        let metrics = &mut self.metrics;
        let loaded = Loaded::<F>::load(&plugin_configuration(), || {
            *metrics.get_or_insert_with(F::define_metrics)
        });
        match loaded {
            Some(loaded) => {
                if let Some(period) = loaded.tick_period() {
                    self.set_tick_period(period);
                }
                if loaded.wakes() {
                    crate::wake::open_wake_queue();
                }
                self.loaded = Some(loaded);
                true
            }
            None => false,
        }
    }

    fn on_tick(&mut self) {
        if let Some(loaded) = &mut self.loaded {
            loaded.on_tick();
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        crate::wake::on_queue_ready(queue_id);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let loaded = self.loaded.as_ref()?;
        let http = Box::new(StreamContext::new(loaded.steps(), context_id));
        if loaded.wakes() {
            return Some(Box::new(crate::wake::WakeableContext::new(
                context_id, http,
            )));
        }
        Some(http)
    }

    fn get_type(&self) -> Option<proxy_wasm::types::ContextType> {
        Some(proxy_wasm::types::ContextType::HttpContext)
    }
}

/// Which root context a `.wasm` module runs when several crates linked
/// into it declare one (see [`declare_root!`](crate::declare_root)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RootRank {
    /// A single filter's root.
    Filter,
    /// The gateway module's root, which runs every filter. It links every
    /// filter crate, and Cargo builds a crate once per command with the
    /// union of the features asked for, so when the gateway module is built
    /// together with the single filters, their declarations are linked in
    /// too; this rank wins over them.
    Module,
}

/// Makes a module's root context (given its context id).
pub type RootFactory = fn(u32) -> Box<dyn RootContext>;

/// The highest-ranked of the things offered; of equal ranks, the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ranked<T>(Option<(RootRank, T)>);

impl<T: Copy> Ranked<T> {
    pub const NONE: Self = Self(None);

    pub fn offer(&mut self, rank: RootRank, value: T) {
        match self.0 {
            Some((kept, _)) if kept >= rank => {}
            _ => self.0 = Some((rank, value)),
        }
    }

    pub fn best(&self) -> Option<T> {
        self.0.map(|(_, value)| value)
    }
}

thread_local! {
    static DECLARED_ROOT: Cell<Ranked<RootFactory>> = const { Cell::new(Ranked::NONE) };
}

/// Records a declared root (see [`Ranked`]).
pub fn declare_root(rank: RootRank, factory: RootFactory) {
    DECLARED_ROOT.with(|declared| {
        let mut ranked = declared.get();
        ranked.offer(rank, factory);
        declared.set(ranked);
    });
}

/// The root context the module runs, once every declaration has run.
pub fn declared_root() -> Option<RootFactory> {
    DECLARED_ROOT.with(|declared| declared.get().best())
}

/// Declares the root context of the `.wasm` module this crate is linked
/// into: `declare_root!(RootRank::Filter, FilterRoot::<IpAclFilter>::default())`.
///
/// Every module's one entry point is `_initialize`, defined once here in
/// `gateway-common`: a `#[no_mangle]` entry point per filter crate would be
/// defined twice in the gateway module, which links them all. Declarations
/// are module constructors (`.init_array`), run by `_initialize` before it
/// picks the highest-ranked root.
#[macro_export]
macro_rules! declare_root {
    ($rank:expr, $root:expr) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            extern "C" fn declare() {
                $crate::adapter::declare_root($rank, |_| Box::new($root));
            }
            #[used]
            #[link_section = ".init_array"]
            static DECLARE: extern "C" fn() = declare;
        };
    };
}

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    if let Some(factory) = declared_root() {
        proxy_wasm::set_root_context(factory);
    }
}}

/// The current request's stream under proxy-wasm: the [`Stream`] every
/// policy step is handed in a `.wasm` filter and in the gateway module,
/// one per step. Reads are [`host::ProxyWasmHost`]'s (one snapshot per
/// callback scope).
#[derive(Debug, Default)]
pub struct ProxyWasmStream {
    /// The request's context id.
    id: u32,
    /// The request's fleet operations, in the gateway module.
    batch: Option<Rc<RefCell<Batch>>>,
    /// The size of the request body a step replaced, for the policies
    /// after it in the gateway module.
    pub resized_to: Option<usize>,
    /// The fleet operations the step sent, for the host to keep until
    /// their answer.
    pub fleet: Option<crate::fleet::client::Ticket>,
    /// The token of the call the step made.
    pub called: Option<u32>,
}

impl ProxyWasmStream {
    /// The stream of the request with context id `id`.
    pub fn new(id: u32) -> Self {
        Self {
            id,
            ..Self::default()
        }
    }

    /// The stream of a request whose policies' fleet operations travel in
    /// one `batch` (the gateway module's).
    pub fn in_batch(id: u32, batch: Rc<RefCell<Batch>>) -> Self {
        Self {
            id,
            batch: Some(batch),
            ..Self::default()
        }
    }
}

/// The answer to the call being reported (`on_http_call_response`).
pub struct ProxyWasmCallAnswer {
    pub body_size: usize,
}

impl crate::stream::CallAnswer for ProxyWasmCallAnswer {
    fn status(&self) -> Option<u32> {
        self.header(":status")
            .and_then(|status| status.trim().parse::<u32>().ok())
    }

    /// Not the SDK's call, which panics on a reset call (no headers) and
    /// on a value that is not UTF-8.
    fn header(&self, name: &str) -> Option<String> {
        host::header_value(MapType::HttpCallResponseHeaders, name)
    }

    fn body_size(&self) -> usize {
        self.body_size
    }

    fn body(&self) -> Vec<u8> {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, self.body_size)
            .ok()
            .flatten()
            .unwrap_or_default()
    }
}

impl host::Host for ProxyWasmStream {
    fn request_header(&self, name: &str) -> Option<String> {
        host::ProxyWasmHost.request_header(name)
    }

    fn request_header_values(&self, name: &str) -> Vec<String> {
        host::ProxyWasmHost.request_header_values(name)
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        host::ProxyWasmHost.property(path)
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> bool {
        host::ProxyWasmHost.set_property(path, value)
    }

    fn now(&self) -> std::time::SystemTime {
        host::ProxyWasmHost.now()
    }
}

/// Policies written against [`Stream`] tell their host what they did by
/// their [`Verdict`], so this stream notes nothing in [`StreamNotes`]: the
/// gateway module reads their verdicts, and the size of a body they
/// replace from [`ProxyWasmStream::resized_to`].
impl Stream for ProxyWasmStream {
    fn request_header_names(&self) -> Vec<String> {
        host::ProxyWasmHost
            .request_headers()
            .iter()
            .map(|(name, _)| crate::header_map::text(name))
            .collect()
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        set_request_header(name, value);
    }

    fn response_header(&self, name: &str) -> Option<String> {
        response_header(name)
    }

    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        set_response_header(name, value);
    }

    /// In the gateway module, a reply made while earlier policies' fleet
    /// checks are unanswered is held until they are (see
    /// [`Batch::holds_replies`](crate::fleet::client::Batch::holds_replies)).
    fn send_local_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        if let Some(batch) = &self.batch {
            let mut batch = batch.borrow_mut();
            if batch.holds_replies() {
                batch.hold_reply(crate::stream::LocalReply::new(status, headers, body));
                return;
            }
        }
        let _ = hostcalls::send_http_response(status, headers.to_vec(), Some(body));
    }

    fn request_body(&self, size: usize) -> Vec<u8> {
        hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    fn replace_request_body(&mut self, old_size: usize, body: &[u8]) {
        let _ = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, old_size, body);
        self.resized_to = Some(body.len());
    }

    fn shared_data(&self) -> &dyn crate::store::SharedStore {
        &crate::store::ProxyWasmStore
    }

    fn send_to_fleet(
        &mut self,
        store: &std::sync::Arc<crate::fleet::Store>,
        ops: Vec<crate::fleet::wire::Op>,
    ) -> Result<crate::stream::FleetCall, crate::fleet::wire::Failure> {
        let batched = self
            .batch
            .as_ref()
            .and_then(|batch| batch.borrow_mut().add(store, &ops));
        let (ticket, call) = match batched {
            Some(ticket) => (ticket, crate::stream::FleetCall::Batched),
            None => (
                crate::fleet::client::submit(store, ops)?,
                crate::stream::FleetCall::Own,
            ),
        };
        self.fleet = Some(ticket);
        Ok(call)
    }

    fn clear_route_cache(&mut self) {
        // Envoy 1.40 already re-routes after a Wasm header change; saying so
        // explicitly keeps that true where it does not.
        let _ = hostcalls::call_foreign_function("clear_route_cache", None);
    }

    fn dispatch_call(
        &mut self,
        call: crate::stream::HttpCall<'_>,
    ) -> Result<(), crate::stream::CallNotMade> {
        let token =
            crate::wake::dispatch_http_call(call.cluster, call.headers, call.body, call.timeout)
                .map_err(|_| crate::stream::CallNotMade)?;
        self.called = Some(token);
        Ok(())
    }

    fn stream_id(&self) -> u32 {
        self.id
    }

    fn wake(&mut self, stream_id: u32) {
        crate::wake::wake_later(stream_id);
    }
}

/// The host's own metrics and logs.
impl Telemetry for ProxyWasmStream {
    fn increment(&mut self, counter: crate::metrics::Counter, delta: u64) {
        ProxyWasmMetrics.increment(counter, delta);
    }

    fn set_gauge(&mut self, gauge: crate::metrics::Gauge, value: u64) {
        ProxyWasmMetrics.set_gauge(gauge, value);
    }

    fn add_to_gauge(&mut self, gauge: crate::metrics::Gauge, delta: i64) {
        ProxyWasmMetrics.add_to_gauge(gauge, delta);
    }

    fn logs(&self, level: Level) -> bool {
        ProxyWasmMetrics.logs(level)
    }

    fn log(&self, level: Level, message: std::fmt::Arguments<'_>) {
        ProxyWasmMetrics.log(level, message);
    }
}

/// A policy's steps for one request under proxy-wasm, with what they wait
/// for: their own fleet call and their call to a cluster. A single
/// filter's context and the gateway module's pipeline member both run a
/// policy's steps through it; when it goes, the steps are told the stream
/// ended.
pub struct HostedSteps {
    steps: Box<dyn PolicySteps>,
    /// The request's context id.
    id: u32,
    /// The request's fleet batch, in the gateway module.
    batch: Option<Rc<RefCell<Batch>>>,
    fleet: Option<crate::fleet::client::Ticket>,
    call: Option<u32>,
}

impl HostedSteps {
    pub fn new(steps: Box<dyn PolicySteps>, id: u32, batch: Option<Rc<RefCell<Batch>>>) -> Self {
        Self {
            steps,
            id,
            batch,
            fleet: None,
            call: None,
        }
    }

    /// Runs one step over the request's stream and keeps the fleet
    /// operations and the call it sent; the body size it left, if it
    /// replaced the body.
    pub fn run(
        &mut self,
        step: impl FnOnce(&mut dyn PolicySteps, &mut ProxyWasmStream) -> Verdict,
    ) -> (Verdict, Option<usize>) {
        let mut stream = match &self.batch {
            Some(batch) => ProxyWasmStream::in_batch(self.id, Rc::clone(batch)),
            None => ProxyWasmStream::new(self.id),
        };
        let verdict = step(self.steps.as_mut(), &mut stream);
        if let Some(ticket) = stream.fleet {
            self.fleet = Some(ticket);
        }
        if let Some(token) = stream.called {
            self.call = Some(token);
        }
        (verdict, stream.resized_to)
    }

    /// [`HostedSteps::run`]'s verdict alone.
    pub fn verdict(
        &mut self,
        step: impl FnOnce(&mut dyn PolicySteps, &mut ProxyWasmStream) -> Verdict,
    ) -> Verdict {
        self.run(step).0
    }

    /// It holds the request for its own fleet call (the body and trailers
    /// too: holding the headers alone would not hold them back).
    pub fn holds_for_fleet(&self) -> bool {
        self.fleet
            .as_ref()
            .is_some_and(crate::fleet::client::Ticket::holds_request)
    }

    /// Shows an HTTP call's answer (or a wake) to the steps it is for:
    /// their own fleet call, their call, or [`WAKE_TOKEN`](crate::wake::WAKE_TOKEN);
    /// the step's verdict, `None` when the token is none of theirs.
    pub fn call_response(&mut self, token: u32, body_size: usize) -> Option<Verdict> {
        if let Some(answer) = self
            .fleet
            .as_mut()
            .and_then(|ticket| ticket.answer(token, body_size))
        {
            self.fleet = None;
            return Some(self.verdict(|steps, stream| steps.on_fleet_answer(stream, answer)));
        }
        if self.call == Some(token) {
            self.call = None;
            let answer = ProxyWasmCallAnswer { body_size };
            return Some(self.verdict(|steps, stream| steps.on_call_answer(stream, &answer)));
        }
        if token == crate::wake::WAKE_TOKEN {
            return Some(self.verdict(|steps, stream| steps.on_wake(stream)));
        }
        None
    }

    /// Shows the request's batched fleet answer to the steps, their share
    /// of it; the step's verdict, `None` when they had nothing in it.
    pub fn show_fleet_answer(&mut self, answer: &crate::fleet::wire::Answer) -> Option<Verdict> {
        let share = self.fleet.as_ref()?.share(answer)?;
        self.fleet = None;
        Some(self.verdict(|steps, stream| steps.on_fleet_answer(stream, share)))
    }
}

impl Drop for HostedSteps {
    fn drop(&mut self) {
        self.run(|steps, stream| {
            steps.on_stream_end(stream);
            Verdict::Continue
        });
    }
}

/// A policy written against [`Stream`] as a proxy-wasm HTTP context (a
/// single `.wasm` filter's): each callback runs the policy's step inside
/// one callback scope of host reads. While the policy's own fleet call is
/// out, the request (body and trailers too) is held.
pub struct StreamContext {
    hosted: HostedSteps,
}

impl StreamContext {
    pub fn new(steps: Box<dyn PolicySteps>, id: u32) -> Self {
        Self {
            hosted: HostedSteps::new(steps, id, None),
        }
    }

    /// Runs one step, inside a callback scope of reads.
    fn run(
        &mut self,
        step: impl FnOnce(&mut dyn PolicySteps, &mut ProxyWasmStream) -> Verdict,
    ) -> Verdict {
        let _reads = host::callback_scope();
        self.hosted.verdict(step)
    }
}

impl proxy_wasm::traits::Context for StreamContext {
    fn on_http_call_response(&mut self, token: u32, _: usize, body_size: usize, _: usize) {
        let _reads = host::callback_scope();
        if self.hosted.call_response(token, body_size) == Some(Verdict::Continue) {
            let _ = hostcalls::resume_http_request();
        }
    }
}

impl HttpContext for StreamContext {
    fn on_http_request_headers(
        &mut self,
        _: usize,
        end_of_stream: bool,
    ) -> proxy_wasm::types::Action {
        action(self.run(|steps, stream| steps.on_request_headers(stream, end_of_stream)))
    }

    fn on_http_request_body(
        &mut self,
        body_size: usize,
        end_of_stream: bool,
    ) -> proxy_wasm::types::Action {
        if self.hosted.holds_for_fleet() {
            return proxy_wasm::types::Action::Pause;
        }
        action(self.run(|steps, stream| steps.on_request_body(stream, body_size, end_of_stream)))
    }

    fn on_http_request_trailers(&mut self, _: usize) -> proxy_wasm::types::Action {
        if self.hosted.holds_for_fleet() {
            return proxy_wasm::types::Action::Pause;
        }
        action(self.run(|steps, stream| steps.on_request_trailers(stream)))
    }

    fn on_http_response_headers(
        &mut self,
        _: usize,
        end_of_stream: bool,
    ) -> proxy_wasm::types::Action {
        action(self.run(|steps, stream| steps.on_response_headers(stream, end_of_stream)))
    }

    fn on_log(&mut self) {
        self.run(|steps, stream| {
            steps.on_log(stream);
            Verdict::Continue
        });
    }
}

/// What Envoy is told of a [`Verdict`].
pub fn action(verdict: Verdict) -> proxy_wasm::types::Action {
    match verdict {
        Verdict::Continue => proxy_wasm::types::Action::Continue,
        Verdict::Pause | Verdict::Answered => proxy_wasm::types::Action::Pause,
    }
}

/// Header writes of [`ProxyWasmStream`]. The SDK's `HttpContext` methods
/// unwrap the host's answer (a panic aborts the VM); these ignore a refused
/// write. Inside a [`CallbackScope`](crate::host::CallbackScope) reads come
/// from one snapshot of the map, which writes update.
///
/// Sets (`Some`) or removes (`None`) a request header.
fn set_request_header(name: &str, value: Option<&str>) {
    // Stripping headers a client did not send is the common case: no call.
    if value.is_none() && host::known_absent(MapType::HttpRequestHeaders, name) {
        return;
    }
    host::note_header_write(MapType::HttpRequestHeaders, name, value);
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
}

/// A response header; a failure reads as "absent", a value that is not
/// UTF-8 is decoded lossily.
fn response_header(name: &str) -> Option<String> {
    host::header_value(MapType::HttpResponseHeaders, name)
}

/// Sets (`Some`) or removes (`None`) a response header.
fn set_response_header(name: &str, value: Option<&str>) {
    if value.is_none() && host::known_absent(MapType::HttpResponseHeaders, name) {
        return;
    }
    host::note_header_write(MapType::HttpResponseHeaders, name, value);
    let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_root_wins_over_filter_roots_declared_before_or_after_it() {
        let mut ranked = Ranked::NONE;
        assert_eq!(ranked.best(), None);
        ranked.offer(RootRank::Filter, "ip_acl");
        assert_eq!(ranked.best(), Some("ip_acl"));
        ranked.offer(RootRank::Module, "gateway");
        ranked.offer(RootRank::Filter, "sign_auth");
        ranked.offer(RootRank::Module, "a second module");
        assert_eq!(ranked.best(), Some("gateway"));
    }
}
