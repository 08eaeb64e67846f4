//! A JSON body checked in one pass, without building it: its structure
//! against [`JsonLimits`] (depth, entries per object, array length, string
//! and number length), its grammar (RFC 8259, UTF-8), and each string (an
//! object's key or a value) handed decoded to a visitor, which may stop the
//! pass (a finding). Memory: the stack of open containers (bounded by the
//! depth limit) and one buffer for a string with escapes.

use std::ops::ControlFlow;

/// The most of each structure a body may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits {
    /// Containers (objects and arrays) open at once.
    pub depth: u32,
    /// Entries of one object.
    pub entries: u32,
    /// Elements of one array.
    pub array: u32,
    /// Bytes of one string (a key or a value) as sent, escapes included.
    pub string: u32,
    /// Characters of one number.
    pub number: u32,
}

/// Why a body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    Depth,
    Entries,
    Array,
    String,
    Number,
    /// Not JSON: what was wrong, and where (a byte offset).
    Malformed {
        at: usize,
        why: &'static str,
    },
}

impl Violation {
    /// The check's name in metrics and error codes.
    pub fn check(&self) -> &'static str {
        match self {
            Violation::Depth => "json_depth",
            Violation::Entries => "json_entries",
            Violation::Array => "json_array",
            Violation::String => "json_string",
            Violation::Number => "json_number",
            Violation::Malformed { .. } => "json_malformed",
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::Depth => write!(f, "JSON nested too deep"),
            Violation::Entries => write!(f, "a JSON object with too many entries"),
            Violation::Array => write!(f, "a JSON array with too many elements"),
            Violation::String => write!(f, "a JSON string too long"),
            Violation::Number => write!(f, "a JSON number too long"),
            Violation::Malformed { at, why } => write!(f, "not JSON at byte {at}: {why}"),
        }
    }
}

/// A string of the document, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaf<'a> {
    Key(&'a str),
    /// A string value, and the key of the entry it is in (directly, or
    /// through arrays): `None` at the top, or when that key is longer than
    /// [`MAX_NAME`].
    Value {
        text: &'a str,
        name: Option<&'a str>,
    },
}

/// The longest key a value's `name` is kept for.
pub const MAX_NAME: usize = 256;

/// An open container: what it is, its entries or elements after the
/// first, and the key its values are under.
struct Open {
    container: Container,
    count: u32,
    name: Option<String>,
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// The whole body is JSON within the limits, and the visitor saw
    /// every string.
    Whole,
    /// The visitor stopped the pass.
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    Object,
    Array,
}

/// What comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A value (the document, an array element, an entry's value).
    Value,
    /// An array's first element or its end.
    FirstElement,
    /// An object's first key or its end.
    FirstKey,
    /// A key (after a comma).
    Key,
    /// The colon after a key.
    Colon,
    /// A comma or the end of the container (after a value).
    Next,
    /// Nothing but whitespace (after the document's value).
    End,
}

