//! `sign_auth.wasm`: Alibaba X-Ca signature authentication as a proxy-wasm
//! filter of its own (the policy is `filters/sign-auth`).

gateway_common::wasm_module!(gateway_common::adapter::PolicyRoot::new(
    |configuration, host| {
        gateway_common::hosting::Loaded::<policy::SignAuthFilter>::boxed(configuration, host)
    }
));
