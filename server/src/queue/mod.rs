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
//! What happens at the bound is what happens at the message bound: the
//! connection's own task, which both answers its client and drains the
//! queue, queues its replies whatever the bound ([`Sender::force_send`]) and
//! stops reading from the client while the queue is over it, until its
//! writes make room or give up with 1013 after `--write-timeout`; any other
//! sender (an admin push, a broadcast) finds it full. A reserved slot
//! ([`Permit`]) is taken while the queue is under its bound and admits the
//! message it carries whatever its size: a push to a reliable session
//! reserves before it numbers the push.
//!
//! The count of one queue and the server-wide gauge (`ws_send_queue_bytes`)
//! change together under one lock, which the receiver's drop closes: what is
//! left in the queue then leaves the gauge at once, and nothing sent later
//! is counted.
//!
//! Why not tokio's `mpsc`: its channel allocates a cache-padded shared part
//! and a first block of 32 slots up front, about 1.8 KiB per connection, held
//! by every idle connection. Here the items, slots and bytes share one small
//! lock, and the items live in a `VecDeque` that allocates on first use and
//! is given back once a large batch has drained: an idle connection's queue
//! is one allocation of about 200 bytes. The receiver's waker is kept under
//! the same lock, set by a receive that found nothing and taken by the next
//! push (woken once the lock is released), so no wake-up is lost and a
//! dropped `recv_many` future leaves at most one spurious wake-up behind. A
//! tokio `Notify` there cost a second lock and its waiter list at every
//! push and every wait: about 3% of the server's CPU per delivery in a
//! channel's fan-out, where each publication wakes every subscriber's
//! queue. No sender ever waits for room.
//!
//! A channel's frame for an idle connection skips the queue altogether
//! (`sink.rs`): with nothing queued and the receiver
//! waiting, it is written into the socket by the sender, through the
//! socket's [`SocketLink`] (see `serve::link` for why and its rules). The
//! receive that finds nothing marks the link idle under this queue's lock;
//! the connection's task marks it busy before anything else it does.

mod sink;

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::task::{Poll, Waker};

use axum::extract::ws::Message;

use shared::PushEncoder;

use crate::metrics::Metrics;
use crate::registry::ClientShared;
use crate::serve::SocketLink;

/// Why a message could not be queued without waiting.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TrySendError {
    /// No room, in messages or in bytes.
    Full,
    /// The writer is gone.
    Closed,
}

/// A drained queue keeps its buffer up to this many slots; a larger one
/// (after a flood) is given back.
const KEPT_SLOTS: usize = 32;

/// What one queue holds, under its lock.
#[derive(Debug, Default)]
struct State {
    items: VecDeque<Outbound>,
    /// Slots taken by permits not used yet.
    reserved: usize,
    /// Bytes queued, from admission until the writer releases them.
    bytes: usize,
    /// Live senders; at 0 the receiver ends once the queue is empty.
    senders: usize,
    /// The receiver is gone.
    closed: bool,
    /// Woken without an item ([`Wake`]): the receiver's wait returns.
    woken: bool,
    /// The receiver's task, while its receive waits: woken when an item
    /// arrives, the last sender goes, or a [`Wake`] wakes it.
    waiter: Option<Waker>,
    /// A channel's frame did not fit: the connection is closing as a slow
    /// consumer, and no later channel frame may reach its client (a
    /// smaller one could still fit, and the client would then recover from
    /// past the one that was dropped).
    failed: bool,
    /// Frames written directly (`sink.rs`): counted here,
    /// under the lock the write holds anyway, rather than in the client's
    /// counters (one more cold cache line per delivery).
    written: u64,
}

