//! Masking what a record carries before it leaves Envoy: named headers and
//! query parameters, and values that look like personal data (e-mail
//! addresses, phone numbers, payment card numbers, Chinese resident ID
//! numbers) wherever they appear in the recorded text (path, query, user
//! agent, user, extra headers). A value is masked fully, down to its last
//! four characters, or into a keyed digest, so masked values can still be
//! joined across records without being readable.

use crate::record::Record;
use gateway_common::config::ConfigError;
use gateway_common::params::{encode_component, url_decode, url_decode_lenient, url_decoded};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// What a masked value becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    /// `****`.
    Full,
    /// `****` and the last four characters (`****1234`); shorter values
    /// are masked fully.
    Last4,
    /// `~` and 16 hex digits of HMAC-SHA256 under `digest_key`: the same
    /// value always masks the same, so records can still be joined.
    Digest,
}

/// Values recognised by their shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Email,
    /// A phone number: `+` and 8 to 15 digits (E.164), 11 digits starting
    /// with 1 (a Chinese mobile number) or 10 to 12 starting with 0 (a
    /// number with its area code); single spaces, `-` or `.` between digits.
    Phone,
    /// 13 to 19 digits passing the Luhn check, single spaces or `-`
    /// between digits.
    Card,
    /// A Chinese resident identity number: 17 digits and a check
    /// character (digit or `X`) that is right (GB 11643).
    IdNumber,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    pub kind: Kind,
    #[serde(rename = "as", default = "Style::full")]
    pub style: Style,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskConfig {
    /// Recorded extra headers (of `headers`) whose values are masked.
    #[serde(default)]
    pub headers: BTreeMap<String, Style>,
    /// Query parameters whose values are masked, when the query is recorded.
    #[serde(default)]
    pub query: BTreeMap<String, Style>,
    /// Values masked wherever they appear in the recorded text.
    #[serde(default)]
    pub patterns: Vec<PatternConfig>,
    /// The key of `digest` (at least 16 bytes).
    #[serde(default)]
    pub digest_key: Option<String>,
}

impl Style {
    fn full() -> Self {
        Style::Full
    }
}

const MASK: &str = "****";

/// The compiled masking of one configuration.
#[derive(Debug, Clone, Default)]
pub struct Masking {
    /// By the position of the header in the record's extra headers.
    headers: Vec<Option<Style>>,
    /// Lower-case parameter name → style.
    query: Vec<(String, Style)>,
    patterns: Vec<(Kind, Style)>,
    key: Option<Vec<u8>>,
}

impl Masking {
    /// `recorded_headers`: the record's extra headers, in order (lower case).
    pub fn compile(config: &MaskConfig, recorded_headers: &[String]) -> Result<Self, ConfigError> {
        let mut headers = vec![None; recorded_headers.len()];
        for (name, style) in &config.headers {
            let lower = name.to_ascii_lowercase();
            let Some(position) = recorded_headers.iter().position(|h| *h == lower) else {
                return Err(ConfigError::new(
                    format!("mask.headers.{name}"),
                    "not a recorded header: add it to `headers`",
                ));
            };
            headers[position] = Some(*style);
        }
        let styles = config
            .headers
            .values()
            .chain(config.query.values())
            .chain(config.patterns.iter().map(|p| &p.style));
        let key = match (
            &config.digest_key,
            styles.clone().any(|s| *s == Style::Digest),
        ) {
            (Some(key), _) if key.len() < 16 => {
                return Err(ConfigError::new(
                    "mask.digest_key",
                    "at least 16 bytes: a short key lets anyone recompute the digests",
                ))
            }
            (Some(key), _) => Some(key.as_bytes().to_vec()),
            (None, true) => {
                return Err(ConfigError::new(
                    "mask.digest_key",
                    "`digest` needs a key (16 bytes or more), so masked values cannot be \
                     recomputed from guesses",
                ))
            }
            (None, false) => None,
        };
        Ok(Self {
            headers,
            query: config
                .query
                .iter()
                .map(|(name, style)| (name.to_ascii_lowercase(), *style))
                .collect(),
            patterns: config.patterns.iter().map(|p| (p.kind, p.style)).collect(),
            key,
        })
    }

