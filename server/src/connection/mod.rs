//! One `/ws` connection: the application protocol of `shared`.
//!
//! "Session" means only reliable mode's resumable session (`crate::reliable`);
//! this module is about one WebSocket connection, which in reliable mode
//! speaks for a session until it ends or another connection takes it over.
//!
//! A connection is ONE task that owns the unsplit socket: it reads,
//! dispatches and writes, and everything else (admin pushes, broadcasts,
//! kicks, takeovers, shutdown, timers) reaches it through one `select!`.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the entry point ([`run`], and [`serve`] over any transport), admission and the clean-up |
//! | `driver.rs` | the task's loop: reads, writes, timers (pushes, pings, idle, acks, the token's expiry), close requests and shutdown |
//! | `dispatch.rs` | the ONE dispatch of client messages for both modes |
//! | `app.rs` | the application's answer to a request (echo, ping, burst), the same in both modes and inside a reliable `msg` |
//! | `reliable/` | the link to a reliable session: binding and resume (`mod.rs`); numbered replies, acks, the session's bursts numbered a batch at a time, timed pushes (`flow.rs`) |
//! | `channels.rs` | version 2's channels: `subscribe`, `unsubscribe`, `publish` answered; a token's `subs` at connect and its grants at a refresh |
//! | `burst.rs` | the one burst pacer of both modes: one burst in progress and one waiting, each batch sized by the queue's byte bound and `--max-burst-rate` |
//! | `outbound.rs` | the write side: the bounded queue fed into the socket, one flush per batch, plain bursts a batch at a time |
//! | `end.rs` | why a connection ends: every close code and reason, in one place |
//!
//! The loop is generic over the transport (a `Stream` and `Sink` of
//! messages), so its unit tests run on in-memory channels, as axum's
//! `testing-websockets` example does.

mod app;
mod burst;
mod channels;
mod dispatch;
mod driver;
pub(crate) mod end;
mod outbound;
mod reliable;

pub(crate) use end::End;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::ws::{Message, WebSocket};
use futures_util::{FutureExt, Sink, Stream};
use shared::{ServerMessage, close_code};

use crate::logsafe;
use crate::metrics::Metrics;
use crate::queue;
use crate::registry::{ClientHandle, ClientShared, CloseRequest, Outbound};
use crate::state::AppState;
use crate::wire;

/// How long a close handshake may take once we decided to close.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Who the connection is, from the upgrade request.
pub struct Peer {
    /// The client id (chosen with `?client_id=` or assigned).
    pub id: String,
    /// The remote address.
    pub remote_addr: SocketAddr,
    /// `?burst=N`: pushes to send right after the welcome.
    pub burst: Option<u32>,
    /// `?reliable=1`: acknowledged, resumable delivery.
    pub reliable: bool,
    /// The protocol version spoken, from `?protocol=N` (1 when not asked).
    pub protocol: shared::Protocol,
    /// Token mode: who the token says the client is.
    pub identity: Option<crate::auth::Identity>,
    /// The socket's meter of unfinished messages (`--max-partial-bytes`),
    /// emptied here at each message; `None` when not counted (unit tests).
    pub partial: Option<Arc<crate::partial::PartialMeter>>,
    /// The socket's read gate and direct writes (see `serve::link`);
    /// `None`: read at every turn, and written by the connection's task
    /// alone (unit tests, a router served otherwise).
    pub link: Option<Arc<crate::serve::SocketLink>>,
}

/// What a connection is, besides its transport.
pub(crate) struct Conn {
    /// The registry's connection number.
    pub(crate) number: u64,
    /// The peer's address, for the log.
    remote_addr: SocketAddr,
    /// When it was accepted.
    started: Instant,
    /// The client id.
    pub(crate) client_id: String,
    /// Token mode: the user (the token's `sub`).
    pub(crate) user: Option<Arc<str>>,
    /// Token mode: when the token of the upgrade (plus the leeway) runs out.
    pub(crate) expiry: Option<tokio::time::Instant>,
    /// Counters and close requests shared with the registry.
    pub(crate) shared: Arc<ClientShared>,
    /// The socket's meter of unfinished messages (see [`Peer::partial`]).
    pub(crate) partial: Option<Arc<crate::partial::PartialMeter>>,
    /// The socket's read gate and direct writes (see [`Peer::link`]).
    pub(crate) link: Option<Arc<crate::serve::SocketLink>>,
    /// The protocol version spoken (channels need version 2).
    pub(crate) protocol: shared::Protocol,
    /// Token mode: the token's channel claims, if it has any.
    pub(crate) claims: Option<Arc<crate::channels::grants::ChannelClaims>>,
    /// Token mode: the token's `client_name`, shown in channels' presence.
    pub(crate) client_name: Option<Arc<str>>,
}

/// How a connection starts, besides its welcome.
pub(crate) enum Mode {
    /// A plain connection, with `?burst=N` to queue after the welcome.
    Plain {
        /// The burst.
        burst: Option<u32>,
    },
    /// Reliable mode: the link to the session (not bound yet). Boxed: inline,
    /// its size would be held by the future of every connection, plain ones
    /// included.
    Reliable(Box<reliable::Link>),
}

