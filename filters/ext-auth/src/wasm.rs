//! The proxy-wasm adapter of ext-auth: the filter as a `.wasm` module and
//! as the gateway module's section. Re-exported from the crate root.

use crate::cache::Stored;
use crate::flights::{Flights, Joined};
use crate::policy::{codes, Answer, Check, Decision, ExtAuth, Failure, Fallback, Pending};
use crate::*;
use gateway_common::adapter::{self, Filter};
use gateway_common::config::ConfigError;
use gateway_common::host::{now_ms, Host, ProxyWasmHost};
use gateway_common::identity::USER_PROPERTY;
use gateway_common::metrics::{Counter, DenialCounters};
use gateway_common::store::ProxyWasmStore;
use gateway_common::stream::PolicySteps;
use gateway_common::wake::{self, WAKE_TOKEN};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType};
use std::cell::RefCell;
use std::rc::Rc;

const FAILURES: [&str; 4] = ["dispatch", "no_answer", "status", "too_large"];

/// The counters, defined once per VM.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    allowed: Counter,
    authorizer_denied: Counter,
    skipped: Counter,
    calls: Counter,
    cache_hit: Counter,
    cache_miss: Counter,
    cache_eviction: Counter,
    coalesced: Counter,
    failure: [Counter; FAILURES.len()],
    failure_allowed: Counter,
    denied: DenialCounters<{ codes::COUNT }>,
}

impl Metrics {
    pub fn define() -> Self {
        let counter = |name: &str| Counter::define(FILTER_NAME, name);
        Self {
            allowed: counter("allowed"),
            authorizer_denied: counter("authorizer_denied"),
            skipped: counter("skipped"),
            calls: counter("calls"),
            cache_hit: counter("cache_hit"),
            cache_miss: counter("cache_miss"),
            cache_eviction: counter("cache_eviction"),
            coalesced: counter("coalesced"),
            failure: FAILURES.map(|kind| counter(&format!("failure.{kind}"))),
            failure_allowed: counter("failure_allowed"),
            denied: DenialCounters::define(FILTER_NAME, &codes::ALL),
        }
    }

    fn failed(&self, failure: &Failure) {
        if let Some(i) = FAILURES.iter().position(|kind| *kind == failure.name()) {
            self.failure[i].inc();
        }
    }
}

/// The compiled policy and the worker's calls in flight.
pub struct ExtAuthWorker {
    policy: ExtAuth,
    flights: RefCell<Flights>,
}

/// The filter, as the shared root context sees it.
pub struct ExtAuthFilter;

impl Filter for ExtAuthFilter {
    const NAME: &'static str = FILTER_NAME;
    type Policy = ExtAuthWorker;
    type Metrics = Metrics;

    fn compile(bytes: &[u8]) -> Result<ExtAuthWorker, ConfigError> {
        Ok(ExtAuthWorker {
            policy: compile_config(bytes)?,
            flights: RefCell::default(),
        })
    }

    fn prepare(worker: &ExtAuthWorker) -> Result<(), String> {
        match worker.policy.cache() {
            Some(cache) => cache
                .initialize(&ProxyWasmStore)
                .map_err(|e| format!("cannot create the decision cache in shared data: {e:?}")),
            None => Ok(()),
        }
    }

    fn define_metrics() -> Metrics {
        Metrics::define()
    }

    /// Still a proxy-wasm context of its own (see `http_context`).
    fn steps(_: &Rc<Self::Policy>, _: Self::Metrics) -> Option<Box<dyn PolicySteps>> {
        None
    }

    fn http_context(worker: Rc<ExtAuthWorker>, metrics: Metrics) -> Box<dyn HttpContext> {
        Self::http_context_for(worker, metrics, 0)
    }

    fn http_context_for(
        worker: Rc<ExtAuthWorker>,
        metrics: Metrics,
        context_id: u32,
    ) -> Box<dyn HttpContext> {
        Box::new(ExtAuthHttp {
            worker,
            metrics,
            context_id,
            state: State::Idle,
        })
    }

    fn wakes(_worker: &ExtAuthWorker) -> bool {
        true
    }
}

