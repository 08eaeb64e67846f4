//! `gateway.wasm`: every policy in one proxy-wasm module, one VM and one
//! pass (the module is `filters/gateway`).

gateway_common::wasm_module!(module::GatewayRoot::default());
