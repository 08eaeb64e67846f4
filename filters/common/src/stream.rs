//! The seam between a policy and the host it runs in: one request's stream,
//! with what a policy reads ([`Host`]) and the effects it has on the stream
//! (headers, a local reply in the shared error shape, the request and
//! response bodies, logs), behind one trait.
//!
//! A policy's step is written once against `&mut dyn Stream` and returns
//! what happens next as a value ([`Verdict`]), with whatever it counted; the
//! proxy-wasm adapter hands it the proxy-wasm stream, native tests a
//! [`FakeStream`] that records every effect, so the step's whole behaviour,
//! effects included, is tested without Envoy.

use crate::error::{render, GatewayError};
use crate::fleet::wire::{Answer, Failure, Op};
use crate::fleet::Store;
use crate::host::{FakeHost, Host};
use crate::metrics::{metric_name, Counter, DefineMetrics, DenialCounters, Gauge};
use crate::store::{MemoryStore, SharedStore};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What a policy made of one callback: what the host does with the stream
/// next (the gateway module's pipeline reads it to run the policies after).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Done with this callback; the next policy, then the upstream, go on.
    Continue,
    /// Hold the stream (for the request headers: until the body is read;
    /// for a body: until more of it has arrived; or until an answer the
    /// policy waits for).
    Pause,
    /// The policy answered the request itself ([`Stream::send_local_reply`]);
    /// nothing after it runs and the upstream is not called.
    Answered,
}

/// How the host sends a policy's operations to the fleet store
/// ([`Stream::send_to_fleet`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetCall {
    /// As the policy's own call: it holds the request ([`Verdict::Pause`])
    /// until the answer reaches [`PolicySteps::on_fleet_answer`].
    Own,
    /// In the request's one call with the other policies' operations (the
    /// gateway module): the request goes on to the next policies and the
    /// module holds it before the upstream; the answer may still refuse it.
    Batched,
}

/// An HTTP call to an Envoy cluster a policy makes (ext-auth's authorizer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall<'a> {
    pub cluster: &'a str,
    /// Pseudo-headers (`:method`, `:path`, `:authority`) first.
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: Option<&'a [u8]>,
    pub timeout: Duration,
}

/// The call could not be made (an unknown cluster…); no answer will come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallNotMade;

/// The answer to a policy's call, read on demand: what the policy does not
/// ask for is never copied.
pub trait CallAnswer {
    /// `None`: no answer came (the timeout passed, the connection failed).
    fn status(&self) -> Option<u32> {
        self.header(":status")?.trim().parse().ok()
    }
    fn header(&self, name: &str) -> Option<String>;
    fn body_size(&self) -> usize;
    fn body(&self) -> Vec<u8>;
    /// The call was never sent (the native module's Redis connection was
    /// not up): it did not run, where a call with no answer may have.
    fn not_sent(&self) -> bool {
        false
    }
}

impl FleetCall {
    /// What the step that sent the operations answers meanwhile: its own
    /// call holds the request, a batched one lets it go on.
    pub fn verdict(self) -> Verdict {
        match self {
            FleetCall::Own => Verdict::Pause,
            FleetCall::Batched => Verdict::Continue,
        }
    }
}

/// Log levels, most verbose first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Where a policy's counts, gauges and log lines go: the stream of the
/// request a step runs for, or the host itself for a worker's background
/// work (a sync, a flush).
pub trait Telemetry {
    /// Adds `delta` to a counter the policy defined ([`DefineMetrics`]).
    fn increment(&mut self, counter: Counter, delta: u64);

    /// Sets a gauge the policy defined.
    fn set_gauge(&mut self, gauge: Gauge, value: u64);

    /// Moves a gauge by `delta`. Every worker's VM shares the one Envoy
    /// gauge, so per-worker amounts (a queue's length) add up across
    /// workers only through deltas, never through `set_gauge`.
    fn add_to_gauge(&mut self, gauge: Gauge, delta: i64);

    /// Whether a message at `level` would be written: check it before
    /// building a costly message.
    fn logs(&self, level: Level) -> bool;

