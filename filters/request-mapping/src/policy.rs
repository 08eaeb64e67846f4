//! The request-mapping policy: how a frontend request becomes the request
//! the backend expects. Compiled once; applied per request to plain data,
//! producing a [`Mapped`] result the adapter writes back. No proxy-wasm calls.
//!
//! A request is mapped in three steps, so the order of mappings never
//! matters: every source is read from the request as received, then every
//! moved or removed parameter leaves its place, then every target is written.

use gateway_common::client_ip::{ClientAddressConfig, ClientAddressResolver};
use gateway_common::config::{is_header_name, ConfigError};
use gateway_common::error::GatewayError;
use gateway_common::host::HeaderLookup;
use gateway_common::matching::{
    compile_rule_match, rule_path, MatchConfig, MatchedRule, Matcher, RuleList,
};
use gateway_common::params::{
    body_kind, encode_component, parse_pairs, retain_raw_pairs, url_decode, BodyKind,
};
use serde::Deserialize;
use serde_json::Value as Json;
use std::collections::HashSet;

pub mod codes {
    use gateway_common::error::GatewayError;

    pub const INVALID_VALUE: GatewayError =
        GatewayError::new(400, "A400MV", "Invalid Parameter Value for Mapping");
    pub const BODY_REQUIRED: GatewayError =
        GatewayError::new(400, "A400MB", "Request Body Required for Mapping");
    pub const BODY_TOO_LARGE: GatewayError =
        GatewayError::new(413, "A413MB", "Request Body Too Large for Mapping");
    pub const UNSUPPORTED_MEDIA_TYPE: GatewayError =
        GatewayError::new(415, "A415MT", "Unsupported Content-Type for Mapping");
}

const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    pub rules: Vec<RuleConfig>,
    /// How the `client_ip` system parameter is found (as in ip-acl).
    #[serde(default)]
    pub client_address: ClientAddressConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    #[serde(default)]
    pub backend: BackendConfig,
    #[serde(default)]
    pub parameters: Vec<ParameterMapping>,
    #[serde(default)]
    pub constants: Vec<ConstantConfig>,
    #[serde(default)]
    pub system: Vec<SystemConfig>,
    #[serde(default)]
    pub response_headers: ResponseHeadersConfig,
    /// Largest body read when the rule maps form or JSON fields (default 1 MiB).
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Backend path template; `{name}` takes the frontend template's value.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    Query,
    Header,
    Path,
    /// A field of an `application/x-www-form-urlencoded` body.
    Form,
    /// A field of a JSON body; the name is a JSON Pointer (`/user/id`).
    Body,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Place {
    #[serde(rename = "in")]
    pub location: Location,
    pub name: String,
}

/// The JSON type a value takes when written into a JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    String,
    Integer,
    Number,
    Boolean,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterMapping {
    pub from: Place,
    /// Where the value goes; absent: the parameter is removed.
    #[serde(default)]
    pub to: Option<Place>,
    /// JSON type for a body target (default: kept from a JSON source, else string).
    #[serde(rename = "type", default)]
    pub value_type: Option<ValueType>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstantConfig {
    pub to: Place,
    /// A string, number or boolean; any JSON value for a body target.
    pub value: Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemValue {
    ClientIp,
    RequestId,
    AppKey,
    AppName,
    Api,
    /// Milliseconds since the Unix epoch (an integer in a JSON body).
    RequestTime,
    /// The user a third-party authorizer named (ext-auth's `gw_user`).
    User,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    pub value: SystemValue,
    pub to: Place,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseHeadersConfig {
    /// Set on the response, replacing any value the backend sent.
    #[serde(default)]
    pub add: Vec<HeaderValue>,
    #[serde(default)]
    pub remove: Vec<String>,
    #[serde(default)]
    pub rename: Vec<Rename>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    pub from: String,
    pub to: String,
}

/// Where a value comes from.
#[derive(Debug, Clone)]
enum Source {
    Parameter(Place),
    Constant(Json),
    System(SystemValue),
}

#[derive(Debug, Clone)]
struct Assignment {
    source: Source,
    target: Place,
    value_type: Option<ValueType>,
}

#[derive(Debug, Clone)]
enum PathPart {
    Literal(String),
    Variable(String),
}

/// Response header changes, names in lower case, checked at load time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseHeaders {
    pub set: Vec<(String, String)>,
    pub remove: Vec<String>,
    pub rename: Vec<(String, String)>,
}

impl ResponseHeaders {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty() && self.rename.is_empty()
    }
}

#[derive(Debug)]
pub struct Rule {
    pub name: String,
    matcher: Matcher,
    backend_path: Option<Vec<PathPart>>,
    backend_host: Option<String>,
    backend_method: Option<String>,
    assignments: Vec<Assignment>,
    removals: Vec<Place>,
    /// The body kind the rule reads or writes, if any.
    body: Option<BodyKind>,
    pub max_body_bytes: usize,
    pub response: ResponseHeaders,
}

#[derive(Debug)]
pub struct Mapping {
    pub rules: RuleList<Rule>,
    /// Resolves the `client_ip` system parameter.
    pub client_address: ClientAddressResolver,
}

/// Reads a system parameter (client IP, request id, app…).
pub type SystemLookup<'a> = &'a dyn Fn(SystemValue) -> Option<String>;

/// The facts of one request the mapping reads.
#[derive(Default)]
pub struct Frontend<'a> {
    /// The path without the query.
    pub path: &'a str,
    /// The raw query string (after `?`).
    pub query: &'a str,
    pub captures: &'a [(&'a str, String)],
    pub header: Option<HeaderLookup<'a>>,
    pub system: Option<SystemLookup<'a>>,
    pub content_type: Option<&'a str>,
    /// The whole body, when the rule reads bodies and the request has one.
    pub body: Option<&'a [u8]>,
}

/// What to write back.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Mapped {
    /// The new `:path` (path and query), when it changes.
    pub path: Option<String>,
    pub authority: Option<String>,
    pub method: Option<String>,
    pub set_headers: Vec<(String, String)>,
    pub remove_headers: Vec<String>,
    /// The new body, when it changes.
    pub body: Option<Vec<u8>>,
}

/// A JSON Pointer (RFC 6901) split into unescaped tokens.
fn pointer_tokens(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect()
}