/// One queue, shared by its senders and its receiver, and by the channels
/// the connection subscribed to: the hub holds it as the connection's
/// [`Sink`](crate::channels::hub::Sink) (see [`Sender::channel_sink`]), so that a delivery's first
/// touch of the connection is its queue's lock.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// `--send-queue`: items plus reserved slots.
    messages: usize,
    /// `--send-queue-bytes`; 0: no bound.
    limit: usize,
    metrics: Arc<Metrics>,
    /// The socket's link, for direct writes while the connection is idle.
    link: Option<Arc<SocketLink>>,
    /// The client's shared part, asked to close when a channel's frame
    /// does not fit (weak: it holds this queue's [`Wake`]).
    client: OnceLock<Weak<ClientShared>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn gauge(&self) -> &AtomicU64 {
        &self.metrics.send_queue_bytes
    }

    fn slot_free(&self, state: &State) -> bool {
        state.items.len() + state.reserved < self.messages
    }

    /// Whether `len` more bytes fit (one message always enters an empty queue).
    fn bytes_fit(&self, state: &State, len: usize) -> bool {
        self.limit == 0 || state.bytes == 0 || state.bytes.saturating_add(len) <= self.limit
    }

    /// Whether a reserved slot may be taken now (the queue is under its byte bound).
    fn under_bound(&self, state: &State) -> bool {
        self.limit == 0 || state.bytes < self.limit
    }

    /// Queues `item` of `len` bytes (the caller checked the room), then
    /// releases the lock and wakes the receiver if it waits.
    fn push(&self, mut state: MutexGuard<'_, State>, item: Outbound, len: usize) {
        state.bytes += len;
        Metrics::add(self.gauge(), len as u64);
        state.items.push_back(item);
        Self::wake(state);
    }

    /// Releases the lock, then wakes the receiver if it waits.
    fn wake(mut state: MutexGuard<'_, State>) {
        let waiter = state.waiter.take();
        drop(state);
        if let Some(waiter) = waiter {
            waiter.wake();
        }
    }

    /// Waits until `attempt` (run under the lock) gives an answer; the
    /// waker is left under the same lock, so a push after the attempt
    /// finds it.
    async fn wait<T>(&self, mut attempt: impl FnMut(&mut State) -> Option<T>) -> T {
        std::future::poll_fn(|cx| {
            let mut state = self.lock();
            if let Some(answer) = attempt(&mut state) {
                return Poll::Ready(answer);
            }
            match &state.waiter {
                Some(waiter) if waiter.will_wake(cx.waker()) => {}
                _ => state.waiter = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }
}

/// What a connection's writer is asked to send.
#[derive(Debug)]
pub enum Outbound {
    /// A frame ready to go.
    Frame(Message),
    /// Frames that must go out back to back (a reliable resume and its
    /// replay, a batch of a reliable burst).
    Frames(Vec<Message>),
    /// A push; the writer numbers it so `seq` follows the wire order. The
    /// encoder (its body escaped once, its time) is shared by every client
    /// of a broadcast.
    Push {
        /// The push's body and time, encoded but for `seq`.
        push: Arc<PushEncoder>,
    },
    /// A direct write left `len` bytes in the socket's link: the writer's
    /// next flush writes them (counted here until then).
    Rest {
        /// The bytes left.
        len: usize,
    },
}

/// A new queue of `messages` (at least one) and `bytes` (0: unbounded).
#[cfg(test)]
pub(crate) fn channel(messages: usize, bytes: usize, metrics: Arc<Metrics>) -> (Sender, Receiver) {
    linked(messages, bytes, metrics, None)
}

/// A new queue (see [`channel`]) whose idle receiver's socket `link` is
/// written to directly by its channels' sink (`sink.rs`).
pub(crate) fn linked(
    messages: usize,
    bytes: usize,
    metrics: Arc<Metrics>,
    link: Option<Arc<SocketLink>>,
) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            senders: 1,
            ..State::default()
        }),
        messages: messages.max(1),
        limit: bytes,
        metrics,
        link,
        client: OnceLock::new(),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// Wakes the receiver without queueing anything: the connection's one
