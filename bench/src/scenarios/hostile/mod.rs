//! The hostile-client run at scale (issues 12 and 25): the attacks of
//! `server/tests/hardening.rs`, played with thousands of connections against
//! the release server as a subprocess (pinned to core 0), each phase on a
//! fresh server with the flags it tests (in token mode, or as three nodes
//! on a redis-server of their own, where the attack needs it). For every attack: what was tried,
//! what held (read from the server's `/metrics` and from what the attacker
//! got back), the server's RSS (`/proc/PID/status`) before, at its peak and
//! after, and what a legitimate client saw meanwhile (echo round trips,
//! fresh welcomes, `/healthz`). Prints a table and writes `docs/HARDENING.md`.
//! Not a test: run by hand with `cargo xtask hostile`.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | phases, the server subprocess, the report |
//! | `scale.rs` | floods, slowloris, non-reading clients, connect rate, sessions (one node and a cluster), bursts |
//! | `tokens.rs` | token mode: deadlines under a read flood, a refresh flood |
//! | `budgets.rs` | unfinished messages against `--max-partial-bytes`, unread bursts against `--send-queue-bytes` |
//! | `checks.rs` | frame errors, fuzzed messages, path traversal, admin auth |
//! | `probe.rs` | the legitimate client and the RSS sampler |
//! | `net.rs` | sockets from 127.0.0.N, raw HTTP and frames, `/metrics` |

mod budgets;
mod checks;
mod net;
mod probe;
mod scale;
mod tokens;

use std::fmt::Write as _;
use std::future::Future;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::harness::machine::{self, sh};
use crate::harness::procs::{Core, Guard, hard_nofile, pinned};
use crate::harness::servers::{free_addr, spawn_listening};
use probe::{Probe, Rss, RssSampler, Seen};

/// Options of `bench hostile`.
pub struct Options {
    /// The release server binary.
    pub server: PathBuf,
    /// Where the report goes (relative to the workspace root); `None`: stdout only.
    pub docs: Option<PathBuf>,
    /// Only the phases whose name contains this.
    pub only: Option<String>,
    /// Scratch space (the static directory and the file outside it).
    pub scratch: PathBuf,
}

/// A server under attack.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub pid: u32,
    /// The file outside the static directory that traversal must not reach.
    pub secret: String,
    /// A cluster phase: the other nodes, on the same Redis (empty otherwise).
    pub others: Vec<SocketAddr>,
    /// A cluster phase: its redis-server.
    pub redis: Option<SocketAddr>,
}

/// What an attack found.
pub struct Outcome {
    /// What was tried, in a sentence.
    pub tried: String,
    /// The protection observed (figures from the run).
    pub held: String,
    /// Whether every expected protection was observed.
    pub holds: bool,
}

type AttackFn = for<'a> fn(&'a Target) -> Pin<Box<dyn Future<Output = Result<Outcome>> + 'a>>;

/// How a phase's server runs.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// One server, anonymous, in memory.
    Plain,
    /// Token mode: `--jwt-secret` [`testbed::TEST_JWT_SECRET`] (the attack
    /// mints its tokens with it), and a token for the legitimate client.
    Token,
    /// A redis-server of the phase's own and this many nodes on it
    /// (`--redis-url`, distinct `--node-id`), each with the phase's flags;
    /// the first is the target, the legitimate client's and the RSS
    /// sampler's, the others are in [`Target::others`].
    Cluster(usize),
}

/// One phase: a fresh server with `flags`, an attack, a legitimate client beside it.
struct Phase {
    name: &'static str,
    flags: &'static [&'static str],
    mode: Mode,
    attack: AttackFn,
    /// A bound on the legitimate client's echo p99 during the attack, in µs.
    p99_target_us: Option<u64>,
    /// Repeat the attack until the phase has lasted [`MIN_REPEATED`], so the
    /// legitimate client's figures cover it (for attacks over in a moment).
    repeat: bool,
    /// The server pinned to core 0 (else free to use both cores).
    pinned: bool,
}