fn check_place(
    place: &Place,
    at: &str,
    template_vars: &[&str],
    backend_vars: &[String],
) -> Result<(), ConfigError> {
    let name_error = |reason: String| Err(ConfigError::new(format!("{at}.name"), reason));
    if place.name.is_empty() {
        return name_error("must not be empty".into());
    }
    match place.location {
        Location::Header if !is_header_name(&place.name) => {
            name_error(format!("`{}` is not a header name", place.name))
        }
        Location::Path
            if !template_vars.contains(&place.name.as_str())
                && !backend_vars.contains(&place.name) =>
        {
            name_error(format!(
                "`{}` is not a variable of the frontend or backend path template",
                place.name
            ))
        }
        Location::Body if !place.name.starts_with('/') => name_error(format!(
            "`{}` is not a JSON Pointer (it must start with `/`)",
            place.name
        )),
        _ => Ok(()),
    }
}

fn compile_backend_path(template: &str) -> Result<Vec<PathPart>, String> {
    if !template.starts_with('/') || template.contains(['?', '#']) {
        return Err(format!(
            "`{template}` must start with `/` and have no query"
        ));
    }
    // Written into `:path` as is: Envoy would refuse the request upstream.
    if template
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(format!(
            "`{}` must not contain spaces or control characters",
            template.escape_debug()
        ));
    }
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .ok_or_else(|| format!("unclosed `{{` in `{template}`"))?;
        parts.push(PathPart::Literal(rest[..open].to_string()));
        let name = &rest[open + 1..close];
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!(
                "`{{{name}}}` in `{template}` is not a valid variable"
            ));
        }
        parts.push(PathPart::Variable(name.to_string()));
        rest = &rest[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("unmatched `}}` in `{template}`"));
    }
    parts.push(PathPart::Literal(rest.to_string()));
    Ok(parts)
}

impl Mapping {
    pub fn compile(config: &MappingConfig) -> Result<Self, ConfigError> {
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, rule) in config.rules.iter().enumerate() {
            rules.push(compile_rule(rule, &rule_path(i))?);
        }
        Ok(Self {
            rules: RuleList::new(rules),
            client_address: ClientAddressResolver::new(&config.client_address),
        })
    }
}

impl MatchedRule for Rule {
    fn matcher(&self) -> &Matcher {
        &self.matcher
    }
}

fn constant_check(value: &Json, target: Location) -> Result<(), &'static str> {
    match value {
        Json::String(text) if target == Location::Header && text.chars().any(char::is_control) => {
            Err("a header value must not contain control characters")
        }
        Json::String(_) | Json::Number(_) | Json::Bool(_) => Ok(()),
        _ if target == Location::Body => Ok(()),
        _ => Err("must be a string, number or boolean outside a JSON body"),
    }
}

fn compile_rule(rule: &RuleConfig, at: &str) -> Result<Rule, ConfigError> {
    let matcher = compile_rule_match(&rule.matcher).map_err(|e| e.within(at))?;
    let template_vars = matcher.template_variables();
    let backend_path = rule
        .backend
        .path
        .as_deref()
        .map(compile_backend_path)
        .transpose()
        .map_err(|m| ConfigError::new(format!("{at}.backend.path"), m))?;
    let backend_vars: Vec<String> = backend_path
        .iter()
        .flatten()
        .filter_map(|p| match p {
            PathPart::Variable(v) => Some(v.clone()),
            PathPart::Literal(_) => None,
        })
        .collect();
    let mut assignments = Vec::new();
    let mut removals = Vec::new();
    let mut targets = HashSet::new();
    let mut body_locations = HashSet::new();
    let mut add_target = |target: &Place, at: &str| -> Result<(), ConfigError> {
        let name = match target.location {
            Location::Header => target.name.to_ascii_lowercase(),
            _ => target.name.clone(),
        };
        if !targets.insert((target.location, name)) {
            return Err(ConfigError::new(
                format!("{at}.to"),
                format!("`{}` is already the target of another mapping", target.name),
            ));
        }
        Ok(())
    };
    for (j, m) in rule.parameters.iter().enumerate() {
        let at = format!("{at}.parameters[{j}]");
        check_place(&m.from, &format!("{at}.from"), &template_vars, &[])?;
        body_locations.insert(m.from.location);
        match &m.to {
            Some(to) => {
                check_place(to, &format!("{at}.to"), &[], &backend_vars)?;
                add_target(to, &at)?;
                body_locations.insert(to.location);
                assignments.push(Assignment {
                    source: Source::Parameter(m.from.clone()),
                    target: to.clone(),
                    value_type: m.value_type,
                });
            }
            None => removals.push(m.from.clone()),
        }
    }
    for (j, c) in rule.constants.iter().enumerate() {
        let at = format!("{at}.constants[{j}]");
        check_place(&c.to, &format!("{at}.to"), &[], &backend_vars)?;
        add_target(&c.to, &at)?;
        body_locations.insert(c.to.location);
        constant_check(&c.value, c.to.location)
            .map_err(|reason| ConfigError::new(format!("{at}.value"), reason))?;
        assignments.push(Assignment {
            source: Source::Constant(c.value.clone()),
            target: c.to.clone(),
            value_type: None,
        });
    }
    for (j, s) in rule.system.iter().enumerate() {
        let at = format!("{at}.system[{j}]");
        check_place(&s.to, &format!("{at}.to"), &[], &backend_vars)?;
        add_target(&s.to, &at)?;
        body_locations.insert(s.to.location);
        assignments.push(Assignment {
            source: Source::System(s.value),
            target: s.to.clone(),
            value_type: (s.value == SystemValue::RequestTime).then_some(ValueType::Integer),
        });
    }
    let body = match (
        body_locations.contains(&Location::Form),
        body_locations.contains(&Location::Body),
    ) {
        (true, true) => {
            return Err(ConfigError::new(
                at,
                "a rule maps either form fields or JSON body fields, not both",
            ))
        }
        (true, false) => Some(BodyKind::Form),
        (false, true) => Some(BodyKind::Json),
        (false, false) => None,
    };
    // Every backend path variable needs a value: a frontend variable of the
    // same name, or a mapping into it.
    for var in &backend_vars {
        let mapped = assignments
            .iter()
            .any(|a| a.target.location == Location::Path && &a.target.name == var);
        if !mapped && !template_vars.contains(&var.as_str()) {
            return Err(ConfigError::new(
                format!("{at}.backend.path"),
                format!("variable `{var}` has no value: it is not in the frontend template and nothing maps to it"),
            ));
        }
    }
    let method = rule
        .backend
        .method
        .as_ref()
        .map(|m| {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                Err(ConfigError::new(
                    format!("{at}.backend.method"),
                    format!("`{m}` is not an HTTP method"),
                ))
            } else {
                Ok(m.to_ascii_uppercase())
            }
        })
        .transpose()?;
    if let Some(host) = &rule.backend.host {
        if host.is_empty()
            || host
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == '/')
        {
            return Err(ConfigError::new(
                format!("{at}.backend.host"),
                format!("`{host}` is not a host"),
            ));
        }
    }
    if rule.max_body_bytes == Some(0) {
        return Err(ConfigError::new(
            format!("{at}.max_body_bytes"),
            "must be greater than 0",
        ));
    }
    Ok(Rule {
        name: rule.name.clone().unwrap_or_else(|| at.to_string()),
        matcher,
        backend_path,
        backend_host: rule.backend.host.clone(),
        backend_method: method,
        assignments,
        removals,
        body,
        max_body_bytes: rule.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
        response: compile_response_headers(
            &rule.response_headers,
            &format!("{at}.response_headers"),
        )?,
    })
}

