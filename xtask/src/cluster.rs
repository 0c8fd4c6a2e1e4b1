//! `cargo xtask cluster`: a local three-node cluster with one command.
//!
//! It starts a `redis-server` on a free port in its own temporary data
//! directory, without persistence (`testbed::RedisServer`), three release
//! server nodes as child processes (`node-1` to `node-3`, each on a free
//! port, each with `--redis-url`), and in front of them on
//! <http://127.0.0.1:8080> the testbed's fault proxy with no faults as a
//! round-robin TCP balancer: each new connection, so each reconnect, goes
//! to the next node, and past one that does not accept. The nodes serve the
//! UI (built in release with trunk, as `cargo xtask run` does) from `dist`.
//!
//! The balancer is the tests' proxy rather than nginx so that the command
//! needs nothing more than `cargo xtask run` does (and Redis); the nginx
//! configuration of docs/CLUSTER.md is what a deployment puts there instead.
//! Ctrl-C stops everything: the nodes get the signal too and shut down
//! gracefully (they are killed after 10 s), then Redis is killed.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use testbed::{FaultProxy, Faults, NodeProcess, RedisServer};

use crate::cmd::{self, command};
use crate::setup::{self, Needs};

/// The nodes' ids, in the balancer's order.
const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];
/// Where the balancer listens, as `cargo xtask run` does.
const FRONT: ([u8; 4], u16) = ([127, 0, 0, 1], 8080);
/// How long the nodes get for their graceful shutdown after Ctrl-C.
const SHUTDOWN: Duration = Duration::from_secs(10);

/// Builds the UI and the server in release, starts Redis, three nodes and
/// the round-robin front on <http://127.0.0.1:8080>, and waits for Ctrl-C.
/// `server_args` go to every node.
pub fn cluster(server_args: &[String]) -> Result<()> {
    setup::ensure(Needs::RUN)?;
    setup::ensure_redis()?;
    cmd::run(&mut command("trunk", &["build", "--release"]))?;
    cmd::run(&mut command(
        "cargo",
        &["build", "--release", "-p", "server"],
    ))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| cmd::root().join("target"));
    let binary = target.join("release").join("server");
    let dist = cmd::root().join("dist");

    let redis = RedisServer::start()?;
    eprintln!(
        "redis:  {} (no persistence, its own temporary directory)",
        redis.url()
    );
    let mut nodes = Vec::new();
    for id in NODES {
        let mut args = vec![
            "--redis-url".to_owned(),
            redis.url(),
            "--node-id".to_owned(),
            id.to_owned(),
            "--static-dir".to_owned(),
            dist.to_string_lossy().into_owned(),
        ];
        args.extend(server_args.iter().cloned());
        let node =
            NodeProcess::start(&binary, &args, true).with_context(|| format!("starting {id}"))?;
        eprintln!("{id}: http://{}", node.addr());
        nodes.push(node);
    }
    let result = crate::tasks::runtime()?.block_on(async {
        let front = FaultProxy::start_on(
            SocketAddr::from(FRONT),
            nodes.iter().map(NodeProcess::addr).collect(),
            Faults::none(),
        )
        .await
        .context("binding 127.0.0.1:8080 for the front (is `cargo xtask run` still running?)")?;
        eprintln!(
            "\nserving the UI on http://{} through a round-robin front over {} nodes \
             (Ctrl-C stops them all)\n",
            front.addr,
            nodes.len()
        );
        tokio::signal::ctrl_c().await?;
        drop(front);
        anyhow::Ok(())
    });
    stop(&mut nodes, &binary);
    drop(redis);
    result
}

/// Waits for the nodes' graceful shutdown (they got Ctrl-C as well, being in
/// our process group), then kills those still running.
fn stop(nodes: &mut [NodeProcess], binary: &Path) {
    let deadline = Instant::now() + SHUTDOWN;
    while Instant::now() < deadline && !nodes.iter_mut().all(|n| n.exited().unwrap_or(true)) {
        // Polls the children's exit; nothing else to wait on without a runtime.
        std::thread::sleep(Duration::from_millis(50));
    }
    for node in nodes {
        if !node.exited().unwrap_or(true) {
            eprintln!(
                "{}: still running after {SHUTDOWN:?}, killed",
                binary.display()
            );
            let _ = node.kill();
        }
    }
}
