//! threat-protection: injection and oversized-structure attacks stopped at
//! the gateway. Values are decoded as the backend reads them ([`decode`])
//! and checked with libinjection's detectors ([`detect`]); a JSON body is
//! checked against its limits in one pass, without building it ([`json`]).

pub mod decode;
pub mod detect;
pub mod json;
pub mod policy;
