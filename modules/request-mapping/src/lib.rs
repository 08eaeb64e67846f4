//! `request_mapping.wasm`: request mapping as a proxy-wasm filter of its own
//! (the policy is `filters/request-mapping`).

gateway_common::wasm_module!(gateway_common::adapter::PolicyRoot::new(
    |configuration, host| {
        gateway_common::hosting::Loaded::<policy::RequestMappingFilter>::boxed(configuration, host)
    }
));
