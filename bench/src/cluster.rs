//! The cluster's benchmarks (issue 14), run by `bench run` after the rest
//! and written to their own kept section of `docs/BENCHMARKS.md`:
//!
//! * **one broadcast to 10,000 clients over two nodes**: two release nodes
//!   (core 0) share a `redis-server` on a free port (`testbed::RedisServer`,
//!   no persistence); a load process (core 1) holds 10,000 `/ws`
//!   connections, half on each node, and asks node A for `POST
//!   /api/broadcast`; the figure is the time from the request until the
//!   last of the 10,000 clients has read the push (the load process reads
//!   them all on one core, so its own reading is part of the figure).
//!   Node A delivers to its own clients and hands the broadcast to node B
//!   through B's Redis command stream. The answer must count all 10,000
//!   and name no node as unanswered, else the run fails.
//!
//! Reliable echo on Redis against memory, and the time to resume on
//! another node, need reliable sessions in Redis (not in this tree yet).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::procs::{Core, Guard, pinned};

/// The admin token of the benchmark's nodes.
const TOKEN: &str = "bench-cluster-token";
/// The section's first and last lines in `docs/BENCHMARKS.md`.
const BEGIN: &str = "<!-- kept:cluster -->";
const END: &str = "<!-- /kept:cluster -->";
/// Every client has the broadcast within this long, or the run fails.
const ROUND_TIMEOUT: Duration = Duration::from_secs(30);

/// What the cluster benchmark needs.
pub struct Options {
    /// The release server binary.
    pub server: PathBuf,
    /// This binary (the load process).
    pub bench: PathBuf,
    /// Clients held over the two nodes.
    pub conns: usize,
    /// Broadcasts measured (after one not measured).
    pub rounds: usize,
    /// Where `BENCHMARKS.md` is, to write the section; `None`: print only.
    pub docs: Option<PathBuf>,
}

/// A node on a free port, pinned to the server core; killed on drop.
fn node(options: &Options, redis: &str, id: &str, nofile: u64) -> Result<(Guard, String)> {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string();
    let mut command = pinned(Core::Server, nofile, &options.server);
    command
        .args(["--addr", &addr, "--redis-url", redis, "--node-id", id])
        .args(["--admin-token", TOKEN, "--static-dir", "/nonexistent"])
        .args(["--push-interval", "0", "--ping-interval", "0"])
        .args(["--max-connections-per-ip", "0", "--connect-rate", "0"])
        .args(["--max-http-connections-per-ip", "0"])
        .env("RUST_LOG", "warn");
    let mut guard = Guard::spawn(id, command, false)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&addr).is_err() {
        ensure!(guard.alive(), "{id} exited before listening on {addr}");
        ensure!(Instant::now() < deadline, "{id} did not listen within 10 s");
        // Polls the port; nothing to wait on in another process.
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((guard, addr))
}

