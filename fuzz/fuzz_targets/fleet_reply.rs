//! What the stores answer: the fleet store's (Webdis) reply to a call, and
//! the circuit breaker's records read back from shared data or the fleet.
//! A reply gives one result per check or a failure, never a panic; a
//! record reads as a breaker (a fresh one when it is not a record) that
//! writes back to bytes reading the same.
#![no_main]

use circuit_breaker::breaker::{Breaker, Settings, MAX_BUCKETS};
use circuit_breaker::fleet::View;
use gateway_common::fleet::wire::parse_reply;
use libfuzzer_sys::fuzz_target;

/// The call id the answer must start with (a seed may carry it).
const CALL_ID: &str = "00000000000000ab";

// First byte: the checks the call expected (low 3 bits) and the answer's
// status (high bits: 0 → 200, 1 → no answer, else 500 + n); second byte:
// the breaker's bucket count; the rest is the body.
fuzz_target!(|data: &[u8]| {
    let [shape, buckets, body @ ..] = data else {
        return;
    };
    let expected = usize::from(shape & 7);
    let status = match shape >> 3 {
        0 => Some(200),
        1 => None,
        n => Some(500 + u32::from(n)),
    };
    if let Ok(results) = parse_reply(status, body, CALL_ID, expected) {
        assert_eq!(results.len(), expected);
    }

    let settings = Settings {
        bucket_ms: 1_000,
        buckets: 1 + buckets % MAX_BUCKETS as u8,
        min_calls: 5,
        failure_rate_percent: Some(50),
        slow_call_rate_percent: None,
        consecutive_failures: Some(3),
        open_ms: 1_000,
        open_multiplier: 2.0,
        max_open_ms: 60_000,
        probes: 2,
        probe_timeout_ms: 5_000,
    };
    let breaker = Breaker::decode(Some(body), &settings);
    let bytes = breaker.encode(&settings);
    assert_eq!(
        Breaker::decode(Some(&bytes), &settings).encode(&settings),
        bytes
    );
    if let Some(view) = View::decode(body, &settings) {
        let bytes = view.encode(&settings);
        let again = View::decode(&bytes, &settings).map(|v| v.encode(&settings));
        assert_eq!(again.as_ref(), Some(&bytes));
    }
});
