//! Reliable mode's bookkeeping (`/ws?reliable=1`): sessions that outlive
//! their connections, the history of unacknowledged server messages, and the
//! exactly-once filter for client messages.
//!
//! Pure state, no I/O: the connection (`session.rs`) locks a [`Session`],
//! records what it sends and feeds in what it reads; the admin API records
//! pushes into sessions whose client is away. Every section under a lock is
//! short and has no `.await` inside.
//!
//! Bounds, all configurable ([`Limits`]):
//! * the history holds at most `history_max` unacknowledged messages. While a
//!   client is connected nothing is evicted: bursts and timed pushes wait
//!   for acks once half of it is used (the send window), replies use the
//!   rest, and a client that lets it fill up (by not acknowledging) is
//!   closed with 1013 and resumes with nothing lost. While the client is
//!   away, pushes for it evict the oldest and the loss is reported as a `gap`;
//! * the same holds for the bytes of the history (`history_max_bytes`), so a
//!   client cannot make the server keep `history_max` large messages;
//! * a message older than `history_max_age` is evicted the same way, once
//!   its client is away;
//! * a session whose client has been away for `ttl` is forgotten: its resume
//!   fails with `unknown_session`;
//! * at most `max_sessions` are held: a new reliable connection beyond that
//!   is closed with 1013 (try again later), so many clients cannot make the
//!   server hold unbounded history.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use shared::{ResumeFailure, ServerMessage};

/// The bounds of reliable mode.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Unacknowledged server messages kept per session (and the send window).
    pub history_max: usize,
    /// Unacknowledged server messages older than this are evicted.
    pub history_max_age: Duration,
    /// The history's frames hold at most this many bytes (the same rules as the count).
    pub history_max_bytes: usize,
    /// How long a session outlives its last connection.
    pub ttl: Duration,
    /// Sessions held at most (connected or waiting for a resume).
    pub max_sessions: usize,
}

/// One unacknowledged server message.
#[derive(Debug)]
struct Entry {
    seq: u64,
    at: Instant,
    /// The whole `msg` envelope, ready to write again.
    frame: Utf8Bytes,
}

/// A burst that survives reconnects: its pushes are numbered as they are made.
#[derive(Debug, Clone, Copy)]
struct Burst {
    count: u32,
    left: u32,
    started: Instant,
}

/// The session was taken over by a newer connection (a `resume`), so this
/// connection may no longer send in its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakenOver;

/// What to do with a client `msg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// The next one: process it.
    Process,
    /// Processed already (a resend): skip it, but acknowledge.
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

/// One reliable session.
#[derive(Debug)]
pub struct Session {
    id: String,
    token: String,
    client_id: String,
    limits: Limits,
    history: VecDeque<Entry>,
    /// The bytes of the history's frames.
    history_bytes: usize,
    /// The seq of the last server message recorded.
    last_out: u64,
    /// The highest seq evicted before it was acknowledged.
    lost_through: u64,
    /// The last client seq processed.
    last_in: u64,
    /// The `push` counter (the `seq` inside pushes), per session.
    pushes: u64,
    bursts: VecDeque<Burst>,
    /// The connection that speaks for the session, if any.
    attached: Option<u64>,
    detached_at: Option<Instant>,
}

