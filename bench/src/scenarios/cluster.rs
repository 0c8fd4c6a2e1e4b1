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
//!   ([`super::cluster_reliable`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::procs::hard_nofile;
use crate::harness::servers::load_generator;
use crate::harness::stats::num;
use crate::peers::ours::{ADMIN_TOKEN, node};

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

/// Starts Redis and two nodes, runs the load process, writes the section.
///
/// # Errors
///
/// When Redis, a node or the load process fails, or a broadcast does not
/// reach every client.
pub fn run(options: &Options) -> Result<Value> {
    let redis = testbed::RedisServer::start()?;
    let nofile = (options.conns as u64 + 1024).min(hard_nofile());
    let url = redis.url();
    let (_a, a) = node(&options.server, Some(&url), "bench-a", nofile, &[])?;
    let (_b, b) = node(&options.server, Some(&url), "bench-b", nofile, &[])?;
    let (_m, m) = node(&options.server, None, "bench-memory", nofile, &[])?;
    let load = |args: &[String]| load_generator(&options.bench, nofile, args);
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
    let md = crate::report::cluster::markdown(&result);
    match &options.docs {
        Some(docs) => crate::report::cluster::write_section(docs, &md)?,
        None => eprintln!("{md}"),
    }
    Ok(result)
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
                .bearer_auth(ADMIN_TOKEN)
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
            .bearer_auth(ADMIN_TOKEN)
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
