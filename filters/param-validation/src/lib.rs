//! param-validation: declared parameters checked at the gateway; undefined
//! query and form parameters never reach the backend. The policy is in
//! [`policy`]; the proxy-wasm adapter (the
//! `wasm` feature) is in `wasm.rs`.

pub mod policy;

pub const FILTER_NAME: &str = "param_validation";

pub fn compile_config(
    bytes: &[u8],
) -> Result<policy::Validation, gateway_common::config::ConfigError> {
    policy::Validation::compile(&gateway_common::config::parse_json::<
        policy::ValidationConfig,
    >(bytes)?)
}

#[cfg(feature = "wasm")]
mod wasm;
#[cfg(feature = "wasm")]
pub use wasm::*;
