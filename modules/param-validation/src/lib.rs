//! `param_validation.wasm`: parameter validation as a proxy-wasm filter of
//! its own (the policy is `filters/param-validation`).

gateway_common::wasm_module!(gateway_common::adapter::PolicyRoot::new(
    |configuration, host| {
        gateway_common::hosting::Loaded::<policy::ParamValidationFilter>::boxed(configuration, host)
    }
));
