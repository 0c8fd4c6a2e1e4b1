//! The accept loop: hyper's HTTP/1 connection builder with a timer on every
//! accepted TCP connection, serving the axum router with upgrades.
//!
//! `axum::serve` has no timer and no limits: a request whose headers drip in
//! one byte at a time was held forever, a half-sent request held the process
//! at shutdown, and descriptors could run out. Here each connection gets:
//!
//! - TCP_NODELAY (small writes, pongs and echoes, must not wait for Nagle);
//! - the handshake and keep-alive deadlines of [`io`], and the body deadline
//!   of [`body`] (408);
//! - the `--allowed-host` check (403) and the client address of `peer`
//!   (`ConnectInfo<SocketAddr>` stays the TCP peer; [`ClientAddr`] is the client);
//! - for a WebSocket upgrade, a [`Slot`](crate::limits::Slot) under the caps
//!   (503) and the connect rate (429), held as long as the socket, and a
//!   [`PartialMeter`] that charges `--max-partial-bytes` for the message in
//!   progress (the socket counts, the handler gets it as a request
//!   extension for the connection's task, which empties it per message).
//!
//! Accept errors never end the loop: when descriptors run out (EMFILE,
//! ENFILE) it backs off briefly and retries, counting them in
//! `accept_errors_total`. At shutdown it stops accepting, asks every
//! connection to finish gracefully and drops what is left at the deadline.
//!
//! | module | what |
//! |---|---|
//! | `io` | the socket wrapper that times the phases between requests |
//! | `link` | what an upgraded socket shares with its connection's task: the read gate and direct writes |
//! | `body` | the request body with a deadline |

mod body;
mod io;
mod link;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service as _;

use crate::config::Config;
use crate::limits::{CAP_RETRY_AFTER, HttpSlot, Limits, Refusal};
use crate::logsafe;
use crate::metrics::{Dropped, Metrics};
use crate::partial::{PartialBudget, PartialMeter};
use crate::peer::{ClientAddr, Hosts, Proxies, host_of};

use self::body::DeadlineBody;
use self::io::{ConnShared, TimedIo, Timeouts, Upgrade};
pub(crate) use self::link::{DIRECT_MAX, SocketLink, Wrote};

/// How long accept waits before retrying after a failure (descriptors out).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Refused upgrades are logged at warn level at most once per this period.
const REFUSAL_WARNING_PERIOD: Duration = Duration::from_secs(10);

/// What every connection of one server shares.
pub struct Server {
    router: Router,
    limits: Arc<Limits>,
    /// `--max-partial-bytes`, charged by every upgraded socket's meter.
    partial: Arc<PartialBudget>,
    proxies: Proxies,
    hosts: Hosts,
    metrics: Arc<Metrics>,
    timeouts: Timeouts,
    /// `--read-buffer`: what one read of an upgraded socket takes at most.
    read_ahead: usize,
    body_timeout: Option<Duration>,
    builder: http1::Builder,
    /// When a refused upgrade was last logged at warn level.
    warned_refusal: std::sync::Mutex<Option<Instant>>,
}

/// One connection, as its service sees it.
struct Conn {
    server: Arc<Server>,
    shared: Arc<ConnShared>,
    peer: SocketAddr,
}

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

impl Server {
    /// Serves `router` with the limits and timeouts of `config`.
    pub fn new(
        router: Router,
        config: &Config,
        limits: Arc<Limits>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut builder = http1::Builder::new();
        // hyper's own header timer also runs while a keep-alive connection
        // is idle, so it cannot tell the handshake from the keep-alive
        // timeout: `io::TimedIo` does both. The timer is set all the same:
        // without one hyper silently ignores every timeout it is given
        // (which is why `axum::serve` had no header timeout at all).
        builder.timer(TokioTimer::new()).header_read_timeout(None);
        Self {
            router,
            limits,
            partial: Arc::new(PartialBudget::new(
                config.max_partial_bytes,
                metrics.clone(),
            )),
            proxies: Proxies::new(config.trusted_proxies.clone()),
            hosts: Hosts::new(&config.allowed_hosts),
            metrics,
            timeouts: Timeouts {
                handshake: nonzero(config.handshake_timeout),
                keepalive: nonzero(config.keepalive_timeout),
            },
            read_ahead: config.read_buffer,
            body_timeout: nonzero(config.body_timeout),
            builder,
            warned_refusal: std::sync::Mutex::new(None),
        }
    }
}

