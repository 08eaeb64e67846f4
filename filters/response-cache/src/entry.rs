//! A stored answer as bytes in shared data: what a hit replays. Decoding
//! trusts nothing (another configuration's or a damaged value is just not
//! an entry): every length is checked against what is left.

/// The encoding's version; a value of another is not an entry.
const VERSION: u8 = 1;
/// At most this many headers are kept with an answer.
pub const MAX_HEADERS: usize = 64;

/// Response headers never stored: hop-by-hop headers, what Envoy writes
/// for each answer itself, and what a hit sets.
const NOT_STORED: [&str; 12] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "date",
    "age",
    "x-ca-caching",
    "x-envoy-upstream-service-time",
];

/// An answer as the cache keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedResponse {
    pub status: u16,
    /// When it was stored (ms since the epoch), for `Age`.
    pub stored_at_ms: u64,
    /// Lower-case names, in the order the upstream sent them.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Whether a response header is kept with a stored answer.
pub fn kept(name: &str) -> bool {
    !name.starts_with(':') && !NOT_STORED.contains(&name)
}

impl CachedResponse {
    /// The answer's headers as a stream lists them, less those not kept;
    /// `None` when more than [`MAX_HEADERS`] are left (an answer stored
    /// without some of them could not be read), or a name is longer than
    /// a header name can be.
    pub fn keep_headers(headers: Vec<(String, String)>) -> Option<Vec<(String, String)>> {
        let kept: Vec<_> = headers
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .filter(|(name, _)| kept(name))
            .collect();
        let fits = kept.len() <= MAX_HEADERS
            && kept
                .iter()
                .all(|(name, _)| name.len() <= usize::from(u16::MAX));
        fits.then_some(kept)
    }

    /// The bytes a slot keeps.
    pub fn encode(&self) -> Vec<u8> {
        let size = 1
            + 2
            + 8
            + 2
            + self
                .headers
                .iter()
                .map(|(n, v)| 2 + n.len() + 4 + v.len())
                .sum::<usize>()
            + 4
            + self.body.len();
        let mut out = Vec::with_capacity(size);
        out.push(VERSION);
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&self.stored_at_ms.to_le_bytes());
        // `keep_headers` bounds what is stored: at most MAX_HEADERS names
        // that fit a u16.
        let headers = &self.headers[..self.headers.len().min(MAX_HEADERS)];
        out.extend_from_slice(&(headers.len() as u16).to_le_bytes());
        for (name, value) in headers {
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out.extend_from_slice(&(self.body.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    /// The answer `bytes` hold, if they are one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut reader = Reader(bytes);
        if reader.take(1)? != [VERSION] {
            return None;
        }
        let status = u16::from_le_bytes(reader.array()?);
        if !(100..=599).contains(&status) {
            return None;
        }
        let stored_at_ms = u64::from_le_bytes(reader.array()?);
        let count = usize::from(u16::from_le_bytes(reader.array()?));
        if count > MAX_HEADERS {
            return None;
        }
        let mut headers = Vec::with_capacity(count);
        for _ in 0..count {
            let name_len = usize::from(u16::from_le_bytes(reader.array()?));
            let name = std::str::from_utf8(reader.take(name_len)?).ok()?;
            let value_len = u32::from_le_bytes(reader.array()?) as usize;
            let value = std::str::from_utf8(reader.take(value_len)?).ok()?;
            headers.push((name.to_string(), value.to_string()));
        }
        let body_len = u32::from_le_bytes(reader.array()?) as usize;
        let body = reader.take(body_len)?.to_vec();
        if !reader.0.is_empty() {
            return None;
        }
        Some(Self {
            status,
            stored_at_ms,
            headers,
            body,
        })
    }
}

/// Reads the encoding front to back; `None` past its end.
struct Reader<'b>(&'b [u8]);

impl<'b> Reader<'b> {
    fn take(&mut self, n: usize) -> Option<&'b [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn answer() -> CachedResponse {
        CachedResponse {
            status: 200,
            stored_at_ms: 1_700_000_000_000,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-empty".into(), String::new()),
            ],
            body: br#"{"items":[1,2,3]}"#.to_vec(),
        }
    }

    #[test]
    fn an_answer_comes_back_as_it_was_stored() {
        let bytes = answer().encode();
        assert_eq!(CachedResponse::decode(&bytes), Some(answer()));
        let empty = CachedResponse {
            headers: Vec::new(),
            body: Vec::new(),
            ..answer()
        };
        assert_eq!(CachedResponse::decode(&empty.encode()), Some(empty));
    }

    #[test]
    fn what_is_not_an_entry_is_refused() {
        let bytes = answer().encode();
        for cut in 0..bytes.len() {
            assert_eq!(CachedResponse::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(CachedResponse::decode(&longer), None);
        let mut other_version = bytes.clone();
        other_version[0] = 9;
        assert_eq!(CachedResponse::decode(&other_version), None);
        let mut bad_status = bytes;
        bad_status[1..3].copy_from_slice(&42u16.to_le_bytes());
        assert_eq!(CachedResponse::decode(&bad_status), None);
    }

    #[test]
    fn hop_by_hop_and_per_answer_headers_are_not_kept() {
        let kept = CachedResponse::keep_headers(vec![
            (":status".into(), "200".into()),
            ("Content-Type".into(), "text/plain".into()),
            ("content-length".into(), "5".into()),
            ("transfer-encoding".into(), "chunked".into()),
            ("date".into(), "x".into()),
            ("x-envoy-upstream-service-time".into(), "3".into()),
            ("etag".into(), "\"v1\"".into()),
        ]);
        assert_eq!(
            kept,
            Some(vec![
                ("content-type".to_string(), "text/plain".to_string()),
                ("etag".to_string(), "\"v1\"".to_string())
            ])
        );
        let many = (0..100)
            .map(|i| (format!("x-{i}"), String::new()))
            .collect();
        assert_eq!(
            CachedResponse::keep_headers(many),
            None,
            "never stored cut short"
        );
    }

    proptest! {
        /// An entry with a byte changed, cut short or lengthened decodes to
        /// an entry that encodes back to those bytes, or is refused.
        #[test]
        fn damaged_entries_decode_or_are_refused(
            at in 0usize..200,
            byte in any::<u8>(),
            cut in 0usize..200,
            extra in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let mut bytes = answer().encode();
            let at = at % bytes.len();
            bytes[at] = byte;
            let keep = bytes.len() - cut % bytes.len();
            bytes.truncate(keep);
            bytes.extend_from_slice(&extra);
            if let Some(decoded) = CachedResponse::decode(&bytes) {
                prop_assert_eq!(decoded.encode(), bytes);
            }
        }
    }
}
