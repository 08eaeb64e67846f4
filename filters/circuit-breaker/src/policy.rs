//! The compiled policy: per-API rules, each a breaker whose record lives in
//! shared data under one fixed key, read on each request and updated with
//! compare-and-swap on each response. No proxy-wasm calls here; the host and
//! shared data are reached through [`Host`] and [`SharedStore`].

use crate::breaker::{Admission, Breaker, CallOutcome, Settings, State, Ticket, Transition};
use crate::config::StatusPattern;
use crate::degraded::WhenOpen;
use crate::fleet::Fleet;
use crate::outcome::Answer;
use gateway_common::config::OnFailure;
use gateway_common::error::{codes, GatewayError};
use gateway_common::host::{Host, RequestFacts};
use gateway_common::matching::{any_by_route_name, first_match_index, Matcher};
use gateway_common::store::{ensure_initialized, update, SharedStore, StoreError};

/// Shared-data keys are `gw.circuit_breaker.<rule name>`.
pub const KEY_PREFIX: &str = "gw.circuit_breaker.";
/// CAS retries before an update gives up (then counted as a store error).
const MAX_CAS_ATTEMPTS: u32 = 32;
/// `Retry-After` of a call refused because the record stayed contended.
const CONTENDED_RETRY_AFTER_MS: u64 = 1000;

/// HTTP statuses 0..=639 as a bit set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusSet([u64; 10]);

impl StatusSet {
    pub fn from_patterns(patterns: &[StatusPattern]) -> Self {
        let mut set = Self::default();
        for pattern in patterns {
            for status in pattern.first..=pattern.last {
                set.0[usize::from(status / 64)] |= 1 << (status % 64);
            }
        }
        set
    }

    pub fn contains(&self, status: u16) -> bool {
        self.0
            .get(usize::from(status / 64))
            .is_some_and(|word| word & (1 << (status % 64)) != 0)
    }
}

/// One API's breaker.
#[derive(Debug, Clone)]
pub struct Rule {
    pub(crate) name: String,
    /// `gw.circuit_breaker.<name>`: this breaker's record in shared data.
    pub(crate) key: String,
    /// The fleet record's key, for a rule in fleet mode.
    pub(crate) fleet_key: Option<String>,
    /// `gw.circuit_breaker.<name>.fleet`: this Envoy's view of the fleet record.
    pub(crate) view_key: String,
    pub(crate) matcher: Matcher,
    pub(crate) settings: Settings,
    pub(crate) failure_statuses: StatusSet,
    pub(crate) slow_call_ms: Option<u64>,
    pub(crate) when_open: WhenOpen,
}

impl Rule {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn when_open(&self) -> &WhenOpen {
        &self.when_open
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// What a finished call was; `None` when the upstream did not answer it
    /// (a local reply, or the client left), so it must not count.
    pub fn classify(&self, answer: Answer, elapsed_ms: u64) -> Option<CallOutcome> {
        let slow = self.slow_call_ms.is_some_and(|limit| elapsed_ms > limit);
        match answer {
            Answer::Upstream(status) => Some(CallOutcome {
                failed: self.failure_statuses.contains(status),
                slow,
            }),
            Answer::UpstreamFailure => Some(CallOutcome { failed: true, slow }),
            Answer::NotFromUpstream => None,
        }
    }

    /// Decides for a new call. Writes shared data only when the decision
    /// changes the record (half-opening, admitting a probe); a closed or
    /// plainly open breaker costs one read.
    ///
    /// Only a breaker that is not closed writes here, so a call that keeps
    /// losing the race for the record (other workers taking the probe slots)
    /// gets the degraded answer: probes are never over-admitted.
    pub fn admit(
        &self,
        store: &dyn SharedStore,
        now_ms: u64,
    ) -> Result<(Admission, Option<Transition>), StoreError> {
        let decision = update(store, &self.key, MAX_CAS_ATTEMPTS, |current| {
            let mut breaker = Breaker::decode(current, &self.settings);
            let before = breaker;
            let decision = breaker.admit(&self.settings, now_ms);
            let write = (breaker != before).then(|| breaker.encode(&self.settings));
            (write, decision)
        });
        match decision {
            Err(StoreError::Contention) => Ok((
                Admission::Reject {
                    retry_after_ms: CONTENDED_RETRY_AFTER_MS,
                },
                None,
            )),
            other => other,
        }
    }

