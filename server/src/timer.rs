//! A connection's timers: the idle deadline, pushed back without touching
//! the timer, and the optional periodic ticks (pings, timed pushes).
//!
//! Resetting a tokio `Sleep` on every frame takes the timer driver's lock
//! and moves the entry in its wheel: on a busy connection that is a cost per
//! message. Instead a connection notes when it last heard from the peer (a
//! clock read) and lets the timer fire at the old deadline; [`expired`] then
//! tells a real silence from one already broken, and re-arms the timer for
//! the new deadline in the second case. The timer moves at most once per
//! `--idle-timeout`, whatever the traffic. In token mode the same timer
//! also serves the token's expiry ([`due`]): it fires at the earlier of the
//! two deadlines, and a refresh (rare) re-arms it. The timer is not the
//! only check: the connection's loop, biased towards the stream, would not
//! poll it under a flood of frames, so every turn of the loop also asks
//! [`overdue`] (a clock read).

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Called when the idle timer fired: whether the peer has been silent for
/// `timeout` since `last_heard`. If not, the timer is re-armed for
/// `last_heard + timeout`.
pub(crate) fn expired(sleep: Pin<&mut Sleep>, last_heard: Instant, timeout: Duration) -> bool {
    let due = later(last_heard, timeout);
    if due > Instant::now() {
        sleep.reset(due);
        false
    } else {
        true
    }
}

/// What a connection's deadline timer found when it fired.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// Neither deadline passed: the timer is re-armed for the earlier one.
    NotYet,
    /// The peer was silent for the idle timeout.
    Idle,
    /// Token mode: the token's `exp` (plus the leeway) passed.
    Expired,
}

/// Called when the deadline timer of a `/ws` connection fired. One timer
/// serves both deadlines, the idle one ([`expired`]) and in token mode the
/// token's expiry, so token mode costs a clock read and no second timer;
/// the timer is re-armed for the earlier of the two when neither passed.
pub(crate) fn due(
    sleep: Pin<&mut Sleep>,
    last_heard: Instant,
    timeout: Duration,
    expiry: Option<Instant>,
) -> Due {
    match overdue(Instant::now(), last_heard, timeout, expiry) {
        Due::NotYet => {
            sleep.reset(first(later(last_heard, timeout), expiry));
            Due::NotYet
        }
        passed => passed,
    }
}

/// Which deadline passed at `now`, if any: the token's expiry first, then
/// the idle one. The timer alone is not enough: a `select!` biased towards
/// the stream never polls it while frames keep coming (a flood of pongs),
/// so the connection's loop also asks this, whatever branch woke it; a
/// clock read, no timer touched.
pub(crate) fn overdue(
    now: Instant,
    last_heard: Instant,
    timeout: Duration,
    expiry: Option<Instant>,
) -> Due {
    if expiry.is_some_and(|at| at <= now) {
        Due::Expired
    } else if later(last_heard, timeout) <= now {
        Due::Idle
    } else {
        Due::NotYet
    }
}

/// The earlier of `at` and `expiry`.
pub(crate) fn first(at: Instant, expiry: Option<Instant>) -> Instant {
    expiry.map_or(at, |expiry| expiry.min(at))
}

/// How far away "never" is: about 30 years, as tokio's own far future.
/// Every deadline is capped at it, so that none overflows an `Instant`.
const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `at + after`, with `after` capped at about 30 years: never a panic,
/// whatever `after` is (a token's `exp` comes from the network; a flag may
/// say `1e12s`). `Instant + Duration` panics on overflow; this does not.
pub(crate) fn later(at: Instant, after: Duration) -> Instant {
    // `at + FAR` does not overflow a monotonic clock; were it to, the
    // deadline would be `at`: a connection closed, not a task panicking.
    at.checked_add(after.min(FAR)).unwrap_or(at)
}

