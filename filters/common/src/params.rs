//! Query strings and urlencoded forms: decoding, parsing and rebuilding,
//! shared by sign-auth, param-validation and request-mapping.

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParameterError {
    /// A `%` not followed by two hex digits.
    BadPercentEncoding(String),
    /// The decoded bytes are not UTF-8.
    NotUtf8(String),
}

/// The `key=value` pairs of a query string or urlencoded form, decoded, in
/// order, repeated keys kept. A pair without `=` has an empty value.
pub fn parse_pairs(encoded: &str) -> Result<Vec<(String, String)>, ParameterError> {
    encoded
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((url_decode(key)?, url_decode(value)?))
        })
        .collect()
}

/// [`parse_pairs`] that never fails: a name or value that does not decode
/// (a bad `%` escape, not UTF-8) is kept as sent, and the other pairs are
/// read all the same, so one bad pair cannot hide the others.
pub fn parse_pairs_lenient(encoded: &str) -> Vec<(String, String)> {
    encoded
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (url_decode_lenient(key), url_decode_lenient(value))
        })
        .collect()
}

/// Keeps the raw `key=value` pairs whose decoded key passes `keep`, in
/// order and with their original encoding; `None` when nothing is removed.
pub fn retain_raw_pairs(encoded: &str, keep: impl Fn(&str) -> bool) -> Option<String> {
    let mut removed = false;
    let kept: Vec<&str> = encoded
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            let keep_it = url_decoded(key).map(|k| keep(&k)).unwrap_or(false);
            removed |= !keep_it;
            keep_it
        })
        .collect();
    removed.then(|| kept.join("&"))
}

/// Decodes `%XX` escapes and `+` (a space, as form encoding and Java's
/// `URLEncoder` write it).
pub fn url_decode(text: &str) -> Result<String, ParameterError> {
    url_decoded(text).map(Cow::into_owned)
}

/// [`url_decode`] that never fails: text that does not decode (a bad `%`
/// escape, not UTF-8) is kept as sent.
pub fn url_decode_lenient(text: &str) -> String {
    url_decode(text).unwrap_or_else(|_| text.to_string())
}

/// [`url_decode`] that borrows `text` when there is nothing to decode.
pub fn url_decoded(text: &str) -> Result<Cow<'_, str>, ParameterError> {
    if !text.contains(['%', '+']) {
        return Ok(Cow::Borrowed(text));
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                let Some(byte) = hex else {
                    return Err(ParameterError::BadPercentEncoding(bounded(text)));
                };
                out.push(byte);
                i += 2;
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| ParameterError::NotUtf8(bounded(text)))
}

fn bounded(text: &str) -> String {
    text.chars().take(64).collect()
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for a
/// value written into a query string or a path segment.
pub fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a policy that reads JSON and form bodies does with a body of
/// another content type: passes it unread, or refuses it (415).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtherContentTypes {
    #[default]
    Pass,
    Reject,
}

/// What a request body is, by its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json` or `application/*+json`.
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
    Other,
}

pub fn body_kind(content_type: Option<&str>) -> BodyKind {
    let mime = content_type
        .and_then(|ct| ct.split(';').next())
        .map(str::trim)
        .unwrap_or_default();
    let is = |name: &str| mime.eq_ignore_ascii_case(name);
    let lower = mime.to_ascii_lowercase();
    if is("application/json") || (lower.starts_with("application/") && lower.ends_with("+json")) {
        BodyKind::Json
    } else if is("application/x-www-form-urlencoded") {
        BodyKind::Form
    } else {
        BodyKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_decoded_in_order_with_repeats() {
        assert_eq!(
            parse_pairs("a=1&b=x+y&a=%E5%8C%97&flag&&c=").unwrap(),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("a".into(), "北".into()),
                ("flag".into(), "".into()),
                ("c".into(), "".into()),
            ]
        );
        assert!(parse_pairs("a=%zz").is_err());
    }

    #[test]
    fn lenient_pairs_keep_what_does_not_decode_and_read_the_rest() {
        assert_eq!(
            parse_pairs_lenient("action=delete&x=%zz&%=1&b=%E5%8C%97&c=%FF"),
            vec![
                ("action".into(), "delete".into()),
                ("x".into(), "%zz".into()),
                ("%".into(), "1".into()),
                ("b".into(), "北".into()),
                ("c".into(), "%FF".into()),
            ]
        );
    }

    #[test]
    fn retaining_keeps_the_original_encoding() {
        assert_eq!(
            retain_raw_pairs("a=%41&x=1&b=2", |k| k != "x"),
            Some("a=%41&b=2".into())
        );
        assert_eq!(retain_raw_pairs("a=1", |_| true), None);
        assert_eq!(retain_raw_pairs("x=1", |_| false), Some(String::new()));
        assert_eq!(retain_raw_pairs("%zz=1&a=1", |_| true), Some("a=1".into()));
    }

    #[test]
    fn components_encode_all_but_unreserved() {
        assert_eq!(encode_component("a b/c?d=é~"), "a%20b%2Fc%3Fd%3D%C3%A9~");
        assert_eq!(url_decode(&encode_component("x/..&=%")).unwrap(), "x/..&=%");
    }

    #[test]
    fn malformed_encodings_are_errors() {
        for bad in ["%", "%4", "%zz", "%ff"] {
            assert!(url_decode(bad).is_err(), "{bad}");
        }
        assert_eq!(url_decode("a+b%20c").unwrap(), "a b c");
    }

    #[test]
    fn body_kinds_follow_the_media_type_only() {
        assert_eq!(
            body_kind(Some("Application/JSON; charset=utf-8")),
            BodyKind::Json
        );
        assert_eq!(
            body_kind(Some("application/merge-patch+json")),
            BodyKind::Json
        );
        assert_eq!(
            body_kind(Some("application/x-www-form-urlencoded;charset=UTF-8")),
            BodyKind::Form
        );
        assert_eq!(body_kind(Some("text/plain")), BodyKind::Other);
        assert_eq!(body_kind(None), BodyKind::Other);
    }
}
