//! Fleet mode: one breaker per rule for the whole fleet, its record in the
//! fleet store, so Envoys open together and half-open admits exactly the
//! configured probes fleet-wide. No host calls here: the adapter sends the
//! operations built here and hands back the answers.
//!
//! - Each Envoy keeps a **view** of the store's record in shared data (the
//!   record, its version, when the store last said so). A closed or plainly
//!   open breaker is decided from the view, without a call.
//! - A decision that changes the record (half-opening, admitting a probe,
//!   re-opening after stalled probes) is a **claim**: a compare-and-set of
//!   the record's version, sent before the request goes on. A claim that
//!   loses the race gets the degraded answer, so probes are never
//!   over-admitted.
//! - Outcomes are queued per worker and **synced** on the worker's tick:
//!   applied to the view's record by the same state machine as the local
//!   breaker ([`Breaker::record`]) and written with compare-and-set (on a
//!   lost race, applied again to the newer record). Recording never delays
//!   a response. The sync also reads the record when the view is older
//!   than a period, so idle Envoys learn of an opening.
//!
//! What the breaker may miss: calls an Envoy admits during the sync period
//! after another opened the breaker (their outcomes are ignored, as those of
//! calls admitted before an opening are), and outcomes beyond
//! [`MAX_PENDING`] runs per rule and worker while the store does not answer.

use crate::breaker::{
    Admission, Breaker, CallOutcome, Reason, Settings, State, Ticket, Transition,
};
use crate::policy::Rule;
use gateway_common::fleet::wire::{
    first_version, Failure, Op, OpResult, RecordSwap, State as OpState,
};
use gateway_common::fleet::{self, FailureMode, Store};
use gateway_common::store::{update, SharedStore, StoreError};
use std::sync::Arc;

pub const DEFAULT_SYNC_MS: u64 = 100;
pub const MIN_SYNC_MS: u64 = 10;
pub const MAX_SYNC_MS: u64 = 10_000;
/// Runs of outcomes a worker keeps per rule until the store takes them;
/// beyond, outcomes are dropped (and counted).
pub const MAX_PENDING: usize = 1024;
/// `Retry-After` of a call whose claim lost the race for the record.
const CONTENDED_RETRY_AFTER_MS: u64 = 1000;
const VIEW_HEADER_LEN: usize = 16;
/// CAS retries of a view update in shared data.
const MAX_VIEW_ATTEMPTS: u32 = 32;
/// A record lives this long after its last write, beyond the longest the
/// breaker waits (its window, its open duration and its probe timeout).
const RECORD_GRACE_MS: u64 = 60_000;

/// The compiled `fleet` settings.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub store: Arc<Store>,
    pub failure_mode: FailureMode,
    pub sync_ms: u64,
}

impl Fleet {
    pub fn new(store: Store, failure_mode: FailureMode, sync_ms: u64) -> Self {
        Self {
            store: Arc::new(store),
            failure_mode,
            sync_ms,
        }
    }

    /// A rule's record in the store: `<prefix>b:<rule>:<digest of its settings>`.
    pub fn key(&self, rule: &Rule) -> String {
        let settings = rule.settings.fingerprint();
        let digest = fleet::digest(&[settings.as_bytes()]);
        self.store.key("b", &rule.name, &[&digest])
    }

    /// A view older than this is stale. A worker reads the record when its
    /// view is a period old, at its next tick, so a healthy store refreshes
    /// views at least every two periods; four and a timeout leave room for
    /// ticks that a loaded worker runs late.
    pub fn stale_after_ms(&self) -> u64 {
        let timeout_ms = u64::try_from(self.store.timeout.as_millis()).unwrap_or(u64::MAX);
        self.sync_ms.saturating_mul(4).saturating_add(timeout_ms)
    }
}

/// This Envoy's copy of a rule's record: the store's last word and when it
/// came (`gw.circuit_breaker.<rule>.fleet` in shared data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// The record's version in the store (0: none written yet).
    pub version: u64,
    /// When the call that brought it was sent.
    pub synced_ms: u64,
    pub breaker: Breaker,
}

impl View {
    /// What a configuration starts from: a closed breaker, counted as
    /// fresh until the first sync is due.
    pub fn initial(now_ms: u64) -> Self {
        Self {
            version: 0,
            synced_ms: now_ms,
            breaker: Breaker::default(),
        }
    }

    pub fn encode(&self, settings: &Settings) -> Vec<u8> {
        let mut out = Vec::with_capacity(VIEW_HEADER_LEN + 32 + 20 * usize::from(settings.buckets));
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.synced_ms.to_le_bytes());
        out.extend_from_slice(&self.breaker.encode(settings));
        out
    }

    pub fn decode(bytes: &[u8], settings: &Settings) -> Option<Self> {
        let (header, record) = bytes.split_at_checked(VIEW_HEADER_LEN)?;
        let (version, synced) = header.split_at(8);
        Some(Self {
            version: u64::from_le_bytes(version.try_into().ok()?),
            synced_ms: u64::from_le_bytes(synced.try_into().ok()?),
            breaker: Breaker::decode(Some(record), settings),
        })
    }

    pub fn is_fresh(&self, fleet: &Fleet, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.synced_ms) <= fleet.stale_after_ms()
    }

    /// The view after the store's answer to a swap or read of `sent`'s
    /// version, made by a call sent at `sent_ms`: the written record, the
    /// record the store holds instead, or (no value) the same record, or
    /// none at all when its version is not the one sent (the record expired).
    fn after(
        sent: &View,
        written: Option<Breaker>,
        result: &OpResult,
        settings: &Settings,
        sent_ms: u64,
    ) -> Result<Self, Failure> {
        let breaker = match (result.state, written, &result.value) {
            (OpState::Done, Some(breaker), _) => breaker,
            (OpState::Refused, _, Some(value)) => {
                let bytes = fleet::unhex(value)
                    .ok_or_else(|| Failure::BadReply("a record that is not hex".into()))?;
                Breaker::decode(Some(&bytes), settings)
            }
            (OpState::Refused, _, None) if result.current == sent.version => sent.breaker,
            (OpState::Refused, _, None) => Breaker::default(),
            (state, _, _) => {
                return Err(Failure::BadReply(format!(
                    "record state {state:?} for a record swap"
                )))
            }
        };
        Ok(Self {
            version: result.current,
            synced_ms: sent_ms,
            breaker,
        })
    }
}

