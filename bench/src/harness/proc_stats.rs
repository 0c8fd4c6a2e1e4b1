//! A process's CPU time and resident memory, read from `/proc`: the same
//! reading for every server, every scenario and the load generator itself.

use std::fmt::Display;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// CPU time (user and system) process `pid` has used so far, in seconds
/// (`/proc/PID/stat`, in clock ticks of `getconf CLK_TCK`); `pid` may be
/// `"self"`.
///
/// # Errors
///
/// When the process is gone or its `stat` cannot be read.
pub fn cpu_seconds(pid: impl Display) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: count after it.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("no ')' in /proc/PID/stat")?
        .1
        .split_whitespace()
        .collect();
    // utime and stime: fields 14 and 15, 12 and 13 after the name.
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i)
            .with_context(|| format!("no field {i} in /proc/{pid}/stat"))?
            .parse::<u64>()? as f64)
    };
    Ok((ticks(11)? + ticks(12)?) / clock_ticks())
}

/// Clock ticks per second (`getconf CLK_TCK`, read once; 100 where it
/// cannot be read, as on every Linux this runs on).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The resident memory of process `pid` in KiB, from `/proc/<pid>/status`.
///
/// # Errors
///
/// When the process is gone or has no `VmRSS` line.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

/// `read` once it has stopped moving: three equal samples 100 ms apart, at
/// most `limit` (then the last sample). Used for a server's memory after
/// its connections' set-up, and for its count of connections.
///
/// # Errors
///
/// When a sample fails.
pub async fn settled<F, Fut>(limit: Duration, mut read: F) -> Result<u64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64>>,
{
    let deadline = Instant::now() + limit;
    let mut samples = vec![read().await?];
    while Instant::now() < deadline
        && !(samples.len() >= 3
            && samples[samples.len() - 3..]
                .windows(2)
                .all(|w| w[0] == w[1]))
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        samples.push(read().await?);
    }
    Ok(samples.last().copied().unwrap_or_default())
}
