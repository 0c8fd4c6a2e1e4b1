//! A channel's fan-out (issue 23), ours beside socket.io 4.8, one node and
//! then two nodes on one `redis-server`:
//!
//! * one publication of 100 bytes a second to 10,000 subscribers of one
//!   channel, and ten a second to 1,000 subscribers, 30 s each (`--quick`:
//!   2,000 and 200 subscribers, 10 s, to try it);
//! * each delivery's delay from the publish: the publisher puts the wall
//!   clock (µs) in the payload, the subscriber reads its own on arrival
//!   (one machine, one clock), into an HDR histogram: p50, p99, max;
//! * the server's CPU time over the window divided by the deliveries;
//! * the server's RSS once every subscriber is in, minus before any
//!   connected, per subscribed connection;
//! * many channels, on one node: 10,000 connections (`--quick`: 2,000)
//!   subscribed to [`MANY_CHANNELS`] channels each, no publication; the
//!   server's RSS per subscription, and per subscription past the first
//!   (against the one-channel case's RSS per subscriber of the same run).
//!
//! With two nodes the subscribers alternate between them, the publication
//! goes to the first, and both nodes' CPU and RSS count (Redis's do not,
//! for either peer). Ours: `ws://HOST/ws?protocol=2`, `subscribe` to
//! `bench`, then `pub` messages; publish with `POST
//! /api/channels/bench/publish` (admin token). socket.io: the WebSocket
//! transport of Engine.IO 4, `40`, the event `join`, then `pub` events;
//! publish with `POST /publish/bench` ([`crate::peers::socketio`]).
//! Sockudo, when asked (`--peer sockudo`): the Pusher protocol 7 at
//! `/app/KEY?protocol=7`, `pusher:subscribe` to the public channel `bench`,
//! then `pub` events whose data string is the payload; publish with the
//! signed `POST /apps/ID/events` ([`crate::peers::sockudo`]).
//!
//! Like `bench scale`, the subscribers are held by client processes (`bench
//! load subscribe`, on the load core), each from its own eight 127.0.0.x
//! source addresses and at most [`PER_PROCESS`] connections (a process may
//! hold at most 20,000 descriptors). Each prints a line once its
//! subscriptions are in, waits for `go`, counts every publication of the
//! window on every connection (in order, each once) and prints its result.
//! Every wait is bounded; servers bind ports of their own on loopback.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ChildStdin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::machine::{self, unix_us};
use crate::harness::proc_stats::{cpu_seconds, cpu_seconds_of, settled_rss};
use crate::harness::procs::{Core, Guard, hard_nofile, pinned};
use crate::harness::servers::forward_lines;
use crate::harness::ws::{subscriber, tcp_from};
use crate::peers::{ours, socketio, sockudo};
use crate::report::channels::{ManyRow, Row, Run};

/// The channel (ours) and the room (socket.io).
pub const CHANNEL: &str = "bench";
/// Bytes of each publication's payload (the JSON value published).
const PAYLOAD_BYTES: usize = 100;
/// Subscribers per client process, at most.
pub const PER_PROCESS: usize = 5_000;
/// Source addresses per client process (127.0.0.x).
const SOURCES_PER_CLIENT: u8 = 8;
/// Upgrades in flight per client process.
const IN_FLIGHT: usize = 128;
/// Opening and subscribing every connection must take less than this.
const OPEN_DEADLINE: Duration = Duration::from_secs(240);
/// One connection's handshake and subscription, at most.
const HANDSHAKE: Duration = Duration::from_secs(20);
/// After the last publication, every delivery within this long.
const DRAIN: Duration = Duration::from_secs(30);
/// Channels each connection subscribes to in the many-channels case.
pub const MANY_CHANNELS: usize = 10;

/// The `i`th channel a subscriber joins: [`CHANNEL`] first, then
/// `bench-1`, `bench-2`... (valid names for every peer).
fn channel_name(i: usize) -> Cow<'static, str> {
    if i == 0 {
        Cow::Borrowed(CHANNEL)
    } else {
        Cow::Owned(format!("{CHANNEL}-{i}"))
    }
}

/// The server measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    /// Our server, protocol version 2.
    Ours,
    /// socket.io 4.8 on Node.js.
    #[value(name = "socketio")]
    SocketIo,
    /// Sockudo 5.2 (the Pusher protocol), only when asked: its install
    /// takes about 13 minutes.
    Sockudo,
}

