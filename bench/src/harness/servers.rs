//! Servers and the load generator as child processes: a server started on a
//! free loopback port and waited for until it accepts, the load generator
//! (`bench load ...`, this very binary) run on the load core with its one
//! JSON line read back, and a child's stdout forwarded line by line.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::procs::{Core, Guard, pinned};

/// How long a server may take to listen.
const LISTEN_WITHIN: Duration = Duration::from_secs(10);

/// A free loopback port, for a server that takes its address as a flag.
///
/// # Errors
///
/// When no port can be bound.
pub fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Spawns `command`, a server told to listen on `addr`, and waits until it
/// accepts a connection (at most 10 s).
///
/// # Errors
///
/// When it cannot start, exits first, or does not listen in time.
pub fn spawn_listening(name: &str, command: Command, addr: SocketAddr) -> Result<Guard> {
    let mut guard = Guard::spawn(name, command, false)?;
    let deadline = Instant::now() + LISTEN_WITHIN;
    while TcpStream::connect(addr).is_err() {
        if !guard.alive() {
            bail!("{name} exited before listening on {addr}");
        }
        if Instant::now() > deadline {
            bail!("{name} did not listen on {addr} within 10 s");
        }
        // Polls the port: nothing to wait on in another process.
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(guard)
}

/// Runs the load generator `bench load ARGS` pinned to the load core and
/// reads its one JSON line.
///
/// # Errors
///
/// When it fails or prints something else.
pub fn load_generator(bench: &Path, nofile: u64, args: &[String]) -> Result<Value> {
    let output = pinned(Core::Load, nofile, bench)
        .arg("load")
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .context("running the load generator")?;
    if !output.status.success() {
        bail!("the load generator failed ({}): {args:?}", output.status);
    }
    serde_json::from_slice(&output.stdout).context("the load generator's output")
}

/// Reads `stdout` line by line into `tx`, tagged with `i`, on a thread of its own.
pub fn forward_lines(i: usize, stdout: ChildStdout, tx: mpsc::Sender<(usize, String)>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((i, line)).is_err() {
                break;
            }
        }
    });
}

/// `GET path` on `addr` over plain HTTP/1.1, the whole answer (headers and
/// body) as text; `None` when the server does not answer within 10 s.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut tcp = TcpStream::connect(addr).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).ok()?;
    Some(text)
}
