//! The conditional-routing policy: configuration, compilation and choice.
//! Each API's rule holds routes, each a condition (the shared condition
//! language) and where the request goes when it holds; the first that
//! holds wins and none keeps the API's own backend.
//!
//! The policy does not route: it sets [`ROUTE_HEADER`] to the chosen
//! route's name and has Envoy choose its route again, and Envoy's routes
//! (written by gatewayctl) match that header. The header is removed from
//! every request first, so a client cannot choose a route by sending it.

use gateway_common::client_ip::ClientAddressConfig;
use gateway_common::condition::rules::{ConditionRule, ConditionRules, RuleSource};
use gateway_common::condition::{Compiler, Condition, Facts};
use gateway_common::config::ConfigError;
use gateway_common::matching::MatchConfig;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The request header carrying the chosen route to Envoy's route table.
pub use gateway_common::identity::ROUTE_HEADER;

/// The longest route name (gatewayctl writes `<api>.route.<name>`).
const MAX_ROUTE_NAME: usize = 160;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Per API: the first rule whose `match` holds applies.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub client_address: ClientAddressConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    /// Values named Alibaba-style for the conditions, read as `$name`.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub condition: String,
    /// The route's name, which Envoy's routes match in `x-gw-route`.
    pub to: String,
}

#[derive(Debug, Clone)]
struct Route {
    condition: Condition,
    to: String,
}

/// A rule's routes, in order.
#[derive(Debug, Clone)]
pub struct Routes(Vec<Route>);

/// A compiled rule: its `match`, and its routes.
pub type Rule = ConditionRule<Routes>;

/// The compiled policy.
#[derive(Debug, Clone)]
pub struct Routing {
    pub rules: ConditionRules<Routes>,
}

impl Routing {
    pub fn compile(config: &RoutingConfig) -> Result<Self, ConfigError> {
        let rules = ConditionRules::compile(
            &config.rules,
            &config.client_address,
            |rule| RuleSource {
                name: rule.name.as_deref(),
                matcher: &rule.matcher,
                parameters: &rule.parameters,
                conditions: "routes",
            },
            Routes::compile,
        )?;
        Ok(Self { rules })
    }
}

impl Routes {
    fn compile(config: &RuleConfig, compiler: &mut Compiler) -> Result<Self, ConfigError> {
        if config.routes.is_empty() {
            return Err(ConfigError::new(
                "routes",
                "a rule needs at least one route",
            ));
        }
        let mut routes = Vec::with_capacity(config.routes.len());
        for (index, route) in config.routes.iter().enumerate() {
            let at = format!("routes[{index}]");
            let condition = compiler
                .compile(&route.condition)
                .map_err(|err| ConfigError::new(format!("{at}.condition"), err))?;
            if !valid_route_name(&route.to) {
                return Err(ConfigError::new(
                    format!("{at}.to"),
                    format!(
                        "a route's name is 1 to {MAX_ROUTE_NAME} letters, digits, `-`, `_` or `.`"
                    ),
                ));
            }
            routes.push(Route {
                condition,
                to: route.to.clone(),
            });
        }
        if let Some(body) = compiler.references().iter().find(|r| r.in_body()) {
            return Err(ConfigError::new(
                "routes",
                format!(
                    "a route is chosen on the request headers: `{body}` reads the body \
                     (form. and json. values are for access control)"
                ),
            ));
        }
        Ok(Self(routes))
    }
}

/// The name of the rule's first route whose condition holds.
pub fn choose<F: Facts>(rule: &Rule, facts: F) -> Option<&str> {
    let mut values = rule.values(facts);
    rule.body
        .0
        .iter()
        .find(|route| route.condition.holds(rule.references(), &mut values))
        .map(|route| route.to.as_str())
}

fn valid_route_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ROUTE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
