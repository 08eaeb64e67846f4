//! ip-acl: allow and deny lists of client addresses for Envoy. The policy is
//! in [`policy`]; how a host loads it in `filter.rs`.

pub mod policy;

use gateway_common::config::{parse_json, ConfigError};
use policy::{IpAcl, IpAclConfig};

pub const FILTER_NAME: &str = "ip_acl";

/// Parses and compiles a JSON configuration.
pub fn compile_config(bytes: &[u8]) -> Result<IpAcl, ConfigError> {
    IpAcl::compile(&parse_json::<IpAclConfig>(bytes)?)
}

mod filter;
pub use filter::*;
