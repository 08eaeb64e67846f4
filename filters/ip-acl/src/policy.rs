//! The IP access-control policy: configuration, compilation and decision.
//! No proxy-wasm calls here; the host is reached through [`Host`] and the
//! request's [`Stream`].
//!
//! Lists apply in scopes: the global lists, the global per-app lists, then
//! the lists of the first rule whose `match` holds and that rule's per-app
//! lists. A request passes only if every scope lets it through:
//!
//! 1. deny first: a client address in any applicable deny list is refused;
//! 2. then allow: an applicable non-empty allow list refuses every address
//!    not in it. An empty allow list restricts nothing.
//!
//! Per-app lists apply only to requests with an authenticated app (published
//! by sign-auth); they can narrow an app's access, never widen it.

use crate::FILTER_NAME;
use gateway_common::client_ip::{ClientAddressConfig, ClientAddressError, ClientAddressResolver};
use gateway_common::config::ConfigError;
use gateway_common::error::{codes, GatewayError};
use gateway_common::host::{Host, RequestFacts};
use gateway_common::identity;
use gateway_common::ipset::{CidrEntry, IpSet};
use gateway_common::matching::{
    any_by_route_name, compile_rule_match, first_match, rule_name, rule_path, MatchConfig, Matcher,
    RequestAttrs,
};
use gateway_common::metrics::{Counter, DefineMetrics};
use gateway_common::stream::{send_error, Level, PolicySteps, Stream, Verdict};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::rc::Rc;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpAclConfig {
    #[serde(default)]
    pub allow: Vec<CidrEntry>,
    #[serde(default)]
    pub deny: Vec<CidrEntry>,
    /// Per-app lists, keyed by app key.
    #[serde(default)]
    pub apps: BTreeMap<String, AppListsConfig>,
    /// Per-API lists; the first rule whose `match` holds applies.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub client_address: ClientAddressConfig,
    /// Log and count denials but let the requests through.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppListsConfig {
    #[serde(default)]
    pub allow: Vec<CidrEntry>,
    #[serde(default)]
    pub deny: Vec<CidrEntry>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Names the API in logs; defaults to `rules[i]`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    #[serde(default)]
    pub allow: Vec<CidrEntry>,
    #[serde(default)]
    pub deny: Vec<CidrEntry>,
    #[serde(default)]
    pub apps: BTreeMap<String, AppListsConfig>,
}

#[derive(Debug, Clone, Default)]
struct Lists {
    allow: IpSet,
    deny: IpSet,
}

impl Lists {
    fn new(allow: &[CidrEntry], deny: &[CidrEntry]) -> Self {
        Self {
            allow: IpSet::from_entries(allow),
            deny: IpSet::from_entries(deny),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Scope {
    lists: Lists,
    apps: HashMap<String, Lists>,
}

impl Scope {
    fn compile(
        allow: &[CidrEntry],
        deny: &[CidrEntry],
        apps: &BTreeMap<String, AppListsConfig>,
    ) -> Result<Self, ConfigError> {
        let mut compiled = HashMap::with_capacity(apps.len());
        for (key, lists) in apps {
            if key.is_empty() {
                return Err(ConfigError::new("apps", "an app key must not be empty"));
            }
            compiled.insert(key.clone(), Lists::new(&lists.allow, &lists.deny));
        }
        Ok(Self {
            lists: Lists::new(allow, deny),
            apps: compiled,
        })
    }

    /// The lists that apply to a request from `app`, broadest first.
    fn applicable<'s>(&'s self, app: Option<&str>) -> impl Iterator<Item = (&'s Lists, bool)> {
        let app_lists = app.and_then(|key| self.apps.get(key));
        std::iter::once((&self.lists, false)).chain(app_lists.map(|lists| (lists, true)))
    }
}

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    matcher: Matcher,
    scope: Scope,
}

/// Where a denial came from, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeName {
    Global,
    GlobalApp,
    Rule(String),
    RuleApp(String),
}

