//! The throttling policy: configuration, compilation and the decision. No
//! proxy-wasm calls here; the host and shared data are reached through
//! [`Host`] and [`SharedStore`].
//!
//! Every rule whose `match` holds applies (not only the first), and a
//! request must pass all of them. Rules are counted in order; when one
//! refuses, the requests already counted by earlier rules are given back,
//! so only admitted requests use quota.

use crate::key::{client_ip_bytes, KeyHasher, ValueSource};
use crate::lease::{LeaseConfig, Leases};
use crate::table::{Acquired, Quota, Table, Ticket};
use crate::window::{whole_seconds, Algorithm, Counting, Counts, Window, MAX_SLIDING_MS};
use gateway_common::client_ip::{ClientAddressConfig, ClientAddressError, ClientAddressResolver};
use gateway_common::config::{ConfigError, OnFailure};
use gateway_common::error::{codes as common_codes, GatewayError};
use gateway_common::fleet::wire::{Failure, LeaseAsk, Op, OpResult, QuotaCheck, State};
use gateway_common::fleet::{self, FailureMode as FleetFailureMode, Store, StoreConfig};
use gateway_common::host::{Host, RequestFacts};
use gateway_common::identity;
use gateway_common::matching::{
    all_matches, any_by_route_name, compile_rule_match, rule_path, Captures, MatchConfig, Matcher,
};
use gateway_common::store::SharedStore;
use serde::Deserialize;
use std::net::IpAddr;
use std::sync::Arc;

pub const DEFAULT_SLOTS: u32 = 4096;
pub const MAX_SLOTS: u32 = 1 << 20;
pub const DEFAULT_V6_PREFIX: u8 = 64;
const MAX_RULE_NAME: usize = 64;
/// Prefix of every shared-data key of this filter.
pub const KEY_PREFIX: &str = "gw.throttling.";

/// The error codes this filter answers with (README, "Error responses").
pub mod codes {
    use gateway_common::error::{codes, GatewayError};

    pub const API: GatewayError = GatewayError::new(429, "A429AP", "Throttled by API Flow Control");
    pub const APP: GatewayError = GatewayError::new(429, "A429AK", "Throttled by APP Flow Control");
    pub const USER: GatewayError =
        GatewayError::new(429, "A429US", "Throttled by USER Flow Control");
    pub const CLIENT_IP: GatewayError =
        GatewayError::new(429, "A429IP", "Throttled by IP Flow Control");
    pub const PARAMETER: GatewayError =
        GatewayError::new(429, "A429PV", "Throttled by PARAMETER Flow Control");
    /// Shared data failed and `failure_mode` is `deny`.
    pub const STORE_UNAVAILABLE: GatewayError =
        GatewayError::new(503, "A503TU", "Throttling Store Unavailable");
    pub const COUNT: usize = 7;
    pub const ALL: [GatewayError; COUNT] = [
        API,
        APP,
        USER,
        CLIENT_IP,
        PARAMETER,
        STORE_UNAVAILABLE,
        codes::INVALID_HEADER,
    ];
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottlingConfig {
    pub rules: Vec<RuleConfig>,
    /// How to read the user, for `"key": "user"` and user exceptions.
    #[serde(default)]
    pub user: Option<ValueSource>,
    #[serde(default)]
    pub client_address: ClientAddressConfig,
    /// IPv6 clients are counted by this prefix of their address.
    #[serde(default = "default_v6_prefix")]
    pub client_ip_v6_prefix: u8,
    /// Table size of every keyed rule that does not set its own.
    #[serde(default = "default_slots")]
    pub slots: u32,
    /// When shared data fails: `allow` (through, counted in
    /// `failure.allowed`; the default) or `deny` (503 `A503TU`).
    #[serde(default = "OnFailure::allow")]
    pub failure_mode: OnFailure,
    /// `X-RateLimit-Limit/-Remaining/-Reset` on every counted response.
    #[serde(default)]
    pub rate_limit_headers: bool,
    /// Count and log throttling but let the requests through.
    #[serde(default)]
    pub dry_run: bool,
    /// Count in the fleet store, so each limit holds for the whole fleet
    /// (see [`gateway_common::fleet`]).
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    pub store: StoreConfig,
    /// When the store fails: `local` (this Envoy's counters, the default),
    /// `allow` or `deny` (503 `A503TU`).
    #[serde(default)]
    pub failure_mode: FleetFailureMode,
    /// Under `local`, each Envoy allows the fleet limit divided by this
    /// (the number of replicas; default 1).
    #[serde(default)]
    pub replicas: Option<u32>,
    /// Take several units of a fixed-window quota per store call (see
    /// [`crate::lease`]).
    #[serde(default)]
    pub lease: Option<LeaseConfig>,
    /// In a Redis Cluster, the hash tag of the policy's counters (default
    /// [`DEFAULT_SLOT_TAG`]).
    #[serde(default)]
    pub slot_tag: Option<String>,
}

/// The hash tag of every throttling counter in a Redis Cluster unless a
/// policy names its own: one slot, so counters are shared by rule name
/// across policies as in one Redis.
pub const DEFAULT_SLOT_TAG: &str = "quotas";

/// The compiled fleet settings.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub store: Arc<Store>,
    pub failure_mode: FleetFailureMode,
    pub replicas: u32,
    /// Leases of fixed-window counters (never in dry run).
    pub lease: Option<LeaseAsk>,
    /// In a Redis Cluster, the hash tag of every counter of the policy, so
    /// a request's rules are counted in one slot, atomically.
    pub slot_tag: String,
}

