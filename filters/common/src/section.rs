//! The gateway's policies, in the order a request meets them: the gateway
//! module's sections and the tools that write them share this one list.

/// A policy of the gateway, in the order a request meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    SignAuth,
    IpAcl,
    ExtAuth,
    Throttling,
    ParamValidation,
    RequestMapping,
    CircuitBreaker,
    LogPush,
}

impl Section {
    /// Every policy, in the order they run.
    pub const ALL: [Section; 8] = [
        Section::SignAuth,
        Section::IpAcl,
        Section::ExtAuth,
        Section::Throttling,
        Section::ParamValidation,
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
            Section::Throttling => "throttling",
            Section::ParamValidation => "param_validation",
            Section::RequestMapping => "request_mapping",
            Section::CircuitBreaker => "circuit_breaker",
            Section::LogPush => "log_push",
        }
    }
}
