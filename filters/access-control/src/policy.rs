//! The parameter access-control policy: configuration, compilation and
//! decision. Each API's rule holds checks, each a condition (the shared
//! condition language, `gateway_common::condition`) and what to do when it
//! holds (`if_true`) or not (`if_false`): `allow` lets the request through
//! at once, `deny` refuses it; a check with nothing to do for its outcome
//! passes the request to the next check, and a request no check decides
//! gets the rule's `otherwise` (allow unless set).

use gateway_common::client_ip::{ClientAddressConfig, ClientAddressResolver};
use gateway_common::condition::{Compiler, Condition, Facts, Reference, Values};
use gateway_common::config::ConfigError;
use gateway_common::error::GatewayError;
use gateway_common::host::{Host, RequestLine};
use gateway_common::identity;
use gateway_common::matching::{
    any_by_route_name, compile_rule_match, first_match_index, rule_name, rule_path, Captures,
    MatchConfig, Matcher, RequestAttrs,
};
use gateway_common::params::{body_kind, parse_pairs, BodyKind};
use serde::Deserialize;
use serde_json::Value;
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

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    matcher: Matcher,
    references: Vec<Reference>,
    checks: Vec<Check>,
    otherwise: Action,
    /// A check reads a form or JSON body field.
    reads_body: bool,
}

/// The compiled policy.
#[derive(Debug, Clone)]
pub struct AccessControl {
    rules: Vec<Rule>,
    client_address: ClientAddressResolver,
    pub dry_run: bool,
    pub max_body_bytes: usize,
    uses_route_name: bool,
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
        let rules = config
            .rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                let at = rule_path(index);
                Rule::compile(rule, &at).map_err(|err| err.within(&at))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if config.max_body_bytes == 0 {
            return Err(ConfigError::new("max_body_bytes", "must be at least 1"));
        }
        Ok(Self {
            uses_route_name: any_by_route_name(&rules, |rule| &rule.matcher),
            rules,
            client_address: ClientAddressResolver::new(&config.client_address),
            dry_run: config.dry_run,
            max_body_bytes: config.max_body_bytes,
        })
    }

    pub fn uses_route_name(&self) -> bool {
        self.uses_route_name
    }

    /// The rule for a request, with its path template's captures.
    pub fn rule_for<'p>(&'p self, request: &RequestAttrs<'_>) -> Option<(usize, Captures<'p>)> {
        first_match_index(&self.rules, |rule| &rule.matcher, request)
    }

    pub fn rule(&self, index: usize) -> Option<&Rule> {
        self.rules.get(index)
    }

    pub fn client_address(&self) -> &ClientAddressResolver {
        &self.client_address
    }
}

