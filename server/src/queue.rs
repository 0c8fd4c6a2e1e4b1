//! A connection's outbound queue, bounded in messages (`--send-queue`) and
//! in bytes (`--send-queue-bytes`), and what it carries ([`Outbound`]).
//!
//! A bound in messages alone let a client that never reads hold 1,024 × 16
//! MiB. The bytes of a message count from the moment it is queued until the
//! writer has fed and flushed it: the writer's batch is still queue. A single
//! message is always admitted into an empty queue (so a 16 MiB echo or a
//! large push still passes); the byte bound applies to what waits behind it,
//! so the queue holds at most the bound plus one message.
//!
//! What happens at the bound is what happens at the message bound: a sender
//! that may wait (the driver, answering the client) waits, which stops
//! reading from the client, until the writer makes room or gives up with
//! 1013 after `--write-timeout`; one that may not (an admin push, a timed
//! push, an ack) finds it full. A reserved slot ([`Permit`]) is taken while
//! the queue is under its bound and admits the message it carries whatever
//! its size: the reliable path reserves before it numbers a message.
//!
//! The count of one queue and the server-wide gauge (`ws_send_queue_bytes`)
//! change together under one lock, which the receiver's drop closes: what is
//! left in the queue then leaves the gauge at once, and nothing sent later
//! is counted.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::ws::Message;
use tokio::sync::{Notify, mpsc};

use shared::PushEncoder;

use crate::metrics::Metrics;

/// The queue is closed: the writer is gone.
#[derive(Debug)]
pub(crate) struct Closed;

/// Why a message could not be queued without waiting.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TrySendError {
    /// No room, in messages or in bytes.
    Full,
    /// The writer is gone.
    Closed,
}

/// The bytes of one queue.
#[derive(Debug)]
struct Bytes {
    /// Queued bytes, and whether the receiver is gone (then always 0).
    state: Mutex<(usize, bool)>,
    /// `--send-queue-bytes`; 0: no bound.
    limit: usize,
    /// Signalled when bytes leave the queue.
    room: Notify,
    metrics: Arc<Metrics>,
}

impl Bytes {
    fn gauge(&self) -> &AtomicU64 {
        &self.metrics.send_queue_bytes
    }

    /// Counts `len` more bytes if they fit (or `force`); `Err(Closed)` once the receiver is gone.
    fn admit(&self, len: usize, force: bool) -> Result<bool, Closed> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (queued, closed) = &mut *state;
        if *closed {
            return Err(Closed);
        }
        let fits = self.limit == 0 || *queued == 0 || queued.saturating_add(len) <= self.limit;
        if !(fits || force) {
            return Ok(false);
        }
        *queued += len;
        Metrics::add(self.gauge(), len as u64);
        Ok(true)
    }

    /// Whether a reserved slot may be taken now.
    fn has_room(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.limit == 0 || state.1 || state.0 < self.limit
    }

    /// `len` bytes left the queue.
    fn release(&self, len: usize) {
        if len == 0 {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.1 {
            let len = len.min(state.0);
            state.0 -= len;
            Metrics::sub(self.gauge(), len as u64);
        }
        drop(state);
        self.room.notify_one();
    }

    /// The receiver is gone: whatever is left leaves the gauge.
    fn close(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Metrics::sub(self.gauge(), state.0 as u64);
        *state = (0, true);
        drop(state);
        self.room.notify_one();
    }

    fn queued(&self) -> usize {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).0
    }
}

/// What a connection's writer is asked to send.
#[derive(Debug)]
pub enum Outbound {
    /// A frame ready to go.
    Frame(Message),
    /// Frames that must go out back to back (a reliable resume and its replay).
    Frames(Vec<Message>),
    /// A push; the writer numbers it so `seq` follows the wire order. The
    /// encoder (its body escaped once, its time) is shared by every client
    /// of a broadcast.
    Push {
        /// The push's body and time, encoded but for `seq`.
        push: Arc<PushEncoder>,
    },
    /// A burst of `count` pushes followed by `burst_done`, written in batches.
    Burst {
        /// How many pushes.
        count: u32,
    },
}

