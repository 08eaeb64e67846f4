//! A real OCI registry per test (Debian's `docker-registry`, the CNCF
//! Distribution server, which `scripts/setup.sh` installs): plain HTTP on
//! loopback with an ephemeral port, storage in a temporary directory, its own
//! generated `config.yml`, stopped when dropped. And `skopeo` (Debian's
//! package too) to copy images in and out of it as a user would.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The registry server: `DOCKER_REGISTRY_BIN`, else Debian's.
pub fn registry_bin() -> PathBuf {
    crate::process::installed(
        "DOCKER_REGISTRY_BIN",
        "/usr/bin/docker-registry",
        "Debian's docker-registry",
    )
}

/// `skopeo`: `SKOPEO_BIN`, else Debian's.
pub fn skopeo_bin() -> PathBuf {
    crate::process::installed("SKOPEO_BIN", "/usr/bin/skopeo", "Debian's skopeo")
}

/// A running registry; stopped when dropped (its log printed if the test failed).
pub struct Registry {
    child: Child,
    address: String,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry on `127.0.0.1:<ephemeral port>` and waits until it
    /// answers `GET /v2/`.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gw-registry-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let storage = dir.path().join("storage");
        fs::create_dir(&storage).unwrap_or_else(|e| panic!("storage dir: {e}"));
        // No auth, no TLS, loopback only; port 0 lets the kernel pick, and
        // the registry logs the address it bound ("listening on …").
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:0\n  secret: gateway-filters-test\n",
            storage.display()
        );
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).unwrap_or_else(|e| panic!("write config.yml: {e}"));
        let log_path = dir.path().join("registry.log");
        let log = File::create(&log_path).unwrap_or_else(|e| panic!("log file: {e}"));
        let log_err = log.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
        let child = Command::new(registry_bin())
            .arg("serve")
            .arg(&config_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", registry_bin().display()));
        let mut registry = Registry {
            child,
            address: String::new(),
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = registry.child.try_wait() {
                panic!(
                    "docker-registry exited with {status}\n--- registry log ---\n{}",
                    registry.log()
                );
            }
            if registry.address.is_empty() {
                if let Some(address) = listening_address(&registry.log()) {
                    registry.address = address;
                }
            }
            if !registry.address.is_empty()
                && crate::http::get(&format!("http://{}/v2/", registry.address), &[])
                    .is_ok_and(|r| r.status == 200)
            {
                return registry;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry not ready in time\n--- registry log ---\n{}",
                registry.log()
            );
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// `127.0.0.1:port`, for image references: `<address>/<repo>:<tag>`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The registry's own log.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(self.dir.path().join("registry.log")) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }
}

/// The address in the registry's `listening on 127.0.0.1:NNNN` log line.
fn listening_address(log: &str) -> Option<String> {
    let at = log.find("listening on ")? + "listening on ".len();
    let address: String = log[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    address.rsplit_once(':')?.1.parse::<u16>().ok()?;
    Some(address)
}

impl Drop for Registry {
    fn drop(&mut self) {
        crate::process::stop(&mut self.child, Duration::from_secs(3));
        if thread::panicking() {
            eprintln!(
                "--- registry log ({}) ---\n{}",
                self.dir.path().display(),
                self.log()
            );
        }
    }
}

/// Runs `skopeo <args>` with a policy that accepts any image (the test's
/// own, so the machine's /etc/containers/policy.json does not matter);
/// panics with skopeo's output unless it succeeds.
pub fn skopeo(work_dir: &Path, args: &[&str]) -> Output {
    let policy = work_dir.join("skopeo-policy.json");
    if !policy.exists() {
        fs::write(
            &policy,
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .unwrap_or_else(|e| panic!("write {}: {e}", policy.display()));
    }
    let output = Command::new(skopeo_bin())
        .arg("--policy")
        .arg(&policy)
        .args(args)
        .current_dir(work_dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", skopeo_bin().display()));
    assert!(
        output.status.success(),
        "skopeo {} failed ({}):\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[cfg(test)]
mod tests {
    use super::listening_address;

    #[test]
    fn finds_the_bound_address_in_the_log() {
        let log = "time=\"…\" level=info msg=\"redis not configured\"\n\
                   time=\"…\" level=info msg=\"listening on 127.0.0.1:41367\" go.version=go1.19.8\n";
        assert_eq!(listening_address(log).as_deref(), Some("127.0.0.1:41367"));
        assert_eq!(listening_address("level=info msg=\"starting\""), None);
    }
}
