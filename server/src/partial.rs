//! The server-wide budget of bytes held in unfinished messages
//! (`--max-partial-bytes`), on `/ws` and `/echo` together.
//!
//! tungstenite assembles a message (its fragments, or one large frame)
//! before the application sees any of it. A client that sent 15.9 MiB of a
//! 16 MiB `/echo` message and then only answered pings held that memory for
//! as long as it liked; at the per-address connection cap that came to
//! gigabytes, without a token. The application cannot see fragments, so the
//! bytes are counted where they come in:
//!
//! - the upgraded socket (`serve::io`) adds every byte it hands to
//!   tungstenite to its connection's [`PartialMeter`] ([`PartialMeter::read`]);
//! - the connection's task empties the meter each time a data message comes
//!   out complete ([`PartialMeter::received`]).
//!
//! What a meter holds is thus what tungstenite holds of the message in
//! progress (give or take one read: bytes of the next message that came in
//! the same read as the end of the last one are forgotten with it).
//!
//! Each connection holds [`FREE_BYTES`] without a charge; only beyond it
//! does its meter charge the server-wide [`PartialBudget`], in chunks of
//! [`CHUNK`], so that the common case (messages of a few KiB) costs two
//! relaxed loads and a store per message and never touches an atomic that
//! other connections share. A read that would take the budget past
//! `--max-partial-bytes` is refused with [`OverBudget`], and the connection
//! closes with 1013 (`connection::end::PARTIAL_BUDGET_FULL`).
//!
//! Pings and pongs may come between the fragments of a message and do not
//! complete it: they take only their own bytes back out of the meter, so
//! that a client cannot empty its meter with a pong, and a client that only
//! answers pings for days does not creep up.
//!
//! The charge goes back when the message completes, and when the meter is
//! dropped: the socket and the connection's task each hold it, so whatever
//! ends the connection (a close, an error, a panic unwinding the task) drops
//! both and returns the bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use axum::extract::ws::Message;

use crate::metrics::Metrics;

/// Bytes of an unfinished message each connection holds without charging
/// the budget: two reads of the default `--read-buffer`, and more than most
/// application messages, so the common case costs no shared atomic. The
/// budget is exact up to this much per connection (the connection caps
/// bound how many there are).
pub(crate) const FREE_BYTES: u64 = 8 * 1024;

/// A meter charges the budget this much at a time: a 16 MiB message costs
/// 256 updates of the shared atomic, not one per read.
pub(crate) const CHUNK: u64 = 64 * 1024;

/// A client's control frame besides its payload: two bytes of header and a
/// four-byte mask (a payload of at most 125 bytes has no extended length).
const CONTROL_FRAME_HEADER: u64 = 6;

/// A read refused because it would take the bytes held in unfinished
/// messages past `--max-partial-bytes`. The socket returns it inside an
/// `io::Error`, and `wire::ReadError` recognizes it there.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the server holds --max-partial-bytes of unfinished messages already")]
pub struct OverBudget;

/// Bytes held in unfinished messages by every connection together, against
/// `--max-partial-bytes`.
#[derive(Debug)]
pub struct PartialBudget {
    /// The bound (0: off).
    max: u64,
    /// Its counter is `metrics.partial_bytes` (`ws_partial_bytes`): the
    /// gauge is the budget itself, one atomic, not two that could disagree.
    metrics: Arc<Metrics>,
}

impl PartialBudget {
    /// A budget of `max` bytes (`--max-partial-bytes`; 0: off).
    pub fn new(max: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            max: u64::try_from(max).unwrap_or(u64::MAX),
            metrics,
        }
    }

    /// Takes `n` bytes if they fit.
    fn take(&self, n: u64) -> bool {
        self.metrics
            .partial_bytes
            .fetch_update(Relaxed, Relaxed, |used| {
                used.checked_add(n).filter(|total| *total <= self.max)
            })
            .is_ok()
    }

    /// Gives back `n` bytes taken before.
    fn give_back(&self, n: u64) {
        if n != 0 {
            Metrics::sub(&self.metrics.partial_bytes, n);
        }
    }
}

/// One upgraded connection's bytes of the message in progress, and what of
/// them it charged to the [`PartialBudget`]. Shared by its socket (which
/// adds) and its task (which empties); both run on the connection's task,
/// one after the other, so the atomics are never contended.
#[derive(Debug)]
pub struct PartialMeter {
    budget: Arc<PartialBudget>,
    /// Bytes handed to tungstenite since the last complete message.
    held: AtomicU64,
    /// Bytes charged to the budget, at least `held - FREE_BYTES`.
    charged: AtomicU64,
}

impl PartialMeter {
    /// An empty meter charging `budget`.
    pub fn new(budget: Arc<PartialBudget>) -> Self {
        Self {
            budget,
            held: AtomicU64::new(0),
            charged: AtomicU64::new(0),
        }
    }