/// Where a request stands with the authorizer.
enum State {
    Idle,
    /// It asked; the answer is for `token`.
    Calling {
        pending: Box<Pending>,
        token: u32,
    },
    /// Another request of the worker asked for the same identity.
    Waiting {
        pending: Box<Pending>,
    },
}

/// Per-request context.
pub struct ExtAuthHttp {
    worker: Rc<ExtAuthWorker>,
    metrics: Metrics,
    context_id: u32,
    state: State,
}

/// What a decision did to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    /// It goes on.
    Pass,
    /// It was answered.
    Replied,
    /// It waits for the authorizer.
    Held,
}

impl ExtAuthHttp {
    fn policy(&self) -> &ExtAuth {
        &self.worker.policy
    }

    /// A cached decision, or a call (or a wait for another request's).
    fn ask(&mut self, pending: Box<Pending>) -> Applied {
        let now = now_ms(&ProxyWasmHost);
        if let Some(cache) = self.policy().cache() {
            match cache.lookup(&ProxyWasmStore, &pending.key, now) {
                Ok(Some(decision)) => {
                    self.metrics.cache_hit.inc();
                    return self.apply(&decision);
                }
                // A table that cannot be read is a miss: the authorizer decides.
                Ok(None) | Err(_) => self.metrics.cache_miss.inc(),
            }
        }
        let joined = self
            .worker
            .flights
            .borrow_mut()
            .join(pending.key, self.context_id);
        match joined {
            Joined::Lead => self.call(pending),
            Joined::Wait => {
                self.metrics.coalesced.inc();
                self.state = State::Waiting { pending };
                Applied::Held
            }
        }
    }

    fn call(&mut self, pending: Box<Pending>) -> Applied {
        let policy = &self.worker.policy;
        let call = policy.call(&pending, &ProxyWasmHost);
        let headers: Vec<(&str, &str)> = call
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let authorizer = &policy.authorizer;
        match wake::dispatch_http_call(
            &authorizer.cluster,
            headers,
            call.body.as_deref(),
            authorizer.timeout,
        ) {
            Ok(token) => {
                self.metrics.calls.inc();
                self.state = State::Calling { pending, token };
                Applied::Held
            }
            Err(_) => {
                self.hand_back(&pending);
                self.apply(&Decision::Failed(Failure::Dispatch))
            }
        }
    }

    /// The call failed or its request is going: whoever waited asks anew.
    fn hand_back(&self, pending: &Pending) {
        let waiters = self
            .worker
            .flights
            .borrow_mut()
            .abandon(&pending.key, self.context_id);
        for waiter in waiters {
            wake::wake_later(waiter);
        }
    }

    /// The authorizer answered (or did not within the timeout).
    fn answered(&mut self, pending: &Pending, body_size: usize) -> Applied {
        let policy = &self.worker.policy;
        let (decision, ttl) = policy.decide(read_answer(policy, body_size));
        if let (Some(cache), Some(ttl)) = (policy.cache(), ttl) {
            let now = now_ms(&ProxyWasmHost);
            let stored = cache.store(
                &ProxyWasmStore,
                &pending.key,
                &decision,
                now,
                now.saturating_add(ttl),
            );
            if stored == Ok(Stored::Evicted) {
                self.metrics.cache_eviction.inc();
            }
        }
        let decision = Rc::new(decision);
        let waiters =
            self.worker
                .flights
                .borrow_mut()
                .land(&pending.key, self.context_id, &decision);
        for waiter in waiters {
            wake::wake_later(waiter);
        }
        self.apply(&decision)
    }

