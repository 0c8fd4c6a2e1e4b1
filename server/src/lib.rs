//! The WebSocket server: echo, timed and burst pushes, heartbeats, origin
//! checks and limits, a registry of clients with an admin API, and a graceful
//! shutdown that closes every client with 1001 and exits within
//! `--shutdown-timeout` whatever is open. Hostile clients are bounded by the
//! accept loop's timeouts (handshake, keep-alive, body), the WebSocket caps,
//! the per-client connect rate, the server-wide budget of bytes held in
//! unfinished messages, and in reliable mode the per-client session cap and
//! the total budget of history bytes.
//!
//! `main` parses [`Config`], binds the listener and calls [`run`]; tests start
//! the same `run` in-process on port 0 (through `testbed::TestServer`).
//!
//! Words: a *connection* is one WebSocket; a *session* is reliable mode's
//! resumable state, which outlives its connections; a *user* (token mode)
//! is a token's `sub`, which may hold many connections and sessions.
//!
//! Several nodes (`--redis-url`, see `cluster` and docs/CLUSTER.md) share
//! one Redis: each heartbeats a membership key with a TTL and mirrors its
//! connections there, so `GET /api/clients` on any node lists every live
//! node's connections, and a push, kick, user push or broadcast sent to any
//! node reaches the node holding the connection through that node's Redis
//! Stream (504 when it does not answer in time). `/readyz` answers 503 while
//! Redis is unreachable; plain connections are served throughout. Reliable
//! sessions then live in Redis (`reliable::RedisStore`): a client resumes
//! on any node, also after its node died; a resume on another node closes
//! the old connection with 4002; while Redis is unreachable reliable
//! connections close with 1013. Without
//! `--redis-url` none of this runs: one node, in memory, as before.
//!
//! Identities ([`auth`] has the details): by default the server assigns each
//! connection a random 128-bit id and refuses `?client_id=` (1008) unless
//! `--allow-client-ids` (development and tests: a self-chosen id is not
//! authentication). With `--jwt-secret`, `--jwt-secret-file` or
//! `--jwt-public-key` (token mode) every `/ws` and `/echo` connection needs a
//! valid JWT (`/echo` not with `--public-echo`); a refused one is upgraded
//! and closed at once with 4401 and its cause.
//!
//! # Layout
//!
//! | module | what |
//! |---|---|
//! | `config` | [`Config`]: every option with flag, env variable, default |
//! | `serve` | the accept loop: hyper with timeouts (handshake, keep-alive, body), host check, caps, graceful then hard shutdown; `link.rs` what an upgraded socket shares with its connection's task (the read gate, and direct writes of a channel's frames into an idle subscriber's socket) |
//! | `limits` | the descriptor limit, the WebSocket caps and the per-client connect rate |
//! | `partial` | `--max-partial-bytes`: the bytes of unfinished messages every connection holds, counted by the upgraded socket and charged beyond a small free allowance per connection |
//! | `peer` | the client address (`X-Forwarded-For` from `--trusted-proxy`), the `--allowed-host` list |
//! | `logsafe` | client-supplied strings escaped and truncated for the log |
//! | `routes` | the router, the upgrades and their typed query parameters |
//! | `origin` | the `Origin` check (same host, or `--allowed-origin`) |
//! | `connection/` | one `/ws` connection: `mod.rs` entry point and end reasons (close codes); `app.rs` the answer to echo, ping and burst for both modes; `driver.rs` reads, timers and the one dispatch; `reliable.rs` the link to a reliable session; `writer.rs` drains the outbound queue (`queue`), fed and flushed per batch. Driver and writer are generic over `Stream`/`Sink` and unit-tested on channels |
//! | `echo` | one `/echo` connection: raw RFC 6455 echo, replies fed and flushed per batch (at most `--send-queue-bytes` unflushed), the same pings and timeouts as `/ws` |
//! | `registry` | connected clients, pushes and kicks |
//! | `reliable/` | reliable mode: `session.rs` the `Session`, the only place that numbers, bounds and records a server message and filters client ones; `outcome.rs` the values in and out of it; `store.rs` the async `SessionStore` trait and its in-memory `MemoryStore` (caps in all and per client address, the age sweep); `redis_store/` `RedisStore`, the sessions in Redis (`--redis-url`): a write-through cache, one fenced Lua script per write (`scripts.rs`); `journal.rs` what changed since the last write; `choice.rs` `Store`, the one a server runs with; `budget.rs` the bytes of every history together against `--history-total-bytes` |
//! | [`auth`] (public) | identities: constant-time compares; `jwt.rs` token mode's [`auth::Verifier`] (HS256, RS256, ES256 with `jsonwebtoken`), the [`auth::TokenError`] that names a refusal, [`auth::mint_hs256`] for tests, the testbed and the `token` subcommand (a leaf: no imports from the crate) |
//! | `admin/` | the `/api` handlers (`mod.rs`); `local.rs` each operation on this node as an `Answer`, and the bearer-token guard; `cluster.rs` the same operations routed to the holding node or to every live node, answers summed |
//! | `cluster/` | scale-out on Redis (the `redis` crate's tokio `ConnectionManager`; why in its docs): `config.rs` [`ClusterConfig`]; `mod.rs` the `Node` and the key layout; `membership.rs` heartbeat and the registry's mirror; `command.rs` the per-node command streams and answers with a deadline |
//! | `queue` | a connection's outbound queue, bounded in messages and in bytes (`--send-queue-bytes`), and what it carries; the hub's sink for the connection's channels, which skips it for an idle connection |
//! | `timer` | a connection's timers: the idle deadline (pushed back by a clock read, not a timer reset per frame) and in token mode the token's expiry on the same timer, and the optional ticks |
//! | `metrics` | counters rendered at `/metrics` |
//! | `wire` | errors and messages mapped to frames and close codes |
//!
//! Imports go one way, with no cycle: `routes` → `admin`, `connection`,
//! `echo` → `state` → `cluster`, `registry`, `config` → `reliable` → `auth`;
//! `cluster` → `registry` → `queue` → `metrics`. The Redis session store
//! runs on the node through the `reliable::Backend` trait, which `cluster`
//! implements. The cluster runs the admin
//! module's local operations through an `Executor` closure handed to it at
//! start, not by importing `admin`.
//!
//! # Example
//!
//! ```no_run
//! use clap::Parser;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = server::Config::parse_from(["server", "--push-interval", "250ms"]);
//! let listener = server::bind("127.0.0.1:0".parse()?)?;
//! println!("listening on {}", listener.local_addr()?);
//! server::run(listener, config, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod admin;
pub mod auth;
pub mod channels;
mod clock;
mod cluster;
mod config;
mod connection;
mod duration;
mod echo;
mod error;
mod limits;
mod logsafe;
mod metrics;
mod origin;
mod partial;
mod peer;
mod queue;
mod registry;
mod reliable;
mod routes;
mod serve;
mod state;
mod timer;
mod wire;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use cluster::ClusterConfig;
pub use config::{Command, Config, FileError, LoadError, MIN_ADMIN_TOKEN_BYTES};
pub use duration::{MAX_DURATION, parse_duration};
pub use error::Error;

