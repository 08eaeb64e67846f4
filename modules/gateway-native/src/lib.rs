//! `libgateway.so`: every policy in one Envoy dynamic module, on the native
//! host (the module is `filters/gateway`, the host `filters/native-host`).
//! Built with the `native` profile: `cargo build --profile native -p
//! gateway-native`.

static MODULE: module::GatewayModule = module::GatewayModule;
native_host::module!(MODULE);
