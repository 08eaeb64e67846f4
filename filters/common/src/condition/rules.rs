//! The per-API rules of a policy that decides by conditions (access
//! control, routing): each rule's `match`, its `parameters` and its
//! conditions compiled over one table of values; the first rule whose
//! `match` holds applies, and `client_ip` is resolved by the policy's
//! `client_address`.

use super::{Body, Compiler, Facts, Phase, Reference, RequestValues, Values};
use crate::client_ip::{ClientAddressConfig, ClientAddressResolver};
use crate::config::ConfigError;
use crate::host::{Host, RequestLine};
use crate::matching::{
    compile_rule_match, rule_name, rule_path, Captures, MatchConfig, MatchedRule, Matcher,
    RequestAttrs, RuleList,
};
use std::collections::BTreeMap;

/// What every rule of such a policy has, as configured.
pub struct RuleSource<'c> {
    pub name: Option<&'c str>,
    pub matcher: &'c MatchConfig,
    pub parameters: &'c BTreeMap<String, String>,
    /// The field holding the conditions, named in errors about them.
    pub conditions: &'static str,
}

/// A compiled rule: its `match`, the values its conditions read, and the
/// policy's own part (`T`: the checks, the routes).
#[derive(Debug, Clone)]
pub struct ConditionRule<T> {
    pub name: String,
    matcher: Matcher,
    references: Vec<Reference>,
    pub body: T,
}

impl<T> ConditionRule<T> {
    /// The values the rule's conditions read.
    pub fn references(&self) -> &[Reference] {
        &self.references
    }

    /// A request's values for the rule's conditions, each read at most once.
    pub fn values<F: Facts>(&self, facts: F) -> Values<F> {
        Values::new(facts, &self.references)
    }

    /// A condition reads a form or JSON body field.
    pub fn reads_body(&self) -> bool {
        self.references.iter().any(Reference::in_body)
    }

    /// A response condition reads a JSON response body field.
    pub fn reads_response_body(&self) -> bool {
        self.references.iter().any(Reference::in_response_body)
    }
}

impl<T> MatchedRule for ConditionRule<T> {
    fn matcher(&self) -> &Matcher {
        &self.matcher
    }
}

/// A policy's compiled rules.
#[derive(Debug, Clone)]
pub struct ConditionRules<T> {
    rules: RuleList<ConditionRule<T>>,
    client_address: ClientAddressResolver,
}

impl<T> ConditionRules<T> {
    /// Compiles each rule: its `match` and `parameters` (from `source`),
    /// then the policy's part (`body`, which compiles its conditions with
    /// the compiler it is handed). A `param.` value the rule's path
    /// template lacks is refused. Errors start with `rules[i]`.
    pub fn compile<C>(
        configs: &[C],
        client_address: &ClientAddressConfig,
        source: impl Fn(&C) -> RuleSource<'_>,
        body: impl Fn(&C, &mut Compiler) -> Result<T, ConfigError>,
    ) -> Result<Self, ConfigError> {
        Self::compile_for(Phase::Request, configs, client_address, source, body)
    }

    /// [`ConditionRules::compile`] for conditions of `phase`.
    pub fn compile_for<C>(
        phase: Phase,
        configs: &[C],
        client_address: &ClientAddressConfig,
        source: impl Fn(&C) -> RuleSource<'_>,
        body: impl Fn(&C, &mut Compiler) -> Result<T, ConfigError>,
    ) -> Result<Self, ConfigError> {
        let mut rules = Vec::with_capacity(configs.len());
        for (index, config) in configs.iter().enumerate() {
            let at = rule_path(index);
            let compile = || {
                let source = source(config);
                let matcher = compile_rule_match(source.matcher)?;
                let mut compiler = Compiler::with_phase(source.parameters, phase)?;
                let body = body(config, &mut compiler)?;
                compiler
                    .check_path_variables(&matcher.template_variables())
                    .map_err(|err| ConfigError::new(source.conditions, err))?;
                Ok(ConditionRule {
                    name: rule_name(source.name, &at),
                    matcher,
                    references: compiler.into_references(),
                    body,
                })
            };
            rules.push(compile().map_err(|err: ConfigError| err.within(&at))?);
        }
        Ok(Self {
            rules: RuleList::new(rules),
            client_address: ClientAddressResolver::new(client_address),
        })
    }

    /// A rule matches by Envoy's route name: the policy reads it.
    pub fn uses_route_name(&self) -> bool {
        self.rules.uses_route_name()
    }

    /// The rule for a request, by index, with its path template's captures.
    pub fn rule_for<'p>(&'p self, request: &RequestAttrs<'_>) -> Option<(usize, Captures<'p>)> {
        self.rules.first_for(request)
    }

    pub fn rule(&self, index: usize) -> Option<&ConditionRule<T>> {
        self.rules.get(index)
    }

    /// A request's values, read from `host` on demand.
    pub fn request_values<'r>(
        &'r self,
        host: &'r dyn Host,
        line: &'r RequestLine,
        captures: &'r [(&'r str, String)],
        body: &'r Body,
    ) -> RequestValues<'r> {
        RequestValues::new(host, line, captures, body, &self.client_address)
    }
}
