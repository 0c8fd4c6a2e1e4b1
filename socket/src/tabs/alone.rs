//! Going alone: this tab stops sharing and runs a socket of its own, when
//! its config differs from the leader's, when the browser cannot share, or
//! when a tab of another build speaks another wire version on the channel.
//!
//! Another wire version: the builds cannot share a connection (nor, while
//! both ask for the lock of one name, wait for each other), so every tab of
//! this build goes alone, and the old tabs get the lock. The leader goes
//! first and keeps its socket as its own, with what it accepted of every
//! tab ([`TabMessage::Disband`]); a follower goes at that word, which comes
//! after every acceptance the leader broadcast (the channel has one
//! order), so that it hands its own socket exactly what the leader did not
//! take: nothing lost, nothing sent twice.

use super::{Effect, Frame, Role, TAB_PROTOCOL, TabEvent, TabMessage, Tabs};

impl Tabs {
    /// A post of another wire version was heard.
    pub(super) fn other_wire(&mut self, version: u64) {
        self.foreign = Some(version);
        let driving = self.role == Role::Leader && self.catching_up.is_none();
        if driving {
            self.broadcast(TabMessage::Disband {
                version: u64::from(TAB_PROTOCOL),
            });
        }
        if driving || self.leader.is_none() {
            self.go_alone(TabEvent::OtherWire { version });
        }
        // Else: at our leader's `Disband` (or its goodbye, or its silence).
    }

    /// Stops sharing: this tab runs a socket of its own ([`Effect::GoAlone`]).
    ///
    /// Its messages no leader accepted go to that socket. Those accepted
    /// and not confirmed are the leader's to send: a leader keeps its socket
    /// as its own, so they go out through it; with no leader to send them
    /// (a handoff under way), they come back as [`TabEvent::Unconfirmed`]
    /// (they may or may not have been sent).
    pub(super) fn go_alone(&mut self, why: TabEvent) {
        let driving = self.role == Role::Leader && self.catching_up.is_none();
        let unsent = self.take_unaccepted();
        let orphans: Vec<Frame> = if driving || self.leader.is_some() {
            Vec::new()
        } else {
            let accepted = self.accepted_of(&self.me);
            self.outbox
                .iter()
                .filter(|(n, _)| *n <= accepted)
                .map(|(_, frame)| frame.clone())
                .collect()
        };
        if why != TabEvent::Unsupported && !driving {
            self.broadcast(TabMessage::Bye);
        }
        self.effects.push_back(Effect::ReleaseLock);
        self.role = Role::Alone;
        self.leader = None;
        self.catching_up = None;
        self.outbox.clear();
        self.outbox_bytes = 0;
        self.channels_alone();
        self.deliver(why);
        if !orphans.is_empty() {
            self.deliver(TabEvent::Unconfirmed(orphans));
        }
        self.role_changed();
        self.effects.push_back(Effect::GoAlone { unsent });
    }
}