fn scope_name(rule: Option<&Rule>, per_app: bool) -> ScopeName {
    match (rule, per_app) {
        (None, false) => ScopeName::Global,
        (None, true) => ScopeName::GlobalApp,
        (Some(rule), false) => ScopeName::Rule(rule.name.clone()),
        (Some(rule), true) => ScopeName::RuleApp(rule.name.clone()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// The address is in a deny list.
    DenyList,
    /// A non-empty allow list does not contain the address.
    NotAllowed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Denied {
        client: IpAddr,
        reason: DenyReason,
        scope: ScopeName,
    },
    /// A trusted proxy forwarded an `X-Forwarded-For` entry that is not an address.
    BadForwardedFor(String),
    /// Envoy reported no IP peer address, so no list can be checked.
    UnknownClient,
}

impl Outcome {
    /// The error answered to the client, `None` when the request goes on.
    pub fn error(&self) -> Option<GatewayError> {
        match self {
            Outcome::Allowed => None,
            Outcome::Denied { .. } | Outcome::UnknownClient => Some(codes::IP_DENIED),
            Outcome::BadForwardedFor(_) => Some(
                codes::INVALID_HEADER
                    .with_message("Invalid Header `X-Forwarded-For` malformed address"),
            ),
        }
    }

    /// The counter this outcome increments.
    pub fn metric(&self) -> Metric {
        match self {
            Outcome::Allowed => Metric::Allowed,
            Outcome::Denied {
                reason: DenyReason::DenyList,
                ..
            } => Metric::DeniedDenyList,
            Outcome::Denied {
                reason: DenyReason::NotAllowed,
                ..
            } => Metric::DeniedNotAllowed,
            Outcome::BadForwardedFor(_) => Metric::DeniedBadForwardedFor,
            Outcome::UnknownClient => Metric::DeniedUnknownClient,
        }
    }
}

/// The filter's counters, `gw.ip_acl.<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Allowed,
    DeniedDenyList,
    DeniedNotAllowed,
    DeniedBadForwardedFor,
    DeniedUnknownClient,
    /// Denials let through because of `dry_run`.
    DryRunDenied,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Metric::Allowed,
        Metric::DeniedDenyList,
        Metric::DeniedNotAllowed,
        Metric::DeniedBadForwardedFor,
        Metric::DeniedUnknownClient,
        Metric::DryRunDenied,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Allowed => "allowed",
            Metric::DeniedDenyList => "denied.deny_list",
            Metric::DeniedNotAllowed => "denied.not_allowed",
            Metric::DeniedBadForwardedFor => "denied.bad_forwarded_for",
            Metric::DeniedUnknownClient => "denied.unknown_client",
            Metric::DryRunDenied => "dry_run.denied",
        }
    }
}

/// The counters, defined once per configuration.
#[derive(Debug, Clone, Copy)]
pub struct Metrics([Counter; Metric::ALL.len()]);

impl Metrics {
    pub fn define(host: &mut dyn DefineMetrics) -> Self {
        Self(Metric::ALL.map(|metric| host.define_counter(FILTER_NAME, metric.name())))
    }

    pub fn counter(&self, metric: Metric) -> Counter {
        self.0[metric as usize]
    }
}

/// ip-acl's part in one request: the decision on the request headers.
pub struct IpAclSteps {
    pub acl: Rc<IpAcl>,
    pub metrics: Metrics,
}

impl PolicySteps for IpAclSteps {
    fn on_request_headers(&mut self, stream: &mut dyn Stream, _end_of_stream: bool) -> Verdict {
        let (verdict, metric) = self.acl.on_request_headers(stream);
        stream.increment(self.metrics.counter(metric), 1);
        verdict
    }
}

/// The compiled, immutable policy shared by every request.
#[derive(Debug, Clone, Default)]
pub struct IpAcl {
    global: Scope,
    rules: Vec<Rule>,
    client_address: ClientAddressResolver,
    dry_run: bool,
    uses_apps: bool,
    uses_route_name: bool,
}

