//! Channels' rules (issue 23, "The wrapper"): the subscription table, the
//! resubscribe with `since` after every reconnect, the filter by offset,
//! and publishes pending by id. Pure like the rest of the driver: calls and
//! server texts in, frames, events and publish answers out.
//!
//! # Subscriptions
//!
//! One entry per channel (one [`crate::Channel`] per channel per socket),
//! numbered by a serial so that a handle dropped and made again is another
//! subscription. Subscriptions belong to the connection (the server forgets
//! them when it ends, a resumed reliable session included), so each entry
//! is subscribed again every time new messages may go out on a connection
//! ([`Driver::ready`](super::Driver)), with `since` = the epoch and the last
//! offset delivered. A `subscribe` is never queued: the table is the queue,
//! and the next connection writes what it holds. An `unsubscribe` is
//! written only while connected (a connection that ends takes the server's
//! subscription with it).
//!
//! Each `subscribe` carries an id `s<serial>.<attempt>`; only the answer to
//! the latest attempt counts (in reliable mode a cut can leave an older
//! attempt in the session, resent after the resume: its answer is stale).
//! A `subscribed` of ours for a channel the table no longer has (its handle
//! was dropped while the `subscribe` was in flight) is undone with an
//! `unsubscribe`.
//!
//! # Each offset once, in order, or a gap
//!
//! Per subscription the table keeps the last offset delivered, and:
//!
//! * a `pub` at or below it is dropped (a replay, or a recovery that
//!   overlaps live delivery);
//! * the next offset is delivered;
//! * an offset beyond the next is dropped while the latest `subscribe` is
//!   unanswered (its recovery delivers it in order), and otherwise
//!   delivered after a [`ChannelEvent::Gap`] naming the hole: a server that
//!   skips without a `channel_gap` loses offsets all the same, never
//!   silently;
//! * `channel_gap` and a `subscribed` whose history was trimmed report their
//!   range (what was delivered already taken out) and move past it;
//! * a `subscribed` with another epoch (or `epoch_changed`) is a
//!   [`ChannelEvent::Reset`]: offsets start over from its `offset`;
//! * a `subscribed` that does not say it recovered, in the same epoch,
//!   cannot bring what lies between the last offset delivered and its
//!   `offset`: that is a gap.
//!
//! # Publishes
//!
//! Each publish gets an id of 128 random bits (given by the transport: the
//! driver draws no randomness for ids), which the server deduplicates per
//! channel. It is kept until `published` (or an `error` with its id)
//! answers it, and counts against the queue's limits meanwhile (the same
//! bound as [`Driver::send`](super::Driver::send)). Plain mode: every
//! pending publish is written again when the next connection is ready (a
//! repeat gets the first answer). Reliable mode: a written publish is the
//! session's to resend; it is written again only when the session could not
//! resume, and it is then taken out of what
//! [`Event::ResumeFailed`](crate::Event::ResumeFailed) hands back, since the
//! table retries it itself. A leader's driver shared across tabs writes its
//! channel frames unnumbered ([`Driver::unnumbered_channels`]), as in plain
//! mode.

use std::collections::VecDeque;

use shared::channel::{OffsetRange, RawJson, RecoveryFailure, StreamPosition};
use shared::{ClientMessage, ErrorCode, ServerMessage};

use super::Driver;
use super::reliable::Reliable;
use crate::channel::{
    ChannelError, ChannelEvent, ChannelNotice, Presence, PresenceError, PresenceStats,
    PublishError, SubscribeError,
};
use crate::message::{Event, Message, State};

/// Where a publish's outcome goes: the transport's resolver of its
/// [`crate::Publish`] (a one-shot channel's sender). The driver calls it
/// once, with the offset or why not; no application code runs there (it
/// wakes whoever awaits the `Publish`).
pub type PublishAnswer = Box<dyn FnOnce(Result<u64, PublishError>) + Send + Sync>;

/// Where a presence query's answer goes (issue 24), as [`PublishAnswer`]:
/// called once, with the answer or why not.
pub type QueryAnswer<T> = Box<dyn FnOnce(Result<T, PresenceError>) + Send + Sync>;

/// A presence query ([`Driver::query`]): which one, and where its answer goes.
#[non_exhaustive]
pub enum Query {
    /// `presence`: the members.
    Members(QueryAnswer<Presence>),
    /// `presence_stats`: how many.
    Stats(QueryAnswer<PresenceStats>),
}

/// What the table asks for.
#[derive(Default)]
pub(super) struct Out {
    /// Channel frames to write, in order (numbered in reliable mode).
    frames: Vec<String>,
    events: Vec<Event>,
    /// Publishes answered: where the outcome goes, and the outcome.
    done: Vec<(PublishAnswer, Result<u64, PublishError>)>,
    /// Presence queries to write, unnumbered in either mode.
    queries: Vec<String>,
    /// Presence queries answered.
    answered: Vec<Answered>,
}

