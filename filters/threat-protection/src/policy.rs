//! The threat-protection policy: per API, which values are checked for
//! injection (query, path variables, chosen headers, cookies, form and JSON
//! bodies), how sensitively, the limits of a body's structure, and whether
//! a finding blocks the request or is only logged. Compiled once, applied
//! per request; no host calls here.

use crate::decode::{html_decode, percent_decode};
use crate::detect::{script_injection, sql_injection, sql_injection_with, DoubleQuoted};
use crate::json::{self, JsonLimits, Leaf, Violation};
use crate::multipart::{self, Part};
use gateway_common::config::{is_header_name, ConfigError};
use gateway_common::error::GatewayError;
use gateway_common::matching::{
    compile_rule_match, rule_name, rule_path, MatchConfig, MatchedRule, Matcher, RuleList,
};
use gateway_common::params::{body_kind, BodyKind, OtherContentTypes};
use serde::Deserialize;
use std::borrow::Cow;
use std::ops::ControlFlow;

pub mod codes {
    use gateway_common::error::GatewayError;

    pub const SQL_INJECTION: GatewayError =
        GatewayError::new(403, "A403SQ", "SQL Injection Detected");
    pub const SCRIPT_INJECTION: GatewayError =
        GatewayError::new(403, "A403XS", "Script Injection Detected");
    pub const STRUCTURE: GatewayError =
        GatewayError::new(400, "A400TS", "Request Structure Over Its Limit");
    pub const MALFORMED: GatewayError = GatewayError::new(400, "A400TM", "Malformed Request Body");
    pub const UNREADABLE_BODY: GatewayError =
        GatewayError::new(415, "A415TU", "Unsupported Body for Threat Protection");
    pub const BODY_TOO_LARGE: GatewayError = GatewayError::new(
        413,
        "A413TB",
        "Request Body Too Large for Threat Protection",
    );
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreatConfig {
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    /// `block` (default) or `log`.
    #[serde(default)]
    pub mode: Mode,
    /// `low`, `medium` (default) or `high`.
    #[serde(default)]
    pub sensitivity: Sensitivity,
    /// The injection classes checked (default both).
    #[serde(default)]
    pub injection: Option<Vec<Class>>,
    /// Where values are checked (default every place but headers).
    #[serde(default)]
    pub locations: Option<Vec<Location>>,
    /// The headers whose values are checked (with `header` in `locations`).
    #[serde(default)]
    pub headers: Vec<String>,
    /// Values not checked for injection: `<location>.<name>` (`query.q`;
    /// `json.comment`: the string values of every entry named so, and of
    /// arrays in it; not the objects in it, which have keys of their own).
    #[serde(default)]
    pub exempt: Vec<String>,
    #[serde(default)]
    pub json: JsonLimitsConfig,
    #[serde(default)]
    pub form: FormLimitsConfig,
    /// The largest body checked (default 1 MiB): a longer one is refused.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// A body neither JSON nor a form, which the rule cannot read: passed
    /// (default) or refused.
    #[serde(default)]
    pub other_content_types: OtherContentTypes,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Block,
    Log,
}

/// How much is checked: `low` the value as the backend reads it, only
/// for fingerprints of three tokens or more; `medium` every fingerprint,
/// but one only reading the value as inside MySQL's double quotes finds
/// must have four tokens (`"like"` in prose reads as `sos`); `high` every
/// fingerprint, and the value decoded once more (a double-encoded payload)
/// and with its HTML references decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sensitivity {
    Low,
    #[default]
    Medium,
    High,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Sql,
    Script,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    Query,
    Path,
    Header,
    Cookie,
    Form,
    Json,
}

impl Location {
    pub fn name(self) -> &'static str {
        match self {
            Location::Query => "query",
            Location::Path => "path",
            Location::Header => "header",
            Location::Cookie => "cookie",
            Location::Form => "form",
            Location::Json => "json",
        }
    }
}

const DEFAULT_LOCATIONS: [Location; 5] = [
    Location::Query,
    Location::Path,
    Location::Cookie,
    Location::Form,
    Location::Json,
];

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonLimitsConfig {
    #[serde(default)]
    pub max_depth: Option<u32>,
    #[serde(default)]
    pub max_entries: Option<u32>,
    #[serde(default)]
    pub max_array: Option<u32>,
    #[serde(default)]
    pub max_string: Option<u32>,
    #[serde(default)]
    pub max_number: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormLimitsConfig {
    #[serde(default)]
    pub max_fields: Option<u32>,
    #[serde(default)]
    pub max_name: Option<u32>,
    #[serde(default)]
    pub max_value: Option<u32>,
}

/// A form's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormLimits {
    pub fields: u32,
    pub name: u32,
    pub value: u32,
}

