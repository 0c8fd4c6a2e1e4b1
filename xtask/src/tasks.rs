//! The everyday commands: `run`, `test`, `testbed` and the benchmarks.

use std::process::Command;
#[cfg(feature = "testbed")]
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bundle;
use crate::cmd::{self, command};
use crate::setup::{self, Needs};
#[cfg(feature = "testbed")]
use testbed::Testbed;

/// Builds the UI in release and serves it with the server on
/// <http://127.0.0.1:8080> until Ctrl-C. Arguments after `--` go to the server.
///
/// It installs only what building and serving need ([`Needs::RUN`]): the
/// test tools (wasm-pack, rustfmt, clippy, Chromium) wait for `test`.
pub fn run(server_args: &[String]) -> Result<()> {
    setup::ensure(Needs::RUN)?;
    cmd::run(&mut command("trunk", &["build", "--release"]))?;
    cmd::run(&mut command(
        "cargo",
        &["build", "--release", "-p", "server"],
    ))?;
    let mut server = command(
        "cargo",
        &[
            "run",
            "--quiet",
            "--release",
            "-p",
            "server",
            "--",
            "--static-dir",
            "dist",
            // Channels anyone may use, for the console (issue 23).
            "--config",
            "config/development.toml",
        ],
    );
    server.args(server_args);
    let has_addr = server_args.iter().any(|a| a.starts_with("--addr"));
    eprintln!(
        "\nserving the UI on {} (Ctrl-C stops the server)\n",
        if has_addr {
            "the --addr given"
        } else {
            "http://127.0.0.1:8080"
        }
    );
    runtime()?.block_on(async {
        let mut child = tokio::process::Command::from(server)
            .spawn()
            .context("starting the server")?;
        loop {
            tokio::select! {
                status = child.wait() => {
                    let status = status?;
                    if status.success() {
                        return Ok(());
                    }
                    bail!("the server exited with {status}");
                }
                // The server is in our process group and got the signal too:
                // wait for its graceful shutdown instead of dying first.
                _ = tokio::signal::ctrl_c() => {}
            }
        }
    })
}

/// Runs every check and test; fails if any step fails, after running them all.
#[cfg(feature = "testbed")]
pub fn test() -> Result<()> {
    let started = Instant::now();
    let tools = setup::ensure(Needs::TEST)?;
    let chromedriver = tools
        .chromedriver
        .context("setup did not find chromedriver")?;
    // The cluster tests start their own redis-server on a free port.
    setup::ensure_redis()?;
    let mut steps = Steps::default();
    steps.run("format", || {
        cmd::run(&mut command("cargo", &["fmt", "--all", "--check"]))
    });
    steps.run("clippy (native)", || {
        cmd::run(&mut command(
            "cargo",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ],
        ))
    });
    steps.run("clippy (wasm32)", || {
        cmd::run(&mut command(
            "cargo",
            &[
                "clippy",
                "--target",
                "wasm32-unknown-unknown",
                "-p",
                "shared",
                "-p",
                "buffered-socket",
                "-p",
                "client",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ],
        ))
    });
    steps.run("native tests", || {
        cmd::run(&mut command(
            "cargo",
            &["test", "--workspace", "--exclude", "e2e", "--all-features"],
        ))
    });
    steps.run("browser tests (socket)", || {
        let rt = runtime()?;
        rt.block_on(async {
            // With the cluster (two nodes on Redis) for web_cluster.rs.
            let testbed = Testbed::start_with_cluster(None).await?;
            let cluster = testbed
                .cluster_base
                .clone()
                .context("the testbed started without its cluster")?;
            eprintln!(
                "testbed: server {} control {} cluster {cluster}",
                testbed.http_base, testbed.control_base
            );
            let mut wasm_pack = command("wasm-pack", &["test", "--headless", "--chrome", "socket"]);
            wasm_pack
                .env("CHROMEDRIVER", &chromedriver)
                .env("BUFFERED_SOCKET_TEST_WS", &testbed.ws_base)
                .env("BUFFERED_SOCKET_TEST_PROXY", &testbed.proxy_base)
                .env("BUFFERED_SOCKET_TEST_WS_AUTH", &testbed.auth_ws_base)
                .env("BUFFERED_SOCKET_TEST_CLUSTER", &cluster)
                .env("BUFFERED_SOCKET_TEST_CONTROL", &testbed.control_base);
            let result = run_async(wasm_pack).await;
            testbed.shutdown().await?;
            result
        })
    });
    // The UI in release, as served: for the end-to-end tests and the bundle
    // budget, which both skip (and fail) without it rather than look at an
    // older build in dist/.
    let mut ui_built = false;
    steps.run("UI build (trunk, release)", || {
        cmd::run(&mut command("trunk", &["build", "--release"]))?;
        ui_built = true;
        Ok(())
    });
    steps.run("end-to-end (UI in Chrome)", || {
        if !ui_built {
            bail!("the UI did not build");
        }
        cmd::run(
            command("cargo", &["test", "-p", "e2e", "--", "--test-threads", "1"])
                .env("CHROMEDRIVER", &chromedriver),
        )
    });
    steps.run("bundle budget (wasm gzip -9)", || {
        if !ui_built {
            bail!("the UI did not build");
        }
        bundle::check(&cmd::root().join("dist"))
    });
    steps.finish(started.elapsed())
}

