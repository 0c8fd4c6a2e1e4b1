//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::harness::machine;
use crate::peers::raw;
use crate::scenarios::{
    burst, channels, cluster, cluster_reliable, echo, hostile, idle, presence, scale, suite,
};

#[derive(Parser)]
#[command(about = "WebSocket benchmarks side by side")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build and run every server and scenario; write docs/BENCHMARKS.md and
    /// docs/benchmarks.json; then the scale run (`scale`) unless --no-scale.
    Run {
        /// Quick mode (the default): under 5 minutes of measurement.
        #[arg(long, conflicts_with = "full")]
        quick: bool,
        /// Full mode: longer windows, more rounds.
        #[arg(long)]
        full: bool,
        /// The cargo target directory to build into and run from.
        #[arg(long, env = "CARGO_TARGET_DIR", default_value = "target")]
        target: PathBuf,
        /// Where the report goes (relative to the workspace root).
        #[arg(long, default_value = "docs")]
        docs: PathBuf,
        /// Skip the browser part (Chromium, trunk).
        #[arg(long)]
        no_browser: bool,
        /// Skip the scale run (connections on one node, about 2.5 minutes).
        #[arg(long)]
        no_scale: bool,
        /// Skip the cluster run (two nodes on Redis, under a minute).
        #[arg(long)]
        no_cluster: bool,
        /// One short round of everything, to check the harness; write the
        /// report elsewhere with `--docs`, its figures are not worth keeping.
        #[arg(long, hide = true)]
        smoke: bool,
        /// Interleaved rounds of every echo, burst and browser scenario
        /// (quick: 3 echo, 5 burst; full: 5 and 11). A ratio within 10 % of
        /// its line wants at least 7: runs here swing by 10-15 %.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        rounds: Option<u16>,
    },
    /// Writes docs/BENCHMARKS.md again from the results of the last run
    /// (`benchmarks.json` in `--docs`): after a change to the report's
    /// text, without measuring again.
    #[command(hide = true)]
    Report {
        /// Where the report and its results are (relative to the workspace root).
        #[arg(long, default_value = "docs")]
        docs: PathBuf,
    },
    /// Hostile clients at scale against the release server (issue 12);
    /// prints a table and writes docs/HARDENING.md. Not for CI: a few minutes.
    Hostile {
        /// The cargo target directory holding release/server (built beforehand,
        /// e.g. by `cargo xtask hostile`).
        #[arg(long, env = "CARGO_TARGET_DIR", default_value = "target")]
        target: PathBuf,
        /// Where the report goes (relative to the workspace root).
        #[arg(long, default_value = "docs")]
        docs: PathBuf,
        /// Print the report only, write nothing.
        #[arg(long)]
        no_write: bool,
        /// Only the phases whose name contains this (implies --no-write).
        #[arg(long, hide = true)]
        only: Option<String>,
    },
    /// Connections on one node (issue 16): as many `/ws` connections as the
    /// descriptor limit allows, timed pushes on, ours beside gorilla; writes
    /// its section of docs/BENCHMARKS.md. Not for CI: several minutes.
    Scale {
        /// The cargo target directory holding release/server (built beforehand).
        #[arg(long, env = "CARGO_TARGET_DIR", default_value = "target")]
        target: PathBuf,
        /// Where the report goes (relative to the workspace root).
        #[arg(long, default_value = "docs")]
        docs: PathBuf,
        /// Print the report only, write nothing.
        #[arg(long)]
        no_write: bool,
    },
    /// The cluster (issue 14): reliable echo on Redis against memory, time
    /// to resume on another node, one broadcast to 10,000 clients over two
    /// nodes sharing a redis-server; writes its section of docs/BENCHMARKS.md.
    Cluster {
        /// The cargo target directory holding release/server (built beforehand).
        #[arg(long, env = "CARGO_TARGET_DIR", default_value = "target")]
        target: PathBuf,
        /// Where the report goes (relative to the workspace root).
        #[arg(long, default_value = "docs")]
        docs: PathBuf,
        /// Print the report only, write nothing.
        #[arg(long)]
        no_write: bool,
        /// Clients held over the two nodes.
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        /// Broadcasts measured.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// A channel's fan-out (issue 23), ours beside socket.io: one
    /// publication a second to 10,000 subscribers and ten a second to 1,000,
    /// 30 s each, on one node and on two on Redis; delay p50/p99, server CPU
    /// per delivery, RSS per subscriber; writes its section of
    /// docs/BENCHMARKS.md. socket.io comes from `cargo xtask bench --channels`.
    Channels {
        /// The cargo target directory holding release/server (built beforehand).
        #[arg(long, env = "CARGO_TARGET_DIR", default_value = "target")]
        target: PathBuf,
        /// Where the report goes (relative to the workspace root).
        #[arg(long, default_value = "docs")]
        docs: PathBuf,
        /// Print the report only, write nothing.
        #[arg(long)]
        no_write: bool,
        /// Fewer subscribers (2,000 and 200) and 10 s windows, to try it;
        /// the section says so.
        #[arg(long)]
        quick: bool,
        /// Only these peers (repeat the flag; default ours and socket.io:
        /// Sockudo only when named, `cargo xtask bench --channels --peers
        /// sockudo` installs it).
        #[arg(long = "peer", value_enum)]
        peers: Vec<channels::Peer>,
        /// Only these node counts, 1 or 2 (repeat the flag; default both).
        #[arg(long = "nodes", value_parser = clap::value_parser!(u8).range(1..=2))]
        nodes: Vec<u8>,
    },
    /// A channel's presence (issue 24), ours beside socket.io: 10,000
    /// members of one channel at 1, 2 and 3 nodes, each on Redis; the time
    /// of `presence_stats` and `presence` (one HTTP call each, interleaved
    /// rounds), and the servers' CPU over an idle minute; writes its section
    /// of docs/BENCHMARKS.md and docs/presence.json. socket.io comes from
    /// `cargo xtask bench --presence`.
    Presence {
        /// The cargo target directory holding release/server (built beforehand).
        #[arg(long, env = "CARGO_TARGET_DIR", default_value = "target")]
        target: PathBuf,
        /// Where the report goes (relative to the workspace root).
        #[arg(long, default_value = "docs")]
        docs: PathBuf,
        /// Print the report only, write nothing.
        #[arg(long)]
        no_write: bool,
        /// 1,000 members, 3 rounds of 5 calls, a 10 s idle window, to try
        /// it; the section says so.
        #[arg(long)]
        quick: bool,
        /// Only these node counts, 1 to 3 (repeat the flag; default all three).
        #[arg(long = "nodes", value_parser = clap::value_parser!(u8).range(1..=3))]
        nodes: Vec<u8>,
    },
    /// Only the browser's ten tabs with sharing across tabs and without
    /// (issue 15): the server's connections and memory; prints the figures,
    /// writes nothing (`run` puts them in its report). Needs the UI built.
    Tabs {
        /// The cargo target directory holding release/server (built beforehand).
        #[arg(long, env = "CARGO_TARGET_DIR", default_value = "target")]
        target: PathBuf,
        /// The built UI (`trunk build --release`), served by our server.
        #[arg(long, default_value = "dist")]
        static_dir: PathBuf,
        /// Rounds of each (alternating).
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    /// Only the browser part (issue 22): builds the UI and the wasm burst
    /// page, then the burst through our wrapper against the raw JavaScript
    /// page, interleaved, and the Yew console's burst; prints the figures,
    /// writes nothing (`run` puts them in its report).
    Browser {
        /// The cargo target directory holding release/server (built beforehand).
        #[arg(long, env = "CARGO_TARGET_DIR", default_value = "target")]
        target: PathBuf,
        /// Interleaved rounds (7 for a ratio near its line).
        #[arg(long, default_value_t = 7)]
        rounds: usize,
    },
    /// The raw tokio-tungstenite reference server.
    RawServer {
        /// Loopback address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: String,
        /// tungstenite's read buffer per connection (its default is 128 KiB).
        #[arg(long, default_value_t = 4096)]
        read_buffer: usize,
        /// How bursts are written.
        #[arg(long, value_enum, default_value = "feed")]
        burst_write: raw::BurstWrite,
    },
    /// One load scenario; prints one JSON line.
    Load {
        #[command(subcommand)]
        mode: Mode,
    },
}

#[derive(Subcommand)]
enum Mode {
    /// Closed-loop echo.
    Echo {
        /// A ws:// loopback URL.
        #[arg(long)]
        url: String,
        /// Connections.
        #[arg(long, default_value_t = 100)]
        conns: usize,
        /// Bytes per message.
        #[arg(long, default_value_t = 20)]
        bytes: usize,
        /// Warm-up, seconds (not measured).
        #[arg(long, default_value_t = 1)]
        warmup: u64,
        /// Measured, seconds.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Speak the protocol's typed echo (for /ws).
        #[arg(long)]
        typed: bool,
        /// The server's pid, to read its CPU time over the measured window.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Receive a burst pushed on connect.
    Burst {
        /// A ws:// loopback URL that pushes `count` messages on connect.
        #[arg(long)]
        url: String,
        /// Pushes expected.
        #[arg(long, default_value_t = 100_000)]
        count: u64,
    },
    /// Hold connections for `bench scale` and measure the pushes' lateness.
    Hold {
        /// The server's loopback address.
        #[arg(long)]
        addr: std::net::SocketAddr,
        /// The upgrade path.
        #[arg(long, default_value = "/ws")]
        path: String,
        /// Connections to hold.
        #[arg(long)]
        conns: usize,
        /// The first source address, 127.0.0.N (8 in a row are used).
        #[arg(long, default_value_t = 2)]
        first_src: u8,
    },
    /// Hold subscribers of one channel for `bench channels` and time each
    /// publication's delivery.
    Subscribe {
        /// The server measured.
        #[arg(long, value_enum)]
        peer: channels::Peer,
        /// The nodes' loopback addresses, comma-separated (subscribers alternate).
        #[arg(long)]
        nodes: String,
        /// Subscribers to hold.
        #[arg(long)]
        conns: usize,
        /// The first source address, 127.0.0.N (8 in a row are used).
        #[arg(long, default_value_t = 2)]
        first_src: u8,
        /// Publications expected on each subscriber.
        #[arg(long)]
        count: u64,
        /// Seconds after `go` to wait for them, at most.
        #[arg(long)]
        within: u64,
        /// Channels each subscriber joins (the publications go to the first).
        #[arg(long, default_value_t = 1)]
        channels: usize,
    },
    /// Hold idle connections and read the server's RSS.
    Idle {
        /// A ws:// loopback URL.
        #[arg(long)]
        url: String,
        /// Connections to hold.
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        /// The server's pid.
        #[arg(long)]
        pid: u32,
    },
    /// Closed-loop typed echo over reliable connections (the real wrapper).
    ReliableEcho {
        /// A ws:// loopback URL of `/ws`.
        #[arg(long)]
        url: String,
        /// Connections.
        #[arg(long, default_value_t = 10)]
        conns: usize,
        /// Bytes of each echo's body.
        #[arg(long, default_value_t = 20)]
        bytes: usize,
        /// Warm-up, seconds (not measured).
        #[arg(long, default_value_t = 1)]
        warmup: u64,
        /// Measured, seconds.
        #[arg(long, default_value_t = 2)]
        seconds: u64,
        /// The server's pid, to read its CPU time over the measured window.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// One reliable client behind a round-robin proxy over two nodes: time
    /// from a cut to the resume on the other node.
    Resume {
        /// The nodes' loopback addresses, comma-separated.
        #[arg(long)]
        nodes: String,
        /// Resumes measured (after one not measured).
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
    /// Hold `/ws` connections over several nodes, broadcast through the
    /// first, time until the last client read it (`bench cluster`).
    Broadcast {
        /// The nodes' loopback addresses, comma-separated.
        #[arg(long)]
        nodes: String,
        /// Connections, spread over the nodes in turn.
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        /// Broadcasts measured (after one not measured).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
}

/// Parses the command line and runs the command.
pub fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Run {
            quick: _,
            full,
            target,
            docs,
            no_browser,
            no_scale,
            no_cluster,
            smoke,
            rounds,
        } => suite::run(&suite::Options {
            full,
            target,
            docs,
            no_browser,
            smoke,
            no_scale,
            no_cluster,
            rounds: rounds.map(usize::from),
        }),
        Cmd::Report { docs } => {
            let root = machine::root();
            let json = std::fs::read_to_string(root.join(&docs).join("benchmarks.json"))?;
            crate::report::benchmarks::write(&root, &docs, serde_json::from_str(&json)?)
        }
        Cmd::Cluster {
            target,
            docs,
            no_write,
            conns,
            rounds,
        } => {
            let target = std::path::absolute(&target)?;
            // Relative to the workspace root, as `run` writes its report.
            let root = machine::root();
            cluster::run(&cluster::Options {
                server: target.join("release/server"),
                bench: std::env::current_exe()?,
                conns,
                rounds,
                echo_rounds: 3,
                echo_seconds: 2,
                resumes: 20,
                docs: (!no_write).then(|| root.join(docs)),
            })
            .map(drop)
        }
        Cmd::Channels {
            target,
            docs,
            no_write,
            quick,
            mut peers,
            nodes,
        } => {
            let target = std::path::absolute(&target)?;
            if peers.is_empty() {
                peers = vec![channels::Peer::Ours, channels::Peer::SocketIo];
            }
            let mut nodes: Vec<usize> = nodes.into_iter().map(usize::from).collect();
            if nodes.is_empty() {
                nodes = vec![1, 2];
            }
            channels::run(&channels::Options {
                server: target.join("release/server"),
                bench: std::env::current_exe()?,
                quick,
                peers,
                nodes,
                // Relative to the workspace root, as `run` writes its report.
                docs: (!no_write).then(|| machine::root().join(docs)),
            })
            .map(drop)
        }
        Cmd::Presence {
            target,
            docs,
            no_write,
            quick,
            nodes,
        } => {
            let target = std::path::absolute(&target)?;
            let mut nodes: Vec<usize> = nodes.into_iter().map(usize::from).collect();
            if nodes.is_empty() {
                nodes = vec![1, 2, 3];
            }
            presence::run(&presence::Options {
                server: target.join("release/server"),
                bench: std::env::current_exe()?,
                quick,
                nodes,
                // Relative to the workspace root, as `run` writes its report.
                docs: (!no_write).then(|| machine::root().join(docs)),
            })
            .map(drop)
        }
        Cmd::Browser { target, rounds } => {
            let target = std::path::absolute(&target)?;
            let result = suite::browser_only(&target, rounds)?;
            #[allow(clippy::print_stdout)] // the figures are this command's output
            {
                println!("{result:#}");
            }
            Ok(())
        }
        Cmd::Tabs {
            target,
            static_dir,
            rounds,
        } => {
            let target = std::path::absolute(&target)?;
            let static_dir = std::path::absolute(&static_dir)?;
            let result = suite::tabs_only(&target.join("release/server"), &static_dir, rounds)?;
            #[allow(clippy::print_stdout)] // the figures are this command's output
            {
                println!("{result:#}");
            }
            Ok(())
        }
        Cmd::Hostile {
            target,
            docs,
            no_write,
            only,
        } => {
            let target = std::path::absolute(&target)?;
            hostile::run(&hostile::Options {
                server: target.join("release/server"),
                docs: (!no_write && only.is_none()).then_some(docs),
                only,
                scratch: target.join("hostile"),
            })
        }
        Cmd::Scale {
            target,
            docs,
            no_write,
        } => {
            let target = std::path::absolute(&target)?;
            let out = target.join("bench");
            std::fs::create_dir_all(&out)?;
            let gorilla = crate::harness::builds::gorilla(&out)
                .map_err(|why| eprintln!("bench: no gorilla server: {why}"))
                .ok();
            // Relative to the workspace root, as `run` writes its report.
            let root = machine::root();
            scale::run(&scale::Options {
                server: target.join("release/server"),
                bench: std::env::current_exe()?,
                gorilla,
                docs: (!no_write).then(|| root.join(docs)),
            })
        }
        Cmd::RawServer {
            addr,
            read_buffer,
            burst_write,
        } => runtime()?.block_on(raw::serve(&addr, read_buffer, burst_write)),
        Cmd::Load { mode } => {
            let result = runtime()?.block_on(async {
                match mode {
                    Mode::Echo {
                        url,
                        conns,
                        bytes,
                        warmup,
                        seconds,
                        typed,
                        pid,
                    } => {
                        echo::echo(
                            &url,
                            conns,
                            bytes,
                            Duration::from_secs(warmup),
                            Duration::from_secs(seconds),
                            typed,
                            pid,
                        )
                        .await
                    }
                    Mode::Burst { url, count } => burst::burst(&url, count).await,
                    Mode::Subscribe {
                        peer,
                        nodes,
                        conns,
                        first_src,
                        count,
                        within,
                        channels: each,
                    } => {
                        let nodes = nodes
                            .split(',')
                            .map(str::parse)
                            .collect::<Result<Vec<std::net::SocketAddr>, _>>()?;
                        let line = channels::subscribe(
                            peer,
                            &nodes,
                            (conns, first_src, each),
                            count,
                            Duration::from_secs(within),
                        )
                        .await?;
                        serde_json::from_str(&line).map_err(anyhow::Error::from)
                    }
                    Mode::Idle { url, conns, pid } => idle::idle(&url, conns, pid).await,
                    Mode::Broadcast {
                        nodes,
                        conns,
                        rounds,
                    } => {
                        let nodes: Vec<String> = nodes.split(',').map(str::to_owned).collect();
                        cluster::broadcast(&nodes, conns, rounds).await
                    }
                    Mode::ReliableEcho {
                        url,
                        conns,
                        bytes,
                        warmup,
                        seconds,
                        pid,
                    } => cluster_reliable::echo(&url, (conns, bytes), warmup, seconds, pid).await,
                    Mode::Resume { nodes, rounds } => {
                        let nodes = nodes
                            .split(',')
                            .map(str::parse)
                            .collect::<Result<Vec<std::net::SocketAddr>, _>>()?;
                        cluster_reliable::resume(&nodes, rounds).await
                    }
                    Mode::Hold {
                        addr,
                        path,
                        conns,
                        first_src,
                    } => scale::hold(addr, &path, conns, first_src).await,
                }
            })?;
            #[allow(clippy::print_stdout)] // the orchestrator reads this line
            {
                println!("{result}");
            }
            Ok(())
        }
    }
}

/// One worker thread: each process is pinned to one core anyway.
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?)
}
