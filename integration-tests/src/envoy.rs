//! A real Envoy per test: writes its config, starts it with ephemeral ports,
//! waits on the admin `/ready`, keeps its log (printed when a test fails) and
//! always stops it.

use serde_json::{json, Value};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The Envoy binary: `ENVOY_BIN`, else the one `scripts/setup.sh` installs.
pub fn envoy_bin() -> PathBuf {
    // A relative ENVOY_BIN is relative to the repository root, as in the Makefile.
    let path = std::env::var_os("ENVOY_BIN")
        .map(|bin| workspace_root().join(bin))
        .unwrap_or_else(|| workspace_root().join(".venv/bin/envoy"));
    assert!(
        path.is_file(),
        "Envoy not found at {}: run `make setup` or set ENVOY_BIN",
        path.display()
    );
    path
}

/// A built filter module, e.g. `wasm_module("ip_acl")`.
pub fn wasm_module(name: &str) -> PathBuf {
    built(&format!("wasm32-wasip1/release/{name}.wasm"))
}

/// A file `make build` writes under the target directory.
fn built(relative: &str) -> PathBuf {
    // Honour CARGO_TARGET_DIR (relative to the repository root) like cargo does.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| workspace_root().join(dir))
        .unwrap_or_else(|| workspace_root().join("target"));
    let path = target.join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run `make build` first",
        path.display()
    );
    path
}

/// The native module, `libgateway.so` (`make build` builds it).
pub fn native_module() -> PathBuf {
    native_library("libgateway.so")
}

/// A library of the `native` profile, e.g. `examples/libpanic_probe.so`.
pub fn native_library(name: &str) -> PathBuf {
    built(&format!("native/{name}"))
}

/// The environment variable that runs the tests against the gateway module:
/// with `GATEWAY_MODULE=1`, every list of filters [`gateway_config`] is given
/// becomes one `gateway.wasm` filter with a section per listed filter, and
/// [`shipped_config`] turns a single-filter example into the same example
/// loading the module. The same test cases thus run against both.
pub const MODULE_MODE_VAR: &str = "GATEWAY_MODULE";

/// The gateway module's policies (its configuration's sections, named like
/// the single filters' modules), in the fixed order it runs them.
pub const MODULE_ORDER: [&str; 13] = [
    "sign_auth",
    "ip_acl",
    "ext_auth",
    "access_control",
    "routing",
    "throttling",
    "param_validation",
    "threat_protection",
    "response_cache",
    "error_mapping",
    "request_mapping",
    "circuit_breaker",
    "log_push",
];

/// The environment variable that runs the tests against the native module:
/// with `GATEWAY_NATIVE=1`, everything [`MODULE_MODE_VAR`] does, and the
/// gateway module is loaded as `libgateway.so`, an Envoy dynamic module,
/// instead of `gateway.wasm`.
pub const NATIVE_MODE_VAR: &str = "GATEWAY_NATIVE";

/// Whether this run tests the gateway module (`GATEWAY_MODULE=1`, or the
/// native module with `GATEWAY_NATIVE=1`) rather than the chain of single
/// filters.
pub fn module_mode() -> bool {
    std::env::var(MODULE_MODE_VAR).is_ok_and(|value| value == "1") || native_mode()
}

/// Whether the gateway module runs as the native module (`GATEWAY_NATIVE=1`).
pub fn native_mode() -> bool {
    std::env::var(NATIVE_MODE_VAR).is_ok_and(|value| value == "1")
}

/// A custom metric's name as Envoy shows it: the Wasm modules' metrics
/// are under `wasmcustom.`, the native module's under
/// `dynamicmodulescustom.`. Tests name the Wasm form.
pub fn custom_stat_name(name: &str) -> std::borrow::Cow<'_, str> {
    match name.strip_prefix("wasmcustom.") {
        Some(rest) if native_mode() => format!("dynamicmodulescustom.{rest}").into(),
        _ => name.into(),
    }
}

