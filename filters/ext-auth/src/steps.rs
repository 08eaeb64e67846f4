//! ext-auth's part in one request, written against the stream seam: the
//! identity the rule names is read on the request headers; a decision the
//! worker's table holds answers at once; otherwise the request asks the
//! authorizer (one call per worker and identity: requests asking for an
//! identity already asked for wait to be woken with its decision). What
//! passes carries the headers the authorizer added; a denial is answered
//! with the authorizer's status, headers and body.

use crate::cache::Stored;
use crate::policy::{codes, Answer, Check, Decision, ExtAuth, Failure, Pending};
use crate::FILTER_NAME;
use gateway_common::config::OnFailure;
use gateway_common::flights::{Flights, Joined};
use gateway_common::host::now_ms;
use gateway_common::identity::USER_PROPERTY;
use gateway_common::metrics::{Counter, DefineMetrics, DenialCounters};
use gateway_common::stream::{refuse, CallAnswer, HttpCall, Level, PolicySteps, Stream, Verdict};
use std::cell::RefCell;
use std::rc::Rc;

const FAILURES: [&str; 4] = ["dispatch", "no_answer", "status", "too_large"];

/// The counters, defined once per configuration.
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
    pub fn define(host: &mut dyn DefineMetrics) -> Self {
        Self {
            allowed: host.define_counter(FILTER_NAME, "allowed"),
            authorizer_denied: host.define_counter(FILTER_NAME, "authorizer_denied"),
            skipped: host.define_counter(FILTER_NAME, "skipped"),
            calls: host.define_counter(FILTER_NAME, "calls"),
            cache_hit: host.define_counter(FILTER_NAME, "cache_hit"),
            cache_miss: host.define_counter(FILTER_NAME, "cache_miss"),
            cache_eviction: host.define_counter(FILTER_NAME, "cache_eviction"),
            coalesced: host.define_counter(FILTER_NAME, "coalesced"),
            failure: FAILURES
                .map(|kind| host.define_counter(FILTER_NAME, &format!("failure.{kind}"))),
            failure_allowed: host.define_counter(FILTER_NAME, "failure_allowed"),
            denied: DenialCounters::define_with(host, FILTER_NAME, &codes::ALL),
        }
    }

    fn failure(&self, failure: &Failure) -> Counter {
        FAILURES
            .iter()
            .position(|kind| *kind == failure.name())
            .map(|i| self.failure[i])
            .unwrap_or_default()
    }
}

/// The compiled policy and the worker's calls in flight.
pub struct ExtAuthWorker {
    pub policy: ExtAuth,
    flights: RefCell<Flights<Rc<Decision>>>,
}

impl ExtAuthWorker {
    pub fn new(policy: ExtAuth) -> Self {
        Self {
            policy,
            flights: RefCell::default(),
        }
    }
}

/// Where a request stands with the authorizer.
enum State {
    Idle,
    /// It asked the authorizer.
    Calling(Box<Pending>),
    /// Another request of the worker asked for the same identity.
    Waiting(Box<Pending>),
}

pub struct ExtAuthSteps {
    worker: Rc<ExtAuthWorker>,
    metrics: Metrics,
    state: State,
}

impl ExtAuthSteps {
    pub fn new(worker: Rc<ExtAuthWorker>, metrics: Metrics) -> Self {
        Self {
            worker,
            metrics,
            state: State::Idle,
        }
    }

    fn policy(&self) -> &ExtAuth {
        &self.worker.policy
    }

    /// A cached decision, or a call (or a wait for another request's).
    fn ask(&mut self, stream: &mut dyn Stream, pending: Box<Pending>) -> Verdict {
        let now = now_ms(&*stream);
        if let Some(cache) = self.policy().cache() {
            match cache.lookup(stream.shared_data(), &pending.key, now) {
                Ok(Some(decision)) => {
                    stream.increment(self.metrics.cache_hit, 1);
                    return self.apply(stream, &decision);
                }
                // A table that cannot be read is a miss: the authorizer decides.
                Ok(None) | Err(_) => stream.increment(self.metrics.cache_miss, 1),
            }
        }
        let joined = self
            .worker
            .flights
            .borrow_mut()
            .join(pending.key, stream.stream_id());
        match joined {
            Joined::Lead => self.call(stream, pending),
            Joined::Wait => {
                stream.increment(self.metrics.coalesced, 1);
                self.state = State::Waiting(pending);
                Verdict::Pause
            }
        }
    }

