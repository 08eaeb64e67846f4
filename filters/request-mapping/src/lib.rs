//! request-mapping: the frontend request becomes the request the backend
//! expects (path, host, method, parameters moved between locations,
//! constants, system parameters), and response headers are adjusted. The
//! policy is in [`policy`], its part in each request in [`steps`] (written
//! against the stream seam); how a host loads it in `filter.rs`.

pub mod policy;
pub mod steps;

use gateway_common::config::{parse_json, ConfigError};
use policy::{Mapping, MappingConfig};

pub const FILTER_NAME: &str = "request_mapping";

/// Parses and compiles a JSON configuration.
pub fn compile_config(bytes: &[u8]) -> Result<Mapping, ConfigError> {
    Mapping::compile(&parse_json::<MappingConfig>(bytes)?)
}

mod filter;
pub use filter::*;
