//! `threat_protection.wasm`: threat protection (injection and oversized
//! structures) as a proxy-wasm filter of its own (the policy is
//! `filters/threat-protection`).

gateway_common::wasm_module!(gateway_common::adapter::PolicyRoot::new(
    |configuration, host| {
        gateway_common::hosting::Loaded::<policy::ThreatProtectionFilter>::boxed(
            configuration,
            host,
        )
    }
));
