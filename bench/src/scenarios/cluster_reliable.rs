//! The load side of the cluster's reliable figures (issue 14), with the
//! real wrapper (`buffered_socket::Socket`, native transport, reliable mode):
//!
//! * `bench load reliable-echo`: closed-loop typed echo over reliable
//!   connections (each message numbered, stored, acknowledged), the same on
//!   a node with Redis and on one in memory; messages per second and
//!   latency percentiles;
//! * `bench load resume`: one reliable client behind the round-robin fault
//!   proxy over two nodes; each cut sends its reconnect to the other node;
//!   the time from the cut until the wrapper reports `Resumed`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use buffered_socket::{AppSocket, Backoff, Config, Event, SendError, Socket};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use shared::{ClientMessage, ServerMessage};
use testbed::{FaultProxy, Faults};
use tokio::sync::mpsc;

use crate::harness::proc_stats::cpu_over;

/// A reply or a resume within this long, or the run fails.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What a reliable socket reports to the load loop.
enum Seen {
    Echo(u64),
    Resumed,
    Failed(String),
}

/// A reliable wrapper on `url` whose echo replies and resumes come through
/// the returned channel (the subscription must be kept).
fn reliable(
    url: &str,
) -> Result<(
    Socket,
    mpsc::UnboundedReceiver<Seen>,
    buffered_socket::Subscription,
)> {
    let socket = Socket::new(Config::new(url).with_reliable(true).with_backoff(Backoff {
        // Reconnect at once: the resume figure is the cluster's, not the backoff's.
        initial_ms: 1,
        max_ms: 20,
        jitter: false,
        ..Backoff::default()
    }))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let subscription = socket.on_event(move |event| {
        let seen = match event {
            Event::Message(message) => match AppSocket::decode(message) {
                Ok(ServerMessage::Echo { id, .. }) => Seen::Echo(id),
                _ => return,
            },
            Event::Resumed { .. } => Seen::Resumed,
            Event::ResumeFailed { reason, .. } => Seen::Failed(format!("resume failed: {reason}")),
            Event::Gap { from, to } => Seen::Failed(format!("gap {from}..={to}")),
            _ => return,
        };
        let _ = tx.send(seen);
    });
    Ok((socket, rx, subscription))
}

/// Sends echo `id` and waits for its reply; a reply out of order fails.
async fn round_trip(
    socket: &Socket,
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    id: u64,
    body: &str,
) -> Result<()> {
    let mut message = ClientMessage::Echo {
        id,
        body: body.to_owned(),
    }
    .to_json()
    .into();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match socket.send(message) {
            Ok(_) => break,
            Err(SendError::QueueFull(back)) if Instant::now() < deadline => {
                message = back;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(err) => bail!("send {id}: {err}"),
        }
    }
    loop {
        match tokio::time::timeout(TIMEOUT, seen.recv())
            .await
            .with_context(|| format!("no echo {id} within {TIMEOUT:?}"))?
        {
            Some(Seen::Echo(got)) if got == id => return Ok(()),
            Some(Seen::Echo(got)) => bail!("echo {got} while waiting for {id}"),
            Some(Seen::Resumed) => {}
            Some(Seen::Failed(why)) => bail!("{why}"),
            None => bail!("the socket's events ended"),
        }
    }
}

