//! Sharing across tabs: the coordinator's words as the app's, and back.

use super::glue::Shared;
use crate::message::{DropReason, Event, Message, NotShared, State, TabRole};
use crate::tabs::{LinkState, Role, TabEvent};

pub(super) fn link_of(state: State) -> LinkState {
    match state {
        State::Open => LinkState::Open,
        State::Closed => LinkState::Closed,
        _ => LinkState::Connecting,
    }
}

pub(super) fn state_of(link: LinkState) -> State {
    match link {
        LinkState::Open => State::Open,
        LinkState::Closed => State::Closed,
        LinkState::Connecting => State::Connecting { attempt: 0 },
    }
}

pub(super) fn role_of(role: Role) -> TabRole {
    match role {
        Role::Leader => TabRole::Leader,
        Role::Follower => TabRole::Follower,
        Role::Alone => TabRole::Alone,
    }
}

impl Shared {
    /// The coordinator's deliveries as the app's events.
    pub(super) fn deliver(&self, event: TabEvent) {
        let event = match event {
            TabEvent::Message(frame) => Event::Message(frame.into()),
            TabEvent::Role { role, tabs } => Event::TabRole {
                role: role_of(role),
                tabs,
            },
            // The leader's app sees its driver's own, more precise, states.
            TabEvent::State(_) if self.leading() => return,
            // A follower hears the shared connection open as the leader's
            // app does: `Open` after the state (an app that waits for it
            // to enable its sends works unchanged in any tab).
            TabEvent::State(LinkState::Open) => {
                self.dispatcher
                    .emit([Event::StateChanged(State::Open), Event::Open]);
                return;
            }
            TabEvent::State(link) => Event::StateChanged(state_of(link)),
            TabEvent::Unconfirmed(frames) => Event::ResumeFailed {
                reason: shared::ResumeFailure::UnknownSession,
                unconfirmed: frames.into_iter().map(Message::from).collect(),
            },
            TabEvent::ConfigMismatch { leader } => Event::NotShared(NotShared::ConfigMismatch {
                leader_url: leader.url,
            }),
            TabEvent::Unsupported => Event::NotShared(NotShared::Unsupported),
            TabEvent::OtherWire { version } => Event::NotShared(NotShared::OtherWire { version }),
            TabEvent::Refused { frame, .. } => Event::Dropped {
                message: frame.into(),
                reason: DropReason::RefusedByLeader,
            },
        };
        self.dispatcher.emit([event]);
    }
}
