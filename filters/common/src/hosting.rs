//! Hosting a policy, whatever the host: what a host provides (a request's
//! primitives, [`RequestHost`]; its own work outside requests,
//! [`RootHost`]), how a policy is loaded from its configuration section
//! ([`Filter`], [`LoadedPolicy`]), and how its steps run for one request
//! ([`HostedSteps`]), with the request's fleet batch, held replies and calls
//! kept here once for every host.
//!
//! Three hosts implement these traits: the proxy-wasm host of a single
//! `.wasm` filter and of the gateway module (`adapter`), and the native
//! module's host over Envoy's dynamic-module ABI (`filters/native-host`).

use crate::config::ConfigError;
use crate::fleet::client::{self as fleet_client, Batch, Ticket};
use crate::fleet::wire::{Answer, Failure, Op};
use crate::fleet::Store;
use crate::host::{Host, RequestLine};
use crate::metrics::{Counter, DefineMetrics, Gauge};
use crate::store::SharedStore;
use crate::stream::{
    CallAnswer, CallNotMade, FleetCall, HttpCall, Level, LocalReply, PolicySteps, Stream,
    Telemetry, Verdict,
};
use crate::sync::lock;
use std::any::Any;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

/// Sends an HTTP call to an Envoy cluster; the host hands the answer back
/// with the token it returns.
pub trait Caller {
    fn dispatch_call(&mut self, call: HttpCall<'_>) -> Result<u32, CallNotMade>;

    /// Sends a command (RESP) to a Redis server on the host's own
    /// connection (in a Redis Cluster, the primary serving the keys' hash
    /// `slot`); the answer comes back as a call's, with the token: its
    /// body the reply, no status when none came within `timeout`. Only the
    /// native module has connections of its own.
    fn dispatch_redis(
        &mut self,
        _redis: &crate::fleet::RedisTarget,
        _slot: u16,
        _command: Vec<u8>,
        _timeout: Duration,
    ) -> Result<u32, CallNotMade> {
        Err(CallNotMade)
    }

    /// Produces `records` to a Kafka topic on the host's own producer; the
    /// answer comes back as a call's, with the token: status 200 once every
    /// record is acknowledged, none when the batch failed (after the
    /// producer's retries, within the target's delivery timeout). Only the
    /// native module has connections of its own.
    fn dispatch_kafka(
        &mut self,
        _kafka: &crate::kafka::KafkaTarget,
        _records: Vec<crate::kafka::KafkaRecord>,
    ) -> Result<u32, CallNotMade> {
        Err(CallNotMade)
    }
}

/// A host's primitives for one request, from which [`HostedSteps`] makes
/// the [`Stream`] a policy's step is handed. Writes are seen by later reads.
pub trait RequestHost: Host + Telemetry + Caller {
    /// The names of the request headers, in order, pseudo-headers included.
    fn request_header_names(&self) -> Vec<String>;
    /// Sets (`Some`) or removes (`None`) a request header.
    fn set_request_header(&mut self, name: &str, value: Option<&str>);
    /// The first value of a response header (`name` in lower case).
    fn response_header(&self, name: &str) -> Option<String>;
    /// Sets (`Some`) or removes (`None`) a response header.
    fn set_response_header(&mut self, name: &str, value: Option<&str>);
    /// The response headers, in order, `:status` included.
    fn response_headers(&self) -> Vec<(String, String)>;
    /// The first `size` bytes of the response body the host holds.
    fn response_body(&self, size: usize) -> Vec<u8>;
    /// Replaces the first `old_size` bytes of the response body with `body`.
    fn replace_response_body(&mut self, old_size: usize, body: &[u8]);
    /// Answers the request from the gateway.
    fn send_local_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]);
    /// The first `size` bytes of the request body the host holds.
    fn request_body(&self, size: usize) -> Vec<u8>;
    /// Replaces the first `old_size` bytes of the request body with `body`.
    fn replace_request_body(&mut self, old_size: usize, body: &[u8]);
    /// The state this Envoy's workers share.
    fn shared_data(&self) -> &dyn SharedStore;
    /// Drops the route Envoy chose for the request.
    fn clear_route_cache(&mut self);
    /// This request's id among the worker's requests.
    fn stream_id(&self) -> u32;
    /// Wakes another request of the worker once this callback is over.
    fn wake(&mut self, stream_id: u32);
}

