//! Writes a JSON value as block-style YAML for people to read: `name` and
//! `@type` first in a mapping, plain scalars where YAML reads them back as
//! the same string, multi-line text (a filter's JSON configuration) as a
//! literal block.

use serde_json::Value;
use std::fmt::Write;
use yaml_rust2::Yaml;

/// Keys written before the others (which follow in sorted order).
const FIRST_KEYS: [&str; 4] = ["version", "name", "@type", "match"];

pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(_) | Value::Array(_) => write_block(&mut out, value, 0),
        scalar => {
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
    out
}

fn ordered_keys(map: &serde_json::Map<String, Value>) -> Vec<&String> {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_by_key(|key| {
        (
            FIRST_KEYS
                .iter()
                .position(|first| first == key)
                .unwrap_or(FIRST_KEYS.len()),
            key.as_str(),
        )
    });
    keys
}

fn is_empty_container(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// A mapping or sequence at `indent`, one entry a line.
fn write_block(out: &mut String, value: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for key in ordered_keys(map) {
                let child = &map[key.as_str()];
                let _ = write!(out, "{pad}{}:", string(key));
                write_child(out, child, indent);
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(map) if !map.is_empty() => {
                        // `- first: …` then the other keys under it.
                        let mut first = true;
                        for key in ordered_keys(map) {
                            let child = &map[key.as_str()];
                            if first {
                                let _ = write!(out, "{pad}- {}:", string(key));
                                first = false;
                            } else {
                                let _ = write!(out, "{pad}  {}:", string(key));
                            }
                            write_child(out, child, indent + 2);
                        }
                    }
                    Value::Array(inner) if !inner.is_empty() => {
                        let _ = writeln!(out, "{pad}-");
                        write_block(out, item, indent + 2);
                    }
                    scalar => {
                        let _ = write!(out, "{pad}-");
                        write_child(out, scalar, indent);
                    }
                }
            }
        }
        scalar => {
            let _ = writeln!(out, "{pad}{}", inline(scalar));
        }
    }
}

/// The value after `key:` (or `-`): inline, a literal block, or a nested block.
fn write_child(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::String(text) if text.contains('\n') => {
            let chomp = if text.ends_with('\n') { "" } else { "-" };
            let _ = writeln!(out, " |{chomp}");
            let pad = " ".repeat(indent + 2);
            for line in text.trim_end_matches('\n').split('\n') {
                if line.is_empty() {
                    out.push('\n');
                } else {
                    let _ = writeln!(out, "{pad}{line}");
                }
            }
        }
        _ if is_empty_container(value) || !value.is_object() && !value.is_array() => {
            let _ = writeln!(out, " {}", inline(value));
        }
        Value::Array(_) => {
            out.push('\n');
            write_block(out, value, indent);
        }
        _ => {
            out.push('\n');
            write_block(out, value, indent + 2);
        }
    }
}

fn inline(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::String(text) => string(text),
        Value::Array(items) if items.is_empty() => "[]".into(),
        Value::Object(map) if map.is_empty() => "{}".into(),
        // Not reached from the block writer; JSON is valid YAML.
        other => other.to_string(),
    }
}

/// A string as a plain scalar when YAML reads it back as that string, else
/// double-quoted (a JSON string is a YAML double-quoted scalar).
fn string(text: &str) -> String {
    let plain = !text.is_empty()
        && text.trim() == text
        && !text.starts_with([
            '-', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%',
            '@', '`',
        ])
        && !text.contains(": ")
        && !text.contains(" #")
        && !text.ends_with(':')
        && text.chars().all(|c| !c.is_control())
        && matches!(Yaml::from_str(text), Yaml::String(_));
    if plain {
        text.to_string()
    } else {
        Value::String(text.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Source;
    use serde_json::json;

    fn round_trip(value: &Value) {
        let text = to_yaml(value);
        let read = Source::parse("out.yaml", &text).unwrap_or_else(|err| panic!("{err}\n{text}"));
        assert_eq!(&read.value, value, "{text}");
    }

    #[test]
    fn values_read_back_as_written() {
        round_trip(&json!({
            "name": "a",
            "list": [1, "two", {"name": "x", "b": [true, null]}, [], {}],
            "nested": {"empty": {}, "deep": [[1, 2], ["-x", ": y"]]},
            "tricky": ["true", "12", "", " pad", "a: b", "#c", "x #y", "*", "null", "1.5", "@type", "é"],
            "text": "{\n  \"a\": 1\n}\n",
            "text_without_newline": "line 1\nline 2",
            "@type": "type.googleapis.com/x",
        }));
    }

    #[test]
    fn name_and_type_come_first() {
        let text = to_yaml(&json!({"z": 1, "@type": "t", "name": "n", "a": 2}));
        assert_eq!(text, "name: n\n\"@type\": t\na: 2\nz: 1\n");
    }

    #[test]
    fn sequences_of_mappings_are_compact() {
        let text = to_yaml(&json!({"routes": [{"name": "a", "x": {"y": 1}}]}));
        assert_eq!(text, "routes:\n- name: a\n  x:\n    y: 1\n");
    }
}
