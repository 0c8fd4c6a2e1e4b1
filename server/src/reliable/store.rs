//! Where sessions live. [`SessionStore`] is the API the server uses, async
//! because a store shared by several nodes (Redis, in the scale-out issue)
//! answers over the network; [`MemoryStore`] is the in-process one, the
//! default. The behavioural tests (`tests.rs`) are written against the
//! trait, so a new store runs the same ones.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use shared::ResumeFailure;

use super::session::{Attach, Limits, Resume, Session};
use super::{SessionRef, lock};

/// Every reliable session, by id.
pub trait SessionStore: Send + Sync + 'static {
    /// Starts session `id` (offered in the welcome) for the connection
    /// `attach`; `None` when `max_sessions` are held even after forgetting
    /// expired ones.
    fn create(
        &self,
        id: String,
        token: String,
        client_id: &str,
        attach: Attach,
        now: Instant,
    ) -> impl Future<Output = Option<SessionRef>> + Send;

    /// Connection `attach` of `client_id` resumes session `id`; the
    /// connection attached to it until now, if any, is signalled.
    ///
    /// # Errors
    ///
    /// [`ResumeFailure::UnknownSession`] for a session that does not exist
    /// or expired, [`ResumeFailure::BadToken`] for a wrong token.
    fn resume(
        &self,
        id: &str,
        token: &str,
        last_seq: u64,
        client_id: &str,
        attach: Attach,
        now: Instant,
    ) -> impl Future<Output = Result<(SessionRef, Resume), ResumeFailure>> + Send;

    /// The session of `client_id` while its client is away (for admin pushes).
    fn detached_of(&self, client_id: &str) -> impl Future<Output = Option<SessionRef>> + Send;

    /// Forgets sessions whose client has been away for the TTL; returns how many.
    fn sweep(&self, now: Instant) -> impl Future<Output = usize> + Send;

    /// Sessions held.
    fn len(&self) -> impl Future<Output = usize> + Send;

    /// The configured bounds.
    fn limits(&self) -> Limits;
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
    sessions: Mutex<HashMap<String, SessionRef>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            sessions: Mutex::default(),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, SessionRef>> {
        // Every section is one map operation: a poisoned map is still whole.
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl SessionStore for MemoryStore {
    async fn create(
        &self,
        id: String,
        token: String,
        client_id: &str,
        attach: Attach,
        now: Instant,
    ) -> Option<SessionRef> {
        let mut map = self.map();
        if map.len() >= self.limits.max_sessions {
            map.retain(|_, s| !lock(s).expired(now));
            if map.len() >= self.limits.max_sessions {
                return None;
            }
        }
        let session = Arc::new(Mutex::new(Session::new(
            id.clone(),
            token,
            client_id.to_owned(),
            attach,
            self.limits,
        )));
        map.insert(id, session.clone());
        Some(session)
    }

    async fn resume(
        &self,
        id: &str,
        token: &str,
        last_seq: u64,
        client_id: &str,
        attach: Attach,
        now: Instant,
    ) -> Result<(SessionRef, Resume), ResumeFailure> {
        let session = self
            .map()
            .get(id)
            .cloned()
            .ok_or(ResumeFailure::UnknownSession)?;
        let mut guard = lock(&session);
        if guard.expired(now) {
            drop(guard);
            self.map().remove(id);
            return Err(ResumeFailure::UnknownSession);
        }
        if !crate::auth::constant_time_eq(guard.token.as_bytes(), token.as_bytes()) {
            return Err(ResumeFailure::BadToken);
        }
        let resume = guard.resume(attach, last_seq, client_id, now);
        drop(guard);
        Ok((session, resume))
    }

    async fn detached_of(&self, client_id: &str) -> Option<SessionRef> {
        self.map()
            .values()
            .find(|s| {
                let s = lock(s);
                s.is_away() && s.client_id == client_id
            })
            .cloned()
    }

    async fn sweep(&self, now: Instant) -> usize {
        let mut map = self.map();
        let before = map.len();
        map.retain(|_, s| !lock(s).expired(now));
        before - map.len()
    }

    async fn len(&self) -> usize {
        self.map().len()
    }

    fn limits(&self) -> Limits {
        self.limits
    }
}
