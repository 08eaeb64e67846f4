//! From an `apis.yaml` to each filter's configuration: every API's `match`
//! written into every policy section that needs it, with a record of where
//! each generated part came from, so a filter's error is reported against
//! the source (`Provenance::locate`).

use crate::format::{Api, Auth, AuthMode, Document, Group, MatchBy, Policy, PolicyKind, VERSION};
use crate::source::{Source, SourceError};
use gateway_common::config::join_path;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};

pub use gateway_common::section::Section;

/// The filters that resolve the client's address.
fn has_client_address(section: Section) -> bool {
    section.needs().client_address
}

/// The filters that may keep state in the fleet store.
fn has_fleet(section: Section) -> bool {
    section.needs().fleet_store
}

/// Where generated parts came from: `throttling.rules[2]` from
/// `policies[0].quota` (as bound to `apis[3]`).
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    entries: Vec<(String, String, Option<String>)>,
}

impl Provenance {
    pub fn add(&mut self, generated: impl Into<String>, source: impl Into<String>) {
        self.add_bound(generated, source, None);
    }

    /// As `add`, for a policy's body written for the API it is bound to.
    fn add_bound(
        &mut self,
        generated: impl Into<String>,
        source: impl Into<String>,
        bound_to: Option<String>,
    ) {
        self.entries
            .push((generated.into(), source.into(), bound_to));
    }

    /// The source path of a generated path, and the API a bound policy
    /// was generated for: the longest recorded prefix wins.
    pub fn locate(&self, generated: &str) -> (String, Option<String>) {
        let mut best: Option<&(String, String, Option<String>)> = None;
        for entry in &self.entries {
            let prefix = &entry.0;
            let within = generated == prefix
                || (generated.starts_with(prefix.as_str())
                    && matches!(generated.as_bytes()[prefix.len()], b'.' | b'['));
            if within && best.is_none_or(|b| b.0.len() < prefix.len()) {
                best = Some(entry);
            }
        }
        match best {
            Some((prefix, source, bound)) => (
                format!("{source}{}", &generated[prefix.len()..]),
                bound.clone(),
            ),
            None => (generated.to_string(), None),
        }
    }
}

/// An Envoy route of the generated route table.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub path: PathKind,
    pub method: Option<String>,
    /// Header conditions: (name, exact value, inverted).
    pub stage: StageMatch,
    /// The routing policy's choice this route takes (`x-gw-route`).
    pub chosen_by_routing: Option<String>,
    pub action: RouteAction,
    /// A share of the requests copied to another backend.
    pub mirror: Option<Mirror>,
}

impl Route {
    /// The API the route is one of (its name, or its name's first part:
    /// API names hold no `.`); none for the gateway's not-found route.
    pub fn api(&self) -> Option<&str> {
        (!self.name.starts_with(GATEWAY_ROUTES))
            .then(|| self.name.split('.').next().unwrap_or(&self.name))
    }
}

/// Envoy's request mirroring of a route: `per_ten_thousand` of its
/// requests copied to `backend`, the answers dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub backend: String,
    pub per_ten_thousand: u32,
}

#[derive(Debug, Clone)]
pub enum PathKind {
    Exact(String),
    Prefix(String),
    Template(String),
}

#[derive(Debug, Clone)]
pub enum StageMatch {
    Any,
    /// `X-Ca-Stage` equal to this (case-insensitively).
    Stage(String),
    /// `X-Ca-Stage` present and not RELEASE.
    Unknown,
}

#[derive(Debug, Clone)]
pub enum RouteAction {
    Backend {
        backend: String,
        timeout: String,
        /// The backend path (a template of the API's variables, or a
        /// literal) and host, rewritten by Envoy's router.
        path_rewrite: Option<String>,
        host_rewrite: Option<String>,
    },
    Respond {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
}

/// Everything the document generates.
#[derive(Debug, Clone)]
pub struct Generated {
    pub sections: Vec<(Section, Value)>,
    pub provenance: Provenance,
    pub routes: Vec<Route>,
    pub document: Document,
    pub warnings: Vec<String>,
}

/// The first part of the name of a route the gateway answers itself.
const GATEWAY_ROUTES: &str = "gateway.";
/// The route answering a request no API matches.
const NOT_FOUND_ROUTE: &str = "gateway.no-such-api";

/// The route answering a request of a stage published on its own
/// (see [`crate::stages`]) that none of that stage's APIs matches.
fn stage_not_found_route(stage: &str) -> String {
    format!("{GATEWAY_ROUTES}{}.no-such-api", stage.to_ascii_lowercase())
}

/// The route answering an API's unknown stage.
fn unknown_stage_route(api: &str) -> String {
    format!("{api}.unknown-stage")
}

/// A name the filters can carry into metrics: 1-64 letters, digits, `-`, `_`.
fn is_name(name: &str) -> bool {
    name.len() <= 64 && gateway_common::config::is_header_name(name)
}

const NAME_RULE: &str =
    "must be 1 to 64 letters, digits, `-` or `_` (it names routes, rules and metrics)";

/// What the configuration is generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// A complete Envoy bootstrap: its routes are generated too.
    #[default]
    Envoy,
    /// Istio, whose routes are the user's (VirtualServices): the policies
    /// match by method and path, and request-mapping rewrites the backend path.
    Istio,
}

/// Reads, checks and expands a document for an Envoy bootstrap.
pub fn generate(source: &Source) -> Result<Generated, SourceError> {
    generate_for(source, Target::Envoy)
}

/// Reads, checks and expands a document.
pub fn generate_for(source: &Source, target: Target) -> Result<Generated, SourceError> {
    generate_with(source, target, &BTreeMap::new())
}

/// [`generate`] for a document some of whose APIs serve one stage only
/// (`stage_only`: API name → stage): a stage published on its own, merged
/// by [`crate::stages::merge`]. Their routes come first and match only
/// their stage's `X-Ca-Stage`; a request of that stage none of them
/// matches is answered 404, never served by another stage's API.
pub fn generate_staged(
    source: &Source,
    stage_only: &BTreeMap<String, String>,
) -> Result<Generated, SourceError> {
    generate_with(source, Target::Envoy, stage_only)
}