    /// Nothing is masked.
    pub fn is_empty(&self) -> bool {
        self.headers.iter().all(Option::is_none)
            && self.query.is_empty()
            && self.patterns.is_empty()
    }

    /// Masks the record's text fields in place.
    pub fn apply(&self, record: &mut Record) {
        if self.is_empty() {
            return;
        }
        for (value, style) in record.headers.iter_mut().zip(&self.headers) {
            if let (Some(style), false) = (style, value.is_empty()) {
                *value = self.mask(value, *style);
            }
        }
        if !record.query.is_empty() {
            record.query = self.mask_query(&record.query);
        }
        if self.patterns.is_empty() {
            return;
        }
        if let Some(masked) = self.mask_path(&record.path) {
            record.path = masked;
        }
        let fields = [&mut record.user_agent, &mut record.user];
        for field in fields.into_iter().chain(record.headers.iter_mut()) {
            if let Cow::Owned(masked) = self.mask_patterns(field) {
                *field = masked;
            }
        }
    }

    /// The path with each segment's patterns masked as the backend decodes
    /// it (`%40`, `%2B`…), the masked segment encoded again; `None` (and
    /// nothing allocated) when nothing is found, as for most records.
    fn mask_path(&self, path: &str) -> Option<String> {
        let mut masked: Option<String> = None;
        for (index, segment) in path.split('/').enumerate() {
            let found = self.mask_encoded(segment);
            if masked.is_none() && found.is_none() {
                continue;
            }
            let out = masked.get_or_insert_with(|| {
                // The segments before this one, unchanged.
                path.split('/').take(index).collect::<Vec<_>>().join("/")
            });
            if index > 0 {
                out.push('/');
            }
            out.push_str(found.as_deref().unwrap_or(segment));
        }
        masked
    }

    /// An encoded component with its patterns masked, decoded first;
    /// `None` when nothing is found.
    fn mask_encoded(&self, component: &str) -> Option<String> {
        let decoded = url_decoded(component).unwrap_or(Cow::Borrowed(component));
        match self.mask_patterns(&decoded) {
            Cow::Owned(masked) => Some(url_component(&masked)),
            Cow::Borrowed(_) => None,
        }
    }

    /// A value in `style`.
    pub fn mask(&self, value: &str, style: Style) -> String {
        match style {
            Style::Full => MASK.to_string(),
            Style::Last4 => {
                let count = value.chars().count();
                if count <= 4 {
                    return MASK.to_string();
                }
                let last: String = value.chars().skip(count - 4).collect();
                format!("{MASK}{last}")
            }
            Style::Digest => {
                let Some(key) = &self.key else {
                    return MASK.to_string();
                };
                let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
                    return MASK.to_string();
                };
                mac.update(value.as_bytes());
                let digest = mac.finalize().into_bytes();
                let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
                format!("~{hex}")
            }
        }
    }

    /// The query with the named parameters' values masked (decoded,
    /// masked, encoded again), every other pair as sent.
    fn mask_query(&self, query: &str) -> String {
        let mut out = String::with_capacity(query.len());
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded_name = url_decode(name).unwrap_or_default().to_ascii_lowercase();
            let style = self
                .query
                .iter()
                .find(|(n, _)| *n == decoded_name)
                .map(|(_, s)| *s);
            let masked = match style {
                Some(style) if !value.is_empty() => {
                    // A value that does not decode is masked as it was sent.
                    let plain = url_decode_lenient(value);
                    Some(url_component(&self.mask(&plain, style)))
                }
                _ => self.mask_encoded(value),
            };
            match masked {
                Some(masked) => {
                    out.push_str(name);
                    if pair.contains('=') {
                        out.push('=');
                    }
                    out.push_str(&masked);
                }
                None => out.push_str(pair),
            }
        }
        out
    }

    /// `text` with every value of a configured kind masked. Where found
    /// values overlap, their union is masked, in the style of the kind
    /// listed first.
    pub fn mask_patterns<'t>(&self, text: &'t str) -> Cow<'t, str> {
        // (start, end, the pattern's position in the configuration)
        let mut found: Vec<(usize, usize, usize)> = Vec::new();
        for (priority, (kind, _)) in self.patterns.iter().enumerate() {
            let spans = match kind {
                Kind::Email => emails(text),
                Kind::Phone | Kind::Card | Kind::IdNumber => numbers(text, *kind),
            };
            found.extend(spans.into_iter().map(|(start, end)| (start, end, priority)));
        }
        if found.is_empty() {
            return Cow::Borrowed(text);
        }
        found.sort_unstable();
        let mut merged: Vec<(usize, usize, usize)> = Vec::with_capacity(found.len());
        for (start, end, priority) in found {
            match merged.last_mut() {
                Some(last) if start < last.1 => {
                    last.1 = last.1.max(end);
                    last.2 = last.2.min(priority);
                }
                _ => merged.push((start, end, priority)),
            }
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (start, end, priority) in merged {
            let (kind, style) = self.patterns[priority];
            out.push_str(&text[at..start]);
            let value = &text[start..end];
            // An address is one whatever its case.
            if kind == Kind::Email && style == Style::Digest {
                out.push_str(&self.mask(&value.to_ascii_lowercase(), style));
            } else {
                out.push_str(&self.mask(value, style));
            }
            at = end;
        }
        out.push_str(&text[at..]);
        Cow::Owned(out)
    }
}