impl Peer {
    /// Its name in the report.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::SocketIo => "socket.io",
            Self::Sockudo => "Sockudo",
        }
    }
}

/// One fan-out measured.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Case {
    /// Subscribers of the one channel.
    pub subscribers: usize,
    /// Publications a second.
    pub per_second: u32,
    /// Seconds of publications.
    pub seconds: u64,
}

impl Case {
    /// The publications of the window.
    pub fn publications(&self) -> u64 {
        u64::from(self.per_second) * self.seconds
    }
}

/// The cases of issue 23, or smaller ones to try the harness.
pub fn cases(quick: bool) -> [Case; 2] {
    let (seconds, scale) = if quick { (10, 5) } else { (30, 1) };
    [
        Case {
            subscribers: 10_000 / scale,
            per_second: 1,
            seconds,
        },
        Case {
            subscribers: 1_000 / scale,
            per_second: 10,
            seconds,
        },
    ]
}

/// What `bench channels` was asked to do.
pub struct Options {
    /// release/server.
    pub server: PathBuf,
    /// This very binary (the client processes).
    pub bench: PathBuf,
    /// The smaller cases.
    pub quick: bool,
    /// The peers measured.
    pub peers: Vec<Peer>,
    /// Node counts measured (1, 2).
    pub nodes: Vec<usize>,
    /// Where BENCHMARKS.md lives; `None`: print only.
    pub docs: Option<PathBuf>,
}

/// Runs every case on every peer, one node then two, peers alternating in
/// order, and writes the section of BENCHMARKS.md.
///
/// # Errors
///
/// When a server, a client process or a publication fails, or a delivery
/// is missing.
pub fn run(options: &Options) -> Result<Run> {
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut turn = 0;
    for &nodes in &options.nodes {
        for case in cases(options.quick) {
            let mut peers = options.peers.clone();
            // Alternate which peer goes first, so neither always follows the other.
            if turn % 2 == 1 {
                peers.reverse();
            }
            turn += 1;
            for peer in peers {
                let row = measure(options, peer, nodes, case)?;
                eprintln!(
                    "channels: {} on {nodes} node(s), {} subscribers x {}/s: p50 {:.2} ms, p99 {:.2} ms, {:.2} us cpu per delivery, {:.2} KiB per subscriber ({} of {} delivered)",
                    peer.label(),
                    case.subscribers,
                    case.per_second,
                    row.p50_ms,
                    row.p99_ms,
                    row.cpu_us_per_delivery,
                    row.kib_per_subscriber,
                    row.delivered,
                    row.expected,
                );
                rows.push(row);
            }
        }
    }
    let mut many = Vec::new();
    let connections = if options.quick { 2_000 } else { 10_000 };
    if options.nodes.contains(&1) {
        for peer in options.peers.clone() {
            let row = measure_many(options, peer, connections)?;
            eprintln!(
                "channels: {} on 1 node, {} connections x {} channels: {:.2} KiB per connection, {:.3} KiB per subscription",
                peer.label(),
                row.connections,
                row.channels_each,
                row.kib_per_connection,
                row.kib_per_subscription,
            );
            many.push(row);
        }
    }
    let run = Run {
        date: machine::date(),
        quick: options.quick,
        command: format!(
            "cargo xtask bench --channels{}{}",
            if options.quick { " --quick" } else { "" },
            if options.peers.contains(&Peer::Sockudo) {
                " --peers sockudo"
            } else {
                ""
            }
        ),
        seconds: started.elapsed().as_secs_f64(),
        load: machine::load_average(),
        node: machine::sh("/usr/bin/node --version"),
        socketio: socketio::version("socket.io"),
        redis_adapter: socketio::version("@socket.io/redis-adapter"),
        sockudo: if options.peers.contains(&Peer::Sockudo) {
            sockudo::version()
        } else {
            String::new()
        },
        rows,
        many,
    };
    let md = crate::report::channels::markdown(&run);
    match &options.docs {
        Some(docs) => {
            crate::report::channels::write_section(docs, &md)?;
            crate::report::channels::write_results(docs, &run)?;
        }
        None => eprintln!("{md}"),
    }
    Ok(run)
}