/// The sliding estimate is compared in the script's doubles: the sum of two
/// products of at most `limit × window` each must stay exact (under 2^53).
const FLEET_SLIDING_MAX_PRODUCT: u64 = 1 << 52;

fn default_v6_prefix() -> u8 {
    DEFAULT_V6_PREFIX
}

fn default_slots() -> u32 {
    DEFAULT_SLOTS
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Names the rule in metrics, logs and shared-data keys.
    pub name: String,
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    #[serde(default)]
    pub key: KeyConfig,
    pub limit: u32,
    pub window: String,
    #[serde(default)]
    pub algorithm: Algorithm,
    #[serde(default)]
    pub slots: Option<u32>,
    #[serde(default)]
    pub missing_key: MissingKey,
    #[serde(default)]
    pub exceptions: Vec<ExceptionConfig>,
}

/// What a rule counts by: `"api"`, `"app"`, `"user"`, `"client_ip"` or
/// `{"parameter": <source>}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyConfig {
    #[default]
    Api,
    App,
    User,
    ClientIp,
    Parameter(ValueSource),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingKey {
    /// The rule does not apply to a request without the key.
    #[default]
    Skip,
    /// Requests without the key share one counter.
    Shared,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionConfig {
    #[serde(default)]
    pub apps: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub limit: Option<u32>,
    #[serde(default)]
    pub exempt: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Api,
    App,
    User,
    ClientIp,
    Parameter(ValueSource),
}

impl Key {
    fn tag(&self) -> &'static [u8] {
        match self {
            Key::Api => b"api",
            Key::App => b"app",
            Key::User => b"user",
            Key::ClientIp => b"client_ip",
            Key::Parameter(_) => b"parameter",
        }
    }

    fn error(&self) -> GatewayError {
        match self {
            Key::Api => codes::API,
            Key::App => codes::APP,
            Key::User => codes::USER,
            Key::ClientIp => codes::CLIENT_IP,
            Key::Parameter(_) => codes::PARAMETER,
        }
    }
}

#[derive(Debug, Clone)]
struct Exception {
    apps: Vec<String>,
    users: Vec<String>,
    /// `None`: exempt.
    limit: Option<u32>,
}

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    matcher: Matcher,
    key: Key,
    counting: Counting,
    missing_key: MissingKey,
    exceptions: Vec<Exception>,
    table: Table,
    /// The hash of what identifies the rule's counters (name, window,
    /// algorithm, key kind); a changed window or key starts afresh.
    seed: KeyHasher,
}

/// What happened to a request in one rule, for the per-rule counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleEvent {
    Allowed,
    Throttled,
    /// Would have been throttled; let through by `dry_run`.
    DryRunThrottled,
    /// An exception exempts the app or user.
    Exempt,
    /// The request has no value for the rule's key (`missing_key: skip`).
    NoKey,
    /// Checked against another key's entry of a full slot (see `table`).
    SharedSlot,
    /// Shared data failed; the rule was not applied.
    StoreFailure,
}