/// wake-up source carries its close requests too (see `registry.rs`).
/// Not a sender: it does not keep the queue open.
#[derive(Debug, Clone)]
pub(crate) struct Wake(Arc<Shared>);

impl Wake {
    /// The receiver's wait (or its next one) returns.
    pub(crate) fn wake(&self) {
        let mut state = self.0.lock();
        state.woken = true;
        Shared::wake(state);
    }
}

/// The sending side; cloned into the registry.
#[derive(Debug)]
pub(crate) struct Sender {
    shared: Arc<Shared>,
}

impl Sender {
    /// A [`Wake`] of this queue's receiver.
    pub(crate) fn waker(&self) -> Wake {
        Wake(self.shared.clone())
    }
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.senders -= 1;
        if state.senders == 0 {
            Shared::wake(state);
        }
    }
}

impl Sender {
    /// Queues `item` if there is room now.
    pub(crate) fn try_send(&self, item: Outbound) -> Result<(), TrySendError> {
        let shared = &*self.shared;
        let len = item.queued_len();
        let state = shared.lock();
        if state.closed {
            return Err(TrySendError::Closed);
        }
        if !(shared.slot_free(&state) && shared.bytes_fit(&state, len)) {
            return Err(TrySendError::Full);
        }
        shared.push(state, item, len);
        Ok(())
    }

    /// This queue as the sink of the connection's channels, which asks
    /// `client` to close when a frame does not fit.
    pub(crate) fn channel_sink(&self, client: &Arc<ClientShared>) -> Arc<Shared> {
        let _ = self.shared.client.set(Arc::downgrade(client));
        self.shared.clone()
    }

    /// Queues `item` whatever the bounds (dropped if the receiver is gone).
    /// For the connection's own task, which also drains the queue: it must
    /// never wait for room only it can make. It keeps the bounds by reading
    /// from its client only while [`Sender::has_room`].
    pub(crate) fn force_send(&self, item: Outbound) {
        let shared = &*self.shared;
        let len = item.queued_len();
        let state = shared.lock();
        if state.closed {
            drop(state);
            return; // `item` is dropped here, outside the lock.
        }
        shared.push(state, item, len);
    }

    /// Whether the queue is under its bounds, in messages and in bytes.
    pub(crate) fn has_room(&self) -> bool {
        let state = self.shared.lock();
        self.shared.slot_free(&state) && self.shared.under_bound(&state)
    }

    /// Whether nothing is queued (or reserved by another sender that is
    /// about to queue).
    pub(crate) fn is_empty(&self) -> bool {
        let state = self.shared.lock();
        state.items.is_empty() && state.reserved == 0
    }

    /// A slot if the queue is under its byte bound and has a free message now.
    pub(crate) fn try_reserve(&self) -> Result<Permit<'_>, TrySendError> {
        let shared = &*self.shared;
        let mut state = shared.lock();
        if state.closed {
            return Err(TrySendError::Closed);
        }
        if !(shared.under_bound(&state) && shared.slot_free(&state)) {
            return Err(TrySendError::Full);
        }
        state.reserved += 1;
        Ok(Permit {
            shared,
            used: false,
        })
    }

    /// Free message slots now.
    pub(crate) fn capacity(&self) -> usize {
        let state = self.shared.lock();
        self.shared
            .messages
            .saturating_sub(state.items.len() + state.reserved)
    }

    /// The message bound.
    pub(crate) fn max_capacity(&self) -> usize {
        self.shared.messages
    }

    /// Messages queued now (reserved slots included).
    pub(crate) fn len(&self) -> usize {
        self.max_capacity() - self.capacity()
    }

    /// Bytes queued now.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.shared.lock().bytes
    }

    /// Frames written directly so far (not counted in the client's
    /// `messages_out`, which counts what its task wrote).
    pub(crate) fn written(&self) -> u64 {
        self.shared.lock().written
    }
}