/// The servers of one measurement: killed (with Redis) on drop.
struct Servers {
    nodes: Vec<(Guard, SocketAddr)>,
    _redis: Option<testbed::RedisServer>,
}

fn start(options: &Options, peer: Peer, nodes: usize, nofile: u64) -> Result<Servers> {
    let redis = (nodes > 1).then(testbed::RedisServer::start).transpose()?;
    let url = redis.as_ref().map(testbed::RedisServer::url);
    let started = start_nodes(&options.server, peer, nodes, url.as_deref(), nofile, &[])?;
    Ok(Servers {
        nodes: started,
        _redis: redis,
    })
}

/// `count` nodes of `peer` (on `redis` when given), each with `nofile`
/// descriptors and each keeping the heartbeat it ships with; `extra` flags
/// go to ours after the bench's own (its `--config`, say). Killed on drop.
///
/// # Errors
///
/// When a node does not start.
pub fn start_nodes(
    server: &Path,
    peer: Peer,
    count: usize,
    redis: Option<&str>,
    nofile: u64,
    extra: &[&str],
) -> Result<Vec<(Guard, SocketAddr)>> {
    let mut started = Vec::new();
    for i in 0..count {
        started.push(match peer {
            Peer::Ours => {
                let max = nofile.saturating_sub(100).to_string();
                // Our default heartbeat (a ping every 10 s; a connection
                // silent for 30 s is closed), as socket.io keeps its own
                // (a ping every 25 s): each peer as it ships.
                let mut args = vec!["--ping-interval", "10s", "--max-connections", &max];
                args.extend_from_slice(extra);
                ours::node(server, redis, &format!("bench-{i}"), nofile, &args)?
            }
            Peer::SocketIo => socketio::node(redis, nofile)?,
            Peer::Sockudo => sockudo::node(redis, nofile)?,
        });
    }
    Ok(started)
}

/// The client processes (`bench load subscribe`) that hold one peer's
/// subscribers, at most [`PER_PROCESS`] each, each from its own
/// [`SOURCES_PER_CLIENT`] source addresses: killed on drop.
pub struct Subscribers {
    peer: Peer,
    clients: Vec<(Guard, ChildStdin)>,
    lines: mpsc::Receiver<(usize, String)>,
}

impl Subscribers {
    /// Starts the processes that hold `conns` subscribers of [`CHANNEL`]
    /// over `nodes` (alternating), from 127.0.0.`first_src` on; each
    /// expects `count` publications within `within` after `go`. Each
    /// subscriber joins `channels` channels ([`channel_name`]; the
    /// publications go to the first).
    ///
    /// # Errors
    ///
    /// When a process cannot start.
    pub fn spawn(
        bench: &Path,
        peer: Peer,
        nodes: &[SocketAddr],
        (conns, first_src, channels): (usize, u8, usize),
        (count, within): (u64, Duration),
    ) -> Result<Self> {
        let hard = hard_nofile();
        let processes = conns.div_ceil(PER_PROCESS).max(1);
        let nodes_arg = nodes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut clients = Vec::new();
        let (tx, lines) = mpsc::channel::<(usize, String)>();
        for i in 0..processes {
            let share = conns / processes + usize::from(i < conns % processes);
            let src = usize::from(first_src) + i * usize::from(SOURCES_PER_CLIENT);
            let src = u8::try_from(src).context("out of 127.0.0.x source addresses")?;
            let mut command = pinned(Core::Load, hard, bench);
            command.args(["load", "subscribe", "--peer", peer_arg(peer)]);
            command.args(["--nodes", &nodes_arg, "--conns", &share.to_string()]);
            command.args(["--first-src", &src.to_string()]);
            command.args(["--count", &count.to_string()]);
            command.args(["--within", &within.as_secs().to_string()]);
            command.args(["--channels", &channels.to_string()]);
            let (guard, stdin, stdout) = Guard::spawn_piped(&format!("subscribers {i}"), command)?;
            forward_lines(i, stdout, tx.clone());
            clients.push((guard, stdin));
        }
        Ok(Self {
            peer,
            clients,
            lines,
        })
    }

    /// The source addresses `conns` subscribers take (the next peer's
    /// processes start after them).
    pub fn sources(conns: usize) -> u8 {
        let processes = conns.div_ceil(PER_PROCESS).max(1);
        u8::try_from(processes * usize::from(SOURCES_PER_CLIENT)).unwrap_or(u8::MAX)
    }

