//! socket.io 4.8 as a peer (issue 23): `bench/socketio/server.js` on
//! Node.js 20, one process a node, rooms for channels and
//! `@socket.io/redis-adapter` for two nodes; and the few Engine.IO 4 /
//! socket.io packets our load generator speaks to it over the WebSocket
//! transport (no polling, no client library).
//!
//! `cargo xtask bench --channels` installs the npm packages into
//! `target/tools/socketio` (as it installs binaryen's `wasm-opt` into
//! `target/tools`); the version is pinned there.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::harness::machine;
use crate::harness::procs::{Core, Guard, pinned};
use crate::harness::servers::forward_lines;

/// The WebSocket transport's upgrade path of Engine.IO 4.
pub const PATH: &str = "/socket.io/?EIO=4&transport=websocket";
/// Engine.IO's ping, from the server; answered with [`PONG`].
pub const PING: &str = "2";
/// Engine.IO's pong.
pub const PONG: &str = "3";
/// socket.io's CONNECT to the default namespace (Engine.IO message `4`,
/// socket.io packet `0`): sent once the Engine.IO `open` packet is in.
pub const CONNECT: &str = "40";
/// The room's publications reach a client as this event.
pub const PUB_EVENT: &str = "pub";
/// Where `cargo xtask bench --channels` installs the npm packages.
const INSTALL: &str = "target/tools/socketio/node_modules";
/// Node.js 20 from Debian.
const NODE: &str = "/usr/bin/node";

/// The modules directory, or why socket.io is missing.
///
/// # Errors
///
/// When `cargo xtask bench --channels` has not installed it.
pub fn modules() -> Result<PathBuf> {
    let dir = machine::root().join(INSTALL);
    ensure!(
        dir.join("socket.io").is_dir() && dir.join("@socket.io/redis-adapter").is_dir(),
        "socket.io is not installed in {} (cargo xtask bench --channels installs it)",
        dir.display()
    );
    Ok(dir)
}

/// The version of an installed npm package, from its `package.json`.
pub fn version(package: &str) -> String {
    let path = machine::root()
        .join(INSTALL)
        .join(package)
        .join("package.json");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|json| json["version"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A socket.io node on a port of its choosing, pinned to the server core
/// with `nofile` descriptors; with `redis`, on the redis adapter. Returns
/// once it has said its port.
///
/// # Errors
///
/// When socket.io is not installed, or the node does not start within 10 s.
pub fn node(redis: Option<&str>, nofile: u64) -> Result<(Guard, SocketAddr)> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("socketio/server.js");
    let mut command = pinned(Core::Server, nofile, NODE);
    // Engine.IO's default heartbeat (a ping every 25 s), answered by the
    // load generator, as our server keeps its own.
    command.arg(script).env("NODE_PATH", modules()?);
    if let Some(redis) = redis {
        command.env("REDIS_URL", redis);
    }
    let (guard, _stdin, stdout) = Guard::spawn_piped("socket.io", command)?;
    let (tx, rx) = mpsc::channel();
    forward_lines(0, stdout, tx);
    let (_, line) = rx
        .recv_timeout(Duration::from_secs(10))
        .context("socket.io did not say its port within 10 s")?;
    let port: Value = serde_json::from_str(&line).with_context(|| format!("socket.io: {line}"))?;
    let Some(port) = port["port"].as_u64().and_then(|p| u16::try_from(p).ok()) else {
        bail!("socket.io: no port in {line}");
    };
    Ok((guard, SocketAddr::from(([127, 0, 0, 1], port))))
}

/// The socket.io event `name` with a JSON `payload`: `42["name",payload]`.
pub fn event(name: &str, payload: &str) -> String {
    format!("42[\"{name}\",{payload}]")
}

/// The payload of event `name` in a frame, as sent (`None` for any other frame).
pub fn payload_of<'a>(frame: &'a str, name: &str) -> Option<&'a str> {
    frame
        .strip_prefix("42[\"")?
        .strip_prefix(name)?
        .strip_prefix("\",")?
        .strip_suffix(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_framed_and_read_back() {
        let frame = event("join", "\"bench\"");
        assert_eq!(frame, r#"42["join","bench"]"#);
        assert_eq!(payload_of(&frame, "join"), Some("\"bench\""));
        assert_eq!(
            payload_of(r#"42["pub",{"n":1,"t":2}]"#, PUB_EVENT),
            Some(r#"{"n":1,"t":2}"#)
        );
        assert_eq!(payload_of(r#"42["joined","bench"]"#, PUB_EVENT), None);
        assert_eq!(payload_of("2", PUB_EVENT), None);
    }
}
