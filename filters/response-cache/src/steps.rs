//! response-cache's part in one request, written against the stream seam.
//! On the request headers: a request of a rule that may use the cache is
//! looked up; a hit is answered at once (the stored answer, `Age`,
//! `X-Ca-Caching: true`). On a miss the request fetches from the upstream,
//! unless another request of the worker already does for the same key: it
//! then waits to be woken and is answered from what that one stored. The
//! fetching request's answer, if it may be stored, is held whole (up to
//! `max_entry_bytes`) and stored when it ends, as the client gets it.

use crate::entry::CachedResponse;
use crate::policy::{Bypass, NotStored, ResponseCache, Rule};
use crate::FILTER_NAME;
use gateway_common::flights::{Flights, Joined};
use gateway_common::host::{from_upstream, now_ms, RequestFacts};
use gateway_common::metrics::{Counter, DefineMetrics};
use gateway_common::slots::{CacheKey, Stored};
use gateway_common::stream::{
    buffer_response_body, declared_response_length, response_status, BufferedBody, Level,
    PolicySteps, Stream, Verdict,
};
use std::cell::RefCell;
use std::rc::Rc;

/// `hit`, `miss`, `store`, `eviction`, `bypass` (a request that may not
/// use the cache), `not_stored` (an answer that may not be stored),
/// `too_large`, `coalesced` (a miss that waited for another request's).
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    hit: Counter,
    miss: Counter,
    store: Counter,
    eviction: Counter,
    bypass: Counter,
    not_stored: Counter,
    too_large: Counter,
    coalesced: Counter,
}

impl Metrics {
    pub fn define(host: &mut dyn DefineMetrics) -> Self {
        Self {
            hit: host.define_counter(FILTER_NAME, "hit"),
            miss: host.define_counter(FILTER_NAME, "miss"),
            store: host.define_counter(FILTER_NAME, "store"),
            eviction: host.define_counter(FILTER_NAME, "eviction"),
            bypass: host.define_counter(FILTER_NAME, "bypass"),
            not_stored: host.define_counter(FILTER_NAME, "not_stored"),
            too_large: host.define_counter(FILTER_NAME, "too_large"),
            coalesced: host.define_counter(FILTER_NAME, "coalesced"),
        }
    }
}

/// The compiled policy and the worker's fetches in flight (a waiter's mail
/// is empty: it looks the key up again when woken).
pub struct CacheWorker {
    pub policy: ResponseCache,
    flights: RefCell<Flights<()>>,
}

impl CacheWorker {
    pub fn new(policy: ResponseCache) -> Self {
        Self {
            policy,
            flights: RefCell::default(),
        }
    }
}

/// Where a request stands with the cache.
enum State {
    Idle,
    /// A miss it fetches from the upstream; others may wait for it.
    Fetching {
        key: CacheKey,
        rule: usize,
    },
    /// Its answer may be stored: held until it ends. `seen`: its status
    /// and headers as they were on the way back (Envoy's Wasm host shows
    /// them no more once they have gone on).
    Collecting {
        key: CacheKey,
        seen: Box<Seen>,
    },
    /// Another request fetches the same key.
    Waiting {
        key: CacheKey,
    },
}

/// An answer's status, how long it may be kept, and its headers to keep.
pub struct Seen {
    status: u16,
    /// The upstream's `Age`.
    age_ms: u64,
    ttl_ms: u64,
    headers: Vec<(String, String)>,
}

impl Seen {
    /// The answer as the stream shows it on its way back, or why it may
    /// not be stored. A header's lines are read together; the upstream's
    /// `Age` counts against its lifetime.
    fn read(rule: &Rule, stream: &dyn Stream) -> Result<Self, NotStored> {
        let status = response_status(stream).ok_or(NotStored::Status)?;
        let headers = stream.response_headers();
        let header = |name: &str| {
            let values: Vec<&str> = headers
                .iter()
                .filter(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str())
                .collect();
            (!values.is_empty()).then(|| values.join(","))
        };
        let lifetime_ms = rule.storable(Some(status), &header)?;
        let age_ms = header("age")
            .and_then(|age| age.trim().parse::<u64>().ok())
            .map_or(0, |seconds| seconds.saturating_mul(1000));
        if age_ms >= lifetime_ms {
            return Err(NotStored::CacheControl);
        }
        let headers = CachedResponse::keep_headers(headers).ok_or(NotStored::Headers)?;
        Ok(Seen {
            status,
            age_ms,
            ttl_ms: lifetime_ms - age_ms,
            headers,
        })
    }
}

pub struct CacheSteps {
    worker: Rc<CacheWorker>,
    metrics: Metrics,
    state: State,
}

