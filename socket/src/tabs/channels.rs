//! Channels shared across tabs (issue 23): one server subscription per
//! channel for all tabs, publishes through the leader, each tab's own view
//! of each offset once.
//!
//! * **References.** The leader holds one server subscription per channel
//!   ([`SocketCall::Subscribe`] at the first tab, [`SocketCall::Unsubscribe`]
//!   when the last goes) and counts its tabs in [`Shared::channels`]
//!   ([`TabMessage::ChannelTabs`] keeps every replica's count). A tab's
//!   references go at its `Bye`, when it is forgotten ([`super::FORGET_MS`])
//!   or, on a new leader, when it is no longer known.
//! * **Delivery.** The leader's driver keeps the channel's rules (resubscribe
//!   with `since`, the filter by offset, gaps); the leader broadcasts what it
//!   delivers ([`TabMessage::ChannelSubscribed`], `ChannelPub`, `ChannelGap`,
//!   `ChannelReset`, `ChannelEnded`, `ChannelRefused`) and keeps the
//!   channel's position in the replica: every tab has delivered it, or will
//!   (the channel delivers in one order to every tab). Each tab keeps its own
//!   position per subscription and drops an offset at or below it, so its
//!   app sees each publication once, in offset order, or a
//!   [`ChannelEvent::Gap`] with the exact range it missed.
//! * **Joining a channel already subscribed.** The leader answers that tab
//!   alone (`ChannelSubscribed` with `to`) with the channel's position; a
//!   tab that asked `since` an older position hears a `Gap` up to it (or a
//!   `Reset` in another epoch): only the channel's first subscriber's
//!   `since` reaches the server.
//! * **Handoff.** A new leader opens its socket from the replica, which
//!   subscribes each channel again from its position; every tab resends its
//!   subscriptions (a reference the leader has is kept once), each from the
//!   tab's own position (so that a tab the leader forgot, and whose channel
//!   it unsubscribed meanwhile, is recovered from where it is, not handed a
//!   gap), and its unanswered publishes.
//! * **Publishes.** A tab keeps each publish until it is answered
//!   ([`TabMessage::Published`], [`TabMessage::PublishRefused`], sent to
//!   all and taken by the publisher) and resends it to each new leader: the
//!   id is the server's idempotency key, so it is published once.
//! * **Bounds.** The leader takes channel messages only from tabs that said
//!   hello, with a valid channel name and publish id, at most
//!   [`MAX_CHANNELS_PER_TAB`] channels and [`MAX_PUBLISHES_PER_TAB`]
//!   unanswered publishes per tab; anything else is ignored.
//! * **Not shared:** presence (queries, `follow_presence`, join and leave
//!   notices). A tab that goes alone ends its subscriptions
//!   ([`ChannelEvent::Unsubscribed`] with the reason `not_shared`) and
//!   publishes what is unanswered on its own socket, with the same ids.

use shared::ErrorCode;
use shared::channel::{RawJson, RecoveryFailure, StreamPosition, UnsubscribeReason};

use super::{Effect, Role, SharedChannel, SocketCall, TabEvent, TabId, TabMessage, Tabs};
use crate::channel::{ChannelError, ChannelEvent, PublishError, SubscribeError};

/// Channels one tab may hold at the leader.
pub const MAX_CHANNELS_PER_TAB: usize = 256;
/// Unanswered publishes one tab may have at the leader.
pub const MAX_PUBLISHES_PER_TAB: usize = 256;

/// One subscription of this tab's app.
#[derive(Debug)]
pub(super) struct LocalSub {
    channel: String,
    serial: u64,
    /// The epoch and the last offset delivered to the app (at first the
    /// app's `since`).
    position: Option<StreamPosition>,
    /// A `ChannelSubscribed` reached this tab: publications are delivered.
    started: bool,
    /// The server ended or refused it: nothing more is delivered.
    ended: bool,
}

/// One unanswered publish of this tab.
#[derive(Debug, Clone)]
pub(super) struct OwnPublish {
    id: String,
    channel: String,
    data: RawJson,
}

