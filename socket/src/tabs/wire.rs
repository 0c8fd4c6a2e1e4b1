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
//! two do not mix.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::message::Message;

/// The version of the tab protocol; a tab that hears another one goes alone.
pub const TAB_PROTOCOL: u32 = 2;

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
    pub accepted: BTreeMap<TabId, u64>,
}

/// [`Shared::accepted`] as `[[tab, n], ...]`.
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::TabId;

    pub(super) fn serialize<S: Serializer>(
        map: &BTreeMap<TabId, u64>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<TabId, u64>, D::Error> {
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
}

impl Envelope {
    /// The JSON to post.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .expect("plain data whose map keys are strings always serializes")
    }

    /// Parses a posted envelope.
    ///
    /// # Errors
    ///
    /// [`WireError::OtherVersion`] for a post of another wire version (a
    /// JSON object with another numeric `v`, or with `from` and `body` and
    /// no `v`), [`WireError::Malformed`] for anything else that is not an
    /// envelope of this version.
    pub fn from_json(text: &str) -> Result<Self, WireError> {
        /// The fields that tell a version, the rest skipped unread.
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
}
