//! Where a policy's calls go: an Envoy cluster, the `:authority` and path of
//! the calls, and how long one may take. One checked form for every call
//! the suite makes (the fleet store, ext-auth's authorizer, log-push's
//! sink), so each is configured, checked and refused the same way.
//!
//! Each policy keeps its own fields in its configuration (serde's `flatten`
//! does not mix with `deny_unknown_fields`) and hands them to
//! [`Upstream::compile`] with its defaults.

use crate::config::{is_printable, ConfigError};
use crate::stream::HttpCall;
use std::time::Duration;

/// A checked upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout: Duration,
}

/// What one kind of upstream defaults to and allows.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamKind {
    /// Names it in errors: "the fleet store".
    pub name: &'static str,
    /// The path when none is given (`None`: a path is required).
    pub default_path: Option<&'static str>,
    pub default_timeout_ms: u64,
    pub max_timeout_ms: u64,
}

/// An upstream's fields as a configuration gives them.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpstreamFields<'a> {
    pub cluster: &'a str,
    pub authority: Option<&'a str>,
    pub path: Option<&'a str>,
    pub timeout_ms: Option<u64>,
}

impl Upstream {
    /// Checks `fields`: a printable cluster name, a printable authority
    /// (default: the cluster name), a path starting with `/` without spaces
    /// or control characters, a timeout within the kind's bounds. Errors
    /// name the field (`cluster`, `authority`, `path`, `timeout_ms`).
    pub fn compile(fields: UpstreamFields<'_>, kind: UpstreamKind) -> Result<Self, ConfigError> {
        if !is_printable(fields.cluster) {
            return Err(ConfigError::new(
                "cluster",
                format!(
                    "name the Envoy cluster of {} (printable characters, no spaces)",
                    kind.name
                ),
            ));
        }
        let authority = fields.authority.unwrap_or(fields.cluster);
        if !is_printable(authority) {
            return Err(ConfigError::new(
                "authority",
                "must be printable characters without spaces",
            ));
        }
        let path = match (fields.path, kind.default_path) {
            (Some(path), _) => path,
            (None, Some(default)) => default,
            (None, None) => {
                return Err(ConfigError::new(
                    "path",
                    format!("is required for {}", kind.name),
                ))
            }
        };
        if !path.starts_with('/') || !is_printable(path) {
            return Err(ConfigError::new(
                "path",
                "must start with `/` and have no spaces",
            ));
        }
        let timeout_ms = fields.timeout_ms.unwrap_or(kind.default_timeout_ms);
        if !(1..=kind.max_timeout_ms).contains(&timeout_ms) {
            return Err(ConfigError::new(
                "timeout_ms",
                format!("must be between 1 and {}", kind.max_timeout_ms),
            ));
        }
        Ok(Self {
            cluster: fields.cluster.to_string(),
            authority: authority.to_string(),
            path: path.to_string(),
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    /// A call to this upstream: the pseudo-headers (`:method`, `:path`,
    /// `:authority`), then `headers`.
    pub fn call<'a>(
        &'a self,
        method: &'a str,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        body: Option<&'a [u8]>,
    ) -> HttpCall<'a> {
        let mut all = vec![
            (":method", method),
            (":path", self.path.as_str()),
            (":authority", self.authority.as_str()),
        ];
        all.extend(headers);
        HttpCall {
            cluster: &self.cluster,
            headers: all,
            body,
            timeout: self.timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIND: UpstreamKind = UpstreamKind {
        name: "the sink",
        default_path: Some("/"),
        default_timeout_ms: 50,
        max_timeout_ms: 1_000,
    };

    fn fields(cluster: &str) -> UpstreamFields<'_> {
        UpstreamFields {
            cluster,
            ..UpstreamFields::default()
        }
    }

    #[test]
    fn defaults_fill_what_is_not_given() {
        let upstream = Upstream::compile(fields("logs"), KIND).unwrap();
        assert_eq!(upstream.authority, "logs");
        assert_eq!(upstream.path, "/");
        assert_eq!(upstream.timeout, Duration::from_millis(50));
        let call = upstream.call("POST", [("content-type", "text/plain")], Some(b"x"));
        assert_eq!(call.cluster, "logs");
        assert_eq!(
            call.headers,
            [
                (":method", "POST"),
                (":path", "/"),
                (":authority", "logs"),
                ("content-type", "text/plain")
            ]
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases = [
            (fields(""), "cluster"),
            (fields("a b"), "cluster"),
            (
                UpstreamFields {
                    authority: Some("a\nb"),
                    ..fields("c")
                },
                "authority",
            ),
            (
                UpstreamFields {
                    path: Some("logs"),
                    ..fields("c")
                },
                "path",
            ),
            (
                UpstreamFields {
                    path: Some("/a b"),
                    ..fields("c")
                },
                "path",
            ),
            (
                UpstreamFields {
                    timeout_ms: Some(0),
                    ..fields("c")
                },
                "timeout_ms",
            ),
            (
                UpstreamFields {
                    timeout_ms: Some(1_001),
                    ..fields("c")
                },
                "timeout_ms",
            ),
        ];
        for (fields, field) in cases {
            let error = Upstream::compile(fields, KIND).unwrap_err();
            assert_eq!(error.path, field, "{fields:?}: {error}");
        }
        let required = UpstreamKind {
            default_path: None,
            ..KIND
        };
        let error = Upstream::compile(fields("c"), required).unwrap_err();
        assert_eq!(error.to_string(), "path: is required for the sink");
    }
}
