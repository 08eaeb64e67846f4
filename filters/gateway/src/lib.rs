//! gateway: every policy in one module, one pass: sign-auth → ip-acl →
//! ext-auth → access-control → routing → throttling → param-validation →
//! threat-protection →
//! response-cache → error-mapping → request-mapping →
//! circuit-breaker → log-push, configured by one JSON object with a section
//! per policy (see [`config`]). Each section is loaded by its own policy's
//! code and each request goes through the policies' steps in the order
//! [`pipeline`] keeps ([`module`], over any host); `wasm.rs` is its
//! proxy-wasm root (`gateway.wasm`), `native.rs` its native module
//! (`libgateway.so`).
//!
//! The fleet checks of a request (sign-auth's nonce, throttling's
//! counters, the circuit breaker's claim of a probe) travel in one call:
//! while the policies run, their checks gather in the request's batch
//! (`gateway_common::fleet::client::Batch`); the request stops at a
//! barrier after the last policy with fleet checks, the batch is sent, and
//! each policy reads its verdict from the answer before the request goes
//! on. A policy
//! in between that answers the request (ip-acl refusing it, say) still has
//! the gathered checks sent, as the chain of single filters would (the
//! nonce is used up), and its reply waits for the answer, so that an
//! earlier policy's verdict (a replay) comes first.

pub mod module;
pub mod pipeline;

/// The module's configuration document, a section per policy.
pub use gateway_registry::document as config;

/// Names the module in its own log lines (a policy's lines carry the
/// policy's name, as the single filter's do).
pub const MODULE_NAME: &str = "gateway";

#[cfg(feature = "wasm")]
mod wasm;
#[cfg(feature = "wasm")]
pub use wasm::*;

#[cfg(feature = "native")]
mod native;
#[cfg(feature = "native")]
pub use native::GatewayModule;