const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
const MAX_BODY_BYTES: usize = 64 << 20;

/// Each limit's default, and the largest allowed.
const JSON_DEFAULTS: JsonLimits = JsonLimits {
    depth: 32,
    entries: 1000,
    array: 10_000,
    string: 65_536,
    number: 64,
};
const FORM_DEFAULTS: FormLimits = FormLimits {
    fields: 1000,
    name: 256,
    value: 65_536,
};

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    matcher: Matcher,
    pub mode: Mode,
    sensitivity: Sensitivity,
    sql: bool,
    script: bool,
    locations: Vec<Location>,
    headers: Vec<String>,
    /// `(location, name)` pairs not checked for injection.
    exempt: Vec<(Location, String)>,
    pub json: JsonLimits,
    pub form: FormLimits,
    pub max_body_bytes: usize,
    other_content_types: OtherContentTypes,
}

/// The compiled policy: ordered rules, the first that matches applies.
#[derive(Debug)]
pub struct Threats {
    pub rules: RuleList<Rule>,
}

impl Threats {
    pub fn compile(config: &ThreatConfig) -> Result<Self, ConfigError> {
        let rules = config
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| compile_rule(rule, &rule_path(i)))
            .collect::<Result<Vec<_>, _>>()?;
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

fn compile_rule(config: &RuleConfig, at: &str) -> Result<Rule, ConfigError> {
    let matcher = compile_rule_match(&config.matcher).map_err(|e| e.within(at))?;
    let field = |name: &str| format!("{at}.{name}");
    let classes = config
        .injection
        .clone()
        .unwrap_or_else(|| vec![Class::Sql, Class::Script]);
    let locations = config
        .locations
        .clone()
        .unwrap_or_else(|| DEFAULT_LOCATIONS.to_vec());
    if locations.contains(&Location::Header) && config.headers.is_empty() {
        return Err(ConfigError::new(
            field("headers"),
            "required with `header` in `locations`: the headers whose values are checked",
        ));
    }
    let mut headers = Vec::with_capacity(config.headers.len());
    for (i, header) in config.headers.iter().enumerate() {
        if !is_header_name(header) {
            return Err(ConfigError::new(
                field(&format!("headers[{i}]")),
                "not a header name",
            ));
        }
        headers.push(header.to_ascii_lowercase());
    }
    let mut exempt = Vec::with_capacity(config.exempt.len());
    for (i, entry) in config.exempt.iter().enumerate() {
        let parsed = entry.split_once('.').and_then(|(location, name)| {
            let location = serde_json::from_value::<Location>(location.into()).ok()?;
            (!name.is_empty()).then(|| (location, name.to_string()))
        });
        let parsed = parsed.filter(|(_, name)| name.len() <= json::MAX_NAME);
        let Some((location, name)) = parsed else {
            return Err(ConfigError::new(
                field(&format!("exempt[{i}]")),
                "`<location>.<name>`, e.g. `query.q` or `json.comment` (locations: query, path, header, cookie, form, json)",
            ));
        };
        let name = if location == Location::Header {
            name.to_ascii_lowercase()
        } else {
            name
        };
        exempt.push((location, name));
    }
    let limit = |name: &str, value: Option<u32>, default: u32, most: u32| {
        let value = value.unwrap_or(default);
        if (1..=most).contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::new(field(name), format!("1 to {most}")))
        }
    };
    let json = JsonLimits {
        depth: limit(
            "json.max_depth",
            config.json.max_depth,
            JSON_DEFAULTS.depth,
            1000,
        )?,
        entries: limit(
            "json.max_entries",
            config.json.max_entries,
            JSON_DEFAULTS.entries,
            1_000_000,
        )?,
        array: limit(
            "json.max_array",
            config.json.max_array,
            JSON_DEFAULTS.array,
            10_000_000,
        )?,
        string: limit(
            "json.max_string",
            config.json.max_string,
            JSON_DEFAULTS.string,
            64 << 20,
        )?,
        number: limit(
            "json.max_number",
            config.json.max_number,
            JSON_DEFAULTS.number,
            1000,
        )?,
    };
    let form = FormLimits {
        fields: limit(
            "form.max_fields",
            config.form.max_fields,
            FORM_DEFAULTS.fields,
            1_000_000,
        )?,
        name: limit(
            "form.max_name",
            config.form.max_name,
            FORM_DEFAULTS.name,
            64 << 20,
        )?,
        value: limit(
            "form.max_value",
            config.form.max_value,
            FORM_DEFAULTS.value,
            64 << 20,
        )?,
    };
    let max_body_bytes = config.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if !(1..=MAX_BODY_BYTES).contains(&max_body_bytes) {
        return Err(ConfigError::new(
            field("max_body_bytes"),
            format!("1 to {MAX_BODY_BYTES}"),
        ));
    }
    Ok(Rule {
        name: rule_name(config.name.as_deref(), at),
        matcher,
        mode: config.mode,
        sensitivity: config.sensitivity,
        sql: classes.contains(&Class::Sql),
        script: classes.contains(&Class::Script),
        locations,
        headers,
        exempt,
        json,
        form,
        max_body_bytes,
        other_content_types: config.other_content_types,
    })
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The check's name in metrics and logs (`sql`, `script`,
    /// `json_depth`…, `form_fields`, `body_size`).
    pub check: &'static str,
    /// Where (`None` for the body as a whole).
    pub location: Option<Location>,
    /// libinjection's fingerprint of a SQL injection.
    pub fingerprint: Option<String>,
    pub error: GatewayError,
}

