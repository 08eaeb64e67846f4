//! `throttling.wasm`: quotas as a proxy-wasm filter of its own (the policy
//! is `filters/throttling`).

gateway_common::wasm_module!(gateway_common::adapter::PolicyRoot::new(
    |configuration, host| {
        gateway_common::hosting::Loaded::<policy::ThrottlingFilter>::boxed(configuration, host)
    }
));