/// The instant a token of `exp` (seconds since the epoch) stops being
/// accepted with `leeway`: now, if it is past; about 30 years from now at
/// most, whatever `exp` says (a token with `exp` 2^62 once panicked here).
pub(crate) fn expiry(exp: u64, leeway: Duration) -> Instant {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let until = Duration::from_secs(exp)
        .saturating_add(leeway)
        .saturating_sub(since_epoch);
    later(Instant::now(), until)
}

/// An interval that first fires one period from now and skips missed
/// ticks; `None` when `period` is zero (off).
pub(crate) fn ticker(period: Duration) -> Option<tokio::time::Interval> {
    (!period.is_zero()).then(|| {
        let mut interval = tokio::time::interval_at(later(Instant::now(), period), period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        interval
    })
}

/// The next tick of `interval`; never, when it is off.
pub(crate) async fn tick(interval: &mut Option<tokio::time::Interval>) -> Option<()> {
    match interval {
        Some(interval) => {
            interval.tick().await;
            Some(())
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_timer_serves_the_idle_deadline_and_the_token_expiry() {
        let timeout = Duration::from_secs(30);
        let start = Instant::now();
        let expiry = Some(start + Duration::from_secs(10));
        let sleep = tokio::time::sleep_until(first(start + timeout, expiry));
        tokio::pin!(sleep);
        // Heard at 5 s; the timer fires at 10 s: the token ran out.
        tokio::time::advance(Duration::from_secs(5)).await;
        let heard = Instant::now();
        (&mut sleep).await;
        assert_eq!(Instant::now(), start + Duration::from_secs(10));
        assert_eq!(due(sleep.as_mut(), heard, timeout, expiry), Due::Expired);
        // Refreshed to 60 s: re-armed for the idle deadline at 35 s.
        let later = Some(start + Duration::from_secs(60));
        assert_eq!(due(sleep.as_mut(), heard, timeout, later), Due::NotYet);
        assert_eq!(sleep.deadline(), heard + timeout);
        (&mut sleep).await;
        assert_eq!(due(sleep.as_mut(), heard, timeout, later), Due::Idle);
    }

    #[test]
    fn overdue_says_which_deadline_passed() {
        let start = Instant::now();
        let timeout = Duration::from_secs(30);
        let at = |secs| start + Duration::from_secs(secs);
        let expiry = Some(at(10));
        assert_eq!(overdue(at(9), start, timeout, expiry), Due::NotYet);
        assert_eq!(overdue(at(10), start, timeout, expiry), Due::Expired);
        assert_eq!(overdue(at(30), start, timeout, None), Due::Idle);
        assert_eq!(overdue(at(30), at(1), timeout, None), Due::NotYet);
        // Both passed: the token's expiry is the one reported.
        assert_eq!(overdue(at(40), start, timeout, expiry), Due::Expired);
    }

    #[test]
    fn no_deadline_overflows() {
        let now = Instant::now();
        assert!(expiry(1 << 62, Duration::from_secs(5)) > now + Duration::from_secs(86_400 * 365));
        assert!(expiry(u64::MAX, Duration::MAX) > now);
        assert_eq!(
            later(now, Duration::from_secs(3)),
            now + Duration::from_secs(3)
        );
        assert!(later(now, Duration::MAX) > now);
        assert!(expiry(0, Duration::ZERO) <= Instant::now());
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_heard_since_the_timer_was_armed_is_not_idle() {
        let timeout = Duration::from_secs(30);
        let sleep = tokio::time::sleep(timeout);
        tokio::pin!(sleep);
        tokio::time::advance(Duration::from_secs(10)).await;
        let heard = Instant::now();
        (&mut sleep).await;
        // Fired at 30 s, but the peer spoke at 10 s: due at 40 s.
        assert!(!expired(sleep.as_mut(), heard, timeout));
        assert_eq!(sleep.deadline(), heard + timeout);
        (&mut sleep).await;
        assert!(expired(sleep.as_mut(), heard, timeout));
    }
}