/// Checks `body` against `limits`, showing each string to `visit`.
pub fn check(
    body: &[u8],
    limits: &JsonLimits,
    mut visit: impl FnMut(Leaf<'_>) -> ControlFlow<()>,
) -> Result<Checked, Violation> {
    let mut stack: Vec<Open> = Vec::new();
    let mut expect = Expect::Value;
    let mut scratch = String::new();
    let mut at = 0;
    let malformed = |at: usize, why: &'static str| Violation::Malformed { at, why };
    loop {
        while at < body.len() && matches!(body[at], b' ' | b'\t' | b'\n' | b'\r') {
            at += 1;
        }
        let Some(&byte) = body.get(at) else {
            return match expect {
                Expect::End => Ok(Checked::Whole),
                _ => Err(malformed(at, "the body ends early")),
            };
        };
        match expect {
            Expect::End => return Err(malformed(at, "more after the value")),
            Expect::Colon => {
                if byte != b':' {
                    return Err(malformed(at, "`:` expected after a key"));
                }
                at += 1;
                expect = Expect::Value;
                continue;
            }
            Expect::Next => {
                let Some(open) = stack.last_mut() else {
                    return Err(malformed(at, "more after the value"));
                };
                let container = open.container;
                match (byte, container) {
                    (b',', _) => {
                        open.count += 1;
                        let (limit, violation, next) = match container {
                            Container::Object => (limits.entries, Violation::Entries, Expect::Key),
                            Container::Array => (limits.array, Violation::Array, Expect::Value),
                        };
                        if open.count >= limit {
                            return Err(violation);
                        }
                        expect = next;
                    }
                    (b'}', Container::Object) | (b']', Container::Array) => {
                        stack.pop();
                        expect = after_value(&stack);
                    }
                    _ => return Err(malformed(at, "`,` or the end of the container expected")),
                }
                at += 1;
                continue;
            }
            Expect::FirstKey | Expect::Key => {
                if byte == b'}' && expect == Expect::FirstKey {
                    stack.pop();
                    expect = after_value(&stack);
                    at += 1;
                    continue;
                }
                if byte != b'"' {
                    return Err(malformed(at, "a key (a string) expected"));
                }
                let (text, end) = string(body, at, limits.string, &mut scratch)?;
                if visit(Leaf::Key(text)).is_break() {
                    return Ok(Checked::Stopped);
                }
                if let Some(open) = stack.last_mut() {
                    if text.len() <= MAX_NAME {
                        let name = open.name.get_or_insert_with(String::new);
                        name.clear();
                        name.push_str(text);
                    } else {
                        open.name = None;
                    }
                }
                at = end;
                expect = Expect::Colon;
                continue;
            }
            Expect::FirstElement if byte == b']' => {
                stack.pop();
                expect = after_value(&stack);
                at += 1;
                continue;
            }
            Expect::Value | Expect::FirstElement => {}
        }
        // A value.
        match byte {
            b'{' | b'[' => {
                if stack.len() >= limits.depth as usize {
                    return Err(Violation::Depth);
                }
                let (container, next) = if byte == b'{' {
                    (Container::Object, Expect::FirstKey)
                } else {
                    (Container::Array, Expect::FirstElement)
                };
                // Its values are under the key of the entry it is in.
                let name = stack.last().and_then(|parent| parent.name.clone());
                stack.push(Open {
                    container,
                    count: 0,
                    name,
                });
                expect = next;
                at += 1;
            }
            b'"' => {
                let (text, end) = string(body, at, limits.string, &mut scratch)?;
                let name = stack.last().and_then(|open| open.name.as_deref());
                if visit(Leaf::Value { text, name }).is_break() {
                    return Ok(Checked::Stopped);
                }
                at = end;
                expect = after_value(&stack);
            }
            b'-' | b'0'..=b'9' => {
                at = number(body, at, limits.number)?;
                expect = after_value(&stack);
            }
            b't' | b'f' | b'n' => {
                let word: &[u8] = match byte {
                    b't' => b"true",
                    b'f' => b"false",
                    _ => b"null",
                };
                if !body[at..].starts_with(word) {
                    return Err(malformed(at, "not a value"));
                }
                at += word.len();
                expect = after_value(&stack);
            }
            _ => return Err(malformed(at, "not a value")),
        }
    }
}

/// What follows a value inside `stack`'s innermost container.
fn after_value(stack: &[Open]) -> Expect {
    if stack.is_empty() {
        Expect::End
    } else {
        Expect::Next
    }
}

/// The string starting with the quote at `start`, decoded (borrowed from
/// `body` when it has no escape, else written to `scratch`), and where it
/// ends.
fn string<'a>(
    body: &'a [u8],
    start: usize,
    limit: u32,
    scratch: &'a mut String,
) -> Result<(&'a str, usize), Violation> {
    let malformed = |at: usize, why: &'static str| Violation::Malformed { at, why };
    let first = start + 1;
    let mut at = first;
    let mut escaped = false;
    loop {
        let Some(&byte) = body.get(at) else {
            return Err(malformed(at, "a string that does not end"));
        };
        if at - first > limit as usize {
            return Err(Violation::String);
        }
        match byte {
            b'"' => break,
            b'\\' => {
                escaped = true;
                at += 2;
            }
            0..=0x1f => return Err(malformed(at, "a control character in a string")),
            _ => at += 1,
        }
    }
    if at - first > limit as usize {
        return Err(Violation::String);
    }
    let raw = &body[first..at];
    let end = at + 1;
    let text =
        std::str::from_utf8(raw).map_err(|e| malformed(first + e.valid_up_to(), "not UTF-8"))?;
    if !escaped {
        return Ok((text, end));
    }
    scratch.clear();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            scratch.push(c);
            continue;
        }
        let here = first + i;
        let decoded = match chars.next().map(|(_, c)| c) {
            Some('"') => '"',
            Some('\\') => '\\',
            Some('/') => '/',
            Some('b') => '\u{8}',
            Some('f') => '\u{c}',
            Some('n') => '\n',
            Some('r') => '\r',
            Some('t') => '\t',
            Some('u') => {
                let high = hex4(&mut chars).ok_or(malformed(here, "a bad \\u escape"))?;
                if (0xd800..0xdc00).contains(&high) {
                    // A surrogate pair, or a lone high surrogate (U+FFFD,
                    // as a lenient backend would read it).
                    let rest = chars.as_str();
                    if let Some(low) = rest.strip_prefix("\\u").and_then(low_surrogate) {
                        chars.nth(5);
                        char::from_u32(0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00))
                            .unwrap_or('\u{fffd}')
                    } else {
                        '\u{fffd}'
                    }
                } else {
                    char::from_u32(high).unwrap_or('\u{fffd}')
                }
            }
            _ => return Err(malformed(here, "a bad escape")),
        };
        scratch.push(decoded);
    }
    Ok((scratch.as_str(), end))
}

