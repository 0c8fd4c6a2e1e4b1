//! The test server: the real `server` crate run in-process on `127.0.0.1:0`,
//! plus a control API on a second free port so that browser tests (which
//! cannot start processes) can stop, start and kick.
//!
//! Control API (CORS open, every route `POST`, 200 on success):
//!
//! | route | effect |
//! |---|---|
//! | `/stop` | graceful shutdown of the server (clients get 1001); the port stops accepting |
//! | `/start` | binds the same port again and starts a fresh server |
//! | `/kick/{client_id}?code=N&reason=R` | `DELETE /api/clients/{id}` on the server, with the admin token |
//! | `/proxy/budget?min=B&max=B&seed=S` | byte budgets of new connections through the fault proxy (`max` alone: no cuts), drawn from `seed` if given |
//! | `/proxy/hold?on=1` | the proxy refuses new connections (`on=0`: accepts again) |
//! | `/proxy/silent?on=1` | the proxy's path goes dead without a word: bytes both ways are swallowed, nothing is closed, new connections too (`on=0`: forwards again; see [`FaultProxy::silence`]) |
//! | `/proxy/swallowed` | the bytes swallowed by the silence so far, as text |
//! | `/proxy/cut` | cuts every connection through the proxy |
//! | `/proxy/cuts` | the number of cuts so far, as text |
//! | `/push/{client_id}?count=N` | once the client is gone from the server, N admin pushes to it (stored for its reliable session); the body says how many were stored |
//! | `/token?sub=U&ttl_ms=N` | a token of user `U` (default `alice`) for the token-mode server, valid `N` ms (default 60 000, rounded up to a second), as the body |
//! | `/auth/kick/{client_id}?code=N&reason=R` | `/kick` on the token-mode server |
//! | `/cluster/cut` | with the cluster ([`Testbed::start_with_cluster`]): cuts every connection through its round-robin proxy |
//! | `/cluster/last` | with the cluster: the index of the node the newest connection went to (`none` before any), as text |
//!
//! Besides the server the testbed runs a [`FaultProxy`] in front of it
//! (`proxy_base`), with no cuts until told, and a second server in token
//! mode (`auth_ws_base`) with the known secret [`TEST_JWT_SECRET`], whose
//! tokens the control API mints (`/token`).
//!
//! [`Testbed::start_with_cluster`] also starts a [`TestCluster`]: two nodes
//! on a `redis-server` behind a round-robin proxy (`cluster_base`), for the
//! browser's reliable socket across nodes.
//!
//! `cargo xtask test` hands the addresses to the wasm browser tests at compile
//! time through `BUFFERED_SOCKET_TEST_WS`, `BUFFERED_SOCKET_TEST_PROXY`,
//! `BUFFERED_SOCKET_TEST_WS_AUTH`, `BUFFERED_SOCKET_TEST_CLUSTER` and
//! `BUFFERED_SOCKET_TEST_CONTROL`;
//! native end-to-end tests start a [`Testbed`] themselves.
//!
//! # One test toolkit
//!
//! [`TestServer`] is the one helper that starts the server on a free port:
//! the [`Testbed`] runs its server through it, and so do the server's own
//! integration tests (testbed is their dev-dependency), the fault-injection
//! tests and the load generator's tests. It lives here rather than in a
//! `server::testing` module behind a feature because it needs nothing of the
//! server's internals (only `server::run` and `server::Config`, as any user),
//! so the server library carries no test-only code or feature, and every
//! crate's tests get it from the crate that already exists to run the server
//! for tests.
//!
//! | module | what |
//! |---|---|
//! | `test_server` | [`TestServer`], [`config`], [`quiet_config`] |
//! | `tokens` | token mode: [`token_config`], [`mint_token`], [`TEST_JWT_SECRET`] |
//! | `proxy` | [`FaultProxy`]: cuts connections after a random number of bytes, or goes silent (a dead path: nothing forwarded, nothing closed); in front of several nodes, sends each new connection to the next (round robin) |
//! | `tls` | [`TlsFront`]: `wss://` in front of a server, with a CA and a certificate made at start, for the native wrapper's TLS tests |
//! | `cluster` | [`TestCluster`]: nodes in-process on one Redis behind a round-robin proxy |
//! | `node` | [`NodeProcess`]: the server binary as a child process on a free port, for a real SIGKILL |
//! | `redis` | [`RedisServer`]: `redis-server` on a free port without persistence, for the cluster tests; stop and restart on the same port |
//! | `lib.rs` | [`Testbed`] and its control API |
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let server = testbed::TestServer::start(testbed::quiet_config(&["--max-burst", "10"])?).await?;
//! println!("connect to {}", server.ws_url("/ws"));
//! server.shutdown().await?;
//!
//! let testbed = testbed::Testbed::start(None).await?;
//! println!("connect to {}/ws", testbed.ws_base);
//! testbed.shutdown().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod cluster;
mod node;
mod proxy;
mod redis;
mod test_server;
mod tls;
mod tokens;

