//! Every host access a filter's logic needs, behind one trait: the proxy-wasm
//! host in the filters, [`FakeHost`] in native tests.

use crate::header_map::HeaderMap;
use proxy_wasm::types::MapType;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
}

/// The host clock in milliseconds since the Unix epoch (0 if it is before).
pub fn now_ms(host: &dyn Host) -> u64 {
    host.now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Reads a request header by lower-case name (a closure over the host or
/// over test data), for policies that take plain data.
pub type HeaderLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The proxy-wasm host. Failures read as "absent"; callers decide what that means.
///
/// Inside a [`CallbackScope`] it reads each header map once and each
/// property once, and answers later reads of the same callback from that:
/// a value handed over by the host costs far more than a lookup (see
/// [`crate::header_map`]). Outside a scope every read goes to the host.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProxyWasmHost;

impl ProxyWasmHost {
    /// The request headers, from the callback's snapshot.
    pub fn request_headers(&self) -> Rc<HeaderMap> {
        header_map(MapType::HttpRequestHeaders)
    }

    /// The response headers, from the callback's snapshot.
    pub fn response_headers(&self) -> Rc<HeaderMap> {
        header_map(MapType::HttpResponseHeaders)
    }
}

impl Host for ProxyWasmHost {
    fn request_header(&self, name: &str) -> Option<String> {
        header_value(MapType::HttpRequestHeaders, name)
    }

    fn request_header_values(&self, name: &str) -> Vec<String> {
        self.request_headers()
            .values(name)
            .map(crate::header_map::text)
            .collect()
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let key = path.join("\0");
        if let Some(cached) = with_cache(|cache| cache.property(&key)).flatten() {
            return cached;
        }
        let value = proxy_wasm::hostcalls::get_property(path.to_vec())
            .ok()
            .flatten();
        with_cache(|cache| cache.properties.push((key, value.clone())));
        value
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> bool {
        forget_reads();
        proxy_wasm::hostcalls::set_property(path.to_vec(), Some(value)).is_ok()
    }

    fn now(&self) -> SystemTime {
        proxy_wasm::hostcalls::get_current_time().unwrap_or(UNIX_EPOCH)
    }
}

/// Keeps what the current callback reads from the host until it is dropped
/// (scopes nest; the outermost one clears the cache). Open one at the top of
/// every stream callback: `let _reads = host::callback_scope();`. The gateway
/// module opens one around all its policies, so they share the reads.
///
/// The cache lives only while a callback runs, so it cannot outlive the
/// stream it was read for; writes through the adapter ([`forget_reads`])
/// drop it, so a later read sees them.
#[must_use = "the cache lives as long as the scope"]
pub struct CallbackScope {
    _not_send: PhantomData<*const ()>,
}

pub fn callback_scope() -> CallbackScope {
    CACHE.with(|cache| cache.borrow_mut().depth += 1);
    CallbackScope {
        _not_send: PhantomData,
    }
}

impl Drop for CallbackScope {
    fn drop(&mut self) {
        CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            cache.depth = cache.depth.saturating_sub(1);
            if cache.depth == 0 {
                cache.forget();
            }
        });
    }
}

/// Drops every cached read: a property was written.
pub fn forget_reads() {
    CACHE.with(|cache| cache.borrow_mut().forget());
}

/// Notes a header write the host was asked to make: the map's snapshot
/// makes the same change (so later reads of the callback see it without a
/// new fetch), and cached properties are dropped (a new path can change the
/// route, and with it route properties).
pub fn note_header_write(map: MapType, name: &str, value: Option<&str>) {
    with_cache(|cache| {
        cache.properties.clear();
        if let Some(Some(headers)) = cache.map(map) {
            Rc::make_mut(headers).set(name, value);
        }
    });
}

#[derive(Default)]
struct CallbackCache {
    depth: u32,
    request_headers: Option<Rc<HeaderMap>>,
    response_headers: Option<Rc<HeaderMap>>,
    /// Path segments joined by NUL, and what the host answered.
    properties: Vec<(String, Option<Vec<u8>>)>,
}

impl CallbackCache {
    fn forget(&mut self) {
        self.request_headers = None;
        self.response_headers = None;
        self.properties.clear();
    }

    fn property(&self, key: &str) -> Option<Option<Vec<u8>>> {
        self.properties
            .iter()
            .find(|(cached, _)| cached == key)
            .map(|(_, value)| value.clone())
    }

    fn map(&mut self, map: MapType) -> Option<&mut Option<Rc<HeaderMap>>> {
        match map {
            MapType::HttpRequestHeaders => Some(&mut self.request_headers),
            MapType::HttpResponseHeaders => Some(&mut self.response_headers),
            _ => None,
        }
    }
}

thread_local! {
    static CACHE: RefCell<CallbackCache> = RefCell::new(CallbackCache::default());
}

/// Runs `f` on the cache if a scope is open.
fn with_cache<T>(f: impl FnOnce(&mut CallbackCache) -> T) -> Option<T> {
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        (cache.depth > 0).then(|| f(&mut cache))
    })
}

