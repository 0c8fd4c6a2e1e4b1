//! Channels shared across tabs (issue 23), and their presence (issue 24):
//! one server subscription per channel for all tabs, publishes and
//! presence queries through the leader, each tab's own view of each
//! offset once.
//!
//! * **References.** The leader holds one server subscription per channel
//!   ([`SocketCall::Subscribe`] at the first tab, [`SocketCall::Unsubscribe`]
//!   when the last goes) and counts its tabs in [`Shared::channels`]
//!   ([`TabMessage::ChannelTabs`] keeps every replica's count). A tab's
//!   references go at its `Bye`, when it is forgotten ([`super::FORGET_MS`])
//!   or, on a new leader, when it is no longer known.
//! * **Delivery.** The leader's driver keeps the channel's rules (resubscribe
//!   with `since`, the filter by offset, gaps); the leader broadcasts what it
//!   delivers as the server frame that says it ([`TabMessage::Server`]:
//!   `subscribed`, `pub`, `channel_gap`, `unsubscribed`, a channel `error`,
//!   `join`, `leave`; written in `frames.rs`), which every tab decodes with
//!   the driver's decoder of the channel protocol, and keeps the channel's
//!   position in the replica: every tab has delivered it, or will (the
//!   channel delivers in one order to every tab). A `subscribed` on the tab
//!   wire carries the leader's position (epoch and last offset delivered),
//!   not the stream's; one with `reason: epoch_changed` is the driver's
//!   [`ChannelEvent::Reset`]. Each tab keeps its own position per
//!   subscription and drops an offset at or below it, so its app sees each
//!   publication once, in offset order, or a [`ChannelEvent::Gap`] with the
//!   exact range it missed.
//! * **Joining a channel already subscribed.** The leader answers that tab
//!   alone (a `subscribed` to it) with the channel's position; a tab that
//!   asked `since` an older position hears a `Gap` up to it (or a `Reset`
//!   in another epoch): only the channel's first subscriber's `since`
//!   reaches the server.
//! * **Handoff.** A new leader opens its socket from the replica, which
//!   subscribes each channel again from its position; every tab resends its
//!   subscriptions (a reference the leader has is kept once), each from the
//!   tab's own position (so that a tab the leader forgot, and whose channel
//!   it unsubscribed meanwhile, is recovered from where it is, not handed a
//!   gap), its unanswered publishes and its unanswered presence queries.
//! * **Publishes.** A tab keeps each publish until it is answered (a
//!   `published`, or an `error` with its id, to that tab alone) and resends
//!   it to each new leader: the id is the server's idempotency key, so it is
//!   published once.
//! * **Presence** (issue 24: a browser's shared tabs are one connection, so
//!   one member). A tab's query ([`Tabs::presence`], [`TabMessage::Presence`]
//!   with the tab's own id) is asked by the leader on its connection
//!   ([`SocketCall::Query`]); the answer (`presence`, `presence_stats` or an
//!   `error` with that id) goes to that tab alone. `join` and `leave` reach
//!   every tab, each delivering them to its subscription if it has one. A
//!   subscription that follows presence ([`Tabs::follow_presence`]) asks
//!   for the members (id `f<serial>`) each time a `subscribed` reaches the
//!   tab: after every reconnect and leader change, the leader subscribes
//!   again and says so. The answer comes after that `subscribed` and every
//!   `join` or `leave` the server sent before it, and before those it sends
//!   after (one connection, one order, and the tab wire keeps it), so the
//!   set patched by them is exact, as for a socket of its own.
//! * **Bounds.** The leader takes channel messages only from tabs that said
//!   hello, with a valid channel name, publish id and query id, at most
//!   [`MAX_CHANNELS_PER_TAB`] channels, [`MAX_PUBLISHES_PER_TAB`]
//!   unanswered publishes and [`MAX_QUERIES_PER_TAB`] unanswered queries
//!   (plus one per subscription that follows presence) per tab; anything
//!   else is ignored. A frame that does not decode is ignored.
//! * A tab that goes alone ends its subscriptions
//!   ([`ChannelEvent::Unsubscribed`] with the reason `not_shared`), and
//!   publishes what is unanswered on its own socket, with the same ids, and
//!   asks its unanswered queries there (the runner does both).

use shared::channel::{RawJson, RecoveryFailure, StreamPosition, UnsubscribeReason};
use shared::{ErrorCode, ServerMessage};

