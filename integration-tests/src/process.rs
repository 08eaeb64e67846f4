//! Processes and ports the tests start and stop: Envoy, ClickHouse, the
//! registry.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// A loopback port nothing listens on when this returns, for a service about
/// to start or for a destination that must refuse connections.
///
/// The port is taken below the kernel's ephemeral range: a port the kernel
/// gives out for `bind(0)` is also what it picks as the source port of the
/// next outgoing connection, and with many tests connecting in parallel one
/// of them took such a port before the service bound it ("Address already
/// in use"). Each test process walks its own stretch of that range (offset by
/// its process id) and hands a port out once.
pub fn free_port() -> u16 {
    let (low, high) = *FIXED_PORTS.get_or_init(fixed_ports);
    let span = u32::from(high - low);
    loop {
        let step = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        assert!(step < span, "no free port left below the ephemeral range");
        let port = low + ((std::process::id().wrapping_mul(997) + step) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Ports below the kernel's ephemeral range (Linux's default: 32768–60999)
/// and above the well-known and registered services most machines run.
fn fixed_ports() -> (u16, u16) {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let high = ephemeral_start.min(32_000);
    let low = high.saturating_sub(12_000).max(2_000);
    assert!(
        low < high,
        "the ephemeral port range starts at {ephemeral_start}: no room below it"
    );
    (low, high)
}

static FIXED_PORTS: OnceLock<(u16, u16)> = OnceLock::new();
static NEXT_PORT: AtomicU32 = AtomicU32::new(0);

/// A program the tests run: the path in environment `variable`, else
/// `default`; panics, naming what installs it, when it is not there.
pub fn installed(variable: &str, default: &str, installed_by: &str) -> PathBuf {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.is_file(),
        "{} not found: run `make setup` (it installs {installed_by}) or set {variable}",
        path.display()
    );
    path
}

/// Stops a child: SIGTERM so it exits cleanly (and a wrapper script passes
/// it on), then SIGKILL if it is still running after `grace`.
pub fn stop(child: &mut Child, grace: Duration) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}
