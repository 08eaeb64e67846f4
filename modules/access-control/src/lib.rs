//! `access_control.wasm`: parameter access control as a proxy-wasm filter
//! of its own (the policy is `filters/access-control`).

gateway_common::wasm_module!(gateway_common::adapter::PolicyRoot::new(
    |configuration, host| {
        gateway_common::hosting::Loaded::<policy::AccessControlFilter>::boxed(configuration, host)
    }
));
