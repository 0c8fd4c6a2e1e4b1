//! `bench load echo`: closed-loop echo, latency histogram, every echo checked.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::proc_stats::cpu_over;
use crate::harness::ws::{check_loopback, connect};

/// A reply within this long, or the run fails.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The echo mode: `conns` connections each send one message of `bytes`
/// bytes, wait for its echo and repeat; measured for `duration` after `warmup`.
/// With `typed`, messages are the protocol's `echo` (whose answer is the
/// same JSON), else plain text. With `server_pid`, the server's CPU time over
/// the measured window is read from `/proc`, and so is this process's own,
/// to tell which side is the bottleneck.
pub async fn echo(
    url: &str,
    conns: usize,
    bytes: usize,
    warmup: Duration,
    duration: Duration,
    typed: bool,
    server_pid: Option<u32>,
) -> Result<serde_json::Value> {
    check_loopback(url)?;
    // Connections are opened before `start` (they wait for it), so set-up is not measured.
    let start = Instant::now() + Duration::from_millis(200 + conns as u64 * 2);
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let cpu_probe = cpu_over(server_pid, measure_from, end);
    let mut tasks = Vec::with_capacity(conns);
    for c in 0..conns {
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut ws = connect(&url).await?;
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut id = (c as u64) << 40;
            tokio::time::sleep_until(start.into()).await;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                id += 1;
                let text = if typed {
                    shared::ClientMessage::Echo {
                        id,
                        body: "x".repeat(bytes),
                    }
                    .to_json()
                } else {
                    let mut t = id.to_string();
                    t.push(' ');
                    t.push_str(&"x".repeat(bytes.saturating_sub(t.len())));
                    t
                };
                ws.send(Message::text(text.clone())).await?;
                let reply = loop {
                    let message = tokio::time::timeout(REPLY_TIMEOUT, ws.next())
                        .await
                        .context("no echo within the timeout")?
                        .context("the server closed")??;
                    match message {
                        Message::Text(reply)
                            if typed && !reply.starts_with(r#"{"type":"echo""#) => {}
                        Message::Text(reply) => break reply,
                        _ => {}
                    }
                };
                if reply.as_str() != text {
                    bail!("an echo differs from what was sent");
                }
                if now >= measure_from {
                    histogram.record(now.elapsed().as_micros().max(1) as u64)?;
                }
            }
            let _ = ws.close(None).await;
            anyhow::Ok(histogram)
        }));
    }
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for task in tasks {
        total.add(task.await??)?;
    }
    let (own_cpu, server_cpu) = cpu_probe.await??;
    let seconds = duration.as_secs_f64();
    Ok(json!({
        "mode": "echo", "url": url, "conns": conns, "bytes": bytes, "typed": typed,
        "messages": total.len(), "seconds": seconds,
        "msgs_per_s": total.len() as f64 / seconds,
        "p50_us": total.value_at_quantile(0.5), "p99_us": total.value_at_quantile(0.99),
        "p999_us": total.value_at_quantile(0.999),
        // Share of one core used over the measured window.
        "loadgen_cpu": own_cpu / seconds,
        "server_cpu": server_cpu.map(|cpu| cpu / seconds),
        "msgs_per_server_cpu_s": server_cpu.map(|cpu| total.len() as f64 / cpu.max(0.01)),
    }))
}
