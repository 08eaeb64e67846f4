//! `response_cache.wasm`: the response cache as a proxy-wasm filter
//! of its own (the policy is `filters/response-cache`).

gateway_common::wasm_module!(gateway_common::adapter::PolicyRoot::new(
    |configuration, host| {
        gateway_common::hosting::Loaded::<policy::ResponseCacheFilter>::boxed(configuration, host)
    }
));
