//! The param-validation policy: declared parameters per API, compiled once
//! (regexes, JSON Schemas), checked per request. No proxy-wasm calls here.

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
use serde_json::Value;
use std::collections::HashSet;

pub mod codes {
    use gateway_common::error::GatewayError;

    pub const INVALID_PARAMETER: GatewayError =
        GatewayError::new(400, "A400PV", "Invalid Parameter");
    pub const INVALID_BODY: GatewayError = GatewayError::new(400, "A400BD", "Invalid Body");
    pub const BODY_TOO_LARGE: GatewayError =
        GatewayError::new(413, "A413PB", "Request Body Too Large");
    pub const UNSUPPORTED_MEDIA_TYPE: GatewayError =
        GatewayError::new(415, "A415CT", "Unsupported Content-Type");
}

const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Longest message a client sees; violations past it are summarised.
const MAX_MESSAGE_CHARS: usize = 400;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationConfig {
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    #[serde(default)]
    pub parameters: Vec<ParameterConfig>,
    /// JSON Schema (draft 7) for `application/json` bodies.
    #[serde(default)]
    pub body_schema: Option<Value>,
    /// Remove query and form parameters that are not declared (default true).
    #[serde(default)]
    pub drop_undefined: Option<bool>,
    /// When set, request headers not listed (nor declared) are removed.
    #[serde(default)]
    pub allowed_headers: Option<Vec<String>>,
    /// `all` violations in the message (default) or only the `first`.
    #[serde(default)]
    pub report: Report,
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// Bodies that are neither JSON nor a urlencoded form: `pass` (default) or `reject`.
    #[serde(default)]
    pub other_content_types: OtherContentTypes,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    #[default]
    All,
    First,
}

pub use gateway_common::params::OtherContentTypes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    Query,
    Header,
    Path,
    Form,
    Body,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    #[default]
    String,
    Integer,
    Number,
    Boolean,
    Array,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    #[serde(default, rename = "type")]
    pub kind: ParamType,
    #[serde(default)]
    pub minimum: Option<f64>,
    #[serde(default)]
    pub maximum: Option<f64>,
    #[serde(default)]
    pub exclusive_minimum: Option<f64>,
    #[serde(default)]
    pub exclusive_maximum: Option<f64>,
    #[serde(default)]
    pub min_length: Option<usize>,
    #[serde(default)]
    pub max_length: Option<usize>,
    #[serde(default, rename = "enum")]
    pub allowed: Option<Vec<String>>,
    /// A regular expression the whole value must match.
    #[serde(default)]
    pub pattern: Option<String>,
    /// For arrays: the item constraints.
    #[serde(default)]
    pub items: Option<Box<Constraints>>,
    #[serde(default)]
    pub min_items: Option<usize>,
    #[serde(default)]
    pub max_items: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterConfig {
    pub name: String,
    #[serde(rename = "in")]
    pub location: Location,
    /// For `body`: a JSON Pointer (default `/<name>`).
    #[serde(default)]
    pub pointer: Option<String>,
    #[serde(default)]
    pub required: bool,
    /// Used when the parameter is absent (query and header only).
    #[serde(default)]
    pub default: Option<String>,
    #[serde(flatten)]
    pub constraints: Constraints,
}

#[derive(Debug, Clone)]
struct Check {
    kind: ParamType,
    min: Option<(f64, bool)>,
    max: Option<(f64, bool)>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    allowed: Option<Vec<String>>,
    pattern: Option<regex_lite::Regex>,
    items: Option<Box<Check>>,
    min_items: Option<usize>,
    max_items: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Parameter {
    pub name: String,
    pub location: Location,
    pointer: String,
    required: bool,
    pub default: Option<String>,
    check: Check,
}

pub struct Rule {
    pub name: String,
    matcher: Matcher,
    pub parameters: Vec<Parameter>,
    schema: Option<jsonschema_valid::Config<'static>>,
    pub drop_undefined: bool,
    allowed_headers: Option<HashSet<String>>,
    report: Report,
    pub max_body_bytes: usize,
    other_content_types: OtherContentTypes,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct Validation {
    pub rules: RuleList<Rule>,
}

fn compile_check(c: &Constraints, at: &str) -> Result<Check, ConfigError> {
    let numeric = matches!(c.kind, ParamType::Integer | ParamType::Number);
    if !numeric
        && [
            c.minimum,
            c.maximum,
            c.exclusive_minimum,
            c.exclusive_maximum,
        ]
        .iter()
        .any(Option::is_some)
    {
        return Err(ConfigError::new(
            at,
            "minimum/maximum apply to integer and number only",
        ));
    }
    if c.kind != ParamType::Array
        && (c.items.is_some() || c.min_items.is_some() || c.max_items.is_some())
    {
        return Err(ConfigError::new(
            at,
            "items/min_items/max_items apply to arrays only",
        ));
    }
    let pattern = c
        .pattern
        .as_ref()
        .map(|p| {
            regex_lite::Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                ConfigError::new(
                    format!("{at}.pattern"),
                    format!("invalid regular expression: {e}"),
                )
            })
        })
        .transpose()?;
    let items = c
        .items
        .as_ref()
        .map(|items| compile_check(items, &format!("{at}.items")).map(Box::new))
        .transpose()?;
    Ok(Check {
        kind: c.kind,
        min: c
            .exclusive_minimum
            .map(|v| (v, true))
            .or(c.minimum.map(|v| (v, false))),
        max: c
            .exclusive_maximum
            .map(|v| (v, true))
            .or(c.maximum.map(|v| (v, false))),
        min_length: c.min_length,
        max_length: c.max_length,
        allowed: c.allowed.clone(),
        pattern,
        items,
        min_items: c.min_items,
        max_items: c.max_items,
    })
}