fn compile_response_headers(
    config: &ResponseHeadersConfig,
    at: &str,
) -> Result<ResponseHeaders, ConfigError> {
    let header_name = |name: &str, at: String| {
        if is_header_name(name) {
            Ok(name.to_ascii_lowercase())
        } else {
            Err(ConfigError::new(
                at,
                format!("`{name}` is not a header name"),
            ))
        }
    };
    let mut compiled = ResponseHeaders::default();
    for (j, h) in config.add.iter().enumerate() {
        let name = header_name(&h.name, format!("{at}.add[{j}].name"))?;
        if h.value.chars().any(char::is_control) {
            return Err(ConfigError::new(
                format!("{at}.add[{j}].value"),
                "a header value must not contain control characters",
            ));
        }
        compiled.set.push((name, h.value.clone()));
    }
    for (j, name) in config.remove.iter().enumerate() {
        compiled
            .remove
            .push(header_name(name, format!("{at}.remove[{j}]"))?);
    }
    for (j, r) in config.rename.iter().enumerate() {
        compiled.rename.push((
            header_name(&r.from, format!("{at}.rename[{j}].from"))?,
            header_name(&r.to, format!("{at}.rename[{j}].to"))?,
        ));
    }
    Ok(compiled)
}

fn invalid(message: String) -> GatewayError {
    codes::INVALID_VALUE.with_message(format!("Invalid Parameter Value for Mapping: {message}"))
}

/// A value on its way from a source to a target: the text values of a query,
/// form, header or path parameter (repeated keys give several), or a JSON value.
#[derive(Debug, Clone)]
enum Carried {
    Texts(Vec<String>),
    Json(Json),
}

impl Carried {
    /// As text values, for a query, form, header or path target.
    fn texts(self, target: &str) -> Result<Vec<String>, GatewayError> {
        match self {
            Carried::Texts(values) => Ok(values),
            Carried::Json(Json::Array(items)) => items
                .into_iter()
                .map(|item| scalar_text(item, target))
                .collect::<Result<Vec<_>, _>>()
                .map(|v| v.into_iter().flatten().collect()),
            Carried::Json(value) => Ok(scalar_text(value, target)?.into_iter().collect()),
        }
    }

    /// As a JSON value, converted to `value_type` when one is declared.
    fn json(self, value_type: Option<ValueType>, target: &str) -> Result<Json, GatewayError> {
        match (self, value_type) {
            (Carried::Json(value), None) => Ok(value),
            (Carried::Json(Json::Array(items)), Some(ty)) => items
                .into_iter()
                .map(|item| convert(scalar_text(item, target)?.unwrap_or_default(), ty, target))
                .collect::<Result<Vec<_>, _>>()
                .map(Json::Array),
            (Carried::Json(value), Some(ty)) => {
                convert(scalar_text(value, target)?.unwrap_or_default(), ty, target)
            }
            (Carried::Texts(mut values), ty) => {
                let ty = ty.unwrap_or(ValueType::String);
                if values.len() == 1 {
                    convert(values.swap_remove(0), ty, target)
                } else {
                    values
                        .into_iter()
                        .map(|v| convert(v, ty, target))
                        .collect::<Result<Vec<_>, _>>()
                        .map(Json::Array)
                }
            }
        }
    }
}

/// The text of a JSON scalar; `None` for null.
fn scalar_text(value: Json, target: &str) -> Result<Option<String>, GatewayError> {
    match value {
        Json::Null => Ok(None),
        Json::String(s) => Ok(Some(s)),
        Json::Bool(b) => Ok(Some(b.to_string())),
        Json::Number(n) => Ok(Some(n.to_string())),
        Json::Array(_) | Json::Object(_) => Err(invalid(format!(
            "the value for `{target}` is not a string, number or boolean"
        ))),
    }
}

fn convert(text: String, ty: ValueType, target: &str) -> Result<Json, GatewayError> {
    let wrong =
        || invalid(format!("the value for `{target}` is not of type {ty:?}").to_lowercase());
    match ty {
        ValueType::String => Ok(Json::String(text)),
        ValueType::Integer => text
            .trim()
            .parse::<i64>()
            .map(Json::from)
            .map_err(|_| wrong()),
        ValueType::Number => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Json::Number)
            .ok_or_else(wrong),
        ValueType::Boolean => match text.trim() {
            "true" => Ok(Json::Bool(true)),
            "false" => Ok(Json::Bool(false)),
            _ => Err(wrong()),
        },
    }
}

/// Writes `value` at `pointer`, creating missing objects on the way.
fn json_set(doc: &mut Json, pointer: &str, value: Json) -> Result<(), GatewayError> {
    let tokens = pointer_tokens(pointer);
    let cannot = || invalid(format!("the JSON body has no place for `{pointer}`"));
    let Some((last, parents)) = tokens.split_last() else {
        return Err(cannot());
    };
    let mut current = doc;
    for token in parents {
        current = match current {
            Json::Object(map) => map
                .entry(token.clone())
                .or_insert_with(|| Json::Object(Default::default())),
            Json::Array(items) => token
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get_mut(i))
                .ok_or_else(cannot)?,
            _ => return Err(cannot()),
        };
    }
    match current {
        Json::Object(map) => {
            map.insert(last.clone(), value);
        }
        Json::Array(items) if last == "-" => items.push(value),
        Json::Array(items) => {
            let slot = last
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get_mut(i))
                .ok_or_else(cannot)?;
            *slot = value;
        }
        _ => return Err(cannot()),
    }
    Ok(())
}

