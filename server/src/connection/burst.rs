//! The connection's one burst pacer, for both modes: how many pushes the
//! next batch of a burst may have, decided once per batch before any push
//! of it is made.
//!
//! * **Bytes.** Pushes join a batch while what the connection holds for its
//!   client (its queue, its direct replies and the batch so far) is under
//!   `--send-queue-bytes`: the rule by which the queue admits a reserved
//!   message. A burst so holds at most the bound plus one push, and while
//!   the queue is full its next batch waits; the connection's own writes
//!   drain the queue at every turn, and nothing queued waits behind a burst
//!   (the two interleave), so the wait always ends. A burst used to count as
//!   0 bytes: a plain connection queued up to 1,024 of them, each of up to a
//!   million pushes, outside every bound.
//! * **Rate.** `--max-burst-rate` pushes per second per connection (0: off)
//!   is a token bucket checked once per batch. It holds one batch, a
//!   twentieth of a second of the rate (at least one push, at most
//!   [`BATCH`]); when it holds less than the next batch, the burst sleeps
//!   until it holds enough ([`Pacer::due`]): one timer per batch, never one
//!   per push.
//! * **Share.** A batch is written in one go, and other connections wait
//!   for it: with many connections bursting at once, the time around all
//!   of them is what a client of the server waits for its echo. So a batch
//!   has at most [`SHARE`] pushes divided among the connections bursting
//!   now (`ws_bursting_connections`), and [`BATCH`] and at least
//!   [`MIN_BATCH`]: up to 32 bursts at once each keeps whole batches (the
//!   100,000-push burst its speed); 200 at once get batches of 81.
//! * **Count.** One burst in progress and at most one waiting per
//!   connection; one more request gets `burst_busy`. A plain connection's
//!   two are kept here ([`Pacer::start`]); a reliable connection's in its
//!   session, which outlives the connection
//!   ([`MAX_PENDING_BURSTS`], the same two).
//!
//! What the pushes of a batch become depends on the mode: on a plain
//! connection the outbox numbers them in wire order and writes them straight
//! into the socket with one flush (`outbound.rs`), their bytes counted in
//! the queue's while they are written; on a reliable one the session numbers
//! them as its window allows, and they are queued as one item
//! (`reliable.rs`). A burst with no rate, to a client that reads, pays for
//! all this a clock read and three short locks of its queue per batch of
//! 512 pushes, next to 512 encodes and feeds: the 100,000-push burst keeps
//! its speed.

use std::time::Duration;

use tokio::time::Instant;

use crate::reliable::{BurstBusy, MAX_PENDING_BURSTS};

/// Pushes in a batch at most: one flush each.
pub(super) const BATCH: u32 = 512;

/// Pushes of every bursting connection's batch together, about: the round
/// of batches a client of the server may wait behind (see the module's doc).
pub(super) const SHARE: u32 = 16_384;

/// Pushes in a batch at least, however many connections burst.
pub(super) const MIN_BATCH: u32 = 32;

/// The batch of one of `bursting` connections.
pub(super) fn share_of(bursting: u64) -> u32 {
    let bursting = u32::try_from(bursting.max(1)).unwrap_or(u32::MAX);
    (SHARE / bursting).clamp(MIN_BATCH, BATCH)
}

/// A batch held back by the rate is this fraction of a second of it: a
/// burst at its rate wakes about this many times a second.
const WAKES_PER_SECOND: u32 = 20;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

// A plain connection's bursts are the two slots of `Pacer`: the one in
// progress and the one waiting; a session keeps as many.
const _: () = assert!(MAX_PENDING_BURSTS == 2);

/// A connection's burst pacer (see the module's documentation).
#[derive(Debug, Default)]
pub(super) struct Pacer {
    /// A plain connection's burst in progress...
    running: Option<Running>,
    /// ...and the count of the one waiting behind it.
    waiting: Option<u32>,
    /// `--max-burst-rate`, when it is on. Boxed: every connection holds a
    /// pacer, and most servers run without the rate.
    bucket: Option<Box<Bucket>>,
    /// This connection's share of a batch now ([`share_of`]); 0 reads as
    /// [`BATCH`].
    share: u32,
}

/// A plain burst in progress.
#[derive(Debug, Clone, Copy)]
struct Running {
    count: u32,
    left: u32,
    started: Instant,
}

/// What a plain burst does next.
#[derive(Debug)]
pub(super) enum Plain {
    /// Pushes, as many as the batch admits.
    Pushes(Batch),
    /// Its last push is written: its `burst_done`, with how long it took.
    Done {
        /// The burst's pushes.
        count: u32,
        /// Milliseconds from its start.
        elapsed_ms: u64,
    },
}

