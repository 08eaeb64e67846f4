//! What the fuzz targets share: a request as the fuzzer shapes it, and the
//! fake host the policies read it through (the same `FakeHost` their native
//! tests use).

use gateway_common::host::FakeHost;
use gateway_common::matching::RequestAttrs;
use std::time::Duration;

/// The `:authority` of every request.
pub const AUTHORITY: &str = "api.example.com";

/// The gateway clock of every target, in epoch milliseconds.
pub const NOW_MS: u64 = 1_700_000_000_000;

/// A request: what a client controls. Targets read it from text shaped
/// like HTTP/1 (so seeds are readable and a dictionary helps):
///
/// ```text
/// POST /orders?a=1
/// @nonce: n-1            lines starting with `@` are the target's options
/// content-type: application/x-www-form-urlencoded
///
/// body bytes
/// ```
#[derive(Debug, Default)]
pub struct Request {
    pub method: String,
    /// `:path`, query included.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The `@name: value` lines, for the target.
    pub options: Vec<(String, String)>,
}

impl Request {
    /// Reads the text above; whatever is missing is empty. Header names
    /// and values are taken as written (lossy UTF-8), a line without `:`
    /// as a name with an empty value.
    pub fn parse(data: &[u8]) -> Self {
        let (head, body) = match find(data, b"\n\n") {
            Some(at) => (&data[..at], &data[at + 2..]),
            None => (data, &[][..]),
        };
        let head = String::from_utf8_lossy(head);
        let mut lines = head.split('\n');
        let first = lines.next().unwrap_or_default();
        let (method, path) = first.split_once(' ').unwrap_or((first, ""));
        let mut request = Request {
            method: method.to_string(),
            path: path.to_string(),
            body: body.to_vec(),
            ..Default::default()
        };
        for line in lines {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_string();
            match name.strip_prefix('@') {
                Some(option) => request.options.push((option.to_string(), value)),
                None => request.headers.push((name.to_string(), value)),
            }
        }
        request
    }

    /// What API rules match on.
    pub fn attrs(&self) -> RequestAttrs<'_> {
        RequestAttrs {
            authority: AUTHORITY,
            method: &self.method,
            path: &self.path,
            route_name: None,
        }
    }

    /// An `@name` option's value.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The host the request is read through, with `first` before the
    /// client's own headers (a lookup finds the first value).
    pub fn host(&self, first: &[(&str, &str)]) -> FakeHost {
        let mut host = FakeHost::new()
            .with_header(":method", &self.method)
            .with_header(":path", &self.path)
            .with_header(":authority", AUTHORITY);
        for (name, value) in first {
            host = host.with_header(name, value);
        }
        for (name, value) in &self.headers {
            host = host.with_header(name, value);
        }
        host.clock.set(Duration::from_millis(NOW_MS));
        host
    }

    /// The first value of a header the client sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The query string of `path` (after `?`).
    pub fn query(&self) -> &str {
        self.path.split_once('?').map_or("", |(_, query)| query)
    }
}

/// A configuration the target compiles once; a bad one is the target's bug.
pub fn config<T, E: std::fmt::Display>(compiled: Result<T, E>) -> T {
    match compiled {
        Ok(policy) => policy,
        Err(error) => panic!("the fuzz target's own configuration is refused: {error}"),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
