//! Test support: a real Envoy per test and an echo upstream that reports
//! exactly what it received.

pub mod browser;
pub mod clickhouse;
pub mod echo;
pub mod envoy;
pub mod gatewayctl;
pub mod http;
pub mod istio;
pub mod kafka;
pub mod process;
pub mod prometheus;
pub mod redis;
pub mod registry;
pub mod signing;
pub mod tokens;