impl Pacer {
    /// A pacer of at most `rate` pushes a second (0: no limit).
    pub(super) fn new(rate: u32, now: Instant) -> Self {
        Self {
            bucket: (rate > 0).then(|| Box::new(Bucket::new(rate, now))),
            ..Self::default()
        }
    }

    /// A plain connection's burst of `count` pushes: started now if none
    /// runs, else queued behind the one that does.
    ///
    /// # Errors
    ///
    /// [`BurstBusy`] when one runs and another waits already: this one is
    /// not started.
    pub(super) fn start(&mut self, count: u32, now: Instant) -> Result<(), BurstBusy> {
        match (&self.running, &self.waiting) {
            (None, _) => {
                self.running = Some(Running {
                    count,
                    left: count,
                    started: now,
                });
                Ok(())
            }
            (Some(_), None) => {
                self.waiting = Some(count);
                Ok(())
            }
            (Some(_), Some(_)) => Err(BurstBusy),
        }
    }

    /// Whether a plain burst is in progress.
    pub(super) fn plain_running(&self) -> bool {
        self.running.is_some()
    }

    /// The next step of the plain burst in progress, with `room` bytes left
    /// under the queue's bound (`None`: no bound): a batch of pushes, or its
    /// `burst_done` after the last (the waiting burst then starts). `None`
    /// when no burst runs or the rate holds it back.
    pub(super) fn plain_next(&mut self, room: Option<usize>, now: Instant) -> Option<Plain> {
        let running = self.running?;
        if running.left > 0 {
            return self.grant(running.left, room, now).map(Plain::Pushes);
        }
        self.running = self.waiting.take().map(|count| Running {
            count,
            left: count,
            started: now,
        });
        let elapsed = now.saturating_duration_since(running.started).as_millis();
        Some(Plain::Done {
            count: running.count,
            elapsed_ms: u64::try_from(elapsed).unwrap_or(u64::MAX),
        })
    }

    /// `made` pushes of the plain burst in progress were written.
    pub(super) fn pushed(&mut self, made: u32) {
        if let Some(running) = &mut self.running {
            running.left = running.left.saturating_sub(made);
        }
        self.spent(made);
    }

    /// A batch of at most `left` pushes, with `room` bytes left under the
    /// queue's bound (`None`: no bound); `None` when the rate holds the
    /// burst back until [`Pacer::due`]. The caller says with
    /// [`Pacer::spent`] (or [`Pacer::pushed`]) how many it made.
    pub(super) fn grant(&mut self, left: u32, room: Option<usize>, now: Instant) -> Option<Batch> {
        let share = if self.share == 0 { BATCH } else { self.share };
        let mut pushes = left.min(share);
        if let Some(bucket) = &mut self.bucket {
            pushes = bucket.allows(pushes, now)?;
        }
        Some(Batch {
            pushes,
            room,
            bytes: 0,
            made: 0,
        })
    }

    /// Sets the share of a batch, for `bursting` connections bursting now.
    pub(super) fn share(&mut self, bursting: u64) {
        self.share = share_of(bursting);
    }

    /// `made` pushes of a granted batch were made.
    pub(super) fn spent(&mut self, made: u32) {
        if let Some(bucket) = &mut self.bucket {
            bucket.tokens = bucket.tokens.saturating_sub(made);
        }
    }

    /// When a burst held back by the rate may go on: the connection's loop
    /// sleeps until then (and calls [`Pacer::woke`]).
    pub(super) fn due(&self) -> Option<Instant> {
        self.bucket.as_ref().and_then(|bucket| bucket.due)
    }

    /// The sleep until [`Pacer::due`] ended: the next grant checks again.
    pub(super) fn woke(&mut self) {
        if let Some(bucket) = &mut self.bucket {
            bucket.due = None;
        }
    }
}

/// What one batch of a burst may have: a number of pushes, and bytes while
/// what the connection holds is under the queue's bound.
#[derive(Debug)]
pub(super) struct Batch {
    pushes: u32,
    /// Bytes left under the queue's bound when the batch began (`None`: no bound).
    room: Option<usize>,
    /// Bytes of the pushes made so far.
    bytes: usize,
    made: u32,
}

impl Batch {
    /// Whether one more push may join: the batch is not full, and what is
    /// held is still under the byte bound (so the last push may pass it, as
    /// a reserved message passes the queue's).
    pub(super) fn admits(&self) -> bool {
        self.made < self.pushes && self.room.is_none_or(|room| self.bytes < room)
    }

