//! What an "API" is, in every filter: a `match` block of hosts, methods, a
//! path (exact, prefix or template) and Envoy route names. Every listed
//! condition must hold; an absent condition matches anything. Rules are
//! ordered and the first rule whose `match` holds wins.

use crate::config::ConfigError;
use serde::Deserialize;
use std::borrow::Cow;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// `api.example.com` (exact) or `*.example.com` (any subdomain).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// HTTP methods, case-insensitive.
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub path: Option<PathMatchConfig>,
    /// Envoy route names (the `name` of a route in the route configuration).
    #[serde(default)]
    pub route_names: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PathMatchConfig {
    Exact(String),
    Prefix(String),
    /// `/users/{id}/orders/{order}`: `{name}` matches one non-empty segment.
    Template(String),
}

/// The request facts a rule is matched against.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestAttrs<'a> {
    /// `:authority`, possibly with a port.
    pub authority: &'a str,
    pub method: &'a str,
    /// `:path`, possibly with a query string.
    pub path: &'a str,
    pub route_name: Option<&'a str>,
}

/// Values captured by a path template, in template order.
pub type Captures<'a> = Vec<(&'a str, String)>;

/// [`Captures`] kept past the callback that matched them, by a policy that
/// holds the request until its body has arrived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeptCaptures(Vec<(String, String)>);

impl KeptCaptures {
    pub fn keep(captures: Captures<'_>) -> Self {
        Self(
            captures
                .into_iter()
                .map(|(name, value)| (name.to_string(), value))
                .collect(),
        )
    }

    pub fn captures(&self) -> Captures<'_> {
        self.0
            .iter()
            .map(|(name, value)| (name.as_str(), value.clone()))
            .collect()
    }
}

#[derive(Debug, Clone)]
enum HostPattern {
    Exact(String),
    /// Stored with the leading dot: `.example.com`.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Variable(String),
}

#[derive(Debug, Clone)]
enum PathMatcher {
    Exact(String),
    Prefix(String),
    Template(Vec<Segment>),
}

/// A compiled `match` block.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    hosts: Vec<HostPattern>,
    methods: Vec<String>,
    path: Option<PathMatcher>,
    route_names: Vec<String>,
}

impl Matcher {
    /// Compiles a `match` block; errors name the field under `match`.
    pub fn compile(config: &MatchConfig) -> Result<Self, ConfigError> {
        let hosts = config
            .hosts
            .iter()
            .enumerate()
            .map(|(i, host)| {
                compile_host(host).map_err(|m| ConfigError::new(format!("hosts[{i}]"), m))
            })
            .collect::<Result<_, _>>()?;
        let methods = config
            .methods
            .iter()
            .enumerate()
            .map(|(i, method)| {
                if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
                    Err(ConfigError::new(
                        format!("methods[{i}]"),
                        format!("`{method}` is not an HTTP method"),
                    ))
                } else {
                    Ok(method.to_ascii_uppercase())
                }
            })
            .collect::<Result<_, _>>()?;
        let path = config
            .path
            .as_ref()
            .map(compile_path)
            .transpose()
            .map_err(|err| err.within("path"))?;
        Ok(Self {
            hosts,
            methods,
            path,
            route_names: config.route_names.clone(),
        })
    }

    /// True when matching needs Envoy's route name (the adapter fetches it only then).
    pub fn uses_route_name(&self) -> bool {
        !self.route_names.is_empty()
    }

    /// Names of the template's variables, for filters that validate references to them.
    pub fn template_variables(&self) -> Vec<&str> {
        match &self.path {
            Some(PathMatcher::Template(segments)) => segments
                .iter()
                .filter_map(|s| match s {
                    Segment::Variable(name) => Some(name.as_str()),
                    Segment::Literal(_) => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Matches a request; `Some(captures)` when it matches.
    pub fn matches<'m>(&'m self, request: &RequestAttrs<'_>) -> Option<Captures<'m>> {
        self.matches_with_path(request, &normalized_path(request.path))
    }

    /// [`Self::matches`] with the request's path already normalised, so a
    /// list of rules normalises it once.
    fn matches_with_path<'m>(
        &'m self,
        request: &RequestAttrs<'_>,
        normalized: &str,
    ) -> Option<Captures<'m>> {
        if !self.methods.is_empty()
            && !self
                .methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(request.method))
        {
            return None;
        }
        if !self.hosts.is_empty() {
            let host = host_without_port(request.authority);
            if !self.hosts.iter().any(|pattern| host_matches(pattern, host)) {
                return None;
            }
        }
        if !self.route_names.is_empty() {
            let name = request.route_name?;
            if !self.route_names.iter().any(|n| n == name) {
                return None;
            }
        }
        match &self.path {
            None => Some(Vec::new()),
            Some(path) => match_path(path, normalized),
        }
    }
}

