//! [`RedisStore`]: reliable sessions kept in Redis (`--redis-url`), so that
//! a client resumes on any node, even after the node that served it died.
//!
//! The node that serves a connection keeps its [`Session`] in memory, as a
//! cache, and writes every change through ([`RedisStore::persist`], one
//! Lua script) before anything the change numbered reaches the socket: the
//! connection's writer persists before each batch it writes, so a burst is
//! recorded batch by batch, and a client `msg`, marked processed together
//! with its reply under the session's lock, lands in the same script. A
//! crash before the script ran loses neither: nothing of it was written
//! or acknowledged, the client resends and the message is processed once.
//!
//! Fencing: every attach (a create or a resume, on any node) gives the
//! session a new `epoch` in its record; a write carries the epoch its
//! connection attached at and the `last_out` it started from, and the
//! script refuses it when either moved on. A node that lost the session
//! (to a resume elsewhere) can never write into it again; it is also told
//! at once (a takeover command on its command stream,
//! [`Backend::send_takeover`], sent even before the node's first
//! heartbeat) so its connection closes with 4002, and, should that command
//! be lost, at its next write or sweep (`REFRESH` is fenced too).
//!
//! A write that fails says why ([`Unwritten`]): another attach (4002), the
//! session gone from Redis (restarted empty: 1013, and the resume fails
//! with `unknown_session`), another node numbering at the same epoch
//! (`Raced`: a push stored while this node was taken for dead, 1013),
//! Redis down (1013), or a write sent but not confirmed in time
//! (`Unconfirmed`: it may be applied; 1013, and 504 for an admin push,
//! whose retry could store it twice). Nothing of a failed write reaches
//! the client, and the session is not written from here again: its
//! resume reads what Redis holds.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`RedisStore`]: create, resume, pushes to clients away, persist |
//! | `scripts.rs` | the Lua scripts (`CREATE`, `PERSIST`, `LOAD`, `REFRESH`, `DETACH`, `AGE`, `END_USER`, and the session counts they share) and the calls of `PERSIST` and `LOAD` |
//! | `upkeep.rs` | the cache of attached sessions and the sweep: fenced TTL refresh, detaches retried, sessions away aged |
//!
//! Keys (after `--redis-prefix`), each with a TTL:
//!
//! | key | type | what |
//! |---|---|---|
//! | `sess:{id}` | hash | `token` (SHA-256 hex of it, never the token), `user`, `owner`, `client_id`, `node`, `epoch`, `last_out`, `lost_through`, `last_in`, `pushes`, `bursts`, `attached`, `detached_at` |
//! | `hist:{id}` | list | the unacknowledged messages, `seq at_ms frame` each, oldest first |
//! | `client:{client id}` | string | the id of the client's last session (admin pushes to a client that is away) |
//! | `user:{user}` | set | the user's session ids (token mode: user pushes, user kicks); ids of expired sessions are dropped at each new session of the user |
//! | `count:all`, `count:ip:{owner}`, `count:user:{user}` | sorted set | session ids scored by when their keys expire (Redis's clock): what the caps count, cluster-wide (see `scripts.rs`) |
//!
//! The TTL is what is left of `--session-ttl` since the client went away
//! (pushes to it do not prolong it); while it is attached, the TTL plus
//! [`ATTACHED_GRACE`], refreshed by every write and by the node's sweep,
//! so the sessions of a node killed with SIGKILL are forgotten that long
//! after its last sweep. Such a session still reads "attached", to the
//! dead node: once that node's heartbeat key has expired, a push to its
//! client treats it as away and stores it (202), as for any client away.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::Script;

use scripts::{AGE, CREATE, DETACH, END_USER, LOAD, PERSIST, REFRESH};
use sha2::{Digest, Sha256};
use shared::ResumeFailure;

mod scripts;
mod upkeep;

use crate::reliable::bounds::Limits;
use crate::reliable::budget::Budget;
use crate::reliable::outcome::{Attach, Resume, ResumeError, TooMany, Unwritten};
use crate::reliable::session::Session;
use crate::reliable::{SessionRef, lock};

/// How much longer than `--session-ttl` an attached session's keys live
/// between two refreshes.
pub const ATTACHED_GRACE: Duration = Duration::from_secs(30);

/// What the Redis store needs of the cluster node it runs on (implemented
/// by `cluster::Node`; a trait so that imports go one way, from the
/// cluster to the sessions).
pub trait Backend: Send + Sync + 'static {
    /// The node's id.
    fn id(&self) -> &str;
    /// The prefix of every key (`--redis-prefix`).
    fn prefix(&self) -> &str;
    /// The shared, multiplexed connection (it reconnects by itself).
    fn connection(&self) -> redis::aio::ConnectionManager;
    /// How long one Redis command may take.
    fn command_timeout(&self) -> Duration;
    /// Counts a failed Redis command for `/metrics`.
    fn count_redis_error(&self);
    /// Tells node `node`, in the background, that a resume here took
    /// `session` over at `epoch` (its connection closes with 4002).
    fn send_takeover(self: Arc<Self>, node: String, session: String, epoch: u64);
}

