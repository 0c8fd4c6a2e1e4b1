//! Our release server as the benchmarks start it.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Result;

use crate::harness::procs::{Core, Guard, pinned};
use crate::harness::servers::{free_addr, spawn_listening};

/// The admin token of the benchmarks' nodes (loopback only, never a secret).
pub const ADMIN_TOKEN: &str = "bench-cluster-token";

/// Our server's arguments for the side-by-side runs, then `extra`: timed
/// pushes and pings off, large messages allowed, and the per-client limits
/// off (all the load comes from one address).
pub fn bench_args(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--push-interval",
        "0",
        "--ping-interval",
        "0",
        "--max-message-size",
        "1048576",
        // Load from one address: the per-client limits would refuse it.
        "--max-connections-per-ip",
        "0",
        "--max-http-connections-per-ip",
        "0",
        "--connect-rate",
        "0",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// A node of a cluster (or alone, without `redis`) on a free port, pinned
/// to the server core, with the admin API on ([`ADMIN_TOKEN`]), timed pushes
/// and pings off and the per-client limits off; `extra` flags after those.
/// Killed when the guard drops.
///
/// # Errors
///
/// When it cannot start or does not listen within 10 s.
pub fn node(
    server: &Path,
    redis: Option<&str>,
    id: &str,
    nofile: u64,
    extra: &[&str],
) -> Result<(Guard, SocketAddr)> {
    let addr = free_addr()?;
    let mut command = pinned(Core::Server, nofile, server);
    command
        .args(["--addr", &addr.to_string(), "--node-id", id])
        .args(["--admin-token", ADMIN_TOKEN, "--static-dir", "/nonexistent"])
        .args(["--push-interval", "0", "--ping-interval", "0"])
        .args(["--max-connections-per-ip", "0", "--connect-rate", "0"])
        .args([
            "--max-http-connections-per-ip",
            "0",
            "--max-sessions-per-ip",
            "0",
        ])
        .args(extra)
        .env("RUST_LOG", "warn");
    if let Some(redis) = redis {
        command.args(["--redis-url", redis]);
    }
    Ok((spawn_listening(id, command, addr)?, addr))
}

/// Our server's echo at `/echo` (plain text) and its bursts at `/ws`.
pub fn echo(server: &Path) -> super::Server {
    super::Server {
        name: "ours /echo",
        program: super::owned(server),
        args: bench_args(&NO_UI),
        addr_flag: "--addr",
        echo_path: "/echo",
        typed: false,
        burst_path: "/ws?burst=",
    }
}

/// Our server's typed echo and bursts at `/ws`.
pub fn ws(server: &Path) -> super::Server {
    super::Server {
        name: "ours /ws",
        echo_path: "/ws",
        typed: true,
        ..echo(server)
    }
}

/// Our server serving the UI in `www`, for the browser parts.
pub fn ui(server: &Path, www: &Path) -> super::Server {
    super::Server {
        name: "ours (UI)",
        args: bench_args(&["--static-dir", &www.to_string_lossy()]),
        ..ws(server)
    }
}

/// No UI served: the static directory does not exist.
const NO_UI: [&str; 2] = ["--static-dir", "/nonexistent"];
