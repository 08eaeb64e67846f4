//! circuit-breaker: a per-API breaker for Envoy. When an API's calls fail or
//! slow down, the gateway stops sending it traffic for a while and answers
//! at once instead (or routes to a fallback), then lets a few probe calls
//! through before going back to normal.
//!
//! The state machine and its shared record are in [`breaker`], the
//! configuration in [`config`], who answered a call in [`outcome`], the
//! degraded answer in [`degraded`], the per-request decisions in [`policy`],
//! its part in a request against the stream seam in [`steps`]; how a host
//! loads it in `filter.rs`.

pub mod breaker;
pub mod config;
pub mod degraded;
pub mod fleet;
pub mod outcome;
pub mod policy;
pub mod steps;

use gateway_common::config::{parse_json, ConfigError};
use policy::CircuitBreaker;

pub const FILTER_NAME: &str = "circuit_breaker";

/// Parses and compiles a JSON configuration.
pub fn compile_config(bytes: &[u8]) -> Result<CircuitBreaker, ConfigError> {
    config::compile(&parse_json::<config::CircuitBreakerConfig>(bytes)?)
}

mod filter;
pub use filter::*;
