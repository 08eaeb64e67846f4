//! `make soak`: the gateway module under a mixed load for minutes, with
//! ever-new client IPs, users, nonces and parameter values, and its memory
//! sampled over time: Envoy's RSS, its heap (`server.memory_allocated`) and,
//! for the Wasm module, the VMs' linear memory (`gw.gateway.vm_memory_bytes`).
//! Every table the policies keep is bounded, so after warm-up these must
//! stay flat; the run fails if one grows by more than its allowance, or if a
//! request gets an answer the load does not expect.
//!
//! Run by `scripts/soak.sh` once per module. Knobs: `SOAK_SECONDS` (180),
//! `SOAK_SAMPLE_SECONDS` (10), `SOAK_CLIENTS` (4), `SOAK_MAX_RSS_GROWTH_MB`
//! (10), `SOAK_MAX_VM_GROWTH_MB` (2); `GATEWAY_NATIVE=1` soaks the native
//! module. The report goes to `target/soak/<wasm|native>.md`.

use integration_tests::echo::EchoServer;
use integration_tests::envoy::{
    add_cluster, chain_config, native_mode, workspace_root, Envoy, WasmFilter,
};
use integration_tests::http;
use integration_tests::signing::{pairs, signed_headers};
use serde_json::json;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const APPS: usize = 50;
const WORKERS: u32 = 2;

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn app(i: usize) -> (String, String) {
    (format!("{}", 300_000 + i), format!("secret-{i}"))
}

fn policies() -> Vec<WasmFilter> {
    let apps: Vec<_> = (0..APPS)
        .map(|i| {
            let (key, secret) = app(i);
            json!({"key": key, "secrets": [secret]})
        })
        .collect();
    let trusted = json!({"trusted_proxies": ["127.0.0.1"], "envoy_appended_xff": true});
    let orders = json!({"path": {"template": "/orders/{id}"}});
    let items = json!({"methods": ["POST"], "path": {"exact": "/public/items"}});
    vec![
        WasmFilter::json(
            "sign_auth",
            &json!({
                "apps": apps,
                "rules": [
                    {"name": "orders", "match": orders},
                    {"name": "public", "match": {"path": {"prefix": "/public"}}, "anonymous": true}
                ],
                // A 30 s window: at ~750 signed requests/s about 45k nonces
                // are live, and the table reaches its steady state within a
                // minute. Slots fill unevenly (README, "Anti-replay and its
                // capacity"): 16384 slots refused a few; 65536 keep every
                // slot well under its 8 entries.
                "timestamp_window_seconds": 30,
                "nonce_slots": 65536
            }),
        ),
        WasmFilter::json(
            "ip_acl",
            &json!({"client_address": trusted, "deny": ["203.0.113.0/24"]}),
        ),
        WasmFilter::json(
            "access_control",
            &json!({"rules": [{"name": "orders", "match": orders, "checks": [
                {"condition": "app != null && param.id matches '^[0-9]+$'", "if_false": "deny"}
            ]}]}),
        ),
        WasmFilter::json(
            "throttling",
            &json!({
                "user": {"header": "x-user-id"},
                "client_address": trusted,
                "rules": [
                    {"name": "per-app", "match": orders, "key": "app", "limit": 1_000_000, "window": "1m"},
                    {"name": "per-client-ip", "key": "client_ip", "limit": 100_000, "window": "1m"},
                    {"name": "per-user", "key": "user", "limit": 100_000, "window": "1m"},
                    {"name": "per-query", "key": {"parameter": {"query": "q"}}, "limit": 100_000, "window": "10s"}
                ]
            }),
        ),
        WasmFilter::json(
            "param_validation",
            &json!({"rules": [
                {"name": "orders", "match": orders, "parameters": [
                    {"name": "id", "in": "path", "type": "integer", "minimum": 1},
                    {"name": "page", "in": "query", "type": "integer", "minimum": 1, "maximum": 1000}
                ]},
                {"name": "items", "match": items, "parameters": [
                    {"name": "qty", "in": "body", "pointer": "/qty", "type": "integer", "minimum": 1, "required": true}
                ]}
            ]}),
        ),
        WasmFilter::json(
            "threat_protection",
            &json!({"rules": [{"name": "items", "match": items}, {"name": "orders", "match": orders}]}),
        ),
        WasmFilter::json(
            "error_mapping",
            &json!({"rules": [{"name": "orders", "match": orders,
                "mappings": [{"code": "503", "status": 502, "message": "Orders unavailable"}]}]}),
        ),
        WasmFilter::json(
            "request_mapping",
            &json!({"rules": [{"name": "items", "match": items,
                "backend": {"path": "/internal/items"},
                "parameters": [
                    {"from": {"in": "body", "name": "/qty"}, "to": {"in": "body", "name": "/item/quantity"}, "type": "integer"}
                ],
                "system": [{"value": "client_ip", "to": {"in": "header", "name": "X-Client-IP"}}]
            }]}),
        ),
        WasmFilter::json(
            "circuit_breaker",
            &json!({"rules": [{"name": "orders", "match": orders, "trip": {"consecutive_failures": 50}}]}),
        ),
        WasmFilter::json(
            "log_push",
            &json!({
                "sink": {"cluster": "log_sink", "format": "ndjson", "path": "/ingest"},
                "batch": {"max_records": 500, "flush_interval_ms": 500},
                "client_address": trusted
            }),
        ),
    ]
}

