//! sign-auth: app authentication by `X-Ca-*` request signatures.
//!
//! Work in progress: the signature scheme ([`signature`]) is done and
//! verified against independently computed known answers; the request
//! policy, nonce store and proxy-wasm adapter follow.

pub mod nonce;
pub mod policy;
pub mod signature;