/// Builds the UI in release, as `run` and `test` do, and checks the
/// console's wasm against its ceiling ([`bundle::CEILING`]) and target ([`bundle::TARGET`]).
pub fn bundle() -> Result<()> {
    setup::ensure(Needs::RUN)?;
    cmd::run(&mut command("trunk", &["build", "--release"]))?;
    bundle::check(&cmd::root().join("dist"))
}

/// Builds the server and the benchmark tools in release; returns the
/// target directory and a command running the release `bench` binary with
/// `subcommand --target <target> --docs docs` and then `extra`.
fn release_bench(subcommand: &str, extra: &[&str]) -> Result<Command> {
    cmd::run(&mut command(
        "cargo",
        &["build", "--release", "-p", "server", "-p", "bench"],
    ))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| cmd::root().join("target"));
    let target = target.to_string_lossy().into_owned();
    let mut args = vec![subcommand, "--target", &target, "--docs", "docs"];
    args.extend_from_slice(extra);
    Ok(command(&format!("{target}/release/bench"), &args))
}

/// Builds the server and the benchmark tools in release and runs every
/// benchmark side by side (the Go reference is built when Go is installed).
pub fn bench(full: bool, rounds: Option<&str>) -> Result<()> {
    // trunk, wasm-bindgen and Chromium for the browser part; Go for gorilla.
    let tools = setup::ensure(Needs {
        checks: false,
        browser: true,
    })?;
    setup::ensure_go();
    setup::ensure_redis()?;
    let mut args = Vec::new();
    if full {
        args.push("--full");
    }
    if let Some(rounds) = rounds {
        args.extend(["--rounds", rounds]);
    }
    let mut run = release_bench("run", &args)?;
    if let Some(driver) = &tools.chromedriver {
        run.env("CHROMEDRIVER", driver);
    }
    cmd::run(&mut run)
}

/// Builds the server and the benchmark tools in release and holds as many
/// `/ws` connections as the descriptor limit allows, with timed pushes on,
/// ours beside gorilla (built when Go is installed): `bench scale` writes
/// its section of docs/BENCHMARKS.md.
pub fn bench_scale() -> Result<()> {
    setup::ensure_go();
    cmd::run(&mut release_bench("scale", &[])?)
}

/// Builds the server and the benchmark tools in release and runs the
/// cluster's benchmark (one broadcast to 10,000 clients over two nodes on
/// Redis): `bench cluster` writes its section of docs/BENCHMARKS.md.
pub fn bench_cluster() -> Result<()> {
    setup::ensure_redis()?;
    cmd::run(&mut release_bench("cluster", &[])?)
}

/// Installs socket.io (npm, into target/tools/socketio), builds the server
/// and the benchmark tools in release and runs the channels' fan-out, ours
/// beside socket.io, one node and two on Redis: `bench channels` writes its
/// section of docs/BENCHMARKS.md. With `quick`, fewer subscribers and
/// shorter windows (the section says so). With `sockudo`, Sockudo too,
/// installed with cargo into target/tools/sockudo (about 13 minutes once,
/// hence only when asked).
pub fn bench_channels(quick: bool, sockudo: bool) -> Result<()> {
    setup::ensure_redis()?;
    setup::ensure_socketio()?;
    let mut extra: Vec<&str> = Vec::new();
    if quick {
        extra.push("--quick");
    }
    if sockudo {
        setup::ensure_sockudo()?;
        extra.extend(["--peer", "ours", "--peer", "socketio", "--peer", "sockudo"]);
    }
    cmd::run(&mut release_bench("channels", &extra)?)
}

