//! A connection's timers: the idle deadline, pushed back without touching
//! the timer, and the optional periodic ticks (pings, timed pushes).
//!
//! Resetting a tokio `Sleep` on every frame takes the timer driver's lock
//! and moves the entry in its wheel: on a busy connection that is a cost per
//! message. Instead a connection notes when it last heard from the peer (a
//! clock read) and lets the timer fire at the old deadline; [`expired`] then
//! tells a real silence from one already broken, and re-arms the timer for
//! the new deadline in the second case. The timer moves at most once per
//! `--idle-timeout`, whatever the traffic.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Called when the idle timer fired: whether the peer has been silent for
/// `timeout` since `last_heard`. If not, the timer is re-armed for
/// `last_heard + timeout`.
pub(crate) fn expired(sleep: Pin<&mut Sleep>, last_heard: Instant, timeout: Duration) -> bool {
    let due = last_heard + timeout;
    if due > Instant::now() {
        sleep.reset(due);
        false
    } else {
        true
    }
}

/// An interval that first fires one period from now and skips missed
/// ticks; `None` when `period` is zero (off).
pub(crate) fn ticker(period: Duration) -> Option<tokio::time::Interval> {
    (!period.is_zero()).then(|| {
        let mut interval = tokio::time::interval_at(Instant::now() + period, period);
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