/// For a test that only makes sense with separate filters: in module mode,
/// says so on the terminal (past the test harness's output capture) and
/// returns true, and the test returns early.
///
/// ```text
/// if skip_in_module_mode("the filters run in an order the module cannot") {
///     return;
/// }
/// ```
pub fn skip_in_module_mode(reason: &str) -> bool {
    if !module_mode() {
        return false;
    }
    let test = thread::current().name().unwrap_or("a test").to_string();
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED in module mode: {test}: {reason}"
    );
    true
}

/// One Wasm filter in the HTTP filter chain.
#[derive(Debug, Clone)]
pub struct WasmFilter {
    /// The module name (`ip_acl` for `ip_acl.wasm`), also used as root and VM id.
    pub module: String,
    /// The plugin configuration, passed as a string exactly as given.
    pub config: String,
}

impl WasmFilter {
    pub fn new(module: &str, config: impl Into<String>) -> Self {
        Self {
            module: module.to_string(),
            config: config.into(),
        }
    }

    pub fn json(module: &str, config: &Value) -> Self {
        Self::new(module, config.to_string())
    }

    /// The gateway module configured with `filters` as its sections (each
    /// filter's configuration as written; one that is not JSON as a JSON
    /// string, which the module hands to that policy's parser as it is, so
    /// the policy refuses it exactly as the single filter would). The
    /// filters must come in the module's order ([`MODULE_ORDER`]).
    pub fn gateway_module(filters: &[WasmFilter]) -> Self {
        let names: Vec<&str> = filters.iter().map(|f| f.module.as_str()).collect();
        let positions: Vec<usize> = names
            .iter()
            .map(|name| {
                MODULE_ORDER
                    .iter()
                    .position(|policy| policy == name)
                    .unwrap_or_else(|| panic!("`{name}` is not a policy of the gateway module"))
            })
            .collect();
        assert!(
            positions.windows(2).all(|pair| pair[0] < pair[1]),
            "the filters {names:?} are not in the gateway module's fixed order {MODULE_ORDER:?}: \
             skip this test in module mode (skip_in_module_mode)"
        );
        let sections: Vec<String> = filters
            .iter()
            .map(|filter| {
                let value = if serde_json::from_str::<Value>(&filter.config).is_ok() {
                    filter.config.clone()
                } else {
                    Value::String(filter.config.clone()).to_string()
                };
                format!("{}: {value}", Value::String(filter.module.clone()))
            })
            .collect();
        Self::new("gateway", format!("{{{}}}", sections.join(", ")))
    }

    /// This filter's entry in Envoy's HTTP filter list (the native module's
    /// in native mode, for the gateway module), as gatewayctl writes it.
    pub fn to_http_filter(&self) -> Value {
        if native_mode() && self.module == "gateway" {
            return native_filter(&self.config);
        }
        gatewayctl::envoy::wasm_filter_entry(
            &self.module,
            &wasm_module(&self.module).to_string_lossy(),
            self.config.clone(),
        )
    }
}

/// The gateway module as the native module, configured with `config`, as
/// gatewayctl writes it.
fn native_filter(config: &str) -> Value {
    gatewayctl::envoy::native_filter_entry(&native_module().to_string_lossy(), config.to_string())
}

const WASM_FILTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
/// The `@type` of Envoy's dynamic-module HTTP filter (the native module).
pub const NATIVE_FILTER_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter";

/// The listener's entry for `filter` (an entry of [`http_filters`]) when
/// its configuration comes through ECDS from the file `path`, as a control
/// plane such as istiod serves it. Write the resource with [`write_ecds`].
/// The Envoy config needs a `node` (xDS subscriptions, file ones too).
pub fn ecds_entry(filter: &Value, path: &Path) -> Value {
    let dir = path.parent().expect("an ECDS file in a directory");
    json!({
        "name": filter["name"],
        "config_discovery": {
            "config_source": {"path_config_source": {
                "path": path,
                "watched_directory": {"path": dir}
            }},
            "type_urls": [filter["typed_config"]["@type"]]
        }
    })
}

/// Writes `filter`'s configuration (an entry of [`http_filters`]) as the ECDS
/// resource file `path`, atomically (Envoy watches for a move).
pub fn write_ecds(path: &Path, filter: &Value) {
    let resource = json!({
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": filter["name"],
            "typed_config": filter["typed_config"]
        }]
    });
    let staging = path.with_extension("tmp");
    fs::write(&staging, resource.to_string()).expect("write ECDS resource");
    fs::rename(&staging, path).expect("move ECDS resource");
}

