//! The few proxy-wasm steps every filter's adapter repeats: loading the
//! plugin configuration in `on_configure`, and answering with the shared
//! error shape.

use crate::config::ConfigError;
use crate::error::{render, GatewayError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MapType};

/// Reads the plugin configuration and compiles it. On error, logs
/// `<filter>: invalid configuration: <path>: <reason>` and returns `None`,
/// so `on_configure` returns false and Envoy refuses the configuration.
pub fn load_config<C>(
    filter: &str,
    compile: impl FnOnce(&[u8]) -> Result<C, ConfigError>,
) -> Option<C> {
    let bytes = hostcalls::get_buffer(
        proxy_wasm::types::BufferType::PluginConfiguration,
        0,
        usize::MAX,
    )
    .ok()
    .flatten()
    .unwrap_or_default();
    match compile(&bytes) {
        Ok(config) => Some(config),
        Err(err) => {
            let _ = hostcalls::log(
                LogLevel::Error,
                &format!("{filter}: invalid configuration: {err}"),
            );
            None
        }
    }
}

/// Answers the current request with `error` in the shared shape; the caller
/// then returns `Action::Pause`.
pub fn send_error(error: &GatewayError) {
    let request_id = hostcalls::get_map_value(MapType::HttpRequestHeaders, "x-request-id")
        .ok()
        .flatten();
    let response = render(error, request_id.as_deref());
    let _ = hostcalls::send_http_response(
        response.status,
        response.header_pairs(),
        Some(&response.body),
    );
}

pub fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}