    fn next(&self, within: Duration) -> Result<(usize, String)> {
        self.lines
            .recv_timeout(within)
            .context("a client process did not answer in time")
    }

    /// Waits until every process has its subscriptions in (within the
    /// opening's deadline); returns how many there are.
    ///
    /// # Errors
    ///
    /// When a process does not answer in time, or a subscription failed.
    pub fn ready(&self) -> Result<usize> {
        let mut subscribed = 0;
        for _ in 0..self.clients.len() {
            let (i, line) = self.next(OPEN_DEADLINE + Duration::from_secs(30))?;
            let ready: Ready =
                serde_json::from_str(&line).with_context(|| format!("client {i}: {line}"))?;
            ensure!(
                ready.failed.is_empty(),
                "{}: {} subscribed, failures: {:?}",
                self.peer.label(),
                ready.subscribed,
                ready.failed
            );
            subscribed += ready.subscribed;
        }
        Ok(subscribed)
    }

    /// Tells every process `go`: its window starts.
    ///
    /// # Errors
    ///
    /// When a process is gone.
    pub fn go(&mut self) -> Result<()> {
        for (_, stdin) in &mut self.clients {
            writeln!(stdin, "go")?;
            stdin.flush()?;
        }
        Ok(())
    }

    /// Every process's result, each within `within`.
    ///
    /// # Errors
    ///
    /// When a process does not answer in time or answers something else.
    pub fn results(&self, within: Duration) -> Result<Vec<Received>> {
        let mut results = Vec::new();
        for _ in 0..self.clients.len() {
            let (i, line) = self.next(within)?;
            results
                .push(serde_json::from_str(&line).with_context(|| format!("client {i}: {line}"))?);
        }
        Ok(results)
    }
}

/// A measurement's servers, started for `conns` connections, and their
/// RSS before any client.
struct Measured {
    _servers: Servers,
    pids: Vec<u32>,
    addrs: Vec<SocketAddr>,
    runtime: tokio::runtime::Runtime,
    rss_before: u64,
}

impl Measured {
    fn start(options: &Options, peer: Peer, nodes: usize, conns: usize) -> Result<Self> {
        let nofile = (conns as u64 + 2048).min(hard_nofile());
        let servers = start(options, peer, nodes, nofile)?;
        let pids: Vec<u32> = servers.nodes.iter().map(|(g, _)| g.pid()).collect();
        let addrs: Vec<SocketAddr> = servers.nodes.iter().map(|(_, a)| *a).collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let rss_before = runtime.block_on(settled_rss(&pids, Duration::from_secs(3)))?;
        Ok(Self {
            _servers: servers,
            pids,
            addrs,
            runtime,
            rss_before,
        })
    }

    /// The servers' RSS once it settled, KiB.
    fn rss(&self) -> Result<u64> {
        self.runtime
            .block_on(settled_rss(&self.pids, Duration::from_secs(10)))
    }
}