/// How long a repeated attack goes on.
const MIN_REPEATED: Duration = Duration::from_secs(3);

struct Row {
    name: &'static str,
    pinned: bool,
    /// Servers started (a cluster's nodes; RSS and the legitimate client are the first's).
    nodes: usize,
    flags: String,
    outcome: Outcome,
    rss: Rss,
    seen: Seen,
    seconds: f64,
}

fn phases() -> Vec<Phase> {
    [
        Phase {
            name: "10,000-connection flood",
            flags: &["--connect-rate", "0"],
            mode: Mode::Plain,
            attack: |t| Box::pin(scale::flood(t)),
            p99_target_us: None,
            repeat: false,
            pinned: true,
        },
        Phase {
            name: "flood over --max-connections",
            flags: &["--connect-rate", "0", "--max-connections", "2000"],
            mode: Mode::Plain,
            attack: |t| Box::pin(scale::over_the_cap(t)),
            p99_target_us: None,
            repeat: false,
            pinned: true,
        },
        Phase {
            name: "3,000 slowloris connections",
            flags: &["--handshake-timeout", "5s"],
            mode: Mode::Plain,
            attack: |t| Box::pin(scale::slowloris(t)),
            p99_target_us: None,
            repeat: false,
            pinned: true,
        },
        Phase {
            name: "non-reading clients, large messages",
            flags: &["--write-timeout", "2s", "--send-queue-bytes", "1048576"],
            mode: Mode::Plain,
            attack: |t| Box::pin(scale::non_reading(t)),
            p99_target_us: None,
            repeat: false,
            pinned: true,
        },
        Phase {
            name: "per-address connect-rate flood",
            flags: &["--connect-rate", "50", "--connect-burst", "100"],
            mode: Mode::Plain,
            attack: |t| Box::pin(scale::connect_rate(t)),
            p99_target_us: None,
            repeat: true,
            pinned: true,
        },
        Phase {
            name: "reliable-session exhaustion",
            flags: &["--connect-rate", "0", "--max-sessions-per-ip", "100"],
            mode: Mode::Plain,
            attack: |t| Box::pin(scale::sessions(t)),
            p99_target_us: None,
            repeat: false,
            pinned: true,
        },
        Phase {
            name: "cluster-wide session cap, 3 nodes",
            flags: &["--connect-rate", "0", "--max-sessions-per-ip", "40"],
            mode: Mode::Cluster(3),
            attack: |t| Box::pin(scale::cluster_sessions(t)),
            p99_target_us: None,
            repeat: true,
            pinned: true,
        },
        Phase {
            name: "token deadlines under a pong flood",
            flags: &["--connect-rate", "0", "--jwt-leeway", "0s"],
            mode: Mode::Token,
            attack: |t| Box::pin(tokens::deadlines(t)),
            p99_target_us: None,
            repeat: false,
            pinned: true,
        },
        Phase {
            name: "refresh flood",
            flags: &["--connect-rate", "0"],
            mode: Mode::Token,
            attack: |t| Box::pin(tokens::refresh_flood(t)),
            p99_target_us: None,
            repeat: false,
            pinned: true,
        },
        Phase {
            name: "unfinished messages over --max-partial-bytes",
            flags: &["--connect-rate", "0", "--max-partial-bytes", "33554432"],
            mode: Mode::Plain,
            attack: |t| Box::pin(budgets::partial_messages(t)),
            p99_target_us: None,
            repeat: false,
            pinned: true,
        },
        Phase {
            name: "200 connections asking 5 bursts each, unread",
            flags: &["--connect-rate", "0"],
            mode: Mode::Plain,
            attack: |t| Box::pin(budgets::bursts_bounded(t)),
            p99_target_us: Some(10_000),
            repeat: false,
            pinned: true,
        },
        Phase {
            name: "frame errors (Autobahn-style)",
            flags: &["--connect-rate", "0"],
            mode: Mode::Plain,
            attack: |t| Box::pin(checks::frame_errors(t)),
            p99_target_us: None,
            repeat: true,
            pinned: true,
        },
        Phase {
            name: "5,000 fuzzed messages on /ws",
            flags: &["--connect-rate", "0"],
            mode: Mode::Plain,
            attack: |t| Box::pin(checks::fuzz(t)),
            p99_target_us: None,
            repeat: true,
            pinned: true,
        },
        Phase {
            name: "path traversal on static files",
            flags: &[],
            mode: Mode::Plain,
            attack: |t| Box::pin(checks::traversal(t)),
            p99_target_us: None,
            repeat: true,
            pinned: true,
        },
        Phase {
            name: "admin auth",
            flags: &["--admin-token", "hostile-run-token-0123456789"],
            mode: Mode::Plain,
            attack: |t| Box::pin(checks::admin_auth(t)),
            p99_target_us: None,
            repeat: true,
            pinned: true,
        },
        Phase {
            name: "admin API without a token",
            flags: &[],
            mode: Mode::Plain,
            attack: |t| Box::pin(checks::admin_off(t)),
            p99_target_us: None,
            repeat: true,
            pinned: true,
        },
    ]
    .into_iter()
    .chain(bursts())
    .collect()
}