impl CacheSteps {
    pub fn new(worker: Rc<CacheWorker>, metrics: Metrics) -> Self {
        Self {
            worker,
            metrics,
            state: State::Idle,
        }
    }

    /// The stored answer of `key`, replayed; `None` on a miss (a table
    /// that cannot be read, or an entry that does not decode, is one).
    fn answer_from_cache(&self, stream: &mut dyn Stream, key: &CacheKey) -> Option<Verdict> {
        let now = now_ms(&*stream);
        let payload = self
            .worker
            .policy
            .table
            .lookup(stream.shared_data(), key, now)
            .ok()
            .flatten()?;
        let cached = CachedResponse::decode(&payload)?;
        let age = (now.saturating_sub(cached.stored_at_ms) / 1000).to_string();
        let mut headers: Vec<(&str, &str)> = cached
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        headers.push(("age", &age));
        headers.push(("x-ca-caching", "true"));
        // A HEAD gets the GET's body too: Envoy sends a local reply to a
        // HEAD without it, with its length.
        stream.increment(self.metrics.hit, 1);
        stream.send_local_reply(u32::from(cached.status), &headers, &cached.body);
        Some(Verdict::Answered)
    }

    /// The fetch ended without an answer to share: the waiters decide
    /// again (look up, or fetch themselves).
    fn hand_back(&mut self, stream: &mut dyn Stream, key: &CacheKey) {
        self.state = State::Idle;
        let waiters = self
            .worker
            .flights
            .borrow_mut()
            .abandon(key, stream.stream_id());
        for waiter in waiters {
            stream.wake(waiter);
        }
    }

    fn not_stored(&mut self, stream: &mut dyn Stream, key: &CacheKey, why: NotStored) {
        stream.increment(self.metrics.not_stored, 1);
        if stream.logs(Level::Debug) {
            stream.log(
                Level::Debug,
                format_args!("{FILTER_NAME}: answer not stored: {why:?}"),
            );
        }
        self.hand_back(stream, key);
    }

    /// Stores the whole answer, its status and headers as they were seen
    /// on the way back (the same in every host: what policies nearer the
    /// client add is theirs per request), and wakes the waiters to be
    /// answered from it. An answer whose status a later policy changed
    /// (error-mapping) is not stored.
    fn store(&mut self, stream: &mut dyn Stream, key: CacheKey, seen: Seen, body: Vec<u8>) {
        let worker = Rc::clone(&self.worker);
        let policy = &worker.policy;
        if response_status(&*stream).is_some_and(|status| status != seen.status) {
            return self.not_stored(stream, &key, NotStored::Status);
        }
        let now = now_ms(&*stream);
        let ttl_ms = seen.ttl_ms;
        let answer = CachedResponse {
            status: seen.status,
            stored_at_ms: now.saturating_sub(seen.age_ms),
            headers: seen.headers,
            body,
        };
        let stored = policy.table.store(
            stream.shared_data(),
            &key,
            &answer.encode(),
            now,
            now.saturating_add(ttl_ms),
        );
        match stored {
            Ok(Stored::Kept) => stream.increment(self.metrics.store, 1),
            Ok(Stored::Evicted) => {
                stream.increment(self.metrics.store, 1);
                stream.increment(self.metrics.eviction, 1);
            }
            Ok(Stored::TooLarge) => stream.increment(self.metrics.too_large, 1),
            Err(_) => stream.increment(self.metrics.not_stored, 1),
        }
        self.state = State::Idle;
        let waiters = worker
            .flights
            .borrow_mut()
            .land(&key, stream.stream_id(), &());
        for waiter in waiters {
            stream.wake(waiter);
        }
    }

    /// A miss: fetch, or wait for the request of the worker that does.
    fn fetch_or_wait(
        &mut self,
        stream: &mut dyn Stream,
        key: CacheKey,
        rule: usize,
        head: bool,
    ) -> Verdict {
        // A HEAD answer has no body to store: a HEAD waits for a GET that
        // fetches the key, or goes on alone.
        if head && !self.worker.flights.borrow().in_flight(&key) {
            return Verdict::Continue;
        }
        let joined = self
            .worker
            .flights
            .borrow_mut()
            .join(key, stream.stream_id());
        match joined {
            Joined::Lead => {
                self.state = State::Fetching { key, rule };
                Verdict::Continue
            }
            Joined::Wait => {
                stream.increment(self.metrics.coalesced, 1);
                self.state = State::Waiting { key };
                Verdict::Pause
            }
        }
    }
}

impl CacheSteps {
    /// Holding the headers alone would not hold a body back.
    fn hold_while_waiting(&self) -> Verdict {
        if matches!(self.state, State::Waiting { .. }) {
            Verdict::Pause
        } else {
            Verdict::Continue
        }
    }
}