/// How a fleet rule decides a new call.
#[derive(Debug, Clone, PartialEq)]
pub enum FleetAdmission {
    /// The view decides: closed, open, or half-open with every probe out.
    Decided(Admission),
    /// The decision changes the record: the store must take it first.
    Claim(Box<Claim>),
    /// The store has not answered for too long: the failure mode decides.
    Stale,
}

/// A decision that changes the record, waiting for the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    sent_ms: u64,
    view: View,
    breaker: Breaker,
    admission: Admission,
    transition: Option<Transition>,
}

/// What the store's answer makes of a claim.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimVerdict {
    /// The store took the change: the claim's decision holds.
    Taken {
        admission: Admission,
        transition: Option<Transition>,
        view: View,
    },
    /// The record moved on first (another Envoy or worker): the call gets
    /// the degraded answer, as one losing the race for the local record does.
    Lost {
        retry_after_ms: u64,
        view: View,
    },
    /// An earlier check of the request refused it; nothing was claimed.
    NotRun,
    Failed(Failure),
}

/// A run of equal outcomes of one rule's calls, in one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    /// When the latest of them finished.
    at_ms: u64,
    ticket: Ticket,
    /// `None`: unknown (a local reply, the client left): a probe is given back.
    outcome: Option<CallOutcome>,
    count: u32,
}

/// A worker's outcomes of one rule's calls, waiting for the next sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcomes {
    runs: Vec<Run>,
}

impl Outcomes {
    /// Queues a call's outcome; `false` when the queue is full and the
    /// outcome is dropped.
    pub fn push(
        &mut self,
        settings: &Settings,
        at_ms: u64,
        ticket: Ticket,
        outcome: Option<CallOutcome>,
    ) -> bool {
        let bucket = u64::from(settings.bucket_ms.max(1));
        if let Some(last) = self.runs.last_mut() {
            let same = last.ticket == ticket
                && last.outcome == outcome
                && last.at_ms / bucket == at_ms / bucket
                && last.count < u32::MAX;
            if same {
                last.count += 1;
                last.at_ms = last.at_ms.max(at_ms);
                return true;
            }
        }
        if self.runs.len() >= MAX_PENDING {
            return false;
        }
        self.runs.push(Run {
            at_ms,
            ticket,
            outcome,
            count: 1,
        });
        true
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Puts back runs taken for a sync that did not land, before the ones
    /// queued since (the oldest are dropped beyond [`MAX_PENDING`]);
    /// returns how many outcomes were dropped.
    fn restore(&mut self, mut taken: Vec<Run>) -> u64 {
        taken.append(&mut self.runs);
        let excess = taken.len().saturating_sub(MAX_PENDING);
        let dropped = taken.drain(..excess).map(|run| u64::from(run.count)).sum();
        self.runs = taken;
        dropped
    }
}

/// Applies queued runs to a record, returning the state changes.
fn apply(breaker: &mut Breaker, settings: &Settings, runs: &[Run]) -> Vec<Transition> {
    let mut transitions = Vec::new();
    for run in runs {
        for _ in 0..run.count {
            match run.outcome {
                Some(outcome) => {
                    if let Some(t) = breaker.record(settings, run.at_ms, run.ticket, outcome) {
                        transitions.push(t);
                    }
                }
                None => breaker.release(run.ticket),
            }
        }
    }
    transitions
}

/// One rule's part of a sync.
#[derive(Debug, Clone, PartialEq)]
struct RuleSync {
    rule: usize,
    view: View,
    taken: Vec<Run>,
    /// The record with the runs applied, when they changed it.
    written: Option<(Breaker, Vec<Transition>)>,
}

/// A worker's sync in flight: one operation per rule in it, in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SyncPlan {
    sent_ms: u64,
    rules: Vec<RuleSync>,
}

/// A rule's view after a sync, and the state changes this worker's
/// outcomes made.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncUpdate {
    pub rule: usize,
    pub view: View,
    pub transitions: Vec<Transition>,
}

/// What a sync's answer brought.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Synced {
    pub updates: Vec<SyncUpdate>,
    /// Outcomes dropped because the queue was full.
    pub dropped: u64,
    /// A swap lost the race: sync again now, on the newer record.
    pub again: bool,
}

impl Rule {
    /// This rule's record in the fleet store, when the rule is in fleet mode.
    pub fn fleet_key(&self) -> Option<&str> {
        self.fleet_key.as_deref()
    }

