//! The gateway's policies, in the order a request meets them, and what each
//! needs of where it runs: the gateway module's sections and the tools
//! that write them share this one list (with each policy's parser, in the
//! `gateway-registry` crate).

/// A policy of the gateway, in the order a request meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    SignAuth,
    IpAcl,
    ExtAuth,
    AccessControl,
    Routing,
    Throttling,
    ParamValidation,
    ThreatProtection,
    ResponseCache,
    ErrorMapping,
    RequestMapping,
    CircuitBreaker,
    LogPush,
}

impl Section {
    /// Every policy, in the order they run.
    pub const ALL: [Section; 13] = [
        Section::SignAuth,
        Section::IpAcl,
        Section::ExtAuth,
        Section::AccessControl,
        Section::Routing,
        Section::Throttling,
        Section::ParamValidation,
        Section::ThreatProtection,
        Section::ResponseCache,
        Section::ErrorMapping,
        Section::RequestMapping,
        Section::CircuitBreaker,
        Section::LogPush,
    ];

    /// The section's key, which is also the filter's name in logs and
    /// metrics (`ip_acl`).
    pub fn key(self) -> &'static str {
        match self {
            Section::SignAuth => "sign_auth",
            Section::IpAcl => "ip_acl",
            Section::ExtAuth => "ext_auth",
            Section::AccessControl => "access_control",
            Section::Routing => "routing",
            Section::Throttling => "throttling",
            Section::ParamValidation => "param_validation",
            Section::ThreatProtection => "threat_protection",
            Section::ResponseCache => "response_cache",
            Section::ErrorMapping => "error_mapping",
            Section::RequestMapping => "request_mapping",
            Section::CircuitBreaker => "circuit_breaker",
            Section::LogPush => "log_push",
        }
    }

    /// The section named `key` (`ip_acl`).
    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|section| section.key() == key)
    }

    /// What the policy needs of where it runs.
    pub const fn needs(self) -> Needs {
        let (fleet_store, client_address, body) = match self {
            Section::SignAuth => (true, false, true),
            Section::IpAcl => (false, true, false),
            Section::ExtAuth => (false, true, false),
            Section::AccessControl => (false, true, true),
            Section::Routing => (false, true, false),
            Section::Throttling => (true, true, false),
            Section::ParamValidation => (false, false, true),
            Section::ThreatProtection => (false, false, true),
            Section::ResponseCache => (false, false, false),
            Section::ErrorMapping => (false, true, true),
            Section::RequestMapping => (false, true, true),
            Section::CircuitBreaker => (true, false, false),
            Section::LogPush => (false, true, false),
        };
        Needs {
            fleet_store,
            client_address,
            body,
        }
    }
}

/// What a policy needs of where it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// It may keep state in the fleet store (a `fleet` section), so the
    /// gateway module shares one store among such sections.
    pub fleet_store: bool,
    /// It resolves the client's address (a `client_address` section).
    pub client_address: bool,
    /// It may hold the headers until the body has arrived (the request's;
    /// error mapping a response's), so Envoy must let it.
    pub body: bool,
}
