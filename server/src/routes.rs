//! The HTTP surface: routes, the origin check and the upgrades.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{DefaultBodyLimit, Extension, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use tower_http::services::{ServeDir, ServeFile};

use serde::{Deserialize, Deserializer};
use shared::close_code;

use crate::metrics::Rejection;
use crate::partial::PartialMeter;
use crate::reliable::SessionStore;
use crate::state::AppState;
use crate::{admin, connection, echo, origin};

const NO_UI: &str = "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Server</title></head>\
<body><h1>Welcome to the server!</h1><p>The UI is not built. Run <code>cargo xtask run</code>, or \
<code>trunk build --release</code> at the project root and start the server with \
<code>--static-dir dist</code>. The WebSocket endpoints are <code>/ws</code> and <code>/echo</code>.</p></body></html>";

/// The whole router.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/clients", get(admin::list))
        .route("/clients/{id}", delete(admin::kick))
        .route("/clients/{id}/push", post(admin::push))
        .route("/users/{user}", delete(admin::kick_user))
        .route("/users/{user}/push", post(admin::push_user))
        .route("/broadcast", post(admin::broadcast))
        .route("/channels", get(admin::channels::list))
        .route(
            "/channels/{channel}/publish",
            post(admin::channels::publish),
        )
        .route("/channels/{channel}/history", get(admin::channels::history))
        .route(
            "/channels/{channel}/presence",
            get(admin::channels::presence),
        )
        .route(
            "/channels/{channel}/presence_stats",
            get(admin::channels::presence_stats),
        )
        .route(
            "/channels/{channel}/subscribers/{client_id}",
            delete(admin::channels::unsubscribe),
        )
        // Push and broadcast bodies: 413 beyond --max-push-size (0: none).
        .layer(match state.config.max_push_size {
            0 => DefaultBodyLimit::disable(),
            max => DefaultBodyLimit::max(max),
        })
        .layer(axum::middleware::from_fn_with_state(
            (
                state.clone(),
                std::sync::Arc::new(admin::Lockout::default()),
            ),
            admin::require_token,
        ));
    let router = Router::new()
        .route("/ws", get(ws))
        .route("/echo", get(echo))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api", api);
    let index = state.config.static_dir.join("index.html");
    let router = if index.is_file() {
        router.fallback_service(
            ServeDir::new(&state.config.static_dir).fallback(ServeFile::new(index)),
        )
    } else {
        tracing::warn!(
            "no UI in {}: serving a welcome page at /",
            state.config.static_dir.display()
        );
        router.route("/", get(|| async { Html(NO_UI) }))
    };
    router.with_state(state)
}

/// `/readyz`: 200 while this node can do everything it offers; in cluster
/// mode 503 while Redis is unreachable (plain connections are still
/// served, and `/healthz` stays 200), so a load balancer can send new
/// clients elsewhere. Always 200 on a single node.
async fn readyz(State(state): State<AppState>) -> Response {
    match &state.cluster {
        Some(node) if !node.is_up() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: Redis is unreachable",
        )
            .into_response(),
        _ => "ready".into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        format!(
            "{}{}{}# HELP ws_reliable_sessions Reliable sessions held (connected or waiting for a resume).\n\
             # TYPE ws_reliable_sessions gauge\nws_reliable_sessions {}\n\
             # HELP ws_reliable_history_bytes Bytes of every reliable session's history of unacknowledged messages (bounded by --history-total-bytes).\n\
             # TYPE ws_reliable_history_bytes gauge\nws_reliable_history_bytes {}\n",
            state.metrics.render(),
            state.channels.render_metrics(),
            state
                .cluster
                .as_ref()
                .map(|node| node.render_metrics())
                .unwrap_or_default(),
            state.reliable.len().await,
            state.reliable.history_bytes().await
        ),
    )
        .into_response()
}

