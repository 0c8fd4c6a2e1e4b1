//! Failed admin authentications, counted per client address: after
//! [`MAX_FAILURES`] within [`WINDOW`] the address gets 429 with
//! `Retry-After` until the window ends, whatever token it sends (the right
//! one included, or a guess would still learn whether it was right).
//!
//! A fixed window per address: the first failure opens it, the
//! [`MAX_FAILURES`]th closes the address until it ends. Addresses are keyed
//! as the connection limits key them (an IPv6 one by its /64; behind a
//! `--trusted-proxy`, the forwarded one). The map forgets ended windows
//! when it grows, so a flood from many addresses holds at most the
//! addresses of one window.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Failed authentications an address may make per [`WINDOW`].
pub const MAX_FAILURES: u32 = 10;

/// The window of [`MAX_FAILURES`]: 10 failures per 10 s per address.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The failures of every address in its current window.
#[derive(Debug, Default)]
pub struct Lockout {
    windows: Mutex<Windows>,
}

#[derive(Debug, Default)]
struct Windows {
    map: HashMap<IpAddr, Window>,
    /// Ended windows are forgotten when the map reaches this size.
    prune_at: usize,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

impl Window {
    fn ended(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.started) >= WINDOW
    }
}

impl Lockout {
    /// `Some(wait)` when `client` used up its failures and must wait that
    /// long (at least a second, for `Retry-After`); `None` when it may try.
    pub fn locked(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let window = windows.map.get(&crate::limits::key(client))?;
        if window.ended(now) || window.failures < MAX_FAILURES {
            return None;
        }
        let left = WINDOW.saturating_sub(now.saturating_duration_since(window.started));
        Some(left.max(Duration::from_secs(1)))
    }

    /// Counts a failed authentication of `client`.
    pub fn failed(&self, client: IpAddr, now: Instant) {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if windows.map.len() >= windows.prune_at.max(1024) {
            windows.map.retain(|_, window| !window.ended(now));
            windows.prune_at = windows.map.len() * 2;
        }
        let window = windows
            .map
            .entry(crate::limits::key(client))
            .or_insert(Window {
                started: now,
                failures: 0,
            });
        if window.ended(now) {
            *window = Window {
                started: now,
                failures: 0,
            };
        }
        window.failures = window.failures.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_locked_out_after_its_failures_until_the_window_ends() {
        let lockout = Lockout::default();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            lockout.failed(a, t0);
        }
        assert_eq!(lockout.locked(a, t0), None, "one failure left");
        lockout.failed(a, t0);
        let later = t0 + Duration::from_millis(2500);
        assert_eq!(
            lockout.locked(a, later),
            Some(WINDOW - Duration::from_millis(2500))
        );
        assert_eq!(lockout.locked(b, later), None, "per address");
        assert_eq!(lockout.locked(a, t0 + WINDOW), None, "the window ended");
        // A new window starts from nothing.
        lockout.failed(a, t0 + WINDOW);
        assert_eq!(lockout.locked(a, t0 + WINDOW), None);
    }

    #[test]
    fn ended_windows_are_forgotten() {
        let lockout = Lockout::default();
        let t0 = Instant::now();
        for i in 0..1024u32 {
            lockout.failed(IpAddr::from(i.to_be_bytes()), t0);
        }
        lockout.failed("192.0.2.1".parse().unwrap(), t0 + WINDOW);
        assert_eq!(lockout.windows.lock().unwrap().map.len(), 1);
    }
}
