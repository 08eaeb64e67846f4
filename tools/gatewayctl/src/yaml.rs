//! Writes a JSON value as YAML for people to read: block style, with
//! `name` and `@type` first in a mapping; a mapping or list of scalars that
//! fits on a line in flow style (`{ address: 127.0.0.1, port_value: 8080 }`);
//! plain scalars where YAML reads them back as the same string; multi-line
//! text (a filter's JSON configuration) as a literal block; a large subtree
//! that occurs twice (the connection manager of two listeners) written once
//! with an anchor and then as its alias.

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt::Write;
use yaml_rust2::Yaml;

/// Keys written before the others (which follow in sorted order); the
/// last ones those of an OpenAPI document and its operations.
const FIRST_KEYS: [&str; 11] = [
    "version",
    "name",
    "@type",
    "match",
    "openapi",
    "info",
    "servers",
    "tags",
    "paths",
    "operationId",
    "summary",
];

/// Flow style up to this many characters.
const FLOW_WIDTH: usize = 72;

/// Subtrees at least this large (as compact JSON) are shared when repeated.
const SHARED_BYTES: usize = 400;

pub fn to_yaml(value: &Value) -> String {
    write(value, true)
}

/// [`to_yaml`] with every subtree written out (no anchors), for documents
/// other tools read.
pub fn to_yaml_without_anchors(value: &Value) -> String {
    write(value, false)
}

fn write(value: &Value, share: bool) -> String {
    let mut counts = HashMap::new();
    if share {
        count_subtrees(value, &mut counts);
    }
    let mut writer = Writer {
        out: String::new(),
        repeated: counts
            .into_iter()
            .filter(|(_, count)| *count > 1)
            .map(|(text, _)| (text, None))
            .collect(),
        anchors: 0,
    };
    match value {
        Value::Object(_) | Value::Array(_) => writer.block(value, 0),
        scalar => {
            writer.out.push_str(&inline(scalar, false));
            writer.out.push('\n');
        }
    }
    writer.out
}

fn count_subtrees(value: &Value, counts: &mut HashMap<String, usize>) {
    let children: Vec<&Value> = match value {
        Value::Object(map) => map.values().collect(),
        Value::Array(items) => items.iter().collect(),
        _ => return,
    };
    let text = value.to_string();
    if value.is_object() && text.len() >= SHARED_BYTES {
        *counts.entry(text).or_default() += 1;
    }
    for child in children {
        count_subtrees(child, counts);
    }
}

struct Writer {
    out: String,
    /// Repeated subtrees (by compact JSON) and their anchor once written.
    repeated: HashMap<String, Option<String>>,
    anchors: usize,
}

fn ordered_keys(map: &Map<String, Value>) -> Vec<&String> {
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

fn is_scalar(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::String(text) => !fits_literal_block(text),
        _ => true,
    }
}

/// `{ a: 1, b: x }` or `[a, b]` for a collection of scalars that fits.
fn flow(value: &Value, indent: usize) -> Option<String> {
    let text = match value {
        Value::Object(map) if !map.is_empty() && map.values().all(is_scalar) => {
            let fields: Vec<String> = ordered_keys(map)
                .into_iter()
                .map(|key| {
                    format!(
                        "{}: {}",
                        string(key, true),
                        inline(&map[key.as_str()], true)
                    )
                })
                .collect();
            format!("{{ {} }}", fields.join(", "))
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(is_scalar) => {
            let items: Vec<String> = items.iter().map(|item| inline(item, true)).collect();
            format!("[{}]", items.join(", "))
        }
        _ => return None,
    };
    (indent + text.len() <= FLOW_WIDTH).then_some(text)
}

impl Writer {
    /// `&anchor` for the first of a repeated subtree, `*anchor` after.
    fn shared(&mut self, value: &Value) -> Option<(String, bool)> {
        if !value.is_object() {
            return None;
        }
        let text = value.to_string();
        let slot = self.repeated.get_mut(&text)?;
        match slot {
            Some(anchor) => Some((anchor.clone(), true)),
            None => {
                self.anchors += 1;
                let base: String = value
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("shared")
                    .rsplit('.')
                    .next()
                    .unwrap_or("shared")
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                let anchor = if self.anchors == 1 {
                    base
                } else {
                    format!("{base}_{}", self.anchors)
                };
                *slot = Some(anchor.clone());
                Some((anchor, false))
            }
        }
    }

    /// A mapping or sequence at `indent`, one entry a line.
    fn block(&mut self, value: &Value, indent: usize) {
        let pad = " ".repeat(indent);
        match value {
            Value::Object(map) => {
                for key in ordered_keys(map) {
                    let _ = write!(self.out, "{pad}{}:", string(key, false));
                    self.child(&map[key.as_str()], indent);
                }
            }
            Value::Array(items) => {
                for item in items {
                    let _ = write!(self.out, "{pad}-");
                    match item {
                        Value::Object(map)
                            if !map.is_empty() && flow(item, indent + 2).is_none() =>
                        {
                            if let Some((anchor, seen)) = self.shared(item) {
                                let sigil = if seen { '*' } else { '&' };
                                let _ = writeln!(self.out, " {sigil}{anchor}");
                                if !seen {
                                    self.block(item, indent + 2);
                                }
                                continue;
                            }
                            // `- first: …` then the other keys under it.
                            for (i, key) in ordered_keys(map).into_iter().enumerate() {
                                if i == 0 {
                                    let _ = write!(self.out, " {}:", string(key, false));
                                } else {
                                    let _ = write!(self.out, "{pad}  {}:", string(key, false));
                                }
                                self.child(&map[key.as_str()], indent + 2);
                            }
                        }
                        _ => self.child(item, indent),
                    }
                }
            }
            scalar => {
                let _ = writeln!(self.out, "{pad}{}", inline(scalar, false));
            }
        }
    }

    /// The value after `key:` (or `-`): inline, flow, a literal block, or a nested block.
    fn child(&mut self, value: &Value, indent: usize) {
        match value {
            Value::String(text) if fits_literal_block(text) => {
                let chomp = if text.ends_with('\n') { "" } else { "-" };
                let _ = writeln!(self.out, " |{chomp}");
                let pad = " ".repeat(indent + 2);
                for line in text.trim_end_matches('\n').split('\n') {
                    if line.is_empty() {
                        self.out.push('\n');
                    } else {
                        let _ = writeln!(self.out, "{pad}{line}");
                    }
                }
            }
            _ if is_scalar(value) => {
                let _ = writeln!(self.out, " {}", inline(value, false));
            }
            _ => {
                if let Some(text) = flow(value, indent + 2) {
                    let _ = writeln!(self.out, " {text}");
                    return;
                }
                if let Some((anchor, seen)) = self.shared(value) {
                    let sigil = if seen { '*' } else { '&' };
                    let _ = writeln!(self.out, " {sigil}{anchor}");
                    if !seen {
                        self.block(value, indent + 2);
                    }
                    return;
                }
                self.out.push('\n');
                let nested = if value.is_array() { indent } else { indent + 2 };
                self.block(value, nested);
            }
        }
    }
}

fn inline(value: &Value, in_flow: bool) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::String(text) => string(text, in_flow),
        Value::Array(items) if items.is_empty() => "[]".into(),
        Value::Object(map) if map.is_empty() => "{}".into(),
        // Not reached from the writer; JSON is valid YAML.
        other => other.to_string(),
    }
}

