//! The connection's write side, run by its one task between reads: what is
//! queued for it ([`Outbound`], from the connection itself, the registry's
//! admin pushes and broadcasts) is fed into the socket and flushed once per
//! batch (a `send` per message would cost a flush, a syscall, each), and a
//! plain burst is written a batch at a time as the pacer grants
//! (`burst.rs`), each batch under one deadline and one flush, its bytes
//! counted in the queue's while it is written; reads, kicks and shutdown
//! get their turn between batches, and what is queued meanwhile goes out
//! between them. A batch (its feeds and its one flush) not written within
//! `--write-timeout` means the client stopped reading:
//! [`Failed::SlowConsumer`], and the connection ends with 1013. One
//! deadline per batch, not per frame: a timer per frame was the largest
//! cost of a burst.
//!
//! In cluster mode a reliable session is written through to Redis before
//! each batch goes out: what a client sees is never lost.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use axum::extract::ws::Message;
use futures_util::{Sink, SinkExt};
use shared::{PushEncoder, ServerMessage};

use super::End;
use super::burst::{Pacer, Plain};
use crate::clock::millis;
use crate::metrics::Metrics;
use crate::queue::{self, message_len};
use crate::registry::{ClientShared, Outbound};
use crate::reliable::{SessionRef, SessionStore, Unwritten};
use crate::state::AppState;
use crate::wire;

/// Messages taken from the queue per batch.
const QUEUE_BATCH: usize = 256;

/// Why writing stopped.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Failed {
    /// No write progress within the write timeout: the client stopped reading.
    SlowConsumer,
    /// The socket failed.
    Gone,
    /// The session could not be written to its store: nothing of the
    /// batch was written.
    Unstored(Unwritten),
}

impl Failed {
    /// How the connection ends, logged and counted here.
    pub(super) fn end(self, state: &AppState) -> End {
        match self {
            Self::SlowConsumer => {
                Metrics::add(&state.metrics.slow_consumer_closes, 1);
                tracing::warn!("closing a slow consumer: writes made no progress");
                End::slow_consumer()
            }
            Self::Gone => End::gone("connection failed"),
            Self::Unstored(unwritten) => {
                tracing::warn!("closing a reliable connection: {unwritten}");
                unwritten.into()
            }
        }
    }
}

/// What is queued for the socket and not written yet.
pub(super) struct Outbox {
    queue: queue::Receiver,
    /// Replies of the connection's own task that found the queue empty:
    /// written first at the next write, without a trip through the queue's
    /// lock. Their bytes count in the server's queued bytes meanwhile.
    direct: Vec<Message>,
    direct_bytes: usize,
    /// Where the direct replies' bytes are counted.
    metrics: Arc<Metrics>,
    /// Taken from the queue, not written yet. Grown on first use and freed
    /// once written: an idle connection holds no batch buffer.
    taken: Vec<Outbound>,
    /// The last push seq of a plain connection (numbered here, in wire
    /// order: timed and admin pushes and the bursts' share one count).
    seq: u64,
    /// Cluster mode, reliable: the session, written through before each batch.
    session: Option<Arc<OnceLock<SessionRef>>>,
}

