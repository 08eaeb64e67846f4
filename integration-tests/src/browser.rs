//! A real headless browser (Debian's `chromium`, which `scripts/setup.sh`
//! installs) rendering a page the way a reader's browser does.

use crate::process;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const RENDER_TIMEOUT: Duration = Duration::from_secs(90);

/// `CHROMIUM_BIN`, else Debian's.
pub fn chromium_bin() -> PathBuf {
    process::installed("CHROMIUM_BIN", "/usr/bin/chromium", "chromium")
}

/// The DOM of a local page once rendered (scripts run, styles applied), as
/// chromium serialises it.
pub fn rendered_dom(page: &Path) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let output = tempfile::NamedTempFile::new().expect("output file");
    let mut child = Command::new(chromium_bin())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdout(output.reopen().expect("reopen"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("chromium: {e}"));
    let deadline = Instant::now() + RENDER_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                assert!(status.success(), "chromium exited with {status}");
                break;
            }
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            _ => {
                process::stop(&mut child, Duration::from_secs(2));
                panic!(
                    "chromium did not render {} within {RENDER_TIMEOUT:?}",
                    page.display()
                );
            }
        }
    }
    std::fs::read_to_string(output.path()).expect("the DOM")
}
