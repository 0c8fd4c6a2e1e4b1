//! What tabs say to each other over the `BroadcastChannel`: [`Envelope`]s
//! of [`TabMessage`]s, JSON, versioned ([`TAB_PROTOCOL`]).
//!
//! Every post is read with [`Envelope::from_json`], which tells three
//! things apart: an envelope of this version; a post of another wire
//! version ([`WireError::OtherVersion`]: a JSON object whose `v` is another
//! number, or one with `from` and `body` and no `v` at all, as a build
//! before the field would post), on which the tab goes alone; and anything
//! else ([`WireError::Malformed`]: not JSON, a field missing or out of
//! range), which is ignored. Version 1 (before issue 22) had no `Rejoin`,
//! `Refused`, `Disband`, roster nor `Hello::next`, and its tab ids were
//! strings: its tabs would take a v2 leader's refusals for silence, so the
//! two do not mix. Version 2 (before issue 23's shared channels) had no
//! channel messages and no [`Shared::channels`]: its tabs would take a v3
//! leader's announcement for malformed and its tabs' subscriptions would
//! go unanswered, so the two do not mix either (each goes alone). Version
//! 3 had eight channel messages of its own (`channel_pub`, `published`...)
//! where version 4 carries the server's frames ([`TabMessage::Server`])
//! and presence queries ([`TabMessage::Presence`]): a v3 tab would hear
//! no channel news from a v4 leader, so they do not mix either.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use shared::channel::{RawJson, StreamPosition};
use shared::object::{self, FieldError, Object};

use super::TabMap;
use crate::config::Config;
use crate::message::Message;

/// The version of the tab protocol; a tab that hears another one goes alone.
/// 3: channels shared across tabs (a v2 tab would take a v3 leader's
/// `Leader` for malformed, its `shared` having `channels`). 4: the
/// leader's channel news as the server's frames, and presence shared
/// (a v3 tab would ignore a v4 leader's channel news).
pub const TAB_PROTOCOL: u32 = 4;

/// Why a post is not an envelope of this version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A tab of another build: its wire version (0 for a post without one).
    #[error("a tab speaks tab wire version {version}, this one {TAB_PROTOCOL}")]
    OtherVersion {
        /// The version heard.
        version: u64,
    },
    /// Not an envelope at all, or one with a field missing or out of range.
    #[error("not a tab envelope")]
    Malformed,
}

/// Why the leader refused a follower's message (sent back to that tab,
/// never queued).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Refusal {
    /// The tab's accepted, unconfirmed messages fill the leader's bound
    /// per tab (its queue capacity or byte limit).
    #[error("the leader holds as many of this tab's messages as it takes")]
    QueueFull,
    /// Larger than the leader's byte limit.
    #[error("the message is larger than the leader's byte limit")]
    TooLarge,
    /// A binary frame in reliable mode (which numbers text only).
    #[error("reliable mode carries text only")]
    BinaryNotReliable,
}

/// A tab's id, random per tab (the glue draws it with [`tab_id_from`]);
/// also what `Socket::tab_id()` hands out for tagging requests. A number
/// on the wire too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TabId(pub u32);

/// A tab id from 64 random bits: nonzero, below 2^31 (so that an app may
/// put it in the high half of a `u64` request id and stay below 2^63).
pub fn tab_id_from(random: u64) -> u32 {
    // Below 2^31 by the mask; the `| 1` keeps it nonzero.
    u32::try_from((random ^ (random >> 32)) & 0x7fff_fffe).unwrap_or(2) | 1
}

/// A frame as the tabs carry it (a [`Message`] with a serde form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Frame {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
}

impl Frame {
    /// Its payload's size in bytes (as the queue's byte limit counts it).
    pub fn len(&self) -> usize {
        match self {
            Self::Text(text) => text.len(),
            Self::Binary(data) => data.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Message> for Frame {
    fn from(message: Message) -> Self {
        match message {
            Message::Text(text) => Self::Text(text),
            Message::Binary(data) => Self::Binary(data),
        }
    }
}

impl From<Frame> for Message {
    fn from(frame: Frame) -> Self {
        match frame {
            Frame::Text(text) => Self::Text(text),
            Frame::Binary(data) => Self::Binary(data),
        }
    }
}

/// What tabs sharing a name must agree on; the leader's governs, a tab whose
/// own differs keeps a socket of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TabConfig {
    /// The URL.
    pub url: String,
    /// Reliable mode.
    pub reliable: bool,
    /// Whether a token provider is set (a provider cannot be compared, nor
    /// sent: only its presence is checked).
    pub token: bool,
}

impl TabConfig {
    /// The fingerprint of `config`.
    pub fn of(config: &Config) -> Self {
        Self {
            url: config.url.clone(),
            reliable: config.reliable,
            token: config.token.is_some(),
        }
    }
}

/// The shared connection's state, as followers show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Connecting or reconnecting.
    Connecting,
    /// Open.
    Open,
    /// Closed for good.
    Closed,
}

/// A reliable session's credentials (from its `welcome`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The session id.
    pub id: String,
    /// Its resume token.
    pub token: String,
}

/// One message the leader accepted and the connection has not confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The tab that sent it.
    pub tab: TabId,
    /// Its number in that tab (from 1, without gaps).
    pub n: u64,
    /// The message.
    pub frame: Frame,
}

/// What a new leader needs to carry on the connection: every tab keeps a
/// replica, kept exact by the leader's broadcasts ([`TabMessage::Accepted`],
/// [`TabMessage::Confirmed`], [`TabMessage::Inbound`], [`TabMessage::Session`]).
///
/// In reliable mode the seq of `pending[i]` is `acked_seq + 1 + i`: the
/// leader hands messages to the socket in acceptance order and nothing else
/// is numbered, so a new leader resends them with the same seqs (the server
/// processes each seq once, so a message the old leader wrote is not
/// processed twice) and resumes from `last_in` (so no server message is
/// delivered twice).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shared {
    /// Reliable mode: the session to resume.
    pub session: Option<Session>,
    /// Reliable mode: client seqs the server acknowledged (the last one).
    pub acked_seq: u64,
    /// Reliable mode: the last server seq delivered to the tabs.
    pub last_in: u64,
    /// Accepted, unconfirmed, in acceptance order.
    pub pending: VecDeque<Pending>,
    /// The highest `n` accepted per tab: a resent `(tab, n)` at or below it
    /// is a duplicate. On the wire a list of `[tab, n]` pairs (a map's keys
    /// would be strings, which an internally tagged message cannot read
    /// back as numbers).
    #[serde(with = "pairs")]
    pub accepted: TabMap<u64>,
    /// The channels the leader holds one server subscription to, each for
    /// the tabs named (its references), with the position every tab has
    /// delivered or will deliver from the channel: a new leader subscribes
    /// again from there.
    pub channels: Vec<SharedChannel>,
}

/// One channel shared across tabs (see [`Shared::channels`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedChannel {
    /// Its name.
    pub channel: String,
    /// The tabs subscribed, sorted, each once (the references).
    pub tabs: Vec<TabId>,
    /// The epoch and the last offset the leader broadcast (or the `since`
    /// of the first subscriber, before the server answered).
    pub position: Option<StreamPosition>,
}

