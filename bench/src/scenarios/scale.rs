//! Connections on one node (issue 16): as many `/ws` connections as the
//! descriptor limit allows, with the default 1 s timed pushes on, the server
//! pinned to one core; its RSS and CPU per connection, how late the pushes
//! arrive, and the time to accept them all, at several counts, ours beside
//! gorilla (with its own timed pushes, `-push-interval`). From the slopes it
//! projects 100,000 and 1,000,000 connections per node.
//!
//! The orchestrator ([`run`]) starts each server, then several client
//! processes ([`hold`], `bench load hold`), each holding its share from its
//! own 127.0.0.x source addresses (one process holds at most 20,000
//! descriptors). A client prints one line once its connections are open,
//! waits for `go` on stdin, counts the pushes of the measured window and
//! their lateness (receive time against `sent_at_ms`, in whole milliseconds,
//! as the protocol sends them), and prints its result. Every wait is bounded.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ChildStdin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::machine::unix_ms;
use crate::harness::proc_stats::{cpu_seconds, rss_kib};
use crate::harness::procs::{Core, Guard, hard_nofile, pinned};
use crate::harness::servers::{forward_lines, free_addr, http_get, spawn_listening};
use crate::harness::stats::percentile;
use crate::harness::ws::{subscriber, tcp_from};

/// Client processes per count.
pub const CLIENTS: usize = 4;
/// Source addresses per client process (127.0.0.x).
const SOURCES_PER_CLIENT: u8 = 8;
/// Upgrades in flight per client process.
const IN_FLIGHT: usize = 128;
/// Lateness buckets: one per millisecond up to this, then one for the rest.
const LATE_MAX_MS: usize = 5_000;
/// Pushes run this long after the last connection is open, before measuring.
const SETTLE: Duration = Duration::from_secs(3);
/// The measured window.
const WINDOW: Duration = Duration::from_secs(10);
/// Opening every connection must take less than this.
const OPEN_DEADLINE: Duration = Duration::from_secs(240);

/// What the orchestrator needs.
pub struct Options {
    /// release/server.
    pub server: PathBuf,
    /// This very binary (the clients).
    pub bench: PathBuf,
    /// The gorilla server, when Go could build it.
    pub gorilla: Option<PathBuf>,
    /// Where BENCHMARKS.md lives; `None`: print only.
    pub docs: Option<PathBuf>,
}

/// `"sent_at_ms":N` of a push, without a full decode.
fn sent_at(text: &str) -> Option<u64> {
    if !text.starts_with(r#"{"type":"push""#) {
        return None;
    }
    let rest = text.split(r#""sent_at_ms":"#).nth(1)?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// The client process: `conns` connections to `ws://{addr}{path}` from
/// 127.0.0.`first_src` onwards; see the module doc.
pub async fn hold(addr: SocketAddr, path: &str, conns: usize, first_src: u8) -> Result<Value> {
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut opening = JoinSet::new();
    for i in 0..conns {
        let src = first_src + (i % usize::from(SOURCES_PER_CLIENT)) as u8;
        let (gate, url) = (gate.clone(), format!("ws://{addr}{path}"));
        opening.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let tcp = tcp_from(src, addr).await?;
            let ws = subscriber(&url, tcp).await?;
            anyhow::Ok(ws)
        });
    }
    let measuring = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let ended = Arc::new(AtomicU64::new(0));
    let late = Arc::new(Mutex::new(vec![0u64; LATE_MAX_MS + 1]));
    let mut readers = JoinSet::new();
    let (mut opened, mut failed) = (0usize, BTreeMap::<String, u64>::new());
    let deadline = tokio::time::Instant::now() + OPEN_DEADLINE;
    while let Ok(Some(done)) = tokio::time::timeout_at(deadline, opening.join_next()).await {
        match done {
            Ok(Ok(mut ws)) => {
                opened += 1;
                let (measuring, received, late, ended) = (
                    measuring.clone(),
                    received.clone(),
                    late.clone(),
                    ended.clone(),
                );
                readers.spawn(async move {
                    // Reading also answers the server's pings (tungstenite does).
                    while let Some(Ok(message)) = ws.next().await {
                        let Message::Text(text) = message else {
                            continue;
                        };
                        if !measuring.load(Relaxed) {
                            continue;
                        }
                        if let Some(sent) = sent_at(&text) {
                            let ms = (unix_ms().saturating_sub(sent) as usize).min(LATE_MAX_MS);
                            received.fetch_add(1, Relaxed);
                            late.lock().unwrap_or_else(|e| e.into_inner())[ms] += 1;
                        }
                    }
                    ended.fetch_add(1, Relaxed);
                });
            }
            Ok(Err(err)) => *failed.entry(format!("{err:#}")).or_default() += 1,
            Err(err) => *failed.entry(format!("task: {err}")).or_default() += 1,
        }
    }
    opening.abort_all();
    let open_s = started.elapsed().as_secs_f64();
    let line = json!({"opened": opened, "failed": failed, "open_s": open_s});
    #[allow(clippy::print_stdout)] // the orchestrator reads this line
    {
        println!("{line}");
    }
    std::io::stdout().flush()?;
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let go = tokio::time::timeout(Duration::from_secs(600), stdin.next_line()).await;
    if !matches!(go, Ok(Ok(Some(ref l))) if l.trim() == "go") {
        bail!("no `go` from the orchestrator within 600 s");
    }
    let ended_before = ended.load(Relaxed);
    let cpu_before = cpu_seconds("self")?;
    let window = Instant::now();
    measuring.store(true, Relaxed);
    tokio::time::sleep(WINDOW).await;
    measuring.store(false, Relaxed);
    let seconds = window.elapsed().as_secs_f64();
    let cpu = (cpu_seconds("self")? - cpu_before) / seconds;
    readers.abort_all();
    let late = late.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(json!({
        "opened": opened, "open_s": open_s, "seconds": seconds, "cpu": cpu,
        "received": received.load(Relaxed), "ended_before": ended_before,
        "ended_during": ended.load(Relaxed) - ended_before, "late_ms": late,
    }))
}