    /// Writes a message; `message` is formatted only when `level` is on.
    fn log(&self, level: Level, message: fmt::Arguments<'_>);
}

/// One request's stream as a policy sees it: the reads of [`Host`] and
/// every effect. Writes are seen by later reads of the same stream.
pub trait Stream: Host + Telemetry {
    /// The names of the request headers, in order, pseudo-headers
    /// included (a name repeats once per value).
    fn request_header_names(&self) -> Vec<String>;

    /// Sets (`Some`) or removes (`None`) a request header.
    fn set_request_header(&mut self, name: &str, value: Option<&str>);

    /// The first value of a response header (`name` in lower case).
    fn response_header(&self, name: &str) -> Option<String>;

    /// Sets (`Some`) or removes (`None`) a response header (`:status`
    /// too, while the response headers are held or being read).
    fn set_response_header(&mut self, name: &str, value: Option<&str>);

    /// The response headers, in order, `:status` included (names in lower
    /// case; a name repeats once per value).
    fn response_headers(&self) -> Vec<(String, String)>;

    /// The first `size` bytes of the response body the host holds.
    fn response_body(&self, size: usize) -> Vec<u8>;

    /// Replaces the first `old_size` bytes of the response body (the whole
    /// body a policy was shown) with `body`. A policy that changes the
    /// body's length held the response headers and sets `content-length`.
    fn replace_response_body(&mut self, old_size: usize, body: &[u8]);

    /// Answers the request from the gateway; the upstream is not called.
    /// Every local reply of every policy goes through here.
    fn send_local_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]);

    /// The first `size` bytes of the request body the host holds.
    fn request_body(&self, size: usize) -> Vec<u8>;

    /// Replaces the first `old_size` bytes of the request body (the whole
    /// body a policy was shown) with `body`.
    fn replace_request_body(&mut self, old_size: usize, body: &[u8]);

    /// The state this Envoy's workers share (nonces, quota counters).
    fn shared_data(&self) -> &dyn SharedStore;

    /// Sends a policy's operations to the fleet store; its answer comes to
    /// [`PolicySteps::on_fleet_answer`]. An error: the call could not be
    /// made, no answer will come, and the policy decides by its failure
    /// mode at once.
    fn send_to_fleet(&mut self, store: &Arc<Store>, ops: Vec<Op>) -> Result<FleetCall, Failure>;

    /// Drops the route Envoy chose for the request, so a header a step set
    /// (a fallback marker) picks it again.
    fn clear_route_cache(&mut self);

    /// Sends an HTTP call; its answer comes to
    /// [`PolicySteps::on_call_answer`]. One call per policy and request at
    /// a time.
    fn dispatch_call(&mut self, call: HttpCall<'_>) -> Result<(), CallNotMade>;

    /// This request's id among the worker's requests (see [`Stream::wake`]).
    fn stream_id(&self) -> u32;

    /// Wakes another request of the worker, by its [`Stream::stream_id`],
    /// once this callback is over: its policies' [`PolicySteps::on_wake`]
    /// run.
    fn wake(&mut self, stream_id: u32);
}

/// One policy's part in one request: a step per stream event it takes part
/// in, each handed the stream and returning its [`Verdict`]. The host makes
/// one per request (a single filter's context, a member of the gateway
/// module's pipeline) and calls the steps in the stream's order.
pub trait PolicySteps {
    fn on_request_headers(&mut self, _stream: &mut dyn Stream, _end_of_stream: bool) -> Verdict {
        Verdict::Continue
    }

    /// `body_size`: the bytes of the body received so far, all of which the
    /// host holds while the policy pauses.
    fn on_request_body(
        &mut self,
        _stream: &mut dyn Stream,
        _body_size: usize,
        _end_of_stream: bool,
    ) -> Verdict {
        Verdict::Continue
    }

    /// The request trailers arrived.
    fn on_request_trailers(&mut self, _stream: &mut dyn Stream) -> Verdict {
        Verdict::Continue
    }