/// Starts Redis and two nodes, runs the load process, writes the section.
///
/// # Errors
///
/// When Redis, a node or the load process fails, or a broadcast does not
/// reach every client.
pub fn run(options: &Options) -> Result<Value> {
    let redis = testbed::RedisServer::start()?;
    let nofile = (options.conns as u64 + 1024).min(crate::procs::hard_nofile());
    let (_a, a) = node(options, &redis.url(), "bench-a", nofile)?;
    let (_b, b) = node(options, &redis.url(), "bench-b", nofile)?;
    let output = pinned(Core::Load, nofile, &options.bench)
        .args(["load", "broadcast", "--nodes"])
        .arg(format!("{a},{b}"))
        .args(["--conns", &options.conns.to_string()])
        .args(["--rounds", &options.rounds.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .context("running the broadcast load")?;
    ensure!(
        output.status.success(),
        "the broadcast load failed ({})",
        output.status
    );
    let result: Value =
        serde_json::from_slice(&output.stdout).context("the broadcast load's output")?;
    eprintln!(
        "cluster broadcast to {} over 2 nodes: median {:.1} ms, max {:.1} ms",
        options.conns,
        result["median_ms"].as_f64().unwrap_or(f64::NAN),
        result["max_ms"].as_f64().unwrap_or(f64::NAN)
    );
    let md = markdown(&result);
    match &options.docs {
        Some(docs) => crate::scale_report::write_kept(docs, BEGIN, END, &md)?,
        None => eprintln!("{md}"),
    }
    Ok(result)
}

fn markdown(result: &Value) -> String {
    let ms = |key: &str| result[key].as_f64().unwrap_or(f64::NAN);
    let rounds: Vec<String> = result["rounds_ms"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|v| format!("{:.1}", v.as_f64().unwrap_or(f64::NAN)))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{BEGIN}\n## The cluster (issue 14)\n\n\
         Measured {date} by `cargo xtask bench` (`bench run`, after the rest): two\n\
         release nodes on core 0 sharing a `redis-server` (no persistence) on\n\
         loopback, the load process on core 1.\n\n\
         | scenario | result |\n|---|---|\n\
         | one broadcast to {conns} clients, {per_node} on each of 2 nodes, asked of node A: until the last client read it | median **{median:.1} ms** (max {max:.1} ms; rounds {rounds}) |\n\
         | reliable echo on Redis against memory (msg/s, p99) | not measured: needs reliable sessions in Redis |\n\
         | time to resume on another node | not measured: needs reliable sessions in Redis |\n\n\
         The broadcast's time runs from the request to node A until the load\n\
         process has read the push on all {conns} connections; it covers node\n\
         A's own delivery, the hand-over to node B through B's Redis command\n\
         stream, B's delivery, and the load process reading 10,000 sockets on\n\
         one core. Each answer counted {conns} delivered and no node unanswered.\n\n\
         {END}\n",
        date = crate::scale_report::date(),
        conns = result["conns"],
        per_node = result["conns"].as_u64().unwrap_or(0) / 2,
        median = ms("median_ms"),
        max = ms("max_ms"),
        rounds = rounds.join(", "),
    )
}

/// The load side (`bench load broadcast`): `conns` `/ws` connections spread
/// over `nodes` in turn; once node 0's `GET /api/clients` lists them all,
/// one broadcast not measured, then `rounds` measured ones.
///
/// # Errors
///
/// When a connection fails, the list never reaches `conns`, a broadcast is
/// not answered 200 with every client delivered, or a client does not get
/// it within 30 s.
pub async fn broadcast(nodes: &[String], conns: usize, rounds: usize) -> Result<Value> {
    ensure!(!nodes.is_empty(), "no nodes");
    for node in nodes {
        ensure!(node.starts_with("127."), "loopback nodes only, not {node}");
    }
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(usize, Instant)>();
    let mut readers = tokio::task::JoinSet::new();
    for chunk in 0..conns.div_ceil(100) {
        let n = 100.min(conns - chunk * 100);
        let opened = futures_util::future::try_join_all((0..n).map(|i| {
            let url = format!("ws://{}/ws", nodes[(chunk * 100 + i) % nodes.len()]);
            async move {
                tokio::time::timeout(
                    Duration::from_secs(10),
                    tokio_tungstenite::connect_async(url),
                )
                .await
                .context("connect timed out")?
                .context("connect")
            }
        }))
        .await?;
        for (ws, _) in opened {
            let seen = seen_tx.clone();
            readers.spawn(async move {
                let (_write, mut read) = ws.split();
                while let Some(Ok(message)) = read.next().await {
                    if let Message::Text(text) = message
                        && let Some(round) = round_of(&text)
                        && seen.send((round, Instant::now())).is_err()
                    {
                        return;
                    }
                }
            });
        }
    }
    let http = reqwest::Client::new();
    let admin = format!("http://{}", nodes[0]);
    // Every node's clients in the cluster's list: the broadcast reaches them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed: Value = serde_json::from_str(
            &http
                .get(format!("{admin}/api/clients"))
                .bearer_auth(TOKEN)
                .send()
                .await?
                .text()
                .await?,
        )
        .context("the list of clients")?;
        if listed.as_array().map_or(0, Vec::len) >= conns {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "only {} of {conns} clients listed after 30 s",
            listed.as_array().map_or(0, Vec::len)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut rounds_ms = Vec::with_capacity(rounds);
    // Round 0 warms up (not measured).
    for round in 0..=rounds {
        let started = Instant::now();
        let response = http
            .post(format!("{admin}/api/broadcast"))
            .bearer_auth(TOKEN)
            .body(format!("bench-broadcast-{round}"))
            .send()
            .await?;
        let status = response.status();
        let answer: Value = serde_json::from_str(&response.text().await?)
            .with_context(|| format!("the broadcast's answer ({status})"))?;
        ensure!(status == 200, "broadcast answered {status}: {answer}");
        ensure!(
            answer["delivered"].as_u64() == Some(conns as u64)
                && answer["unanswered"].as_array().is_some_and(Vec::is_empty),
            "broadcast {round} did not reach every client: {answer}"
        );
        let mut got = 0;
        let mut last = started;
        while got < conns {
            let (seen_round, at) = tokio::time::timeout(ROUND_TIMEOUT, seen_rx.recv())
                .await
                .with_context(|| format!("round {round}: {got} of {conns} after 30 s"))?
                .context("every reader ended")?;
            if seen_round != round {
                bail!("round {round}: a client read broadcast {seen_round}");
            }
            got += 1;
            last = last.max(at);
        }
        if round > 0 {
            rounds_ms.push(last.duration_since(started).as_secs_f64() * 1000.0);
        }
    }
    readers.abort_all();
    let mut sorted = rounds_ms.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(json!({
        "mode": "broadcast", "nodes": nodes.len(), "conns": conns,
        "rounds_ms": rounds_ms,
        "median_ms": sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN),
        "max_ms": sorted.last().copied().unwrap_or(f64::NAN),
    }))
}

/// The round of a broadcast push (`"body":"bench-broadcast-N"`).
fn round_of(text: &str) -> Option<usize> {
    let rest = text.split("bench-broadcast-").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_round_is_read_from_a_broadcast_push() {
        assert_eq!(
            round_of(r#"{"type":"push","seq":3,"sent_at_ms":1,"body":"bench-broadcast-12"}"#),
            Some(12)
        );
        assert_eq!(round_of(r#"{"type":"welcome","client_id":"x"}"#), None);
    }
}
