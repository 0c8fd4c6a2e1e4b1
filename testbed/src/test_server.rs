//! [`TestServer`]: the ONE helper that runs the real server in-process on a
//! free loopback port. The server's integration tests, the testbed's control
//! API, the fault-injection tests and the load generator's tests all start
//! the server through it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long [`TestServer::shutdown`] waits for the server to stop.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// The server's configuration from command-line `args` (without the program
/// name), as `server --help` documents them, with `--allow-client-ids` on:
/// tests choose their clients' ids. `args` may turn it off again with
/// `--allow-client-ids=false` (anonymous mode as deployed, and token mode,
/// which refuses the flag).
///
/// # Errors
///
/// When an argument is unknown or its value invalid.
pub fn config(args: &[&str]) -> Result<server::Config> {
    server::Config::try_parse_from(
        ["server", "--allow-client-ids"]
            .into_iter()
            .chain(args.iter().copied()),
    )
    .context("server configuration")
}

/// [`config`] for tests that count what they receive: timed pushes and
/// WebSocket pings off (unless `args` turn them on again) and no UI.
///
/// # Errors
///
/// As [`config`].
pub fn quiet_config(args: &[&str]) -> Result<server::Config> {
    let mut all = vec![
        "--push-interval",
        "0",
        "--ping-interval",
        "0",
        "--static-dir",
        "/nonexistent",
    ];
    all.extend_from_slice(args);
    config(&all)
}

/// [`quiet_config`] with the channel namespaces of `toml` (the config
/// file's `[default_namespace]` and `[[namespace]]` sections), read by the
/// server's own `--config` loader from a file written for the purpose.
///
/// # Errors
///
/// As [`config`], and when the file cannot be written or is refused.
pub fn config_with_namespaces(toml: &str, args: &[&str]) -> Result<server::Config> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(
        "testbed-namespaces-{}-{n}.toml",
        std::process::id()
    ));
    std::fs::write(&path, toml).context("writing the namespaces' config file")?;
    let path_arg = path.to_string_lossy().into_owned();
    let mut all = vec![
        "server",
        "--allow-client-ids",
        "--push-interval",
        "0",
        "--ping-interval",
        "0",
        "--static-dir",
        "/nonexistent",
        "--config",
        &path_arg,
    ];
    all.extend_from_slice(args);
    let loaded = server::Config::load_from(all);
    let _ = std::fs::remove_file(&path);
    loaded.context("server configuration with namespaces")
}

/// The real server running in this process; stopped gracefully by
/// [`TestServer::shutdown`], or abruptly (its shutdown signal fired, nothing
/// awaited) when dropped.
#[derive(Debug)]
pub struct TestServer {
    /// Where it listens (`127.0.0.1:PORT`).
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), server::Error>>>,
}

impl TestServer {
    /// Starts the server with `config` on a free port of `127.0.0.1`.
    ///
    /// # Errors
    ///
    /// When no port can be bound.
    pub async fn start(config: server::Config) -> Result<Self> {
        let listener = server::bind(([127, 0, 0, 1], 0).into()).context("binding a free port")?;
        Self::serve(listener, config)
    }

    /// Starts the server with `config` on `listener` (to serve a port again
    /// after a stop, say).
    ///
    /// # Errors
    ///
    /// When the listener has no local address.
    pub fn serve(listener: TcpListener, config: server::Config) -> Result<Self> {
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(server::run(
            listener,
            config,
            stop.clone().cancelled_owned(),
        ));
        Ok(Self {
            addr,
            stop,
            task: Some(task),
        })
    }

    /// `ws://127.0.0.1:PORT{path}`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Triggers the graceful shutdown (every client gets 1001) and waits for
    /// the server to return.
    ///
    /// # Errors
    ///
    /// When the server failed, panicked or did not stop within ten seconds.
    pub async fn shutdown(mut self) -> Result<()> {
        self.stop.cancel();
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        tokio::time::timeout(SHUTDOWN_DEADLINE, task)
            .await
            .context("the server did not stop in time")?
            .context("the server task panicked")?
            .context("the server failed")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
