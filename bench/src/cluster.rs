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
//! * **reliable echo on Redis against memory**: closed-loop typed echo
//!   over 10 reliable connections (the real wrapper), on one of those nodes
//!   and on a node without Redis, interleaved rounds, medians of messages
//!   per second and p99;
//! * **time to resume on another node**: one reliable client behind the
//!   round-robin fault proxy over the two nodes; each cut sends its
//!   reconnect to the other node; from the cut until `Resumed`
//!   ([`crate::cluster_reliable`]).

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
    /// Interleaved rounds of the reliable echo on each node.
    pub echo_rounds: usize,
    /// Seconds measured per reliable echo round (after 1 s of warm-up).
    pub echo_seconds: u64,
    /// Resumes measured.
    pub resumes: usize,
    /// Where `BENCHMARKS.md` is, to write the section; `None`: print only.
    pub docs: Option<PathBuf>,
}

/// A node on a free port, pinned to the server core; killed on drop.
fn node(options: &Options, redis: Option<&str>, id: &str, nofile: u64) -> Result<(Guard, String)> {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string();
    let mut command = pinned(Core::Server, nofile, &options.server);
    command
        .args(["--addr", &addr, "--node-id", id])
        .args(["--admin-token", TOKEN, "--static-dir", "/nonexistent"])
        .args(["--push-interval", "0", "--ping-interval", "0"])
        .args(["--max-connections-per-ip", "0", "--connect-rate", "0"])
        .args([
            "--max-http-connections-per-ip",
            "0",
            "--max-sessions-per-ip",
            "0",
        ])
        .env("RUST_LOG", "warn");
    if let Some(redis) = redis {
        command.args(["--redis-url", redis]);
    }
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
    let url = redis.url();
    let (_a, a) = node(options, Some(&url), "bench-a", nofile)?;
    let (_b, b) = node(options, Some(&url), "bench-b", nofile)?;
    let (_m, m) = node(options, None, "bench-memory", nofile)?;
    let load = |args: &[String]| -> Result<Value> {
        let output = pinned(Core::Load, nofile, &options.bench)
            .arg("load")
            .args(args)
            .stderr(Stdio::inherit())
            .output()
            .context("running the load process")?;
        ensure!(
            output.status.success(),
            "the load process failed ({}): {args:?}",
            output.status
        );
        serde_json::from_slice(&output.stdout).context("the load process's output")
    };
    let owned = |args: &[&str]| args.iter().map(ToString::to_string).collect::<Vec<_>>();

    // Reliable echo, Redis against memory: interleaved rounds.
    let targets = [("redis", &a), ("memory", &m)];
    let mut echo_runs: Vec<Vec<Value>> = vec![Vec::new(); targets.len()];
    for round in 0..options.echo_rounds {
        for k in 0..targets.len() {
            let i = (k + round) % targets.len();
            let (name, addr) = targets[i];
            let run = load(&owned(&[
                "reliable-echo",
                "--url",
                &format!("ws://{addr}/ws"),
                "--conns",
                "10",
                "--bytes",
                "20",
                "--seconds",
                &options.echo_seconds.to_string(),
            ]))?;
            eprintln!(
                "cluster reliable echo on {name:<6} {:>8.0} msg/s  p99 {:>6} us",
                run["msgs_per_s"].as_f64().unwrap_or(f64::NAN),
                run["p99_us"]
            );
            echo_runs[i].push(run);
        }
    }
    let echo: Vec<Value> = targets
        .iter()
        .zip(echo_runs)
        .map(|((name, _), runs)| median_run(name, runs))
        .collect();

    let resume = load(&owned(&[
        "resume",
        "--nodes",
        &format!("{a},{b}"),
        "--rounds",
        &options.resumes.to_string(),
    ]))?;
    eprintln!(
        "cluster resume on another node: median {} ms, p99 {} ms",
        resume["median_ms"], resume["p99_ms"]
    );

    let broadcast = load(&owned(&[
        "broadcast",
        "--nodes",
        &format!("{a},{b}"),
        "--conns",
        &options.conns.to_string(),
        "--rounds",
        &options.rounds.to_string(),
    ]))?;
    let result = json!({ "broadcast": broadcast, "reliable_echo": echo, "resume": resume });
    eprintln!(
        "cluster broadcast to {} over 2 nodes: median {:.1} ms, max {:.1} ms",
        options.conns,
        num(&result["broadcast"], "median_ms"),
        num(&result["broadcast"], "max_ms"),
    );
    let md = markdown(&result);
    match &options.docs {
        Some(docs) => crate::scale_report::write_kept(docs, BEGIN, END, &md)?,
        None => eprintln!("{md}"),
    }
    Ok(result)
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

/// The run with the median rate of `runs` (its latencies with it), with
/// every round's rate beside it.
fn median_run(name: &str, mut runs: Vec<Value>) -> Value {
    runs.sort_by(|a, b| num(a, "msgs_per_s").total_cmp(&num(b, "msgs_per_s")));
    let rates: Vec<f64> = runs.iter().map(|r| num(r, "msgs_per_s")).collect();
    let mut median = runs.get(runs.len() / 2).cloned().unwrap_or(Value::Null);
    median["store"] = json!(name);
    median["rounds_msgs_per_s"] = json!(rates);
    median
}

fn list(values: &Value) -> String {
    values
        .as_array()
        .map(|r| {
            r.iter()
                .map(|v| format!("{:.1}", v.as_f64().unwrap_or(f64::NAN)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn markdown(result: &Value) -> String {
    let broadcast = &result["broadcast"];
    let resume = &result["resume"];
    let echo = |store: &str| {
        result["reliable_echo"]
            .as_array()
            .and_then(|runs| runs.iter().find(|r| r["store"] == store))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let (redis, memory) = (echo("redis"), echo("memory"));
    let conns = broadcast["conns"].as_u64().unwrap_or(0);
    format!(
        "{BEGIN}\n## The cluster (issue 14)\n\n\
         Measured {date} by `cargo xtask bench` (`bench run`, after the rest;\n\
         `cargo xtask bench --cluster` alone): release nodes on core 0, two of\n\
         them sharing a `redis-server` (no persistence) on loopback and one in\n\
         memory, the load process on core 1.\n\n\
         | scenario | Redis | memory | Redis / memory |\n|---|---|---|---|\n\
         | reliable echo, 10 connections x 20 B, msg/s (median of rounds {redis_rounds} / {memory_rounds}) | {redis_rate:.0} | {memory_rate:.0} | {rate_ratio:.2}x |\n\
         | reliable echo, p99 | {redis_p99:.2} ms | {memory_p99:.2} ms | {p99_ratio:.2}x |\n\n\
         | scenario | result |\n|---|---|\n\
         | time to resume on another node: from a cut until `Resumed`, {resumes} resumes | median **{resume_median:.1} ms**, p99 {resume_p99:.1} ms, max {resume_max:.1} ms |\n\
         | one broadcast to {conns} clients, {per_node} on each of 2 nodes, asked of node A: until the last client read it | median **{median:.1} ms** (max {max:.1} ms; rounds {rounds}) |\n\n\
         The reliable echo runs the real wrapper (`buffered_socket::Socket`,\n\
         native, reliable mode) in a closed loop: on Redis each batch a\n\
         connection writes is stored first (one Lua script, write-through),\n\
         so the ratio is the price of surviving a node's death. The resume\n\
         runs one reliable client behind the round-robin fault proxy over the\n\
         two nodes: each cut sends its reconnect to the other node, which\n\
         loads the session from Redis (reconnect backoff 1 ms: the figure is\n\
         the cluster's, not the backoff's). The broadcast's time runs from the\n\
         request to node A until the load process has read the push on all\n\
         {conns} connections: node A's own delivery, the hand-over to node B\n\
         through B's Redis command stream, B's delivery, and the load process\n\
         reading them all on one core. Each answer counted {conns} delivered\n\
         and no node unanswered.\n\n\
         {END}\n",
        date = crate::scale_report::date(),
        redis_rounds = list(&redis["rounds_msgs_per_s"]),
        memory_rounds = list(&memory["rounds_msgs_per_s"]),
        redis_rate = num(&redis, "msgs_per_s"),
        memory_rate = num(&memory, "msgs_per_s"),
        rate_ratio = num(&redis, "msgs_per_s") / num(&memory, "msgs_per_s"),
        redis_p99 = num(&redis, "p99_us") / 1000.0,
        memory_p99 = num(&memory, "p99_us") / 1000.0,
        p99_ratio = num(&redis, "p99_us") / num(&memory, "p99_us"),
        resumes = resume["rounds"],
        resume_median = num(resume, "median_ms"),
        resume_p99 = num(resume, "p99_ms"),
        resume_max = num(resume, "max_ms"),
        per_node = conns / 2,
        median = num(broadcast, "median_ms"),
        max = num(broadcast, "max_ms"),
        rounds = list(&broadcast["rounds_ms"]),
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