/// One measured count on one server.
fn measure(options: &Options, name: &str, count: usize) -> Result<Value> {
    let hard = hard_nofile();
    let addr = free_addr()?;
    let mut command;
    if name == "gorilla" {
        let go = options.gorilla.as_ref().context("no gorilla server")?;
        command = pinned(Core::Server, hard, go);
        command.args(["-push-interval", "1s", "-addr", &addr.to_string()]);
    } else {
        command = pinned(Core::Server, hard, &options.server);
        let cap = (count + 500).to_string();
        command
            .args(["--push-interval", "1s", "--static-dir", "/nonexistent"])
            // The per-client limits of the hardening issue, off: every
            // connection comes from a handful of loopback addresses.
            .args([
                "--max-connections-per-ip",
                "0",
                "--max-http-connections-per-ip",
                "0",
            ])
            .args(["--connect-rate", "0", "--max-connections", &cap])
            .args(["--addr", &addr.to_string()])
            .env("RUST_LOG", "warn");
    }
    let server = spawn_listening(name, command, addr)?;
    let pid = server.pid();
    let rss_before = rss_kib(pid)?;
    let started = Instant::now();
    let path = if name == "gorilla" { "/echo" } else { "/ws" };
    let mut clients: Vec<(Guard, ChildStdin)> = Vec::new();
    let (tx, rx) = mpsc::channel::<(usize, String)>();
    for i in 0..CLIENTS {
        let share = count / CLIENTS + usize::from(i < count % CLIENTS);
        let first_src = 2 + (i as u8) * SOURCES_PER_CLIENT;
        let mut command = pinned(Core::Load, hard, &options.bench);
        command.args(["load", "hold", "--addr", &addr.to_string(), "--path", path]);
        command.args([
            "--conns",
            &share.to_string(),
            "--first-src",
            &first_src.to_string(),
        ]);
        let (guard, stdin, stdout) = Guard::spawn_piped(&format!("client {i}"), command)?;
        forward_lines(i, stdout, tx.clone());
        clients.push((guard, stdin));
    }
    drop(tx);
    let next = |deadline: Duration| -> Result<(usize, Value)> {
        let (i, line) = rx
            .recv_timeout(deadline)
            .context("a client did not answer in time")?;
        Ok((
            i,
            serde_json::from_str(&line).with_context(|| format!("client {i}: {line}"))?,
        ))
    };
    let mut opened = 0;
    let mut failed = Vec::new();
    for _ in 0..CLIENTS {
        let (_, line) = next(OPEN_DEADLINE + Duration::from_secs(30))?;
        opened += line["opened"].as_u64().unwrap_or(0) as usize;
        if line["failed"].as_object().is_some_and(|f| !f.is_empty()) {
            failed.push(line["failed"].clone());
        }
    }
    let accept_s = started.elapsed().as_secs_f64();
    std::thread::sleep(SETTLE);
    let rss_after = rss_kib(pid)?;
    let dropped_before = dropped_pushes(addr, name);
    let cpu_before = cpu_seconds(pid)?;
    let window = Instant::now();
    for (_, stdin) in &mut clients {
        writeln!(stdin, "go")?;
        stdin.flush()?;
    }
    let mut results = Vec::new();
    for _ in 0..CLIENTS {
        results.push(next(WINDOW + Duration::from_secs(60))?.1);
    }
    let wall = window.elapsed().as_secs_f64();
    let cpu = (cpu_seconds(pid)? - cpu_before) / wall;
    let dropped = dropped_pushes(addr, name)
        .zip(dropped_before)
        .map(|(after, before)| after - before);
    let mut late = vec![0u64; LATE_MAX_MS + 1];
    let (mut received, mut ended) = (0u64, 0u64);
    let mut seconds = 0.0f64;
    let mut clients_cpu = 0.0;
    for r in &results {
        clients_cpu += r["cpu"].as_f64().unwrap_or(0.0);
        received += r["received"].as_u64().unwrap_or(0);
        ended += r["ended_before"].as_u64().unwrap_or(0) + r["ended_during"].as_u64().unwrap_or(0);
        seconds = seconds.max(r["seconds"].as_f64().unwrap_or(0.0));
        for (b, n) in late
            .iter_mut()
            .zip(r["late_ms"].as_array().into_iter().flatten())
        {
            *b += n.as_u64().unwrap_or(0);
        }
    }
    drop(clients);
    drop(server);
    let pushes_per_s = received as f64 / seconds.max(1e-9);
    let row = json!({
        "server": name, "count": count, "opened": opened, "failed": failed,
        "accept_s": accept_s, "rss_before_kib": rss_before, "rss_after_kib": rss_after,
        "kib_per_conn": (rss_after.saturating_sub(rss_before)) as f64 / opened.max(1) as f64,
        "cpu": cpu, "pushes_per_s": pushes_per_s,
        "cpu_us_per_push": cpu * 1e6 / pushes_per_s.max(1e-9),
        "late_p50_ms": percentile(&late, 0.50), "late_p99_ms": percentile(&late, 0.99),
        "late_max_ms": percentile(&late, 1.0), "ended": ended,
        "clients_cpu": clients_cpu, "dropped": dropped,
        "expected_per_s": opened as f64,
    });
    eprintln!("scale: {row}");
    Ok(row)
}

