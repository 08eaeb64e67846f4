//! A header map as the proxy-wasm host serializes it, fetched with one host
//! call and read in place.
//!
//! Every value the host hands a Wasm module costs a call back into the VM
//! to allocate its buffer, and that round trip, not the lookup, is what a
//! header read costs (`make bench`: about 10k instructions per present
//! header, 13k for the whole map at once). So a callback that reads more
//! than one header fetches the map once ([`crate::host::ProxyWasmHost`]
//! does, inside a [`crate::host::CallbackScope`]) and looks names up here.
//!
//! Serialized form: `u32` pair count, then a `u32` name length and a `u32`
//! value length per pair, then each name and value followed by a NUL; all
//! little-endian. Values are bytes: a client may send any octet but
//! NUL/CR/LF in a header value, so text accessors decode lossily instead of
//! failing (the SDK's own getters panic on non-UTF-8, which aborts the VM).

use std::borrow::Cow;
use std::ops::Range;

/// One header map; names and values borrowed from the host's buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMap {
    bytes: Vec<u8>,
    pairs: Vec<(Range<usize>, Range<usize>)>,
}

impl HeaderMap {
    /// Reads the host's serialization; a malformed buffer reads as the
    /// pairs before the fault (none when the header is short).
    pub fn parse(bytes: Vec<u8>) -> Self {
        let pairs = index_pairs(&bytes);
        Self { bytes, pairs }
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Every (name, value) in the order the host gave them.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.pairs
            .iter()
            .map(|(name, value)| (&self.bytes[name.clone()], &self.bytes[value.clone()]))
    }

    /// The values of `name` (ASCII case-insensitive), in order.
    pub fn values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.iter()
            .filter(move |(key, _)| key.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| value)
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.values(name).next()
    }

    /// The first value of `name` as text (invalid UTF-8 replaced).
    pub fn get_text(&self, name: &str) -> Option<Cow<'_, str>> {
        self.get(name).map(String::from_utf8_lossy)
    }

    /// Every pair as owned text (invalid UTF-8 replaced), for assertions.
    #[cfg(test)]
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(name, value)| (text(name), text(value)))
            .collect()
    }

    /// Mirrors a write the host was asked to make: every value of `name`
    /// replaced by `value` (appended last), or removed (`None`), as Envoy's
    /// replace and remove calls do.
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        let bytes = &self.bytes;
        self.pairs
            .retain(|(key, _)| !bytes[key.clone()].eq_ignore_ascii_case(name.as_bytes()));
        if let Some(value) = value {
            let name_start = self.bytes.len();
            self.bytes
                .extend_from_slice(name.to_ascii_lowercase().as_bytes());
            let value_start = self.bytes.len();
            self.bytes.extend_from_slice(value.as_bytes());
            self.pairs
                .push((name_start..value_start, value_start..self.bytes.len()));
        }
    }

    /// The host's serialization of `pairs`, for tests and fakes.
    pub fn serialize<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&u32_len(pairs.len()).to_le_bytes());
        for (name, value) in pairs {
            out.extend_from_slice(&u32_len(name.as_ref().len()).to_le_bytes());
            out.extend_from_slice(&u32_len(value.as_ref().len()).to_le_bytes());
        }
        for (name, value) in pairs {
            out.extend_from_slice(name.as_ref());
            out.push(0);
            out.extend_from_slice(value.as_ref());
            out.push(0);
        }
        out
    }
}

/// Owned text from header bytes (invalid UTF-8 replaced).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn u32_len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(word.try_into().ok()?) as usize)
}