    /// `Pause` holds the response headers (until the body is read, say),
    /// so they can still change.
    fn on_response_headers(&mut self, _stream: &mut dyn Stream, _end_of_stream: bool) -> Verdict {
        Verdict::Continue
    }

    /// As [`PolicySteps::on_request_body`], for the response: `Pause` holds
    /// the body received so far (and the headers, if they were held).
    fn on_response_body(
        &mut self,
        _stream: &mut dyn Stream,
        _body_size: usize,
        _end_of_stream: bool,
    ) -> Verdict {
        Verdict::Continue
    }

    /// The response trailers arrived (a body held before them was shown
    /// whole first, as ended).
    fn on_response_trailers(&mut self, _stream: &mut dyn Stream) -> Verdict {
        Verdict::Continue
    }

    /// The answer to the policy's call ([`Stream::dispatch_call`]).
    /// `Continue` lets the request it held go on.
    fn on_call_answer(&mut self, _stream: &mut dyn Stream, _answer: &dyn CallAnswer) -> Verdict {
        Verdict::Continue
    }

    /// Another request woke this one ([`Stream::wake`]). `Continue` lets
    /// the request it held go on; `Pause` (the default) changes nothing.
    fn on_wake(&mut self, _stream: &mut dyn Stream) -> Verdict {
        Verdict::Pause
    }

    /// The stream is going away (done, reset or refused): the policy lets
    /// go of what it holds for other requests.
    fn on_stream_end(&mut self, _stream: &mut dyn Stream) {}

    /// The stream is over (Envoy's access-log time), whether or not a
    /// response came.
    fn on_log(&mut self, _stream: &mut dyn Stream) {}

    /// The fleet store answered the operations the policy sent. For its
    /// own call, `Continue` lets the request go on.
    fn on_fleet_answer(&mut self, _stream: &mut dyn Stream, _answer: Answer) -> Verdict {
        Verdict::Continue
    }
}

/// Where a request body a policy buffers stands.
#[derive(Debug, PartialEq, Eq)]
pub enum BufferedBody {
    /// More is coming: hold the request ([`Verdict::Pause`]).
    Incomplete,
    /// Over the policy's limit: refuse it (413).
    TooLarge,
    /// The whole body.
    Complete(Vec<u8>),
}

/// Buffers the request body up to `max_bytes`: the one step every policy
/// that reads bodies shares (sign-auth; the others through [`HeldForBody`]).
pub fn buffer_request_body(
    stream: &dyn Stream,
    body_size: usize,
    end_of_stream: bool,
    max_bytes: usize,
) -> BufferedBody {
    buffer_body(body_size, end_of_stream, max_bytes, |size| {
        stream.request_body(size)
    })
}

/// A request a policy holds until its body has arrived: what it kept from
/// the headers (`W`: the rule, its captures…) and the body limit. Trailers
/// need no step of their own: the host shows a held body whole to the body
/// step first ([`crate::hosting::HostedSteps::request_trailers`]).
#[derive(Debug)]
pub struct HeldForBody<W> {
    held: Option<(W, usize)>,
}

impl<W> Default for HeldForBody<W> {
    fn default() -> Self {
        Self { held: None }
    }
}

/// What the body step of a held request has.
#[derive(Debug, PartialEq, Eq)]
pub enum HeldBody<W> {
    /// The request was not held: let the body pass.
    NotHeld,
    /// More is coming: still held ([`Verdict::Pause`]).
    Incomplete,
    /// Over the limit: refuse it (413).
    TooLarge(W),
    /// The whole body, and what was kept from the headers.
    Complete(W, Vec<u8>),
}

impl<W> HeldForBody<W> {
    /// Holds the request for its body (the headers step returns
    /// [`Verdict::Pause`]).
    pub fn hold(&mut self, kept: W, max_bytes: usize) {
        self.held = Some((kept, max_bytes));
    }

