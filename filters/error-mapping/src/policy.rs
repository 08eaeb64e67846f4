//! The error-mapping policy: configuration, compilation and decision.
//! Each API's rule names the values it reads Alibaba-style (`parameters`),
//! a `condition` on the response (the shared condition language; by
//! default `status >= 400`), the value whose text picks a mapping
//! (`error_code`; by default the status), the `mappings` by that text and
//! a `default`. A response the condition holds for is answered with the
//! mapping's status, error code and message (a template of the values),
//! in the shared error shape or with the backend's body.

use gateway_common::client_ip::ClientAddressConfig;
use gateway_common::condition::rules::{ConditionRule, ConditionRules, RuleSource};
pub use gateway_common::condition::{Body, ResponseValues};
use gateway_common::condition::{Compiler, Condition, Facts, Phase, Reference, Values};
use gateway_common::config::ConfigError;
use gateway_common::matching::MatchConfig;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

/// The condition of a rule that sets none: the backend answered an error.
pub const DEFAULT_CONDITION: &str = "status >= 400";
/// A mapping's message or error code is at most this long, as written.
const MAX_TEMPLATE_BYTES: usize = 512;
/// A rule has at most this many mappings.
pub const MAX_MAPPINGS: usize = 4096;
/// `max_body_bytes` at most (Envoy buffers what a rule reads).
pub const MAX_BODY_BYTES: usize = 16 << 20;

fn default_max_body_bytes() -> usize {
    64 * 1024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorMappingConfig {
    /// Per API: the first rule whose `match` holds applies.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub client_address: ClientAddressConfig,
    /// The largest response body a rule reads; a larger one passes
    /// unmapped (counted).
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
    /// Values named Alibaba-style (`resultCode: "BodyJsonField:$.code"`,
    /// `StatusCode`), read as `$resultCode`.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// When the response is an error to map (default `status >= 400`).
    #[serde(default, alias = "errorCondition")]
    pub condition: Option<String>,
    /// The value whose text picks a mapping (`$resultCode`,
    /// `response.json.code`); the status when absent.
    #[serde(default, alias = "errorCode")]
    pub error_code: Option<String>,
    #[serde(default)]
    pub mappings: Vec<MappingConfig>,
    /// For an error no mapping names; without it such a response passes
    /// as the backend sent it.
    #[serde(default, alias = "defaultMapping")]
    pub default: Option<MappingConfig>,
    /// `error`: the shared error shape (JSON body and `X-Ca-Error-*`
    /// headers); `backend`: the backend's body, with the new status and
    /// headers.
    #[serde(default)]
    pub body: Shape,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// The backend's code this mapping is for (a mapping in `mappings`
    /// needs one; the `default` has none).
    #[serde(default)]
    pub code: Option<String>,
    /// The status the client sees.
    #[serde(alias = "statusCode")]
    pub status: u16,
    /// The error code the client sees (`B<status>EM` when absent); may
    /// name values (`${resultCode}`).
    #[serde(default)]
    pub error_code: Option<String>,
    /// The message the client sees; may name values (`${resultId}`,
    /// `${response.json.msg}`).
    #[serde(default, alias = "errorMessage")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    #[default]
    Error,
    Backend,
}

/// Text with values in it (`Role Not Exists, RequestId=${resultId}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// A value by its index among the rule's references.
    Value(usize),
}

impl Template {
    fn compile(text: &str, compiler: &mut Compiler) -> Result<Self, String> {
        if text.len() > MAX_TEMPLATE_BYTES {
            return Err(format!("longer than {MAX_TEMPLATE_BYTES} bytes"));
        }
        if text.chars().any(char::is_control) {
            return Err("control characters cannot be sent in a header".into());
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or_else(|| {
                format!(
                    "`${{` at {} is not closed",
                    text.len() - rest.len() + start + 1
                )
            })?;
            let name = after[..end].trim();
            // `${resultId}` names a declared parameter, as Alibaba writes
            // it; `${app}`, `${response.json.msg}` a value.
            let index = compiler
                .named_value(name)
                .map_err(|err| format!("`${{{name}}}`: {err}"))?;
            parts.push(Part::Value(index));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Self(parts))
    }

    fn literal(text: String) -> Self {
        Self(vec![Part::Text(text)])
    }

    /// The text with each value in place (a value the response lacks is
    /// empty).
    pub fn render<F: Facts>(&self, references: &[Reference], values: &mut Values<F>) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Value(index) => {
                    if let Some(value) = values.text(references, *index) {
                        out.push_str(value);
                    }
                }
            }
        }
        out
    }
}

/// What a response is mapped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub status: u16,
    pub error_code: Template,
    pub message: Template,
}

/// A rule's condition and mappings.
#[derive(Debug, Clone)]
pub struct Mappings {
    condition: Condition,
    /// The value picking a mapping; `None`: the status.
    error_code: Option<usize>,
    by_code: HashMap<String, Mapping>,
    default: Option<Mapping>,
    pub shape: Shape,
}

/// A compiled rule: its `match`, and its mappings.
pub type Rule = ConditionRule<Mappings>;

/// The compiled policy.
#[derive(Debug, Clone)]
pub struct ErrorMapping {
    pub rules: ConditionRules<Mappings>,
    pub max_body_bytes: usize,
}