/// A masked value in a URL: percent-encoded but for `*`, which paths and
/// queries take as it is (`****1234`, `~3f…` stay readable).
fn url_component(text: &str) -> String {
    encode_component(text).replace("%2A", "*")
}

/// Byte spans of e-mail addresses: a local part of letters, digits and
/// `._%+-`, `@` (or `%40`), a domain of labels with at least one dot.
fn emails(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let local = |b: u8| b.is_ascii_alphanumeric() || b"._%+-".contains(&b);
    let domain = |b: u8| b.is_ascii_alphanumeric() || b".-".contains(&b);
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let at_len = if bytes[i] == b'@' {
            1
        } else if bytes[i..].starts_with(b"%40") {
            3
        } else {
            i += 1;
            continue;
        };
        // Local parts are at most 64 bytes and domains 255 (RFC 5321):
        // the scans are bounded, so a text of many `@` stays linear.
        let mut start = i;
        while start > 0 && i - start < 64 && local(bytes[start - 1]) {
            start -= 1;
        }
        let mut end = i + at_len;
        while end < bytes.len() && end - (i + at_len) < 255 && domain(bytes[end]) {
            end += 1;
        }
        while end > i + at_len && bytes[end - 1] == b'.' {
            end -= 1;
        }
        let host = &text[i + at_len..end];
        let labels_ok = host.contains('.')
            && host
                .split('.')
                .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'))
            && host
                .rsplit('.')
                .next()
                .is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()));
        if start < i && labels_ok {
            spans.push((start, end));
            i = end;
        } else {
            i += at_len;
        }
    }
    spans
}

/// Byte spans of runs of digits (with single separators between digits)
/// that are a number of `kind`.
fn numbers(text: &str, kind: Kind) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let separators: &[u8] = match kind {
        Kind::Phone => b" -.",
        Kind::Card => b" -",
        _ => b"",
    };
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let plus = kind == Kind::Phone && bytes[i] == b'+';
        let first = if plus { i + 1 } else { i };
        let starts_run = bytes.get(first).is_some_and(u8::is_ascii_digit)
            && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric());
        if !starts_run {
            i += 1;
            continue;
        }
        let mut digits = Vec::new();
        let mut end = first;
        while end < bytes.len() {
            let b = bytes[end];
            if b.is_ascii_digit() {
                digits.push(b - b'0');
                end += 1;
            } else if separators.contains(&b) && bytes.get(end + 1).is_some_and(u8::is_ascii_digit)
            {
                end += 1;
            } else {
                break;
            }
        }
        let mut check_x = false;
        if kind == Kind::IdNumber
            && digits.len() == 17
            && bytes.get(end).is_some_and(|b| *b == b'X' || *b == b'x')
        {
            check_x = true;
            end += 1;
        }
        // A run glued to letters (`abc123`, `123abc`) is an identifier.
        let free_end = bytes.get(end).is_none_or(|b| !b.is_ascii_alphanumeric());
        let is_kind = free_end
            && match kind {
                Kind::Phone if plus => (8..=15).contains(&digits.len()),
                Kind::Phone => match digits.first() {
                    Some(1) => digits.len() == 11,
                    Some(0) => (10..=12).contains(&digits.len()),
                    _ => false,
                },
                Kind::Card => (13..=19).contains(&digits.len()) && luhn(&digits),
                Kind::IdNumber => id_number(&digits, check_x),
                Kind::Email => false,
            };
        if is_kind {
            spans.push((i, end));
        }
        i = end.max(i + 1);
    }
    spans
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

