//! `error_mapping.wasm`: error-code mapping as a proxy-wasm filter
//! of its own (the policy is `filters/error-mapping`).

gateway_common::wasm_module!(gateway_common::adapter::PolicyRoot::new(
    |configuration, host| {
        gateway_common::hosting::Loaded::<policy::ErrorMappingFilter>::boxed(configuration, host)
    }
));