/// A response mapped for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    pub status: u16,
    pub error_code: String,
    pub message: String,
    /// The backend's own code (the `error_code` value), kept for the logs.
    pub backend_code: Option<String>,
}

/// What the rule made of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The condition does not hold: not an error.
    Passed,
    /// An error no mapping names, and the rule has no default.
    Unmapped,
    Mapped(Mapped),
}

impl ErrorMapping {
    pub fn compile(config: &ErrorMappingConfig) -> Result<Self, ConfigError> {
        let rules = ConditionRules::compile_for(
            Phase::Response,
            &config.rules,
            &config.client_address,
            |rule| RuleSource {
                name: rule.name.as_deref(),
                matcher: &rule.matcher,
                parameters: &rule.parameters,
                conditions: "condition",
            },
            Mappings::compile,
        )?;
        if config.max_body_bytes == 0 || config.max_body_bytes > MAX_BODY_BYTES {
            return Err(ConfigError::new(
                "max_body_bytes",
                format!("must be 1 to {MAX_BODY_BYTES} (and within Envoy's buffer limit)"),
            ));
        }
        Ok(Self {
            rules,
            max_body_bytes: config.max_body_bytes,
        })
    }
}

impl Mappings {
    fn compile(config: &RuleConfig, compiler: &mut Compiler) -> Result<Self, ConfigError> {
        let condition = compiler
            .compile(config.condition.as_deref().unwrap_or(DEFAULT_CONDITION))
            .map_err(|err| ConfigError::new("condition", err))?;
        let error_code = config
            .error_code
            .as_deref()
            .map(|text| compiler.named_value(text))
            .transpose()
            .map_err(|err| ConfigError::new("error_code", err))?;
        if config.mappings.is_empty() && config.default.is_none() {
            return Err(ConfigError::new(
                "mappings",
                "a rule needs at least one mapping, or a `default`",
            ));
        }
        if config.mappings.len() > MAX_MAPPINGS {
            return Err(ConfigError::new(
                "mappings",
                format!("at most {MAX_MAPPINGS} mappings"),
            ));
        }
        let mut by_code = HashMap::with_capacity(config.mappings.len());
        for (index, mapping) in config.mappings.iter().enumerate() {
            let at = format!("mappings[{index}]");
            let code = mapping
                .code
                .clone()
                .ok_or_else(|| ConfigError::new("code", "a mapping needs the `code` it is for"))
                .map_err(|err| err.within(&at))?;
            let compiled = Mapping::compile(mapping, compiler).map_err(|err| err.within(&at))?;
            if by_code.insert(code.clone(), compiled).is_some() {
                return Err(ConfigError::new(
                    format!("{at}.code"),
                    format!("`{code}` is mapped twice"),
                ));
            }
        }
        let default = match &config.default {
            Some(mapping) if mapping.code.is_some() => {
                return Err(ConfigError::new(
                    "default.code",
                    "the default is for every code no mapping names: it takes no `code`",
                ))
            }
            Some(mapping) => {
                Some(Mapping::compile(mapping, compiler).map_err(|err| err.within("default"))?)
            }
            None => None,
        };
        Ok(Self {
            condition,
            error_code,
            by_code,
            default,
            shape: config.body,
        })
    }
}

impl Mapping {
    fn compile(config: &MappingConfig, compiler: &mut Compiler) -> Result<Self, ConfigError> {
        if !(200..=599).contains(&config.status) || [204, 205, 304].contains(&config.status) {
            return Err(ConfigError::new(
                "status",
                format!(
                    "a status is 200 to 599 and may have a body (not 204, 205 or 304), not {}",
                    config.status
                ),
            ));
        }
        let error_code = match &config.error_code {
            Some(text) if text.trim().is_empty() => {
                return Err(ConfigError::new("error_code", "must not be empty"))
            }
            Some(text) => Template::compile(text, compiler)
                .map_err(|err| ConfigError::new("error_code", err))?,
            None => Template::literal(format!("B{}EM", config.status)),
        };
        let message = match &config.message {
            Some(text) => {
                Template::compile(text, compiler).map_err(|err| ConfigError::new("message", err))?
            }
            None => Template::literal("Backend Error".to_string()),
        };
        Ok(Self {
            status: config.status,
            error_code,
            message,
        })
    }
}

/// Runs a rule over a response's values.
pub fn decide<F: Facts>(rule: &Rule, facts: F) -> Decision {
    let references = rule.references();
    let mut values = rule.values(facts);
    let mappings = &rule.body;
    if !mappings.condition.holds(references, &mut values) {
        return Decision::Passed;
    }
    let (code, backend_code) = match mappings.error_code {
        Some(index) => {
            let code = values.text(references, index).map(str::to_string);
            (code.clone().unwrap_or_default(), code)
        }
        None => {
            let status = values
                .facts()
                .lookup(&Reference::Status)
                .unwrap_or_default();
            (status, None)
        }
    };
    let Some(mapping) = mappings.by_code.get(&code).or(mappings.default.as_ref()) else {
        return Decision::Unmapped;
    };
    Decision::Mapped(Mapped {
        status: mapping.status,
        error_code: mapping.error_code.render(references, &mut values),
        message: mapping.message.render(references, &mut values),
        backend_code,
    })
}
