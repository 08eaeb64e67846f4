//! A source file (YAML or JSON) read into a JSON value, with the line of
//! every value kept by its path (`apis[3].parameters[1].maximum`), so an
//! error found anywhere later, in the format or in a filter's parser, names
//! the file, the line and the path the user wrote.

use serde::de::DeserializeOwned;
use serde_json::{Map, Number, Value};
use std::collections::HashMap;
use std::fmt;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::Yaml;

/// An error in a source file: `apis.yaml:42: apis[3] (get-order): parameters[1].maximum: …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError {
    pub file: String,
    pub line: Option<usize>,
    /// Where in the document, as the user reads it (empty: the whole file).
    pub path: String,
    pub message: String,
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for SourceError {}

/// A loaded source document.
#[derive(Debug, Clone)]
pub struct Source {
    /// The name errors are reported under (the path as given).
    pub file: String,
    pub value: Value,
    lines: HashMap<String, usize>,
}

impl Source {
    /// Reads YAML (JSON is YAML too): one document whose top level is a mapping.
    pub fn parse(file: &str, text: &str) -> Result<Self, SourceError> {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        let fail = |line, message: String| SourceError {
            file: file.to_string(),
            line: Some(line),
            path: String::new(),
            message,
        };
        parser
            .load(&mut builder, true)
            .map_err(|err| fail(err.marker().line(), err.info().to_string()))?;
        if let Some((line, path, message)) = builder.error {
            return Err(SourceError {
                path,
                ..fail(line, message)
            });
        }
        let value = match builder.root {
            Some(Value::Object(map)) => Value::Object(map),
            Some(_) => {
                return Err(fail(1, "the top level must be a mapping of fields".into()));
            }
            None => {
                return Err(SourceError {
                    line: None,
                    ..fail(0, "the file is empty".into())
                })
            }
        };
        Ok(Self {
            file: file.to_string(),
            value,
            lines: builder.lines,
        })
    }

    /// A document made by the tool (no lines to name): its errors name
    /// `file` and the path.
    pub fn unlocated(file: &str, value: Value) -> Self {
        Self {
            file: file.to_string(),
            value,
            lines: HashMap::new(),
        }
    }

    /// Reads a file from disk.
    pub fn read(file: &str) -> Result<Self, SourceError> {
        let text = std::fs::read_to_string(file).map_err(|err| SourceError {
            file: file.to_string(),
            line: None,
            path: String::new(),
            message: format!("cannot be read: {err}"),
        })?;
        Self::parse(file, &text)
    }

    /// The line a value starts on, or the line of the nearest enclosing
    /// value that has one (a field left out has its parent's line).
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            path = parent_path(path)?;
        }
    }

    /// The value at `path`, if present.
    pub fn get(&self, path: &str) -> Option<&Value> {
        value_at(&self.value, path)
    }

    /// `apis[3].parameters[1]` as the user reads it: `apis[3] (get-order): parameters[1]`
    /// when the list element has a `name`.
    pub fn describe(&self, path: &str) -> String {
        let Some(end) = path.find(']') else {
            return path.to_string();
        };
        let (head, rest) = path.split_at(end + 1);
        let Some(name) = self
            .get(head)
            .and_then(|element| element.get("name"))
            .and_then(Value::as_str)
        else {
            return path.to_string();
        };
        let rest = rest.strip_prefix('.').unwrap_or(rest);
        if rest.is_empty() {
            format!("{head} ({name})")
        } else {
            format!("{head} ({name}): {rest}")
        }
    }

    /// An error at `path` of this document.
    pub fn error(&self, path: &str, message: impl Into<String>) -> SourceError {
        SourceError {
            file: self.file.clone(),
            line: self.line_of(path),
            path: self.describe(path),
            message: message.into(),
        }
    }

    /// Deserializes the part of the document at `path` (all of it when
    /// empty) into `T`, errors named by their path in the document.
    pub fn deserialize<T: DeserializeOwned>(&self, path: &str) -> Result<T, SourceError> {
        let value = self.get(path).cloned().unwrap_or(Value::Null);
        serde_path_to_error::deserialize(value).map_err(|err| {
            let inner = err.path().to_string();
            let inner = if inner == "." { String::new() } else { inner };
            self.error(
                &gateway_common::config::join_path(path, &inner),
                err.inner().to_string(),
            )
        })
    }
}

/// The value at a path (`rules[0].parameters[1]`) of a JSON value.
pub fn value_at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let mut value = value;
    for step in steps(path) {
        value = match step {
            Step::Key(key) => value.get(key)?,
            Step::Index(index) => value.get(index)?,
        };
    }
    Some(value)
}

/// `a.b[2].c` → `a.b[2]` → `a.b` → `a` → `` → None.
pub fn parent_path(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn steps(path: &str) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut indexes) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            steps.push(Step::Key(key));
        }
        while let Some(rest) = indexes.strip_prefix('[') {
            let Some(close) = rest.find(']') else { break };
            if let Ok(index) = rest[..close].parse() {
                steps.push(Step::Index(index));
            }
            indexes = &rest[close + 1..];
        }
    }
    steps
}