/// Where request `n` comes from: a new address each time, one in ten IPv6.
fn client_ip(n: u64) -> String {
    if n % 10 == 9 {
        format!("2001:db8:{:x}:{:x}::1", (n >> 16) & 0xffff, n & 0xffff)
    } else {
        format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
    }
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    ok: AtomicU64,
    unexpected: AtomicU64,
}

fn client(envoy_url: String, id: u64, clients: u64, running: Arc<AtomicBool>, tally: Arc<Tally>) {
    let agent = http::agent();
    let mut n = id;
    while running.load(Ordering::Relaxed) {
        let ip = client_ip(n);
        let result = match n % 4 {
            0 => {
                let (key, secret) = app(n as usize % APPS);
                let path = format!("/orders/{}?page={}", n % 100_000 + 1, n % 1000 + 1);
                let headers = signed_headers(
                    &key,
                    &secret,
                    "GET",
                    &path,
                    &[("accept".into(), "application/json".into())],
                    None,
                );
                let mut all = pairs(&headers);
                all.push(("x-forwarded-for", &ip));
                http::send(&agent, "GET", &format!("{envoy_url}{path}"), &all, None)
            }
            1 => http::send(
                &agent,
                "GET",
                &format!("{envoy_url}/public/search?q=term-{n}"),
                &[("x-forwarded-for", &ip)],
                None,
            ),
            2 => http::send(
                &agent,
                "GET",
                &format!("{envoy_url}/public/profile"),
                &[
                    ("x-forwarded-for", &ip),
                    ("x-user-id", &format!("user-{n}")),
                ],
                None,
            ),
            _ => http::send(
                &agent,
                "POST",
                &format!("{envoy_url}/public/items"),
                &[
                    ("x-forwarded-for", &ip),
                    ("content-type", "application/json"),
                ],
                Some(format!(r#"{{"qty": {}, "note": "n{n}"}}"#, n % 50 + 1).as_bytes()),
            ),
        };
        tally.requests.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(response) if response.status == 200 => tally.ok.fetch_add(1, Ordering::Relaxed),
            Ok(response) => {
                if tally.unexpected.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("unexpected answer {}: {}", response.status, response.text());
                }
                0
            }
            Err(e) => {
                if tally.unexpected.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("request failed: {e}");
                }
                0
            }
        };
        n += clients;
    }
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