/// The host outside a request: where a policy defines its metrics when its
/// configuration loads, and does its background work (a timer's work, the
/// answers to the calls it made from there).
pub trait RootHost: Telemetry + DefineMetrics + Caller {
    /// The state this Envoy's workers share (the process's, for as long
    /// as it runs).
    fn shared_data(&self) -> &'static dyn SharedStore;
    fn now(&self) -> SystemTime;
    /// The host's id of the configuration being loaded, where the roots of
    /// one configuration share state (see [`shared_by_roots`]); `None`
    /// where each root is alone.
    fn configuration_id(&self) -> Option<u64>;
}

/// The host clock of a [`RootHost`] in milliseconds since the Unix epoch.
pub fn root_now_ms(host: &dyn RootHost) -> u64 {
    crate::host::epoch_ms(host.now())
}

/// State every root of one configuration shares, made by `make` for the
/// first and handed to the others.
///
/// Envoy's Wasm host runs a VM per worker, each with its own root, and
/// nothing is shared: every root gets a value of its own. The native
/// module runs every worker's root in one process, and only the main
/// thread's root has a timer and calls out, so what the workers' requests
/// leave for their root to send (log records, breaker outcomes) must be
/// the main root's: there, every root of one configuration gets the same
/// value. `make` must not call this function.
pub fn shared_by_roots<T: Send + Sync + 'static>(
    host: &dyn RootHost,
    name: &'static str,
    make: impl FnOnce() -> T,
) -> Arc<T> {
    type Entry = (u64, &'static str, Weak<dyn Any + Send + Sync>);
    static SHARED: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
    let Some(configuration) = host.configuration_id() else {
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

/// Compiles a configuration. On error, logs
/// `<filter>: invalid configuration: <path>: <reason>` and returns `None`,
/// so the host refuses the configuration.
pub fn compile_or_log<C>(
    host: &dyn Telemetry,
    filter: &str,
    bytes: &[u8],
    compile: impl FnOnce(&[u8]) -> Result<C, ConfigError>,
) -> Option<C> {
    match compile(bytes) {
        Ok(config) => Some(config),
        Err(err) => {
            host.log(
                Level::Error,
                format_args!("{filter}: invalid configuration: {err}"),
            );
            None
        }
    }
}

/// What a policy tells the host about itself.
pub trait Filter: 'static {
    /// Names the filter in logs and metrics (`ip_acl`).
    const NAME: &'static str;
    /// The compiled, immutable configuration.
    type Policy: 'static;
    /// The counters, defined once per root.
    type Metrics: Copy + 'static;

    fn compile(bytes: &[u8]) -> Result<Self::Policy, ConfigError>;

    /// Work with the host once the policy is compiled (e.g. creating shared
    /// data); an error refuses the configuration.
    fn prepare(_policy: &Self::Policy, _host: &mut dyn RootHost) -> Result<(), String> {
        Ok(())
    }

    fn define_metrics(metrics: &mut dyn DefineMetrics) -> Self::Metrics;

    /// The policy sends checks to the fleet store.
    fn uses_fleet(_policy: &Self::Policy) -> bool {
        false
    }

    /// The policy's part in one request, written against [`Stream`].
    fn steps(policy: &Rc<Self::Policy>, metrics: Self::Metrics) -> Box<dyn PolicySteps>;

    /// The policy's requests may be woken by other requests.
    fn wakes(_policy: &Self::Policy) -> bool {
        false
    }

    /// How often the root calls [`Filter::on_tick`].
    fn tick_period(_policy: &Self::Policy) -> Option<Duration> {
        None
    }

    /// Background work of the root.
    fn on_tick(_policy: &Self::Policy, _metrics: Self::Metrics, _host: &mut dyn RootHost) {}

    /// A call the root made answered; returns whether it was the policy's.
    fn on_call_answer(
        _policy: &Self::Policy,
        _metrics: Self::Metrics,
        _token: u32,
        _answer: &dyn CallAnswer,
        _host: &mut dyn RootHost,
    ) -> bool {
        false
    }
}

/// A policy whose configuration is loaded, as a root holds it: it makes
/// each request's steps and may take part in the root's timer, call
/// answers and shutdown. A single filter's root holds one; the gateway
/// module's root holds one per enabled policy, in order.
pub trait LoadedPolicy {
    /// The policy's part in one request.
    fn steps(&self) -> Box<dyn PolicySteps>;

    /// Its requests may be woken by other requests.
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

    fn on_tick(&mut self, _host: &mut dyn RootHost) {}

    /// A call the root made answered; returns whether it was this policy's.
    fn on_call_answer(
        &mut self,
        _token: u32,
        _answer: &dyn CallAnswer,
        _host: &mut dyn RootHost,
    ) -> bool {
        false
    }

    /// The host is removing the configuration; returns whether the policy
    /// is done at once (else it finishes later and becomes
    /// [`idle`](Self::idle)).
    fn on_done(&mut self, _host: &mut dyn RootHost) -> bool {
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
    pub fn load(
        bytes: &[u8],
        host: &mut dyn RootHost,
        metrics: impl FnOnce(&mut dyn RootHost) -> F::Metrics,
    ) -> Option<Self> {
        let policy = compile_or_log(host, F::NAME, bytes, F::compile)?;
        if let Err(reason) = F::prepare(&policy, host) {
            host.log(Level::Error, format_args!("{}: {reason}", F::NAME));
            return None;
        }
        Some(Self {
            policy: Rc::new(policy),
            metrics: metrics(host),
        })
    }

    /// Loads a section of the gateway module (metrics defined anew).
    pub fn boxed(bytes: &[u8], host: &mut dyn RootHost) -> Option<Box<dyn LoadedPolicy>> {
        let loaded = Self::load(bytes, host, |host| F::define_metrics(host))?;
        Some(Box::new(loaded))
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

    fn on_tick(&mut self, host: &mut dyn RootHost) {
        F::on_tick(&self.policy, self.metrics, host);
    }

    fn on_call_answer(
        &mut self,
        token: u32,
        answer: &dyn CallAnswer,
        host: &mut dyn RootHost,
    ) -> bool {
        F::on_call_answer(&self.policy, self.metrics, token, answer, host)
    }
}

/// What the policies of one request share in the gateway module: the
/// request's fleet batch, and the reads every policy makes (the request
/// line, the route name), read once and read again after a policy changed
/// what they depend on.
#[derive(Default)]
pub struct SharedRequest {
    pub batch: RefCell<Batch>,
    line: RefCell<Option<Rc<RequestLine>>>,
    route_name: RefCell<Option<Option<Rc<str>>>>,
}

impl SharedRequest {
    fn request_line(&self, host: &dyn RequestHost) -> Rc<RequestLine> {
        Rc::clone(
            self.line
                .borrow_mut()
                .get_or_insert_with(|| host.request_line()),
        )
    }

    fn route_name(&self, host: &dyn RequestHost) -> Option<Rc<str>> {
        self.route_name
            .borrow_mut()
            .get_or_insert_with(|| host.route_name())
            .clone()
    }

    /// A request header changed: Envoy may pick another route, and the
    /// request line is read again if a pseudo-header changed.
    fn header_changed(&self, name: &str) {
        if name.starts_with(':') {
            self.line.borrow_mut().take();
        }
        self.route_name.borrow_mut().take();
    }
}

/// What a step did that its host keeps: the body size it left, the fleet
/// operations and the call it sent.
#[derive(Default)]
struct StepEffects {
    resized_to: Option<usize>,
    fleet: Option<Ticket>,
    called: Option<u32>,
}

/// The [`Stream`] a step is handed: the host's primitives, and what every
/// host does alike (the request's fleet batch, replies held for it, the
/// call a step makes).
struct HostedStream<'a> {
    host: &'a mut dyn RequestHost,
    shared: Option<&'a SharedRequest>,
    effects: StepEffects,
}

impl Host for HostedStream<'_> {
    fn request_header(&self, name: &str) -> Option<String> {
        self.host.request_header(name)
    }

    fn request_header_values(&self, name: &str) -> Vec<String> {
        self.host.request_header_values(name)
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.host.property(path)
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> bool {
        self.host.set_property(path, value)
    }

    fn now(&self) -> SystemTime {
        self.host.now()
    }

    fn request_line(&self) -> Rc<RequestLine> {
        match self.shared {
            Some(shared) => shared.request_line(&*self.host),
            None => self.host.request_line(),
        }
    }

    fn route_name(&self) -> Option<Rc<str>> {
        match self.shared {
            Some(shared) => shared.route_name(&*self.host),
            None => self.host.route_name(),
        }
    }
}

impl Telemetry for HostedStream<'_> {
    fn increment(&mut self, counter: Counter, delta: u64) {
        self.host.increment(counter, delta);
    }

    fn set_gauge(&mut self, gauge: Gauge, value: u64) {
        self.host.set_gauge(gauge, value);
    }

    fn add_to_gauge(&mut self, gauge: Gauge, delta: i64) {
        self.host.add_to_gauge(gauge, delta);
    }

    fn logs(&self, level: Level) -> bool {
        self.host.logs(level)
    }

    fn log(&self, level: Level, message: std::fmt::Arguments<'_>) {
        self.host.log(level, message);
    }
}

impl Stream for HostedStream<'_> {
    fn request_header_names(&self) -> Vec<String> {
        self.host.request_header_names()
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        self.host.set_request_header(name, value);
        if let Some(shared) = self.shared {
            shared.header_changed(name);
        }
    }

    fn response_header(&self, name: &str) -> Option<String> {
        self.host.response_header(name)
    }

    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        self.host.set_response_header(name, value);
    }

    fn response_headers(&self) -> Vec<(String, String)> {
        self.host.response_headers()
    }

    fn response_body(&self, size: usize) -> Vec<u8> {
        self.host.response_body(size)
    }

    fn replace_response_body(&mut self, old_size: usize, body: &[u8]) {
        self.host.replace_response_body(old_size, body);
        self.effects.resized_to = Some(body.len());
    }

    /// In the gateway module, a reply made while earlier policies' fleet
    /// checks are unanswered is held until they are (see
    /// [`Batch::holds_replies`]).
    fn send_local_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        if let Some(shared) = self.shared {
            let mut batch = shared.batch.borrow_mut();
            if batch.holds_replies() {
                batch.hold_reply(LocalReply::new(status, headers, body));
                return;
            }
        }
        self.host.send_local_reply(status, headers, body);
    }

    fn request_body(&self, size: usize) -> Vec<u8> {
        self.host.request_body(size)
    }

    fn replace_request_body(&mut self, old_size: usize, body: &[u8]) {
        self.host.replace_request_body(old_size, body);
        self.effects.resized_to = Some(body.len());
    }

    fn shared_data(&self) -> &dyn SharedStore {
        self.host.shared_data()
    }

    fn send_to_fleet(&mut self, store: &Arc<Store>, ops: Vec<Op>) -> Result<FleetCall, Failure> {
        let batched = self
            .shared
            .and_then(|shared| shared.batch.borrow_mut().add(store, &ops));
        let (ticket, call) = match batched {
            Some(ticket) => (ticket, FleetCall::Batched),
            None => (
                fleet_client::submit(store, ops, &mut *self.host)?,
                FleetCall::Own,
            ),
        };
        self.effects.fleet = Some(ticket);
        Ok(call)
    }

    fn clear_route_cache(&mut self) {
        self.host.clear_route_cache();
        if let Some(shared) = self.shared {
            shared.route_name.borrow_mut().take();
        }
    }

    fn dispatch_call(&mut self, call: HttpCall<'_>) -> Result<(), CallNotMade> {
        let token = self.host.dispatch_call(call)?;
        self.effects.called = Some(token);
        Ok(())
    }

    fn stream_id(&self) -> u32 {
        self.host.stream_id()
    }

    fn wake(&mut self, stream_id: u32) {
        self.host.wake(stream_id);
    }
}