/// The bursts three times each, server pinned and not: the legitimate
/// client's p99 rests on a few slow round trips and moves from run to run,
/// so one round alone would say little against the 10 ms target.
fn bursts() -> Vec<Phase> {
    const NAMES: [[&str; 3]; 2] = [
        [
            "32 concurrent million-message bursts (1/3)",
            "32 concurrent million-message bursts (2/3)",
            "32 concurrent million-message bursts (3/3)",
        ],
        [
            "32 bursts, server on both cores (1/3)",
            "32 bursts, server on both cores (2/3)",
            "32 bursts, server on both cores (3/3)",
        ],
    ];
    NAMES
        .iter()
        .zip([true, false])
        .flat_map(|(names, pinned)| {
            names.iter().map(move |name| Phase {
                name,
                flags: &[],
                mode: Mode::Plain,
                attack: |t| Box::pin(scale::bursts(t)),
                p99_target_us: Some(10_000),
                repeat: false,
                pinned,
            })
        })
        .collect()
}

/// The servers of a phase: its nodes (the first is the target) and, in a
/// cluster phase, their redis-server, dropped after them.
struct Servers {
    nodes: Vec<(Guard, SocketAddr)>,
    redis: Option<testbed::RedisServer>,
}

impl Servers {
    /// Starts what `phase` needs: one server, or a redis-server and the
    /// cluster's nodes, each listening (and a node ready) when this returns.
    fn start(options: &Options, www: &Path, phase: &Phase) -> Result<Self> {
        let mut servers = Self {
            nodes: Vec::new(),
            redis: None,
        };
        let mut extra: Vec<String> = Vec::new();
        let nodes = match phase.mode {
            Mode::Plain => 1,
            Mode::Token => {
                extra.extend(["--jwt-secret".into(), testbed::TEST_JWT_SECRET.into()]);
                1
            }
            Mode::Cluster(nodes) => {
                let redis = testbed::RedisServer::start()?;
                extra.extend(["--redis-url".into(), redis.url()]);
                servers.redis = Some(redis);
                nodes
            }
        };
        for node in 0..nodes {
            let mut args = extra.clone();
            if servers.redis.is_some() {
                args.extend(["--node-id".into(), format!("hostile-{node}")]);
            }
            let started = start_server(options, www, phase, &args)?;
            servers.nodes.push(started);
        }
        if servers.redis.is_some() {
            for (_, addr) in &servers.nodes {
                wait_ready(*addr)?;
            }
        }
        Ok(servers)
    }