/// Words YAML 1.1 readers (Envoy's yaml-cpp, Kubernetes) take as booleans
/// or null, in any case.
fn is_yaml_1_1_word(text: &str) -> bool {
    const WORDS: [&str; 14] = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", "nan", ".nan", ".inf",
        "-.inf",
    ];
    WORDS.iter().any(|word| word.eq_ignore_ascii_case(text))
}

/// Text a literal block (`|`) reads back exactly: no control characters
/// but newlines, no leading space on the first line, one final newline at most.
fn fits_literal_block(text: &str) -> bool {
    text.contains('\n')
        && text != "\n"
        && !text.starts_with([' ', '\t', '\n'])
        && !text.ends_with("\n\n")
        && text.chars().all(|c| c == '\n' || !c.is_control())
        && text.lines().all(|line| line.trim_end() == line)
}

/// A string as a plain scalar when YAML reads it back as that string, else
/// double-quoted (a JSON string is a YAML double-quoted scalar). In flow
/// style the flow indicators need quotes too.
fn string(text: &str, in_flow: bool) -> String {
    let plain = !text.is_empty()
        && text.trim() == text
        && !text.starts_with([
            '-', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%',
            '@', '`',
        ])
        && !text.contains(": ")
        && !text.contains(" #")
        && !text.ends_with(':')
        && !(in_flow && text.contains([',', '[', ']', '{', '}']))
        && text.chars().all(|c| !c.is_control())
        && !is_yaml_1_1_word(text)
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
    fn words_yaml_1_1_reads_as_booleans_are_quoted_and_odd_text_reads_back() {
        for word in ["no", "Yes", "ON", "off", "y", "N", "Null", "~"] {
            assert_eq!(string(word, false), format!("\"{word}\""), "{word}");
        }
        round_trip(
            &json!({"texts": ["  x\ny", "a\n\n", "\n", "a\r\nb\n", "tab\there\nx", "ok\nfine\n"]}),
        );
    }

    #[test]
    fn name_and_type_come_first() {
        let text = to_yaml(&json!({"z": 1, "@type": "t", "name": "nm", "a": {"b": [1, 2]}}));
        assert_eq!(text, "name: nm\n\"@type\": t\na:\n  b: [1, 2]\nz: 1\n");
    }

    #[test]
    fn sequences_of_mappings_are_compact_and_small_collections_flow() {
        let long = "x".repeat(80);
        let text =
            to_yaml(&json!({"routes": [{"name": "a", "x": {"y": 1, "z": [long]}}, {"k": "a,b"}]}));
        assert_eq!(
            text,
            format!(
                "routes:\n- name: a\n  x:\n    \"y\": 1\n    z:\n    - {long}\n- {{ k: \"a,b\" }}\n"
            )
        );
        round_trip(&json!({"routes": [{"name": "a", "x": {"y": 1, "z": [long]}}, {"k": "a,b"}]}));
    }

    #[test]
    fn a_large_repeated_subtree_is_written_once_with_an_anchor() {
        let manager = json!({"name": "envoy.filters.network.http_connection_manager",
                             "config": {"text": "y".repeat(500), "list": [1, 2, 3]}});
        let value = json!({"listeners": [
            {"name": "http", "filters": [manager.clone()]},
            {"name": "https", "filters": [manager]},
        ]});
        let text = to_yaml(&value);
        assert_eq!(
            text.matches("&http_connection_manager").count(),
            1,
            "{text}"
        );
        assert_eq!(
            text.matches("*http_connection_manager").count(),
            1,
            "{text}"
        );
        assert_eq!(text.matches(&"y".repeat(500)).count(), 1);
        round_trip(&value);
    }
}