    /// The socket hands `n` more bytes to tungstenite; charges the budget
    /// for what passes [`FREE_BYTES`].
    ///
    /// # Errors
    ///
    /// [`OverBudget`] when the charge does not fit: the socket refuses the
    /// read (and every later one), and nothing more is charged. Counted in
    /// `ws_partial_budget_closes_total`.
    pub fn read(&self, n: usize) -> Result<(), OverBudget> {
        if self.budget.max == 0 {
            return Ok(());
        }
        let held = self
            .held
            .load(Relaxed)
            .saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        self.held.store(held, Relaxed);
        let charged = self.charged.load(Relaxed);
        let need = held.saturating_sub(FREE_BYTES).saturating_sub(charged);
        if need == 0 {
            return Ok(());
        }
        // A whole chunk ahead when it fits, else just what is needed: the
        // last connection to fit is not refused for the rounding.
        let chunk = need.checked_next_multiple_of(CHUNK).unwrap_or(need);
        let taken = if self.budget.take(chunk) {
            chunk
        } else if chunk != need && self.budget.take(need) {
            need
        } else {
            Metrics::add(&self.budget.metrics.partial_budget_closes, 1);
            return Err(OverBudget);
        };
        self.charged.fetch_add(taken, Relaxed);
        Ok(())
    }

    /// A message came out of the socket: a data or close message completes
    /// the one in progress (the meter is emptied and its charge given
    /// back); a ping or pong, which may come between fragments, takes only
    /// its own bytes out.
    pub fn received(&self, message: &Message) {
        match message {
            Message::Ping(payload) | Message::Pong(payload) => {
                let frame = u64::try_from(payload.len())
                    .unwrap_or(u64::MAX)
                    .saturating_add(CONTROL_FRAME_HEADER);
                let held = self.held.load(Relaxed);
                self.held.store(held.saturating_sub(frame), Relaxed);
            }
            Message::Text(_) | Message::Binary(_) | Message::Close(_) => {
                self.held.store(0, Relaxed);
                if self.charged.load(Relaxed) != 0 {
                    self.budget.give_back(self.charged.swap(0, Relaxed));
                }
            }
        }
    }
}

impl Drop for PartialMeter {
    fn drop(&mut self) {
        self.budget.give_back(*self.charged.get_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(max: usize) -> Arc<PartialBudget> {
        Arc::new(PartialBudget::new(max, Arc::default()))
    }

    fn used(budget: &PartialBudget) -> u64 {
        budget.metrics.partial_bytes.load(Relaxed)
    }

    const MIB: usize = 1024 * 1024;

    #[test]
    fn small_messages_charge_nothing() {
        let budget = budget(MIB);
        let meter = PartialMeter::new(budget.clone());
        for _ in 0..1000 {
            meter.read(4096).unwrap();
            meter.received(&Message::Binary(vec![0; 4090].into()));
        }
        assert_eq!(used(&budget), 0);
    }

    #[test]
    fn a_large_message_is_charged_in_chunks_and_given_back_when_complete() {
        let budget = budget(4 * MIB);
        let meter = PartialMeter::new(budget.clone());
        meter.read(FREE_BYTES as usize).unwrap();
        assert_eq!(used(&budget), 0);
        meter.read(1).unwrap();
        assert_eq!(used(&budget), CHUNK);
        for _ in 0..255 {
            meter.read(4096).unwrap();
        }
        assert_eq!(used(&budget), 16 * CHUNK);
        meter.received(&Message::Binary(Vec::new().into()));
        assert_eq!(used(&budget), 0);
    }

    #[test]
    fn the_connection_past_the_budget_is_refused_and_others_fit_again_once_it_is_gone() {
        let budget = budget(2 * MIB);
        let a = PartialMeter::new(budget.clone());
        let b = PartialMeter::new(budget.clone());
        for _ in 0..256 {
            a.read(4096).unwrap();
        }
        // `b` fits up to the last byte: the rounding to chunks does not refuse it.
        let mut refused = false;
        for _ in 0..300 {
            if b.read(4096).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused);
        assert_eq!(used(&budget), 2 * MIB as u64);
        assert_eq!(budget.metrics.partial_budget_closes.load(Relaxed), 1);
        drop(a);
        assert!(used(&budget) <= MIB as u64);
        drop(b);
        assert_eq!(used(&budget), 0);
    }

    #[test]
    fn pings_and_pongs_between_fragments_do_not_empty_the_meter() {
        let budget = budget(MIB);
        let meter = PartialMeter::new(budget.clone());
        // 2000 KiB of fragments against a 1 MiB budget, a pong after each:
        // refused on the way all the same.
        let refused = (0..1000).any(|_| {
            let read = meter.read(2048).and_then(|()| meter.read(6 + 4));
            meter.received(&Message::Pong(vec![0; 4].into()));
            read.is_err()
        });
        assert!(refused);
    }

    #[test]
    fn a_client_that_only_answers_pings_never_creeps_up() {
        let budget = budget(MIB);
        let meter = PartialMeter::new(budget.clone());
        for _ in 0..1_000_000 {
            meter.read(6).unwrap();
            meter.received(&Message::Pong(Default::default()));
        }
        assert_eq!(meter.held.load(Relaxed), 0);
        assert_eq!(used(&budget), 0);
    }

    #[test]
    fn an_off_budget_charges_nothing() {
        let budget = budget(0);
        let meter = PartialMeter::new(budget.clone());
        meter.read(usize::MAX).unwrap();
        meter.read(usize::MAX).unwrap();
        assert_eq!(used(&budget), 0);
    }
}