    /// The body step: buffers up to the limit, and gives back what was kept
    /// once the body is whole or too large.
    pub fn body(
        &mut self,
        stream: &dyn Stream,
        body_size: usize,
        end_of_stream: bool,
    ) -> HeldBody<W> {
        let Some((kept, max_bytes)) = self.held.take() else {
            return HeldBody::NotHeld;
        };
        match buffer_request_body(stream, body_size, end_of_stream, max_bytes) {
            BufferedBody::Incomplete => {
                self.held = Some((kept, max_bytes));
                HeldBody::Incomplete
            }
            BufferedBody::TooLarge => HeldBody::TooLarge(kept),
            BufferedBody::Complete(body) => HeldBody::Complete(kept, body),
        }
    }
}

/// [`buffer_request_body`] for the response body (error mapping, the
/// response cache).
pub fn buffer_response_body(
    stream: &dyn Stream,
    body_size: usize,
    end_of_stream: bool,
    max_bytes: usize,
) -> BufferedBody {
    buffer_body(body_size, end_of_stream, max_bytes, |size| {
        stream.response_body(size)
    })
}

fn buffer_body(
    body_size: usize,
    end_of_stream: bool,
    max_bytes: usize,
    read: impl FnOnce(usize) -> Vec<u8>,
) -> BufferedBody {
    if body_size > max_bytes {
        return BufferedBody::TooLarge;
    }
    if !end_of_stream {
        return BufferedBody::Incomplete;
    }
    BufferedBody::Complete(read(body_size))
}

/// The response's status (`:status`), if it is a number.
pub fn response_status(stream: &dyn Stream) -> Option<u16> {
    stream.response_header(":status")?.trim().parse().ok()
}

/// The request's declared `Content-Length`, if any, so a body over a limit
/// is refused before it is buffered.
pub fn declared_body_length(stream: &dyn Stream) -> Option<usize> {
    stream
        .request_header("content-length")
        .and_then(|value| value.trim().parse().ok())
}

/// The response's declared `Content-Length`, if any.
pub fn declared_response_length(stream: &dyn Stream) -> Option<usize> {
    stream
        .response_header("content-length")
        .and_then(|value| value.trim().parse().ok())
}

