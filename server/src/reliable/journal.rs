//! Write-through for a session a shared store (Redis) holds: the node that
//! serves it keeps the [`Session`] in memory, as a cache, and notes what
//! changed since it was last written ([`Journal`]). [`Session::changes`]
//! takes that as one [`Changes`], which the store writes in one atomic
//! script before anything it numbered reaches the socket; a session
//! loaded from the store is rebuilt by [`Session::restore`].
//!
//! The history only grows at its back and shrinks at its front, so what
//! changed is the entries appended and how many were popped: appending
//! them and then dropping that many from the front gives the same list
//! whatever order they happened in. The rest of the record is a snapshot
//! of a few numbers, written when it differs from the last one written.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::ws::Utf8Bytes;

use super::budget::Budget;
use super::session::{Burst, Entry, Kept, Limits, Session};
use super::store::Unwritten;

/// What changed in a session since it was last written to its store.
#[derive(Debug)]
pub(super) struct Journal {
    /// The attach epoch the store gave the connection that speaks for the
    /// session here (or, for a session loaded while its client is away,
    /// the epoch it was loaded at): a write is refused once it moved on.
    pub(super) epoch: u64,
    /// `last_out` as the store has it: a write is refused when another
    /// writer numbered something meanwhile.
    pub(super) base_last_out: u64,
    /// Entries recorded since: seq, wall-clock ms, frame.
    appended: Vec<(u64, u64, Utf8Bytes)>,
    /// Entries dropped from the front since.
    pub(super) popped: usize,
    /// The record as last written.
    written: Option<Snapshot>,
    /// One write at a time per session, so that they reach the store in order.
    pub(super) writing: Arc<tokio::sync::Mutex<()>>,
    /// A write failed: what it held is not stored, so no later write may
    /// stand for it (the connection ends; a resume loads the store's copy).
    pub(super) broken: Option<Unwritten>,
}

impl Journal {
    pub(super) fn new(epoch: u64, base_last_out: u64, written: Option<Snapshot>) -> Self {
        Self {
            epoch,
            base_last_out,
            appended: Vec::new(),
            popped: 0,
            written,
            writing: Arc::default(),
            broken: None,
        }
    }

    pub(super) fn appended(&mut self, seq: u64, at: Instant, frame: &Utf8Bytes) {
        self.appended.push((seq, wall_ms(at), frame.clone()));
    }
}

/// The fields of a session record other than its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Snapshot {
    pub(super) client_id: String,
    pub(super) last_out: u64,
    pub(super) lost_through: u64,
    pub(super) last_in: u64,
    pub(super) pushes: u64,
    /// `count:left` of each pending burst, comma-separated.
    pub(super) bursts: String,
    pub(super) attached: bool,
    /// Wall-clock ms when the client went away (0 while attached).
    pub(super) detached_at_ms: u64,
}

/// One write to the store: everything since the last one.
#[derive(Debug)]
pub(super) struct Changes {
    pub(super) epoch: u64,
    pub(super) base_last_out: u64,
    pub(super) record: Snapshot,
    /// `seq at_ms frame`, in order.
    pub(super) appended: Vec<String>,
    pub(super) popped: usize,
}

/// The record and history of a session as its store holds them.
#[derive(Debug, Default)]
pub(super) struct Stored {
    pub(super) id: String,
    pub(super) user: Option<Arc<str>>,
    pub(super) owner: Option<IpAddr>,
    pub(super) epoch: u64,
    pub(super) record: Option<Snapshot>,
    /// `seq at_ms frame` lines, oldest first.
    pub(super) history: Vec<String>,
}

/// Milliseconds since the Unix epoch.
fn millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Milliseconds since the Unix epoch, now.
pub(super) fn now_ms() -> u64 {
    millis(SystemTime::now())
}

/// The wall-clock ms of `at` (an `Instant` of this process).
fn wall_ms(at: Instant) -> u64 {
    let now = Instant::now();
    let wall = if at <= now {
        SystemTime::now() - now.duration_since(at)
    } else {
        SystemTime::now() + at.duration_since(now)
    };
    millis(wall)
}

/// The `Instant` of wall-clock ms `ms`.
fn instant_of(ms: u64) -> Instant {
    let now_ms = millis(SystemTime::now());
    let now = Instant::now();
    // Checked both ways: the number comes from Redis, and a bad one must
    // not panic (an `Instant` out of range would).
    if ms <= now_ms {
        now.checked_sub(Duration::from_millis(now_ms - ms))
            .unwrap_or(now)
    } else {
        now.checked_add(Duration::from_millis(ms - now_ms))
            .unwrap_or(now)
    }
}

/// `seq at_ms frame`: one history entry as the store keeps it.
pub(super) fn entry_line(seq: u64, at_ms: u64, frame: &str) -> String {
    format!("{seq} {at_ms} {frame}")
}

fn parse_entry(line: &str) -> Option<(u64, u64, &str)> {
    let mut parts = line.splitn(3, ' ');
    let seq = parts.next()?.parse().ok()?;
    let at = parts.next()?.parse().ok()?;
    Some((seq, at, parts.next()?))
}

impl Session {
    /// The session's record fields as they are now.
    pub(super) fn snapshot(&self) -> Snapshot {
        Snapshot {
            client_id: self.client_id.clone(),
            last_out: self.last_out,
            lost_through: self.lost_through,
            last_in: self.last_in,
            pushes: self.pushes,
            bursts: self
                .bursts
                .iter()
                .map(|b| format!("{}:{}", b.count, b.left))
                .collect::<Vec<_>>()
                .join(","),
            attached: self.attached.is_some(),
            detached_at_ms: self.detached_at.map_or(0, wall_ms),
        }
    }