/// [`Shared::accepted`] as `[[tab, n], ...]`.
mod pairs {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{TabId, TabMap};

    pub(super) fn serialize<S: Serializer>(
        map: &TabMap<u64>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<TabMap<u64>, D::Error> {
        Ok(Vec::<(TabId, u64)>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

/// What one tab broadcasts (every tab of the name receives it, the sender
/// excepted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`TAB_PROTOCOL`].
    pub v: u32,
    /// The sender.
    pub from: TabId,
    /// The message.
    pub body: TabMessage,
}

/// The tab protocol's messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TabMessage {
    /// Any tab → all: I joined with this config (the leader answers with
    /// [`TabMessage::Leader`] or [`TabMessage::Mismatch`]).
    Hello {
        /// The sender's config.
        config: TabConfig,
        /// The sender's oldest unconfirmed `n` (its next one when it has
        /// none): a leader that forgot the tab takes up its numbering there.
        next: u64,
    },
    /// A tab leaves (its `close`, or the page going away).
    Bye,
    /// Leader → all: I lead (on taking the lock, and in answer to a
    /// `Hello`). Followers take `shared` as their replica and resend what it
    /// has not accepted of theirs.
    Leader {
        /// Grows with each new leader; older leaders' messages are ignored.
        epoch: u64,
        /// The config that governs.
        config: TabConfig,
        /// The full shared state.
        shared: Shared,
        /// Tabs attached, the leader included.
        tabs: usize,
        /// The connection's state.
        state: LinkState,
        /// The tabs the leader knows (said hello), itself included: a tab
        /// named here is heard by the leader, whatever the epoch it knew.
        roster: Vec<TabId>,
    },
    /// Leader → one tab: I do not know you (you never said hello, or were
    /// silent for [`super::FORGET_MS`]): say hello again, then resend.
    Rejoin {
        /// The tab.
        tab: TabId,
    },
    /// Leader → all: `tab`'s message `n` was refused, not queued; its number
    /// is used (the next is `n + 1`).
    Refused {
        /// Whose.
        tab: TabId,
        /// Which.
        n: u64,
        /// Why.
        reason: Refusal,
    },
    /// Leader → all: a tab of another wire version is on the channel; I go
    /// alone and keep the socket, with every message I accepted (they go
    /// out through it). Followers go alone too, each with what I did not take.
    Disband {
        /// The wire version of the leader (always this one's).
        version: u64,
    },
    /// Leader → one tab: your config differs from mine; keep your own socket.
    Mismatch {
        /// The tab whose config differs.
        tab: TabId,
        /// The leader's config.
        leader: TabConfig,
    },
    /// Follower → leader: send this (the sender's `n`-th message).
    Send {
        /// Its number in the sender's tab.
        n: u64,
        /// The message.
        frame: Frame,
    },
    /// Leader → all: accepted (sent before it goes to the socket, so every
    /// replica holds it before the server can see it).
    Accepted(Pending),
    /// Leader → all: `tab`'s message `n` and all before it are confirmed
    /// (written, or in reliable mode acknowledged by the server).
    Confirmed {
        /// Whose.
        tab: TabId,
        /// Up to which.
        n: u64,
    },
    /// Leader → all: a message from the server, for every tab.
    Inbound {
        /// Reliable mode: its server seq.
        seq: Option<u64>,
        /// The message.
        frame: Frame,
    },
    /// Leader → all: the reliable session's credentials (a new session).
    Session(Session),
    /// Leader → all: the session could not be resumed; the first
    /// `unconfirmed` pending messages are handed back to their tabs, the
    /// others go out in the new session (numbered from 1).
    ResumeFailed {
        /// The new session, if named.
        session: Option<Session>,
        /// How many pending messages are handed back.
        unconfirmed: usize,
    },
    /// Leader → all: the connection's state, and how many tabs share it.
    Status {
        /// The connection's state.
        state: LinkState,
        /// Tabs attached, the leader included.
        tabs: usize,
    },
    /// Any tab → all: I am alive (the leader judges followers by it, and
    /// followers the leader).
    Heartbeat,
    /// Any tab → leader: subscribe me to `channel` (from `since`, if the
    /// leader holds no subscription to it yet).
    Subscribe {
        /// The channel.
        channel: String,
        /// Where the tab's app left off, if it said.
        since: Option<StreamPosition>,
    },
    /// Any tab → leader: I no longer subscribe to `channel`.
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// Any tab → leader: publish (`id`, 32 hex digits, is the idempotency
    /// key: the same publish resent to the next leader is published once).
    Publish {
        /// The channel.
        channel: String,
        /// The publish id.
        id: String,
        /// What to publish.
        data: RawJson,
    },
    /// Any tab → leader: ask the server about `channel`'s presence
    /// (issue 24): its members, or with `stats` how many. `id` is the
    /// asking tab's own (at most 24 ASCII letters, digits, `.` or `_`); the
    /// answer goes back to that tab alone, as a [`TabMessage::Server`]
    /// frame with that id.
    Presence {
        /// The channel.
        channel: String,
        /// The asking tab's id of the query.
        id: String,
        /// `presence_stats` rather than `presence`.
        stats: bool,
    },
    /// Leader → all: the tabs subscribed to `channel` (the references the
    /// replicas keep); none: the leader unsubscribed it.
    ChannelTabs {
        /// The channel.
        channel: String,
        /// The tabs, sorted.
        tabs: Vec<TabId>,
    },
    /// Leader → all: reliable mode, the server's messages up to `seq` were
    /// handled (channel answers, which no tab delivers): a new leader
    /// resumes after it, so that the server, which keeps no message acked,
    /// replays no hole.
    Seen {
        /// The last server seq handled.
        seq: u64,
    },
    /// Leader → all (or one tab, `to`): what its connection said of a
    /// channel, as a server frame of the channel protocol (`pub`,
    /// `channel_gap`, `subscribed`, `unsubscribed`, `published`,
    /// `presence`, `presence_stats`, `join`, `leave`, a channel `error`),
    /// which each tab reads with the decoder its driver has anyway
    /// (`shared::ServerMessage::channel_if_any`) instead of a message type
    /// of the tab wire's own per event. Written by the leader from what its
    /// driver delivered (so after the driver's filter), byte for byte as a
    /// server writes it, with one difference: a `subscribed` carries the
    /// leader's position (the epoch and the last offset delivered), not the
    /// stream's, since that is where every tab's delivery goes on from.
    /// See `channels.rs` for what each frame means to a tab.
    Server {
        /// Only this tab (an answer to its publish or query, its join of a
        /// channel already subscribed); `None`: every tab.
        to: Option<TabId>,
        /// The frame.
        frame: RawJson,
    },
}

impl Envelope {
    /// The JSON to post: written by hand, byte for byte what serde's derive
    /// writes (the tests compare them on every message), without its
    /// serializer instantiated for every type of the wire.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(128);
        out.push_str("{\"v\":");
        number(&mut out, u64::from(self.v));
        out.push_str(",\"from\":");
        number(&mut out, u64::from(self.from.0));
        out.push_str(",\"body\":");
        write_message(&mut out, &self.body);
        out.push('}');
        out
    }

    /// Parses a posted envelope.
    ///
    /// Decoded by hand, type first ([`shared::object::Object`]): serde's
    /// derive buffers an internally tagged enum into a tree of its own
    /// first, which was the largest part of the tab code in the console's
    /// wasm. It reads what the derived decoder reads, to the same message
    /// (the derived `Deserialize` is kept as the reference the tests
    /// compare it with); what it refuses more is noise no build posts (a
    /// JSON array as an object, a unit variant written as `{"open":null}`).
    ///
    /// # Errors
    ///
    /// [`WireError::OtherVersion`] for a post of another wire version (a
    /// JSON object with another numeric `v`, or with `from` and `body` and
    /// no `v`), [`WireError::Malformed`] for anything else that is not an
    /// envelope of this version.
    pub fn from_json(text: &str) -> Result<Self, WireError> {
        let object = Object::parse(text).map_err(|_| WireError::Malformed)?;
        match version(&object) {
            Ok(version) if version == u64::from(TAB_PROTOCOL) => {}
            Ok(version) => return Err(WireError::OtherVersion { version }),
            Err(Bad) => return Err(WireError::Malformed),
        }
        envelope(&object).map_err(|Bad| WireError::Malformed)
    }
}

/// Every number of the wire is written as a `u64` (one formatting path for
/// all of them: a generic one was instantiated per integer type).
fn number(out: &mut String, n: u64) {
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    let _ = write!(out, "{n}");
}

/// A count (`usize`) as [`number`] writes it.
fn count(out: &mut String, n: usize) {
    // usize is at most 64 bits on every target Rust supports.
    number(out, n as u64);
}

/// `,"name":` (the first field of an object follows its `type` or `kind`).
fn key(out: &mut String, name: &str) {
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":");
}