impl Validation {
    pub fn compile(config: &ValidationConfig) -> Result<Self, ConfigError> {
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, rule) in config.rules.iter().enumerate() {
            let at = rule_path(i);
            rules.push(compile_rule(rule, &at)?);
        }
        Ok(Self {
            rules: RuleList::new(rules),
        })
    }
}

impl MatchedRule for Rule {
    fn matcher(&self) -> &Matcher {
        &self.matcher
    }
}

fn compile_rule(rule: &RuleConfig, at: &str) -> Result<Rule, ConfigError> {
    let matcher = compile_rule_match(&rule.matcher).map_err(|e| e.within(at))?;
    let variables = matcher.template_variables();
    let mut parameters = Vec::with_capacity(rule.parameters.len());
    let mut seen = HashSet::new();
    for (j, p) in rule.parameters.iter().enumerate() {
        let at = format!("{at}.parameters[{j}]");
        if p.name.is_empty() {
            return Err(ConfigError::new(format!("{at}.name"), "must not be empty"));
        }
        if !seen.insert((p.location as u8, p.name.to_ascii_lowercase())) {
            return Err(ConfigError::new(
                format!("{at}.name"),
                format!("`{}` is declared twice", p.name),
            ));
        }
        if p.location == Location::Path && !variables.contains(&p.name.as_str()) {
            return Err(ConfigError::new(
                format!("{at}.name"),
                format!("`{}` is not a variable of the rule's path template", p.name),
            ));
        }
        if p.default.is_some() && !matches!(p.location, Location::Query | Location::Header) {
            return Err(ConfigError::new(
                format!("{at}.default"),
                "defaults apply to query and header parameters",
            ));
        }
        if p.pointer.is_some() && p.location != Location::Body {
            return Err(ConfigError::new(
                format!("{at}.pointer"),
                "applies to body parameters only",
            ));
        }
        let pointer = match &p.pointer {
            Some(ptr) if !ptr.starts_with('/') => {
                return Err(ConfigError::new(
                    format!("{at}.pointer"),
                    format!("`{ptr}` is not a JSON Pointer (starts with `/`)"),
                ))
            }
            Some(ptr) => ptr.clone(),
            None => format!("/{}", p.name.replace('~', "~0").replace('/', "~1")),
        };
        if p.location == Location::Header && !is_header_name(&p.name) {
            return Err(ConfigError::new(
                format!("{at}.name"),
                format!("`{}` is not a header name", p.name),
            ));
        }
        parameters.push(Parameter {
            name: if p.location == Location::Header {
                p.name.to_ascii_lowercase()
            } else {
                p.name.clone()
            },
            location: p.location,
            pointer,
            required: p.required,
            default: p.default.clone(),
            check: compile_check(&p.constraints, &at)?,
        });
    }
    let schema = match &rule.body_schema {
        None => None,
        Some(schema) => {
            // jsonschema-valid borrows its schema; a compiled rule lives as
            // long as its configuration, so the schema is kept for good.
            let schema: &'static Value = Box::leak(Box::new(schema.clone()));
            let config = jsonschema_valid::Config::from_schema(
                schema,
                Some(jsonschema_valid::schemas::Draft::Draft7),
            )
            .map_err(|e| ConfigError::new(format!("{at}.body_schema"), e.to_string()))?;
            if let Err(errors) = config.validate_schema() {
                let reasons: Vec<String> = errors
                    .take(3)
                    .map(|e| e.to_string().replace('\n', " "))
                    .collect();
                return Err(ConfigError::new(
                    format!("{at}.body_schema"),
                    format!("not a valid draft 7 schema: {}", reasons.join("; ")),
                ));
            }
            Some(config)
        }
    };
    let allowed_headers = rule
        .allowed_headers
        .as_ref()
        .map(|names| names.iter().map(|n| n.to_ascii_lowercase()).collect());
    Ok(Rule {
        name: rule.name.clone().unwrap_or_else(|| at.to_string()),
        matcher,
        parameters,
        schema,
        drop_undefined: rule.drop_undefined.unwrap_or(true),
        allowed_headers,
        report: rule.report,
        max_body_bytes: rule.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
        other_content_types: rule.other_content_types,
    })
}

