//! The proxy-wasm side of [`Host`](crate::host::Host): [`ProxyWasmHost`] and
//! the per-callback caches of header maps and properties. Re-exported from
//! [`crate::host`].

use crate::header_map::HeaderMap;
use crate::host::Host;
use proxy_wasm::types::MapType;
use std::borrow::Cow;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

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
        if let Some(cached) = with_cache(|cache| cache.property(path)).flatten() {
            return cached;
        }
        let value = proxy_wasm::hostcalls::get_property(path.to_vec())
            .ok()
            .flatten();
        let key = path.join("\0");
        let stable = STREAM_STABLE_PROPERTIES.contains(&key.as_str());
        with_cache(|cache| cache.remember(key, value.clone(), stable));
        value
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> bool {
        let written = proxy_wasm::hostcalls::set_property(path.to_vec(), Some(value)).is_ok();
        // What the stream's own policies wrote holds until they write again.
        let key = path.join("\0");
        with_cache(|cache| {
            if written {
                cache.remember(key, Some(value.to_vec()), true);
            } else {
                cache.properties.retain(|entry| entry.key != key);
            }
        });
        written
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
/// stream it was read for; writes through the adapter ([`note_header_write`],
/// [`Host::set_property`]) update it, so a later read sees them.
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

/// Properties that cannot change while a stream lives (NUL-joined paths).
const STREAM_STABLE_PROPERTIES: [&str; 2] = ["source\0address", "source\0port"];

/// What a context that sees every callback of its stream (the gateway
/// module's) carries from one callback to the next: the properties that
/// hold for the whole stream, that is the downstream peer's address and
/// what the stream's own policies wrote as filter state.
#[derive(Debug, Default)]
pub struct StreamMemory {
    properties: Vec<(String, Option<Vec<u8>>)>,
}

/// A [`CallbackScope`] that starts from `memory` and, when dropped, puts
/// back into it what the callback learnt that still holds.
pub struct StreamScope<'a> {
    memory: &'a mut StreamMemory,
    _scope: CallbackScope,
}

pub fn stream_scope(memory: &mut StreamMemory) -> StreamScope<'_> {
    let scope = callback_scope();
    let carried = std::mem::take(&mut memory.properties);
    with_cache(|cache| {
        for (key, value) in carried {
            cache.remember(key, value, true);
        }
    });
    StreamScope {
        memory,
        _scope: scope,
    }
}

impl Drop for StreamScope<'_> {
    /// Moves the lasting entries out (the scope's cache ends with it).
    fn drop(&mut self) {
        let kept = with_cache(|cache| {
            std::mem::take(&mut cache.properties)
                .into_iter()
                .filter(|entry| entry.stable)
                .map(|entry| (entry.key, entry.value))
                .collect()
        });
        if let Some(kept) = kept {
            self.memory.properties = kept;
        }
    }
}

/// Notes a header write the host was asked to make: the map's snapshot
/// makes the same change (so later reads of the callback see it without a
/// new fetch), and cached properties are dropped (a new path can change the
/// route, and with it route properties).
pub fn note_header_write(map: MapType, name: &str, value: Option<&str>) {
    with_cache(|cache| {
        cache.properties.retain(|entry| entry.stable);
        if let Some(Some(headers)) = cache.map(map) {
            Rc::make_mut(headers).set(name, value);
        }
    });
}

/// Whether removing `name` would change nothing: inside a scope, the
/// callback's snapshot of the map (fetched now if need be: the policies
/// read it anyway) has no such header. Outside a scope: false.
pub fn known_absent(map: MapType, name: &str) -> bool {
    in_scope() && header_map(map).get(name).is_none()
}

#[derive(Default)]
struct CallbackCache {
    depth: u32,
    request_headers: Option<Rc<HeaderMap>>,
    response_headers: Option<Rc<HeaderMap>>,
    properties: Vec<CachedProperty>,
}

struct CachedProperty {
    /// Path segments joined by NUL.
    key: String,
    value: Option<Vec<u8>>,
    /// Holds for the rest of the stream (see [`StreamMemory`]).
    stable: bool,
}

impl CallbackCache {
    fn forget(&mut self) {
        self.request_headers = None;
        self.response_headers = None;
        self.properties.clear();
    }

    fn property(&self, path: &[&str]) -> Option<Option<Vec<u8>>> {
        self.properties
            .iter()
            .find(|entry| is_joined_path(&entry.key, path))
            .map(|entry| entry.value.clone())
    }

    fn remember(&mut self, key: String, value: Option<Vec<u8>>, stable: bool) {
        self.properties.retain(|entry| entry.key != key);
        self.properties.push(CachedProperty { key, value, stable });
    }

    fn map(&mut self, map: MapType) -> Option<&mut Option<Rc<HeaderMap>>> {
        match map {
            MapType::HttpRequestHeaders => Some(&mut self.request_headers),
            MapType::HttpResponseHeaders => Some(&mut self.response_headers),
            _ => None,
        }
    }
}

