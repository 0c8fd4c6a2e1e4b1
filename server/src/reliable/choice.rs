//! [`Store`]: the session store a server runs with, chosen at start: in
//! memory (the default) or in Redis (`--redis-url`). An enum rather than a
//! trait object: [`SessionStore`]'s methods are `async`, and a match per
//! call costs nothing next to what each does.

use std::net::IpAddr;
use std::time::Instant;

use super::SessionRef;
use super::outcome::{Attach, Resume};
use super::redis_store::RedisStore;
use super::session::Limits;
use super::store::{MemoryStore, ResumeError, SessionStore, TooMany, Unwritten};

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