/// Which way a body goes.
#[derive(Debug, Clone, Copy)]
enum Way {
    Request,
    Response,
}

impl Way {
    fn body(
        self,
        steps: &mut dyn PolicySteps,
        stream: &mut dyn Stream,
        body_size: usize,
        end_of_stream: bool,
    ) -> Verdict {
        match self {
            Way::Request => steps.on_request_body(stream, body_size, end_of_stream),
            Way::Response => steps.on_response_body(stream, body_size, end_of_stream),
        }
    }
}

/// A policy's steps for one request, with what they wait for: their own
/// fleet call and their call to a cluster. A single filter's context and
/// the gateway module's pipeline member both run a policy's steps through
/// it, over the host of the callback that runs; the host calls
/// [`HostedSteps::end`] when the stream goes.
pub struct HostedSteps {
    steps: Box<dyn PolicySteps>,
    /// What the request's policies share, in the gateway module.
    shared: Option<Rc<SharedRequest>>,
    fleet: Option<Ticket>,
    call: Option<u32>,
    /// How far the request body has come.
    request_body: BodyProgress,
    /// The same for the response body.
    response_body: BodyProgress,
    ended: bool,
}

/// How far a body has come, for the trailers that end it.
#[derive(Debug, Default)]
struct BodyProgress {
    /// The body step has seen its end.
    ended: bool,
    /// The steps hold the body so far (its size).
    held: Option<usize>,
}