    /// A push of `len` bytes joined.
    pub(super) fn add(&mut self, len: usize) {
        self.made = self.made.saturating_add(1);
        self.bytes = self.bytes.saturating_add(len);
    }

    /// Fills the batch with pushes of `len` bytes each (at most: a plain
    /// push's seq is written in fewer digits than it may have) and returns
    /// how many joined: what [`Batch::admits`] and [`Batch::add`] one by one
    /// would give.
    pub(super) fn fill(&mut self, len: usize) -> u32 {
        let len = len.max(1);
        let by_bytes = self.room.map_or(u32::MAX, |room| {
            u32::try_from(room.saturating_sub(self.bytes).div_ceil(len)).unwrap_or(u32::MAX)
        });
        let n = self.pushes.saturating_sub(self.made).min(by_bytes);
        self.made = self.made.saturating_add(n);
        self.bytes = self.bytes.saturating_add(len.saturating_mul(n as usize));
        n
    }

    /// Pushes that joined.
    pub(super) fn made(&self) -> u32 {
        self.made
    }
}

/// `--max-burst-rate`'s token bucket.
#[derive(Debug)]
struct Bucket {
    /// Pushes a second (more than 0).
    rate: u32,
    /// Tokens it holds at most: one batch.
    size: u32,
    tokens: u32,
    /// When `tokens` was counted: the time since is owed in tokens,
    /// including the part of one not whole yet.
    at: Instant,
    /// When a burst held back may go on, if one is.
    due: Option<Instant>,
}

impl Bucket {
    /// Full: a connection's first batch goes at once.
    fn new(rate: u32, now: Instant) -> Self {
        let size = (rate / WAKES_PER_SECOND).clamp(1, BATCH);
        Self {
            rate,
            size,
            tokens: size,
            at: now,
            due: None,
        }
    }

