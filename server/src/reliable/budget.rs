//! The store-wide budget of history bytes (`--history-total-bytes`): every
//! session adds and removes its frames' bytes here as it records and drops
//! them, so the total is known without visiting the sessions. Over it, the
//! store evicts the oldest messages of clients that are away
//! ([`SessionStore::reclaim`](super::SessionStore::reclaim)); a connected
//! client's message that would not fit is refused like one over its own
//! history bound.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use tokio::sync::Notify;

/// The bytes of every session's history, against `history_total_bytes`.
#[derive(Debug, Default)]
pub struct Budget {
    /// The budget (0: none).
    max: usize,
    /// The bytes held now.
    used: AtomicUsize,
    /// The size of the last message refused for the budget: how much room
    /// a reclaim should make.
    wanted: AtomicUsize,
    /// Woken when the budget is passed (a message for a client that is
    /// away) or a message was refused for it: the store's sweep reclaims.
    pub(super) pressure: Notify,
}

impl Budget {
    pub(super) fn new(max: usize) -> Self {
        Self {
            max,
            ..Self::default()
        }
    }

    /// The bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Relaxed)
    }

    /// Bytes to free so that the last refused message would fit (0: none).
    pub(super) fn excess(&self) -> usize {
        if self.max == 0 {
            return 0;
        }
        let wanted = self.wanted.load(Relaxed);
        (self.used() + wanted).saturating_sub(self.max)
    }

    /// Whether less than half is used (pushes wait beyond: the send window).
    pub(super) fn below_half(&self) -> bool {
        self.max == 0 || self.used() < self.max / 2
    }

    /// Whether `len` more bytes fit; if not, remembers how many were
    /// wanted and wakes the sweep to reclaim.
    pub(super) fn fits(&self, len: usize) -> bool {
        if self.max == 0 || self.used() + len <= self.max {
            return true;
        }
        self.wanted.store(len, Relaxed);
        self.pressure.notify_one();
        false
    }

    /// `len` bytes recorded; wakes the sweep if that passes the budget.
    pub(super) fn add(&self, len: usize) {
        let used = self.used.fetch_add(len, Relaxed) + len;
        if self.max != 0 && used > self.max {
            self.pressure.notify_one();
        }
    }

    /// `len` bytes dropped.
    pub(super) fn sub(&self, len: usize) {
        self.used.fetch_sub(len, Relaxed);
    }

    /// Room was made: the last refusal is answered.
    pub(super) fn satisfied(&self) {
        self.wanted.store(0, Relaxed);
    }
}