/// GB 11643: 17 digits weighted, the check character from the sum mod 11.
fn id_number(digits: &[u8], check_x: bool) -> bool {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: [u8; 11] = *b"10X98765432";
    let (body, check) = match (digits.len(), check_x) {
        (17, true) => (digits, b'X'),
        (18, false) => (&digits[..17], digits[17] + b'0'),
        _ => return false,
    };
    let sum: u32 = body
        .iter()
        .zip(WEIGHTS)
        .map(|(&d, w)| u32::from(d) * w)
        .sum();
    CHECK[(sum % 11) as usize] == check
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masking(config: serde_json::Value, headers: &[&str]) -> Masking {
        let config: MaskConfig = serde_json::from_value(config).unwrap();
        let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
        Masking::compile(&config, &headers).unwrap()
    }

    fn all_kinds(style: &str) -> Masking {
        masking(
            serde_json::json!({"patterns": [
                {"kind": "id_number", "as": style}, {"kind": "card", "as": style},
                {"kind": "email", "as": style}, {"kind": "phone", "as": style}
            ], "digest_key": "0123456789abcdef"}),
            &[],
        )
    }

    #[test]
    fn each_kind_is_found_where_it_stands() {
        let m = all_kinds("full");
        for (text, expected) in [
            (
                "/users/alice.b+tag@example.co.uk/orders",
                "/users/****/orders",
            ),
            ("to=bob%40mail.example.com&x=1", "to=****&x=1"),
            ("call +86 138 0013 8000 now", "call **** now"),
            ("tel 010-6552-9988.", "tel ****."),
            ("card 4111 1111 1111 1111 ok", "card **** ok"),
            ("card=5500-0000-0000-0004", "card=****"),
            ("id 11010519491231002X here", "id **** here"),
            ("id=440301199001011234", "id=****"),
        ] {
            assert_eq!(m.mask_patterns(text), expected, "{text}");
        }
    }

    #[test]
    fn values_are_found_as_the_backend_decodes_the_path_and_query() {
        let m = all_kinds("full");
        let mut record = Record {
            path: "/u/alice%40example.com/%2B8613800138000".into(),
            query: "cards=4111111111111111%2C5500000000000004&p=138%200013%208000&x=1".into(),
            ..Record::default()
        };
        m.apply(&mut record);
        assert_eq!(record.path, "/u/****/****");
        assert_eq!(record.query, "cards=****%2C****&p=****&x=1");
    }

    #[test]
    fn overlapping_values_are_masked_whole_and_addresses_digest_in_any_case() {
        let m = masking(
            serde_json::json!({"patterns": [{"kind": "phone"}, {"kind": "email"}]}),
            &[],
        );
        assert_eq!(m.mask_patterns("john.13800138000@example.com"), "****");
        let d = all_kinds("digest");
        assert_eq!(
            d.mask_patterns("Alice@Example.COM"),
            d.mask_patterns("alice@example.com")
        );
    }

    #[test]
    fn an_address_is_looked_for_at_most_64_bytes_back() {
        // What keeps a text of many `@` (or `%40`) linear to scan.
        let m = all_kinds("full");
        let long = format!("{}@example.com", "a".repeat(100));
        assert_eq!(m.mask_patterns(&long), format!("{}****", "a".repeat(36)));
        let hostile = "%40".repeat(2_000);
        assert_eq!(m.mask_patterns(&hostile), hostile);
    }

    #[test]
    fn lookalikes_are_left_alone() {
        let m = all_kinds("full");
        for text in [
            "/orders/12345",             // too short for a phone
            "/reports/2026-12-06/10:30", // a date, not a phone
            "n=23456789012",             // 11 digits not starting with 1
            "v=4111111111111112x",       // glued to a letter
            "a@b",                       // no domain
            "user@localhost",            // no dot
            "x@example.c0m",             // not a top-level domain
            "/items/sku123456789",       // an identifier
            "2026-12-06T19:17:52Z",      // a time stamp: short runs
            "ratio 1.5 of 2",
        ] {
            assert_eq!(m.mask_patterns(text), text, "{text}");
        }
        // A 16-digit run failing Luhn is a phone-length miss but no card.
        let cards = masking(serde_json::json!({"patterns": [{"kind": "card"}]}), &[]);
        assert_eq!(
            cards.mask_patterns("n=4111111111111112"),
            "n=4111111111111112"
        );
        // An 18-digit run with a wrong check digit is no ID number.
        let ids = masking(
            serde_json::json!({"patterns": [{"kind": "id_number"}]}),
            &[],
        );
        assert_eq!(
            ids.mask_patterns("110105194912310022"),
            "110105194912310022"
        );
    }

    #[test]
    fn styles_mask_fully_keep_the_last_four_or_digest_under_the_key() {
        let m = all_kinds("last4");
        assert_eq!(m.mask_patterns("4111 1111 1111 1111"), "****1111");
        assert_eq!(m.mask("abc", Style::Last4), "****");
        let d = all_kinds("digest");
        let one = d.mask_patterns("alice@example.com");
        assert!(one.starts_with('~') && one.len() == 17, "{one}");
        assert_eq!(d.mask_patterns("alice@example.com"), one, "stable");
        assert_ne!(d.mask_patterns("bob@example.com"), one);
        let other_key = masking(
            serde_json::json!({"patterns": [{"kind": "email", "as": "digest"}],
                               "digest_key": "another key of 16+ bytes"}),
            &[],
        );
        assert_ne!(other_key.mask_patterns("alice@example.com"), one);
    }

    #[test]
    fn named_headers_and_query_parameters_are_masked_in_the_record() {
        let m = masking(
            serde_json::json!({
                "headers": {"X-Phone": "last4"},
                "query": {"card": "full", "email": "digest"},
                "digest_key": "0123456789abcdef"
            }),
            &["x-tenant", "x-phone"],
        );
        let mut record = Record {
            query: "card=4111111111111111&email=a%40b.cn&page=2&card".into(),
            headers: vec!["acme".into(), "13800138000".into()],
            ..Record::default()
        };
        m.apply(&mut record);
        assert_eq!(record.headers, ["acme", "****8000"]);
        let digest = m.mask("a@b.cn", Style::Digest);
        assert_eq!(
            record.query,
            format!("card=****&email={digest}&page=2&card")
        );
    }

    #[test]
    fn mistakes_are_refused_with_the_field() {
        for (config, headers, path, reason) in [
            (
                serde_json::json!({"headers": {"x-phone": "full"}}),
                vec![],
                "mask.headers.x-phone",
                "not a recorded header",
            ),
            (
                serde_json::json!({"query": {"q": "digest"}}),
                vec![],
                "mask.digest_key",
                "needs a key",
            ),
            (
                serde_json::json!({"patterns": [{"kind": "email"}], "digest_key": "short"}),
                vec![],
                "mask.digest_key",
                "16 bytes",
            ),
        ] {
            let config: MaskConfig = serde_json::from_value(config).unwrap();
            let err = Masking::compile(&config, &headers).unwrap_err();
            assert_eq!(err.path, path);
            assert!(err.message.contains(reason), "{err}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_masked_without_panicking_and_keeps_what_is_not_found(text in "\\PC{0,80}") {
            let m = all_kinds("last4");
            let masked = m.mask_patterns(&text);
            if !masked.contains(MASK) {
                proptest::prop_assert_eq!(masked.as_ref(), text.as_str());
            }
        }
    }
}
