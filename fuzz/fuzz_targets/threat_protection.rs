//! threat-protection's parsers: any bytes checked as a JSON body against
//! small limits (every string it yields run through both detectors), read
//! as a multipart body (every name, value and filename through both), and
//! run through the detectors themselves, without a panic, in bounded time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::ops::ControlFlow;
use threat_protection::detect::{script_injection, sql_injection};
use threat_protection::json::{check, JsonLimits};
use threat_protection::multipart::{parts, Part};

const LIMITS: JsonLimits = JsonLimits {
    depth: 16,
    entries: 64,
    array: 64,
    string: 4096,
    number: 32,
};

fuzz_target!(|data: &[u8]| {
    let _ = sql_injection(data);
    let _ = script_injection(data);
    let _ = check(data, &LIMITS, |leaf| {
        let text = match leaf {
            threat_protection::json::Leaf::Key(text)
            | threat_protection::json::Leaf::Value { text, .. } => text,
        };
        let _ = sql_injection(text.as_bytes());
        let _ = script_injection(text.as_bytes());
        ControlFlow::Continue(())
    });
    let _ = parts::<()>(data, "b", |part| {
        let (name, value) = match part {
            Part::Field { name, value } => (name, value),
            Part::File { name, filename } => (name, filename),
        };
        for text in [name, value] {
            let _ = sql_injection(text);
            let _ = script_injection(text);
        }
        ControlFlow::Continue(())
    });
});
