//! Where sessions live. [`SessionStore`] is the API the server uses, async
//! because a store shared by several nodes (Redis, in the scale-out issue)
//! answers over the network; [`MemoryStore`] is the in-process one, the
//! default. The behavioural tests (`tests.rs`) are written against the
//! trait, so a new store runs the same ones.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use shared::ResumeFailure;

use super::budget::Budget;
use super::outcome::{Attach, Resume};
use super::session::{Limits, Session};
use super::{SessionRef, lock};

/// Why [`SessionStore::create`] stored nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooMany {
    /// `max_sessions` are held, even after forgetting expired ones.
    Sessions,
    /// The owner address holds `max_sessions_per_ip` already.
    PerIp,
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

/// The sessions in this process's memory (forgotten on a restart).
#[derive(Debug)]
pub struct MemoryStore {
    limits: Limits,
    budget: Arc<Budget>,
    sessions: Mutex<Sessions>,
}

/// The sessions by id, and how many each owner address holds.
#[derive(Debug, Default)]
pub(super) struct Sessions {
    pub(super) by_id: HashMap<String, SessionRef>,
    pub(super) per_owner: HashMap<IpAddr, usize>,
}

impl Sessions {
    pub(super) fn remove(&mut self, id: &str) {
        if let Some(session) = self.by_id.remove(id) {
            let owner = lock(&session).owner;
            if let Some(count) = self.per_owner.get_mut(&owner) {
                *count -= 1;
                if *count == 0 {
                    self.per_owner.remove(&owner);
                }
            }
        }
    }

    /// Forgets the expired sessions; returns how many.
    fn forget_expired(&mut self, now: Instant) -> usize {
        let expired: Vec<String> = self
            .by_id
            .iter()
            .filter(|(_, s)| lock(s).expired(now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.remove(id);
        }
        expired.len()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            budget: Arc::new(Budget::new(limits.history_total_bytes)),
            sessions: Mutex::default(),
        }
    }

    fn map(&self) -> MutexGuard<'_, Sessions> {
        // Every section keeps the two maps in step: a poisoned map is still whole.
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl SessionStore for MemoryStore {
    async fn create(
        &self,
        offer: (String, String),
        client_id: &str,
        owner: IpAddr,
        attach: Attach,
        now: Instant,
    ) -> Result<SessionRef, TooMany> {
        let mut map = self.map();
        let per_ip = self.limits.max_sessions_per_ip;
        let owned = |map: &Sessions| map.per_owner.get(&owner).copied().unwrap_or(0);
        if map.by_id.len() >= self.limits.max_sessions || (per_ip > 0 && owned(&map) >= per_ip) {
            map.forget_expired(now);
        }
        if map.by_id.len() >= self.limits.max_sessions {
            return Err(TooMany::Sessions);
        }
        if per_ip > 0 && owned(&map) >= per_ip {
            return Err(TooMany::PerIp);
        }
        let id = offer.0.clone();
        let session = Arc::new(Mutex::new(Session::new(
            offer,
            client_id.to_owned(),
            owner,
            attach,
            self.budget.clone(),
            self.limits,
        )));
        *map.per_owner.entry(owner).or_default() += 1;
        map.by_id.insert(id, session.clone());
        Ok(session)
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
        let session = self
            .map()
            .by_id
            .get(id)
            .cloned()
            .ok_or(ResumeFailure::UnknownSession)?;
        let mut guard = lock(&session);
        if guard.expired(now) {
            drop(guard);
            self.map().remove(id);
            return Err(ResumeFailure::UnknownSession.into());
        }
        let token_ok = crate::auth::constant_time_eq(guard.token.as_bytes(), token.as_bytes());
        if !token_ok || guard.user != attach.user {
            return Err(ResumeFailure::BadToken.into());
        }
        let resume = guard.resume(attach, last_seq, client_id, now);
        drop(guard);
        Ok((session, resume))
    }

    async fn detached_of(&self, client_id: &str) -> Result<Option<SessionRef>, Unwritten> {
        Ok(self
            .map()
            .by_id
            .values()
            .find(|s| {
                let s = lock(s);
                s.is_away() && s.client_id == client_id
            })
            .cloned())
    }

    async fn detached_of_user(&self, user: &str) -> Result<Vec<SessionRef>, Unwritten> {
        Ok(self
            .map()
            .by_id
            .values()
            .filter(|s| {
                let s = lock(s);
                s.is_away() && s.user.as_deref() == Some(user)
            })
            .cloned()
            .collect())
    }

    async fn end_user(&self, user: &str) -> usize {
        let mut map = self.map();
        let ids: Vec<String> = map
            .by_id
            .iter()
            .filter(|(_, s)| lock(s).user.as_deref() == Some(user))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            map.remove(id);
        }
        ids.len()
    }

    async fn sweep(&self, now: Instant) -> usize {
        let gone = {
            let mut map = self.map();
            let gone = map.forget_expired(now);
            for session in map.by_id.values() {
                lock(session).trim(now);
            }
            gone
        };
        self.reclaim().await;
        gone
    }

    async fn reclaim(&self) -> usize {
        let mut excess = self.budget.excess();
        if excess == 0 {
            return 0;
        }
        let map = self.map();
        let mut away: Vec<(Instant, &SessionRef)> = map
            .by_id
            .values()
            .filter_map(|s| lock(s).oldest_away().map(|at| (at, s)))
            .collect();
        away.sort_by_key(|(at, _)| *at);
        let before = self.budget.used();
        for (_, session) in away {
            let mut session = lock(session);
            while excess > 0 && session.evict_oldest() {
                excess = self.budget.excess();
            }
            if excess == 0 {
                break;
            }
        }
        self.budget.satisfied();
        before.saturating_sub(self.budget.used())
    }

    async fn pressure(&self) {
        self.budget.pressure.notified().await;
    }

    async fn len(&self) -> usize {
        self.map().by_id.len()
    }

    async fn history_bytes(&self) -> usize {
        self.budget.used()
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    async fn persist(&self, _session: &SessionRef) -> Result<(), Unwritten> {
        Ok(())
    }
}
