//! libinjection's detectors: SQL injection by the fingerprint of a value's
//! folded SQL tokens (tried as it would read unquoted, and inside single
//! and double quotes, ANSI and MySQL), script injection by an HTML5
//! tokenizer that looks for dangerous tags, attributes and URLs (tried in
//! text and in each kind of attribute value).

use libinjectionrs::detect_xss;
use libinjectionrs::sqli::{SqliFlags, SqliState};

/// How a fingerprint counts that only reading the value as if it stood
/// inside MySQL's double quotes finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoubleQuoted {
    /// As libinjection counts it.
    Any,
    /// Only with four tokens or more: `"like"` or `"or" and "and"` in
    /// prose reads as `sos` or `s&s` there, and no attack of libinjection's
    /// samples needs that reading at all.
    FourTokens,
}

const QUOTE_NONE: u32 = 1;
const QUOTE_SINGLE: u32 = 1 << 1;
const QUOTE_DOUBLE: u32 = 1 << 2;
const ANSI: u32 = 1 << 3;
const MYSQL: u32 = 1 << 4;

/// The fingerprint of a value libinjection reads as SQL injection (its
/// folded token types, e.g. `s&sos`), or `None`: libinjection's
/// `libinjection_is_sqli`, reading the value as it is, then as if after a
/// single quote, then after a double quote.
pub fn sql_injection(value: &[u8]) -> Option<String> {
    sql_injection_with(value, DoubleQuoted::Any)
}

/// [`sql_injection`], counting what only the double-quoted reading finds
/// as `double` says.
pub fn sql_injection_with(value: &[u8], double: DoubleQuoted) -> Option<String> {
    if value.is_empty() || is_one_word(value) {
        return None;
    }
    // One reading: its fingerprint if it is SQL injection, and whether
    // libinjection reads it again as MySQL (`--x` or `#` comments).
    let read = |flags: u32| {
        let mut state = SqliState::new(value, SqliFlags::new(flags));
        let found = state.is_sqli();
        let again_as_mysql = state.stats_comment_ddx != 0 || state.stats_comment_hash != 0;
        (found.then(|| state.fingerprint_string()), again_as_mysql)
    };
    for (quote, present) in [(QUOTE_NONE, true), (QUOTE_SINGLE, value.contains(&b'\''))] {
        if !present {
            continue;
        }
        let (found, again_as_mysql) = read(quote | ANSI);
        if found.is_some() {
            return found;
        }
        if again_as_mysql {
            if let (Some(fingerprint), _) = read(quote | MYSQL) {
                return Some(fingerprint);
            }
        }
    }
    if value.contains(&b'"') {
        if let (Some(fingerprint), _) = read(QUOTE_DOUBLE | MYSQL) {
            if double == DoubleQuoted::Any || fingerprint.len() >= 4 {
                return Some(fingerprint);
            }
        }
    }
    None
}

