//! Project automation, the Rust way: `cargo xtask <command>` (the alias lives
//! in `.cargo/config.toml`).
//!
//! | command | what it does |
//! |---|---|
//! | `setup` | installs every missing tool: the wasm32 target, wasm-bindgen-cli at the Cargo.lock version, trunk 0.21, wasm-opt, rustfmt, clippy, wasm-pack; with `--browser` also Chromium and ChromeDriver; with `--run` only what `run` needs |
//! | `run` | installs only what it needs (the wasm32 target, wasm-bindgen-cli, trunk, wasm-opt), builds the UI in release with trunk, starts the server on <http://127.0.0.1:8080> until Ctrl-C |
//! | `test` | set-up, then fmt, clippy (native and wasm32), native tests, the browser tests in headless Chrome against a real server on a free port, and the console's wasm against its enforced ceiling (160,000 bytes gzip -9; target 140 KiB) |
//! | `bundle` | builds the UI in release as `run` does and checks the console's wasm against its budget alone (`bundle.rs`) |
//! | `cluster` | a local three-node cluster: `redis-server` (installed if missing) on a free port, three release nodes with `--redis-url`, the UI on <http://127.0.0.1:8080> through a round-robin front (the testbed's proxy), until Ctrl-C |
//! | `testbed` | starts the test server and its control API and prints their addresses, for running browser tests by hand |
//! | `bench` | builds in release and runs the benchmarks side by side (`--full` for the long run); writes `docs/BENCHMARKS.md`, then the cluster's broadcast over two nodes on Redis and connections on one node with timed pushes (each its own section); `--scale`, `--cluster`, `--channels` and `--presence` (ours beside socket.io, installed from npm): that part alone |
//! | `hostile` | builds in release and plays hostile clients at scale against the server (floods, slowloris, non-reading clients, broken frames); writes `docs/HARDENING.md` |
//!
//! Layout: `setup.rs` (tool detection and installation), `tasks.rs` (run,
//! test, testbed, the benchmarks), `bundle.rs` (the wasm budget), `cluster.rs` (cluster), `cmd.rs` (running child processes). The test server itself
//! is the `testbed` crate, behind this crate's `testbed` feature: the plain
//! binary (all that `cargo xtask run` compiles) runs `test`, `testbed` and `cluster` by
//! running xtask again with that feature.
//!
//! Every step is idempotent: a tool is installed only when it is missing or at
//! the wrong version, so a warm re-run goes straight to the work.

mod bundle;
#[cfg(feature = "testbed")]
mod cluster;
mod cmd;
mod setup;
mod tasks;

use anyhow::{Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  setup [--browser]   install the tools the project needs (idempotent)
  setup --run         install only what `run` needs (wasm32 target, wasm-bindgen-cli, trunk, wasm-opt)
  run [-- ARGS]       build the UI in release and serve it with the server on http://127.0.0.1:8080
                      (ARGS go to the server, see `cargo run -p server -- --help`)
  cluster [-- ARGS]   a local three-node cluster on one redis-server, the UI on http://127.0.0.1:8080
                      through a round-robin front (ARGS go to every node)
  test                run every check and test: fmt, clippy (native + wasm32), native tests, browser tests,
                      and the console's wasm within its ceiling (target 140 KiB gzip -9)
  bundle              build the UI in release and check the console's wasm against its budget
  testbed             start the test server and its control API, print their addresses, wait for Ctrl-C
  bench [--full] [--rounds N]
                      benchmarks side by side (quick: under 5 minutes); writes docs/BENCHMARKS.md;
                      --rounds N interleaved rounds of each scenario (7 for a ratio near its line)
  bench --scale       only its last part: connections on one node, timed pushes on, ours beside gorilla
  bench --cluster     only the cluster's part: one broadcast to 10,000 clients over two nodes on Redis
  bench --channels [--quick] [--peers sockudo]
                      a channel's fan-out, ours beside socket.io (installed from npm), one node and two
                      on Redis; --quick: fewer subscribers, shorter windows (the section says so);
                      --peers sockudo: Sockudo 5.2 too (cargo install, about 13 minutes once)
  bench --presence [--quick]
                      a channel's presence, ours beside socket.io's fetchSockets(): 10,000 members at
                      1, 2 and 3 nodes on Redis, both queries timed and the idle CPU; --quick: 1,000
                      members, fewer calls (the section says so)
  hostile             hostile clients at scale against the release server (a few minutes); writes docs/HARDENING.md
  help                this text
";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((command, rest)) => (command.as_str(), rest),
        None => ("help", &[][..]),
    };
    match command {
        "setup" => {
            let needs = if rest.iter().any(|a| a == "--run") {
                setup::Needs::RUN
            } else {
                setup::Needs {
                    browser: rest.iter().any(|a| a == "--browser"),
                    ..setup::Needs::TEST
                }
            };
            setup::ensure(needs).map(drop)
        }
        "run" => tasks::run(rest.strip_prefix(&["--".to_owned()][..]).unwrap_or(rest)),
        #[cfg(feature = "testbed")]
        "test" => tasks::test(),
        #[cfg(feature = "testbed")]
        "testbed" => tasks::testbed(),
        #[cfg(feature = "testbed")]
        "cluster" => cluster::cluster(rest.strip_prefix(&["--".to_owned()][..]).unwrap_or(rest)),
        #[cfg(not(feature = "testbed"))]
        "test" | "testbed" => tasks::with_testbed(command, &[]),
        #[cfg(not(feature = "testbed"))]
        "cluster" => tasks::with_testbed(command, rest),
        "bench" if rest.iter().any(|a| a == "--scale") => tasks::bench_scale(),
        "bench" if rest.iter().any(|a| a == "--cluster") => tasks::bench_cluster(),
        "bench" if rest.iter().any(|a| a == "--channels") => {
            let sockudo = rest
                .iter()
                .position(|a| a == "--peers")
                .and_then(|at| rest.get(at + 1))
                .is_some_and(|peers| peers.split(',').any(|p| p == "sockudo"));
            tasks::bench_channels(rest.iter().any(|a| a == "--quick"), sockudo)
        }
        "bench" if rest.iter().any(|a| a == "--presence") => {
            tasks::bench_presence(rest.iter().any(|a| a == "--quick"))
        }
        "bench" => tasks::bench(
            rest.iter().any(|a| a == "--full"),
            rest.iter()
                .position(|a| a == "--rounds")
                .and_then(|at| rest.get(at + 1))
                .map(String::as_str),
        ),
        "hostile" => tasks::hostile(),
        "bundle" => tasks::bundle(),
        "help" | "--help" | "-h" => {
            eprint!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}
