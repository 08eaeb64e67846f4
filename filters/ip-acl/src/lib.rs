//! ip-acl: allow and deny lists of client addresses for Envoy. The policy is
//! in [`policy`]; the proxy-wasm adapter (the
//! `wasm` feature) is in `wasm.rs`.

pub mod policy;

pub const FILTER_NAME: &str = "ip_acl";

/// Parses and compiles a JSON configuration.
pub fn compile_config(bytes: &[u8]) -> Result<policy::IpAcl, gateway_common::config::ConfigError> {
    policy::IpAcl::compile(&gateway_common::config::parse_json::<policy::IpAclConfig>(
        bytes,
    )?)
}

#[cfg(feature = "wasm")]
mod wasm;
#[cfg(feature = "wasm")]
pub use wasm::*;
