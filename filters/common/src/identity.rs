//! Identity hand-off between filters. `sign-auth` publishes the
//! authenticated app (and the API it called) as Envoy filter state; later
//! filters read it back. Clients cannot write filter state, so the identity
//! cannot be spoofed with a header: no filter ever reads it from one.
//!
//! Envoy exposes the values as properties `gw_app`, `gw_app_name` and
//! `gw_api` to later Wasm filters, and as `%FILTER_STATE(wasm.gw_app)%` to
//! access logs.

use crate::host::Host;

pub const APP_KEY_PROPERTY: &str = "gw_app";
pub const APP_NAME_PROPERTY: &str = "gw_app_name";
pub const API_PROPERTY: &str = "gw_api";

/// The caller's user id as a third-party authorizer (ext-auth) named it.
pub const USER_PROPERTY: &str = "gw_user";

/// The user id ext-auth published, if any.
pub fn user(host: &dyn Host) -> Option<String> {
    read(host, USER_PROPERTY)
}

/// The request line as the client sent it, published by request-mapping
/// when it rewrites the request, so log-push records what was called.
pub const ORIGINAL_PATH_PROPERTY: &str = "gw_original_path";
pub const ORIGINAL_METHOD_PROPERTY: &str = "gw_original_method";

/// Publishes the client's path and method before they are rewritten.
pub fn publish_original_request(host: &dyn Host, method: &str, path: &str) -> bool {
    host.set_property(&[ORIGINAL_PATH_PROPERTY], path.as_bytes())
        & host.set_property(&[ORIGINAL_METHOD_PROPERTY], method.as_bytes())
}

/// The client's (method, path) if a filter rewrote them.
pub fn original_request(host: &dyn Host) -> Option<(String, String)> {
    Some((
        read(host, ORIGINAL_METHOD_PROPERTY)?,
        read(host, ORIGINAL_PATH_PROPERTY)?,
    ))
}

/// The routing policy's choice of route, which Envoy's routes match (and
/// the response cache keys answers by); a client's own is removed.
pub const ROUTE_HEADER: &str = "x-gw-route";

/// The backend's own status and error code when error mapping changed
/// what the client sees, published for log-push.
pub const BACKEND_STATUS_PROPERTY: &str = "gw_backend_status";
pub const BACKEND_CODE_PROPERTY: &str = "gw_backend_code";

/// Publishes the backend's status and code before they are mapped; the
/// code as a header value would be (no control characters, 512 bytes at
/// most), since it goes on to logs.
pub fn publish_backend_answer(host: &dyn Host, status: Option<u16>, code: Option<&str>) -> bool {
    let mut ok = true;
    if let Some(status) = status {
        ok &= host.set_property(&[BACKEND_STATUS_PROPERTY], status.to_string().as_bytes());
    }
    if let Some(code) = code.filter(|code| !code.is_empty()) {
        let code = crate::error::header_safe(code);
        ok &= host.set_property(&[BACKEND_CODE_PROPERTY], code.as_bytes());
    }
    ok
}

/// The backend's (status, code) if error mapping changed them.
pub fn backend_answer(host: &dyn Host) -> (Option<u16>, Option<String>) {
    (
        read(host, BACKEND_STATUS_PROPERTY).and_then(|status| status.parse().ok()),
        read(host, BACKEND_CODE_PROPERTY),
    )
}

/// What threat-protection found, published for log-push: the check, the
/// place and libinjection's fingerprint, in one property (space-separated:
/// none of the three holds a space) so log-push reads them in one call.
pub const THREAT_PROPERTY: &str = "gw_threat";

/// A finding as log-push records it. The value found is never part of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Threat {
    /// `sql`, `script`, `json_depth`, `body_size`…
    pub check: String,
    /// `query`, `path`, `header`, `cookie`, `form`, `json` or `body`.
    pub place: String,
    /// libinjection's fingerprint of a SQL injection; empty otherwise.
    pub fingerprint: String,
}