    /// This Envoy's view of the fleet record.
    pub fn view(&self, store: &dyn SharedStore) -> Result<Option<View>, StoreError> {
        let (value, _) = store.get(&self.view_key)?;
        Ok(value.and_then(|bytes| View::decode(&bytes, &self.settings)))
    }

    /// Creates the view (closed, fresh as of `now_ms`) unless it exists.
    pub fn initialize_view(&self, store: &dyn SharedStore, now_ms: u64) -> Result<(), StoreError> {
        gateway_common::store::ensure_initialized(
            store,
            &self.view_key,
            &View::initial(now_ms).encode(&self.settings),
        )
    }

    /// Keeps `view` unless this Envoy's view is newer (brought by a call
    /// sent later, or of a later version sent in the same millisecond);
    /// returns the state the view had before, when `view` replaced it.
    /// Views are ordered by when their call was sent, not by version,
    /// because a record that expired (or a restarted Redis) starts again
    /// from version 0; were two calls executed out of their order, the view
    /// kept a moment too long costs a lost claim or a read, as every write
    /// is checked by the store.
    pub fn store_view(
        &self,
        store: &dyn SharedStore,
        view: &View,
    ) -> Result<Option<State>, StoreError> {
        update(store, &self.view_key, MAX_VIEW_ATTEMPTS, |current| {
            let current = current.and_then(|bytes| View::decode(bytes, &self.settings));
            let newer = current
                .is_none_or(|old| (view.synced_ms, view.version) > (old.synced_ms, old.version));
            if !newer {
                return (None, None);
            }
            let before = current.map_or(State::Closed, |old| old.breaker.state());
            (Some(view.encode(&self.settings)), Some(before))
        })
    }

    /// How long the record lives in the store after a write.
    fn record_ttl_ms(&self) -> u64 {
        let settings = &self.settings;
        settings
            .window_ms()
            .saturating_add(settings.max_open_ms)
            .saturating_add(settings.probe_timeout_ms)
            .saturating_mul(2)
            .saturating_add(RECORD_GRACE_MS)
    }

    /// `random`: fresh random bits for the version of a record this write
    /// creates (see [`RecordSwap::first_version`]).
    fn swap(&self, view: &View, written: Option<&Breaker>, random: u64) -> Op {
        Op::Record(RecordSwap {
            key: self.fleet_key.clone().unwrap_or_default(),
            version: view.version,
            first_version: first_version(random),
            value: written.map(|breaker| fleet::hex(&breaker.encode(&self.settings))),
            ttl_ms: self.record_ttl_ms(),
        })
    }

    /// Decides a new call from this Envoy's view.
    pub fn admit_fleet(&self, view: Option<View>, fleet: &Fleet, now_ms: u64) -> FleetAdmission {
        let Some(view) = view.filter(|view| view.is_fresh(fleet, now_ms)) else {
            return FleetAdmission::Stale;
        };
        let mut breaker = view.breaker;
        let (admission, transition) = breaker.admit(&self.settings, now_ms);
        if breaker == view.breaker {
            return FleetAdmission::Decided(admission);
        }
        FleetAdmission::Claim(Box::new(Claim {
            sent_ms: now_ms,
            view,
            breaker,
            admission,
            transition,
        }))
    }

    /// The claim as a compare-and-set of the record; `random`: fresh bits.
    pub fn claim_ops(&self, claim: &Claim, random: u64) -> Vec<Op> {
        vec![self.swap(&claim.view, Some(&claim.breaker), random)]
    }

    /// Decides the claimed call from the store's answer to [`Rule::claim_ops`].
    pub fn conclude_claim(
        &self,
        claim: Claim,
        answer: &Result<Vec<OpResult>, Failure>,
    ) -> ClaimVerdict {
        let result = match answer.as_deref() {
            Ok([result]) => result,
            Ok(results) => {
                return ClaimVerdict::Failed(Failure::BadReply(format!(
                    "{} results for one claim",
                    results.len()
                )))
            }
            Err(failure) => return ClaimVerdict::Failed(failure.clone()),
        };
        if result.state == OpState::NotRun {
            return ClaimVerdict::NotRun;
        }
        let view = match View::after(
            &claim.view,
            Some(claim.breaker),
            result,
            &self.settings,
            claim.sent_ms,
        ) {
            Ok(view) => view,
            Err(failure) => return ClaimVerdict::Failed(failure),
        };
        if result.state == OpState::Done {
            ClaimVerdict::Taken {
                admission: claim.admission,
                transition: claim.transition,
                view,
            }
        } else {
            ClaimVerdict::Lost {
                retry_after_ms: CONTENDED_RETRY_AFTER_MS,
                view,
            }
        }
    }
}