impl RuleEvent {
    pub const ALL: [RuleEvent; 7] = [
        RuleEvent::Allowed,
        RuleEvent::Throttled,
        RuleEvent::DryRunThrottled,
        RuleEvent::Exempt,
        RuleEvent::NoKey,
        RuleEvent::SharedSlot,
        RuleEvent::StoreFailure,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RuleEvent::Allowed => "allowed",
            RuleEvent::Throttled => "throttled",
            RuleEvent::DryRunThrottled => "dry_run_throttled",
            RuleEvent::Exempt => "exempt",
            RuleEvent::NoKey => "no_key",
            RuleEvent::SharedSlot => "shared_slot",
            RuleEvent::StoreFailure => "store_failure",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every applicable rule admitted the request (or none applied).
    Allowed,
    Throttled {
        rule: usize,
        error: GatewayError,
        retry_after_secs: u64,
    },
    /// Shared data failed under `failure_mode: deny`.
    Unavailable { rule: usize },
    /// A trusted proxy passed on a malformed `X-Forwarded-For` entry and a
    /// `client_ip` rule needed the address.
    BadForwardedFor(String),
}

impl Verdict {
    /// The error answered to the client; `None` when the request goes on.
    pub fn error(&self) -> Option<GatewayError> {
        match self {
            Verdict::Allowed => None,
            Verdict::Throttled { error, .. } => Some(error.clone()),
            Verdict::Unavailable { .. } => Some(codes::STORE_UNAVAILABLE),
            Verdict::BadForwardedFor(_) => Some(
                common_codes::INVALID_HEADER
                    .with_message("Invalid Header `X-Forwarded-For` malformed address"),
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// (rule index, what happened), in rule order.
    pub events: Vec<(usize, RuleEvent)>,
    /// For the `X-RateLimit-*` headers: the tightest quota among the rules
    /// that counted the request, or the quota of the rule that refused it.
    pub quota: Option<Quota>,
    /// Units the fleet store counted for leases, the request's included.
    pub leased_units: u64,
}

impl Decision {
    fn new() -> Self {
        Self {
            verdict: Verdict::Allowed,
            events: Vec::new(),
            quota: None,
            leased_units: 0,
        }
    }

    pub fn has(&self, event: RuleEvent) -> bool {
        self.events.iter().any(|(_, e)| *e == event)
    }

    fn tighten(&mut self, quota: Quota) {
        let tighter = self.quota.is_none_or(|q| {
            (quota.remaining, std::cmp::Reverse(quota.reset_ms))
                < (q.remaining, std::cmp::Reverse(q.reset_ms))
        });
        if tighter {
            self.quota = Some(quota);
        }
    }
}

/// The compiled, immutable policy shared by every request.
#[derive(Debug, Clone)]
pub struct Throttling {
    rules: Vec<Rule>,
    user: Option<ValueSource>,
    client_address: ClientAddressResolver,
    v6_prefix: u8,
    failure_mode: OnFailure,
    rate_limit_headers: bool,
    dry_run: bool,
    uses_route_name: bool,
    fleet: Option<Fleet>,
}

/// What a request is counted in, worked out before any counter is touched:
/// for each matching rule in order, an event (exempt, no key) or a counter;
/// and a verdict that refuses the request before counting, if any.
#[derive(Debug, Clone)]
pub struct Plan {
    now_ms: u64,
    steps: Vec<PlanStep>,
    /// A malformed `X-Forwarded-For` met at that rule: everything counted
    /// before it is given back and the request refused.
    stop: Option<Verdict>,
    /// What each counter's store call asked for, when leased.
    asked: Vec<Option<Asked>>,
}

/// A lease asked for a counter: its key in the store and the units asked
/// (the request's included).
#[derive(Debug, Clone)]
struct Asked {
    key: String,
    units: u32,
}

impl Asked {
    /// The units the store counted for it: a fixed window's `previous`,
    /// never more than asked.
    fn granted(&self, result: &OpResult) -> u64 {
        match result.state {
            State::Done => result.previous.min(u64::from(self.units)),
            _ => 0,
        }
    }
}

#[derive(Debug, Clone)]
enum PlanStep {
    Event(usize, RuleEvent),
    Count(Planned),
}

#[derive(Debug, Clone)]
struct Planned {
    rule: usize,
    slot: u32,
    fingerprint: u64,
    counting: Counting,
    /// The counter's key, for the fleet store's digest of it.
    key: KeyValue,
}

impl Plan {
    /// Whether the store has anything to count.
    pub fn counts(&self) -> bool {
        self.stop.is_none() && self.steps.iter().any(|s| matches!(s, PlanStep::Count(_)))
    }

    fn counted(&self) -> impl Iterator<Item = &Planned> {
        self.steps.iter().filter_map(|step| match step {
            PlanStep::Count(planned) => Some(planned),
            PlanStep::Event(..) => None,
        })
    }
}

impl Throttling {
    pub fn compile(config: &ThrottlingConfig) -> Result<Self, ConfigError> {
        if config.rules.is_empty() {
            return Err(ConfigError::new("rules", "list at least one rule"));
        }
        let user = config
            .user
            .as_ref()
            .map(|source| match source {
                ValueSource::Path(_) => Err(ConfigError::new(
                    "user",
                    "a user cannot come from a path variable; use `header`, `query` or `jwt_claim`",
                )),
                other => other
                    .compile()
                    .map_err(|(field, message)| ConfigError::new(field, message).within("user")),
            })
            .transpose()?;
        check_slots(config.slots).map_err(|m| ConfigError::new("slots", m))?;
        if !(1..=128).contains(&config.client_ip_v6_prefix) {
            return Err(ConfigError::new(
                "client_ip_v6_prefix",
                "must be between 1 and 128",
            ));
        }
        let mut rules: Vec<Rule> = Vec::with_capacity(config.rules.len());
        for (index, rule) in config.rules.iter().enumerate() {
            let at = rule_path(index);
            let compiled =
                compile_rule(rule, config, user.is_some()).map_err(|err| err.within(&at))?;
            if let Some(first) = rules.iter().position(|r| r.name == compiled.name) {
                return Err(ConfigError::new(
                    "name",
                    format!("`{}` is already the name of rules[{first}]", compiled.name),
                )
                .within(&at));
            }
            rules.push(compiled);
        }
        let uses_route_name = any_by_route_name(&rules, |r| &r.matcher);
        Ok(Self {
            rules,
            user,
            client_address: ClientAddressResolver::new(&config.client_address),
            v6_prefix: config.client_ip_v6_prefix,
            failure_mode: config.failure_mode,
            rate_limit_headers: config.rate_limit_headers,
            dry_run: config.dry_run,
            uses_route_name,
            fleet: config
                .fleet
                .as_ref()
                .map(|fleet| compile_fleet(fleet, &config.rules))
                .transpose()?,
        })
    }

    pub fn fleet(&self) -> Option<&Fleet> {
        self.fleet.as_ref()
    }

    pub fn rate_limit_headers(&self) -> bool {
        self.rate_limit_headers
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    pub fn rule_name(&self, index: usize) -> &str {
        self.rules.get(index).map_or("", |r| r.name.as_str())
    }

    /// The shared-data keys the filter owns: the sum of the rules' slots.
    pub fn shared_data_keys(&self) -> u64 {
        self.rules.iter().map(|r| u64::from(r.table.slots())).sum()
    }

    /// Creates every rule's slots in shared data; call when the configuration loads.
    pub fn initialize(&self, store: &dyn SharedStore) -> Result<(), String> {
        for rule in &self.rules {
            rule.table.initialize(store).map_err(|err| {
                format!(
                    "cannot create the counters of rule `{}` in shared data: {err:?}",
                    rule.name
                )
            })?;
        }
        Ok(())
    }

    /// The whole decision for the current request, counting it in every
    /// applicable rule of this Envoy's shared data.
    pub fn decide(&self, host: &dyn Host, store: &dyn SharedStore) -> Decision {
        self.decide_locally(&self.plan(host), store, 1)
    }

    /// Works out what the request is counted in; [`Throttling::decide_locally`]
    /// or the fleet store ([`Throttling::fleet_ops`], then
    /// [`Throttling::conclude`]) counts it.
    pub fn plan(&self, host: &dyn Host) -> Plan {
        let now_ms = gateway_common::host::now_ms(host);
        let mut request = RequestValues {
            host,
            facts: RequestFacts::read(host, self.uses_route_name),
            app: None,
            user: None,
            client: None,
        };
        let mut plan = Plan {
            now_ms,
            steps: Vec::new(),
            stop: None,
            asked: Vec::new(),
        };
        let matching = all_matches(&self.rules, |r| &r.matcher, &request.facts.attrs());
        for (index, captures) in matching {
            let rule = &self.rules[index];
            match self.counter_of(rule, &mut request, &captures) {
                Ok(Counter::In(value)) => {
                    let (slot_hash, fingerprint) = value.local_hash(rule).finish();
                    let slot = match rule.key {
                        // An `api` rule has one slot per counter: the rule's and each exception's.
                        Key::Api => u32::try_from(value.exception_index).unwrap_or(0),
                        _ => rule.table.slot_of(slot_hash),
                    };
                    plan.steps.push(PlanStep::Count(Planned {
                        rule: index,
                        slot,
                        fingerprint,
                        counting: Counting {
                            limit: value.limit,
                            ..rule.counting
                        },
                        key: value,
                    }));
                }
                Ok(Counter::None(event)) => plan.steps.push(PlanStep::Event(index, event)),
                Err(entry) => {
                    plan.stop = Some(Verdict::BadForwardedFor(entry));
                    break;
                }
            }
        }
        plan
    }

    /// Counts a planned request in this Envoy's shared data, each limit
    /// divided by `divisor` (the replicas sharing a fleet limit, 1 alone).
    pub fn decide_locally(&self, plan: &Plan, store: &dyn SharedStore, divisor: u32) -> Decision {
        let now_ms = plan.now_ms;
        let mut decision = Decision::new();
        let mut tickets: Vec<(usize, Ticket)> = Vec::new();
        for step in &plan.steps {
            let planned = match step {
                PlanStep::Event(index, event) => {
                    decision.events.push((*index, *event));
                    continue;
                }
                PlanStep::Count(planned) => planned,
            };
            let index = planned.rule;
            let rule = &self.rules[index];
            let counting = Counting {
                limit: (planned.counting.limit / divisor.max(1)).max(1),
                ..planned.counting
            };
            match rule
                .table
                .acquire(store, planned.slot, planned.fingerprint, &counting, now_ms)
            {
                Ok(Acquired::Admitted(ticket, quota)) => {
                    decision.events.push((index, RuleEvent::Allowed));
                    if ticket.shared {
                        decision.events.push((index, RuleEvent::SharedSlot));
                    }
                    decision.tighten(quota);
                    tickets.push((index, ticket));
                }
                Ok(Acquired::Throttled {
                    wait_ms,
                    quota,
                    shared,
                }) => {
                    if shared {
                        decision.events.push((index, RuleEvent::SharedSlot));
                    }
                    if self.dry_run {
                        decision.events.push((index, RuleEvent::DryRunThrottled));
                        decision.tighten(quota);
                        continue;
                    }
                    decision.events.push((index, RuleEvent::Throttled));
                    decision.quota = Some(quota);
                    let verdict = Verdict::Throttled {
                        rule: index,
                        error: rule.key.error(),
                        retry_after_secs: whole_seconds(wait_ms),
                    };
                    return self.refuse(decision, verdict, store, &tickets);
                }
                Err(_) => {
                    decision.events.push((index, RuleEvent::StoreFailure));
                    if self.failure_mode == OnFailure::Deny {
                        let verdict = Verdict::Unavailable { rule: index };
                        return self.refuse(decision, verdict, store, &tickets);
                    }
                }
            }
        }
        if let Some(verdict) = plan.stop.clone() {
            return self.refuse(decision, verdict, store, &tickets);
        }
        decision
    }

    /// The store key of a planned counter in the window `window_index`.
    fn fleet_key(&self, fleet: &Fleet, planned: &Planned, window_index: u64) -> String {
        let rule = &self.rules[planned.rule];
        let digest = planned.key.fleet_digest(rule);
        let window = window_index.to_string();
        if fleet.store.is_cluster() {
            fleet
                .store
                .key("q", &fleet.slot_tag, &[&rule.name, &digest, &window])
        } else {
            fleet.store.key("q", &rule.name, &[&digest, &window])
        }
    }

    /// The lease asked for a planned counter, if it can be leased: a fixed
    /// window, outside dry run.
    fn lease_of(&self, planned: &Planned) -> Option<LeaseAsk> {
        let fleet = self.fleet.as_ref()?;
        let fixed = planned.counting.algorithm == Algorithm::Fixed;
        fleet.lease.filter(|_| fixed && !self.dry_run)
    }

    /// Whether every counter of the plan can be leased: units are worth
    /// holding only when the request can be admitted from leases alone.
    fn leasable(&self, plan: &Plan) -> bool {
        plan.counted().all(|p| self.lease_of(p).is_some())
    }

    /// Admits the request from this worker's leases, without a store call,
    /// when every counter of the plan has a unit left; `None` otherwise
    /// (nothing is taken).
    pub fn admit_leased(&self, plan: &Plan, leases: &mut Leases) -> Option<Decision> {
        let fleet = self.fleet.as_ref()?;
        if !plan.counts() || !self.leasable(plan) {
            return None;
        }
        let now_ms = plan.now_ms;
        let keys: Vec<String> = plan
            .counted()
            .map(|p| self.fleet_key(fleet, p, p.counting.window.index(now_ms)))
            .collect();
        let left = leases.take_each(&keys, now_ms)?;
        let mut decision = Decision::new();
        let mut left = left.into_iter();
        for step in &plan.steps {
            match step {
                PlanStep::Event(index, event) => decision.events.push((*index, *event)),
                PlanStep::Count(planned) => {
                    decision.events.push((planned.rule, RuleEvent::Allowed));
                    decision.tighten(Quota {
                        limit: planned.counting.limit,
                        remaining: left.next().unwrap_or(0),
                        reset_ms: planned.counting.window.until_end(now_ms),
                    });
                }
            }
        }
        Some(decision)
    }

    /// The fleet operations of a plan: one group of every counter, counted
    /// all or none, atomically; a leased counter asks for the units this
    /// worker lacks (what it asked is kept in the plan until
    /// [`Throttling::conclude`]).
    pub fn fleet_ops(&self, plan: &mut Plan, leases: &mut Leases) -> Vec<Op> {
        let Some(fleet) = &self.fleet else {
            return Vec::new();
        };
        if !plan.counts() {
            return Vec::new();
        }
        let now_ms = plan.now_ms;
        let leasing = self.leasable(plan);
        let mut asked = Vec::new();
        let checks = plan
            .counted()
            .map(|planned| {
                let window = planned.counting.window;
                let index = window.index(now_ms);
                let key = self.fleet_key(fleet, planned, index);
                let until_end = window.until_end(now_ms);
                let sliding = planned.counting.algorithm == Algorithm::Sliding;
                let lease = self
                    .lease_of(planned)
                    .filter(|_| leasing)
                    .map(|ask| LeaseAsk {
                        units: leases.ask(&key, ask.units, now_ms + until_end, now_ms),
                        ..ask
                    });
                asked.push(lease.map(|lease| Asked {
                    key: key.clone(),
                    units: lease.units,
                }));
                QuotaCheck {
                    previous_key: sliding
                        .then(|| self.fleet_key(fleet, planned, index.wrapping_sub(1))),
                    key,
                    limit: planned.counting.limit,
                    window_weight: if sliding { window.ms() } else { 1 },
                    previous_weight: if sliding { until_end } else { 0 },
                    ttl_ms: until_end
                        + if sliding { window.ms() } else { 0 }
                        + fleet::CLOCK_GRACE_MS,
                    dry_run: self.dry_run,
                    lease,
                }
            })
            .collect();
        plan.asked = asked;
        vec![Op::Quotas(checks)]
    }

    /// Settles what the plan's call asked for: the units granted beyond
    /// the request's own join `leases`. Returns how many units the store
    /// counted for leases.
    fn settle_leases(plan: &Plan, results: &[OpResult], leases: &mut Leases) -> u64 {
        let mut counted = 0;
        for (i, (planned, asked)) in plan.counted().zip(&plan.asked).enumerate() {
            let Some(asked) = asked else {
                continue;
            };
            let result = results.get(i);
            let granted = result.map_or(0, |result| asked.granted(result));
            counted += granted;
            let left = result.map_or(0, |result| {
                u64::from(planned.counting.limit).saturating_sub(result.current)
            });
            leases.answered(
                &asked.key,
                asked.units,
                u32::try_from(granted).unwrap_or(0),
                u32::try_from(left).unwrap_or(u32::MAX),
                plan.now_ms,
            );
        }
        counted
    }

    /// The decision from the fleet store's answer to [`Throttling::fleet_ops`];
    /// when the store failed, by the fleet failure mode. The units of a
    /// lease granted join `leases`.
    pub fn conclude(
        &self,
        plan: &Plan,
        answer: &Result<Vec<OpResult>, Failure>,
        store: &dyn SharedStore,
        leases: &mut Leases,
    ) -> Decision {
        let results = match fleet_results(plan, answer, self.dry_run) {
            Ok(results) => results,
            Err(failure) => {
                // A call that was not run (never sent, or the script not
                // loaded) asked for nothing. One whose answer was lost may
                // have counted its units: they stay reserved (asked for,
                // never held) until the window ends. An HTTP status does
                // not tell (Envoy answers 503 for a reset after sending).
                if matches!(failure, Failure::Dispatch | Failure::NoScript) {
                    Self::settle_leases(plan, &[], leases);
                }
                return self.decide_on_failure(plan, store);
            }
        };
        let mut decision = self.decide_from(plan, results);
        decision.leased_units = Self::settle_leases(plan, results, leases);
        decision
    }

    fn decide_from(&self, plan: &Plan, results: &[OpResult]) -> Decision {
        let now_ms = plan.now_ms;
        let mut decision = Decision::new();
        let mut results = results.iter().enumerate();
        for step in &plan.steps {
            let planned = match step {
                PlanStep::Event(index, event) => {
                    decision.events.push((*index, *event));
                    continue;
                }
                PlanStep::Count(planned) => planned,
            };
            let Some((position, result)) = results.next() else {
                break;
            };
            let index = planned.rule;
            let counting = &planned.counting;
            let counts = Counts {
                // A fixed window's `previous` is the units counted, not a count.
                previous: match counting.algorithm {
                    Algorithm::Fixed => 0,
                    Algorithm::Sliding => u32::try_from(result.previous).unwrap_or(u32::MAX),
                },
                current: u32::try_from(result.current).unwrap_or(u32::MAX),
            };
            let reset_ms = counting.window.until_end(now_ms);
            let refused_quota = Quota {
                limit: counting.limit,
                remaining: 0,
                reset_ms,
            };
            match result.state {
                State::Done => {
                    decision.events.push((index, RuleEvent::Allowed));
                    // Units leased beyond the request's are this worker's to admit.
                    let leased = match plan.asked.get(position) {
                        Some(Some(asked)) => {
                            u32::try_from(asked.granted(result).saturating_sub(1)).unwrap_or(0)
                        }
                        _ => 0,
                    };
                    decision.tighten(Quota {
                        limit: counting.limit,
                        remaining: counting.remaining(counts, now_ms).saturating_add(leased),
                        reset_ms,
                    });
                }
                // Counted and given back, in local terms.
                State::NotCounted => decision.events.push((index, RuleEvent::Allowed)),
                State::DryRunRefused => {
                    decision.events.push((index, RuleEvent::DryRunThrottled));
                    decision.tighten(refused_quota);
                }
                State::Refused => {
                    decision.events.push((index, RuleEvent::Throttled));
                    decision.quota = Some(refused_quota);
                    decision.verdict = Verdict::Throttled {
                        rule: index,
                        error: self.rules[index].key.error(),
                        retry_after_secs: whole_seconds(counting.wait_ms(counts, now_ms)),
                    };
                    return decision;
                }
                // An earlier policy's check refused the request.
                State::NotRun => return decision,
            }
        }
        decision
    }

    /// The decision when the fleet store gave no usable answer.
    fn decide_on_failure(&self, plan: &Plan, store: &dyn SharedStore) -> Decision {
        let Some(fleet) = &self.fleet else {
            return self.decide_locally(plan, store, 1);
        };
        if fleet.failure_mode == FleetFailureMode::Local {
            return self.decide_locally(plan, store, fleet.replicas);
        }
        let mut decision = Decision::new();
        for step in &plan.steps {
            match step {
                PlanStep::Event(index, event) => decision.events.push((*index, *event)),
                PlanStep::Count(planned) => {
                    decision
                        .events
                        .push((planned.rule, RuleEvent::StoreFailure));
                    if fleet.failure_mode == FleetFailureMode::Deny {
                        decision.verdict = Verdict::Unavailable { rule: planned.rule };
                        return decision;
                    }
                }
            }
        }
        decision
    }

    /// Where `rule` counts the request: the counter of its key, with the
    /// limit of the exception that applies; or why it does not count it.
    /// `Err` carries a malformed `X-Forwarded-For` entry.
    fn counter_of(
        &self,
        rule: &Rule,
        request: &mut RequestValues<'_>,
        captures: &Captures<'_>,
    ) -> Result<Counter, String> {
        let (exception_index, limit) = match self.exception(rule, request) {
            Some((_, None)) => return Ok(Counter::None(RuleEvent::Exempt)),
            Some((position, Some(limit))) => (position as u64 + 1, limit),
            None => (0, rule.counting.limit),
        };
        let value = match self.key_value(rule, request, captures)? {
            Some(value) => Some(value),
            None if rule.missing_key == MissingKey::Shared => None,
            None => return Ok(Counter::None(RuleEvent::NoKey)),
        };
        Ok(Counter::In(KeyValue {
            exception_index,
            value,
            limit,
        }))
    }

    /// Refuses the request: what earlier rules counted for it is given back.
    fn refuse(
        &self,
        mut decision: Decision,
        verdict: Verdict,
        store: &dyn SharedStore,
        tickets: &[(usize, Ticket)],
    ) -> Decision {
        self.give_back(store, tickets);
        decision.verdict = verdict;
        decision
    }

    /// The first exception for the request's app or user: (its position,
    /// its limit or `None` when exempt).
    fn exception(
        &self,
        rule: &Rule,
        request: &mut RequestValues<'_>,
    ) -> Option<(usize, Option<u32>)> {
        for (position, exception) in rule.exceptions.iter().enumerate() {
            let app_listed = !exception.apps.is_empty()
                && request
                    .app()
                    .is_some_and(|app| exception.apps.iter().any(|a| a == app));
            let user_listed = !exception.users.is_empty()
                && request
                    .user(self.user.as_ref())
                    .is_some_and(|user| exception.users.iter().any(|u| u == user));
            if app_listed || user_listed {
                return Some((position, exception.limit));
            }
        }
        None
    }

    /// The request's value of the rule's key; `Ok(None)` when it has none;
    /// `Err` with a malformed `X-Forwarded-For` entry.
    fn key_value(
        &self,
        rule: &Rule,
        request: &mut RequestValues<'_>,
        captures: &Captures<'_>,
    ) -> Result<Option<Vec<u8>>, String> {
        Ok(match &rule.key {
            Key::Api => Some(Vec::new()),
            Key::App => request.app().map(|app| app.as_bytes().to_vec()),
            Key::User => request
                .user(self.user.as_ref())
                .map(|user| user.as_bytes().to_vec()),
            Key::ClientIp => request.client(&self.client_address)?.map(|ip| {
                let (bytes, len) = client_ip_bytes(ip, self.v6_prefix);
                bytes[..len].to_vec()
            }),
            Key::Parameter(source) => source
                .read(request.host, &request.facts.line.path, captures)
                .map(String::into_bytes),
        })
    }

    /// Gives back what earlier rules counted for a request that is refused.
    /// Best effort: a failed give-back only leaves the count higher.
    fn give_back(&self, store: &dyn SharedStore, tickets: &[(usize, Ticket)]) {
        for (index, ticket) in tickets {
            if let Some(rule) = self.rules.get(*index) {
                let _ = rule.table.release(store, ticket);
            }
        }
    }
}

/// Where a rule counts a request.
enum Counter {
    In(KeyValue),
    /// Not counted: exempt, or no key.
    None(RuleEvent),
}

/// The counter a request is counted in, and its limit.
#[derive(Debug, Clone)]
struct KeyValue {
    /// 0: the rule's own limit; n: its exception n − 1.
    exception_index: u64,
    /// `None`: a request without the key (`missing_key: shared`).
    value: Option<Vec<u8>>,
    limit: u32,
}

impl KeyValue {
    fn local_hash(&self, rule: &Rule) -> KeyHasher {
        let base = rule.seed.number(self.exception_index);
        match &self.value {
            Some(value) => base.number(1).field(value),
            None => base.number(0),
        }
    }

    /// What names the counter in the fleet store: the rule's counting
    /// (window, algorithm, key kind), the exception and the value, hashed.
    fn fleet_digest(&self, rule: &Rule) -> String {
        let counting = rule.counting;
        let exception = self.exception_index.to_le_bytes();
        let window = counting.window.ms().to_le_bytes();
        let algorithm = [counting.algorithm as u8];
        let (present, value): (&[u8], &[u8]) = match &self.value {
            Some(value) => (b"1", value),
            None => (b"0", b""),
        };
        fleet::digest(&[
            &window,
            &algorithm,
            rule.key.tag(),
            &exception,
            present,
            value,
        ])
    }
}

/// The results of a plan's counters in the store's answer, if they are
/// ones the script can give for them: not run only when an earlier check
/// of the call (a replayed nonce) stopped it, so all or none; not counted
/// only beside a refusal; a dry-run refusal only in dry run.
fn fleet_results<'a>(
    plan: &Plan,
    answer: &'a Result<Vec<OpResult>, Failure>,
    dry_run: bool,
) -> Result<&'a [OpResult], Failure> {
    let results = answer.as_ref().map_err(Clone::clone)?;
    if results.len() != plan.counted().count() {
        return Err(Failure::BadReply("not one result per counter".into()));
    }
    let has = |state: State| results.iter().any(|r| r.state == state);
    let consistent = (!has(State::NotRun) || results.iter().all(|r| r.state == State::NotRun))
        && (!has(State::NotCounted) || has(State::Refused))
        && (dry_run || !has(State::DryRunRefused))
        && !(dry_run && has(State::Refused));
    if !consistent {
        return Err(Failure::BadReply("results the script cannot give".into()));
    }
    Ok(results)
}

/// Why the store's answer does not decide a plan, if it does not.
pub fn fleet_failure(
    policy: &Throttling,
    plan: &Plan,
    answer: &Result<Vec<OpResult>, Failure>,
) -> Option<Failure> {
    fleet_results(plan, answer, policy.dry_run).err()
}

fn compile_fleet(config: &FleetConfig, rules: &[RuleConfig]) -> Result<Fleet, ConfigError> {
    let store = Store::compile(&config.store).map_err(|e| e.within("fleet.store"))?;
    let replicas = config.replicas.unwrap_or(1);
    if replicas == 0 || replicas > 10_000 {
        return Err(ConfigError::new(
            "fleet.replicas",
            "must be between 1 and 10000",
        ));
    }
    if config.replicas.is_some() && config.failure_mode != FleetFailureMode::Local {
        return Err(ConfigError::new(
            "fleet.replicas",
            "divides the limits under `failure_mode: local` only",
        ));
    }
    if let Some((i, rule)) = rules
        .iter()
        .enumerate()
        .find(|(_, rule)| rule.limit < replicas)
    {
        return Err(ConfigError::new(
            "fleet.replicas",
            format!(
                "{replicas} replicas would each still admit 1 request of rules[{i}] (`{}`, limit {}) when the store fails",
                rule.name, rule.limit
            ),
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        let window = Window::parse(&rule.window).map(Window::ms).unwrap_or(0);
        let largest_limit = rule
            .exceptions
            .iter()
            .filter_map(|e| e.limit)
            .chain([rule.limit])
            .max()
            .unwrap_or(0);
        if rule.algorithm == Algorithm::Sliding
            && u64::from(largest_limit).saturating_mul(window) > FLEET_SLIDING_MAX_PRODUCT
        {
            return Err(ConfigError::new(
                format!("rules[{i}].limit"),
                "too large for a sliding window in the fleet store (limit × window in ms must stay under 2^52)",
            ));
        }
    }
    let lease = config
        .lease
        .as_ref()
        .map(|lease| lease.compile().map_err(|e| e.within("fleet.lease")))
        .transpose()?;
    if lease.is_some() && rules.iter().all(|r| r.algorithm == Algorithm::Sliding) {
        return Err(ConfigError::new(
            "fleet.lease",
            "leases are of fixed windows, and every rule is sliding",
        ));
    }
    let slot_tag = config.slot_tag.as_deref().unwrap_or(DEFAULT_SLOT_TAG);
    let tag_ok = (1..=64).contains(&slot_tag.len())
        && slot_tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !tag_ok {
        return Err(ConfigError::new(
            "fleet.slot_tag",
            "1 to 64 letters, digits and `-_.`",
        ));
    }
    let slot_tag = slot_tag.to_string();
    Ok(Fleet {
        store: Arc::new(store),
        failure_mode: config.failure_mode,
        replicas,
        lease,
        slot_tag,
    })
}

/// Request values read at most once, and only when a rule needs them.
struct RequestValues<'h> {
    host: &'h dyn Host,
    facts: RequestFacts,
    app: Option<Option<String>>,
    user: Option<Option<String>>,
    client: Option<Result<Option<IpAddr>, String>>,
}

impl RequestValues<'_> {
    /// The app sign-auth verified (filter state, never a header).
    fn app(&mut self) -> Option<&str> {
        let host = self.host;
        self.app
            .get_or_insert_with(|| identity::app_key(host))
            .as_deref()
    }

    fn user(&mut self, source: Option<&ValueSource>) -> Option<&str> {
        let (host, path) = (self.host, &self.facts.line.path);
        self.user
            .get_or_insert_with(|| source.and_then(|s| s.read(host, path, &Vec::new())))
            .as_deref()
    }

    fn client(&mut self, resolver: &ClientAddressResolver) -> Result<Option<IpAddr>, String> {
        let host = self.host;
        self.client
            .get_or_insert_with(|| match resolver.client_of(host) {
                Ok(ip) => Ok(Some(ip)),
                Err(ClientAddressError::UnknownPeer) => Ok(None),
                Err(ClientAddressError::MalformedForwardedFor(entry)) => Err(entry),
            })
            .clone()
    }
}

fn check_slots(slots: u32) -> Result<u32, String> {
    if (1..=MAX_SLOTS).contains(&slots) {
        Ok(slots)
    } else {
        Err(format!("must be between 1 and {MAX_SLOTS}"))
    }
}

fn check_limit(limit: u32) -> Result<u32, String> {
    if limit == 0 {
        Err("must be at least 1".into())
    } else {
        Ok(limit)
    }
}

fn compile_rule(
    rule: &RuleConfig,
    config: &ThrottlingConfig,
    has_user: bool,
) -> Result<Rule, ConfigError> {
    let name = &rule.name;
    let valid_name = (1..=MAX_RULE_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid_name {
        return Err(ConfigError::new(
            "name",
            format!("`{name}` must be 1 to {MAX_RULE_NAME} letters, digits, `-` or `_`"),
        ));
    }
    let matcher = compile_rule_match(&rule.matcher)?;
    let limit = check_limit(rule.limit).map_err(|m| ConfigError::new("limit", m))?;
    let window = Window::parse(&rule.window).map_err(|m| ConfigError::new("window", m))?;
    if rule.algorithm == Algorithm::Sliding && window.ms() > MAX_SLIDING_MS {
        return Err(ConfigError::new(
            "algorithm",
            format!(
                "`sliding` is for windows of seconds and minutes, up to `1h`; a `{}` window counts in fixed UTC windows",
                rule.window
            ),
        ));
    }
    let key =
        match &rule.key {
            KeyConfig::Api => Key::Api,
            KeyConfig::App => Key::App,
            KeyConfig::User if !has_user => return Err(ConfigError::new(
                "key",
                "`user` needs the top-level `user` source, for example {\"header\": \"x-user-id\"}",
            )),
            KeyConfig::User => Key::User,
            KeyConfig::ClientIp => Key::ClientIp,
            KeyConfig::Parameter(source) => {
                let at = "key.parameter";
                let compiled = source
                    .compile()
                    .map_err(|(field, message)| ConfigError::new(field, message).within(at))?;
                if let ValueSource::Path(variable) = &compiled {
                    if !matcher.template_variables().contains(&variable.as_str()) {
                        return Err(ConfigError::new(
                            "path",
                            format!("`{variable}` is not a variable of this rule's path template"),
                        )
                        .within(at));
                    }
                }
                Key::Parameter(compiled)
            }
        };
    if key == Key::Api {
        if rule.slots.is_some() {
            return Err(ConfigError::new(
                "slots",
                "a rule keyed by `api` keeps one counter; `slots` is for keyed rules",
            ));
        }
        if rule.missing_key != MissingKey::Skip {
            return Err(ConfigError::new(
                "missing_key",
                "a rule keyed by `api` always has its key",
            ));
        }
    }
    let exceptions = rule
        .exceptions
        .iter()
        .enumerate()
        .map(|(i, exception)| {
            compile_exception(exception, has_user)
                .map_err(|err| err.within(&format!("exceptions[{i}]")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let slots = match key {
        Key::Api => u32::try_from(exceptions.len() + 1).unwrap_or(u32::MAX),
        _ => check_slots(rule.slots.unwrap_or(config.slots))
            .map_err(|m| ConfigError::new("slots", m))?,
    };
    let seed = KeyHasher::default()
        .field(name.as_bytes())
        .number(window.ms())
        .number(rule.algorithm as u64)
        .field(key.tag());
    Ok(Rule {
        name: name.clone(),
        matcher,
        table: Table::new(format!("{KEY_PREFIX}{name}."), slots),
        key,
        counting: Counting {
            window,
            algorithm: rule.algorithm,
            limit,
        },
        missing_key: rule.missing_key,
        exceptions,
        seed,
    })
}

fn compile_exception(config: &ExceptionConfig, has_user: bool) -> Result<Exception, ConfigError> {
    if config.apps.is_empty() && config.users.is_empty() {
        return Err(ConfigError::new(
            "",
            "list the `apps` or `users` it applies to",
        ));
    }
    if !config.users.is_empty() && !has_user {
        return Err(ConfigError::new(
            "users",
            "naming users needs the top-level `user` source, for example {\"header\": \"x-user-id\"}",
        ));
    }
    for (field, names) in [("apps", &config.apps), ("users", &config.users)] {
        if let Some(i) = names.iter().position(String::is_empty) {
            return Err(ConfigError::new(
                format!("{field}[{i}]"),
                "must not be empty",
            ));
        }
    }
    let limit = match (config.limit, config.exempt) {
        (Some(limit), false) => Some(check_limit(limit).map_err(|m| ConfigError::new("limit", m))?),
        (None, true) => None,
        _ => {
            return Err(ConfigError::new(
                "",
                "set either `limit` or `\"exempt\": true`",
            ))
        }
    };
    Ok(Exception {
        apps: config.apps.clone(),
        users: config.users.clone(),
        limit,
    })
}

#[cfg(test)]
mod tests;