fn generate_with(
    source: &Source,
    target: Target,
    stage_only: &BTreeMap<String, String>,
) -> Result<Generated, SourceError> {
    let document: Document = source.deserialize("")?;
    if document.version != VERSION {
        return Err(source.error(
            "version",
            format!("this gatewayctl reads version {VERSION}"),
        ));
    }
    crate::envoy::check_durations(&document, source)?;
    let mut generator = Generator {
        source,
        document: &document,
        provenance: Provenance::default(),
        sections: BTreeMap::new(),
        routes: Vec::new(),
        warnings: Vec::new(),
        match_by: match target {
            Target::Envoy => document.gateway.match_by,
            Target::Istio => MatchBy::Request,
        },
        target,
        stage_only,
    };
    generator.check_names()?;
    generator.check_references()?;
    let apis: Vec<ResolvedApi> = document
        .apis
        .iter()
        .enumerate()
        .map(|(index, api)| generator.resolve(index, api))
        .collect::<Result<_, _>>()?;
    // A stage's own APIs first, then its 404, then every other stage's.
    let (staged, shared): (Vec<&ResolvedApi>, Vec<&ResolvedApi>) = apis
        .iter()
        .partition(|api| stage_only.contains_key(&api.api.name));
    for api in staged {
        generator.add_routes(api);
    }
    for stage in stage_only.values().collect::<BTreeSet<_>>() {
        generator.add_stage_not_found(stage);
    }
    for api in shared {
        generator.add_routes(api);
    }
    generator.add_not_found();
    generator.add_sections(&apis)?;
    generator.warn_unbound(&apis);
    generator.warn_istio_routes(&apis);
    Ok(Generated {
        sections: generator.sections.into_iter().collect(),
        provenance: generator.provenance,
        routes: generator.routes,
        warnings: generator.warnings,
        document,
    })
}

/// The fields of `auth_options`, sign-auth's per-API options.
const AUTH_OPTIONS: [&str; 6] = [
    "appcode_query",
    "require_tls",
    "unsigned_payload",
    "keep_credentials",
    "jwt_issuers",
    "claims_to_headers",
];
/// An API with its group's defaults applied.
struct ResolvedApi<'a> {
    index: usize,
    api: &'a Api,
    backend: Option<String>,
    stages: BTreeMap<String, String>,
    auth: Auth,
    /// Where `auth` was written (the API's or its group's).
    auth_at: String,
    /// The allowed apps and where they were written.
    apps: Option<(Vec<String>, String)>,
    /// Bound policies with the path of the binding.
    policies: Vec<(usize, String)>,
    log: bool,
    route_names: Vec<String>,
    /// The routing policy's routes: (name, where to).
    routed: Vec<(String, RouteAction)>,
    mirror: Option<Mirror>,
    /// request-mapping's rule, its backend path and host moved to the route.
    mapping: Option<Map<String, Value>>,
    path_rewrite: Option<String>,
    host_rewrite: Option<String>,
}

impl ResolvedApi<'_> {
    fn at(&self) -> String {
        format!("apis[{}]", self.index)
    }
}

struct Generator<'a> {
    source: &'a Source,
    document: &'a Document,
    provenance: Provenance,
    sections: BTreeMap<Section, Value>,
    routes: Vec<Route>,
    warnings: Vec<String>,
    match_by: MatchBy,
    target: Target,
    /// APIs serving one stage only: name → stage.
    stage_only: &'a BTreeMap<String, String>,
}