impl Finding {
    /// A body the rule would read but cannot (`check`: `body_type` or
    /// `body_encoding`).
    fn unreadable(check: &'static str) -> Self {
        Self {
            check,
            location: None,
            fingerprint: None,
            error: codes::UNREADABLE_BODY,
        }
    }

    /// A body over the rule's `max_body_bytes`.
    pub fn body_too_large() -> Self {
        Self {
            check: "body_size",
            location: None,
            fingerprint: None,
            error: codes::BODY_TOO_LARGE,
        }
    }

    fn injection(class: Class, location: Location, fingerprint: Option<String>) -> Self {
        let (check, error) = match class {
            Class::Sql => ("sql", codes::SQL_INJECTION),
            Class::Script => ("script", codes::SCRIPT_INJECTION),
        };
        Self {
            check,
            location: Some(location),
            fingerprint,
            error,
        }
    }

    /// A multipart body the policy cannot read as every backend would.
    fn malformed_form() -> Self {
        Self::structure("form_malformed", Location::Form, codes::MALFORMED)
    }

    fn structure(check: &'static str, location: Location, error: GatewayError) -> Self {
        Self {
            check,
            location: Some(location),
            fingerprint: None,
            error,
        }
    }
}

/// A multipart body (or a content type that mentions a boundary), read as
/// a form.
fn is_multipart(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|content_type| multipart::boundary(content_type).is_some())
}

/// How a value is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// As is (a header).
    None,
    /// Percent-encoded (a path segment).
    Percent,
    /// Percent-encoded, and by some backends (PHP) `+` read as a space: a
    /// value with `+` is checked both ways.
    Cookie,
    /// Percent-encoded with `+` a space (a query string, a form).
    Form,
}

/// What a request shows the policy: the raw query, the path template's
/// captures, a header reader, and the body with its content type.
pub struct RequestParts<'a> {
    pub query: &'a str,
    pub captures: &'a [(&'a str, String)],
    pub header: &'a dyn Fn(&str) -> Option<String>,
    pub content_type: Option<&'a str>,
    pub body: Option<&'a [u8]>,
}

impl Rule {
    /// Whether the rule reads the body of a request of `content_type`.
    pub fn reads_body(&self, content_type: Option<&str>) -> bool {
        match body_kind(content_type) {
            BodyKind::Json => self.locations.contains(&Location::Json),
            BodyKind::Form => self.locations.contains(&Location::Form),
            BodyKind::Other => {
                is_multipart(content_type) && self.locations.contains(&Location::Form)
            }
        }
    }

    /// Whether a body with these `Content-Type` and `Content-Encoding`
    /// values can be read as the backend will: several content types (a
    /// backend may read another than the policy), a compressed body (the
    /// policy would read compressed bytes) and, under
    /// `other_content_types: reject`, a body of another type are refused.
    pub fn unreadable_body(
        &self,
        content_types: &[String],
        content_encodings: &[String],
    ) -> Option<Finding> {
        let reads = |location| self.locations.contains(&location);
        if !reads(Location::Json) && !reads(Location::Form) {
            return None;
        }
        // Several headers, or one that a proxy joined with a comma.
        let several = content_types.len() > 1
            || content_types
                .iter()
                .any(|value| value.split(',').filter(|t| !t.trim().is_empty()).count() > 1);
        if several {
            return Some(Finding::unreadable("body_type"));
        }
        let content_type = content_types.first().map(String::as_str);
        if body_kind(content_type) == BodyKind::Other
            && !is_multipart(content_type)
            && self.other_content_types == OtherContentTypes::Reject
        {
            return Some(Finding::unreadable("body_type"));
        }
        let readable = self.reads_body(content_type);
        // A backend that honours another charset (Tomcat reads a form in
        // IBM037) would read other text than the detectors.
        if readable && !content_type.is_some_and(multipart::plain_charset) {
            return Some(Finding::unreadable("body_type"));
        }
        let compressed = content_encodings
            .iter()
            .flat_map(|value| value.split(','))
            .any(|coding| !coding.trim().eq_ignore_ascii_case("identity"));
        (readable && compressed).then(|| Finding::unreadable("body_encoding"))
    }