/// The body kinds a rule treats differently.
/// The request as the policy sees it.
#[derive(Default)]
pub struct RequestParts<'a> {
    /// The query string (after `?`), raw.
    pub query: &'a str,
    pub header: Option<HeaderLookup<'a>>,
    pub captures: &'a [(&'a str, String)],
    pub content_type: Option<&'a str>,
    /// `None` when the body was not read.
    pub body: Option<&'a [u8]>,
}

/// What to change on a valid request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// The new query string (without `?`), when parameters were dropped or defaulted.
    pub query: Option<String>,
    pub headers_to_set: Vec<(String, String)>,
    /// The new form body, when form parameters were dropped.
    pub form_body: Option<String>,
}

impl Rule {
    /// Whether the body must be read before deciding.
    pub fn needs_body(&self, content_type: Option<&str>) -> bool {
        match body_kind(content_type) {
            BodyKind::Json => {
                self.schema.is_some()
                    || self.parameters.iter().any(|p| p.location == Location::Body)
            }
            BodyKind::Form => {
                self.drop_undefined || self.parameters.iter().any(|p| p.location == Location::Form)
            }
            BodyKind::Other => false,
        }
    }

    /// Whether a body of this content type is refused without reading it.
    pub fn rejects_content_type(&self, content_type: Option<&str>) -> bool {
        self.other_content_types == OtherContentTypes::Reject
            && body_kind(content_type) == BodyKind::Other
    }

    /// Whether `allowed_headers` is set (the adapter lists headers only then).
    pub fn has_header_allowlist(&self) -> bool {
        self.allowed_headers.is_some()
    }

