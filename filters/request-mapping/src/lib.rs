//! request-mapping: translate frontend requests into what the backend
//! expects. Work in progress: the policy ([`policy`]) is here and tested
//! natively; the proxy-wasm adapter, form/JSON-body locations and the
//! real-Envoy tests follow, so this crate is not built as a `.wasm` yet.

pub mod policy;