/// A presence query's answer, and where it goes.
enum Answered {
    Members(QueryAnswer<Presence>, Result<Presence, PresenceError>),
    Stats(
        QueryAnswer<PresenceStats>,
        Result<PresenceStats, PresenceError>,
    ),
}

/// The table, behind a trait object: a driver that never subscribes nor
/// publishes (the console) has none, so none of its code is in that
/// application's build but the calls through this table.
pub(super) trait ChannelRules: Send + Sync {
    fn subscribe(
        &mut self,
        channel: &str,
        since: Option<StreamPosition>,
        out: &mut Out,
    ) -> Result<u64, SubscribeError>;
    fn unsubscribe(&mut self, channel: &str, subscription: u64, out: &mut Out);
    fn publish(
        &mut self,
        channel: &str,
        data: RawJson,
        id: u128,
        answer: PublishAnswer,
        out: &mut Out,
    ) -> u64;
    fn position(&self, channel: &str, subscription: u64) -> Option<StreamPosition>;
    /// Asks `query` about `channel`'s presence (now if live, else when ready).
    fn query(&mut self, channel: &str, query: Query, out: &mut Out);
    /// Subscription `subscription` follows its channel's presence: its
    /// members are asked for after each `subscribed` (now, if it is live).
    fn follow(&mut self, channel: &str, subscription: u64, out: &mut Out);
    /// A server text: whether it was the table's (then it is not delivered
    /// as a message).
    fn on_text(&mut self, text: &str, out: &mut Out) -> bool;
    /// New messages may go out on this connection.
    fn ready(&mut self, out: &mut Out);
    /// The connection ended; `reliable`: its written frames are the session's.
    fn closed(&mut self, reliable: bool);
    /// The session could not resume: the table's own frames are taken out of
    /// `unconfirmed` (it writes them again itself).
    fn session_lost(&mut self, unconfirmed: &mut Vec<String>);
    /// Messages and bytes held against the queue's limits.
    fn held(&self, reliable: bool) -> (usize, usize);
    /// Carries `out` out on `driver` (a method, so that its code is the
    /// table's: none in an application without channels).
    fn apply(&self, driver: &mut Driver, out: Out);
}

/// Where a subscription stands on the current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// To subscribe when the connection is ready.
    Idle,
    /// The latest `subscribe` is written, unanswered.
    Awaiting,
    /// Subscribed.
    Live,
    /// Refused or ended by the server: not subscribed again.
    Ended,
}

#[derive(Debug)]
struct Entry {
    serial: u64,
    attempt: u64,
    phase: Phase,
    /// The epoch and the last offset delivered.
    position: Option<StreamPosition>,
    /// [`crate::Channel::follow_presence`] was called: the members are asked
    /// for after each `subscribed`.
    follow: bool,
}

struct Pending {
    answer: PublishAnswer,
    id: String,
    frame: String,
    /// Written on the current connection (plain), or numbered in the
    /// session (reliable).
    written: bool,
}

/// A presence query awaiting its answer. Not the session's in reliable
/// mode (queries are never numbered): every connection that ends before
/// the answer leaves it to be written again.
struct Asked {
    /// Its id, `q<n>`.
    id: String,
    frame: String,
    query: Query,
    written: bool,
}

/// The subscriptions by channel name, ordered by name as a `BTreeMap`
/// would be (so a reconnect subscribes again in the same order), kept as
/// one sorted vector: an application holds a handful, and a `BTreeMap` of
/// its own cost about 4 KB of the console's wasm (as the tab coordinator's
/// `TabMap` found).
#[derive(Default)]
struct Entries(Vec<(String, Entry)>);

impl Entries {
    /// Where `channel` is, or where it would go.
    fn position(&self, channel: &str) -> Result<usize, usize> {
        self.0
            .binary_search_by(|(name, _)| name.as_str().cmp(channel))
    }

    fn get(&self, channel: &str) -> Option<&Entry> {
        self.position(channel).ok().map(|at| &self.0[at].1)
    }

    fn get_mut(&mut self, channel: &str) -> Option<&mut Entry> {
        self.position(channel).ok().map(|at| &mut self.0[at].1)
    }

    fn contains_key(&self, channel: &str) -> bool {
        self.position(channel).is_ok()
    }

    /// Adds `channel` (the caller checked that it is not there).
    fn insert(&mut self, channel: String, entry: Entry) {
        match self.position(&channel) {
            Ok(at) => self.0[at].1 = entry,
            Err(at) => self.0.insert(at, (channel, entry)),
        }
    }

    fn remove(&mut self, channel: &str) {
        if let Ok(at) = self.position(channel) {
            self.0.remove(at);
        }
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut Entry)> {
        self.0
            .iter_mut()
            .map(|(name, entry)| (name.as_str(), entry))
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        self.0.iter_mut().map(|(_, entry)| entry)
    }
}