pub use cluster::TestCluster;
pub use node::NodeProcess;
pub use proxy::{FaultProxy, Faults};
pub use redis::RedisServer;
pub use test_server::{TestServer, config, config_with_namespaces, quiet_config};
pub use tls::TlsFront;
pub use tokens::{TEST_JWT_SECRET, mint_token, token_config, try_mint_token, try_mint_token_until};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::extract::{Path as UrlPath, Query, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running server and control API; [`Testbed::shutdown`] stops both.
pub struct Testbed {
    /// `ws://127.0.0.1:PORT` of the server.
    pub ws_base: String,
    /// `http://127.0.0.1:PORT` of the server.
    pub http_base: String,
    /// `http://127.0.0.1:PORT` of the control API.
    pub control_base: String,
    /// `ws://127.0.0.1:PORT` of the fault proxy in front of the server.
    pub proxy_base: String,
    /// `ws://127.0.0.1:PORT` of the second server, in token mode
    /// ([`TEST_JWT_SECRET`]; the control API's `/token` mints its tokens).
    pub auth_ws_base: String,
    /// `ws://127.0.0.1:PORT` of the cluster's round-robin proxy, with
    /// [`Testbed::start_with_cluster`].
    pub cluster_base: Option<String>,
    control: Arc<Control>,
    stop_control: CancellationToken,
    control_task: JoinHandle<()>,
}

struct Control {
    addr: SocketAddr,
    config: server::Config,
    admin_token: String,
    running: Mutex<Option<TestServer>>,
    /// The token-mode server (stopped only by [`Testbed::shutdown`]).
    auth: Mutex<Option<TestServer>>,
    auth_addr: SocketAddr,
    http: reqwest::Client,
    proxy: FaultProxy,
    /// Taken by [`Testbed::shutdown`].
    cluster: Mutex<Option<TestCluster>>,
}

impl Testbed {
    /// Starts the server on a free loopback port, serving `static_dir` at `/` if given.
    ///
    /// # Errors
    ///
    /// When a port cannot be bound.
    pub async fn start(static_dir: Option<&Path>) -> Result<Self> {
        Self::start_inner(static_dir, false).await
    }

    /// [`Testbed::start`] plus a [`TestCluster`] of two nodes (same origin
    /// and admin settings) on a `redis-server` of its own (`cluster_base`).
    ///
    /// # Errors
    ///
    /// As [`Testbed::start`], and when Redis does not start.
    pub async fn start_with_cluster(static_dir: Option<&Path>) -> Result<Self> {
        Self::start_inner(static_dir, true).await
    }

    async fn start_inner(static_dir: Option<&Path>, with_cluster: bool) -> Result<Self> {
        let admin_token = format!("{:032x}", rand::random::<u128>());
        let dir = static_dir.map(|dir| dir.to_string_lossy().into_owned());
        let mut args = vec![
            "--allowed-origin",
            "*",
            "--admin-token",
            &admin_token,
            "--shutdown-timeout",
            "2s",
            // Small, so that a browser test can overflow it cheaply.
            "--history-max",
            "200",
        ];
        if let Some(dir) = &dir {
            args.extend(["--static-dir", dir]);
        }
        let config = config(&args).context("testbed server config")?;
        let auth_args = [
            "--allowed-origin",
            "*",
            "--admin-token",
            &admin_token,
            "--shutdown-timeout",
            "2s",
        ];
        let auth_config = token_config(&auth_args).context("testbed token-mode server config")?;
        let auth = TestServer::start(auth_config).await?;
        let auth_addr = auth.addr;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let proxy = FaultProxy::start(addr, Faults::none()).await?;
        let proxy_base = format!("ws://{}", proxy.addr);
        let cluster = if with_cluster {
            let args = [
                "--allowed-origin",
                "*",
                "--admin-token",
                &admin_token,
                "--shutdown-timeout",
                "2s",
            ];
            Some(TestCluster::start(2, &args).await?)
        } else {
            None
        };
        let cluster_base = cluster.as_ref().map(TestCluster::ws_base);
        let control = Arc::new(Control {
            addr,
            config,
            admin_token,
            running: Mutex::new(None),
            auth: Mutex::new(Some(auth)),
            auth_addr,
            http: reqwest::Client::new(),
            proxy,
            cluster: Mutex::new(cluster),
        });
        control.spawn_server(listener).await?;

        let control_listener = TcpListener::bind("127.0.0.1:0").await?;
        let control_addr = control_listener.local_addr()?;
        let stop_control = CancellationToken::new();
        let app = Router::new()
            .route("/stop", post(stop))
            .route("/start", post(start))
            .route("/kick/{id}", post(kick))
            .route("/proxy/budget", post(proxy_budget))
            .route("/proxy/hold", post(proxy_hold))
            .route("/proxy/silent", post(proxy_silent))
            .route("/proxy/swallowed", post(proxy_swallowed))
            .route("/proxy/cut", post(proxy_cut))
            .route("/proxy/cuts", post(proxy_cuts))
            .route("/push/{id}", post(push_while_away))
            .route("/token", post(token))
            .route("/auth/kick/{id}", post(auth_kick))
            .route("/cluster/cut", post(cluster_cut))
            .route("/cluster/last", post(cluster_last))
            .layer(axum::middleware::map_response(allow_any_origin))
            .with_state(control.clone());
        let token = stop_control.clone();
        let control_task = tokio::spawn(async move {
            let serve =
                axum::serve(control_listener, app).with_graceful_shutdown(token.cancelled_owned());
            if let Err(err) = serve.await {
                eprintln!("testbed: control API failed: {err}");
            }
        });
        Ok(Self {
            ws_base: format!("ws://{addr}"),
            http_base: format!("http://{addr}"),
            control_base: format!("http://{control_addr}"),
            proxy_base,
            auth_ws_base: format!("ws://{auth_addr}"),
            cluster_base,
            control,
            stop_control,
            control_task,
        })
    }

    /// Stops the server gracefully (clients get 1001); `Ok(false)` if it was stopped already.
    ///
    /// # Errors
    ///
    /// When the server ended with an error.
    pub async fn stop_server(&self) -> Result<bool> {
        self.control.stop_server().await
    }

    /// Starts the server again on the same port; `Ok(false)` if it was running.
    ///
    /// # Errors
    ///
    /// When the port cannot be bound again within a few seconds.
    pub async fn start_server(&self) -> Result<bool> {
        self.control.start_server().await
    }

    /// The admin API's bearer token.
    pub fn admin_token(&self) -> &str {
        &self.control.admin_token
    }

    /// Stops the control API and the server, waiting for both.
    ///
    /// # Errors
    ///
    /// When the server ended with an error.
    pub async fn shutdown(self) -> Result<()> {
        self.stop_control.cancel();
        let _ = self.control_task.await;
        let auth = self.control.auth.lock().await.take();
        let auth = match auth {
            Some(auth) => auth.shutdown().await,
            None => Ok(()),
        };
        self.control.stop_server().await?;
        if let Some(cluster) = self.control.cluster.lock().await.take() {
            cluster.shutdown().await?;
        }
        auth
    }
}

impl Control {
    async fn spawn_server(&self, listener: TcpListener) -> Result<()> {
        let server = TestServer::serve(listener, self.config.clone())?;
        *self.running.lock().await = Some(server);
        Ok(())
    }

    /// Stops the server; `Ok(false)` when it was not running.
    async fn stop_server(&self) -> Result<bool> {
        let Some(running) = self.running.lock().await.take() else {
            return Ok(false);
        };
        running.shutdown().await?;
        Ok(true)
    }

    /// Starts the server on the same port; `Ok(false)` when it was running.
    async fn start_server(&self) -> Result<bool> {
        if self.running.lock().await.is_some() {
            return Ok(false);
        }
        // The port was ours a moment ago; a short retry covers the kernel
        // finishing with the old socket.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match server::bind(self.addr) {
                Ok(listener) => break listener,
                Err(err) if tokio::time::Instant::now() < deadline => {
                    eprintln!("testbed: rebinding {}: {err}; retrying", self.addr);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => bail!("could not bind {} again: {err}", self.addr),
            }
        };
        self.spawn_server(listener).await?;
        Ok(true)
    }
}

