//! One `/ws` connection: the application protocol of `shared`.
//!
//! Two halves run in one task:
//! * the **driver** reads frames, answers them, ticks the timed pushes and
//!   pings, watches the idle deadline, kicks and shutdown;
//! * the **writer** owns the sink and drains a bounded queue
//!   ([`Outbound`]), feeding every ready message and flushing once per batch.
//!   A write that makes no progress for `--write-timeout` means the client
//!   stopped reading: the writer gives up with 1013 and the connection ends.
//!
//! Timed pushes are only queued when the queue is empty, so they never pile up
//! behind a slow client; pushes that find no room are counted as dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use shared::{ClientMessage, ErrorCode, ServerMessage, close_code};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::registry::{ClientCounters, ClientHandle, CloseRequest, Outbound, millis};
use crate::state::AppState;
use crate::wire::{self, ReadError};

/// Pushes written between two flushes of a burst.
const BURST_BATCH: u32 = 512;
/// Messages taken from the queue per batch.
const QUEUE_BATCH: usize = 256;
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
pub async fn run(socket: WebSocket, state: AppState, peer: Peer) {
    let started = Instant::now();
    let config = &state.config;
    let (outbound_tx, outbound_rx) = mpsc::channel(config.send_queue.max(1));
    let (kick_tx, kick_rx) = watch::channel(None);
    let counters = Arc::new(ClientCounters::default());
    let conn = state.registry.next_conn();
    let handle = ClientHandle {
        conn,
        remote_addr: peer.remote_addr,
        connected_at: SystemTime::now(),
        outbound: outbound_tx.clone(),
        close: kick_tx,
        counters: counters.clone(),
    };
    if let Some(old) = state.registry.insert(&peer.id, handle) {
        old.close.send_replace(Some(CloseRequest {
            code: close_code::REPLACED,
            reason: "replaced".into(),
        }));
    }
    Metrics::add(&state.metrics.connections_open, 1);
    Metrics::add(&state.metrics.connections_total, 1);
    tracing::info!(id = %peer.id, remote = %peer.remote_addr, path = "/ws", "connect");

    let (sink, stream) = socket.split();
    let (close_tx, close_rx) = oneshot::channel();
    let writer_gone = CancellationToken::new();
    let writer = Writer {
        sink,
        queue: outbound_rx,
        close: close_rx,
        seq: 0,
        state: &state,
        counters: &counters,
    };
    let driver = Driver {
        stream,
        outbound: outbound_tx,
        kick: kick_rx,
        state: &state,
        counters: &counters,
        bad_in_a_row: 0,
    };
    let welcome = ServerMessage::Welcome {
        client_id: peer.id.clone(),
        push_interval_ms: u64::try_from(config.push_interval.as_millis()).unwrap_or(u64::MAX),
    };
    let ((), end) = tokio::join!(
        async {
            let end = writer.run().await;
            if let Some(end) = end {
                tracing::debug!(id = %peer.id, ?end, "writer ended");
            }
            writer_gone.cancel();
        },
        driver.run(welcome, peer.burst, close_tx, &writer_gone),
    );

    state.registry.remove(&peer.id, conn);
    state.metrics.connections_open.fetch_sub(1, Relaxed);
    tracing::info!(
        id = %peer.id,
        remote = %peer.remote_addr,
        code = end.code,
        reason = %end.reason,
        duration_ms = started.elapsed().as_millis() as u64,
        messages_in = counters.messages_in.load(Relaxed),
        messages_out = counters.messages_out.load(Relaxed),
        "disconnect"
    );
}

struct Driver<'a> {
    stream: SplitStream<WebSocket>,
    outbound: mpsc::Sender<Outbound>,
    kick: watch::Receiver<Option<CloseRequest>>,
    state: &'a AppState,
    counters: &'a ClientCounters,
    bad_in_a_row: u32,
}