    fn call(&mut self, stream: &mut dyn Stream, pending: Box<Pending>) -> Verdict {
        let worker = Rc::clone(&self.worker);
        let policy = &worker.policy;
        let call = policy.call(&pending, &*stream);
        let authorizer = &policy.authorizer;
        let dispatched = stream.dispatch_call(HttpCall {
            cluster: &authorizer.upstream.cluster,
            headers: call
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect(),
            body: call.body.as_deref(),
            timeout: authorizer.upstream.timeout,
        });
        match dispatched {
            Ok(()) => {
                stream.increment(self.metrics.calls, 1);
                self.state = State::Calling(pending);
                Verdict::Pause
            }
            Err(_) => {
                self.hand_back(stream, &pending);
                self.apply(stream, &Decision::Failed(Failure::Dispatch))
            }
        }
    }

    /// The call failed or its request is going: whoever waited asks anew.
    fn hand_back(&self, stream: &mut dyn Stream, pending: &Pending) {
        let waiters = self
            .worker
            .flights
            .borrow_mut()
            .abandon(&pending.key, stream.stream_id());
        for waiter in waiters {
            stream.wake(waiter);
        }
    }

    /// The authorizer answered (or did not within the timeout).
    fn answered(
        &mut self,
        stream: &mut dyn Stream,
        pending: &Pending,
        answer: &dyn CallAnswer,
    ) -> Verdict {
        let worker = Rc::clone(&self.worker);
        let policy = &worker.policy;
        let (decision, ttl) = policy.decide(read_answer(policy, answer));
        if let (Some(cache), Some(ttl)) = (policy.cache(), ttl) {
            let now = now_ms(&*stream);
            let stored = cache.store(
                stream.shared_data(),
                &pending.key,
                &decision,
                now,
                now.saturating_add(ttl),
            );
            if stored == Ok(Stored::Evicted) {
                stream.increment(self.metrics.cache_eviction, 1);
            }
        }
        let decision = Rc::new(decision);
        let waiters = worker
            .flights
            .borrow_mut()
            .land(&pending.key, stream.stream_id(), &decision);
        for waiter in waiters {
            stream.wake(waiter);
        }
        self.apply(stream, &decision)
    }

    fn apply(&mut self, stream: &mut dyn Stream, decision: &Decision) -> Verdict {
        self.state = State::Idle;
        match decision {
            Decision::Allow { headers } => {
                for (name, value) in headers {
                    stream.set_request_header(name, Some(value));
                }
                if let Some(user) = self.policy().user_header() {
                    if let Some((_, value)) = headers.iter().find(|(name, _)| name == user) {
                        stream.set_property(&[USER_PROPERTY], value.as_bytes());
                    }
                }
                stream.increment(self.metrics.allowed, 1);
                Verdict::Continue
            }
            Decision::Deny {
                status,
                headers,
                body,
            } => {
                stream.increment(self.metrics.authorizer_denied, 1);
                let pairs: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str()))
                    .collect();
                stream.send_local_reply(*status, &pairs, body);
                Verdict::Answered
            }
            Decision::Failed(failure) => {
                stream.increment(self.metrics.failure(failure), 1);
                stream.log(
                    Level::Debug,
                    format_args!("{FILTER_NAME}: the authorizer failed: {failure}"),
                );
                match self.policy().failure_mode() {
                    OnFailure::Deny => {
                        refuse(stream, &self.metrics.denied, &codes::AUTHORIZER_FAILED)
                    }
                    OnFailure::Allow => {
                        stream.increment(self.metrics.failure_allowed, 1);
                        Verdict::Continue
                    }
                }
            }
        }
    }

    fn holds(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    fn hold_while_asking(&self) -> Verdict {
        if self.holds() {
            Verdict::Pause
        } else {
            Verdict::Continue
        }
    }
}

/// The authorizer's answer: its status, the headers the policy reads, and a
/// body no larger than the policy allows.
fn read_answer(policy: &ExtAuth, answer: &dyn CallAnswer) -> Result<Answer, Failure> {
    let status = answer.status().ok_or(Failure::NoAnswer)?;
    let body_size = answer.body_size();
    if body_size > policy.authorizer.max_answer_bytes {
        return Err(Failure::TooLarge(body_size));
    }
    let headers = policy
        .answer_headers()
        .iter()
        .filter_map(|name| Some((name.clone(), answer.header(name)?)))
        .collect();
    let body = if body_size == 0 {
        Vec::new()
    } else {
        answer.body()
    };
    Ok(Answer {
        status,
        headers,
        body,
    })
}

