//! The values that go in and out of a [`Session`](super::Session): who a
//! numbered message is for and what it is ([`To`], [`Outgoing`]), what came
//! of it ([`Accepted`], [`Refused`], [`Resume`], [`BurstBusy`]), and how a
//! connection attaches and hears of a takeover ([`Attach`],
//! [`TakeoverSignal`]).

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use shared::ServerMessage;

/// The session was taken over by a newer connection (a `resume`), so this
/// connection may no longer send in its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakenOver;

/// Why [`Session::send`](super::Session::send) numbered nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The sender no longer speaks for the session (see [`TakenOver`]), or
    /// a message for a client that is away found it back.
    TakenOver,
    /// The history has no room for the message: the client is not
    /// acknowledging. Nothing was recorded.
    Full,
}

impl From<TakenOver> for Refused {
    fn from(TakenOver: TakenOver) -> Self {
        Self::TakenOver
    }
}

/// [`MAX_PENDING_BURSTS`](super::MAX_PENDING_BURSTS) are pending: the burst was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BurstBusy;

/// Who a numbered message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    /// The attached connection with this number, which writes it now.
    Connection(u64),
    /// The client, which is away: stored for its resume (the oldest are
    /// evicted over the bounds and reported as a gap).
    Away,
}

/// What a numbered message is.
#[derive(Debug)]
pub enum Outgoing {
    /// A message as it is.
    Message(ServerMessage),
    /// A `push`, numbered by the session's push counter when it is recorded.
    Push {
        /// The text.
        body: String,
        /// Milliseconds since the Unix epoch.
        sent_at_ms: u64,
    },
    /// A `push` encoded once for many sessions (a broadcast): numbered here
    /// without escaping its body again.
    Shared(Arc<shared::PushEncoder>),
}

/// What became of a client `msg`.
#[derive(Debug, PartialEq, Eq)]
pub enum Accepted {
    /// The next one: processed; its numbered reply, if it has one, to write.
    Processed(Option<Utf8Bytes>),
    /// Processed already (a resend): skipped, but to be acknowledged.
    Duplicate,
    /// It skips ahead of `expected`: not processed.
    OutOfOrder {
        /// The seq that should have come.
        expected: u64,
    },
}

/// What a successful resume sends before anything new.
#[derive(Debug)]
pub struct Resume {
    /// Server messages lost for good (`from..=to`), reported as a `gap`.
    pub gap: Option<(u64, u64)>,
    /// The unacknowledged messages after the client's `last_seq`, in order.
    pub replay: Vec<Utf8Bytes>,
    /// The last client seq processed: the client resends what follows.
    pub last_in: u64,
}

/// How a connection hears that a resume on another connection took its
/// session over, so that it closes at once (with 4002) rather than when it
/// next sends. The registry's per-connection handle implements it with the
/// close request the connection already watches (no extra allocation or
/// wait per connection).
pub trait TakeoverSignal: Send + Sync + std::fmt::Debug {
    /// The session was taken over: close.
    fn taken_over(&self);

    /// Cluster mode: the session store (Redis) does not answer, so the
    /// session can no longer be written: close (1013, try again later).
    fn store_unavailable(&self) {}
}

/// A connection that speaks for a session: its number, its user, and how
/// to tell it of a takeover.
#[derive(Debug, Clone)]
pub struct Attach {
    /// The connection's number.
    pub conn: u64,
    /// Token mode: the connection's user. A session belongs to the user of
    /// the connection that created it; only that user's connections resume
    /// it. `None` in anonymous mode.
    pub user: Option<Arc<str>>,
    /// Told on a takeover.
    pub signal: Arc<dyn TakeoverSignal>,
    /// The protocol version the connection speaks: how the session frames
    /// what it numbers for it (the session itself keeps no framing, so a
    /// client may resume it speaking another version).
    pub protocol: shared::Protocol,
}