/// Removes the value at `pointer`; true when there was one.
fn json_remove(doc: &mut Json, pointer: &str) -> bool {
    let Some(split) = pointer.rfind('/') else {
        return false;
    };
    let last = pointer_tokens(&pointer[split..]).pop().unwrap_or_default();
    match doc.pointer_mut(&pointer[..split]) {
        Some(Json::Object(map)) => map.remove(&last).is_some(),
        Some(Json::Array(items)) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// The request body being mapped.
enum Body {
    None,
    Json(Json),
    Form(Vec<(String, String)>),
}

/// Pairs of a query or form edited by name, keeping untouched pairs in
/// their original encoding.
#[derive(Default)]
struct PairEdits<'c> {
    removed: HashSet<&'c str>,
    added: Vec<(&'c str, String)>,
}

impl PairEdits<'_> {
    fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.added.is_empty()
    }

    fn apply(&self, raw: &str) -> String {
        let kept = retain_raw_pairs(raw, |key| !self.removed.contains(key))
            .unwrap_or_else(|| raw.trim_matches('&').to_string());
        let mut out = kept;
        for (key, value) in &self.added {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(&encode_component(key));
            out.push('=');
            out.push_str(&encode_component(value));
        }
        out
    }
}

fn values_named(pairs: &[(String, String)], name: &str) -> Option<Carried> {
    let values: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect();
    (!values.is_empty()).then_some(Carried::Texts(values))
}

impl Rule {
    /// True when the rule reads or writes form or JSON body fields, so the
    /// adapter must buffer the body.
    pub fn needs_body(&self) -> bool {
        self.body.is_some()
    }

    /// Maps one request.
    pub fn apply(&self, frontend: &Frontend<'_>) -> Result<Mapped, GatewayError> {
        let query =
            parse_pairs(frontend.query).map_err(|_| invalid("malformed query string".into()))?;
        let mut body = self.parse_body(frontend)?;

        // 1. Read every source from the request as received.
        let mut values = Vec::with_capacity(self.assignments.len());
        for assignment in &self.assignments {
            let value = match &assignment.source {
                Source::Parameter(from) => self.read(from, frontend, &query, &body)?,
                Source::Constant(value) => Some(Carried::Json(value.clone())),
                Source::System(kind) => frontend
                    .system
                    .and_then(|s| s(*kind))
                    .map(|v| Carried::Texts(vec![v])),
            };
            values.push(value);
        }

        // 2. Moved and removed parameters leave their place.
        let mut mapped = Mapped::default();
        let mut query_edits = PairEdits::default();
        let mut form_edits = PairEdits::default();
        let mut body_changed = false;
        let moved = self.assignments.iter().filter_map(|a| match &a.source {
            Source::Parameter(from) => Some(from),
            _ => None,
        });
        for place in self.removals.iter().chain(moved) {
            match place.location {
                Location::Query => {
                    query_edits.removed.insert(&place.name);
                }
                Location::Form => {
                    form_edits.removed.insert(&place.name);
                }
                Location::Header => mapped.remove_headers.push(place.name.to_ascii_lowercase()),
                Location::Body => {
                    if let Body::Json(doc) = &mut body {
                        body_changed |= json_remove(doc, &place.name);
                    }
                }
                Location::Path => {}
            }
        }

        // 3. Write every target that has a value.
        let mut path_values: Vec<(String, String)> = Vec::new();
        for (name, raw) in frontend.captures {
            path_values.push((name.to_string(), decode_capture(name, raw)?));
        }
        for (assignment, value) in self.assignments.iter().zip(values) {
            let Some(value) = value else { continue };
            let target = &assignment.target;
            match target.location {
                Location::Query => {
                    for text in value.texts(&target.name)? {
                        query_edits.added.push((&target.name, text));
                    }
                }
                Location::Form => {
                    for text in value.texts(&target.name)? {
                        form_edits.added.push((&target.name, text));
                    }
                }
                Location::Header => {
                    let joined = value.texts(&target.name)?.join(", ");
                    if joined.chars().any(char::is_control) {
                        return Err(invalid(format!(
                            "the value for header `{}` contains control characters",
                            target.name
                        )));
                    }
                    let name = target.name.to_ascii_lowercase();
                    mapped.remove_headers.retain(|h| *h != name);
                    mapped.set_headers.push((name, joined));
                }
                Location::Path => {
                    let mut texts = value.texts(&target.name)?;
                    if texts.len() > 1 {
                        return Err(invalid(format!(
                            "`{}` is repeated and cannot fill a path segment",
                            target.name
                        )));
                    }
                    path_values.retain(|(n, _)| *n != target.name);
                    path_values.push((target.name.clone(), texts.pop().unwrap_or_default()));
                }
                Location::Body => {
                    let json = value.json(assignment.value_type, &target.name)?;
                    match &mut body {
                        Body::Json(doc) => json_set(doc, &target.name, json)?,
                        _ => {
                            return Err(codes::BODY_REQUIRED.with_message(format!(
                                "Request Body Required for Mapping: `{}` goes into the JSON body",
                                target.name
                            )))
                        }
                    }
                    body_changed = true;
                }
            }
        }

        if let Body::Form(_) = body {
            if !form_edits.is_empty() {
                let raw = std::str::from_utf8(frontend.body.unwrap_or_default()).unwrap_or("");
                mapped.body = Some(form_edits.apply(raw).into_bytes());
            }
        } else if !form_edits.added.is_empty() {
            return Err(codes::BODY_REQUIRED.with_message(
                "Request Body Required for Mapping: form fields go into the request body",
            ));
        }
        if let (Body::Json(doc), true) = (&body, body_changed) {
            mapped.body = Some(serde_json::to_vec(doc).unwrap_or_default());
        }

        let new_path = match &self.backend_path {
            Some(parts) => Some(render_path(parts, &path_values)?),
            None => None,
        };
        if new_path.is_some() || !query_edits.is_empty() {
            let query = query_edits.apply(frontend.query);
            let path = new_path.unwrap_or_else(|| frontend.path.to_string());
            mapped.path = Some(if query.is_empty() {
                path
            } else {
                format!("{path}?{query}")
            });
        }
        mapped.authority = self.backend_host.clone();
        mapped.method = self.backend_method.clone();
        Ok(mapped)
    }

    fn parse_body(&self, frontend: &Frontend<'_>) -> Result<Body, GatewayError> {
        let Some(kind) = self.body else {
            return Ok(Body::None);
        };
        let raw = match frontend.body {
            Some(raw) if !raw.is_empty() => raw,
            _ => return Ok(Body::None),
        };
        let declared = body_kind(frontend.content_type);
        // A body without a Content-Type is taken as the kind the rule maps.
        if frontend.content_type.is_some() && declared != kind {
            return Err(codes::UNSUPPORTED_MEDIA_TYPE.with_message(format!(
                "Unsupported Content-Type for Mapping: this API maps {} bodies",
                if kind == BodyKind::Json {
                    "JSON"
                } else {
                    "form"
                }
            )));
        }
        match kind {
            BodyKind::Json => serde_json::from_slice(raw)
                .map(Body::Json)
                .map_err(|_| invalid("the request body is not valid JSON".into())),
            _ => std::str::from_utf8(raw)
                .ok()
                .and_then(|text| parse_pairs(text).ok())
                .map(Body::Form)
                .ok_or_else(|| invalid("the form body is not valid urlencoded UTF-8".into())),
        }
    }

