//! One `/ws` connection: the application protocol of `shared`.
//!
//! Two halves run in one task:
//! * the **driver** reads frames, answers them, ticks the timed pushes and
//!   pings, watches the idle deadline, kicks and shutdown;
//! * the **writer** owns the sink and drains a bounded queue
//!   ([`Outbound`]), feeding every ready message and flushing once per batch.
//!   A batch (its feeds and its one flush) that is not written within
//!   `--write-timeout` means the client stopped reading: the writer gives up
//!   with 1013 and the connection ends. One deadline per batch, not per
//!   frame: a timer per frame was the largest cost of a burst.
//!
//! Timed pushes are only queued when the queue is empty, so they never pile up
//! behind a slow client; pushes that find no room are counted as dropped.
//!
//! In reliable mode (`?reliable=1`) the driver also speaks for a session of
//! `reliable.rs`: nothing but the welcome goes out until the client's first
//! message binds the connection (to the session it resumes, or to the one the
//! welcome offered); every application message is then numbered and kept in
//! the history *before* it is queued (under the session's lock, with a queue
//! slot reserved beforehand, so wire order is seq order); bursts are made a
//! push at a time as the window allows; client `msg`s pass the exactly-once
//! filter and are acknowledged in batches.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use shared::{ClientMessage, ErrorCode, PushEncoder, ResumeFailure, ServerMessage, close_code};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::registry::{ClientHandle, ClientShared, CloseRequest, Outbound, millis};
use crate::reliable::{self, Inbound, SessionRef, TakenOver};
use crate::state::AppState;
use crate::wire::{self, ReadError};

/// Pushes written between two flushes of a burst.
const BURST_BATCH: u32 = 512;
/// Messages taken from the queue per batch.
const QUEUE_BATCH: usize = 256;
/// How long a close handshake may take once we decided to close.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Reliable mode: acknowledge after this many client messages...
const ACK_EVERY: u32 = 32;
/// ...or this long after the first unacknowledged one.
const ACK_DELAY: Duration = Duration::from_millis(20);

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
}

/// Why the session ended, for the disconnect log line.
#[derive(Debug, Default)]
struct End {
    code: Option<u16>,
    reason: String,
}

impl End {
    fn with(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            reason: reason.into(),
        }
    }
}