/// Whether `key` is `path` joined by NUL, without joining it.
fn is_joined_path(key: &str, path: &[&str]) -> bool {
    let mut rest = key;
    for (i, segment) in path.iter().enumerate() {
        if i > 0 {
            match rest.strip_prefix('\0') {
                Some(after) => rest = after,
                None => return false,
            }
        }
        match rest.strip_prefix(segment) {
            Some(after) => rest = after,
            None => return false,
        }
    }
    rest.is_empty()
}

thread_local! {
    static CACHE: RefCell<CallbackCache> = RefCell::new(CallbackCache::default());
}

fn in_scope() -> bool {
    CACHE.with(|cache| cache.borrow().depth > 0)
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
    if in_scope() {
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

#[cfg(test)]
mod cache_tests {
    use super::*;

    fn cached(key: &str) -> Option<Option<Vec<u8>>> {
        let path: Vec<&str> = key.split('\0').collect();
        with_cache(|cache| cache.property(&path)).flatten()
    }

    #[test]
    fn a_cached_key_matches_exactly_its_path() {
        assert!(is_joined_path("xds\0route_name", &["xds", "route_name"]));
        assert!(is_joined_path("gw_app", &["gw_app"]));
        assert!(!is_joined_path("gw_app", &["gw_app_name"]));
        assert!(!is_joined_path("gw_app_name", &["gw_app"]));
        assert!(!is_joined_path("xds\0route_name", &["xds"]));
        assert!(!is_joined_path("xds", &["xds", "route_name"]));
        assert!(!is_joined_path("xdsroute_name", &["xds", "route_name"]));
        assert!(!is_joined_path("a\0b", &["a\0b", ""]));
    }

    fn seed_request_headers(pairs: &[(&str, &str)]) {
        with_cache(|cache| {
            cache.request_headers = Some(Rc::new(HeaderMap::parse(HeaderMap::serialize(pairs))));
        });
    }

    #[test]
    fn nothing_is_cached_outside_a_scope() {
        assert!(with_cache(|cache| cache.remember("k".into(), None, false)).is_none());
        assert!(!known_absent(MapType::HttpRequestHeaders, "x-anything"));
    }

    #[test]
    fn nested_scopes_share_one_cache_that_the_outermost_clears() {
        let outer = callback_scope();
        with_cache(|cache| cache.remember("a".into(), Some(b"1".to_vec()), false));
        {
            let _inner = callback_scope();
            assert_eq!(cached("a"), Some(Some(b"1".to_vec())));
        }
        assert_eq!(cached("a"), Some(Some(b"1".to_vec())));
        drop(outer);
        let _next = callback_scope();
        assert_eq!(cached("a"), None);
    }

    #[test]
    fn header_writes_keep_the_snapshot_in_step_and_drop_route_properties() {
        let _scope = callback_scope();
        seed_request_headers(&[(":path", "/a"), ("x-gw-app-key", "spoofed")]);
        with_cache(|cache| {
            cache.remember("xds\0route_name".into(), Some(b"r".to_vec()), false);
            cache.remember("gw_app".into(), Some(b"app".to_vec()), true);
        });
        assert!(known_absent(MapType::HttpRequestHeaders, "x-gw-app-name"));
        assert!(!known_absent(MapType::HttpRequestHeaders, "x-gw-app-key"));
        note_header_write(MapType::HttpRequestHeaders, "x-gw-app-key", None);
        note_header_write(MapType::HttpRequestHeaders, ":path", Some("/b"));
        assert!(known_absent(MapType::HttpRequestHeaders, "x-gw-app-key"));
        assert_eq!(
            header_value(MapType::HttpRequestHeaders, ":path").as_deref(),
            Some("/b")
        );
        assert_eq!(
            cached("xds\0route_name"),
            None,
            "the route may have changed"
        );
        assert_eq!(cached("gw_app"), Some(Some(b"app".to_vec())));
    }

    #[test]
    fn stream_memory_carries_only_what_holds_for_the_stream() {
        let mut memory = StreamMemory::default();
        {
            let _scope = stream_scope(&mut memory);
            with_cache(|cache| {
                cache.remember("source\0address".into(), Some(b"10.0.0.1:5".to_vec()), true);
                cache.remember("gw_app".into(), Some(b"app".to_vec()), true);
                cache.remember("response\0code".into(), Some(b"200".to_vec()), false);
            });
            seed_request_headers(&[(":path", "/a")]);
        }
        let _scope = stream_scope(&mut memory);
        assert_eq!(
            cached("source\0address"),
            Some(Some(b"10.0.0.1:5".to_vec()))
        );
        assert_eq!(cached("gw_app"), Some(Some(b"app".to_vec())));
        assert_eq!(cached("response\0code"), None);
        assert!(with_cache(|cache| cache.request_headers.is_none()).unwrap_or(false));
    }
}
