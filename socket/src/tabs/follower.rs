//! A follower's rules: following an announced leader, resending what it
//! has not accepted, keeping the replica of the shared state.

use super::{Frame, Refusal, TabEvent, TabId, TabMessage, Tabs};

impl Tabs {
    pub(super) fn as_follower(&mut self, from: TabId, body: TabMessage, now: f64) {
        let from_leader = self.leader.as_ref().is_some_and(|(id, _)| *id == from);
        if from_leader && let Some((_, heard)) = &mut self.leader {
            *heard = now;
        }
        match body {
            TabMessage::Leader {
                epoch,
                config,
                shared,
                tabs,
                state,
                roster,
            } => {
                if epoch < self.epoch
                    || (epoch == self.epoch && !from_leader && self.leader.is_some())
                {
                    return;
                }
                if config != self.config {
                    // Whoever it is, it holds a lock of our name for
                    // another connection: we cannot share it.
                    self.go_alone(TabEvent::ConfigMismatch { leader: config });
                    return;
                }
                // Going alone: no new leader is followed meanwhile.
                if self.foreign.is_some() || !self.believable(&from, epoch, &roster) {
                    return;
                }
                let changed = !from_leader || self.tabs != tabs;
                // Answered (or a new leader): a later `Rejoin` is heard again.
                self.rejoining = false;
                self.epoch = epoch;
                self.leader = Some((from, now));
                // The tabs it knows are known to us too (they may lead next).
                for tab in roster.into_iter().filter(|tab| *tab != self.me) {
                    self.roster.insert_if_absent(tab, now);
                }
                self.shared = shared;
                self.tabs = tabs;
                if self.link != state {
                    self.link = state;
                    self.deliver(TabEvent::State(state));
                }
                // Whatever the leader's state has not accepted of ours.
                let accepted = self.accepted_of(&self.me);
                let resend: Vec<(u64, Frame)> = self
                    .outbox
                    .iter()
                    .filter(|(n, _)| *n > accepted)
                    .cloned()
                    .collect();
                for (n, frame) in resend {
                    self.broadcast(TabMessage::Send { n, frame });
                }
                // And every subscription and unanswered publish of ours.
                self.channels_resend();
                self.broadcast(TabMessage::Heartbeat);
                // We hold the state now: we may line up to lead next.
                self.request_lock();
                if changed {
                    self.role_changed();
                }
            }
            // From our leader, or the answer to our hello from a leader of
            // another config (which holds the lock we would wait for).
            TabMessage::Mismatch { tab, leader }
                if tab == self.me && (from_leader || self.leader.is_none()) =>
            {
                self.go_alone(TabEvent::ConfigMismatch { leader });
            }
            // Our leader forgot us (we were silent too long): hello again;
            // its announcement then has us resend what it has not taken.
            TabMessage::Rejoin { tab } if from_leader && tab == self.me && !self.rejoining => {
                self.rejoining = true;
                self.hello();
            }
            // Our leader went alone, keeping what it accepted: so do we,
            // with the rest (its acceptances all came before this).
            TabMessage::Disband { .. } if from_leader => {
                let version = self.foreign.unwrap_or(0);
                self.go_alone(TabEvent::OtherWire { version });
            }
            TabMessage::Bye if from_leader => {
                self.leader = None;
                if let Some(version) = self.foreign {
                    self.go_alone(TabEvent::OtherWire { version });
                }
            }
            _ if !from_leader => {}
            body => self.apply(body),
        }
    }

    /// The leader's updates of the shared state, and its news.
    pub(super) fn apply(&mut self, body: TabMessage) {
        match body {
            // Idempotent: a late copy of an old leader's changes nothing.
            TabMessage::Accepted(pending) if pending.n > self.accepted_of(&pending.tab) => {
                self.shared.accepted.insert(pending.tab, pending.n);
                self.shared.pending.push_back(pending);
            }
            TabMessage::Confirmed { tab, n } => {
                if tab == self.me {
                    self.release_own(n);
                }
                let at = self
                    .shared
                    .pending
                    .iter()
                    .position(|p| p.tab == tab && p.n == n);
                if let Some(at) = at {
                    self.shared.pending.remove(at);
                    if self.config.reliable {
                        self.shared.acked_seq = self.shared.acked_seq.saturating_add(1);
                    }
                }
            }
            TabMessage::Refused { tab, n, reason }
                if self.accepted_of(&tab).checked_add(1) == Some(n) =>
            {
                self.shared.accepted.insert(tab, n);
                self.refused(&tab, n, reason);
            }
            TabMessage::Inbound { seq, frame } => {
                self.inbound(seq, frame);
            }
            TabMessage::Session(session) => self.shared.session = Some(session),
            TabMessage::ResumeFailed {
                session,
                unconfirmed,
            } => {
                let count = unconfirmed.min(self.shared.pending.len());
                let lost: Vec<_> = self.shared.pending.drain(..count).collect();
                self.shared.session = session;
                self.shared.acked_seq = 0;
                self.shared.last_in = 0;
                let mine: Vec<(u64, Frame)> = lost
                    .into_iter()
                    .filter(|p| p.tab == self.me)
                    .map(|p| (p.n, p.frame))
                    .collect();
                if !mine.is_empty() {
                    self.outbox
                        .retain(|(n, _)| !mine.iter().any(|(m, _)| m == n));
                    self.outbox_bytes = self.outbox.iter().map(|(_, f)| f.len()).sum();
                    let frames = mine.into_iter().map(|(_, frame)| frame).collect();
                    self.deliver(TabEvent::Unconfirmed(frames));
                }
            }
            TabMessage::Status { state, tabs } => {
                if self.link != state {
                    self.link = state;
                    self.deliver(TabEvent::State(state));
                }
                if self.tabs != tabs {
                    self.tabs = tabs;
                    self.role_changed();
                }
            }
            TabMessage::Seen { seq } => self.shared.last_in = self.shared.last_in.max(seq),
            body => self.channel_news(&body),
        }
    }

    /// `tab`'s message `n` was refused: if ours, it leaves the outbox and
    /// comes back to the application as an error.
    pub(super) fn refused(&mut self, tab: &TabId, n: u64, reason: Refusal) {
        if *tab != self.me {
            return;
        }
        let Some(at) = self.outbox.iter().position(|(m, _)| *m == n) else {
            return;
        };
        if let Some((_, frame)) = self.outbox.remove(at) {
            self.outbox_bytes = self.outbox_bytes.saturating_sub(frame.len());
            self.deliver(TabEvent::Refused { frame, reason });
        }
    }
}