/// The channel state of a [`Tabs`].
#[derive(Debug, Default)]
pub(super) struct TabChannels {
    subs: Vec<LocalSub>,
    publishes: Vec<OwnPublish>,
    /// Leader: channels its driver subscribed (a `subscribed` came).
    live: Vec<String>,
    /// Leader: publishes handed to its driver, and whose.
    publishers: Vec<(String, TabId)>,
}

/// A publish id as the table writes it: 32 lowercase hex digits.
fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn valid_channel(channel: &str) -> bool {
    shared::channel::namespace_of(channel).is_some()
}

impl Tabs {
    /// Subscribes this tab's app to `channel` as subscription `serial`,
    /// from `since` if it kept a position.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::BadChannel`] for a name the server would refuse,
    /// [`SubscribeError::AlreadySubscribed`] when this tab holds one already
    /// (or [`MAX_CHANNELS_PER_TAB`]).
    pub fn subscribe(
        &mut self,
        channel: &str,
        serial: u64,
        since: Option<StreamPosition>,
    ) -> Result<(), SubscribeError> {
        if !valid_channel(channel) {
            return Err(SubscribeError::BadChannel(channel.to_owned()));
        }
        let subs = &self.channels.subs;
        if subs.len() >= MAX_CHANNELS_PER_TAB || subs.iter().any(|s| s.channel == channel) {
            return Err(SubscribeError::AlreadySubscribed(channel.to_owned()));
        }
        self.channels.subs.push(LocalSub {
            channel: channel.to_owned(),
            serial,
            position: since.clone(),
            started: false,
            ended: false,
        });
        self.request(TabMessage::Subscribe {
            channel: channel.to_owned(),
            since,
        });
        Ok(())
    }

    /// Ends this tab's subscription `serial` to `channel` (nothing if it is
    /// not the current one).
    pub fn unsubscribe(&mut self, channel: &str, serial: u64) {
        let subs = &mut self.channels.subs;
        let Some(at) = subs
            .iter()
            .position(|s| s.channel == channel && s.serial == serial)
        else {
            return;
        };
        subs.remove(at);
        self.request(TabMessage::Unsubscribe {
            channel: channel.to_owned(),
        });
    }

    /// Publishes `data` to `channel` with the idempotency key `id` (32 hex
    /// digits); the answer is a [`TabEvent::Published`].
    ///
    /// # Errors
    ///
    /// [`PublishError::BadChannel`], [`PublishError::Closed`] after
    /// [`Tabs::close`] or when alone, [`PublishError::QueueFull`] past
    /// [`MAX_PUBLISHES_PER_TAB`] unanswered.
    pub fn publish(
        &mut self,
        channel: &str,
        id: String,
        data: RawJson,
    ) -> Result<(), PublishError> {
        if !valid_channel(channel) {
            return Err(PublishError::BadChannel(channel.to_owned()));
        }
        if self.closed || self.role == Role::Alone {
            return Err(PublishError::Closed);
        }
        if self.channels.publishes.len() >= MAX_PUBLISHES_PER_TAB {
            return Err(PublishError::QueueFull);
        }
        let publish = OwnPublish {
            id,
            channel: channel.to_owned(),
            data,
        };
        self.channels.publishes.push(publish.clone());
        self.request(TabMessage::Publish {
            channel: publish.channel,
            id: publish.id,
            data: publish.data,
        });
        Ok(())
    }

    /// This tab's subscription `serial` to `channel`: its epoch and last
    /// offset delivered.
    pub fn channel_position(&self, channel: &str, serial: u64) -> Option<StreamPosition> {
        self.channels
            .subs
            .iter()
            .find(|s| s.channel == channel && s.serial == serial)
            .and_then(|s| s.position.clone())
    }

    /// A channel request of this tab: handled here when leading, forwarded
    /// to a known leader, else kept for the next one (every subscription
    /// and unanswered publish is sent to each new leader).
    fn request(&mut self, body: TabMessage) {
        match self.role {
            Role::Leader if self.catching_up.is_none() => self.channel_request(self.me, body),
            Role::Follower if self.leader.is_some() => self.broadcast(body),
            _ => {}
        }
    }

