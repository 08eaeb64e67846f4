//! log-push: one structured record per call, batched per Envoy worker and
//! pushed with `dispatch_http_call` to a sink cluster. The record is built
//! in `on_log`, after the response is sent, so it never delays a request;
//! batches leave from the root context's timer. The policy pieces are in
//! [`config`], [`record`], [`mask`], [`shipper`] and [`format`], its part in a request
//! against the stream seam in [`steps`]; how a root runs it in `worker.rs`.

pub mod config;
pub mod format;
pub mod mask;
pub mod record;
pub mod shipper;
pub mod steps;

use config::{LogPush, LogPushConfig};
use gateway_common::config::{parse_json, ConfigError};

pub const FILTER_NAME: &str = "log_push";

/// Parses and compiles a JSON configuration.
pub fn compile_config(bytes: &[u8]) -> Result<LogPush, ConfigError> {
    LogPush::compile(&parse_json::<LogPushConfig>(bytes)?)
}

mod worker;
pub use worker::*;