/// One case on one peer over `nodes` nodes.
fn measure(options: &Options, peer: Peer, nodes: usize, case: Case) -> Result<Row> {
    let measured = Measured::start(options, peer, nodes, case.subscribers)?;
    let Measured {
        pids,
        addrs,
        runtime,
        rss_before,
        ..
    } = &measured;
    let rss_before = *rss_before;

    let opening = Instant::now();
    let within = Duration::from_secs(case.seconds) + DRAIN;
    let mut clients = Subscribers::spawn(
        &options.bench,
        peer,
        addrs,
        (case.subscribers, 2, 1),
        (case.publications(), within),
    )?;
    let subscribed = clients.ready()?;
    ensure!(
        subscribed == case.subscribers,
        "{}: {subscribed} of {} subscribed",
        peer.label(),
        case.subscribers
    );
    let open_s = opening.elapsed().as_secs_f64();
    let rss_after = measured.rss()?;

    let cpu_before = cpu_seconds_of(pids)?;
    let window = Instant::now();
    clients.go()?;
    let publish_ms = runtime.block_on(publish(peer, addrs[0], case))?;
    let results = clients.results(DRAIN + Duration::from_secs(30))?;
    let wall = window.elapsed().as_secs_f64();
    let cpu = cpu_seconds_of(pids)? - cpu_before;
    drop(clients);
    drop(measured);

    let mut delays = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let (mut delivered, mut out_of_order, mut clients_cpu) = (0u64, 0u64, 0.0);
    for r in &results {
        delivered += r.received;
        out_of_order += r.out_of_order;
        clients_cpu += r.cpu;
        for &(value, count) in &r.delays_us {
            delays.record_n(value, count)?;
        }
    }
    let expected = case.publications() * subscribed as u64;
    let mut other = BTreeMap::<String, u64>::new();
    for r in &results {
        for (what, n) in &r.other {
            *other.entry(what.clone()).or_default() += n;
        }
    }
    ensure!(
        delivered == expected && out_of_order == 0,
        "{}: {delivered} of {expected} delivered, {out_of_order} out of order; other frames and ends: {other:?}",
        peer.label()
    );
    let ms = |q: f64| delays.value_at_quantile(q) as f64 / 1000.0;
    let mut publish_sorted = publish_ms.clone();
    Ok(Row {
        peer,
        nodes,
        case,
        subscribed,
        open_s,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        kib_per_subscriber: rss_after.saturating_sub(rss_before) as f64 / subscribed as f64,
        window_s: wall,
        cpu_s: cpu,
        delivered,
        expected,
        cpu_us_per_delivery: cpu * 1e6 / delivered.max(1) as f64,
        p50_ms: ms(0.50),
        p99_ms: ms(0.99),
        max_ms: delays.max() as f64 / 1000.0,
        publish_p50_ms: crate::harness::stats::median(&mut publish_sorted),
        clients_cpu,
    })
}

/// The many-channels case on `peer`, one node: `connections` each
/// subscribed to [`MANY_CHANNELS`] channels, no publication; the RSS
/// once they are all in, minus before any connected.
fn measure_many(options: &Options, peer: Peer, connections: usize) -> Result<ManyRow> {
    let measured = Measured::start(options, peer, 1, connections)?;
    let rss_before = measured.rss_before;
    let opening = Instant::now();
    // No publication: the processes hold their subscriptions until dropped.
    let clients = Subscribers::spawn(
        &options.bench,
        peer,
        &measured.addrs,
        (connections, 2, MANY_CHANNELS),
        (0, Duration::ZERO),
    )?;
    let subscribed = clients.ready()?;
    ensure!(
        subscribed == connections,
        "{}: {subscribed} of {connections} connections subscribed",
        peer.label()
    );
    let open_s = opening.elapsed().as_secs_f64();
    let rss_after = measured.rss()?;
    drop(clients);
    drop(measured);
    let grown = rss_after.saturating_sub(rss_before) as f64;
    let subscriptions = connections * MANY_CHANNELS;
    Ok(ManyRow {
        peer,
        connections,
        channels_each: MANY_CHANNELS,
        open_s,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        kib_per_connection: grown / connections as f64,
        kib_per_subscription: grown / subscriptions as f64,
    })
}

fn peer_arg(peer: Peer) -> &'static str {
    match peer {
        Peer::Ours => "ours",
        Peer::SocketIo => "socketio",
        Peer::Sockudo => "sockudo",
    }
}