/// The HTTP filters for `filters`: one per filter, or in module mode the
/// gateway module with them as its sections (none for none).
pub fn http_filters(filters: &[WasmFilter]) -> Vec<Value> {
    if module_mode() && !filters.is_empty() {
        vec![WasmFilter::gateway_module(filters).to_http_filter()]
    } else {
        filters.iter().map(WasmFilter::to_http_filter).collect()
    }
}

/// A minimal gateway: one HTTP listener named `main`, the given filters
/// (in module mode, the gateway module configured with them), and one
/// route `/` (named `default`) to the upstream ports.
pub fn gateway_config(filters: &[WasmFilter], upstream_ports: &[u16]) -> Value {
    listener_config(http_filters(filters), upstream_ports)
}

/// [`gateway_config`] with exactly the filters given, whatever the mode
/// (for tests of the gateway module's own configuration).
pub fn chain_config(filters: &[WasmFilter], upstream_ports: &[u16]) -> Value {
    listener_config(
        filters.iter().map(WasmFilter::to_http_filter).collect(),
        upstream_ports,
    )
}

fn listener_config(mut http_filters: Vec<Value>, upstream_ports: &[u16]) -> Value {
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    }));
    let endpoints: Vec<Value> = upstream_ports
        .iter()
        .map(|port| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}))
        .collect();
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": "main",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "test",
                        "use_remote_address": true,
                        "normalize_path": true,
                        "route_config": {"virtual_hosts": [{
                            "name": "all",
                            "domains": ["*"],
                            "routes": [{
                                "name": "default",
                                "match": {"prefix": "/"},
                                "route": {"cluster": "backend", "timeout": "10s"}
                            }]
                        }]},
                        "http_filters": http_filters
                    }
                }]}]
            }],
            "clusters": [{
                "name": "backend",
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": endpoints}]}
            }]
        }
    })
}

/// Adds a static cluster of one loopback endpoint (a sink, a fallback…).
pub fn add_cluster(config: &mut Value, name: &str, port: u16) {
    let cluster = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
        ]}]}
    });
    match config["static_resources"]["clusters"].as_array_mut() {
        Some(clusters) => clusters.push(cluster),
        None => panic!("the config has no static clusters"),
    }
}

/// What the epochs of one hot-restarted Envoy share.
#[derive(Debug, Clone, Copy)]
pub struct HotRestart {
    /// Names the shared memory and sockets of the epochs; unique per test.
    pub base_id: u32,
    pub drain: Duration,
}

impl HotRestart {
    /// A base id no other running test uses.
    pub fn new(drain: Duration) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            base_id: (std::process::id() % 100_000) * 100 + n % 100,
            drain,
        }
    }

    fn args(self, epoch: u32) -> Vec<String> {
        let drain = self.drain.as_secs().max(1);
        vec![
            "--base-id".into(),
            self.base_id.to_string(),
            "--restart-epoch".into(),
            epoch.to_string(),
            "--drain-time-s".into(),
            drain.to_string(),
            "--parent-shutdown-time-s".into(),
            (drain + 2).to_string(),
        ]
    }
}

/// A running Envoy; stopped when dropped (its log printed if the test failed).
pub struct Envoy {
    child: Child,
    admin: String,
    dir: tempfile::TempDir,
}

#[derive(Debug)]
pub struct StartError {
    pub reason: String,
    pub log: String,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Envoy did not start: {}\n--- envoy log ---\n{}",
            self.reason, self.log
        )
    }
}

impl Envoy {
    /// Starts Envoy with a JSON config and one worker thread.
    pub fn start(config: &Value) -> Self {
        Self::start_with(config, 1).unwrap_or_else(|err| panic!("{err}"))
    }

    /// Starts Envoy with a JSON config (or YAML text in a JSON string) and
    /// `concurrency` workers.
    pub fn start_with(config: &Value, concurrency: u32) -> Result<Self, StartError> {
        let (text, extension) = match config {
            Value::String(yaml) => (yaml.clone(), "yaml"),
            other => (other.to_string(), "json"),
        };
        Self::start_text(&text, extension, concurrency, None)
    }

