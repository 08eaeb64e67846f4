//! sign-auth: app authentication by `X-Ca-*` request signatures, wire
//! compatible with Alibaba Cloud API Gateway. The scheme is in
//! [`signature`], the anti-replay store in [`nonce`], the decisions in
//! [`policy`], its part in a request against the stream seam in [`steps`];
//! how a host loads it in `filter.rs`.

pub mod backend;
pub mod client;
pub mod huawei;
pub mod jwks;
pub mod jwt;
#[cfg(test)]
mod jwt_tests;
pub mod modes;
#[cfg(test)]
mod modes_tests;
pub mod nonce;
pub mod policy;
pub mod signature;
pub mod steps;

use gateway_common::config::{parse_json, ConfigError};
use policy::{SignAuth, SignAuthConfig};

pub const FILTER_NAME: &str = "sign_auth";

/// Headers that carry the verified identity to the upstream (the user is a
/// Basic username); never trusted from a client.
pub const IDENTITY_HEADERS: [&str; 4] = ["x-gw-app-key", "x-gw-app-name", "x-gw-api", "x-gw-user"];

/// Parses and compiles a JSON configuration.
pub fn compile_config(bytes: &[u8]) -> Result<SignAuth, ConfigError> {
    SignAuth::compile(&parse_json::<SignAuthConfig>(bytes)?)
}

mod filter;
pub use filter::*;