/// Closed-loop reliable echo: `conns` wrappers on `url` (a `/ws` URL), each
/// sending one typed echo of `bytes` and waiting for it, for `seconds` after
/// `warmup` seconds. The wrapper asks for the newest protocol version and
/// acknowledges every 32 server messages (or 50 ms after one). With
/// `server_pid`, the server's CPU time over the measured window is read
/// from `/proc`, as `load::echo` does.
///
/// # Errors
///
/// When a connection fails, a reply is missing, late (10 s) or out of
/// order, or a resume fails.
pub async fn echo(
    url: &str,
    (conns, bytes): (usize, usize),
    warmup: u64,
    seconds: u64,
    server_pid: Option<u32>,
) -> Result<Value> {
    let start = Instant::now() + Duration::from_millis(200 + conns as u64 * 5);
    let measure_from = start + Duration::from_secs(warmup);
    let end = measure_from + Duration::from_secs(seconds);
    let cpu_probe = cpu_over(server_pid, measure_from, end);
    let body = "x".repeat(bytes);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..conns {
        let (url, body) = (url.to_owned(), body.clone());
        tasks.spawn(async move {
            let (socket, mut seen, _subscription) = reliable(&url)?;
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut id = (c as u64) << 32;
            tokio::time::sleep_until(start.into()).await;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                id += 1;
                round_trip(&socket, &mut seen, id, &body).await?;
                if now >= measure_from {
                    histogram.record(now.elapsed().as_micros().max(1) as u64)?;
                }
            }
            let _ = socket.close(1000, "done");
            anyhow::Ok(histogram)
        });
    }
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    while let Some(histogram) = tasks.join_next().await {
        total.add(histogram??)?;
    }
    let (_, server_cpu) = cpu_probe.await??;
    let seconds_f = seconds as f64;
    Ok(json!({
        "mode": "reliable-echo", "url": url, "conns": conns, "bytes": bytes,
        "messages": total.len(), "seconds": seconds,
        "msgs_per_s": total.len() as f64 / seconds_f,
        "p50_us": total.value_at_quantile(0.5), "p99_us": total.value_at_quantile(0.99),
        "server_cpu": server_cpu.map(|cpu| cpu / seconds_f),
        "msgs_per_server_cpu_s": server_cpu.map(|cpu| total.len() as f64 / cpu.max(0.01)),
    }))
}

/// Time to resume on another node: one reliable wrapper through a
/// round-robin fault proxy over `nodes` (two); `rounds` times, an echo
/// proves the session, every connection is cut, and the time until
/// `Resumed` is taken; each resume must land on another node than the
/// connection cut.
///
/// # Errors
///
/// When a resume fails, lands on the same node, or takes over 10 s.
pub async fn resume(nodes: &[SocketAddr], rounds: usize) -> Result<Value> {
    ensure!(nodes.len() >= 2, "resume on another node needs two nodes");
    let proxy = FaultProxy::start_many(nodes.to_vec(), Faults::none()).await?;
    let (socket, mut seen, _subscription) = reliable(&format!("ws://{}/ws", proxy.addr))?;
    let mut times_ms = Vec::with_capacity(rounds);
    for round in 0..=rounds {
        round_trip(&socket, &mut seen, round as u64 + 1, "before the cut").await?;
        let before = proxy
            .last_upstream()
            .context("no connection through the proxy")?;
        let cut = Instant::now();
        proxy.cut_all();
        // The channel carries only echoes, resumes and failures.
        match tokio::time::timeout(TIMEOUT, seen.recv())
            .await
            .context("no resume within 10 s")?
        {
            Some(Seen::Resumed) => {}
            Some(Seen::Echo(id)) => bail!("echo {id} after the cut, before the resume"),
            Some(Seen::Failed(why)) => bail!("round {round}: {why}"),
            None => bail!("the socket's events ended"),
        }
        let took = cut.elapsed();
        let after = proxy
            .last_upstream()
            .context("no connection through the proxy")?;
        ensure!(
            after != before,
            "round {round}: resumed on the same node {after}"
        );
        // Round 0 warms up (connections, scripts loaded): not counted.
        if round > 0 {
            times_ms.push(took.as_secs_f64() * 1000.0);
        }
    }
    let _ = socket.close(1000, "done");
    let mut sorted = times_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| {
        sorted
            .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    Ok(json!({
        "mode": "resume", "nodes": nodes.len(), "rounds": rounds, "times_ms": times_ms,
        "median_ms": at(0.5), "p99_ms": at(0.99), "max_ms": sorted.last(),
    }))
}
