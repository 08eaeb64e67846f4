//! The throttling policy: configuration, compilation and the decision. No
//! proxy-wasm calls here; the host and shared data are reached through
//! [`Host`] and [`SharedStore`].
//!
//! Every rule whose `match` holds applies (not only the first), and a
//! request must pass all of them. Rules are counted in order; when one
//! refuses, the requests already counted by earlier rules are given back,
//! so only admitted requests use quota.

use crate::key::{client_ip_bytes, KeyHasher, ValueSource};
use crate::table::{Acquired, Quota, Table, Ticket};
use crate::window::{whole_seconds, Algorithm, Counting, Window, MAX_SLIDING_MS};
use gateway_common::client_ip::{ClientAddressConfig, ClientAddressError, ClientAddressResolver};
use gateway_common::config::ConfigError;
use gateway_common::error::{codes as common_codes, GatewayError};
use gateway_common::host::{Host, RequestFacts};
use gateway_common::identity;
use gateway_common::matching::{all_matches, Captures, MatchConfig, Matcher};
use gateway_common::store::SharedStore;
use serde::Deserialize;
use std::net::IpAddr;

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
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// `X-RateLimit-Limit/-Remaining/-Reset` on every counted response.
    #[serde(default)]
    pub rate_limit_headers: bool,
    /// Count and log throttling but let the requests through.
    #[serde(default)]
    pub dry_run: bool,
}

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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Let the request through (counted in `failure.allowed`).
    #[default]
    Allow,
    /// Answer 503 `A503TU`.
    Deny,
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
}

impl Decision {
    fn new() -> Self {
        Self {
            verdict: Verdict::Allowed,
            events: Vec::new(),
            quota: None,
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
    failure_mode: FailureMode,
    rate_limit_headers: bool,
    dry_run: bool,
    uses_route_name: bool,
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
            let at = format!("rules[{index}]");
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
        let uses_route_name = rules.iter().any(|r| r.matcher.uses_route_name());
        Ok(Self {
            rules,
            user,
            client_address: ClientAddressResolver::new(&config.client_address),
            v6_prefix: config.client_ip_v6_prefix,
            failure_mode: config.failure_mode,
            rate_limit_headers: config.rate_limit_headers,
            dry_run: config.dry_run,
            uses_route_name,
        })
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
    /// applicable rule.
    pub fn decide(&self, host: &dyn Host, store: &dyn SharedStore) -> Decision {
        let now_ms = gateway_common::host::now_ms(host);
        let mut request = RequestValues {
            host,
            facts: RequestFacts::read(host, self.uses_route_name),
            app: None,
            user: None,
            client: None,
        };
        let mut decision = Decision::new();
        let mut tickets: Vec<(usize, Ticket)> = Vec::new();
        let matching = all_matches(&self.rules, |r| &r.matcher, &request.facts.attrs());
        for (index, captures) in matching {
            let rule = &self.rules[index];
            let (slot, fingerprint, counting) = match self.counter_of(rule, &mut request, &captures)
            {
                Ok(Counter::In {
                    slot,
                    fingerprint,
                    counting,
                }) => (slot, fingerprint, counting),
                Ok(Counter::None(event)) => {
                    decision.events.push((index, event));
                    continue;
                }
                Err(entry) => {
                    let verdict = Verdict::BadForwardedFor(entry);
                    return self.refuse(decision, verdict, store, &tickets);
                }
            };
            match rule
                .table
                .acquire(store, slot, fingerprint, &counting, now_ms)
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
                    if self.failure_mode == FailureMode::Deny {
                        let verdict = Verdict::Unavailable { rule: index };
                        return self.refuse(decision, verdict, store, &tickets);
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
        let Some(hash) = self.key_hash(rule, exception_index, request, captures)? else {
            return Ok(Counter::None(RuleEvent::NoKey));
        };
        let (slot_hash, fingerprint) = hash.finish();
        let slot = match rule.key {
            // An `api` rule has one slot per counter: the rule's and each exception's.
            Key::Api => u32::try_from(exception_index).unwrap_or(0),
            _ => rule.table.slot_of(slot_hash),
        };
        Ok(Counter::In {
            slot,
            fingerprint,
            counting: Counting {
                limit,
                ..rule.counting
            },
        })
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

    /// The hash of the request's key in `rule`; `Ok(None)` when the rule
    /// does not apply for lack of a key; `Err` with a malformed
    /// `X-Forwarded-For` entry.
    fn key_hash(
        &self,
        rule: &Rule,
        exception_index: u64,
        request: &mut RequestValues<'_>,
        captures: &Captures<'_>,
    ) -> Result<Option<KeyHasher>, String> {
        let base = rule.seed.number(exception_index);
        let present = |value: &[u8]| Some(base.number(1).field(value));
        let hashed = match &rule.key {
            Key::Api => present(&[]),
            Key::App => request.app().and_then(|app| present(app.as_bytes())),
            Key::User => request
                .user(self.user.as_ref())
                .and_then(|user| present(user.as_bytes())),
            Key::ClientIp => match request.client(&self.client_address)? {
                Some(ip) => {
                    let (bytes, len) = client_ip_bytes(ip, self.v6_prefix);
                    present(&bytes[..len])
                }
                None => None,
            },
            Key::Parameter(source) => source
                .read(request.host, &request.facts.line.path, captures)
                .and_then(|value| present(value.as_bytes())),
        };
        Ok(match (hashed, rule.missing_key) {
            (Some(hash), _) => Some(hash),
            (None, MissingKey::Shared) => Some(base.number(0)),
            (None, MissingKey::Skip) => None,
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
    In {
        slot: u32,
        fingerprint: u64,
        counting: Counting,
    },
    /// Not counted: exempt, or no key.
    None(RuleEvent),
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
    let matcher = Matcher::compile(&rule.matcher).map_err(|err| err.within("match"))?;
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