type Reply = (StatusCode, String);

fn failed(err: impl std::fmt::Display) -> Reply {
    (StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
}

async fn stop(State(control): State<Arc<Control>>) -> Reply {
    match control.stop_server().await {
        Ok(true) => (StatusCode::OK, "stopped".into()),
        Ok(false) => (StatusCode::CONFLICT, "the server is not running".into()),
        Err(err) => failed(err),
    }
}

async fn start(State(control): State<Arc<Control>>) -> Reply {
    match control.start_server().await {
        Ok(true) => (StatusCode::OK, "started".into()),
        Ok(false) => (StatusCode::CONFLICT, "the server is already running".into()),
        Err(err) => failed(err),
    }
}

async fn kick(
    State(control): State<Arc<Control>>,
    UrlPath(id): UrlPath<String>,
    RawQuery(query): RawQuery,
) -> Reply {
    forward_kick(&control, control.addr, &id, query).await
}

async fn auth_kick(
    State(control): State<Arc<Control>>,
    UrlPath(id): UrlPath<String>,
    RawQuery(query): RawQuery,
) -> Reply {
    forward_kick(&control, control.auth_addr, &id, query).await
}

/// A token for the token-mode server: `sub` (default `alice`), valid
/// `ttl_ms` (default 60 s).
async fn token(Query(query): Query<HashMap<String, String>>) -> Reply {
    let sub = query.get("sub").map_or("alice", String::as_str);
    let ttl = Duration::from_millis(query_u64(&query, "ttl_ms").unwrap_or(60_000));
    match try_mint_token(sub, ttl) {
        Ok(token) => (StatusCode::OK, token),
        Err(err) => failed(err),
    }
}

/// `DELETE /api/clients/{id}` (with `query`) on the server at `addr`.
async fn forward_kick(
    control: &Control,
    addr: SocketAddr,
    id: &str,
    query: Option<String>,
) -> Reply {
    let mut url = format!("http://{addr}/api/clients/{id}");
    if let Some(query) = query {
        url.push('?');
        url.push_str(&query);
    }
    let response = control
        .http
        .delete(url)
        .bearer_auth(&control.admin_token)
        .send()
        .await;
    match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            (
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                body,
            )
        }
        Err(err) => failed(err),
    }
}