impl HostedSteps {
    pub fn new(steps: Box<dyn PolicySteps>, shared: Option<Rc<SharedRequest>>) -> Self {
        Self {
            steps,
            shared,
            fleet: None,
            call: None,
            request_body: BodyProgress::default(),
            response_body: BodyProgress::default(),
            ended: false,
        }
    }

    /// The request body step; a body held before its end is remembered
    /// for [`HostedSteps::request_trailers`]. The verdict, and the body
    /// size the step left if it replaced the body.
    pub fn request_body(
        &mut self,
        host: &mut dyn RequestHost,
        body_size: usize,
        end_of_stream: bool,
    ) -> (Verdict, Option<usize>) {
        self.body(host, Way::Request, body_size, end_of_stream)
    }

    /// Trailers end the request: the body step is shown the body whole
    /// first if it never saw its end (what it holds, or no body at all when
    /// the trailers follow the headers), so a client cannot skip a body
    /// check by sending trailers; then the trailers.
    pub fn request_trailers(&mut self, host: &mut dyn RequestHost) -> Verdict {
        self.trailers(host, Way::Request)
    }

    /// The response body step, as [`HostedSteps::request_body`].
    pub fn response_body(
        &mut self,
        host: &mut dyn RequestHost,
        body_size: usize,
        end_of_stream: bool,
    ) -> (Verdict, Option<usize>) {
        self.body(host, Way::Response, body_size, end_of_stream)
    }

