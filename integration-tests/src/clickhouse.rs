//! A real ClickHouse server per test (Debian's `clickhouse-server`, which
//! `scripts/setup.sh` installs): loopback only, free ports, a temporary data
//! directory, stopped when dropped. It can be stopped and started again on
//! the same ports and data, to play a sink outage.

use crate::process::{self, free_port};
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The server binary: `CLICKHOUSE_BIN`, else Debian's.
pub fn clickhouse_bin() -> PathBuf {
    crate::process::installed(
        "CLICKHOUSE_BIN",
        "/usr/sbin/clickhouse-server",
        "clickhouse-server",
    )
}

pub struct ClickHouse {
    dir: tempfile::TempDir,
    http_port: u16,
    child: Option<Child>,
}

impl ClickHouse {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gw-clickhouse-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let http_port = free_port();
        let tcp_port = free_port();
        let status = Command::new("bash")
            .arg(crate::envoy::workspace_root().join("scripts/clickhouse-config.sh"))
            .arg(dir.path())
            .arg(http_port.to_string())
            .arg(tcp_port.to_string())
            .status()
            .unwrap_or_else(|e| panic!("scripts/clickhouse-config.sh: {e}"));
        assert!(status.success(), "scripts/clickhouse-config.sh failed");
        let mut server = Self {
            dir,
            http_port,
            child: None,
        };
        server.resume();
        server
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// Starts the server (again) on the same ports and data.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "ClickHouse is already running");
        let child = Command::new(clickhouse_bin())
            .arg(format!(
                "--config-file={}",
                self.dir.path().join("config.xml").display()
            ))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", clickhouse_bin().display()));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.get("/ping").is_ok_and(|body| body.starts_with("Ok")) {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("ClickHouse exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "ClickHouse not ready in time:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Freezes the server (SIGSTOP): connections are accepted by the kernel
    /// and requests queue up, but nothing is read or answered until
    /// [`thaw`](Self::thaw). A store that stalls, as a long GC pause does.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("ClickHouse is running");
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("kill {signal}: {e}"));
        assert!(status.success(), "kill {signal} {} failed", child.id());
    }

    /// Runs each statement of a script such as `envoy/log-push-clickhouse.sql`
    /// (statements end with `;` at the end of a line; the HTTP interface
    /// takes one per request).
    pub fn run_script(&self, script: &str) {
        for statement in statements(script) {
            self.query(&statement);
        }
    }

    /// Creates the log tables of `envoy/log-push-clickhouse.sql`, with a
    /// `String` column for each extra header column (`header_x_tenant`),
    /// as the README tells users to: add the column to the table, then
    /// create the view again.
    pub fn create_log_tables(&self, header_columns: &[&str]) {
        let script = log_tables_script();
        let statements = statements(&script);
        self.run_script(&script);
        if header_columns.is_empty() {
            return;
        }
        for column in header_columns {
            self.query(&format!(
                "ALTER TABLE gateway_calls_log ADD COLUMN {column} String"
            ));
        }
        self.query("DROP TABLE gateway_calls");
        for view in statements.iter().filter(|s| s.contains("CREATE VIEW")) {
            self.query(view);
        }
    }

    /// Stops the server; the data stays for [`resume`](Self::resume).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::stop(&mut child, Duration::from_secs(20));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    fn get(&self, path: &str) -> Result<String, String> {
        let response = crate::http::get(&self.url(path), &[])?;
        (response.status == 200)
            .then(|| response.text())
            .ok_or_else(|| format!("status {}", response.status))
    }

    /// Runs a query over the HTTP interface; panics with ClickHouse's
    /// message on an error.
    pub fn query(&self, sql: &str) -> String {
        match crate::http::post(&self.url("/"), &[], sql.as_bytes()) {
            Ok(response) if response.status == 200 => response.text(),
            Ok(response) => panic!(
                "ClickHouse answered {} to `{sql}`: {}",
                response.status,
                response.text()
            ),
            Err(e) => panic!("ClickHouse query `{sql}` failed: {e}"),
        }
    }

    pub fn log(&self) -> String {
        ["server.log", "error.log"]
            .iter()
            .filter_map(|f| fs::read_to_string(self.dir.path().join(f)).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The statements of a script: text up to each line that ends with `;`,
/// without comment lines; blank statements are left out.
pub fn statements(script: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in script.lines() {
        if line.trim_start().starts_with("--") {
            continue;
        }
        let line = line.trim_end();
        match line.strip_suffix(';') {
            Some(last) => {
                current.push_str(last);
                statements.push(std::mem::take(&mut current));
            }
            None => {
                current.push_str(line);
                current.push('\n');
            }
        }
    }
    statements.push(current);
    statements.retain(|s| !s.trim().is_empty());
    statements
}

/// The demo's and the tests' log tables, from `envoy/log-push-clickhouse.sql`.
pub fn log_tables_script() -> String {
    let path = crate::envoy::workspace_root().join("envoy/log-push-clickhouse.sql");
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::statements;

    #[test]
    fn a_script_splits_at_lines_ending_in_a_semicolon() {
        let script = "-- a comment; not a statement\nCREATE TABLE t\n(a String) -- c\nENGINE = Log;\n\n-- x\nCREATE VIEW v AS SELECT * FROM t;\n";
        assert_eq!(
            statements(script),
            vec![
                "CREATE TABLE t\n(a String) -- c\nENGINE = Log".to_string(),
                "\nCREATE VIEW v AS SELECT * FROM t".to_string()
            ]
        );
        assert_eq!(statements("SELECT 1\n"), vec!["SELECT 1\n".to_string()]);
        assert!(statements("-- only\n\n").is_empty());
    }

    #[test]
    fn the_log_tables_script_has_the_table_then_the_view() {
        let script = super::log_tables_script();
        let statements = statements(&script);
        assert_eq!(statements.len(), 2, "{statements:?}");
        assert!(statements[0].contains("CREATE TABLE IF NOT EXISTS gateway_calls_log"));
        assert!(statements[1].contains("CREATE VIEW IF NOT EXISTS gateway_calls AS"));
    }
}