fn query_u64(query: &HashMap<String, String>, key: &str) -> Option<u64> {
    query.get(key).and_then(|v| v.parse().ok())
}

async fn proxy_budget(
    State(control): State<Arc<Control>>,
    Query(query): Query<HashMap<String, String>>,
) -> Reply {
    let max = query_u64(&query, "max").unwrap_or(u64::MAX);
    let min = query_u64(&query, "min").unwrap_or(max);
    if let Some(seed) = query_u64(&query, "seed") {
        control.proxy.reseed(seed);
    }
    control.proxy.set_budget(min, max);
    (StatusCode::OK, format!("budget {min}..={max}"))
}

async fn proxy_hold(
    State(control): State<Arc<Control>>,
    Query(query): Query<HashMap<String, String>>,
) -> Reply {
    let on = query.get("on").is_none_or(|v| v != "0");
    control.proxy.hold(on);
    (StatusCode::OK, format!("holding {on}"))
}

/// `on=0` ends the silence; anything else (or nothing) starts it.
async fn proxy_silent(
    State(control): State<Arc<Control>>,
    Query(query): Query<HashMap<String, String>>,
) -> Reply {
    let on = query.get("on").is_none_or(|v| v != "0");
    control.proxy.silence(on);
    (StatusCode::OK, format!("silent {on}"))
}

