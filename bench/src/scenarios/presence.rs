//! Presence (issue 24), ours beside socket.io 4.8 in the same run: one
//! channel (one room) of 10,000 members, join and leave notices off, at 1,
//! 2 and 3 nodes, every node count on Redis for both peers (`--quick`:
//! 1,000 members, fewer calls, a 10 s idle window, to try it):
//!
//! * the time of `presence_stats` and of `presence` (cut to
//!   `--max-presence-answer`, 1,000), each one HTTP call: ours through the
//!   admin API, socket.io through `bench/socketio/server.js`'s endpoints
//!   around `io.in(room).fetchSockets()`; rounds interleaved, ours then
//!   socket.io then socket.io then ours, each round the same number of calls
//!   of each query on each peer, the node asked turning with each call;
//! * the server CPU, each node and all of them, over a minute with the
//!   members held and nothing asked (and each peer's `redis-server`'s).
//!
//! Both peers run at once, each on its own `redis-server`, their nodes on
//! the server core; their members are held by `bench load subscribe`
//! processes ([`Subscribers`], as `bench channels` holds its
//! subscribers), which are told `go` at the end and say whether every
//! connection was still open. Ours keeps presence in the bare channel
//! `bench` through `bench/config/presence.toml` (`presence = true` in the
//! default namespace; the members hold `subscribe` only). Every answer is
//! checked: the count is the members, the list is cut where it should be.
//! Every wait is bounded, and so is every loop, in count and time.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use super::channels::{CHANNEL, Peer, Subscribers, start_nodes};
use crate::harness::machine;
use crate::harness::proc_stats::{cpu_seconds, redis_cpu_seconds};
use crate::harness::procs::{Guard, hard_nofile};
use crate::harness::stats::{median, quantile};
use crate::peers::{ours, socketio};
use crate::report::presence::{Idle, Query, Run, Timing};

/// Our `--max-presence-answer`, and the length socket.io's list is cut to
/// (`LIST_AT_MOST` in `bench/socketio/server.js`).
pub const MAX_PRESENCE_ANSWER: usize = 1000;
/// One call, at most (socket.io's adapter waits 5 s for the other nodes).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A kept-alive connection idle this long is not used again (below Node's
/// 5 s keep-alive and our server's 30 s).
const POOL_IDLE: Duration = Duration::from_secs(4);
/// Every node counts every member within this long once they are in.
const COUNTED_WITHIN: Duration = Duration::from_secs(60);
/// The clients wait at most 600 s for `go` once their members are in:
/// the idle window and the queries must end before, with a call to spare.
const HOLD_BUDGET: Duration = Duration::from_secs(540);

/// How much is measured.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Members of the channel (and of the room).
    pub members: usize,
    /// Interleaved rounds of the queries.
    pub rounds: usize,
    /// Calls of each query on each peer in a round.
    pub calls: usize,
    /// The idle window.
    pub idle: Duration,
}

/// The sizes of issue 24, or smaller ones to try the harness.
pub fn sizes(quick: bool) -> Sizes {
    if quick {
        Sizes {
            members: 1_000,
            rounds: 3,
            calls: 5,
            idle: Duration::from_secs(10),
        }
    } else {
        Sizes {
            members: 10_000,
            rounds: 7,
            calls: 20,
            idle: Duration::from_secs(60),
        }
    }
}

/// What `bench presence` was asked to do.
pub struct Options {
    /// release/server.
    pub server: PathBuf,
    /// This very binary (the client processes).
    pub bench: PathBuf,
    /// The smaller sizes.
    pub quick: bool,
    /// Node counts measured (1 to 3).
    pub nodes: Vec<usize>,
    /// Where BENCHMARKS.md lives; `None`: print only.
    pub docs: Option<PathBuf>,
}

