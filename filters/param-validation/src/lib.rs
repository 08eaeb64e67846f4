//! param-validation: declared parameters checked at the gateway; undefined
//! query and form parameters never reach the backend. The policy is in
//! [`policy`], its part in each request in [`steps`] (written against the
//! stream seam); how a host loads it in `filter.rs`.

pub mod policy;
pub mod steps;

use gateway_common::config::{parse_json, ConfigError};
use policy::{Validation, ValidationConfig};

pub const FILTER_NAME: &str = "param_validation";

/// Parses and compiles a JSON configuration.
pub fn compile_config(bytes: &[u8]) -> Result<Validation, ConfigError> {
    Validation::compile(&parse_json::<ValidationConfig>(bytes)?)
}

mod filter;
pub use filter::*;