impl Generator<'_> {
    fn error(&self, path: &str, message: impl Into<String>) -> SourceError {
        self.source.error(path, message)
    }

    fn check_names(&self) -> Result<(), SourceError> {
        let doc = self.document;
        let lists: [(&str, Vec<&str>); 5] = [
            ("apis", doc.apis.iter().map(|a| a.name.as_str()).collect()),
            (
                "backends",
                doc.backends.iter().map(|b| b.name.as_str()).collect(),
            ),
            (
                "policies",
                doc.policies.iter().map(|p| p.name.as_str()).collect(),
            ),
            (
                "groups",
                doc.groups.iter().map(|g| g.name.as_str()).collect(),
            ),
            (
                "gateway.listeners",
                doc.gateway
                    .listeners
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect(),
            ),
        ];
        if let Some(index) = doc.apis.iter().position(|api| api.name == "gateway") {
            return Err(self.error(
                &format!("apis[{index}].name"),
                "`gateway` names the gateway's own routes (gateway.no-such-api…): give the API another name",
            ));
        }
        for (list, names) in lists {
            let mut seen = HashMap::new();
            for (index, name) in names.iter().enumerate() {
                let at = format!("{list}[{index}].name");
                if !is_name(name) {
                    return Err(self.error(&at, format!("`{name}` {NAME_RULE}")));
                }
                if let Some(first) = seen.insert(*name, index) {
                    return Err(self.error(
                        &at,
                        format!("`{name}` is already the name of {list}[{first}]"),
                    ));
                }
            }
        }
        if doc.apis.is_empty() {
            return Err(self.error("apis", "no API is defined"));
        }
        Ok(())
    }

    fn backend_exists(&self, name: &str) -> bool {
        self.document.backends.iter().any(|b| b.name == name)
    }

    fn require_backend(&self, name: &str, at: &str) -> Result<(), SourceError> {
        if self.backend_exists(name) {
            Ok(())
        } else {
            Err(self.error(at, format!("`{name}` names no backend")))
        }
    }

    /// Clusters the filters call must be backends of the document.
    fn check_references(&self) -> Result<(), SourceError> {
        let doc = self.document;
        for (index, backend) in doc.backends.iter().enumerate() {
            if backend.endpoints.is_empty() {
                return Err(self.error(
                    &format!("backends[{index}].endpoints"),
                    "a backend needs at least one endpoint (`host:port`)",
                ));
            }
            for (e, endpoint) in backend.endpoints.iter().enumerate() {
                if crate::envoy::split_address(endpoint).is_none() {
                    return Err(self.error(
                        &format!("backends[{index}].endpoints[{e}]"),
                        format!("`{endpoint}` is not `host:port`"),
                    ));
                }
            }
        }
        if let Some(store) = &doc.gateway.fleet_store {
            if let Some(webdis) = &store.webdis {
                self.require_backend(webdis, store.webdis_at())?;
            }
        }
        let clusters = [
            ("settings.ext_auth", "authorizer", &doc.settings.ext_auth),
            ("settings.log_push", "sink", &doc.settings.log_push),
        ];
        for (at, object, settings) in clusters {
            let cluster = settings
                .as_ref()
                .and_then(|s| s.get(object))
                .and_then(|o| o.get("cluster"))
                .and_then(Value::as_str);
            if let Some(cluster) = cluster {
                self.require_backend(cluster, &format!("{at}.{object}.cluster"))?;
            }
        }
        // The clusters sign-auth fetches JWT issuers' keys from.
        let issuers = doc
            .settings
            .sign_auth
            .as_ref()
            .and_then(|s| s.get("jwt"))
            .and_then(|jwt| jwt.get("issuers"))
            .and_then(Value::as_array);
        for (i, issuer) in issuers.into_iter().flatten().enumerate() {
            for endpoint in ["jwks_uri", "discovery"] {
                let cluster = issuer
                    .get(endpoint)
                    .and_then(|e| e.get("cluster"))
                    .and_then(Value::as_str);
                if let Some(cluster) = cluster {
                    let at = format!("settings.sign_auth.jwt.issuers[{i}].{endpoint}.cluster");
                    self.require_backend(cluster, &at)?;
                }
            }
        }
        for section in Section::ALL {
            let at = format!("settings.{}", section.key());
            let Some(settings) = self.settings(section) else {
                continue;
            };
            if settings.contains_key("rules") {
                return Err(self.error(
                    &format!("{at}.rules"),
                    "rules are made from the APIs: bind policies to APIs instead",
                ));
            }
            if section == Section::SignAuth && settings.contains_key("apps") {
                return Err(self.error(
                    &format!("{at}.apps"),
                    "apps are written once, at the top level (`apps:`)",
                ));
            }
            if has_fleet(section) && settings.contains_key("fleet") {
                let names_store = settings
                    .get("fleet")
                    .is_some_and(|fleet| fleet.get("store").is_some());
                if !names_store && doc.gateway.fleet_store.is_none() {
                    return Err(self.error(
                        &format!("{at}.fleet"),
                        "fleet-wide state needs a store: name it in `gateway.fleet_store`",
                    ));
                }
            }
        }
        for (index, policy) in doc.policies.iter().enumerate() {
            let kinds = policy.kinds();
            if kinds.len() != 1 {
                return Err(self.error(
                    &format!("policies[{index}]"),
                    "a policy is exactly one of `quota`, `ip_control`, `breaker`, `access_control`, \
                     `routing`, `mirror`, `error_mapping`, `cache` or `threat_protection`",
                ));
            }
            for field in ["name", "match"] {
                if kinds[0].1.contains_key(field) {
                    return Err(self.error(
                        &format!("policies[{index}].{}.{field}", kinds[0].0.field()),
                        "the policy's name and the APIs it is bound to give this",
                    ));
                }
            }
        }
        Ok(())
    }

    fn settings(&self, section: Section) -> Option<&Map<String, Value>> {
        let s = &self.document.settings;
        match section {
            Section::SignAuth => s.sign_auth.as_ref(),
            Section::IpAcl => s.ip_acl.as_ref(),
            Section::ExtAuth => s.ext_auth.as_ref(),
            Section::AccessControl => s.access_control.as_ref(),
            Section::Routing => s.routing.as_ref(),
            Section::Throttling => s.throttling.as_ref(),
            Section::ParamValidation => s.param_validation.as_ref(),
            Section::ThreatProtection => s.threat_protection.as_ref(),
            Section::ResponseCache => s.response_cache.as_ref(),
            Section::ErrorMapping => s.error_mapping.as_ref(),
            Section::RequestMapping => s.request_mapping.as_ref(),
            Section::CircuitBreaker => s.circuit_breaker.as_ref(),
            Section::LogPush => s.log_push.as_ref(),
        }
    }

    fn resolve<'a>(&self, index: usize, api: &'a Api) -> Result<ResolvedApi<'a>, SourceError> {
        let at = format!("apis[{index}]");
        let group: Option<(usize, &Group)> = match &api.group {
            None => None,
            Some(name) => Some(
                self.document
                    .groups
                    .iter()
                    .enumerate()
                    .find(|(_, g)| &g.name == name)
                    .ok_or_else(|| {
                        self.error(&format!("{at}.group"), format!("`{name}` names no group"))
                    })?,
            ),
        };
        match (&api.path, &api.path_prefix) {
            (Some(path), None) | (None, Some(path)) => {
                let field = if api.path.is_some() {
                    "path"
                } else {
                    "path_prefix"
                };
                check_path(path, api.path_prefix.is_some())
                    .map_err(|message| self.error(&format!("{at}.{field}"), message))?;
            }
            _ => return Err(self.error(&at, "an API has exactly one of `path` or `path_prefix`")),
        }
        let mut backend = api
            .backend
            .clone()
            .or_else(|| group.and_then(|(_, g)| g.backend.clone()));
        match (&backend, &api.mock) {
            (Some(name), _) => {
                let field = if api.backend.is_some() {
                    format!("{at}.backend")
                } else {
                    format!("groups[{}].backend", group.map_or(0, |(g, _)| g))
                };
                self.require_backend(name, &field)?;
            }
            (None, Some(_)) => {}
            (None, None) => {
                return Err(self.error(
                    &at,
                    "an API needs a `backend` (its own or its group's) or a `mock`",
                ))
            }
        }
        let mut stages = group.map(|(_, g)| g.stages.clone()).unwrap_or_default();
        stages.extend(api.stages.clone());
        let mut lowered = BTreeSet::new();
        for (stage, target) in &stages {
            if !lowered.insert(stage.to_ascii_lowercase()) {
                return Err(self.error(
                    &format!("{at}.stages.{stage}"),
                    format!("`{stage}` is another stage's name in another case (X-Ca-Stage is matched in any case)"),
                ));
            }
            let field = if api.stages.contains_key(stage) {
                format!("{at}.stages.{stage}")
            } else {
                format!("groups[{}].stages.{stage}", group.map_or(0, |(g, _)| g))
            };
            if stage.eq_ignore_ascii_case("RELEASE") || !is_name(stage) {
                return Err(self.error(
                    &field,
                    format!("`{stage}` is not a stage name (RELEASE is the API's own backend)"),
                ));
            }
            self.require_backend(target, &field)?;
        }
        // An API of one stage only: that stage's backend, no stage routes.
        if let Some(only) = self.stage_only.get(&api.name) {
            if let Some((_, stage_backend)) = stages
                .iter()
                .find(|(stage, _)| stage.eq_ignore_ascii_case(only))
            {
                backend = Some(stage_backend.clone());
            }
            stages.clear();
        }
        let auth_at = if api.auth.is_some() {
            format!("{at}.auth")
        } else {
            format!("groups[{}].auth", group.map_or(0, |(g, _)| g))
        };
        let auth = api
            .auth
            .clone()
            .or_else(|| group.and_then(|(_, g)| g.auth.clone()))
            .ok_or_else(|| {
                self.error(
                    &at,
                    "who may call the API is not said: set `auth` (app, huawei_app, appcode, basic, jwt, anonymous, ext_auth, or a list of them) on it or its group",
                )
            })?;
        self.check_auth(&auth, &auth_at)?;
        let signs = !auth.sign_auth_modes().is_empty();
        let apps = match (
            &api.apps,
            group.and_then(|(g, group)| group.apps.as_ref().map(|a| (g, a))),
        ) {
            (Some(apps), _) => Some((apps.clone(), format!("{at}.apps"))),
            (None, Some((g, apps))) => Some((apps.clone(), format!("groups[{g}].apps"))),
            (None, None) => None,
        };
        if let (Some((_, apps_at)), false) = (&apps, signs) {
            return Err(self.error(
                apps_at,
                "apps are allowed only with an app mode in `auth` (app, huawei_app, appcode, basic, jwt)",
            ));
        }
        if let Some(options) = &api.auth_options {
            if let Some(key) = options
                .keys()
                .find(|key| !AUTH_OPTIONS.contains(&key.as_str()))
            {
                return Err(self.error(
                    &format!("{at}.auth_options.{key}"),
                    format!("not an auth option: {}", AUTH_OPTIONS.join(", ")),
                ));
            }
        }
        if let (Some(_), false) = (&api.auth_options, signs) {
            return Err(self.error(
                &format!("{at}.auth_options"),
                "auth_options are allowed only with an app mode in `auth` (app, huawei_app, appcode, basic, jwt)",
            ));
        }
        if auth.has(AuthMode::ExtAuth) && self.document.settings.ext_auth.is_none() {
            return Err(self.error(
                &format!("{at}.auth"),
                "`ext_auth` needs the authorizer in `settings.ext_auth`",
            ));
        }
        let mut bindings: Vec<(String, String)> = Vec::new();
        if let Some((g, group)) = group {
            for (i, name) in group.policies.iter().enumerate() {
                bindings.push((name.clone(), format!("groups[{g}].policies[{i}]")));
            }
        }
        for (i, name) in api.policies.iter().enumerate() {
            bindings.push((name.clone(), format!("{at}.policies[{i}]")));
        }
        let mut policies = Vec::new();
        let mut seen_kinds: HashMap<&'static str, String> = HashMap::new();
        for (name, binding) in bindings {
            let (p, policy) = self.policy_named(&name, &binding)?;
            if policies.iter().any(|(q, _)| *q == p) {
                return Err(self.error(&binding, format!("`{name}` is bound twice")));
            }
            let kind = policy.kinds()[0].0;
            if kind != PolicyKind::Quota {
                if let Some(first) = seen_kinds.insert(kind.field(), name.clone()) {
                    return Err(self.error(
                        &binding,
                        format!(
                            "`{name}` and `{first}` are both {} policies; an API has one",
                            kind.field()
                        ),
                    ));
                }
            }
            policies.push((p, binding));
        }
        let log = api.log.or(group.and_then(|(_, g)| g.log)).unwrap_or(true);
        let mut route_names = vec![api.name.clone()];
        route_names.extend(stages.keys().map(|stage| stage_route(&api.name, stage)));
        let (routed, mirror) = self.routes_of_policies(&policies)?;
        route_names.extend(routed.iter().map(|(name, _)| routed_route(&api.name, name)));
        let (mapping, path_rewrite, host_rewrite) = self.split_mapping(index, api)?;
        let maps_path = mapping
            .as_ref()
            .and_then(|m| m.get("backend"))
            .and_then(|b| b.get("path"))
            .is_some();
        let has_breaker = policies
            .iter()
            .any(|(p, _)| self.document.policies[*p].breaker.is_some());
        let logged = log && self.document.settings.log_push.is_some();
        if maps_path && (has_breaker || logged) {
            return Err(self.error(
                &format!("{at}.mapping.backend.path"),
                "for Istio, request-mapping rewrites the path, and the breaker and log-push after it \
                 would see the backend path: give this API no breaker and `log: false`, or build for Envoy",
            ));
        }
        Ok(ResolvedApi {
            mapping,
            path_rewrite,
            host_rewrite,
            index,
            api,
            backend,
            stages,
            auth,
            auth_at,
            apps,
            policies,
            log,
            route_names,
            routed,
            mirror,
        })
    }

    /// The routes an API's routing policy adds and its mirror, checked.
    #[allow(clippy::type_complexity)]
    fn routes_of_policies(
        &self,
        policies: &[(usize, String)],
    ) -> Result<(Vec<(String, RouteAction)>, Option<Mirror>), SourceError> {
        let mut routed = Vec::new();
        let mut mirror = None;
        for (p, _) in policies {
            let policy = &self.document.policies[*p];
            let kind = policy.kinds()[0].0;
            match kind {
                PolicyKind::Routing => {
                    let body = self.routing_policy(*p)?;
                    // On Istio the routes are the VirtualServices'
                    // (warn_istio_routes): checked, not written.
                    if self.target == Target::Istio {
                        continue;
                    }
                    for route in body.routes {
                        let action = match route.mock {
                            Some(mock) => RouteAction::Respond {
                                status: mock.status,
                                body: mock.body,
                                headers: mock.headers.into_iter().collect(),
                            },
                            None => {
                                let backend = route.backend.unwrap_or_default();
                                RouteAction::Backend {
                                    timeout: self.backend_timeout(&backend),
                                    backend,
                                    path_rewrite: None,
                                    host_rewrite: None,
                                }
                            }
                        };
                        routed.push((route.name, action));
                    }
                }
                PolicyKind::Mirror => {
                    let checked = self.mirror_policy(*p)?;
                    if self.target != Target::Istio {
                        mirror = Some(checked);
                    }
                }
                _ => {}
            }
        }
        Ok((routed, mirror))
    }

    fn backend_timeout(&self, name: &str) -> String {
        self.document
            .backends
            .iter()
            .find(|b| b.name == name)
            .map(|b| b.timeout.clone())
            .unwrap_or_default()
    }

    /// A routing policy's body, checked: each route named once, going to
    /// a backend of the document or answered by a mock.
    fn routing_policy(&self, p: usize) -> Result<RoutingPolicy, SourceError> {
        let at = format!("policies[{p}].routing");
        let body = self.document.policies[p]
            .routing
            .clone()
            .unwrap_or_default();
        let policy: RoutingPolicy = typed(Value::Object(body))
            .map_err(|(path, err)| self.error(&join_path(&at, &path), err))?;
        if policy.routes.is_empty() {
            return Err(self.error(&format!("{at}.routes"), "routing needs at least one route"));
        }
        let mut names = BTreeSet::new();
        for (i, route) in policy.routes.iter().enumerate() {
            let at = format!("{at}.routes[{i}]");
            if !is_name(&route.name) {
                return Err(self.error(&format!("{at}.name"), NAME_RULE));
            }
            if !names.insert(route.name.as_str()) {
                return Err(self.error(
                    &format!("{at}.name"),
                    format!("`{}` names another route of the policy", route.name),
                ));
            }
            match (&route.backend, &route.mock) {
                (Some(backend), None) => self.require_backend(backend, &format!("{at}.backend"))?,
                (None, Some(_)) => {}
                _ => {
                    return Err(self.error(
                        &at,
                        "a route goes to a `backend` or answers with a `mock` (one of them)",
                    ))
                }
            }
        }
        Ok(policy)
    }

    fn mirror_policy(&self, p: usize) -> Result<Mirror, SourceError> {
        let at = format!("policies[{p}].mirror");
        let body = self.document.policies[p].mirror.clone().unwrap_or_default();
        let policy: MirrorPolicy = typed(Value::Object(body))
            .map_err(|(path, err)| self.error(&join_path(&at, &path), err))?;
        self.require_backend(&policy.backend, &format!("{at}.backend"))?;
        if !(policy.percent > 0.0 && policy.percent <= 100.0) {
            return Err(self.error(
                &format!("{at}.percent"),
                "a share of the requests: more than 0, at most 100",
            ));
        }
        Ok(Mirror {
            backend: policy.backend,
            per_ten_thousand: (policy.percent * 100.0).round().max(1.0) as u32,
        })
    }

    /// Envoy routes a request again when a filter changes its path, so the
    /// backend path and host are rewritten by the router instead (after
    /// every policy); the rest of the mapping stays request-mapping's.
    #[allow(clippy::type_complexity)]
    fn split_mapping(
        &self,
        index: usize,
        api: &Api,
    ) -> Result<(Option<Map<String, Value>>, Option<String>, Option<String>), SourceError> {
        let Some(mut mapping) = api.mapping.clone() else {
            return Ok((None, None, None));
        };
        if self.target == Target::Istio {
            return Ok((Some(mapping), None, None));
        }
        let at = format!("apis[{index}].mapping.backend");
        let Some(Value::Object(mut backend)) = mapping.remove("backend") else {
            return Ok((Some(mapping), None, None));
        };
        if backend.contains_key("method") {
            return Err(self.error(
                &format!("{at}.method"),
                "the backend method cannot differ from the API's: Envoy routes by method, \
                 and would route the changed request anew",
            ));
        }
        let path = match backend.remove("path") {
            None => None,
            Some(Value::String(path)) => {
                let template_variables = api.path.as_deref().map(variables).unwrap_or_default();
                if let Some(missing) = variables(&path)
                    .into_iter()
                    .find(|v| !template_variables.contains(v))
                {
                    return Err(self.error(
                        &format!("{at}.path"),
                        format!(
                            "`{{{missing}}}` is not a variable of the API's path: the backend path \
                             is rewritten by Envoy's router from the path template's variables"
                        ),
                    ));
                }
                if !path.starts_with('/') {
                    return Err(self.error(
                        &format!("{at}.path"),
                        format!("`{path}` must start with `/`"),
                    ));
                }
                if api.path.is_none() {
                    return Err(self.error(
                        &format!("{at}.path"),
                        "a backend path needs the API's `path` (exact or a template), not a `path_prefix`",
                    ));
                }
                Some(path)
            }
            Some(_) => return Err(self.error(&format!("{at}.path"), "must be a string")),
        };
        let host = match backend.remove("host") {
            None => None,
            Some(Value::String(host)) if gateway_common::config::is_printable(&host) => Some(host),
            Some(_) => return Err(self.error(&format!("{at}.host"), "must be a host name")),
        };
        if let Some(field) = backend.keys().next() {
            return Err(self.error(
                &format!("{at}.{field}"),
                format!("unknown field `{field}`, expected `path` or `host`"),
            ));
        }
        Ok((Some(mapping), path, host))
    }

    fn policy_named(&self, name: &str, at: &str) -> Result<(usize, &Policy), SourceError> {
        self.document
            .policies
            .iter()
            .enumerate()
            .find(|(_, p)| p.name == name)
            .ok_or_else(|| self.error(at, format!("`{name}` names no policy")))
    }

    fn add_routes(&mut self, api: &ResolvedApi) {
        let path = match (&api.api.path, &api.api.path_prefix) {
            (Some(path), _) if path.contains('{') => PathKind::Template(path.clone()),
            (Some(path), _) => PathKind::Exact(path.clone()),
            (None, Some(prefix)) => PathKind::Prefix(prefix.clone()),
            (None, None) => PathKind::Prefix("/".into()),
        };
        let method = api.api.method.as_ref().map(|m| m.to_ascii_uppercase());
        let backend_timeout = |name: &str| {
            api.api
                .timeout
                .clone()
                .unwrap_or_else(|| self.backend_timeout(name))
        };
        let mirror = |action: &RouteAction| match action {
            RouteAction::Backend { .. } => api.mirror.clone(),
            RouteAction::Respond { .. } => None,
        };
        let only_stage = self.stage_only.get(&api.api.name);
        let route = |name: String, stage: StageMatch, action: RouteAction| Route {
            name,
            path: path.clone(),
            method: method.clone(),
            stage: match only_stage {
                Some(only) => StageMatch::Stage(only.clone()),
                None => stage,
            },
            chosen_by_routing: None,
            mirror: mirror(&action),
            action,
        };
        let mut routes = Vec::new();
        // The routing policy's choices first: they match only the header
        // the policy sets (and removes when the client sends it).
        for (name, action) in &api.routed {
            let mut action = action.clone();
            // The API's path rewriting and timeout; the Host is the other
            // backend's own.
            if let RouteAction::Backend {
                backend,
                path_rewrite,
                timeout,
                ..
            } = &mut action
            {
                path_rewrite.clone_from(&api.path_rewrite);
                *timeout = backend_timeout(backend);
            }
            let route_name = routed_route(&api.api.name, name);
            let mut chosen = route(route_name.clone(), StageMatch::Any, action);
            // The route's full name: no other API's route can take it.
            chosen.chosen_by_routing = Some(route_name);
            routes.push(chosen);
        }
        for (stage, backend) in &api.stages {
            routes.push(route(
                stage_route(&api.api.name, stage),
                StageMatch::Stage(stage.clone()),
                RouteAction::Backend {
                    backend: backend.clone(),
                    timeout: backend_timeout(backend),
                    path_rewrite: api.path_rewrite.clone(),
                    host_rewrite: api.host_rewrite.clone(),
                },
            ));
        }
        if !api.stages.is_empty() {
            routes.push(route(
                unknown_stage_route(&api.api.name),
                StageMatch::Unknown,
                error_response(404, "S404ST", "No Such Stage"),
            ));
        }
        let action = match (&api.api.mock, &api.backend) {
            (Some(mock), _) => RouteAction::Respond {
                status: mock.status,
                body: mock.body.clone(),
                headers: mock
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            },
            (None, Some(backend)) => RouteAction::Backend {
                backend: backend.clone(),
                timeout: backend_timeout(backend),
                path_rewrite: api.path_rewrite.clone(),
                host_rewrite: api.host_rewrite.clone(),
            },
            (None, None) => error_response(404, "S404NF", "No Such API"),
        };
        routes.push(route(api.api.name.clone(), StageMatch::Any, action));
        self.routes.extend(routes);
    }

    /// A request of a stage published on its own that none of its APIs
    /// matches: 404, as for any API not published to that stage.
    fn add_stage_not_found(&mut self, stage: &str) {
        self.routes.push(Route {
            name: stage_not_found_route(stage),
            path: PathKind::Prefix("/".into()),
            method: None,
            stage: StageMatch::Stage(stage.to_string()),
            chosen_by_routing: None,
            action: error_response(404, "S404NF", "No Such API"),
            mirror: None,
        });
    }

    /// A request no API matches: 404 in the gateway's error shape.
    fn add_not_found(&mut self) {
        self.routes.push(Route {
            name: NOT_FOUND_ROUTE.into(),
            path: PathKind::Prefix("/".into()),
            method: None,
            stage: StageMatch::Any,
            chosen_by_routing: None,
            action: error_response(404, "S404NF", "No Such API"),
            mirror: None,
        });
    }

    /// With policies matched by Envoy's route names, sign-auth lets a call
    /// in without credentials only on the routes it knows to take them:
    /// every API without an app mode gets a rule taking anonymous calls, the
    /// not-found and unknown-stage answers another, and a route sign-auth
    /// does not know (one published a moment before its policies reach the
    /// filters, see docs/publishing.md) needs credentials.
    fn admit_known_routes(&self, apis: &[ResolvedApi], sign_auth: &mut Vec<Value>) {
        let with_rule: Vec<String> = sign_auth
            .iter()
            .filter_map(|rule| rule["name"].as_str().map(String::from))
            .collect();
        for api in apis {
            if !with_rule.contains(&api.api.name) {
                // The route names alone: nothing of the request to check.
                sign_auth.push(json!({
                    "name": api.api.name,
                    "match": { "route_names": api.route_names },
                    "anonymous": true,
                }));
            }
        }
        let mut answers = vec![NOT_FOUND_ROUTE.to_string()];
        answers.extend(
            self.stage_only
                .values()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(|stage| stage_not_found_route(stage)),
        );
        answers.extend(
            apis.iter()
                .filter(|api| !api.stages.is_empty())
                .map(|api| unknown_stage_route(&api.api.name)),
        );
        sign_auth.push(json!({
            "name": "gateway-answers",
            "match": { "route_names": answers },
            "anonymous": true,
        }));
    }

    /// The `match` of an API in every section, and where its parts came from.
    fn api_match(&self, api: &ResolvedApi) -> Value {
        match self.match_by {
            // A template stays too: the policies read its captures.
            MatchBy::Route => match &api.api.path {
                Some(path) if path.contains('{') => json!({
                    "route_names": api.route_names,
                    "path": { "template": path },
                }),
                _ => json!({ "route_names": api.route_names }),
            },
            MatchBy::Request => {
                let mut matcher = Map::new();
                if let Some(method) = &api.api.method {
                    matcher.insert("methods".into(), json!([method]));
                }
                let path = match (&api.api.path, &api.api.path_prefix) {
                    (Some(path), _) if path.contains('{') => json!({ "template": path }),
                    (Some(path), _) => json!({ "exact": path }),
                    (None, Some(prefix)) => json!({ "prefix": prefix }),
                    (None, None) => json!({ "prefix": "/" }),
                };
                matcher.insert("path".into(), path);
                Value::Object(matcher)
            }
        }
    }

    /// A list of modes makes sense: not empty, no mode twice, `ext_auth`
    /// and `anonymous` alone or `anonymous` with app modes.
    fn check_auth(&self, auth: &Auth, at: &str) -> Result<(), SourceError> {
        let mut seen = Vec::new();
        for mode in &auth.modes {
            if seen.contains(mode) {
                return Err(self.error(at, format!("`{}` is listed twice", mode.name())));
            }
            seen.push(*mode);
        }
        if auth.modes.is_empty() {
            return Err(self.error(at, "needs at least one mode"));
        }
        if auth.has(AuthMode::ExtAuth) && auth.modes.len() > 1 {
            return Err(self.error(
                at,
                "`ext_auth` stands alone: the authorizer decides every call of the API",
            ));
        }
        Ok(())
    }

    fn record_rule(
        &mut self,
        section: Section,
        rule: usize,
        api: &ResolvedApi,
        body_at: String,
        bound: Option<String>,
    ) {
        let generated = format!("{}.rules[{rule}]", section.key());
        let api_at = api.at();
        let path_field = if api.api.path.is_some() {
            "path"
        } else {
            "path_prefix"
        };
        self.provenance.add_bound(generated.clone(), body_at, bound);
        self.provenance
            .add(format!("{generated}.name"), format!("{api_at}.name"));
        self.provenance.add(
            format!("{generated}.match"),
            format!("{api_at}.{path_field}"),
        );
        self.provenance.add(
            format!("{generated}.match.methods"),
            format!("{api_at}.method"),
        );
    }

    fn add_sections(&mut self, apis: &[ResolvedApi]) -> Result<(), SourceError> {
        let doc = self.document;
        let mut rules: BTreeMap<Section, Vec<Value>> = BTreeMap::new();
        for api in apis {
            let matcher = self.api_match(api);
            let name = api.api.name.clone();
            let mut push = |generator: &mut Self,
                            section: Section,
                            name: String,
                            body: Map<String, Value>,
                            body_at: String,
                            bound: Option<String>| {
                let list = rules.entry(section).or_default();
                let mut rule = Map::new();
                rule.insert("name".into(), Value::String(name));
                rule.insert("match".into(), matcher.clone());
                rule.extend(body);
                generator.record_rule(section, list.len(), api, body_at, bound);
                list.push(Value::Object(rule));
                list.len() - 1
            };
            let modes = api.auth.sign_auth_modes();
            if !modes.is_empty() {
                let mut body = api.api.auth_options.clone().unwrap_or_default();
                let body_at = match &api.api.auth_options {
                    Some(_) => format!("{}.auth_options", api.at()),
                    None => api.at(),
                };
                body.insert("modes".into(), json!(modes));
                if api.auth.has(AuthMode::Anonymous) {
                    body.insert("anonymous".into(), Value::Bool(true));
                }
                if let Some((apps, _)) = &api.apps {
                    body.insert("apps".into(), json!(apps));
                }
                let rule = push(self, Section::SignAuth, name.clone(), body, body_at, None);
                if let Some((_, apps_at)) = &api.apps {
                    self.provenance
                        .add(format!("sign_auth.rules[{rule}].apps"), apps_at.clone());
                }
                for field in ["modes", "anonymous"] {
                    self.provenance.add(
                        format!("sign_auth.rules[{rule}].{field}"),
                        api.auth_at.clone(),
                    );
                }
            }
            if api.auth.has(AuthMode::ExtAuth) {
                push(
                    self,
                    Section::ExtAuth,
                    name.clone(),
                    Map::new(),
                    api.at(),
                    None,
                );
            }
            for (p, binding) in &api.policies {
                let policy = &doc.policies[*p];
                let (kind, body) = policy.kinds()[0];
                let (section, rule_name) = match kind {
                    PolicyKind::Quota => (Section::Throttling, format!("{name}_{}", policy.name)),
                    PolicyKind::IpControl => (Section::IpAcl, name.clone()),
                    PolicyKind::Breaker => (Section::CircuitBreaker, name.clone()),
                    PolicyKind::AccessControl => (Section::AccessControl, name.clone()),
                    PolicyKind::Routing => (Section::Routing, name.clone()),
                    PolicyKind::ErrorMapping => (Section::ErrorMapping, name.clone()),
                    PolicyKind::Cache => (Section::ResponseCache, name.clone()),
                    PolicyKind::ThreatProtection => (Section::ThreatProtection, name.clone()),
                    // Envoy mirrors: the API's routes carry it.
                    PolicyKind::Mirror => continue,
                };
                let body = match kind {
                    PolicyKind::Routing => routing_section_rule(&name, body),
                    PolicyKind::Cache => {
                        cache_section_rule(body, &api.api.parameters, api.api.validation.as_ref())
                    }
                    _ => body.clone(),
                };
                let body_at = format!("policies[{p}].{}", kind.field());
                let bound = format!(
                    "as bound to {} by {binding}",
                    self.source.describe(&api.at())
                );
                push(self, section, rule_name, body, body_at, Some(bound));
            }
            let validates = !api.api.parameters.is_empty()
                || api.api.body_schema.is_some()
                || api.api.validation.is_some();
            if validates {
                let mut body = api.api.validation.clone().unwrap_or_default();
                if !api.api.parameters.is_empty() {
                    body.insert(
                        "parameters".into(),
                        Value::Array(api.api.parameters.clone()),
                    );
                }
                if let Some(schema) = &api.api.body_schema {
                    body.insert("body_schema".into(), schema.clone());
                }
                let rest = if api.api.validation.is_some() {
                    format!("{}.validation", api.at())
                } else {
                    api.at()
                };
                let rule = push(
                    self,
                    Section::ParamValidation,
                    name.clone(),
                    body,
                    rest,
                    None,
                );
                for field in ["parameters", "body_schema"] {
                    self.provenance.add(
                        format!("param_validation.rules[{rule}].{field}"),
                        format!("{}.{field}", api.at()),
                    );
                }
            }
            if let Some(mapping) = &api.mapping {
                let at = format!("{}.mapping", api.at());
                push(
                    self,
                    Section::RequestMapping,
                    name.clone(),
                    mapping.clone(),
                    at,
                    None,
                );
            }
            if doc.settings.log_push.is_some() && api.log {
                push(
                    self,
                    Section::LogPush,
                    name.clone(),
                    Map::new(),
                    api.at(),
                    None,
                );
            }
        }
        if self.match_by == MatchBy::Route {
            if let Some(sign_auth) = rules.get_mut(&Section::SignAuth) {
                self.admit_known_routes(apis, sign_auth);
            }
        }
        for section in Section::ALL {
            let settings = self.settings(section).cloned();
            let section_rules = rules.remove(&section);
            let always = matches!(section, Section::IpAcl | Section::LogPush) && settings.is_some();
            if section_rules.is_none() && !always {
                if settings.is_some() {
                    self.warnings.push(format!(
                        "{}: settings.{} is given, but no API uses the policy: it is left out",
                        self.source.file,
                        section.key()
                    ));
                }
                continue;
            }
            let mut config = settings.unwrap_or_default();
            self.provenance
                .add(section.key(), format!("settings.{}", section.key()));
            config.insert(
                "rules".into(),
                Value::Array(section_rules.unwrap_or_default()),
            );
            if section == Section::SignAuth {
                config.insert("apps".into(), Value::Array(doc.apps.clone()));
                // See `admit_known_routes`.
                config
                    .entry("anonymous")
                    .or_insert(Value::Bool(self.match_by == MatchBy::Request));
                self.provenance.add("sign_auth.apps", "apps");
            }
            if has_client_address(section) && !config.contains_key("client_address") {
                if let Some(client_address) = &doc.gateway.client_address {
                    config.insert("client_address".into(), client_address.clone());
                    self.provenance.add(
                        format!("{}.client_address", section.key()),
                        "gateway.client_address",
                    );
                }
            }
            if has_fleet(section) {
                if let (Some(Value::Object(fleet)), Some(store)) =
                    (config.get_mut("fleet"), &doc.gateway.fleet_store)
                {
                    if !fleet.contains_key("store") {
                        fleet.insert("store".into(), store.store_config());
                        let at = format!("{}.fleet.store", section.key());
                        self.provenance.add(&at, "gateway.fleet_store");
                        self.provenance
                            .add(format!("{at}.cluster"), store.webdis_at());
                    }
                }
            }
            self.sections.insert(section, Value::Object(config));
        }
        Ok(())
    }

    /// On Istio, gatewayctl writes no routes: a routing policy's filter
    /// sets `x-gw-route` for the VirtualService to match, and mirroring is
    /// the VirtualService's own.
    fn warn_istio_routes(&mut self, apis: &[ResolvedApi]) {
        if self.target != Target::Istio {
            return;
        }
        for (index, policy) in self.document.policies.iter().enumerate() {
            let bound = apis
                .iter()
                .any(|api| api.policies.iter().any(|(p, _)| *p == index));
            let what = match policy.kinds().first().map(|(kind, _)| *kind) {
                Some(PolicyKind::Routing) => {
                    "the routing filter sets `x-gw-route`: match it in the VirtualService's \
                     http routes (docs/policies/routing.md)"
                }
                Some(PolicyKind::Mirror) => {
                    "left out: use the VirtualService's `mirror` and `mirrorPercentage`"
                }
                _ => continue,
            };
            if bound {
                self.warnings.push(format!(
                    "{}: policies[{index}] ({}): on Istio the routes are the VirtualServices': {what}",
                    self.source.file, policy.name
                ));
            }
        }
    }

    fn warn_unbound(&mut self, apis: &[ResolvedApi]) {
        for (index, policy) in self.document.policies.iter().enumerate() {
            if !apis
                .iter()
                .any(|api| api.policies.iter().any(|(p, _)| *p == index))
            {
                self.warnings.push(format!(
                    "{}: policies[{index}] ({}) is bound to no API or group: it is left out",
                    self.source.file, policy.name
                ));
            }
        }
    }
}