impl Session {
    fn new(id: String, token: String, client_id: String, conn: u64, limits: Limits) -> Self {
        Self {
            id,
            token,
            client_id,
            limits,
            history: VecDeque::new(),
            history_bytes: 0,
            last_out: 0,
            lost_through: 0,
            last_in: 0,
            pushes: 0,
            bursts: VecDeque::new(),
            attached: Some(conn),
            detached_at: None,
        }
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Unacknowledged server messages held.
    pub fn unacked(&self) -> usize {
        self.history.len()
    }

    /// Whether the send window (half the history, in count and in bytes)
    /// has room for a push.
    pub fn window_open(&self) -> bool {
        self.history.len() < (self.limits.history_max / 2).max(1)
            && self.history_bytes < self.limits.history_max_bytes / 2
    }

    /// Whether the history is full (in count or in bytes): a connected
    /// client is not acknowledging.
    pub fn full(&self) -> bool {
        self.history.len() >= self.limits.history_max
            || self.history_bytes >= self.limits.history_max_bytes
    }

    /// The last client seq processed.
    pub fn last_in(&self) -> u64 {
        self.last_in
    }

    /// Whether connection `conn` speaks for the session.
    pub fn is_attached(&self, conn: u64) -> bool {
        self.attached == Some(conn)
    }

    /// Numbers `message`, keeps it until acknowledged and returns its `msg`
    /// envelope. `conn` is the connection that will write it, or `None` to
    /// store it for a client that is away.
    ///
    /// # Errors
    ///
    /// [`TakenOver`] when `conn` no longer speaks for the session.
    pub fn record(
        &mut self,
        conn: Option<u64>,
        message: &ServerMessage,
        now: Instant,
    ) -> Result<Utf8Bytes, TakenOver> {
        if conn.is_some() && self.attached != conn {
            return Err(TakenOver);
        }
        self.last_out += 1;
        let frame = Utf8Bytes::from(
            ServerMessage::Msg {
                seq: self.last_out,
                data: message.to_json(),
            }
            .to_json(),
        );
        self.history_bytes += frame.len();
        self.history.push_back(Entry {
            seq: self.last_out,
            at: now,
            frame: frame.clone(),
        });
        self.evict(now);
        Ok(frame)
    }

    /// A `push` numbered within the session.
    pub fn push_message(&mut self, body: String, sent_at_ms: u64) -> ServerMessage {
        self.pushes += 1;
        ServerMessage::Push {
            seq: self.pushes,
            sent_at_ms,
            body,
        }
    }

    /// While the client is away, drops the history over the count, byte or
    /// age limit, remembering how far the loss reaches. A connected client
    /// loses nothing: its bounds are kept by the window and [`Session::full`].
    fn evict(&mut self, now: Instant) {
        if self.attached.is_some() {
            return;
        }
        while let Some(front) = self.history.front() {
            let too_many = self.history.len() > self.limits.history_max
                || self.history_bytes > self.limits.history_max_bytes;
            let too_old = now.saturating_duration_since(front.at) > self.limits.history_max_age;
            if !(too_many || too_old) {
                break;
            }
            self.lost_through = front.seq;
            self.pop();
        }
    }

    fn pop(&mut self) {
        if let Some(entry) = self.history.pop_front() {
            self.history_bytes -= entry.frame.len();
        }
    }

    /// The client processed every server message up to `seq`.
    pub fn ack(&mut self, seq: u64) {
        let seq = seq.min(self.last_out);
        while self.history.front().is_some_and(|e| e.seq <= seq) {
            self.pop();
        }
    }

    /// Decides about client `msg` number `seq` (and counts it processed when it is next).
    pub fn accept(&mut self, seq: u64) -> Inbound {
        if seq <= self.last_in {
            Inbound::Duplicate
        } else if seq == self.last_in + 1 {
            self.last_in = seq;
            Inbound::Process
        } else {
            Inbound::OutOfOrder {
                expected: self.last_in + 1,
            }
        }
    }

    /// Connection `conn` takes the session over; the client processed server
    /// messages up to `last_seq`.
    fn resume(&mut self, conn: u64, last_seq: u64, client_id: &str, now: Instant) -> Resume {
        // What aged out while the client was away goes before it is back.
        if self.attached.is_none() {
            self.evict(now);
        }
        self.attached = Some(conn);
        self.detached_at = None;
        client_id.clone_into(&mut self.client_id);
        self.ack(last_seq);
        let gap = (self.lost_through > last_seq).then_some((last_seq + 1, self.lost_through));
        Resume {
            gap,
            replay: self.history.iter().map(|e| e.frame.clone()).collect(),
            last_in: self.last_in,
        }
    }

    /// Connection `conn` ended; the session waits for a resume until the TTL.
    pub fn detach(&mut self, conn: u64, now: Instant) {
        if self.attached == Some(conn) {
            self.attached = None;
            self.detached_at = Some(now);
        }
    }

    fn expired(&self, now: Instant) -> bool {
        self.detached_at
            .is_some_and(|at| now.saturating_duration_since(at) >= self.limits.ttl)
    }

    /// Queues a burst of `count` pushes, made as the window allows.
    pub fn start_burst(&mut self, count: u32, now: Instant) {
        self.bursts.push_back(Burst {
            count,
            left: count,
            started: now,
        });
    }

    /// Whether a burst has pushes left.
    pub fn bursting(&self) -> bool {
        !self.bursts.is_empty()
    }

    /// The next message of the current burst: a push, or `burst_done` after the last.
    pub fn burst_step(&mut self, sent_at_ms: u64, now: Instant) -> Option<ServerMessage> {
        let burst = self.bursts.front_mut()?;
        if burst.left > 0 {
            burst.left -= 1;
            return Some(self.push_message("burst".into(), sent_at_ms));
        }
        let done = ServerMessage::BurstDone {
            count: burst.count,
            elapsed_ms: u64::try_from(now.saturating_duration_since(burst.started).as_millis())
                .unwrap_or(u64::MAX),
        };
        self.bursts.pop_front();
        Some(done)
    }
}

/// A shared, lockable session.
pub type SessionRef = Arc<Mutex<Session>>;

/// Locks a session; a panic while it was held cannot leave it torn (every
/// method keeps it consistent at each step), so a poisoned lock is used as is.
pub fn lock(session: &SessionRef) -> MutexGuard<'_, Session> {
    session
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Every reliable session, by id.
#[derive(Debug)]
pub struct Store {
    limits: Limits,
    sessions: Mutex<HashMap<String, SessionRef>>,
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

impl Store {
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

