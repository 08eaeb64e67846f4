//! threat-protection: injection and oversized-structure attacks stopped at
//! the gateway. Values are decoded as the backend reads them ([`decode`])
//! and checked with libinjection's detectors ([`detect`]); a JSON body is
//! checked against its limits in one pass, without building it ([`json`]).
//! The policy is in [`policy`]; its part in a request in [`steps`]; how a
//! host loads it in `filter.rs`.

pub mod decode;
pub mod detect;
pub mod json;
pub mod multipart;
pub mod policy;
pub mod steps;

use gateway_common::config::{parse_json, ConfigError};
use policy::{ThreatConfig, Threats};

pub const FILTER_NAME: &str = "threat_protection";

/// Parses and compiles a JSON configuration.
pub fn compile_config(bytes: &[u8]) -> Result<Threats, ConfigError> {
    Threats::compile(&parse_json::<ThreatConfig>(bytes)?)
}

mod filter;
pub use filter::*;

#[cfg(test)]
mod tests;
