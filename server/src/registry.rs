//! The registry of connected `/ws` clients: what the admin API lists, pushes
//! to and kicks.
//!
//! A std `Mutex` guards the map: every section is a short insert, remove or
//! clone with no `.await` inside.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Instant, SystemTime};

use serde::Serialize;
use shared::PushEncoder;

pub use crate::queue::Outbound;
use crate::queue::{self, TrySendError, Wake};

use crate::reliable::{self, Outgoing, Refused, SessionRef, TakeoverSignal, To};

/// A close the connection is asked to perform (kick, replacement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    /// The close code.
    pub code: u16,
    /// The close reason.
    pub reason: String,
}

/// What one connection shares with the registry: its counters and the close
/// it is asked to perform. One small allocation per connection (a `watch`
/// channel for the close request alone cost about 400 bytes).
///
/// A close request (a kick, a replacement, a takeover of the reliable
/// session, the server's shutdown) wakes the connection through its
/// outbound queue's [`Wake`], the same wake-up as a push: the connection
/// waits on one source, and reads the flag once per turn of its loop.
#[derive(Debug, Default)]
pub struct ClientShared {
    pub(crate) messages_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    close: Mutex<Option<CloseRequest>>,
    /// Set with `close`: read without its lock at every turn.
    close_pending: AtomicBool,
    /// The connection's wake-up (`None` only in unit tests of the write side).
    wake: Option<Wake>,
}

impl ClientShared {
    /// The shared part of a connection woken by `wake`.
    pub(crate) fn new(wake: Wake) -> Self {
        Self {
            wake: Some(wake),
            ..Self::default()
        }
    }

    /// Asks the connection to close; a later request replaces an earlier one
    /// that was not yet taken.
    pub fn request_close(&self, request: CloseRequest) {
        *self.close.lock().unwrap_or_else(PoisonError::into_inner) = Some(request);
        self.close_pending.store(true, Ordering::Release);
        if let Some(wake) = &self.wake {
            wake.wake();
        }
    }

    /// Whether a close was asked for and not taken yet.
    pub fn close_pending(&self) -> bool {
        self.close_pending.load(Ordering::Acquire)
    }

