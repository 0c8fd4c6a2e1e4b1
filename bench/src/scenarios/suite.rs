//! `bench run`, the orchestrator: builds what the run needs
//! ([`crate::harness::builds`]), runs every scenario side by side in one run
//! (repeated and interleaved, medians reported), server pinned to core 0 and
//! load generator (or browser) to core 1, and writes `docs/BENCHMARKS.md`
//! and `docs/benchmarks.json` through [`crate::report::benchmarks`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::browser;
use crate::harness::builds;
use crate::harness::machine::{self, sh};
use crate::harness::procs::hard_nofile;
use crate::harness::servers::load_generator;
use crate::harness::stats::{median, num};
use crate::peers::{Running, Server, gorilla, ours, raw};
use crate::report;

/// What `bench run` was asked to do.
pub struct Options {
    /// Longer, more rounds.
    pub full: bool,
    /// The cargo target directory (release binaries, go and browser builds).
    pub target: PathBuf,
    /// Where the report goes.
    pub docs: PathBuf,
    /// Skip the browser part (no Chromium, no trunk).
    pub no_browser: bool,
    /// One short round of everything, to check the harness (not for figures).
    pub smoke: bool,
    /// Skip the scale run (connections on one node, `super::scale`).
    pub no_scale: bool,
    /// Skip the cluster run (`super::cluster`).
    pub no_cluster: bool,
    /// Rounds of every echo, burst and browser scenario, instead of the plan's.
    pub rounds: Option<usize>,
}

/// How long and how often; see [`Plan::quick`] and [`Plan::full`].
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Interleaved rounds of each echo scenario.
    pub echo_rounds: usize,
    /// Echo warm-up, seconds.
    pub warmup: u64,
    /// Echo measurement, seconds.
    pub seconds: u64,
    /// Rounds of each burst.
    pub burst_rounds: usize,
    /// Pushes per burst.
    pub burst_count: u32,
    /// Idle connections held.
    pub idle_conns: usize,
    /// Rounds of each browser page.
    pub browser_rounds: usize,
}

impl Plan {
    /// Under 5 minutes of measurement on a 2-core machine.
    pub fn quick() -> Self {
        Self {
            echo_rounds: 3,
            warmup: 1,
            seconds: 2,
            burst_rounds: 5,
            burst_count: 100_000,
            idle_conns: 10_000,
            browser_rounds: 3,
        }
    }

    /// Longer windows, more rounds.
    pub fn full() -> Self {
        Self {
            echo_rounds: 5,
            warmup: 2,
            seconds: 10,
            burst_rounds: 11,
            burst_count: 100_000,
            idle_conns: 10_000,
            browser_rounds: 7,
        }
    }

    /// One short round of everything: checks the harness, measures nothing worth keeping.
    pub fn smoke() -> Self {
        Self {
            echo_rounds: 1,
            warmup: 1,
            seconds: 1,
            burst_rounds: 1,
            burst_count: 100_000,
            idle_conns: 1000,
            browser_rounds: 1,
        }
    }
}

/// Medians of several runs of one scenario on one server; the latencies are
/// those of the run with the median throughput.
fn summarize(server: &str, mut runs: Vec<Value>) -> Value {
    // In round order, for the spread of a ratio over interleaved rounds.
    let in_order = |key: &str| runs.iter().map(|r| num(r, key)).collect::<Vec<_>>();
    let (rates, per_cpu_rounds) = (in_order("msgs_per_s"), in_order("msgs_per_server_cpu_s"));
    runs.sort_by(|a, b| num(a, "msgs_per_s").total_cmp(&num(b, "msgs_per_s")));
    let mut summary = runs.get(runs.len() / 2).cloned().unwrap_or(Value::Null);
    let col = |key: &str| median(&mut runs.iter().map(|r| num(r, key)).collect::<Vec<_>>());
    let per_cpu = col("msgs_per_server_cpu_s");
    let loadgen = col("loadgen_cpu");
    let server_cpu = col("server_cpu");
    summary["server"] = json!(server);
    summary["msgs_per_server_cpu_s"] = json!(per_cpu);
    summary["loadgen_cpu"] = json!(loadgen);
    summary["server_cpu"] = json!(server_cpu);
    summary["rounds_msgs_per_s"] = json!(rates);
    summary["rounds_msgs_per_server_cpu_s"] = json!(per_cpu_rounds);
    summary
}