impl crate::policy::CircuitBreaker {
    /// A worker's sync: for each fleet rule with queued outcomes, their
    /// effect on the view's record as a compare-and-set; for one whose
    /// view is a sync period old, a read. `views` is indexed by rule.
    pub fn sync_ops(
        &self,
        fleet: &Fleet,
        views: &[Option<View>],
        outcomes: &mut [Outcomes],
        now_ms: u64,
        random: u64,
    ) -> (Vec<Op>, SyncPlan) {
        let mut ops = Vec::new();
        let mut plan = SyncPlan {
            sent_ms: now_ms,
            rules: Vec::new(),
        };
        for (index, rule) in self.rules().iter().enumerate() {
            if rule.fleet_key.is_none() {
                continue;
            }
            let view = views
                .get(index)
                .copied()
                .flatten()
                .unwrap_or_else(|| View::initial(0));
            let taken = outcomes
                .get_mut(index)
                .map(|queue| std::mem::take(&mut queue.runs))
                .unwrap_or_default();
            let mut breaker = view.breaker;
            let transitions = apply(&mut breaker, &rule.settings, &taken);
            let written = (breaker != view.breaker).then_some((breaker, transitions));
            let due = now_ms.saturating_sub(view.synced_ms) >= fleet.sync_ms;
            if written.is_none() && !due {
                continue;
            }
            // Runs that changed nothing are done with; the others go back
            // to the queue unless the store takes them.
            let taken = if written.is_some() { taken } else { Vec::new() };
            let random = random.rotate_left(index as u32 % 64) ^ index as u64;
            ops.push(rule.swap(&view, written.as_ref().map(|(b, _)| b), random));
            plan.rules.push(RuleSync {
                rule: index,
                view,
                taken,
                written,
            });
        }
        (ops, plan)
    }

    /// The views and state changes of a sync's answer; on failure, the
    /// outcomes go back to their queues for the next sync.
    pub fn conclude_sync(
        &self,
        plan: SyncPlan,
        answer: &Result<Vec<OpResult>, Failure>,
        outcomes: &mut [Outcomes],
    ) -> (Synced, Option<Failure>) {
        let mut synced = Synced::default();
        let results = match answer {
            Ok(results) if results.len() == plan.rules.len() => Ok(results),
            Ok(results) => Err(Failure::BadReply(format!(
                "{} results for {} records",
                results.len(),
                plan.rules.len()
            ))),
            Err(failure) => Err(failure.clone()),
        };
        let results = match results {
            Ok(results) => results,
            Err(failure) => {
                for part in plan.rules {
                    synced.dropped += restore(outcomes, part.rule, part.taken);
                }
                return (synced, Some(failure));
            }
        };
        let mut failure = None;
        for (part, result) in plan.rules.into_iter().zip(results) {
            let Some(rule) = self.rules().get(part.rule) else {
                continue;
            };
            let written = part.written.as_ref().map(|(breaker, _)| *breaker);
            match View::after(&part.view, written, result, &rule.settings, plan.sent_ms) {
                Ok(view) => {
                    let taken = result.state == OpState::Done;
                    if !taken && part.written.is_some() {
                        synced.again = true;
                        synced.dropped += restore(outcomes, part.rule, part.taken);
                    }
                    let transitions = match part.written {
                        Some((_, transitions)) if taken => transitions,
                        _ => Vec::new(),
                    };
                    synced.updates.push(SyncUpdate {
                        rule: part.rule,
                        view,
                        transitions,
                    });
                }
                Err(bad) => {
                    synced.dropped += restore(outcomes, part.rule, part.taken);
                    failure = Some(bad);
                }
            }
        }
        (synced, failure)
    }
}

fn restore(outcomes: &mut [Outcomes], rule: usize, taken: Vec<Run>) -> u64 {
    match outcomes.get_mut(rule) {
        Some(queue) if !taken.is_empty() => queue.restore(taken),
        _ => 0,
    }
}

