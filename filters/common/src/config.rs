//! Config loading: JSON → typed struct (serde, `deny_unknown_fields`) with the
//! failing field's path in every error, so the log line Envoy shows names it.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::fmt;

/// What a policy does with a request when what it depends on fails (its
/// authorizer, its shared-data table): the one `failure_mode` of every
/// policy. Each policy documents its default; fleet stores have their own
/// three-way mode (`fleet::FailureMode`, which adds `local`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Let the request through (counted).
    Allow,
    /// Refuse it with the policy's "unavailable" error.
    Deny,
}

impl OnFailure {
    /// A default of `allow`, for `#[serde(default = "OnFailure::allow")]`.
    pub fn allow() -> Self {
        Self::Allow
    }

    /// A default of `deny`, for `#[serde(default = "OnFailure::deny")]`.
    pub fn deny() -> Self {
        Self::Deny
    }
}

/// A configuration error: where (a path such as `rules[2].allow[0]`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same error seen from a parent: `rules[1]` + `match.path` → `rules[1].match.path`.
    pub fn within(mut self, parent: &str) -> Self {
        self.path = join_path(parent, &self.path);
        self
    }
}

/// Joins two config paths, leaving out empty parts and the dot before an index.
pub fn join_path(parent: &str, child: &str) -> String {
    match (parent.is_empty(), child.is_empty()) {
        (true, _) => child.to_string(),
        (_, true) => parent.to_string(),
        _ if child.starts_with('[') => format!("{parent}{child}"),
        _ => format!("{parent}.{child}"),
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// A header name a filter configuration may use: letters, digits, `-` and
/// `_` (no pseudo-headers, nothing that needs quoting in a log or a stat).
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A cluster name, authority or path a configuration names: visible ASCII,
/// no spaces.
pub fn is_printable(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic())
}

/// Any HTTP field name: an RFC 9110 token (`tchar`s), for headers the
/// gateway only reads or marks.
pub fn is_http_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses a filter's JSON configuration. An absent or blank configuration is
/// an error: a filter loaded without one is almost always a deployment mistake.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ConfigError::new(
            "",
            "the filter configuration is empty; expected a JSON object",
        ));
    }
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ConfigError::new(
            "",
            "the filter configuration must be a JSON object",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ConfigError::new(path, err.inner().to_string())
    })?;
    deserializer
        .end()
        .map_err(|err| ConfigError::new("", err.to_string()))?;
    Ok(value)
}

/// `address` is `host:port` with a port that is not 0.
pub fn check_host_port(field: &str, address: &str) -> Result<(), ConfigError> {
    let port = address
        .rsplit_once(':')
        .and_then(|(host, port)| (!host.is_empty()).then_some(port))
        .and_then(|port| port.parse::<u16>().ok())
        .filter(|port| *port > 0);
    if port.is_none() || address.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(ConfigError::new(
            field,
            format!("`{address}` is not host:port"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[allow(dead_code)]
        rules: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        limit: u32,
    }

    fn error_of(json: &str) -> String {
        parse_json::<Outer>(json.as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn an_unknown_field_is_named_with_its_path() {
        let err = error_of(r#"{"rules":[{"limit":1},{"limt":2}]}"#);
        assert!(
            err.starts_with("rules[1].limt: unknown field `limt`, expected `limit`"),
            "{err}"
        );
    }

    #[test]
    fn a_wrong_type_is_named_with_its_path() {
        let err = error_of(r#"{"rules":[{"limit":"ten"}]}"#);
        assert!(err.starts_with("rules[0].limit: invalid type"), "{err}");
    }

    #[test]
    fn an_empty_configuration_is_refused() {
        assert_eq!(
            error_of("  "),
            "the filter configuration is empty; expected a JSON object"
        );
    }

    #[test]
    fn a_configuration_that_is_not_an_object_is_refused() {
        for json in ["[]", "\"x\"", "42", "null"] {
            assert_eq!(
                error_of(json),
                "the filter configuration must be a JSON object"
            );
        }
    }

    #[test]
    fn trailing_garbage_is_refused() {
        assert!(error_of(r#"{"rules":[]} x"#).contains("trailing characters"));
    }

    #[test]
    fn paths_join_without_stray_dots() {
        assert_eq!(join_path("rules[1]", "match.path"), "rules[1].match.path");
        assert_eq!(join_path("rules", "[3]"), "rules[3]");
        assert_eq!(join_path("", "allow[0]"), "allow[0]");
        assert_eq!(join_path("deny", ""), "deny");
    }

    #[test]
    fn header_names_are_checked_strictly_or_as_http_tokens() {
        for name in ["x-user-id", "X_Tenant", "a1"] {
            assert!(is_header_name(name) && is_http_token(name), "{name}");
        }
        for name in ["", "bad name", ":path", "a,b", "é"] {
            assert!(!is_header_name(name) && !is_http_token(name), "{name}");
        }
        assert!(!is_header_name("x.trace") && is_http_token("x.trace"));
    }
}
