//! libinjection's detectors: SQL injection by the fingerprint of a value's
//! folded SQL tokens (tried as it would read unquoted, and inside single
//! and double quotes, ANSI and MySQL), script injection by an HTML5
//! tokenizer that looks for dangerous tags, attributes and URLs (tried in
//! text and in each kind of attribute value).

use libinjectionrs::{detect_sqli, detect_xss};

/// The fingerprint of a value libinjection reads as SQL injection (its
/// folded token types, e.g. `s&sos`), or `None`.
pub fn sql_injection(value: &[u8]) -> Option<String> {
    let result = detect_sqli(value);
    if !result.is_injection() {
        return None;
    }
    Some(
        result
            .fingerprint
            .map(|fingerprint| fingerprint.as_str().to_string())
            .unwrap_or_default(),
    )
}

/// Whether libinjection reads `value` as script injection (XSS).
pub fn script_injection(value: &[u8]) -> bool {
    detect_xss(value).is_injection()
}

#[cfg(test)]
mod tests {
    use super::*;

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
