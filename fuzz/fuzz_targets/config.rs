//! Every filter's configuration parser and the gateway module's document:
//! the first byte picks the parser, the rest is the configuration. Any
//! bytes get a configuration or an error naming the field, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../filters/gateway/src/config.rs"]
#[allow(dead_code)]
mod gateway_config;

use gateway_config::Section;

fn compile(section: Section, bytes: &[u8]) -> Result<(), String> {
    let outcome = match section {
        Section::SignAuth => sign_auth::compile_config(bytes).map(drop),
        Section::IpAcl => ip_acl::compile_config(bytes).map(drop),
        Section::ExtAuth => ext_auth::compile_config(bytes).map(drop),
        Section::Throttling => throttling::compile_config(bytes).map(drop),
        Section::ParamValidation => param_validation::compile_config(bytes).map(drop),
        Section::RequestMapping => request_mapping::compile_config(bytes).map(drop),
        Section::CircuitBreaker => circuit_breaker::compile_config(bytes).map(drop),
        Section::LogPush => log_push::compile_config(bytes).map(drop),
    };
    outcome.map_err(|error| error.to_string())
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, config)) = data.split_first() else {
        return;
    };
    match Section::ALL.get(usize::from(selector) % (Section::ALL.len() + 1)) {
        Some(&section) => {
            let _ = compile(section, config);
        }
        None => {
            // The module loads the document, then each section by its filter.
            if let Ok(sections) = gateway_config::split(config) {
                for (section, bytes) in sections {
                    let _ = compile(section, &bytes);
                }
            }
        }
    }
});