enum Frame {
    Sequence {
        path: String,
        anchor: usize,
        items: Vec<Value>,
    },
    Mapping {
        path: String,
        anchor: usize,
        fields: Map<String, Value>,
        /// The key read, waiting for its value.
        key: Option<String>,
    },
}

/// Builds the JSON value from the parser's events, with each value's line.
#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Value>,
    lines: HashMap<String, usize>,
    root: Option<Value>,
    documents: usize,
    /// Values copied by aliases so far.
    aliased: usize,
    /// The first error: line, path and message.
    error: Option<(usize, String, String)>,
}

impl Builder {
    fn fail(&mut self, line: usize, path: String, message: String) {
        if self.error.is_none() {
            self.error = Some((line, path, message));
        }
    }

    /// The path of the value that comes next, or `None` when it is a key.
    fn next_path(&self) -> Option<String> {
        match self.stack.last() {
            None => Some(String::new()),
            Some(Frame::Sequence { path, items, .. }) => Some(format!("{path}[{}]", items.len())),
            Some(Frame::Mapping { path, key, .. }) => key
                .as_ref()
                .map(|key| gateway_common::config::join_path(path, key)),
        }
    }

    /// A complete value: into its parent, or the document's root.
    fn place(&mut self, value: Value, anchor: usize, line: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, value.clone());
        }
        let refused = match self.stack.last_mut() {
            None => {
                self.root = Some(value);
                None
            }
            Some(Frame::Sequence { items, .. }) => {
                items.push(value);
                None
            }
            Some(Frame::Mapping {
                fields, key, path, ..
            }) => match (key.take(), value) {
                (Some(key), value) => {
                    fields.insert(key, value);
                    None
                }
                (None, Value::String(name)) if fields.contains_key(&name) => Some((
                    gateway_common::config::join_path(path, &name),
                    format!("the key `{name}` is given twice"),
                )),
                (None, Value::String(name)) => {
                    *key = Some(name);
                    None
                }
                (None, _) => Some((path.clone(), "a mapping key must be a string".into())),
            },
        };
        if let Some((path, message)) = refused {
            self.fail(line, path, message);
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let line = mark.line();
        let is_value = !matches!(self.stack.last(), Some(Frame::Mapping { key: None, .. }));
        if is_value {
            if let (Some(path), true) = (
                self.next_path(),
                matches!(
                    event,
                    Event::Scalar(..)
                        | Event::Alias(_)
                        | Event::SequenceStart(..)
                        | Event::MappingStart(..)
                ),
            ) {
                self.lines.entry(path).or_insert(line);
            }
        }
        match event {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.fail(
                        line,
                        String::new(),
                        "one YAML document is expected; this is a second".into(),
                    );
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let value = scalar(text, style, tag.as_ref(), is_value);
                self.place(value, anchor, line);
            }
            Event::Alias(anchor) => match self.anchors.get(&anchor) {
                // Aliases copy their value: a file of aliases of aliases
                // would grow without end, so the copies are counted.
                Some(value) => match count_values(value, MAX_ALIAS_VALUES - self.aliased) {
                    Some(count) => {
                        self.aliased += count;
                        let value = value.clone();
                        self.place(value, 0, line);
                    }
                    None => self.fail(
                        line,
                        String::new(),
                        format!("aliases expand to more than {MAX_ALIAS_VALUES} values"),
                    ),
                },
                None => self.fail(line, String::new(), "an alias to an unknown anchor".into()),
            },
            Event::SequenceStart(..) | Event::MappingStart(..) if !is_value => {
                let at = match self.stack.last() {
                    Some(Frame::Mapping { path, .. }) => path.clone(),
                    _ => String::new(),
                };
                self.fail(line, at, "a mapping key must be a string".into());
            }
            Event::SequenceStart(anchor, _) => {
                let path = self.next_path().unwrap_or_default();
                self.stack.push(Frame::Sequence {
                    path,
                    anchor,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(anchor, _) => {
                let path = self.next_path().unwrap_or_default();
                self.stack.push(Frame::Mapping {
                    path,
                    anchor,
                    fields: Map::new(),
                    key: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Sequence { anchor, items, .. }) => {
                    self.place(Value::Array(items), anchor, line)
                }
                Some(Frame::Mapping { anchor, fields, .. }) => {
                    self.place(Value::Object(fields), anchor, line)
                }
                None => {}
            },
            _ => {}
        }
    }
}

/// At most this many values are copied by aliases in one file.
const MAX_ALIAS_VALUES: usize = 100_000;

/// The number of values in `value`, if at most `budget`.
fn count_values(value: &Value, budget: usize) -> Option<usize> {
    let mut count = 0usize;
    let mut pending = vec![value];
    while let Some(next) = pending.pop() {
        count += 1;
        if count > budget {
            return None;
        }
        match next {
            Value::Array(items) => pending.extend(items),
            Value::Object(fields) => pending.extend(fields.values()),
            _ => {}
        }
    }
    Some(count)
}

/// A scalar as JSON: plain scalars resolved by YAML 1.2's core schema
/// (`true`, `12`, `1.5`, `null`), quoted ones and keys kept as text.
fn scalar(text: String, style: TScalarStyle, tag: Option<&Tag>, is_value: bool) -> Value {
    let is_string_tag = tag.is_some_and(|tag| tag.suffix == "str");
    if !is_value || style != TScalarStyle::Plain || is_string_tag {
        return Value::String(text);
    }
    match Yaml::from_str(&text) {
        Yaml::Null => Value::Null,
        Yaml::Boolean(flag) => Value::Bool(flag),
        Yaml::Integer(number) => Value::Number(number.into()),
        Yaml::Real(real) => real
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or(Value::String(text), Value::Number),
        _ => Value::String(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Source {
        Source::parse("apis.yaml", text).unwrap_or_else(|err| panic!("{err}"))
    }

    fn error_of(text: &str) -> String {
        match Source::parse("apis.yaml", text) {
            Ok(source) => panic!("accepted: {:?}", source.value),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn yaml_becomes_json_with_core_schema_scalars() {
        let source = parse(
            "a: 1\nb: 1.5\nc: true\nd: ~\ne: text\nf: '12'\ng: [x, 2]\nh: { i: null }\nj: \"true\"\n",
        );
        assert_eq!(
            source.value,
            json!({"a": 1, "b": 1.5, "c": true, "d": null, "e": "text", "f": "12",
                   "g": ["x", 2], "h": {"i": null}, "j": "true"})
        );
    }

    #[test]
    fn json_is_read_as_well() {
        assert_eq!(
            parse(r#"{"a": [1, {"b": "c"}], "d": false}"#).value,
            json!({"a": [1, {"b": "c"}], "d": false})
        );
    }

    #[test]
    fn every_value_keeps_its_line() {
        let source = parse(
            "apis:\n  - name: a\n    path: /a\n  - name: b\n    parameters:\n      - maximum: 3\n",
        );
        assert_eq!(source.line_of("apis"), Some(2));
        assert_eq!(source.line_of("apis[0].path"), Some(3));
        assert_eq!(source.line_of("apis[1]"), Some(4));
        assert_eq!(source.line_of("apis[1].parameters[0].maximum"), Some(6));
        // A field left out: its parent's line.
        assert_eq!(source.line_of("apis[1].parameters[0].minimum"), Some(6));
        assert_eq!(source.line_of("apis[0].method"), Some(2));
    }

    #[test]
    fn anchors_and_aliases_copy_the_value() {
        let source = parse("base: &b { limit: 3 }\nother: *b\n");
        assert_eq!(source.value["other"], json!({"limit": 3}));
    }

    #[test]
    fn aliases_of_aliases_cannot_grow_without_end() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..9 {
            let previous = if level == 1 {
                "a".to_string()
            } else {
                format!("l{}", level - 1)
            };
            let items = vec![format!("*{previous}"); 10].join(", ");
            text.push_str(&format!("l{level}: &l{level} [{items}]\n"));
        }
        assert_eq!(
            error_of(&text),
            "apis.yaml:5: aliases expand to more than 100000 values"
        );
    }

    #[test]
    fn paths_are_described_with_the_name_of_the_element() {
        let source = parse("apis:\n  - name: get-order\n    parameters: [ { maximum: 1 } ]\n");
        assert_eq!(
            source.describe("apis[0].parameters[0].maximum"),
            "apis[0] (get-order): parameters[0].maximum"
        );
        assert_eq!(source.describe("apis[0]"), "apis[0] (get-order)");
        assert_eq!(source.describe("gateway.admin"), "gateway.admin");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = error_of("a: 1\nb: [1, 2\n");
        assert!(err.starts_with("apis.yaml:"), "{err}");
        assert!(error_of("a: 1\n  b: 2\n").starts_with("apis.yaml:2"));
    }

    #[test]
    fn a_key_given_twice_is_refused() {
        assert_eq!(
            error_of("gateway:\n  admin: x\n  admin: y\n"),
            "apis.yaml:3: gateway.admin: the key `admin` is given twice"
        );
    }

    #[test]
    fn documents_that_are_not_one_mapping_are_refused() {
        assert_eq!(error_of(""), "apis.yaml: the file is empty");
        assert_eq!(
            error_of("- a\n"),
            "apis.yaml:1: the top level must be a mapping of fields"
        );
        assert_eq!(
            error_of("a: 1\n---\nb: 2\n"),
            "apis.yaml:2: one YAML document is expected; this is a second"
        );
        assert_eq!(
            error_of("? [a]\n: 1\n"),
            "apis.yaml:1: a mapping key must be a string"
        );
    }

    #[test]
    fn typed_reading_names_the_path_and_line() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Api {
            name: String,
            limit: u32,
        }
        let source = parse("apis:\n  - name: a\n    limit: 1\n  - name: b\n    limit: ten\n");
        let err = source.deserialize::<Vec<Api>>("apis").unwrap_err();
        assert_eq!(
            err.to_string(),
            "apis.yaml:5: apis[1] (b): limit: invalid type: string \"ten\", expected u32"
        );
    }
}