    /// Headers to remove under `allowed_headers` (pseudo-headers never are).
    pub fn headers_to_remove<'h>(&self, names: impl Iterator<Item = &'h str>) -> Vec<String> {
        let Some(allowed) = &self.allowed_headers else {
            return Vec::new();
        };
        names
            .filter(|n| !is_managed_header(n))
            .filter(|n| {
                let lower = n.to_ascii_lowercase();
                !allowed.contains(&lower)
                    && !self
                        .parameters
                        .iter()
                        .any(|p| p.location == Location::Header && p.name == lower)
            })
            .map(str::to_string)
            .collect()
    }

    /// Checks a request; the rewrite to apply, or the error to answer.
    pub fn validate(&self, request: &RequestParts<'_>) -> Result<Rewrite, GatewayError> {
        let kind = body_kind(request.content_type);
        if request.body.is_some_and(|b| !b.is_empty())
            && kind == BodyKind::Other
            && self.other_content_types == OtherContentTypes::Reject
        {
            return Err(codes::UNSUPPORTED_MEDIA_TYPE.with_message(format!(
                "Unsupported Content-Type `{}`",
                request
                    .content_type
                    .unwrap_or("")
                    .chars()
                    .take(64)
                    .collect::<String>()
            )));
        }
        let query = parse_pairs(request.query).map_err(|_| {
            codes::INVALID_PARAMETER
                .with_message("Invalid Parameter: malformed query string encoding")
        })?;
        let form = match (kind, request.body) {
            (BodyKind::Form, Some(body)) => {
                let text = std::str::from_utf8(body).map_err(|_| {
                    codes::INVALID_BODY.with_message("Invalid Body: form is not UTF-8")
                })?;
                parse_pairs(text).map_err(|_| {
                    codes::INVALID_BODY.with_message("Invalid Body: malformed form encoding")
                })?
            }
            _ => Vec::new(),
        };
        let json = match (kind, request.body) {
            (BodyKind::Json, Some(body)) if !body.is_empty() => {
                Some(serde_json::from_slice::<Value>(body).map_err(|e| {
                    codes::INVALID_BODY.with_message(format!("Invalid Body: malformed JSON ({e})"))
                })?)
            }
            _ => None,
        };

        let mut violations = Vec::new();
        let mut rewrite = Rewrite::default();
        let mut defaulted_query = Vec::new();
        for p in &self.parameters {
            if self.report == Report::First && !violations.is_empty() {
                break;
            }
            let result = match p.location {
                Location::Query | Location::Form => {
                    let pairs = if p.location == Location::Query {
                        &query
                    } else {
                        &form
                    };
                    let values: Vec<&str> = pairs
                        .iter()
                        .filter(|(k, _)| *k == p.name)
                        .map(|(_, v)| v.as_str())
                        .collect();
                    if values.is_empty() {
                        if let (Some(default), Location::Query) = (&p.default, p.location) {
                            defaulted_query.push((p.name.clone(), default.clone()));
                            p.check.text_values(&[default.as_str()])
                        } else {
                            absent(p)
                        }
                    } else {
                        p.check.text_values(&values)
                    }
                }
                Location::Header => match request.header.and_then(|h| h(&p.name)) {
                    Some(value) => p.check.text_values(&[value.as_str()]),
                    None => match &p.default {
                        Some(default) => {
                            rewrite
                                .headers_to_set
                                .push((p.name.clone(), default.clone()));
                            p.check.text_values(&[default.as_str()])
                        }
                        None => absent(p),
                    },
                },
                Location::Path => match request.captures.iter().find(|(n, _)| *n == p.name) {
                    Some((_, raw)) => match url_decode(raw) {
                        Ok(value) => p.check.text_values(&[value.as_str()]),
                        Err(_) => Err("has a malformed encoding".to_string()),
                    },
                    None => absent(p),
                },
                Location::Body => match json.as_ref().and_then(|j| j.pointer(&p.pointer)) {
                    Some(value) if !value.is_null() => p.check.json_value(value),
                    _ => absent(p),
                },
            };
            if let Err(reason) = result {
                violations.push(format!("{} {}", p.name, reason));
            }
        }
        if let (Some(schema), Some(json)) = (&self.schema, &json) {
            if self.report == Report::All || violations.is_empty() {
                if let Err(errors) = schema.validate(json) {
                    for error in errors.take(5) {
                        violations.push(format!(
                            "body {}",
                            error.to_string().replace('\n', " ").trim()
                        ));
                        if self.report == Report::First {
                            break;
                        }
                    }
                }
            }
        }
        if !violations.is_empty() {
            return Err(codes::INVALID_PARAMETER.with_message(message(&violations)));
        }

        let declared = |location: Location, name: &str| {
            self.parameters
                .iter()
                .any(|p| p.location == location && p.name == name)
        };
        let mut query_text = request.query.to_string();
        let mut query_changed = false;
        if self.drop_undefined {
            if let Some(kept) = retain_raw_pairs(request.query, |k| declared(Location::Query, k)) {
                query_text = kept;
                query_changed = true;
            }
            if kind == BodyKind::Form {
                if let Some(text) = request.body.and_then(|b| std::str::from_utf8(b).ok()) {
                    rewrite.form_body = retain_raw_pairs(text, |k| declared(Location::Form, k));
                }
            }
        }
        for (name, value) in defaulted_query {
            if !query_text.is_empty() {
                query_text.push('&');
            }
            query_text.push_str(&encode_component(&name));
            query_text.push('=');
            query_text.push_str(&encode_component(&value));
            query_changed = true;
        }
        if query_changed {
            rewrite.query = Some(query_text);
        }
        Ok(rewrite)
    }
}

/// Headers an allowlist never removes: pseudo-headers, message framing, and
/// what Envoy itself sets or routes on.
fn is_managed_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.starts_with(':')
        || name.starts_with("x-envoy-")
        || name.starts_with("x-forwarded-")
        || matches!(
            name.as_str(),
            "host" | "content-length" | "content-type" | "transfer-encoding" | "x-request-id"
        )
}

fn absent(p: &Parameter) -> Result<(), String> {
    if p.required {
        Err("is required".into())
    } else {
        Ok(())
    }
}

fn message(violations: &[String]) -> String {
    let mut out = String::from("Invalid Parameter: ");
    for (i, v) in violations.iter().enumerate() {
        let part = if i == 0 { v.clone() } else { format!("; {v}") };
        if out.chars().count() + part.chars().count() > MAX_MESSAGE_CHARS {
            out.push_str(&format!("; and {} more", violations.len() - i));
            break;
        }
        out.push_str(&part);
    }
    out
}