    /// Records an admitted call's outcome, or releases it when the outcome
    /// is unknown (`None`).
    pub fn finish(
        &self,
        store: &dyn SharedStore,
        now_ms: u64,
        ticket: Ticket,
        outcome: Option<CallOutcome>,
    ) -> Result<Option<Transition>, StoreError> {
        update(store, &self.key, MAX_CAS_ATTEMPTS, |current| {
            let mut breaker = Breaker::decode(current, &self.settings);
            let before = breaker;
            let transition = match outcome {
                Some(outcome) => breaker.record(&self.settings, now_ms, ticket, outcome),
                None => {
                    breaker.release(ticket);
                    None
                }
            };
            let write = (breaker != before).then(|| breaker.encode(&self.settings));
            (write, transition)
        })
    }

    pub fn state(&self, store: &dyn SharedStore) -> Result<State, StoreError> {
        let (value, _) = store.get(&self.key)?;
        Ok(Breaker::decode(value.as_deref(), &self.settings).state())
    }
}

/// The compiled, immutable policy shared by every request.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    rules: Vec<Rule>,
    failure_mode: OnFailure,
    fleet: Option<Fleet>,
    uses_route_name: bool,
    /// Every fallback marker header, stripped from what clients send.
    fallback_headers: Vec<String>,
}