    /// Every subscription and unanswered publish of this tab, to a new
    /// leader (or, leading, to our own socket).
    pub(super) fn channels_resend(&mut self) {
        let mut bodies: Vec<TabMessage> = self
            .channels
            .subs
            .iter()
            .filter(|s| !s.ended)
            .map(|s| TabMessage::Subscribe {
                channel: s.channel.clone(),
                // Where this tab is: should the leader subscribe anew (this
                // tab was forgotten meanwhile), the server recovers from it.
                since: s.position.clone(),
            })
            .collect();
        bodies.extend(self.channels.publishes.iter().map(|p| TabMessage::Publish {
            channel: p.channel.clone(),
            id: p.id.clone(),
            data: p.data.clone(),
        }));
        for body in bodies {
            self.request(body);
        }
    }

    /// Leader: a new socket holds no subscription nor publish yet.
    pub(super) fn channels_take_over(&mut self) {
        self.channels.live.clear();
        self.channels.publishers.clear();
    }

    /// Leader: `tab`'s channel request (`tab` said hello, or is us).
    pub(super) fn channel_request(&mut self, tab: TabId, body: TabMessage) {
        match body {
            TabMessage::Subscribe { channel, since } => self.join(tab, channel, since),
            TabMessage::Unsubscribe { channel } => self.leave(tab, &channel),
            TabMessage::Publish { channel, id, data } => {
                let mine = self.channels.publishers.iter();
                let held = mine.clone().filter(|(_, t)| *t == tab).count();
                if !valid_channel(&channel)
                    || !valid_id(&id)
                    || held >= MAX_PUBLISHES_PER_TAB
                    || mine.clone().any(|(i, _)| *i == id)
                {
                    return;
                }
                self.channels.publishers.push((id.clone(), tab));
                self.effects
                    .push_back(Effect::DriveSocket(SocketCall::Publish {
                        channel,
                        id,
                        data,
                    }));
            }
            _ => {}
        }
    }

    fn join(&mut self, tab: TabId, channel: String, since: Option<StreamPosition>) {
        if !valid_channel(&channel) {
            return;
        }
        let held = self
            .shared
            .channels
            .iter()
            .filter(|c| c.tabs.contains(&tab))
            .count();
        let at = self
            .shared
            .channels
            .iter()
            .position(|c| c.channel == channel);
        let entry = match at {
            Some(at) => &mut self.shared.channels[at],
            None => {
                if held >= MAX_CHANNELS_PER_TAB {
                    return;
                }
                self.effects
                    .push_back(Effect::DriveSocket(SocketCall::Subscribe {
                        channel: channel.clone(),
                        since: since.clone(),
                    }));
                self.shared.channels.push(SharedChannel {
                    channel: channel.clone(),
                    tabs: Vec::new(),
                    position: since,
                });
                let last = self.shared.channels.len() - 1;
                &mut self.shared.channels[last]
            }
        };
        let Err(slot) = entry.tabs.binary_search(&tab) else {
            // A reference held already (a resend to a new leader).
            return;
        };
        if held >= MAX_CHANNELS_PER_TAB {
            return;
        }
        entry.tabs.insert(slot, tab);
        let tabs = entry.tabs.clone();
        let position = entry.position.clone();
        self.tell(TabMessage::ChannelTabs {
            channel: channel.clone(),
            tabs,
        });
        if self.channels.live.contains(&channel)
            && let Some(StreamPosition { epoch, offset }) = position
        {
            // Live already: this tab starts where the others are.
            self.tell(TabMessage::ChannelSubscribed {
                channel,
                to: Some(tab),
                epoch,
                offset,
                recovered: false,
            });
        }
    }

