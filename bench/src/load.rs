//! The load generator: echo (closed loop, latency histogram), burst, idle.
//! Every loop is bounded in time and count; only loopback URLs are used.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// A connection opened within this long, or the run fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A reply within this long, or the run fails.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

fn check_loopback(url: &str) -> Result<()> {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', ':']).next())
        .unwrap_or_default();
    if !(host == "localhost" || host.starts_with("127.") || host == "[") {
        bail!("load tests only target loopback addresses, not {host:?}");
    }
    Ok(())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Result<Ws> {
    let (ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .context("connect timed out")??;
    if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = ws.get_ref() {
        tcp.set_nodelay(true)?;
    }
    Ok(ws)
}

/// CPU time (user + system) of process `pid` (`"self"` for this one), in
/// seconds, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // After the command name (which may hold spaces), utime and stime are the 12th and 13th fields.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("no field {i} in /proc/{pid}/stat"))
    };
    // USER_HZ is 100 on every Linux this runs on.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

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
    let server = server_pid.map(|pid| pid.to_string());
    let cpu_probe = tokio::spawn(async move {
        let read = |server: &Option<String>| -> Result<(f64, Option<f64>)> {
            let own = cpu_seconds("self")?;
            let server = server.as_deref().map(cpu_seconds).transpose()?;
            Ok((own, server))
        };
        tokio::time::sleep_until(measure_from.into()).await;
        let before = read(&server)?;
        tokio::time::sleep_until(end.into()).await;
        let after = read(&server)?;
        anyhow::Ok((before, after))
    });
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
    let ((own_before, server_before), (own_after, server_after)) = cpu_probe.await??;
    let seconds = duration.as_secs_f64();
    let server_cpu = server_after
        .zip(server_before)
        .map(|(after, before)| after - before);
    Ok(json!({
        "mode": "echo", "url": url, "conns": conns, "bytes": bytes, "typed": typed,
        "messages": total.len(), "seconds": seconds,
        "msgs_per_s": total.len() as f64 / seconds,
        "p50_us": total.value_at_quantile(0.5), "p99_us": total.value_at_quantile(0.99),
        "p999_us": total.value_at_quantile(0.999),
        // Share of one core used over the measured window.
        "loadgen_cpu": (own_after - own_before) / seconds,
        "server_cpu": server_cpu.map(|cpu| cpu / seconds),
        "msgs_per_server_cpu_s": server_cpu.map(|cpu| total.len() as f64 / cpu.max(0.01)),
    }))
}

/// The `"seq":N` of a push, read without a full JSON parse.
fn seq_of(text: &str) -> Option<u64> {
    let rest = &text[text.find(r#""seq":"#)? + 6..];
    rest[..rest.find(|c: char| !c.is_ascii_digit())?]
        .parse()
        .ok()
}

/// The burst mode: connect to a URL that pushes `count` messages on connect.
pub async fn burst(url: &str, count: u64) -> Result<serde_json::Value> {
    check_loopback(url)?;
    let mut ws = connect(url).await?;
    let mut first = None;
    let mut expected = 1;
    let deadline = Instant::now() + Duration::from_secs(120);
    while expected <= count {
        let message = tokio::time::timeout_at(deadline.into(), ws.next())
            .await
            .context("the burst did not finish in 120 s")?
            .context("the server closed")??;
        let Message::Text(text) = message else {
            continue;
        };
        if let Some(seq) = seq_of(&text) {
            first.get_or_insert_with(Instant::now);
            if seq != expected {
                bail!("push {seq} arrived where {expected} was expected");
            }
            expected += 1;
        }
    }
    let elapsed = first.map_or(Duration::ZERO, |f| f.elapsed()).as_secs_f64();
    let _ = ws.close(None).await;
    Ok(json!({
        "mode": "burst", "url": url, "count": count, "first_to_last_ms": elapsed * 1000.0,
        "msgs_per_s": count as f64 / elapsed.max(1e-9),
    }))
}

/// The resident memory of process `pid` in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

/// The idle mode: open `conns` connections, hold them, and read the server's
/// resident memory (process `pid`) before and after.
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
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut samples = vec![rss_kib(pid)?];
    while Instant::now() < deadline
        && !(samples.len() >= 3
            && samples[samples.len() - 3..]
                .windows(2)
                .all(|w| w[0] == w[1]))
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        samples.push(rss_kib(pid)?);
    }
    let after = samples.last().copied().unwrap_or(before);
    drop(held);
    Ok(json!({
        "mode": "idle", "url": url, "conns": conns, "rss_before_kib": before, "rss_after_kib": after,
        "kib_per_conn": (after.saturating_sub(before)) as f64 / conns as f64,
    }))
}

