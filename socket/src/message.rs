//! The values that cross the wrapper's API: messages, outcomes, errors, events, stats.

use crate::cause::ErrorCause;
use crate::token::AuthError;

/// One WebSocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text frame.
    Text(String),
    /// A binary frame (received as an `ArrayBuffer`).
    Binary(Vec<u8>),
}

impl Message {
    /// The payload size in bytes, as counted by the queue's byte limit.
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

impl From<String> for Message {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<Vec<u8>> for Message {
    fn from(data: Vec<u8>) -> Self {
        Self::Binary(data)
    }
}

/// What [`crate::Socket::send`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendOutcome {
    /// Written to the open socket.
    Sent,
    /// Queued; it is sent, in order, when the socket opens (with
    /// [`crate::Config::with_shared_across_tabs`]: when a leader tab exists).
    Queued,
    /// Shared across tabs: handed to the leader tab, which writes it on the
    /// one connection. It counts against this tab's queue until the leader
    /// confirms it (written, or in reliable mode acknowledged).
    Forwarded,
}

/// A tab's part in a connection shared across tabs
/// ([`crate::Config::with_shared_across_tabs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TabRole {
    /// Holds the one connection for the tabs.
    Leader,
    /// Sends and receives through the leader tab (or waits for one).
    Follower,
    /// A connection of its own: sharing is off, unsupported, or this tab's
    /// config differs from the leader's.
    #[default]
    Alone,
}

impl TabRole {
    /// `leader`, `follower` or `alone`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Leader => "leader",
            Self::Follower => "follower",
            Self::Alone => "alone",
        }
    }
}

/// Why a socket configured to share across tabs has a connection of its own
/// ([`Event::NotShared`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotShared {
    /// The browser lacks Web Locks or `BroadcastChannel` (or the page is
    /// not a secure context).
    #[error(
        "this browser cannot share a connection across tabs (no Web Locks or BroadcastChannel)"
    )]
    Unsupported,
    /// This tab's URL, mode or token provider differs from the leader tab's.
    #[error("this tab's config differs from the leader tab's ({leader_url})")]
    ConfigMismatch {
        /// The leader's URL.
        leader_url: String,
    },
    /// A tab of another build speaks another version of the tabs' wire on
    /// the channel (0: a build without a version field); the builds do not
    /// mix, so each goes its own way until reloaded.
    #[error("a tab of another build speaks tab wire version {version}")]
    OtherWire {
        /// The version heard.
        version: u64,
    },
}

/// Why a message was not sent or queued. Every variant but
/// [`SendError::Encode`] gives the message back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The queue is at its capacity (or byte limit) and the overflow policy
    /// is [`crate::Overflow::RejectNew`], or the capacity is 0.
    #[error("the send queue is full")]
    QueueFull(Message),
    /// The message alone is larger than the queue's byte limit.
    #[error("the message is larger than the queue's byte limit")]
    TooLarge(Message),
    /// The socket was closed by [`crate::Socket::close`]; it will not reconnect.
    #[error("the socket was closed by the application")]
    Closed(Message),
    /// Reliable mode numbers text messages only (the protocol's `msg` carries text).
    #[error("reliable mode sends text messages only")]
    BinaryNotReliable(Message),
    /// [`crate::TypedSocket::send`]: the value could not be encoded as JSON
    /// (never the case for the `shared` protocol). There is no message to
    /// give back: it was never made.
    #[error(transparent)]
    Encode(EncodeError),
}

/// Why [`crate::TypedSocket::send`] could not encode a value.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// serde_json refused the value: its `Serialize` failed, or a map key
    /// is not a string. serde's error is the [`std::error::Error::source`]
    /// (in an `Arc`, to downcast as such, so that the error stays cloneable),
    /// and is not repeated in this error's text (an error says its source's
    /// text or returns it as its source, not both): a console that shows a
    /// [`SendError`] does not carry serde_json's error texts for it.
    #[error("could not encode the message as JSON")]
    Json(#[source] std::sync::Arc<serde_json::Error>),
}

impl From<serde_json::Error> for EncodeError {
    fn from(error: serde_json::Error) -> Self {
        Self::Json(std::sync::Arc::new(error))
    }
}

/// Equal when serde says the same thing (its error has no equality).
impl PartialEq for EncodeError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Json(a), Self::Json(b)) => {
                a.classify() == b.classify() && a.to_string() == b.to_string()
            }
        }
    }
}

impl Eq for EncodeError {}

impl SendError {
    /// The message that was not sent; `None` for [`SendError::Encode`],
    /// where no message was made.
    pub fn into_message(self) -> Option<Message> {
        match self {
            Self::QueueFull(message)
            | Self::TooLarge(message)
            | Self::Closed(message)
            | Self::BinaryNotReliable(message) => Some(message),
            Self::Encode(_) => None,
        }
    }
}

/// The connection state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum State {
    /// A browser socket exists and is not open yet. `attempt` is 0 for the
    /// first connection, then counts the reconnection attempts.
    Connecting {
        /// Consecutive attempt number.
        attempt: u32,
    },
    /// The socket is open.
    Open,
    /// Waiting to retry after an abnormal close.
    Reconnecting {
        /// The attempt that comes next.
        attempt: u32,
        /// Milliseconds until it, or `None` while paused (the browser is offline).
        delay_ms: Option<u64>,
    },
    /// Closed for good: by the application, by the reconnect policy, or after
    /// the last allowed attempt. [`crate::Socket::reconnect`] starts again.
    Closed,
}