/// Runs one `/ws` connection to its end.
///
/// The set-up is done here, before the future exists, and the future holds
/// only what lives as long as the connection: an idle connection's memory is
/// mostly this future (arguments of an `async fn` and every value held across
/// an `.await` are stored in it for its whole life), so the welcome, the
/// socket before its split and the rare paths (a batch of writes, a message,
/// the close) are kept out of it or boxed when they run.
pub fn run(socket: WebSocket, state: AppState, peer: Peer) -> impl Future<Output = ()> {
    let started = Instant::now();
    let config = &state.config;
    let (outbound_tx, outbound_rx) = mpsc::channel(config.send_queue.max(1));
    let shared = Arc::new(ClientShared::default());
    let conn = state.registry.next_conn();
    let rel = peer.reliable.then(|| Rel::new(peer.burst));
    // The welcome goes first: nothing else is queued before it.
    let welcome = ServerMessage::Welcome {
        client_id: peer.id.clone(),
        push_interval_ms: u64::try_from(config.push_interval.as_millis()).unwrap_or(u64::MAX),
        session: rel.as_ref().map(|rel| rel.offer.0.clone()),
        token: rel.as_ref().map(|rel| rel.offer.1.clone()),
    };
    outbound_tx
        .try_send(Outbound::Frame(wire::text(&welcome)))
        .expect("a new queue (capacity at least one, receiver held here) has room for its first message");
    let burst = if rel.is_some() { None } else { peer.burst };
    let handle = ClientHandle {
        session: rel.as_ref().map(|rel| rel.slot.clone()),
        conn,
        remote_addr: peer.remote_addr,
        connected_at: SystemTime::now(),
        outbound: outbound_tx.clone(),
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
    tracing::info!(id = %peer.id, remote = %peer.remote_addr, path = "/ws", "connect");
    let (sink, stream) = socket.split();

    async move {
        let (close_tx, close_rx) = oneshot::channel();
        let writer_gone = CancellationToken::new();
        let writer = Writer {
            sink,
            queue: outbound_rx,
            close: close_rx,
            seq: 0,
            state: &state,
            shared: &shared,
        };
        let driver = Driver {
            stream,
            outbound: outbound_tx,
            state: &state,
            shared: &shared,
            bad_in_a_row: 0,
            conn,
            client_id: &peer.id,
            rel,
        };
        let ((), end) = tokio::join!(
            async {
                let end = writer.run().await;
                if let Some(end) = end {
                    tracing::debug!(id = %peer.id, ?end, "writer ended");
                }
                writer_gone.cancel();
            },
            driver.run(burst, close_tx, &writer_gone),
        );

        state.registry.remove(&peer.id, conn);
        state.metrics.connections_open.fetch_sub(1, Relaxed);
        tracing::info!(
            id = %peer.id,
            remote = %peer.remote_addr,
            code = end.code,
            reason = %end.reason,
            duration_ms = started.elapsed().as_millis() as u64,
            messages_in = shared.messages_in.load(Relaxed),
            messages_out = shared.messages_out.load(Relaxed),
            "disconnect"
        );
    }
}

struct Driver<'a> {
    stream: SplitStream<WebSocket>,
    outbound: mpsc::Sender<Outbound>,
    state: &'a AppState,
    shared: &'a ClientShared,
    bad_in_a_row: u32,
    conn: u64,
    client_id: &'a str,
    /// Reliable mode's state, `None` on a plain connection.
    rel: Option<Rel>,
}

/// A reliable connection's side of its session.
struct Rel {
    /// The session id and token offered in the welcome.
    offer: (String, String),
    /// The session, once the first message bound the connection.
    session: Option<SessionRef>,
    /// The same, for the registry (admin pushes).
    slot: Arc<OnceLock<SessionRef>>,
    /// `?burst=N`, started when a new session is bound.
    pending_burst: Option<u32>,
    /// Client messages processed since the last ack.
    unacked_in: u32,
    /// When the next ack is due, if one is.
    ack_due: Option<tokio::time::Instant>,
}

impl Rel {
    fn new(burst: Option<u32>) -> Self {
        Self {
            offer: reliable::offer(),
            session: None,
            slot: Arc::default(),
            pending_burst: burst,
            unacked_in: 0,
            ack_due: None,
        }
    }
}

/// The session was resumed on another connection: this one ends.
fn taken_over(TakenOver: TakenOver) -> End {
    End::with(
        close_code::REPLACED,
        "session resumed on another connection",
    )
}

