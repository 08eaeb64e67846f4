//! Every filter's configuration parser and the gateway module's document:
//! the first byte picks the parser, the rest is the configuration. Any
//! bytes get a configuration or an error naming the field, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

use gateway_registry::{check, document, Section};

fn compile(section: Section, bytes: &[u8]) -> Result<(), String> {
    check(section, bytes).map_err(|error| error.to_string())
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
            if let Ok(sections) = document::split(config) {
                for (section, bytes) in sections {
                    let _ = compile(section, &bytes);
                }
            }
        }
    }
});
