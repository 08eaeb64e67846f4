//! response-cache: GET and HEAD answers kept per API and served without
//! the upstream (Alibaba API Gateway's caching plug-in, Huawei APIG's
//! proxy_cache). The policy (configuration, keys, what may be stored) is
//! in [`policy`], a stored answer's encoding in [`entry`], its part in a
//! request in [`steps`]; how a host loads it in `filter.rs`.

pub mod entry;
pub mod policy;
pub mod steps;

use gateway_common::config::{parse_json, ConfigError};
use policy::{ResponseCache, ResponseCacheConfig};

pub const FILTER_NAME: &str = "response_cache";

/// Parses and compiles a JSON configuration.
pub fn compile_config(bytes: &[u8]) -> Result<ResponseCache, ConfigError> {
    ResponseCache::compile(&parse_json::<ResponseCacheConfig>(bytes)?)
}

mod filter;
pub use filter::*;

#[cfg(test)]
mod tests;