#[cfg(test)]
mod tests {
    use shared::PushEncoder;
    use tokio_tungstenite::WebSocketStream;

    use super::*;

    #[test]
    fn seq_is_read_from_a_push() {
        assert_eq!(
            seq_of(r#"{"type":"push","seq":42,"sent_at_ms":1,"body":"b"}"#),
            Some(42)
        );
        assert_eq!(seq_of(r#"{"type":"welcome"}"#), None);
    }

    /// Our server on a free loopback port, pushes and pings off, as the benchmarks run it.
    async fn our_server() -> Result<(String, testbed::TestServer)> {
        let server = testbed::TestServer::start(testbed::quiet_config(&[])?).await?;
        Ok((server.ws_url(""), server))
    }

    /// A loopback server that answers each connection with `serve`.
    async fn fixture<F, Fut>(serve: F) -> Result<String>
    where
        F: Fn(WebSocketStream<tokio::net::TcpStream>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let serve = std::sync::Arc::new(serve);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let serve = serve.clone();
                tokio::spawn(async move {
                    if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                        let _ = serve(ws).await;
                    }
                });
            }
        });
        Ok(format!("ws://{addr}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_mode_measures_our_server_and_checks_what_it_gets() -> Result<()> {
        let (base, server) = our_server().await?;
        let short = Duration::from_millis(300);
        for (path, typed) in [("/echo", false), ("/ws", true)] {
            let r = echo(
                &format!("{base}{path}"),
                4,
                20,
                Duration::ZERO,
                short,
                typed,
                None,
            )
            .await?;
            assert!(r["messages"].as_u64() > Some(0), "{r}");
            assert!(r["p50_us"].as_u64() > Some(0), "{r}");
        }
        let r = burst(&format!("{base}/ws?burst=5000"), 5000).await?;
        assert_eq!(r["count"], 5000);
        assert!(r["first_to_last_ms"].as_f64() > Some(0.0), "{r}");
        // The server runs in this process: its RSS is ours.
        let r = idle(&format!("{base}/ws"), 50, std::process::id()).await?;
        assert_eq!(r["conns"], 50);
        assert!(
            r["rss_after_kib"].as_u64() >= r["rss_before_kib"].as_u64(),
            "{r}"
        );
        server.shutdown().await?;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_raw_server_echoes_and_bursts_in_order() -> Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("ws://{}", listener.local_addr()?);
        let server = tokio::spawn(crate::raw::serve_on(
            listener,
            4096,
            crate::raw::BurstWrite::Feed,
        ));
        let r = echo(
            &format!("{base}/"),
            2,
            1024,
            Duration::ZERO,
            Duration::from_millis(200),
            false,
            None,
        )
        .await?;
        assert!(r["messages"].as_u64() > Some(0), "{r}");
        let r = burst(&format!("{base}/?burst=3000"), 3000).await?;
        assert_eq!(r["count"], 3000);
        server.abort();
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_echo_or_a_push_out_of_order_fails_the_run() -> Result<()> {
        let altering = fixture(|mut ws| async move {
            while let Some(Ok(Message::Text(text))) = ws.next().await {
                ws.send(Message::text(format!("{text}!"))).await?;
            }
            Ok(())
        })
        .await?;
        let err = echo(
            &altering,
            1,
            20,
            Duration::ZERO,
            Duration::from_millis(200),
            false,
            None,
        )
        .await
        .expect_err("an altered echo must fail the run");
        assert!(format!("{err:#}").contains("differs"), "{err:#}");

        let skipping = fixture(|mut ws| async move {
            for seq in [1, 2, 4, 3] {
                ws.send(Message::text(PushEncoder::new(0, "b").encode(seq)))
                    .await?;
            }
            while ws.next().await.is_some() {}
            Ok(())
        })
        .await?;
        let err = burst(&skipping, 4)
            .await
            .expect_err("a push out of order must fail the run");
        assert!(
            format!("{err:#}").contains("push 4 arrived where 3 was expected"),
            "{err:#}"
        );
        Ok(())
    }

    #[test]
    fn only_loopback_is_a_target() {
        assert!(check_loopback("ws://127.0.0.1:1/ws").is_ok());
        assert!(check_loopback("ws://localhost:1/ws").is_ok());
        assert!(check_loopback("ws://10.0.0.1:1/ws").is_err());
        assert!(check_loopback("ws://example.com/ws").is_err());
    }
}
