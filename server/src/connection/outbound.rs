//! The connection's write side, run by its one task between reads: what is
//! queued for it ([`Outbound`], from the connection itself, the registry's
//! admin pushes and broadcasts) is fed into the socket and flushed once per
//! batch (a `send` per message would cost a flush, a syscall, each), and a
//! plain burst is written a batch at a time, each batch under one deadline
//! and one flush, so that reads, kicks and shutdown get their turn between
//! batches. A batch (its feeds and its one flush) not written within
//! `--write-timeout` means the client stopped reading: [`Failed::SlowConsumer`],
//! and the connection ends with 1013. One deadline per batch, not per
//! frame: a timer per frame was the largest cost of a burst.
//!
//! In cluster mode a reliable session is written through to Redis before
//! each batch goes out: what a client sees is never lost.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::ws::Message;
use futures_util::{Sink, SinkExt};
use shared::{PushEncoder, ServerMessage};

use super::End;
use crate::metrics::Metrics;
use crate::queue::{self, message_len};
use crate::registry::{ClientShared, Outbound, millis};
use crate::reliable::{SessionRef, SessionStore, Unwritten};
use crate::state::AppState;
use crate::wire;

/// Pushes written between two flushes of a burst.
const BURST_BATCH: u32 = 512;
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

/// A plain burst being written.
#[derive(Debug)]
struct Burst {
    count: u32,
    left: u32,
    started: Instant,
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
    /// Taken from the queue, not written yet (what waits behind a burst).
    /// Grown on first use: an idle connection holds no batch buffer.
    taken: Vec<Outbound>,
    /// The last push seq of a plain connection (numbered here, in wire order).
    seq: u64,
    /// A plain burst in progress: queued items wait behind it, in order.
    burst: Option<Burst>,
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
            burst: None,
            session,
        }
    }

    /// Whether there is something to write without waiting: a burst in
    /// progress, items taken from the queue, or direct replies.
    pub(super) fn busy(&self) -> bool {
        self.burst.is_some() || !self.taken.is_empty() || !self.direct.is_empty()
    }

    /// Whether a reply may skip the queue: nothing waits to be written
    /// before it here (the caller checks that the queue is empty too).
    pub(super) fn may_go_direct(&self) -> bool {
        self.burst.is_none() && self.taken.is_empty()
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

    /// Waits until something is queued (and takes it); cancel-safe.
    pub(super) async fn ready(&mut self) {
        self.queue.recv_many(&mut self.taken, QUEUE_BATCH).await;
    }

    /// One step of writing: the next batch of a plain burst if one runs,
    /// else what is queued, up to a burst (which starts it), under one
    /// deadline and one flush. Nothing queued: nothing written.
    pub(super) async fn write<T>(
        &mut self,
        ws: &mut T,
        state: &AppState,
        (shared, queued): (&ClientShared, bool),
    ) -> Result<(), Failed>
    where
        T: Sink<Message> + Unpin,
    {
        if self.burst.is_some() {
            return self.burst_batch(ws, state, shared).await;
        }
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
        // Up to and including the first burst; what follows waits for it.
        let end = self
            .taken
            .iter()
            .position(|item| matches!(item, Outbound::Burst { .. }))
            .map_or(self.taken.len(), |at| at + 1);
        let Self {
            taken, seq, burst, ..
        } = self;
        let (mut written, mut bytes, mut dequeued) = (0, 0, 0);
        within(state.config.write_timeout, async {
            for item in taken.drain(..end) {
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
                    Outbound::Burst { count } => {
                        *burst = Some(Burst {
                            count,
                            left: count,
                            started: Instant::now(),
                        });
                    }
                }
            }
            flush(ws).await
        })
        .await?;
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
        Metrics::sub(&self.metrics.send_queue_bytes, self.direct_bytes as u64);
        self.direct_bytes = 0;
        count(state, shared, written, bytes);
        Ok(())
    }

    /// The next batch of the plain burst, or its `burst_done` after the last.
    async fn burst_batch<T>(
        &mut self,
        ws: &mut T,
        state: &AppState,
        shared: &ClientShared,
    ) -> Result<(), Failed>
    where
        T: Sink<Message> + Unpin,
    {
        let Some(burst) = &mut self.burst else {
            return Ok(());
        };
        let limit = state.config.write_timeout;
        if burst.left == 0 {
            let done = wire::text(&ServerMessage::BurstDone {
                count: burst.count,
                elapsed_ms: u64::try_from(burst.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            });
            self.burst = None;
            let mut bytes = 0;
            within(limit, async {
                bytes = feed(ws, done).await?;
                flush(ws).await
            })
            .await?;
            count(state, shared, 1, bytes);
            return Ok(());
        }
        let n = burst.left.min(BURST_BATCH);
        let seq = &mut self.seq;
        let mut bytes = 0;
        within(limit, async {
            let push = PushEncoder::new(millis(SystemTime::now()), "burst");
            for _ in 0..n {
                *seq += 1;
                bytes += feed(ws, Message::Text(push.encode(*seq).into())).await?;
            }
            flush(ws).await
        })
        .await?;
        burst.left -= n;
        count(state, shared, u64::from(n), bytes);
        // Other connections get their turn between batches.
        tokio::task::yield_now().await;
        Ok(())
    }

    /// Writes what was queued before a close (an `error` that explains a
    /// 1008, say), leaving out bursts, within `grace`.
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
                    Outbound::Push { .. } | Outbound::Burst { .. } => 0,
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
