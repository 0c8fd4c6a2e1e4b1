//! The values that go in and out of a [`Session`](super::Session): who a
//! numbered message is for and what it is ([`To`], [`Outgoing`]), what came
//! of it ([`Accepted`], [`Refused`], [`Resume`], [`BurstBusy`]), and how a
//! connection attaches and hears of a takeover ([`Attach`],
//! [`TakeoverSignal`]).

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use shared::{ResumeFailure, ServerMessage};

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

/// Why [`SessionStore::create`] stored nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooMany {
    /// `max_sessions` are held, even after forgetting expired ones.
    Sessions,
    /// The owner address holds `max_sessions_per_ip` already.
    PerIp,
    /// Token mode: the user holds `max_sessions_per_user` already.
    PerUser,
    /// The store (Redis) did not answer: nothing was stored.
    Unavailable,
}

/// Why a change to a session was not written to its store (a shared one:
/// the memory store writes nothing and never fails).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unwritten {
    /// A resume elsewhere moved the session on (or it ended): this
    /// connection no longer speaks for it (4002).
    #[error("the session was taken over")]
    TakenOver,
    /// The store does not answer (1013, try again later): the write was
    /// not applied.
    #[error("the session store is unavailable")]
    Unavailable,
    /// The store did not confirm the write in time (it timed out, or the
    /// connection dropped after it was sent): it may still be applied.
    /// A connection ends with 1013 as for [`Unwritten::Unavailable`] (its
    /// client saw nothing of it, and a resume reads what the store holds);
    /// the admin API answers 504, since a retry could store a push twice.
    #[error("the session store did not confirm the write in time")]
    Unconfirmed,
    /// The store no longer holds the session (Redis restarted empty, or the
    /// session expired meanwhile): 1013, and the client's resume then
    /// fails with `unknown_session`. Not a takeover: 4002 would stop the
    /// client from reconnecting at all.
    #[error("the session store no longer holds the session")]
    Gone,
    /// Another writer numbered something in the session meanwhile, at the
    /// same attach epoch: two pushes to a client away at once, or a push
    /// stored by another node while this one was taken for dead (its
    /// heartbeat key expired). Not written; a connection closes with 1013
    /// (its resume gets both), an admin push answers 503 (retry).
    #[error("the session was written by another node meanwhile")]
    Raced,
}

/// Why [`SessionStore::resume`] attached nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeError {
    /// The answer the client gets (`resume_failed`).
    Failed(ResumeFailure),
    /// The store does not answer: the connection closes with 1013.
    Unavailable,
}

impl From<ResumeFailure> for ResumeError {
    fn from(failure: ResumeFailure) -> Self {
        Self::Failed(failure)
    }
}

impl PartialEq<ResumeFailure> for ResumeError {
    fn eq(&self, other: &ResumeFailure) -> bool {
        *self == Self::Failed(*other)
    }
}