    /// Leader: `tab` lets go of `channel`.
    fn leave(&mut self, tab: TabId, channel: &str) {
        let Some(entry) = self
            .shared
            .channels
            .iter_mut()
            .find(|c| c.channel == channel)
        else {
            return;
        };
        let Ok(at) = entry.tabs.binary_search(&tab) else {
            return;
        };
        entry.tabs.remove(at);
        if entry.tabs.is_empty() {
            self.channels.live.retain(|c| c != channel);
            self.effects
                .push_back(Effect::DriveSocket(SocketCall::Unsubscribe {
                    channel: channel.to_owned(),
                }));
        }
        let tabs = entry.tabs.clone();
        self.tell(TabMessage::ChannelTabs {
            channel: channel.to_owned(),
            tabs,
        });
    }

    /// Leader: every reference of `tab` goes (its `Bye`, or it is forgotten).
    pub(super) fn release_channels(&mut self, tab: &TabId) {
        let held: Vec<String> = self
            .shared
            .channels
            .iter()
            .filter(|c| c.tabs.contains(tab))
            .map(|c| c.channel.clone())
            .collect();
        for channel in held {
            self.leave(*tab, &channel);
        }
    }

    /// Leader: the references of tabs no longer known (neither us nor in
    /// the roster) go.
    pub(super) fn release_unknown(&mut self) {
        let mut unknown: Vec<TabId> = Vec::new();
        for tab in self.shared.channels.iter().flat_map(|c| c.tabs.iter()) {
            if *tab != self.me && !self.roster.contains_key(tab) && !unknown.contains(tab) {
                unknown.push(*tab);
            }
        }
        for tab in &unknown {
            self.release_channels(tab);
        }
    }

    /// Leader: what the driver said of a channel, to every tab.
    pub(super) fn channel_report(
        &mut self,
        channel: String,
        position: Option<StreamPosition>,
        event: ChannelEvent,
    ) {
        if !self.shared.channels.iter().any(|c| c.channel == channel) {
            // Unsubscribed meanwhile.
            return;
        }
        let body = match event {
            ChannelEvent::Subscribed { recovered } => {
                let Some(StreamPosition { epoch, offset }) = position else {
                    return;
                };
                if !self.channels.live.contains(&channel) {
                    self.channels.live.push(channel.clone());
                }
                TabMessage::ChannelSubscribed {
                    channel,
                    to: None,
                    epoch,
                    offset,
                    recovered,
                }
            }
            ChannelEvent::Reset { .. } => {
                let Some(StreamPosition { epoch, offset }) = position else {
                    return;
                };
                TabMessage::ChannelReset {
                    channel,
                    epoch,
                    offset,
                }
            }
            ChannelEvent::Publication { offset, data, info } => TabMessage::ChannelPub {
                channel,
                offset,
                data,
                info,
            },
            ChannelEvent::Gap { from, to } => TabMessage::ChannelGap { channel, from, to },
            ChannelEvent::Unsubscribed { reason } => {
                self.channels.live.retain(|c| *c != channel);
                TabMessage::ChannelEnded { channel, reason }
            }
            ChannelEvent::Error(ChannelError::Refused { code, message }) => {
                self.channels.live.retain(|c| *c != channel);
                TabMessage::ChannelRefused {
                    channel,
                    code,
                    message,
                }
            }
            // Presence is not shared.
            _ => return,
        };
        self.tell(body);
    }

    /// Leader: the server answered publish `id`.
    pub(super) fn publish_report(&mut self, id: String, result: Result<u64, (ErrorCode, String)>) {
        let publishers = &mut self.channels.publishers;
        let Some(at) = publishers.iter().position(|(i, _)| *i == id) else {
            return;
        };
        let (_, tab) = publishers.remove(at);
        self.tell(match result {
            Ok(offset) => TabMessage::Published { tab, id, offset },
            Err((code, message)) => TabMessage::PublishRefused {
                tab,
                id,
                code,
                message,
            },
        });
    }

    /// Leader: apply to our own replica and app, and broadcast.
    fn tell(&mut self, body: TabMessage) {
        self.channel_news(&body);
        self.broadcast(body);
    }