/// The sessions in Redis, with a cache of those attached on this node.
pub struct RedisStore {
    node: Arc<dyn Backend>,
    limits: Limits,
    /// The bytes of the histories cached here (per node).
    budget: Arc<Budget>,
    /// The sessions attached on this node, by id.
    local: Mutex<HashMap<String, SessionRef>>,
    /// Pending detaches and sessions away to age (`upkeep.rs`).
    upkeep: Mutex<upkeep::Upkeep>,
    /// Boxed: a store is one per server, and [`Store`](super::Store) stays small.
    scripts: Box<Scripts>,
}

/// The Lua scripts (`scripts.rs`), loaded once into Redis by their SHA.
struct Scripts {
    create: Script,
    persist: Script,
    load: Script,
    refresh: Script,
    detach: Script,
    age: Script,
    end_user: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("node", &self.node.id())
            .finish_non_exhaustive()
    }
}

/// The SHA-256 of a token, hex: what the record keeps.
fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Session ids come from clients on a resume: bounded before they go into a key.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64
}

impl RedisStore {
    /// The store of `node`, with `limits` (the caps count every node's sessions).
    pub fn new(node: Arc<dyn Backend>, limits: Limits) -> Self {
        Self {
            node,
            limits,
            budget: Arc::new(Budget::new(limits.history_total_bytes)),
            local: Mutex::default(),
            upkeep: Mutex::default(),
            scripts: Box::new(Scripts {
                create: Script::new(CREATE),
                persist: Script::new(PERSIST),
                load: Script::new(LOAD),
                refresh: Script::new(REFRESH),
                detach: Script::new(DETACH),
                age: Script::new(AGE),
                end_user: Script::new(END_USER),
            }),
        }
    }