/// Where rule `index` is in a policy's configuration (`rules[i]`): the
/// start of its errors' paths, and its name when it has none.
pub fn rule_path(index: usize) -> String {
    format!("rules[{index}]")
}

/// A rule's name: the one given, or its path.
pub fn rule_name(name: Option<&str>, at: &str) -> String {
    name.map_or_else(|| at.to_string(), str::to_string)
}

/// A rule's `match`, compiled; its errors' paths start with `match`.
pub fn compile_rule_match(config: &MatchConfig) -> Result<Matcher, ConfigError> {
    Matcher::compile(config).map_err(|err| err.within("match"))
}

/// A rule with a `match` block.
pub trait MatchedRule {
    fn matcher(&self) -> &Matcher;
}

/// A policy's rules in order: the first whose `match` holds applies.
#[derive(Debug, Clone)]
pub struct RuleList<R> {
    rules: Vec<R>,
    uses_route_name: bool,
}

impl<R: MatchedRule> RuleList<R> {
    pub fn new(rules: Vec<R>) -> Self {
        Self {
            uses_route_name: any_by_route_name(&rules, R::matcher),
            rules,
        }
    }

    /// A rule matches by Envoy's route name: the policy reads it.
    pub fn uses_route_name(&self) -> bool {
        self.uses_route_name
    }

    /// The first rule whose `match` holds, by index, with its path
    /// template's captures (a request context keeps both until the body).
    pub fn first_for<'r>(&'r self, request: &RequestAttrs<'_>) -> Option<(usize, Captures<'r>)> {
        first_match_index(&self.rules, R::matcher, request)
    }

    /// [`RuleList::first_for`] with the rule itself.
    pub fn first_rule_for<'r>(
        &'r self,
        request: &RequestAttrs<'_>,
    ) -> Option<(&'r R, Captures<'r>)> {
        first_match(&self.rules, R::matcher, request)
    }

    pub fn get(&self, index: usize) -> Option<&R> {
        self.rules.get(index)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, R> {
        self.rules.iter()
    }
}

/// Whether any rule matches by Envoy's route name (the policy then reads
/// it for each request).
pub fn any_by_route_name<R>(rules: &[R], matcher: impl Fn(&R) -> &Matcher) -> bool {
    rules.iter().any(|rule| matcher(rule).uses_route_name())
}

/// Ordered rules with first-match semantics, shared by every filter: the
/// index of the first rule whose `match` holds, and its captures.
pub fn first_match_index<'r, R>(
    rules: &'r [R],
    matcher: impl Fn(&R) -> &Matcher,
    request: &RequestAttrs<'_>,
) -> Option<(usize, Captures<'r>)> {
    let normalized = normalized_path(request.path);
    rules.iter().enumerate().find_map(|(index, rule)| {
        matcher(rule)
            .matches_with_path(request, &normalized)
            .map(|captures| (index, captures))
    })
}

/// Every rule whose `match` holds, in order, with its captures; the path is
/// normalised once. For policies where all matching rules apply.
pub fn all_matches<'r, R>(
    rules: &'r [R],
    matcher: impl Fn(&R) -> &Matcher,
    request: &RequestAttrs<'_>,
) -> Vec<(usize, Captures<'r>)> {
    let normalized = normalized_path(request.path);
    rules
        .iter()
        .enumerate()
        .filter_map(|(index, rule)| {
            matcher(rule)
                .matches_with_path(request, &normalized)
                .map(|captures| (index, captures))
        })
        .collect()
}

/// [`first_match_index`] returning the rule itself.
pub fn first_match<'r, R>(
    rules: &'r [R],
    matcher: impl Fn(&R) -> &Matcher,
    request: &RequestAttrs<'_>,
) -> Option<(&'r R, Captures<'r>)> {
    first_match_index(rules, matcher, request).map(|(index, captures)| (&rules[index], captures))
}