impl Rule {
    fn compile(config: &RuleConfig, at: &str) -> Result<Self, ConfigError> {
        let matcher = compile_rule_match(&config.matcher)?;
        if config.checks.is_empty() {
            return Err(ConfigError::new(
                "checks",
                "a rule needs at least one check",
            ));
        }
        let mut compiler = Compiler::new(&config.parameters)?;
        let checks = config
            .checks
            .iter()
            .enumerate()
            .map(|(index, check)| {
                let at = format!("checks[{index}]");
                Check::compile(check, &mut compiler, &at).map_err(|err| err.within(&at))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let variables = matcher.template_variables();
        for reference in compiler.references() {
            if let Reference::Param(name) = reference {
                if !variables.contains(&name.as_str()) {
                    return Err(ConfigError::new(
                        "checks",
                        format!(
                            "`param.{name}`: the rule's path has no variable `{{{name}}}` \
                             (its variables: {})",
                            if variables.is_empty() {
                                "none".to_string()
                            } else {
                                variables.join(", ")
                            }
                        ),
                    ));
                }
            }
        }
        let references = compiler.into_references();
        Ok(Self {
            name: rule_name(config.name.as_deref(), at),
            matcher,
            reads_body: references.iter().any(Reference::in_body),
            references,
            checks,
            otherwise: config.otherwise,
        })
    }

    /// A check reads a form or JSON body field: the request is held for
    /// such a body.
    pub fn reads_body(&self) -> bool {
        self.reads_body
    }

    /// Runs the checks in order over the request's values.
    pub fn decide<F: Facts>(&self, facts: F) -> Decision {
        let mut values = Values::new(facts, &self.references);
        for check in &self.checks {
            let action = if check.condition.holds(&self.references, &mut values) {
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
        match self.otherwise {
            Action::Allow => Decision::Allowed { by: None },
            Action::Deny => Decision::Denied {
                by: None,
                error: codes::DENIED,
            },
        }
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

/// A request body a check reads, parsed once.
#[derive(Debug, Clone, Default)]
pub enum Body {
    /// No body was read (or not one of the kinds checks read).
    #[default]
    None,
    Form(Vec<(String, String)>),
    Json(Value),
}

impl Body {
    /// Parses a whole body by its `Content-Type`; a body that does not
    /// parse has no fields (a check then sees `null`).
    pub fn parse(content_type: Option<&str>, bytes: &[u8]) -> Self {
        match body_kind(content_type) {
            BodyKind::Json => serde_json::from_slice(bytes).map_or(Body::None, Body::Json),
            BodyKind::Form => std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| parse_pairs(text).ok())
                .map_or(Body::None, Body::Form),
            BodyKind::Other => Body::None,
        }
    }

    /// A body of this `Content-Type` is one checks read.
    pub fn readable(content_type: Option<&str>) -> bool {
        body_kind(content_type) != BodyKind::Other
    }

    fn form(&self, name: &str) -> Option<String> {
        match self {
            Body::Form(pairs) => first(pairs, name),
            _ => None,
        }
    }

    fn json(&self, path: &[String]) -> Option<String> {
        let Body::Json(root) = self else {
            return None;
        };
        let mut value = root;
        for step in path {
            value = match value {
                Value::Object(fields) => fields.get(step)?,
                Value::Array(items) => items.get(step.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        match value {
            Value::Null => None,
            Value::String(text) => Some(text.clone()),
            other => Some(other.to_string()),
        }
    }
}

fn first(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.clone())
}

/// A request's values for the checks, read from the host on demand.
pub struct RequestValues<'r> {
    pub host: &'r dyn Host,
    pub line: &'r RequestLine,
    pub captures: &'r [(&'r str, String)],
    pub body: &'r Body,
    pub client_address: &'r ClientAddressResolver,
    query: Option<Vec<(String, String)>>,
}

impl<'r> RequestValues<'r> {
    pub fn new(
        host: &'r dyn Host,
        line: &'r RequestLine,
        captures: &'r [(&'r str, String)],
        body: &'r Body,
        client_address: &'r ClientAddressResolver,
    ) -> Self {
        Self {
            host,
            line,
            captures,
            body,
            client_address,
            query: None,
        }
    }
}

impl Facts for RequestValues<'_> {
    fn lookup(&mut self, reference: &Reference) -> Option<String> {
        let (path, query) = self
            .line
            .path
            .split_once('?')
            .unwrap_or((&self.line.path, ""));
        match reference {
            Reference::Method => Some(self.line.method.clone()),
            Reference::Path => Some(path.to_string()),
            Reference::Host => Some(
                gateway_common::matching::host_without_port(&self.line.authority)
                    .to_ascii_lowercase(),
            ),
            Reference::Stage => Some(
                self.host
                    .request_header("x-ca-stage")
                    .unwrap_or_else(|| "RELEASE".into()),
            ),
            Reference::App => identity::app_key(self.host),
            Reference::AppName => identity::read_identity(self.host)?.app_name,
            Reference::User => identity::user(self.host),
            Reference::ClientIp => self
                .client_address
                .client_of(self.host)
                .ok()
                .map(|ip| ip.to_string()),
            Reference::Query(name) => {
                // A query that does not decode has no parameters.
                let pairs = self
                    .query
                    .get_or_insert_with(|| parse_pairs(query).unwrap_or_default());
                first(pairs, name)
            }
            Reference::Header(name) => self.host.request_header(name),
            Reference::Param(name) => self
                .captures
                .iter()
                .find(|(variable, _)| variable == name)
                .map(|(_, value)| value.clone()),
            Reference::Form(name) => self.body.form(name),
            Reference::Json(path) => self.body.json(path),
        }
    }
}
