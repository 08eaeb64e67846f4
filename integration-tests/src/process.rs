//! Processes and ports the tests start and stop: Envoy, ClickHouse, the
//! registry.

use std::net::TcpListener;
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

/// A loopback port nothing listens on when this returns (a port the kernel
/// just gave out and took back): for a service about to start, or for a
/// destination that must refuse connections.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
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