/// A future that completes at `due`, or never.
async fn at(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

impl Driver<'_> {
    /// Runs the connection (its welcome is already queued); `burst` is a
    /// `?burst=N` to queue after the welcome.
    async fn run(
        mut self,
        burst: Option<u32>,
        close_tx: oneshot::Sender<CloseFrame>,
        writer_gone: &CancellationToken,
    ) -> End {
        let config = &self.state.config;
        if let Some(count) = burst {
            if let Some(refusal) = self.burst_refusal(count) {
                let _ = self.send(wire::text(&refusal)).await;
            } else if self.outbound.send(Outbound::Burst { count }).await.is_err() {
                return End::with(close_code::INTERNAL_ERROR, "writer ended before the burst");
            }
        }
        let mut push_tick = ticker(config.push_interval);
        let mut ping_tick = ticker(config.ping_interval);
        let idle = tokio::time::sleep(config.idle_timeout);
        tokio::pin!(idle);
        let shutdown = self.state.shutdown.clone();
        // For reliable bursts: a permit borrows its sender across the select's handlers.
        let burst_outbound = self.outbound.clone();

        let end = loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    break Some(End::with(close_code::GOING_AWAY, "server shutting down"));
                }
                () = writer_gone.cancelled() => break None,
                request = self.shared.close_requested() => {
                    break Some(End::with(request.code, request.reason));
                }
                frame = self.stream.next() => {
                    idle.as_mut().reset(tokio::time::Instant::now() + config.idle_timeout);
                    match frame {
                        Some(Ok(message)) => {
                            if let Some(end) = Box::pin(self.on_message(message)).await {
                                break end;
                            }
                        }
                        Some(Err(err)) => {
                            break wire::close_for(&ReadError::from(err))
                                .map(|(code, reason)| End::with(code, reason));
                        }
                        None => break None,
                    }
                }
                permit = burst_outbound.reserve(), if self.burst_ready() => {
                    if let Ok(permit) = permit
                        && let Err(taken) = self.burst_step(permit)
                    {
                        break Some(taken_over(taken));
                    }
                }
                () = at(self.rel.as_ref().and_then(|r| r.ack_due)) => self.send_ack(),
                Some(()) = tick(&mut push_tick) => self.timed_push(),
                Some(()) = tick(&mut ping_tick) => {
                    // Skipped when the queue has no room: the peer is behind anyway.
                    let _ = self.outbound.try_send(Outbound::Frame(Message::Ping(Default::default())));
                }
                () = &mut idle => {
                    tracing::info!("closing an idle connection after {:?}", config.idle_timeout);
                    break Some(End::with(close_code::IDLE_TIMEOUT, "idle timeout"));
                }
            }
        };
        // The writer ends once every sender is gone.
        drop(burst_outbound);
        if let Some(session) = self.rel.as_ref().and_then(|r| r.session.as_ref()) {
            reliable::lock(session).detach(self.conn, Instant::now());
        }
        match end {
            Some(end) => Box::pin(self.finish(end, close_tx)).await,
            None => End {
                code: None,
                reason: "connection ended".into(),
            },
        }
    }

    /// Asks the writer to send the close frame, then reads until the peer's
    /// close reply or the grace period ends.
    async fn finish(mut self, end: End, close_tx: oneshot::Sender<CloseFrame>) -> End {
        let Some(code) = end.code else {
            return end;
        };
        let _ = close_tx.send(CloseFrame {
            code,
            reason: Utf8Bytes::from(end.reason.clone()),
        });
        // Stop queueing; the writer ends once it has sent the close frame.
        drop(self.outbound);
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(_)) = self.stream.next().await {}
        })
        .await;
        end
    }

    /// Queues `message`, waiting for room (backpressure on the reader).
    async fn send(&self, message: Message) -> Result<(), ()> {
        self.outbound
            .send(Outbound::Frame(message))
            .await
            .map_err(drop)
    }

    async fn on_message(&mut self, message: Message) -> Option<Option<End>> {
        let metrics = &self.state.metrics;
        let (len, reply) = match message {
            Message::Text(text) => match self.on_text(&text).await {
                Ok(reply) => (text.len(), reply),
                Err(end) => return Some(Some(end)),
            },
            Message::Binary(data) => (data.len(), Some(Message::Binary(data))),
            // Control frames only prove the peer is alive (tungstenite answers pings).
            Message::Ping(_) | Message::Pong(_) => return None,
            Message::Close(frame) => {
                // tungstenite queues the close reply; keep reading until the stream ends.
                let (code, reason) = frame.map_or((None, String::new()), |f| {
                    (Some(f.code), f.reason.to_string())
                });
                tracing::debug!(?code, %reason, "client closed");
                return None;
            }
        };
        Metrics::add(&metrics.messages_in, 1);
        Metrics::add(&metrics.bytes_in, len as u64);
        self.shared.messages_in.fetch_add(1, Relaxed);
        if let Some(reply) = reply
            && self.send(reply).await.is_err()
        {
            // The writer is gone; the loop sees it next.
            return None;
        }
        (self.bad_in_a_row >= self.state.config.max_bad_messages).then(|| {
            Some(End::with(
                close_code::POLICY_VIOLATION,
                "too many messages that could not be decoded",
            ))
        })
    }

    /// Handles one text frame; returns the direct (unnumbered) reply, if any.
    async fn on_text(&mut self, text: &str) -> Result<Option<Message>, End> {
        let message = match ClientMessage::from_json(text) {
            Ok(message) => {
                self.bad_in_a_row = 0;
                message
            }
            Err(err) => {
                self.bad_in_a_row += 1;
                return Ok(Some(wire::error(err.code(), err.to_string())));
            }
        };
        // A reliable connection's first message binds it to a session.
        if self.rel.as_ref().is_some_and(|r| r.session.is_none()) {
            if let ClientMessage::Resume {
                session,
                token,
                last_seq,
            } = &message
            {
                self.resume(session, token, *last_seq).await?;
                return Ok(None);
            }
            self.bind_new()?;
        }
        let session = self.rel.as_ref().and_then(|r| r.session.clone());
        match (message, session) {
            (ClientMessage::Echo { id, body }, None) => {
                Ok(Some(wire::text(&ServerMessage::Echo { id, body })))
            }
            (ClientMessage::Burst { count }, None) => {
                if let Some(refusal) = self.burst_refusal(count) {
                    return Ok(Some(wire::text(&refusal)));
                }
                // An error means the writer is gone; the loop sees it next.
                let _ = self.outbound.send(Outbound::Burst { count }).await;
                Ok(None)
            }
            // The heartbeat is connection-scoped: never numbered.
            (ClientMessage::Ping { t }, _) => Ok(Some(wire::text(&ServerMessage::Pong { t }))),
            (ClientMessage::Ack { seq }, Some(session)) => {
                let mut session = reliable::lock(&session);
                if !session.is_attached(self.conn) {
                    return Err(taken_over(TakenOver));
                }
                session.ack(seq);
                Ok(None)
            }
            (ClientMessage::Msg { seq, data }, Some(session)) => {
                self.on_numbered(&session, seq, &data).await?;
                Ok(None)
            }
            (ClientMessage::Resume { .. }, Some(_)) => {
                Ok(Some(wire::text(&ServerMessage::ResumeFailed {
                    reason: ResumeFailure::NotFirst,
                })))
            }
            // Unnumbered application messages on a reliable connection: served
            // as usual, the reply numbered (pushes must be).
            (
                message @ (ClientMessage::Echo { .. } | ClientMessage::Burst { .. }),
                Some(session),
            ) => {
                let reply = self.serve(&mut reliable::lock(&session), message);
                if let Some(reply) = reply {
                    self.send_numbered(&session, &reply).await?;
                }
                Ok(None)
            }
            (
                ClientMessage::Resume { .. }
                | ClientMessage::Ack { .. }
                | ClientMessage::Msg { .. },
                None,
            ) => Ok(Some(wire::error(
                ErrorCode::NotReliable,
                "reliable mode is off on this connection: connect to /ws?reliable=1".into(),
            ))),
            _ => Ok(Some(wire::error(
                ErrorCode::UnknownType,
                "this message type is not handled by the server".into(),
            ))),
        }
    }

    /// Reliable mode: client `msg` number `seq`, processed exactly once.
    ///
    /// Accepting it, serving it and recording the reply happen under one
    /// lock (with the queue slot reserved first): a resume on another
    /// connection cannot slip in between and leave a processed message
    /// without its reply.
    async fn on_numbered(&mut self, session: &SessionRef, seq: u64, data: &str) -> Result<(), End> {
        let Ok(permit) = self.outbound.reserve().await else {
            return Ok(()); // The writer is gone; the loop sees it next.
        };
        let decision = {
            // Moved in, so the slot is released at the end of this block.
            let permit = permit;
            let mut session = reliable::lock(session);
            if !session.is_attached(self.conn) {
                return Err(taken_over(TakenOver));
            }
            if session.full() && seq > session.last_in() {
                // Not processed: the client resends it after its resume.
                return Err(End::with(
                    close_code::TRY_AGAIN_LATER,
                    "too many unacknowledged messages: acknowledge, then resume",
                ));
            }
            let decision = session.accept(seq);
            if decision == Inbound::Process {
                let reply = match ClientMessage::from_json(data) {
                    Ok(
                        ClientMessage::Resume { .. }
                        | ClientMessage::Ack { .. }
                        | ClientMessage::Msg { .. },
                    ) => Some(error_message(
                        ErrorCode::NotReliable,
                        "resume, ack and msg cannot travel inside a msg".into(),
                    )),
                    Ok(message) => self.serve(&mut session, message),
                    Err(err) => Some(error_message(err.code(), err.to_string())),
                };
                if let Some(reply) = reply {
                    let frame = session
                        .record(Some(self.conn), &reply, Instant::now())
                        .map_err(taken_over)?;
                    permit.send(Outbound::Frame(Message::Text(frame)));
                }
            }
            decision
        };
        if let Inbound::OutOfOrder { expected } = decision {
            let _ = self
                .send(wire::error(
                    ErrorCode::OutOfOrder,
                    format!("msg {seq} skips ahead: {expected} is next; it was not processed"),
                ))
                .await;
            return Ok(());
        }
        self.count_for_ack();
        Ok(())
    }

    /// Serves an application message on a reliable connection; returns the reply to number.
    fn serve(
        &self,
        session: &mut reliable::Session,
        message: ClientMessage,
    ) -> Option<ServerMessage> {
        match message {
            ClientMessage::Echo { id, body } => Some(ServerMessage::Echo { id, body }),
            ClientMessage::Ping { t } => Some(ServerMessage::Pong { t }),
            ClientMessage::Burst { count } => self.burst_refusal(count).or_else(|| {
                session.start_burst(count, Instant::now());
                None
            }),
            _ => Some(error_message(
                ErrorCode::UnknownType,
                "this message type is not handled by the server".into(),
            )),
        }
    }

    /// Binds a reliable connection to the session its welcome offered; at
    /// `--max-sessions` the connection ends with 1013 instead.
    fn bind_new(&mut self) -> Result<(), End> {
        let Some(rel) = self.rel.as_mut() else {
            return Ok(());
        };
        let (id, token) = rel.offer.clone();
        let Some(session) =
            self.state
                .reliable
                .create(id, token, self.client_id, self.conn, Instant::now())
        else {
            tracing::warn!("refused a reliable session: --max-sessions reached");
            return Err(End::with(
                close_code::TRY_AGAIN_LATER,
                "too many reliable sessions",
            ));
        };
        if let Some(count) = rel.pending_burst.take() {
            if count <= self.state.config.max_burst {
                reliable::lock(&session).start_burst(count, Instant::now());
            } else {
                tracing::info!("refused ?burst={count}: over --max-burst");
            }
        }
        rel.session = Some(session.clone());
        let _ = rel.slot.set(session);
        Ok(())
    }

    /// Binds a reliable connection to the session it resumes, or on failure
    /// to the one its welcome offered; either way says so first.
    async fn resume(&mut self, id: &str, token: &str, last_seq: u64) -> Result<(), End> {
        let Ok(permit) = self.outbound.reserve().await else {
            return Ok(()); // The writer is gone; the loop sees it next.
        };
        let resumed = self.state.reliable.resume(
            id,
            token,
            last_seq,
            self.client_id,
            self.conn,
            Instant::now(),
        );
        match resumed {
            Ok((session, resume)) => {
                let mut frames = vec![wire::text(&ServerMessage::Resumed {
                    last_seq: resume.last_in,
                })];
                if let Some((from, to)) = resume.gap {
                    tracing::info!(session = id, from, to, "resumed with a gap");
                    frames.push(wire::text(&ServerMessage::Gap { from, to }));
                }
                tracing::debug!(
                    session = id,
                    client_last_seq = last_seq,
                    last_in = resume.last_in,
                    replay = resume.replay.len(),
                    "resumed"
                );
                frames.extend(resume.replay.into_iter().map(Message::Text));
                permit.send(Outbound::Frames(frames));
                if let Some(rel) = self.rel.as_mut() {
                    rel.pending_burst = None;
                    rel.session = Some(session.clone());
                    let _ = rel.slot.set(session);
                }
            }
            Err(reason) => {
                tracing::info!(session = id, %reason, "resume failed");
                permit.send(Outbound::Frame(wire::text(&ServerMessage::ResumeFailed {
                    reason,
                })));
                self.bind_new()?;
            }
        }
        Ok(())
    }

    /// Numbers `message`, keeps it in the history and queues it, in one step.
    async fn send_numbered(
        &self,
        session: &SessionRef,
        message: &ServerMessage,
    ) -> Result<(), End> {
        let Ok(permit) = self.outbound.reserve().await else {
            return Ok(()); // The writer is gone; the loop sees it next.
        };
        let frame = reliable::lock(session)
            .record(Some(self.conn), message, Instant::now())
            .map_err(taken_over)?;
        permit.send(Outbound::Frame(Message::Text(frame)));
        Ok(())
    }

    /// Whether a reliable burst can make its next push now.
    fn burst_ready(&self) -> bool {
        self.rel
            .as_ref()
            .and_then(|r| r.session.as_ref())
            .is_some_and(|s| {
                let s = reliable::lock(s);
                s.bursting() && s.window_open()
            })
    }

    /// The next push (or `burst_done`) of a reliable burst.
    fn burst_step(&self, permit: mpsc::Permit<'_, Outbound>) -> Result<(), TakenOver> {
        let Some(session) = self.rel.as_ref().and_then(|r| r.session.as_ref()) else {
            return Ok(());
        };
        let mut session = reliable::lock(session);
        if !session.is_attached(self.conn) {
            return Err(TakenOver);
        }
        let now = Instant::now();
        if let Some(message) = session.burst_step(millis(SystemTime::now()), now) {
            let frame = session.record(Some(self.conn), &message, now)?;
            permit.send(Outbound::Frame(Message::Text(frame)));
        }
        Ok(())
    }

    /// One more client message to acknowledge: now after [`ACK_EVERY`], else soon.
    fn count_for_ack(&mut self) {
        let Some(rel) = self.rel.as_mut() else { return };
        rel.unacked_in += 1;
        if rel.unacked_in >= ACK_EVERY {
            self.send_ack();
        } else if rel.ack_due.is_none() {
            rel.ack_due = Some(tokio::time::Instant::now() + ACK_DELAY);
        }
    }

    /// Acknowledges every client message processed so far (retried later if the queue is full).
    fn send_ack(&mut self) {
        let Some(rel) = self.rel.as_mut() else { return };
        let Some(session) = rel.session.as_ref() else {
            rel.ack_due = None;
            return;
        };
        let seq = reliable::lock(session).last_in();
        let ack = Outbound::Frame(wire::text(&ServerMessage::Ack { seq }));
        if self.outbound.try_send(ack).is_ok() {
            rel.unacked_in = 0;
            rel.ack_due = None;
        } else {
            rel.ack_due = Some(tokio::time::Instant::now() + ACK_DELAY);
        }
    }

    fn burst_refusal(&self, count: u32) -> Option<ServerMessage> {
        let max = self.state.config.max_burst;
        (count > max).then(|| {
            error_message(
                ErrorCode::BurstTooLarge,
                format!("a burst may have at most {max} messages, not {count}"),
            )
        })
    }

    fn timed_push(&self) {
        // Only when the queue is empty: a slow client gets no pile of old ticks.
        if self.outbound.capacity() < self.outbound.max_capacity() {
            Metrics::add(&self.state.metrics.pushes_dropped, 1);
            return;
        }
        if let Some(rel) = &self.rel {
            // Reliable: numbered and kept, if the window has room; none before binding.
            let Some(session) = &rel.session else { return };
            let Ok(permit) = self.outbound.try_reserve() else {
                return;
            };
            let mut session = reliable::lock(session);
            if !session.window_open() || !session.is_attached(self.conn) {
                Metrics::add(&self.state.metrics.pushes_dropped, 1);
                return;
            }
            let push = session.push_message("tick".into(), millis(SystemTime::now()));
            if let Ok(frame) = session.record(Some(self.conn), &push, Instant::now()) {
                permit.send(Outbound::Frame(Message::Text(frame)));
            }
            return;
        }
        let push = Outbound::Push {
            body: Arc::from("tick"),
            sent_at_ms: millis(SystemTime::now()),
        };
        if self.outbound.try_send(push).is_err() {
            Metrics::add(&self.state.metrics.pushes_dropped, 1);
        }
    }
}