/// Measures every node count in turn and writes the section of
/// BENCHMARKS.md and `presence.json`.
///
/// # Errors
///
/// When a server or a client process fails, an answer is wrong, or a held
/// member was lost.
pub fn run(options: &Options) -> Result<Run> {
    let started = Instant::now();
    let load_before = machine::load_average();
    let sizes = sizes(options.quick);
    let (mut timings, mut idle) = (Vec::new(), Vec::new());
    for &nodes in &options.nodes {
        let (t, i) = measure(options, nodes, sizes)?;
        for t in &t {
            eprintln!(
                "presence: {} on {nodes} node(s), {}: p50 {:.2} ms, p99 {:.2} ms",
                t.peer.label(),
                t.query.label(),
                t.p50_ms,
                t.p99_ms
            );
        }
        for i in &i {
            eprintln!(
                "presence: {} on {nodes} node(s), idle {:.0} s: {:.2} s CPU on the nodes, {:.2} s on Redis",
                i.peer.label(),
                i.window_s,
                i.total_cpu_s,
                i.redis_cpu_s
            );
        }
        timings.extend(t);
        idle.extend(i);
    }
    let run = Run {
        date: machine::date(),
        quick: options.quick,
        command: if options.quick {
            "cargo xtask bench --presence --quick"
        } else {
            "cargo xtask bench --presence"
        }
        .to_owned(),
        seconds: started.elapsed().as_secs_f64(),
        load_before,
        load: machine::load_average(),
        node: machine::sh("/usr/bin/node --version"),
        socketio: socketio::version("socket.io"),
        redis_adapter: socketio::version("@socket.io/redis-adapter"),
        members: sizes.members,
        rounds: sizes.rounds,
        calls_per_round: sizes.calls,
        max_presence_answer: MAX_PRESENCE_ANSWER,
        timings,
        idle,
    };
    let md = crate::report::presence::markdown(&run);
    match &options.docs {
        Some(docs) => {
            crate::report::presence::write_section(docs, &md)?;
            crate::report::presence::write_results(docs, &run)?;
        }
        None => eprintln!("{md}"),
    }
    Ok(run)
}

/// One peer's side of a measurement: its Redis, its nodes, its members.
/// Killed on drop (the members first).
struct Side {
    peer: Peer,
    members: Subscribers,
    nodes: Vec<(Guard, SocketAddr)>,
    redis: testbed::RedisServer,
}

impl Side {
    fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|(_, a)| *a).collect()
    }

    fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|(g, _)| g.pid()).collect()
    }
}

/// Starts `peer`'s Redis and `nodes` nodes on it, and its client processes
/// for `members` members from 127.0.0.`first_src` on (not yet in).
fn start(
    options: &Options,
    peer: Peer,
    nodes: usize,
    members: usize,
    first_src: u8,
) -> Result<Side> {
    let nofile = ((members / nodes) as u64 + 2048).min(hard_nofile());
    let redis = testbed::RedisServer::start()?;
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/presence.toml");
    let config = config.to_string_lossy();
    let answer = MAX_PRESENCE_ANSWER.to_string();
    let extra: &[&str] = match peer {
        Peer::Ours => &["--config", &config, "--max-presence-answer", &answer],
        // Presence measures ours and socket.io; Sockudo is the fan-out's peer.
        Peer::SocketIo | Peer::Sockudo => &[],
    };
    let started = start_nodes(
        &options.server,
        peer,
        nodes,
        Some(&redis.url()),
        nofile,
        extra,
    )?;
    let addrs: Vec<SocketAddr> = started.iter().map(|(_, a)| *a).collect();
    // No publication: each process holds its members until `go`.
    let held = Subscribers::spawn(
        &options.bench,
        peer,
        &addrs,
        (members, first_src, 1),
        (0, Duration::ZERO),
    )?;
    Ok(Side {
        peer,
        members: held,
        nodes: started,
        redis,
    })
}