    /// The first finding of the request, if any (the body is checked only
    /// when given).
    pub fn inspect(&self, request: &RequestParts<'_>) -> Option<Finding> {
        self.inspect_head(request)
            .or_else(|| self.inspect_body(request.content_type, request.body?))
    }

    /// The first finding in what comes before the body: the query, path
    /// variables, chosen headers and cookies (`request.body` unread).
    pub fn inspect_head(&self, request: &RequestParts<'_>) -> Option<Finding> {
        if self.locations.contains(&Location::Query) {
            if let Some(finding) = self.pairs(request.query, Location::Query, None) {
                return Some(finding);
            }
        }
        if self.locations.contains(&Location::Path) {
            for (name, value) in request.captures {
                let value = value.as_bytes();
                if let Some(finding) = self.value(Location::Path, name, value, Encoding::Percent) {
                    return Some(finding);
                }
            }
        }
        if self.locations.contains(&Location::Header) {
            for name in &self.headers {
                if let Some(value) = (request.header)(name) {
                    let value = value.as_bytes();
                    if let Some(finding) = self.value(Location::Header, name, value, Encoding::None)
                    {
                        return Some(finding);
                    }
                }
            }
        }
        if self.locations.contains(&Location::Cookie) {
            if let Some(cookies) = (request.header)("cookie") {
                for pair in cookies.split(';') {
                    let (name, value) = pair.trim().split_once('=').unwrap_or((pair.trim(), ""));
                    // One pair of quotes around a value is not part of it.
                    let value = value
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(value);
                    let value = value.as_bytes();
                    let found = self
                        .detect(Location::Cookie, &percent_decode(name.as_bytes(), false))
                        .or_else(|| self.value(Location::Cookie, name, value, Encoding::Cookie));
                    if found.is_some() {
                        return found;
                    }
                }
            }
        }
        None
    }

    /// The first finding in a body of `content_type`.
    pub fn inspect_body(&self, content_type: Option<&str>, body: &[u8]) -> Option<Finding> {
        if body.is_empty() {
            return None;
        }
        if body.len() > self.max_body_bytes {
            return Some(Finding::body_too_large());
        }
        match body_kind(content_type) {
            BodyKind::Form if self.locations.contains(&Location::Form) => {
                let Ok(text) = std::str::from_utf8(body) else {
                    // Checked as bytes: the pairs' names and values as sent.
                    return self.pairs(
                        &String::from_utf8_lossy(body),
                        Location::Form,
                        Some(self.form),
                    );
                };
                self.pairs(text, Location::Form, Some(self.form))
            }
            BodyKind::Json if self.locations.contains(&Location::Json) => self.json_body(body),
            BodyKind::Other if self.locations.contains(&Location::Form) => {
                match content_type.and_then(multipart::boundary)? {
                    Ok(boundary) => self.multipart_body(body, boundary),
                    Err(()) => Some(Finding::malformed_form()),
                }
            }
            _ => None,
        }
    }

    /// A `multipart/form-data` body: its fields' names and values and its
    /// files' names and filenames (not their content), within the form
    /// limits; a body the policy cannot read as a backend would is refused.
    fn multipart_body(&self, body: &[u8], boundary: &str) -> Option<Finding> {
        let limits = self.form;
        let mut fields = 0u32;
        let read = multipart::parts(body, boundary, |part| {
            fields += 1;
            let (name, value, sized) = match part {
                Part::Field { name, value } => (name, value, value.len()),
                // A file's content is bounded by `max_body_bytes` alone.
                Part::File { name, filename } => (name, filename, 0),
            };
            let found = if fields > limits.fields {
                Some(Finding::structure(
                    "form_fields",
                    Location::Form,
                    codes::STRUCTURE,
                ))
            } else if name.len() > limits.name as usize || sized > limits.value as usize {
                Some(Finding::structure(
                    "form_size",
                    Location::Form,
                    codes::STRUCTURE,
                ))
            } else {
                self.detect(Location::Form, name).or_else(|| {
                    let name = String::from_utf8_lossy(name);
                    self.value(Location::Form, &name, value, Encoding::None)
                })
            };
            found.map_or(ControlFlow::Continue(()), ControlFlow::Break)
        });
        read.unwrap_or_else(|_| Some(Finding::malformed_form()))
    }

