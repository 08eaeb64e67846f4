//! ext-auth: a third-party authorizer for Envoy (Huawei APIG's "custom
//! authorizer"). For the APIs its rules match it asks the provider's own
//! service over HTTP whether to let a request in, keeps the decisions in a
//! bounded table in Envoy shared data, and makes one call per worker for a
//! burst of requests with the same identity. The policy is in [`policy`],
//! [`cache`] and [`flights`], its part in a request against the stream seam
//! in [`steps`]; how a host loads it in `filter.rs`.

pub mod cache;
pub mod config;
pub mod policy;
pub mod steps;

use config::ExtAuthConfig;
use gateway_common::config::{parse_json, ConfigError};
use policy::ExtAuth;

pub const FILTER_NAME: &str = "ext_auth";

/// Parses and compiles a JSON configuration.
pub fn compile_config(bytes: &[u8]) -> Result<ExtAuth, ConfigError> {
    ExtAuth::compile(&parse_json::<ExtAuthConfig>(bytes)?, bytes)
}

mod filter;
pub use filter::*;

#[cfg(test)]
mod tests;