    /// Trailers end the response, as [`HostedSteps::request_trailers`].
    pub fn response_trailers(&mut self, host: &mut dyn RequestHost) -> Verdict {
        self.trailers(host, Way::Response)
    }

    fn body(
        &mut self,
        host: &mut dyn RequestHost,
        way: Way,
        body_size: usize,
        end_of_stream: bool,
    ) -> (Verdict, Option<usize>) {
        let (verdict, resized_to) = self.run(host, |steps, stream| {
            way.body(steps, stream, body_size, end_of_stream)
        });
        let progress = self.progress(way);
        progress.ended |= end_of_stream;
        progress.held =
            (verdict == Verdict::Pause && !end_of_stream).then(|| resized_to.unwrap_or(body_size));
        (verdict, resized_to)
    }

    fn trailers(&mut self, host: &mut dyn RequestHost, way: Way) -> Verdict {
        let progress = self.progress(way);
        if !std::mem::replace(&mut progress.ended, true) {
            let body_size = progress.held.take().unwrap_or(0);
            let verdict = self.verdict(host, |steps, stream| {
                way.body(steps, stream, body_size, true)
            });
            if verdict != Verdict::Continue {
                return verdict;
            }
        }
        self.verdict(host, |steps, stream| match way {
            Way::Request => steps.on_request_trailers(stream),
            Way::Response => steps.on_response_trailers(stream),
        })
    }

    /// How far the body has come, one way.
    fn progress(&mut self, way: Way) -> &mut BodyProgress {
        match way {
            Way::Request => &mut self.request_body,
            Way::Response => &mut self.response_body,
        }
    }