fn write_message(out: &mut String, message: &TabMessage) {
    let ty = match message {
        TabMessage::Hello { .. } => "hello",
        TabMessage::Bye => "bye",
        TabMessage::Leader { .. } => "leader",
        TabMessage::Rejoin { .. } => "rejoin",
        TabMessage::Refused { .. } => "refused",
        TabMessage::Disband { .. } => "disband",
        TabMessage::Mismatch { .. } => "mismatch",
        TabMessage::Send { .. } => "send",
        TabMessage::Accepted(_) => "accepted",
        TabMessage::Confirmed { .. } => "confirmed",
        TabMessage::Inbound { .. } => "inbound",
        TabMessage::Session(_) => "session",
        TabMessage::ResumeFailed { .. } => "resume_failed",
        TabMessage::Status { .. } => "status",
        TabMessage::Heartbeat => "heartbeat",
        TabMessage::Subscribe { .. } => "subscribe",
        TabMessage::Unsubscribe { .. } => "unsubscribe",
        TabMessage::Publish { .. } => "publish",
        TabMessage::Presence { .. } => "presence",
        TabMessage::ChannelTabs { .. } => "channel_tabs",
        TabMessage::Seen { .. } => "seen",
        TabMessage::Server { .. } => "server",
    };
    out.push_str("{\"type\":\"");
    out.push_str(ty);
    out.push('"');
    match message {
        TabMessage::Hello { config, next } => {
            key(out, "config");
            write_config(out, config);
            key(out, "next");
            number(out, *next);
        }
        TabMessage::Bye | TabMessage::Heartbeat => {}
        TabMessage::Leader {
            epoch,
            config,
            shared,
            tabs,
            state,
            roster,
        } => {
            key(out, "epoch");
            number(out, *epoch);
            key(out, "config");
            write_config(out, config);
            key(out, "shared");
            write_shared(out, shared);
            key(out, "tabs");
            count(out, *tabs);
            key(out, "state");
            write_state(out, *state);
            key(out, "roster");
            out.push('[');
            for (i, tab) in roster.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                number(out, u64::from(tab.0));
            }
            out.push(']');
        }
        TabMessage::Rejoin { tab } => {
            key(out, "tab");
            number(out, u64::from(tab.0));
        }
        TabMessage::Refused { tab, n, reason } => {
            key(out, "tab");
            number(out, u64::from(tab.0));
            key(out, "n");
            number(out, *n);
            key(out, "reason");
            out.push_str(match reason {
                Refusal::QueueFull => "\"queue_full\"",
                Refusal::TooLarge => "\"too_large\"",
                Refusal::BinaryNotReliable => "\"binary_not_reliable\"",
            });
        }
        TabMessage::Disband { version } => {
            key(out, "version");
            number(out, *version);
        }
        TabMessage::Mismatch { tab, leader } => {
            key(out, "tab");
            number(out, u64::from(tab.0));
            key(out, "leader");
            write_config(out, leader);
        }
        TabMessage::Send { n, frame } => {
            key(out, "n");
            number(out, *n);
            key(out, "frame");
            write_frame(out, frame);
        }
        TabMessage::Accepted(pending) => write_pending_fields(out, pending, false),
        TabMessage::Confirmed { tab, n } => {
            key(out, "tab");
            number(out, u64::from(tab.0));
            key(out, "n");
            number(out, *n);
        }
        TabMessage::Inbound { seq, frame } => {
            key(out, "seq");
            match seq {
                Some(seq) => number(out, *seq),
                None => out.push_str("null"),
            }
            key(out, "frame");
            write_frame(out, frame);
        }
        TabMessage::Session(session) => write_session_fields(out, session),
        TabMessage::ResumeFailed {
            session,
            unconfirmed,
        } => {
            key(out, "session");
            write_optional_session(out, session.as_ref());
            key(out, "unconfirmed");
            count(out, *unconfirmed);
        }
        TabMessage::Status { state, tabs } => {
            key(out, "state");
            write_state(out, *state);
            key(out, "tabs");
            count(out, *tabs);
        }
        message => write_channel_message(out, message),
    }
    out.push('}');
}

/// `,"name":"text"`.
fn text_field(out: &mut String, name: &str, text: &str) {
    key(out, name);
    object::write_string(out, text);
}

fn write_tabs(out: &mut String, tabs: &[TabId]) {
    out.push('[');
    for (i, tab) in tabs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        number(out, u64::from(tab.0));
    }
    out.push(']');
}

fn write_position(out: &mut String, position: Option<&StreamPosition>) {
    match position {
        Some(position) => {
            out.push_str("{\"epoch\":");
            object::write_string(out, &position.epoch);
            key(out, "offset");
            number(out, position.offset);
            out.push('}');
        }
        None => out.push_str("null"),
    }
}

