//! Where the workspace is, and what the machine and its tools are: the
//! header of every report.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (the parent of this crate's directory): reports and
/// the tools installed under `target/tools` are relative to it.
pub fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The trimmed stdout of `sh -c command`; empty when it cannot run.
pub fn sh(command: &str) -> String {
    Command::new("sh")
        .args(["-c", command])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The date and time, UTC.
pub fn date() -> String {
    sh("date -u '+%Y-%m-%d %H:%M UTC'")
}

/// The load averages over 1, 5 and 15 minutes.
pub fn load_average() -> String {
    sh("cut -d' ' -f1-3 /proc/loadavg")
}

/// The version of `package` in the workspace's Cargo.lock.
pub fn locked(root: &Path, package: &str) -> String {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let header = format!("name = \"{package}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == header {
            return lines
                .next()
                .and_then(|l| l.strip_prefix("version = "))
                .unwrap_or("")
                .trim_matches('"')
                .to_owned();
        }
    }
    String::new()
}

/// The wall clock in milliseconds since the Unix epoch: a timestamp that
/// another process on this machine can compare with its own.
pub fn unix_ms() -> u64 {
    unix_us() / 1000
}

/// The wall clock in microseconds since the Unix epoch.
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
