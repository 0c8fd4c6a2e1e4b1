//! The bounds of reliable mode: [`Limits`], what a session may hold, and
//! [`Caps`], how many sessions a store holds. One type each, used by both
//! stores: the memory store counts in its maps, the Redis store inside its
//! create script, against the same numbers and with the same answers.

use std::time::Duration;

use super::outcome::TooMany;

/// The bounds of reliable mode.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Unacknowledged server messages kept per session (and the send window).
    pub history_max: usize,
    /// Unacknowledged server messages older than this are evicted.
    pub history_max_age: Duration,
    /// The history's frames hold at most this many bytes (the same rules as the count).
    pub history_max_bytes: usize,
    /// How long a session outlives its last connection.
    pub ttl: Duration,
    /// How many sessions the store holds.
    pub caps: Caps,
    /// Bytes of every session's history together (0: no budget).
    pub history_total_bytes: usize,
}

/// How many sessions a store holds at most, counted over the whole store
/// (in Redis: over every node of the cluster), attached or away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Sessions held at most (`--max-sessions`).
    pub total: usize,
    /// Per owner address (`--max-sessions-per-ip`; 0: no cap).
    pub per_ip: usize,
    /// Token mode: per user (`--max-sessions-per-user`; 0: no cap).
    pub per_user: usize,
}

/// How many sessions a create would join: the store's, its owner
/// address's and (token mode) its user's, before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Every session of the store.
    pub total: usize,
    /// The owner address's.
    pub per_ip: usize,
    /// The user's (0 in anonymous mode).
    pub per_user: usize,
}

impl Caps {
    /// Whether one more session fits beside `held`.
    ///
    /// # Errors
    ///
    /// The first cap that is reached, the store-wide one first.
    pub fn admit(&self, held: Held) -> Result<(), TooMany> {
        let full = |cap: usize, held: usize| cap > 0 && held >= cap;
        if held.total >= self.total {
            Err(TooMany::Sessions)
        } else if full(self.per_ip, held.per_ip) {
            Err(TooMany::PerIp)
        } else if full(self.per_user, held.per_user) {
            Err(TooMany::PerUser)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cap_refuses_at_its_count_and_zero_turns_the_per_owner_ones_off() {
        let caps = Caps {
            total: 3,
            per_ip: 2,
            per_user: 1,
        };
        let held = |total, per_ip, per_user| Held {
            total,
            per_ip,
            per_user,
        };
        assert_eq!(caps.admit(held(0, 0, 0)), Ok(()));
        assert_eq!(caps.admit(held(3, 0, 0)), Err(TooMany::Sessions));
        assert_eq!(caps.admit(held(2, 2, 0)), Err(TooMany::PerIp));
        assert_eq!(caps.admit(held(2, 1, 1)), Err(TooMany::PerUser));
        let open = Caps {
            per_ip: 0,
            per_user: 0,
            ..caps
        };
        assert_eq!(open.admit(held(2, 50, 50)), Ok(()));
        // The total is never off: 0 holds nothing.
        assert_eq!(
            Caps { total: 0, ..open }.admit(held(0, 0, 0)),
            Err(TooMany::Sessions)
        );
    }
}