    /// Starts session `id` (offered in the welcome) for connection `conn`;
    /// `None` when `max_sessions` are held even after forgetting expired ones.
    pub fn create(
        &self,
        id: String,
        token: String,
        client_id: &str,
        conn: u64,
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
            conn,
            self.limits,
        )));
        map.insert(id, session.clone());
        Some(session)
    }

    /// Connection `conn` of `client_id` resumes session `id`.
    ///
    /// # Errors
    ///
    /// [`ResumeFailure::UnknownSession`] for a session that does not exist
    /// or expired, [`ResumeFailure::BadToken`] for a wrong token.
    pub fn resume(
        &self,
        id: &str,
        token: &str,
        last_seq: u64,
        client_id: &str,
        conn: u64,
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
        if !crate::admin::constant_time_eq(guard.token.as_bytes(), token.as_bytes()) {
            return Err(ResumeFailure::BadToken);
        }
        let resume = guard.resume(conn, last_seq, client_id, now);
        drop(guard);
        Ok((session, resume))
    }

    /// The session of `client_id` while its client is away (for admin pushes).
    pub fn detached_of(&self, client_id: &str) -> Option<SessionRef> {
        self.map()
            .values()
            .find(|s| {
                let s = lock(s);
                s.attached.is_none() && s.client_id == client_id
            })
            .cloned()
    }

    /// Forgets sessions whose client has been away for the TTL; returns how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut map = self.map();
        let before = map.len();
        map.retain(|_, s| !lock(s).expired(now));
        before - map.len()
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// The configured bounds.
    pub fn limits(&self) -> Limits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(history_max: usize) -> Limits {
        Limits {
            history_max,
            history_max_age: Duration::from_secs(60),
            history_max_bytes: usize::MAX,
            ttl: Duration::from_secs(120),
            max_sessions: 3,
        }
    }

    fn push(n: u64) -> ServerMessage {
        ServerMessage::Push {
            seq: n,
            sent_at_ms: 0,
            body: format!("p{n}"),
        }
    }

    /// Session "s" (token "t") of client "c", attached to connection 1.
    fn first(store: &Store) -> SessionRef {
        store
            .create("s".into(), "t".into(), "c", 1, Instant::now())
            .unwrap()
    }

    fn seq_of(frame: &Utf8Bytes) -> u64 {
        match ServerMessage::from_json(frame.as_str()).unwrap() {
            ServerMessage::Msg { seq, .. } => seq,
            other => panic!("not a msg: {other:?}"),
        }
    }

    #[test]
    fn records_number_from_one_and_acks_release_them() {
        let now = Instant::now();
        let store = Store::new(limits(10));
        let s = first(&store);
        let mut s = lock(&s);
        let seqs: Vec<u64> = (1..=5)
            .map(|n| seq_of(&s.record(Some(1), &push(n), now).unwrap()))
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        assert_eq!(s.unacked(), 5);
        assert!(!s.window_open());
        assert!(!s.full());
        s.ack(3);
        assert_eq!(s.unacked(), 2);
        assert!(s.window_open());
        // Acks beyond what was sent, or going backwards, change nothing wrong.
        s.ack(2);
        assert_eq!(s.unacked(), 2);
        s.ack(99);
        assert_eq!(s.unacked(), 0);
    }

    #[test]
    fn each_client_seq_is_processed_once_and_in_order() {
        let store = Store::new(limits(10));
        let s = first(&store);
        let mut s = lock(&s);
        assert_eq!(s.accept(1), Inbound::Process);
        assert_eq!(s.accept(2), Inbound::Process);
        assert_eq!(s.accept(2), Inbound::Duplicate);
        assert_eq!(s.accept(1), Inbound::Duplicate);
        assert_eq!(s.accept(4), Inbound::OutOfOrder { expected: 3 });
        assert_eq!(s.accept(3), Inbound::Process);
        assert_eq!(s.last_in(), 3);
    }

    #[test]
    fn resume_replays_what_follows_last_seq_in_order() {
        let now = Instant::now();
        let store = Store::new(limits(10));
        let s = first(&store);
        for n in 1..=6 {
            lock(&s).record(Some(1), &push(n), now).unwrap();
        }
        lock(&s).ack(2);
        lock(&s).accept(1);
        lock(&s).detach(1, now);
        let (_, resume) = store.resume("s", "t", 4, "c2", 2, now).unwrap();
        assert_eq!(resume.gap, None);
        assert_eq!(resume.last_in, 1);
        let seqs: Vec<u64> = resume.replay.iter().map(seq_of).collect();
        assert_eq!(seqs, [5, 6]);
        // The old connection may no longer speak for the session.
        assert_eq!(
            lock(&s).record(Some(1), &push(7), now).unwrap_err(),
            TakenOver
        );
        assert_eq!(seq_of(&lock(&s).record(Some(2), &push(7), now).unwrap()), 7);
    }

    #[test]
    fn resume_takes_over_a_connection_the_server_still_thinks_alive() {
        let now = Instant::now();
        let store = Store::new(limits(10));
        let s = first(&store);
        assert!(store.resume("s", "t", 0, "c", 2, now).is_ok());
        assert!(lock(&s).is_attached(2));
        assert!(!lock(&s).is_attached(1));
        // The old connection ending does not detach the new one.
        lock(&s).detach(1, now);
        assert!(lock(&s).is_attached(2));
    }

    #[test]
    fn a_history_too_short_is_reported_as_a_gap() {
        let now = Instant::now();
        let store = Store::new(limits(3));
        let s = first(&store);
        lock(&s).detach(1, now);
        // The client is away: pushes are stored, the oldest evicted.
        for n in 1..=5 {
            lock(&s).record(None, &push(n), now).unwrap();
        }
        assert_eq!(lock(&s).unacked(), 3);
        let (_, resume) = store.resume("s", "t", 0, "c", 2, now).unwrap();
        assert_eq!(resume.gap, Some((1, 2)));
        let seqs: Vec<u64> = resume.replay.iter().map(seq_of).collect();
        assert_eq!(seqs, [3, 4, 5]);
        // A client that got the gap and the replay resumes without a new gap.
        lock(&s).detach(2, now);
        let (_, resume) = store.resume("s", "t", 5, "c", 3, now).unwrap();
        assert_eq!(resume.gap, None);
        assert!(resume.replay.is_empty());
    }

    #[test]
    fn old_messages_are_evicted_by_age() {
        let start = Instant::now();
        let store = Store::new(limits(100));
        let s = first(&store);
        lock(&s).record(Some(1), &push(1), start).unwrap();
        lock(&s).record(Some(1), &push(2), start).unwrap();
        let later = start + Duration::from_secs(61);
        lock(&s).record(Some(1), &push(3), later).unwrap();
        lock(&s).detach(1, later);
        let (_, resume) = store.resume("s", "t", 0, "c", 2, later).unwrap();
        assert_eq!(resume.gap, Some((1, 2)));
        assert_eq!(resume.replay.len(), 1);
    }

    #[test]
    fn sessions_expire_after_the_ttl_and_tokens_are_checked() {
        let now = Instant::now();
        let store = Store::new(limits(10));
        let s = first(&store);
        assert_eq!(
            store.resume("s", "wrong", 0, "c", 2, now).unwrap_err(),
            ResumeFailure::BadToken
        );
        assert_eq!(
            store.resume("nope", "t", 0, "c", 2, now).unwrap_err(),
            ResumeFailure::UnknownSession
        );
        lock(&s).detach(1, now);
        assert!(store.detached_of("c").is_some());
        assert_eq!(store.sweep(now + Duration::from_secs(119)), 0);
        assert_eq!(store.sweep(now + Duration::from_secs(120)), 1);
        assert_eq!(store.len(), 0);
        assert_eq!(
            store
                .resume("s", "t", 0, "c", 2, now + Duration::from_secs(121))
                .unwrap_err(),
            ResumeFailure::UnknownSession
        );
    }

    #[test]
    fn bursts_continue_where_they_stopped_and_end_with_done() {
        let now = Instant::now();
        let store = Store::new(limits(10));
        let s = first(&store);
        let mut s = lock(&s);
        s.start_burst(2, now);
        assert!(s.bursting());
        let mut got = Vec::new();
        while let Some(m) = s.burst_step(0, now) {
            got.push(m);
        }
        assert!(!s.bursting());
        assert!(matches!(got[0], ServerMessage::Push { seq: 1, .. }));
        assert!(matches!(got[1], ServerMessage::Push { seq: 2, .. }));
        assert!(matches!(got[2], ServerMessage::BurstDone { count: 2, .. }));
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn sessions_are_capped_and_expired_ones_make_room() {
        let now = Instant::now();
        let store = Store::new(limits(10));
        for n in 0..3 {
            let s = store
                .create(format!("s{n}"), "t".into(), "c", n, now)
                .unwrap();
            lock(&s).detach(n, now);
        }
        assert!(store.create("s3".into(), "t".into(), "c", 3, now).is_none());
        let later = now + Duration::from_secs(120);
        assert!(
            store
                .create("s3".into(), "t".into(), "c", 3, later)
                .is_some()
        );
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn the_byte_limit_fills_the_history_and_evicts_only_while_away() {
        let now = Instant::now();
        let mut tight = limits(100);
        tight.history_max_bytes = 300;
        let store = Store::new(tight);
        let s = store.create("s".into(), "t".into(), "c", 1, now).unwrap();
        let one = lock(&s).record(Some(1), &push(1), now).unwrap().len();
        assert!(one > 60 && one < 150, "{one}");
        // Connected: nothing evicted, but the window closes at half and the
        // history reports itself full at the limit.
        let mut n = 1;
        while lock(&s).window_open() {
            n += 1;
            lock(&s).record(Some(1), &push(n), now).unwrap();
        }
        while !lock(&s).full() {
            n += 1;
            lock(&s).record(Some(1), &push(n), now).unwrap();
        }
        assert_eq!(lock(&s).unacked(), n as usize);
        // Away: the next record evicts down to the limit.
        lock(&s).detach(1, now);
        lock(&s).record(None, &push(n + 1), now).unwrap();
        assert!(lock(&s).history_bytes <= 300);
        assert!(lock(&s).unacked() < n as usize);
        let (_, resume) = store.resume("s", "t", 0, "c", 2, now).unwrap();
        assert!(resume.gap.is_some_and(|(from, _)| from == 1));
    }
}