/// Accepts until `stop` is cancelled, then shuts the HTTP connections down
/// within `grace` (dropping what is left) and returns the deadline it used,
/// for the WebSockets' own wait.
pub async fn serve(
    listener: TcpListener,
    server: Arc<Server>,
    stop: CancellationToken,
    grace: Duration,
) -> Instant {
    let conns = TaskTracker::new();
    let graceful = CancellationToken::new();
    let hard = CancellationToken::new();
    let mut warned: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let slot = if server.proxies.trusts(peer.ip()) {
                    None
                } else {
                    match server.limits.admit_http(peer.ip()) {
                        Some(slot) => Some(slot),
                        None => {
                            // Closed before anything is read: this address
                            // holds its share of descriptors already.
                            server.metrics.dropped(Dropped::HttpPerIp);
                            drop(tcp);
                            continue;
                        }
                    }
                };
                conns.spawn(connection(
                    server.clone(),
                    tcp,
                    peer,
                    slot,
                    graceful.clone(),
                    hard.clone(),
                ));
            }
            // The peer left before we took its connection: nothing to do.
            Err(err) if is_connection_error(&err) => {}
            Err(err) => {
                let descriptors = matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                let counter = if descriptors {
                    &server.metrics.accept_errors_descriptors
                } else {
                    &server.metrics.accept_errors_other
                };
                Metrics::add(counter, 1);
                if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                    warned = Some(Instant::now());
                    tracing::warn!("accept failed ({err}); retrying in {ACCEPT_BACKOFF:?}");
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
    drop(listener);
    let deadline = Instant::now() + grace;
    graceful.cancel();
    conns.close();
    if tokio::time::timeout_at(deadline, conns.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "{} HTTP connection(s) still open after {grace:?}: dropped",
            conns.len()
        );
        hard.cancel();
        conns.wait().await;
    }
    deadline
}

fn is_connection_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted
    )
}

/// Serves one TCP connection until it ends, is upgraded, or shutdown drops it.
async fn connection(
    server: Arc<Server>,
    tcp: TcpStream,
    peer: SocketAddr,
    // Held until the connection ends or is upgraded (this future returns).
    _slot: Option<HttpSlot>,
    graceful: CancellationToken,
    hard: CancellationToken,
) {
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::debug!("could not set TCP_NODELAY: {err}");
    }
    let shared = Arc::new(ConnShared::new(server.metrics.clone()));
    let io = TimedIo::new(tcp, shared.clone(), server.timeouts, server.read_ahead);
    let conn = Arc::new(Conn {
        server: server.clone(),
        shared,
        peer,
    });
    let service = hyper::service::service_fn(move |request| handle(conn.clone(), request));
    let serving = server
        .builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(serving);
    let result = tokio::select! {
        result = serving.as_mut() => result,
        () = graceful.cancelled() => {
            serving.as_mut().graceful_shutdown();
            tokio::select! {
                result = serving.as_mut() => result,
                () = hard.cancelled() => {
                    server.metrics.dropped(Dropped::Shutdown);
                    return;
                }
            }
        }
    };
    if let Err(err) = result {
        tracing::debug!(%peer, "connection ended: {err}");
    }
}

async fn handle(conn: Arc<Conn>, request: Request<Incoming>) -> Result<Response, Infallible> {
    conn.shared.begin();
    let (response, upgrade) = respond(&conn, request).await;
    let upgraded = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    conn.shared.end(upgraded, upgrade);
    Ok(response)
}