    /// Runs one step over the request's stream and keeps the fleet
    /// operations and the call it sent; the body size it left, if it
    /// replaced the body.
    pub fn run(
        &mut self,
        host: &mut dyn RequestHost,
        step: impl FnOnce(&mut dyn PolicySteps, &mut dyn Stream) -> Verdict,
    ) -> (Verdict, Option<usize>) {
        let mut stream = HostedStream {
            host,
            shared: self.shared.as_deref(),
            effects: StepEffects::default(),
        };
        let verdict = step(self.steps.as_mut(), &mut stream);
        let effects = stream.effects;
        if let Some(ticket) = effects.fleet {
            self.fleet = Some(ticket);
        }
        if let Some(token) = effects.called {
            self.call = Some(token);
        }
        (verdict, effects.resized_to)
    }

    /// [`HostedSteps::run`]'s verdict alone.
    pub fn verdict(
        &mut self,
        host: &mut dyn RequestHost,
        step: impl FnOnce(&mut dyn PolicySteps, &mut dyn Stream) -> Verdict,
    ) -> Verdict {
        self.run(host, step).0
    }

    /// It holds the request for its own fleet call (the body and trailers
    /// too: holding the headers alone would not hold them back).
    pub fn holds_for_fleet(&self) -> bool {
        self.fleet.as_ref().is_some_and(Ticket::holds_request)
    }

    /// Shows a call's answer to the steps it is for: their own fleet call
    /// or their call; the step's verdict, `None` when the token is none of
    /// theirs.
    pub fn call_answer(
        &mut self,
        host: &mut dyn RequestHost,
        token: u32,
        answer: &dyn CallAnswer,
    ) -> Option<Verdict> {
        if let Some(fleet_answer) = self
            .fleet
            .as_mut()
            .and_then(|ticket| ticket.answer(token, answer, &mut *host))
        {
            self.fleet = None;
            return Some(self.verdict(host, |steps, stream| {
                steps.on_fleet_answer(stream, fleet_answer)
            }));
        }
        if self.call == Some(token) {
            self.call = None;
            return Some(self.verdict(host, |steps, stream| steps.on_call_answer(stream, answer)));
        }
        None
    }

    /// Another request woke this one.
    pub fn wake(&mut self, host: &mut dyn RequestHost) -> Verdict {
        self.verdict(host, |steps, stream| steps.on_wake(stream))
    }

    /// Shows the request's batched fleet answer to the steps, their share
    /// of it; the step's verdict, `None` when they had nothing in it.
    pub fn show_fleet_answer(
        &mut self,
        host: &mut dyn RequestHost,
        answer: &Answer,
    ) -> Option<Verdict> {
        let share = self.fleet.as_ref()?.share(answer)?;
        self.fleet = None;
        Some(self.verdict(host, |steps, stream| steps.on_fleet_answer(stream, share)))
    }

