//! Who answered a call, from the Envoy attributes of the stream. Checked on
//! Envoy 1.40:
//!
//! | the call | `response.code_details` | `response.flags` |
//! |---|---|---|
//! | the upstream answered | `via_upstream` | 0 |
//! | route timeout (504) | `response_timeout` | `UT` (0x4) |
//! | connection refused (503) | `upstream_reset_before_response_started{remote_connection_failure…}` | `UF` (0x20) |
//! | a route's `direct_response` | `direct_response` | 0 |
//! | a Wasm filter's `send_http_response` | absent | 0 |
//! | the client went away (seen in `on_log` only) | `downstream_remote_disconnect` | `DC` (0x4000) |
//!
//! Only the first three say anything about the upstream.

use gateway_common::host::Host;

/// Response flags (`response.flags`, Envoy's `CoreResponseFlag` bits) that
/// mean the upstream failed: UH, UT, UR, UF, UC, UO, URX, UMSDR, UPE.
pub const UPSTREAM_FAILURE_FLAGS: u64 = NO_HEALTHY_UPSTREAM
    | UPSTREAM_REQUEST_TIMEOUT
    | UPSTREAM_REMOTE_RESET
    | UPSTREAM_CONNECTION_FAILURE
    | UPSTREAM_CONNECTION_TERMINATION
    | UPSTREAM_OVERFLOW
    | UPSTREAM_RETRY_LIMIT_EXCEEDED
    | UPSTREAM_MAX_STREAM_DURATION_REACHED
    | UPSTREAM_PROTOCOL_ERROR;

pub const NO_HEALTHY_UPSTREAM: u64 = 0x2;
pub const UPSTREAM_REQUEST_TIMEOUT: u64 = 0x4;
pub const UPSTREAM_REMOTE_RESET: u64 = 0x10;
pub const UPSTREAM_CONNECTION_FAILURE: u64 = 0x20;
pub const UPSTREAM_CONNECTION_TERMINATION: u64 = 0x40;
pub const UPSTREAM_OVERFLOW: u64 = 0x80;
pub const DOWNSTREAM_CONNECTION_TERMINATION: u64 = 0x4000;
pub const UPSTREAM_RETRY_LIMIT_EXCEEDED: u64 = 0x8000;
pub const UPSTREAM_MAX_STREAM_DURATION_REACHED: u64 = 0x80000;
pub const UPSTREAM_PROTOCOL_ERROR: u64 = 0x80_0000;

/// `response.code_details` of a response that came from the upstream.
pub use gateway_common::host::VIA_UPSTREAM;

/// Details Envoy gives upstream failures, in case a flag is missing.
const UPSTREAM_FAILURE_DETAILS: [&str; 5] = [
    "upstream_reset_",
    "response_timeout",
    "upstream_per_try_timeout",
    "upstream_max_stream_duration_reached",
    "no_healthy_upstream",
];

/// The attributes of a finished (or answered) call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseFacts {
    pub status: Option<u16>,
    pub code_details: Option<String>,
    pub flags: u64,
}

/// Who answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The upstream, with this status.
    Upstream(u16),
    /// Envoy, because the upstream failed (reset, refused, timed out…).
    UpstreamFailure,
    /// Someone else: a filter's local reply, a direct response, or nobody
    /// (the client left). Says nothing about the upstream.
    NotFromUpstream,
}

impl ResponseFacts {
    pub fn read(host: &dyn Host) -> Self {
        let integer = |path: &[&str]| {
            host.property(path)
                .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
                .map(u64::from_le_bytes)
        };
        Self {
            status: integer(&["response", "code"]).and_then(|code| u16::try_from(code).ok()),
            code_details: host
                .property(&["response", "code_details"])
                .and_then(|bytes| String::from_utf8(bytes).ok()),
            flags: integer(&["response", "flags"]).unwrap_or(0),
        }
    }

    pub fn answer(&self) -> Answer {
        let details = self.code_details.as_deref().unwrap_or("");
        if self.flags & UPSTREAM_FAILURE_FLAGS != 0
            || UPSTREAM_FAILURE_DETAILS
                .iter()
                .any(|prefix| details.starts_with(prefix))
        {
            return Answer::UpstreamFailure;
        }
        match self.status {
            Some(status) if details == VIA_UPSTREAM => Answer::Upstream(status),
            _ => Answer::NotFromUpstream,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_common::host::FakeHost;

    fn facts(status: Option<u16>, details: Option<&str>, flags: u64) -> ResponseFacts {
        ResponseFacts {
            status,
            code_details: details.map(str::to_string),
            flags,
        }
    }

    #[test]
    fn what_envoy_reports_is_classified_by_who_answered() {
        let cases = [
            (
                facts(Some(200), Some("via_upstream"), 0),
                Answer::Upstream(200),
            ),
            (
                facts(Some(500), Some("via_upstream"), 0),
                Answer::Upstream(500),
            ),
            (
                facts(
                    Some(504),
                    Some("response_timeout"),
                    UPSTREAM_REQUEST_TIMEOUT,
                ),
                Answer::UpstreamFailure,
            ),
            (
                facts(
                    Some(503),
                    Some("upstream_reset_before_response_started{remote_connection_failure}"),
                    UPSTREAM_CONNECTION_FAILURE,
                ),
                Answer::UpstreamFailure,
            ),
            (
                facts(Some(503), Some("no_healthy_upstream"), 0),
                Answer::UpstreamFailure,
            ),
            (
                facts(Some(503), Some("direct_response"), 0),
                Answer::NotFromUpstream,
            ),
            (facts(Some(503), None, 0), Answer::NotFromUpstream),
            (
                facts(
                    None,
                    Some("downstream_remote_disconnect"),
                    DOWNSTREAM_CONNECTION_TERMINATION,
                ),
                Answer::NotFromUpstream,
            ),
            // A reset after the upstream's headers, seen at the end of the stream.
            (
                facts(Some(200), Some("via_upstream"), UPSTREAM_REMOTE_RESET),
                Answer::UpstreamFailure,
            ),
        ];
        for (facts, expected) in cases {
            assert_eq!(facts.answer(), expected, "{facts:?}");
        }
    }

    #[test]
    fn properties_are_read_as_envoy_encodes_them() {
        let host = FakeHost::new();
        host.set_property(&["response", "code"], &504u64.to_le_bytes());
        host.set_property(&["response", "flags"], &4u64.to_le_bytes());
        host.set_property(&["response", "code_details"], b"response_timeout");
        assert_eq!(
            ResponseFacts::read(&host),
            facts(Some(504), Some("response_timeout"), 4)
        );
        assert_eq!(
            ResponseFacts::read(&FakeHost::new()),
            ResponseFacts::default()
        );
        let garbled = FakeHost::new().with_property(&["response", "code"], "5");
        assert_eq!(ResponseFacts::read(&garbled).status, None);
    }
}