use super::io::PresenceAnswer;
use super::{Effect, Role, SharedChannel, SocketCall, TabEvent, TabId, TabMessage, Tabs, frames};
use crate::channel::{
    ChannelError, ChannelEvent, Presence, PresenceError, PresenceStats, PublishError,
    SubscribeError,
};

/// Channels one tab may hold at the leader.
pub const MAX_CHANNELS_PER_TAB: usize = 256;
/// Unanswered publishes one tab may have at the leader.
pub const MAX_PUBLISHES_PER_TAB: usize = 256;
/// Unanswered presence queries one tab may have at the leader, besides one
/// per subscription that follows presence.
pub const MAX_QUERIES_PER_TAB: usize = 256;

/// One subscription of this tab's app.
#[derive(Debug)]
pub(super) struct LocalSub {
    channel: String,
    serial: u64,
    /// The epoch and the last offset delivered to the app (at first the
    /// app's `since`).
    position: Option<StreamPosition>,
    /// A `subscribed` reached this tab: publications are delivered.
    started: bool,
    /// The server ended or refused it: nothing more is delivered.
    ended: bool,
    /// [`Tabs::follow_presence`]: the members are asked for after each
    /// `subscribed`.
    follow: bool,
}

/// One unanswered publish of this tab.
#[derive(Debug, Clone)]
pub(super) struct OwnPublish {
    id: String,
    channel: String,
    data: RawJson,
}

/// One unanswered presence query of this tab: `q<n>` for the app's,
/// `f<serial>` for a subscription that follows presence.
#[derive(Debug, Clone)]
pub(super) struct OwnQuery {
    id: String,
    channel: String,
    stats: bool,
}

