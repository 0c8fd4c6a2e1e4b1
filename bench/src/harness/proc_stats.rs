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

/// The CPU time (user and system) a `redis-server` has used so far, in
/// seconds, from its own `INFO cpu` (it is not our child, and runs on
/// neither pinned core): one plain RESP request on loopback, bounded.
///
/// # Errors
///
/// When Redis does not answer within 5 s, or the answer has no CPU lines.
pub fn redis_cpu_seconds(addr: std::net::SocketAddr) -> Result<f64> {
    use std::io::{Read as _, Write as _};
    let mut tcp = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    tcp.write_all(b"INFO cpu\r\n")?;
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    // A bulk string, `$LEN\r\n...\r\n`: read until all of it is in.
    loop {
        let n = tcp.read(&mut buf)?;
        anyhow::ensure!(n > 0, "redis closed before its INFO was in");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        if let Some((head, body)) = text.split_once("\r\n")
            && let Some(len) = head.strip_prefix('$').and_then(|l| l.parse::<usize>().ok())
            && body.len() >= len
        {
            return parse_redis_cpu(body);
        }
        anyhow::ensure!(text.len() < 1 << 16, "redis's INFO cpu is too long");
    }
}

/// `used_cpu_sys` + `used_cpu_user` of an `INFO cpu` answer, seconds.
fn parse_redis_cpu(info: &str) -> Result<f64> {
    let field = |name: &str| -> Result<f64> {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .with_context(|| format!("no {name} in redis's INFO cpu"))?
            .trim()
            .parse::<f64>()
            .with_context(|| format!("{name} in redis's INFO cpu"))
    };
    Ok(field("used_cpu_sys")? + field("used_cpu_user")?)
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

/// The summed resident memory of `pids`, once settled (at most `limit`):
/// a server of several processes (two nodes) is counted as one.
///
/// # Errors
///
/// When a process is gone.
pub async fn settled_rss(pids: &[u32], limit: Duration) -> Result<u64> {
    settled(limit, || async { pids.iter().map(|&p| rss_kib(p)).sum() }).await
}

/// The summed CPU time of `pids`, in seconds.
///
/// # Errors
///
/// When a process is gone.
pub fn cpu_seconds_of(pids: &[u32]) -> Result<f64> {
    pids.iter().map(|&p| cpu_seconds(p)).sum()
}

/// CPU seconds this process and `server` (when given) used between `from`
/// and `to`, read at those instants by a task of its own: the load
/// generator's share beside the server's tells which side is the bottleneck.
/// Await the handle after `to`.
pub fn cpu_over(
    server: Option<u32>,
    from: Instant,
    to: Instant,
) -> tokio::task::JoinHandle<Result<(f64, Option<f64>)>> {
    tokio::spawn(async move {
        let read = || -> Result<(f64, Option<f64>)> {
            Ok((cpu_seconds("self")?, server.map(cpu_seconds).transpose()?))
        };
        tokio::time::sleep_until(from.into()).await;
        let (own_before, server_before) = read()?;
        tokio::time::sleep_until(to.into()).await;
        let (own_after, server_after) = read()?;
        Ok((
            own_after - own_before,
            server_after.zip(server_before).map(|(a, b)| a - b),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_cpu_is_its_user_and_system_time_not_its_childrens() {
        let info = "# CPU\r\nused_cpu_sys:1.250000\r\nused_cpu_user:2.500000\r\n\
                    used_cpu_sys_children:9.0\r\nused_cpu_user_children:9.0\r\n";
        assert!((parse_redis_cpu(info).unwrap() - 3.75).abs() < 1e-9);
        assert!(parse_redis_cpu("# CPU\r\n").is_err());
    }
}