async fn proxy_swallowed(State(control): State<Arc<Control>>) -> Reply {
    (StatusCode::OK, control.proxy.swallowed().to_string())
}

async fn proxy_cut(State(control): State<Arc<Control>>) -> Reply {
    control.proxy.cut_all();
    (StatusCode::OK, "cut".into())
}

async fn proxy_cuts(State(control): State<Arc<Control>>) -> Reply {
    (StatusCode::OK, control.proxy.cuts().to_string())
}

const NO_CLUSTER: Reply = (StatusCode::NOT_FOUND, String::new());

async fn cluster_cut(State(control): State<Arc<Control>>) -> Reply {
    match &*control.cluster.lock().await {
        Some(cluster) => {
            cluster.proxy.cut_all();
            (StatusCode::OK, "cut".into())
        }
        None => NO_CLUSTER,
    }
}

async fn cluster_last(State(control): State<Arc<Control>>) -> Reply {
    match &*control.cluster.lock().await {
        Some(cluster) => (
            StatusCode::OK,
            cluster
                .proxy
                .last_upstream()
                .map_or_else(|| "none".into(), |i| i.to_string()),
        ),
        None => NO_CLUSTER,
    }
}

/// Waits (10 s at most) until the server no longer lists `id`, then pushes
/// `count` times to it through the admin API; answers how many were stored.
async fn push_while_away(
    State(control): State<Arc<Control>>,
    UrlPath(id): UrlPath<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Reply {
    let count = query_u64(&query, "count").unwrap_or(1);
    let api = format!("http://{}/api/clients", control.addr);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let listed = match control
            .http
            .get(&api)
            .bearer_auth(&control.admin_token)
            .send()
            .await
        {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(err) => return failed(err),
        };
        if !listed.contains(&format!("\"id\":\"{id}\"")) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return (StatusCode::CONFLICT, format!("{id} is still connected"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut stored = 0;
    for n in 1..=count {
        let response = control
            .http
            .post(format!("{api}/{id}/push"))
            .bearer_auth(&control.admin_token)
            .body(format!("while away {n}"))
            .send()
            .await;
        match response {
            Ok(response) if response.status() == StatusCode::ACCEPTED => stored += 1,
            Ok(response) => {
                return (
                    StatusCode::CONFLICT,
                    format!("push {n} got {}", response.status()),
                );
            }
            Err(err) => return failed(err),
        }
    }
    (StatusCode::OK, stored.to_string())
}

async fn allow_any_origin(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}