    /// The current leader's channel news (its own, when leading): the
    /// replica follows, and this tab's app hears what concerns it. By
    /// reference: a leader broadcasts what it applies (a clone of every
    /// message weighed in the console's wasm).
    pub(super) fn channel_news(&mut self, body: &TabMessage) {
        self.replicate(body);
        match body {
            TabMessage::Published { tab, id, offset } if *tab == self.me => {
                self.answered(id, Ok(*offset));
            }
            TabMessage::PublishRefused {
                tab,
                id,
                code,
                message,
            } if *tab == self.me => {
                let refused = PublishError::Refused {
                    code: code.clone(),
                    message: message.clone(),
                };
                self.answered(id, Err(refused));
            }
            TabMessage::ChannelSubscribed {
                channel,
                to,
                epoch,
                offset,
                ..
            } if to.is_none_or(|to| to == self.me) => {
                let at = StreamPosition {
                    epoch: epoch.clone(),
                    offset: *offset,
                };
                self.for_sub(channel, |sub, out| sub.subscribed(at, out));
            }
            TabMessage::ChannelReset {
                channel,
                epoch,
                offset,
            } => self.for_sub(channel, |sub, out| {
                if sub.started && sub.position.as_ref().is_none_or(|p| p.epoch != *epoch) {
                    sub.position = Some(StreamPosition {
                        epoch: epoch.clone(),
                        offset: *offset,
                    });
                    out.push(ChannelEvent::Reset {
                        reason: RecoveryFailure::EpochChanged,
                    });
                }
            }),
            TabMessage::ChannelPub {
                channel,
                offset,
                data,
                info,
            } => self.for_sub(channel, |sub, out| {
                sub.publication(*offset, data, info.as_ref(), out);
            }),
            TabMessage::ChannelGap { channel, from, to } => {
                self.for_sub(channel, |sub, out| sub.gap(*from, *to, out));
            }
            TabMessage::ChannelEnded { channel, reason } => {
                self.for_sub(channel, |sub, out| {
                    sub.end(
                        ChannelEvent::Unsubscribed {
                            reason: reason.clone(),
                        },
                        out,
                    );
                });
            }
            TabMessage::ChannelRefused {
                channel,
                code,
                message,
            } => self.for_sub(channel, |sub, out| {
                let refused = ChannelError::Refused {
                    code: code.clone(),
                    message: message.clone(),
                };
                sub.end(ChannelEvent::Error(refused), out);
            }),
            _ => {}
        }
    }

    /// The replica of [`Shared::channels`] follows the leader's word.
    fn replicate(&mut self, body: &TabMessage) {
        let channels = &mut self.shared.channels;
        let find = |channels: &mut Vec<SharedChannel>, name: &str| {
            channels.iter().position(|c| c.channel == name)
        };
        match body {
            TabMessage::ChannelTabs { channel, tabs } => match find(channels, channel) {
                _ if tabs.is_empty() => channels.retain(|c| c.channel != *channel),
                Some(at) => channels[at].tabs.clone_from(tabs),
                None => channels.push(SharedChannel {
                    channel: channel.clone(),
                    tabs: tabs.clone(),
                    position: None,
                }),
            },
            TabMessage::ChannelSubscribed {
                channel,
                epoch,
                offset,
                ..
            }
            | TabMessage::ChannelReset {
                channel,
                epoch,
                offset,
            } => {
                if let Some(at) = find(channels, channel) {
                    channels[at].position = Some(StreamPosition {
                        epoch: epoch.clone(),
                        offset: *offset,
                    });
                }
            }
            TabMessage::ChannelPub {
                channel,
                offset: to,
                ..
            }
            | TabMessage::ChannelGap { channel, to, .. } => {
                if let Some(at) = find(channels, channel)
                    && let Some(position) = &mut channels[at].position
                {
                    position.offset = position.offset.max(*to);
                }
            }
            TabMessage::ChannelEnded { channel, .. }
            | TabMessage::ChannelRefused { channel, .. } => {
                channels.retain(|c| c.channel != *channel);
            }
            _ => {}
        }
    }