/// Both peers at `nodes` nodes: the idle CPU, then the queries.
fn measure(options: &Options, nodes: usize, sizes: Sizes) -> Result<(Vec<Timing>, Vec<Idle>)> {
    let members = sizes.members;
    let ours = start(options, Peer::Ours, nodes, members, 2)?;
    let io = start(
        options,
        Peer::SocketIo,
        nodes,
        members,
        2 + Subscribers::sources(members),
    )?;
    let mut sides = [ours, io];
    for side in &sides {
        let n = side.members.ready()?;
        ensure!(
            n == members,
            "{}: {n} of {members} members in",
            side.peer.label()
        );
    }
    let held = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Kept-alive connections, let go before a server closes them: Node's
    // keep-alive lasts 5 s, ours 30 s, and a request sent on a connection
    // the server is closing fails ("connection closed before message
    // completed"), as one did after the idle minute.
    let http = reqwest::Client::builder()
        .pool_idle_timeout(POOL_IDLE)
        .build()?;
    for side in &sides {
        runtime.block_on(counted(&http, side.peer, &side.addrs(), members))?;
    }

    let mut idle = Vec::new();
    let before: Vec<(Vec<f64>, f64)> = sides.iter().map(cpu_of).collect::<Result<_>>()?;
    let window = Instant::now();
    std::thread::sleep(sizes.idle);
    let window_s = window.elapsed().as_secs_f64();
    for (side, (nodes_before, redis_before)) in sides.iter().zip(before) {
        let (nodes_after, redis_after) = cpu_of(side)?;
        let node_cpu_s: Vec<f64> = nodes_after
            .iter()
            .zip(&nodes_before)
            .map(|(a, b)| a - b)
            .collect();
        idle.push(Idle {
            peer: side.peer,
            nodes,
            members,
            window_s,
            total_cpu_s: node_cpu_s.iter().sum(),
            node_cpu_s,
            redis_cpu_s: redis_after - redis_before,
        });
    }

    // [peer][query]: every call's time, and each round's median.
    let mut samples = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    let mut rounds = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    let mut bytes = [[0usize; 2]; 2];
    for round in 0..sizes.rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for p in order {
            let side = &sides[p];
            let addrs = side.addrs();
            for (q, query) in Query::BOTH.into_iter().enumerate() {
                let mut this_round = Vec::new();
                for call in 0..sizes.calls {
                    ensure!(
                        held.elapsed() < HOLD_BUDGET,
                        "the queries did not end within {HOLD_BUDGET:?} of the members being in"
                    );
                    let addr = addrs[call % addrs.len()];
                    let (ms, len) =
                        runtime.block_on(ask(&http, (side.peer, addr), query, members))?;
                    this_round.push(ms);
                    bytes[p][q] = len;
                }
                samples[p][q].extend_from_slice(&this_round);
                rounds[p][q].push(median(&mut this_round));
            }
        }
    }

    // Every member still held: each process tells, once told `go`.
    for side in &mut sides {
        side.members.go()?;
        let results = side.members.results(Duration::from_secs(30))?;
        let ended: u64 = results.iter().map(|r| r.ended).sum();
        let other: Vec<_> = results.iter().flat_map(|r| r.other.iter()).collect();
        ensure!(
            ended == 0,
            "{}: {ended} of {members} members were lost while held: {other:?}",
            side.peer.label()
        );
    }
    drop(sides);

    let mut timings = Vec::new();
    for (p, peer) in [Peer::Ours, Peer::SocketIo].into_iter().enumerate() {
        for (q, query) in Query::BOTH.into_iter().enumerate() {
            let all = &samples[p][q];
            let mut sorted = all.clone();
            timings.push(Timing {
                peer,
                nodes,
                query,
                p50_ms: quantile(&mut sorted, 0.5),
                p99_ms: quantile(&mut sorted, 0.99),
                max_ms: sorted.last().copied().unwrap_or(f64::NAN),
                samples_ms: all.clone(),
                round_p50_ms: rounds[p][q].clone(),
                answer_bytes: bytes[p][q],
            });
        }
    }
    Ok((timings, idle))
}

/// Each node's CPU so far, and its Redis's, seconds.
fn cpu_of(side: &Side) -> Result<(Vec<f64>, f64)> {
    let nodes = side
        .pids()
        .into_iter()
        .map(cpu_seconds)
        .collect::<Result<_>>()?;
    Ok((nodes, redis_cpu_seconds(side.redis.addr())?))
}

/// Waits until every node counts `members`, untimed (and so warms each
/// node's `presence_stats`), then asks each node's `presence` once.
async fn counted(
    http: &reqwest::Client,
    peer: Peer,
    addrs: &[SocketAddr],
    members: usize,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + COUNTED_WITHIN;
    for &addr in addrs {
        loop {
            match ask(http, (peer, addr), Query::PresenceStats, members).await {
                Ok(_) => break,
                // Not yet (a member's join still on its way): again.
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(err) => {
                    return Err(err.context(format!(
                        "{}: not every member counted within {COUNTED_WITHIN:?}",
                        peer.label()
                    )));
                }
            }
        }
        ask(http, (peer, addr), Query::Presence, members).await?;
    }
    Ok(())
}

/// The URL of `query` on `peer`'s node at `addr`.
fn url(peer: Peer, addr: SocketAddr, query: Query) -> String {
    match peer {
        Peer::Ours => format!("http://{addr}/api/channels/{CHANNEL}/{}", query.label()),
        // Presence measures ours and socket.io; Sockudo is the fan-out's peer.
        Peer::SocketIo | Peer::Sockudo => format!("http://{addr}/{}/{CHANNEL}", query.label()),
    }
}