#[derive(Default)]
pub(super) struct Table {
    entries: Entries,
    next_serial: u64,
    publishes: VecDeque<Pending>,
    next_ticket: u64,
    queries: VecDeque<Asked>,
    next_query: u64,
    /// New messages may go out on the current connection.
    live: bool,
}

/// What an answer's `id` says it answers.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Subscribe {
        serial: u64,
        attempt: u64,
    },
    Unsubscribe,
    /// A presence query (`q<n>`).
    Query,
    /// The presence query of a followed subscription (`f<serial>`).
    Follow {
        serial: u64,
    },
    Other,
    None,
}

fn answer_of(id: Option<&str>) -> Answer {
    let Some(id) = id else {
        return Answer::None;
    };
    if let Some(rest) = id.strip_prefix('s')
        && let Some((serial, attempt)) = rest.split_once('.')
        && let (Ok(serial), Ok(attempt)) = (serial.parse(), attempt.parse())
    {
        return Answer::Subscribe { serial, attempt };
    }
    let number = |prefix| id.strip_prefix(prefix).and_then(|s| s.parse::<u64>().ok());
    if number('u').is_some() {
        return Answer::Unsubscribe;
    }
    if number('q').is_some() {
        return Answer::Query;
    }
    if let Some(serial) = number('f') {
        return Answer::Follow { serial };
    }
    Answer::Other
}

impl Table {
    fn notice(channel: &str, subscription: u64, event: ChannelEvent) -> Event {
        Event::Channel(ChannelNotice::new(channel.to_owned(), subscription, event))
    }

    fn subscribe_frame(channel: &str, entry: &mut Entry) -> String {
        entry.attempt = entry.attempt.saturating_add(1);
        entry.phase = Phase::Awaiting;
        ClientMessage::Subscribe {
            channel: channel.to_owned(),
            since: entry.position.clone(),
            id: Some(format!("s{}.{}", entry.serial, entry.attempt)),
        }
        .to_json()
    }

    /// The presence query of followed subscription `serial`.
    fn follow_frame(channel: &str, serial: u64) -> String {
        ClientMessage::Presence {
            channel: channel.to_owned(),
            id: Some(format!("f{serial}")),
        }
        .to_json()
    }

    fn unsubscribe_frame(channel: &str, serial: u64) -> String {
        ClientMessage::Unsubscribe {
            channel: channel.to_owned(),
            id: Some(format!("u{serial}")),
        }
        .to_json()
    }

    fn on_pub(
        &mut self,
        channel: String,
        offset: u64,
        data: RawJson,
        info: Option<shared::channel::PublisherInfo>,
        out: &mut Out,
    ) {
        let Some(entry) = self.entries.get_mut(&channel) else {
            return;
        };
        let Some(position) = entry.position.as_mut() else {
            return;
        };
        if matches!(entry.phase, Phase::Ended | Phase::Idle) || offset <= position.offset {
            return;
        }
        let next = position.offset.saturating_add(1);
        if offset > next {
            if entry.phase == Phase::Awaiting {
                return;
            }
            let gap = ChannelEvent::Gap {
                from: next,
                to: offset - 1,
            };
            out.events.push(Self::notice(&channel, entry.serial, gap));
        }
        position.offset = offset;
        let event = ChannelEvent::Publication { offset, data, info };
        out.events.push(Self::notice(&channel, entry.serial, event));
    }