/// Our server's `ws_pushes_dropped_total` (timed pushes not queued because
/// the connection's queue was not empty: its client is behind); `None` for
/// gorilla, which has no such count.
fn dropped_pushes(addr: SocketAddr, name: &str) -> Option<f64> {
    if name == "gorilla" {
        return None;
    }
    http_get(addr, "/metrics")?
        .lines()
        .find_map(|l| l.strip_prefix("ws_pushes_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
}

/// Runs every count on every server and writes the section of BENCHMARKS.md.
pub fn run(options: &Options) -> Result<()> {
    let hard = hard_nofile() as usize;
    let top = hard.saturating_sub(1000).max(1000);
    let mut counts = vec![top / 4, top / 2, top];
    counts.dedup();
    let mut servers = vec!["ours"];
    if options.gorilla.is_some() {
        servers.push("gorilla");
    }
    let started = Instant::now();
    let mut rows = Vec::new();
    for &count in &counts {
        for name in &servers {
            rows.push(measure(options, name, count)?);
        }
    }
    let md = crate::report::scale::markdown(&rows, &counts, started.elapsed().as_secs_f64(), hard);
    #[allow(clippy::print_stdout)]
    {
        println!("{md}");
    }
    if let Some(docs) = &options.docs {
        crate::report::scale::write_section(docs, &md)?;
        std::fs::write(
            docs.join("scale.json"),
            serde_json::to_string_pretty(&rows)?,
        )?;
        eprintln!("scale: wrote {}", docs.join("BENCHMARKS.md").display());
    }
    Ok(())
}