/// A new queue of `messages` (at least one) and `bytes` (0: unbounded).
pub(crate) fn channel(messages: usize, bytes: usize, metrics: Arc<Metrics>) -> (Sender, Receiver) {
    let (tx, rx) = mpsc::channel(messages.max(1));
    let bytes = Arc::new(Bytes {
        state: Mutex::new((0, false)),
        limit: bytes,
        room: Notify::new(),
        metrics,
    });
    (
        Sender {
            tx,
            bytes: bytes.clone(),
        },
        Receiver { rx, bytes },
    )
}

/// The sending side; cloned into the registry.
#[derive(Debug, Clone)]
pub(crate) struct Sender {
    tx: mpsc::Sender<Outbound>,
    bytes: Arc<Bytes>,
}

impl Sender {
    /// Queues `item`, waiting for room in messages and bytes.
    pub(crate) async fn send(&self, item: Outbound) -> Result<(), Closed> {
        let len = item.queued_len();
        while !self.bytes.admit(len, false)? {
            self.bytes.room.notified().await;
        }
        if self.tx.send(item).await.is_err() {
            self.bytes.release(len);
            return Err(Closed);
        }
        Ok(())
    }

    /// Queues `item` if there is room now.
    pub(crate) fn try_send(&self, item: Outbound) -> Result<(), TrySendError> {
        let permit = self.tx.try_reserve().map_err(from_mpsc)?;
        match self.bytes.admit(item.queued_len(), false) {
            Ok(true) => {
                permit.send(item);
                Ok(())
            }
            Ok(false) => Err(TrySendError::Full),
            Err(Closed) => Err(TrySendError::Closed),
        }
    }

    /// A slot, once the queue is under its byte bound and has a free message.
    pub(crate) async fn reserve(&self) -> Result<Permit<'_>, Closed> {
        while !self.bytes.has_room() {
            self.bytes.room.notified().await;
        }
        let permit = self.tx.reserve().await.map_err(|_| Closed)?;
        Ok(Permit {
            permit,
            bytes: &self.bytes,
        })
    }

    /// A slot if the queue is under its byte bound and has a free message now.
    pub(crate) fn try_reserve(&self) -> Result<Permit<'_>, TrySendError> {
        if !self.bytes.has_room() {
            return Err(TrySendError::Full);
        }
        let permit = self.tx.try_reserve().map_err(from_mpsc)?;
        Ok(Permit {
            permit,
            bytes: &self.bytes,
        })
    }

    /// Free message slots now.
    pub(crate) fn capacity(&self) -> usize {
        self.tx.capacity()
    }

    /// The message bound.
    pub(crate) fn max_capacity(&self) -> usize {
        self.tx.max_capacity()
    }

    /// Messages queued now.
    pub(crate) fn len(&self) -> usize {
        self.max_capacity() - self.capacity()
    }

    /// Bytes queued now.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.bytes.queued()
    }
}

fn from_mpsc<T>(err: mpsc::error::TrySendError<T>) -> TrySendError {
    match err {
        mpsc::error::TrySendError::Full(_) => TrySendError::Full,
        mpsc::error::TrySendError::Closed(_) => TrySendError::Closed,
    }
}

/// A reserved slot: its message is admitted whatever its size.
pub(crate) struct Permit<'a> {
    permit: mpsc::Permit<'a, Outbound>,
    bytes: &'a Bytes,
}

impl Permit<'_> {
    /// Queues `item` into the slot (dropped if the writer is gone).
    pub(crate) fn send(self, item: Outbound) {
        if let Ok(true) = self.bytes.admit(item.queued_len(), true) {
            self.permit.send(item);
        }
    }
}

/// The receiving side, owned by the writer.
#[derive(Debug)]
pub(crate) struct Receiver {
    rx: mpsc::Receiver<Outbound>,
    bytes: Arc<Bytes>,
}