    /// The stream is going away: the steps let go of what they hold for
    /// other requests (once).
    pub fn end(&mut self, host: &mut dyn RequestHost) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        self.run(host, |steps, stream| {
            steps.on_stream_end(stream);
            Verdict::Continue
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use std::cell::Cell;

    /// A request's primitives over a header list, counting the reads.
    #[derive(Default)]
    struct CountingHost {
        headers: Vec<(String, String)>,
        header_reads: Cell<usize>,
        route_reads: Cell<usize>,
        shared: MemoryStore,
    }

    impl Host for CountingHost {
        fn request_header(&self, name: &str) -> Option<String> {
            self.header_reads.set(self.header_reads.get() + 1);
            self.headers
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        }
        fn request_header_values(&self, name: &str) -> Vec<String> {
            self.request_header(name).into_iter().collect()
        }
        fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
            self.route_reads.set(self.route_reads.get() + 1);
            (path == ["xds", "route_name"]).then(|| b"orders".to_vec())
        }
        fn set_property(&self, _: &[&str], _: &[u8]) -> bool {
            true
        }
        fn now(&self) -> SystemTime {
            SystemTime::UNIX_EPOCH
        }
    }

    impl Telemetry for CountingHost {
        fn increment(&mut self, _: Counter, _: u64) {}
        fn set_gauge(&mut self, _: Gauge, _: u64) {}
        fn add_to_gauge(&mut self, _: Gauge, _: i64) {}
        fn logs(&self, _: Level) -> bool {
            false
        }
        fn log(&self, _: Level, _: std::fmt::Arguments<'_>) {}
    }

    impl Caller for CountingHost {
        fn dispatch_call(&mut self, _: HttpCall<'_>) -> Result<u32, CallNotMade> {
            Err(CallNotMade)
        }
    }

    impl RequestHost for CountingHost {
        fn request_header_names(&self) -> Vec<String> {
            self.headers.iter().map(|(name, _)| name.clone()).collect()
        }
        fn set_request_header(&mut self, name: &str, value: Option<&str>) {
            self.headers.retain(|(key, _)| key != name);
            if let Some(value) = value {
                self.headers.push((name.to_string(), value.to_string()));
            }
        }
        fn response_header(&self, _: &str) -> Option<String> {
            None
        }
        fn set_response_header(&mut self, _: &str, _: Option<&str>) {}
        fn response_headers(&self) -> Vec<(String, String)> {
            Vec::new()
        }
        fn response_body(&self, _: usize) -> Vec<u8> {
            Vec::new()
        }
        fn replace_response_body(&mut self, _: usize, _: &[u8]) {}
        fn send_local_reply(&mut self, _: u32, _: &[(&str, &str)], _: &[u8]) {}
        fn request_body(&self, _: usize) -> Vec<u8> {
            Vec::new()
        }
        fn replace_request_body(&mut self, _: usize, _: &[u8]) {}
        fn shared_data(&self) -> &dyn SharedStore {
            &self.shared
        }
        fn clear_route_cache(&mut self) {}
        fn stream_id(&self) -> u32 {
            1
        }
        fn wake(&mut self, _: u32) {}
    }

    /// A step that reads the request line and the route name, and may
    /// rewrite the path.
    struct Reader {
        seen: Rc<RefCell<Vec<String>>>,
        rewrite: Option<&'static str>,
    }

    impl PolicySteps for Reader {
        fn on_request_headers(&mut self, stream: &mut dyn Stream, _: bool) -> Verdict {
            let line = stream.request_line();
            let route = stream
                .route_name()
                .map(|r| r.to_string())
                .unwrap_or_default();
            self.seen
                .borrow_mut()
                .push(format!("{} {}", line.path, route));
            if let Some(path) = self.rewrite {
                stream.set_request_header(":path", Some(path));
            }
            Verdict::Continue
        }
    }

    fn host() -> CountingHost {
        CountingHost {
            headers: [
                (":authority", "shop"),
                (":method", "GET"),
                (":path", "/orders/1"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..CountingHost::default()
        }
    }

    #[test]
    fn the_policies_of_a_request_share_its_line_and_route_until_one_changes_them() {
        let mut host = host();
        let shared = Rc::new(SharedRequest::default());
        let seen = Rc::new(RefCell::new(Vec::new()));
        let mut members: Vec<HostedSteps> = [None, Some("/v2/orders/1"), None]
            .into_iter()
            .map(|rewrite| {
                let steps = Box::new(Reader {
                    seen: Rc::clone(&seen),
                    rewrite,
                });
                HostedSteps::new(steps, Some(Rc::clone(&shared)))
            })
            .collect();
        for member in &mut members {
            member.verdict(&mut host, |steps, stream| {
                steps.on_request_headers(stream, false)
            });
        }
        assert_eq!(
            *seen.borrow(),
            [
                "/orders/1 orders",
                "/orders/1 orders",
                "/v2/orders/1 orders"
            ]
        );
        // The line was read once before the rewrite and once after it; the
        // route once before and once after the header change.
        assert_eq!(host.header_reads.get(), 6);
        assert_eq!(host.route_reads.get(), 2);
    }

    /// A step that waits for the whole body, then refuses it.
    struct WholeBody {
        seen: Rc<RefCell<Vec<String>>>,
    }

    impl PolicySteps for WholeBody {
        fn on_request_body(&mut self, _: &mut dyn Stream, size: usize, end: bool) -> Verdict {
            self.seen
                .borrow_mut()
                .push(format!("body {size} end={end}"));
            if end {
                Verdict::Answered
            } else {
                Verdict::Pause
            }
        }

        fn on_request_trailers(&mut self, _: &mut dyn Stream) -> Verdict {
            self.seen.borrow_mut().push("trailers".into());
            Verdict::Continue
        }
    }

    #[test]
    fn trailers_end_a_held_body_so_its_check_is_never_skipped() {
        let mut host = host();
        let seen = Rc::new(RefCell::new(Vec::new()));
        let steps = Box::new(WholeBody {
            seen: Rc::clone(&seen),
        });
        let mut hosted = HostedSteps::new(steps, None);
        assert_eq!(hosted.request_body(&mut host, 5, false).0, Verdict::Pause);
        assert_eq!(hosted.request_body(&mut host, 9, false).0, Verdict::Pause);
        assert_eq!(hosted.request_trailers(&mut host), Verdict::Answered);
        assert_eq!(
            *seen.borrow(),
            ["body 5 end=false", "body 9 end=false", "body 9 end=true"]
        );
        // A body that ended is not shown again.
        let seen = Rc::new(RefCell::new(Vec::new()));
        let steps = Box::new(WholeBody {
            seen: Rc::clone(&seen),
        });
        let mut hosted = HostedSteps::new(steps, None);
        hosted.request_body(&mut host, 4, true);
        assert_eq!(hosted.request_trailers(&mut host), Verdict::Continue);
        assert_eq!(*seen.borrow(), ["body 4 end=true", "trailers"]);
        // Trailers right after the headers: the body step still sees the
        // end, of no body, so a check waiting for it runs (and refuses).
        let seen = Rc::new(RefCell::new(Vec::new()));
        let steps = Box::new(WholeBody {
            seen: Rc::clone(&seen),
        });
        let mut hosted = HostedSteps::new(steps, None);
        assert_eq!(hosted.request_trailers(&mut host), Verdict::Answered);
        assert_eq!(*seen.borrow(), ["body 0 end=true"]);
    }

    /// A step that holds the response body to its end, then rewrites it.
    struct WholeResponse {
        seen: Rc<RefCell<Vec<String>>>,
    }

    impl PolicySteps for WholeResponse {
        fn on_response_body(&mut self, stream: &mut dyn Stream, size: usize, end: bool) -> Verdict {
            self.seen
                .borrow_mut()
                .push(format!("response body {size} end={end}"));
            if !end {
                return Verdict::Pause;
            }
            stream.replace_response_body(size, b"new");
            Verdict::Continue
        }

        fn on_response_trailers(&mut self, _: &mut dyn Stream) -> Verdict {
            self.seen.borrow_mut().push("response trailers".into());
            Verdict::Continue
        }
    }

    #[test]
    fn response_trailers_end_a_held_response_body_and_a_rewrite_reports_its_size() {
        let mut host = host();
        let seen = Rc::new(RefCell::new(Vec::new()));
        let steps = Box::new(WholeResponse {
            seen: Rc::clone(&seen),
        });
        let mut hosted = HostedSteps::new(steps, None);
        assert_eq!(
            hosted.response_body(&mut host, 5, false),
            (Verdict::Pause, None)
        );
        assert_eq!(hosted.response_trailers(&mut host), Verdict::Continue);
        assert_eq!(
            *seen.borrow(),
            [
                "response body 5 end=false",
                "response body 5 end=true",
                "response trailers"
            ]
        );
        let mut hosted = HostedSteps::new(
            Box::new(WholeResponse {
                seen: Rc::new(RefCell::new(Vec::new())),
            }),
            None,
        );
        assert_eq!(
            hosted.response_body(&mut host, 8, true),
            (Verdict::Continue, Some(3))
        );
    }

    #[test]
    fn a_policy_on_its_own_reads_through_to_the_host() {
        let mut host = host();
        let seen = Rc::new(RefCell::new(Vec::new()));
        for _ in 0..2 {
            let steps = Box::new(Reader {
                seen: Rc::clone(&seen),
                rewrite: None,
            });
            HostedSteps::new(steps, None).verdict(&mut host, |steps, stream| {
                steps.on_request_headers(stream, false)
            });
        }
        assert_eq!(host.header_reads.get(), 6);
        assert_eq!(host.route_reads.get(), 2);
    }
}