    fn read(
        &self,
        from: &Place,
        frontend: &Frontend<'_>,
        query: &[(String, String)],
        body: &Body,
    ) -> Result<Option<Carried>, GatewayError> {
        Ok(match from.location {
            Location::Query => values_named(query, &from.name),
            Location::Form => match body {
                Body::Form(pairs) => values_named(pairs, &from.name),
                _ => None,
            },
            Location::Header => frontend
                .header
                .and_then(|h| h(&from.name.to_ascii_lowercase()))
                .map(|v| Carried::Texts(vec![v])),
            Location::Path => match frontend.captures.iter().find(|(n, _)| *n == from.name) {
                Some((name, raw)) => Some(Carried::Texts(vec![decode_capture(name, raw)?])),
                None => None,
            },
            Location::Body => match body {
                Body::Json(doc) => doc.pointer(&from.name).cloned().map(Carried::Json),
                _ => None,
            },
        })
    }
}

fn decode_capture(name: &str, raw: &str) -> Result<String, GatewayError> {
    url_decode(raw).map_err(|_| invalid(format!("`{name}` has a malformed encoding")))
}

fn render_path(parts: &[PathPart], values: &[(String, String)]) -> Result<String, GatewayError> {
    let mut out = String::new();
    for part in parts {
        match part {
            PathPart::Literal(text) => out.push_str(text),
            PathPart::Variable(name) => {
                let value = values
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("");
                if value.is_empty() || value == "." || value == ".." {
                    return Err(invalid(format!(
                        "`{name}` cannot be used as a path segment"
                    )));
                }
                out.push_str(&encode_component(value));
            }
        }
    }
    Ok(out)
}