impl Receiver {
    /// Takes up to `limit` items; their bytes stay counted until [`Self::release`].
    pub(crate) async fn recv_many(&mut self, buffer: &mut Vec<Outbound>, limit: usize) -> usize {
        self.rx.recv_many(buffer, limit).await
    }

    /// Takes an item if one is queued; its bytes stay counted until [`Self::release`].
    pub(crate) fn try_recv(&mut self) -> Option<Outbound> {
        self.rx.try_recv().ok()
    }

    /// `len` bytes taken from the queue were written.
    pub(crate) fn release(&self, len: usize) {
        self.bytes.release(len);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.rx.close();
        self.bytes.close();
    }
}

impl Outbound {
    /// The bytes this item holds while queued.
    pub(crate) fn queued_len(&self) -> usize {
        match self {
            Self::Frame(message) => message_len(message),
            Self::Frames(messages) => messages.iter().map(message_len).sum(),
            Self::Push { push } => push.max_len(),
            Self::Burst { .. } => 0,
        }
    }
}

/// The payload bytes of a message.
pub(crate) fn message_len(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(data) => data.len(),
        Message::Ping(data) | Message::Pong(data) => data.len(),
        Message::Close(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;

    fn frame(len: usize) -> Outbound {
        Outbound::Frame(Message::Binary(vec![0; len].into()))
    }

    #[tokio::test]
    async fn one_message_enters_an_empty_queue_and_the_bound_holds_behind_it() {
        let metrics = Arc::new(Metrics::default());
        let (tx, mut rx) = channel(10, 100, metrics.clone());
        tx.try_send(frame(500)).unwrap();
        assert_eq!(tx.try_send(frame(1)), Err(TrySendError::Full));
        assert!(matches!(tx.try_reserve(), Err(TrySendError::Full)));
        assert_eq!(metrics.send_queue_bytes.load(Relaxed), 500);
        let item = rx.try_recv().unwrap();
        // Taken but not written: still counted.
        assert_eq!(tx.queued_bytes(), 500);
        rx.release(item.queued_len());
        assert_eq!(tx.queued_bytes(), 0);
        tx.try_send(frame(60)).unwrap();
        tx.try_send(frame(40)).unwrap();
        assert_eq!(tx.try_send(frame(1)), Err(TrySendError::Full));
        assert_eq!(metrics.send_queue_bytes.load(Relaxed), 100);
    }

    #[tokio::test]
    async fn a_reserved_slot_admits_any_size_while_under_the_bound() {
        let metrics = Arc::new(Metrics::default());
        let (tx, _rx) = channel(10, 100, metrics.clone());
        tx.try_send(frame(50)).unwrap();
        tx.try_reserve().unwrap().send(frame(1000));
        assert_eq!(tx.queued_bytes(), 1050);
        assert!(matches!(tx.try_reserve(), Err(TrySendError::Full)));
    }

    #[tokio::test]
    async fn a_waiting_sender_goes_on_once_the_writer_releases() {
        let metrics = Arc::new(Metrics::default());
        let (tx, mut rx) = channel(10, 100, metrics);
        tx.try_send(frame(80)).unwrap();
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(frame(80)).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let item = rx.try_recv().unwrap();
        rx.release(item.queued_len());
        waiting.await.unwrap().unwrap();
        assert_eq!(tx.queued_bytes(), 80);
    }

    #[tokio::test]
    async fn the_receivers_drop_takes_what_is_left_out_of_the_gauge() {
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = channel(10, 0, metrics.clone());
        tx.try_send(frame(70)).unwrap();
        tx.try_send(frame(30)).unwrap();
        assert_eq!(metrics.send_queue_bytes.load(Relaxed), 100);
        drop(rx);
        assert_eq!(metrics.send_queue_bytes.load(Relaxed), 0);
        assert_eq!(tx.try_send(frame(1)), Err(TrySendError::Closed));
        assert!(tx.send(frame(1)).await.is_err());
        assert_eq!(metrics.send_queue_bytes.load(Relaxed), 0);
    }
}