    /// The pairs of a query string or form (`limits`: a form's).
    fn pairs(
        &self,
        encoded: &str,
        location: Location,
        limits: Option<FormLimits>,
    ) -> Option<Finding> {
        let mut fields = 0u32;
        for pair in encoded.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if let Some(limits) = limits {
                fields += 1;
                if fields > limits.fields {
                    return Some(Finding::structure(
                        "form_fields",
                        location,
                        codes::STRUCTURE,
                    ));
                }
                if name.len() > limits.name as usize || value.len() > limits.value as usize {
                    return Some(Finding::structure("form_size", location, codes::STRUCTURE));
                }
            }
            let name = percent_decode(name.as_bytes(), true);
            // A name is read as a value is, and checked as one: exemptions
            // are by name, so none applies to the name itself.
            if let Some(finding) = self.detect(location, &name) {
                return Some(finding);
            }
            let name = String::from_utf8_lossy(&name);
            if let Some(finding) = self.value(location, &name, value.as_bytes(), Encoding::Form) {
                return Some(finding);
            }
        }
        None
    }

    /// A JSON body: its structure, and every key and string value.
    fn json_body(&self, body: &[u8]) -> Option<Finding> {
        let mut finding = None;
        let checked = json::check(body, &self.json, |leaf| {
            let found = match leaf {
                Leaf::Key(text) => self.detect(Location::Json, text.as_bytes()),
                Leaf::Value {
                    name: Some(name), ..
                } if self.is_exempt(Location::Json, name) => None,
                Leaf::Value { text, .. } => self.detect(Location::Json, text.as_bytes()),
            };
            match found {
                Some(found) => {
                    finding = Some(found);
                    ControlFlow::Break(())
                }
                None => ControlFlow::Continue(()),
            }
        });
        match checked {
            Err(violation) => {
                let error = match violation {
                    Violation::Malformed { .. } => codes::MALFORMED,
                    _ => codes::STRUCTURE,
                };
                Some(Finding::structure(violation.check(), Location::Json, error))
            }
            Ok(_) => finding,
        }
    }

    fn is_exempt(&self, location: Location, name: &str) -> bool {
        self.exempt
            .iter()
            .any(|(at, exempt)| *at == location && exempt == name)
    }

    /// A named value as sent, decoded as `encoding` says.
    fn value(
        &self,
        location: Location,
        name: &str,
        raw: &[u8],
        encoding: Encoding,
    ) -> Option<Finding> {
        // A header's name comes from `headers`, lower-cased when compiled,
        // as its exemptions are.
        if self.is_exempt(location, name) {
            return None;
        }
        let decoded = match encoding {
            Encoding::None => Cow::Borrowed(raw),
            Encoding::Percent | Encoding::Cookie => percent_decode(raw, false),
            Encoding::Form => percent_decode(raw, true),
        };
        let found = self.detect(location, &decoded);
        if found.is_none() && encoding == Encoding::Cookie && raw.contains(&b'+') {
            return self.detect(location, &percent_decode(raw, true));
        }
        found
    }

    /// The detectors on a value as the backend reads it (and, at `high`,
    /// decoded once more).
    fn detect(&self, location: Location, value: &[u8]) -> Option<Finding> {
        if let Some(finding) = self.detect_once(location, value) {
            return Some(finding);
        }
        if self.sensitivity < Sensitivity::High {
            return None;
        }
        let again = percent_decode(value, false);
        if let Cow::Owned(again) = &again {
            if let Some(finding) = self.detect_once(location, again) {
                return Some(finding);
            }
        }
        // HTML references decoded once: a browser reads them in markup.
        let Cow::Owned(unescaped) = html_decode(value) else {
            return None;
        };
        if self.script && script_injection(&unescaped) {
            return Some(Finding::injection(Class::Script, location, None));
        }
        if self.sql {
            if let Some(fingerprint) = sql_injection(&unescaped) {
                return Some(Finding::injection(Class::Sql, location, Some(fingerprint)));
            }
        }
        None
    }

    fn detect_once(&self, location: Location, value: &[u8]) -> Option<Finding> {
        if self.sql {
            let double = if self.sensitivity == Sensitivity::High {
                DoubleQuoted::Any
            } else {
                DoubleQuoted::FourTokens
            };
            if let Some(fingerprint) = sql_injection_with(value, double) {
                // `X`: libinjection's "evil" input (comments it cannot fold).
                let counted = self.sensitivity > Sensitivity::Low
                    || fingerprint.len() >= 3
                    || fingerprint == "X";
                if counted {
                    return Some(Finding::injection(Class::Sql, location, Some(fingerprint)));
                }
            }
        }
        if self.script && script_injection(value) {
            return Some(Finding::injection(Class::Script, location, None));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn threats(rule: serde_json::Value) -> Threats {
        let config: ThreatConfig = serde_json::from_value(json!({ "rules": [rule] })).unwrap();
        Threats::compile(&config).unwrap()
    }

    fn error_at(rule: serde_json::Value) -> String {
        let config: ThreatConfig = serde_json::from_value(json!({ "rules": [rule] })).unwrap();
        Threats::compile(&config).unwrap_err().path
    }

    /// The finding's check and location for a request to the only rule.
    fn inspect(
        rule: &serde_json::Value,
        query: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, &str)>,
    ) -> Option<(&'static str, Option<Location>)> {
        let threats = threats(rule.clone());
        let rule = threats.rules.get(0).unwrap();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.to_string())
        };
        let captures = [(
            "id",
            headers
                .iter()
                .find(|(key, _)| *key == ":id")
                .map_or("42", |(_, value)| value)
                .to_string(),
        )];
        rule.inspect(&RequestParts {
            query,
            captures: &captures,
            header: &header,
            content_type: body.map(|(content_type, _)| content_type),
            body: body.map(|(_, body)| body.as_bytes()),
        })
        .map(|finding| (finding.check, finding.location))
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(
            error_at(json!({"locations": ["header"]})),
            "rules[0].headers"
        );
        assert_eq!(
            error_at(json!({"locations": ["header"], "headers": ["a b"]})),
            "rules[0].headers[0]"
        );
        assert_eq!(error_at(json!({"exempt": ["q"]})), "rules[0].exempt[0]");
        assert_eq!(
            error_at(json!({"exempt": ["body.q"]})),
            "rules[0].exempt[0]"
        );
        assert_eq!(
            error_at(json!({"exempt": ["query."]})),
            "rules[0].exempt[0]"
        );
        assert_eq!(
            error_at(json!({"json": {"max_depth": 0}})),
            "rules[0].json.max_depth"
        );
        assert_eq!(
            error_at(json!({"form": {"max_fields": 0}})),
            "rules[0].form.max_fields"
        );
        assert_eq!(
            error_at(json!({"max_body_bytes": 0})),
            "rules[0].max_body_bytes"
        );
        assert_eq!(
            error_at(json!({"match": {"path": {"exact": "x"}}})),
            "rules[0].match.path.exact"
        );
        let unknown: Result<ThreatConfig, _> =
            serde_json::from_value(json!({"rules": [{"mode": "warn"}]}));
        assert!(unknown.is_err());
    }

    #[test]
    fn injections_are_found_in_every_location() {
        let all = json!({"locations": ["query", "path", "header", "cookie", "form", "json"],
                         "headers": ["X-Search"]});
        let sql = Some(("sql", Some(Location::Query)));
        assert_eq!(
            inspect(&all, "q=1%27%20OR%20%271%27%3D%271", &[], None),
            sql
        );
        assert_eq!(inspect(&all, "q=1'+OR+'1'='1", &[], None), sql);
        assert_eq!(
            inspect(&all, "", &[("x-search", "1' OR '1'='1")], None),
            Some(("sql", Some(Location::Header)))
        );
        assert_eq!(
            inspect(
                &all,
                "",
                &[("cookie", "a=1; s=%3Cscript%3Ealert(1)%3C/script%3E")],
                None
            ),
            Some(("script", Some(Location::Cookie)))
        );
        let form = (
            "application/x-www-form-urlencoded",
            "name=x&bio=%3Cimg+src%3Dx+onerror%3Dalert(1)%3E",
        );
        assert_eq!(
            inspect(&all, "", &[], Some(form)),
            Some(("script", Some(Location::Form)))
        );
        let body = r#"{"order": {"items": [{"note": "1 UNION SELECT password FROM users--"}]}}"#;
        assert_eq!(
            inspect(&all, "", &[], Some(("application/json", body))),
            Some(("sql", Some(Location::Json)))
        );
        assert_eq!(
            inspect(&all, "", &[(":id", "1%27%20OR%20%271%27%3D%271")], None),
            Some(("sql", Some(Location::Path)))
        );
        let key = r#"{"<script>alert(1)</script>": 1}"#;
        assert_eq!(
            inspect(&all, "", &[], Some(("application/json", key))),
            Some(("script", Some(Location::Json)))
        );
        // Names are values too: a query's, a form's, a cookie's.
        assert_eq!(inspect(&all, "1%27+OR+%271%27%3D%271=x", &[], None), sql);
        let form_name = (
            "application/x-www-form-urlencoded",
            "%3Cscript%3Ealert(1)%3C/script%3E=1",
        );
        assert_eq!(
            inspect(&all, "", &[], Some(form_name)),
            Some(("script", Some(Location::Form)))
        );
        assert_eq!(
            inspect(
                &all,
                "",
                &[("cookie", "1 UNION SELECT password FROM users--=1")],
                None
            ),
            Some(("sql", Some(Location::Cookie)))
        );
        // A cookie's `+` is read both ways (PHP reads it as a space).
        assert_eq!(
            inspect(
                &all,
                "",
                &[("cookie", "s=1+UNION+SELECT+password+FROM+users--")],
                None
            ),
            Some(("sql", Some(Location::Cookie)))
        );
        // An exemption is by name: it never covers the name itself.
        let exempt = json!({"exempt": ["query.1' OR '1'='1"]});
        assert_eq!(inspect(&exempt, "1%27+OR+%271%27%3D%271=x", &[], None), sql);
    }

    #[test]
    fn benign_values_pass() {
        let rule = json!({});
        for query in [
            "name=O%27Brien",
            "q=please+select+a+union+rep",
            "email=a.b%40example.com",
            "url=https%3A%2F%2Fexample.com%2Fa%3Fb%3D1",
            "text=%E6%9D%B1%E4%BA%AC+%F0%9F%98%80",
            "blob=aGVsbG8gd29ybGQ%3D",
        ] {
            assert_eq!(inspect(&rule, query, &[], None), None, "{query}");
        }
        let body = r#"{"comment": "I'd drop the union rep; select one", "n": 3}"#;
        assert_eq!(
            inspect(&rule, "", &[], Some(("application/json", body))),
            None
        );
    }

    #[test]
    fn exempt_values_and_unchosen_places_are_not_checked() {
        let rule = json!({"exempt": ["query.sql", "json.snippet"]});
        assert_eq!(inspect(&rule, "sql=1'+OR+'1'='1", &[], None), None);
        assert!(inspect(&rule, "q=1'+OR+'1'='1", &[], None).is_some());
        let body = r#"{"snippet": ["<script>alert(1)</script>"]}"#;
        assert_eq!(
            inspect(&rule, "", &[], Some(("application/json", body))),
            None
        );
        // Only under that key: not a later element of an array around it.
        let body = r#"{"x": [{"snippet": 0}, "<script>alert(1)</script>"]}"#;
        assert!(inspect(&rule, "", &[], Some(("application/json", body))).is_some());
        // Headers are checked only when chosen.
        assert_eq!(
            inspect(&rule, "", &[("x-search", "1' OR '1'='1")], None),
            None
        );
        let query_only = json!({"locations": ["query"]});
        let body = r#"{"a": "<script>alert(1)</script>"}"#;
        assert_eq!(
            inspect(&query_only, "", &[], Some(("application/json", body))),
            None
        );
        // A path exempted: no class checked, the structure limits still are.
        let limits_only = json!({"injection": [], "json": {"max_depth": 2}});
        assert_eq!(inspect(&limits_only, "q=1'+OR+'1'='1", &[], None), None);
        assert_eq!(
            inspect(&limits_only, "", &[], Some(("application/json", body))),
            None
        );
        assert_eq!(
            inspect(&limits_only, "", &[], Some(("application/json", "[[[1]]]"))),
            Some(("json_depth", Some(Location::Json)))
        );
    }

    #[test]
    fn low_sensitivity_passes_two_token_fingerprints() {
        // `admin'--` reads as a string then a comment (`sc`).
        let comment = "user=admin%27--";
        assert_eq!(
            inspect(&json!({}), comment, &[], None),
            Some(("sql", Some(Location::Query)))
        );
        assert_eq!(
            inspect(&json!({"sensitivity": "low"}), comment, &[], None),
            None
        );
        let tautology = "user=x%27+or+%27a%27%3D%27a";
        assert!(inspect(&json!({"sensitivity": "low"}), tautology, &[], None).is_some());
        // Comments libinjection cannot fold (`X`) count at every level.
        let nested = "q=1+%2F*+%2F*+*%2F+*%2F+2";
        assert_eq!(
            inspect(&json!({"sensitivity": "low"}), nested, &[], None),
            Some(("sql", Some(Location::Query)))
        );
    }

    #[test]
    fn high_sensitivity_also_reads_double_encoded_values() {
        let double = "q=1%2527%2520OR%2520%25271%2527%253D%25271";
        assert_eq!(inspect(&json!({}), double, &[], None), None);
        assert_eq!(
            inspect(&json!({"sensitivity": "high"}), double, &[], None),
            Some(("sql", Some(Location::Query)))
        );
        // HTML references are decoded at `high` only: prose that writes
        // markup as text passes below it.
        let written = "q=%26lt%3Bscript%26gt%3Balert(1)%26lt%3B%2Fscript%26gt%3B";
        assert_eq!(inspect(&json!({}), written, &[], None), None);
        assert_eq!(
            inspect(&json!({"sensitivity": "high"}), written, &[], None),
            Some(("script", Some(Location::Query)))
        );
    }

    #[test]
    fn a_multipart_form_is_read_as_a_form_and_its_files_by_their_filename() {
        const TYPE: &str = "multipart/form-data; boundary=----b7";
        let body = |parts: &[(&str, &str)]| {
            let mut body = String::new();
            for (disposition, content) in parts {
                body.push_str(&format!(
                    "------b7\r\nContent-Disposition: form-data; {disposition}\r\n\r\n{content}\r\n"
                ));
            }
            body + "------b7--\r\n"
        };
        let rule = json!({"exempt": ["form.snippet"], "form": {"max_fields": 3, "max_value": 100},
            "other_content_types": "reject"});
        let check = |parts: &[(&str, &str)]| {
            let body = Box::leak(body(parts).into_boxed_str());
            inspect(&rule, "", &[], Some((TYPE, body)))
        };
        let sql = Some(("sql", Some(Location::Form)));
        let clean = [
            ("name=\"title\"", "O'Brien's shoes"),
            ("name=\"note\"", "select one"),
        ];
        assert_eq!(check(&clean), None);
        assert_eq!(check(&[("name=\"q\"", "1' OR '1'='1")]), sql);
        assert_eq!(check(&[("name=\"1' OR '1'='1\"", "x")]), sql);
        // A file: its filename is checked, not its content; an empty
        // filename makes a field of it (some parsers read it so).
        let upload = "name=\"doc\"; filename=\"page.html\"";
        assert_eq!(check(&[(upload, "<script>alert(1)</script>")]), None);
        assert_eq!(
            check(&[("name=\"doc\"; filename=\"<svg onload=alert(1)>\"", "")]),
            Some(("script", Some(Location::Form)))
        );
        assert_eq!(
            check(&[("name=\"doc\"; filename=\"\"", "<script>alert(1)</script>")]),
            Some(("script", Some(Location::Form)))
        );
        assert_eq!(check(&[("name=\"snippet\"", "1' OR '1'='1")]), None);
        let four = [
            ("name=a", "1"),
            ("name=b", "2"),
            ("name=c", "3"),
            ("name=d", "4"),
        ];
        assert_eq!(check(&four), Some(("form_fields", Some(Location::Form))));
        let long = "x".repeat(101);
        assert_eq!(
            check(&[("name=a", long.as_str())]),
            Some(("form_size", Some(Location::Form)))
        );
        let malformed = Some(("form_malformed", Some(Location::Form)));
        assert_eq!(check(&[("filename=\"no name\"", "x")]), malformed);
        assert_eq!(
            inspect(&rule, "", &[], Some((TYPE, "------b7\r\nunclosed"))),
            malformed
        );
        assert_eq!(
            inspect(&rule, "", &[], Some(("multipart/form-data", "x"))),
            malformed
        );
        // Read only where forms are.
        let json_only = json!({"locations": ["json"]});
        let injected = body(&[("name=\"q\"", "1' OR '1'='1")]);
        assert_eq!(inspect(&json_only, "", &[], Some((TYPE, &injected))), None);
        // Not another content type under `other_content_types: reject`.
        let threats = threats(rule.clone());
        let rule = threats.rules.get(0).unwrap();
        assert!(rule.reads_body(Some(TYPE)));
        assert_eq!(rule.unreadable_body(&[TYPE.to_string()], &[]), None);
    }

    #[test]
    fn structure_limits_and_bad_bodies_are_refused_by_check() {
        let rule =
            json!({"json": {"max_depth": 3}, "form": {"max_fields": 2}, "max_body_bytes": 64});
        let json_body = |body: &'static str| Some(("application/json", body));
        assert_eq!(
            inspect(&rule, "", &[], json_body("[[[[1]]]]")),
            Some(("json_depth", Some(Location::Json)))
        );
        assert_eq!(
            inspect(&rule, "", &[], json_body("{\"a\": }")),
            Some(("json_malformed", Some(Location::Json)))
        );
        assert_eq!(
            inspect(
                &rule,
                "",
                &[],
                Some(("application/x-www-form-urlencoded", "a=1&b=2&c=3"))
            ),
            Some(("form_fields", Some(Location::Form)))
        );
        let large = "x".repeat(65);
        let threats = threats(rule);
        let finding = threats.rules.get(0).unwrap().inspect(&RequestParts {
            query: "",
            captures: &[],
            header: &|_| None,
            content_type: Some("text/plain"),
            body: Some(large.as_bytes()),
        });
        assert_eq!(finding.map(|f| f.error.code), Some("A413TB"));
    }
}
