//! throttling: request quotas per API, app, user, client IP or parameter
//! value, counted in Envoy shared data so they hold across workers. The
//! window arithmetic is in [`window`], the counter table in [`table`], key
//! extraction in [`key`], the decisions in [`policy`]; the proxy-wasm adapter (the
//! `wasm` feature) is in `wasm.rs`.

pub mod key;
pub mod policy;
pub mod table;
pub mod window;

pub const FILTER_NAME: &str = "throttling";

pub fn compile_config(
    bytes: &[u8],
) -> Result<policy::Throttling, gateway_common::config::ConfigError> {
    policy::Throttling::compile(&gateway_common::config::parse_json::<
        policy::ThrottlingConfig,
    >(bytes)?)
}

#[cfg(feature = "wasm")]
mod wasm;
#[cfg(feature = "wasm")]
pub use wasm::*;