/// One call of `query` on `peer`'s node at `addr`, timed from the request
/// sent to its body read, its answer checked against `members`. Returns
/// the time in ms and the body's length.
async fn ask(
    http: &reqwest::Client,
    (peer, addr): (Peer, SocketAddr),
    query: Query,
    members: usize,
) -> Result<(f64, usize)> {
    let mut request = http.get(url(peer, addr, query));
    if peer == Peer::Ours {
        request = request.bearer_auth(ours::ADMIN_TOKEN);
    }
    let sent = Instant::now();
    let (status, body) = tokio::time::timeout(CALL_TIMEOUT, async {
        let response = request.send().await?;
        let status = response.status();
        Ok::<_, reqwest::Error>((status, response.bytes().await?))
    })
    .await
    .with_context(|| {
        format!(
            "{} {}: no answer within {CALL_TIMEOUT:?}",
            peer.label(),
            query.label()
        )
    })??;
    let ms = sent.elapsed().as_secs_f64() * 1000.0;
    ensure!(
        status == 200,
        "{} {} answered {status}: {}",
        peer.label(),
        query.label(),
        String::from_utf8_lossy(&body[..body.len().min(200)])
    );
    check(query, &body, members).with_context(|| format!("{} {}", peer.label(), query.label()))?;
    Ok((ms, body.len()))
}

/// Whether an answer counts `members` (`presence_stats`) or lists the
/// first [`MAX_PRESENCE_ANSWER`] of them, saying so when it is cut
/// (`presence`). Both peers answer `clients` (a number, or the list) and
/// `truncated`.
fn check(query: Query, body: &[u8], members: usize) -> Result<()> {
    let answer: Value = serde_json::from_slice(body).context("not JSON")?;
    match query {
        Query::PresenceStats => {
            let clients = answer["clients"].as_u64();
            ensure!(
                clients == Some(members as u64),
                "counted {clients:?} of {members} members"
            );
        }
        Query::Presence => {
            let listed = answer["clients"].as_array().map_or(0, Vec::len);
            let truncated = answer["truncated"].as_bool().unwrap_or(false);
            ensure!(
                listed == members.min(MAX_PRESENCE_ANSWER)
                    && truncated == (members > MAX_PRESENCE_ANSWER),
                "listed {listed} of {members} members (truncated: {truncated})"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_checked_against_the_members() {
        assert!(
            check(
                Query::PresenceStats,
                br#"{"clients":10000,"users":0}"#,
                10_000
            )
            .is_ok()
        );
        assert!(check(Query::PresenceStats, br#"{"clients":9999}"#, 10_000).is_err());
        let list = |n: usize, cut: bool| {
            let members: Vec<Value> = (0..n)
                .map(|i| serde_json::json!({ "client_id": i.to_string() }))
                .collect();
            let mut body = serde_json::json!({ "channel": "bench", "clients": members });
            if cut {
                body["truncated"] = Value::Bool(true);
            }
            serde_json::to_vec(&body).unwrap()
        };
        assert!(check(Query::Presence, &list(1000, true), 10_000).is_ok());
        assert!(check(Query::Presence, &list(1000, false), 10_000).is_err());
        assert!(check(Query::Presence, &list(999, true), 10_000).is_err());
        assert!(check(Query::Presence, &list(1000, false), 1_000).is_ok());
        assert!(check(Query::Presence, &list(10, false), 1_000).is_err());
    }

    #[test]
    fn the_quick_sizes_are_smaller_and_the_full_ones_the_issues() {
        let full = sizes(false);
        assert_eq!(full.members, 10_000);
        assert!(full.rounds >= 7, "at least 7 interleaved rounds");
        assert_eq!(full.idle, Duration::from_secs(60));
        let quick = sizes(true);
        assert!(quick.members < full.members && quick.idle < full.idle);
        assert_eq!(
            url(
                Peer::Ours,
                "127.0.0.1:1".parse().unwrap(),
                Query::PresenceStats
            ),
            "http://127.0.0.1:1/api/channels/bench/presence_stats"
        );
        assert_eq!(
            url(
                Peer::SocketIo,
                "127.0.0.1:1".parse().unwrap(),
                Query::Presence
            ),
            "http://127.0.0.1:1/presence/bench"
        );
    }
}