/// How many connections the kernel may hold completed but not yet accepted
/// (capped by `net.core.somaxconn`). The standard library's 128 overflows
/// under a burst of connects: the kernel then drops SYNs or resets, before
/// the server can even apply its limits.
pub const LISTEN_BACKLOG: u32 = 1024;

/// Binds `addr` for [`run`] with a listen backlog of [`LISTEN_BACKLOG`]
/// (and `SO_REUSEADDR`, so a restart does not wait for `TIME_WAIT`).
///
/// # Errors
///
/// The socket's errors: the address is taken or not available, say.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves until `shutdown` completes, then stops accepting, closes every
/// WebSocket with 1001 ("server shutting down") and lets HTTP requests
/// finish, waiting at most `--shutdown-timeout` in all; what is still open
/// then is dropped.
///
/// At start the soft descriptor limit is raised to the hard limit (the
/// default of `--max-connections` derives from it).
///
/// # Errors
///
/// [`Error::Auth`] at start when the token-mode flags are not usable (see
/// [`Config::verifier`]); [`Error::AdminTokenTooShort`] for an
/// `--admin-token` under 16 bytes. Accept failures (descriptors running out, say)
/// are retried, not returned. [`Error::Serve`] is kept for failures of the listener.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    config.check_admin_token()?;
    let auth = config.verifier()?.map(Arc::new);
    if let Some(verifier) = &auth {
        tracing::info!(
            algorithm = verifier.algorithm(),
            "token mode: every /ws connection needs a valid token"
        );
    }
    let cluster = match &config.cluster.redis_url {
        Some(url) => Some(Arc::new(cluster::Node::new(url, &config.cluster)?)),
        None => None,
    };
    let nofile = limits::raise_nofile_limit();
    let token = CancellationToken::new();
    let reliable = Arc::new(match &cluster {
        Some(node) => reliable::Store::Redis(reliable::RedisStore::new(
            node.clone(),
            config.reliable_limits(),
        )),
        None => reliable::Store::Memory(reliable::MemoryStore::new(config.reliable_limits())),
    });
    let channels = Arc::new(match &cluster {
        Some(node) => channels::service::Channels::redis(
            config.namespaces.clone(),
            node,
            config.publish_dedup_window,
            (
                config.cluster.cluster_heartbeat,
                config.cluster.cluster_node_ttl,
            ),
        ),
        None => channels::service::Channels::memory(
            config.namespaces.clone(),
            config.channel_history_bytes,
            config.publish_dedup_window,
        ),
    });
    channels.start(&token);
    let metrics = Arc::<metrics::Metrics>::default();
    let limits = Arc::new(limits::Limits::new(&config, nofile, metrics.clone()));
    let state = state::AppState {
        reliable: reliable.clone(),
        channels,
        auth,
        config: Arc::new(config),
        registry: Arc::default(),
        cluster: cluster.clone(),
        metrics: metrics.clone(),
        shutdown: token.clone(),
        connections: TaskTracker::new(),
    };
    let connections = state.connections.clone();
    let config = state.config.clone();
    let shutting = state.clone();
    tokio::spawn(sweep_sessions(reliable, token.clone()));
    let membership = cluster
        .as_ref()
        .map(|node| node.start(&state.registry, admin::executor(state.clone()), &token));
    let server = Arc::new(serve::Server::new(
        routes::router(state),
        &config,
        limits,
        metrics,
    ));
    let stop = token.clone();
    let watch = async move {
        tokio::select! {
            () = shutdown => {}
            () = stop.cancelled() => {}
        }
        tracing::info!("shutting down: closing every client with 1001");
        connection::shut_down(&shutting);
    };
    let (deadline, ()) = tokio::join!(
        serve::serve(listener, server, token.clone(), config.shutdown_timeout),
        watch
    );
    // The WebSockets got 1001 when the token was cancelled; they share the deadline.
    connections.close();
    if tokio::time::timeout_at(deadline, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "{} connection(s) still open after {:?}; exiting anyway",
            connections.len(),
            config.shutdown_timeout
        );
    }
    // Cluster mode: the node deletes its keys (it started when the token
    // was cancelled); at most a second more, else its TTL will.
    if let Some(membership) = membership {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), membership).await;
    }
    Ok(())
}

/// Forgets reliable sessions whose client stayed away for the TTL, and
/// evicts the history of clients that are away past `--history-max-age`,
/// on a timer: memory is freed without any client activity. Reclaims at
/// once when `--history-total-bytes` is passed.
async fn sweep_sessions(store: Arc<impl reliable::SessionStore>, stop: CancellationToken) {
    let limits = store.limits();
    let period = (limits.ttl.min(limits.history_max_age) / 4).clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(15),
    );
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = store.pressure() => {
                let freed = store.reclaim().await;
                if freed > 0 {
                    tracing::debug!("--history-total-bytes: evicted {freed} bytes of clients that are away");
                }
                // A reclaim visits every session: at most 100 a second,
                // however many messages meet the budget (the wake-ups
                // meanwhile are kept as one).
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            _ = tick.tick() => {
                let gone = store.sweep(std::time::Instant::now()).await;
                if gone > 0 {
                    tracing::debug!("forgot {gone} expired reliable session(s)");
                }
            }
        }
    }
}