/// `bench tabs`: our release server `server` serving the UI in `www`, then
/// only the browser's ten tabs with and without sharing, `rounds` of each.
///
/// # Errors
///
/// When the server or ChromeDriver cannot start, or the tabs do not settle.
pub fn tabs_only(server: &Path, www: &Path, rounds: usize) -> Result<Value> {
    let running = ours::ui(server, www).start(4096)?;
    browser::run_tabs(&running.addr.to_string(), running.guard.pid(), rounds)
}

/// `bench browser`: the browser part alone, `rounds` interleaved rounds
/// of the 100,000-push burst, against our release server in `target`.
///
/// # Errors
///
/// When the assets cannot be built, or the server or ChromeDriver cannot start.
pub fn browser_only(target: &Path, rounds: usize) -> Result<Value> {
    let root = machine::root();
    let out = target.join("bench");
    std::fs::create_dir_all(&out)?;
    let assets = browser::prepare(&root, target, &out)?;
    let running = ours::ui(&target.join("release/server"), &assets.www).start(4096)?;
    let count = Plan::quick().burst_count;
    let mut result = browser::run(
        &running.addr.to_string(),
        &assets,
        rounds,
        count,
        running.guard.pid(),
    )?;
    result["bundle"] = assets.bundle.clone();
    Ok(result)
}