/// The channel state of a [`Tabs`].
#[derive(Debug, Default)]
pub(super) struct TabChannels {
    subs: Vec<LocalSub>,
    publishes: Vec<OwnPublish>,
    queries: Vec<OwnQuery>,
    /// The last query number given.
    next_query: u64,
    /// Leader: channels its driver subscribed (a `subscribed` came).
    live: Vec<String>,
    /// Leader: publishes handed to its driver: id, whose, which channel.
    publishers: Vec<(String, TabId, String)>,
    /// Leader: presence queries handed to its driver: whose, and its id.
    askers: Vec<(TabId, String)>,
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

/// A query id as a tab writes it (`q<n>`, `f<serial>`): at most 24 ASCII
/// letters, digits, `.` or `_`.
fn valid_query_id(id: &str) -> bool {
    (1..=24).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
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
            follow: false,
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
        // Its members are no longer wanted.
        let follow = format!("f{serial}");
        self.channels.queries.retain(|q| q.id != follow);
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

    /// Asks `channel`'s presence through the leader: its members, or with
    /// `stats` how many. Returns the query's id; the answer is a
    /// [`TabEvent::Presence`] with it (asked again of each new leader until
    /// then).
    ///
    /// # Errors
    ///
    /// [`PresenceError::Closed`] after [`Tabs::close`] or when alone,
    /// [`PresenceError::QueueFull`] past [`MAX_QUERIES_PER_TAB`]
    /// unanswered, [`PresenceError::Refused`] (`bad_channel`) for a name the
    /// server would refuse (the leader takes none).
    pub fn presence(&mut self, channel: &str, stats: bool) -> Result<String, PresenceError> {
        if self.closed || self.role == Role::Alone {
            return Err(PresenceError::Closed);
        }
        if !valid_channel(channel) {
            return Err(PresenceError::Refused {
                code: ErrorCode::BadChannel,
                message: "not a channel name".to_owned(),
            });
        }
        let asked = self.channels.queries.iter();
        if asked.filter(|q| q.id.starts_with('q')).count() >= MAX_QUERIES_PER_TAB {
            return Err(PresenceError::QueueFull);
        }
        self.channels.next_query = self.channels.next_query.saturating_add(1);
        let id = format!("q{}", self.channels.next_query);
        self.ask(OwnQuery {
            id: id.clone(),
            channel: channel.to_owned(),
            stats,
        });
        Ok(id)
    }

    /// This tab's subscription `serial` to `channel` follows the channel's
    /// presence: its members are asked for now if it is subscribed, and
    /// after each `subscribed` from now on, the answers coming as
    /// [`ChannelEvent::Presence`] (patched by the `Join`s and `Leave`s).
    pub fn follow_presence(&mut self, channel: &str, serial: u64) {
        let Some(sub) = self
            .channels
            .subs
            .iter_mut()
            .find(|s| s.channel == channel && s.serial == serial && !s.follow)
        else {
            return;
        };
        sub.follow = true;
        if sub.started && !sub.ended {
            self.ask_members(channel);
        }
    }

    /// The followed subscription to `channel` asks for its members, unless
    /// it has asked already (that answer comes after what made it ask).
    fn ask_members(&mut self, channel: &str) {
        let Some(sub) = self
            .channels
            .subs
            .iter()
            .find(|s| s.channel == channel && s.follow && s.started && !s.ended)
        else {
            return;
        };
        let id = format!("f{}", sub.serial);
        if !self.channels.queries.iter().any(|q| q.id == id) {
            self.ask(OwnQuery {
                id,
                channel: channel.to_owned(),
                stats: false,
            });
        }
    }

    fn ask(&mut self, query: OwnQuery) {
        self.channels.queries.push(query.clone());
        self.request(TabMessage::Presence {
            channel: query.channel,
            id: query.id,
            stats: query.stats,
        });
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
        bodies.extend(self.channels.queries.iter().map(|q| TabMessage::Presence {
            channel: q.channel.clone(),
            id: q.id.clone(),
            stats: q.stats,
        }));
        for body in bodies {
            self.request(body);
        }
    }

    /// Leader: a new socket holds no subscription nor publish yet.
    pub(super) fn channels_take_over(&mut self) {
        self.channels.live.clear();
        self.channels.publishers.clear();
        self.channels.askers.clear();
    }

    /// Leader: `tab`'s channel request (`tab` said hello, or is us).
    pub(super) fn channel_request(&mut self, tab: TabId, body: TabMessage) {
        match body {
            TabMessage::Subscribe { channel, since } => self.join(tab, channel, since),
            TabMessage::Unsubscribe { channel } => self.leave(tab, &channel),
            TabMessage::Publish { channel, id, data } => {
                let mine = self.channels.publishers.iter();
                let held = mine.clone().filter(|(_, t, _)| *t == tab).count();
                if !valid_channel(&channel)
                    || !valid_id(&id)
                    || held >= MAX_PUBLISHES_PER_TAB
                    || mine.clone().any(|(i, ..)| *i == id)
                {
                    return;
                }
                self.channels
                    .publishers
                    .push((id.clone(), tab, channel.clone()));
                self.effects
                    .push_back(Effect::DriveSocket(SocketCall::Publish {
                        channel,
                        id,
                        data,
                    }));
            }
            TabMessage::Presence { channel, id, stats } => {
                let askers = &self.channels.askers;
                let held = askers.iter().filter(|(t, _)| *t == tab).count();
                if !valid_channel(&channel)
                    || !valid_query_id(&id)
                    || held >= MAX_QUERIES_PER_TAB + MAX_CHANNELS_PER_TAB
                    || askers.iter().any(|(t, i)| *t == tab && *i == id)
                {
                    return;
                }
                self.channels.askers.push((tab, id.clone()));
                self.effects
                    .push_back(Effect::DriveSocket(SocketCall::Query {
                        tab,
                        id,
                        channel,
                        stats,
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
            && let Some(position) = position
            && let Some(frame) = frames::joined(&channel, &position)
        {
            // Live already: this tab starts where the others are.
            self.tell(TabMessage::Server {
                to: Some(tab),
                frame,
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
        self.channels.askers.retain(|(t, _)| t != tab);
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
        let live = &mut self.channels.live;
        match &event {
            ChannelEvent::Subscribed { .. } if !live.contains(&channel) => {
                live.push(channel.clone());
            }
            ChannelEvent::Unsubscribed { .. }
            | ChannelEvent::Error(ChannelError::Refused { .. }) => {
                live.retain(|c| *c != channel);
            }
            _ => {}
        }
        if let Some(frame) = frames::of_event(&channel, position.as_ref(), &event) {
            self.tell(TabMessage::Server { to: None, frame });
        }
    }

    /// Leader: the server answered publish `id`: to its tab.
    pub(super) fn publish_report(&mut self, id: String, result: Result<u64, (ErrorCode, String)>) {
        let publishers = &mut self.channels.publishers;
        let Some(at) = publishers.iter().position(|(i, ..)| *i == id) else {
            return;
        };
        let (_, tab, channel) = publishers.remove(at);
        let frame = match result {
            Ok(offset) => frames::published(&channel, &id, offset),
            Err((code, message)) => frames::refusal(&channel, &code, &message, Some(&id)),
        };
        if let Some(frame) = frame {
            self.tell(TabMessage::Server {
                to: Some(tab),
                frame,
            });
        }
    }

    /// Leader: the server answered `tab`'s presence query `id`: to that tab.
    pub(super) fn presence_report(
        &mut self,
        tab: TabId,
        id: String,
        channel: String,
        result: Result<PresenceAnswer, (ErrorCode, String)>,
    ) {
        let askers = &mut self.channels.askers;
        let Some(at) = askers.iter().position(|(t, i)| *t == tab && *i == id) else {
            return;
        };
        askers.remove(at);
        let frame = match result {
            Ok(PresenceAnswer::Members(members)) => frames::presence(&channel, &id, &members),
            Ok(PresenceAnswer::Stats(stats)) => frames::presence_stats(&channel, &id, stats),
            Err((code, message)) => frames::refusal(&channel, &code, &message, Some(&id)),
        };
        if let Some(frame) = frame {
            self.tell(TabMessage::Server {
                to: Some(tab),
                frame,
            });
        }
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
        match body {
            TabMessage::ChannelTabs { channel, tabs } => self.replicate_tabs(channel, tabs),
            TabMessage::Server { to, frame } => {
                if to.is_some_and(|to| to != self.me) {
                    return;
                }
                // A frame that does not decode is noise: ignored.
                if let Some(message) = ServerMessage::channel_if_any(frame.get()) {
                    if to.is_none() {
                        self.replicate(&message);
                    }
                    self.server_frame(message);
                }
            }
            _ => {}
        }
    }

    /// What a server frame from the leader says to this tab's app.
    fn server_frame(&mut self, message: ServerMessage) {
        let mut out = Vec::new();
        // The events of this tab's subscription to the frame's channel (one
        // lookup and one delivery for every kind: a closure per kind was
        // a copy of both per kind in the console's wasm).
        let channel = match message {
            ServerMessage::Subscribed {
                channel,
                epoch,
                offset,
                reason,
                ..
            } => {
                let at = StreamPosition { epoch, offset };
                let reset = reason == Some(RecoveryFailure::EpochChanged);
                if let Some(sub) = self.sub_mut(&channel) {
                    if reset {
                        sub.reset(at, &mut out);
                    } else {
                        sub.subscribed(at, &mut out);
                    }
                }
                self.emit(&channel, out);
                if !reset {
                    // Subscribed (again): the members are fetched anew.
                    self.ask_members(&channel);
                }
                return;
            }
            ServerMessage::Pub {
                channel,
                offset,
                data,
                info,
            } => {
                if let Some(sub) = self.sub_mut(&channel) {
                    sub.publication(offset, data, info, &mut out);
                }
                channel
            }
            ServerMessage::ChannelGap { channel, from, to } => {
                if let Some(sub) = self.sub_mut(&channel) {
                    sub.gap(from, to, &mut out);
                }
                channel
            }
            ServerMessage::Unsubscribed {
                channel, reason, ..
            } => {
                if let Some(sub) = self.sub_mut(&channel) {
                    sub.end(ChannelEvent::Unsubscribed { reason }, &mut out);
                }
                channel
            }
            ServerMessage::Error {
                code,
                message,
                channel: Some(channel),
                id: None,
            } => {
                if let Some(sub) = self.sub_mut(&channel) {
                    let refused = ChannelError::Refused { code, message };
                    sub.end(ChannelEvent::Error(refused), &mut out);
                }
                channel
            }
            ServerMessage::Join { channel, info } => {
                if self.sub_mut(&channel).is_some_and(|sub| sub.started) {
                    out.push(ChannelEvent::Join(info));
                }
                channel
            }
            ServerMessage::Leave { channel, info } => {
                if self.sub_mut(&channel).is_some_and(|sub| sub.started) {
                    out.push(ChannelEvent::Leave(info));
                }
                channel
            }
            ServerMessage::Error {
                code,
                message,
                id: Some(id),
                ..
            } => {
                if self.channels.publishes.iter().any(|p| p.id == id) {
                    self.answered(&id, Err(PublishError::Refused { code, message }));
                } else {
                    let refused = PresenceError::Refused { code, message };
                    self.query_answered(&id, Err(refused));
                }
                return;
            }
            ServerMessage::Published {
                offset,
                id: Some(id),
                ..
            } => return self.answered(&id, Ok(offset)),
            ServerMessage::Presence {
                clients,
                truncated,
                id: Some(id),
                ..
            } => {
                let presence = Presence {
                    members: clients,
                    truncated: truncated == Some(true),
                };
                return self.query_answered(&id, Ok(PresenceAnswer::Members(presence)));
            }
            ServerMessage::PresenceStats {
                clients,
                users,
                id: Some(id),
                ..
            } => {
                let stats = PresenceStats { clients, users };
                return self.query_answered(&id, Ok(PresenceAnswer::Stats(stats)));
            }
            _ => return,
        };
        self.emit(&channel, out);
    }

    /// This tab's query `id` was answered (once: a repeat finds none): a
    /// followed subscription's members, or the app's answer.
    fn query_answered(&mut self, id: &str, result: Result<PresenceAnswer, PresenceError>) {
        let queries = &mut self.channels.queries;
        let Some(at) = queries.iter().position(|q| q.id == id) else {
            return;
        };
        let query = &queries[at];
        if matches!(
            (&result, query.stats),
            (Ok(PresenceAnswer::Members(_)), true) | (Ok(PresenceAnswer::Stats(_)), false)
        ) {
            // Not what was asked: the query stays unanswered.
            return;
        }
        let query = queries.remove(at);
        let Some(serial) = query.id.strip_prefix('f') else {
            self.deliver(TabEvent::Presence {
                id: query.id,
                result,
            });
            return;
        };
        let serial = serial.parse::<u64>().ok();
        let event = match result {
            Ok(PresenceAnswer::Members(members)) => ChannelEvent::Presence(members),
            Err(PresenceError::Refused { code, message }) => {
                ChannelEvent::Error(ChannelError::PresenceRefused { code, message })
            }
            _ => return,
        };
        if self
            .sub_mut(&query.channel)
            .is_some_and(|sub| Some(sub.serial) == serial && sub.follow)
        {
            self.emit(&query.channel, vec![event]);
        }
    }

    /// The replica's references of `channel` follow the leader's word.
    fn replicate_tabs(&mut self, channel: &str, tabs: &[TabId]) {
        let channels = &mut self.shared.channels;
        match channels.iter().position(|c| c.channel == channel) {
            _ if tabs.is_empty() => channels.retain(|c| c.channel != channel),
            Some(at) => channels[at].tabs = tabs.to_vec(),
            None => channels.push(SharedChannel {
                channel: channel.to_owned(),
                tabs: tabs.to_vec(),
                position: None,
            }),
        }
    }

    /// The replica's positions follow what the leader delivered to all.
    fn replicate(&mut self, message: &ServerMessage) {
        let channels = &mut self.shared.channels;
        let find = |channels: &mut Vec<SharedChannel>, name: &str| {
            channels.iter().position(|c| c.channel == name)
        };
        match message {
            ServerMessage::Subscribed {
                channel,
                epoch,
                offset,
                ..
            } => {
                if let Some(at) = find(channels, channel) {
                    channels[at].position = Some(StreamPosition {
                        epoch: epoch.clone(),
                        offset: *offset,
                    });
                }
            }
            ServerMessage::Pub {
                channel,
                offset: to,
                ..
            }
            | ServerMessage::ChannelGap { channel, to, .. } => {
                if let Some(at) = find(channels, channel)
                    && let Some(position) = &mut channels[at].position
                {
                    position.offset = position.offset.max(*to);
                }
            }
            ServerMessage::Unsubscribed { channel, .. }
            | ServerMessage::Error {
                channel: Some(channel),
                id: None,
                ..
            } => {
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

    /// This tab's subscription to `channel`, unless it has none or it ended.
    fn sub_mut(&mut self, channel: &str) -> Option<&mut LocalSub> {
        self.channels
            .subs
            .iter_mut()
            .find(|s| s.channel == channel && !s.ended)
    }

    /// Delivers `events` of this tab's subscription to `channel`.
    fn emit(&mut self, channel: &str, events: Vec<ChannelEvent>) {
        let Some(serial) = self
            .channels
            .subs
            .iter()
            .find(|s| s.channel == channel)
            .map(|s| s.serial)
        else {
            return;
        };
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
        self.channels.queries.clear();
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
        data: RawJson,
        info: Option<shared::channel::PublisherInfo>,
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
        out.push(ChannelEvent::Publication { offset, data, info });
    }

    /// The channel's stream started again at `at` (another epoch).
    fn reset(&mut self, at: StreamPosition, out: &mut Vec<ChannelEvent>) {
        if self.started && self.position.as_ref().is_none_or(|p| p.epoch != at.epoch) {
            self.position = Some(at);
            out.push(ChannelEvent::Reset {
                reason: RecoveryFailure::EpochChanged,
            });
        }
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