impl Outbox {
    pub(super) fn new(
        queue: queue::Receiver,
        session: Option<Arc<OnceLock<SessionRef>>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            queue,
            direct: Vec::new(),
            direct_bytes: 0,
            metrics,
            taken: Vec::new(),
            seq: 0,
            session,
        }
    }

    /// Whether there is something to write without waiting: items taken
    /// from the queue, or direct replies (a burst's next batch is the
    /// pacer's to say).
    pub(super) fn busy(&self) -> bool {
        !self.taken.is_empty() || !self.direct.is_empty()
    }

    /// Whether a reply may skip the queue: nothing waits to be written
    /// before it here (the caller checks that the queue is empty too).
    pub(super) fn may_go_direct(&self) -> bool {
        self.taken.is_empty()
    }

    /// A reply written first at the next write (see [`Outbox::may_go_direct`]).
    pub(super) fn push_direct(&mut self, message: Message) {
        let len = message_len(&message);
        self.direct_bytes += len;
        Metrics::add(&self.metrics.send_queue_bytes, len as u64);
        self.direct.push(message);
    }

    /// Bytes of direct replies not written yet (the queue's byte bound
    /// applies to them and the queue together).
    pub(super) fn direct_bytes(&self) -> usize {
        self.direct_bytes
    }

    /// Bytes left under `--send-queue-bytes` for a burst's next batch:
    /// the bound less what the queue and the direct replies hold (`None`:
    /// no bound).
    pub(super) fn burst_room(&self, state: &AppState) -> Option<usize> {
        let bound = state.config.send_queue_bytes;
        (bound > 0).then(|| {
            let held = self.queue.queued_bytes().saturating_add(self.direct_bytes);
            bound.saturating_sub(held)
        })
    }

    /// Waits until something is queued (and takes it); cancel-safe.
    pub(super) async fn ready(&mut self) {
        self.queue.recv_many(&mut self.taken, QUEUE_BATCH).await;
    }

    /// One step of writing: what is queued (up to a batch) under one
    /// deadline and one flush, then the next batch of a plain burst if
    /// `pacer` grants one, under its own. Nothing to write: nothing written.
    pub(super) async fn write<T>(
        &mut self,
        ws: &mut T,
        state: &AppState,
        (shared, queued): (&ClientShared, bool),
        pacer: &mut Pacer,
    ) -> Result<(), Failed>
    where
        T: Sink<Message> + Unpin,
    {
        self.write_queued(ws, state, (shared, queued)).await?;
        if pacer.plain_running() {
            self.burst_batch(ws, state, shared, pacer).await?;
        }
        Ok(())
    }

    /// What is queued, up to a batch, and the direct replies, under one
    /// deadline and one flush.
    async fn write_queued<T>(
        &mut self,
        ws: &mut T,
        state: &AppState,
        (shared, queued): (&ClientShared, bool),
    ) -> Result<(), Failed>
    where
        T: Sink<Message> + Unpin,
    {
        while queued && self.taken.len() < QUEUE_BATCH {
            match self.queue.try_recv() {
                Some(item) => self.taken.push(item),
                None => break,
            }
        }
        if !self.direct.is_empty() {
            // Flushed with what was queued, if anything was.
            let flush = self.taken.is_empty();
            self.write_direct(ws, state, shared, flush).await?;
        }
        if self.taken.is_empty() {
            return Ok(());
        }
        self.persist(state).await?;
        let Self { taken, seq, .. } = self;
        let (mut written, mut bytes, mut dequeued) = (0, 0, 0);
        within(state.config.write_timeout, async {
            for item in taken.drain(..) {
                dequeued += item.queued_len();
                match item {
                    Outbound::Frame(message) => {
                        bytes += feed(ws, message).await?;
                        written += 1;
                    }
                    Outbound::Frames(messages) => {
                        for message in messages {
                            bytes += feed(ws, message).await?;
                            written += 1;
                        }
                    }
                    Outbound::Push { push } => {
                        *seq += 1;
                        bytes += feed(ws, Message::Text(push.encode(*seq).into())).await?;
                        written += 1;
                    }
                    // Counted by the direct write; the flush below writes it.
                    Outbound::Rest { .. } => {}
                }
            }
            flush(ws).await
        })
        .await?;
        // Freed, not kept for the next batch (see `write_direct`).
        *taken = Vec::new();
        // Written and flushed: out of the queue's byte count (the
        // receiver's drop settles a batch that failed).
        self.queue.release(dequeued);
        count(state, shared, written, bytes);
        Ok(())
    }

    /// Writes the direct replies, and flushes them with `flush_now` (without,
    /// they go out with the queued batch that follows).
    async fn write_direct<T>(
        &mut self,
        ws: &mut T,
        state: &AppState,
        shared: &ClientShared,
        flush_now: bool,
    ) -> Result<(), Failed>
    where
        T: Sink<Message> + Unpin,
    {
        let direct = &mut self.direct;
        let (mut written, mut bytes) = (0, 0);
        within(state.config.write_timeout, async {
            for message in direct.drain(..) {
                bytes += feed(ws, message).await?;
                written += 1;
            }
            if flush_now { flush(ws).await } else { Ok(()) }
        })
        .await?;
        // Freed, not kept: an idle connection holds no reply buffer. A
        // drained `Vec` keeps its capacity, and a subscriber's few replies
        // left about 0.5 KiB on each of thousands of idle connections; a
        // busy one pays an allocation per batch, not per message.
        *direct = Vec::new();
        Metrics::sub(&self.metrics.send_queue_bytes, self.direct_bytes as u64);
        self.direct_bytes = 0;
        count(state, shared, written, bytes);
        Ok(())
    }

    /// The next batch of the plain burst as `pacer` grants it, or its
    /// `burst_done` after the last. The batch's bytes (each push at its
    /// largest) count in the queue's from before its first push is made
    /// until it is flushed: `--send-queue-bytes` bounds what a burst holds,
    /// as it bounds what is queued. No room (the queue is full): nothing
    /// now; the queue's writes make room.
    async fn burst_batch<T>(
        &mut self,
        ws: &mut T,
        state: &AppState,
        shared: &ClientShared,
        pacer: &mut Pacer,
    ) -> Result<(), Failed>
    where
        T: Sink<Message> + Unpin,
    {
        let room = self.burst_room(state);
        let limit = state.config.write_timeout;
        let mut batch = match pacer.plain_next(room, tokio::time::Instant::now()) {
            None => return Ok(()),
            Some(Plain::Done {
                count: pushes,
                elapsed_ms,
            }) => {
                let done = wire::text(&ServerMessage::BurstDone {
                    count: pushes,
                    elapsed_ms,
                });
                let mut bytes = 0;
                within(limit, async {
                    bytes = feed(ws, done).await?;
                    flush(ws).await
                })
                .await?;
                count(state, shared, 1, bytes);
                return Ok(());
            }
            Some(Plain::Pushes(batch)) => batch,
        };
        let push = PushEncoder::new(millis(SystemTime::now()), "burst");
        let n = batch.fill(push.max_len());
        if n == 0 {
            return Ok(());
        }
        let held = push.max_len().saturating_mul(n as usize);
        self.queue.hold(held);
        let seq = &mut self.seq;
        let mut bytes = 0;
        within(limit, async {
            for _ in 0..n {
                *seq += 1;
                bytes += feed(ws, Message::Text(push.encode(*seq).into())).await?;
            }
            flush(ws).await
        })
        .await?;
        // Written and flushed (a batch that failed is settled by the
        // receiver's drop, with the connection).
        self.queue.release(held);
        pacer.pushed(n);
        count(state, shared, u64::from(n), bytes);
        // Other connections get their turn between batches.
        tokio::task::yield_now().await;
        Ok(())
    }

    /// Writes what was queued before a close (an `error` that explains a
    /// 1008, say), leaving out pushes, within `grace`.
    pub(super) async fn write_before_close<T>(&mut self, ws: &mut T, grace: Duration)
    where
        T: Sink<Message> + Unpin,
    {
        let direct = std::mem::take(&mut self.direct);
        self.taken
            .splice(0..0, direct.into_iter().map(Outbound::Frame));
        // Out of the count now (what is not written is dropped with the rest).
        Metrics::sub(&self.metrics.send_queue_bytes, self.direct_bytes as u64);
        self.direct_bytes = 0;
        while let Some(item) = self.queue.try_recv() {
            self.taken.push(item);
        }
        let taken = std::mem::take(&mut self.taken);
        let _ = tokio::time::timeout(grace, async {
            for item in taken {
                match item {
                    Outbound::Frame(message) => feed(ws, message).await?,
                    Outbound::Frames(messages) => {
                        for message in messages {
                            feed(ws, message).await?;
                        }
                        0
                    }
                    Outbound::Push { .. } | Outbound::Rest { .. } => 0,
                };
            }
            flush(ws).await
        })
        .await;
    }

    /// Writes the session through, if it is.
    async fn persist(&self, state: &AppState) -> Result<(), Failed> {
        let Some(session) = self.session.as_ref().and_then(|slot| slot.get()) else {
            return Ok(());
        };
        state
            .reliable
            .persist(session)
            .await
            .map_err(Failed::Unstored)
    }
}