/// The fields of the channel messages (issue 23).
fn write_channel_message(out: &mut String, message: &TabMessage) {
    match message {
        TabMessage::Subscribe { channel, since } => {
            text_field(out, "channel", channel);
            key(out, "since");
            write_position(out, since.as_ref());
        }
        TabMessage::Unsubscribe { channel } => text_field(out, "channel", channel),
        TabMessage::Publish { channel, id, data } => {
            text_field(out, "channel", channel);
            text_field(out, "id", id);
            key(out, "data");
            out.push_str(data.get());
        }
        TabMessage::Presence { channel, id, stats } => {
            text_field(out, "channel", channel);
            text_field(out, "id", id);
            key(out, "stats");
            out.push_str(if *stats { "true" } else { "false" });
        }
        TabMessage::ChannelTabs { channel, tabs } => {
            text_field(out, "channel", channel);
            key(out, "tabs");
            write_tabs(out, tabs);
        }
        TabMessage::Seen { seq } => {
            key(out, "seq");
            number(out, *seq);
        }
        TabMessage::Server { to, frame } => {
            key(out, "to");
            match to {
                Some(tab) => number(out, u64::from(tab.0)),
                None => out.push_str("null"),
            }
            key(out, "frame");
            out.push_str(frame.get());
        }
        _ => {}
    }
}

fn write_config(out: &mut String, config: &TabConfig) {
    out.push_str("{\"url\":");
    object::write_string(out, &config.url);
    key(out, "reliable");
    out.push_str(if config.reliable { "true" } else { "false" });
    key(out, "token");
    out.push_str(if config.token { "true" } else { "false" });
    out.push('}');
}

fn write_state(out: &mut String, state: LinkState) {
    out.push_str(match state {
        LinkState::Connecting => "\"connecting\"",
        LinkState::Open => "\"open\"",
        LinkState::Closed => "\"closed\"",
    });
}

/// `,"id":...,"token":...` (a session's fields after a `type`).
fn write_session_fields(out: &mut String, session: &Session) {
    key(out, "id");
    object::write_string(out, &session.id);
    key(out, "token");
    object::write_string(out, &session.token);
}

fn write_optional_session(out: &mut String, session: Option<&Session>) {
    match session {
        Some(session) => {
            out.push_str("{\"id\":");
            object::write_string(out, &session.id);
            key(out, "token");
            object::write_string(out, &session.token);
            out.push('}');
        }
        None => out.push_str("null"),
    }
}

fn write_frame(out: &mut String, frame: &Frame) {
    match frame {
        Frame::Text(text) => {
            out.push_str("{\"kind\":\"text\",\"data\":");
            object::write_string(out, text);
        }
        Frame::Binary(data) => {
            out.push_str("{\"kind\":\"binary\",\"data\":[");
            for (i, byte) in data.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                number(out, u64::from(*byte));
            }
            out.push(']');
        }
    }
    out.push('}');
}

/// `,"tab":...,"n":...,"frame":...`: a pending message's fields after a
/// `type` (or, with `open`, as an object of its own: `{"tab":...`).
fn write_pending_fields(out: &mut String, pending: &Pending, open: bool) {
    if open {
        out.push_str("{\"tab\":");
    } else {
        key(out, "tab");
    }
    number(out, u64::from(pending.tab.0));
    key(out, "n");
    number(out, pending.n);
    key(out, "frame");
    write_frame(out, &pending.frame);
}

fn write_shared(out: &mut String, shared: &Shared) {
    out.push_str("{\"session\":");
    write_optional_session(out, shared.session.as_ref());
    key(out, "acked_seq");
    number(out, shared.acked_seq);
    key(out, "last_in");
    number(out, shared.last_in);
    key(out, "pending");
    out.push('[');
    for (i, pending) in shared.pending.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_pending_fields(out, pending, true);
        out.push('}');
    }
    out.push_str("],\"accepted\":[");
    for (i, (tab, n)) in shared.accepted.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        number(out, u64::from(tab.0));
        out.push(',');
        number(out, *n);
        out.push(']');
    }
    out.push_str("],\"channels\":[");
    for (i, shared) in shared.channels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"channel\":");
        object::write_string(out, &shared.channel);
        key(out, "tabs");
        write_tabs(out, &shared.tabs);
        key(out, "position");
        write_position(out, shared.position.as_ref());
        out.push('}');
    }
    out.push_str("]}");
}

/// Any reason why a post is not an envelope of this version; all of them
/// are [`WireError::Malformed`].
struct Bad;

impl From<FieldError> for Bad {
    fn from(_: FieldError) -> Self {
        Self
    }
}

impl From<serde_json::Error> for Bad {
    fn from(_: serde_json::Error) -> Self {
        Self
    }
}

/// The version a post speaks: its `v`, or 0 for one with `from` and `body`
/// and no `v` (a build before the field); a `null` is no field. Any of the
/// three twice is noise.
fn version(object: &Object<'_>) -> Result<u64, Bad> {
    let present = |raw: Option<&str>| raw.is_some_and(|raw| raw != "null");
    let (from, body) = (present(object.raw("from")?), present(object.raw("body")?));
    match object.optional::<u64>("v")? {
        Some(version) => Ok(version),
        None if from && body => Ok(0),
        None => Err(Bad),
    }
}

fn envelope(object: &Object<'_>) -> Result<Envelope, Bad> {
    Ok(Envelope {
        v: narrow(object.required::<u64>("v")?)?,
        from: tab(object, "from")?,
        body: message(&nested(object, "body")?)?,
    })
}

/// The object in field `name`.
fn nested<'a>(object: &Object<'a>, name: &'static str) -> Result<Object<'a>, Bad> {
    Ok(Object::parse(object.raw(name)?.ok_or(Bad)?)?)
}

fn tab(object: &Object<'_>, name: &'static str) -> Result<TabId, Bad> {
    Ok(TabId(narrow(object.required::<u64>(name)?)?))
}

/// A number read as a `u64`, in the range of the field's type: every
/// number of the wire is decoded as a `u64` (one serde instantiation
/// instead of one per integer type), and one out of the field's range is
/// malformed, as the field's own decoder refused it.
fn narrow<T: TryFrom<u64>>(n: u64) -> Result<T, Bad> {
    T::try_from(n).map_err(|_| Bad)
}

/// The numbers of a JSON array, each in the range of `T` (as
/// `Vec<T>`'s decoder reads it).
fn numbers<T: TryFrom<u64>>(raw: &str) -> Result<Vec<T>, Bad> {
    object::elements(raw)?
        .into_iter()
        // Each item was checked as JSON by `elements`, so a JSON integer is
        // exactly what `parse` reads (no sign, no leading zero, no spaces);
        // serde_json's own parser here kept all of it in a browser's wasm.
        .map(|item| narrow(item.parse::<u64>().map_err(|_| Bad)?))
        .collect()
}

