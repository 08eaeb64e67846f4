//! A real Prometheus per test (Debian's `prometheus`, which
//! `scripts/setup.sh` installs, with `promtool`): loopback only, a free
//! port, a temporary data directory, the repository's rules, stopped when
//! dropped.

use crate::process::{self, free_port};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(60);

use crate::process::installed as binary;

/// The server: `PROMETHEUS_BIN`, else Debian's.
pub fn prometheus_bin() -> PathBuf {
    binary("PROMETHEUS_BIN", "/usr/bin/prometheus", "prometheus")
}

/// Prometheus's checker: `PROMTOOL_BIN`, else Debian's.
pub fn promtool_bin() -> PathBuf {
    binary("PROMTOOL_BIN", "/usr/bin/promtool", "prometheus")
}

/// Runs `promtool ARGS` in `dir`: (success, output).
pub fn promtool(dir: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(promtool_bin())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("promtool: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

pub struct Prometheus {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl Prometheus {
    /// Scrapes `targets` (admin addresses, `/stats/prometheus`) as job
    /// `gateway` every second and evaluates the repository's rules every
    /// second.
    pub fn start(targets: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gw-prometheus-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let rules = crate::envoy::workspace_root().join("monitoring/rules");
        let config = format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             rule_files: [ '{}/recording.yml', '{}/alerts.yml' ]\n\
             scrape_configs:\n  - job_name: gateway\n    metrics_path: /stats/prometheus\n    \
             static_configs: [ {{ targets: [ {} ] }} ]\n",
            rules.display(),
            rules.display(),
            targets.join(", ")
        );
        fs::write(dir.path().join("prometheus.yml"), config).expect("write config");
        let port = free_port();
        let log = fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new(prometheus_bin())
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", prometheus_bin().display()));
        let mut server = Self { dir, port, child };
        let deadline = Instant::now() + START_TIMEOUT;
        while crate::http::get(&server.url("/-/ready"), &[]).map_or(true, |r| r.status != 200) {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("Prometheus exited with {status}:\n{}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus not ready:\n{}",
                server.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query: each sample's labels and value.
    pub fn query(&self, query: &str) -> Vec<(Value, f64)> {
        let url = format!(
            "{}?query={}",
            self.url("/api/v1/query"),
            form_urlencoded(query)
        );
        let Ok(response) = crate::http::get(&url, &[]) else {
            return Vec::new();
        };
        let body = response.json();
        body["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|sample| {
                let value = sample["value"][1].as_str()?.parse().ok()?;
                Some((sample["metric"].clone(), value))
            })
            .collect()
    }

    /// Waits up to `within` for `query` to have a sample for which `test`
    /// holds; that sample's value.
    pub fn wait_for(
        &self,
        query: &str,
        within: Duration,
        test: impl Fn(f64) -> bool,
    ) -> Option<f64> {
        let deadline = Instant::now() + within;
        loop {
            if let Some((_, value)) = self.query(query).into_iter().find(|(_, v)| test(*v)) {
                return Some(value);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// The alerts Prometheus holds now: (name, state, labels).
    pub fn alerts(&self) -> Vec<(String, String, Value)> {
        let Ok(response) = crate::http::get(&self.url("/api/v1/alerts"), &[]) else {
            return Vec::new();
        };
        response.json()["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|alert| {
                (
                    alert["labels"]["alertname"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    alert["state"].as_str().unwrap_or("").to_string(),
                    alert["labels"].clone(),
                )
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        process::stop(&mut self.child, Duration::from_secs(5));
    }
}

fn form_urlencoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}