/// A header map: the scope's snapshot, fetched on first use; outside a
/// scope, a fresh fetch.
pub fn header_map(map: MapType) -> Rc<HeaderMap> {
    let cached = with_cache(|cache| cache.map(map).and_then(|slot| slot.clone())).flatten();
    if let Some(headers) = cached {
        return headers;
    }
    let headers = Rc::new(HeaderMap::parse(raw::header_map_pairs(map)));
    with_cache(|cache| {
        if let Some(slot) = cache.map(map) {
            *slot = Some(Rc::clone(&headers));
        }
    });
    headers
}

/// One header's first value as text. Inside a scope, from the snapshot;
/// outside, a single-value read (cheaper than the whole map).
pub fn header_value(map: MapType, name: &str) -> Option<String> {
    if with_cache(|_| ()).is_some() {
        return header_map(map).get_text(name).map(Cow::into_owned);
    }
    raw::header_map_value(map, name).map(|bytes| crate::header_map::text(&bytes))
}

/// The header map calls the SDK wraps with a panic on non-UTF-8 values;
/// these hand over bytes.
mod raw {
    use proxy_wasm::types::MapType;

    #[cfg(target_arch = "wasm32")]
    #[link(wasm_import_module = "env")]
    extern "C" {
        fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, size: *mut usize) -> u32;
        fn proxy_get_header_map_value(
            map: u32,
            key: *const u8,
            key_size: usize,
            data: *mut *mut u8,
            size: *mut usize,
        ) -> u32;
    }

    /// Takes ownership of a buffer the host allocated through this module's
    /// `proxy_on_memory_allocate` (a boxed slice of `size` bytes).
    #[cfg(target_arch = "wasm32")]
    fn adopt(status: u32, data: *mut u8, size: usize) -> Option<Vec<u8>> {
        if status != 0 {
            return None;
        }
        if data.is_null() {
            return Some(Vec::new());
        }
        // SAFETY: see above; the host hands the buffer over and never uses it again.
        Some(unsafe { Vec::from_raw_parts(data, size, size) })
    }

    /// The serialized map; empty when the host refuses (no such map now).
    #[cfg(target_arch = "wasm32")]
    pub fn header_map_pairs(map: MapType) -> Vec<u8> {
        let (mut data, mut size) = (std::ptr::null_mut(), 0usize);
        // SAFETY: out-pointers to locals; the host writes a buffer it allocated.
        let status = unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) };
        adopt(status, data, size).unwrap_or_default()
    }

    #[cfg(target_arch = "wasm32")]
    pub fn header_map_value(map: MapType, name: &str) -> Option<Vec<u8>> {
        let (mut data, mut size) = (std::ptr::null_mut(), 0usize);
        // SAFETY: as above; `name` outlives the call.
        let status = unsafe {
            proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), &mut data, &mut size)
        };
        adopt(status, data, size)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn header_map_pairs(_map: MapType) -> Vec<u8> {
        Vec::new()
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn header_map_value(_map: MapType, _name: &str) -> Option<Vec<u8>> {
        None
    }
}

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

/// The request facts most filters need, read once per request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestLine {
    pub authority: String,
    pub method: String,
    pub path: String,
}

impl RequestLine {
    pub fn read(host: &dyn Host) -> Self {
        Self {
            authority: host.request_header(":authority").unwrap_or_default(),
            method: host.request_header(":method").unwrap_or_default(),
            path: host.request_header(":path").unwrap_or_default(),
        }
    }
}

/// Envoy's route name for the request (`xds.route_name`).
pub fn route_name(host: &dyn Host) -> Option<String> {
    host.property(&["xds", "route_name"])
        .and_then(|bytes| String::from_utf8(bytes).ok())
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
    pub line: RequestLine,
    pub route_name: Option<String>,
}

impl RequestFacts {
    pub fn read(host: &dyn Host, with_route_name: bool) -> Self {
        Self {
            line: RequestLine::read(host),
            route_name: if with_route_name {
                route_name(host)
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