/// Runs one `/ws` connection to its end.
///
/// The set-up is done here, before the future exists, and the future holds
/// only what lives as long as the connection: an idle connection's memory is
/// mostly this future (arguments of an `async fn` and every value held across
/// an `.await` are stored in it for its whole life), so the welcome, the
/// socket before its split and the rare paths (a batch of writes, a message,
/// the close) are kept out of it or boxed when they run. For the same reason
/// no `async fn` on the way takes the connection's values by value: one
/// holds each twice (see [`serve`]).
pub fn run(socket: WebSocket, state: AppState, peer: Peer) -> impl Future<Output = ()> {
    let (outbound_tx, outbound_rx) = queue::linked(
        state.config.send_queue,
        state.config.send_queue_bytes,
        state.metrics.clone(),
        peer.link.clone(),
    );
    tracing::info!(
        id = %logsafe::escape(&peer.id),
        user = peer.identity.as_ref().map(|i| logsafe::escape(&i.user)).map(tracing::field::display),
        remote = %peer.remote_addr,
        path = "/ws",
        "connect"
    );
    let (conn, mode) = admit(&state, peer, &outbound_tx);
    // Cluster mode with Redis known to be down: a reliable connection gets
    // its welcome, then 1013 and the reason (a browser can read it after
    // the upgrade, not from a refused one).
    if matches!(mode, Mode::Reliable(_))
        && state.cluster.as_ref().is_some_and(|node| node.is_down())
    {
        crate::reliable::TakeoverSignal::store_unavailable(&*conn.shared);
    }
    // Mapped, not awaited in an `async` block, which would hold the same
    // values a second time.
    // Boxed: the socket (368 bytes) is moved from the future's capture into
    // the driver, and the capture's place is kept for the future's life.
    serve(
        Box::new(socket),
        (outbound_tx, outbound_rx),
        state,
        conn,
        mode,
    )
    .map(drop)
}

/// Begins the server's shutdown: cancels [`AppState::shutdown`] (which
/// `/echo` connections and the background tasks watch), then asks every
/// `/ws` connection to close with 1001 through its close request, its one
/// wake-up source. A connection that registers meanwhile finds the token
/// cancelled when its loop starts.
pub fn shut_down(state: &AppState) {
    state.shutdown.cancel();
    state.registry.close_all(&End::shutdown_request());
}

/// Closes a connection refused at its upgrade (a token refused, a
/// `?client_id=` not allowed) with `code` and `reason`, before anything of
/// the application, and waits a little for the client's close reply.
pub async fn refuse(mut socket: WebSocket, code: u16, reason: &'static str) {
    tracing::info!(code, reason, "refused a connection at its upgrade");
    let frame = axum::extract::ws::CloseFrame {
        code,
        reason: reason.into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_ok() {
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(_)) = socket.recv().await {}
        })
        .await;
    }
}

/// Registers the connection and queues its welcome: the first message.
fn admit(state: &AppState, peer: Peer, outbound: &queue::Sender) -> (Conn, Mode) {
    let shared = Arc::new(ClientShared::new(outbound.waker()));
    let number = state.registry.next_conn();
    let user: Option<Arc<str>> = peer.identity.as_ref().map(|i| i.user.as_str().into());
    let link = peer.reliable.then(|| {
        let signal: Arc<dyn crate::reliable::TakeoverSignal> = shared.clone();
        reliable::Link::new(
            number,
            peer.burst,
            (signal, user.clone()),
            (peer.remote_addr.ip(), peer.protocol),
        )
    });
    let welcome = ServerMessage::Welcome {
        client_id: peer.id.clone(),
        push_interval_ms: u64::try_from(state.config.push_interval.as_millis()).unwrap_or(u64::MAX),
        session: link.as_ref().map(|link| link.offer().0.to_owned()),
        token: link.as_ref().map(|link| link.offer().1.to_owned()),
        protocol: peer.protocol.number(),
        exp: peer.identity.as_ref().map(|identity| identity.exp),
    };
    outbound
        .try_send(Outbound::Frame(wire::text(&welcome)))
        .expect("a new queue (capacity at least one, receiver held here) has room for its first message");
    let handle = ClientHandle {
        user: user.clone(),
        client_name: peer
            .identity
            .as_ref()
            .and_then(|i| i.client_name.as_deref().map(Arc::from)),
        session: link.as_ref().map(reliable::Link::slot),
        conn: number,
        remote_addr: peer.remote_addr,
        connected_at: SystemTime::now(),
        outbound: outbound.clone(),
        shared: shared.clone(),
    };
    if let Some(old) = state.registry.insert(&peer.id, handle) {
        old.shared.request_close(CloseRequest {
            code: close_code::REPLACED,
            reason: "replaced".into(),
        });
    }
    Metrics::add(&state.metrics.connections_open, 1);
    Metrics::add(&state.metrics.connections_total, 1);
    let conn = Conn {
        number,
        remote_addr: peer.remote_addr,
        started: Instant::now(),
        client_id: peer.id,
        user,
        expiry: peer.identity.as_ref().and_then(|identity| {
            let leeway = state.auth.as_ref()?.leeway();
            Some(crate::timer::expiry(identity.exp, leeway))
        }),
        shared,
        partial: peer.partial,
        link: peer.link,
        protocol: peer.protocol,
        claims: peer.identity.as_ref().and_then(|i| i.channels.clone()),
        client_name: peer
            .identity
            .as_ref()
            .and_then(|i| i.client_name.as_deref().map(Arc::from)),
    };
    let mode = match link {
        Some(link) => Mode::Reliable(Box::new(link)),
        None => Mode::Plain { burst: peer.burst },
    };
    (conn, mode)
}