/// Installs socket.io (npm, into target/tools/socketio), builds the server
/// and the benchmark tools in release and runs the presence benchmark
/// (issue 24), ours beside socket.io's `fetchSockets()`, 1, 2 and 3 nodes on
/// Redis: `bench presence` writes its section of docs/BENCHMARKS.md and
/// docs/presence.json. With `quick`, 1,000 members and fewer calls (the
/// section says so).
pub fn bench_presence(quick: bool) -> Result<()> {
    setup::ensure_redis()?;
    setup::ensure_socketio()?;
    let extra: &[&str] = if quick { &["--quick"] } else { &[] };
    cmd::run(&mut release_bench("presence", extra)?)
}

/// Builds the server and the benchmark tools in release and plays hostile
/// clients at scale against the server; writes `docs/HARDENING.md`.
pub fn hostile() -> Result<()> {
    cmd::run(&mut release_bench("hostile", &[])?)
}

/// Starts the testbed and waits for Ctrl-C: for running browser tests by hand.
#[cfg(feature = "testbed")]
pub fn testbed() -> Result<()> {
    setup::ensure_redis()?;
    runtime()?.block_on(async {
        let dist = cmd::root().join("dist");
        let testbed =
            Testbed::start_with_cluster(dist.is_dir().then_some(dist.as_path())).await?;
        let cluster = testbed.cluster_base.clone().unwrap_or_default();
        eprintln!("server:  {}", testbed.http_base);
        eprintln!("control: {}", testbed.control_base);
        eprintln!("proxy:   {}", testbed.proxy_base);
        eprintln!("token mode: {}", testbed.auth_ws_base);
        eprintln!("cluster: {cluster} (two nodes on Redis, round robin)");
        eprintln!(
            "\nbuild browser tests against it with:\n  BUFFERED_SOCKET_TEST_WS={} BUFFERED_SOCKET_TEST_PROXY={} \
             BUFFERED_SOCKET_TEST_WS_AUTH={} BUFFERED_SOCKET_TEST_CLUSTER={cluster} \
             BUFFERED_SOCKET_TEST_CONTROL={} \
             CHROMEDRIVER=/usr/bin/chromedriver wasm-pack test --headless --chrome socket\n",
            testbed.ws_base, testbed.proxy_base, testbed.auth_ws_base, testbed.control_base
        );
        tokio::signal::ctrl_c().await?;
        testbed.shutdown().await
    })
}

/// `test` and `testbed` from the plain binary: they run the test server
/// in-process, so xtask runs again built with its `testbed` feature (see
/// xtask/Cargo.toml). `cargo xtask run` on a fresh clone thus never compiles
/// the test server.
#[cfg(not(feature = "testbed"))]
pub fn with_testbed(command: &str, args: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut again = cmd::command(
        &cargo,
        &[
            "run",
            "--quiet",
            "-p",
            "xtask",
            "--features",
            "testbed",
            "--",
            command,
        ],
    );
    again.args(args);
    cmd::run(&mut again)
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Runs a child process without blocking the runtime that serves it.
#[cfg(feature = "testbed")]
async fn run_async(cmd: Command) -> Result<()> {
    let mut cmd = tokio::process::Command::from(cmd);
    // Never leave a child behind: if this future is dropped, the child dies.
    cmd.kill_on_drop(true);
    eprintln!("$ {:?}", cmd.as_std());
    let status = cmd.status().await.context("starting a child process")?;
    if !status.success() {
        bail!("{:?} failed ({status})", cmd.as_std().get_program());
    }
    Ok(())
}

/// Named steps that all run; the summary says which failed.
#[cfg(feature = "testbed")]
#[derive(Default)]
struct Steps {
    results: Vec<(&'static str, Duration, Result<()>)>,
}

#[cfg(feature = "testbed")]
impl Steps {
    fn run(&mut self, name: &'static str, step: impl FnOnce() -> Result<()>) {
        eprintln!("\n==> {name}");
        let started = Instant::now();
        let result = step();
        if let Err(err) = &result {
            eprintln!("==> {name} FAILED: {err:#}");
        }
        self.results.push((name, started.elapsed(), result));
    }

    fn finish(self, total: Duration) -> Result<()> {
        eprintln!("\nsummary:");
        let mut failed = 0;
        for (name, took, result) in &self.results {
            let mark = if result.is_ok() { "ok  " } else { "FAIL" };
            failed += usize::from(result.is_err());
            eprintln!("  {mark} {name:<28} {:>6.1}s", took.as_secs_f64());
        }
        eprintln!("  total {:.1}s", total.as_secs_f64());
        eprintln!(
            "steps: {} passed, {failed} failed",
            self.results.len() - failed
        );
        if failed > 0 {
            bail!("{failed} step(s) failed");
        }
        Ok(())
    }
}