/// Runs everything and writes the report.
///
/// # Errors
///
/// When a build, a server or a scenario fails (a wrong echo, a burst out of
/// order, a timeout): no report is written from a failed run.
/// The load generator's arguments for a closed-loop echo `mode` on `url`,
/// measured over the plan's window with `running`'s CPU time.
fn echo_args(
    mode: &str,
    url: &str,
    (conns, bytes): (usize, usize),
    plan: &Plan,
    running: &Running,
) -> Vec<String> {
    [
        mode,
        "--url",
        url,
        "--conns",
        &conns.to_string(),
        "--bytes",
        &bytes.to_string(),
        "--warmup",
        &plan.warmup.to_string(),
        "--seconds",
        &plan.seconds.to_string(),
        "--pid",
        &running.guard.pid().to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// Reliable mode's cost (issue 21): the reliable echo (version 2, memory
/// store, 10 connections × 1 KiB, the real native wrapper acknowledging
/// every 32) beside the plain typed echo, per server CPU-second, each
/// round a pair on fresh servers in alternating order; the ratio of each
/// round, their median and spread.
fn reliable_echo(ours: &Server, bench: &Path, nofile: u64, plan: &Plan) -> Result<Value> {
    let (conns, bytes) = (10usize, 1024usize);
    let mut typed = Vec::new();
    let mut reliable = Vec::new();
    let mut ratios = Vec::new();
    for round in 0..plan.echo_rounds {
        let mut pair = [None, None];
        for k in 0..2 {
            let which = (k + round) % 2;
            let running = ours.start(nofile)?;
            let mode = if which == 0 { "echo" } else { "reliable-echo" };
            let url = format!("ws://{}/ws", running.addr);
            let mut args = echo_args(mode, &url, (conns, bytes), plan, &running);
            if which == 0 {
                args.push("--typed".into());
            }
            let result = load_generator(bench, nofile, &args)?;
            eprintln!(
                "echo  10 x 1024 {:<22} {:>9.0} msg/s  per server cpu-s {:>9.0}",
                if which == 0 {
                    "ours /ws typed"
                } else {
                    "ours /ws reliable v2"
                },
                num(&result, "msgs_per_s"),
                num(&result, "msgs_per_server_cpu_s"),
            );
            pair[which] = Some(result);
        }
        let [Some(t), Some(r)] = pair else {
            bail!("a round of the reliable echo is missing a run");
        };
        ratios.push(num(&r, "msgs_per_server_cpu_s") / num(&t, "msgs_per_server_cpu_s").max(1.0));
        typed.push(t);
        reliable.push(r);
    }
    let mut sorted = ratios.clone();
    let ratio = median(&mut sorted);
    Ok(json!({
        "conns": conns, "bytes": bytes,
        "typed": summarize("ours /ws typed", typed),
        "reliable": summarize("ours /ws reliable v2", reliable),
        "ratios": ratios,
        "ratio": ratio,
        "ratio_min": sorted.first(),
        "ratio_max": sorted.last(),
    }))
}

pub fn run(options: &Options) -> Result<()> {
    let mut plan = match (options.full, options.smoke) {
        (_, true) => Plan::smoke(),
        (true, false) => Plan::full(),
        (false, false) => Plan::quick(),
    };
    if let Some(rounds) = options.rounds {
        plan.echo_rounds = rounds;
        plan.burst_rounds = rounds;
        plan.browser_rounds = rounds;
    }
    let root = machine::root();
    let target = std::path::absolute(&options.target)?;
    let out = target.join("bench");
    std::fs::create_dir_all(&out)?;

    // Builds (not counted in the measured time).
    let build_started = Instant::now();
    // The load generator and the raw server are this very binary.
    let bench = std::env::current_exe().context("finding the bench binary")?;
    let ours = builds::release_server(&root, &target)?;
    let go = builds::gorilla(&out);
    if let Err(why) = &go {
        eprintln!("bench: skipping the gorilla server: {why}");
    }
    let assets = if options.no_browser {
        Err("skipped with --no-browser".to_owned())
    } else {
        eprintln!("bench: building the UI (trunk build --release) and the wasm burst page");
        browser::prepare(&root, &target, &out).map_err(|err| format!("{err:#}"))
    };
    if let Err(why) = &assets {
        eprintln!("bench: skipping the browser part: {why}");
    }
    let build_seconds = build_started.elapsed().as_secs_f64();

    let started = Instant::now();
    let load_before = machine::load_average();
    // Open files: the idle connections plus headroom, bounded by the hard limit.
    let hard = hard_nofile();
    let idle_conns = plan.idle_conns.min(hard.saturating_sub(1024) as usize);
    let nofile = (idle_conns as u64 + 1024).min(hard);

    let ours_echo = ours::echo(&ours);
    let ours_ws = ours::ws(&ours);
    let raw4 = raw::server("raw 4 KiB", &bench, 4096, "feed");
    let raw128 = raw::server("raw 128 KiB", &bench, 131_072, "feed");
    let raw_send = raw::server("raw send per message", &bench, 4096, "send");
    let gorilla = go.as_ref().ok().map(|go| gorilla::server(go));

    let mut echo_servers = vec![
        ours_echo.clone(),
        ours_ws.clone(),
        raw4.clone(),
        raw128.clone(),
    ];
    echo_servers.extend(gorilla.clone());
    let mut echo = Vec::new();
    // Issue 16's large echo (100 x 16 KiB, `/echo` against raw 4 KiB) runs
    // beside the two sizes of issue 6.
    for (conns, bytes) in [(100usize, 20usize), (10, 1024), (100, 16 * 1024)] {
        let mut runs: Vec<Vec<Value>> = vec![Vec::new(); echo_servers.len()];
        for round in 0..plan.echo_rounds {
            // Rotate the order each round, so no server always follows the same one.
            for k in 0..echo_servers.len() {
                let i = (k + round) % echo_servers.len();
                let server = &echo_servers[i];
                let running = server.start(nofile)?;
                let url = format!("ws://{}{}", running.addr, server.echo_path);
                let mut args = echo_args("echo", &url, (conns, bytes), &plan, &running);
                if server.typed {
                    args.push("--typed".into());
                }
                let result = load_generator(&bench, nofile, &args)?;
                eprintln!(
                    "echo {conns:>3} x {bytes:<4} {:<22} {:>9.0} msg/s  server cpu {:>4.2}  loadgen cpu {:>4.2}",
                    server.name,
                    num(&result, "msgs_per_s"),
                    num(&result, "server_cpu"),
                    num(&result, "loadgen_cpu"),
                );
                runs[i].push(result);
            }
        }
        for (server, runs) in echo_servers.iter().zip(runs) {
            echo.push(summarize(server.name, runs));
        }
    }

    let reliable_echo = reliable_echo(&ours_ws, &bench, nofile, &plan)?;

    let mut burst_servers = vec![ours_ws.clone(), raw4.clone(), raw_send];
    burst_servers.extend(gorilla.clone());
    let running: Vec<Running> = burst_servers
        .iter()
        .map(|s| s.start(nofile))
        .collect::<Result<_>>()?;
    let mut burst_runs: Vec<Vec<f64>> = vec![Vec::new(); burst_servers.len()];
    for round in 0..plan.burst_rounds {
        for k in 0..burst_servers.len() {
            let i = (k + round) % burst_servers.len();
            let url = format!(
                "ws://{}{}{}",
                running[i].addr, burst_servers[i].burst_path, plan.burst_count
            );
            let result = load_generator(
                &bench,
                nofile,
                &[
                    "burst".into(),
                    "--url".into(),
                    url,
                    "--count".into(),
                    plan.burst_count.to_string(),
                ],
            )?;
            burst_runs[i].push(num(&result, "first_to_last_ms"));
        }
    }
    drop(running);
    let mut burst = Vec::new();
    for (server, mut ms) in burst_servers.iter().zip(burst_runs) {
        let all = ms.clone();
        let median_ms = median(&mut ms);
        eprintln!("burst {:<22} {median_ms:>8.1} ms", server.name);
        burst.push(json!({
            "server": server.name, "count": plan.burst_count, "first_to_last_ms": median_ms,
            "msgs_per_s": f64::from(plan.burst_count) / (median_ms / 1000.0), "rounds_ms": all,
        }));
    }

    let mut idle_servers = vec![ours_ws.clone(), raw4, raw128];
    idle_servers.extend(gorilla);
    let mut idle = Vec::new();
    for server in &idle_servers {
        let running = server.start(nofile)?;
        let mut result = load_generator(
            &bench,
            nofile,
            &[
                "idle".into(),
                "--url".into(),
                format!("ws://{}{}", running.addr, server.echo_path),
                "--conns".into(),
                idle_conns.to_string(),
                "--pid".into(),
                running.guard.pid().to_string(),
            ],
        )?;
        result["server"] = json!(server.name);
        eprintln!(
            "idle {:<22} {:>6.1} KiB per connection",
            server.name,
            num(&result, "kib_per_conn")
        );
        idle.push(result);
    }

    let browser = match &assets {
        Ok(assets) => {
            let running = ours::ui(&ours, &assets.www).start(nofile)?;
            browser::run(
                &running.addr.to_string(),
                assets,
                plan.browser_rounds,
                plan.burst_count,
                running.guard.pid(),
            )?
        }
        Err(why) => json!({ "error": why }),
    };
    let bundle = match &assets {
        Ok(assets) => assets.bundle.clone(),
        Err(why) => json!({ "error": why }),
    };

    let meta = json!({
        "mode": if options.smoke { "smoke (harness check, not figures)" } else if options.full { "full" } else { "quick" },
        "command": if options.full { "cargo run --release -p bench -- run --full" } else { "cargo run --release -p bench -- run --quick" },
        "plan": {
            "echo_rounds": plan.echo_rounds, "warmup_s": plan.warmup, "seconds": plan.seconds,
            "burst_rounds": plan.burst_rounds, "burst_count": plan.burst_count,
            "idle_conns": idle_conns, "browser_rounds": plan.browser_rounds,
        },
        "date": machine::date(),
        "build_seconds": build_seconds,
        "run_seconds": started.elapsed().as_secs_f64(),
        "load_before": load_before,
        "load_after": machine::load_average(),
        "uptime": sh("uptime"),
        "machine": {
            "cores": sh("nproc"),
            "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
            "kernel": sh("uname -sr"),
            "memory": sh("free -m | awk '/Mem:/ {print $2 \" MiB\"}'"),
        },
        "versions": {
            "rustc": sh("rustc --version"),
            "tokio-tungstenite": machine::locked(&root, "tokio-tungstenite"),
            "axum": machine::locked(&root, "axum"),
            "go": sh("go version 2>/dev/null"),
            "gorilla/websocket": sh("dpkg-query -W -f='${Version}' golang-github-gorilla-websocket-dev 2>/dev/null"),
            "chromium": sh("chromium --version 2>/dev/null"),
            "trunk": sh("trunk --version 2>/dev/null"),
        },
        "gorilla": match &go { Ok(_) => json!("built"), Err(why) => json!(why) },
    });
    let results = json!({
        "meta": meta, "echo": echo, "reliable_echo": reliable_echo, "burst": burst, "idle": idle,
        "browser": browser, "bundle": bundle,
    });
    report::benchmarks::write(&root, &options.docs, results)?;
    // The cluster (issue 14): its own section, after the rest. Smoke mode
    // checks the harness with fewer clients.
    if !options.no_cluster {
        eprintln!("bench: the cluster (bench cluster)");
        super::cluster::run(&super::cluster::Options {
            server: ours.clone(),
            bench: bench.clone(),
            conns: if options.smoke { 1000 } else { 10_000 },
            rounds: if options.smoke { 1 } else { 5 },
            echo_rounds: if options.smoke { 1 } else { plan.echo_rounds },
            echo_seconds: plan.seconds,
            resumes: if options.smoke { 3 } else { 20 },
            docs: Some(root.join(&options.docs)),
        })?;
    }
    // Connections on one node (issue 16): its own section, after the rest
    // (it replaces the section the report carried over). Not in smoke mode.
    if options.no_scale || options.smoke {
        return Ok(());
    }
    eprintln!("bench: connections on one node (bench scale)");
    super::scale::run(&super::scale::Options {
        server: ours.clone(),
        bench: bench.clone(),
        gorilla: go.as_ref().ok().cloned(),
        // As the report resolves it: relative to the workspace root.
        docs: Some(root.join(&options.docs)),
    })
}
