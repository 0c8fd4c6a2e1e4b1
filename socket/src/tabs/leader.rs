//! The leader's rules: taking the lead, accepting `(tab, n)` once and in
//! order, confirming, and what its socket reports.

use super::{
    Effect, Frame, LinkState, Pending, Refusal, Role, SocketCall, SocketReport, TabEvent, TabId,
    TabMessage, Tabs,
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
        // Believed epochs are below u64::MAX, so this always adds one; were
        // it not to, the epoch would stay (a tie, as two tabs stealing at once).
        self.epoch = self.epoch.checked_add(1).unwrap_or(self.epoch);
        match self.leader.take() {
            Some((old, _)) => self.catching_up = Some((old, now)),
            None => self.take_over(now),
        }
    }

    /// Leads from the replica: announce, open, hand our own messages over.
    pub(super) fn take_over(&mut self, now: f64) {
        self.catching_up = None;
        self.tabs = self.counted(now);
        self.link = LinkState::Connecting;
        // The new socket subscribes the replica's channels again; the
        // references of tabs gone meanwhile go first.
        self.channels_take_over();
        self.release_unknown();
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
            self.accept(self.me, n, frame);
        }
        self.channels_resend();
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
        if last.checked_add(1) != Some(n) {
            // Past a hole: the sender resends from the hole on our announcement.
            return;
        }
        if let Some(reason) = self.refusal(&tab, &frame) {
            // Its number is used, so the tab's next ones are not past a hole.
            self.shared.accepted.insert(tab, n);
            self.broadcast(TabMessage::Refused { tab, n, reason });
            self.refused(&tab, n, reason);
            return;
        }
        let pending = Pending { tab, n, frame };
        self.shared.accepted.insert(pending.tab, n);
        self.shared.pending.push_back(pending.clone());
        // Every replica holds it before the server can see it.
        self.broadcast(TabMessage::Accepted(pending.clone()));
        self.effects
            .push_back(Effect::DriveSocket(SocketCall::Send(pending.frame)));
    }

    /// Leader: why `tab`'s next message cannot be taken, if it cannot: a
    /// frame the mode cannot carry, or over the leader's bound per tab (its
    /// queue capacity and byte limit, counted on the tab's pending messages).
    fn refusal(&self, tab: &TabId, frame: &Frame) -> Option<Refusal> {
        if self.config.reliable && matches!(frame, Frame::Binary(_)) {
            return Some(Refusal::BinaryNotReliable);
        }
        let size = frame.len();
        if self.max_bytes.is_some_and(|max| size > max) {
            return Some(Refusal::TooLarge);
        }
        let (count, bytes) = self
            .shared
            .pending
            .iter()
            .filter(|p| p.tab == *tab)
            .fold((0usize, 0usize), |(count, bytes), p| {
                (count.saturating_add(1), bytes.saturating_add(p.frame.len()))
            });
        let full = count >= self.capacity
            || self
                .max_bytes
                .is_some_and(|max| bytes.saturating_add(size) > max);
        full.then_some(Refusal::QueueFull)
    }

    /// Leader: the oldest pending message is confirmed.
    pub(super) fn confirm_front(&mut self) -> bool {
        let Some(front) = self.shared.pending.pop_front() else {
            return false;
        };
        if self.config.reliable {
            self.shared.acked_seq = self.shared.acked_seq.saturating_add(1);
        }
        if front.tab == self.me {
            self.release_own(front.n);
        } else if !self.roster.contains_key(&front.tab) {
            // Its tab left: nothing of it will be resent.
            self.forget(&front.tab);
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
            self.outbox_bytes = self.outbox_bytes.saturating_sub(frame.len());
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
            SocketReport::Channel {
                channel,
                position,
                event,
            } => self.channel_report(channel, position, event),
            SocketReport::Published { id, result } => self.publish_report(id, result),
            SocketReport::Presence {
                tab,
                id,
                channel,
                result,
            } => self.presence_report(tab, id, channel, result),
            SocketReport::Seen { seq } => {
                if seq > self.shared.last_in {
                    self.shared.last_in = seq;
                    self.broadcast(TabMessage::Seen { seq });
                }
            }
        }
    }

    pub(super) fn as_leader(&mut self, from: TabId, body: TabMessage, now: f64) {
        if let Some((old, _)) = &self.catching_up {
            // Only the previous leader's last words count; the others'
            // sends come again on our announcement.
            if from == *old {
                match body {
                    TabMessage::Bye => self.take_over(now),
                    body => self.apply(body),
                }
            }
            return;
        }
        let known = self.roster.contains_key(&from);
        match body {
            TabMessage::Hello { config, next } => {
                if config != self.config {
                    self.broadcast(TabMessage::Mismatch {
                        tab: from,
                        leader: self.config.clone(),
                    });
                    return;
                }
                // A tab we never numbered (new, or forgotten while silent)
                // carries on from its oldest unconfirmed message.
                if self.accepted_of(&from) == 0
                    && let Some(last) = next.checked_sub(1).filter(|last| *last > 0)
                {
                    self.shared.accepted.insert(from, last);
                }
                self.members_changed(now);
                self.announce();
            }
            TabMessage::Leader {
                epoch, ref roster, ..
            } if self.epoch.checked_add(1) == Some(epoch)
                && self.believable(&from, epoch, roster) =>
            {
                // A tab stole the lock from us: step down, it carries on.
                self.role = Role::Follower;
                self.lock = super::Lock::Busy(now);
                self.effects
                    .push_back(Effect::DriveSocket(SocketCall::Release));
                self.as_follower(from, body, now);
            }
            // Sends only from tabs that said hello; one forgotten while
            // silent says it again, and resends on our announcement.
            TabMessage::Send { .. }
            | TabMessage::Heartbeat
            | TabMessage::Subscribe { .. }
            | TabMessage::Unsubscribe { .. }
            | TabMessage::Publish { .. }
            | TabMessage::Presence { .. }
                if !known =>
            {
                self.broadcast(TabMessage::Rejoin { tab: from });
            }
            TabMessage::Send { n, frame } => self.accept(from, n, frame),
            body @ (TabMessage::Subscribe { .. }
            | TabMessage::Unsubscribe { .. }
            | TabMessage::Publish { .. }
            | TabMessage::Presence { .. }) => self.channel_request(from, body),
            // Anything else is another tab's news (a claim we do not
            // believe included): only its sender's liveness counts.
            _ => {}
        }
    }
}
