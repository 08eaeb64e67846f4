//! `ip_acl.wasm`: IP access control as a proxy-wasm filter of its own (the
//! policy is `filters/ip-acl`).

gateway_common::wasm_module!(gateway_common::adapter::PolicyRoot::new(
    |configuration, host| {
        gateway_common::hosting::Loaded::<policy::IpAclFilter>::boxed(configuration, host)
    }
));
