//! `log_push.wasm`: log push as a proxy-wasm filter of its own (the policy
//! is `filters/log-push`).

gateway_common::wasm_module!(gateway_common::adapter::PolicyRoot::new(
    |configuration, host| {
        let worker = policy::LogPushWorker::load(configuration, host, |host| {
            policy::steps::Metrics::define(host)
        })?;
        Some(Box::new(worker) as Box<dyn gateway_common::hosting::LoadedPolicy>)
    }
));