    fn apply(&mut self, decision: &Decision) -> Applied {
        self.state = State::Idle;
        match decision {
            Decision::Allow { headers } => {
                for (name, value) in headers {
                    adapter::set_request_header(name, Some(value));
                }
                if let Some(user) = self.policy().user_header() {
                    if let Some((_, value)) = headers.iter().find(|(name, _)| name == user) {
                        ProxyWasmHost.set_property(&[USER_PROPERTY], value.as_bytes());
                    }
                }
                self.metrics.allowed.inc();
                Applied::Pass
            }
            Decision::Deny {
                status,
                headers,
                body,
            } => {
                self.metrics.authorizer_denied.inc();
                let pairs = headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str()))
                    .collect();
                adapter::send_local_reply(*status, pairs, body);
                Applied::Replied
            }
            Decision::Failed(failure) => {
                self.metrics.failed(failure);
                adapter::log(
                    LogLevel::Debug,
                    &format!("{FILTER_NAME}: the authorizer failed: {failure}"),
                );
                match self.policy().fallback() {
                    Fallback::Deny => {
                        self.metrics.denied.inc(&codes::AUTHORIZER_FAILED);
                        adapter::send_error(&codes::AUTHORIZER_FAILED);
                        Applied::Replied
                    }
                    Fallback::Allow => {
                        self.metrics.failure_allowed.inc();
                        Applied::Pass
                    }
                }
            }
        }
    }

    fn holds(&self) -> bool {
        !matches!(self.state, State::Idle)
    }
}

/// The authorizer's answer being reported: its status, the headers the
/// policy reads, and a body no larger than the policy allows.
fn read_answer(policy: &ExtAuth, body_size: usize) -> Result<Answer, Failure> {
    // Not the SDK's call, which panics on a reset call (no headers) and on
    // a value that is not UTF-8.
    let header =
        |name: &str| gateway_common::host::header_value(MapType::HttpCallResponseHeaders, name);
    let status = header(":status")
        .and_then(|status| status.trim().parse::<u32>().ok())
        .ok_or(Failure::NoAnswer)?;
    if body_size > policy.authorizer.max_answer_bytes {
        return Err(Failure::TooLarge(body_size));
    }
    let headers = policy
        .answer_headers()
        .iter()
        .filter_map(|name| Some((name.clone(), header(name)?)))
        .collect();
    let body = if body_size == 0 {
        Vec::new()
    } else {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default()
    };
    Ok(Answer {
        status,
        headers,
        body,
    })
}

impl Drop for ExtAuthHttp {
    fn drop(&mut self) {
        match &self.state {
            State::Calling { pending, .. } => self.hand_back(pending),
            State::Waiting { pending } => self
                .worker
                .flights
                .borrow_mut()
                .leave(&pending.key, self.context_id),
            State::Idle => {}
        }
    }
}

impl Context for ExtAuthHttp {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _: usize) {
        let applied = match std::mem::replace(&mut self.state, State::Idle) {
            State::Calling {
                pending,
                token: mine,
            } if mine == token => {
                let _reads = gateway_common::host::callback_scope();
                self.answered(&pending, body_size)
            }
            State::Waiting { pending } if token == WAKE_TOKEN => {
                let _reads = gateway_common::host::callback_scope();
                let mail = self.worker.flights.borrow_mut().take_mail(self.context_id);
                match mail {
                    Some(decision) => self.apply(&decision),
                    // The request that asked went away: ask again.
                    None => self.ask(pending),
                }
            }
            other => {
                self.state = other;
                return;
            }
        };
        if applied == Applied::Pass {
            adapter::resume_request();
        }
    }
}

impl HttpContext for ExtAuthHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let _reads = gateway_common::host::callback_scope();
        for name in self.policy().upstream_headers() {
            adapter::set_request_header(name, None);
        }
        let applied = match self.policy().check(&ProxyWasmHost) {
            Check::Skip => {
                self.metrics.skipped.inc();
                Applied::Pass
            }
            Check::Refuse(error) => {
                self.metrics.denied.inc(&error);
                adapter::send_error(&error);
                Applied::Replied
            }
            Check::Ask(pending) => self.ask(pending),
        };
        match applied {
            Applied::Pass => Action::Continue,
            Applied::Replied | Applied::Held => Action::Pause,
        }
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        if self.holds() {
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.holds() {
            return Action::Pause;
        }
        Action::Continue
    }
}

#[cfg(feature = "entrypoint")]
gateway_common::declare_root!(
    gateway_common::adapter::RootRank::Filter,
    gateway_common::adapter::FilterRoot::<ExtAuthFilter>::default()
);