    /// Whether every node is still running.
    fn alive(&mut self) -> bool {
        self.nodes.iter_mut().all(|(guard, _)| guard.alive())
    }
}

fn start_server(
    options: &Options,
    www: &Path,
    phase: &Phase,
    extra: &[String],
) -> Result<(Guard, SocketAddr)> {
    let flags = phase.flags;
    let addr = free_addr()?;
    let mut command = if phase.pinned {
        pinned(Core::Server, hard_nofile(), &options.server)
    } else {
        Command::new(&options.server)
    };
    command
        .args(["--addr", &addr.to_string(), "--static-dir"])
        .arg(www)
        .args(["--push-interval", "0", "--ping-interval", "0"])
        .args(extra)
        .args(flags)
        .env("RUST_LOG", "error");
    let guard = spawn_listening("server", command, addr)
        .with_context(|| format!("the server with flags {flags:?}"))?;
    Ok((guard, addr))
}

/// Waits until a cluster node's `/readyz` answers 200 (a heartbeat went
/// through Redis), at most 10 s.
fn wait_ready(addr: SocketAddr) -> Result<()> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = TcpStream::connect(addr).and_then(|mut tcp| {
            tcp.set_read_timeout(Some(Duration::from_secs(2)))?;
            tcp.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut answer = Vec::new();
            tcp.read_to_end(&mut answer)?;
            Ok(answer.starts_with(b"HTTP/1.1 200"))
        });
        if matches!(ready, Ok(true)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the node on {addr} was not ready within 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_phase(options: &Options, www: &Path, secret: &str, phase: &Phase) -> Result<Row> {
    eprintln!("hostile: {} ...", phase.name);
    let mut servers = Servers::start(options, www, phase)?;
    let addr = servers.nodes[0].1;
    let target = Target {
        addr,
        pid: servers.nodes[0].0.pid(),
        secret: secret.to_owned(),
        others: servers.nodes[1..].iter().map(|(_, addr)| *addr).collect(),
        redis: servers.redis.as_ref().map(testbed::RedisServer::addr),
    };
    let started = Instant::now();
    let sampler = RssSampler::start(target.pid)?;
    let probe = Probe::start(addr, &probe_path(phase.mode)?)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(async {
        let mut first = (phase.attack)(&target).await?;
        if phase.repeat {
            let (mut rounds, mut failed) = (1, 0);
            while started.elapsed() < MIN_REPEATED {
                let again = (phase.attack)(&target).await?;
                rounds += 1;
                if !again.holds {
                    failed += 1;
                    if failed == 1 {
                        let _ = write!(first.held, " Round {rounds} did not hold: {}", again.held);
                    }
                }
            }
            first.holds &= failed == 0;
            let _ = write!(
                first.held,
                " Repeated {rounds} times over {:.1} s so that the legitimate client's figures cover the attack (the figures above are the first round's); {failed} rounds did not hold.",
                started.elapsed().as_secs_f64()
            );
        }
        anyhow::Ok(first)
    });
    // The attack's sockets are closed with its tasks, before RSS settles.
    drop(runtime);
    let seen = probe.finish()?;
    let rss = sampler.finish()?;
    let mut outcome = outcome.with_context(|| format!("phase {:?}", phase.name))?;
    if let Some(target) = phase.p99_target_us {
        let met = seen.echoes > 0 && seen.p99_us < target;
        outcome.holds &= met;
        let _ = write!(
            outcome.held,
            " The legitimate client's echo p99 was {} ms against a target of under {} ms: {}. ({} round trips in this phase: the p99 rests on the slowest {} of them, so it moves from run to run on a shared machine.)",
            ms(seen.p99_us),
            ms(target),
            if met { "met" } else { "**not met**" },
            seen.echoes,
            seen.echoes.div_ceil(100)
        );
    }
    if !servers.alive() {
        outcome.holds = false;
        outcome.held.push_str(" **A server process died.**");
    }
    let row = Row {
        name: phase.name,
        pinned: phase.pinned,
        nodes: servers.nodes.len(),
        flags: shown_flags(phase),
        outcome,
        rss,
        seen,
        seconds: started.elapsed().as_secs_f64(),
    };
    eprintln!("{}", line(&row));
    Ok(row)
}

/// The flags of a phase's server as the report shows them.
fn shown_flags(phase: &Phase) -> String {
    let mut shown = match phase.mode {
        Mode::Plain => Vec::new(),
        Mode::Token => vec!["--jwt-secret <the testbed's test secret>".to_owned()],
        Mode::Cluster(nodes) => vec![format!(
            "--redis-url <a redis-server of its own> --node-id <hostile-0 to hostile-{}>",
            nodes - 1
        )],
    };
    shown.extend(phase.flags.iter().map(|flag| (*flag).to_owned()));
    shown.join(" ")
}

/// The legitimate client's `/ws` path: in token mode with a token of its
/// own, valid for the run.
fn probe_path(mode: Mode) -> Result<String> {
    Ok(match mode {
        Mode::Token => format!(
            "/ws?token={}",
            testbed::try_mint_token("legitimate", Duration::from_secs(3600))?
        ),
        Mode::Plain | Mode::Cluster(_) => "/ws".into(),
    })
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn line(row: &Row) -> String {
    format!(
        "{:<38} {:<14} rss MiB {:>6} / {:>6} / {:>6}  echo p50 {:>6} ms p99 {:>7} ms ({} ok, {} failed)  welcomes {}/{}  healthz {}/{}",
        row.name,
        if row.outcome.holds {
            "held"
        } else {
            "DID NOT HOLD"
        },
        mib(row.rss.before_kib),
        mib(row.rss.peak_kib),
        mib(row.rss.after_kib),
        ms(row.seen.p50_us),
        ms(row.seen.p99_us),
        row.seen.echoes,
        row.seen.echo_failures,
        row.seen.fresh_ok,
        row.seen.fresh_tried,
        row.seen.healthz_ok,
        row.seen.healthz_tried,
    )
}

fn markdown(rows: &[Row], total: f64, load: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Hardening at scale\n\n\
         Generated by `cargo xtask hostile` (`bench hostile`) on {date}; every figure \
         below comes from that run. Machine: {cores} cores ({cpu}), {kernel}, shared with other \
         work while it ran (load before: {load}). The whole run took {total:.0} s.\n\n\
         **How it runs.** Each attack gets a fresh release server (`target/release/server`) as a \
         subprocess pinned to core 0 (except where noted), with the flags listed, and pushes and pings off \
         (`--push-interval 0 --ping-interval 0`); where the attack needs it, in token mode \
         (`--jwt-secret` with the testbed's test secret: the attack mints its own tokens, and the \
         legitimate client brings one) or as three nodes on a redis-server of their own. \
         The attacker runs in the `bench` process, its \
         sockets bound to 127.0.0.2 and up so that the per-address limits apply per attacker \
         address. Beside it, on a thread of its own, a **legitimate client** from 127.0.0.1 \
         holds a `/ws` connection and sends a typed `echo` every 10 ms, timing each round trip; \
         every 500 ms it also opens a fresh connection (its `welcome`, then one echo) and asks \
         `GET /healthz`. **RSS** is the server's `VmRSS` from `/proc/PID/status`, sampled every \
         50 ms: before the attack, its peak, and after (once the attack's sockets are closed and \
         RSS has settled). **CPU-seconds**, where given, are the server's `utime` + `stime` from \
         `/proc/PID/stat`. \"What held\" is read from the server's `/metrics` and from what the \
         attacker got back. The in-process tests of each protection are in \
         `server/tests/hardening.rs`; this run only measures them at scale.\n\n\
         Reproduce: `cargo xtask hostile` (a few minutes; loopback only, every loop bounded in \
         count and time).\n",
        date = machine::date(),
        cores = sh("nproc"),
        cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'"),
        kernel = sh("uname -sr"),
    );
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.outcome.holds)
        .map(|r| r.name)
        .collect();
    if failed.is_empty() {
        let _ = writeln!(out, "**Every protection below held in this run.**\n");
    } else {
        let _ = writeln!(
            out,
            "**Did not hold in this run: {}.** See the details below.\n",
            failed.join("; ")
        );
    }
    let _ = writeln!(
        out,
        "| attack | held | server RSS MiB before / peak / after | legitimate echo p50 / p99 / max (ms) | its echoes ok / failed | fresh welcomes | /healthz |\n|---|---|---|---|---|---|---|"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} / {} / {} | {} / {} / {} | {} / {} | {}/{} | {}/{} |",
            r.name,
            if r.outcome.holds { "yes" } else { "**NO**" },
            mib(r.rss.before_kib),
            mib(r.rss.peak_kib),
            mib(r.rss.after_kib),
            ms(r.seen.p50_us),
            ms(r.seen.p99_us),
            ms(r.seen.max_us),
            r.seen.echoes,
            r.seen.echo_failures,
            r.seen.fresh_ok,
            r.seen.fresh_tried,
            r.seen.healthz_ok,
            r.seen.healthz_tried,
        );
    }
    let _ = writeln!(out, "\n## Each attack\n");
    for r in rows {
        let _ = writeln!(
            out,
            "### {}\n\n- **Server:** {}, flags `{}`\n- **Tried:** {}\n- **What held:** {}\n- **Phase time:** {:.1} s",
            r.name,
            match (r.nodes, r.pinned) {
                (1, true) => "pinned to core 0".to_owned(),
                (1, false) => "not pinned (both cores)".to_owned(),
                (n, true) => format!(
                    "{n} nodes, each pinned to core 0 (RSS and the legitimate client: the first node's)"
                ),
                (n, false) => format!(
                    "{n} nodes, not pinned (RSS and the legitimate client: the first node's)"
                ),
            },
            if r.flags.is_empty() {
                "(defaults)"
            } else {
                &r.flags
            },
            r.outcome.tried,
            r.outcome.held,
            r.seconds,
        );
        if !r.seen.fresh_refusals.is_empty() {
            let refusals: Vec<String> = r
                .seen
                .fresh_refusals
                .iter()
                .map(|(why, n)| format!("{n} × {why}"))
                .collect();
            let _ = writeln!(
                out,
                "- **Fresh connections of the legitimate client refused:** {}",
                refusals.join("; ")
            );
        }
        let _ = writeln!(out);
    }
    out
}

