//! threat-protection: injection and oversized-structure attacks stopped at
//! the gateway. Values are checked with libinjection's detectors
//! ([`detect`]); a JSON body is checked against its limits in one pass,
//! without building it ([`json`]).

pub mod detect;
pub mod json;