/// A path Envoy's route and the filters' matcher read alike: it starts
/// with `/`, has no `*` (a wildcard to Envoy's URI templates, a literal to
/// the filters) and no `%` (Envoy matches escapes as written, the filters
/// normalised); a template's variables are names Envoy takes.
fn check_path(path: &str, prefix: bool) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("`{path}` must start with `/`"));
    }
    if path.contains(['*', '%', '?', '#'])
        || path.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "`{path}` has a character Envoy's routes and the filters read differently (`*`, `%`, `?`, `#`, spaces)"
        ));
    }
    let names = variables(path);
    if prefix && (!names.is_empty() || path.contains(['{', '}'])) {
        return Err(format!(
            "`{path}`: a prefix cannot be a template; use `path`"
        ));
    }
    if names.len() > 5 {
        return Err(format!(
            "`{path}` has {} variables; Envoy's URI templates take at most 5",
            names.len()
        ));
    }
    for name in &names {
        if !is_template_variable(name) {
            return Err(format!(
                "`{{{name}}}` is not a variable name Envoy's URI templates take (a letter, then letters, digits or `_`, at most 16)"
            ));
        }
    }
    for segment in path.split('/') {
        let is_variable =
            segment.starts_with('{') && segment.ends_with('}') && segment.matches('{').count() == 1;
        if segment.contains(['{', '}']) && !is_variable {
            return Err(format!(
                "`{path}`: a variable is a whole segment, such as `/orders/{{id}}`"
            ));
        }
    }
    Ok(())
}

