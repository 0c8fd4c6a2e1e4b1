//! The wall clock, in milliseconds since the Unix epoch: what goes into
//! Redis records, history entries and command deadlines, which other nodes
//! read. Durations inside one process use `Instant`, never this; a push's
//! `sent_at_ms`, for its client only, is this process's own clock.
//!
//! Nodes' clocks disagree, and a time one node writes is read by another:
//! a detach's time, a history entry's, a command's deadline. So with Redis
//! every node counts in Redis's clock: each heartbeat reads Redis's `TIME`
//! and keeps the offset to its own clock ([`observed_redis_time`]), and
//! [`now_ms`] is this process's clock plus that offset. A node ahead of
//! the others can then neither shorten their sessions' TTLs to nothing nor
//! age their histories early. It logs its skew when it passes a second.
//! The TTLs computed from a peer's time are bounded to `--session-ttl` as
//! well, should a peer still write a wild one (an older node).
//!
//! A build with the `testing` feature reads `SERVER_TEST_CLOCK_OFFSET_MS`
//! (signed) once, and adds it to every reading here: the tests of clock
//! skew start nodes ahead of and behind the others. Other builds ignore
//! the variable.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

/// Redis's clock minus this process's, in ms, as last measured.
static REDIS_OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// A skew past this is logged.
const SKEW_WARNING_MS: i64 = 1_000;

/// A sample of Redis's clock whose round trip took longer is left out
/// (after the first): it could be off by half of it.
const MAX_SAMPLE_ROUND_TRIP_MS: u64 = 100;

/// Milliseconds since the Unix epoch of `time` (0 before it).
pub fn millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// This process's wall clock, in ms since the Unix epoch (with the test
/// offset, if any).
pub fn local_ms() -> u64 {
    offset(millis(SystemTime::now()))
}

/// The cluster's clock, in ms since the Unix epoch: Redis's, as last
/// measured (this process's without Redis).
pub fn now_ms() -> u64 {
    local_ms().saturating_add_signed(REDIS_OFFSET_MS.load(Relaxed))
}

/// Redis answered `TIME` with `redis_ms` to a request sent at `before`
/// and answered at `after` ([`local_ms`]): its clock is taken to have read
/// that halfway between, which is off by at most half the round trip. So
/// after the first, a sample whose round trip took longer than
/// [`MAX_SAMPLE_ROUND_TRIP_MS`] (a loaded node, a slow Redis) is left out,
/// and the offset stays as the last good one measured.
pub fn observed_redis_time(redis_ms: u64, before: u64, after: u64) {
    static SAMPLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let round_trip = after.saturating_sub(before);
    // `swap`: the first sample is taken whatever its round trip.
    if SAMPLED.swap(true, Relaxed) && round_trip > MAX_SAMPLE_ROUND_TRIP_MS {
        return;
    }
    let halfway = before / 2 + after / 2;
    let offset = if redis_ms >= halfway {
        i64::try_from(redis_ms - halfway).unwrap_or(i64::MAX)
    } else {
        i64::try_from(halfway - redis_ms).map_or(i64::MIN, |ahead| -ahead)
    };
    let was = REDIS_OFFSET_MS.swap(offset, Relaxed);
    if offset.unsigned_abs() > SKEW_WARNING_MS.unsigned_abs()
        && offset.abs_diff(was) > SKEW_WARNING_MS.unsigned_abs()
    {
        tracing::warn!(
            skew_ms = offset.saturating_neg(),
            "this node's clock is off Redis's by more than a second (positive: ahead); \
             times shared with other nodes follow Redis's clock"
        );
    }
}

#[cfg(feature = "testing")]
fn offset(ms: u64) -> u64 {
    static OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let offset = *OFFSET.get_or_init(|| {
        std::env::var("SERVER_TEST_CLOCK_OFFSET_MS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    });
    ms.saturating_add_signed(offset)
}

#[cfg(not(feature = "testing"))]
fn offset(ms: u64) -> u64 {
    ms
}

/// The wall-clock ms of `at` (an `Instant` of this process).
pub fn wall_ms(at: Instant) -> u64 {
    // Both in the cluster's clock: these are the times other nodes read.
    let now = Instant::now();
    let now_ms = now_ms();
    if at <= now {
        let ago = u64::try_from(now.duration_since(at).as_millis()).unwrap_or(u64::MAX);
        now_ms.saturating_sub(ago)
    } else {
        let ahead = u64::try_from(at.duration_since(now).as_millis()).unwrap_or(u64::MAX);
        now_ms.saturating_add(ahead)
    }
}

/// The `Instant` of wall-clock ms `ms`, which may come from another node:
/// checked both ways, since an `Instant` out of range would panic.
pub fn instant_of(ms: u64) -> Instant {
    let now_ms = now_ms();
    let now = Instant::now();
    if ms <= now_ms {
        now.checked_sub(Duration::from_millis(now_ms - ms))
            .unwrap_or(now)
    } else {
        now.checked_add(Duration::from_millis(ms - now_ms))
            .unwrap_or(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_and_wall_ms_convert_both_ways_and_never_panic() {
        let now = Instant::now();
        let ms = wall_ms(now);
        let back = instant_of(ms);
        let diff = if back > now { back - now } else { now - back };
        assert!(diff < Duration::from_secs(1), "{diff:?}");
        // Out of range both ways: the nearest sane instant, no panic.
        let _ = instant_of(0);
        let _ = instant_of(u64::MAX);
        assert_eq!(millis(SystemTime::UNIX_EPOCH), 0);
    }
}