    /// Everything that changed since the last write to the store, taken
    /// out of the journal (`None` in memory or when nothing changed).
    ///
    /// # Errors
    ///
    /// Why an earlier write failed, if one did: nothing may be written after it.
    pub(super) fn changes(&mut self) -> Result<Option<Changes>, Unwritten> {
        let record = self.snapshot();
        let last_out = self.last_out;
        let Some(journal) = self.journal.as_mut() else {
            return Ok(None);
        };
        if let Some(broken) = journal.broken {
            return Err(broken);
        }
        if journal.appended.is_empty()
            && journal.popped == 0
            && journal.written.as_ref() == Some(&record)
        {
            return Ok(None);
        }
        let changes = Changes {
            epoch: journal.epoch,
            base_last_out: journal.base_last_out,
            record: record.clone(),
            appended: journal
                .appended
                .drain(..)
                .map(|(seq, at, frame)| entry_line(seq, at, frame.as_str()))
                .collect(),
            popped: std::mem::take(&mut journal.popped),
        };
        journal.base_last_out = last_out;
        journal.written = Some(record);
        Ok(Some(changes))
    }

    /// The store stopped answering (or lost the session, `why`): nothing
    /// more is written from here, and the connection attached here, if
    /// any, is told to close (1013).
    pub(super) fn store_lost(&mut self, why: Unwritten) {
        self.write_failed(why);
        if let Some(attached) = &self.attached {
            attached.signal.store_unavailable();
        }
    }

    /// A write of its changes failed (see [`Journal::broken`]).
    pub(super) fn write_failed(&mut self, why: Unwritten) {
        if let Some(journal) = &mut self.journal {
            journal.broken = Some(why);
        }
    }

    /// The session `stored` as its store holds it, away from any
    /// connection here; written through from now on (at `stored.epoch`).
    pub(super) fn restore(stored: Stored, budget: Arc<Budget>, limits: Limits) -> Option<Self> {
        let record = stored.record?;
        let mut history = VecDeque::new();
        let mut bytes = 0;
        for line in &stored.history {
            let (seq, at, frame) = parse_entry(line)?;
            // The version-1 envelope every node writes: the message is its `data`.
            let shared::ServerMessage::Msg { data, .. } =
                shared::ServerMessage::from_json(frame).ok()?
            else {
                return None;
            };
            if !shared::embeddable(&data) {
                return None; // Not a message a node numbered: not ours to replay.
            }
            bytes += frame.len();
            history.push_back(Entry {
                seq,
                at: instant_of(at),
                body: Kept::Message {
                    json: Utf8Bytes::from(data),
                    len: frame.len(),
                },
            });
        }
        budget.add(bytes);
        let bursts = record
            .bursts
            .split(',')
            .filter_map(|b| {
                let (count, left) = b.split_once(':')?;
                Some(Burst {
                    count: count.parse().ok()?,
                    left: left.parse().ok()?,
                    started: Instant::now(),
                })
            })
            .collect();
        let detached_at = Some(if record.detached_at_ms == 0 {
            Instant::now()
        } else {
            instant_of(record.detached_at_ms)
        });
        let journal = Journal::new(stored.epoch, record.last_out, Some(record.clone()));
        Some(Self {
            id: stored.id,
            token: String::new(),
            client_id: record.client_id,
            user: stored.user,
            owner: stored
                .owner
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            limits,
            budget,
            history,
            history_bytes: bytes,
            last_out: record.last_out,
            lost_through: record.lost_through,
            last_in: record.last_in,
            pushes: record.pushes,
            bursts,
            attached: None,
            detached_at,
            journal: Some(Box::new(journal)),
        })
    }

    /// Starts writing through at `epoch` (a session just created in the store).
    pub(super) fn write_through(&mut self, epoch: u64) {
        let written = self.snapshot();
        self.journal = Some(Box::new(Journal::new(epoch, self.last_out, Some(written))));
    }

    /// The attach epoch it is written through at, if it is.
    pub(super) fn epoch(&self) -> Option<u64> {
        self.journal.as_ref().map(|j| j.epoch)
    }

    /// Set at a resume: the connection attached here speaks at `epoch`.
    pub(super) fn set_epoch(&mut self, epoch: u64) {
        if let Some(journal) = &mut self.journal {
            journal.epoch = epoch;
        }
    }

    /// Another node took the session over (its epoch is past ours): the
    /// connection attached here is told, and the session is no longer
    /// written from here.
    pub(super) fn lost_to(&mut self, epoch: u64) {
        if self.epoch().is_some_and(|ours| ours < epoch) {
            if let Some(old) = self.attached.take() {
                old.signal.taken_over();
            }
            self.detached_at = Some(Instant::now());
            self.write_failed(Unwritten::TakenOver);
        }
    }

    /// The per-session write lock (one write in flight at a time).
    pub(super) fn write_lock(&self) -> Option<Arc<tokio::sync::Mutex<()>>> {
        self.journal.as_ref().map(|j| j.writing.clone())
    }

    /// Whether the session is written through (a shared store holds it).
    pub fn is_written_through(&self) -> bool {
        self.journal.is_some()
    }
}
