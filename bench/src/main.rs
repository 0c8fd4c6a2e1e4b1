//! Benchmarks side by side (issue 6): our server against raw
//! tokio-tungstenite, the original gorilla/websocket design and socket.io,
//! our wasm wrapper against the browser's raw WebSocket, from one command.
//!
//! # Layout
//!
//! The crate is laid out by role: what is measured (`scenarios/`) is apart
//! from how processes are started and read (`harness/`), from the servers
//! measured (`peers/`) and from what is written (`report/`).
//!
//! * `cli.rs`: the command line (`bench --help` lists every subcommand);
//! * `harness/`: `procs.rs` (pinned child processes that are always
//!   killed), `proc_stats.rs` (CPU time and RSS from `/proc`, read once
//!   settled), `servers.rs` (a server on a free port, the load generator as
//!   a child and its JSON line), `stats.rs` (medians, quantiles, a fit),
//!   `machine.rs` (workspace root, machine and versions), `ws.rs` (loopback
//!   client connections, from chosen source addresses), `builds.rs` (every
//!   build a run needs, in one place; `cargo xtask bench` builds the server
//!   and this binary, and installs socket.io from npm);
//! * `scenarios/`: `suite.rs` (`bench run`: builds, then every echo, burst,
//!   idle and browser scenario repeated and interleaved, then the cluster
//!   and scale runs), `echo.rs`, `burst.rs`, `idle.rs` (the load generator's
//!   modes), `scale.rs` (connections on one node, issue 16), `cluster.rs`
//!   and `cluster_reliable.rs` (two nodes on Redis, issue 14), `channels.rs`
//!   (a channel's fan-out, ours beside socket.io, issue 23), `presence.rs`
//!   (a channel's presence queries and idle members, ours beside
//!   socket.io's `fetchSockets()`, issue 24), `browser.rs`
//!   and `tabs.rs` (headless Chromium, issues 15 and 22), `hostile/`
//!   (hostile clients at scale, issue 12, which writes `docs/HARDENING.md`);
//! * `peers/`: `ours.rs` (our server's flags), `raw.rs` (the raw
//!   tokio-tungstenite reference, run by this binary), `gorilla.rs` (the
//!   Go reference, `go/server.go`), `socketio.rs` (socket.io 4.8 on Node.js,
//!   `socketio/server.js`, and the Engine.IO 4 client of our load generator);
//! * `report/`: `benchmarks.rs` (`docs/BENCHMARKS.md` and
//!   `docs/benchmarks.json`, ratios against the targets), and one kept
//!   section each for `scale.rs`, `cluster.rs`, `channels.rs` and
//!   `presence.rs` (typed results), found and replaced by `kept.rs`;
//! * `examples/browser.rs`: the wasm side of the browser burst (our wrapper).
//!
//! # Example
//!
//! ```sh
//! cargo run --release -p bench -- run --quick   # under 5 minutes of measurement
//! cargo run --release -p bench -- run --full    # longer windows, more rounds
//! cargo xtask hostile                           # builds, then `bench hostile`: docs/HARDENING.md
//! cargo xtask bench --scale                     # builds, then `bench scale`: its section of docs/BENCHMARKS.md
//! cargo run --release -p bench -- tabs          # only the ten tabs (after `trunk build --release`)
//! cargo xtask bench --cluster                   # builds, then `bench cluster`: its section of docs/BENCHMARKS.md
//! cargo xtask bench --channels                  # installs socket.io, builds, then `bench channels`
//! cargo xtask bench --channels --quick          # the same with fewer subscribers, to try it
//! cargo xtask bench --presence                  # installs socket.io, builds, then `bench presence`
//! cargo xtask bench --presence --quick          # 1,000 members, fewer calls, to try it
//! target/release/bench load echo --url ws://127.0.0.1:8080/echo --conns 100 --bytes 20
//! ```

#[cfg(not(target_arch = "wasm32"))]
mod cli;
#[cfg(not(target_arch = "wasm32"))]
mod harness;
#[cfg(not(target_arch = "wasm32"))]
mod peers;
#[cfg(not(target_arch = "wasm32"))]
mod report;
#[cfg(not(target_arch = "wasm32"))]
mod scenarios;

#[cfg(not(target_arch = "wasm32"))]
fn main() -> anyhow::Result<()> {
    cli::main()
}

/// The benchmarks run natively; only `examples/browser.rs` is built for wasm32.
#[cfg(target_arch = "wasm32")]
fn main() {}
