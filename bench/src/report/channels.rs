//! The channels' section of `docs/BENCHMARKS.md` (issue 23), from the typed
//! results of [`crate::scenarios::channels`]: ours beside socket.io in the
//! same run, the ratios against the targets. Every figure comes
//! from the run; a peer or a case the run did not measure shows `-`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::scenarios::channels::{Case, Peer};

/// The section's first and last lines in `docs/BENCHMARKS.md`.
const BEGIN: &str = "<!-- kept:channels -->";
const END: &str = "<!-- /kept:channels -->";

/// The targets of issue 23: ours at most this share of socket.io's.
const P99_TARGET: f64 = 0.5;
const CPU_TARGET: f64 = 0.5;
const MEMORY_TARGET: f64 = 0.25;

/// One case on one peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// The server.
    pub peer: Peer,
    /// Its nodes (2: on one Redis).
    pub nodes: usize,
    /// What was published to whom.
    pub case: Case,
    /// Subscriptions confirmed.
    pub subscribed: usize,
    /// Seconds to open and subscribe them all.
    pub open_s: f64,
    /// The servers' summed RSS before any client, KiB.
    pub rss_before_kib: u64,
    /// The same once every subscriber is in, KiB.
    pub rss_after_kib: u64,
    /// (after - before) / subscribed.
    pub kib_per_subscriber: f64,
    /// The window: from `go` until every client process answered, seconds.
    pub window_s: f64,
    /// The servers' CPU over the window, seconds.
    pub cpu_s: f64,
    /// Deliveries counted (each publication on each subscriber).
    pub delivered: u64,
    /// Publications times subscribers.
    pub expected: u64,
    /// `cpu_s` per delivery, µs.
    pub cpu_us_per_delivery: f64,
    /// Delay from the publish to the subscriber, median, ms.
    pub p50_ms: f64,
    /// The same, 99th percentile.
    pub p99_ms: f64,
    /// The same, longest.
    pub max_ms: f64,
    /// The publish request's answer, median, ms.
    pub publish_p50_ms: f64,
    /// The client processes' CPU, in cores (the load side's share).
    pub clients_cpu: f64,
}

/// One `bench channels` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// When, UTC.
    pub date: String,
    /// The smaller cases (`--quick`).
    pub quick: bool,
    /// The command that ran it.
    pub command: String,
    /// Its length, seconds.
    pub seconds: f64,
    /// The load averages when it ended.
    pub load: String,
    /// `node --version`.
    pub node: String,
    /// The installed socket.io.
    pub socketio: String,
    /// The installed `@socket.io/redis-adapter`.
    pub redis_adapter: String,
    /// `sockudo --version`, when it was measured (`--peer sockudo`).
    #[serde(default)]
    pub sockudo: String,
    /// Every case on every peer.
    pub rows: Vec<Row>,
    /// The many-channels case on every peer (one node); empty in runs
    /// made before it existed.
    #[serde(default)]
    pub many: Vec<ManyRow>,
}

/// The many-channels case on one peer: connections subscribed to several
/// channels each, one node, no publication.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManyRow {
    /// The server.
    pub peer: Peer,
    /// Connections held.
    pub connections: usize,
    /// Channels each connection subscribed to.
    pub channels_each: usize,
    /// Seconds to open and subscribe them all.
    pub open_s: f64,
    /// The server's RSS before any client, KiB.
    pub rss_before_kib: u64,
    /// The same once every subscription is in, KiB.
    pub rss_after_kib: u64,
    /// (after - before) / connections.
    pub kib_per_connection: f64,
    /// (after - before) / (connections x channels each).
    pub kib_per_subscription: f64,
}

/// Writes the run's results beside the report (`channels.json`), every
/// figure the section shows and more.
///
/// # Errors
///
/// When the file cannot be written.
pub fn write_results(docs: &Path, run: &Run) -> Result<()> {
    std::fs::write(
        docs.join("channels.json"),
        serde_json::to_string_pretty(run)? + "\n",
    )?;
    Ok(())
}

/// Replaces (or appends) the section in `docs/BENCHMARKS.md`.
///
/// # Errors
///
/// When the file cannot be written.
pub fn write_section(docs: &Path, md: &str) -> Result<()> {
    super::kept::write_kept(docs, BEGIN, END, md)
}

fn find(run: &Run, peer: Peer, nodes: usize, subscribers: usize) -> Option<&Row> {
    run.rows
        .iter()
        .find(|r| r.peer == peer && r.nodes == nodes && r.case.subscribers == subscribers)
}

