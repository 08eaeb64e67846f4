//! `routing.wasm`: conditional routing as a proxy-wasm filter of its own
//! (the policy is `filters/routing`).

gateway_common::wasm_module!(gateway_common::adapter::PolicyRoot::new(
    |configuration, host| {
        gateway_common::hosting::Loaded::<policy::RoutingFilter>::boxed(configuration, host)
    }
));