fn message(body: &Object<'_>) -> Result<TabMessage, Bad> {
    let ty = body.tag("type")?.ok_or(Bad)?;
    Ok(match &*ty {
        "hello" => TabMessage::Hello {
            config: config(&nested(body, "config")?)?,
            next: body.required("next")?,
        },
        "bye" => TabMessage::Bye,
        "leader" => TabMessage::Leader {
            epoch: body.required("epoch")?,
            config: config(&nested(body, "config")?)?,
            shared: shared(&nested(body, "shared")?)?,
            tabs: narrow(body.required::<u64>("tabs")?)?,
            state: link_state(body)?,
            roster: numbers(body.raw("roster")?.ok_or(Bad)?)?
                .into_iter()
                .map(TabId)
                .collect(),
        },
        "rejoin" => TabMessage::Rejoin {
            tab: tab(body, "tab")?,
        },
        "refused" => TabMessage::Refused {
            tab: tab(body, "tab")?,
            n: body.required("n")?,
            reason: match &*body.tag("reason")?.ok_or(Bad)? {
                "queue_full" => Refusal::QueueFull,
                "too_large" => Refusal::TooLarge,
                "binary_not_reliable" => Refusal::BinaryNotReliable,
                _ => return Err(Bad),
            },
        },
        "disband" => TabMessage::Disband {
            version: body.required("version")?,
        },
        "mismatch" => TabMessage::Mismatch {
            tab: tab(body, "tab")?,
            leader: config(&nested(body, "leader")?)?,
        },
        "send" => TabMessage::Send {
            n: body.required("n")?,
            frame: frame(&nested(body, "frame")?)?,
        },
        "accepted" => TabMessage::Accepted(pending(body)?),
        "confirmed" => TabMessage::Confirmed {
            tab: tab(body, "tab")?,
            n: body.required("n")?,
        },
        "inbound" => TabMessage::Inbound {
            seq: body.optional("seq")?,
            frame: frame(&nested(body, "frame")?)?,
        },
        "session" => TabMessage::Session(session(body)?),
        "resume_failed" => TabMessage::ResumeFailed {
            session: optional_session(body)?,
            unconfirmed: narrow(body.required::<u64>("unconfirmed")?)?,
        },
        "status" => TabMessage::Status {
            state: link_state(body)?,
            tabs: narrow(body.required::<u64>("tabs")?)?,
        },
        "heartbeat" => TabMessage::Heartbeat,
        "subscribe" => TabMessage::Subscribe {
            channel: text(body, "channel")?,
            since: position(body, "since")?,
        },
        "unsubscribe" => TabMessage::Unsubscribe {
            channel: text(body, "channel")?,
        },
        "publish" => TabMessage::Publish {
            channel: text(body, "channel")?,
            id: text(body, "id")?,
            data: raw_json(body)?,
        },
        "presence" => TabMessage::Presence {
            channel: text(body, "channel")?,
            id: text(body, "id")?,
            stats: body.required("stats")?,
        },
        "channel_tabs" => TabMessage::ChannelTabs {
            channel: text(body, "channel")?,
            tabs: tabs(body.raw("tabs")?.ok_or(Bad)?)?,
        },
        "seen" => TabMessage::Seen {
            seq: num(body, "seq")?,
        },
        "server" => TabMessage::Server {
            to: body
                .optional::<u64>("to")?
                .map(narrow)
                .transpose()?
                .map(TabId),
            frame: RawJson::parse(body.raw("frame")?.ok_or(Bad)?)?,
        },
        _ => return Err(Bad),
    })
}

/// A string field, through one instantiation (not inlined at each of the
/// channel messages' fields: that weighed in the console's wasm).
#[inline(never)]
fn text(object: &Object<'_>, name: &'static str) -> Result<String, Bad> {
    Ok(object.required(name)?)
}

/// A number field, as [`text`].
#[inline(never)]
fn num(object: &Object<'_>, name: &'static str) -> Result<u64, Bad> {
    Ok(object.required(name)?)
}

fn raw_json(body: &Object<'_>) -> Result<RawJson, Bad> {
    Ok(RawJson::parse(body.raw("data")?.ok_or(Bad)?)?)
}

/// Field `name`: absent or `null`, or a [`StreamPosition`] (read field by
/// field: its derived decoder weighed in the console's wasm).
fn position(object: &Object<'_>, name: &'static str) -> Result<Option<StreamPosition>, Bad> {
    match object.raw(name)? {
        None | Some("null") => Ok(None),
        Some(raw) => {
            let position = Object::parse(raw)?;
            Ok(Some(StreamPosition {
                epoch: text(&position, "epoch")?,
                offset: num(&position, "offset")?,
            }))
        }
    }
}

fn tabs(raw: &str) -> Result<Vec<TabId>, Bad> {
    Ok(numbers(raw)?.into_iter().map(TabId).collect())
}

fn shared_channel(item: &Object<'_>) -> Result<SharedChannel, Bad> {
    Ok(SharedChannel {
        channel: text(item, "channel")?,
        tabs: tabs(item.raw("tabs")?.ok_or(Bad)?)?,
        position: position(item, "position")?,
    })
}

fn config(config: &Object<'_>) -> Result<TabConfig, Bad> {
    Ok(TabConfig {
        url: config.required("url")?,
        reliable: config.required("reliable")?,
        token: config.required("token")?,
    })
}

fn link_state(object: &Object<'_>) -> Result<LinkState, Bad> {
    match &*object.tag("state")?.ok_or(Bad)? {
        "connecting" => Ok(LinkState::Connecting),
        "open" => Ok(LinkState::Open),
        "closed" => Ok(LinkState::Closed),
        _ => Err(Bad),
    }
}

fn session(session: &Object<'_>) -> Result<Session, Bad> {
    Ok(Session {
        id: session.required("id")?,
        token: session.required("token")?,
    })
}

/// Field `session`: absent or `null`, or a [`Session`].
fn optional_session(object: &Object<'_>) -> Result<Option<Session>, Bad> {
    match object.raw("session")? {
        None | Some("null") => Ok(None),
        Some(raw) => Ok(Some(session(&Object::parse(raw)?)?)),
    }
}

fn frame(frame: &Object<'_>) -> Result<Frame, Bad> {
    match &*frame.tag("kind")?.ok_or(Bad)? {
        "text" => Ok(Frame::Text(frame.required("data")?)),
        "binary" => Ok(Frame::Binary(numbers(frame.raw("data")?.ok_or(Bad)?)?)),
        _ => Err(Bad),
    }
}

fn pending(pending: &Object<'_>) -> Result<Pending, Bad> {
    Ok(Pending {
        tab: tab(pending, "tab")?,
        n: pending.required("n")?,
        frame: frame(&nested(pending, "frame")?)?,
    })
}