impl Driver<'_> {
    async fn run(
        mut self,
        welcome: ServerMessage,
        burst: Option<u32>,
        close_tx: oneshot::Sender<CloseFrame>,
        writer_gone: &CancellationToken,
    ) -> End {
        let config = &self.state.config;
        // The welcome goes first: nothing else is queued before it.
        if self.send(wire::text(&welcome)).await.is_err() {
            return End::with(close_code::INTERNAL_ERROR, "writer ended before welcome");
        }
        if let Some(count) = burst {
            if let Some(refusal) = self.burst_refusal(count) {
                let _ = self.send(refusal).await;
            } else if self.outbound.send(Outbound::Burst { count }).await.is_err() {
                return End::with(close_code::INTERNAL_ERROR, "writer ended before the burst");
            }
        }
        let mut push_tick = ticker(config.push_interval);
        let mut ping_tick = ticker(config.ping_interval);
        let idle = tokio::time::sleep(config.idle_timeout);
        tokio::pin!(idle);
        let shutdown = self.state.shutdown.clone();

        let end = loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    break Some(End::with(close_code::GOING_AWAY, "server shutting down"));
                }
                () = writer_gone.cancelled() => break None,
                Ok(()) = self.kick.changed() => {
                    if let Some(request) = self.kick.borrow_and_update().clone() {
                        break Some(End::with(request.code, request.reason));
                    }
                }
                frame = self.stream.next() => {
                    idle.as_mut().reset(tokio::time::Instant::now() + config.idle_timeout);
                    match frame {
                        Some(Ok(message)) => {
                            if let Some(end) = self.on_message(message).await {
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
        match end {
            Some(end) => self.finish(end, close_tx).await,
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
            Message::Text(text) => (text.len(), self.on_text(&text).await),
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
        self.counters.messages_in.fetch_add(1, Relaxed);
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

    /// Handles one text frame; returns the direct reply, if any.
    async fn on_text(&mut self, text: &str) -> Option<Message> {
        let message = match ClientMessage::from_json(text) {
            Ok(message) => {
                self.bad_in_a_row = 0;
                message
            }
            Err(err) => {
                self.bad_in_a_row += 1;
                return Some(wire::error(err.code(), err.to_string()));
            }
        };
        match message {
            ClientMessage::Echo { id, body } => Some(wire::text(&ServerMessage::Echo { id, body })),
            ClientMessage::Ping { t } => Some(wire::text(&ServerMessage::Pong { t })),
            ClientMessage::Burst { count } => {
                if let Some(refusal) = self.burst_refusal(count) {
                    return Some(refusal);
                }
                // An error means the writer is gone; the loop sees it next.
                let _ = self.outbound.send(Outbound::Burst { count }).await;
                None
            }
            _ => Some(wire::error(
                ErrorCode::UnknownType,
                "this message type is not handled by the server".into(),
            )),
        }
    }

    fn burst_refusal(&self, count: u32) -> Option<Message> {
        let max = self.state.config.max_burst;
        (count > max).then(|| {
            wire::error(
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
    counters: &'a ClientCounters,
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
        let mut batch = Vec::with_capacity(QUEUE_BATCH);
        loop {
            tokio::select! {
                biased;
                frame = &mut self.close => {
                    if let Ok(frame) = frame {
                        self.close_after_queued(frame).await;
                    }
                    return None;
                }
                n = self.queue.recv_many(&mut batch, QUEUE_BATCH) => {
                    if n == 0 {
                        // Every sender is gone; the close request decides what comes next.
                        if let Ok(frame) = (&mut self.close).await {
                            self.send_close(frame).await;
                        }
                        return None;
                    }
                    match self.write_batch(&mut batch).await {
                        Ok(()) => {}
                        Err(WriterEnd::Closed) => return None,
                        Err(end) => return Some(self.fail(end).await),
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

    async fn feed(&mut self, message: Message, len: usize) -> Result<(), WriterEnd> {
        let step = self.sink.feed(message);
        match tokio::time::timeout(self.state.config.write_timeout, step).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(WriterEnd::Failed),
            Err(_) => return Err(WriterEnd::SlowConsumer),
        }
        Metrics::add(&self.state.metrics.bytes_out, len as u64);
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), WriterEnd> {
        let step = self.sink.flush();
        match tokio::time::timeout(self.state.config.write_timeout, step).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(WriterEnd::Failed),
            Err(_) => Err(WriterEnd::SlowConsumer),
        }
    }

    fn count(&self, messages: u64) {
        Metrics::add(&self.state.metrics.messages_out, messages);
        self.counters.messages_out.fetch_add(messages, Relaxed);
    }

    fn push_message(&mut self, body: &str, sent_at_ms: u64) -> Message {
        self.seq += 1;
        wire::text(&ServerMessage::Push {
            seq: self.seq,
            sent_at_ms,
            body: body.to_owned(),
        })
    }

    async fn write_batch(&mut self, batch: &mut Vec<Outbound>) -> Result<(), WriterEnd> {
        let mut written = 0;
        for item in batch.drain(..) {
            match item {
                Outbound::Frame(message) => {
                    let len = message_len(&message);
                    self.feed(message, len).await?;
                    written += 1;
                }
                Outbound::Push { body, sent_at_ms } => {
                    let message = self.push_message(&body, sent_at_ms);
                    let len = message_len(&message);
                    self.feed(message, len).await?;
                    written += 1;
                }
                Outbound::Burst { count } => {
                    self.flush().await?;
                    self.count(written);
                    written = 0;
                    self.burst(count).await?;
                }
            }
        }
        self.flush().await?;
        self.count(written);
        Ok(())
    }

    /// `count` pushes fed in batches with one flush each, then `burst_done`.
    async fn burst(&mut self, count: u32) -> Result<(), WriterEnd> {
        let started = Instant::now();
        let mut left = count;
        while left > 0 {
            let n = left.min(BURST_BATCH);
            for _ in 0..n {
                let message = self.push_message("burst", millis(SystemTime::now()));
                let len = message_len(&message);
                self.feed(message, len).await?;
            }
            self.flush().await?;
            self.count(u64::from(n));
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
        let len = message_len(&done);
        self.feed(done, len).await?;
        self.flush().await?;
        self.count(1);
        Ok(())
    }
}

fn message_len(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(data) => data.len(),
        _ => 0,
    }
}