/// A state change this Envoy learned from the store.
pub fn observed(from: State, view: &View, now_ms: u64) -> Transition {
    Transition {
        from,
        to: view.breaker.state(),
        reason: Reason::SeenInFleet,
        open_ms: view
            .breaker
            .open_until_ms()
            .map(|until| until.saturating_sub(now_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{compile, CircuitBreakerConfig};
    use crate::policy::CircuitBreaker;
    use gateway_common::config::parse_json;
    use gateway_common::fleet::model::ScriptModel;
    use gateway_common::store::MemoryStore;

    const FAIL: Option<CallOutcome> = Some(CallOutcome {
        failed: true,
        slow: false,
    });
    const OK: Option<CallOutcome> = Some(CallOutcome {
        failed: false,
        slow: false,
    });

    fn breaker(json: &str) -> CircuitBreaker {
        compile(&parse_json::<CircuitBreakerConfig>(json.as_bytes()).unwrap()).unwrap()
    }

    /// Three failures in a row open the breaker for 1 s; two probes.
    fn orders() -> CircuitBreaker {
        breaker(
            r#"{"fleet": {"store": {"cluster": "redis"}, "sync_ms": 100},
                "rules": [{"name": "orders", "trip": {"consecutive_failures": 3},
                           "open": {"duration_ms": 1000}, "half_open": {"probes": 2}}]}"#,
        )
    }

    /// One Envoy: its shared data (views) and one worker's queues.
    struct Envoy {
        shared: MemoryStore,
        outcomes: Vec<Outcomes>,
    }

    impl Envoy {
        fn start(breaker: &CircuitBreaker, now: u64) -> Self {
            let shared = MemoryStore::new();
            breaker.initialize(&shared, now).unwrap();
            Self {
                shared,
                outcomes: vec![Outcomes::default(); breaker.rules().len()],
            }
        }

        fn view(&self, breaker: &CircuitBreaker) -> View {
            breaker.rules()[0].view(&self.shared).unwrap().unwrap()
        }

        fn queue(
            &mut self,
            breaker: &CircuitBreaker,
            now: u64,
            ticket: Ticket,
            outcome: Option<CallOutcome>,
        ) {
            let rule = &breaker.rules()[0];
            assert!(self.outcomes[0].push(&rule.settings, now, ticket, outcome));
        }

        /// Builds this worker's sync, for the store to answer later.
        fn sync_ops(&mut self, breaker: &CircuitBreaker, now: u64) -> (Vec<Op>, SyncPlan) {
            let views: Vec<Option<View>> = breaker
                .rules()
                .iter()
                .map(|rule| rule.view(&self.shared).unwrap())
                .collect();
            let fleet = breaker.fleet().unwrap();
            breaker.sync_ops(fleet, &views, &mut self.outcomes, now, now ^ 0x5eed)
        }

        fn conclude_sync(
            &mut self,
            breaker: &CircuitBreaker,
            plan: SyncPlan,
            answer: &Result<Vec<OpResult>, Failure>,
        ) -> (Synced, Option<Failure>) {
            let (synced, failure) = breaker.conclude_sync(plan, answer, &mut self.outcomes);
            for update in &synced.updates {
                breaker.rules()[update.rule]
                    .store_view(&self.shared, &update.view)
                    .unwrap();
            }
            (synced, failure)
        }

        /// A whole sync against the store, again after a lost race.
        fn sync(&mut self, breaker: &CircuitBreaker, store: &mut ScriptModel, now: u64) -> Synced {
            let mut last = Synced::default();
            for _ in 0..3 {
                let (ops, plan) = self.sync_ops(breaker, now);
                if ops.is_empty() {
                    break;
                }
                store.now_ms = now;
                let answer = Ok(store.run(&ops));
                let (synced, failure) = self.conclude_sync(breaker, plan, &answer);
                assert_eq!(failure, None);
                let again = synced.again;
                last = synced;
                if !again {
                    break;
                }
            }
            last
        }

        /// Decides a call; a claim is sent to the store at once.
        fn admit(&self, breaker: &CircuitBreaker, store: &mut ScriptModel, now: u64) -> Admission {
            let rule = &breaker.rules()[0];
            let view = rule.view(&self.shared).unwrap();
            match rule.admit_fleet(view, breaker.fleet().unwrap(), now) {
                FleetAdmission::Decided(admission) => admission,
                FleetAdmission::Claim(claim) => self.conclude(breaker, store, *claim, now),
                FleetAdmission::Stale => panic!("stale view at {now}"),
            }
        }

        fn claim(&self, breaker: &CircuitBreaker, now: u64) -> Option<Claim> {
            let rule = &breaker.rules()[0];
            match rule.admit_fleet(
                rule.view(&self.shared).unwrap(),
                breaker.fleet().unwrap(),
                now,
            ) {
                FleetAdmission::Claim(claim) => Some(*claim),
                _ => None,
            }
        }

        fn conclude(
            &self,
            breaker: &CircuitBreaker,
            store: &mut ScriptModel,
            claim: Claim,
            now: u64,
        ) -> Admission {
            let rule = &breaker.rules()[0];
            store.now_ms = now;
            let answer = Ok(store.run(&rule.claim_ops(&claim, now)));
            match rule.conclude_claim(claim, &answer) {
                ClaimVerdict::Taken {
                    admission, view, ..
                } => {
                    rule.store_view(&self.shared, &view).unwrap();
                    admission
                }
                ClaimVerdict::Lost {
                    retry_after_ms,
                    view,
                } => {
                    rule.store_view(&self.shared, &view).unwrap();
                    Admission::Reject { retry_after_ms }
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn the_record_key_names_the_rule_and_its_settings() {
        let a = orders();
        let key = a.rules()[0].fleet_key().unwrap().to_string();
        assert!(key.starts_with("gw:b:orders:"), "{key}");
        assert_eq!(key.len(), "gw:b:orders:".len() + 32);
        // Other settings of the rule: another record.
        let b = breaker(
            r#"{"fleet": {"store": {"cluster": "redis"}},
                "rules": [{"name": "orders", "trip": {"consecutive_failures": 4},
                           "open": {"duration_ms": 1000}, "half_open": {"probes": 2}}]}"#,
        );
        assert_ne!(b.rules()[0].fleet_key().unwrap(), key);
        assert_eq!(orders().rules()[0].fleet_key().unwrap(), key);
    }

    #[test]
    fn fleet_settings_are_checked_and_rules_may_stay_local() {
        let error = |json: &str| {
            compile(&parse_json::<CircuitBreakerConfig>(json.as_bytes()).unwrap())
                .unwrap_err()
                .to_string()
        };
        let e = error(
            r#"{"fleet": {"store": {"cluster": "redis"}, "sync_ms": 5}, "rules": [{"name": "a"}]}"#,
        );
        assert!(
            e.contains("fleet.sync_ms") && e.contains("between 10 and 10000"),
            "{e}"
        );
        let e = error(r#"{"fleet": {"store": {"cluster": ""}}, "rules": [{"name": "a"}]}"#);
        assert!(e.contains("fleet.store.cluster"), "{e}");
        let e = error(r#"{"rules": [{"name": "a", "fleet": true}]}"#);
        assert!(
            e.contains("rules[0].fleet") && e.contains("needs the filter's `fleet`"),
            "{e}"
        );
        let mixed = breaker(
            r#"{"fleet": {"store": {"cluster": "redis"}, "failure_mode": "deny"},
                "rules": [{"name": "a"}, {"name": "b", "fleet": false}]}"#,
        );
        assert!(mixed.rules()[0].fleet_key().is_some());
        assert!(mixed.rules()[1].fleet_key().is_none());
        let fleet = mixed.fleet().unwrap();
        assert_eq!(
            (fleet.sync_ms, fleet.failure_mode),
            (100, FailureMode::Deny)
        );
        assert_eq!(fleet.stale_after_ms(), 450);
        assert!(breaker(r#"{"rules": [{"name": "a"}]}"#).fleet().is_none());
    }

    #[test]
    fn envoys_open_together_and_recover_together() {
        let breaker = orders();
        let mut store = ScriptModel::new();
        let t0 = 1_000_000;
        let mut a = Envoy::start(&breaker, t0);
        let mut b = Envoy::start(&breaker, t0);
        assert_eq!(
            a.admit(&breaker, &mut store, t0),
            Admission::Admit(Ticket::Counted)
        );
        // Two failures on A, one on B: three in a row for the fleet.
        a.queue(&breaker, t0, Ticket::Counted, FAIL);
        a.queue(&breaker, t0 + 1, Ticket::Counted, FAIL);
        b.queue(&breaker, t0 + 2, Ticket::Counted, FAIL);
        assert!(a.sync(&breaker, &mut store, t0 + 10).updates[0]
            .transitions
            .is_empty());
        let synced = b.sync(&breaker, &mut store, t0 + 20);
        let opened = &synced.updates[0].transitions;
        assert_eq!(opened.len(), 1);
        assert_eq!((opened[0].from, opened[0].to), (State::Closed, State::Open));
        assert_eq!(opened[0].reason, Reason::ConsecutiveFailures(3));
        // A learns it at its next sync (a read: it has nothing to send).
        assert_eq!(
            a.admit(&breaker, &mut store, t0 + 50),
            Admission::Admit(Ticket::Counted)
        );
        let (ops, _) = a.sync_ops(&breaker, t0 + 50);
        assert!(ops.is_empty(), "not due yet: {ops:?}");
        let read = a.sync(&breaker, &mut store, t0 + 120);
        assert!(read.updates[0].transitions.is_empty());
        assert_eq!(a.view(&breaker).breaker.state(), State::Open);
        assert_eq!(
            a.admit(&breaker, &mut store, t0 + 120),
            Admission::Reject {
                retry_after_ms: 882
            }
        );
        // After the open duration both half-open on the same record: one
        // probe each, then every further call is refused fleet-wide.
        let t1 = t0 + 1_100;
        a.sync(&breaker, &mut store, t1 - 10);
        b.sync(&breaker, &mut store, t1 - 10);
        const PROBE: Admission = Admission::Admit(Ticket::Probe { generation: 1 });
        const REFUSED: Admission = Admission::Reject {
            retry_after_ms: 1000,
        };
        // A takes the first probe; B's view is then older than the record,
        // so its claim loses and it reads; B takes the second.
        let turns = [
            (&a, PROBE),
            (&b, REFUSED),
            (&b, PROBE),
            (&b, REFUSED),
            (&a, REFUSED),
        ];
        for (i, (envoy, expected)) in turns.into_iter().enumerate() {
            assert_eq!(envoy.admit(&breaker, &mut store, t1), expected, "turn {i}");
        }
        // Both probes succeed, on different Envoys: the fleet closes.
        a.queue(&breaker, t1 + 5, Ticket::Probe { generation: 1 }, OK);
        b.queue(&breaker, t1 + 6, Ticket::Probe { generation: 1 }, OK);
        a.sync(&breaker, &mut store, t1 + 10);
        let closed = b.sync(&breaker, &mut store, t1 + 10);
        assert_eq!(closed.updates[0].transitions[0].to, State::Closed);
        a.sync(&breaker, &mut store, t1 + 200);
        assert_eq!(a.view(&breaker).breaker.state(), State::Closed);
    }

    #[test]
    fn half_open_admits_exactly_the_probes_fleet_wide_under_concurrent_claims() {
        let breaker = breaker(
            r#"{"fleet": {"store": {"cluster": "redis"}},
                "rules": [{"name": "orders", "trip": {"consecutive_failures": 1},
                           "open": {"duration_ms": 1000}, "half_open": {"probes": 5}}]}"#,
        );
        let mut store = ScriptModel::new();
        let t0 = 5_000_000;
        let mut envoys: Vec<Envoy> = (0..3).map(|_| Envoy::start(&breaker, t0)).collect();
        envoys[0].queue(&breaker, t0, Ticket::Counted, FAIL);
        envoys[0].sync(&breaker, &mut store, t0);
        for envoy in &mut envoys[1..] {
            envoy.sync(&breaker, &mut store, t0 + 100);
        }
        let t1 = t0 + 1_200;
        for envoy in &mut envoys {
            envoy.sync(&breaker, &mut store, t1 - 10);
        }
        let mut probes = 0;
        // Rounds of 4 concurrent calls per Envoy: each claims from the view
        // it has, the store answers them in an interleaved order.
        for round in 0..10 {
            let now = t1 + round;
            let mut claims: Vec<(usize, Claim)> = Vec::new();
            for _ in 0..4 {
                for (i, envoy) in envoys.iter().enumerate() {
                    if let Some(claim) = envoy.claim(&breaker, now) {
                        claims.push((i, claim));
                    }
                }
            }
            for (i, claim) in claims {
                let admission = envoys[i].conclude(&breaker, &mut store, claim, now);
                if let Admission::Admit(Ticket::Probe { .. }) = admission {
                    probes += 1;
                }
            }
        }
        assert_eq!(probes, 5);
        for envoy in &envoys {
            assert!(matches!(
                envoy.admit(&breaker, &mut store, t1 + 20),
                Admission::Reject { .. }
            ));
        }
    }

    #[test]
    fn racing_syncs_lose_no_outcome() {
        let breaker = breaker(
            r#"{"fleet": {"store": {"cluster": "redis"}},
                "rules": [{"name": "orders", "trip": {"min_calls": 1000, "failure_rate_percent": 50}}]}"#,
        );
        let mut store = ScriptModel::new();
        let t0 = 9_000_000;
        let mut a = Envoy::start(&breaker, t0);
        let mut b = Envoy::start(&breaker, t0);
        for i in 0..10 {
            a.queue(&breaker, t0 + i, Ticket::Counted, FAIL);
            b.queue(&breaker, t0 + i, Ticket::Counted, OK);
        }
        // Both computed from version 0; the store takes A's first.
        store.now_ms = t0 + 20;
        let (ops_a, plan_a) = a.sync_ops(&breaker, t0 + 20);
        let (ops_b, plan_b) = b.sync_ops(&breaker, t0 + 20);
        let answer_a = Ok(store.run(&ops_a));
        let answer_b = Ok(store.run(&ops_b));
        assert!(!a.conclude_sync(&breaker, plan_a, &answer_a).0.again);
        let (lost, _) = b.conclude_sync(&breaker, plan_b, &answer_b);
        assert!(lost.again);
        assert!(!b.outcomes[0].is_empty(), "B keeps its outcomes");
        b.sync(&breaker, &mut store, t0 + 21);
        assert!(b.outcomes[0].is_empty());
        let record = b.view(&breaker);
        let totals = record.breaker.window(&breaker.rules()[0].settings, t0 + 21);
        assert_eq!((totals.calls, totals.failures), (20, 10));
        assert_eq!(record.version, a.view(&breaker).version + 1);
    }

    #[test]
    fn a_failed_sync_keeps_the_outcomes_and_the_view_goes_stale() {
        let breaker = orders();
        let mut store = ScriptModel::new();
        let t0 = 2_000_000;
        let mut a = Envoy::start(&breaker, t0);
        a.queue(&breaker, t0, Ticket::Counted, FAIL);
        a.queue(&breaker, t0, Ticket::Counted, FAIL);
        let (ops, plan) = a.sync_ops(&breaker, t0 + 100);
        assert_eq!(ops.len(), 1);
        let (synced, failure) = a.conclude_sync(&breaker, plan, &Err(Failure::NoAnswer));
        assert_eq!(failure, Some(Failure::NoAnswer));
        assert!(synced.updates.is_empty());
        assert!(!a.outcomes[0].is_empty());
        // Fresh for four periods and a timeout (450 ms) after the last word.
        let rule = &breaker.rules()[0];
        let fleet = breaker.fleet().unwrap();
        let view = rule.view(&a.shared).unwrap();
        assert!(matches!(
            rule.admit_fleet(view, fleet, t0 + 450),
            FleetAdmission::Decided(_)
        ));
        assert_eq!(
            rule.admit_fleet(view, fleet, t0 + 451),
            FleetAdmission::Stale
        );
        assert_eq!(rule.admit_fleet(None, fleet, t0), FleetAdmission::Stale);
        // The store answers again: the kept outcomes land, one more trips.
        a.queue(&breaker, t0 + 300, Ticket::Counted, FAIL);
        let synced = a.sync(&breaker, &mut store, t0 + 300);
        assert_eq!(synced.updates[0].transitions[0].to, State::Open);
        assert!(matches!(
            a.admit(&breaker, &mut store, t0 + 300),
            Admission::Reject { .. }
        ));
    }

    #[test]
    fn a_bad_answer_fails_the_sync_or_the_claim() {
        let breaker = orders();
        let t0 = 3_000_000;
        let mut a = Envoy::start(&breaker, t0);
        a.queue(&breaker, t0, Ticket::Counted, FAIL);
        let (_, plan) = a.sync_ops(&breaker, t0 + 100);
        let two = Ok(vec![OpResult::default(), OpResult::default()]);
        let (_, failure) = a.conclude_sync(&breaker, plan, &two);
        assert_eq!(
            failure,
            Some(Failure::BadReply("2 results for 1 records".into()))
        );
        let (_, plan) = a.sync_ops(&breaker, t0 + 100);
        let not_hex = Ok(vec![OpResult {
            state: OpState::Refused,
            current: 4,
            value: Some("xyz".into()),
            ..OpResult::default()
        }]);
        let (_, failure) = a.conclude_sync(&breaker, plan, &not_hex);
        assert_eq!(
            failure,
            Some(Failure::BadReply("a record that is not hex".into()))
        );
        assert!(!a.outcomes[0].is_empty());
        let rule = &breaker.rules()[0];
        let open = {
            let mut view = rule.view(&a.shared).unwrap().unwrap();
            view.breaker = {
                let mut b = Breaker::default();
                for i in 0..3 {
                    b.record(
                        &rule.settings,
                        t0 + i,
                        Ticket::Counted,
                        CallOutcome {
                            failed: true,
                            slow: false,
                        },
                    );
                }
                b
            };
            view.synced_ms = t0 + 1_100;
            view
        };
        let FleetAdmission::Claim(claim) =
            rule.admit_fleet(Some(open), breaker.fleet().unwrap(), t0 + 1_100)
        else {
            panic!("an elapsed opening half-opens");
        };
        let not_run = Ok(vec![OpResult::default()]);
        assert_eq!(
            rule.conclude_claim((*claim).clone(), &not_run),
            ClaimVerdict::NotRun
        );
        assert_eq!(
            rule.conclude_claim(*claim, &Err(Failure::Status(503))),
            ClaimVerdict::Failed(Failure::Status(503))
        );
    }

    #[test]
    fn an_expired_record_reads_as_a_closed_breaker() {
        let breaker = orders();
        let mut store = ScriptModel::new();
        let t0 = 4_000_000;
        let mut a = Envoy::start(&breaker, t0);
        for i in 0..3 {
            a.queue(&breaker, t0 + i, Ticket::Counted, FAIL);
        }
        a.sync(&breaker, &mut store, t0 + 10);
        assert_eq!(a.view(&breaker).breaker.state(), State::Open);
        // Nothing written for longer than the record lives.
        let later = t0 + 10 + breaker.rules()[0].record_ttl_ms() + 1;
        a.sync(&breaker, &mut store, later);
        let view = a.view(&breaker);
        assert_eq!((view.version, view.breaker.state()), (0, State::Closed));
        assert_eq!(store.live_keys(), 0);
    }

    #[test]
    fn a_record_made_again_after_it_expired_is_not_taken_for_the_old_one() {
        let breaker = orders();
        let mut store = ScriptModel::new();
        let t0 = 6_000_000;
        let mut a = Envoy::start(&breaker, t0);
        let mut b = Envoy::start(&breaker, t0);
        a.queue(&breaker, t0, Ticket::Counted, OK);
        a.sync(&breaker, &mut store, t0);
        let old = a.view(&breaker);
        assert_ne!(old.version, 0);
        // The record expires (or Redis restarts empty); B makes it again,
        // open, before A reads.
        let later = t0 + breaker.rules()[0].record_ttl_ms() + 1;
        for i in 0..3 {
            b.queue(&breaker, later + i, Ticket::Counted, FAIL);
        }
        b.sync(&breaker, &mut store, later + 10);
        let made_again = b.view(&breaker);
        assert_eq!(made_again.breaker.state(), State::Open);
        assert_ne!(made_again.version, old.version);
        a.sync(&breaker, &mut store, later + 20);
        assert_eq!(
            a.view(&breaker),
            View {
                synced_ms: later + 20,
                ..made_again
            }
        );
    }

    #[test]
    fn equal_outcomes_in_a_bucket_are_kept_as_one_run_and_the_queue_is_bounded() {
        let breaker = orders();
        let settings = &breaker.rules()[0].settings;
        let mut queue = Outcomes::default();
        for i in 0..10_000 {
            assert!(queue.push(settings, 1_000 + i % 500, Ticket::Counted, OK));
        }
        assert_eq!(queue.runs.len(), 1);
        assert_eq!(queue.runs[0].count, 10_000);
        let mut queue = Outcomes::default();
        for i in 0..MAX_PENDING as u64 {
            let outcome = if i % 2 == 0 { OK } else { FAIL };
            assert!(queue.push(settings, 1_000, Ticket::Counted, outcome));
        }
        assert!(!queue.push(settings, 1_000, Ticket::Counted, None));
        // Putting back a failed sync's runs keeps the newest.
        let taken = std::mem::take(&mut queue.runs);
        queue.push(settings, 2_000, Ticket::Counted, None);
        assert_eq!(queue.restore(taken), 1);
        assert_eq!(queue.runs.len(), MAX_PENDING);
        assert_eq!(queue.runs.last().unwrap().outcome, None);
    }

    #[test]
    fn a_view_reads_back_and_only_a_newer_one_replaces_it() {
        let breaker = orders();
        let rule = &breaker.rules()[0];
        let shared = MemoryStore::new();
        breaker.initialize(&shared, 10).unwrap();
        let initial = rule.view(&shared).unwrap().unwrap();
        assert_eq!(initial, View::initial(10));
        let newer = View {
            version: 3,
            synced_ms: 20,
            breaker: Breaker::default(),
        };
        assert_eq!(rule.store_view(&shared, &newer), Ok(Some(State::Closed)));
        let earlier = View {
            version: 4,
            synced_ms: 19,
            ..newer
        };
        assert_eq!(rule.store_view(&shared, &earlier), Ok(None));
        let same_ms_older = View {
            version: 2,
            ..newer
        };
        assert_eq!(rule.store_view(&shared, &same_ms_older), Ok(None));
        assert_eq!(rule.view(&shared).unwrap(), Some(newer));
        // A later answer wins even with a lower version: the record expired.
        let restarted = View {
            version: 0,
            synced_ms: 40,
            ..newer
        };
        assert_eq!(
            rule.store_view(&shared, &restarted),
            Ok(Some(State::Closed))
        );
        assert_eq!(rule.store_view(&shared, &newer), Ok(None));
        assert_eq!(View::decode(&[1, 2, 3], &rule.settings), None);
        // Initializing again keeps the view of a running configuration.
        breaker.initialize(&shared, 99).unwrap();
        assert_eq!(rule.view(&shared).unwrap(), Some(restarted));
    }
}
