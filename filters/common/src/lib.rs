//! Shared by every gateway filter. Nothing here calls the proxy-wasm host
//! directly except the [`host::ProxyWasmHost`] implementation, so all of it
//! is testable natively.

#[cfg(feature = "wasm")]
pub mod adapter;
pub mod client_ip;
pub mod condition;
pub mod config;
pub mod error;
pub mod fleet;
pub mod flights;
pub mod header_map;
pub mod host;
pub mod hosting;
pub mod identity;
pub mod ipset;
pub mod kafka;
pub mod key;
pub mod matching;
pub mod metrics;
pub mod params;
pub mod section;
pub mod slots;
pub mod store;
pub mod stream;
pub mod sync;
pub mod tls;
pub mod upstream;
#[cfg(feature = "wasm")]
pub mod wake;
#[cfg(feature = "wasm")]
mod wasm_host;
