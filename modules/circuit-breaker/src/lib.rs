//! `circuit_breaker.wasm`: the circuit breaker as a proxy-wasm filter of its
//! own (the policy is `filters/circuit-breaker`).

gateway_common::wasm_module!(gateway_common::adapter::PolicyRoot::new(
    |configuration, host| {
        gateway_common::hosting::Loaded::<policy::CircuitBreakerFilter>::boxed(configuration, host)
    }
));