/// A variable name Envoy's URI templates take: a letter, then letters,
/// digits or `_`, at most 16.
pub(crate) fn is_template_variable(name: &str) -> bool {
    (1..=16).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The `{name}`s of a path template.
pub(crate) fn variables(path: &str) -> Vec<&str> {
    path.split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
        .collect()
}

/// Route names the gateway adds hold a `.`, which API names cannot.
fn stage_route(api: &str, stage: &str) -> String {
    format!("{api}.stage.{}", stage.to_ascii_lowercase())
}

/// The Envoy route of a routing policy's choice `route` for `api`.
fn routed_route(api: &str, route: &str) -> String {
    format!("{api}.route.{route}")
}

/// A routing policy as apis.yaml writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutingPolicy {
    #[serde(default)]
    #[allow(dead_code)]
    parameters: Map<String, Value>,
    routes: Vec<RoutingRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutingRoute {
    name: String,
    #[allow(dead_code)]
    condition: String,
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    mock: Option<crate::format::Mock>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MirrorPolicy {
    backend: String,
    #[serde(default = "all_requests")]
    percent: f64,
}

fn all_requests() -> f64 {
    100.0
}

/// A value of the document read as `T`; an error with its path inside.
fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        (
            if path == "." { String::new() } else { path },
            err.into_inner().to_string(),
        )
    })
}