fn compile_host(host: &str) -> Result<HostPattern, String> {
    let lower = host.to_ascii_lowercase();
    let valid_chars = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    };
    if let Some(suffix) = lower.strip_prefix("*.") {
        if valid_chars(suffix) {
            return Ok(HostPattern::Suffix(format!(".{suffix}")));
        }
    } else if valid_chars(&lower) || is_bracketed_ipv6(&lower) {
        return Ok(HostPattern::Exact(lower));
    }
    Err(format!(
        "`{host}` is not a host name; use `api.example.com` or `*.example.com`, without port"
    ))
}

fn is_bracketed_ipv6(host: &str) -> bool {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok())
}

fn compile_path(config: &PathMatchConfig) -> Result<PathMatcher, ConfigError> {
    let (kind, value) = match config {
        PathMatchConfig::Exact(v) => ("exact", v),
        PathMatchConfig::Prefix(v) => ("prefix", v),
        PathMatchConfig::Template(v) => ("template", v),
    };
    if !value.starts_with('/') {
        return Err(ConfigError::new(
            kind,
            format!("`{value}` must start with `/`"),
        ));
    }
    if value.contains(['?', '#']) {
        return Err(ConfigError::new(
            kind,
            format!("`{value}` must not contain a query or fragment"),
        ));
    }
    Ok(match config {
        PathMatchConfig::Exact(v) => PathMatcher::Exact(v.clone()),
        PathMatchConfig::Prefix(v) => PathMatcher::Prefix(v.clone()),
        PathMatchConfig::Template(v) => {
            PathMatcher::Template(compile_template(v).map_err(|m| ConfigError::new("template", m))?)
        }
    })
}

fn compile_template(template: &str) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    let mut seen = Vec::new();
    for part in template[1..].split('/') {
        if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid {
                return Err(format!(
                    "`{{{name}}}` in `{template}` is not a valid variable name"
                ));
            }
            if seen.contains(&name) {
                return Err(format!("variable `{name}` appears twice in `{template}`"));
            }
            seen.push(name);
            segments.push(Segment::Variable(name.to_string()));
        } else if part.contains(['{', '}']) {
            return Err(format!(
                "`{part}` in `{template}`: a variable must be a whole segment, like `{{id}}`"
            ));
        } else {
            segments.push(Segment::Literal(part.to_string()));
        }
    }
    Ok(segments)
}

fn match_path<'m>(matcher: &'m PathMatcher, path: &str) -> Option<Captures<'m>> {
    match matcher {
        PathMatcher::Exact(exact) => (path == exact).then(Vec::new),
        PathMatcher::Prefix(prefix) => path.starts_with(prefix.as_str()).then(Vec::new),
        PathMatcher::Template(segments) => {
            let mut parts = path.strip_prefix('/')?.split('/');
            let mut captures = Vec::new();
            for segment in segments {
                let part = parts.next()?;
                match segment {
                    Segment::Literal(literal) if literal == part => {}
                    Segment::Literal(_) => return None,
                    Segment::Variable(_) if part.is_empty() => return None,
                    Segment::Variable(name) => captures.push((name.as_str(), part.to_string())),
                }
            }
            parts.next().is_none().then_some(captures)
        }
    }
}

/// The host part of `:authority`, lower-cased only when needed.
pub fn host_without_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        // [v6]:port or [v6]
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rfind(':') {
        Some(colon) if authority[colon + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            &authority[..colon]
        }
        _ => authority,
    }
}