    /// Starts epoch `epoch` of a hot-restartable Envoy (`--base-id`,
    /// `--restart-epoch`): epoch 0 first, then each next one takes the
    /// listeners over from the one before, which drains for `drain` and
    /// exits. The listeners need fixed ports for the sockets to pass.
    pub fn start_epoch(
        config: &Value,
        concurrency: u32,
        restart: HotRestart,
        epoch: u32,
    ) -> Result<Self, StartError> {
        Self::start_text(
            &config.to_string(),
            "json",
            concurrency,
            Some((restart, epoch)),
        )
    }

    fn start_text(
        config: &str,
        extension: &str,
        concurrency: u32,
        hot_restart: Option<(HotRestart, u32)>,
    ) -> Result<Self, StartError> {
        let dir = tempfile::Builder::new()
            .prefix("gw-envoy-")
            .tempdir()
            .map_err(|e| start_error(format!("temp dir: {e}"), String::new()))?;
        let config_path = dir.path().join(format!("envoy.{extension}"));
        let admin_path = dir.path().join("admin-address");
        let log_path = dir.path().join("envoy.log");
        fs::write(&config_path, config)
            .map_err(|e| start_error(format!("write config: {e}"), String::new()))?;
        let log = File::create(&log_path)
            .map_err(|e| start_error(format!("log file: {e}"), String::new()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| start_error(format!("log file: {e}"), String::new()))?;
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&config_path)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(match hot_restart {
                None => vec!["--disable-hot-restart".to_string()],
                Some((restart, epoch)) => restart.args(epoch),
            })
            .arg("--log-level")
            // ENVOY_LOG_LEVEL=debug shows Envoy's reasoning when a test fails.
            .arg(std::env::var("ENVOY_LOG_LEVEL").unwrap_or_else(|_| "info".into()))
            .arg("--concurrency")
            .arg(concurrency.to_string())
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| {
                start_error(
                    format!("spawn {}: {e}", envoy_bin().display()),
                    String::new(),
                )
            })?;
        let mut envoy = Envoy {
            child,
            admin: String::new(),
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                return Err(start_error(
                    format!("Envoy exited with {status}"),
                    envoy.log(),
                ));
            }
            if envoy.admin.is_empty() {
                if let Ok(address) = fs::read_to_string(&admin_path) {
                    envoy.admin = address.trim().to_string();
                }
            }
            if !envoy.admin.is_empty()
                && envoy
                    .admin_get("/ready")
                    .is_ok_and(|(status, _)| status == 200)
            {
                return Ok(envoy);
            }
            if Instant::now() > deadline {
                return Err(start_error("not ready in time".into(), envoy.log()));
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Runs Envoy to completion on a config that must be refused; returns
    /// the exit status's success and the log.
    pub fn expect_refused(config: &Value) -> String {
        match Self::start_with(config, 1) {
            Ok(envoy) => panic!("Envoy accepted a config it should refuse\n{}", envoy.log()),
            Err(err) => err.log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has ended (an old epoch after a hot restart).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(self.dir.path().join("envoy.log")) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// The admin address `127.0.0.1:port`.
    pub fn admin_address(&self) -> &str {
        &self.admin
    }

    /// GET on the admin interface: (status, body).
    pub fn admin_get(&self, path: &str) -> Result<(u16, String), String> {
        let response = crate::http::get(&format!("http://{}{path}", self.admin), &[])?;
        Ok((response.status, response.text()))
    }

    /// The port a listener was bound to.
    pub fn listener_port(&self, name: &str) -> u16 {
        let (_, body) = self
            .admin_get("/listeners?format=json")
            .unwrap_or_else(|e| panic!("admin /listeners: {e}"));
        let listeners: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        listeners["listener_statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["name"] == name)
            .and_then(|l| l["local_address"]["socket_address"]["port_value"].as_u64())
            .and_then(|port| u16::try_from(port).ok())
            .unwrap_or_else(|| panic!("no listener `{name}` in {body}"))
    }

    /// `http://127.0.0.1:<port of listener main><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.listener_port("main"))
    }

    /// A counter or gauge from `/stats` (0 when not defined yet).
    pub fn stat(&self, name: &str) -> u64 {
        let name = &*custom_stat_name(name);
        let (_, body) = self
            .admin_get(&format!("/stats?filter=^{}$", name.replace('.', "\\.")))
            .unwrap_or_default();
        body.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}: ")))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    }

    /// `/stats/prometheus`, with the native module's metrics under the
    /// names the Wasm modules give them (`gw_…`; Envoy names a dynamic
    /// module's `envoy_dynamicmodulescustom_gw_…{}`).
    pub fn prometheus(&self) -> String {
        let (_, body) = self
            .admin_get("/stats/prometheus")
            .expect("admin /stats/prometheus");
        if !native_mode() {
            return body;
        }
        body.replace("envoy_dynamicmodulescustom_gw_", "gw_")
            .lines()
            .map(|line| match line.split_once("{} ") {
                Some((name, value)) if name.starts_with("gw_") => format!("{name} {value}"),
                _ => line.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until `condition` holds, polling; false on timeout.
    pub fn wait_for(&self, timeout: Duration, mut condition: impl FnMut(&Envoy) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if condition(self) {
                return true;
            }
            thread::sleep(Duration::from_millis(50));
        }
        condition(self)
    }
}

fn start_error(reason: String, log: String) -> StartError {
    StartError { reason, log }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        // SIGTERM first: Envoy exits cleanly, and a wrapper such as
        // scripts/envoy-docker.sh passes it on to the container.
        crate::process::stop(&mut self.child, Duration::from_secs(3));
        if thread::panicking() {
            eprintln!(
                "--- envoy log ({}) ---\n{}",
                self.dir.path().display(),
                self.log()
            );
        }
    }
}

/// `envoy/<file>` adapted to run in a test: every fixed port and path it
/// uses is replaced, and each replacement must apply, so the shipped file
/// cannot drift from what the tests start. In module mode, a single-filter
/// example then loads the gateway module instead, with the filter's
/// configuration as its one section (see [`as_gateway_module`]).
pub fn shipped_config(file: &str, replacements: &[(&str, String)]) -> String {
    let path = workspace_root().join("envoy").join(file);
    let mut text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for (from, to) in replacements {
        assert!(
            text.contains(from),
            "{} no longer contains `{from}`: update the test harness",
            path.display()
        );
        text = text.replace(from, to);
    }
    if native_mode() {
        as_native_module(&as_gateway_module(&text))
    } else if module_mode() {
        as_gateway_module(&text)
    } else {
        text
    }
}

/// A YAML config loading the gateway module turned into the same config
/// loading the built native module: each Wasm filter loading `gateway.wasm`
/// becomes a dynamic-module filter with the same configuration block (its
/// `config:` keys other than `configuration` are dropped), and a shipped
/// native config loads the built `libgateway.so`. Text in, text out, so a
/// test can still edit the result as it would the shipped file.
pub fn as_native_module(yaml: &str) -> String {
    convert_to_native(yaml, &native_module().display().to_string())
}

fn convert_to_native(yaml: &str, native: &str) -> String {
    let indent_of = |line: &str| line.len() - line.trim_start().len();
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    let mut converted = 0;
    let mut at = 0;
    while at < lines.len() {
        let line = lines[at];
        let is_wasm_type = line.trim() == format!("\"@type\": {WASM_FILTER_TYPE}");
        let next_is_config = lines
            .get(at + 1)
            .is_some_and(|next| next.trim() == "config:");
        if !(is_wasm_type && next_is_config) {
            out.push(line.replace(
                "filename: target/native/libgateway.so",
                &format!("filename: {native}"),
            ));
            at += 1;
            continue;
        }
        let indent = indent_of(line);
        let block_end = (at + 2..lines.len())
            .find(|&i| !lines[i].trim().is_empty() && indent_of(lines[i]) <= indent)
            .unwrap_or(lines.len());
        let block = &lines[at + 2..block_end];
        let loads_gateway = block
            .iter()
            .any(|l| l.contains("filename:") && l.contains("gateway.wasm"));
        if !loads_gateway {
            out.push(line.to_string());
            at += 1;
            continue;
        }
        let pad = " ".repeat(indent);
        out.push(format!("{pad}\"@type\": {NATIVE_FILTER_TYPE}"));
        out.push(format!(
            "{pad}dynamic_module_config: {{ module: {{ local: {{ filename: {native} }} }} }}"
        ));
        out.push(format!("{pad}filter_name: gateway"));
        let key_indent = block
            .iter()
            .find(|l| !l.trim().is_empty())
            .map_or(indent + 2, |l| indent_of(l));
        let mut in_configuration = false;
        for l in block {
            if !l.trim().is_empty() && indent_of(l) <= key_indent {
                in_configuration = l.trim() == "configuration:";
                if in_configuration {
                    out.push(format!("{pad}filter_config:"));
                }
                continue;
            }
            if in_configuration {
                out.push(l.to_string());
            }
        }
        converted += 1;
        at = block_end;
    }
    assert!(
        converted > 0 || yaml.contains(NATIVE_FILTER_TYPE),
        "the config loads no gateway module"
    );
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// The `.wasm` file a config line loads (`filename: target/…/ip_acl.wasm`).
fn wasm_path_in(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("filename:")?;
    let path = rest.trim_start().split([' ', '}']).next()?;
    path.ends_with(".wasm").then_some(path)
}

/// `ip_acl` for `…/ip_acl.wasm`.
fn module_name(wasm_path: &str) -> &str {
    let file = wasm_path.rsplit('/').next().unwrap_or(wasm_path);
    file.strip_suffix(".wasm").unwrap_or(file)
}

/// An Envoy YAML config that loads one single-filter module, turned into
/// the same config loading the gateway module with the filter's
/// configuration (its `value: |` block) as the module's only section. A
/// config that already loads the gateway module is returned unchanged; one
/// with several filters has no mechanical module form.
pub fn as_gateway_module(yaml: &str) -> String {
    convert_to_module(yaml, || wasm_module("gateway"))
}

fn convert_to_module(yaml: &str, module_path: impl FnOnce() -> PathBuf) -> String {
    let mut lines: Vec<String> = yaml.lines().map(str::to_string).collect();
    let modules: Vec<(usize, String)> = lines
        .iter()
        .enumerate()
        .filter_map(|(at, line)| Some((at, wasm_path_in(line)?.to_string())))
        .collect();
    let (at, path) = match modules.as_slice() {
        [] => return yaml.to_string(),
        [(_, path)] if module_name(path) == "gateway" => return yaml.to_string(),
        [(at, path)] => (*at, path.clone()),
        _ => panic!(
            "the config loads {} modules; write its gateway-module form by hand",
            modules.len()
        ),
    };
    let module = module_name(&path);
    lines[at] = lines[at].replace(&path, &module_path().display().to_string());
    let value = (at..lines.len())
        .find(|&i| lines[i].trim() == "value: |")
        .unwrap_or_else(|| panic!("no `value: |` configuration block after the module"));
    let indent_of = |line: &str| line.len() - line.trim_start().len();
    let block_indent = lines[value + 1..]
        .iter()
        .find(|line| !line.trim().is_empty())
        .map_or(0, |line| indent_of(line));
    assert!(
        block_indent > indent_of(&lines[value]),
        "the `value: |` block is empty"
    );
    let end = (value + 1..lines.len())
        .find(|&i| !lines[i].trim().is_empty() && indent_of(&lines[i]) < block_indent)
        .unwrap_or(lines.len());
    let pad = " ".repeat(block_indent);
    lines.insert(end, format!("{pad}}}"));
    lines.insert(value + 1, format!("{pad}{{\"{module}\":"));
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// A self-signed certificate for localhost/127.0.0.1 made by
/// `scripts/make-certs.sh` in a fresh directory: (dir, CA certificate PEM).
pub fn make_certs() -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::Builder::new()
        .prefix("gw-tls-")
        .tempdir()
        .unwrap_or_else(|e| panic!("temp dir: {e}"));
    let status = Command::new("bash")
        .arg(workspace_root().join("scripts/make-certs.sh"))
        .arg(dir.path())
        .status()
        .unwrap_or_else(|e| panic!("scripts/make-certs.sh: {e}"));
    assert!(status.success(), "scripts/make-certs.sh failed");
    let cert = fs::read(dir.path().join("ca.pem")).unwrap_or_else(|e| panic!("ca.pem: {e}"));
    (dir, cert)
}

/// Runs `envoy --mode validate` on a config text: (accepted, output).
pub fn validate(config: &str, extension: &str) -> (bool, String) {
    let dir = tempfile::Builder::new()
        .prefix("gw-validate-")
        .tempdir()
        .unwrap_or_else(|e| panic!("temp dir: {e}"));
    let path = dir.path().join(format!("config.{extension}"));
    fs::write(&path, config).unwrap_or_else(|e| panic!("write config: {e}"));
    let output = Command::new(envoy_bin())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&path)
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|e| panic!("run envoy: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Starts YAML config text.
pub fn start_yaml(config: &str, concurrency: u32) -> Envoy {
    Envoy::start_with(&Value::String(config.to_string()), concurrency)
        .unwrap_or_else(|err| panic!("{err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_filter_example_becomes_the_module_with_its_config_as_the_section() {
        let yaml = "\
          - name: gateway.ip_acl
            typed_config:
              config:
                vm_config:
                  code: { local: { filename: target/wasm32-wasip1/release/ip_acl.wasm } }
                configuration:
                  value: |
                    {
                      \"deny\": [\"10.0.0.0/8\"]
                    }
          - name: envoy.filters.http.router
";
        let converted = convert_to_module(yaml, || PathBuf::from("/m/gateway.wasm"));
        assert_eq!(
            converted,
            "\
          - name: gateway.ip_acl
            typed_config:
              config:
                vm_config:
                  code: { local: { filename: /m/gateway.wasm } }
                configuration:
                  value: |
                    {\"ip_acl\":
                    {
                      \"deny\": [\"10.0.0.0/8\"]
                    }
                    }
          - name: envoy.filters.http.router
"
        );
        assert_eq!(
            convert_to_module(&converted, || PathBuf::from("unused")),
            converted,
            "a config loading the module stays as it is"
        );
    }

    #[test]
    fn the_module_becomes_the_native_module_with_the_same_configuration_block() {
        let yaml = "\
          - name: gateway.module
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: gateway
                vm_config:
                  code: { local: { filename: /m/gateway.wasm } }
                configuration:
                  \"@type\": type.googleapis.com/google.protobuf.StringValue
                  value: |
                    {\"ip_acl\": {}}
                failure_policy: FAIL_CLOSED
          - name: envoy.filters.http.router
";
        assert_eq!(
            convert_to_native(yaml, "/n/libgateway.so"),
            "\
          - name: gateway.module
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config: { module: { local: { filename: /n/libgateway.so } } }
              filter_name: gateway
              filter_config:
                  \"@type\": type.googleapis.com/google.protobuf.StringValue
                  value: |
                    {\"ip_acl\": {}}
          - name: envoy.filters.http.router
"
        );
        let shipped = "      module: { local: { filename: target/native/libgateway.so } }\n";
        assert_eq!(
            convert_to_native(&format!("\"@type\": {NATIVE_FILTER_TYPE}\n{shipped}"), "/n/x.so"),
            format!("\"@type\": {NATIVE_FILTER_TYPE}\n      module: {{ local: {{ filename: /n/x.so }} }}\n")
        );
    }

    #[test]
    fn listed_filters_become_the_sections_of_one_module_config() {
        let module = WasmFilter::gateway_module(&[
            WasmFilter::new("sign_auth", r#"{"apps": []}"#),
            WasmFilter::new("log_push", "{not json"),
        ]);
        assert_eq!(module.module, "gateway");
        assert_eq!(
            module.config,
            r#"{"sign_auth": {"apps": []}, "log_push": "{not json"}"#
        );
    }

    #[test]
    #[should_panic(expected = "not in the gateway module's fixed order")]
    fn filters_out_of_the_module_order_cannot_become_the_module() {
        WasmFilter::gateway_module(&[
            WasmFilter::new("log_push", "{}"),
            WasmFilter::new("ip_acl", "{}"),
        ]);
    }
}
