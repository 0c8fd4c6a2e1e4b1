//! Who is there: hellos and goodbyes, heartbeats and silence, the roster
//! of known tabs, and whether a leader's claim is to be believed.
//!
//! A tab is known once it said hello with this tab's config (or was named
//! in a believed leader's roster); it is forgotten when it says goodbye or
//! after [`FORGET_MS`] of silence. Only a known tab may send through the
//! leader or claim the lead one epoch ahead.

use super::{Effect, FORGET_MS, Lock, Role, SILENCE_MS, TabEvent, TabId, TabMessage, Tabs};

impl Tabs {
    /// Says hello, with where this tab's numbering stands.
    pub(super) fn hello(&mut self) {
        let next = self
            .outbox
            .front()
            .map_or(self.last_n.saturating_add(1), |(n, _)| *n);
        self.broadcast(TabMessage::Hello {
            config: self.config.clone(),
            next,
        });
    }

    /// Keeps the roster as `from` speaks, before the role's rules: a hello
    /// with our config enters it, a goodbye leaves it, anything else from
    /// a known tab says it is alive.
    pub(super) fn heard(&mut self, from: &TabId, body: &TabMessage, now: f64) {
        match body {
            TabMessage::Hello { config, .. } if *config == self.config => {
                self.roster.insert(*from, now);
            }
            TabMessage::Bye | TabMessage::Disband { .. } => {
                if self.roster.remove(from).is_some() && self.role == Role::Leader {
                    self.forget(from);
                    if self.catching_up.is_none() {
                        self.release_channels(from);
                    }
                }
            }
            _ => {
                if let Some(heard) = self.roster.get_mut(from) {
                    *heard = now;
                }
            }
        }
    }

    /// Whether `from`'s claim to lead at `epoch`, naming `roster`, is to be
    /// believed: never at `u64::MAX` (no room for a next leader); at any
    /// epoch when it names this tab (the claimant heard our hello: the
    /// answer to it, whatever we missed while away); else only from a
    /// known tab, at the epoch we know or the next one (each new leader
    /// adds one).
    pub(super) fn believable(&self, from: &TabId, epoch: u64, roster: &[TabId]) -> bool {
        if epoch == u64::MAX {
            return false;
        }
        if roster.contains(&self.me) {
            return true;
        }
        self.roster.contains_key(from)
            && (epoch == self.epoch || Some(epoch) == self.epoch.checked_add(1))
    }

    /// Leader: forgets `tab`'s numbering once nothing of it is pending
    /// (a resend of a pending message must still be recognised).
    pub(super) fn forget(&mut self, tab: &TabId) {
        if *tab != self.me && !self.shared.pending.iter().any(|p| p.tab == *tab) {
            self.shared.accepted.remove(tab);
        }
    }

    /// Tabs heard within [`SILENCE_MS`], this one included.
    pub(super) fn counted(&self, now: f64) -> usize {
        let others = self
            .roster
            .values()
            .filter(|heard| now - **heard <= SILENCE_MS)
            .count();
        others.saturating_add(1)
    }

    /// Leader: says so when the number of tabs changed.
    pub(super) fn recount(&mut self, now: f64) {
        if self.counted(now) != self.tabs {
            self.members_changed(now);
        }
    }

    pub(super) fn members_changed(&mut self, now: f64) {
        self.tabs = self.counted(now);
        self.broadcast(TabMessage::Status {
            state: self.link,
            tabs: self.tabs,
        });
        self.role_changed();
    }

    pub(super) fn announce(&mut self) {
        let roster = std::iter::once(self.me)
            .chain(self.roster.keys().cloned())
            .collect();
        self.broadcast(TabMessage::Leader {
            epoch: self.epoch,
            config: self.config.clone(),
            shared: self.shared.clone(),
            tabs: self.tabs,
            state: self.link,
            roster,
        });
    }

    pub(super) fn tick(&mut self, now: f64) {
        self.broadcast(TabMessage::Heartbeat);
        let silent: Vec<TabId> = self
            .roster
            .iter()
            .filter(|(_, heard)| now - **heard > FORGET_MS)
            .map(|(tab, _)| *tab)
            .collect();
        for tab in &silent {
            self.roster.remove(tab);
        }
        match self.role {
            Role::Leader => {
                if let Some((_, since)) = &self.catching_up
                    && now - *since > SILENCE_MS
                {
                    // The previous leader died without a word: go on.
                    self.take_over(now);
                    return;
                }
                if self.catching_up.is_some() {
                    return;
                }
                // The numbering of every tab no longer known (silent, gone,
                // or forgotten while we caught up) goes once nothing of it
                // is pending.
                let numbered = self.shared.accepted.len();
                let unknown: Vec<TabId> = self
                    .shared
                    .accepted
                    .keys()
                    .filter(|tab| !self.roster.contains_key(tab))
                    .cloned()
                    .collect();
                for tab in &unknown {
                    self.forget(tab);
                }
                // Their channel references too.
                self.release_unknown();
                if self.shared.accepted.len() != numbered {
                    // Every replica forgets them too.
                    self.announce();
                }
                self.recount(now);
            }
            _ => {
                if let Lock::Busy(since) = self.lock
                    && now - since > SILENCE_MS
                {
                    // No leader answered: line up all the same (best effort).
                    self.request_lock();
                }
                if let Some((_, heard)) = &self.leader
                    && now - *heard > SILENCE_MS
                {
                    self.leader = None;
                    self.effects.push_back(Effect::StealLock);
                }
                if let (Some(version), None) = (self.foreign, &self.leader) {
                    self.go_alone(TabEvent::OtherWire { version });
                }
            }
        }
    }
}