fn host_matches(pattern: &HostPattern, host: &str) -> bool {
    match pattern {
        HostPattern::Exact(exact) => exact.eq_ignore_ascii_case(host),
        HostPattern::Suffix(suffix) => {
            host.len() > suffix.len()
                && host.is_char_boundary(host.len() - suffix.len())
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
    }
}

/// The path without query or fragment, with percent-encoded unreserved
/// characters decoded (`/%61dmin` is `/admin`) so an encoding trick cannot
/// slip past a rule. Borrowed unless something had to be decoded.
pub fn normalized_path(path: &str) -> Cow<'_, str> {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    let path = &path[..end];
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let decoded = hi << 4 | lo;
                if decoded.is_ascii_alphanumeric() || b"-._~".contains(&decoded) {
                    out.push(char::from(decoded));
                } else {
                    // Keep reserved characters encoded, in upper case.
                    out.push('%');
                    out.push(char::from(bytes[i + 1].to_ascii_uppercase()));
                    out.push(char::from(bytes[i + 2].to_ascii_uppercase()));
                }
                i += 3;
                continue;
            }
        }
        // Copy one whole UTF-8 character.
        let ch_len = path[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&path[i..i + ch_len]);
        i += ch_len;
    }
    Cow::Owned(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kept_captures_give_back_the_captures_in_order() {
        let captures: Captures<'_> = vec![("id", "42".into()), ("order", "a b".into())];
        let kept = KeptCaptures::keep(captures.clone());
        assert_eq!(kept.captures(), captures);
    }

    use super::*;

    fn matcher(json: &str) -> Matcher {
        let config: MatchConfig = serde_json::from_str(json).unwrap();
        Matcher::compile(&config).unwrap()
    }

    fn compile_error(json: &str) -> String {
        let config: MatchConfig = serde_json::from_str(json).unwrap();
        Matcher::compile(&config).unwrap_err().to_string()
    }

    fn request<'a>(method: &'a str, authority: &'a str, path: &'a str) -> RequestAttrs<'a> {
        RequestAttrs {
            authority,
            method,
            path,
            route_name: None,
        }
    }

    #[test]
    fn an_empty_match_matches_everything() {
        assert!(matcher("{}").matches(&request("GET", "x", "/")).is_some());
    }

    #[test]
    fn methods_match_case_insensitively() {
        let m = matcher(r#"{"methods":["get","POST"]}"#);
        assert!(m.matches(&request("GET", "x", "/")).is_some());
        assert!(m.matches(&request("post", "x", "/")).is_some());
        assert!(m.matches(&request("DELETE", "x", "/")).is_none());
    }

    #[test]
    fn exact_hosts_ignore_port_and_case() {
        let m = matcher(r#"{"hosts":["API.example.com"]}"#);
        assert!(m
            .matches(&request("GET", "api.example.com:8443", "/"))
            .is_some());
        assert!(m.matches(&request("GET", "Api.Example.Com", "/")).is_some());
        assert!(m.matches(&request("GET", "www.example.com", "/")).is_none());
    }

    #[test]
    fn suffix_hosts_match_subdomains_but_not_the_apex() {
        let m = matcher(r#"{"hosts":["*.example.com"]}"#);
        assert!(m.matches(&request("GET", "a.example.com", "/")).is_some());
        assert!(m
            .matches(&request("GET", "a.b.example.com:80", "/"))
            .is_some());
        assert!(m.matches(&request("GET", "example.com", "/")).is_none());
        assert!(m.matches(&request("GET", "badexample.com", "/")).is_none());
    }

    #[test]
    fn ipv6_authorities_keep_their_brackets() {
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
        assert_eq!(host_without_port("example.com:80"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        let m = matcher(r#"{"hosts":["[::1]"]}"#);
        assert!(m.matches(&request("GET", "[::1]:8080", "/")).is_some());
    }

    #[test]
    fn exact_paths_ignore_the_query() {
        let m = matcher(r#"{"path":{"exact":"/health"}}"#);
        assert!(m
            .matches(&request("GET", "x", "/health?verbose=1"))
            .is_some());
        assert!(m.matches(&request("GET", "x", "/health/")).is_none());
    }

    #[test]
    fn prefixes_are_plain_string_prefixes_like_envoy() {
        let m = matcher(r#"{"path":{"prefix":"/admin"}}"#);
        assert!(m.matches(&request("GET", "x", "/admin")).is_some());
        assert!(m.matches(&request("GET", "x", "/admin/users")).is_some());
        assert!(m.matches(&request("GET", "x", "/administrator")).is_some());
        assert!(m.matches(&request("GET", "x", "/api/admin")).is_none());
    }

    #[test]
    fn encoded_unreserved_characters_cannot_dodge_a_rule() {
        let m = matcher(r#"{"path":{"prefix":"/admin"}}"#);
        assert!(m.matches(&request("GET", "x", "/%61dmin/x")).is_some());
        assert!(
            m.matches(&request("GET", "x", "/%41dmin")).is_none(),
            "case still matters"
        );
        assert_eq!(normalized_path("/a%2fb%2Fc"), "/a%2Fb%2Fc");
        assert_eq!(normalized_path("/%7e%zz%"), "/~%zz%");
        assert_eq!(normalized_path("/caf%C3%A9/é"), "/caf%C3%A9/é");
    }

    #[test]
    fn templates_capture_segments() {
        let m = matcher(r#"{"path":{"template":"/users/{id}/orders/{order_id}"}}"#);
        let captures = m
            .matches(&request("GET", "x", "/users/42/orders/a-7?x=1"))
            .unwrap();
        assert_eq!(
            captures,
            vec![("id", "42".to_string()), ("order_id", "a-7".to_string())]
        );
        assert!(m
            .matches(&request("GET", "x", "/users/42/orders"))
            .is_none());
        assert!(m
            .matches(&request("GET", "x", "/users/42/orders/7/x"))
            .is_none());
        assert!(m
            .matches(&request("GET", "x", "/users//orders/7"))
            .is_none());
        assert_eq!(m.template_variables(), vec!["id", "order_id"]);
    }

    #[test]
    fn route_names_need_envoys_route_name() {
        let m = matcher(r#"{"route_names":["orders"]}"#);
        assert!(m.uses_route_name());
        let mut req = request("GET", "x", "/");
        assert!(m.matches(&req).is_none());
        req.route_name = Some("orders");
        assert!(m.matches(&req).is_some());
        req.route_name = Some("users");
        assert!(m.matches(&req).is_none());
    }

    #[test]
    fn every_condition_must_hold() {
        let m = matcher(r#"{"hosts":["a.com"],"methods":["GET"],"path":{"prefix":"/x"}}"#);
        assert!(m.matches(&request("GET", "a.com", "/x")).is_some());
        assert!(m.matches(&request("POST", "a.com", "/x")).is_none());
        assert!(m.matches(&request("GET", "b.com", "/x")).is_none());
        assert!(m.matches(&request("GET", "a.com", "/y")).is_none());
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let rules = [
            ("a", matcher(r#"{"path":{"prefix":"/api/admin"}}"#)),
            ("b", matcher(r#"{"path":{"prefix":"/api"}}"#)),
            ("c", matcher("{}")),
        ];
        let pick =
            |path| first_match(&rules, |r| &r.1, &request("GET", "x", path)).map(|(r, _)| r.0);
        assert_eq!(pick("/api/admin/x"), Some("a"));
        assert_eq!(pick("/api/users"), Some("b"));
        assert_eq!(pick("/other"), Some("c"));
    }

    #[test]
    fn all_matching_rules_are_listed_in_order_with_their_captures() {
        let rules = [
            matcher(r#"{"path":{"template":"/users/{id}"}}"#),
            matcher(r#"{"path":{"prefix":"/admin"}}"#),
            matcher(r#"{"path":{"prefix":"/users"}}"#),
        ];
        let matches = all_matches(&rules, |r| r, &request("GET", "x", "/users/%37"));
        let indexes: Vec<usize> = matches.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, [0, 2]);
        assert_eq!(matches[0].1, vec![("id", "7".to_string())]);
        assert!(all_matches(&rules, |r| r, &request("GET", "x", "/none")).is_empty());
    }

    #[test]
    fn bad_match_blocks_are_refused_with_the_field() {
        assert_eq!(
            compile_error(r#"{"hosts":["ok.com","bad host"]}"#),
            "hosts[1]: `bad host` is not a host name; use `api.example.com` or `*.example.com`, without port"
        );
        assert_eq!(
            compile_error(r#"{"methods":["GE T"]}"#),
            "methods[0]: `GE T` is not an HTTP method"
        );
        assert_eq!(
            compile_error(r#"{"path":{"prefix":"api"}}"#),
            "path.prefix: `api` must start with `/`"
        );
        assert_eq!(
            compile_error(r#"{"path":{"template":"/u/{id}/{id}"}}"#),
            "path.template: variable `id` appears twice in `/u/{id}/{id}`"
        );
        assert_eq!(
            compile_error(r#"{"path":{"template":"/u/x{id}"}}"#),
            "path.template: `x{id}` in `/u/x{id}`: a variable must be a whole segment, like `{id}`"
        );
        assert_eq!(
            compile_error(r#"{"path":{"exact":"/a?b=1"}}"#),
            "path.exact: `/a?b=1` must not contain a query or fragment"
        );
    }
}