/// The value of four hex digits.
fn hex4(chars: &mut std::str::CharIndices<'_>) -> Option<u32> {
    let mut value = 0;
    for _ in 0..4 {
        value = value * 16 + chars.next()?.1.to_digit(16)?;
    }
    Some(value)
}

/// A low surrogate's value, from the four hex digits starting `text`.
fn low_surrogate(text: &str) -> Option<u32> {
    let digits = text.get(..4)?;
    let value = u32::from_str_radix(digits, 16).ok()?;
    (digits.bytes().all(|b| b.is_ascii_hexdigit()) && (0xdc00..0xe000).contains(&value))
        .then_some(value)
}

/// Where the number starting at `start` ends (RFC 8259's grammar).
fn number(body: &[u8], start: usize, limit: u32) -> Result<usize, Violation> {
    let malformed = |at: usize| Violation::Malformed {
        at,
        why: "a bad number",
    };
    let mut at = start;
    let digit = |at: usize| body.get(at).is_some_and(u8::is_ascii_digit);
    let digits = |mut at: usize| {
        while body.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        at
    };
    if body.get(at) == Some(&b'-') {
        at += 1;
    }
    match body.get(at) {
        Some(b'0') => at += 1,
        Some(b'1'..=b'9') => at = digits(at),
        _ => return Err(malformed(at)),
    }
    if body.get(at) == Some(&b'.') {
        if !digit(at + 1) {
            return Err(malformed(at));
        }
        at = digits(at + 1);
    }
    if matches!(body.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(body.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        if !digit(at) {
            return Err(malformed(at));
        }
        at = digits(at);
    }
    if at - start > limit as usize {
        return Err(Violation::Number);
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: JsonLimits = JsonLimits {
        depth: 4,
        entries: 3,
        array: 3,
        string: 16,
        number: 6,
    };

    /// The strings seen, as `k:` and `v:` lines, or the violation.
    fn leaves(body: &str) -> Result<Vec<String>, Violation> {
        let mut seen = Vec::new();
        check(body.as_bytes(), &LIMITS, |leaf| {
            seen.push(match leaf {
                Leaf::Key(text) => format!("k:{text}"),
                Leaf::Value { text, name } => format!("v:{text}@{}", name.unwrap_or("-")),
            });
            ControlFlow::Continue(())
        })
        .map(|_| seen)
    }

    #[test]
    fn every_string_is_seen_decoded_in_order() {
        assert_eq!(
            leaves(r#" {"a": ["x\"y", 1, {"b\u00e9": null}], "c": "\ud83d\ude00\n"} "#).unwrap(),
            ["k:a", "v:x\"y@a", "k:bé", "k:c", "v:😀\n@c"]
        );
        assert_eq!(leaves(r#""top""#).unwrap(), ["v:top@-"]);
        assert_eq!(leaves("[]").unwrap(), Vec::<String>::new());
        assert_eq!(leaves("{ }").unwrap(), Vec::<String>::new());
        assert!(leaves("[true, false, null]").unwrap().is_empty());
        assert!(leaves("[-5e+3, 0.25, 12]").unwrap().is_empty());
        // A lone surrogate is read as U+FFFD, as lenient backends do.
        assert_eq!(leaves(r#"["\ud800x"]"#).unwrap(), ["v:\u{fffd}x@-"]);
    }

    #[test]
    fn a_value_is_under_the_key_of_its_entry_through_arrays_only() {
        assert_eq!(
            leaves(r#"{"x": [{"s": "a"}, "b", ["c"]], "y": "d"}"#).unwrap(),
            ["k:x", "k:s", "v:a@s", "v:b@x", "v:c@x", "k:y", "v:d@y"]
        );
        let long = "k".repeat(MAX_NAME + 1);
        let body = format!(r#"{{"{long}": "v"}}"#);
        let mut names = Vec::new();
        let limits = JsonLimits {
            string: 1024,
            ..LIMITS
        };
        let _ = check(body.as_bytes(), &limits, |leaf| {
            if let Leaf::Value { name, .. } = leaf {
                names.push(name.map(str::to_string));
            }
            ControlFlow::Continue(())
        });
        assert_eq!(names, [None]);
    }

    #[test]
    fn each_limit_is_enforced_at_its_bound() {
        assert!(leaves("[[[[1]]]]").is_ok());
        assert_eq!(leaves("[[[[[1]]]]]"), Err(Violation::Depth));
        assert!(leaves(r#"{"a":1,"b":2,"c":3}"#).is_ok());
        assert_eq!(
            leaves(r#"{"a":1,"b":2,"c":3,"d":4}"#),
            Err(Violation::Entries)
        );
        assert!(leaves("[1,2,3]").is_ok());
        assert_eq!(leaves("[1,2,3,4]"), Err(Violation::Array));
        assert!(leaves(r#""0123456789abcdef""#).is_ok());
        assert_eq!(leaves(r#""0123456789abcdefg""#), Err(Violation::String));
        assert_eq!(
            leaves(r#"{"0123456789abcdefg": 1}"#),
            Err(Violation::String)
        );
        assert!(leaves("123456").is_ok());
        assert_eq!(leaves("1234567"), Err(Violation::Number));
        assert_eq!(leaves("-1.5e10"), Err(Violation::Number));
    }

    #[test]
    fn what_is_not_json_is_malformed_with_its_place() {
        let cases = [
            ("", 0),
            ("{", 1),
            (r#"{"a" 1}"#, 5),
            (r#"{"a":1,}"#, 7),
            ("[1,]", 3),
            ("[1 2]", 3),
            ("01", 1),
            ("1.", 1),
            ("1e", 2),
            ("-", 1),
            ("tru", 0),
            ("nul", 0),
            (r#""abc"#, 4),
            ("\"a\u{1}\"", 2),
            (r#""\x""#, 1),
            (r#""\u12g4""#, 1),
            ("[1]]", 3),
            ("{}{}", 2),
            (r#"{1: 2}"#, 1),
            ("]", 0),
        ];
        for (body, at) in cases {
            match leaves(body) {
                Err(Violation::Malformed { at: found, .. }) => assert_eq!(found, at, "{body:?}"),
                other => panic!("{body:?}: {other:?}"),
            }
        }
        let invalid = [b'"', 0xff, b'"'];
        let result = check(&invalid, &LIMITS, |_| ControlFlow::Continue(()));
        assert!(matches!(
            result,
            Err(Violation::Malformed {
                at: 1,
                why: "not UTF-8"
            })
        ));
    }

    #[test]
    fn the_visitor_can_stop_the_pass() {
        let mut seen = 0;
        let result = check(br#"["a", "b", "c"]"#, &LIMITS, |_| {
            seen += 1;
            if seen == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!(result, Ok(Checked::Stopped));
        assert_eq!(seen, 2);
    }

    #[test]
    fn hostile_bodies_are_refused_in_one_bounded_pass() {
        let limits = JsonLimits {
            depth: 64,
            entries: 1000,
            array: 10_000,
            string: 1 << 20,
            number: 64,
        };
        let deep = "[".repeat(100_000);
        assert_eq!(
            check(deep.as_bytes(), &limits, |_| ControlFlow::Continue(())),
            Err(Violation::Depth)
        );
        let mut keys = String::from("{");
        for i in 0..1_000_000 {
            keys.push_str(&format!("\"k{i}\":0,"));
        }
        assert_eq!(
            check(keys.as_bytes(), &limits, |_| ControlFlow::Continue(())),
            Err(Violation::Entries)
        );
        let long = format!("\"{}\"", "a".repeat(50 << 20));
        assert_eq!(
            check(long.as_bytes(), &limits, |_| ControlFlow::Continue(())),
            Err(Violation::String)
        );
        let escapes = format!("\"{}\"", "\\u0041".repeat(100_000));
        let mut length = 0;
        let result = check(escapes.as_bytes(), &limits, |leaf| {
            if let Leaf::Value { text, .. } = leaf {
                length = text.len();
            }
            ControlFlow::Continue(())
        });
        assert_eq!(result, Ok(Checked::Whole));
        assert_eq!(length, 100_000);
    }
}