impl IpAcl {
    pub fn compile(config: &IpAclConfig) -> Result<Self, ConfigError> {
        let global = Scope::compile(&config.allow, &config.deny, &config.apps)?;
        let mut rules = Vec::with_capacity(config.rules.len());
        for (index, rule) in config.rules.iter().enumerate() {
            let at = rule_path(index);
            let matcher = compile_rule_match(&rule.matcher).map_err(|err| err.within(&at))?;
            let scope = Scope::compile(&rule.allow, &rule.deny, &rule.apps)
                .map_err(|err| err.within(&at))?;
            rules.push(Rule {
                name: rule_name(rule.name.as_deref(), &at),
                matcher,
                scope,
            });
        }
        let uses_apps = !global.apps.is_empty() || rules.iter().any(|r| !r.scope.apps.is_empty());
        let uses_route_name = any_by_route_name(&rules, |r| &r.matcher);
        Ok(Self {
            global,
            rules,
            client_address: ClientAddressResolver::new(&config.client_address),
            dry_run: config.dry_run,
            uses_apps,
            uses_route_name,
        })
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// The decision for a resolved client address.
    pub fn check(&self, client: IpAddr, app: Option<&str>, request: &RequestAttrs<'_>) -> Outcome {
        let rule = if self.rules.is_empty() {
            None
        } else {
            first_match(&self.rules, |r| &r.matcher, request).map(|(rule, _)| rule)
        };
        // (lists, the rule they belong to, per-app?) — the scope is named
        // only when a request is denied, so allowed requests allocate nothing.
        let global = self
            .global
            .applicable(app)
            .map(|(lists, per_app)| (lists, None, per_app));
        let scoped = rule.into_iter().flat_map(|rule| {
            rule.scope
                .applicable(app)
                .map(move |(lists, per_app)| (lists, Some(rule), per_app))
        });
        let mut not_allowed = None;
        for (lists, rule, per_app) in global.chain(scoped) {
            if lists.deny.contains(client) {
                return Outcome::Denied {
                    client,
                    reason: DenyReason::DenyList,
                    scope: scope_name(rule, per_app),
                };
            }
            if not_allowed.is_none() && !lists.allow.is_empty() && !lists.allow.contains(client) {
                not_allowed = Some((rule, per_app));
            }
        }
        match not_allowed {
            Some((rule, per_app)) => Outcome::Denied {
                client,
                reason: DenyReason::NotAllowed,
                scope: scope_name(rule, per_app),
            },
            None => Outcome::Allowed,
        }
    }

    /// The whole decision for the current request, reading only what the
    /// configuration needs from the host.
    pub fn evaluate(&self, host: &dyn Host) -> Outcome {
        let client = match self.client_address.client_of(host) {
            Ok(client) => client,
            Err(ClientAddressError::MalformedForwardedFor(entry)) => {
                return Outcome::BadForwardedFor(entry)
            }
            Err(ClientAddressError::UnknownPeer) => return Outcome::UnknownClient,
        };
        let app = if self.uses_apps {
            identity::app_key(host)
        } else {
            None
        };
        let facts = if self.rules.is_empty() {
            RequestFacts::default()
        } else {
            RequestFacts::read(host, self.uses_route_name)
        };
        self.check(client, app.as_deref(), &facts.attrs())
    }

    /// The request-headers step: the decision and its effect on `stream`
    /// (a refusal answered in the shared error shape, unless in dry run),
    /// with the counter it increments.
    pub fn on_request_headers(&self, stream: &mut dyn Stream) -> (Verdict, Metric) {
        let outcome = self.evaluate(stream);
        let Some(error) = outcome.error() else {
            return (Verdict::Continue, Metric::Allowed);
        };
        if self.dry_run {
            stream.log(
                Level::Info,
                format_args!("{FILTER_NAME}: dry run, would deny: {outcome:?}"),
            );
            return (Verdict::Continue, Metric::DryRunDenied);
        }
        if let Outcome::BadForwardedFor(_) = outcome {
            stream.log(Level::Debug, format_args!("{FILTER_NAME}: {outcome:?}"));
        }
        (send_error(stream, &error, &[]), outcome.metric())
    }
}

#[cfg(test)]
mod step_tests {
    use super::*;
    use gateway_common::config::parse_json;
    use gateway_common::host::FakeHost;
    use gateway_common::stream::{Effect, FakeStream};

