//! The proxy-wasm host: [`ProxyWasmRequest`] (a request's primitives,
//! from which [`HostedSteps`] makes the stream a policy's steps see),
//! [`ProxyWasmRoot`] (a root context's), [`StreamContext`] (a policy's
//! steps as a single filter's HTTP context), [`PolicyRoot`] (a single
//! filter's root context, which loads the plugin configuration in
//! `on_configure` and hands the policy's steps to each request), and
//! [`wasm_module!`](crate::wasm_module), a `.wasm` module's entry point.
//!
//! The gateway module runs every policy in one VM over the same pieces.

use crate::host::{self, Host};
pub use crate::hosting::{
    compile_or_log, shared_by_roots, Caller, Filter, HostedSteps, Loaded, LoadedPolicy,
    RequestHost, RootHost,
};
use crate::metrics::ProxyWasmMetrics;
use crate::stream::{CallNotMade, HttpCall, Level, PolicySteps, Stream, Telemetry, Verdict};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::HttpContext;
use proxy_wasm::types::{BufferType, MapType};

/// The plugin configuration Envoy handed over (empty when there is none).
pub fn plugin_configuration() -> Vec<u8> {
    hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// The proxy-wasm host outside a request: a root context's metrics, logs,
/// shared data, clock and calls (the host's metrics and logs are
/// [`ProxyWasmMetrics`]'s).
pub use crate::metrics::ProxyWasmMetrics as ProxyWasmRoot;

impl Caller for ProxyWasmRoot {
    fn dispatch_call(&mut self, call: HttpCall<'_>) -> Result<u32, CallNotMade> {
        hostcalls::dispatch_http_call(call.cluster, call.headers, call.body, vec![], call.timeout)
            .map_err(|_| CallNotMade)
    }
}

impl RootHost for ProxyWasmRoot {
    fn shared_data(&self) -> &'static dyn crate::store::SharedStore {
        &crate::store::ProxyWasmStore
    }

    fn now(&self) -> std::time::SystemTime {
        host::ProxyWasmHost.now()
    }

    /// Each Wasm VM is apart: every root has its own state.
    fn configuration_id(&self) -> Option<u64> {
        None
    }
}

/// Loads a policy from its configuration section (for [`PolicyRoot`]).
pub type LoadPolicy = fn(&[u8], &mut dyn RootHost) -> Option<Box<dyn LoadedPolicy>>;

/// The root context of a single policy's `.wasm` filter: loads the plugin
/// configuration in `on_configure` (refusing it with a logged reason),
/// hands each request the policy's steps, and gives the policy the root's
/// timer, call answers and shutdown.
pub struct PolicyRoot {
    load: LoadPolicy,
    loaded: Option<Box<dyn LoadedPolicy>>,
    shutting_down: bool,
}

impl PolicyRoot {
    pub fn new(load: LoadPolicy) -> Self {
        Self {
            load,
            loaded: None,
            shutting_down: false,
        }
    }
}

impl proxy_wasm::traits::Context for PolicyRoot {
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
        let Some(loaded) = &mut self.loaded else {
            return;
        };
        let answer = ProxyWasmCallAnswer { body_size };
        if loaded.on_call_answer(token, &answer, &mut ProxyWasmRoot)
            && self.shutting_down
            && loaded.idle()
        {
            self.done();
        }
    }

    fn on_done(&mut self) -> bool {
        self.shutting_down = true;
        self.loaded
            .as_mut()
            .is_none_or(|loaded| loaded.on_done(&mut ProxyWasmRoot))
    }
}

impl proxy_wasm::traits::RootContext for PolicyRoot {
    fn on_configure(&mut self, _config_size: usize) -> bool {
        let Some(loaded) = (self.load)(&plugin_configuration(), &mut ProxyWasmRoot) else {
            return false;
        };
        if let Some(period) = loaded.tick_period() {
            self.set_tick_period(period);
        }
        if loaded.wakes() {
            crate::wake::open_wake_queue();
        }
        self.loaded = Some(loaded);
        true
    }