/// Checks, admits and routes one request; what an upgrade was given is
/// held if it is upgraded.
async fn respond(conn: &Conn, request: Request<Incoming>) -> (Response, Option<Upgrade>) {
    let server = &conn.server;
    let (mut parts, body) = request.into_parts();
    if !server.hosts.allows(host_of(&parts.headers, &parts.uri)) {
        server.metrics.dropped(Dropped::Host);
        let host = parts.headers.get(header::HOST).map(HeaderValue::as_bytes);
        tracing::info!(
            host = %logsafe::escape_bytes(host.unwrap_or(b"")),
            peer = %conn.peer,
            "refused a request for a host outside --allowed-host"
        );
        let refusal = (
            StatusCode::FORBIDDEN,
            "host not allowed: start the server with --allowed-host to allow it",
        );
        return (refusal.into_response(), None);
    }
    let client = server.proxies.client(conn.peer, &parts.headers);
    let upgrade = if is_upgrade(&parts) {
        match server
            .limits
            .admit(client.0.ip(), std::time::Instant::now())
        {
            Ok(slot) => {
                let partial = Arc::new(PartialMeter::new(server.partial.clone()));
                parts.extensions.insert(partial.clone());
                let link = SocketLink::new();
                parts.extensions.insert(link.clone());
                Some(Upgrade::new(slot, partial, link))
            }
            Err(refusal) => return (refuse(server, client, refusal), None),
        }
    } else {
        None
    };
    parts.extensions.insert(ConnectInfo(conn.peer));
    parts.extensions.insert(client);
    let (body, expired) = match server.body_timeout.filter(|_| !body.is_end_stream()) {
        Some(timeout) => {
            let expired = Arc::new(AtomicBool::new(false));
            let body = DeadlineBody::new(body, Instant::now() + timeout, expired.clone());
            (Body::new(body), Some(expired))
        }
        None => (Body::new(body), None),
    };
    let mut router = server.router.clone();
    let response = match router.call(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if expired.is_some_and(|e| e.load(Ordering::Relaxed)) {
        server.metrics.dropped(Dropped::BodyTimeout);
        tracing::info!(client = %client.0, "answered 408: the request body was late");
        let late = (
            StatusCode::REQUEST_TIMEOUT,
            [(header::CONNECTION, "close")],
            "request body not received within --body-timeout",
        );
        return (late.into_response(), None);
    }
    (response, upgrade)
}

/// A WebSocket upgrade request (the only kind that takes a slot).
fn is_upgrade(parts: &axum::http::request::Parts) -> bool {
    parts.method == axum::http::Method::GET
        && parts
            .headers
            .get_all(header::UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

fn refuse(server: &Server, client: ClientAddr, refusal: Refusal) -> Response {
    server.metrics.reject(refusal.rejection());
    // A flood would write a line per refusal: one warning per 10 s, the rest at debug.
    let warn = {
        let mut last = server
            .warned_refusal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = last.is_none_or(|at| at.elapsed() >= REFUSAL_WARNING_PERIOD);
        if due {
            *last = Some(Instant::now());
        }
        due
    };
    if warn {
        tracing::warn!(
            client = %client.0,
            ?refusal,
            "refusing WebSocket upgrades (ws_rejected_upgrades_total counts them; \
             the next 10 s of refusals are logged at debug)"
        );
    } else {
        tracing::debug!(client = %client.0, ?refusal, "refused an upgrade");
    }
    let (status, retry_after, text) = match refusal {
        Refusal::MaxConnections => (
            StatusCode::SERVICE_UNAVAILABLE,
            CAP_RETRY_AFTER,
            "too many connections (--max-connections): retry later",
        ),
        Refusal::MaxConnectionsPerIp => (
            StatusCode::SERVICE_UNAVAILABLE,
            CAP_RETRY_AFTER,
            "too many connections from your address (--max-connections-per-ip): retry later",
        ),
        Refusal::ConnectRate(wait) => (
            StatusCode::TOO_MANY_REQUESTS,
            wait,
            "connecting too often (--connect-rate): retry later",
        ),
    };
    // Whole seconds, rounded up, at least one.
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    (
        status,
        [(header::RETRY_AFTER, seconds.max(1).to_string())],
        text,
    )
        .into_response()
}
