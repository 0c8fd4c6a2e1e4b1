//! Where sessions live. [`SessionStore`] is the API the server uses, async
//! because a store shared by several nodes answers over the network;
//! [`Store`] is the one a server runs with, chosen at start.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`SessionStore`], [`Store`] (memory or Redis: an enum rather than a trait object, since the methods are `async` and a match per call costs nothing next to what each does), [`offer`] |
//! | `memory.rs` | [`MemoryStore`], in this process (the default) |
//! | `redis/` | [`RedisStore`]: in Redis (`--redis-url`), shared by the nodes of a cluster |
//!
//! Both count their sessions against the same [`Caps`](super::Caps). The
//! behavioural tests (`../tests/`) are written against the trait, so a
//! new store runs the same ones.

use std::future::Future;
use std::net::IpAddr;
use std::time::Instant;

use super::SessionRef;
use super::bounds::Limits;
use super::outcome::{Attach, Resume, ResumeError, TooMany, Unwritten};

mod memory;
mod redis;

pub use memory::MemoryStore;
pub use redis::{Backend, RedisStore};

/// Every reliable session, by id.
pub trait SessionStore: Send + Sync + 'static {
    /// Stores session `id` with `token` (offered in the welcome) for the
    /// connection `attach` of `client_id`, from client address `owner`
    /// (already keyed: an IPv6 one cut to its /64).
    ///
    /// # Errors
    ///
    /// [`TooMany`] when a cap is reached, even after forgetting expired
    /// sessions.
    fn create(
        &self,
        offer: (String, String),
        client_id: &str,
        owner: IpAddr,
        attach: Attach,
        now: Instant,
    ) -> impl Future<Output = Result<SessionRef, TooMany>> + Send;

    /// Connection `attach` of `client_id` resumes session `id`; the
    /// connection attached to it until now, if any, is signalled.
    ///
    /// # Errors
    ///
    /// [`ResumeFailure::UnknownSession`] for a session that does not exist
    /// or expired, [`ResumeFailure::BadToken`] for a wrong token or (token
    /// mode) a session of another user than `attach.user`: nothing of the
    /// session is revealed.
    fn resume(
        &self,
        id: &str,
        token: &str,
        last_seq: u64,
        client_id: &str,
        attach: Attach,
        now: Instant,
    ) -> impl Future<Output = Result<(SessionRef, Resume), ResumeError>> + Send;

    /// The session of `client_id` while its client is away (for admin pushes).
    ///
    /// # Errors
    ///
    /// [`Unwritten`] when the store does not answer: not "no such client"
    /// (the admin API answers 503, not 404).
    fn detached_of(
        &self,
        client_id: &str,
    ) -> impl Future<Output = Result<Option<SessionRef>, Unwritten>> + Send;

    /// Token mode: the sessions of `user` whose client is away (for pushes to the user).
    ///
    /// # Errors
    ///
    /// As [`SessionStore::detached_of`].
    fn detached_of_user(
        &self,
        user: &str,
    ) -> impl Future<Output = Result<Vec<SessionRef>, Unwritten>> + Send;

    /// Token mode: forgets every session of `user` (their resumes then fail
    /// with `unknown_session`); returns how many.
    fn end_user(&self, user: &str) -> impl Future<Output = usize> + Send;

    /// Forgets sessions whose client has been away for the TTL (returns how
    /// many), evicts the history of clients that are away beyond the age
    /// and size bounds, then [`SessionStore::reclaim`]s.
    fn sweep(&self, now: Instant) -> impl Future<Output = usize> + Send;

    /// While the histories pass `history_total_bytes` (or the last message
    /// refused for it would not fit), evicts the oldest messages of clients
    /// that are away, oldest first (each loss is reported as a `gap` on
    /// resume); returns how many bytes it freed.
    fn reclaim(&self) -> impl Future<Output = usize> + Send;

    /// Completes when the budget is passed or a message was refused for it.
    fn pressure(&self) -> impl Future<Output = ()> + Send;

    /// Sessions held.
    fn len(&self) -> impl Future<Output = usize> + Send;

    /// Bytes of every session's history together.
    fn history_bytes(&self) -> impl Future<Output = usize> + Send;

    /// The configured bounds.
    fn limits(&self) -> Limits;

    /// Writes what changed in `session` through to the store, before
    /// anything it numbered goes to the socket (a no-op in memory).
    ///
    /// # Errors
    ///
    /// [`Unwritten`]: the change is not stored, so nothing of it may be
    /// written to the client.
    fn persist(&self, session: &SessionRef) -> impl Future<Output = Result<(), Unwritten>> + Send;
}

/// A fresh session id and token, offered in a reliable connection's welcome.
pub fn offer() -> (String, String) {
    let id = format!("s{:016x}", rand::random::<u64>());
    let token = format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    (id, token)
}

/// The session store of a server.
#[derive(Debug)]
pub enum Store {
    /// In this process (a single node).
    Memory(MemoryStore),
    /// In Redis, shared by the nodes of a cluster.
    Redis(RedisStore),
}

impl Store {
    /// A resume on another node took session `id` over at `epoch` (a
    /// command from that node): the connection attached here closes.
    pub fn taken_over(&self, id: &str, epoch: u64) {
        if let Self::Redis(store) = self {
            store.taken_over(id, epoch);
        }
    }

    /// The connection of `session` ended (it detached): in Redis, written
    /// now or, when Redis does not take it, retried by the sweep.
    pub async fn detached(&self, session: &SessionRef) {
        if let Self::Redis(store) = self {
            store.detached(session).await;
        }
    }
}

macro_rules! each {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Self::Memory($store) => $call,
            Self::Redis($store) => $call,
        }
    };
}

impl SessionStore for Store {
    async fn create(
        &self,
        offer: (String, String),
        client_id: &str,
        owner: IpAddr,
        attach: Attach,
        now: Instant,
    ) -> Result<SessionRef, TooMany> {
        each!(self, s => s.create(offer, client_id, owner, attach, now).await)
    }

    async fn resume(
        &self,
        id: &str,
        token: &str,
        last_seq: u64,
        client_id: &str,
        attach: Attach,
        now: Instant,
    ) -> Result<(SessionRef, Resume), ResumeError> {
        each!(self, s => s.resume(id, token, last_seq, client_id, attach, now).await)
    }

    async fn detached_of(&self, client_id: &str) -> Result<Option<SessionRef>, Unwritten> {
        each!(self, s => s.detached_of(client_id).await)
    }

    async fn detached_of_user(&self, user: &str) -> Result<Vec<SessionRef>, Unwritten> {
        each!(self, s => s.detached_of_user(user).await)
    }

    async fn end_user(&self, user: &str) -> usize {
        each!(self, s => s.end_user(user).await)
    }

    async fn sweep(&self, now: Instant) -> usize {
        each!(self, s => s.sweep(now).await)
    }

    async fn reclaim(&self) -> usize {
        each!(self, s => s.reclaim().await)
    }

    async fn pressure(&self) {
        each!(self, s => s.pressure().await)
    }

    async fn len(&self) -> usize {
        each!(self, s => s.len().await)
    }

    async fn history_bytes(&self) -> usize {
        each!(self, s => s.history_bytes().await)
    }

    fn limits(&self) -> Limits {
        each!(self, s => s.limits())
    }

    async fn persist(&self, session: &SessionRef) -> Result<(), Unwritten> {
        each!(self, s => SessionStore::persist(s, session).await)
    }
}
