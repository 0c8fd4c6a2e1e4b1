//! One reliable session: its history of unacknowledged server messages,
//! the exactly-once filter for client ones, and its pending bursts.
//!
//! [`Session::send`] is the only way a server message gets a seq: it checks
//! that the sender still speaks for the session and that the history has
//! room, numbers the message, records it and hands back the frame to write.
//! Callers cannot do one step without the others.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use shared::{Protocol, ServerMessage};

use super::bounds::Limits;
use super::budget::Budget;
use super::outcome::{Accepted, Attach, BurstBusy, Outgoing, Refused, Resume, To};
use history::{Burst, Entry, Kept};

mod history;
mod journal;
mod written;

pub(super) use journal::{Changes, Snapshot, Stored};

/// Bursts a session keeps at most: the one in progress and one waiting, as
/// a plain connection; a burst request beyond it is answered with a
/// `burst_busy` error.
pub const MAX_PENDING_BURSTS: usize = 2;

/// One reliable session.
#[derive(Debug)]
pub struct Session {
    id: String,
    token: String,
    client_id: String,
    /// Token mode: the user it belongs to (kept in the record a store
    /// holds, so that every store checks it on resume); `None` in anonymous
    /// mode.
    user: Option<Arc<str>>,
    /// The client address that created it (the key of `--max-sessions-per-ip`).
    owner: IpAddr,
    limits: Limits,
    /// The store-wide budget the history's bytes count against.
    budget: Arc<Budget>,
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
    attached: Option<Attach>,
    detached_at: Option<Instant>,
    /// A session a shared store (Redis) holds: what changed since it was
    /// last written there. `None` in memory, which pays nothing for it.
    journal: Option<Box<journal::Journal>>,
}