/// Checks the origin and that this is an upgrade at all.
fn admit(
    state: &AppState,
    headers: &HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, Box<Response>> {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
    };
    if !origin::allowed(
        header(header::ORIGIN),
        header(header::HOST),
        &state.config.allowed_origins,
    ) {
        state.metrics.reject(Rejection::Origin);
        let origin = headers
            .get(header::ORIGIN)
            .map_or(&b""[..], |v| v.as_bytes());
        tracing::info!(
            origin = %crate::logsafe::escape_bytes(origin),
            "refused an upgrade from a foreign origin"
        );
        return Err(Box::new(
            (
                StatusCode::FORBIDDEN,
                "origin not allowed: start the server with --allowed-origin to allow it",
            )
                .into_response(),
        ));
    }
    upgrade.map_err(|rejection| {
        state.metrics.reject(Rejection::NotUpgrade);
        Box::new(
            (
                StatusCode::UPGRADE_REQUIRED,
                [(header::UPGRADE, "websocket")],
                format!(
                    "this endpoint speaks WebSocket; connect with a WebSocket client ({rejection})"
                ),
            )
                .into_response(),
        )
    })
}

/// Bytes collected before tungstenite writes to the socket (its default, 128 KiB,
/// would hold a lot of memory per busy connection; 0 writes every frame alone).
const WRITE_BUFFER: usize = 8 * 1024;

/// tungstenite's read buffer on `/ws`, allocated up front and held for the
/// connection's life: small, so that an idle connection is cheap. Reads still
/// take up to `--read-buffer` bytes per syscall (the socket reads ahead, see
/// `serve::io`); a larger frame grows the buffer while it is read.
const WS_READ_BUFFER: usize = 512;

/// tungstenite's read buffer for a `/ws` connection: [`WS_READ_BUFFER`],
/// or `--read-buffer` when that is smaller.
fn ws_read_buffer(state: &AppState) -> usize {
    WS_READ_BUFFER.min(state.config.read_buffer)
}

fn configure(
    upgrade: WebSocketUpgrade,
    read_buffer: usize,
    max_message: usize,
) -> WebSocketUpgrade {
    upgrade
        .read_buffer_size(read_buffer)
        // Frames collect up to this size before a write, so a fed batch goes
        // out in few syscalls; the buffer is empty on an idle connection.
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(max_message)
        .max_frame_size(max_message)
}

/// Completes the upgrade and closes at once with `code` and `reason`,
/// before any welcome: a browser cannot read the status of a refused
/// handshake (it sees 1006 whatever the cause), but it reads a close frame.
fn refuse(
    upgrade: WebSocketUpgrade,
    state: &AppState,
    code: u16,
    reason: &'static str,
) -> Response {
    let connections = state.connections.clone();
    // Nothing is read but the close reply: small frames only.
    configure(upgrade, ws_read_buffer(state), 1024).on_upgrade(move |socket| {
        connections.track_future(connection::refuse(socket, code, reason))
    })
}

/// The query of `GET /ws`.
#[derive(Debug, Deserialize)]
struct WsQuery {
    /// `?client_id=`: 1 to 128 bytes, only with `--allow-client-ids`;
    /// assigned when absent.
    client_id: Option<String>,
    /// `?burst=N`: pushes right after the welcome.
    burst: Option<u32>,
    /// Token mode: `?token=` (browsers cannot set an `Authorization`
    /// header on a WebSocket). Never logged.
    token: Option<String>,
    /// `?reliable=1` (or `true`; `0`, `false` or absent: off).
    #[serde(default, deserialize_with = "flag")]
    reliable: bool,
    /// `?protocol=N`: the newest version the client speaks. Never refused:
    /// a missing or invalid one gets version 1 ([`shared::Protocol::negotiate`]).
    protocol: Option<String>,
}

/// `1`/`true` or `0`/`false`.
fn flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    match String::deserialize(deserializer)?.as_str() {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(serde::de::Error::custom("reliable must be 1 or 0")),
    }
}

/// Token mode: who the upgrade's token (`?token=`, else `Authorization:
/// Bearer`) says the client is; `Ok(None)` in anonymous mode.
///
/// # Errors
///
/// The refusal's reason, for the 4401 close (counted in
/// `ws_rejected_upgrades_total{reason="token"}`).
fn identify(
    state: &AppState,
    token: Option<&str>,
    headers: &HeaderMap,
) -> Result<Option<crate::auth::Identity>, &'static str> {
    let Some(verifier) = &state.auth else {
        return Ok(None);
    };
    let given = token.or_else(|| {
        crate::auth::bearer(
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        )
    });
    verifier
        .verify(given.unwrap_or_default())
        .map(Some)
        .map_err(|refused| {
            state.metrics.reject(Rejection::Token);
            refused.reason()
        })
}

