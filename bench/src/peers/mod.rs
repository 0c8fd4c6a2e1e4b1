//! The servers measured side by side, each with how to start it:
//!
//! * [`ours`]: our release server and the flags every benchmark gives it;
//! * [`raw`]: the raw tokio-tungstenite reference (this binary's `raw-server`);
//! * [`gorilla`]: the gorilla/websocket reference (`bench/go/server.go`);
//! * [`socketio`]: socket.io 4.8 on Node.js with rooms, and its redis
//!   adapter for two nodes (`bench/socketio/server.js`), and the Engine.IO 4
//!   client our load generator speaks to it;
//! * [`sockudo`]: Sockudo 5.2 (the Pusher protocol), its local adapter on
//!   one node and its redis adapter on two, and the signed HTTP API that
//!   publishes to it.

pub mod gorilla;
pub mod ours;
pub mod raw;
pub mod socketio;
pub mod sockudo;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::harness::procs::{Core, Guard, pinned};
use crate::harness::servers::{free_addr, spawn_listening};

/// One server under test in the side-by-side runs (echo, burst, idle).
#[derive(Clone)]
pub struct Server {
    /// Shown in the report, and the key of its results.
    pub name: &'static str,
    /// The binary.
    pub program: PathBuf,
    /// Its arguments, before the address.
    pub args: Vec<String>,
    /// The flag that takes the address to listen on.
    pub addr_flag: &'static str,
    /// The path of its echo.
    pub echo_path: &'static str,
    /// Whether its echo speaks the protocol's typed `echo` (for `/ws`).
    pub typed: bool,
    /// The path that pushes a burst on connect, the count appended.
    pub burst_path: &'static str,
}

/// A server started on a free loopback port, killed on drop.
pub struct Running {
    /// The process.
    pub guard: Guard,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Server {
    /// Starts it on a free loopback port, pinned to the server core with
    /// `nofile` descriptors, and waits until it listens.
    ///
    /// # Errors
    ///
    /// When it cannot start or does not listen within 10 s.
    pub fn start(&self, nofile: u64) -> Result<Running> {
        let addr = free_addr()?;
        let mut command = pinned(Core::Server, nofile, &self.program);
        command
            .args(&self.args)
            .arg(self.addr_flag)
            .arg(addr.to_string())
            .env("RUST_LOG", "warn");
        let guard = spawn_listening(self.name, command, addr)?;
        Ok(Running { guard, addr })
    }
}

/// The path as an owned buffer (the peers' constructors take `&Path`).
fn owned(program: &Path) -> PathBuf {
    program.to_path_buf()
}