impl PolicySteps for CacheSteps {
    fn on_request_headers(&mut self, stream: &mut dyn Stream, end_of_stream: bool) -> Verdict {
        let worker = Rc::clone(&self.worker);
        let policy = &worker.policy;
        let facts = RequestFacts::read(&*stream, policy.rules.uses_route_name());
        let Some((index, _)) = policy.rules.first_for(&facts.attrs()) else {
            return Verdict::Continue;
        };
        let Some(rule) = policy.rules.get(index) else {
            return Verdict::Continue;
        };
        match rule.bypass(&facts.line.method, &*stream, end_of_stream) {
            Some(Bypass::Method) => return Verdict::Continue,
            Some(Bypass::Body | Bypass::Range | Bypass::Credentials) => {
                stream.increment(self.metrics.bypass, 1);
                return Verdict::Continue;
            }
            None => {}
        }
        let Some(key) = policy.key(index, &*stream, &facts.line) else {
            return Verdict::Continue;
        };
        let head = facts.line.method == "HEAD";
        if let Some(verdict) = self.answer_from_cache(stream, &key) {
            return verdict;
        }
        stream.increment(self.metrics.miss, 1);
        self.fetch_or_wait(stream, key, index, head)
    }

    fn on_request_body(&mut self, _: &mut dyn Stream, _: usize, _: bool) -> Verdict {
        self.hold_while_waiting()
    }

    fn on_request_trailers(&mut self, _: &mut dyn Stream) -> Verdict {
        self.hold_while_waiting()
    }

    fn on_wake(&mut self, stream: &mut dyn Stream) -> Verdict {
        let key = match std::mem::replace(&mut self.state, State::Idle) {
            State::Waiting { key } => key,
            // Not its wake (the gateway module shows a wake to every
            // policy): nothing changes.
            other => {
                self.state = other;
                return Verdict::Pause;
            }
        };
        self.worker
            .flights
            .borrow_mut()
            .take_mail(stream.stream_id());
        if let Some(verdict) = self.answer_from_cache(stream, &key) {
            return verdict;
        }
        // Nothing was stored: this request goes to the upstream itself.
        Verdict::Continue
    }

    fn on_response_headers(&mut self, stream: &mut dyn Stream, end_of_stream: bool) -> Verdict {
        let State::Fetching { key, rule } = std::mem::replace(&mut self.state, State::Idle) else {
            return Verdict::Continue;
        };
        if !from_upstream(&*stream) {
            // A later policy (or Envoy) answered: nothing to share.
            self.hand_back(stream, &key);
            return Verdict::Continue;
        }
        let worker = Rc::clone(&self.worker);
        let Some(policy_rule) = worker.policy.rules.get(rule) else {
            self.hand_back(stream, &key);
            return Verdict::Continue;
        };
        let seen = match Seen::read(policy_rule, &*stream) {
            Ok(seen) => seen,
            Err(why) => {
                self.not_stored(stream, &key, why);
                return Verdict::Continue;
            }
        };
        if declared_response_length(&*stream).is_some_and(|len| len > worker.policy.max_entry_bytes)
        {
            stream.increment(self.metrics.too_large, 1);
            self.hand_back(stream, &key);
            return Verdict::Continue;
        }
        if end_of_stream {
            self.store(stream, key, seen, Vec::new());
            return Verdict::Continue;
        }
        self.state = State::Collecting {
            key,
            seen: Box::new(seen),
        };
        Verdict::Continue
    }

    fn on_response_body(
        &mut self,
        stream: &mut dyn Stream,
        body_size: usize,
        end_of_stream: bool,
    ) -> Verdict {
        let State::Collecting { key, seen } = std::mem::replace(&mut self.state, State::Idle)
        else {
            return Verdict::Continue;
        };
        let max = self.worker.policy.max_entry_bytes;
        match buffer_response_body(&*stream, body_size, end_of_stream, max) {
            BufferedBody::Incomplete => {
                self.state = State::Collecting { key, seen };
                Verdict::Pause
            }
            BufferedBody::TooLarge => {
                stream.increment(self.metrics.too_large, 1);
                self.hand_back(stream, &key);
                Verdict::Continue
            }
            BufferedBody::Complete(body) => {
                self.store(stream, key, *seen, body);
                Verdict::Continue
            }
        }
    }

    fn on_stream_end(&mut self, stream: &mut dyn Stream) {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Fetching { key, .. } | State::Collecting { key, .. } => {
                self.hand_back(stream, &key)
            }
            State::Waiting { key, .. } => self
                .worker
                .flights
                .borrow_mut()
                .leave(&key, stream.stream_id()),
            State::Idle => {}
        }
    }
}
