//! error-mapping: a backend's error answer (its status, or a field of its
//! JSON body such as `$.code`) mapped to the status, error code and message
//! the client sees (Alibaba API Gateway's error mapping). The policy is in
//! [`policy`]; its part in a request in [`steps`]; how a host loads it in
//! `filter.rs`.

pub mod policy;
pub mod steps;

use gateway_common::config::{parse_json, ConfigError};
use policy::{ErrorMapping, ErrorMappingConfig};

pub const FILTER_NAME: &str = "error_mapping";

/// Parses and compiles a JSON configuration.
pub fn compile_config(bytes: &[u8]) -> Result<ErrorMapping, ConfigError> {
    ErrorMapping::compile(&parse_json::<ErrorMappingConfig>(bytes)?)
}

mod filter;
pub use filter::*;

#[cfg(test)]
mod tests;