impl Session {
    pub(super) fn new(
        (id, token): (String, String),
        client_id: String,
        owner: IpAddr,
        attach: Attach,
        budget: Arc<Budget>,
        limits: Limits,
    ) -> Self {
        Self {
            id,
            token,
            client_id,
            user: attach.user.clone(),
            owner,
            limits,
            budget,
            history: VecDeque::new(),
            history_bytes: 0,
            last_out: 0,
            lost_through: 0,
            last_in: 0,
            pushes: 0,
            bursts: VecDeque::new(),
            attached: Some(attach),
            detached_at: None,
            journal: None,
        }
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The id of the client it belongs to (the latest, after a resume).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Token mode: the user it belongs to.
    pub fn user(&self) -> Option<&Arc<str>> {
        self.user.as_ref()
    }

    /// The client address that created it.
    pub(super) fn owner(&self) -> IpAddr {
        self.owner
    }

    /// Whether `token` is the session's resume token (in constant time).
    pub(super) fn token_matches(&self, token: &str) -> bool {
        crate::auth::constant_time_eq(self.token.as_bytes(), token.as_bytes())
    }

    /// Unacknowledged server messages held.
    pub fn unacked(&self) -> usize {
        self.history.len()
    }

    /// Bytes of the unacknowledged server messages held.
    pub fn unacked_bytes(&self) -> usize {
        self.history_bytes
    }

    /// Whether the send window (half the history, in count and in bytes)
    /// has room for a push.
    /// The same holds for the store-wide budget: pushes wait once half of
    /// it is used, so that replies keep the rest.
    pub fn window_open(&self) -> bool {
        self.history.len() < (self.limits.history_max / 2).max(1)
            && self.history_bytes < self.limits.history_max_bytes / 2
            && self.budget.below_half()
    }

    /// Whether a frame of `len` bytes fits in the history and in the
    /// store-wide budget. A lone message always fits (one larger than the
    /// byte bound would otherwise never go out, however often the client
    /// resumed).
    fn fits(&self, len: usize) -> bool {
        if self.history.is_empty() {
            return true;
        }
        if !self.budget.fits(len) {
            return false;
        }
        self.history.len() < self.limits.history_max
            && self.history_bytes + len <= self.limits.history_max_bytes
    }

    /// The last client seq processed.
    pub fn last_in(&self) -> u64 {
        self.last_in
    }

    /// Whether connection `conn` speaks for the session.
    pub fn is_attached(&self, conn: u64) -> bool {
        self.attached.as_ref().is_some_and(|a| a.conn == conn)
    }

    pub(super) fn is_away(&self) -> bool {
        self.attached.is_none()
    }

    /// Checks that `to` may send and that the history has room, numbers the
    /// message, records it until acknowledged and returns its `msg`
    /// envelope, ready to write. The only way a server message is numbered.
    ///
    /// # Errors
    ///
    /// [`Refused::TakenOver`] when `to` no longer speaks for the session (or,
    /// for [`To::Away`], the client is back); [`Refused::Full`] when a
    /// connected client's history has no room for it. Either way nothing
    /// changed (a refused push does not use up a push seq).
    pub fn send(&mut self, to: To, what: Outgoing, now: Instant) -> Result<Utf8Bytes, Refused> {
        match to {
            To::Connection(conn) if !self.is_attached(conn) => return Err(Refused::TakenOver),
            To::Away if !self.is_away() => return Err(Refused::TakenOver),
            _ => {}
        }
        let seq = self.last_out + 1;
        let protocol = self.protocol_of(to);
        let (message, push) = match what {
            Outgoing::Shared(push) => {
                let push_seq = self.pushes + 1;
                let kept = Kept::Shared {
                    len: push.encode_msg_in(seq, push_seq, Protocol::V1).len(),
                    push,
                    push_seq,
                };
                return self.record(to, seq, kept, true, now, protocol);
            }
            Outgoing::Message(message) => (message, false),
            Outgoing::Push { body, sent_at_ms } => (
                ServerMessage::Push {
                    seq: self.pushes + 1,
                    sent_at_ms,
                    body,
                },
                true,
            ),
        };
        let json = message.to_json();
        let kept = Kept::Message {
            len: shared::msg_v1_len(seq, &json),
            json: Utf8Bytes::from(json),
        };
        self.record(to, seq, kept, push, now, protocol)
    }

    /// The version the frames for `to` are written in: the attached
    /// connection's; version 1 for a client that is away (its frame is not
    /// written, only kept).
    fn protocol_of(&self, to: To) -> Protocol {
        match (to, &self.attached) {
            (To::Connection(_), Some(attached)) => attached.protocol,
            _ => Protocol::V1,
        }
    }

    /// Records `kept`, numbered `seq`, in the history and returns its frame
    /// in `protocol` (see [`Session::send`]).
    fn record(
        &mut self,
        to: To,
        seq: u64,
        kept: Kept,
        push: bool,
        now: Instant,
        protocol: Protocol,
    ) -> Result<Utf8Bytes, Refused> {
        let entry = Entry {
            seq,
            at: now,
            body: kept,
        };
        let len = entry.len();
        if to != To::Away && !self.fits(len) {
            return Err(Refused::Full);
        }
        let frame = entry.frame(protocol);
        self.last_out = seq;
        self.pushes += u64::from(push);
        self.history_bytes += len;
        self.budget.add(len);
        if let Some(journal) = &mut self.journal {
            // The store keeps the version-1 envelope, which nodes of every
            // version read (see `Kept`).
            let stored = if protocol == Protocol::V1 {
                frame.clone()
            } else {
                entry.frame(Protocol::V1)
            };
            journal.appended(seq, now, &stored);
        }
        self.history.push_back(entry);
        self.evict(now);
        Ok(frame)
    }

    /// While the client is away, drops the history over the count, byte or
    /// age limit, remembering how far the loss reaches. A connected client
    /// loses nothing: its bounds are kept by the window and [`Session::send`].
    fn evict(&mut self, now: Instant) {
        if !self.is_away() {
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
            if let Some(journal) = &mut self.journal {
                journal.popped += 1;
            }
            self.history_bytes -= entry.len();
            self.budget.sub(entry.len());
        }
    }

    /// While the client is away, evicts what is over the session's bounds
    /// or older than `history_max_age` (the store's sweep calls it, so the
    /// age bound frees memory without any activity).
    pub(super) fn trim(&mut self, now: Instant) {
        self.evict(now);
    }

    /// When the oldest unacknowledged message was recorded, if the client is
    /// away and one is held: the order of eviction over the store's budget.
    pub(super) fn oldest_away(&self) -> Option<Instant> {
        if !self.is_away() {
            return None;
        }
        self.history.front().map(|e| e.at)
    }

    /// While the client is away, evicts its oldest message for the store's
    /// budget (reported as a gap on resume); false if there was none.
    pub(super) fn evict_oldest(&mut self) -> bool {
        match self.history.front() {
            Some(front) if self.is_away() => {
                self.lost_through = front.seq;
                self.pop();
                true
            }
            _ => false,
        }
    }

    /// The client processed every server message up to `seq`.
    pub fn ack(&mut self, seq: u64) {
        let seq = seq.min(self.last_out);
        while self.history.front().is_some_and(|e| e.seq <= seq) {
            self.pop();
        }
    }

    /// Client `msg` number `seq` on connection `conn`: the next one is
    /// served by `serve` and its reply, if any, numbered with
    /// [`Session::send`], in one step under the session's lock, so that a
    /// resume elsewhere cannot leave a processed message without its reply.
    ///
    /// # Errors
    ///
    /// As [`Session::send`]; the message then counts as not processed (the
    /// client resends it after its resume).
    pub fn accept(
        &mut self,
        conn: u64,
        seq: u64,
        now: Instant,
        serve: impl FnOnce(&mut Self) -> Option<ServerMessage>,
    ) -> Result<Accepted, Refused> {
        if !self.is_attached(conn) {
            return Err(Refused::TakenOver);
        }
        if seq <= self.last_in {
            return Ok(Accepted::Duplicate);
        }
        if seq > self.last_in + 1 {
            return Ok(Accepted::OutOfOrder {
                expected: self.last_in + 1,
            });
        }
        let frame = match serve(self) {
            Some(reply) => Some(self.send(To::Connection(conn), Outgoing::Message(reply), now)?),
            None => None,
        };
        self.last_in = seq;
        Ok(Accepted::Processed(frame))
    }

    /// Connection `attach` takes the session over; the client processed
    /// server messages up to `last_seq`. A connection attached until now is
    /// signalled.
    pub(super) fn resume(
        &mut self,
        attach: Attach,
        last_seq: u64,
        client_id: &str,
        now: Instant,
    ) -> Resume {
        // What aged out while the client was away goes before it is back.
        self.evict(now);
        let protocol = attach.protocol;
        if let Some(old) = self.attached.replace(attach)
            && !self.is_attached(old.conn)
        {
            // The connection the server still thinks alive must close now.
            old.signal.taken_over();
        }
        self.detached_at = None;
        client_id.clone_into(&mut self.client_id);
        self.ack(last_seq);
        let gap = (self.lost_through > last_seq).then_some((last_seq + 1, self.lost_through));
        Resume {
            gap,
            replay: self
                .history
                .iter()
                .map(|entry| entry.frame(protocol))
                .collect(),
            last_in: self.last_in,
        }
    }

    /// Connection `conn` ended; the session waits for a resume until the TTL.
    pub fn detach(&mut self, conn: u64, now: Instant) {
        if self.is_attached(conn) {
            self.attached = None;
            self.detached_at = Some(now);
        }
    }

    pub(super) fn expired(&self, now: Instant) -> bool {
        self.detached_at
            .is_some_and(|at| now.saturating_duration_since(at) >= self.limits.ttl)
    }

    /// Queues a burst of `count` pushes, made as the window allows.
    ///
    /// # Errors
    ///
    /// [`BurstBusy`] when [`MAX_PENDING_BURSTS`] are pending already.
    pub fn start_burst(&mut self, count: u32, now: Instant) -> Result<(), BurstBusy> {
        if self.bursts.len() >= MAX_PENDING_BURSTS {
            return Err(BurstBusy);
        }
        self.bursts.push_back(Burst {
            count,
            left: count,
            started: now,
        });
        Ok(())
    }

    /// Whether a burst has a push to make and the window has room for it.
    pub fn burst_ready(&self) -> bool {
        !self.bursts.is_empty() && self.window_open()
    }

    /// The next message of the current burst, a push or `burst_done` after
    /// the last, sent with [`Session::send`]; `Ok(None)` with no burst.
    ///
    /// # Errors
    ///
    /// As [`Session::send`]; the burst then stays where it was.
    pub fn burst_step(
        &mut self,
        conn: u64,
        sent_at_ms: u64,
        now: Instant,
    ) -> Result<Option<Utf8Bytes>, Refused> {
        let Some(burst) = self.bursts.front().copied() else {
            return Ok(None);
        };
        let to = To::Connection(conn);
        if burst.left > 0 {
            let push = Outgoing::Push {
                body: "burst".into(),
                sent_at_ms,
            };
            let frame = self.send(to, push, now)?;
            if let Some(burst) = self.bursts.front_mut() {
                burst.left -= 1;
            }
            return Ok(Some(frame));
        }
        let done = ServerMessage::BurstDone {
            count: burst.count,
            elapsed_ms: u64::try_from(now.saturating_duration_since(burst.started).as_millis())
                .unwrap_or(u64::MAX),
        };
        let frame = self.send(to, Outgoing::Message(done), now)?;
        self.bursts.pop_front();
        Ok(Some(frame))
    }
}

impl Drop for Session {
    /// A forgotten session gives its bytes back to the budget.
    fn drop(&mut self) {
        self.budget.sub(self.history_bytes);
    }
}
