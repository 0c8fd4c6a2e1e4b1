//! Write-through for a session a shared store (Redis) holds: the node that
//! serves it keeps the [`Session`](super::Session) in memory, as a cache, and notes what
//! changed since it was last written ([`Journal`]). [`Session::changes`](super::Session::changes)
//! takes that as one [`Changes`], which the store writes in one atomic
//! script before anything it numbered reaches the socket; a session
//! loaded from the store is rebuilt by [`Session::restore`](super::Session::restore).
//!
//! The history only grows at its back and shrinks at its front, so what
//! changed is the entries appended and how many were popped: appending
//! them and then dropping that many from the front gives the same list
//! whatever order they happened in. The rest of the record is a snapshot
//! of a few numbers, written when it differs from the last one written.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;

use crate::clock::wall_ms;
use crate::reliable::outcome::Unwritten;

/// What changed in a session since it was last written to its store.
#[derive(Debug)]
pub(in crate::reliable) struct Journal {
    /// The attach epoch the store gave the connection that speaks for the
    /// session here (or, for a session loaded while its client is away,
    /// the epoch it was loaded at): a write is refused once it moved on.
    pub(in crate::reliable) epoch: u64,
    /// `last_out` as the store has it: a write is refused when another
    /// writer numbered something meanwhile.
    pub(in crate::reliable) base_last_out: u64,
    /// Entries recorded since: seq, wall-clock ms, frame.
    pub(super) appended: Vec<(u64, u64, Utf8Bytes)>,
    /// Entries dropped from the front since.
    pub(in crate::reliable) popped: usize,
    /// The record as last written.
    pub(super) written: Option<Snapshot>,
    /// One write at a time per session, so that they reach the store in order.
    pub(in crate::reliable) writing: Arc<tokio::sync::Mutex<()>>,
    /// A write failed: what it held is not stored, so no later write may
    /// stand for it (the connection ends; a resume loads the store's copy).
    pub(in crate::reliable) broken: Option<Unwritten>,
    /// When the store last confirmed the session's keys' TTL (a write or
    /// a refresh): the sweep gives the session up only once that is
    /// `--session-ttl` ago, so that the keys are in their last
    /// `ATTACHED_GRACE` (see the Redis store).
    pub(super) confirmed: Instant,
}

impl Journal {
    pub(in crate::reliable) fn new(
        epoch: u64,
        base_last_out: u64,
        written: Option<Snapshot>,
    ) -> Self {
        Self {
            epoch,
            base_last_out,
            appended: Vec::new(),
            popped: 0,
            written,
            writing: Arc::default(),
            broken: None,
            confirmed: Instant::now(),
        }
    }

    pub(in crate::reliable) fn appended(&mut self, seq: u64, at: Instant, frame: &Utf8Bytes) {
        self.appended.push((seq, wall_ms(at), frame.clone()));
    }
}

/// The fields of a session record other than its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::reliable) struct Snapshot {
    pub(in crate::reliable) client_id: String,
    pub(in crate::reliable) last_out: u64,
    pub(in crate::reliable) lost_through: u64,
    pub(in crate::reliable) last_in: u64,
    pub(in crate::reliable) pushes: u64,
    /// `count:left` of each pending burst, comma-separated.
    pub(in crate::reliable) bursts: String,
    pub(in crate::reliable) attached: bool,
    /// Wall-clock ms when the client went away (0 while attached).
    pub(in crate::reliable) detached_at_ms: u64,
}

/// One write to the store: everything since the last one.
#[derive(Debug)]
pub(in crate::reliable) struct Changes {
    pub(in crate::reliable) epoch: u64,
    pub(in crate::reliable) base_last_out: u64,
    pub(in crate::reliable) record: Snapshot,
    /// `seq at_ms frame`, in order.
    pub(in crate::reliable) appended: Vec<String>,
    pub(in crate::reliable) popped: usize,
}

/// The record and history of a session as its store holds them.
#[derive(Debug, Default)]
pub(in crate::reliable) struct Stored {
    pub(in crate::reliable) id: String,
    pub(in crate::reliable) user: Option<Arc<str>>,
    pub(in crate::reliable) owner: Option<IpAddr>,
    pub(in crate::reliable) epoch: u64,
    pub(in crate::reliable) record: Option<Snapshot>,
    /// `seq at_ms frame` lines, oldest first.
    pub(in crate::reliable) history: Vec<String>,
}

/// `seq at_ms frame`: one history entry as the store keeps it.
pub(in crate::reliable) fn entry_line(seq: u64, at_ms: u64, frame: &str) -> String {
    format!("{seq} {at_ms} {frame}")
}

pub(super) fn parse_entry(line: &str) -> Option<(u64, u64, &str)> {
    let mut parts = line.splitn(3, ' ');
    let seq = parts.next()?.parse().ok()?;
    let at = parts.next()?.parse().ok()?;
    Some((seq, at, parts.next()?))
}
