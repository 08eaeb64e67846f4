//! A value as the backend will read it: percent-decoding (with `+` as a
//! space in query strings and forms) and HTML character references, each
//! in one pass over the value, so decoding costs at most its length.
//! Decoding is lenient, like most backends: an escape that does not decode
//! is kept as sent, and bytes need not be UTF-8 (the detectors read bytes).

use std::borrow::Cow;

/// `%XX` escapes decoded (and `+` as a space when `plus_is_space`); a `%`
/// not followed by two hex digits is kept.
pub fn percent_decode(input: &[u8], plus_is_space: bool) -> Cow<'_, [u8]> {
    let special = |b: &u8| *b == b'%' || (plus_is_space && *b == b'+');
    if !input.iter().any(special) {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut at = 0;
    while at < input.len() {
        let byte = input[at];
        match byte {
            b'%' => match (hex(input.get(at + 1)), hex(input.get(at + 2))) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    at += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            _ => out.push(byte),
        }
        at += 1;
    }
    Cow::Owned(out)
}

fn hex(byte: Option<&u8>) -> Option<u8> {
    let byte = *byte?;
    char::from(byte).to_digit(16).map(|digit| digit as u8)
}

/// The named references a browser reads in markup and scripts that matter
/// to an injection (the full HTML table has 2,000 more, all letters and
/// symbols that change nothing for the detectors).
const NAMED: &[(&[u8], &str)] = &[
    (b"lt", "<"),
    (b"LT", "<"),
    (b"gt", ">"),
    (b"GT", ">"),
    (b"amp", "&"),
    (b"AMP", "&"),
    (b"quot", "\""),
    (b"QUOT", "\""),
    (b"apos", "'"),
    (b"colon", ":"),
    (b"semi", ";"),
    (b"lpar", "("),
    (b"rpar", ")"),
    (b"sol", "/"),
    (b"bsol", "\\"),
    (b"equals", "="),
    (b"num", "#"),
    (b"comma", ","),
    (b"period", "."),
    (b"excl", "!"),
    (b"grave", "`"),
    (b"lsqb", "["),
    (b"rsqb", "]"),
    (b"lcub", "{"),
    (b"rcub", "}"),
    (b"Tab", "\t"),
    (b"NewLine", "\n"),
    (b"nbsp", "\u{a0}"),
];

/// The longest name in [`NAMED`].
const LONGEST_NAME: usize = 7;

/// HTML character references decoded once: numeric ones (`&#60;`,
/// `&#x3c;`, with or without `;`, as browsers read them) and the named
/// ones of [`NAMED`] (with `;`); anything else is kept.
pub fn html_decode(input: &[u8]) -> Cow<'_, [u8]> {
    if !input.contains(&b'&') {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut at = 0;
    while at < input.len() {
        if input[at] != b'&' {
            out.push(input[at]);
            at += 1;
            continue;
        }
        match reference(&input[at + 1..]) {
            Some((text, used)) => {
                let mut utf8 = [0u8; 4];
                out.extend_from_slice(text.encode_utf8(&mut utf8).as_bytes());
                at += 1 + used;
            }
            None => {
                out.push(b'&');
                at += 1;
            }
        }
    }
    Cow::Owned(out)
}

/// The character a reference after `&` stands for, and the bytes it takes.
fn reference(rest: &[u8]) -> Option<(char, usize)> {
    if let Some(number) = rest.strip_prefix(b"#") {
        let (radix, digits_at) = match number.first() {
            Some(b'x' | b'X') => (16, 2),
            _ => (10, 1),
        };
        let digits = rest[digits_at..]
            .iter()
            .take_while(|b| char::from(**b).is_digit(radix))
            .count();
        if digits == 0 {
            return None;
        }
        // Leading zeros and all: browsers read any length, capped here.
        let mut value: u32 = 0;
        for &byte in &rest[digits_at..digits_at + digits] {
            let digit = char::from(byte).to_digit(radix).unwrap_or(0);
            value = value.saturating_mul(radix).saturating_add(digit);
        }
        let character = char::from_u32(value)
            .filter(|c| *c != '\0')
            .unwrap_or('\u{fffd}');
        let mut used = digits_at + digits;
        if rest.get(used) == Some(&b';') {
            used += 1;
        }
        return Some((character, used));
    }
    let name_length = rest
        .iter()
        .take(LONGEST_NAME + 1)
        .take_while(|b| b.is_ascii_alphanumeric())
        .count();
    if rest.get(name_length) != Some(&b';') {
        return None;
    }
    let name = &rest[..name_length];
    NAMED
        .iter()
        .find(|(known, _)| *known == name)
        .and_then(|(_, text)| text.chars().next())
        .map(|character| (character, name_length + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn percent(input: &str, plus: bool) -> String {
        String::from_utf8_lossy(&percent_decode(input.as_bytes(), plus)).into_owned()
    }

    fn html(input: &str) -> String {
        String::from_utf8_lossy(&html_decode(input.as_bytes())).into_owned()
    }

    #[test]
    fn percent_escapes_decode_once_and_bad_ones_stay() {
        assert_eq!(percent("a%27%20OR%201%3D1", false), "a' OR 1=1");
        assert_eq!(percent("a+b%2Bc", true), "a b+c");
        assert_eq!(percent("a+b", false), "a+b");
        assert_eq!(percent("%2527", false), "%27", "once, as the backend does");
        assert_eq!(percent("100%", false), "100%");
        assert_eq!(percent("%zz%4", false), "%zz%4");
        assert_eq!(percent_decode(b"%ff%00", false).as_ref(), b"\xff\x00");
        assert!(matches!(percent_decode(b"plain", true), Cow::Borrowed(_)));
    }

    #[test]
    fn html_references_decode_once_as_browsers_read_them() {
        assert_eq!(html("&lt;script&gt;"), "<script>");
        assert_eq!(html("&#60;&#x3C;&#X3c"), "<<<");
        assert_eq!(
            html("javascript&colon;alert&lpar;1&rpar;"),
            "javascript:alert(1)"
        );
        assert_eq!(html("&#106avascript"), "javascript");
        assert_eq!(html("&amp;lt;"), "&lt;", "once");
        assert_eq!(
            html("Tom &amp Jerry & co; &unknown; &#;"),
            "Tom &amp Jerry & co; &unknown; &#;"
        );
        assert_eq!(html("&#0;&#99999999999;"), "\u{fffd}\u{fffd}");
        assert_eq!(html("&#x00000000003c;"), "<");
        assert!(matches!(html_decode(b"no references"), Cow::Borrowed(_)));
    }

    #[test]
    fn pathological_input_costs_one_pass() {
        let nested = "%25".repeat(100_000);
        assert_eq!(percent(&nested, false), "%".repeat(100_000));
        let references = "&#".repeat(100_000);
        assert_eq!(html(&references), references);
        let digits = format!("&#{};", "9".repeat(100_000));
        assert_eq!(html(&digits), "\u{fffd}");
    }
}