/// A payload of [`PAYLOAD_BYTES`]: publication `n`, the wall clock in µs, padding.
fn payload(n: u64, t_us: u64) -> String {
    let head = format!(r#"{{"n":{n},"t":{t_us},"p":""#);
    let pad = PAYLOAD_BYTES.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

/// `(n, t)` of a payload, without a full decode.
fn read_payload(text: &str) -> Option<(u64, u64)> {
    let number = |key: &str| -> Option<u64> {
        let rest = text.split(key).nth(1)?;
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    Some((number(r#""n":"#)?, number(r#""t":"#)?))
}

/// Publishes the case's publications to the node at `addr`, paced, each
/// answered 200; returns how long each answer took, in ms.
async fn publish(peer: Peer, addr: SocketAddr, case: Case) -> Result<Vec<f64>> {
    let http = reqwest::Client::new();
    let url = match peer {
        Peer::Ours => format!("http://{addr}/api/channels/{CHANNEL}/publish"),
        Peer::SocketIo => format!("http://{addr}/publish/{CHANNEL}"),
        // Signed per publication, below.
        Peer::Sockudo => String::new(),
    };
    let interval = Duration::from_secs(1) / case.per_second.max(1);
    // The first one once the clients have read `go`.
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let mut took = Vec::new();
    for n in 0..case.publications() {
        tokio::time::sleep_until(start + interval * u32::try_from(n)?).await;
        let sent = Instant::now();
        let body = payload(n, unix_us());
        let mut request = if peer == Peer::Sockudo {
            // The payload travels as the Pusher event's data string.
            let (url, body) = sockudo::publication(addr, CHANNEL, &body, unix_us() / 1_000_000);
            http.post(url).body(body)
        } else {
            http.post(&url).body(body)
        }
        .header("content-type", "application/json");
        if peer == Peer::Ours {
            request = request.bearer_auth(ours::ADMIN_TOKEN);
        }
        let response = tokio::time::timeout(Duration::from_secs(10), request.send())
            .await
            .context("a publication was not answered within 10 s")??;
        let status = response.status();
        let answer = response.text().await?;
        ensure!(status == 200, "publication {n} answered {status}: {answer}");
        took.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(took)
}

/// A client process's line once its subscriptions are in.
#[derive(Debug, Serialize, Deserialize)]
struct Ready {
    opened: usize,
    subscribed: usize,
    failed: BTreeMap<String, u64>,
    open_s: f64,
}

/// A client process's result.
#[derive(Debug, Serialize, Deserialize)]
pub struct Received {
    received: u64,
    out_of_order: u64,
    /// The delay histogram, as (µs, count) pairs.
    delays_us: Vec<(u64, u64)>,
    /// This process's CPU over the window, seconds.
    cpu: f64,
    /// Connections that ended before the end.
    pub ended: u64,
    /// Frames other than publications after `go`, by their first 40
    /// bytes (a gap, a close reason), and why connections ended.
    pub other: BTreeMap<String, u64>,
}

/// What the connections of a client process share.
struct Tally {
    delays: Mutex<Histogram<u64>>,
    received: AtomicU64,
    out_of_order: AtomicU64,
    ended: AtomicU64,
    complete: AtomicUsize,
    other: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn note(&self, what: String) {
        *self
            .other
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(what)
            .or_default() += 1;
    }
}

/// The client process (`bench load subscribe`): `conns` subscribers over
/// `nodes` in turn, from 127.0.0.`first_src` onwards; see the module doc.
/// Its result is its last line (the ready line was printed before).
///
/// # Errors
///
/// When no `go` comes within 600 s, or the output fails.
pub async fn subscribe(
    peer: Peer,
    nodes: &[SocketAddr],
    (conns, first_src, channels): (usize, u8, usize),
    count: u64,
    within: Duration,
) -> Result<String> {
    ensure!(!nodes.is_empty(), "no nodes");
    ensure!(channels >= 1, "each subscriber joins one channel at least");
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut opening = JoinSet::new();
    for i in 0..conns {
        let src = first_src + (i % usize::from(SOURCES_PER_CLIENT)) as u8;
        let (gate, node) = (gate.clone(), nodes[i % nodes.len()]);
        opening.spawn(async move {
            let _permit = gate.acquire_owned().await;
            tokio::time::timeout(HANDSHAKE, open(peer, src, node, channels))
                .await
                .context("handshake timed out")?
        });
    }
    let tally = Arc::new(Tally {
        delays: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3)?),
        received: AtomicU64::new(0),
        out_of_order: AtomicU64::new(0),
        ended: AtomicU64::new(0),
        complete: AtomicUsize::new(0),
        other: Mutex::new(BTreeMap::new()),
    });
    let mut readers = JoinSet::new();
    let (mut subscribed, mut failed) = (0usize, BTreeMap::<String, u64>::new());
    let deadline = tokio::time::Instant::now() + OPEN_DEADLINE;
    while let Ok(Some(done)) = tokio::time::timeout_at(deadline, opening.join_next()).await {
        match done {
            Ok(Ok(ws)) => {
                subscribed += 1;
                readers.spawn(read(peer, ws, count, tally.clone()));
            }
            Ok(Err(err)) => *failed.entry(format!("{err:#}")).or_default() += 1,
            Err(err) => *failed.entry(format!("task: {err}")).or_default() += 1,
        }
    }
    if !opening.is_empty() {
        *failed
            .entry("not open within the deadline".into())
            .or_default() += opening.len() as u64;
    }
    opening.abort_all();
    let ready = Ready {
        opened: subscribed + failed.values().sum::<u64>() as usize,
        subscribed,
        failed,
        open_s: started.elapsed().as_secs_f64(),
    };
    #[allow(clippy::print_stdout)] // the orchestrator reads this line
    {
        println!("{}", serde_json::to_string(&ready)?);
    }
    std::io::stdout().flush()?;
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let go = tokio::time::timeout(Duration::from_secs(600), stdin.next_line()).await;
    if !matches!(go, Ok(Ok(Some(ref l))) if l.trim() == "go") {
        bail!("no `go` from the orchestrator within 600 s");
    }
    let cpu_before = cpu_seconds("self")?;
    let window = Instant::now();
    let end = tokio::time::Instant::now() + within;
    // Bounded: until every subscriber has every publication, or `within`.
    while tally.complete.load(Relaxed) < subscribed && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = (cpu_seconds("self")? - cpu_before) / window.elapsed().as_secs_f64();
    readers.abort_all();
    let delays = tally.delays.lock().unwrap_or_else(|e| e.into_inner());
    let result = Received {
        received: tally.received.load(Relaxed),
        out_of_order: tally.out_of_order.load(Relaxed),
        delays_us: delays
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect(),
        cpu,
        ended: tally.ended.load(Relaxed),
        other: tally
            .other
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
    };
    Ok(serde_json::to_string(&result)?)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Reads the next text frame, answering socket.io's pings on the way.
async fn next_text(peer: Peer, ws: &mut Ws) -> Result<String> {
    loop {
        let message = ws.next().await.context("the server closed")??;
        if let Message::Close(frame) = &message {
            let (code, reason) = frame
                .as_ref()
                .map_or((0, ""), |f| (u16::from(f.code), f.reason.as_str()));
            bail!("closed by the server: {code} {reason}");
        }
        if let Message::Text(text) = message {
            if peer == Peer::SocketIo && text.as_str() == socketio::PING {
                ws.send(Message::text(socketio::PONG)).await?;
                continue;
            }
            if peer == Peer::Sockudo && sockudo::is_ping(text.as_str()) {
                ws.send(Message::text(sockudo::PONG)).await?;
                continue;
            }
            return Ok(text.as_str().to_owned());
        }
    }
}

/// One subscriber: connected from `127.0.0.src` to `node` and subscribed
/// to `channels` channels ([`channel_name`]), each confirmed.
async fn open(peer: Peer, src: u8, node: SocketAddr, channels: usize) -> Result<Ws> {
    let tcp = tcp_from(src, node).await?;
    let mut left = channels;
    match peer {
        Peer::Ours => {
            let url = format!("ws://{node}/ws?protocol=2");
            let mut ws = subscriber(&url, tcp).await?;
            for i in 0..channels {
                let channel = channel_name(i);
                let subscribe = format!(r#"{{"type":"subscribe","channel":"{channel}"}}"#);
                ws.send(Message::text(subscribe)).await?;
            }
            loop {
                let text = next_text(peer, &mut ws).await?;
                if text.starts_with(r#"{"type":"subscribed""#) {
                    left -= 1;
                    if left == 0 {
                        return Ok(ws);
                    }
                    continue;
                }
                if text.starts_with(r#"{"type":"error""#) {
                    bail!("subscribe refused: {text}");
                }
            }
        }
        Peer::SocketIo => {
            let url = format!("ws://{node}{}", socketio::PATH);
            let mut ws = subscriber(&url, tcp).await?;
            let open = next_text(peer, &mut ws).await?;
            ensure!(
                open.starts_with('0'),
                "not an Engine.IO open packet: {open}"
            );
            ws.send(Message::text(socketio::CONNECT)).await?;
            let connected = next_text(peer, &mut ws).await?;
            ensure!(
                connected.starts_with(socketio::CONNECT),
                "not a socket.io CONNECT: {connected}"
            );
            for i in 0..channels {
                let room = format!("\"{}\"", channel_name(i));
                ws.send(Message::text(socketio::event("join", &room)))
                    .await?;
            }
            loop {
                let text = next_text(peer, &mut ws).await?;
                if socketio::payload_of(&text, "joined").is_some() {
                    left -= 1;
                    if left == 0 {
                        return Ok(ws);
                    }
                }
            }
        }
        Peer::Sockudo => {
            let url = format!("ws://{node}{}", sockudo::path());
            let mut ws = subscriber(&url, tcp).await?;
            let established = next_text(peer, &mut ws).await?;
            ensure!(
                sockudo::event_of(&established).as_deref() == Some("pusher:connection_established"),
                "not pusher:connection_established: {established}"
            );
            for i in 0..channels {
                ws.send(Message::text(sockudo::subscribe(&channel_name(i))))
                    .await?;
            }
            loop {
                let text = next_text(peer, &mut ws).await?;
                match sockudo::event_of(&text).as_deref() {
                    Some("pusher_internal:subscription_succeeded") => {
                        left -= 1;
                        if left == 0 {
                            return Ok(ws);
                        }
                    }
                    Some("pusher:error" | "pusher:subscription_error") => {
                        bail!("subscribe refused: {text}")
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The publication in a frame: ours' `pub` (its `data`), socket.io's `pub`
/// event, Sockudo's `pub` event (its data string, decoded).
fn publication(peer: Peer, text: &str) -> Option<Cow<'_, str>> {
    match peer {
        Peer::Ours => {
            if !text.starts_with(r#"{"type":"pub""#) {
                return None;
            }
            text.split_once(r#""data":"#)
                .map(|(_, data)| Cow::Borrowed(data))
        }
        Peer::SocketIo => socketio::payload_of(text, socketio::PUB_EVENT).map(Cow::Borrowed),
        Peer::Sockudo => sockudo::data_of(text, sockudo::PUB_EVENT).map(Cow::Owned),
    }
}

/// Reads one subscriber's frames until it closes: each publication's delay
/// recorded, in order and once each, or counted as out of order.
async fn read(peer: Peer, mut ws: Ws, count: u64, tally: Arc<Tally>) {
    let mut next = 0u64;
    let why = loop {
        let text = match next_text(peer, &mut ws).await {
            Ok(text) => text,
            Err(err) => break format!("ended: {err:#}"),
        };
        let Some((n, t_us)) = publication(peer, &text).and_then(|p| read_payload(&p)) else {
            tally.note(text.chars().take(40).collect());
            continue;
        };
        let delay = unix_us().saturating_sub(t_us).max(1);
        let _ = tally
            .delays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(delay);
        if n != next {
            tally.out_of_order.fetch_add(1, Relaxed);
        }
        next = n + 1;
        tally.received.fetch_add(1, Relaxed);
        if next == count {
            tally.complete.fetch_add(1, Relaxed);
        }
    };
    tally.note(why);
    tally.ended.fetch_add(1, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_is_100_bytes_and_reads_back() {
        let text = payload(42, 1_733_570_000_123_456);
        assert_eq!(text.len(), PAYLOAD_BYTES);
        assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
        assert_eq!(read_payload(&text), Some((42, 1_733_570_000_123_456)));
        let ours = format!(r#"{{"type":"pub","channel":"bench","offset":43,"data":{text}}}"#);
        assert_eq!(
            publication(Peer::Ours, &ours).and_then(|p| read_payload(&p)),
            Some((42, 1_733_570_000_123_456))
        );
        let io = socketio::event(socketio::PUB_EVENT, &text);
        assert_eq!(
            publication(Peer::SocketIo, &io).and_then(|p| read_payload(&p)),
            Some((42, 1_733_570_000_123_456))
        );
        let pusher = serde_json::json!({"event": "pub", "channel": "bench", "data": text});
        assert_eq!(
            publication(Peer::Sockudo, &pusher.to_string()).and_then(|p| read_payload(&p)),
            Some((42, 1_733_570_000_123_456))
        );
        assert_eq!(publication(Peer::Ours, r#"{"type":"welcome"}"#), None);
    }

    #[test]
    fn the_quick_cases_are_smaller() {
        let [a, b] = cases(false);
        assert_eq!((a.subscribers, a.publications()), (10_000, 30));
        assert_eq!((b.subscribers, b.publications()), (1_000, 300));
        assert!(cases(true)[0].subscribers < a.subscribers);
    }
}