fn shared(shared: &Object<'_>) -> Result<Shared, Bad> {
    let items = object::elements(shared.raw("pending")?.ok_or(Bad)?)?;
    Ok(Shared {
        session: optional_session(shared)?,
        acked_seq: shared.required("acked_seq")?,
        last_in: shared.required("last_in")?,
        pending: items
            .into_iter()
            .map(|item| pending(&Object::parse(item)?))
            .collect::<Result<_, Bad>>()?,
        accepted: {
            // Inserted one by one (a later pair of the same tab wins).
            let mut accepted = TabMap::new();
            for pair in object::elements(shared.raw("accepted")?.ok_or(Bad)?)? {
                let [tab, n] = numbers::<u64>(pair)?[..] else {
                    return Err(Bad);
                };
                accepted.insert(TabId(narrow(tab)?), n);
            }
            accepted
        },
        channels: object::elements(shared.raw("channels")?.ok_or(Bad)?)?
            .into_iter()
            .map(|item| shared_channel(&Object::parse(item)?))
            .collect::<Result<_, Bad>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decoder this one replaced: a probe of the version, then serde's
    /// derive.
    fn derived(text: &str) -> Result<Envelope, WireError> {
        #[derive(Deserialize)]
        struct Probe {
            v: Option<u64>,
            from: Option<serde::de::IgnoredAny>,
            body: Option<serde::de::IgnoredAny>,
        }
        let probe: Probe = serde_json::from_str(text).map_err(|_| WireError::Malformed)?;
        let version = match probe {
            Probe { v: Some(v), .. } => v,
            Probe {
                from: Some(_),
                body: Some(_),
                ..
            } => 0,
            _ => return Err(WireError::Malformed),
        };
        if version != u64::from(TAB_PROTOCOL) {
            return Err(WireError::OtherVersion { version });
        }
        serde_json::from_str(text).map_err(|_| WireError::Malformed)
    }

    fn config(url: &str) -> TabConfig {
        TabConfig {
            url: url.into(),
            reliable: true,
            token: false,
        }
    }

    fn session() -> Session {
        Session {
            id: "s\"1".into(),
            token: "k\u{e9}".into(),
        }
    }

    /// One message of every kind, with every optional field both ways.
    fn bodies() -> Vec<TabMessage> {
        let text = Frame::Text("h\u{e9}llo \"q\" \\ \u{1}".into());
        let binary = Frame::Binary(vec![0, 1, 255]);
        let shared = Shared {
            session: Some(session()),
            acked_seq: 7,
            last_in: u64::MAX,
            pending: VecDeque::from([
                Pending {
                    tab: TabId(3),
                    n: 1,
                    frame: text.clone(),
                },
                Pending {
                    tab: TabId(u32::MAX),
                    n: 2,
                    frame: binary.clone(),
                },
            ]),
            accepted: TabMap::from([(TabId(3), 1), (TabId(u32::MAX), 2)]),
            channels: vec![
                SharedChannel {
                    channel: "chat:a".into(),
                    tabs: vec![TabId(1), TabId(u32::MAX)],
                    position: Some(StreamPosition {
                        epoch: "e\"1".into(),
                        offset: u64::MAX,
                    }),
                },
                SharedChannel {
                    channel: "b".into(),
                    tabs: vec![],
                    position: None,
                },
            ],
        };
        vec![
            TabMessage::Hello {
                config: config("ws://x/ws"),
                next: 1,
            },
            TabMessage::Bye,
            TabMessage::Leader {
                epoch: 4,
                config: config("wss://y/ws?a=1&b=\u{e9}"),
                shared,
                tabs: 3,
                state: LinkState::Open,
                roster: vec![TabId(1), TabId(3)],
            },
            TabMessage::Leader {
                epoch: 0,
                config: config(""),
                shared: Shared::default(),
                tabs: 1,
                state: LinkState::Connecting,
                roster: vec![],
            },
            TabMessage::Rejoin { tab: TabId(9) },
            TabMessage::Refused {
                tab: TabId(9),
                n: 2,
                reason: Refusal::QueueFull,
            },
            TabMessage::Refused {
                tab: TabId(9),
                n: 2,
                reason: Refusal::TooLarge,
            },
            TabMessage::Refused {
                tab: TabId(9),
                n: 2,
                reason: Refusal::BinaryNotReliable,
            },
            TabMessage::Disband { version: 2 },
            TabMessage::Mismatch {
                tab: TabId(5),
                leader: config("ws://z"),
            },
            TabMessage::Send {
                n: 3,
                frame: text.clone(),
            },
            TabMessage::Send {
                n: 4,
                frame: binary.clone(),
            },
            TabMessage::Accepted(Pending {
                tab: TabId(1),
                n: 5,
                frame: Frame::Binary(vec![]),
            }),
            TabMessage::Confirmed {
                tab: TabId(1),
                n: 5,
            },
            TabMessage::Inbound {
                seq: Some(8),
                frame: text,
            },
            TabMessage::Inbound {
                seq: None,
                frame: binary,
            },
            TabMessage::Session(session()),
            TabMessage::ResumeFailed {
                session: Some(session()),
                unconfirmed: 2,
            },
            TabMessage::ResumeFailed {
                session: None,
                unconfirmed: 0,
            },
            TabMessage::Status {
                state: LinkState::Closed,
                tabs: 2,
            },
            TabMessage::Heartbeat,
            TabMessage::Subscribe {
                channel: "chat:a".into(),
                since: Some(StreamPosition {
                    epoch: "e".into(),
                    offset: 3,
                }),
            },
            TabMessage::Subscribe {
                channel: "b".into(),
                since: None,
            },
            TabMessage::Unsubscribe {
                channel: "chat:\u{e9}".into(),
            },
            TabMessage::Publish {
                channel: "chat:a".into(),
                id: format!("{:032x}", u128::MAX),
                data: RawJson::parse(r#"{"x":[1,"\u00e9",null]}"#).unwrap(),
            },
            TabMessage::Presence {
                channel: "chat:a".into(),
                id: "q1".into(),
                stats: false,
            },
            TabMessage::Presence {
                channel: "b".into(),
                id: "f9".into(),
                stats: true,
            },
            TabMessage::ChannelTabs {
                channel: "chat:a".into(),
                tabs: vec![TabId(1), TabId(2)],
            },
            TabMessage::ChannelTabs {
                channel: "chat:a".into(),
                tabs: vec![],
            },
            TabMessage::Seen { seq: u64::MAX },
            TabMessage::Server {
                to: None,
                frame: RawJson::parse(
                    r#"{"type":"pub","channel":"chat:a","offset":7,"data":{"t":"\u00e9"},"info":{"client_id":"c1"}}"#,
                )
                .unwrap(),
            },
            TabMessage::Server {
                to: Some(TabId(2)),
                frame: RawJson::parse(
                    r#"{"type":"subscribed","channel":"chat:a","epoch":"e","offset":0}"#,
                )
                .unwrap(),
            },
        ]
    }

    fn envelopes() -> Vec<Envelope> {
        bodies()
            .into_iter()
            .map(|body| Envelope {
                v: TAB_PROTOCOL,
                from: TabId(0x7fff_ffff),
                body,
            })
            .collect()
    }

    /// The same JSON with every object's keys sorted (so `type`, `kind`,
    /// `v` are no longer first) and spaces around every token.
    fn reordered(json: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        serde_json::to_string_pretty(&value).unwrap()
    }

    #[test]
    fn every_message_is_written_as_the_derived_encoder_writes_it() {
        for env in envelopes() {
            assert_eq!(env.to_json(), serde_json::to_string(&env).unwrap());
        }
    }

    #[test]
    fn every_message_round_trips_as_the_derived_decoder_reads_it() {
        for env in envelopes() {
            let json = env.to_json();
            assert_eq!(Envelope::from_json(&json), Ok(env.clone()), "{json}");
            assert_eq!(derived(&json), Ok(env.clone()), "{json}");
            let other = reordered(&json);
            assert_eq!(Envelope::from_json(&other), Ok(env.clone()), "{other}");
            assert_eq!(derived(&other), Ok(env), "{other}");
        }
    }

    /// The JSON of the build before this codec, verbatim: what tabs still
    /// running it post, and read what this one posts.
    #[test]
    fn the_wire_is_the_previous_builds() {
        let cases = [
            (
                r#"{"v":4,"from":7,"body":{"type":"hello","config":{"url":"ws://x/ws","reliable":false,"token":true},"next":1}}"#,
                TabMessage::Hello {
                    config: TabConfig {
                        url: "ws://x/ws".into(),
                        reliable: false,
                        token: true,
                    },
                    next: 1,
                },
            ),
            (
                r#"{"v":4,"from":7,"body":{"type":"accepted","tab":3,"n":2,"frame":{"kind":"binary","data":[1,2]}}}"#,
                TabMessage::Accepted(Pending {
                    tab: TabId(3),
                    n: 2,
                    frame: Frame::Binary(vec![1, 2]),
                }),
            ),
            (
                r#"{"v":4,"from":7,"body":{"type":"leader","epoch":1,"config":{"url":"u","reliable":true,"token":false},"shared":{"session":{"id":"s","token":"k"},"acked_seq":1,"last_in":2,"pending":[{"tab":3,"n":4,"frame":{"kind":"text","data":"x"}}],"accepted":[[3,4]],"channels":[{"channel":"c","tabs":[3],"position":{"epoch":"e","offset":5}}]},"tabs":2,"state":"open","roster":[3,7]}}"#,
                TabMessage::Leader {
                    epoch: 1,
                    config: config("u"),
                    shared: Shared {
                        session: Some(Session {
                            id: "s".into(),
                            token: "k".into(),
                        }),
                        acked_seq: 1,
                        last_in: 2,
                        pending: VecDeque::from([Pending {
                            tab: TabId(3),
                            n: 4,
                            frame: Frame::Text("x".into()),
                        }]),
                        accepted: TabMap::from([(TabId(3), 4)]),
                        channels: vec![SharedChannel {
                            channel: "c".into(),
                            tabs: vec![TabId(3)],
                            position: Some(StreamPosition {
                                epoch: "e".into(),
                                offset: 5,
                            }),
                        }],
                    },
                    tabs: 2,
                    state: LinkState::Open,
                    roster: vec![TabId(3), TabId(7)],
                },
            ),
            (
                r#"{"v":4,"from":7,"body":{"type":"inbound","seq":null,"frame":{"kind":"text","data":"x"}}}"#,
                TabMessage::Inbound {
                    seq: None,
                    frame: Frame::Text("x".into()),
                },
            ),
            (r#"{"v":4,"from":7,"body":{"type":"bye"}}"#, TabMessage::Bye),
        ];
        for (json, body) in cases {
            let env = Envelope {
                v: TAB_PROTOCOL,
                from: TabId(7),
                body,
            };
            assert_eq!(env.to_json(), json);
            assert_eq!(Envelope::from_json(json), Ok(env));
        }
    }

    /// Every message cut short, and with each byte replaced by a few
    /// others: both decoders give the same answer.
    #[test]
    fn damaged_posts_get_the_derived_decoders_answer() {
        for env in envelopes() {
            let json = env.to_json();
            for end in 0..json.len() {
                if let Some(cut) = json.get(..end) {
                    assert_eq!(Envelope::from_json(cut), derived(cut), "{cut}");
                }
            }
            for (at, c) in json.char_indices() {
                for with in ["", "\"", ",", "}", ":", " ", "0", "9", "-1", "null", "x"] {
                    let mut damaged = json.clone();
                    damaged.replace_range(at..at + c.len_utf8(), with);
                    assert_eq!(
                        Envelope::from_json(&damaged),
                        derived(&damaged),
                        "{damaged}"
                    );
                }
            }
        }
    }

    #[test]
    fn odd_posts_get_the_derived_decoders_answer() {
        for text in [
            "",
            "{}",
            "null",
            r#"{"v":2}"#,
            r#"{"v":null,"from":1,"body":{}}"#,
            r#"{"v":4,"from":1}"#,
            r#"{"v":4,"v":4}"#,
            r#"{"v":4,"from":1,"from":2}"#,
            r#"{"v":"2","from":1,"body":{"type":"bye"}}"#,
            r#"{"v":2.0,"from":1,"body":{"type":"bye"}}"#,
            r#"{"v":4294967298,"from":1,"body":{"type":"bye"}}"#,
            r#"{"from":1,"body":null}"#,
            r#"{"v":4,"from":1,"body":{"type":"bye","extra":[1]}}"#,
            r#"{"v":4,"from":1,"body":{"type":"bye"},"extra":{}}"#,
            r#"{"v":4,"from":1,"body":{"type":"bye","type":"bye"}}"#,
            r#"{"v":4,"from":1,"body":{"type":null}}"#,
            r#"{"v":4,"from":1,"body":{"type":"b\u0079e"}}"#,
            r#"{"v":4,"from":-1,"body":{"type":"bye"}}"#,
            r#"{"v":4,"from":4294967296,"body":{"type":"bye"}}"#,
            r#"{"v":4,"from":1,"body":{"type":"rejoin","tab":1,"tab":2}}"#,
            r#"{"v":4,"from":1,"body":{"type":"send","n":1,"frame":{"data":"x","kind":"text"}}}"#,
            r#"{"v":4,"from":1,"body":{"type":"send","n":1,"frame":{"kind":"text"}}}"#,
            r#"{"v":4,"from":1,"body":{"type":"send","n":1,"frame":{"kind":"binary","data":[256]}}}"#,
            r#"{"v":4,"from":1,"body":{"type":"send","n":1,"frame":{"kind":"binary","data":"x"}}}"#,
            r#"{"v":4,"from":1,"body":{"type":"send","n":1,"frame":{"kind":"other","data":"x"}}}"#,
            r#"{"v":4,"from":1,"body":{"type":"inbound","frame":{"kind":"text","data":"x"}}}"#,
            r#"{"v":4,"from":1,"body":{"type":"status","state":"opening","tabs":1}}"#,
            r#"{"v":4,"from":1,"body":{"type":"resume_failed","unconfirmed":1}}"#,
            r#"{"v":4,"from":1,"body":{"type":"resume_failed","session":{"id":"s"},"unconfirmed":1}}"#,
            r#"{"v":4,"from":1,"body":{"type":"session","id":"s","token":"k","extra":1}}"#,
            r#"{"v":4,"from":1,"body":{"type":"refused","tab":1,"n":1,"reason":"later"}}"#,
            r#"{"v":4,"from":1,"body":{"type":"leader","epoch":1,"config":{"url":"u","reliable":true,"token":false},"shared":{"acked_seq":1,"last_in":2,"pending":[],"accepted":[]},"tabs":2,"state":"open","roster":[]}}"#,
            r#"{"v":4,"from":1,"body":{"type":"leader","epoch":1,"config":{"url":"u","reliable":true,"token":false},"shared":{"acked_seq":1,"last_in":2,"pending":[{}],"accepted":[]},"tabs":2,"state":"open","roster":[]}}"#,
            r#"{"v":4,"from":1,"body":{"type":"leader","epoch":1,"config":{"url":"u","reliable":true,"token":false},"shared":{"acked_seq":1,"last_in":2,"pending":[],"accepted":[[1,2,3]]},"tabs":2,"state":"open","roster":[]}}"#,
            r#"{"v":4,"from":1,"body":{"type":"leader","epoch":1,"config":{"url":"u","reliable":true,"token":false},"shared":{"acked_seq":1,"last_in":2,"pending":[],"accepted":[[1,2],[1,3]]},"tabs":2,"state":"open","roster":[]}}"#,
            r#"{"v":4,"from":1,"body":{"type":"leader","epoch":1,"config":{"url":"u","reliable":true,"token":false},"shared":{"acked_seq":1,"last_in":2,"pending":[],"accepted":[[1]]},"tabs":2,"state":"open","roster":[]}}"#,
            r#"{"v":4,"from":1,"body":{"type":"leader","epoch":1,"config":{"url":"u","reliable":true,"token":false},"shared":{"acked_seq":1,"last_in":2,"pending":[],"accepted":[[4294967296,1]]},"tabs":2,"state":"open","roster":[]}}"#,
            r#"{"v":4,"from":1,"body":{"type":"leader","epoch":1,"config":{"url":"u","reliable":true,"token":false},"shared":{"acked_seq":1,"last_in":2,"pending":[],"accepted":[[1,-1]]},"tabs":2,"state":"open","roster":[]}}"#,
            r#"{"v":4,"from":1,"body":{"type":"leader","epoch":1,"config":{"url":"u","reliable":true,"token":false},"shared":{"acked_seq":1,"last_in":2,"pending":[],"accepted":[ [ 1 , 2 ] ]},"tabs":2,"state":"open","roster":[ 1 , 2 ]}}"#,
            r#"{"v":4,"from":1,"body":{"type":"leader","epoch":1,"config":{"url":"u","reliable":true,"token":false},"shared":{"acked_seq":1,"last_in":2,"pending":[],"accepted":[{}]},"tabs":2,"state":"open","roster":[]}}"#,
            r#"{"v":4,"from":1,"body":{"type":"leader","epoch":1,"config":{"url":"u","reliable":true,"token":false},"shared":{"acked_seq":1,"last_in":2,"pending":[],"accepted":{}},"tabs":2,"state":"open","roster":[]}}"#,
            r#"{"v":4,"from":1,"body":{"type":"leader","epoch":1,"config":{"url":"u","reliable":true,"token":false},"shared":{"acked_seq":1,"last_in":2,"pending":[],"accepted":null},"tabs":2,"state":"open","roster":[]}}"#,
            r#"{"v":4,"from":1,"body":{"type":"leader","epoch":1,"config":{"url":"u","reliable":true,"token":false},"shared":{"acked_seq":1,"last_in":2,"pending":[],"accepted":[]},"tabs":-1,"state":"open","roster":[]}}"#,
            r#"{"v":4,"from":1,"body":{"type":"leader","epoch":1,"config":{"url":"u","reliable":true,"token":false},"shared":{"acked_seq":1,"last_in":2,"pending":[],"accepted":[]},"tabs":2.0,"state":"open","roster":[]}}"#,
            r#"{"v":4,"from":1,"body":{"type":"leader","epoch":1,"config":{"url":"u","reliable":true,"token":false},"shared":{"acked_seq":1,"last_in":2,"pending":[],"accepted":[]},"tabs":18446744073709551616,"state":"open","roster":[]}}"#,
            r#"{"v":4,"from":1,"body":{"type":"leader","epoch":1,"config":{"url":"u","reliable":true,"token":false},"shared":{"acked_seq":1,"last_in":2,"pending":[],"accepted":[]},"tabs":2,"state":"open","roster":[4294967296]}}"#,
            r#"{"v":4,"from":1,"body":{"type":"leader","epoch":1,"config":{"url":"u","reliable":true,"token":false},"shared":{"acked_seq":1,"last_in":2,"pending":[],"accepted":[]},"tabs":2,"state":"open","roster":[-1]}}"#,
            r#"{"v":4,"from":1,"body":{"type":"leader","epoch":1,"config":{"url":"u","reliable":true,"token":false},"shared":{"acked_seq":1,"last_in":2,"pending":[],"accepted":[]},"tabs":2,"state":"open","roster":[1.0]}}"#,
            r#"{"v":4,"from":1,"body":{"type":"leader","epoch":1,"config":{"url":"u","reliable":true,"token":false},"shared":{"acked_seq":1,"last_in":2,"pending":[],"accepted":[]},"tabs":2,"state":"open","roster":[-0]}}"#,
            r#"{"v":4,"from":1,"body":{"type":"leader","epoch":1,"config":{"url":"u","reliable":true,"token":false},"shared":{"acked_seq":1,"last_in":2,"pending":[],"accepted":[]},"tabs":2,"state":"open","roster":null}}"#,
            r#"{"v":4,"from":1,"body":{"type":"leader","epoch":1,"config":{"url":"u","reliable":true,"token":false},"shared":{"acked_seq":1,"last_in":2,"pending":[],"accepted":[]},"tabs":2,"state":"open","roster":[[1]]}}"#,
            r#"{"v":4,"from":1,"body":{"type":"leader","epoch":1,"config":{"url":"u","reliable":true,"token":false},"shared":{"acked_seq":1,"last_in":2,"pending":[],"accepted":[]},"tabs":2,"state":"open","roster":["1"]}}"#,
            r#"{"v":4,"from":1,"body":{"type":"send","n":1,"frame":{"kind":"binary","data":[-0, 255 ,0]}}}"#,
            r#"{"v":4,"from":1,"body":{"type":"send","n":1,"frame":{"kind":"binary","data":[-1]}}}"#,
            r#"{"v":4,"from":1,"body":{"type":"send","n":1,"frame":{"kind":"binary","data":[1.0]}}}"#,
            r#"{"v":4,"from":1,"body":{"type":"send","n":1,"frame":{"kind":"binary","data":[1e2]}}}"#,
            r#"{"v":4,"from":1,"body":{"type":"send","n":1,"frame":{"kind":"binary","data":[null]}}}"#,
            r#"{"v":4,"from":1,"body":{"type":"send","n":1,"frame":{"kind":"binary","data":[]}}}"#,
            r#"{"v":4,"from":1,"body":{"type":"send","n":1,"frame":{"kind":"binary","data":null}}}"#,
            r#"{"v":4,"from":1,"body":{"type":"send","n":1,"frame":{"kind":"binary","data":{}}}}"#,
            r#"{"v":4,"from":1,"body":{"type":"send","n":1,"frame":{"kind":"binary","data":[[1]]}}}"#,
            r#"{"v":4,"from":1,"body":{"type":"send","n":1,"frame":{"kind":"binary","data":[1,]}}}"#,
            r#"{"v":4,"from":1,"body":{"type":"resume_failed","session":null,"unconfirmed":-1}}"#,
            r#"{"v":4,"from":1,"body":{"type":"resume_failed","session":null,"unconfirmed":4294967296}}"#,
            r#"{"v":4,"from":1,"body":{"type":"resume_failed","session":null,"unconfirmed":1.5}}"#,
        ] {
            assert_eq!(Envelope::from_json(text), derived(text), "{text}");
        }
    }
}