/// Publishes a finding (a later one replaces an earlier one).
pub fn publish_threat(
    host: &dyn Host,
    check: &str,
    place: &str,
    fingerprint: Option<&str>,
) -> bool {
    let value = match fingerprint {
        Some(fingerprint) => format!("{check} {place} {fingerprint}"),
        None => format!("{check} {place}"),
    };
    host.set_property(&[THREAT_PROPERTY], value.as_bytes())
}

/// The finding threat-protection published, if any.
pub fn threat(host: &dyn Host) -> Option<Threat> {
    let value = read(host, THREAT_PROPERTY)?;
    let mut parts = value.splitn(3, ' ');
    let mut next = || parts.next().unwrap_or_default().to_string();
    Some(Threat {
        check: next(),
        place: next(),
        fingerprint: next(),
    })
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub app_key: String,
    pub app_name: Option<String>,
    pub api: Option<String>,
    /// The user within the app (a Basic username), where there is one.
    pub user: Option<String>,
}

/// Publishes the identity; false when the host refused a write.
pub fn publish(host: &dyn Host, identity: &Identity) -> bool {
    let mut ok = host.set_property(&[APP_KEY_PROPERTY], identity.app_key.as_bytes());
    if let Some(name) = &identity.app_name {
        ok &= host.set_property(&[APP_NAME_PROPERTY], name.as_bytes());
    }
    if let Some(api) = &identity.api {
        ok &= host.set_property(&[API_PROPERTY], api.as_bytes());
    }
    if let Some(user) = &identity.user {
        ok &= host.set_property(&[USER_PROPERTY], user.as_bytes());
    }
    ok
}

/// The authenticated app key, if an earlier filter published one.
pub fn app_key(host: &dyn Host) -> Option<String> {
    read(host, APP_KEY_PROPERTY)
}

/// The whole published identity, if any.
pub fn read_identity(host: &dyn Host) -> Option<Identity> {
    Some(Identity {
        app_key: app_key(host)?,
        app_name: read(host, APP_NAME_PROPERTY),
        api: read(host, API_PROPERTY),
        user: read(host, USER_PROPERTY),
    })
}

fn read(host: &dyn Host, name: &str) -> Option<String> {
    host.property(&[name])
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FakeHost;

    #[test]
    fn a_published_identity_reads_back() {
        let host = FakeHost::new();
        let identity = Identity {
            app_key: "203751".into(),
            app_name: Some("mobile".into()),
            api: Some("orders".into()),
            user: None,
        };
        assert!(publish(&host, &identity));
        assert_eq!(read_identity(&host), Some(identity));
    }

    #[test]
    fn the_original_request_line_reads_back() {
        let host = FakeHost::new();
        assert_eq!(original_request(&host), None);
        assert!(publish_original_request(&host, "GET", "/v1/users/7?x=1"));
        assert_eq!(
            original_request(&host),
            Some(("GET".to_string(), "/v1/users/7?x=1".to_string()))
        );
    }

    #[test]
    fn a_published_threat_reads_back_with_or_without_a_fingerprint() {
        let host = FakeHost::new();
        assert_eq!(threat(&host), None);
        assert!(publish_threat(&host, "json_depth", "body", None));
        assert_eq!(
            threat(&host),
            Some(Threat {
                check: "json_depth".into(),
                place: "body".into(),
                fingerprint: String::new(),
            })
        );
        assert!(publish_threat(&host, "sql", "query", Some("s&sos")));
        let found = threat(&host).expect("a threat");
        assert_eq!(
            (
                found.check.as_str(),
                found.place.as_str(),
                found.fingerprint.as_str()
            ),
            ("sql", "query", "s&sos")
        );
    }

    #[test]
    fn headers_never_count_as_identity() {
        let host = FakeHost::new()
            .with_header("gw_app", "spoofed")
            .with_header("x-gw-app", "spoofed");
        assert_eq!(app_key(&host), None);
    }

    #[test]
    fn an_empty_app_key_is_no_identity() {
        let host = FakeHost::new().with_property(&[APP_KEY_PROPERTY], "");
        assert_eq!(read_identity(&host), None);
    }
}