/// Answers the request with `error` in the shared shape (JSON body and
/// `X-Ca-Error-*` headers, with the request's `x-request-id`), plus `extra`
/// response headers (`Retry-After`, a quota…).
pub fn send_error(
    stream: &mut dyn Stream,
    error: &GatewayError,
    extra: &[(&'static str, String)],
) -> Verdict {
    let request_id = stream.request_header("x-request-id");
    let mut response = render(error, request_id.as_deref());
    response.headers.extend_from_slice(extra);
    stream.send_local_reply(response.status, &response.header_pairs(), &response.body);
    Verdict::Answered
}

/// Refuses the request: counts `error` in `denied` and answers it in the
/// shared shape.
pub fn refuse<const N: usize>(
    stream: &mut dyn Stream,
    denied: &DenialCounters<N>,
    error: &GatewayError,
) -> Verdict {
    refuse_with(stream, denied, error, &[])
}

/// [`refuse`] with `extra` headers in the answer (a `WWW-Authenticate`
/// challenge).
pub fn refuse_with<const N: usize>(
    stream: &mut dyn Stream,
    denied: &DenialCounters<N>,
    error: &GatewayError,
    extra: &[(&'static str, String)],
) -> Verdict {
    if let Some(counter) = denied.counter(error) {
        stream.increment(counter, 1);
    }
    send_error(stream, error, extra)
}

/// An effect a [`FakeStream`] was asked for, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    SetRequestHeader(String, Option<String>),
    SetResponseHeader(String, Option<String>),
    LocalReply(LocalReply),
    ReplaceRequestBody(Vec<u8>),
    ReplaceResponseBody(Vec<u8>),
    SendToFleet(Vec<Op>),
    ClearRouteCache,
    DispatchCall {
        cluster: String,
        headers: Vec<(String, String)>,
        body: Option<Vec<u8>>,
    },
    Wake(u32),
}

/// A local reply as data: what a [`FakeStream`] records, and what the
/// gateway module holds back while earlier policies' fleet checks are out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl LocalReply {
    pub fn new(status: u32, headers: &[(&str, &str)], body: &[u8]) -> Self {
        Self {
            status,
            headers: headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            body: body.to_vec(),
        }
    }

    /// The first value of a reply header (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

/// A call's answer made of plain data, for native tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeAnswer {
    pub status: Option<u32>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl FakeAnswer {
    pub fn new(status: u32) -> Self {
        Self {
            status: Some(status),
            ..Self::default()
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    pub fn with_body(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self
    }
}

impl CallAnswer for FakeAnswer {
    fn status(&self) -> Option<u32> {
        self.status
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    }

    fn body_size(&self) -> usize {
        self.body.len()
    }

    fn body(&self) -> Vec<u8> {
        self.body.clone()
    }
}

/// A stream made of plain data for native tests: reads come from a
/// [`FakeHost`] (which header writes update), every effect is recorded.
#[derive(Debug, Default)]
pub struct FakeStream {
    pub host: FakeHost,
    pub response_headers: Vec<(String, String)>,
    /// The request body.
    pub body: Vec<u8>,
    pub response_body: Vec<u8>,
    pub effects: Vec<Effect>,
    /// Messages written at or above [`FakeStream::log_level`].
    pub logs: std::cell::RefCell<Vec<(Level, String)>>,
    pub log_level: Option<Level>,
    /// The metrics defined on it, by id, what each counter counted and
    /// what each gauge was last set to.
    pub counters: Vec<String>,
    pub counts: HashMap<u32, u64>,
    pub gauges: HashMap<u32, u64>,
    /// The workers' shared state.
    pub shared: MemoryStore,
    /// How fleet operations are sent: batched (the gateway module) or as
    /// the policy's own call (a single filter, the default).
    pub fleet_batches: bool,
    /// The fleet call cannot be made.
    pub fleet_unreachable: Option<Failure>,
    /// The stream's id among the worker's requests.
    pub id: u32,
    /// Calls to clusters cannot be made.
    pub calls_fail: bool,
}

impl FakeStream {
    pub fn new(host: FakeHost) -> Self {
        Self {
            host,
            log_level: Some(Level::Trace),
            ..Self::default()
        }
    }

    /// What the counter `gw.<filter>.<name>` counted (0 if never).
    pub fn counted(&self, filter: &str, name: &str) -> u64 {
        let full = metric_name(filter, name);
        self.counters
            .iter()
            .position(|defined| *defined == full)
            .and_then(|id| self.counts.get(&(id as u32)))
            .copied()
            .unwrap_or(0)
    }

    /// What the gauge `gw.<filter>.<name>` was last set to.
    pub fn gauge(&self, filter: &str, name: &str) -> Option<u64> {
        let full = metric_name(filter, name);
        let id = self.counters.iter().position(|defined| *defined == full)?;
        self.gauges.get(&(id as u32)).copied()
    }

    /// The operations sent to the fleet store, call by call.
    pub fn sent_to_fleet(&self) -> Vec<&[Op]> {
        self.effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::SendToFleet(ops) => Some(ops.as_slice()),
                _ => None,
            })
            .collect()
    }

    /// The local reply sent, if any.
    pub fn reply(&self) -> Option<&LocalReply> {
        self.effects.iter().find_map(|effect| match effect {
            Effect::LocalReply(reply) => Some(reply),
            _ => None,
        })
    }
}

fn set(headers: &mut Vec<(String, String)>, name: &str, value: Option<&str>) {
    headers.retain(|(key, _)| !key.eq_ignore_ascii_case(name));
    if let Some(value) = value {
        headers.push((name.to_ascii_lowercase(), value.to_string()));
    }
}

impl Host for FakeStream {
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
}

impl DefineMetrics for FakeStream {
    fn define_counter(&mut self, filter: &str, name: &str) -> Counter {
        self.counters.push(metric_name(filter, name));
        Counter::from_id(self.counters.len() as u32 - 1)
    }

    fn define_gauge(&mut self, filter: &str, name: &str) -> Gauge {
        self.counters.push(metric_name(filter, name));
        Gauge::from_id(self.counters.len() as u32 - 1)
    }
}

impl Telemetry for FakeStream {
    fn increment(&mut self, counter: Counter, delta: u64) {
        if let Some(id) = counter.id() {
            *self.counts.entry(id).or_default() += delta;
        }
    }

    fn set_gauge(&mut self, gauge: Gauge, value: u64) {
        if let Some(id) = gauge.id() {
            self.gauges.insert(id, value);
        }
    }

    fn add_to_gauge(&mut self, gauge: Gauge, delta: i64) {
        if let Some(id) = gauge.id() {
            let value = self.gauges.entry(id).or_default();
            *value = value.saturating_add_signed(delta);
        }
    }

    fn logs(&self, level: Level) -> bool {
        self.log_level.is_some_and(|lowest| level >= lowest)
    }

    fn log(&self, level: Level, message: fmt::Arguments<'_>) {
        if self.logs(level) {
            self.logs.borrow_mut().push((level, message.to_string()));
        }
    }
}

impl Stream for FakeStream {
    fn request_header_names(&self) -> Vec<String> {
        self.host
            .headers
            .iter()
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        set(&mut self.host.headers, name, value);
        self.effects.push(Effect::SetRequestHeader(
            name.to_string(),
            value.map(str::to_string),
        ));
    }

    fn response_header(&self, name: &str) -> Option<String> {
        self.response_headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    }

    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        set(&mut self.response_headers, name, value);
        self.effects.push(Effect::SetResponseHeader(
            name.to_string(),
            value.map(str::to_string),
        ));
    }

    fn response_headers(&self) -> Vec<(String, String)> {
        self.response_headers.clone()
    }

    fn response_body(&self, size: usize) -> Vec<u8> {
        self.response_body[..size.min(self.response_body.len())].to_vec()
    }

    fn replace_response_body(&mut self, old_size: usize, body: &[u8]) {
        let old_size = old_size.min(self.response_body.len());
        self.response_body.splice(..old_size, body.iter().copied());
        self.effects
            .push(Effect::ReplaceResponseBody(body.to_vec()));
    }

    fn send_local_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        self.effects
            .push(Effect::LocalReply(LocalReply::new(status, headers, body)));
    }

    fn request_body(&self, size: usize) -> Vec<u8> {
        self.body[..size.min(self.body.len())].to_vec()
    }

    fn replace_request_body(&mut self, old_size: usize, body: &[u8]) {
        let old_size = old_size.min(self.body.len());
        self.body.splice(..old_size, body.iter().copied());
        self.effects.push(Effect::ReplaceRequestBody(body.to_vec()));
    }

    fn shared_data(&self) -> &dyn SharedStore {
        &self.shared
    }

    fn send_to_fleet(&mut self, _store: &Arc<Store>, ops: Vec<Op>) -> Result<FleetCall, Failure> {
        if let Some(failure) = &self.fleet_unreachable {
            return Err(failure.clone());
        }
        self.effects.push(Effect::SendToFleet(ops));
        Ok(if self.fleet_batches {
            FleetCall::Batched
        } else {
            FleetCall::Own
        })
    }

    fn clear_route_cache(&mut self) {
        self.effects.push(Effect::ClearRouteCache);
    }

    fn dispatch_call(&mut self, call: HttpCall<'_>) -> Result<(), CallNotMade> {
        if self.calls_fail {
            return Err(CallNotMade);
        }
        self.effects.push(Effect::DispatchCall {
            cluster: call.cluster.to_string(),
            headers: call
                .headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            body: call.body.map(<[u8]>::to_vec),
        });
        Ok(())
    }

    fn stream_id(&self) -> u32 {
        self.id
    }

    fn wake(&mut self, stream_id: u32) {
        self.effects.push(Effect::Wake(stream_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_writes_are_read_back_and_recorded() {
        let mut stream = FakeStream::new(FakeHost::new().with_header("X-Old", "1"));
        stream.set_request_header("x-old", None);
        stream.set_request_header("X-New", Some("2"));
        assert_eq!(stream.request_header("x-old"), None);
        assert_eq!(stream.request_header("x-new").as_deref(), Some("2"));
        assert_eq!(
            stream.effects,
            vec![
                Effect::SetRequestHeader("x-old".into(), None),
                Effect::SetRequestHeader("X-New".into(), Some("2".into())),
            ]
        );
    }

    #[test]
    fn an_error_is_answered_in_the_shared_shape_with_the_request_id() {
        let mut stream = FakeStream::new(FakeHost::new().with_header("x-request-id", "r-1"));
        let flow = send_error(
            &mut stream,
            &GatewayError::new(429, "A429QE", "Quota exhausted"),
            &[("retry-after", "7".to_string())],
        );
        assert_eq!(flow, Verdict::Answered);
        let reply = stream.reply().expect("a reply");
        assert_eq!(reply.status, 429);
        assert_eq!(reply.header("x-ca-error-code"), Some("A429QE"));
        assert_eq!(reply.header("retry-after"), Some("7"));
        assert_eq!(reply.json()["request_id"], "r-1");
        assert_eq!(reply.json()["code"], "A429QE");
    }

    #[test]
    fn a_replaced_body_is_what_later_reads_see() {
        let mut stream = FakeStream::new(FakeHost::new());
        stream.body = b"a=1&b=2".to_vec();
        stream.replace_request_body(7, b"a=1");
        assert_eq!(stream.request_body(100), b"a=1");
    }

    #[test]
    fn counters_count_by_name() {
        let mut stream = FakeStream::new(FakeHost::new());
        let passed = stream.define_counter("demo", "passed");
        let denied = stream.define_counter("demo", "denied");
        stream.increment(passed, 2);
        stream.increment(denied, 1);
        stream.increment(passed, 1);
        stream.increment(Counter::default(), 5);
        assert_eq!(stream.counted("demo", "passed"), 3);
        assert_eq!(stream.counted("demo", "denied"), 1);
        assert_eq!(stream.counted("demo", "never"), 0);
    }

    #[test]
    fn a_body_is_buffered_once_whole_and_refused_over_the_limit() {
        let mut stream = FakeStream::new(FakeHost::new().with_header("content-length", " 12 "));
        stream.body = b"hello world!".to_vec();
        assert_eq!(declared_body_length(&stream), Some(12));
        assert_eq!(
            buffer_request_body(&stream, 5, false, 100),
            BufferedBody::Incomplete
        );
        assert_eq!(
            buffer_request_body(&stream, 12, true, 11),
            BufferedBody::TooLarge
        );
        assert_eq!(
            buffer_request_body(&stream, 12, true, 100),
            BufferedBody::Complete(b"hello world!".to_vec())
        );
    }

    #[test]
    fn a_held_request_keeps_what_it_kept_until_its_body_is_whole_or_too_large() {
        let mut stream = FakeStream::new(FakeHost::new());
        stream.body = b"hello world!".to_vec();
        let mut held = HeldForBody::default();
        assert_eq!(held.body(&stream, 5, false), HeldBody::<&str>::NotHeld);
        held.hold("rule 1", 12);
        assert_eq!(held.body(&stream, 5, false), HeldBody::Incomplete);
        assert_eq!(
            held.body(&stream, 12, true),
            HeldBody::Complete("rule 1", b"hello world!".to_vec())
        );
        assert_eq!(held.body(&stream, 12, true), HeldBody::NotHeld);
        held.hold("rule 2", 11);
        assert_eq!(held.body(&stream, 12, false), HeldBody::TooLarge("rule 2"));
        assert_eq!(held.body(&stream, 12, true), HeldBody::NotHeld);
    }

    #[test]
    fn messages_below_the_level_are_not_formatted() {
        struct Panics;
        impl fmt::Display for Panics {
            fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
                panic!("formatted below the level")
            }
        }
        let mut stream = FakeStream::new(FakeHost::new());
        stream.log_level = Some(Level::Info);
        stream.log(Level::Debug, format_args!("{}", Panics));
        stream.log(Level::Warn, format_args!("kept {}", 1));
        assert_eq!(
            *stream.logs.borrow(),
            vec![(Level::Warn, "kept 1".to_string())]
        );
    }
}
