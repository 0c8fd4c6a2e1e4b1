//! The wall clock, in milliseconds since the Unix epoch: what goes into
//! pushes (`sent_at_ms`), Redis records and history entries, which other
//! nodes read. Durations inside one process use `Instant`, never this.
//!
//! Nodes' clocks disagree. Whatever a node reads from a peer's wall clock
//! is bounded where it is used (see `reliable/store/redis/`), so that a
//! node whose clock is ahead cannot shorten another's TTLs to nothing.
//!
//! A build with the `testing` feature reads `SERVER_TEST_CLOCK_OFFSET_MS`
//! (signed) once, and adds it to every reading here: the tests of clock
//! skew start nodes ahead of and behind the others. Other builds ignore
//! the variable.

use std::time::{Duration, Instant, SystemTime};

/// Milliseconds since the Unix epoch of `time` (0 before it).
pub fn millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Milliseconds since the Unix epoch, now (with the test offset, if any).
pub fn now_ms() -> u64 {
    offset(millis(SystemTime::now()))
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
