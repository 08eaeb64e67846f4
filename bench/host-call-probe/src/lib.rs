//! host-call-probe: repeats one kind of proxy-wasm host call `count` times
//! on every request's headers, then continues.
//!
//! `make bench` runs it once per kind, against the same probe doing nothing
//! (`none`), so the difference divided by `count` is what one call of that
//! kind costs Envoy. That cost model explains the filters' own numbers.
//!
//! Configuration: `<kind> <count>`, e.g. `header 16`. Unknown kinds are refused.

/// The host calls measured, one per probe scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Nothing: the probe's own baseline.
    None,
    /// A present request header (`:path`).
    Header,
    /// An absent request header.
    HeaderAbsent,
    /// Every request header at once (the SDK's `get_map`: a `String` pair each).
    Headers,
    /// Every request header at once, the serialized buffer left unparsed.
    HeadersRaw,
    /// `source.address`.
    PropertySource,
    /// An absent filter-state property (as for an unauthenticated request).
    PropertyAbsent,
    /// Writing a filter-state property.
    SetProperty,
    /// Setting a request header.
    SetHeader,
    /// One counter increment.
    Metric,
    /// The host clock.
    Time,
    /// Reading one shared-data key.
    SharedGet,
    /// Reading and writing back one shared-data key with its CAS token.
    SharedUpdate,
    /// A debug log line Envoy filters out (its level is above debug).
    LogFiltered,
}

impl Kind {
    pub const ALL: [(&'static str, Kind); 14] = [
        ("none", Kind::None),
        ("header", Kind::Header),
        ("header_absent", Kind::HeaderAbsent),
        ("headers", Kind::Headers),
        ("headers_raw", Kind::HeadersRaw),
        ("property_source", Kind::PropertySource),
        ("property_absent", Kind::PropertyAbsent),
        ("set_property", Kind::SetProperty),
        ("set_header", Kind::SetHeader),
        ("metric", Kind::Metric),
        ("time", Kind::Time),
        ("shared_get", Kind::SharedGet),
        ("shared_update", Kind::SharedUpdate),
        ("log_filtered", Kind::LogFiltered),
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub kind: Kind,
    pub count: u32,
}

/// Parses `<kind> <count>`.
pub fn parse(config: &str) -> Result<Probe, String> {
    let mut words = config.split_whitespace();
    let kind_name = words.next().unwrap_or("none");
    let kind = Kind::ALL
        .iter()
        .find(|(name, _)| *name == kind_name)
        .map(|(_, kind)| *kind)
        .ok_or_else(|| format!("unknown probe kind {kind_name:?}"))?;
    let count = match words.next() {
        Some(word) => word
            .parse()
            .map_err(|_| format!("count must be a number, not {word:?}"))?,
        None => 1,
    };
    Ok(Probe { kind, count })
}

/// The proxy-wasm side, built for Wasm only.
#[cfg(target_arch = "wasm32")]
mod adapter {
    use super::{parse, Kind, Probe};
    use proxy_wasm::hostcalls;
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType};

    #[link(wasm_import_module = "env")]
    extern "C" {
        fn proxy_get_header_map_pairs(map_type: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    }

    /// The request headers in the ABI's serialized form, one host call.
    fn raw_header_pairs() -> Result<Vec<u8>, proxy_wasm::types::Status> {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size = 0usize;
        // SAFETY: the host writes a buffer it allocated through this module's
        // allocator (`proxy_on_memory_allocate`, a boxed slice of `size` bytes).
        let status = unsafe {
            proxy_get_header_map_pairs(MapType::HttpRequestHeaders as u32, &mut data, &mut size)
        };
        if status != 0 {
            return Err(proxy_wasm::types::Status::InternalFailure);
        }
        if data.is_null() {
            return Ok(Vec::new());
        }
        Ok(unsafe { Vec::from_raw_parts(data, size, size) })
    }

    const SHARED_KEY: &str = "host_call_probe.counter";

    fn run(probe: Probe, metric: u32) {
        for _ in 0..probe.count {
            // Results are dropped: the call is what is measured.
            let _ = match probe.kind {
                Kind::None => Ok(()),
                Kind::Header => {
                    hostcalls::get_map_value(MapType::HttpRequestHeaders, ":path").map(drop)
                }
                Kind::HeaderAbsent => {
                    hostcalls::get_map_value(MapType::HttpRequestHeaders, "x-absent").map(drop)
                }
                Kind::Headers => hostcalls::get_map(MapType::HttpRequestHeaders).map(drop),
                Kind::HeadersRaw => raw_header_pairs().map(drop),
                Kind::PropertySource => {
                    hostcalls::get_property(vec!["source", "address"]).map(drop)
                }
                Kind::PropertyAbsent => hostcalls::get_property(vec!["probe_absent"]).map(drop),
                Kind::SetProperty => hostcalls::set_property(vec!["probe_state"], Some(b"value")),
                Kind::SetHeader => {
                    hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-probe", Some("1"))
                }
                Kind::Metric => hostcalls::increment_metric(metric, 1),
                Kind::Time => hostcalls::get_current_time().map(drop),
                Kind::SharedGet => hostcalls::get_shared_data(SHARED_KEY).map(drop),
                Kind::SharedUpdate => {
                    hostcalls::get_shared_data(SHARED_KEY).and_then(|(_, cas)| {
                        hostcalls::set_shared_data(SHARED_KEY, Some(b"12345678"), cas)
                    })
                }
                Kind::LogFiltered => hostcalls::log(LogLevel::Debug, "host-call-probe"),
            };
        }
    }

    struct ProbeRoot {
        probe: Probe,
        metric: u32,
    }

    impl Context for ProbeRoot {}

    impl RootContext for ProbeRoot {
        fn on_configure(&mut self, _size: usize) -> bool {
            let bytes = hostcalls::get_buffer(
                proxy_wasm::types::BufferType::PluginConfiguration,
                0,
                usize::MAX,
            )
            .ok()
            .flatten()
            .unwrap_or_default();
            match parse(&String::from_utf8_lossy(&bytes)) {
                Ok(probe) => self.probe = probe,
                Err(error) => {
                    let _ = hostcalls::log(LogLevel::Error, &format!("host_call_probe: {error}"));
                    return false;
                }
            }
            self.metric =
                hostcalls::define_metric(MetricType::Counter, "host_call_probe.calls").unwrap_or(0);
            let _ = hostcalls::set_shared_data(SHARED_KEY, Some(b"12345678"), None);
            true
        }

        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(ProbeHttp {
                probe: self.probe,
                metric: self.metric,
            }))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    struct ProbeHttp {
        probe: Probe,
        metric: u32,
    }

    impl Context for ProbeHttp {}

    impl HttpContext for ProbeHttp {
        fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
            run(self.probe, self.metric);
            Action::Continue
        }
    }

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
            Box::new(ProbeRoot { probe: Probe { kind: Kind::None, count: 0 }, metric: 0 })
        });
    }}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kind_and_count() {
        assert_eq!(
            parse("header 16"),
            Ok(Probe {
                kind: Kind::Header,
                count: 16
            })
        );
        assert_eq!(
            parse("metric"),
            Ok(Probe {
                kind: Kind::Metric,
                count: 1
            })
        );
        assert_eq!(
            parse(""),
            Ok(Probe {
                kind: Kind::None,
                count: 1
            })
        );
    }

    #[test]
    fn refuses_unknown_kinds_and_counts() {
        assert!(parse("headerz 1").unwrap_err().contains("headerz"));
        assert!(parse("header x").unwrap_err().contains("\"x\""));
    }
}