/// The routing filter's rule for `api` from the policy: the parameters,
/// and each route's condition with the name of the Envoy route it chooses.
fn routing_section_rule(api: &str, body: &Map<String, Value>) -> Map<String, Value> {
    let mut rule = Map::new();
    if let Some(parameters) = body.get("parameters") {
        rule.insert("parameters".into(), parameters.clone());
    }
    let routes: Vec<Value> = body
        .get("routes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|route| {
            let name = route
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            json!({ "condition": route.get("condition"), "to": routed_route(api, name) })
        })
        .collect();
    rule.insert("routes".into(), Value::Array(routes));
    rule
}

/// The response cache's rule from a `cache` policy: as written, its key by
/// default the API's declared parameters: its query parameters (when
/// param-validation drops the others, so no other reaches the backend) and
/// its header parameters.
fn cache_section_rule(
    body: &Map<String, Value>,
    parameters: &[Value],
    validation: Option<&Map<String, Value>>,
) -> Map<String, Value> {
    let declared = |place: &str| -> Vec<Value> {
        parameters
            .iter()
            .filter(|p| p.get("in").and_then(Value::as_str) == Some(place))
            .filter_map(|p| p.get("name").cloned())
            .collect()
    };
    let drops_undeclared = validation
        .and_then(|v| v.get("drop_undefined"))
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let mut rule = body.clone();
    let key = rule
        .entry("key")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(key) = key.as_object_mut() {
        let query = declared("query");
        if drops_undeclared && !query.is_empty() && !key.contains_key("query") {
            key.insert("query".into(), Value::Array(query));
        }
        let headers = declared("header");
        if !headers.is_empty() && !key.contains_key("headers") {
            key.insert("headers".into(), Value::Array(headers));
        }
    }
    rule
}

/// A local answer in the gateway's error shape.
fn error_response(status: u16, code: &str, message: &str) -> RouteAction {
    RouteAction::Respond {
        status,
        body: json!({ "code": code, "message": message }).to_string(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-ca-error-code".into(), code.into()),
            ("x-ca-error-message".into(), message.into()),
        ],
    }
}

/// A generated path's place in the source, for a filter's error.
pub fn locate_error(
    generated: &Generated,
    source: &Source,
    section: Section,
    error_path: &str,
    message: &str,
) -> SourceError {
    let full = join_path(section.key(), error_path);
    let (at, bound) = generated.provenance.locate(&full);
    let mut error = source.error(&at, message);
    if let Some(bound) = bound {
        error.message = format!("{message} ({bound})");
    }
    error
}
