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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub app_key: String,
    pub app_name: Option<String>,
    pub api: Option<String>,
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
        };
        assert!(publish(&host, &identity));
        assert_eq!(read_identity(&host), Some(identity));
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