/// Runs a connection over any transport to its end (one task: see
/// `driver.rs`); then the connection leaves the registry and logs its
/// disconnect. Returns why it ended.
///
/// Not an `async fn`: one keeps each argument twice in its future (the
/// argument, and the local its body moves it into), for the connection's
/// whole life. The block below uses `state` and `conn` where they were
/// captured, and the driver runs by `&mut`, so the future holds each once.
pub(crate) fn serve<T>(
    ws: T,
    (outbound_tx, outbound_rx): (queue::Sender, queue::Receiver),
    state: AppState,
    conn: Conn,
    mode: Mode,
) -> impl Future<Output = End>
where
    T: Stream<Item = Result<Message, axum::Error>> + Sink<Message> + Unpin,
{
    // Cluster mode: the session is written through to Redis before each
    // batch (in memory there is nothing to write).
    let written_through = match &mode {
        Mode::Reliable(link) if matches!(*state.reliable, crate::reliable::Store::Redis(_)) => {
            Some(link.slot())
        }
        _ => None,
    };
    let session = match &mode {
        Mode::Reliable(link) => Some(link.slot()),
        Mode::Plain { .. } => None,
    };
    let outbox = outbound::Outbox::new(outbound_rx, written_through, state.metrics.clone());
    // Boxed: what the driver takes by value is moved out of the future's
    // capture into the driver, and the capture's place is kept for the
    // future's life (about 120 bytes); boxed, the place is a pointer, and
    // the box is freed once emptied.
    let parts = Box::new((ws, outbound_tx, outbox, mode));
    async move {
        let (ws, outbound_tx, outbox, mode) = *parts;
        // From here on the clean-up runs however this future ends:
        // returning, dropped, or unwinding from a panic.
        let mut registered = Registered {
            state: &state,
            conn: &conn,
            session,
            finished: false,
        };
        let mut connection =
            driver::Connection::new(ws, (outbound_tx, outbox), &state, &conn, mode);
        let end = connection.run().await;
        // Channel frames written straight into the socket, counted by the queue.
        let written = connection.outbound.written();
        drop(connection);
        registered.finished = true;
        drop(registered);
        tracing::info!(
            id = %logsafe::escape(&conn.client_id),
            user = conn.user.as_deref().map(logsafe::escape).map(tracing::field::display),
            remote = %conn.remote_addr,
            code = end.code,
            reason = %logsafe::escape(&end.reason),
            duration_ms = conn.started.elapsed().as_millis() as u64,
            messages_in = conn.shared.messages_in.load(Relaxed),
            messages_out = conn.shared.messages_out.load(Relaxed) + written,
            "disconnect"
        );
        end
    }
}

/// A registered connection's clean-up, run on drop: out of the registry
/// (and so of the cluster's list) and out of `connections_open`; if it
/// did not reach its end, its reliable session detached too. A guard, not
/// lines at the end of [`serve`]: a panic in the connection's task drops
/// its future without running them, and left a ghost client listed and its
/// session attached for ever (holding a `--max-sessions` slot).
struct Registered<'a> {
    state: &'a AppState,
    conn: &'a Conn,
    /// Reliable mode: the session, once the connection is bound to one.
    session: Option<Arc<std::sync::OnceLock<crate::reliable::SessionRef>>>,
    /// [`serve`] reached its end (the driver detached the session);
    /// otherwise the drop detaches it and says so in the log.
    finished: bool,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let Self {
            state,
            conn,
            session,
            finished,
        } = self;
        state.registry.remove(&conn.client_id, conn.number);
        state.channels.leave(conn.number);
        state.metrics.connections_open.fetch_sub(1, Relaxed);
        if !*finished {
            // What `Link::detach` does at the end of the driver's run.
            if let Some(session) = session.as_ref().and_then(|slot| slot.get()) {
                let mut locked = crate::reliable::lock(session);
                locked.detach(conn.number, Instant::now());
                if locked.is_written_through()
                    && let Ok(runtime) = tokio::runtime::Handle::try_current()
                {
                    drop(locked);
                    let (store, session) = (state.reliable.clone(), session.clone());
                    runtime.spawn(async move { store.detached(&session).await });
                }
            }
            tracing::error!(
                id = %logsafe::escape(&conn.client_id),
                remote = %conn.remote_addr,
                "connection task ended before its end (a panic, or the runtime stopped): cleaned up"
            );
        }
    }
}

#[cfg(test)]
mod tests;
