//! The heartbeat's decisions, as a pure function of wall-clock times.
//!
//! Browsers throttle timers in background tabs (to once a second, or once a
//! minute after a while), but still deliver socket messages. So the check is
//! not "nothing arrived for `timeout_ms`" (a tab whose timer slept a minute
//! would send no ping and then see a minute of silence), but "a ping went out
//! and nothing at all arrived within `timeout_ms` after it". A late timer
//! tick only sends its ping late; it never declares a live connection dead.

use crate::config::Heartbeat;

/// What the heartbeat timer should do on a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Nothing to do yet.
    Wait,
    /// Send a `ping` now.
    Ping,
    /// A ping got no answer (nor any other message) within the timeout: the connection is dead.
    Dead,
}

/// Heartbeat bookkeeping of one open connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Liveness {
    heartbeat: Heartbeat,
    last_seen_ms: f64,
    ping_sent_ms: Option<f64>,
}

impl Liveness {
    /// A connection that opened at `now_ms`.
    pub fn new(heartbeat: Heartbeat, now_ms: f64) -> Self {
        Self {
            heartbeat,
            last_seen_ms: now_ms,
            ping_sent_ms: None,
        }
    }

    /// Something arrived at `now_ms`: the connection is alive.
    pub fn seen(&mut self, now_ms: f64) {
        self.last_seen_ms = now_ms;
        self.ping_sent_ms = None;
    }

    /// The timer ticked at `now_ms`. When this returns [`Tick::Ping`], the
    /// ping counts as sent at `now_ms`.
    pub fn tick(&mut self, now_ms: f64) -> Tick {
        if let Some(sent) = self.ping_sent_ms {
            return if now_ms - sent >= f64::from(self.heartbeat.timeout_ms) {
                Tick::Dead
            } else {
                Tick::Wait
            };
        }
        if now_ms - self.last_seen_ms >= f64::from(self.heartbeat.interval_ms) {
            self.ping_sent_ms = Some(now_ms);
            Tick::Ping
        } else {
            Tick::Wait
        }
    }

    /// How often the timer should tick: a quarter of the shorter period, so
    /// pings and timeouts are at most that late (20 ms to 1 s).
    pub fn tick_ms(heartbeat: Heartbeat) -> u32 {
        (heartbeat.interval_ms.min(heartbeat.timeout_ms) / 4).clamp(20, 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HB: Heartbeat = Heartbeat {
        interval_ms: 10_000,
        timeout_ms: 30_000,
    };

    #[test]
    fn pings_after_an_interval_of_silence_only() {
        let mut l = Liveness::new(HB, 0.0);
        assert_eq!(l.tick(9_999.0), Tick::Wait);
        l.seen(5_000.0);
        assert_eq!(l.tick(14_999.0), Tick::Wait, "a message postpones the ping");
        assert_eq!(l.tick(15_000.0), Tick::Ping);
    }

    #[test]
    fn an_answer_keeps_it_alive_and_silence_after_a_ping_is_death() {
        let mut l = Liveness::new(HB, 0.0);
        assert_eq!(l.tick(10_000.0), Tick::Ping);
        assert_eq!(l.tick(20_000.0), Tick::Wait, "one ping at a time");
        l.seen(20_500.0);
        assert_eq!(l.tick(30_499.0), Tick::Wait);
        assert_eq!(l.tick(30_500.0), Tick::Ping);
        assert_eq!(l.tick(60_499.0), Tick::Wait);
        assert_eq!(l.tick(60_500.0), Tick::Dead);
    }

    #[test]
    fn a_throttled_timer_does_not_cause_a_false_timeout() {
        let mut l = Liveness::new(HB, 0.0);
        // The tab was in the background: the first tick comes after 5 minutes.
        assert_eq!(l.tick(300_000.0), Tick::Ping, "late: ping, not dead");
        // The pong arrives (socket events are not throttled) before the next tick.
        l.seen(300_050.0);
        assert_eq!(l.tick(360_000.0), Tick::Ping);
        // Only a ping that got no answer within the timeout is death, however late the tick.
        assert_eq!(l.tick(900_000.0), Tick::Dead);
    }

    #[test]
    fn the_tick_period_follows_the_shorter_period() {
        assert_eq!(Liveness::tick_ms(HB), 1000);
        let fast = Heartbeat {
            interval_ms: 200,
            timeout_ms: 400,
        };
        assert_eq!(Liveness::tick_ms(fast), 50);
        let tiny = Heartbeat {
            interval_ms: 1,
            timeout_ms: 1,
        };
        assert_eq!(Liveness::tick_ms(tiny), 20);
    }
}