    /// The close request, if one was made: one atomic load when there is none.
    pub fn take_close(&self) -> Option<CloseRequest> {
        if !self.close_pending.load(Ordering::Acquire) {
            return None;
        }
        self.close_pending.store(false, Relaxed);
        self.close
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// A resume on another connection took the session over: the connection
/// closes with 4002 through the close request it watches anyway.
impl TakeoverSignal for ClientShared {
    fn taken_over(&self) {
        self.request_close(CloseRequest {
            code: shared::close_code::REPLACED,
            reason: "session resumed on another connection".into(),
        });
    }

    fn store_unavailable(&self) {
        self.request_close(CloseRequest {
            code: shared::close_code::TRY_AGAIN_LATER,
            reason: "session store unavailable: try again later".into(),
        });
    }
}

/// The registry's handle on one connection.
#[derive(Debug, Clone)]
pub struct ClientHandle {
    /// A number unique to this connection, so that a replaced connection does not
    /// remove its successor from the registry.
    pub(crate) conn: u64,
    pub(crate) remote_addr: SocketAddr,
    /// Token mode: the token's `sub`.
    pub(crate) user: Option<Arc<str>>,
    /// Token mode: the token's `client_name`, if any.
    pub(crate) client_name: Option<Arc<str>>,
    pub(crate) connected_at: SystemTime,
    pub(crate) outbound: queue::Sender,
    pub(crate) shared: Arc<ClientShared>,
    /// Reliable mode: the session, once the connection's first message bound it.
    pub(crate) session: Option<Arc<OnceLock<SessionRef>>>,
}

/// One row of `GET /api/clients`.
#[derive(Debug, Serialize)]
pub struct ClientInfo {
    id: String,
    /// Cluster mode: the node holding the connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    /// Token mode: the user (the token's `sub`).
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    /// Token mode: the token's `client_name`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_name: Option<String>,
    remote_addr: String,
    /// Milliseconds since the Unix epoch.
    connected_at: u64,
    messages_in: u64,
    messages_out: u64,
    queue_len: usize,
    /// The bytes of those messages.
    queue_bytes: usize,
    /// Reliable mode: the session id, once bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<String>,
    /// Reliable mode: server messages not yet acknowledged.
    #[serde(skip_serializing_if = "Option::is_none")]
    unacked: Option<usize>,
    /// Reliable mode: their bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    unacked_bytes: Option<usize>,
}

/// Connected clients by id.
#[derive(Debug, Default)]
pub struct Registry {
    clients: Mutex<HashMap<String, ClientHandle>>,
    next_conn: AtomicU64,
    /// Cluster mode only: where inserts and removals go, to be mirrored
    /// into Redis. Unset on a single node (nothing is sent).
    mirror: OnceLock<Mirror>,
}

/// Cluster mode: the bounded way from the registry to its mirror in Redis.
#[derive(Debug)]
struct Mirror {
    changes: tokio::sync::mpsc::Sender<Change>,
    /// Set when a change did not fit: the mirror then writes everything again.
    overflowed: Arc<AtomicBool>,
}

impl Mirror {
    fn send(&self, change: Change) {
        if self.changes.try_send(change).is_err() {
            self.overflowed.store(true, Relaxed);
        }
    }
}

/// Changes waiting for the mirror; beyond, it resyncs from the registry.
const MIRROR_QUEUE: usize = 4096;

/// What the cluster's list shows of a connection held by a node, mirrored
/// into Redis (the counters stay on the node).
#[derive(Debug, Clone, Serialize)]
pub struct MirrorRow {
    /// The client id.
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_name: Option<String>,
    remote_addr: String,
    /// Milliseconds since the Unix epoch.
    connected_at: u64,
}

/// A change of the registry, for its mirror in Redis.
#[derive(Debug, Clone)]
pub enum Change {
    /// A connection was registered (or replaced one of the same id).
    Upsert(MirrorRow),
    /// A connection left.
    Remove(String),
}

/// What became of a push to one client.
#[derive(Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued for the writer.
    Queued,
    /// The client's queue was full: the push was dropped and counted.
    QueueFull,
    /// A reliable connection whose first message has not arrived yet.
    NotReady,
    /// No such client.
    Unknown,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, ClientHandle>> {
        // A panic while holding this lock leaves the map itself consistent
        // (every section is a single map operation), so keep going.
        self.clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A fresh connection number.
    pub fn next_conn(&self) -> u64 {
        self.next_conn.fetch_add(1, Relaxed) + 1
    }

    /// A fresh client id, unused at the moment: 128 random bits as 32 hex
    /// digits, so that no one can guess another connection's id (the admin
    /// API pushes to and kicks by id).
    pub fn assign_id(&self) -> String {
        loop {
            let id = format!("{:032x}", rand::random::<u128>());
            if !self.lock().contains_key(&id) {
                return id;
            }
        }
    }

    /// Registers `handle` as `id`, returning the connection it replaces.
    pub fn insert(&self, id: &str, handle: ClientHandle) -> Option<ClientHandle> {
        let mut clients = self.lock();
        if let Some(mirror) = self.mirror.get() {
            // Sent under the lock, so the mirror sees changes in their order.
            mirror.send(Change::Upsert(handle.mirror_row(id)));
        }
        clients.insert(id.to_owned(), handle)
    }

    /// Removes `id` if it is still connection `conn`.
    pub fn remove(&self, id: &str, conn: u64) {
        let mut clients = self.lock();
        if clients.get(id).is_some_and(|h| h.conn == conn) {
            clients.remove(id);
            if let Some(mirror) = self.mirror.get() {
                mirror.send(Change::Remove(id.to_owned()));
            }
        }
    }

    /// Cluster mode: from now on every insert and removal is sent to the
    /// returned receiver (bounded: when it is full the flag is set and the
    /// mirror must write every row again). Called once, at start.
    pub fn mirror(&self) -> (tokio::sync::mpsc::Receiver<Change>, Arc<AtomicBool>) {
        let (changes, rx) = tokio::sync::mpsc::channel(MIRROR_QUEUE);
        let overflowed = Arc::new(AtomicBool::new(false));
        let _ = self.mirror.set(Mirror {
            changes,
            overflowed: overflowed.clone(),
        });
        (rx, overflowed)
    }

    /// Every connection as mirrored (a full resync of the mirror).
    pub fn mirror_rows(&self) -> Vec<MirrorRow> {
        self.lock().iter().map(|(id, h)| h.mirror_row(id)).collect()
    }

    /// Connection `id`'s number and queue, if it is held here.
    pub(crate) fn conn_of(&self, id: &str) -> Option<(u64, queue::Sender, Arc<ClientShared>)> {
        self.lock()
            .get(id)
            .map(|h| (h.conn, h.outbound.clone(), h.shared.clone()))
    }

    /// True when connection `id` is held here.
    pub fn contains(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    /// The rows of `GET /api/clients`, sorted by id; with `node` (cluster
    /// mode) each row names it.
    pub fn list(&self, node: Option<&str>) -> Vec<ClientInfo> {
        let mut rows: Vec<ClientInfo> = self
            .lock()
            .iter()
            .map(|(id, h)| ClientInfo {
                id: id.clone(),
                node: node.map(str::to_owned),
                user: h.user.as_deref().map(str::to_owned),
                client_name: h.client_name.as_deref().map(str::to_owned),
                remote_addr: h.remote_addr.to_string(),
                connected_at: millis(h.connected_at),
                messages_in: h.shared.messages_in.load(Relaxed),
                messages_out: h.shared.messages_out.load(Relaxed) + h.outbound.written(),
                queue_len: h.outbound.len(),
                queue_bytes: h.outbound.queued_bytes(),
                session: h.bound().map(|s| reliable::lock(s).id().to_owned()),
                unacked: h.bound().map(|s| reliable::lock(s).unacked()),
                unacked_bytes: h.bound().map(|s| reliable::lock(s).unacked_bytes()),
            })
            .collect();
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        rows
    }

    /// Queues `push` to `id`.
    pub fn push(&self, id: &str, push: Arc<PushEncoder>) -> PushOutcome {
        let Some(handle) = self.lock().get(id).cloned() else {
            return PushOutcome::Unknown;
        };
        handle.push(push)
    }

    /// Queues `push` to every client; returns how many queued it and how many
    /// had a full queue. The push is encoded once and shared: a plain
    /// connection queues the encoder, a reliable session numbers it without
    /// escaping the body again and keeps the shared body in its history.
    pub fn broadcast(&self, push: &Arc<PushEncoder>) -> (usize, usize) {
        let targets: Vec<ClientHandle> = self.lock().values().cloned().collect();
        let mut queued = 0;
        for handle in &targets {
            if handle.push(push.clone()) == PushOutcome::Queued {
                queued += 1;
            }
        }
        (queued, targets.len() - queued)
    }

    /// The connections of `user` (token mode).
    fn of_user(&self, user: &str) -> Vec<ClientHandle> {
        self.lock()
            .values()
            .filter(|h| h.user.as_deref() == Some(user))
            .cloned()
            .collect()
    }

    /// Queues `push` to every connection of `user`, as [`Registry::push`]
    /// does to one; returns how many queued it and how many connections
    /// `user` has.
    pub fn push_user(&self, user: &str, push: &Arc<PushEncoder>) -> (usize, usize) {
        let targets = self.of_user(user);
        let queued = targets
            .iter()
            .filter(|h| h.push(push.clone()) == PushOutcome::Queued)
            .count();
        (queued, targets.len())
    }

    /// Asks every connection of `user` to close; returns how many.
    pub fn kick_user(&self, user: &str, request: &CloseRequest) -> usize {
        let targets = self.of_user(user);
        for handle in &targets {
            handle.shared.request_close(request.clone());
        }
        targets.len()
    }

    /// Asks every connection to close with `request` (the server's shutdown).
    pub fn close_all(&self, request: &CloseRequest) {
        let shareds: Vec<Arc<ClientShared>> =
            self.lock().values().map(|h| h.shared.clone()).collect();
        for shared in shareds {
            shared.request_close(request.clone());
        }
    }

    /// Asks `id` to close with `code` and `reason`; false if unknown.
    pub fn kick(&self, id: &str, request: CloseRequest) -> bool {
        match self.lock().get(id) {
            Some(h) => {
                h.shared.request_close(request);
                true
            }
            None => false,
        }
    }
}

impl ClientHandle {
    fn mirror_row(&self, id: &str) -> MirrorRow {
        MirrorRow {
            id: id.to_owned(),
            user: self.user.as_deref().map(str::to_owned),
            client_name: self.client_name.as_deref().map(str::to_owned),
            remote_addr: self.remote_addr.to_string(),
            connected_at: millis(self.connected_at),
        }
    }

    /// The reliable session this connection speaks for, if bound.
    fn bound(&self) -> Option<&SessionRef> {
        self.session.as_ref().and_then(|slot| slot.get())
    }

    /// Queues `push`: numbered by the writer, or in reliable mode numbered
    /// and kept in the session's history right away, so that the wire order
    /// is the seq order and a resume can replay it.
    fn push(&self, push: Arc<PushEncoder>) -> PushOutcome {
        let Some(slot) = &self.session else {
            return match self.outbound.try_send(Outbound::Push { push }) {
                Ok(()) => PushOutcome::Queued,
                Err(TrySendError::Full) => PushOutcome::QueueFull,
                Err(TrySendError::Closed) => PushOutcome::Unknown,
            };
        };
        let Some(session) = slot.get() else {
            return PushOutcome::NotReady;
        };
        let permit = match self.outbound.try_reserve() {
            Ok(permit) => permit,
            Err(TrySendError::Full) => return PushOutcome::QueueFull,
            Err(TrySendError::Closed) => return PushOutcome::Unknown,
        };
        let push = Outgoing::Shared(push);
        match reliable::lock(session).send(To::Connection(self.conn), push, Instant::now()) {
            Ok(frame) => {
                permit.send(Outbound::Frame(axum::extract::ws::Message::Text(frame)));
                PushOutcome::Queued
            }
            // Never evict for a connected client: it would lose what it has not read.
            Err(Refused::Full) => PushOutcome::QueueFull,
            // A resume on another connection took the session: this one is on its way out.
            Err(Refused::TakenOver) => PushOutcome::Unknown,
        }
    }
}

use crate::clock::millis;

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(registry: &Registry, user: Option<&str>) -> ClientHandle {
        let (outbound, _) = queue::channel(4, 1024, Arc::default());
        ClientHandle {
            conn: registry.next_conn(),
            remote_addr: SocketAddr::from(([127, 0, 0, 1], 9)),
            user: user.map(Arc::from),
            client_name: None,
            connected_at: SystemTime::UNIX_EPOCH,
            outbound,
            shared: Arc::default(),
            session: None,
        }
    }

    #[test]
    fn a_single_node_registry_sends_nothing_to_a_mirror() {
        let registry = Registry::default();
        let first = handle(&registry, None);
        let conn = first.conn;
        registry.insert("a", first);
        assert!(registry.contains("a"));
        registry.remove("a", conn);
        assert!(!registry.contains("a"));
        assert!(registry.mirror.get().is_none());
    }

    #[test]
    fn the_mirror_sees_changes_in_order_and_an_overflow_asks_for_a_resync() {
        let registry = Registry::default();
        let (mut changes, overflowed) = registry.mirror();
        let first = handle(&registry, Some("alice"));
        let conn = first.conn;
        registry.insert("a", first);
        // A stale connection number removes nothing and sends nothing.
        registry.remove("a", conn + 100);
        registry.remove("a", conn);
        match changes.try_recv() {
            Ok(Change::Upsert(row)) => {
                assert_eq!(row.id, "a");
                assert_eq!(row.user.as_deref(), Some("alice"));
            }
            other => panic!("expected the insert, got {other:?}"),
        }
        assert!(matches!(changes.try_recv(), Ok(Change::Remove(id)) if id == "a"));
        assert!(changes.try_recv().is_err());
        assert!(!overflowed.load(Relaxed));

        for n in 0..=MIRROR_QUEUE {
            registry.insert(&n.to_string(), handle(&registry, None));
        }
        assert!(
            overflowed.load(Relaxed),
            "one change more than the queue holds"
        );
        assert_eq!(
            registry.mirror_rows().len(),
            MIRROR_QUEUE + 1,
            "what a resync writes"
        );
    }
}