    /// This tab's publish `id` was answered (once: a repeat finds none).
    fn answered(&mut self, id: &str, result: Result<u64, PublishError>) {
        let publishes = &mut self.channels.publishes;
        if let Some(at) = publishes.iter().position(|p| p.id == id) {
            let publish = publishes.remove(at);
            self.deliver(TabEvent::Published {
                id: publish.id,
                result,
            });
        }
    }

    /// Runs `f` on this tab's subscription to `channel`, if any, and
    /// delivers the events it gives.
    fn for_sub(&mut self, channel: &str, f: impl FnOnce(&mut LocalSub, &mut Vec<ChannelEvent>)) {
        let Some(sub) = self.channels.subs.iter_mut().find(|s| s.channel == channel) else {
            return;
        };
        if sub.ended {
            return;
        }
        let mut events = Vec::new();
        f(sub, &mut events);
        let serial = sub.serial;
        for event in events {
            self.deliver(TabEvent::Channel {
                channel: channel.to_owned(),
                serial,
                event,
            });
        }
    }

    /// Going alone: the subscriptions end (never silently).
    pub(super) fn channels_alone(&mut self) {
        let subs = std::mem::take(&mut self.channels.subs);
        self.channels.publishes.clear();
        for sub in subs.into_iter().filter(|s| !s.ended) {
            self.deliver(TabEvent::Channel {
                channel: sub.channel,
                serial: sub.serial,
                event: ChannelEvent::Unsubscribed {
                    reason: UnsubscribeReason::Other("not_shared".to_owned()),
                },
            });
        }
    }
}

impl LocalSub {
    /// The channel is subscribed at `at` (the leader's last offset delivered).
    fn subscribed(&mut self, at: StreamPosition, out: &mut Vec<ChannelEvent>) {
        self.started = true;
        match &mut self.position {
            None => {
                self.position = Some(at);
                out.push(ChannelEvent::Subscribed { recovered: false });
            }
            Some(mine) if mine.epoch != at.epoch => {
                *mine = at;
                out.push(ChannelEvent::Subscribed { recovered: false });
                out.push(ChannelEvent::Reset {
                    reason: RecoveryFailure::EpochChanged,
                });
            }
            Some(mine) if mine.offset < at.offset => {
                // What lies between cannot come: the channel goes on from `at`.
                let from = mine.offset.saturating_add(1);
                let to = at.offset;
                mine.offset = to;
                out.push(ChannelEvent::Subscribed { recovered: false });
                out.push(ChannelEvent::Gap { from, to });
            }
            // Everything after our position follows (what we have is dropped).
            Some(_) => out.push(ChannelEvent::Subscribed { recovered: true }),
        }
    }

    fn publication(
        &mut self,
        offset: u64,
        data: &RawJson,
        info: Option<&shared::channel::PublisherInfo>,
        out: &mut Vec<ChannelEvent>,
    ) {
        let Some(position) = self.position.as_mut().filter(|_| self.started) else {
            return;
        };
        let Some(next) = position.offset.checked_add(1) else {
            return;
        };
        if offset < next {
            return;
        }
        if offset > next {
            out.push(ChannelEvent::Gap {
                from: next,
                to: offset - 1,
            });
        }
        position.offset = offset;
        out.push(ChannelEvent::Publication {
            offset,
            data: data.clone(),
            info: info.cloned(),
        });
    }

    fn gap(&mut self, from: u64, to: u64, out: &mut Vec<ChannelEvent>) {
        let Some(position) = self.position.as_mut().filter(|_| self.started) else {
            return;
        };
        // Nothing lies past u64::MAX.
        let Some(next) = position.offset.checked_add(1) else {
            return;
        };
        let from = from.max(next);
        if from <= to {
            position.offset = to;
            out.push(ChannelEvent::Gap { from, to });
        }
    }

    fn end(&mut self, event: ChannelEvent, out: &mut Vec<ChannelEvent>) {
        self.ended = true;
        self.started = false;
        out.push(event);
    }
}
