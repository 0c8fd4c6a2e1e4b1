//! `bench load idle`: the server's resident memory per held connection.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use crate::harness::proc_stats::{rss_kib, settled};
use crate::harness::ws::{check_loopback, connect};

/// The idle mode: open `conns` connections, hold them, and read the server's
/// resident memory (process `pid`) before and after.
/// The idle mode: open `conns` connections, hold them, and read the server's
/// resident memory (process `pid`) before and after.
///
/// # Errors
///
/// When a connection fails or the server is gone.
pub async fn idle(url: &str, conns: usize, pid: u32) -> Result<serde_json::Value> {
    check_loopback(url)?;
    let before = rss_kib(pid)?;
    let mut held = Vec::with_capacity(conns);
    for chunk in 0..conns.div_ceil(100) {
        let n = 100.min(conns - chunk * 100);
        let opened = futures_util::future::try_join_all((0..n).map(|_| connect(url))).await?;
        held.extend(opened);
    }
    // Wait until the server has finished its per-connection set-up (welcome,
    // buffers): RSS unchanged over three samples 100 ms apart, at most 10 s.
    let after = settled(Duration::from_secs(10), || async { rss_kib(pid) }).await?;
    drop(held);
    Ok(json!({
        "mode": "idle", "url": url, "conns": conns, "rss_before_kib": before, "rss_after_kib": after,
        "kib_per_conn": (after.saturating_sub(before)) as f64 / conns as f64,
    }))
}