impl State {
    /// The state's name as shown to people: `connecting`, `open`, `reconnecting`, `closed`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Connecting { .. } => "connecting",
            Self::Open => "open",
            Self::Reconnecting { .. } => "reconnecting",
            Self::Closed => "closed",
        }
    }
}

/// A close of the browser socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// The URL of the socket that closed.
    pub url: String,
    /// The close code (1006 when the connection dropped without a close frame).
    pub code: u16,
    /// The close reason.
    pub reason: String,
    /// Whether the closing handshake completed.
    pub was_clean: bool,
}

/// An error the transport reported, carried by [`Event::Error`].
///
/// The variant says what failed, which decides what follows; the
/// [`ErrorCause`] (also the [`std::error::Error::source`]) says why, in the
/// transport's words: natively the `tungstenite::Error`, to downcast; in the
/// browser only text, as browsers keep network details from pages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The socket could not even be created (the browser refused the URL,
    /// or natively a URL the transport cannot open, such as `wss` without
    /// the `native-rustls` feature). The attempt counts as failed and is
    /// retried on the normal path.
    #[error("could not create the socket: {0}")]
    Connect(#[source] ErrorCause),
    /// The socket reported an error (natively also a refused connection or
    /// a failed TCP, TLS or WebSocket handshake); its close follows.
    #[error("the socket reported an error: {0}")]
    Socket(#[source] ErrorCause),
}

/// Why a message left the queue without being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// [`crate::Overflow::DropOldest`] made room for a newer message.
    Overflow,
    /// The capacity was lowered below the queue's length.
    CapacityLowered,
    /// Shared across tabs: the leader tab refused it (over its bound per
    /// tab, or larger than its byte limit); it was not sent.
    RefusedByLeader,
}

/// Something that happened; delivered to every callback and stream.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The state changed.
    StateChanged(State),
    /// The socket opened and the queue was flushed.
    Open,
    /// A message arrived. Every message is delivered, none is collapsed.
    Message(Message),
    /// The browser socket closed.
    Close(CloseInfo),
    /// The transport reported an error (a close follows).
    Error(TransportError),
    /// A queued message was dropped; it is handed back here.
    Dropped {
        /// The message.
        message: Message,
        /// Why.
        reason: DropReason,
    },
    /// Reliable mode: the session continued on a new connection; `resent`
    /// unacknowledged messages went out again, before anything new.
    Resumed {
        /// How many were resent.
        resent: usize,
    },
    /// Reliable mode: the session could not continue (it expired, or the
    /// server restarted) and a new one started. The messages sent but never
    /// acknowledged may or may not have been processed: they are handed back,
    /// not resent.
    ResumeFailed {
        /// The server's reason ([`shared::ResumeFailure::UnknownSession`],
        /// `BadToken`...), or [`shared::ResumeFailure::NoSession`] when the
        /// server's `welcome` named no session (the wrapper writes nothing
        /// before the `welcome`, so a cut before it loses nothing).
        reason: shared::ResumeFailure,
        /// The unacknowledged messages, oldest first.
        unconfirmed: Vec<Message>,
    },
    /// Reliable mode: server messages `from..=to` were lost (the server's
    /// history did not reach back far enough).
    Gap {
        /// The first lost seq.
        from: u64,
        /// The last lost seq.
        to: u64,
    },
    /// Token mode: something went wrong with a token (the provider failed,
    /// the server refused it at connect or refused a refresh); what the
    /// wrapper does about it is documented on each [`AuthError`] variant.
    Auth(AuthError),
    /// Token mode: the server accepted the in-band `refresh`; the connection
    /// now lasts until `exp` (seconds since the Unix epoch), and the next
    /// refresh is scheduled ahead of it.
    TokenRefreshed {
        /// The new token's expiry, in seconds since the Unix epoch.
        exp: u64,
    },
    /// Shared across tabs: this tab's role or the number of tabs changed.
    TabRole {
        /// The role.
        role: TabRole,
        /// Tabs sharing the connection, this one included.
        tabs: usize,
    },
    /// Shared across tabs was asked for but this tab runs a connection of
    /// its own; why.
    NotShared(NotShared),
    /// Something happened to a channel subscription: its [`crate::Channel`]
    /// handle's callbacks and streams get it (as a
    /// [`crate::ChannelEvent`]); here every subscription's.
    Channel(crate::channel::ChannelNotice),
}

/// Counters of one wrapper, since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    /// Messages waiting in the queue.
    pub queue_len: usize,
    /// The queue's capacity in messages.
    pub queue_capacity: usize,
    /// Bytes waiting in the queue.
    pub queue_bytes: usize,
    /// Messages written to the socket.
    pub messages_sent: u64,
    /// Bytes written to the socket.
    pub bytes_sent: u64,
    /// Messages received.
    pub messages_received: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Queued messages dropped (each also raised [`Event::Dropped`]).
    pub dropped: u64,
    /// Successful reconnections (opens after the first).
    pub reconnects: u64,
    /// The current consecutive attempt number.
    pub attempt: u32,
    /// Milliseconds the current connection has been open, if open.
    pub uptime_ms: Option<f64>,
    /// Reliable mode: messages written and not yet acknowledged (they count
    /// against the queue's capacity).
    pub unacked: usize,
    /// Reliable mode: messages the server acknowledged.
    pub acked: u64,
    /// Reliable mode: server messages delivered (each once).
    pub delivered: u64,
    /// Reliable mode: gap events (server messages lost).
    pub gaps: u64,
    /// Shared across tabs: this tab's role ([`TabRole::Alone`] when not sharing).
    pub tab_role: TabRole,
    /// Shared across tabs: the tabs sharing the connection, this one
    /// included (1 when not sharing).
    pub tabs: usize,
}
