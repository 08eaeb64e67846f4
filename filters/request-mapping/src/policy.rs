//! The request-mapping policy: how a frontend request becomes the request
//! the backend expects. Compiled once; applied per request to plain data,
//! producing a [`Mapped`] result the adapter writes back. No proxy-wasm calls.
//!
//! Work in progress: query, header and path locations, constants, system
//! parameters, backend path/host/method and response headers are done; form
//! and JSON-body locations follow.

use gateway_common::config::ConfigError;
use gateway_common::error::GatewayError;
use gateway_common::host::HeaderLookup;
use gateway_common::matching::{first_match, MatchConfig, Matcher, RequestAttrs};
use gateway_common::params::{encode_component, parse_pairs, url_decode};
use serde::Deserialize;
use std::collections::HashSet;

pub mod codes {
    use gateway_common::error::GatewayError;

    pub const INVALID_VALUE: GatewayError =
        GatewayError::new(400, "A400MV", "Invalid Parameter Value for Mapping");
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
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
    pub backend: BackendConfig,
    #[serde(default)]
    pub parameters: Vec<ParameterMapping>,
    #[serde(default)]
    pub constants: Vec<ConstantConfig>,
    #[serde(default)]
    pub system: Vec<SystemConfig>,
    #[serde(default)]
    pub response_headers: ResponseHeadersConfig,
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
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Place {
    #[serde(rename = "in")]
    pub location: Location,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterMapping {
    pub from: Place,
    /// Where the value goes; absent: the parameter is removed.
    #[serde(default)]
    pub to: Option<Place>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstantConfig {
    pub to: Place,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemValue {
    ClientIp,
    RequestId,
    AppKey,
    AppName,
    Api,
    RequestTime,
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
    Constant(String),
    System(SystemValue),
}

#[derive(Debug, Clone)]
struct Assignment {
    source: Source,
    target: Place,
}

#[derive(Debug, Clone)]
enum PathPart {
    Literal(String),
    Variable(String),
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
    pub response: ResponseHeadersConfig,
}

#[derive(Debug)]
pub struct Mapping {
    rules: Vec<Rule>,
}

/// Reads a system parameter (client IP, request id, app…).
pub type SystemLookup<'a> = &'a dyn Fn(SystemValue) -> Option<String>;

/// The facts of one request the mapping reads.
#[derive(Default)]
pub struct Frontend<'a> {
    pub path: &'a str,
    pub query: &'a str,
    pub captures: &'a [(&'a str, String)],
    pub header: Option<HeaderLookup<'a>>,
    pub system: Option<SystemLookup<'a>>,
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
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(':')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check_place(
    place: &Place,
    at: &str,
    template_vars: &[&str],
    backend_vars: &[String],
) -> Result<(), ConfigError> {
    if place.name.is_empty() {
        return Err(ConfigError::new(format!("{at}.name"), "must not be empty"));
    }
    match place.location {
        Location::Header if !valid_header_name(&place.name) => Err(ConfigError::new(
            format!("{at}.name"),
            format!("`{}` is not a header name", place.name),
        )),
        Location::Path
            if !template_vars.contains(&place.name.as_str())
                && !backend_vars.contains(&place.name) =>
        {
            Err(ConfigError::new(
                format!("{at}.name"),
                format!(
                    "`{}` is not a variable of the frontend or backend path template",
                    place.name
                ),
            ))
        }
        _ => Ok(()),
    }
}

fn compile_backend_path(template: &str) -> Result<Vec<PathPart>, String> {
    if !template.starts_with('/') || template.contains(['?', '#']) {
        return Err(format!(
            "`{template}` must start with `/` and have no query"
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
            rules.push(compile_rule(rule, &format!("rules[{i}]"))?);
        }
        Ok(Self { rules })
    }

    pub fn rule_for<'m>(
        &'m self,
        request: &RequestAttrs<'_>,
    ) -> Option<(&'m Rule, Vec<(&'m str, String)>)> {
        first_match(&self.rules, |r| &r.matcher, request)
    }
}

fn compile_rule(rule: &RuleConfig, at: &str) -> Result<Rule, ConfigError> {
    let matcher = Matcher::compile(&rule.matcher).map_err(|e| e.within("match").within(at))?;
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
    let mut add_target = |target: &Place, at: &str| -> Result<(), ConfigError> {
        let key = (target.location, target.name.to_ascii_lowercase());
        if !targets.insert(key) {
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
        match &m.to {
            Some(to) => {
                check_place(to, &format!("{at}.to"), &[], &backend_vars)?;
                add_target(to, &at)?;
                assignments.push(Assignment {
                    source: Source::Parameter(m.from.clone()),
                    target: to.clone(),
                });
            }
            None => removals.push(m.from.clone()),
        }
    }
    for (j, c) in rule.constants.iter().enumerate() {
        let at = format!("{at}.constants[{j}]");
        check_place(&c.to, &format!("{at}.to"), &[], &backend_vars)?;
        add_target(&c.to, &at)?;
        if c.to.location == Location::Header && c.value.chars().any(char::is_control) {
            return Err(ConfigError::new(
                format!("{at}.value"),
                "a header value must not contain control characters",
            ));
        }
        assignments.push(Assignment {
            source: Source::Constant(c.value.clone()),
            target: c.to.clone(),
        });
    }
    for (j, s) in rule.system.iter().enumerate() {
        let at = format!("{at}.system[{j}]");
        check_place(&s.to, &format!("{at}.to"), &[], &backend_vars)?;
        add_target(&s.to, &at)?;
        assignments.push(Assignment {
            source: Source::System(s.value),
            target: s.to.clone(),
        });
    }
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
    for (j, h) in rule.response_headers.add.iter().enumerate() {
        if !valid_header_name(&h.name) || h.value.chars().any(char::is_control) {
            return Err(ConfigError::new(
                format!("{at}.response_headers.add[{j}]"),
                "invalid header name or value",
            ));
        }
    }
    Ok(Rule {
        name: rule.name.clone().unwrap_or_else(|| at.to_string()),
        matcher,
        backend_path,
        backend_host: rule.backend.host.clone(),
        backend_method: method,
        assignments,
        removals,
        response: rule.response_headers.clone(),
    })
}

fn invalid(message: String) -> GatewayError {
    codes::INVALID_VALUE.with_message(message)
}

impl Rule {
    /// Maps one request.
    pub fn apply(&self, frontend: &Frontend<'_>) -> Result<Mapped, GatewayError> {
        let query = parse_pairs(frontend.query).map_err(|_| {
            invalid("Invalid Parameter Value for Mapping: malformed query string".into())
        })?;
        let read = |place: &Place| -> Result<Option<String>, GatewayError> {
            Ok(match place.location {
                Location::Query => query
                    .iter()
                    .find(|(k, _)| *k == place.name)
                    .map(|(_, v)| v.clone()),
                Location::Header => frontend
                    .header
                    .and_then(|h| h(&place.name.to_ascii_lowercase())),
                Location::Path => match frontend.captures.iter().find(|(n, _)| *n == place.name) {
                    Some((_, raw)) => Some(url_decode(raw).map_err(|_| {
                        invalid(format!(
                            "Invalid Parameter Value for Mapping: `{}` has a malformed encoding",
                            place.name
                        ))
                    })?),
                    None => None,
                },
            })
        };

        let mut mapped = Mapped::default();
        let mut path_values: Vec<(String, String)> = Vec::new();
        for (name, raw) in frontend.captures {
            let value = url_decode(raw).map_err(|_| {
                invalid(format!(
                    "Invalid Parameter Value for Mapping: `{name}` has a malformed encoding"
                ))
            })?;
            path_values.push((name.to_string(), value));
        }
        let mut removed_query: HashSet<&str> = HashSet::new();
        let mut added_query: Vec<(String, String)> = Vec::new();
        for removal in &self.removals {
            match removal.location {
                Location::Query => {
                    removed_query.insert(&removal.name);
                }
                Location::Header => mapped
                    .remove_headers
                    .push(removal.name.to_ascii_lowercase()),
                Location::Path => {}
            }
        }
        for assignment in &self.assignments {
            let value = match &assignment.source {
                Source::Parameter(from) => {
                    let value = read(from)?;
                    // A moved parameter leaves its old place.
                    match from.location {
                        Location::Query => {
                            removed_query.insert(&from.name);
                        }
                        Location::Header => {
                            mapped.remove_headers.push(from.name.to_ascii_lowercase())
                        }
                        Location::Path => {}
                    }
                    value
                }
                Source::Constant(value) => Some(value.clone()),
                Source::System(kind) => frontend.system.and_then(|s| s(*kind)),
            };
            let Some(value) = value else { continue };
            let target = &assignment.target;
            match target.location {
                Location::Query => added_query.push((target.name.clone(), value)),
                Location::Header => {
                    if value.chars().any(|c| c.is_control()) {
                        return Err(invalid(format!(
                            "Invalid Parameter Value for Mapping: value for header `{}` contains control characters",
                            target.name
                        )));
                    }
                    let name = target.name.to_ascii_lowercase();
                    mapped.remove_headers.retain(|h| *h != name);
                    mapped.set_headers.push((name, value));
                }
                Location::Path => {
                    path_values.retain(|(n, _)| *n != target.name);
                    path_values.push((target.name.clone(), value));
                }
            }
        }

        let new_path = match &self.backend_path {
            Some(parts) => {
                let mut out = String::new();
                for part in parts {
                    match part {
                        PathPart::Literal(text) => out.push_str(text),
                        PathPart::Variable(name) => {
                            let value = path_values
                                .iter()
                                .find(|(n, _)| n == name)
                                .map(|(_, v)| v.as_str())
                                .unwrap_or("");
                            if value.is_empty() || value == "." || value == ".." {
                                return Err(invalid(format!(
                                    "Invalid Parameter Value for Mapping: `{name}` cannot be used as a path segment"
                                )));
                            }
                            out.push_str(&encode_component(value));
                        }
                    }
                }
                Some(out)
            }
            None => None,
        };
        let query_changed = !removed_query.is_empty() || !added_query.is_empty();
        if new_path.is_some() || query_changed {
            let mut pairs: Vec<String> = frontend
                .query
                .split('&')
                .filter(|p| !p.is_empty())
                .filter(|p| {
                    let key = p.split_once('=').map_or(*p, |(k, _)| k);
                    url_decode(key)
                        .map(|k| !removed_query.contains(k.as_str()))
                        .unwrap_or(true)
                })
                .map(str::to_string)
                .collect();
            pairs.extend(
                added_query
                    .iter()
                    .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v))),
            );
            let path = new_path.unwrap_or_else(|| frontend.path.to_string());
            mapped.path = Some(if pairs.is_empty() {
                path
            } else {
                format!("{path}?{}", pairs.join("&"))
            });
        }
        mapped.authority = self.backend_host.clone();
        mapped.method = self.backend_method.clone();
        Ok(mapped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_common::config::parse_json;
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
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let (rule, captures) = m
            .rule_for(&RequestAttrs {
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
            _ => None,
        };
        rule.apply(&Frontend {
            path,
            query,
            captures: &captures,
            header: Some(&header),
            system: Some(&system),
        })
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
                       {"value": "app_name", "to": {"in": "header", "name": "X-App-Name"}}]
        }));
        let mapped = apply(&m, "/x", &[]).unwrap();
        assert_eq!(mapped.path.as_deref(), Some("/x?v=2&app=203751"));
        assert_eq!(
            mapped.set_headers,
            vec![
                ("x-source".into(), "gateway".into()),
                ("x-client-ip".into(), "203.0.113.9".into())
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
        ];
        for (rule, expected) in cases {
            let error = config_error(rule.clone());
            assert!(
                error.contains(expected),
                "{rule}\n got: {error}\nwant: {expected}"
            );
        }
    }
}