impl CircuitBreaker {
    pub fn new(rules: Vec<Rule>, failure_mode: OnFailure, fleet: Option<Fleet>) -> Self {
        let uses_route_name = any_by_route_name(&rules, |r| &r.matcher);
        let mut fallback_headers: Vec<String> = Vec::new();
        for rule in &rules {
            if let WhenOpen::Fallback(route) = &rule.when_open {
                if !fallback_headers.contains(&route.header) {
                    fallback_headers.push(route.header.clone());
                }
            }
        }
        Self {
            rules,
            failure_mode,
            fleet,
            uses_route_name,
            fallback_headers,
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn failure_mode(&self) -> OnFailure {
        self.failure_mode
    }

    /// What a call gets when shared data fails under it: `None` lets it
    /// through unprotected (`allow`), else the error it is answered (`deny`).
    pub fn on_store_failure(&self) -> Option<GatewayError> {
        match self.failure_mode {
            OnFailure::Allow => None,
            OnFailure::Deny => Some(codes::INTERNAL),
        }
    }

    /// The fleet store settings, when some rule shares its breaker.
    pub fn fleet(&self) -> Option<&Fleet> {
        self.fleet.as_ref()
    }

    pub fn fallback_headers(&self) -> &[String] {
        &self.fallback_headers
    }

    /// The first rule whose `match` holds for the request, and its index.
    pub fn matching_rule(&self, host: &dyn Host) -> Option<(usize, &Rule)> {
        let facts = RequestFacts::read(host, self.uses_route_name);
        let (index, _) = first_match_index(&self.rules, |rule| &rule.matcher, &facts.attrs())?;
        Some((index, self.rules.get(index)?))
    }

    /// Creates every breaker's record (closed) unless it exists, and each
    /// fleet rule's view; call when the configuration loads, so memory is
    /// fixed: one key per rule (two in fleet mode).
    pub fn initialize(&self, store: &dyn SharedStore, now_ms: u64) -> Result<(), StoreError> {
        for rule in &self.rules {
            ensure_initialized(store, &rule.key, &Breaker::default().encode(&rule.settings))?;
            if rule.fleet_key.is_some() {
                rule.initialize_view(store, now_ms)?;
            }
        }
        Ok(())
    }
}

pub use gateway_common::host::now_ms;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{compile, CircuitBreakerConfig};
    use gateway_common::config::parse_json;
    use gateway_common::host::FakeHost;
    use gateway_common::store::MemoryStore;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    fn breaker(json: &str) -> CircuitBreaker {
        compile(&parse_json::<CircuitBreakerConfig>(json.as_bytes()).unwrap()).unwrap()
    }

    fn request(path: &str) -> FakeHost {
        FakeHost::new()
            .with_header(":authority", "api.example.com")
            .with_header(":method", "GET")
            .with_header(":path", path)
    }

    const FAILED: Option<CallOutcome> = Some(CallOutcome {
        failed: true,
        slow: false,
    });
    const SUCCEEDED: Option<CallOutcome> = Some(CallOutcome {
        failed: false,
        slow: false,
    });

    #[test]
    fn requests_find_the_first_matching_rule() {
        let breaker = breaker(
            r#"{"rules":[
                {"name":"orders","match":{"path":{"prefix":"/orders"}}},
                {"name":"catalog","match":{"route_names":["catalog"]}},
                {"name":"rest","match":{"methods":["POST"]}}
            ]}"#,
        );
        let name = |host: &FakeHost| breaker.matching_rule(host).map(|(i, r)| (i, r.name()));
        assert_eq!(name(&request("/orders/1")), Some((0, "orders")));
        let catalog = request("/items").with_property(&["xds", "route_name"], "catalog");
        assert_eq!(name(&catalog), Some((1, "catalog")));
        assert_eq!(name(&request("/items")), None);
    }

    #[test]
    fn statuses_are_classified_by_the_rule() {
        let breaker = breaker(
            r#"{"rules":[{"name":"a","failure_statuses":[429,"5xx"],"slow_call_ms":100}]}"#,
        );
        let rule = &breaker.rules()[0];
        let outcome = |failed, slow| Some(CallOutcome { failed, slow });
        assert_eq!(
            rule.classify(Answer::Upstream(200), 100),
            outcome(false, false)
        );
        assert_eq!(
            rule.classify(Answer::Upstream(200), 101),
            outcome(false, true)
        );
        assert_eq!(
            rule.classify(Answer::Upstream(429), 0),
            outcome(true, false)
        );
        assert_eq!(
            rule.classify(Answer::Upstream(404), 0),
            outcome(false, false)
        );
        assert_eq!(
            rule.classify(Answer::UpstreamFailure, 5000),
            outcome(true, true)
        );
        assert_eq!(rule.classify(Answer::NotFromUpstream, 5000), None);
    }

    #[test]
    fn a_status_set_holds_exactly_its_patterns() {
        let set = StatusSet::from_patterns(&[
            StatusPattern {
                first: 100,
                last: 100,
            },
            StatusPattern {
                first: 590,
                last: 599,
            },
        ]);
        assert!(set.contains(100) && set.contains(590) && set.contains(599));
        assert!(!set.contains(101) && !set.contains(589) && !set.contains(600));
        assert!(!set.contains(u16::MAX));
    }

    #[test]
    fn memory_is_one_fixed_key_per_rule_whatever_the_traffic() {
        let breaker = breaker(r#"{"rules":[{"name":"a"},{"name":"b"}]}"#);
        let store = MemoryStore::new();
        breaker.initialize(&store, 0).unwrap();
        assert_eq!(store.key_count(), 2);
        let rule = &breaker.rules()[0];
        let size = store.get(rule.key()).unwrap().0.unwrap().len();
        for i in 0..10_000u64 {
            let now = i * 37;
            if let (Admission::Admit(ticket), _) = rule.admit(&store, now).unwrap() {
                let outcome = if i % 3 == 0 { FAILED } else { SUCCEEDED };
                rule.finish(&store, now, ticket, outcome).unwrap();
            }
        }
        assert_eq!(store.key_count(), 2);
        assert_eq!(store.get(rule.key()).unwrap().0.unwrap().len(), size);
    }

    #[test]
    fn initializing_again_keeps_the_state_of_a_running_breaker() {
        let breaker = breaker(r#"{"rules":[{"name":"a","trip":{"consecutive_failures":1}}]}"#);
        let store = MemoryStore::new();
        breaker.initialize(&store, 0).unwrap();
        let rule = &breaker.rules()[0];
        rule.finish(&store, 0, Ticket::Counted, FAILED).unwrap();
        assert_eq!(rule.state(&store), Ok(State::Open));
        breaker.initialize(&store, 0).unwrap();
        assert_eq!(rule.state(&store), Ok(State::Open));
    }

    #[test]
    fn a_closed_breaker_reads_shared_data_without_writing_it() {
        let breaker = breaker(r#"{"rules":[{"name":"a"}]}"#);
        let store = MemoryStore::new();
        breaker.initialize(&store, 0).unwrap();
        let rule = &breaker.rules()[0];
        let (_, version) = store.get(rule.key()).unwrap();
        for now in 0..100 {
            assert_eq!(
                rule.admit(&store, now).unwrap(),
                (Admission::Admit(Ticket::Counted), None)
            );
        }
        assert_eq!(store.get(rule.key()).unwrap().1, version);
    }

    #[test]
    fn the_breaker_trips_recovers_and_reports_each_transition_through_the_store() {
        let breaker = breaker(
            r#"{"rules":[{"name":"a","trip":{"consecutive_failures":2},
                "open":{"duration_ms":1000},"half_open":{"probes":1}}]}"#,
        );
        let store = MemoryStore::new();
        breaker.initialize(&store, 0).unwrap();
        let rule = &breaker.rules()[0];
        assert_eq!(rule.finish(&store, 0, Ticket::Counted, FAILED), Ok(None));
        let opened = rule
            .finish(&store, 0, Ticket::Counted, FAILED)
            .unwrap()
            .unwrap();
        assert_eq!((opened.to, opened.open_ms), (State::Open, Some(1000)));
        assert_eq!(
            rule.admit(&store, 999).unwrap(),
            (Admission::Reject { retry_after_ms: 1 }, None)
        );
        let (admission, half_open) = rule.admit(&store, 1000).unwrap();
        assert_eq!(half_open.map(|t| t.to), Some(State::HalfOpen));
        let Admission::Admit(probe) = admission else {
            panic!("{admission:?}")
        };
        let closed = rule
            .finish(&store, 1001, probe, SUCCEEDED)
            .unwrap()
            .unwrap();
        assert_eq!(closed.to, State::Closed);
        assert_eq!(rule.state(&store), Ok(State::Closed));
    }

    #[test]
    fn concurrent_workers_admit_exactly_the_configured_probes() {
        const PROBES: usize = 5;
        const WORKERS: usize = 8;
        let breaker = Arc::new(breaker(&format!(
            r#"{{"rules":[{{"name":"a","trip":{{"consecutive_failures":1}},
                "open":{{"duration_ms":1000}},"half_open":{{"probes":{PROBES}}}}}]}}"#
        )));
        let store = Arc::new(MemoryStore::new());
        breaker.initialize(&*store, 0).unwrap();
        for round in 0..20u64 {
            // Trip it (again), then let every worker race for the probes.
            let rule = &breaker.rules()[0];
            let start = round * 10_000;
            if rule.state(&*store).unwrap() != State::Open {
                rule.finish(&*store, start, Ticket::Counted, FAILED)
                    .unwrap();
            }
            let half_open_at = start + 5_000;
            let barrier = Arc::new(Barrier::new(WORKERS));
            let admitted = Arc::new(AtomicUsize::new(0));
            let half_opened = Arc::new(AtomicUsize::new(0));
            let handles: Vec<_> = (0..WORKERS)
                .map(|_| {
                    let (breaker, store) = (Arc::clone(&breaker), Arc::clone(&store));
                    let (barrier, admitted) = (Arc::clone(&barrier), Arc::clone(&admitted));
                    let half_opened = Arc::clone(&half_opened);
                    std::thread::spawn(move || {
                        let rule = &breaker.rules()[0];
                        barrier.wait();
                        let mut tickets = Vec::new();
                        for _ in 0..50 {
                            let (admission, transition) =
                                rule.admit(&*store, half_open_at).unwrap();
                            if transition.is_some_and(|t| t.to == State::HalfOpen) {
                                half_opened.fetch_add(1, Ordering::SeqCst);
                            }
                            if let Admission::Admit(ticket) = admission {
                                admitted.fetch_add(1, Ordering::SeqCst);
                                tickets.push(ticket);
                            }
                        }
                        tickets
                    })
                })
                .collect();
            let tickets: Vec<Ticket> = handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect();
            assert_eq!(admitted.load(Ordering::SeqCst), PROBES, "round {round}");
            assert_eq!(half_opened.load(Ordering::SeqCst), 1, "round {round}");
            // Odd rounds: one probe fails and the breaker opens again.
            let fail_one = round % 2 == 1;
            for (i, ticket) in tickets.into_iter().enumerate() {
                let outcome = if fail_one && i == 0 {
                    FAILED
                } else {
                    SUCCEEDED
                };
                rule.finish(&*store, half_open_at + 1, ticket, outcome)
                    .unwrap();
            }
            let expected = if fail_one { State::Open } else { State::Closed };
            assert_eq!(rule.state(&*store), Ok(expected), "round {round}");
        }
    }

    #[test]
    fn concurrent_outcomes_reported_as_recorded_are_all_counted() {
        let breaker = Arc::new(breaker(
            r#"{"rules":[{"name":"a","trip":{"min_calls":100000,"failure_rate_percent":100}}]}"#,
        ));
        let store = Arc::new(MemoryStore::new());
        breaker.initialize(&*store, 0).unwrap();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (breaker, store) = (Arc::clone(&breaker), Arc::clone(&store));
                std::thread::spawn(move || {
                    let rule = &breaker.rules()[0];
                    let mut recorded = 0;
                    for _ in 0..500 {
                        match rule.finish(&*store, 1000, Ticket::Counted, FAILED) {
                            Ok(_) => recorded += 1,
                            // Reported to the caller, who counts it as a store error.
                            Err(error) => assert_eq!(error, StoreError::Contention),
                        }
                    }
                    recorded
                })
            })
            .collect();
        let recorded: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(recorded > 2000, "{recorded}");
        let rule = &breaker.rules()[0];
        let (value, _) = store.get(rule.key()).unwrap();
        let record = Breaker::decode(value.as_deref(), &rule.settings);
        assert_eq!(record.window(&rule.settings, 1000).failures, recorded);
    }

    #[test]
    fn a_call_that_keeps_losing_the_race_for_a_probe_slot_is_refused() {
        /// Shared data where another worker always writes first.
        struct Contended(MemoryStore);
        impl SharedStore for Contended {
            fn get(&self, key: &str) -> Result<gateway_common::store::Versioned, StoreError> {
                self.0.get(key)
            }
            fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), StoreError> {
                Err(StoreError::CasMismatch)
            }
        }
        let breaker = breaker(r#"{"rules":[{"name":"a","trip":{"consecutive_failures":1}}]}"#);
        let store = Contended(MemoryStore::new());
        breaker.initialize(&store.0, 0).unwrap();
        let rule = &breaker.rules()[0];
        // Closed: nothing to write, so no race.
        assert_eq!(
            rule.admit(&store, 0),
            Ok((Admission::Admit(Ticket::Counted), None))
        );
        rule.finish(&store.0, 0, Ticket::Counted, FAILED).unwrap();
        assert_eq!(
            rule.admit(&store, 10_000),
            Ok((
                Admission::Reject {
                    retry_after_ms: 1000
                },
                None
            ))
        );
        assert_eq!(
            rule.finish(&store, 0, Ticket::Counted, FAILED),
            Ok(None),
            "an open breaker ignores the call, so nothing is written"
        );
    }

    #[test]
    fn failing_shared_data_lets_calls_through_or_answers_500_as_configured() {
        /// Shared data that refuses every operation.
        struct Failing;
        impl SharedStore for Failing {
            fn get(&self, _: &str) -> Result<gateway_common::store::Versioned, StoreError> {
                Err(StoreError::Unavailable)
            }
            fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), StoreError> {
                Err(StoreError::Unavailable)
            }
        }
        let allow = breaker(r#"{"rules":[{"name":"a","trip":{"consecutive_failures":1}}]}"#);
        assert!(allow.rules()[0].admit(&Failing, 0).is_err());
        assert_eq!(allow.on_store_failure(), None, "allow is the default");
        // `store_failure_mode`, the field's former name, still reads.
        for field in ["failure_mode", "store_failure_mode"] {
            let deny = breaker(&format!(
                r#"{{"rules":[{{"name":"a","trip":{{"consecutive_failures":1}}}}],"{field}":"deny"}}"#
            ));
            assert!(deny.rules()[0].admit(&Failing, 0).is_err());
            let error = deny.on_store_failure().expect("deny answers");
            assert_eq!((error.status, error.code), (500, "X500ER"), "{field}");
        }
    }

    #[test]
    fn the_host_clock_is_read_in_milliseconds() {
        let host = FakeHost::new();
        host.clock.set(Duration::from_micros(1_234_567));
        assert_eq!(now_ms(&host), 1234);
    }
}
