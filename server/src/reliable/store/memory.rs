//! [`MemoryStore`]: the sessions in this process's memory, the default
//! (a single node; forgotten on a restart).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use shared::ResumeFailure;

use super::SessionStore;
use crate::reliable::bounds::{Held, Limits};
use crate::reliable::budget::Budget;
use crate::reliable::outcome::{Attach, Resume, ResumeError, TooMany, Unwritten};
use crate::reliable::session::Session;
use crate::reliable::{SessionRef, lock};

/// The sessions in this process's memory (forgotten on a restart).
#[derive(Debug)]
pub struct MemoryStore {
    limits: Limits,
    budget: Arc<Budget>,
    sessions: Mutex<Sessions>,
}

/// The sessions by id, and how many each owner address and user holds.
#[derive(Debug, Default)]
struct Sessions {
    by_id: HashMap<String, SessionRef>,
    per_owner: HashMap<IpAddr, usize>,
    per_user: HashMap<Arc<str>, usize>,
}

/// One less in a count of `counts`, dropped at zero.
fn uncount<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
    }
}

impl Sessions {
    fn remove(&mut self, id: &str) {
        if let Some(session) = self.by_id.remove(id) {
            let session = lock(&session);
            uncount(&mut self.per_owner, &session.owner());
            if let Some(user) = session.user() {
                uncount(&mut self.per_user, user);
            }
        }
    }

    /// What a new session of `owner` and `user` would join.
    fn held(&self, owner: IpAddr, user: Option<&Arc<str>>) -> Held {
        Held {
            total: self.by_id.len(),
            per_ip: self.per_owner.get(&owner).copied().unwrap_or(0),
            per_user: user
                .and_then(|u| self.per_user.get(u))
                .copied()
                .unwrap_or(0),
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
        let caps = self.limits.caps;
        let user = attach.user.clone();
        if caps.admit(map.held(owner, user.as_ref())).is_err() {
            map.forget_expired(now);
        }
        caps.admit(map.held(owner, user.as_ref()))?;
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
        if let Some(user) = user {
            *map.per_user.entry(user).or_default() += 1;
        }
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
        if !guard.token_matches(token) || guard.user() != attach.user.as_ref() {
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
                s.is_away() && s.client_id() == client_id
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
                s.is_away() && s.user().map(|u| &**u) == Some(user)
            })
            .cloned()
            .collect())
    }

    async fn end_user(&self, user: &str) -> usize {
        let mut map = self.map();
        let ids: Vec<String> = map
            .by_id
            .iter()
            .filter(|(_, s)| lock(s).user().map(|u| &**u) == Some(user))
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
