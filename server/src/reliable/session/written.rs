//! A session written through to a shared store (Redis): its changes taken
//! as one [`Changes`] per write, the way a failed write is remembered, the
//! fencing by attach epoch, and a session rebuilt from what the store holds.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;

use super::Session;
use super::history::{Burst, Entry, Kept};
use super::journal::{Changes, Journal, Snapshot, Stored, entry_line, parse_entry};
use crate::clock::{instant_of, wall_ms};
use crate::reliable::bounds::Limits;
use crate::reliable::budget::Budget;
use crate::reliable::outcome::Unwritten;

impl Session {
    /// The session's record fields as they are now.
    pub(in crate::reliable) fn snapshot(&self) -> Snapshot {
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
    pub(in crate::reliable) fn changes(&mut self) -> Result<Option<Changes>, Unwritten> {
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
    pub(in crate::reliable) fn store_lost(&mut self, why: Unwritten) {
        self.write_failed(why);
        if let Some(attached) = &self.attached {
            attached.signal.store_unavailable();
        }
    }

    /// A write of its changes failed (see [`Journal::broken`]).
    pub(in crate::reliable) fn write_failed(&mut self, why: Unwritten) {
        if let Some(journal) = &mut self.journal {
            journal.broken = Some(why);
        }
    }

    /// The session `stored` as its store holds it, away from any
    /// connection here; written through from now on (at `stored.epoch`).
    pub(in crate::reliable) fn restore(
        stored: Stored,
        budget: Arc<Budget>,
        limits: Limits,
    ) -> Option<Self> {
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
    pub(in crate::reliable) fn write_through(&mut self, epoch: u64) {
        let written = self.snapshot();
        self.journal = Some(Box::new(Journal::new(epoch, self.last_out, Some(written))));
    }

    /// The attach epoch it is written through at, if it is.
    pub(in crate::reliable) fn epoch(&self) -> Option<u64> {
        self.journal.as_ref().map(|j| j.epoch)
    }

    /// Set at a resume: the connection attached here speaks at `epoch`.
    pub(in crate::reliable) fn set_epoch(&mut self, epoch: u64) {
        if let Some(journal) = &mut self.journal {
            journal.epoch = epoch;
        }
    }

    /// Another node took the session over (its epoch is past ours): the
    /// connection attached here is told, and the session is no longer
    /// written from here.
    pub(in crate::reliable) fn lost_to(&mut self, epoch: u64) {
        if self.epoch().is_some_and(|ours| ours < epoch) {
            if let Some(old) = self.attached.take() {
                old.signal.taken_over();
            }
            self.detached_at = Some(Instant::now());
            self.write_failed(Unwritten::TakenOver);
        }
    }

    /// The store confirmed, at `at`, that the session's keys live another
    /// full TTL (a write or a refresh went through).
    pub(in crate::reliable) fn confirmed(&mut self, at: Instant) {
        if let Some(journal) = &mut self.journal {
            journal.confirmed = journal.confirmed.max(at);
        }
    }

    /// How long ago the store last confirmed the keys' TTL (zero in memory).
    pub(in crate::reliable) fn unconfirmed_for(&self, now: Instant) -> std::time::Duration {
        self.journal.as_ref().map_or_else(Default::default, |j| {
            now.saturating_duration_since(j.confirmed)
        })
    }

    /// The per-session write lock (one write in flight at a time).
    pub(in crate::reliable) fn write_lock(&self) -> Option<Arc<tokio::sync::Mutex<()>>> {
        self.journal.as_ref().map(|j| j.writing.clone())
    }

    /// Whether the session is written through (a shared store holds it).
    pub fn is_written_through(&self) -> bool {
        self.journal.is_some()
    }
}