/// Runs every phase, prints the table, writes the report.
///
/// # Errors
///
/// When a server cannot start or an attack cannot run at all (a protection
/// that does not hold is a finding in the report, not an error).
pub fn run(options: &Options) -> Result<()> {
    let started = Instant::now();
    let load = sh("cut -d' ' -f1-3 /proc/loadavg");
    let www = options.scratch.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("index.html"), "<p>hostile run</p>\n")?;
    let secret = "SECRET-OUTSIDE-THE-STATIC-DIR";
    std::fs::write(options.scratch.join("secret.txt"), secret)?;
    let www = std::path::absolute(&www)?;
    let mut rows = Vec::new();
    for phase in phases() {
        if options
            .only
            .as_ref()
            .is_some_and(|only| !phase.name.contains(only.as_str()))
        {
            continue;
        }
        rows.push(run_phase(options, &www, secret, &phase)?);
    }
    let report = markdown(&rows, started.elapsed().as_secs_f64(), &load);
    #[allow(clippy::print_stdout)] // the command's output
    {
        println!("{report}");
    }
    if let Some(docs) = &options.docs {
        let path = machine::root().join(docs).join("HARDENING.md");
        std::fs::write(&path, report)?;
        eprintln!("hostile: wrote {}", path.display());
    }
    Ok(())
}