fn fmt_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl Check {
    /// Values from text locations (query, header, path, form).
    fn text_values(&self, values: &[&str]) -> Result<(), String> {
        if self.kind == ParamType::Array {
            self.count(values.len())?;
            let item = self.items.as_deref();
            return values
                .iter()
                .try_for_each(|v| item.map_or(Ok(()), |c| c.text(v)));
        }
        if values.len() > 1 {
            return Err("must be given once".into());
        }
        values.first().map_or(Ok(()), |v| self.text(v))
    }

    fn text(&self, value: &str) -> Result<(), String> {
        match self.kind {
            ParamType::String => self.string(value),
            ParamType::Integer => {
                let n: i64 = value
                    .trim()
                    .parse()
                    .map_err(|_| "must be an integer".to_string())?;
                self.range(n as f64)?;
                self.enumerated(value)
            }
            ParamType::Number => {
                let n: f64 = value
                    .trim()
                    .parse()
                    .map_err(|_| "must be a number".to_string())?;
                if !n.is_finite() {
                    return Err("must be a number".into());
                }
                self.range(n)?;
                self.enumerated(value)
            }
            ParamType::Boolean => match value {
                "true" | "false" => Ok(()),
                _ => Err("must be true or false".into()),
            },
            ParamType::Array => self.text_values(&[value]),
        }
    }

    fn json_value(&self, value: &Value) -> Result<(), String> {
        match (self.kind, value) {
            (ParamType::String, Value::String(s)) => self.string(s),
            (ParamType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => {
                self.range(n.as_f64().unwrap_or(0.0))?;
                self.enumerated(&n.to_string())
            }
            (ParamType::Integer, _) => Err("must be an integer".into()),
            (ParamType::Number, Value::Number(n)) => {
                self.range(n.as_f64().unwrap_or(0.0))?;
                self.enumerated(&n.to_string())
            }
            (ParamType::Number, _) => Err("must be a number".into()),
            (ParamType::Boolean, Value::Bool(_)) => Ok(()),
            (ParamType::Boolean, _) => Err("must be true or false".into()),
            (ParamType::Array, Value::Array(items)) => {
                self.count(items.len())?;
                let item = self.items.as_deref();
                items
                    .iter()
                    .try_for_each(|v| item.map_or(Ok(()), |c| c.json_value(v)))
            }
            (ParamType::Array, _) => Err("must be an array".into()),
            (ParamType::String, _) => Err("must be a string".into()),
        }
    }

    fn string(&self, value: &str) -> Result<(), String> {
        let len = value.chars().count();
        if let Some(min) = self.min_length {
            if len < min {
                return Err(format!("must be at least {min} characters"));
            }
        }
        if let Some(max) = self.max_length {
            if len > max {
                return Err(format!("must be at most {max} characters"));
            }
        }
        if let Some(pattern) = &self.pattern {
            if !pattern.is_match(value) {
                return Err("does not match the required pattern".into());
            }
        }
        self.enumerated(value)
    }

    fn enumerated(&self, value: &str) -> Result<(), String> {
        match &self.allowed {
            Some(allowed) if !allowed.iter().any(|a| a == value) => {
                let list = allowed.join(", ");
                Err(format!(
                    "must be one of: {}",
                    list.chars().take(120).collect::<String>()
                ))
            }
            _ => Ok(()),
        }
    }

    fn range(&self, n: f64) -> Result<(), String> {
        if let Some((min, exclusive)) = self.min {
            if n < min || (exclusive && n == min) {
                let op = if exclusive { ">" } else { ">=" };
                return Err(format!("must be {op} {}", fmt_number(min)));
            }
        }
        if let Some((max, exclusive)) = self.max {
            if n > max || (exclusive && n == max) {
                let op = if exclusive { "<" } else { "<=" };
                return Err(format!("must be {op} {}", fmt_number(max)));
            }
        }
        Ok(())
    }

    fn count(&self, n: usize) -> Result<(), String> {
        if self.min_items.is_some_and(|min| n < min) {
            return Err(format!(
                "must have at least {} items",
                self.min_items.unwrap_or(0)
            ));
        }
        if self.max_items.is_some_and(|max| n > max) {
            return Err(format!(
                "must have at most {} items",
                self.max_items.unwrap_or(0)
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_common::config::parse_json;
    use gateway_common::matching::RequestAttrs;
    use serde_json::json;

    fn validation(rule: Value) -> Validation {
        let config = json!({ "rules": [rule] }).to_string();
        Validation::compile(&parse_json(config.as_bytes()).unwrap()).unwrap()
    }

    fn config_error(rule: Value) -> String {
        let config = json!({ "rules": [rule] }).to_string();
        parse_json::<ValidationConfig>(config.as_bytes())
            .and_then(|c| Validation::compile(&c))
            .unwrap_err()
            .to_string()
    }

    fn query_rule(param: Value) -> Validation {
        validation(json!({"parameters": [param]}))
    }

    fn check_query(v: &Validation, query: &str) -> Result<Rewrite, String> {
        let (rule, _) = v
            .rules
            .first_rule_for(&RequestAttrs {
                path: "/",
                ..Default::default()
            })
            .unwrap();
        rule.validate(&RequestParts {
            query,
            ..Default::default()
        })
        .map_err(|e| e.message.into_owned())
    }

    #[test]
    fn integers_check_type_and_inclusive_bounds() {
        let v = query_rule(
            json!({"name": "age", "in": "query", "type": "integer", "minimum": 0, "maximum": 150}),
        );
        for ok in ["age=0", "age=150", "age=42", ""] {
            assert!(check_query(&v, ok).is_ok(), "{ok}");
        }
        assert_eq!(
            check_query(&v, "age=151").unwrap_err(),
            "Invalid Parameter: age must be <= 150"
        );
        assert_eq!(
            check_query(&v, "age=-1").unwrap_err(),
            "Invalid Parameter: age must be >= 0"
        );
        assert_eq!(
            check_query(&v, "age=1.5").unwrap_err(),
            "Invalid Parameter: age must be an integer"
        );
        assert_eq!(
            check_query(&v, "age=99999999999999999999").unwrap_err(),
            "Invalid Parameter: age must be an integer"
        );
        assert_eq!(
            check_query(&v, "age=1&age=2").unwrap_err(),
            "Invalid Parameter: age must be given once"
        );
    }

    #[test]
    fn exclusive_bounds_exclude_the_edge() {
        let v = query_rule(
            json!({"name": "p", "in": "query", "type": "number", "exclusive_minimum": 0, "exclusive_maximum": 1.5}),
        );
        assert!(check_query(&v, "p=0.1").is_ok());
        assert_eq!(
            check_query(&v, "p=0").unwrap_err(),
            "Invalid Parameter: p must be > 0"
        );
        assert_eq!(
            check_query(&v, "p=1.5").unwrap_err(),
            "Invalid Parameter: p must be < 1.5"
        );
        assert_eq!(
            check_query(&v, "p=NaN").unwrap_err(),
            "Invalid Parameter: p must be a number"
        );
        assert_eq!(
            check_query(&v, "p=inf").unwrap_err(),
            "Invalid Parameter: p must be a number"
        );
    }

    #[test]
    fn strings_check_length_in_characters_enum_and_whole_pattern() {
        let v = query_rule(
            json!({"name": "code", "in": "query", "min_length": 2, "max_length": 4, "pattern": "[a-z]+"}),
        );
        assert!(check_query(&v, "code=ab").is_ok());
        assert_eq!(
            check_query(&v, "code=a").unwrap_err(),
            "Invalid Parameter: code must be at least 2 characters"
        );
        assert_eq!(
            check_query(&v, "code=abcde").unwrap_err(),
            "Invalid Parameter: code must be at most 4 characters"
        );
        assert_eq!(
            check_query(&v, "code=ab1").unwrap_err(),
            "Invalid Parameter: code does not match the required pattern"
        );
        let unicode = query_rule(json!({"name": "n", "in": "query", "max_length": 2}));
        assert!(
            check_query(&unicode, "n=%E5%8C%97%E4%BA%AC").is_ok(),
            "two characters, six bytes"
        );
        let e = query_rule(json!({"name": "color", "in": "query", "enum": ["red", "green"]}));
        assert!(check_query(&e, "color=red").is_ok());
        assert_eq!(
            check_query(&e, "color=blue").unwrap_err(),
            "Invalid Parameter: color must be one of: red, green"
        );
    }

    #[test]
    fn booleans_and_arrays() {
        let b = query_rule(json!({"name": "on", "in": "query", "type": "boolean"}));
        assert!(check_query(&b, "on=true").is_ok());
        assert_eq!(
            check_query(&b, "on=yes").unwrap_err(),
            "Invalid Parameter: on must be true or false"
        );
        let a = query_rule(
            json!({"name": "id", "in": "query", "type": "array", "max_items": 2, "items": {"type": "integer", "minimum": 1}}),
        );
        assert!(check_query(&a, "id=1&id=2").is_ok());
        assert_eq!(
            check_query(&a, "id=1&id=2&id=3").unwrap_err(),
            "Invalid Parameter: id must have at most 2 items"
        );
        assert_eq!(
            check_query(&a, "id=1&id=0").unwrap_err(),
            "Invalid Parameter: id must be >= 1"
        );
    }

    #[test]
    fn required_parameters_and_defaults() {
        let v = validation(json!({"parameters": [
            {"name": "q", "in": "query", "required": true},
            {"name": "page", "in": "query", "type": "integer", "default": "1"}
        ]}));
        assert_eq!(
            check_query(&v, "").unwrap_err(),
            "Invalid Parameter: q is required"
        );
        let rewrite = check_query(&v, "q=a%20b").unwrap();
        assert_eq!(rewrite.query.as_deref(), Some("q=a%20b&page=1"));
    }

    #[test]
    fn all_violations_are_reported_or_only_the_first() {
        let params = json!([
            {"name": "a", "in": "query", "required": true},
            {"name": "b", "in": "query", "type": "integer"}
        ]);
        let all = validation(json!({"parameters": params}));
        assert_eq!(
            check_query(&all, "b=x").unwrap_err(),
            "Invalid Parameter: a is required; b must be an integer"
        );
        let first = validation(json!({"parameters": params, "report": "first"}));
        assert_eq!(
            check_query(&first, "b=x").unwrap_err(),
            "Invalid Parameter: a is required"
        );
    }

    #[test]
    fn undefined_query_parameters_are_dropped_keeping_the_rest_encoded() {
        let v = query_rule(json!({"name": "q", "in": "query"}));
        assert_eq!(
            check_query(&v, "q=a%2Fb&debug=1&admin=true")
                .unwrap()
                .query
                .as_deref(),
            Some("q=a%2Fb")
        );
        assert_eq!(
            check_query(&v, "q=1").unwrap().query,
            None,
            "nothing to change"
        );
        let keep = validation(
            json!({"parameters": [{"name": "q", "in": "query"}], "drop_undefined": false}),
        );
        assert_eq!(check_query(&keep, "q=1&x=2").unwrap().query, None);
    }

    #[test]
    fn messages_never_echo_values_and_stay_bounded() {
        let many: Vec<Value> = (0..100)
            .map(|i| json!({"name": format!("p{i}"), "in": "query", "required": true}))
            .collect();
        let v = validation(json!({"parameters": many}));
        let message = check_query(&v, "").unwrap_err();
        assert!(
            message.chars().count() <= MAX_MESSAGE_CHARS + 20,
            "{message}"
        );
        assert!(message.ends_with("more"), "{message}");
        let secret = query_rule(json!({"name": "token", "in": "query", "max_length": 3}));
        assert!(!check_query(&secret, "token=supersecretvalue")
            .unwrap_err()
            .contains("supersecret"));
    }

    fn validate_body(
        v: &Validation,
        content_type: &str,
        body: &[u8],
    ) -> Result<Rewrite, GatewayError> {
        let (rule, _) = v
            .rules
            .first_rule_for(&RequestAttrs {
                path: "/",
                ..Default::default()
            })
            .unwrap();
        rule.validate(&RequestParts {
            content_type: Some(content_type),
            body: Some(body),
            ..Default::default()
        })
    }

    #[test]
    fn json_body_fields_are_addressed_by_pointer_with_json_types() {
        let v = validation(json!({"parameters": [
            {"name": "email", "in": "body", "pointer": "/user/email", "required": true, "max_length": 20},
            {"name": "age", "in": "body", "pointer": "/user/age", "type": "integer", "maximum": 150},
            {"name": "tags", "in": "body", "type": "array", "items": {"enum": ["a", "b"]}}
        ]}));
        assert!(validate_body(
            &v,
            "application/json",
            br#"{"user":{"email":"x@y.z","age":30},"tags":["a"]}"#
        )
        .is_ok());
        let err = validate_body(
            &v,
            "application/json",
            br#"{"user":{"age":"30"},"tags":["c"]}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.message,
            "Invalid Parameter: email is required; age must be an integer; tags must be one of: a, b"
        );
        let malformed =
            validate_body(&v, "application/json; charset=utf-8", b"{\"user\":").unwrap_err();
        assert_eq!((malformed.status, malformed.code), (400, "A400BD"));
        let not_utf8 = validate_body(&v, "application/json", b"\"\xff\"").unwrap_err();
        assert_eq!(not_utf8.code, "A400BD");
    }

    #[test]
    fn the_body_schema_is_enforced() {
        let v = validation(json!({"body_schema": {
            "type": "object", "required": ["id"],
            "properties": {"id": {"type": "integer", "minimum": 1}}
        }}));
        assert!(validate_body(&v, "application/json", br#"{"id":3}"#).is_ok());
        let err = validate_body(&v, "application/json", br#"{"id":0}"#).unwrap_err();
        assert_eq!(err.code, "A400PV");
        assert!(
            err.message.starts_with("Invalid Parameter: body "),
            "{}",
            err.message
        );
        assert!(validate_body(&v, "application/json", br#"{}"#).is_err());
    }

    #[test]
    fn form_bodies_are_checked_and_undefined_fields_dropped() {
        let v = validation(
            json!({"parameters": [{"name": "qty", "in": "form", "type": "integer", "minimum": 1}]}),
        );
        let rewrite =
            validate_body(&v, "application/x-www-form-urlencoded", b"qty=2&evil=1").unwrap();
        assert_eq!(rewrite.form_body.as_deref(), Some("qty=2"));
        assert_eq!(
            validate_body(&v, "application/x-www-form-urlencoded", b"qty=0")
                .unwrap_err()
                .message,
            "Invalid Parameter: qty must be >= 1"
        );
        assert_eq!(
            validate_body(&v, "application/x-www-form-urlencoded", b"qty=%zz")
                .unwrap_err()
                .code,
            "A400BD"
        );
    }

    #[test]
    fn other_content_types_pass_or_are_rejected() {
        let pass = validation(json!({}));
        assert!(validate_body(&pass, "text/plain", b"hello").is_ok());
        let reject = validation(json!({"other_content_types": "reject"}));
        let err = validate_body(&reject, "text/plain", b"hello").unwrap_err();
        assert_eq!((err.status, err.code), (415, "A415CT"));
    }

    #[test]
    fn path_parameters_come_from_the_template() {
        let v = validation(json!({
            "match": {"path": {"template": "/users/{id}"}},
            "parameters": [{"name": "id", "in": "path", "type": "integer", "minimum": 1}]
        }));
        let check = |path: &str| {
            let (rule, captures) = v
                .rules
                .first_rule_for(&RequestAttrs {
                    path,
                    ..Default::default()
                })
                .unwrap();
            rule.validate(&RequestParts {
                captures: &captures,
                ..Default::default()
            })
            .map_err(|e| e.message.into_owned())
        };
        assert!(check("/users/7").is_ok());
        assert_eq!(
            check("/users/0").unwrap_err(),
            "Invalid Parameter: id must be >= 1"
        );
        assert_eq!(
            check("/users/abc").unwrap_err(),
            "Invalid Parameter: id must be an integer"
        );
    }

    #[test]
    fn bodies_are_needed_only_when_a_rule_uses_them() {
        let plain = validation(
            json!({"parameters": [{"name": "q", "in": "query"}], "drop_undefined": false}),
        );
        let (rule, _) = plain
            .rules
            .first_rule_for(&RequestAttrs::default())
            .unwrap();
        assert!(!rule.needs_body(Some("application/json")));
        assert!(!rule.needs_body(Some("application/x-www-form-urlencoded")));
        let body = validation(json!({"parameters": [{"name": "x", "in": "body"}]}));
        let (rule, _) = body.rules.first_rule_for(&RequestAttrs::default()).unwrap();
        assert!(rule.needs_body(Some("application/json")));
        assert!(!rule.needs_body(Some("image/png")));
    }

    #[test]
    fn header_allowlists_keep_declared_and_listed_headers() {
        let v = validation(json!({
            "parameters": [{"name": "X-Trace", "in": "header"}],
            "allowed_headers": ["Accept"]
        }));
        let (rule, _) = v.rules.first_rule_for(&RequestAttrs::default()).unwrap();
        let removed =
            rule.headers_to_remove([":path", "accept", "x-trace", "cookie", "x-debug"].into_iter());
        assert_eq!(removed, vec!["cookie", "x-debug"]);
    }

    #[test]
    fn broken_configs_are_refused_with_the_field_named() {
        let cases = [
            (
                json!({"parameters": [{"name": "a", "in": "query", "pattern": "("}]}),
                "rules[0].parameters[0].pattern: invalid regular expression",
            ),
            (
                json!({"body_schema": {"type": 12}}),
                "rules[0].body_schema: not a valid draft 7 schema",
            ),
            (
                json!({"parameters": [{"name": "a", "in": "cookie"}]}),
                "rules[0].parameters[0].in: unknown variant `cookie`",
            ),
            (
                json!({"parameters": [{"name": "a", "in": "query", "type": "string", "minimum": 1}]}),
                "rules[0].parameters[0]: minimum/maximum apply to integer and number only",
            ),
            (
                json!({"parameters": [{"name": "id", "in": "path"}]}),
                "rules[0].parameters[0].name: `id` is not a variable of the rule's path template",
            ),
            (
                json!({"parameters": [{"name": "a", "in": "query"}, {"name": "a", "in": "query"}]}),
                "rules[0].parameters[1].name: `a` is declared twice",
            ),
            (
                json!({"parameters": [{"name": "a", "in": "body", "default": "1"}]}),
                "rules[0].parameters[0].default: defaults apply to query and header parameters",
            ),
            (
                json!({"parameters": [{"name": "a", "in": "body", "pointer": "a"}]}),
                "rules[0].parameters[0].pointer: `a` is not a JSON Pointer",
            ),
            (
                json!({"parameters": [{"name": "a", "in": "query", "maxlength": 3}]}),
                "unknown field `maxlength`",
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
        fn validation_never_panics_on_any_query_or_body(query in ".{0,80}", body in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let v = validation(json!({"parameters": [
                {"name": "a", "in": "query", "type": "integer", "minimum": 0},
                {"name": "b", "in": "body", "type": "array", "items": {"type": "number"}},
                {"name": "c", "in": "form", "pattern": "[0-9]+"}
            ], "body_schema": {"type": "object"}}));
            let (rule, _) = v.rules.first_rule_for(&RequestAttrs::default()).unwrap();
            let _ = rule.validate(&RequestParts { query: &query, ..Default::default() });
            for ct in ["application/json", "application/x-www-form-urlencoded", "text/plain"] {
                let _ = rule.validate(&RequestParts { query: &query, content_type: Some(ct), body: Some(&body), ..Default::default() });
            }
        }
    }
}
