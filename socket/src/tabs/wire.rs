//! What tabs say to each other over the `BroadcastChannel`: [`Envelope`]s
//! of [`TabMessage`]s, JSON, versioned ([`TAB_PROTOCOL`]).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::message::Message;

/// The version of the tab protocol; a tab ignores envelopes of another one.
pub const TAB_PROTOCOL: u32 = 1;

/// A tab's id, random per tab (the glue draws it); also what
/// `Socket::tab_id()` will hand out for tagging requests.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TabId(pub String);

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
    /// is a duplicate.
    pub accepted: BTreeMap<TabId, u64>,
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

    /// Parses a posted envelope; `None` for anything else, or another version.
    pub fn from_json(text: &str) -> Option<Self> {
        serde_json::from_str::<Self>(text)
            .ok()
            .filter(|e| e.v == TAB_PROTOCOL)
    }
}
