//! throttling: request quotas per API, app, user, client IP or parameter
//! value, counted in Envoy shared data so they hold across workers. The
//! window arithmetic is in [`window`], the counter table in [`table`], key
//! extraction in [`key`], the decisions in [`policy`] (with the fleet
//! quota leases of [`lease`]), its part in a request
//! against the stream seam in [`steps`]; how a host loads it in `filter.rs`.

pub mod key;
pub mod lease;
pub mod policy;
pub mod steps;
pub mod table;
pub mod window;

use gateway_common::config::{parse_json, ConfigError};
use policy::{Throttling, ThrottlingConfig};

pub const FILTER_NAME: &str = "throttling";

/// Parses and compiles a JSON configuration.
pub fn compile_config(bytes: &[u8]) -> Result<Throttling, ConfigError> {
    Throttling::compile(&parse_json::<ThrottlingConfig>(bytes)?)
}

mod filter;
pub use filter::*;
