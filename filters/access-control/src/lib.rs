//! access-control: allow or deny a request by conditions on what the
//! gateway knows of it (Alibaba API Gateway's parameter access control).
//! The policy is in [`policy`]; its part in a request in [`steps`]; how a
//! host loads it in `filter.rs`.

pub mod policy;
pub mod steps;

use gateway_common::config::{parse_json, ConfigError};
use policy::{AccessControl, AccessControlConfig};

pub const FILTER_NAME: &str = "access_control";

/// Parses and compiles a JSON configuration.
pub fn compile_config(bytes: &[u8]) -> Result<AccessControl, ConfigError> {
    AccessControl::compile(&parse_json::<AccessControlConfig>(bytes)?)
}

mod filter;
pub use filter::*;

#[cfg(test)]
mod tests;
