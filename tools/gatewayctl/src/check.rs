//! Every generated section through its filter's own parser (the same
//! crates the filters are built from), errors reported against the source.

use crate::generate::{locate_error, Generated, Section};
use crate::source::{Source, SourceError};
use gateway_common::config::ConfigError;
use serde_json::Value;

/// Compiles a section's configuration as its filter does when Envoy loads it.
pub use gateway_registry::check as compile_section;

/// Checks every section; the first error of each section, in policy order.
pub fn check(generated: &Generated, source: &Source) -> Vec<SourceError> {
    generated
        .sections
        .iter()
        .filter_map(|(section, config)| {
            let bytes = config.to_string().into_bytes();
            compile_section(*section, &bytes).err().map(|err| {
                let (path, message) = refine(*section, config, err);
                locate_error(generated, source, *section, &path, &message)
            })
        })
        .collect()
}

/// A parser's error made precise for the source: a position in the
/// generated JSON means nothing to the user and is cut; a parameter's
/// constraints (flattened into it, so serde names only the parameter) are
/// read again alone to name the field.
fn refine(section: Section, config: &Value, err: ConfigError) -> (String, String) {
    let message = match err.message.rfind(" at line ") {
        Some(at) if err.message[at..].contains(" column ") => err.message[..at].to_string(),
        _ => err.message.clone(),
    };
    if section != Section::ParamValidation || !err.path.ends_with(']') {
        return (err.path, message);
    }
    let Some(Value::Object(parameter)) = crate::source::value_at(config, &err.path) else {
        return (err.path, message);
    };
    let mut constraints = parameter.clone();
    for field in ["name", "in", "pointer", "required", "default"] {
        constraints.remove(field);
    }
    match serde_path_to_error::deserialize::<_, param_validation::policy::Constraints>(
        Value::Object(constraints),
    ) {
        Err(inner) if inner.path().to_string() != "." => (
            format!("{}.{}", err.path, inner.path()),
            inner.inner().to_string(),
        ),
        _ => (err.path, message),
    }
}