struct Sample {
    seconds: u64,
    requests: u64,
    rss: u64,
    heap: u64,
    vm: u64,
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Runs one mode; returns its report and whether it held.
fn soak(mode: &str, seconds: u64, sample_every: u64, clients: u64) -> (String, bool) {
    let upstream = EchoServer::start("backend").expect("echo upstream");
    let sink = EchoServer::start("sink").expect("log sink");
    let mut config = chain_config(
        &[WasmFilter::gateway_module(&policies())],
        &[upstream.port()],
    );
    add_cluster(&mut config, "log_sink", sink.port());
    let envoy = Envoy::start_with(&config, WORKERS).unwrap_or_else(|e| panic!("{e}"));
    let running = Arc::new(AtomicBool::new(true));
    let tally = Arc::new(Tally::default());
    let threads: Vec<_> = (0..clients)
        .map(|id| {
            let (url, running, tally) = (envoy.url(""), running.clone(), tally.clone());
            thread::spawn(move || client(url, id, clients, running, tally))
        })
        .collect();
    let started = Instant::now();
    let mut samples = Vec::new();
    eprintln!("soak ({mode}): {seconds} s, {clients} clients, Envoy with {WORKERS} workers");
    while started.elapsed() < Duration::from_secs(seconds) {
        thread::sleep(Duration::from_secs(sample_every));
        upstream.forget_requests();
        sink.forget_requests();
        let sample = Sample {
            seconds: started.elapsed().as_secs(),
            requests: tally.requests.load(Ordering::Relaxed),
            rss: rss_bytes(envoy.pid()),
            heap: envoy.stat("server.memory_allocated"),
            vm: envoy.stat("wasmcustom.gw.gateway.vm_memory_bytes"),
        };
        eprintln!(
            "  {:>4} s  {:>8} requests  RSS {:>7.1} MB  heap {:>7.1} MB  VM {:>6.1} MB",
            sample.seconds,
            sample.requests,
            mb(sample.rss),
            mb(sample.heap),
            mb(sample.vm)
        );
        samples.push(sample);
    }
    running.store(false, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }

    let max_rss = knob("SOAK_MAX_RSS_GROWTH_MB", 10) * 1024 * 1024;
    let max_vm = knob("SOAK_MAX_VM_GROWTH_MB", 2) * 1024 * 1024;
    let warm = &samples[samples.len() / 3];
    let last = samples.last().expect("a sample");
    let growth = |f: fn(&Sample) -> u64| f(last).saturating_sub(f(warm));
    let (rss_growth, heap_growth, vm_growth) =
        (growth(|s| s.rss), growth(|s| s.heap), growth(|s| s.vm));
    let requests = tally.requests.load(Ordering::Relaxed);
    let unexpected = tally.unexpected.load(Ordering::Relaxed);
    let held = rss_growth <= max_rss && vm_growth <= max_vm && unexpected == 0;

    let mut report = String::new();
    let _ = writeln!(
        report,
        "## {mode} module: {seconds} s, {requests} requests ({:.0}/s), {unexpected} unexpected answers\n",
        requests as f64 / seconds as f64
    );
    let _ = writeln!(report, "| s | requests | RSS MB | heap MB | Wasm VMs MB |");
    let _ = writeln!(report, "|---:|---:|---:|---:|---:|");
    for s in &samples {
        let _ = writeln!(
            report,
            "| {} | {} | {:.1} | {:.1} | {:.1} |",
            s.seconds,
            s.requests,
            mb(s.rss),
            mb(s.heap),
            mb(s.vm)
        );
    }
    let _ = writeln!(
        report,
        "\nAfter warm-up ({} s to {} s): RSS {:+.1} MB (allowed {}), heap {:+.1} MB, Wasm VMs {:+.1} MB (allowed {}): **{}**\n",
        warm.seconds,
        last.seconds,
        mb(rss_growth),
        mb(max_rss),
        mb(heap_growth),
        mb(vm_growth),
        mb(max_vm),
        if held { "flat" } else { "GREW or failed" }
    );
    (report, held)
}

/// One mode per run: the native module when `GATEWAY_NATIVE=1` (the
/// harness then loads it for the gateway section), else the Wasm module.
fn main() -> ExitCode {
    let seconds = knob("SOAK_SECONDS", 180).max(30);
    let sample_every = knob("SOAK_SAMPLE_SECONDS", 10).max(1);
    let clients = knob("SOAK_CLIENTS", 4).max(1);
    let mode = if native_mode() { "native" } else { "wasm" };
    let (report, held) = soak(mode, seconds, sample_every, clients);
    let out = workspace_root().join("target/soak");
    let _ = std::fs::create_dir_all(&out);
    let path = out.join(format!("{mode}.md"));
    if let Err(e) = std::fs::write(&path, &report) {
        eprintln!("{}: {e}", path.display());
    }
    print!("{report}");
    if held {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
