//! Envoy stats for the filters. Counters are defined once per VM (in
//! `on_configure`) and incremented per request; Envoy shows them on the admin
//! `/stats` and `/stats/prometheus` endpoints.
//!
//! Naming: `gw.<filter>.<what>`, e.g. `gw.ip_acl.denied.deny_list`. Envoy
//! prefixes Wasm metrics with `wasmcustom.`, so Prometheus sees
//! `envoy_wasmcustom_gw_ip_acl_denied_deny_list`.
//!
//! A policy written against the [`Stream`](crate::stream::Stream) defines
//! its counters through [`DefineMetrics`] (the host when the configuration
//! loads, a [`FakeStream`](crate::stream::FakeStream) in tests) and counts
//! with [`Stream::increment`](crate::stream::Stream::increment).

#[cfg(feature = "wasm")]
use proxy_wasm::types::MetricType;

/// A counter handle; a failed definition makes a no-op counter rather than a
/// failed request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter(Option<u32>);

/// Where metrics are defined: the host, once per configuration.
pub trait DefineMetrics {
    /// Defines the counter `gw.<filter>.<name>`.
    fn define_counter(&mut self, filter: &str, name: &str) -> Counter;

    /// Defines the gauge `gw.<filter>.<name>`.
    fn define_gauge(&mut self, filter: &str, name: &str) -> Gauge;
}

/// A gauge handle (for example a breaker's state, a queue size); a failed
/// definition makes a no-op gauge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauge(Option<u32>);

impl Gauge {
    /// A handle to the host's metric `id`.
    pub const fn from_id(id: u32) -> Self {
        Self(Some(id))
    }

    /// The host's metric id (`None`: the definition failed, a no-op).
    pub const fn id(self) -> Option<u32> {
        self.0
    }
}

impl Counter {
    /// A handle to the host's metric `id`.
    pub const fn from_id(id: u32) -> Self {
        Self(Some(id))
    }

    /// The host's metric id (`None`: the definition failed, a no-op).
    pub const fn id(self) -> Option<u32> {
        self.0
    }
}

#[cfg(feature = "wasm")]
impl Counter {
    pub fn define(filter: &str, name: &str) -> Self {
        Self(define(MetricType::Counter, filter, name))
    }

    /// Adds `n` in one host call (a batch's records, not one call each).
    pub fn add(self, n: u64) {
        if let (Some(id), Ok(delta)) = (self.0, i64::try_from(n)) {
            if delta != 0 {
                let _ = proxy_wasm::hostcalls::increment_metric(id, delta);
            }
        }
    }
}

/// The proxy-wasm host's metrics and logs: where a policy defines its
/// metrics, and counts and logs work outside a request's steps (the
/// proxy-wasm root's host, `adapter::ProxyWasmRoot`).
#[cfg(feature = "wasm")]
#[derive(Debug, Default, Clone, Copy)]
pub struct ProxyWasmMetrics;

#[cfg(feature = "wasm")]
impl DefineMetrics for ProxyWasmMetrics {
    fn define_counter(&mut self, filter: &str, name: &str) -> Counter {
        Counter::define(filter, name)
    }

    fn define_gauge(&mut self, filter: &str, name: &str) -> Gauge {
        Gauge::define(filter, name)
    }
}

#[cfg(feature = "wasm")]
impl crate::stream::Telemetry for ProxyWasmMetrics {
    fn increment(&mut self, counter: Counter, delta: u64) {
        counter.add(delta);
    }

    fn set_gauge(&mut self, gauge: Gauge, value: u64) {
        gauge.set(value);
    }

    fn add_to_gauge(&mut self, gauge: Gauge, delta: i64) {
        gauge.add(delta);
    }

    fn logs(&self, level: crate::stream::Level) -> bool {
        proxy_wasm::hostcalls::get_log_level()
            .is_ok_and(|lowest| proxy_wasm_level(level) as u32 >= lowest as u32)
    }

    fn log(&self, level: crate::stream::Level, message: std::fmt::Arguments<'_>) {
        if self.logs(level) {
            let _ = proxy_wasm::hostcalls::log(proxy_wasm_level(level), &message.to_string());
        }
    }
}

#[cfg(feature = "wasm")]
fn proxy_wasm_level(level: crate::stream::Level) -> proxy_wasm::types::LogLevel {
    use crate::stream::Level;
    use proxy_wasm::types::LogLevel;
    match level {
        Level::Trace => LogLevel::Trace,
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    }
}

#[cfg(feature = "wasm")]
impl Gauge {
    pub fn define(filter: &str, name: &str) -> Self {
        Self(define(MetricType::Gauge, filter, name))
    }

    pub fn set(self, value: u64) {
        if let Some(id) = self.0 {
            let _ = proxy_wasm::hostcalls::record_metric(id, value);
        }
    }

    /// Moves the gauge by `delta`. Every worker's VM shares the one Envoy
    /// gauge, so per-worker amounts (a queue's length) add up across workers
    /// only through deltas, never through `set`.
    pub fn add(self, delta: i64) {
        if let Some(id) = self.0 {
            if delta != 0 {
                let _ = proxy_wasm::hostcalls::increment_metric(id, delta);
            }
        }
    }
}

/// The gauge of the Wasm VM's linear memory, summed over every VM that
/// reports it (one per worker). Linear memory grows with the heap's peak and
/// never shrinks, so a gauge that stops growing after warm-up means bounded
/// state.
#[cfg(feature = "wasm")]
#[derive(Debug, Default)]
pub struct VmMemory {
    gauge: Gauge,
    reported: u64,
}

#[cfg(feature = "wasm")]
impl VmMemory {
    pub fn define(filter: &str) -> Self {
        Self {
            gauge: Gauge::define(filter, "vm_memory_bytes"),
            reported: 0,
        }
    }

    /// Moves the gauge to this VM's memory now.
    pub fn report(&mut self) {
        #[cfg(target_arch = "wasm32")]
        {
            let bytes = core::arch::wasm32::memory_size(0) as u64 * 65536;
            self.gauge.add(bytes as i64 - self.reported as i64);
            self.reported = bytes;
        }
    }

    /// Takes this VM's share back out (the reporting root goes away).
    pub fn withdraw(&mut self) {
        self.gauge.add(-(self.reported as i64));
        self.reported = 0;
    }
}

/// The full stat name for a filter's metric.
pub fn metric_name(filter: &str, name: &str) -> String {
    format!("gw.{filter}.{name}")
}

#[cfg(feature = "wasm")]
fn define(kind: MetricType, filter: &str, name: &str) -> Option<u32> {
    proxy_wasm::hostcalls::define_metric(kind, &metric_name(filter, name)).ok()
}

/// One counter per error code a filter answers with, `denied.<code>`.
#[derive(Debug, Clone, Copy)]
pub struct DenialCounters<const N: usize> {
    codes: [&'static str; N],
    counters: [Counter; N],
}

impl<const N: usize> DenialCounters<N> {
    pub fn define_with(
        metrics: &mut dyn DefineMetrics,
        filter: &str,
        errors: &[crate::error::GatewayError; N],
    ) -> Self {
        let codes = errors.each_ref().map(|e| e.code);
        Self {
            codes,
            counters: codes.map(|code| metrics.define_counter(filter, &format!("denied.{code}"))),
        }
    }

    /// The counter of `error`; codes outside the list have none.
    pub fn counter(&self, error: &crate::error::GatewayError) -> Option<Counter> {
        let i = self.codes.iter().position(|code| *code == error.code)?;
        Some(self.counters[i])
    }
}