/// A letter or `_`, then letters, digits and `_` (`field_3`, `select`):
/// libinjection reads one token, and no fingerprint of one token but `X`
/// (which needs a comment) is SQL injection.
fn is_one_word(value: &[u8]) -> bool {
    value
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// Whether libinjection reads `value` as script injection (XSS).
///
/// Its HTML5 tokenizer flags a doctype, a tag or a comment, which begin
/// with `<`, or an attribute's value, which follows `=`: a value with
/// neither is never flagged, and is not read five times over.
pub fn script_injection(value: &[u8]) -> bool {
    if !value.iter().any(|b| matches!(b, b'<' | b'=')) {
        return false;
    }
    detect_xss(value).is_injection()
}

#[cfg(test)]
mod tests {
    use super::*;
    use libinjectionrs::detect_sqli;

    #[test]
    fn classic_payloads_are_found_and_prose_is_not() {
        assert_eq!(sql_injection(b"1' OR '1'='1").as_deref(), Some("s&sos"));
        assert!(sql_injection(b"1 UNION SELECT password FROM users--").is_some());
        assert_eq!(sql_injection(b"O'Brien"), None);
        assert_eq!(sql_injection(b"please select a union rep"), None);
        assert!(script_injection(b"<script>alert(1)</script>"));
        assert!(script_injection(b"<img src=x onerror=alert(1)>"));
        assert!(!script_injection(b"1 < 2 and 3 > 2"));
        assert!(!script_injection("Zoë's café — 東京".as_bytes()));
    }

    /// The shortcut of [`script_injection`] never changes libinjection's
    /// verdict: values of HTML's and URLs' punctuation without `<` and `=`.
    #[test]
    fn without_angle_brackets_or_equals_no_value_is_script_injection() {
        const PIECES: [&[u8]; 24] = [
            b"javascript:",
            b"alert(1)",
            b"\"",
            b"'",
            b"`",
            b" ",
            b"/",
            b">",
            b"onerror",
            b"onload",
            b"style",
            b"href",
            b"src",
            b"&#x3c;",
            b"&lt;",
            b"!--",
            b"[if",
            b"xmlns",
            b"data:",
            b"vbscript:",
            b"\t",
            b"\n",
            b"expression(",
            b"url(",
        ];
        // A fixed pseudo-random walk over the pieces: the same cases each run.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut value = Vec::new();
            for _ in 0..(seed % 9 + 1) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                value.extend_from_slice(PIECES[(seed % PIECES.len() as u64) as usize]);
            }
            assert!(
                !detect_xss(&value).is_injection(),
                "{:?}",
                String::from_utf8_lossy(&value)
            );
        }
    }

    /// The shortcut of [`sql_injection_with`] never changes libinjection's
    /// verdict: every keyword it knows, and words made of its pieces.
    #[test]
    fn one_word_is_never_sql_injection() {
        use libinjectionrs::sqli::sqli_data::SQL_KEYWORDS;
        let mut words = 0;
        for keyword in SQL_KEYWORDS {
            let word = keyword.word.as_bytes();
            for value in [
                word.to_vec(),
                word.to_ascii_lowercase(),
                [word, b"_1"].concat(),
            ] {
                if is_one_word(&value) {
                    words += 1;
                    assert!(!detect_sqli(&value).is_injection(), "{:?}", keyword.word);
                }
            }
        }
        assert!(words > 1000, "{words}");
    }

    #[test]
    fn prose_read_as_double_quoted_sql_counts_only_with_four_tokens() {
        let prose = br#"Where's the "like" button gone?"#;
        assert_eq!(sql_injection(prose).as_deref(), Some("sos"));
        assert_eq!(sql_injection_with(prose, DoubleQuoted::FourTokens), None);
        let attack = br#"admin" or "1"="1"#;
        assert_eq!(
            sql_injection_with(attack, DoubleQuoted::FourTokens).as_deref(),
            Some("s&sos")
        );
    }

    /// Values of the largest body the policy reads, shaped to make a
    /// tokenizer do work per byte again and again. Each must be checked in
    /// one pass: quadratic work here (the published port's word scan, see
    /// vendor/barbacane-libinjection/PATCHES.md) takes minutes, and hangs
    /// the test.
    #[test]
    fn a_megabyte_of_hostile_shapes_is_checked_in_one_pass() {
        const SIZE: usize = 1 << 20;
        let shapes: [&[u8]; 12] = [
            b"a.", b"a`", b"select.", b"1.", b"'a", b"/*", b"--", b"(", b"<a ", b"&#", b"x=\"",
            b"\\'",
        ];
        for shape in shapes {
            let value: Vec<u8> = shape.iter().copied().cycle().take(SIZE).collect();
            let _ = sql_injection(&value);
            let _ = script_injection(&value);
        }
        // One word the size of the body, dots all through it.
        let mut word = vec![b'a'; SIZE];
        for dot in word.iter_mut().step_by(2) {
            *dot = b'.';
        }
        word[0] = b'a';
        assert_eq!(sql_injection(&word), None);
    }
}