    fn key(&self, what: &str, id: &str) -> String {
        format!("{}{what}:{id}", self.node.prefix())
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, SessionRef>> {
        self.local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn ttl_ms(&self, attached: bool) -> u64 {
        let ttl = if attached {
            self.limits.ttl + ATTACHED_GRACE
        } else {
            self.limits.ttl
        };
        u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// Runs `call` within the command timeout; a failure counts for `/metrics`.
    async fn run<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Unwritten> {
        match tokio::time::timeout(self.node.command_timeout(), call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                self.node.count_redis_error();
                tracing::debug!("session store: {err}");
                // Sent, perhaps applied, but not answered: unconfirmed.
                if !err.is_connection_refusal() && (err.is_timeout() || err.is_connection_dropped())
                {
                    Err(Unwritten::Unconfirmed)
                } else {
                    Err(Unwritten::Unavailable)
                }
            }
            Err(_) => {
                self.node.count_redis_error();
                Err(Unwritten::Unconfirmed)
            }
        }
    }

    /// Writes what changed in `session` since its last write, in one script.
    ///
    /// # Errors
    ///
    /// [`Unwritten::TakenOver`] when another attach (or writer) moved the
    /// session on; [`Unwritten::Gone`] when Redis no longer holds it;
    /// [`Unwritten::Unavailable`] or [`Unwritten::Unconfirmed`] when Redis
    /// does not answer. Either way the change is not in Redis, and the
    /// caller writes nothing of it to its client.
    pub async fn persist(&self, session: &SessionRef) -> Result<(), Unwritten> {
        let Some(writing) = lock(session).write_lock() else {
            return Ok(());
        };
        let _one_at_a_time = writing.lock().await;
        let (id, user, changes) = {
            let mut guard = lock(session);
            (
                guard.id().to_owned(),
                guard.user().cloned(),
                guard.changes()?,
            )
        };
        let Some(changes) = changes else {
            return Ok(());
        };
        let away = !changes.record.attached;
        let sent = Instant::now();
        let written = self.write(&id, user.as_deref(), changes).await;
        match written {
            // Away: its history is aged by this node's sweep from now on.
            Ok(()) if away => self.age_later(&id),
            Ok(()) => lock(session).confirmed(sent),
            Err(why) => lock(session).write_failed(why),
        }
        written
    }

    /// Writes what the cached copy of `id` holds unwritten, if it is cached
    /// (so that nothing it numbered is lost to a resume or a load).
    async fn flush_cached(&self, id: &str) {
        let cached = self.map().get(id).cloned();
        if let Some(session) = cached {
            let _ = self.persist(&session).await;
        }
    }
}

impl super::SessionStore for RedisStore {
    async fn create(
        &self,
        offer: (String, String),
        client_id: &str,
        owner: IpAddr,
        attach: Attach,
        _now: Instant,
    ) -> Result<SessionRef, TooMany> {
        let id = offer.0.clone();
        let user = attach.user.clone();
        let caps = self.limits.caps;
        let mut call = self.scripts.create.prepare_invoke();
        call.key(self.key("sess", &id))
            .key(self.key("hist", &id))
            .key(self.key("client", client_id))
            .key(
                user.as_ref()
                    .map_or_else(String::new, |u| self.key("user", u)),
            )
            .arg(self.node.prefix())
            .arg(&id)
            .arg(token_hash(&offer.1))
            .arg(user.as_deref().unwrap_or(""))
            .arg(owner.to_string())
            .arg(client_id)
            .arg(self.node.id())
            .arg(self.ttl_ms(true))
            .arg(caps.total)
            .arg(caps.per_ip)
            .arg(caps.per_user);
        let mut conn = self.node.connection();
        let answer: String = self
            .run(call.invoke_async(&mut conn))
            .await
            .map_err(|_| TooMany::Unavailable)?;
        match answer.as_str() {
            "ok" => {}
            "sessions" => return Err(TooMany::Sessions),
            "per_ip" => return Err(TooMany::PerIp),
            "per_user" => return Err(TooMany::PerUser),
            other => {
                tracing::warn!(answer = %crate::logsafe::escape(other), "the session store's create answered something unknown");
                return Err(TooMany::Unavailable);
            }
        }
        let mut session = Session::new(
            offer,
            client_id.to_owned(),
            owner,
            attach,
            self.budget.clone(),
            self.limits,
        );
        session.write_through(1);
        let session = Arc::new(Mutex::new(session));
        self.map().insert(id, session.clone());
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
        if !valid_id(id) {
            return Err(ResumeFailure::UnknownSession.into());
        }
        self.flush_cached(id).await;
        let (stored, old_node, was_attached) = self
            .load(id, Some((token, &attach, client_id)))
            .await
            .map_err(|_| ResumeError::Unavailable)??;
        let epoch = stored.epoch;
        let Some(mut session) = Session::restore(stored, self.budget.clone(), self.limits) else {
            tracing::warn!(session = %crate::logsafe::escape(id), "a session in Redis does not parse: resume refused");
            return Err(ResumeFailure::UnknownSession.into());
        };
        let conn = attach.conn;
        let resume = session.resume(attach, last_seq, client_id, now);
        session.set_epoch(epoch);
        let session = Arc::new(Mutex::new(session));
        // The connection that held it closes with 4002: here at once, on
        // another node through its command stream (and fenced either way).
        let mut map = self.map();
        if let Some(cached) = map.get(id).cloned() {
            let mut old = lock(&cached);
            if let Some(theirs) = old.epoch().filter(|theirs| *theirs > epoch) {
                // A later resume here (a later epoch) won the race: this
                // one is taken over already, and the cache keeps the winner.
                drop((old, map));
                lock(&session).lost_to(theirs);
                return Ok((session, resume));
            }
            // The same connection resuming again is no takeover.
            if !old.is_attached(conn) {
                old.lost_to(epoch);
            }
            drop(old);
            map.remove(id);
        }
        map.insert(id.to_owned(), session.clone());
        drop(map);
        if was_attached && !old_node.is_empty() && old_node != self.node.id() {
            self.node
                .clone()
                .send_takeover(old_node, id.to_owned(), epoch);
        }
        Ok((session, resume))
    }

    async fn detached_of(&self, client_id: &str) -> Result<Option<SessionRef>, Unwritten> {
        let mut conn = self.node.connection();
        let key = self.key("client", client_id);
        let id: Option<String> = self
            .run(redis::cmd("GET").arg(key).query_async(&mut conn))
            .await?;
        let Some(id) = id else {
            return Ok(None);
        };
        self.flush_cached(&id).await;
        self.away(&id).await
    }

    async fn detached_of_user(&self, user: &str) -> Result<Vec<SessionRef>, Unwritten> {
        let mut conn = self.node.connection();
        let key = self.key("user", user);
        let ids: Vec<String> = self
            .run(redis::cmd("SMEMBERS").arg(key).query_async(&mut conn))
            .await?;
        let mut away = Vec::new();
        for id in ids {
            self.flush_cached(&id).await;
            away.extend(self.away(&id).await?);
        }
        Ok(away)
    }

    /// One script reads the user's set and deletes its sessions, so that a
    /// session the user starts meanwhile is either ended or left whole
    /// (and in the set).
    async fn end_user(&self, user: &str) -> usize {
        let mut conn = self.node.connection();
        let mut call = self.scripts.end_user.prepare_invoke();
        call.key(self.key("user", user)).arg(self.node.prefix());
        let ended: Vec<String> = self
            .run(call.invoke_async(&mut conn))
            .await
            .unwrap_or_default();
        let mut map = self.map();
        for id in ended.iter().skip(1) {
            map.remove(id);
        }
        ended.first().and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    /// See `upkeep.rs`: writes what is unwritten, drops from the cache
    /// the sessions no longer attached here, refreshes (fenced) the TTL of
    /// those attached, retries the detaches Redis did not take, and ages
    /// the history of the sessions away this node wrote last.
    async fn sweep(&self, _now: Instant) -> usize {
        self.upkeep_now().await;
        0
    }

    async fn reclaim(&self) -> usize {
        // Only attached sessions are cached, and they are never evicted.
        self.budget.satisfied();
        0
    }

    async fn pressure(&self) {
        self.budget.pressure.notified().await;
    }

    async fn len(&self) -> usize {
        self.map().len()
    }

    async fn history_bytes(&self) -> usize {
        self.budget.used()
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    async fn persist(&self, session: &SessionRef) -> Result<(), Unwritten> {
        Self::persist(self, session).await
    }
}