fn index_pairs(bytes: &[u8]) -> Vec<(Range<usize>, Range<usize>)> {
    let Some(count) = read_u32(bytes, 0) else {
        return Vec::new();
    };
    // The lengths of every pair come first; a count they do not fit is a lie.
    let Some(mut data) = count
        .checked_mul(8)
        .and_then(|lengths| lengths.checked_add(4))
        .filter(|end| *end <= bytes.len())
    else {
        return Vec::new();
    };
    let mut pairs = Vec::with_capacity(count);
    for n in 0..count {
        let (Some(name_len), Some(value_len)) =
            (read_u32(bytes, 4 + n * 8), read_u32(bytes, 8 + n * 8))
        else {
            break;
        };
        let ends = data.checked_add(name_len).and_then(|name_end| {
            let value_end = name_end.checked_add(1)?.checked_add(value_len)?;
            // Both NULs must be inside the buffer.
            (value_end < bytes.len()).then_some((name_end, value_end))
        });
        let Some((name_end, value_end)) = ends else {
            break;
        };
        let name = data..name_end;
        let value = name_end + 1..value_end;
        data = value_end + 1;
        pairs.push((name, value));
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        HeaderMap::parse(HeaderMap::serialize(pairs))
    }

    #[test]
    fn reads_back_what_the_host_serialized() {
        let headers = map(&[
            (":path", "/orders/42?x=1"),
            ("x-forwarded-for", "10.0.0.1"),
            ("empty", ""),
            ("X-Forwarded-For", "10.0.0.2, 10.0.0.3"),
        ]);
        assert_eq!(headers.len(), 4);
        assert_eq!(headers.get_text(":path").as_deref(), Some("/orders/42?x=1"));
        assert_eq!(headers.get_text("empty").as_deref(), Some(""));
        assert_eq!(headers.get("absent"), None);
        let forwarded: Vec<&[u8]> = headers.values("x-forwarded-for").collect();
        assert_eq!(forwarded, [&b"10.0.0.1"[..], &b"10.0.0.2, 10.0.0.3"[..]]);
    }

    #[test]
    fn mirrored_writes_replace_every_value_or_remove_them() {
        let mut headers = map(&[("x-a", "1"), ("X-A", "2"), ("x-b", "3")]);
        headers.set("x-a", Some("new"));
        assert_eq!(
            headers.to_pairs(),
            [
                ("x-b".to_string(), "3".to_string()),
                ("x-a".to_string(), "new".to_string())
            ]
        );
        headers.set("X-B", None);
        headers.set("x-absent", None);
        headers.set("X-C", Some(""));
        assert_eq!(
            headers.to_pairs(),
            [
                ("x-a".to_string(), "new".to_string()),
                ("x-c".to_string(), String::new())
            ]
        );
    }

    #[test]
    fn an_empty_map_and_an_empty_buffer_have_no_pairs() {
        assert!(map(&[]).is_empty());
        assert!(HeaderMap::parse(Vec::new()).is_empty());
    }

    #[test]
    fn non_utf8_values_read_as_replacement_characters_not_a_panic() {
        let headers = HeaderMap::parse(HeaderMap::serialize(&[(&b"x-key"[..], &b"ab\xffcd"[..])]));
        assert_eq!(headers.get("x-key"), Some(&b"ab\xffcd"[..]));
        assert_eq!(headers.get_text("x-key").as_deref(), Some("ab\u{fffd}cd"));
        assert_eq!(
            headers.to_pairs(),
            [("x-key".to_string(), "ab\u{fffd}cd".to_string())]
        );
    }

    #[test]
    fn a_truncated_buffer_keeps_the_whole_pairs_before_the_cut_at_most() {
        let full = HeaderMap::serialize(&[("a", "1"), ("b", "22")]);
        for cut in 0..full.len() {
            let headers = HeaderMap::parse(full[..cut].to_vec());
            assert!(headers.len() <= 1, "cut at {cut}");
            if headers.len() == 1 {
                assert_eq!(headers.get_text("a").as_deref(), Some("1"));
            }
        }
        assert_eq!(HeaderMap::parse(full).len(), 2);
    }

    #[test]
    fn lying_lengths_never_read_out_of_bounds() {
        let mut bytes = HeaderMap::serialize(&[("a", "1")]);
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(HeaderMap::parse(bytes).is_empty());
        let mut bytes = HeaderMap::serialize(&[("a", "1")]);
        bytes[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(HeaderMap::parse(bytes).is_empty());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_without_panicking(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let headers = HeaderMap::parse(bytes);
            for (name, value) in headers.iter() {
                let _ = (text(name), text(value));
            }
        }

        #[test]
        fn serialize_then_parse_is_the_identity(
            pairs in proptest::collection::vec(("[a-z:-]{0,12}", "[ -~]{0,40}"), 0..12)
        ) {
            let headers = HeaderMap::parse(HeaderMap::serialize(&pairs));
            proptest::prop_assert_eq!(headers.to_pairs(), pairs);
        }
    }
}
