//! The leader's rules: taking the lead, accepting `(tab, n)` once and in
//! order, confirming, and what its socket reports.

use super::{
    Effect, Frame, LinkState, Pending, Role, SocketCall, SocketReport, TabEvent, TabId, TabMessage,
    Tabs,
};

impl Tabs {
    /// The lock is ours. If the previous leader has not said `Bye`, its
    /// last broadcasts may still be on their way (the lock's grant is not
    /// ordered with the channel): catch up on them first, until its `Bye`
    /// or [`super::SILENCE_MS`], so that no seq it used is used again.
    pub(super) fn lead(&mut self, now: f64) {
        if self.role == Role::Leader {
            return;
        }
        self.role = Role::Leader;
        self.epoch += 1;
        // Followers heartbeat on our announcement and are counted then.
        self.members.clear();
        match self.leader.take() {
            Some((old, _)) => self.catching_up = Some((old, now)),
            None => self.take_over(),
        }
    }

    /// Leads from the replica: announce, open, hand our own messages over.
    pub(super) fn take_over(&mut self) {
        self.catching_up = None;
        self.tabs = self.tabs_now();
        self.link = LinkState::Connecting;
        self.announce();
        self.effects
            .push_back(Effect::DriveSocket(SocketCall::Open {
                resume: Box::new(self.shared.clone()),
            }));
        let accepted = self.accepted_of(&self.me);
        let own: Vec<(u64, Frame)> = self
            .outbox
            .iter()
            .filter(|(n, _)| *n > accepted)
            .cloned()
            .collect();
        for (n, frame) in own {
            self.accept(self.me.clone(), n, frame);
        }
        self.role_changed();
    }

    /// Leader: `tab`'s message `n`.
    pub(super) fn accept(&mut self, tab: TabId, n: u64, frame: Frame) {
        let last = self.accepted_of(&tab);
        if n <= last {
            let pending = self.shared.pending.iter().any(|p| p.tab == tab && p.n == n);
            if !pending {
                // Confirmed before: say so again, so the sender releases it.
                self.broadcast(TabMessage::Confirmed { tab, n });
            }
            return;
        }
        if n != last + 1 {
            // Past a hole: the sender resends from the hole on our announcement.
            return;
        }
        let pending = Pending { tab, n, frame };
        self.shared.accepted.insert(pending.tab.clone(), n);
        self.shared.pending.push_back(pending.clone());
        // Every replica holds it before the server can see it.
        self.broadcast(TabMessage::Accepted(pending.clone()));
        self.effects
            .push_back(Effect::DriveSocket(SocketCall::Send(pending.frame)));
    }

    /// Leader: the oldest pending message is confirmed.
    pub(super) fn confirm_front(&mut self) -> bool {
        let Some(front) = self.shared.pending.pop_front() else {
            return false;
        };
        if self.config.reliable {
            self.shared.acked_seq += 1;
        }
        if front.tab == self.me {
            self.release_own(front.n);
        }
        self.broadcast(TabMessage::Confirmed {
            tab: front.tab,
            n: front.n,
        });
        true
    }

    pub(super) fn release_own(&mut self, upto: u64) {
        while let Some((n, frame)) = self.outbox.front() {
            if *n > upto {
                break;
            }
            self.outbox_bytes -= frame.len();
            self.outbox.pop_front();
        }
    }

    pub(super) fn socket(&mut self, report: SocketReport) {
        match report {
            SocketReport::Written => {
                if !self.config.reliable {
                    self.confirm_front();
                }
            }
            SocketReport::Acked { seq } => {
                while self.shared.acked_seq < seq && self.confirm_front() {}
            }
            SocketReport::Inbound { seq, frame } => {
                if self.inbound(seq, frame.clone()) {
                    self.broadcast(TabMessage::Inbound { seq, frame });
                }
            }
            SocketReport::Session(session) => {
                self.shared.session = Some(session.clone());
                self.broadcast(TabMessage::Session(session));
            }
            SocketReport::ResumeFailed {
                session,
                unconfirmed,
            } => {
                let body = TabMessage::ResumeFailed {
                    session,
                    unconfirmed,
                };
                self.broadcast(body.clone());
                self.apply(body);
            }
            SocketReport::State(state) => {
                self.link = state;
                self.broadcast(TabMessage::Status {
                    state,
                    tabs: self.tabs,
                });
                self.deliver(TabEvent::State(state));
            }
        }
    }

    pub(super) fn as_leader(&mut self, from: TabId, body: TabMessage, now: f64) {
        if let Some((old, _)) = &self.catching_up {
            // Only the previous leader's last words count; the others'
            // sends come again on our announcement.
            if from == *old {
                match body {
                    TabMessage::Bye => self.take_over(),
                    body => self.apply(body),
                }
            }
            return;
        }
        match body {
            TabMessage::Hello { config } => {
                if config != self.config {
                    self.broadcast(TabMessage::Mismatch {
                        tab: from,
                        leader: self.config.clone(),
                    });
                    return;
                }
                self.members.insert(from, now);
                self.members_changed();
                self.announce();
            }
            TabMessage::Bye => {
                let gone = self.members.remove(&from).is_some();
                if gone {
                    self.members_changed();
                }
            }
            TabMessage::Leader { epoch, .. } if epoch > self.epoch => {
                // A tab stole the lock from us: step down, it carries on.
                self.role = Role::Follower;
                self.lock = super::Lock::Busy(now);
                self.members.clear();
                self.effects
                    .push_back(Effect::DriveSocket(SocketCall::Release));
                self.as_follower(from, body, now);
            }
            body => {
                // Any other message says its sender is alive.
                let new = self.members.insert(from.clone(), now).is_none();
                if new {
                    self.members_changed();
                }
                if let TabMessage::Send { n, frame } = body {
                    self.accept(from, n, frame);
                }
            }
        }
    }
}