    fn on_tick(&mut self) {
        if let Some(loaded) = &mut self.loaded {
            loaded.on_tick(&mut ProxyWasmRoot);
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

/// A `.wasm` module's entry point: the proxy-wasm SDK's, starting `root`
/// (Envoy's Wasm host calls `_initialize` once per VM).
#[macro_export]
macro_rules! wasm_module {
    ($root:expr) => {
        #[cfg(target_arch = "wasm32")]
        ::proxy_wasm::main! {{
            ::proxy_wasm::set_log_level(::proxy_wasm::types::LogLevel::Info);
            ::proxy_wasm::set_root_context(|_| ::std::boxed::Box::new($root));
        }}
    };
}

/// The proxy-wasm host of one request: the [`RequestHost`] every policy
/// step runs over in a `.wasm` filter and in the gateway module. Reads are
/// [`host::ProxyWasmHost`]'s (one snapshot per callback scope).
#[derive(Debug, Clone, Copy)]
pub struct ProxyWasmRequest {
    /// The request's context id.
    id: u32,
}

impl ProxyWasmRequest {
    /// The host of the request with context id `id`.
    pub fn new(id: u32) -> Self {
        Self { id }
    }
}

/// The answer to the call being reported (`on_http_call_response`).
pub struct ProxyWasmCallAnswer {
    pub body_size: usize,
}

impl crate::stream::CallAnswer for ProxyWasmCallAnswer {
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

impl host::Host for ProxyWasmRequest {
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

impl Caller for ProxyWasmRequest {
    /// Through [`crate::wake`], so a woken request's answer finds its way back.
    fn dispatch_call(&mut self, call: HttpCall<'_>) -> Result<u32, CallNotMade> {
        crate::wake::dispatch_http_call(call.cluster, call.headers, call.body, call.timeout)
            .map_err(|_| CallNotMade)
    }
}

impl RequestHost for ProxyWasmRequest {
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

    fn response_headers(&self) -> Vec<(String, String)> {
        host::ProxyWasmHost
            .response_headers()
            .iter()
            .map(|(name, value)| {
                (
                    crate::header_map::text(name),
                    crate::header_map::text(value),
                )
            })
            .collect()
    }

    fn response_body(&self, size: usize) -> Vec<u8> {
        hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    fn replace_response_body(&mut self, old_size: usize, body: &[u8]) {
        let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, old_size, body);
    }

    fn send_local_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
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
    }

    fn shared_data(&self) -> &dyn crate::store::SharedStore {
        &crate::store::ProxyWasmStore
    }

    fn clear_route_cache(&mut self) {
        // Envoy 1.40 already re-routes after a Wasm header change; saying so
        // explicitly keeps that true where it does not.
        let _ = hostcalls::call_foreign_function("clear_route_cache", None);
    }

    fn stream_id(&self) -> u32 {
        self.id
    }

    fn wake(&mut self, stream_id: u32) {
        crate::wake::wake_later(stream_id);
    }
}

/// The host's own metrics and logs.
impl Telemetry for ProxyWasmRequest {
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

/// A policy written against [`Stream`] as a proxy-wasm HTTP context (a
/// single `.wasm` filter's): each callback runs the policy's step inside
/// one callback scope of host reads. While the policy's own fleet call is
/// out, the request (body and trailers too) is held.
pub struct StreamContext {
    hosted: HostedSteps,
    host: ProxyWasmRequest,
}

impl StreamContext {
    pub fn new(steps: Box<dyn PolicySteps>, id: u32) -> Self {
        Self {
            hosted: HostedSteps::new(steps, None),
            host: ProxyWasmRequest::new(id),
        }
    }

    /// Runs one step, inside a callback scope of reads.
    fn run(
        &mut self,
        step: impl FnOnce(&mut dyn PolicySteps, &mut dyn Stream) -> Verdict,
    ) -> Verdict {
        let _reads = host::callback_scope();
        self.hosted.verdict(&mut self.host, step)
    }
}

impl Drop for StreamContext {
    fn drop(&mut self) {
        self.hosted.end(&mut self.host);
    }
}

impl proxy_wasm::traits::Context for StreamContext {
    fn on_http_call_response(&mut self, token: u32, _: usize, body_size: usize, _: usize) {
        let _reads = host::callback_scope();
        let verdict = if token == crate::wake::WAKE_TOKEN {
            Some(self.hosted.wake(&mut self.host))
        } else {
            let answer = ProxyWasmCallAnswer { body_size };
            self.hosted.call_answer(&mut self.host, token, &answer)
        };
        if verdict == Some(Verdict::Continue) {
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
        let _reads = host::callback_scope();
        let (verdict, _) = self
            .hosted
            .request_body(&mut self.host, body_size, end_of_stream);
        action(verdict)
    }

    fn on_http_request_trailers(&mut self, _: usize) -> proxy_wasm::types::Action {
        if self.hosted.holds_for_fleet() {
            return proxy_wasm::types::Action::Pause;
        }
        let _reads = host::callback_scope();
        action(self.hosted.request_trailers(&mut self.host))
    }

    fn on_http_response_headers(
        &mut self,
        _: usize,
        end_of_stream: bool,
    ) -> proxy_wasm::types::Action {
        action(self.run(|steps, stream| steps.on_response_headers(stream, end_of_stream)))
    }

    fn on_http_response_body(
        &mut self,
        body_size: usize,
        end_of_stream: bool,
    ) -> proxy_wasm::types::Action {
        let _reads = host::callback_scope();
        let (verdict, _) = self
            .hosted
            .response_body(&mut self.host, body_size, end_of_stream);
        action(verdict)
    }

    fn on_http_response_trailers(&mut self, _: usize) -> proxy_wasm::types::Action {
        let _reads = host::callback_scope();
        action(self.hosted.response_trailers(&mut self.host))
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

/// Header writes of [`ProxyWasmRequest`]. The SDK's `HttpContext` methods
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