impl PolicySteps for ExtAuthSteps {
    fn on_request_headers(&mut self, stream: &mut dyn Stream, _end_of_stream: bool) -> Verdict {
        let worker = Rc::clone(&self.worker);
        for name in worker.policy.upstream_headers() {
            stream.set_request_header(name, None);
        }
        match worker.policy.check(&*stream) {
            Check::Skip => {
                stream.increment(self.metrics.skipped, 1);
                Verdict::Continue
            }
            Check::Refuse(error) => refuse(stream, &self.metrics.denied, &error),
            Check::Ask(pending) => self.ask(stream, pending),
        }
    }

    fn on_request_body(
        &mut self,
        _stream: &mut dyn Stream,
        _body_size: usize,
        _end_of_stream: bool,
    ) -> Verdict {
        // Holding the headers alone would not hold the body back.
        self.hold_while_asking()
    }

    fn on_request_trailers(&mut self, _stream: &mut dyn Stream) -> Verdict {
        self.hold_while_asking()
    }

    fn on_call_answer(&mut self, stream: &mut dyn Stream, answer: &dyn CallAnswer) -> Verdict {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Calling(pending) => self.answered(stream, &pending, answer),
            other => {
                self.state = other;
                Verdict::Pause
            }
        }
    }

    fn on_wake(&mut self, stream: &mut dyn Stream) -> Verdict {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Waiting(pending) => {
                let mail = self
                    .worker
                    .flights
                    .borrow_mut()
                    .take_mail(stream.stream_id());
                match mail {
                    Some(decision) => self.apply(stream, &decision),
                    // The request that asked went away: ask again.
                    None => self.ask(stream, pending),
                }
            }
            other => {
                self.state = other;
                Verdict::Pause
            }
        }
    }

    fn on_stream_end(&mut self, stream: &mut dyn Stream) {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Calling(pending) => self.hand_back(stream, &pending),
            State::Waiting(pending) => self
                .worker
                .flights
                .borrow_mut()
                .leave(&pending.key, stream.stream_id()),
            State::Idle => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile_config;
    use gateway_common::host::{FakeHost, Host};
    use gateway_common::store::MemoryStore;
    use gateway_common::stream::{Effect, FakeAnswer, FakeStream};
    use serde_json::{json, Value};

    fn config() -> Value {
        json!({
            "authorizer": {"cluster": "authorizer", "path": "/check", "max_answer_bytes": 64},
            "identity": [{"from": "header", "name": "authorization"}],
            "upstream_headers": ["x-user-id"],
            "client_headers": ["www-authenticate"],
            "user_header": "x-user-id",
            "cache": {}
        })
    }

    /// One worker: its policy, its calls in flight and its shared data.
    struct Worker {
        worker: Rc<ExtAuthWorker>,
        shared: MemoryStore,
    }

    impl Worker {
        fn start(config: Value) -> Self {
            let policy = compile_config(config.to_string().as_bytes()).unwrap();
            let worker = Rc::new(ExtAuthWorker::new(policy));
            let shared = MemoryStore::new();
            if let Some(cache) = worker.policy.cache() {
                cache.initialize(&shared).unwrap();
            }
            Self { worker, shared }
        }

        /// A request (stream `id`) with `token`, and the policy's steps.
        fn request(&mut self, id: u32, token: Option<&str>) -> (FakeStream, ExtAuthSteps) {
            let mut host = FakeHost::new()
                .with_header(":method", "GET")
                .with_header(":path", "/orders")
                .with_header(":authority", "api.example.com")
                .with_header("x-user-id", "forged")
                .with_property(&["source", "address"], "10.0.0.7:4711");
            if let Some(token) = token {
                host = host.with_header("authorization", token);
            }
            let mut stream = FakeStream::new(host);
            stream.id = id;
            stream.shared = std::mem::take(&mut self.shared);
            let metrics = Metrics::define(&mut stream);
            (stream, ExtAuthSteps::new(Rc::clone(&self.worker), metrics))
        }

        fn done(&mut self, mut stream: FakeStream) -> FakeStream {
            self.shared = std::mem::take(&mut stream.shared);
            stream
        }
    }

    fn calls(stream: &FakeStream) -> usize {
        stream
            .effects
            .iter()
            .filter(|e| matches!(e, Effect::DispatchCall { .. }))
            .count()
    }

    fn woken(stream: &FakeStream) -> Vec<u32> {
        stream
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::Wake(id) => Some(*id),
                _ => None,
            })
            .collect()
    }

    fn allow(user: &str) -> FakeAnswer {
        FakeAnswer::new(200).with_header("x-user-id", user)
    }

    #[test]
    fn an_allowed_request_carries_the_authorizers_headers_and_its_decision_is_kept() {
        let mut worker = Worker::start(config());
        let (mut stream, mut steps) = worker.request(1, Some("Bearer a"));
        assert_eq!(steps.on_request_headers(&mut stream, true), Verdict::Pause);
        // A client cannot send what only the authorizer may set.
        assert_eq!(stream.request_header("x-user-id"), None);
        let call = stream.effects.iter().find_map(|e| match e {
            Effect::DispatchCall {
                cluster, headers, ..
            } => Some((cluster.clone(), headers.clone())),
            _ => None,
        });
        let (cluster, headers) = call.expect("a call to the authorizer");
        assert_eq!(cluster, "authorizer");
        assert!(
            headers.contains(&(":path".into(), "/check".into())),
            "{headers:?}"
        );
        assert!(
            headers.contains(&("authorization".into(), "Bearer a".into())),
            "{headers:?}"
        );
        assert_eq!(steps.on_request_body(&mut stream, 3, false), Verdict::Pause);
        assert_eq!(steps.on_request_trailers(&mut stream), Verdict::Pause);

        assert_eq!(
            steps.on_call_answer(&mut stream, &allow("u-7")),
            Verdict::Continue
        );
        assert_eq!(stream.request_header("x-user-id").as_deref(), Some("u-7"));
        assert_eq!(
            stream.property(&[USER_PROPERTY]).as_deref(),
            Some(b"u-7".as_slice())
        );
        assert_eq!(stream.counted(FILTER_NAME, "allowed"), 1);
        assert_eq!(stream.counted(FILTER_NAME, "calls"), 1);
        assert_eq!(
            steps.on_request_body(&mut stream, 3, true),
            Verdict::Continue
        );
        worker.done(stream);

        // The same identity again: from the table, no call.
        let (mut again, mut steps) = worker.request(2, Some("Bearer a"));
        assert_eq!(
            steps.on_request_headers(&mut again, true),
            Verdict::Continue
        );
        assert_eq!(calls(&again), 0);
        assert_eq!(again.counted(FILTER_NAME, "cache_hit"), 1);
        assert_eq!(again.request_header("x-user-id").as_deref(), Some("u-7"));
    }

    #[test]
    fn a_denial_is_the_authorizers_own_answer() {
        let mut worker = Worker::start(config());
        let (mut stream, mut steps) = worker.request(1, Some("Bearer bad"));
        steps.on_request_headers(&mut stream, true);
        let answer = FakeAnswer::new(403)
            .with_header("www-authenticate", "Bearer error=\"invalid_token\"")
            .with_header("x-internal", "not passed on")
            .with_header("content-type", "text/plain")
            .with_body(b"no");
        assert_eq!(
            steps.on_call_answer(&mut stream, &answer),
            Verdict::Answered
        );
        let reply = stream.reply().expect("the authorizer's answer");
        assert_eq!(reply.status, 403);
        assert_eq!(reply.body, b"no");
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer error=\"invalid_token\"")
        );
        assert_eq!(reply.header("x-internal"), None);
        assert_eq!(stream.counted(FILTER_NAME, "authorizer_denied"), 1);
    }

    #[test]
    fn a_missing_identity_is_refused_without_a_call() {
        let mut worker = Worker::start(config());
        let (mut stream, mut steps) = worker.request(1, None);
        assert_eq!(
            steps.on_request_headers(&mut stream, true),
            Verdict::Answered
        );
        assert_eq!(stream.reply().map(|r| r.status), Some(401));
        assert_eq!(stream.counted(FILTER_NAME, "denied.A401IS"), 1);
        assert_eq!(calls(&stream), 0);
    }

    #[test]
    fn an_authorizer_without_a_usable_answer_is_decided_by_the_failure_mode() {
        let cases = [
            (FakeAnswer::default(), "failure.no_answer"),
            (FakeAnswer::new(500), "failure.status"),
            (
                FakeAnswer::new(200).with_body(&[b'x'; 65]),
                "failure.too_large",
            ),
        ];
        for (answer, counter) in cases {
            let mut worker = Worker::start(config());
            let (mut stream, mut steps) = worker.request(1, Some("Bearer a"));
            steps.on_request_headers(&mut stream, true);
            assert_eq!(
                steps.on_call_answer(&mut stream, &answer),
                Verdict::Answered,
                "{counter}"
            );
            assert_eq!(stream.reply().map(|r| r.status), Some(503));
            assert_eq!(stream.counted(FILTER_NAME, counter), 1);
            assert_eq!(stream.counted(FILTER_NAME, "denied.A503AU"), 1);
        }
        let mut open = config();
        open["failure_mode"] = json!("allow");
        let mut worker = Worker::start(open);
        let (mut stream, mut steps) = worker.request(1, Some("Bearer a"));
        stream.calls_fail = true;
        assert_eq!(
            steps.on_request_headers(&mut stream, true),
            Verdict::Continue
        );
        assert_eq!(stream.counted(FILTER_NAME, "failure.dispatch"), 1);
        assert_eq!(stream.counted(FILTER_NAME, "failure_allowed"), 1);
    }

    #[test]
    fn requests_for_one_identity_wait_for_one_call_and_are_woken_with_its_decision() {
        let mut worker = Worker::start(config());
        let (mut first, mut leader) = worker.request(1, Some("Bearer a"));
        assert_eq!(leader.on_request_headers(&mut first, true), Verdict::Pause);
        let first = worker.done(first);
        let (mut second, mut waiter) = worker.request(2, Some("Bearer a"));
        assert_eq!(waiter.on_request_headers(&mut second, true), Verdict::Pause);
        assert_eq!(calls(&second), 0);
        assert_eq!(second.counted(FILTER_NAME, "coalesced"), 1);
        let mut second = worker.done(second);

        let mut first = first;
        first.shared = std::mem::take(&mut worker.shared);
        assert_eq!(
            leader.on_call_answer(&mut first, &allow("u-7")),
            Verdict::Continue
        );
        assert_eq!(woken(&first), [2]);
        second.shared = std::mem::take(&mut first.shared);
        assert_eq!(waiter.on_wake(&mut second), Verdict::Continue);
        assert_eq!(second.request_header("x-user-id").as_deref(), Some("u-7"));
        // A wake that finds nothing to do changes nothing.
        assert_eq!(waiter.on_wake(&mut second), Verdict::Pause);
    }

    #[test]
    fn when_the_asking_request_goes_away_a_waiter_asks_anew() {
        let mut worker = Worker::start(config());
        let (mut first, mut leader) = worker.request(1, Some("Bearer a"));
        leader.on_request_headers(&mut first, true);
        let mut first = worker.done(first);
        let (mut second, mut waiter) = worker.request(2, Some("Bearer a"));
        waiter.on_request_headers(&mut second, true);
        let mut second = worker.done(second);

        leader.on_stream_end(&mut first);
        assert_eq!(woken(&first), [2]);
        second.shared = std::mem::take(&mut worker.shared);
        assert_eq!(waiter.on_wake(&mut second), Verdict::Pause);
        assert_eq!(calls(&second), 1, "the waiter asks itself");
        assert_eq!(
            waiter.on_call_answer(&mut second, &allow("u-8")),
            Verdict::Continue
        );
    }

    #[test]
    fn a_waiter_that_goes_away_is_not_woken() {
        let mut worker = Worker::start(config());
        let (mut first, mut leader) = worker.request(1, Some("Bearer a"));
        leader.on_request_headers(&mut first, true);
        let first = worker.done(first);
        let (mut second, mut waiter) = worker.request(2, Some("Bearer a"));
        waiter.on_request_headers(&mut second, true);
        waiter.on_stream_end(&mut second);
        worker.done(second);
        let mut first = first;
        first.shared = std::mem::take(&mut worker.shared);
        assert_eq!(
            leader.on_call_answer(&mut first, &allow("u-7")),
            Verdict::Continue
        );
        assert_eq!(woken(&first), Vec::<u32>::new());
    }
}