/// Applies response header changes to the headers the backend sent:
/// renames first, then removals, then the configured values.
pub fn response_changes(
    config: &ResponseHeaders,
    header: HeaderLookup<'_>,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut set = Vec::new();
    let mut remove = Vec::new();
    for (from, to) in &config.rename {
        if let Some(value) = header(from) {
            remove.push(from.clone());
            set.push((to.clone(), value));
        }
    }
    for name in &config.remove {
        set.retain(|(n, _)| n != name);
        remove.push(name.clone());
    }
    for (name, value) in &config.set {
        set.retain(|(n, _)| n != name);
        remove.retain(|n| n != name);
        set.push((name.clone(), value.clone()));
    }
    (set, remove)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_common::config::parse_json;
    use gateway_common::matching::RequestAttrs;
    use serde_json::json;

    fn mapping(rule: serde_json::Value) -> Mapping {
        let text = json!({"rules": [rule]}).to_string();
        Mapping::compile(&parse_json(text.as_bytes()).unwrap()).unwrap()
    }

    fn config_error(rule: serde_json::Value) -> String {
        let text = json!({"rules": [rule]}).to_string();
        parse_json::<MappingConfig>(text.as_bytes())
            .and_then(|c| Mapping::compile(&c))
            .unwrap_err()
            .to_string()
    }

    fn apply(
        m: &Mapping,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Mapped, GatewayError> {
        apply_with_body(m, path_and_query, headers, None, None)
    }

    fn apply_with_body(
        m: &Mapping,
        path_and_query: &str,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<Mapped, GatewayError> {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let (index, captures) = m
            .rules
            .first_for(&RequestAttrs {
                path: path_and_query,
                method: "GET",
                ..Default::default()
            })
            .unwrap();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let system = |kind: SystemValue| match kind {
            SystemValue::ClientIp => Some("203.0.113.9".to_string()),
            SystemValue::AppKey => Some("203751".to_string()),
            SystemValue::RequestTime => Some("1795435200123".to_string()),
            SystemValue::User => Some("user-7".to_string()),
            _ => None,
        };
        m.rules.get(index).unwrap().apply(&Frontend {
            path,
            query,
            captures: &captures,
            header: Some(&header),
            system: Some(&system),
            content_type,
            body,
        })
    }

    fn json_body(mapped: &Mapped) -> serde_json::Value {
        serde_json::from_slice(mapped.body.as_deref().expect("a new body")).unwrap()
    }

    #[test]
    fn a_frontend_template_maps_onto_a_backend_template() {
        let m = mapping(json!({
            "match": {"path": {"template": "/users/{id}"}},
            "backend": {"path": "/v2/accounts/{id}/profile", "host": "accounts.internal", "method": "post"}
        }));
        let mapped = apply(&m, "/users/42?x=1", &[]).unwrap();
        assert_eq!(mapped.path.as_deref(), Some("/v2/accounts/42/profile?x=1"));
        assert_eq!(mapped.authority.as_deref(), Some("accounts.internal"));
        assert_eq!(mapped.method.as_deref(), Some("POST"));
    }

    #[test]
    fn path_values_are_encoded_and_cannot_escape_the_template() {
        let m = mapping(json!({
            "match": {"path": {"template": "/files/{name}"}},
            "backend": {"path": "/store/{name}"}
        }));
        assert_eq!(
            apply(&m, "/files/a%2Fb%20c", &[]).unwrap().path.as_deref(),
            Some("/store/a%2Fb%20c")
        );
        assert_eq!(
            apply(&m, "/files/%E5%8C%97", &[]).unwrap().path.as_deref(),
            Some("/store/%E5%8C%97")
        );
        for hostile in ["/files/..", "/files/%2E%2E", "/files/."] {
            assert_eq!(
                apply(&m, hostile, &[]).unwrap_err().code,
                "A400MV",
                "{hostile}"
            );
        }
        assert_eq!(
            apply(&m, "/files/..%2F..%2Fetc", &[])
                .unwrap()
                .path
                .as_deref(),
            Some("/store/..%2F..%2Fetc")
        );
    }

    #[test]
    fn parameters_move_between_locations_and_leave_their_old_place() {
        let m = mapping(json!({
            "match": {"path": {"prefix": "/"}},
            "parameters": [
                {"from": {"in": "query", "name": "userId"}, "to": {"in": "header", "name": "X-User-Id"}},
                {"from": {"in": "header", "name": "x-lang"}, "to": {"in": "query", "name": "lang"}},
                {"from": {"in": "query", "name": "debug"}}
            ]
        }));
        let mapped = apply(&m, "/x?userId=7&debug=1&keep=a%26b", &[("x-lang", "zh CN")]).unwrap();
        assert_eq!(mapped.path.as_deref(), Some("/x?keep=a%26b&lang=zh%20CN"));
        assert_eq!(
            mapped.set_headers,
            vec![("x-user-id".to_string(), "7".to_string())]
        );
        assert_eq!(mapped.remove_headers, vec!["x-lang".to_string()]);
    }

    #[test]
    fn constants_and_system_parameters_are_written() {
        let m = mapping(json!({
            "constants": [{"to": {"in": "header", "name": "X-Source"}, "value": "gateway"},
                          {"to": {"in": "query", "name": "v"}, "value": "2"}],
            "system": [{"value": "client_ip", "to": {"in": "header", "name": "X-Client-IP"}},
                       {"value": "app_key", "to": {"in": "query", "name": "app"}},
                       {"value": "app_name", "to": {"in": "header", "name": "X-App-Name"}},
                       {"value": "user", "to": {"in": "header", "name": "X-Caller"}}]
        }));
        let mapped = apply(&m, "/x", &[]).unwrap();
        assert_eq!(mapped.path.as_deref(), Some("/x?v=2&app=203751"));
        assert_eq!(
            mapped.set_headers,
            vec![
                ("x-source".into(), "gateway".into()),
                ("x-client-ip".into(), "203.0.113.9".into()),
                ("x-caller".into(), "user-7".into())
            ]
        );
    }

    #[test]
    fn values_moved_into_headers_cannot_inject_headers() {
        let m = mapping(
            json!({"parameters": [{"from": {"in": "query", "name": "q"}, "to": {"in": "header", "name": "X-Q"}}]}),
        );
        let error = apply(&m, "/x?q=a%0D%0AX-Admin:%201", &[]).unwrap_err();
        assert_eq!((error.status, error.code), (400, "A400MV"));
    }

    #[test]
    fn unmapped_requests_keep_their_path() {
        let m = mapping(json!({"parameters": [{"from": {"in": "header", "name": "cookie"}}]}));
        let mapped = apply(&m, "/x?a=1", &[]).unwrap();
        assert_eq!(mapped.path, None);
        assert_eq!(mapped.remove_headers, vec!["cookie".to_string()]);
    }

    #[test]
    fn query_parameters_become_typed_json_body_fields() {
        let m = mapping(json!({
            "match": {"path": {"template": "/users/{id}"}},
            "parameters": [
                {"from": {"in": "query", "name": "age"}, "to": {"in": "body", "name": "/user/age"}, "type": "integer"},
                {"from": {"in": "query", "name": "vip"}, "to": {"in": "body", "name": "/user/vip"}, "type": "boolean"},
                {"from": {"in": "query", "name": "tag"}, "to": {"in": "body", "name": "/tags"}},
                {"from": {"in": "path", "name": "id"}, "to": {"in": "body", "name": "/user/id"}},
                {"from": {"in": "body", "name": "/legacy"}}
            ],
            "constants": [{"to": {"in": "body", "name": "/meta"}, "value": {"source": "gw", "v": 2}}],
            "system": [{"value": "request_time", "to": {"in": "body", "name": "/meta/at"}}]
        }));
        let mapped = apply_with_body(
            &m,
            "/users/u%201?age=30&vip=true&tag=a&tag=b&keep=1",
            &[],
            Some("application/json"),
            Some(br#"{"legacy": true, "user": {"name": "Ann"}}"#),
        )
        .unwrap();
        assert_eq!(
            json_body(&mapped),
            json!({"user": {"name": "Ann", "age": 30, "vip": true, "id": "u 1"},
                   "tags": ["a", "b"], "meta": {"source": "gw", "v": 2, "at": 1795435200123_i64}})
        );
        assert_eq!(mapped.path.as_deref(), Some("/users/u%201?keep=1"));
    }

    #[test]
    fn json_body_fields_move_to_headers_query_and_other_fields() {
        let m = mapping(json!({
            "parameters": [
                {"from": {"in": "body", "name": "/auth/token"}, "to": {"in": "header", "name": "X-Token"}},
                {"from": {"in": "body", "name": "/page"}, "to": {"in": "query", "name": "page"}},
                {"from": {"in": "body", "name": "/ids"}, "to": {"in": "query", "name": "id"}},
                {"from": {"in": "body", "name": "/a~1b"}, "to": {"in": "body", "name": "/renamed"}},
                {"from": {"in": "body", "name": "/count"}, "to": {"in": "body", "name": "/total"}, "type": "string"}
            ]
        }));
        let mapped = apply_with_body(
            &m,
            "/x",
            &[],
            Some("application/json; charset=utf-8"),
            Some(br#"{"auth": {"token": "t-1"}, "page": 2, "ids": [1, "x y"], "a/b": {"deep": [1]}, "count": 7, "other": null}"#),
        )
        .unwrap();
        assert_eq!(
            json_body(&mapped),
            json!({"auth": {}, "renamed": {"deep": [1]}, "total": "7", "other": null})
        );
        assert_eq!(mapped.path.as_deref(), Some("/x?page=2&id=1&id=x%20y"));
        assert_eq!(
            mapped.set_headers,
            vec![("x-token".to_string(), "t-1".to_string())]
        );
    }

    #[test]
    fn every_source_is_read_before_anything_is_written() {
        // Swapping two fields needs both read from the original body.
        let m = mapping(json!({
            "parameters": [
                {"from": {"in": "body", "name": "/a"}, "to": {"in": "body", "name": "/b"}},
                {"from": {"in": "body", "name": "/b"}, "to": {"in": "body", "name": "/a"}}
            ]
        }));
        let mapped = apply_with_body(&m, "/x", &[], None, Some(br#"{"a": 1, "b": 2}"#)).unwrap();
        assert_eq!(json_body(&mapped), json!({"a": 2, "b": 1}));
    }

    #[test]
    fn form_fields_move_and_untouched_fields_keep_their_encoding() {
        let m = mapping(json!({
            "parameters": [
                {"from": {"in": "form", "name": "user"}, "to": {"in": "query", "name": "u"}},
                {"from": {"in": "query", "name": "lang"}, "to": {"in": "form", "name": "locale"}},
                {"from": {"in": "form", "name": "csrf"}}
            ],
            "constants": [{"to": {"in": "form", "name": "channel"}, "value": "web & app"}]
        }));
        let mapped = apply_with_body(
            &m,
            "/x?lang=zh-CN",
            &[],
            Some("application/x-www-form-urlencoded"),
            Some(b"user=a%2Bb&note=x+y%21&csrf=1&csrf=2"),
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(mapped.body.as_deref().unwrap()).unwrap(),
            "note=x+y%21&locale=zh-CN&channel=web%20%26%20app"
        );
        assert_eq!(mapped.path.as_deref(), Some("/x?u=a%2Bb"));
    }

    #[test]
    fn repeated_keys_carry_every_value_where_a_target_can_hold_them() {
        let m = mapping(json!({
            "match": {"path": {"template": "/t/{id}"}},
            "backend": {"path": "/b/{id}"},
            "parameters": [
                {"from": {"in": "query", "name": "tag"}, "to": {"in": "query", "name": "label"}},
                {"from": {"in": "query", "name": "tag"}, "to": {"in": "header", "name": "X-Tags"}},
                {"from": {"in": "query", "name": "id"}, "to": {"in": "path", "name": "id"}}
            ]
        }));
        let mapped = apply(&m, "/t/1?tag=a&tag=b%20c&id=9", &[]).unwrap();
        assert_eq!(mapped.path.as_deref(), Some("/b/9?label=a&label=b%20c"));
        assert_eq!(mapped.set_headers, vec![("x-tags".into(), "a, b c".into())]);
        let error = apply(&m, "/t/1?id=1&id=2", &[]).unwrap_err();
        assert_eq!(error.code, "A400MV");
        assert!(
            error.message.contains("`id` is repeated"),
            "{}",
            error.message
        );
    }

    #[test]
    fn encoding_edge_cases_round_trip_into_query_and_path() {
        let m = mapping(json!({
            "match": {"path": {"template": "/in/{v}"}},
            "backend": {"path": "/out/{v}"},
            "parameters": [{"from": {"in": "header", "name": "x-v"}, "to": {"in": "query", "name": "v"}}]
        }));
        let cases = [
            ("a%20b", "a b", "/out/a%20b?v=a%20b"),
            ("a%2Fb", "a/b", "/out/a%2Fb?v=a%2Fb"),
            ("100%25", "100%", "/out/100%25?v=100%25"),
            ("%E5%8C%97", "北", "/out/%E5%8C%97?v=%E5%8C%97"),
            ("x", "", "/out/x?v="),
        ];
        for (segment, header, expected) in cases {
            let mapped = apply(&m, &format!("/in/{segment}"), &[("x-v", header)]).unwrap();
            assert_eq!(mapped.path.as_deref(), Some(expected), "{segment}");
        }
        assert_eq!(apply(&m, "/in/%zz", &[]).unwrap_err().code, "A400MV");
    }

    #[test]
    fn bodies_of_the_wrong_kind_or_shape_are_refused() {
        let m = mapping(json!({
            "parameters": [{"from": {"in": "query", "name": "n"}, "to": {"in": "body", "name": "/n"}, "type": "number"}]
        }));
        let status = |ct: Option<&str>, body: Option<&[u8]>, path: &str| {
            apply_with_body(&m, path, &[], ct, body)
                .map(|_| "ok")
                .unwrap_or_else(|e| e.code)
        };
        assert_eq!(
            status(Some("application/json"), Some(b"{}"), "/x?n=1.5"),
            "ok"
        );
        assert_eq!(status(Some("text/plain"), Some(b"{}"), "/x?n=1"), "A415MT");
        assert_eq!(
            status(Some("application/json"), Some(b"{"), "/x?n=1"),
            "A400MV"
        );
        assert_eq!(
            status(Some("application/json"), Some(b"{}"), "/x?n=abc"),
            "A400MV"
        );
        assert_eq!(
            status(Some("application/json"), Some(b"[]"), "/x?n=1"),
            "A400MV"
        );
        assert_eq!(status(None, None, "/x?n=1"), "A400MB");
        // Nothing to write: a bodiless request passes untouched.
        assert_eq!(status(None, None, "/x"), "ok");
    }

    #[test]
    fn non_scalar_json_cannot_fill_a_header() {
        let m = mapping(json!({
            "parameters": [{"from": {"in": "body", "name": "/o"}, "to": {"in": "header", "name": "X-O"}}]
        }));
        let error = apply_with_body(&m, "/x", &[], None, Some(br#"{"o": {"a": 1}}"#)).unwrap_err();
        assert_eq!(error.code, "A400MV");
        let ok = apply_with_body(&m, "/x", &[], None, Some(br#"{"o": "a\r\nb"}"#)).unwrap_err();
        assert!(ok.message.contains("control characters"), "{}", ok.message);
    }

    #[test]
    fn response_headers_are_renamed_removed_and_set() {
        let m = mapping(json!({
            "response_headers": {
                "add": [{"name": "Cache-Control", "value": "no-store"}],
                "remove": ["Server", "X-Powered-By"],
                "rename": [{"from": "X-Internal-Id", "to": "X-Trace-Id"}]
            }
        }));
        let rule = m.rules.get(0).unwrap();
        let backend = |name: &str| match name {
            "x-internal-id" => Some("abc".to_string()),
            "cache-control" => Some("max-age=60".to_string()),
            _ => None,
        };
        let (set, remove) = response_changes(&rule.response, &backend);
        assert_eq!(
            set,
            vec![
                ("x-trace-id".to_string(), "abc".to_string()),
                ("cache-control".to_string(), "no-store".to_string())
            ]
        );
        assert_eq!(remove, vec!["x-internal-id", "server", "x-powered-by"]);
    }

    #[test]
    fn every_source_reaches_every_target_location() {
        // (location, name, how the frontend carries "v 1", how the target is read back)
        let places = [
            ("query", "q"),
            ("header", "X-H"),
            ("path", "p"),
            ("form", "f"),
            ("body", "/b"),
        ];
        for (from_in, from_name) in places {
            for (to_in, to_name) in places {
                if from_in == to_in
                    || (from_in == "form" && to_in == "body")
                    || (from_in == "body" && to_in == "form")
                {
                    continue;
                }
                let to_name = if to_in == "path" { "t" } else { to_name };
                let kind = if from_in == "form" || to_in == "form" {
                    "form"
                } else {
                    "json"
                };
                let m = mapping(json!({
                    "match": {"path": {"template": "/in/{p}"}},
                    "backend": {"path": "/out/{p}/{t}"},
                    "parameters": [{"from": {"in": from_in, "name": from_name}, "to": {"in": to_in, "name": to_name}}],
                    "constants": if to_in == "path" { json!([]) } else { json!([{"to": {"in": "path", "name": "t"}, "value": "x"}]) }
                }));
                let query = if from_in == "query" { "?q=v%201" } else { "" };
                let headers: &[(&str, &str)] = if from_in == "header" {
                    &[("x-h", "v 1")]
                } else {
                    &[]
                };
                let segment = if from_in == "path" { "v%201" } else { "seg" };
                let (content_type, body): (&str, &[u8]) = match (kind, from_in) {
                    ("form", "form") => ("application/x-www-form-urlencoded", b"f=v+1&keep=1"),
                    ("form", _) => ("application/x-www-form-urlencoded", b"keep=1"),
                    (_, "body") => ("application/json", br#"{"b": "v 1"}"#),
                    _ => ("application/json", b"{}"),
                };
                let case = format!("{from_in} -> {to_in}");
                let mapped = apply_with_body(
                    &m,
                    &format!("/in/{segment}{query}"),
                    headers,
                    Some(content_type),
                    Some(body),
                )
                .unwrap_or_else(|e| panic!("{case}: {e:?}"));
                let path = mapped.path.clone().unwrap_or_default();
                let got = match to_in {
                    "query" => path.split_once("?q=").map(|(_, v)| url_decode(v).unwrap()),
                    "header" => mapped
                        .set_headers
                        .iter()
                        .find(|(n, _)| n == "x-h")
                        .map(|(_, v)| v.clone()),
                    "path" => path
                        .strip_prefix(&format!("/out/{segment}/"))
                        .map(|v| url_decode(v.split('?').next().unwrap()).unwrap()),
                    "form" => mapped.body.as_deref().and_then(|b| {
                        parse_pairs(std::str::from_utf8(b).unwrap())
                            .unwrap()
                            .into_iter()
                            .find(|(k, _)| k == "f")
                            .map(|(_, v)| v)
                    }),
                    _ => mapped.body.as_deref().map(|b| {
                        serde_json::from_slice::<serde_json::Value>(b).unwrap()["b"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string()
                    }),
                };
                assert_eq!(got.as_deref(), Some("v 1"), "{case}: {mapped:?}");
                // The value left its old place.
                match from_in {
                    "query" => assert!(!path.contains("q=") || to_in == "query", "{case}"),
                    "header" => assert!(
                        mapped.remove_headers.contains(&"x-h".to_string()) || to_in == "header",
                        "{case}"
                    ),
                    "form" => assert!(
                        !String::from_utf8_lossy(mapped.body.as_deref().unwrap_or_default())
                            .contains("f=v"),
                        "{case}"
                    ),
                    "body" => assert!(
                        mapped
                            .body
                            .as_deref()
                            .is_none_or(|b| !String::from_utf8_lossy(b).contains("\"b\""))
                            || to_in == "body",
                        "{case}"
                    ),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn bad_mappings_are_refused_with_the_field_named() {
        let cases = [
            (
                json!({"backend": {"path": "/v2/{id}"}}),
                "rules[0].backend.path: variable `id` has no value",
            ),
            (
                json!({"backend": {"path": "v2"}}),
                "rules[0].backend.path: `v2` must start with `/`",
            ),
            // Found by the request_mapping fuzz target.
            (
                json!({"backend": {"path": "/intica\u{0}tion"}}),
                "rules[0].backend.path: `/intica\\0tion` must not contain spaces or control characters",
            ),
            (
                json!({"backend": {"path": "/a b"}}),
                "rules[0].backend.path: `/a b` must not contain spaces or control characters",
            ),
            (
                json!({"parameters": [{"from": {"in": "path", "name": "id"}}]}),
                "rules[0].parameters[0].from.name: `id` is not a variable",
            ),
            (
                json!({"constants": [{"to": {"in": "header", "name": "X-A"}, "value": "1"}, {"to": {"in": "header", "name": "x-a"}, "value": "2"}]}),
                "rules[0].constants[1].to: `x-a` is already the target of another mapping",
            ),
            (
                json!({"constants": [{"to": {"in": "header", "name": "bad name"}, "value": "1"}]}),
                "rules[0].constants[0].to.name: `bad name` is not a header name",
            ),
            (
                json!({"constants": [{"to": {"in": "header", "name": "X-A"}, "value": "a\r\nb"}]}),
                "rules[0].constants[0].value: a header value must not contain control characters",
            ),
            (
                json!({"backend": {"method": "GE T"}}),
                "rules[0].backend.method: `GE T` is not an HTTP method",
            ),
            (
                json!({"system": [{"value": "password", "to": {"in": "header", "name": "X"}}]}),
                "unknown variant `password`",
            ),
            (
                json!({"parameters": [{"from": {"in": "form", "name": "a"}, "to": {"in": "body", "name": "/a"}}]}),
                "rules[0]: a rule maps either form fields or JSON body fields, not both",
            ),
            (
                json!({"parameters": [{"from": {"in": "body", "name": "a"}}]}),
                "rules[0].parameters[0].from.name: `a` is not a JSON Pointer",
            ),
            (
                json!({"constants": [{"to": {"in": "header", "name": "X-A"}, "value": {"a": 1}}]}),
                "rules[0].constants[0].value: must be a string, number or boolean outside a JSON body",
            ),
            (
                json!({"response_headers": {"rename": [{"from": "X-A", "to": "bad name"}]}}),
                "rules[0].response_headers.rename[0].to: `bad name` is not a header name",
            ),
            (
                json!({"max_body_bytes": 0}),
                "rules[0].max_body_bytes: must be greater than 0",
            ),
            (
                json!({"parameters": [{"from": {"in": "query", "name": "a"}, "to": {"in": "body", "name": "/a"}, "type": "date"}]}),
                "unknown variant `date`",
            ),
        ];
        for (rule, expected) in cases {
            let error = config_error(rule.clone());
            assert!(
                error.contains(expected),
                "{rule}\n got: {error}\nwant: {expected}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_value_moved_into_path_and_query_decodes_back_unchanged(value in "\\PC{1,24}") {
            let m = mapping(json!({
                "backend": {"path": "/out/{v}"},
                "parameters": [
                    {"from": {"in": "header", "name": "x-v"}, "to": {"in": "path", "name": "v"}},
                    {"from": {"in": "header", "name": "x-w"}, "to": {"in": "query", "name": "w"}}
                ]
            }));
            match apply(&m, "/in", &[("x-v", &value), ("x-w", &value)]) {
                Ok(mapped) => {
                    let path = mapped.path.unwrap();
                    let (path, query) = path.split_once('?').unwrap();
                    let segment = path.strip_prefix("/out/").unwrap();
                    proptest::prop_assert!(!segment.contains(['/', '?', '#', ' ']));
                    proptest::prop_assert_eq!(url_decode(segment).unwrap(), value.clone());
                    proptest::prop_assert_eq!(url_decode(query.strip_prefix("w=").unwrap()).unwrap(), value);
                }
                Err(error) => {
                    proptest::prop_assert_eq!(error.code, "A400MV");
                    proptest::prop_assert!(value == "." || value == ".." || value.chars().any(char::is_control));
                }
            }
        }
    }
}
