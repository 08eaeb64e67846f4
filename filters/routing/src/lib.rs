//! routing: conditional routing (Alibaba API Gateway's routing plug-in).
//! The policy chooses where a request goes by conditions in the shared
//! condition language and tells Envoy through one request header that
//! Envoy's routes match (see [`policy`]); its part in a request is in
//! [`steps`], how a host loads it in `filter.rs`.

pub mod policy;
pub mod steps;

use gateway_common::config::{parse_json, ConfigError};
use policy::{Routing, RoutingConfig};

pub const FILTER_NAME: &str = "routing";

/// Parses and compiles a JSON configuration.
pub fn compile_config(bytes: &[u8]) -> Result<Routing, ConfigError> {
    Routing::compile(&parse_json::<RoutingConfig>(bytes)?)
}

mod filter;
pub use filter::*;

#[cfg(test)]
mod tests;
