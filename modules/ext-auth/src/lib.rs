//! `ext_auth.wasm`: the third-party authorizer as a proxy-wasm filter of its
//! own (the policy is `filters/ext-auth`).

gateway_common::wasm_module!(gateway_common::adapter::PolicyRoot::new(
    |configuration, host| {
        gateway_common::hosting::Loaded::<policy::ExtAuthFilter>::boxed(configuration, host)
    }
));
