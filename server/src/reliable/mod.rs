//! Reliable mode's bookkeeping (`/ws?reliable=1`): sessions that outlive
//! their connections, the history of unacknowledged server messages, and the
//! exactly-once filter for client messages.
//!
//! The session is pure state, no I/O: a connection
//! (`connection::reliable`) locks a [`Session`] and asks it to number what
//! it sends and to accept what it reads; the registry and the admin API
//! push through the same method. Every section under a lock is short and
//! has no `.await` inside. With Redis, the connection's writer calls
//! [`SessionStore::persist`] before each batch it writes, so nothing
//! reaches a client that is not stored.
//!
//! | file | what |
//! |---|---|
//! | `outcome.rs` | what goes in and out of a session and a store: [`To`], [`Outgoing`], [`Accepted`], [`Refused`], [`Attach`], [`TakeoverSignal`], [`TooMany`], [`Unwritten`], [`ResumeError`] |
//! | `bounds.rs` | [`Limits`] (what a session holds) and [`Caps`] (how many sessions a store holds), one type for both stores |
//! | `session/` | [`Session`] (`mod.rs`, its fields private): the only place that numbers, bounds and records a server message ([`Session::send`]) and filters client ones ([`Session::accept`]); `history.rs` what its history keeps; `journal.rs` what changed since its last write to Redis; `written.rs` the write-through and a session rebuilt from Redis |
//! | `budget.rs` | [`Budget`](budget::Budget): the bytes of every history together, against `history_total_bytes` |
//! | `store/` | [`SessionStore`], the async API of where sessions live, and [`Store`], the one chosen at start (`mod.rs`); [`MemoryStore`] (`memory.rs`, the default); [`RedisStore`] (`redis/`: the node serving a connection keeps the session as a cache and writes every change through, fenced by the attach epoch, before it reaches the socket; a resume on any node loads it) |
//!
//! Imports go one way: `store` uses `session`, which uses `bounds`,
//! `budget` and `outcome`, which use nothing here.
//! | `tests/` | their behaviour (numbering, resume, limits), written against the trait: `on_both_stores!` runs each on both stores (Redis on a `redis-server` of its own); `redis_only.rs` the handover between nodes, fencing and a Redis that is down; `redis_upkeep.rs` the sweep in Redis, what Redis lost or did not confirm, a dead node's sessions, bad data |
//!
//! In token mode a session belongs to the user of the connection that
//! created it ([`Attach::user`], kept in the session record so every store
//! checks it): a `resume` from a connection of another user fails with
//! `bad_token`, as a wrong token does, and pushes to a user are stored only
//! in that user's sessions. In anonymous mode the resume token alone
//! decides, as before.
//!
//! Bounds, all configurable ([`Limits`]):
//! * the history holds at most `history_max` unacknowledged messages and
//!   `history_max_bytes` bytes of them, whatever produced them (a reply to a
//!   `msg`, to a plain `echo`, a timed, admin or burst push). While a client
//!   is connected nothing is evicted: bursts and timed pushes wait for acks
//!   once half of it is used (the send window), replies use the rest, and a
//!   message that does not fit is refused ([`Refused::Full`]): the
//!   connection closes with 1013 and the client resumes with nothing lost.
//!   While the client is away, pushes for it evict the oldest and the loss
//!   is reported as a `gap`;
//! * a message older than `history_max_age` is evicted the same way, once
//!   its client is away, by the store's periodic sweep (no activity
//!   needed). In Redis, the sweep of the node that last wrote the session
//!   away (its detach, or a push to it) does it; if that node died, the
//!   resume does (the same `gap`), and Redis holds the messages until the
//!   session's TTL;
//! * every history together holds at most `history_total_bytes` (the
//!   [`Budget`](budget::Budget)): over it, the oldest messages of clients
//!   that are away are evicted first and reported as a `gap`; pushes wait
//!   once half is used; a connected client's message that still does not
//!   fit is refused ([`Refused::Full`], 1013) as at its own bound;
//! * at most [`MAX_PENDING_BURSTS`] bursts wait per session (the one in
//!   progress included); one more is refused with `burst_busy`;
//! * a session whose client has been away for `ttl` is forgotten: its resume
//!   fails with `unknown_session` (in Redis too: pushes to it do not
//!   prolong its keys' TTL);
//! * at most `max_sessions` are held, and `max_sessions_per_ip` per owner
//!   address: a new reliable connection beyond that is closed with 1013 (try
//!   again later), so many clients cannot make the server hold unbounded
//!   history. A connection's offered session is stored only at its first
//!   numbered message either way (`connection::reliable`), so probes that
//!   number nothing hold nothing.

mod bounds;
mod budget;
mod outcome;
mod session;
mod store;
#[cfg(test)]
pub(crate) mod tests;

use std::sync::{Arc, Mutex, MutexGuard};

pub use bounds::{Caps, Limits};
pub use outcome::{
    Accepted, Attach, BurstBusy, Outgoing, Refused, ResumeError, TakenOver, TakeoverSignal, To,
    TooMany, Unwritten,
};
pub use session::{MAX_PENDING_BURSTS, Session};
pub use store::{Backend, MemoryStore, RedisStore, SessionStore, Store, offer};

/// A shared, lockable session.
pub type SessionRef = Arc<Mutex<Session>>;

/// Locks a session; a panic while it was held cannot leave it torn (every
/// method keeps it consistent at each step), so a poisoned lock is used as is.
pub fn lock(session: &SessionRef) -> MutexGuard<'_, Session> {
    session
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