    fn acl(json: &str) -> IpAcl {
        IpAcl::compile(&parse_json::<IpAclConfig>(json.as_bytes()).expect("config"))
            .expect("compiles")
    }

    fn from(peer: &str) -> FakeStream {
        FakeStream::new(
            FakeHost::new()
                .with_header(":path", "/admin")
                .with_header("x-request-id", "r-9")
                .with_property(&["source", "address"], peer),
        )
    }

    #[test]
    fn an_allowed_client_goes_on_untouched() {
        let mut stream = from("10.0.0.1:5000");
        let step = acl(r#"{"allow":["10.0.0.0/8"]}"#).on_request_headers(&mut stream);
        assert_eq!(step, (Verdict::Continue, Metric::Allowed));
        assert!(stream.effects.is_empty());
    }

    #[test]
    fn a_denied_client_is_answered_403_in_the_shared_shape() {
        let mut stream = from("192.0.2.1:5000");
        let step = acl(r#"{"deny":["192.0.2.0/24"]}"#).on_request_headers(&mut stream);
        assert_eq!(step, (Verdict::Answered, Metric::DeniedDenyList));
        let [Effect::LocalReply(reply)] = stream.effects.as_slice() else {
            panic!("one local reply, nothing else: {:?}", stream.effects);
        };
        assert_eq!(reply.status, 403);
        assert_eq!(reply.header("x-ca-error-code"), Some("A403IP"));
        assert_eq!(reply.json()["request_id"], "r-9");
    }

    #[test]
    fn a_client_off_the_allow_list_is_counted_as_not_allowed() {
        let mut stream = from("192.0.2.1:5000");
        let step = acl(r#"{"allow":["10.0.0.0/8"]}"#).on_request_headers(&mut stream);
        assert_eq!(step, (Verdict::Answered, Metric::DeniedNotAllowed));
        assert_eq!(stream.reply().map(|reply| reply.status), Some(403));
    }

    #[test]
    fn a_dry_run_logs_what_it_would_deny_and_lets_the_request_go_on() {
        let mut stream = from("192.0.2.1:5000");
        let step =
            acl(r#"{"deny":["192.0.2.0/24"],"dry_run":true}"#).on_request_headers(&mut stream);
        assert_eq!(step, (Verdict::Continue, Metric::DryRunDenied));
        assert!(stream.effects.is_empty());
        let logs = stream.logs.borrow();
        assert!(
            logs.iter()
                .any(|(level, text)| *level == Level::Info && text.contains("would deny")),
            "{logs:?}"
        );
    }

    #[test]
    fn a_malformed_forwarded_for_from_a_trusted_proxy_is_answered_400() {
        let mut stream = FakeStream::new(
            FakeHost::new()
                .with_header("x-forwarded-for", "not-an-address")
                .with_property(&["source", "address"], "127.0.0.1:5000"),
        );
        let config =
            r#"{"client_address":{"trusted_proxies":["127.0.0.1"]},"deny":["192.0.2.0/24"]}"#;
        let step = acl(config).on_request_headers(&mut stream);
        assert_eq!(step, (Verdict::Answered, Metric::DeniedBadForwardedFor));
        assert_eq!(stream.reply().map(|reply| reply.status), Some(400));
    }

    #[test]
    fn the_steps_count_each_decision_on_the_stream() {
        let acl = Rc::new(acl(r#"{"deny":["192.0.2.0/24"]}"#));
        for (peer, verdict) in [
            ("10.0.0.1:1", Verdict::Continue),
            ("192.0.2.7:1", Verdict::Answered),
        ] {
            let mut stream = from(peer);
            let metrics = Metrics::define(&mut stream);
            let mut steps = IpAclSteps {
                acl: Rc::clone(&acl),
                metrics,
            };
            assert_eq!(steps.on_request_headers(&mut stream, true), verdict);
            let allowed = u64::from(verdict == Verdict::Continue);
            assert_eq!(stream.counted(FILTER_NAME, "allowed"), allowed);
            assert_eq!(stream.counted(FILTER_NAME, "denied.deny_list"), 1 - allowed);
        }
    }

    #[test]
    fn no_peer_address_is_refused() {
        let mut stream = FakeStream::new(FakeHost::new());
        let step = acl(r#"{"deny":["192.0.2.0/24"]}"#).on_request_headers(&mut stream);
        assert_eq!(step, (Verdict::Answered, Metric::DeniedUnknownClient));
        assert_eq!(stream.reply().map(|reply| reply.status), Some(403));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_common::config::parse_json;
    use gateway_common::host::FakeHost;
    use gateway_common::identity::APP_KEY_PROPERTY;

    fn acl(json: &str) -> IpAcl {
        let config: IpAclConfig = parse_json(json.as_bytes()).unwrap();
        IpAcl::compile(&config).unwrap()
    }

    fn config_error(json: &str) -> String {
        parse_json::<IpAclConfig>(json.as_bytes())
            .and_then(|config| IpAcl::compile(&config))
            .unwrap_err()
            .to_string()
    }

    fn get(path: &str) -> RequestAttrs<'_> {
        RequestAttrs {
            authority: "api.example.com",
            method: "GET",
            path,
            route_name: None,
        }
    }

    fn check(acl: &IpAcl, client: &str, app: Option<&str>, path: &str) -> Outcome {
        acl.check(client.parse().unwrap(), app, &get(path))
    }

    fn denied(outcome: &Outcome) -> Option<(DenyReason, ScopeName)> {
        match outcome {
            Outcome::Denied { reason, scope, .. } => Some((*reason, scope.clone())),
            _ => None,
        }
    }

    #[test]
    fn an_empty_config_allows_everyone() {
        let acl = acl("{}");
        assert_eq!(check(&acl, "203.0.113.1", None, "/"), Outcome::Allowed);
        assert_eq!(
            check(&acl, "2001:db8::1", Some("app"), "/x"),
            Outcome::Allowed
        );
    }

    #[test]
    fn a_deny_list_refuses_its_addresses_only() {
        let acl = acl(r#"{"deny":["203.0.113.0/24","2001:db8::/32"]}"#);
        assert_eq!(
            denied(&check(&acl, "203.0.113.77", None, "/")),
            Some((DenyReason::DenyList, ScopeName::Global))
        );
        assert!(denied(&check(&acl, "2001:db8:1::5", None, "/")).is_some());
        assert_eq!(check(&acl, "198.51.100.1", None, "/"), Outcome::Allowed);
        assert_eq!(check(&acl, "2001:db9::1", None, "/"), Outcome::Allowed);
    }

    #[test]
    fn a_non_empty_allow_list_refuses_everything_else() {
        let acl = acl(r#"{"allow":["10.0.0.0/8"]}"#);
        assert_eq!(check(&acl, "10.20.30.40", None, "/"), Outcome::Allowed);
        assert_eq!(
            denied(&check(&acl, "11.0.0.1", None, "/")),
            Some((DenyReason::NotAllowed, ScopeName::Global))
        );
        assert!(
            denied(&check(&acl, "::1", None, "/")).is_some(),
            "v6 is not in a v4 allow list"
        );
    }

    #[test]
    fn deny_wins_over_allow() {
        let acl = acl(r#"{"allow":["10.0.0.0/8"],"deny":["10.0.0.66"]}"#);
        assert_eq!(
            denied(&check(&acl, "10.0.0.66", None, "/")),
            Some((DenyReason::DenyList, ScopeName::Global))
        );
        assert_eq!(check(&acl, "10.0.0.67", None, "/"), Outcome::Allowed);
    }

    #[test]
    fn a_deny_hit_in_any_scope_is_reported_before_an_allow_miss() {
        let acl = acl(r#"{"allow":["10.0.0.0/8"],
                "rules":[{"name":"r","match":{"path":{"prefix":"/"}},"deny":["192.0.2.1"]}]}"#);
        assert_eq!(
            denied(&check(&acl, "192.0.2.1", None, "/")),
            Some((DenyReason::DenyList, ScopeName::Rule("r".into())))
        );
    }

    #[test]
    fn rule_lists_apply_only_to_matching_requests() {
        let acl = acl(
            r#"{"rules":[{"name":"admin","match":{"path":{"prefix":"/admin"}},"allow":["10.0.0.0/8"]}]}"#,
        );
        assert_eq!(
            denied(&check(&acl, "203.0.113.1", None, "/admin/users")),
            Some((DenyReason::NotAllowed, ScopeName::Rule("admin".into())))
        );
        assert_eq!(
            check(&acl, "10.1.1.1", None, "/admin/users"),
            Outcome::Allowed
        );
        assert_eq!(
            check(&acl, "203.0.113.1", None, "/public"),
            Outcome::Allowed
        );
    }

    #[test]
    fn only_the_first_matching_rule_applies() {
        let acl = acl(r#"{"rules":[
                {"name":"open","match":{"path":{"exact":"/admin/health"}}},
                {"name":"admin","match":{"path":{"prefix":"/admin"}},"allow":["10.0.0.0/8"]}
            ]}"#);
        assert_eq!(
            check(&acl, "203.0.113.1", None, "/admin/health"),
            Outcome::Allowed
        );
        assert!(denied(&check(&acl, "203.0.113.1", None, "/admin/x")).is_some());
    }

    #[test]
    fn global_lists_still_apply_when_a_rule_matches() {
        let acl = acl(r#"{"deny":["203.0.113.0/24"],
                "rules":[{"match":{"path":{"prefix":"/"}},"allow":["0.0.0.0/0"]}]}"#);
        assert_eq!(
            denied(&check(&acl, "203.0.113.1", None, "/")),
            Some((DenyReason::DenyList, ScopeName::Global))
        );
    }

    #[test]
    fn unnamed_rules_are_named_by_position() {
        let acl =
            acl(r#"{"rules":[{"match":{"path":{"prefix":"/a"}}},{"match":{},"deny":["::/0"]}]}"#);
        assert_eq!(
            denied(&check(&acl, "2001:db8::1", None, "/b")),
            Some((DenyReason::DenyList, ScopeName::Rule("rules[1]".into())))
        );
    }

    #[test]
    fn app_lists_apply_only_to_that_app() {
        let acl = acl(r#"{"apps":{"203751":{"allow":["198.51.100.0/24"]}}}"#);
        assert_eq!(
            check(&acl, "198.51.100.9", Some("203751"), "/"),
            Outcome::Allowed
        );
        assert_eq!(
            denied(&check(&acl, "203.0.113.9", Some("203751"), "/")),
            Some((DenyReason::NotAllowed, ScopeName::GlobalApp))
        );
        assert_eq!(
            check(&acl, "203.0.113.9", Some("other"), "/"),
            Outcome::Allowed
        );
        assert_eq!(check(&acl, "203.0.113.9", None, "/"), Outcome::Allowed);
    }

    #[test]
    fn app_lists_narrow_but_never_widen() {
        let acl = acl(r#"{"allow":["10.0.0.0/8"],"apps":{"partner":{"allow":["0.0.0.0/0"]}}}"#);
        assert!(denied(&check(&acl, "203.0.113.9", Some("partner"), "/")).is_some());
    }

    #[test]
    fn per_rule_app_lists_apply_within_the_rule() {
        let acl = acl(
            r#"{"rules":[{"name":"orders","match":{"path":{"template":"/orders/{id}"}},
                "apps":{"mobile":{"deny":["198.51.100.0/24"]}}}]}"#,
        );
        assert_eq!(
            denied(&check(&acl, "198.51.100.1", Some("mobile"), "/orders/7")),
            Some((DenyReason::DenyList, ScopeName::RuleApp("orders".into())))
        );
        assert_eq!(
            check(&acl, "198.51.100.1", Some("mobile"), "/users/7"),
            Outcome::Allowed
        );
        assert_eq!(
            check(&acl, "198.51.100.1", Some("web"), "/orders/7"),
            Outcome::Allowed
        );
    }

    #[test]
    fn v4_mapped_clients_match_v4_lists() {
        let acl = acl(r#"{"deny":["192.0.2.0/24"]}"#);
        assert!(denied(&check(&acl, "::ffff:192.0.2.5", None, "/")).is_some());
    }

    #[test]
    fn thousands_of_entries_compile_into_a_fast_set() {
        let entries: Vec<String> = (0..5000u32)
            .map(|i| format!("\"10.{}.{}.0/24\"", i / 256, i % 256))
            .collect();
        let acl = acl(&format!(r#"{{"deny":[{}]}}"#, entries.join(",")));
        assert!(denied(&check(&acl, "10.19.135.7", None, "/")).is_some());
        assert_eq!(check(&acl, "10.20.0.1", None, "/"), Outcome::Allowed);
        // 5000 adjacent /24s merge into one range.
        assert_eq!(acl.global.lists.deny.range_count(), 1);
    }

    #[test]
    fn malformed_configs_are_refused_with_the_field_named() {
        let cases = [
            (
                r#"{"deny":["10.0.0.0/8","10.0.0.300"]}"#,
                "deny[1]: `10.0.0.300` is not a valid IP address or CIDR block",
            ),
            (
                r#"{"allow":["10.0.0.0/33"]}"#,
                "allow[0]: `10.0.0.0/33` is not a valid CIDR block (address/prefix-length)",
            ),
            (
                r#"{"rules":[{"match":{"path":{"prefix":"x"}}}]}"#,
                "rules[0].match.path.prefix: `x` must start with `/`",
            ),
            (
                r#"{"rules":[{"match":{"methods":["G T"]}}]}"#,
                "rules[0].match.methods[0]: `G T` is not an HTTP method",
            ),
            (
                r#"{"rules":[{},{"alow":[]}]}"#,
                "rules[1].alow: unknown field `alow`",
            ),
            (r#"{"apps":{"":{}}}"#, "apps: an app key must not be empty"),
            (
                r#"{"apps":{"a":{"allow":["x"]}}}"#,
                "apps.a.allow[0]: `x` is not a valid IP address or CIDR block",
            ),
            (
                r#"{"client_address":{"trusted_proxies":["10.0.0.0/8"],"trusted_hops":-1}}"#,
                "client_address.trusted_hops: invalid value",
            ),
            (
                r#"{"client_address":{"trusted":["10.0.0.0/8"]}}"#,
                "client_address.trusted: unknown field `trusted`",
            ),
            (r#"{"dry_run":"yes"}"#, "dry_run: invalid type"),
            (r#"[]"#, "the filter configuration must be a JSON object"),
            (r#"{"deny":"#, "EOF while parsing"),
        ];
        for (json, expected) in cases {
            let error = config_error(json);
            assert!(
                error.starts_with(expected) || error.contains(expected),
                "{json}\n  got: {error}\n want: {expected}"
            );
        }
    }

    fn host(peer: &str) -> FakeHost {
        FakeHost::new()
            .with_property(&["source", "address"], peer)
            .with_header(":authority", "api.example.com")
            .with_header(":method", "GET")
            .with_header(":path", "/")
    }

    #[test]
    fn evaluate_uses_the_peer_and_ignores_xff_by_default() {
        let acl = acl(r#"{"deny":["203.0.113.0/24"]}"#);
        let spoofing = host("198.51.100.1:4000").with_header("x-forwarded-for", "10.0.0.1");
        assert_eq!(acl.evaluate(&spoofing), Outcome::Allowed);
        let hiding = host("203.0.113.5:4000").with_header("x-forwarded-for", "10.0.0.1");
        assert!(denied(&acl.evaluate(&hiding)).is_some());
    }

    #[test]
    fn evaluate_believes_xff_from_a_trusted_proxy() {
        let acl = acl(
            r#"{"deny":["203.0.113.0/24"],"client_address":{"trusted_proxies":["10.0.0.0/8"]}}"#,
        );
        let via_proxy = host("10.0.0.2:4000").with_header("x-forwarded-for", "203.0.113.5");
        assert!(denied(&acl.evaluate(&via_proxy)).is_some());
        let garbage = host("10.0.0.2:4000").with_header("x-forwarded-for", "nonsense");
        assert_eq!(
            acl.evaluate(&garbage),
            Outcome::BadForwardedFor("nonsense".into())
        );
        assert_eq!(acl.evaluate(&garbage).error().map(|e| e.status), Some(400));
    }

    #[test]
    fn evaluate_refuses_when_envoy_gives_no_ip_peer() {
        let acl = acl("{}");
        assert_eq!(acl.evaluate(&FakeHost::new()), Outcome::UnknownClient);
        assert_eq!(
            acl.evaluate(&host("@abstract-socket")),
            Outcome::UnknownClient
        );
        assert_eq!(Outcome::UnknownClient.error().map(|e| e.status), Some(403));
    }

    #[test]
    fn evaluate_reads_the_app_from_filter_state_never_from_headers() {
        let acl = acl(r#"{"apps":{"mobile":{"deny":["198.51.100.0/24"]}}}"#);
        let spoofed = host("198.51.100.1:1").with_header("gw_app", "mobile");
        assert_eq!(acl.evaluate(&spoofed), Outcome::Allowed);
        let authenticated = host("198.51.100.1:1").with_property(&[APP_KEY_PROPERTY], "mobile");
        assert!(denied(&acl.evaluate(&authenticated)).is_some());
    }

    #[test]
    fn evaluate_matches_route_names_when_rules_use_them() {
        let acl =
            acl(r#"{"rules":[{"match":{"route_names":["internal"]},"allow":["10.0.0.0/8"]}]}"#);
        let internal = host("198.51.100.1:1").with_property(&["xds", "route_name"], "internal");
        assert!(denied(&acl.evaluate(&internal)).is_some());
        let public = host("198.51.100.1:1").with_property(&["xds", "route_name"], "public");
        assert_eq!(acl.evaluate(&public), Outcome::Allowed);
    }

    #[test]
    fn every_outcome_maps_to_its_own_counter() {
        let client = "192.0.2.1".parse().unwrap();
        let outcomes = [
            Outcome::Allowed,
            Outcome::Denied {
                client,
                reason: DenyReason::DenyList,
                scope: ScopeName::Global,
            },
            Outcome::Denied {
                client,
                reason: DenyReason::NotAllowed,
                scope: ScopeName::Global,
            },
            Outcome::BadForwardedFor(String::new()),
            Outcome::UnknownClient,
        ];
        let metrics: Vec<_> = outcomes.iter().map(Outcome::metric).collect();
        for (i, metric) in metrics.iter().enumerate() {
            assert_eq!(Metric::ALL[i], *metric);
            assert!(!metrics[i + 1..].contains(metric));
        }
    }
}
