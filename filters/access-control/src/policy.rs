//! The parameter access-control policy: configuration, compilation and
//! decision. Each API's rule holds checks, each a condition (the shared
//! condition language, `gateway_common::condition`) and what to do when it
//! holds (`if_true`) or not (`if_false`): `allow` lets the request through
//! at once, `deny` refuses it; a check with nothing to do for its outcome
//! passes the request to the next check, and a request no check decides
//! gets the rule's `otherwise` (allow unless set).

use gateway_common::client_ip::ClientAddressConfig;
use gateway_common::condition::rules::{ConditionRule, ConditionRules, RuleSource};
pub use gateway_common::condition::{Body, RequestValues};
use gateway_common::condition::{Compiler, Condition, Facts};
use gateway_common::config::ConfigError;
use gateway_common::error::GatewayError;
use gateway_common::matching::{rule_name, MatchConfig};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The error codes the policy answers with (docs/conventions.md).
pub mod codes {
    use gateway_common::error::GatewayError;

    /// A check denied the request (the status and message may be the check's own).
    pub const DENIED: GatewayError =
        GatewayError::new(403, "A403AC", "Access denied by Access Control Policy");
    /// The body a check reads is larger than `max_body_bytes`.
    pub const BODY_TOO_LARGE: GatewayError =
        GatewayError::new(413, "A413AC", "Request Body Too Large for Access Control");
}

fn default_max_body_bytes() -> usize {
    1 << 20
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessControlConfig {
    /// Per API: the first rule whose `match` holds applies.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub client_address: ClientAddressConfig,
    /// Log and count denials but let the requests through.
    #[serde(default)]
    pub dry_run: bool,
    /// The largest form or JSON body a check reads.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    /// Values named Alibaba-style for the checks (`userId: "Query:userId"`,
    /// read as `$userId`).
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    pub checks: Vec<CheckConfig>,
    /// What a request no check decided gets.
    #[serde(default = "Action::allow")]
    pub otherwise: Action,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    #[serde(default)]
    pub name: Option<String>,
    pub condition: String,
    #[serde(default)]
    pub if_true: Option<Action>,
    #[serde(default)]
    pub if_false: Option<Action>,
    /// The status of a denial (4xx; 403 when absent).
    #[serde(default)]
    pub status: Option<u16>,
    /// The message of a denial.
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[serde(alias = "ALLOW")]
    Allow,
    #[serde(alias = "DENY")]
    Deny,
}

impl Action {
    fn allow() -> Self {
        Action::Allow
    }
}

#[derive(Debug, Clone)]
struct Check {
    name: String,
    condition: Condition,
    if_true: Option<Action>,
    if_false: Option<Action>,
    denial: GatewayError,
}

/// A rule's checks, and what a request none of them decided gets.
#[derive(Debug, Clone)]
pub struct Checks {
    checks: Vec<Check>,
    otherwise: Action,
}

/// A compiled rule: its `match`, and its checks.
pub type Rule = ConditionRule<Checks>;

/// The compiled policy.
#[derive(Debug, Clone)]
pub struct AccessControl {
    pub rules: ConditionRules<Checks>,
    pub dry_run: bool,
    pub max_body_bytes: usize,
}

/// What the checks made of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A check allowed it, or none decided and the rule allows the rest.
    Allowed { by: Option<String> },
    /// A check denied it (`None`: the rule's `otherwise`).
    Denied {
        by: Option<String>,
        error: GatewayError,
    },
}

impl AccessControl {
    pub fn compile(config: &AccessControlConfig) -> Result<Self, ConfigError> {
        let rules = ConditionRules::compile(
            &config.rules,
            &config.client_address,
            |rule| RuleSource {
                name: rule.name.as_deref(),
                matcher: &rule.matcher,
                parameters: &rule.parameters,
                conditions: "checks",
            },
            Checks::compile,
        )?;
        if config.max_body_bytes == 0 {
            return Err(ConfigError::new("max_body_bytes", "must be at least 1"));
        }
        Ok(Self {
            rules,
            dry_run: config.dry_run,
            max_body_bytes: config.max_body_bytes,
        })
    }
}

impl Checks {
    fn compile(config: &RuleConfig, compiler: &mut Compiler) -> Result<Self, ConfigError> {
        if config.checks.is_empty() {
            return Err(ConfigError::new(
                "checks",
                "a rule needs at least one check",
            ));
        }
        let checks = config
            .checks
            .iter()
            .enumerate()
            .map(|(index, check)| {
                let at = format!("checks[{index}]");
                Check::compile(check, compiler, &at).map_err(|err| err.within(&at))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            checks,
            otherwise: config.otherwise,
        })
    }
}

/// Runs a rule's checks in order over the request's values.
pub fn decide<F: Facts>(rule: &Rule, facts: F) -> Decision {
    let mut values = rule.values(facts);
    for check in &rule.body.checks {
        let action = if check.condition.holds(rule.references(), &mut values) {
            check.if_true
        } else {
            check.if_false
        };
        match action {
            Some(Action::Allow) => {
                return Decision::Allowed {
                    by: Some(check.name.clone()),
                }
            }
            Some(Action::Deny) => {
                return Decision::Denied {
                    by: Some(check.name.clone()),
                    error: check.denial.clone(),
                }
            }
            None => {}
        }
    }
    match rule.body.otherwise {
        Action::Allow => Decision::Allowed { by: None },
        Action::Deny => Decision::Denied {
            by: None,
            error: codes::DENIED,
        },
    }
}

impl Check {
    fn compile(
        config: &CheckConfig,
        compiler: &mut Compiler,
        at: &str,
    ) -> Result<Self, ConfigError> {
        let condition = compiler
            .compile(&config.condition)
            .map_err(|err| ConfigError::new("condition", err))?;
        if config.if_true.is_none() && config.if_false.is_none() {
            return Err(ConfigError::new(
                "if_true",
                "a check needs `if_true` or `if_false` (allow or deny)",
            ));
        }
        let mut denial = codes::DENIED;
        if let Some(status) = config.status {
            if !(400..=499).contains(&status) {
                return Err(ConfigError::new(
                    "status",
                    format!("a denial's status is 400 to 499, not {status}"),
                ));
            }
            denial.status = status;
        }
        if let Some(message) = &config.message {
            if message.trim().is_empty() || message.chars().any(char::is_control) {
                return Err(ConfigError::new(
                    "message",
                    "a message is text without control characters",
                ));
            }
            denial.message = Cow::Owned(message.clone());
        }
        Ok(Self {
            name: rule_name(config.name.as_deref(), at),
            condition,
            if_true: config.if_true,
            if_false: config.if_false,
            denial,
        })
    }
}