    fn on_gap(&mut self, channel: &str, from: u64, to: u64, out: &mut Out) {
        let Some(entry) = self.entries.get_mut(channel) else {
            return;
        };
        let Some(position) = entry.position.as_mut() else {
            return;
        };
        if entry.phase == Phase::Ended {
            return;
        }
        // Nothing lies past u64::MAX: once it was delivered, no gap is
        // left (saturating, `u64::MAX..=u64::MAX` was reported again).
        let Some(next) = position.offset.checked_add(1) else {
            return;
        };
        let from = from.max(next);
        if from <= to {
            position.offset = to;
            let gap = ChannelEvent::Gap { from, to };
            out.events.push(Self::notice(channel, entry.serial, gap));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_subscribed(
        &mut self,
        channel: String,
        epoch: String,
        offset: u64,
        recovered: Option<bool>,
        reason: Option<RecoveryFailure>,
        gap: Option<OffsetRange>,
        id: Option<&str>,
        out: &mut Out,
    ) {
        let answer = answer_of(id);
        let Some(entry) = self.entries.get_mut(&channel) else {
            // Ours, for a handle dropped meanwhile: undo it (while connected).
            if let Answer::Subscribe { serial, .. } = answer
                && self.live
            {
                out.frames.push(Self::unsubscribe_frame(&channel, serial));
            }
            return;
        };
        let serial = entry.serial;
        let ours = match answer {
            Answer::Subscribe { serial: s, attempt } => {
                if s != serial || attempt != entry.attempt || entry.phase != Phase::Awaiting {
                    return;
                }
                true
            }
            // The server's own: the epoch changed under a live subscription.
            Answer::None if entry.phase == Phase::Live => false,
            _ => return,
        };
        entry.phase = Phase::Live;
        if entry.follow {
            // Subscribed: the join and leave notices from here on come
            // after the answer, so the answer patched by them is exact.
            out.queries.push(Self::follow_frame(&channel, serial));
        }
        let notice = |event| Self::notice(&channel, serial, event);
        let fresh = StreamPosition { epoch, offset };
        let Some(position) = entry.position.as_mut() else {
            entry.position = Some(fresh);
            out.events
                .push(notice(ChannelEvent::Subscribed { recovered: false }));
            return;
        };
        if position.epoch != fresh.epoch || reason == Some(RecoveryFailure::EpochChanged) {
            *position = fresh;
            if ours {
                out.events
                    .push(notice(ChannelEvent::Subscribed { recovered: false }));
            }
            out.events.push(notice(ChannelEvent::Reset {
                reason: RecoveryFailure::EpochChanged,
            }));
            return;
        }
        let recovered = recovered == Some(true);
        if ours {
            out.events
                .push(notice(ChannelEvent::Subscribed { recovered }));
        }
        if recovered {
            return;
        }
        // What cannot come: the trimmed range, or (no recovery at all)
        // everything up to the subscription's start.
        let lost_to = gap.map_or(fresh.offset, |gap| gap.to);
        let from = gap
            .map_or(0, |gap| gap.from)
            .max(position.offset.saturating_add(1));
        if from <= lost_to {
            position.offset = lost_to;
            out.events
                .push(notice(ChannelEvent::Gap { from, to: lost_to }));
        }
    }

    fn on_unsubscribed(
        &mut self,
        channel: &str,
        reason: shared::channel::UnsubscribeReason,
        id: Option<&str>,
        out: &mut Out,
    ) {
        if answer_of(id) != Answer::None {
            // The answer to our own `unsubscribe`: its handle is gone.
            return;
        }
        let Some(entry) = self.entries.get_mut(channel) else {
            return;
        };
        if entry.phase != Phase::Ended {
            entry.phase = Phase::Ended;
            let event = ChannelEvent::Unsubscribed { reason };
            out.events.push(Self::notice(channel, entry.serial, event));
        }
    }

    fn on_published(&mut self, offset: u64, id: Option<&str>, out: &mut Out) {
        if let Some(at) = self
            .publishes
            .iter()
            .position(|p| Some(p.id.as_str()) == id)
            && let Some(pending) = self.publishes.remove(at)
        {
            out.done.push((pending.answer, Ok(offset)));
        }
    }

    /// An `error` about a channel message: whether it answered one of ours.
    fn on_error(
        &mut self,
        channel: &str,
        code: ErrorCode,
        message: String,
        id: Option<&str>,
        out: &mut Out,
    ) -> bool {
        if let Some(at) = self
            .publishes
            .iter()
            .position(|p| Some(p.id.as_str()) == id)
            && let Some(pending) = self.publishes.remove(at)
        {
            let refused = PublishError::Refused { code, message };
            out.done.push((pending.answer, Err(refused)));
            return true;
        }
        match answer_of(id) {
            Answer::Query => {
                if let Some(asked) = self.take_query(id) {
                    out.answered.push(asked.refused(code, message));
                }
                true
            }
            Answer::Follow { serial } => {
                if let Some(entry) = self.entries.get(channel)
                    && entry.serial == serial
                {
                    let event =
                        ChannelEvent::Error(ChannelError::PresenceRefused { code, message });
                    out.events.push(Self::notice(channel, serial, event));
                }
                true
            }
            Answer::Subscribe { serial, attempt } => {
                if let Some(entry) = self.entries.get_mut(channel)
                    && entry.serial == serial
                    && entry.attempt == attempt
                    && entry.phase == Phase::Awaiting
                {
                    entry.phase = Phase::Ended;
                    let event = ChannelEvent::Error(ChannelError::Refused { code, message });
                    out.events.push(Self::notice(channel, serial, event));
                }
                true
            }
            Answer::Unsubscribe => true,
            Answer::Other | Answer::None => false,
        }
    }
}

impl Asked {
    fn refused(self, code: ErrorCode, message: String) -> Answered {
        let refused = PresenceError::Refused { code, message };
        match self.query {
            Query::Members(answer) => Answered::Members(answer, Err(refused)),
            Query::Stats(answer) => Answered::Stats(answer, Err(refused)),
        }
    }
}

impl Table {
    /// The pending query with id `id`, taken out.
    fn take_query(&mut self, id: Option<&str>) -> Option<Asked> {
        let at = self
            .queries
            .iter()
            .position(|q| Some(q.id.as_str()) == id)?;
        self.queries.remove(at)
    }

    /// A `presence` answer: a query's, or a followed subscription's.
    fn on_presence(
        &mut self,
        channel: &str,
        presence: Presence,
        id: Option<&str>,
        out: &mut Out,
    ) -> bool {
        match answer_of(id) {
            Answer::Query => {
                match self.take_query(id) {
                    Some(Asked {
                        query: Query::Members(answer),
                        ..
                    }) => out.answered.push(Answered::Members(answer, Ok(presence))),
                    // A `presence_stats` id answered by a `presence`: not
                    // what was asked; the query stays unanswered.
                    Some(asked) => self.queries.push_front(asked),
                    None => {}
                }
                true
            }
            Answer::Follow { serial } => {
                if let Some(entry) = self.entries.get(channel)
                    && entry.serial == serial
                    && entry.phase != Phase::Ended
                {
                    let event = ChannelEvent::Presence(presence);
                    out.events.push(Self::notice(channel, serial, event));
                }
                true
            }
            // Not ours: the application's own query.
            _ => false,
        }
    }

    /// A `presence_stats` answer to one of our queries.
    fn on_presence_stats(&mut self, stats: PresenceStats, id: Option<&str>, out: &mut Out) -> bool {
        if answer_of(id) != Answer::Query {
            return false;
        }
        match self.take_query(id) {
            Some(Asked {
                query: Query::Stats(answer),
                ..
            }) => out.answered.push(Answered::Stats(answer, Ok(stats))),
            Some(asked) => self.queries.push_front(asked),
            None => {}
        }
        true
    }

    /// A `join` or `leave` for a subscription of ours.
    fn on_member(&mut self, channel: &str, event: ChannelEvent, out: &mut Out) {
        if let Some(entry) = self.entries.get(channel)
            && matches!(entry.phase, Phase::Awaiting | Phase::Live)
        {
            out.events.push(Self::notice(channel, entry.serial, event));
        }
    }
}

impl ChannelRules for Table {
    fn subscribe(
        &mut self,
        channel: &str,
        since: Option<StreamPosition>,
        out: &mut Out,
    ) -> Result<u64, SubscribeError> {
        if shared::channel::namespace_of(channel).is_none() {
            return Err(SubscribeError::BadChannel(channel.to_owned()));
        }
        if self.entries.contains_key(channel) {
            return Err(SubscribeError::AlreadySubscribed(channel.to_owned()));
        }
        self.next_serial += 1;
        let mut entry = Entry {
            serial: self.next_serial,
            attempt: 0,
            phase: Phase::Idle,
            position: since,
            follow: false,
        };
        if self.live {
            out.frames.push(Self::subscribe_frame(channel, &mut entry));
        }
        self.entries.insert(channel.to_owned(), entry);
        Ok(self.next_serial)
    }

    fn unsubscribe(&mut self, channel: &str, subscription: u64, out: &mut Out) {
        let Some(entry) = self.entries.get(channel) else {
            return;
        };
        if entry.serial != subscription {
            return;
        }
        let subscribed = matches!(entry.phase, Phase::Awaiting | Phase::Live);
        self.entries.remove(channel);
        if subscribed && self.live {
            out.frames
                .push(Self::unsubscribe_frame(channel, subscription));
        }
    }

    fn publish(
        &mut self,
        channel: &str,
        data: RawJson,
        id: u128,
        answer: PublishAnswer,
        out: &mut Out,
    ) -> u64 {
        self.next_ticket += 1;
        let id = format!("{id:032x}");
        let frame = ClientMessage::Publish {
            channel: channel.to_owned(),
            data,
            id: Some(id.clone()),
        }
        .to_json();
        if self.live {
            out.frames.push(frame.clone());
        }
        self.publishes.push_back(Pending {
            answer,
            id,
            frame,
            written: self.live,
        });
        self.next_ticket
    }

    fn query(&mut self, channel: &str, query: Query, out: &mut Out) {
        self.next_query += 1;
        let id = format!("q{}", self.next_query);
        let frame = match query {
            Query::Members(_) => ClientMessage::Presence {
                channel: channel.to_owned(),
                id: Some(id.clone()),
            },
            Query::Stats(_) => ClientMessage::PresenceStats {
                channel: channel.to_owned(),
                id: Some(id.clone()),
            },
        }
        .to_json();
        if self.live {
            out.queries.push(frame.clone());
        }
        self.queries.push_back(Asked {
            id,
            frame,
            query,
            written: self.live,
        });
    }

    fn follow(&mut self, channel: &str, subscription: u64, out: &mut Out) {
        if let Some(entry) = self.entries.get_mut(channel)
            && entry.serial == subscription
            && !entry.follow
        {
            entry.follow = true;
            if entry.phase == Phase::Live && self.live {
                out.queries.push(Self::follow_frame(channel, subscription));
            }
        }
    }

    fn position(&self, channel: &str, subscription: u64) -> Option<StreamPosition> {
        self.entries
            .get(channel)
            .filter(|entry| entry.serial == subscription)
            .and_then(|entry| entry.position.clone())
    }

    fn on_text(&mut self, text: &str, out: &mut Out) -> bool {
        if !looks_like_channel(text) {
            return false;
        }
        match ServerMessage::channel_if_any(text) {
            Some(ServerMessage::Pub {
                channel,
                offset,
                data,
                info,
            }) => self.on_pub(channel, offset, data, info, out),
            Some(ServerMessage::Subscribed {
                channel,
                epoch,
                offset,
                recovered,
                reason,
                gap,
                id,
            }) => self.on_subscribed(
                channel,
                epoch,
                offset,
                recovered,
                reason,
                gap,
                id.as_deref(),
                out,
            ),
            Some(ServerMessage::ChannelGap { channel, from, to }) => {
                self.on_gap(&channel, from, to, out);
            }
            Some(ServerMessage::Published { offset, id, .. }) => {
                self.on_published(offset, id.as_deref(), out);
            }
            Some(ServerMessage::Unsubscribed {
                channel,
                reason,
                id,
            }) => self.on_unsubscribed(&channel, reason, id.as_deref(), out),
            Some(ServerMessage::Error {
                code,
                message,
                channel: Some(channel),
                id,
            }) => return self.on_error(&channel, code, message, id.as_deref(), out),
            Some(ServerMessage::Presence {
                channel,
                clients,
                truncated,
                id,
            }) => {
                let presence = Presence {
                    members: clients,
                    truncated: truncated == Some(true),
                };
                return self.on_presence(&channel, presence, id.as_deref(), out);
            }
            Some(ServerMessage::PresenceStats {
                clients, users, id, ..
            }) => {
                let stats = PresenceStats { clients, users };
                return self.on_presence_stats(stats, id.as_deref(), out);
            }
            Some(ServerMessage::Join { channel, info }) => {
                self.on_member(&channel, ChannelEvent::Join(info), out);
            }
            Some(ServerMessage::Leave { channel, info }) => {
                self.on_member(&channel, ChannelEvent::Leave(info), out);
            }
            // Not a channel message after all (an `error` of another kind),
            // or one that does not decode: the application's.
            _ => return false,
        }
        true
    }

    fn ready(&mut self, out: &mut Out) {
        self.live = true;
        for (channel, entry) in self.entries.iter_mut() {
            if entry.phase == Phase::Idle {
                out.frames.push(Self::subscribe_frame(channel, entry));
            }
        }
        for pending in self.publishes.iter_mut().filter(|p| !p.written) {
            pending.written = true;
            out.frames.push(pending.frame.clone());
        }
        for asked in self.queries.iter_mut().filter(|q| !q.written) {
            asked.written = true;
            out.queries.push(asked.frame.clone());
        }
    }

    fn closed(&mut self, reliable: bool) {
        self.live = false;
        for entry in self.entries.values_mut() {
            if matches!(entry.phase, Phase::Awaiting | Phase::Live) {
                entry.phase = Phase::Idle;
            }
        }
        if !reliable {
            for pending in &mut self.publishes {
                pending.written = false;
            }
        }
        // Never the session's: an answer lost with the connection is asked again.
        for asked in &mut self.queries {
            asked.written = false;
        }
    }

    fn session_lost(&mut self, unconfirmed: &mut Vec<String>) {
        for pending in &mut self.publishes {
            pending.written = false;
        }
        unconfirmed.retain(|text| !is_own_frame(text));
    }

    fn apply(&self, driver: &mut Driver, out: Out) {
        for frame in out.frames {
            driver.write_channel(frame);
        }
        for query in out.queries {
            driver.write_query(query);
        }
        driver.events.extend(out.events);
        for (answer, result) in out.done {
            answer(result);
        }
        for answered in out.answered {
            match answered {
                Answered::Members(answer, result) => answer(result),
                Answered::Stats(answer, result) => answer(result),
            }
        }
    }

    fn held(&self, reliable: bool) -> (usize, usize) {
        let publishes = self
            .publishes
            .iter()
            .filter(|p| !(reliable && p.written))
            .map(|p| p.frame.len());
        let queries = self.queries.iter().map(|q| q.frame.len());
        publishes
            .chain(queries)
            .fold((0, 0), |(count, bytes), len| (count + 1, bytes + len))
    }
}

/// A cheap check before decoding: the server writes `type` first, and the
/// table's types are the channel types and `error`.
fn looks_like_channel(text: &str) -> bool {
    let Some(rest) = text.strip_prefix(r#"{"type":""#) else {
        return false;
    };
    shared::CHANNEL_TYPES
        .iter()
        .chain(&["error"])
        .any(|kind| rest.strip_prefix(kind).is_some_and(|r| r.starts_with('"')))
}

/// Whether `text` is a channel frame the table wrote: a `subscribe` or
/// `unsubscribe` with one of its ids, or a `publish` with an id (the table
/// gives every publish one, and writes each again after a lost session).
/// Read field by field (`shared::object`), not decoded as a whole
/// `ClientMessage`: serde's decoder of every client message weighed about
/// 21 KB gzip in the console's wasm, which has a size budget.
fn is_own_frame(text: &str) -> bool {
    let Ok(object) = shared::object::Object::parse(text) else {
        return false;
    };
    let (Ok(Some(kind)), Ok(id)) = (object.tag("type"), object.tag("id")) else {
        return false;
    };
    let id = id.as_deref();
    match &*kind {
        "subscribe" => matches!(answer_of(id), Answer::Subscribe { .. }),
        "unsubscribe" => answer_of(id) == Answer::Unsubscribe,
        "publish" => id.is_some_and(|id| id.len() == 32),
        _ => false,
    }
}

impl Driver {
    /// Makes the table on the first use: live if new messages may go out now.
    fn table(&mut self) {
        let live = self.writable_now()
            && !self.awaiting_welcome
            && self.reliable.as_ref().is_none_or(Reliable::ready);
        self.channels.get_or_insert_with(|| {
            Box::new(Table {
                live,
                ..Table::default()
            })
        });
    }

    /// Subscribes to `channel` (from `since`, when the application kept
    /// its position): the `subscribe` goes out now if the connection is
    /// ready, else when it is; after every reconnect it goes out again with
    /// the last position delivered. Returns the subscription's serial, which
    /// its [`Event::Channel`]s carry.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::BadChannel`] for a name the server would refuse,
    /// [`SubscribeError::AlreadySubscribed`] when the channel has a
    /// subscription already.
    pub fn subscribe(
        &mut self,
        channel: &str,
        since: Option<StreamPosition>,
    ) -> Result<u64, SubscribeError> {
        self.table();
        let result = self.with_table(|table, out| table.subscribe(channel, since, out));
        self.finish();
        result.unwrap_or(Ok(0))
    }

    /// Ends subscription `subscription` to `channel` (an `unsubscribe` if
    /// the server has it); nothing if it is not the current one.
    pub fn unsubscribe(&mut self, channel: &str, subscription: u64) {
        self.with_table(|table, out| table.unsubscribe(channel, subscription, out));
        self.finish();
    }

    /// Publishes `data` to `channel` with the idempotency key `id` (128
    /// random bits from the transport), now if the connection is ready,
    /// else when it is; `answer` gets its outcome (once). Returns the
    /// publish's number on this driver, from 1.
    ///
    /// # Errors
    ///
    /// [`PublishError::BadChannel`], [`PublishError::Closed`] after
    /// [`Driver::close`], [`PublishError::TooLarge`] and
    /// [`PublishError::QueueFull`] from the queue's limits, which pending
    /// publishes share with the queue.
    pub fn publish(
        &mut self,
        channel: &str,
        data: RawJson,
        id: u128,
        answer: PublishAnswer,
    ) -> Result<u64, PublishError> {
        if shared::channel::namespace_of(channel).is_none() {
            return Err(PublishError::BadChannel(channel.to_owned()));
        }
        if self.machine.state() == State::Closed {
            return Err(PublishError::Closed);
        }
        // The frame's size, within a few bytes (its id and envelope).
        let size = data.get().len() + channel.len() + 80;
        if self.config.queue_max_bytes.is_some_and(|max| size > max) {
            return Err(PublishError::TooLarge);
        }
        if !self.queue.has_room(size) {
            return Err(PublishError::QueueFull);
        }
        self.table();
        let ticket = self.with_table(|table, out| table.publish(channel, data, id, answer, out));
        self.finish();
        Ok(ticket.unwrap_or(0))
    }

    /// Asks the server `query` about `channel`'s presence: now if the
    /// connection is ready, else when it is, at the top level (never
    /// numbered, in reliable mode too), and again on the next connection
    /// if this one ends before the answer. Its answer goes where `query`
    /// says, once.
    ///
    /// # Errors
    ///
    /// [`PresenceError::Closed`] after [`Driver::close`],
    /// [`PresenceError::QueueFull`] from the queue's limits, which pending
    /// queries share with the queue.
    pub fn query(&mut self, channel: &str, query: Query) -> Result<(), PresenceError> {
        if self.machine.state() == State::Closed {
            return Err(PresenceError::Closed);
        }
        // The frame's size, within a few bytes.
        if !self.queue.has_room(channel.len() + 60) {
            return Err(PresenceError::QueueFull);
        }
        self.table();
        self.with_table(|table, out| table.query(channel, query, out));
        self.finish();
        Ok(())
    }

    /// Subscription `subscription` to `channel` follows the channel's
    /// presence ([`crate::Channel::follow_presence`]): its members are
    /// asked for now if it is live, and after each `subscribed` from now
    /// on, the answers coming as [`ChannelEvent::Presence`].
    pub fn follow_presence(&mut self, channel: &str, subscription: u64) {
        self.with_table(|table, out| table.follow(channel, subscription, out));
        self.finish();
    }

    /// Subscription `subscription` to `channel`'s epoch and last offset
    /// delivered.
    pub fn channel_position(&self, channel: &str, subscription: u64) -> Option<StreamPosition> {
        self.channels
            .as_ref()
            .and_then(|table| table.position(channel, subscription))
    }

    /// A server text the table may claim; whether it did.
    pub(super) fn channel_text(&mut self, text: &str) -> bool {
        self.with_table(|table, out| table.on_text(text, out))
            .unwrap_or(false)
    }

    /// New messages may go out: (re)subscribe, write pending publishes.
    pub(super) fn channels_ready(&mut self) {
        self.with_table(|table, out| table.ready(out));
    }

    /// The connection is no longer open.
    pub(super) fn channels_closed(&mut self) {
        let reliable = self.numbered_channels();
        if let Some(table) = self.channels.as_mut() {
            table.closed(reliable);
        }
    }

    /// Reliable mode: the session is lost; the table takes its frames out of
    /// `unconfirmed` and writes them again itself.
    pub(super) fn channels_session_lost(&mut self, unconfirmed: &mut Vec<String>) {
        if let Some(table) = self.channels.as_mut() {
            table.session_lost(unconfirmed);
        }
    }

    /// Pending publishes held against the queue's limits.
    pub(super) fn channels_held(&self) -> (usize, usize) {
        let reliable = self.numbered_channels();
        self.channels
            .as_ref()
            .map_or((0, 0), |table| table.held(reliable))
    }

    /// Runs `f` on the table, if there is one, and carries out what it
    /// asked for; then the queue's reservation follows the pending publishes.
    fn with_table<R>(&mut self, f: impl FnOnce(&mut dyn ChannelRules, &mut Out) -> R) -> Option<R> {
        let mut table = self.channels.take()?;
        let mut out = Out::default();
        let result = f(table.as_mut(), &mut out);
        table.apply(self, out);
        self.channels = Some(table);
        self.sync_reserved();
        Some(result)
    }

    /// Whether channel frames are numbered in a reliable session.
    fn numbered_channels(&self) -> bool {
        self.reliable.is_some() && !self.unnumbered_channels
    }

    /// Writes a presence query as it is: never numbered (the table asks
    /// again after a cut).
    fn write_query(&mut self, frame: String) {
        if self.writable_now() {
            self.write(Message::Text(frame), false);
        }
    }

    /// Writes a channel frame: in reliable mode numbered (the session keeps
    /// it); in plain mode as is, not handed back (the table keeps it).
    fn write_channel(&mut self, frame: String) {
        let frame = match self.reliable.as_mut() {
            Some(reliable) if !self.unnumbered_channels => reliable.number(frame),
            _ => frame,
        };
        if self.writable_now() {
            self.write(Message::Text(frame), false);
        }
    }
}

#[cfg(test)]
mod own_frames {
    use super::is_own_frame;

    #[test]
    fn only_the_table_s_own_frames_are_taken_back() {
        let publish = format!(
            r#"{{"type":"publish","channel":"chat:a","data":{{"x":1}},"id":"{:032x}"}}"#,
            5
        );
        for own in [
            r#"{"type":"subscribe","channel":"chat:a","id":"s1.2"}"#,
            r#"{"type":"subscribe","channel":"chat:a","since":{"epoch":"e","offset":3},"id":"s2.1"}"#,
            r#"{"type":"unsubscribe","channel":"chat:a","id":"u3"}"#,
            &publish,
        ] {
            assert!(is_own_frame(own), "{own}");
        }
        // The application's own texts go back to it, whatever they look like.
        for app in [
            r#"{"type":"publish","channel":"chat:a","data":1}"#,
            r#"{"type":"publish","channel":"chat:a","data":1,"id":"mine"}"#,
            r#"{"type":"subscribe","channel":"chat:a","id":"mine"}"#,
            r#"{"type":"subscribe","channel":"chat:a"}"#,
            r#"{"type":"echo","id":1,"body":"s1.2"}"#,
            r#"{"id":"s1.2"}"#,
            "hello",
            "",
        ] {
            assert!(!is_own_frame(app), "{app}");
        }
    }
}