impl Drop for Outbox {
    /// Direct replies never written leave the server's queued bytes.
    fn drop(&mut self) {
        Metrics::sub(&self.metrics.send_queue_bytes, self.direct_bytes as u64);
    }
}

/// Feeds one frame into the socket's buffer and returns its size (untimed
/// and uncounted: the batch around it has the deadline and adds the bytes
/// to the metrics once).
async fn feed<T: Sink<Message> + Unpin>(ws: &mut T, message: Message) -> Result<u64, Failed> {
    let len = message_len(&message) as u64;
    ws.feed(message).await.map_err(|_| Failed::Gone)?;
    Ok(len)
}

async fn flush<T: Sink<Message> + Unpin>(ws: &mut T) -> Result<(), Failed> {
    ws.flush().await.map_err(|_| Failed::Gone)
}

fn count(state: &AppState, shared: &ClientShared, messages: u64, bytes: u64) {
    Metrics::add(&state.metrics.messages_out, messages);
    Metrics::add(&state.metrics.bytes_out, bytes);
    shared.messages_out.fetch_add(messages, Relaxed);
}

/// Runs one batch of writes under the write timeout: a batch that does not
/// complete in time means the peer stopped reading.
async fn within(
    limit: Duration,
    batch: impl Future<Output = Result<(), Failed>>,
) -> Result<(), Failed> {
    tokio::time::timeout(limit, batch)
        .await
        .unwrap_or(Err(Failed::SlowConsumer))
}