/// `ours / theirs` with whether it meets `target`, or `-`.
fn ratio(ours: Option<f64>, theirs: Option<f64>, target: f64) -> String {
    match (ours, theirs) {
        (Some(a), Some(b)) if b > 0.0 => {
            let r = a / b;
            let verdict = if r <= target { "met" } else { "**missed**" };
            format!("{r:.2}x ({verdict}, target ≤ {target}x)")
        }
        _ => "-".into(),
    }
}

/// The load generator's CPU per publication, ms: its share of a core over
/// the window times the window, over the publications.
fn reader_ms_per_publication(row: &Row) -> f64 {
    row.clients_cpu * row.window_s * 1000.0 / row.case.publications().max(1) as f64
}

/// `12,345`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `ours / theirs` where there is no target, or `-`.
fn plain_ratio(ours: Option<f64>, theirs: Option<f64>) -> String {
    match (ours, theirs) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

fn cell(value: Option<f64>, digits: usize) -> String {
    value.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// The section, from a run's results.
pub fn markdown(run: &Run) -> String {
    let mut md = String::new();
    let label = if run.quick {
        " — QUICK RUN (`--quick`: fewer subscribers, 10 s windows), not the issue's sizes"
    } else {
        ""
    };
    let _ = write!(
        md,
        "{BEGIN}\n## Channels: fan-out, ours beside socket.io (issue 23){label}\n\n\
         Measured {date} by `{command}` ({seconds:.0} s; load average after: {load}); \
         `docs/channels.json` holds every figure of the run. Our \
         release server (protocol version 2, memory store on one node, `--redis-url` on two) \
         beside socket.io {socketio} on Node.js {node} (rooms; `@socket.io/redis-adapter` \
         {adapter} on two nodes), each on core 0; the subscribers are held by our one native \
         load generator on core 1 (socket.io through Engine.IO 4's WebSocket transport). \
         Each publication is a JSON value of 100 bytes carrying the publisher's wall clock; \
         the delay is the subscriber's clock on arrival minus it (one machine, one clock). \
         CPU is the server processes' user + system time over the window (from the first \
         publication until every subscriber had every one) per delivery; memory is their \
         RSS once every subscriber is in minus before any connected, per subscriber. With \
         two nodes the subscribers alternate between them, the publication goes to the \
         first, and both nodes count (the `redis-server` does not, for either). Each keeps the \
         heartbeat it ships with, answered by the load generator: ours a WebSocket ping every \
         10 s (a connection silent for 30 s is closed), socket.io an Engine.IO ping every \
         25 s. Every delivery was counted, in order and once each, or the run fails. The \
         load generator's own CPU is shown so that a delay bounded by the reader, not the \
         server, can be told apart: its CPU per publication is the time one core needs to \
         read that publication on every subscriber, so where it is of the order of the \
         delay's median, the reader bounds the delay and the delay ratio does not tell \
         the servers apart.\n",
        date = run.date,
        command = run.command,
        seconds = run.seconds,
        load = run.load,
        socketio = run.socketio,
        node = run.node.trim_start_matches('v'),
        adapter = run.redis_adapter,
    );
    let mut cases: Vec<(usize, Case)> = Vec::new();
    for row in &run.rows {
        if !cases
            .iter()
            .any(|(n, c)| *n == row.nodes && c.subscribers == row.case.subscribers)
        {
            cases.push((row.nodes, row.case));
        }
    }
    for (nodes, case) in &cases {
        let ours = find(run, Peer::Ours, *nodes, case.subscribers);
        let io = find(run, Peer::SocketIo, *nodes, case.subscribers);
        let get = |row: Option<&Row>, f: fn(&Row) -> f64| row.map(f);
        let _ = write!(
            md,
            "\n### {per_second} a second to {subscribers} subscribers, {seconds} s, {nodes}\n\n\
             | | ours | socket.io | ours / socket.io |\n|---|---|---|---|\n\
             | delay p50, ms | {o50} | {i50} | {r50} |\n\
             | delay p99, ms | {o99} | {i99} | {r99} |\n\
             | delay max, ms | {omax} | {imax} | |\n\
             | server CPU per delivery, µs | {ocpu} | {icpu} | {rcpu} |\n\
             | server RSS per subscriber, KiB | {omem} | {imem} | {rmem} |\n\
             | deliveries | {odel} | {idel} | |\n\
             | time to subscribe them all, s | {oopen} | {iopen} | |\n\
             | load generator CPU over the window, cores | {oload} | {iload} | |\n\
             | load generator CPU per publication, ms | {oper} | {iper} | |\n",
            per_second = case.per_second,
            subscribers = thousands(case.subscribers),
            seconds = case.seconds,
            nodes = if *nodes == 1 {
                "one node".to_owned()
            } else {
                format!("{nodes} nodes on one Redis")
            },
            o50 = cell(get(ours, |r| r.p50_ms), 2),
            i50 = cell(get(io, |r| r.p50_ms), 2),
            r50 = plain_ratio(get(ours, |r| r.p50_ms), get(io, |r| r.p50_ms)),
            o99 = cell(get(ours, |r| r.p99_ms), 2),
            i99 = cell(get(io, |r| r.p99_ms), 2),
            r99 = ratio(get(ours, |r| r.p99_ms), get(io, |r| r.p99_ms), P99_TARGET),
            omax = cell(get(ours, |r| r.max_ms), 2),
            imax = cell(get(io, |r| r.max_ms), 2),
            ocpu = cell(get(ours, |r| r.cpu_us_per_delivery), 2),
            icpu = cell(get(io, |r| r.cpu_us_per_delivery), 2),
            rcpu = ratio(
                get(ours, |r| r.cpu_us_per_delivery),
                get(io, |r| r.cpu_us_per_delivery),
                CPU_TARGET
            ),
            omem = cell(get(ours, |r| r.kib_per_subscriber), 2),
            imem = cell(get(io, |r| r.kib_per_subscriber), 2),
            rmem = ratio(
                get(ours, |r| r.kib_per_subscriber),
                get(io, |r| r.kib_per_subscriber),
                MEMORY_TARGET
            ),
            odel = ours.map_or("-".into(), |r| format!("{} of {}", r.delivered, r.expected)),
            idel = io.map_or("-".into(), |r| format!("{} of {}", r.delivered, r.expected)),
            oopen = cell(get(ours, |r| r.open_s), 1),
            iopen = cell(get(io, |r| r.open_s), 1),
            oload = cell(get(ours, |r| r.clients_cpu), 2),
            iload = cell(get(io, |r| r.clients_cpu), 2),
            oper = cell(get(ours, reader_ms_per_publication), 1),
            iper = cell(get(io, reader_ms_per_publication), 1),
        );
        if let Some(sockudo) = find(run, Peer::Sockudo, *nodes, case.subscribers) {
            sockudo_table(&mut md, ours, sockudo);
        }
    }
    many_channels(&mut md, run);
    if run.rows.iter().any(|r| r.peer == Peer::Sockudo) {
        let _ = write!(
            md,
            "\nSockudo ({version}, `cargo install sockudo --locked --features redis`) was \
             measured in the same run with `--peers sockudo`, its tables under each case: \
             the Pusher protocol 7 (`/app/KEY?protocol=7`, `pusher:subscribe` to a public \
             channel), publications through its signed HTTP API (`POST /apps/ID/events`, the \
             payload as the event's data string), its local adapter on one node and its redis \
             adapter on two, its rate limiter and metrics server off and its app's connection \
             limit raised. Its heartbeat is as it ships (a `pusher:ping` after 120 s of \
             silence, answered). It cannot report a port it bound itself, so each node is \
             given a free loopback port found by the harness, as our server is. The issue's \
             targets against it: CPU per delivery and memory per subscriber below Sockudo's \
             (ratio under 1x).\n",
            version = run.sockudo.trim(),
        );
    } else {
        let _ = write!(
            md,
            "\nSockudo was not measured in this run: it is measured beside the others with \
             `cargo xtask bench --channels --peers sockudo` (its install takes about 13 \
             minutes on two cores, once).\n"
        );
    }
    for peer in [Peer::Ours, Peer::SocketIo] {
        if run.rows.iter().all(|r| r.peer != peer) {
            let _ = write!(
                md,
                "\n{} was left out of this run (`--peer`): its column and the ratios are empty.\n",
                peer.label()
            );
        }
    }
    let _ = write!(md, "\n{END}\n");
    md
}

/// The many-channels table: each peer's RSS per connection and per
/// subscription, and per subscription past the first (against the same
/// run's one-channel RSS per subscriber at the same size, when it has one).
fn many_channels(md: &mut String, run: &Run) {
    let Some(first) = run.many.first() else {
        return;
    };
    let _ = write!(
        md,
        "\n### {channels} channels on each of {connections} connections, one node\n\n\
         Each connection subscribes to {channels} channels (the same {channels} for every \
         connection: socket.io joins {channels} rooms, Sockudo {channels} public channels), \
         nothing is published; RSS once every subscription is confirmed minus before any \
         connection. Per subscription past the first: (RSS per connection here - RSS per \
         subscriber of the one-channel case above at the same size) / {more}, where this run \
         has that case.\n\n\
         | | RSS per connection, KiB | RSS per subscription, KiB | per subscription past the first, KiB | time to subscribe them all, s |\n\
         |---|---|---|---|---|\n",
        channels = first.channels_each,
        connections = thousands(first.connections),
        more = first.channels_each.saturating_sub(1),
    );
    for row in &run.many {
        let one = find(run, row.peer, 1, row.connections).map(|r| r.kib_per_subscriber);
        let past = one
            .filter(|_| row.channels_each > 1)
            .map(|one| (row.kib_per_connection - one) / (row.channels_each - 1) as f64);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            row.peer.label(),
            cell(Some(row.kib_per_connection), 2),
            cell(Some(row.kib_per_subscription), 3),
            cell(past, 3),
            cell(Some(row.open_s), 1),
        );
    }
    let ours = run.many.iter().find(|r| r.peer == Peer::Ours);
    let io = run.many.iter().find(|r| r.peer == Peer::SocketIo);
    if let (Some(ours), Some(io)) = (ours, io) {
        let _ = writeln!(
            md,
            "\nOurs / socket.io, RSS per subscription: {}.",
            plain_ratio(
                Some(ours.kib_per_subscription),
                Some(io.kib_per_subscription)
            )
        );
    }
}

/// Sockudo beside ours for one case: its figures and ours / Sockudo, the
/// issue's targets being "below Sockudo's" for CPU and memory.
fn sockudo_table(md: &mut String, ours: Option<&Row>, sockudo: &Row) {
    let get = |row: Option<&Row>, f: fn(&Row) -> f64| row.map(f);
    let s = Some(sockudo);
    let _ = write!(
        md,
        "\n| | ours | Sockudo | ours / Sockudo |\n|---|---|---|---|\n\
         | delay p50, ms | {o50} | {s50} | {r50} |\n\
         | delay p99, ms | {o99} | {s99} | {r99} |\n\
         | delay max, ms | {omax} | {smax} | |\n\
         | server CPU per delivery, µs | {ocpu} | {scpu} | {rcpu} |\n\
         | server RSS per subscriber, KiB | {omem} | {smem} | {rmem} |\n\
         | deliveries | {odel} | {sdel} | |\n\
         | time to subscribe them all, s | {oopen} | {sopen} | |\n\
         | load generator CPU over the window, cores | {oload} | {sload} | |\n\
         | load generator CPU per publication, ms | {oper} | {sper} | |\n",
        o50 = cell(get(ours, |r| r.p50_ms), 2),
        s50 = cell(get(s, |r| r.p50_ms), 2),
        r50 = plain_ratio(get(ours, |r| r.p50_ms), get(s, |r| r.p50_ms)),
        o99 = cell(get(ours, |r| r.p99_ms), 2),
        s99 = cell(get(s, |r| r.p99_ms), 2),
        r99 = plain_ratio(get(ours, |r| r.p99_ms), get(s, |r| r.p99_ms)),
        omax = cell(get(ours, |r| r.max_ms), 2),
        smax = cell(get(s, |r| r.max_ms), 2),
        ocpu = cell(get(ours, |r| r.cpu_us_per_delivery), 2),
        scpu = cell(get(s, |r| r.cpu_us_per_delivery), 2),
        rcpu = below(
            get(ours, |r| r.cpu_us_per_delivery),
            get(s, |r| r.cpu_us_per_delivery)
        ),
        omem = cell(get(ours, |r| r.kib_per_subscriber), 2),
        smem = cell(get(s, |r| r.kib_per_subscriber), 2),
        rmem = below(
            get(ours, |r| r.kib_per_subscriber),
            get(s, |r| r.kib_per_subscriber)
        ),
        odel = ours.map_or("-".into(), |r| format!("{} of {}", r.delivered, r.expected)),
        sdel = format_args!("{} of {}", sockudo.delivered, sockudo.expected),
        oopen = cell(get(ours, |r| r.open_s), 1),
        sopen = cell(get(s, |r| r.open_s), 1),
        oload = cell(get(ours, |r| r.clients_cpu), 2),
        sload = cell(get(s, |r| r.clients_cpu), 2),
        oper = cell(get(ours, reader_ms_per_publication), 1),
        sper = cell(get(s, reader_ms_per_publication), 1),
    );
}

/// `ours / theirs` against "below theirs", or `-`.
fn below(ours: Option<f64>, theirs: Option<f64>) -> String {
    match (ours, theirs) {
        (Some(a), Some(b)) if b > 0.0 => {
            let r = a / b;
            let verdict = if r < 1.0 { "met" } else { "**missed**" };
            format!("{r:.2}x ({verdict}, target < 1x)")
        }
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(peer: Peer, p99: f64, cpu: f64, kib: f64) -> Row {
        Row {
            peer,
            nodes: 1,
            case: Case {
                subscribers: 100,
                per_second: 1,
                seconds: 2,
            },
            subscribed: 100,
            open_s: 1.0,
            rss_before_kib: 1000,
            rss_after_kib: 1000 + (kib * 100.0) as u64,
            kib_per_subscriber: kib,
            window_s: 2.0,
            cpu_s: 0.1,
            delivered: 200,
            expected: 200,
            cpu_us_per_delivery: cpu,
            p50_ms: p99 / 2.0,
            p99_ms: p99,
            max_ms: p99 * 2.0,
            publish_p50_ms: 1.0,
            clients_cpu: 0.1,
        }
    }

    #[test]
    fn the_section_puts_the_ratios_against_the_targets() {
        let run = Run {
            date: "d".into(),
            quick: true,
            command: "c".into(),
            seconds: 1.0,
            load: "l".into(),
            node: "v20".into(),
            socketio: "4.8.1".into(),
            redis_adapter: "8.3.0".into(),
            sockudo: "sockudo 5.2.0".into(),
            rows: vec![
                row(Peer::Ours, 1.0, 2.0, 4.0),
                row(Peer::SocketIo, 4.0, 3.0, 8.0),
                row(Peer::Sockudo, 2.0, 1.0, 16.0),
            ],
            // Ours at 4 KiB per subscriber with one channel, 8.5 with ten:
            // 0.5 KiB per subscription past the first.
            many: vec![
                ManyRow {
                    peer: Peer::Ours,
                    connections: 100,
                    channels_each: 10,
                    open_s: 0.5,
                    rss_before_kib: 1000,
                    rss_after_kib: 1850,
                    kib_per_connection: 8.5,
                    kib_per_subscription: 0.85,
                },
                ManyRow {
                    peer: Peer::SocketIo,
                    connections: 100,
                    channels_each: 10,
                    open_s: 1.5,
                    rss_before_kib: 1000,
                    rss_after_kib: 2700,
                    kib_per_connection: 17.0,
                    kib_per_subscription: 1.7,
                },
            ],
        };
        let md = markdown(&run);
        assert!(
            md.starts_with(BEGIN) && md.trim_end().ends_with(END),
            "{md}"
        );
        assert!(md.contains("QUICK RUN"), "{md}");
        assert!(
            md.contains("| delay p99, ms | 1.00 | 4.00 | 0.25x (met"),
            "{md}"
        );
        assert!(
            md.contains("| server CPU per delivery, µs | 2.00 | 3.00 | 0.67x (**missed**"),
            "{md}"
        );
        assert!(
            md.contains("| server RSS per subscriber, KiB | 4.00 | 8.00 | 0.50x (**missed**"),
            "{md}"
        );
        assert!(
            md.contains("| delay p50, ms | 0.50 | 2.00 | 0.25x |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| server CPU per delivery, µs | 2.00 | 1.00 | 2.00x (**missed**, target < 1x) |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| server RSS per subscriber, KiB | 4.00 | 16.00 | 0.25x (met, target < 1x) |"
            ),
            "{md}"
        );
        assert!(md.contains("Sockudo (sockudo 5.2.0"), "{md}");
        assert!(
            md.contains("### 10 channels on each of 100 connections, one node"),
            "{md}"
        );
        assert!(md.contains("| ours | 8.50 | 0.850 | 0.500 | 0.5 |"), "{md}");
        assert!(
            md.contains("| socket.io | 17.00 | 1.700 | 1.000 | 1.5 |"),
            "{md}"
        );
        assert!(
            md.contains("Ours / socket.io, RSS per subscription: 0.50x."),
            "{md}"
        );
    }
}
