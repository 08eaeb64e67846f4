//! Every host access a filter's logic needs, behind one trait: the proxy-wasm
//! host in the filters, [`FakeHost`] in native tests.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[cfg(feature = "wasm")]
pub use crate::wasm_host::*;

pub trait Host {
    /// The first value of a request header (`name` in lower case).
    fn request_header(&self, name: &str) -> Option<String>;
    /// Every value of a request header, in the order received.
    fn request_header_values(&self, name: &str) -> Vec<String>;
    /// An Envoy attribute or filter-state property, e.g. `["source", "address"]`.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Publishes a property (filter state) for later filters.
    fn set_property(&self, path: &[&str], value: &[u8]) -> bool;
    fn now(&self) -> SystemTime;

    /// The request line; a host whose policies share a request (the
    /// gateway module) reads it once for all of them.
    fn request_line(&self) -> Rc<RequestLine> {
        Rc::new(RequestLine::from_headers(self))
    }

    /// Envoy's route name for the request (`xds.route_name`), shared as
    /// [`Host::request_line`] is.
    fn route_name(&self) -> Option<Rc<str>> {
        self.property(&["xds", "route_name"])
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .map(Rc::from)
    }
}

/// 64 random bits. Std's hasher keys come from the host's random source
/// (WASI `random_get` under Envoy, the OS natively) once per thread, and
/// every `RandomState` gets new ones, so each call draws anew.
pub fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0u8)
}

/// The host clock in milliseconds since the Unix epoch (0 if it is before).
pub fn now_ms(host: &dyn Host) -> u64 {
    epoch_ms(host.now())
}

/// `time` in milliseconds since the Unix epoch (0 if it is before).
pub fn epoch_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Reads a request header by lower-case name (a closure over the host or
/// over test data), for policies that take plain data.
pub type HeaderLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A host made of plain maps, for native tests.
#[derive(Debug, Default)]
pub struct FakeHost {
    pub headers: Vec<(String, String)>,
    pub properties: RefCell<HashMap<Vec<String>, Vec<u8>>>,
    pub clock: std::cell::Cell<Duration>,
}

impl FakeHost {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    pub fn with_property(self, path: &[&str], value: &str) -> Self {
        self.set_property(path, value.as_bytes());
        self
    }
}

impl Host for FakeHost {
    fn request_header(&self, name: &str) -> Option<String> {
        self.request_header_values(name).into_iter().next()
    }

    fn request_header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
            .collect()
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let key: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        self.properties.borrow().get(&key).cloned()
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> bool {
        let key = path.iter().map(|s| s.to_string()).collect();
        self.properties.borrow_mut().insert(key, value.to_vec());
        true
    }

    fn now(&self) -> SystemTime {
        UNIX_EPOCH + self.clock.get()
    }
}

/// The stage a request calls, from its `X-Ca-Stage` header: trimmed, upper
/// case (Envoy's stage routes match it in any case), at most 32
/// characters, `RELEASE` when absent or empty.
pub fn stage(header: Option<&str>) -> String {
    match header.map(str::trim).filter(|value| !value.is_empty()) {
        Some(value) => value
            .chars()
            .take(32)
            .collect::<String>()
            .to_ascii_uppercase(),
        None => "RELEASE".into(),
    }
}

/// The request facts most filters need, read once per request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestLine {
    pub authority: String,
    pub method: String,
    pub path: String,
}

impl RequestLine {
    /// The request line as the host shares it (see [`Host::request_line`]).
    pub fn read(host: &dyn Host) -> Rc<Self> {
        host.request_line()
    }

    /// Reads the three pseudo-headers.
    pub fn from_headers<H: Host + ?Sized>(host: &H) -> Self {
        Self {
            authority: host.request_header(":authority").unwrap_or_default(),
            method: host.request_header(":method").unwrap_or_default(),
            path: host.request_header(":path").unwrap_or_default(),
        }
    }
}

/// Envoy's response code details of an answer that came from the upstream.
pub const VIA_UPSTREAM: &str = "via_upstream";

/// Whether the response is the upstream's answer, as Envoy's router passed
/// it on (not a policy's reply, a mock, or Envoy's own 503 or 504).
pub fn from_upstream(host: &dyn Host) -> bool {
    host.property(&["response", "code_details"])
        .is_some_and(|details| details == VIA_UPSTREAM.as_bytes())
}

/// Envoy's route name for the request (`xds.route_name`).
pub fn route_name(host: &dyn Host) -> Option<Rc<str>> {
    host.route_name()
}

/// The downstream peer's `ip:port` as Envoy reports it (`source.address`).
pub fn peer_address(host: &dyn Host) -> Option<String> {
    host.property(&["source", "address"])
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

/// What API rules match on: the request line and, when a rule uses it,
/// Envoy's route name. Read once per request.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    pub line: Rc<RequestLine>,
    pub route_name: Option<Rc<str>>,
}

impl RequestFacts {
    pub fn read(host: &dyn Host, with_route_name: bool) -> Self {
        Self {
            line: host.request_line(),
            route_name: if with_route_name {
                host.route_name()
            } else {
                None
            },
        }
    }

    pub fn attrs(&self) -> crate::matching::RequestAttrs<'_> {
        crate::matching::RequestAttrs {
            authority: &self.line.authority,
            method: &self.line.method,
            path: &self.line.path,
            route_name: self.route_name.as_deref(),
        }
    }
}

#[cfg(test)]
mod random_tests {
    #[test]
    fn every_draw_is_new() {
        let draws: std::collections::HashSet<u64> =
            (0..1000).map(|_| super::random_u64()).collect();
        assert_eq!(draws.len(), 1000);
    }
}