/// The connection's meter of unfinished messages (`--max-partial-bytes`),
/// put in the request's extensions by the accept loop; `None` for a router
/// served some other way, whose connections are then not counted.
type Partial = Option<Extension<std::sync::Arc<PartialMeter>>>;

/// The socket's link (its read gate and direct writes, see `serve::link`),
/// put in the request's extensions by the accept loop; `None` for a router
/// served some other way, whose connections then poll their read side at
/// every turn and are written to only by their own task.
type Link = Option<Extension<std::sync::Arc<crate::serve::SocketLink>>>;

async fn ws(
    State(state): State<AppState>,
    // The client's address (behind a --trusted-proxy, from X-Forwarded-For).
    crate::peer::ClientAddr(remote_addr): crate::peer::ClientAddr,
    query: Result<Query<WsQuery>, QueryRejection>,
    headers: HeaderMap,
    (partial, link): (Partial, Link),
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match admit(&state, &headers, upgrade) {
        Ok(upgrade) => upgrade,
        Err(response) => return *response,
    };
    let query = match query {
        Ok(Query(query)) => query,
        // Its text names the parameter: "burst: invalid digit", say.
        Err(rejection) => return (StatusCode::BAD_REQUEST, rejection.body_text()).into_response(),
    };
    let id = match query.client_id {
        Some(_) if !state.config.allow_client_ids => {
            state.metrics.reject(Rejection::ClientId);
            return refuse(
                upgrade,
                &state,
                close_code::POLICY_VIOLATION,
                connection::end::CLIENT_ID_REFUSED,
            );
        }
        Some(id) if id.is_empty() || id.len() > 128 => {
            return (
                StatusCode::BAD_REQUEST,
                "client_id must have 1 to 128 bytes",
            )
                .into_response();
        }
        Some(id) => id,
        None => state.registry.assign_id(),
    };
    // Token mode: a refused token closes with 4401 and the cause, before
    // anything of the application.
    let identity = match identify(&state, query.token.as_deref(), &headers) {
        Ok(identity) => identity,
        Err(reason) => return refuse(upgrade, &state, close_code::UNAUTHORIZED, reason),
    };
    let (burst, reliable) = (query.burst, query.reliable);
    let protocol = shared::Protocol::negotiate(query.protocol.as_deref());
    let max = state.config.max_message_size;
    let connections = state.connections.clone();
    let read_buffer = ws_read_buffer(&state);
    configure(upgrade, read_buffer, max).on_upgrade(move |socket| {
        connections.track_future(connection::run(
            socket,
            state,
            connection::Peer {
                id,
                remote_addr,
                burst,
                reliable,
                protocol,
                identity,
                partial: partial.map(|Extension(meter)| meter),
                link: link.map(|Extension(link)| link),
            },
        ))
    })
}

/// The query of `GET /echo`: other parameters are ignored.
#[derive(Debug, Deserialize)]
struct EchoQuery {
    /// Token mode without `--public-echo`: `?token=`, as on `/ws`. Never logged.
    token: Option<String>,
}

async fn echo(
    State(state): State<AppState>,
    query: Result<Query<EchoQuery>, QueryRejection>,
    headers: HeaderMap,
    partial: Partial,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match admit(&state, &headers, upgrade) {
        Ok(upgrade) => upgrade,
        Err(response) => return *response,
    };
    // Token mode: /echo's 16 MiB messages are the costliest thing an
    // anonymous client could use, so it needs a token as /ws does, unless
    // --public-echo. A query that does not parse carries no token.
    if !state.config.public_echo {
        let token = query.as_ref().ok().and_then(|q| q.0.token.as_deref());
        if let Err(reason) = identify(&state, token, &headers) {
            return refuse(upgrade, &state, close_code::UNAUTHORIZED, reason);
        }
    }
    let max = state.config.echo_max_message_size;
    let connections = state.connections.clone();
    let partial = partial.map(|Extension(meter)| meter);
    configure(upgrade, state.config.read_buffer, max)
        .on_upgrade(move |socket| connections.track_future(echo::run(socket, state, partial)))
}
