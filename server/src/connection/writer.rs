//! The writer: owns the sink and drains the connection's bounded queue
//! ([`Outbound`]), feeding every ready message and flushing once per batch
//! (a `send` per message would cost a flush, a syscall, each). A batch (its
//! feeds and its one flush) not written within `--write-timeout` means the
//! client stopped reading: the writer gives up with 1013 and the connection
//! ends. One deadline per batch, not per frame: a timer per frame was the
//! largest cost of a burst. Generic over the sink, so it runs on in-memory
//! channels in the unit tests.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt};
use shared::{PushEncoder, ServerMessage, close_code};
use tokio::sync::oneshot;

use super::CLOSE_GRACE;
use crate::metrics::Metrics;
use crate::queue;
use crate::registry::{ClientShared, Outbound, millis};
use crate::reliable::{SessionRef, SessionStore, Unwritten};
use crate::state::AppState;
use crate::wire;

/// Pushes written between two flushes of a burst.
const BURST_BATCH: u32 = 512;
/// Messages taken from the queue per batch.
const QUEUE_BATCH: usize = 256;

pub(super) struct Writer<'a, K> {
    sink: K,
    queue: queue::Receiver,
    close: oneshot::Receiver<CloseFrame>,
    /// The last push seq of a plain connection (numbered here, in wire order).
    seq: u64,
    state: &'a AppState,
    shared: &'a ClientShared,
    /// Cluster mode, reliable: the session, written through to Redis
    /// before each batch goes out.
    session: Option<std::sync::Arc<std::sync::OnceLock<SessionRef>>>,
}

/// Why the writer stopped early.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum WriterEnd {
    /// No write progress within the write timeout: closed with 1013.
    SlowConsumer,
    /// The socket failed.
    Failed,
    /// A close request arrived during a burst and its frame was sent.
    Closed,
    /// The session could not be written to its store: nothing of the
    /// batch was written; closed with 4002 or 1013.
    Unstored(Unwritten),
}

impl<'a, K> Writer<'a, K>
where
    K: Sink<Message> + Unpin,
{
    pub(super) fn new(
        sink: K,
        queue: queue::Receiver,
        close: oneshot::Receiver<CloseFrame>,
        state: &'a AppState,
        shared: &'a ClientShared,
    ) -> Self {
        Self {
            sink,
            queue,
            close,
            seq: 0,
            state,
            shared,
            session: None,
        }
    }

    /// Writes the session in `slot` (once bound) through to its store
    /// before each batch.
    pub(super) fn writing_through(
        mut self,
        slot: Option<std::sync::Arc<std::sync::OnceLock<SessionRef>>>,
    ) -> Self {
        self.session = slot;
        self
    }

    /// Writes the session through, if it is.
    async fn persist(&self) -> Result<(), WriterEnd> {
        let Some(session) = self.session.as_ref().and_then(|slot| slot.get()) else {
            return Ok(());
        };
        self.state
            .reliable
            .persist(session)
            .await
            .map_err(WriterEnd::Unstored)
    }

    /// Writes until the driver asks for the close frame or the socket fails.
    pub(super) async fn run(mut self) -> Option<WriterEnd> {
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
        if let WriterEnd::Unstored(unwritten) = end {
            tracing::warn!("closing a reliable connection: {unwritten}");
            let (code, reason) = match unwritten {
                Unwritten::TakenOver => (
                    close_code::REPLACED,
                    "session resumed on another connection",
                ),
                Unwritten::Gone => (close_code::TRY_AGAIN_LATER, super::SESSION_GONE),
                _ => (
                    close_code::TRY_AGAIN_LATER,
                    "session store unavailable: try again later",
                ),
            };
            self.send_close(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            })
            .await;
        }
        if end == WriterEnd::SlowConsumer {
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
        while let Some(item) = self.queue.try_recv() {
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
        // Stored before it is sent: what a client sees is never lost.
        self.persist().await?;
        let limit = self.state.config.write_timeout;
        let mut items = batch.drain(..);
        loop {
            let (mut written, mut bytes, mut dequeued) = (0, 0, 0);
            let mut burst = None;
            within(limit, async {
                for item in items.by_ref() {
                    dequeued += item.queued_len();
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
                        Outbound::Push { push } => {
                            let message = self.push_message(&push);
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
            // Written and flushed: out of the queue's byte count (the
            // receiver's drop settles a batch that failed).
            self.queue.release(dequeued);
            self.count(written, bytes);
            match burst {
                Some(count) => self.burst(count).await?,
                None => return Ok(()),
            }
            if items.len() == 0 {
                return Ok(()); // Nothing after the burst: no empty flush.
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

fn message_len(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(data) => data.len(),
        _ => 0,
    }
}