/// A reserved slot: its message is admitted whatever its size. Dropped
/// unused, it gives the slot back.
pub(crate) struct Permit<'a> {
    shared: &'a Shared,
    used: bool,
}

impl Permit<'_> {
    /// Queues `item` into the slot (dropped if the writer is gone).
    pub(crate) fn send(mut self, item: Outbound) {
        self.used = true;
        let mut state = self.shared.lock();
        state.reserved -= 1;
        if state.closed {
            drop(state);
            return; // `item` is dropped here, outside the lock.
        }
        let len = item.queued_len();
        self.shared.push(state, item, len);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.used {
            self.shared.lock().reserved -= 1;
        }
    }
}

/// The receiving side, owned by the writer.
#[derive(Debug)]
pub(crate) struct Receiver {
    shared: Arc<Shared>,
}

impl Receiver {
    /// Takes up to `limit` items; their bytes stay counted until
    /// [`Self::release`]. Returns 0 once every sender is gone and the queue is
    /// empty, or when a [`Wake`] woke it with nothing queued.
    pub(crate) async fn recv_many(&mut self, buffer: &mut Vec<Outbound>, limit: usize) -> usize {
        if limit == 0 {
            return 0;
        }
        let shared = &*self.shared;
        shared
            .wait(|state| {
                let woken = std::mem::take(&mut state.woken);
                if state.items.is_empty() {
                    let done = (state.senders == 0 || woken).then_some(0);
                    if done.is_none()
                        && let Some(link) = &shared.link
                    {
                        // Waits with nothing to write: direct writes may go in.
                        link.set_idle();
                    }
                    return done;
                }
                if let Some(link) = &shared.link {
                    // What it takes goes out before any direct write.
                    link.set_busy();
                }
                let n = limit.min(state.items.len());
                buffer.extend(state.items.drain(..n));
                if state.items.is_empty() && state.items.capacity() > KEPT_SLOTS {
                    state.items = VecDeque::new();
                }
                Some(n)
            })
            .await
    }

    /// Takes an item if one is queued; its bytes stay counted until [`Self::release`].
    pub(crate) fn try_recv(&mut self) -> Option<Outbound> {
        self.shared.lock().items.pop_front()
    }

    /// Counts `len` bytes the writer holds outside the queue (a batch of a
    /// burst being written) in the queue's bytes and the server's gauge,
    /// until [`Self::release`]: other senders find the queue full meanwhile,
    /// and the connection reads no more.
    pub(crate) fn hold(&self, len: usize) {
        let shared = &*self.shared;
        let mut state = shared.lock();
        if !state.closed {
            state.bytes = state.bytes.saturating_add(len);
            Metrics::add(shared.gauge(), len as u64);
        }
    }

    /// Bytes counted now: queued, or taken and not released yet.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.shared.lock().bytes
    }

    /// `len` bytes taken from the queue (or held) were written.
    pub(crate) fn release(&self, len: usize) {
        if len == 0 {
            return;
        }
        let shared = &*self.shared;
        let mut state = shared.lock();
        if !state.closed {
            let len = len.min(state.bytes);
            state.bytes -= len;
            Metrics::sub(shared.gauge(), len as u64);
        }
    }
}

impl Drop for Receiver {
    /// Closes the queue: senders get `Closed`, and whatever is left leaves the gauge.
    fn drop(&mut self) {
        let shared = &*self.shared;
        let mut state = shared.lock();
        Metrics::sub(shared.gauge(), state.bytes as u64);
        state.bytes = 0;
        state.closed = true;
        let left = std::mem::take(&mut state.items);
        drop(state);
        drop(left);
    }
}

impl Outbound {
    /// The bytes this item holds while queued.
    pub(crate) fn queued_len(&self) -> usize {
        match self {
            Self::Frame(message) => message_len(message),
            Self::Frames(messages) => messages.iter().map(message_len).sum(),
            Self::Push { push } => push.max_len(),
            Self::Rest { len } => *len,
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
mod tests;