/// An interval that first fires one period from now, or none for zero.
fn ticker(period: Duration) -> Option<tokio::time::Interval> {
    (!period.is_zero()).then(|| {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        interval
    })
}

async fn tick(interval: &mut Option<tokio::time::Interval>) -> Option<()> {
    match interval {
        Some(interval) => {
            interval.tick().await;
            Some(())
        }
        None => std::future::pending().await,
    }
}

struct Writer<'a> {
    sink: SplitSink<WebSocket, Message>,
    queue: mpsc::Receiver<Outbound>,
    close: oneshot::Receiver<CloseFrame>,
    seq: u64,
    state: &'a AppState,
    shared: &'a ClientShared,
}

/// Why the writer stopped early.
#[derive(Debug)]
enum WriterEnd {
    /// No write progress within the write timeout: closed with 1013.
    SlowConsumer,
    /// The socket failed.
    Failed,
    /// A close request arrived during a burst and its frame was sent.
    Closed,
}

impl Writer<'_> {
    /// Writes until the driver asks for the close frame or the socket fails.
    async fn run(mut self) -> Option<WriterEnd> {
        // Grown on first use: an idle connection holds no batch buffer. The
        // futures of the arms below are boxed for the same reason: inline,
        // their largest state would be held by every idle connection.
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                biased;
                frame = &mut self.close => {
                    if let Ok(frame) = frame {
                        Box::pin(self.close_after_queued(frame)).await;
                    }
                    return None;
                }
                n = self.queue.recv_many(&mut batch, QUEUE_BATCH) => {
                    if n == 0 {
                        // Every sender is gone; the close request decides what comes next.
                        if let Ok(frame) = (&mut self.close).await {
                            Box::pin(self.send_close(frame)).await;
                        }
                        return None;
                    }
                    match Box::pin(self.write_batch(&mut batch)).await {
                        Ok(()) => {}
                        Err(WriterEnd::Closed) => return None,
                        Err(end) => return Some(Box::pin(self.fail(end)).await),
                    }
                }
            }
        }
    }

    async fn fail(mut self, end: WriterEnd) -> WriterEnd {
        if matches!(end, WriterEnd::SlowConsumer) {
            Metrics::add(&self.state.metrics.slow_consumer_closes, 1);
            tracing::warn!("closing a slow consumer: writes made no progress");
            self.send_close(CloseFrame {
                code: close_code::TRY_AGAIN_LATER,
                reason: Utf8Bytes::from_static("slow consumer"),
            })
            .await;
        }
        end
    }

    /// Writes what was queued before the close request (an `error` that
    /// explains a 1008, say), skipping bursts, then the close frame.
    async fn close_after_queued(&mut self, frame: CloseFrame) {
        let mut queued = Vec::new();
        while let Ok(item) = self.queue.try_recv() {
            if !matches!(item, Outbound::Burst { .. }) {
                queued.push(item);
            }
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, self.write_batch(&mut queued)).await;
        self.send_close(frame).await;
    }

    /// Sends a close frame, giving up after the grace period (a peer that
    /// does not read may never take it).
    async fn send_close(&mut self, frame: CloseFrame) {
        let _ =
            tokio::time::timeout(CLOSE_GRACE, self.sink.send(Message::Close(Some(frame)))).await;
    }

    /// Feeds one frame into the sink's buffer and returns its size (untimed
    /// and uncounted: the batch around it has the deadline and adds the bytes
    /// to the metrics once).
    async fn feed(&mut self, message: Message) -> Result<u64, WriterEnd> {
        let len = message_len(&message) as u64;
        self.sink
            .feed(message)
            .await
            .map_err(|_| WriterEnd::Failed)?;
        Ok(len)
    }

    async fn flush(&mut self) -> Result<(), WriterEnd> {
        self.sink.flush().await.map_err(|_| WriterEnd::Failed)
    }

    fn count(&self, messages: u64, bytes: u64) {
        Metrics::add(&self.state.metrics.messages_out, messages);
        Metrics::add(&self.state.metrics.bytes_out, bytes);
        self.shared.messages_out.fetch_add(messages, Relaxed);
    }

    /// The next push, numbered in wire order.
    fn push_message(&mut self, push: &PushEncoder) -> Message {
        self.seq += 1;
        Message::Text(push.encode(self.seq).into())
    }

    /// Writes the queued items: the frames up to a burst (or the end) under
    /// one deadline and one flush, then the burst, which has its own.
    async fn write_batch(&mut self, batch: &mut Vec<Outbound>) -> Result<(), WriterEnd> {
        let limit = self.state.config.write_timeout;
        let mut items = batch.drain(..);
        loop {
            let (mut written, mut bytes) = (0, 0);
            let mut burst = None;
            within(limit, async {
                for item in items.by_ref() {
                    match item {
                        Outbound::Frame(message) => {
                            bytes += self.feed(message).await?;
                            written += 1;
                        }
                        Outbound::Frames(messages) => {
                            for message in messages {
                                bytes += self.feed(message).await?;
                                written += 1;
                            }
                        }
                        Outbound::Push { body, sent_at_ms } => {
                            let message = self.push_message(&PushEncoder::new(sent_at_ms, &body));
                            bytes += self.feed(message).await?;
                            written += 1;
                        }
                        Outbound::Burst { count } => {
                            burst = Some(count);
                            break;
                        }
                    }
                }
                self.flush().await
            })
            .await?;
            self.count(written, bytes);
            match burst {
                Some(count) => self.burst(count).await?,
                None => return Ok(()),
            }
        }
    }

    /// `count` pushes fed in batches with one flush each, then `burst_done`.
    async fn burst(&mut self, count: u32) -> Result<(), WriterEnd> {
        let started = Instant::now();
        let limit = self.state.config.write_timeout;
        let mut left = count;
        while left > 0 {
            let n = left.min(BURST_BATCH);
            let mut bytes = 0;
            within(limit, async {
                let push = PushEncoder::new(millis(SystemTime::now()), "burst");
                for _ in 0..n {
                    let message = self.push_message(&push);
                    bytes += self.feed(message).await?;
                }
                self.flush().await
            })
            .await?;
            self.count(u64::from(n), bytes);
            left -= n;
            // A close request (kick, shutdown) interrupts a long burst.
            if let Ok(frame) = self.close.try_recv() {
                self.send_close(frame).await;
                return Err(WriterEnd::Closed);
            }
            tokio::task::yield_now().await;
        }
        let done = wire::text(&ServerMessage::BurstDone {
            count,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
        let mut bytes = 0;
        within(limit, async {
            bytes = self.feed(done).await?;
            self.flush().await
        })
        .await?;
        self.count(1, bytes);
        Ok(())
    }
}

/// Runs one batch of writes under the write timeout: a batch that does not
/// complete in time means the peer stopped reading.
async fn within(
    limit: Duration,
    batch: impl Future<Output = Result<(), WriterEnd>>,
) -> Result<(), WriterEnd> {
    tokio::time::timeout(limit, batch)
        .await
        .unwrap_or(Err(WriterEnd::SlowConsumer))
}

/// An `error` message.
fn error_message(code: ErrorCode, message: String) -> ServerMessage {
    ServerMessage::Error { code, message }
}

fn message_len(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(data) => data.len(),
        _ => 0,
    }
}