    /// Adds the tokens earned since `at`.
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_nanos();
        let earned = elapsed.saturating_mul(u128::from(self.rate)) / u128::from(NANOS_PER_SECOND);
        let missing = self.size.saturating_sub(self.tokens);
        match u32::try_from(earned) {
            Ok(earned) if earned < missing => {
                self.tokens = self.tokens.saturating_add(earned);
                // Only the time those tokens took: the part of the next
                // one carries over (rounded up: never faster than the rate).
                self.at = crate::timer::later(self.at, self.time_of(earned));
            }
            // Full: time beyond it is not banked.
            _ => {
                self.tokens = self.size;
                self.at = now;
            }
        }
    }

    /// How long `tokens` take to earn, rounded up to the nanosecond.
    fn time_of(&self, tokens: u32) -> Duration {
        let nanos = u64::from(tokens).saturating_mul(NANOS_PER_SECOND);
        Duration::from_nanos(nanos.div_ceil(u64::from(self.rate.max(1))))
    }

    /// The pushes a batch of at most `want` may have now: all of them up
    /// to the bucket's size, or none until [`Bucket::due`] (one wait per
    /// batch, not a batch of one per token).
    fn allows(&mut self, want: u32, now: Instant) -> Option<u32> {
        self.refill(now);
        let want = want.min(self.size);
        if self.tokens >= want {
            self.due = None;
            return Some(want);
        }
        let short = want.saturating_sub(self.tokens);
        self.due = Some(crate::timer::later(self.at, self.time_of(short)));
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pushes: u32, room: Option<usize>) -> Batch {
        Batch {
            pushes,
            room,
            bytes: 0,
            made: 0,
        }
    }

    #[test]
    fn batches_shrink_with_the_connections_bursting_at_once_within_their_bounds() {
        assert_eq!(share_of(0), BATCH);
        assert_eq!(share_of(1), BATCH);
        assert_eq!(share_of(32), BATCH);
        assert_eq!(share_of(33), 496);
        assert_eq!(share_of(200), 81);
        assert_eq!(share_of(100_000), MIN_BATCH);
        assert_eq!(share_of(u64::MAX), MIN_BATCH);
        let mut pacer = Pacer::default();
        let now = Instant::now();
        assert_eq!(pacer.grant(10_000, None, now).unwrap().pushes, BATCH);
        pacer.share(200);
        assert_eq!(pacer.grant(10_000, None, now).unwrap().pushes, 81);
        assert_eq!(pacer.grant(5, None, now).unwrap().pushes, 5);
    }

    #[test]
    fn a_batch_takes_pushes_while_under_the_byte_bound() {
        for room in [
            None,
            Some(0),
            Some(1),
            Some(79),
            Some(80),
            Some(81),
            Some(8000),
        ] {
            for pushes in [0, 1, 3, 512] {
                let mut one_by_one = batch(pushes, room);
                while one_by_one.admits() {
                    one_by_one.add(80);
                }
                let mut filled = batch(pushes, room);
                assert_eq!(filled.fill(80), one_by_one.made(), "{room:?} {pushes}");
                assert_eq!(filled.bytes, one_by_one.bytes);
            }
        }
        // Under the bound, the last push may pass it; at it, nothing goes.
        assert_eq!(batch(512, Some(100)).fill(80), 2);
        assert_eq!(batch(512, Some(0)).fill(80), 0);
        assert_eq!(batch(512, None).fill(80), 512);
    }

    #[test]
    fn one_burst_runs_and_one_waits_and_a_third_is_busy() {
        let now = Instant::now();
        let mut pacer = Pacer::new(0, now);
        assert!(!pacer.plain_running());
        assert_eq!(pacer.start(3, now), Ok(()));
        assert_eq!(pacer.start(2, now), Ok(()));
        assert_eq!(pacer.start(1, now), Err(BurstBusy));
        let Some(Plain::Pushes(mut first)) = pacer.plain_next(None, now) else {
            panic!("the first burst's pushes")
        };
        assert_eq!(first.fill(10), 3);
        pacer.pushed(first.made());
        assert!(matches!(
            pacer.plain_next(None, now),
            Some(Plain::Done { count: 3, .. })
        ));
        // The waiting one runs: room for one more behind it.
        assert_eq!(pacer.start(7, now), Ok(()));
        assert_eq!(pacer.start(7, now), Err(BurstBusy));
        let Some(Plain::Pushes(second)) = pacer.plain_next(None, now) else {
            panic!("the second burst's pushes")
        };
        assert_eq!(second.pushes, 2);
    }

    #[test]
    fn the_rate_grants_a_batch_per_twentieth_of_a_second_and_sleeps_between() {
        let start = Instant::now();
        // 2,000 a second: batches of 100, one per 50 ms.
        let mut pacer = Pacer::new(2_000, start);
        let mut now = start;
        let mut made = 0;
        let mut sleeps = 0;
        while made < 1_000 {
            match pacer.grant(u32::MAX, None, now) {
                Some(mut batch) => {
                    let n = batch.fill(80);
                    assert_eq!(n, 100, "a whole batch or nothing");
                    pacer.spent(n);
                    made += n;
                }
                None => {
                    let due = pacer.due().expect("held: a time to wake");
                    assert!(due > now);
                    now = due;
                    pacer.woke();
                    sleeps += 1;
                }
            }
        }
        // The first batch at once, then one per 50 ms: 900 at 2,000 a second.
        assert_eq!(sleeps, 9);
        assert_eq!(now - start, Duration::from_millis(450));
        // A short burst's last batch waits only for what it needs.
        let mut pacer = Pacer::new(2_000, start);
        let granted = pacer.grant(100, None, start).unwrap().pushes;
        pacer.spent(granted);
        assert!(pacer.grant(10, None, start).is_none());
        assert_eq!(pacer.due(), Some(start + Duration::from_millis(5)));
    }

    #[test]
    fn the_bucket_keeps_fractions_and_banks_no_more_than_a_batch() {
        let start = Instant::now();
        // 60 a second: a batch of 3, then one push every 16.67 ms, each
        // counted from where the last one was earned, not from a rounding.
        let mut pacer = Pacer::new(60, start);
        let (mut now, mut got) = (start, 0);
        while got < 63 {
            match pacer.grant(1, None, now) {
                Some(batch) => {
                    pacer.spent(batch.pushes);
                    got += batch.pushes;
                }
                None => {
                    now = pacer.due().unwrap();
                    pacer.woke();
                }
            }
        }
        let took = now - start;
        assert!(took >= Duration::from_secs(1), "{took:?}");
        assert!(took < Duration::from_micros(1_001_000), "{took:?}");
        // A long pause banks one batch, not the whole pause.
        let later = now + Duration::from_secs(3600);
        let granted = pacer.grant(5, None, later).unwrap().pushes;
        assert_eq!(granted, 3);
        pacer.spent(granted);
        assert!(pacer.grant(5, None, later).is_none());
        // The largest rate neither overflows nor holds anything back.
        let mut pacer = Pacer::new(u32::MAX, start);
        let granted = pacer.grant(u32::MAX, None, start).unwrap().pushes;
        assert_eq!(granted, BATCH);
        pacer.spent(granted);
        assert!(
            pacer
                .grant(1, None, start + Duration::from_nanos(1))
                .is_some()
        );
        assert!(
            pacer
                .grant(1, None, start + Duration::from_secs(1))
                .is_some()
        );
    }
}
