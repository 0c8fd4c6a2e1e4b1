//! Benchmarks side by side (issue 6): our server against raw
//! tokio-tungstenite and the original gorilla/websocket design, our wasm
//! wrapper against the browser's raw WebSocket, from one command.
//!
//! # Layout
//!
//! * `run.rs`: the orchestrator: builds everything, servers on core 0, load
//!   generator and browser on core 1, repeated and interleaved rounds;
//! * `report.rs`: the ratios against the targets and `docs/BENCHMARKS.md` + `docs/benchmarks.json`;
//! * `load.rs`: the load generator: `echo` (closed loop, HDR latency, every
//!   echo checked), `burst` (first to last of N pushes, order checked), `idle`
//!   (server RSS per held connection);
//! * `raw.rs`: the reference server, raw tokio + tokio-tungstenite;
//! * `browser.rs`: headless Chromium through ChromeDriver, the burst pages and the Yew page;
//!   `tabs.rs`: ten console tabs with sharing across tabs and without (issue 15):
//!   the server's connections and memory;
//! * `hostile/`: hostile clients at scale against the release server (issue
//!   12): floods, slowloris, non-reading clients, broken frames, fuzzing;
//!   writes `docs/HARDENING.md`;
//! * `scale.rs`: connections on one node (issue 16): as many `/ws` connections
//!   as the descriptor limit allows with timed pushes on, ours beside gorilla,
//!   and a projection; `scale_report.rs` writes its section of `docs/BENCHMARKS.md`;
//! * `cluster.rs`: the cluster (issue 14): reliable echo on Redis against
//!   memory, one broadcast to 10,000 clients over two nodes sharing a
//!   `redis-server`, and the time to resume on another node; its section of
//!   `docs/BENCHMARKS.md`; `cluster_reliable.rs`: their reliable load, with
//!   the real wrapper;
//! * `procs.rs`: pinned child processes that are always killed;
//! * `go/server.go`: the gorilla reference, built offline from Debian's packages;
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
//! target/release/bench load echo --url ws://127.0.0.1:8080/echo --conns 100 --bytes 20
//! ```

#[cfg(not(target_arch = "wasm32"))]
mod browser;
#[cfg(not(target_arch = "wasm32"))]
mod cli;
#[cfg(not(target_arch = "wasm32"))]
mod cluster;
#[cfg(not(target_arch = "wasm32"))]
mod cluster_reliable;
#[cfg(not(target_arch = "wasm32"))]
mod hostile;
#[cfg(not(target_arch = "wasm32"))]
mod load;
#[cfg(not(target_arch = "wasm32"))]
mod procs;
#[cfg(not(target_arch = "wasm32"))]
mod raw;
#[cfg(not(target_arch = "wasm32"))]
mod report;
#[cfg(not(target_arch = "wasm32"))]
mod run;
#[cfg(not(target_arch = "wasm32"))]
mod scale;
#[cfg(not(target_arch = "wasm32"))]
mod scale_report;
#[cfg(not(target_arch = "wasm32"))]
mod tabs;

#[cfg(not(target_arch = "wasm32"))]
fn main() -> anyhow::Result<()> {
    cli::main()
}

/// The benchmarks run natively; only `examples/browser.rs` is built for wasm32.
#[cfg(target_arch = "wasm32")]
fn main() {}
