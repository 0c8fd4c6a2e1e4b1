//! The wire protocol spoken between the server and the browser client.
//!
//! Both sides compile this crate (the server natively, the client to
//! `wasm32-unknown-unknown`), so a message type cannot differ between them.
//! This module doc is the protocol's reference; `docs/PROTOCOL.md` points here.
//!
//! # Framing
//!
//! * **Text frames** carry exactly one JSON object each, tagged by a `"type"`
//!   field in `snake_case`. Unknown fields are ignored, so optional fields can
//!   be added without breaking older peers.
//! * **Binary frames** are opaque payloads. On `/ws` the server echoes them
//!   back unchanged as binary; they never carry JSON.
//!
//! # Client to server ([`ClientMessage`])
//!
//! | JSON | meaning |
//! |---|---|
//! | `{"type":"echo","id":7,"body":"hi"}` | answered by an `echo` with the same `id` and `body` |
//! | `{"type":"burst","count":1000}` | the server pushes `count` `push` messages as fast as flow control allows, then `burst_done` |
//! | `{"type":"ping","t":12.5}` | application heartbeat (browsers cannot send ping frames); answered by `pong` with the same `t` |
//! | `{"type":"refresh","token":"eyJ..."}` | token mode: a fresh token for the same user before the current one's `exp`; answered by `refreshed`, or `error` `bad_token` (refused) or `rate_limited` (sooner than the server's refresh interval, 5 s by default, after the previous one); three of those in a row close with 4401 `too many bad refreshes` |
//!
//! # Server to client ([`ServerMessage`])
//!
//! | JSON | meaning |
//! |---|---|
//! | `{"type":"welcome","client_id":"c1","push_interval_ms":1000,"protocol":1}` | first message on every connection; in token mode it also carries the token's `"exp"` |
//! | `{"type":"echo","id":7,"body":"hi"}` | answer to an `echo` |
//! | `{"type":"push","seq":1,"sent_at_ms":1700000000000,"body":"tick"}` | timed, burst or admin push; `seq` counts up per connection from 1 |
//! | `{"type":"burst_done","count":1000,"elapsed_ms":12}` | after the last push of a burst |
//! | `{"type":"pong","t":12.5}` | answer to a `ping` |
//! | `{"type":"error","code":"malformed","message":"..."}` | the server could not accept a message; see [`ErrorCode`] |
//! | `{"type":"refreshed","exp":1700000900}` | token mode: the `refresh` was accepted; the connection now lasts until `exp` |
//!
//! # Versions and identities
//!
//! Every `welcome` carries `protocol`, the connection's version, so that
//! clients and nodes of mixed versions can tell what they talk to; a
//! welcome without it comes from a server older than versioning (decoded
//! as 0). A client asks for a version with `?protocol=N` and gets
//! `min(N, `[`PROTOCOL_VERSION`]`)`; one that asks for none (an older
//! build) gets version 1, unchanged. Version 2 differs from 1 only in the
//! reliable `msg` envelope, whose `data` embeds the application's JSON
//! message as it is instead of escaping it into a string ([`Protocol`],
//! [`encode_msg`]); decoders read both forms in every version.
//!
//! In token mode (the server started with a JWT key), a connection proves
//! its user with a signed token (`?token=` or `Authorization: Bearer`), and
//! its `welcome` carries the token's `exp` in seconds since the epoch. The
//! client sends `refresh` with a new token of the same user before `exp`;
//! a connection not refreshed by then is closed with
//! [`close_code::TOKEN_EXPIRED`]. A refused token at connect closes the
//! connection right after the upgrade with [`close_code::UNAUTHORIZED`]
//! (browsers cannot read a refused handshake's status). `refresh` and
//! `refreshed` belong to the connection: in reliable mode they are never
//! numbered.
//!
//! # Reliable mode (opt-in: `/ws?reliable=1`)
//!
//! Exact delivery in both directions across reconnects. Application messages
//! travel in `msg` envelopes numbered per session, each side acknowledges
//! cumulatively and in batches, and a reconnecting client resumes its
//! session; the server processes each client `seq` exactly once. With
//! reliable mode off none of these messages is sent and the wire is as above.
//!
//! | direction | JSON | meaning |
//! |---|---|---|
//! | server | `{"type":"welcome",...,"session":"s1","token":"k"}` | a reliable connection's welcome also offers a new session |
//! | client | `{"type":"resume","session":"s1","token":"k","last_seq":41}` | first message of a reconnect: continue session `s1`, whose server messages up to 41 were processed |
//! | client | `{"type":"ack","seq":0}` | first message of a new session (or any other message): the server sends nothing but the welcome before it |
//! | both | `{"type":"msg","seq":7,"data":"..."}` | one application text frame (`data`, verbatim), number `seq` of its direction, from 1 without gaps; version 2 embeds a JSON message as it is: `"data":{"type":"echo",...}` |
//! | both | `{"type":"ack","seq":7}` | cumulative: every `msg` up to 7 was processed; sent every few messages or milliseconds, not per message |
//! | server | `{"type":"resumed","last_seq":12}` | the session continues; the server processed client messages up to 12 (resend the rest, in order); then it replays its unacknowledged messages |
//! | server | `{"type":"resume_failed","reason":"unknown_session"}` | the session cannot continue ([`ResumeFailure`]); the connection goes on with the session of its welcome |
//! | server | `{"type":"gap","from":13,"to":20}` | server messages 13 to 20 were lost (the history's count or age limit): a loss is reported, never silent |
//!
//! Inside `msg`, the server's `data` is one of the messages of the table
//! above (echo, push, `burst_done`, pong, error) and the client's one of
//! its messages, answered as at the top level but numbered. The
//! connection's control messages (`refresh`, `ack`, `resume`, `msg`) get a
//! numbered [`ErrorCode::NotReliable`] inside a `msg`. Connection-scoped
//! messages (`welcome`, heartbeat `ping`/`pong` at the top level, `ack`,
//! `resume*`, `gap`, `refresh`/`refreshed`) are never numbered.
//! docs/PROTOCOL.md has the table of every client message in every mode.
//!
//! # Decoding
//!
//! [`ClientMessage::from_json`] and [`ServerMessage::from_json`] never panic:
//! input that is not JSON, has no `type`, has an unknown `type` or has wrong
//! fields gives a [`DecodeError`] saying which, so the server can answer with
//! a precise [`ErrorCode`].
//!
//! # Layout
//!
//! * [`ClientMessage`], [`ServerMessage`]: the two directions.
//! * [`ErrorCode`]: the stable codes carried by `error` messages.
//! * [`ResumeFailure`]: why a reliable-mode `resume` failed.
//! * [`DecodeError`]: why a text frame could not be decoded.
//! * [`close_code`]: the WebSocket close codes the server uses, in one place.
//! * [`PushEncoder`]: many `push` frames of one body, without serde per frame.
//! * [`PROTOCOL_VERSION`], [`Protocol`]: the versions, and how a client's
//!   ask is answered.
//! * `envelope.rs`: reliable mode's `msg` envelope in each version
//!   ([`encode_msg`], [`encode_msg_json`], [`msg_v1_len`], [`embeddable`]),
//!   and its decoding for both.
//! * `fast.rs` (private): the echo's request decoded and its reply encoded
//!   without serde's buffering of a tagged enum, byte for byte the same.
//! * [`object`]: a JSON object read once into its fields, each decoded by
//!   name when asked for; `decode.rs` (private) decodes [`ServerMessage`]
//!   with it, type first: without the derived decoder the console's wasm
//!   lost 13 KB of its gzip-compressed size.
//!
//! # Example
//!
//! ```
//! use shared::{ClientMessage, ServerMessage};
//!
//! let msg = ClientMessage::Echo { id: 1, body: "hello".into() };
//! let json = msg.to_json();
//! assert_eq!(json, r#"{"type":"echo","id":1,"body":"hello"}"#);
//! assert_eq!(ClientMessage::from_json(&json)?, msg);
//!
//! let reply = ServerMessage::from_json(r#"{"type":"pong","t":1.5}"#)?;
//! assert_eq!(reply, ServerMessage::Pong { t: 1.5 });
//! # Ok::<(), shared::DecodeError>(())
//! ```
#![warn(missing_docs)]

use std::fmt;

pub mod channel;
mod decode;
mod envelope;
mod fast;
pub mod object;

pub use decode::{CHANNEL_TYPES, CONTROL_TYPES};
pub use envelope::{Protocol, embeddable, encode_msg, encode_msg_json, msg_v1_len};
pub use fast::echo_is_its_own_reply;
use serde::{Deserialize, Serialize};

/// The newest protocol version this crate speaks ([`Protocol::LATEST`]).
/// A `welcome` carries the version of its connection as `"protocol"`: the
/// one the client asked for with `?protocol=N`, at most this, and 1 when it
/// asked for none. It changes only when a peer of the old version would
/// misunderstand the new one; added optional fields do not change it.
pub const PROTOCOL_VERSION: u32 = 2;

/// A message from the client to the server, sent as one JSON text frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientMessage {
    /// Ask the server to send `body` back in an [`ServerMessage::Echo`] with the same `id`.
    Echo {
        /// Chosen by the client to match the answer to the question.
        id: u64,
        /// Any text; its size is bounded by the server's message size limit.
        body: String,
    },
    /// Ask the server to push `count` messages as fast as flow control allows,
    /// followed by [`ServerMessage::BurstDone`]. Counts above the server's
    /// `--max-burst` are refused with [`ErrorCode::BurstTooLarge`]; one
    /// asked for while a burst is in progress and another waits (on the
    /// connection, or in its reliable session) with [`ErrorCode::BurstBusy`].
    Burst {
        /// How many `push` messages to send.
        count: u32,
    },
    /// Application-level heartbeat; answered by [`ServerMessage::Pong`] carrying the same `t`.
    Ping {
        /// Opaque to the server; clients usually send a timestamp to measure round trips.
        t: f64,
    },
    /// Reliable mode: continue an earlier session (first message of a reconnect).
    Resume {
        /// The session id from the earlier `welcome`.
        session: String,
        /// The session's secret token from the same `welcome`.
        token: String,
        /// The last server `msg` seq the client processed.
        last_seq: u64,
    },
    /// Reliable mode: every server `msg` up to `seq` was processed (cumulative).
    Ack {
        /// The highest seq processed, without gaps.
        seq: u64,
    },
    /// Reliable mode: one numbered application message.
    ///
    /// Decoded from either version's envelope; [`ClientMessage::to_json`]
    /// writes version 1's, [`encode_msg`] either.
    Msg {
        /// Counts up from 1 per session, without gaps.
        seq: u64,
        /// The application's text frame, verbatim.
        data: String,
    },
    /// Token mode: replace the connection's token with a fresh one of the
    /// same user before the current one expires. Answered by
    /// [`ServerMessage::Refreshed`], or by an `error` with
    /// [`ErrorCode::BadToken`] or [`ErrorCode::RateLimited`] (the
    /// connection then lasts until its current `exp`; three in a row close
    /// it with [`close_code::UNAUTHORIZED`] `too many bad refreshes`).
    /// Never numbered in reliable mode.
    Refresh {
        /// The new token (a JWT), as for `?token=`.
        token: String,
    },
    /// Version 2: receive `channel`'s publications, answered by
    /// [`ServerMessage::Subscribed`]; with `since`, first what was missed
    /// after it. Idempotent. Version 1 gets [`ErrorCode::UnknownType`].
    Subscribe {
        /// The channel ([`channel::namespace_of`]).
        channel: String,
        /// Where the client was: recover what followed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<channel::StreamPosition>,
        /// Echoed by the answer (at most 64 bytes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Version 2: stop receiving `channel`'s publications, answered by
    /// [`ServerMessage::Unsubscribed`]. Idempotent.
    Unsubscribe {
        /// The channel.
        channel: String,
        /// Echoed by the answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Version 2: publish `data` to `channel`, answered by
    /// [`ServerMessage::Published`] with its offset. With an `id` it is
    /// published once per channel within the server's dedup window: a
    /// repeat gets the first answer.
    Publish {
        /// The channel.
        channel: String,
        /// Any JSON value.
        data: channel::RawJson,
        /// The idempotency key, unique per publication (at most 64 bytes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Version 2: who is in `channel` (the `presence` capability), answered
    /// by [`ServerMessage::Presence`].
    Presence {
        /// The channel.
        channel: String,
        /// Echoed by the answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Version 2: how many are in `channel`, answered by
    /// [`ServerMessage::PresenceStats`].
    PresenceStats {
        /// The channel.
        channel: String,
        /// Echoed by the answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
}

/// A message from the server to the client, sent as one JSON text frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerMessage {
    /// The first message on every connection.
    Welcome {
        /// The client's id in the server's registry (chosen by the client with
        /// `?client_id=` or assigned by the server).
        client_id: String,
        /// The period of timed pushes in milliseconds; 0 when they are off.
        push_interval_ms: u64,
        /// Reliable mode only: the id of the session this connection starts
        /// (unless the client resumes another one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        /// Reliable mode only: the secret that proves a `resume` comes from this client.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// The connection's protocol version: the one the client asked for
        /// with `?protocol=N`, at most [`PROTOCOL_VERSION`], and 1 when it
        /// asked for none ([`Protocol::negotiate`]); 0 when the server is
        /// older than versioning and sent none.
        #[serde(default)]
        protocol: u32,
        /// Token mode only: when the connection's token expires, in seconds
        /// since the Unix epoch (as the JWT's `exp`). The client sends a
        /// `refresh` before then, or is closed with
        /// [`close_code::TOKEN_EXPIRED`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exp: Option<u64>,
    },
    /// The answer to [`ClientMessage::Echo`].
    Echo {
        /// The `id` of the echo request.
        id: u64,
        /// The `body` of the echo request, unchanged.
        body: String,
    },
    /// A message pushed by the server: timed, part of a burst, or sent through the admin API.
    Push {
        /// Counts up from 1 on each connection, without gaps.
        seq: u64,
        /// Server wall-clock time when the push was queued, in milliseconds since the Unix epoch.
        sent_at_ms: u64,
        /// The pushed text.
        body: String,
    },
    /// Sent after the last push of a burst.
    BurstDone {
        /// How many pushes the burst delivered.
        count: u32,
        /// Time from the first to the last push of the burst on the server, in milliseconds.
        elapsed_ms: u64,
    },
    /// The answer to [`ClientMessage::Ping`].
    Pong {
        /// The `t` of the ping, unchanged.
        t: f64,
    },
    /// The server could not accept a message; the connection stays open
    /// unless the error is followed by a close frame.
    Error {
        /// A stable, machine-readable code.
        code: ErrorCode,
        /// A human-readable explanation; its wording may change.
        message: String,
        /// The channel of the channel message refused (version 2).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
        /// The `id` of the message refused, when it had one (version 2).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Reliable mode: one numbered application message.
    ///
    /// Decoded from either version's envelope; [`ServerMessage::to_json`]
    /// writes version 1's, [`encode_msg_json`] either.
    Msg {
        /// Counts up from 1 per session, without gaps.
        seq: u64,
        /// The server's message (one of the other types), as JSON text.
        data: String,
    },
    /// Reliable mode: every client `msg` up to `seq` was processed (cumulative).
    Ack {
        /// The highest seq processed, without gaps.
        seq: u64,
    },
    /// Reliable mode: the `resume` succeeded.
    Resumed {
        /// The last client seq the server processed: the client resends what follows.
        last_seq: u64,
    },
    /// Reliable mode: the `resume` failed; the connection carries on with the
    /// new session offered in its `welcome`.
    ResumeFailed {
        /// Why.
        reason: ResumeFailure,
    },
    /// Reliable mode: server messages `from..=to` are lost (the history's
    /// count or age limit was exceeded while the client was away).
    Gap {
        /// The first lost seq.
        from: u64,
        /// The last lost seq.
        to: u64,
    },
    /// Token mode: the [`ClientMessage::Refresh`] was accepted.
    Refreshed {
        /// When the new token expires, in seconds since the Unix epoch.
        exp: u64,
    },
    /// Version 2: the subscription to `channel` started (or, with
    /// `recovered: false` and `reason: epoch_changed`, its stream started
    /// again). Every publication after it has an offset above `offset`.
    Subscribed {
        /// The channel.
        channel: String,
        /// The channel stream's epoch (opaque).
        epoch: String,
        /// The channel's latest offset when the subscription started.
        offset: u64,
        /// With `since`: whether everything missed follows.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// Why not.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<channel::RecoveryFailure>,
        /// With `history_trimmed`: the offsets lost.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gap: Option<channel::OffsetRange>,
        /// The `subscribe`'s id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Version 2: one publication of a channel. Never numbered in reliable
    /// mode: recovery by offset covers it.
    Pub {
        /// The channel.
        channel: String,
        /// Its offset in the channel's stream, from 1 without holes.
        offset: u64,
        /// What was published.
        data: channel::RawJson,
        /// Who published it (absent for the admin API).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        info: Option<channel::PublisherInfo>,
    },
    /// Version 2: offsets `from..=to` of a channel could not be delivered.
    ChannelGap {
        /// The channel.
        channel: String,
        /// The first lost offset.
        from: u64,
        /// The last lost offset.
        to: u64,
    },
    /// Version 2: the answer to a `publish`.
    Published {
        /// The channel.
        channel: String,
        /// The publication's offset.
        offset: u64,
        /// The `publish`'s id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Version 2: a subscription ended (the client's `unsubscribe`, or the
    /// server's decision).
    Unsubscribed {
        /// The channel.
        channel: String,
        /// Why.
        reason: channel::UnsubscribeReason,
        /// The `unsubscribe`'s id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Version 2: the members of a channel (the answer to a `presence`);
    /// never numbered in reliable mode.
    Presence {
        /// The channel.
        channel: String,
        /// Its members, at most the server's `--max-presence-answer`.
        clients: Vec<channel::Member>,
        /// There are more members than listed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        truncated: Option<bool>,
        /// The `presence`'s id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Version 2: how many are in a channel; never numbered.
    PresenceStats {
        /// The channel.
        channel: String,
        /// Its members (connections).
        clients: u64,
        /// Its distinct users (token mode; anonymous members count none).
        users: u64,
        /// The `presence_stats`'s id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Version 2: someone joined a channel (a best-effort notice, not an
    /// offset of its stream); never numbered.
    Join {
        /// The channel.
        channel: String,
        /// Who.
        info: channel::Member,
    },
    /// Version 2: someone left a channel; never numbered.
    Leave {
        /// The channel.
        channel: String,
        /// Who.
        info: channel::Member,
    },
}

/// Why a `resume` failed, serialized as a `snake_case` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResumeFailure {
    /// No such session: it never existed, or it expired (`--session-ttl`
    /// after its last connection ended), or the server restarted.
    UnknownSession,
    /// The token does not match the session's.
    BadToken,
    /// `resume` was not the first message of a reliable connection.
    NotFirst,
    /// Client side only, never sent by the server: the server's `welcome`
    /// named no session, so there was none to resume (the wrapper writes
    /// nothing of the application before a new session's `welcome`, so a
    /// connection cut earlier loses nothing and simply starts over).
    NoSession,
}

impl ResumeFailure {
    /// The reason as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownSession => "unknown_session",
            Self::BadToken => "bad_token",
            Self::NotFirst => "not_first",
            Self::NoSession => "no_session",
        }
    }
}

impl fmt::Display for ResumeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stable codes of [`ServerMessage::Error`], serialized as `snake_case` strings.
///
/// A code this version does not know decodes as [`ErrorCode::Other`], so a
/// newer server never breaks an older client.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The text frame was not valid JSON (`"malformed"`).
    Malformed,
    /// The JSON object had no `type` field, or one the server does not know (`"unknown_type"`).
    UnknownType,
    /// The `type` was known but its fields were missing or of the wrong type (`"invalid_fields"`).
    InvalidFields,
    /// A burst asked for more than the server's `--max-burst` (`"burst_too_large"`).
    BurstTooLarge,
    /// A reliable-mode message (`resume`, `ack`, `msg`) on a connection
    /// without `?reliable=1`, or a control message (`resume`, `ack`, `msg`,
    /// `refresh`) nested in a `msg` (`"not_reliable"`).
    NotReliable,
    /// A client `msg` whose seq skips ahead of the next expected one; it was
    /// not processed (`"out_of_order"`).
    OutOfOrder,
    /// A burst is in progress and another waits behind it already, on the
    /// connection or in its reliable session (the most either keeps); this
    /// one was not started (`"burst_busy"`).
    BurstBusy,
    /// A `refresh` whose token is invalid, expired, or of another user; the
    /// connection keeps its current token until its `exp` (`"bad_token"`).
    BadToken,
    /// A `refresh` sooner than the server's refresh interval (5 s by
    /// default) after the previous one; it was not checked and the
    /// connection keeps its current token (`"rate_limited"`). Three
    /// refused or rate-limited refreshes in a row close the connection
    /// with 4401 `too many bad refreshes`.
    RateLimited,
    /// Version 2: not a channel name (`"bad_channel"`).
    BadChannel,
    /// Version 2: the channel's namespace is not configured (`"unknown_namespace"`).
    UnknownNamespace,
    /// Version 2: the connection may not do that in that channel (`"permission_denied"`).
    PermissionDenied,
    /// Version 2: the connection has `--max-subscriptions` already (`"too_many_subscriptions"`).
    TooManySubscriptions,
    /// Version 2: the publication is larger than its namespace allows (`"publish_too_large"`).
    PublishTooLarge,
    /// Version 2: the channel streams are unavailable (Redis is down); the
    /// connection goes on (`"unavailable"`).
    Unavailable,
    /// Version 2: the channel has its namespace's `max_members` already
    /// (`"channel_full"`).
    ChannelFull,
    /// A code this version of the protocol does not know.
    Other(String),
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownType => "unknown_type",
            Self::InvalidFields => "invalid_fields",
            Self::BurstTooLarge => "burst_too_large",
            Self::NotReliable => "not_reliable",
            Self::OutOfOrder => "out_of_order",
            Self::BurstBusy => "burst_busy",
            Self::BadToken => "bad_token",
            Self::RateLimited => "rate_limited",
            Self::BadChannel => "bad_channel",
            Self::UnknownNamespace => "unknown_namespace",
            Self::PermissionDenied => "permission_denied",
            Self::TooManySubscriptions => "too_many_subscriptions",
            Self::PublishTooLarge => "publish_too_large",
            Self::Unavailable => "unavailable",
            Self::ChannelFull => "channel_full",
            Self::Other(code) => code,
        }
    }
}

impl From<String> for ErrorCode {
    fn from(code: String) -> Self {
        match code.as_str() {
            "malformed" => Self::Malformed,
            "unknown_type" => Self::UnknownType,
            "invalid_fields" => Self::InvalidFields,
            "burst_too_large" => Self::BurstTooLarge,
            "not_reliable" => Self::NotReliable,
            "out_of_order" => Self::OutOfOrder,
            "burst_busy" => Self::BurstBusy,
            "bad_token" => Self::BadToken,
            "rate_limited" => Self::RateLimited,
            "bad_channel" => Self::BadChannel,
            "unknown_namespace" => Self::UnknownNamespace,
            "permission_denied" => Self::PermissionDenied,
            "too_many_subscriptions" => Self::TooManySubscriptions,
            "publish_too_large" => Self::PublishTooLarge,
            "unavailable" => Self::Unavailable,
            "channel_full" => Self::ChannelFull,
            _ => Self::Other(code),
        }
    }
}

impl From<ErrorCode> for String {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::Other(code) => code,
            known => known.as_str().to_owned(),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a text frame could not be decoded into a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The text is not a JSON object.
    #[error("not a JSON object: {0}")]
    Malformed(String),
    /// The object has no `"type"` field.
    #[error("the message has no \"type\" field")]
    MissingType,
    /// The `"type"` is not one this side understands.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// The `"type"` is known but the fields do not match it.
    #[error("invalid fields for message type {ty:?}: {detail}")]
    InvalidFields {
        /// The message type.
        ty: String,
        /// What serde found wrong.
        detail: String,
    },
}

impl DecodeError {
    /// The [`ErrorCode`] a server answers this error with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Malformed(_) => ErrorCode::Malformed,
            Self::MissingType | Self::UnknownType(_) => ErrorCode::UnknownType,
            Self::InvalidFields { .. } => ErrorCode::InvalidFields,
        }
    }
}

/// Message types the client may send, used to tell unknown types from bad fields.
const CLIENT_TYPES: &[&str] = &[
    "echo",
    "burst",
    "ping",
    "resume",
    "ack",
    "msg",
    "refresh",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
];
/// Message types the server may send (for the derived decoding that
/// `decode.rs`'s tests compare [`ServerMessage::from_json`] with).
#[cfg(test)]
const SERVER_TYPES: &[&str] = &[
    "welcome",
    "echo",
    "push",
    "burst_done",
    "pong",
    "error",
    "msg",
    "ack",
    "resumed",
    "resume_failed",
    "gap",
    "refreshed",
    "subscribed",
    "pub",
    "channel_gap",
    "published",
    "unsubscribed",
    "presence",
    "presence_stats",
    "join",
    "leave",
];

fn decode<'a, T: Deserialize<'a>>(text: &'a str, known: &[&str]) -> Result<T, DecodeError> {
    let err = match serde_json::from_str(text) {
        Ok(msg) => return Ok(msg),
        Err(err) => err,
    };
    // The error path only: find out which of our errors this is.
    #[derive(Deserialize)]
    struct Tag {
        #[serde(rename = "type")]
        ty: Option<serde_json::Value>,
    }
    let tag: Tag = match serde_json::from_str(text) {
        Ok(tag) => tag,
        Err(_) => return Err(DecodeError::Malformed(err.to_string())),
    };
    match tag.ty {
        None => Err(DecodeError::MissingType),
        Some(serde_json::Value::String(ty)) if known.contains(&ty.as_str()) => {
            Err(DecodeError::InvalidFields {
                ty,
                detail: err.to_string(),
            })
        }
        Some(serde_json::Value::String(ty)) => Err(DecodeError::UnknownType(ty)),
        Some(other) => Err(DecodeError::UnknownType(other.to_string())),
    }
}

/// Decodes `text`, a reliable `msg` envelope of either version by
/// [`envelope`]'s decoder (made into a message by `msg`), anything else by
/// the derived one. An envelope written as ours are takes the short way; a
/// version-2 one whose `type` is not its first field fails the derived
/// decoder (its `data` is not a string) and is decoded after all.
fn decode_or_msg<'a, T: Deserialize<'a>>(
    text: &'a str,
    known: &[&str],
    msg: impl Fn(u64, String) -> T,
) -> Result<T, DecodeError> {
    if envelope::looks_like_msg(text)
        && let Some((seq, data)) = envelope::decode_msg(text)
    {
        return Ok(msg(seq, data));
    }
    decode(text, known).or_else(|err| match &err {
        DecodeError::InvalidFields { ty, .. } if ty == "msg" => envelope::decode_msg(text)
            .map(|(seq, data)| msg(seq, data))
            .ok_or(err),
        _ => Err(err),
    })
}

fn encode<T: Serialize>(msg: &T) -> String {
    serde_json::to_string(msg).expect(
        "serializing a protocol message to a String cannot fail: \
         it has no maps with non-string keys and no fallible Serialize impls",
    )
}

impl ClientMessage {
    /// Decodes one text frame.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] saying whether the text was not JSON, had no or an
    /// unknown `type`, or had wrong fields for its type.
    pub fn from_json(text: &str) -> Result<Self, DecodeError> {
        if let Some((id, body)) = fast::echo_request(text) {
            return Ok(Self::Echo { id, body });
        }
        decode_or_msg(text, CLIENT_TYPES, |seq, data| Self::Msg { seq, data })
    }

    /// Encodes the message as one text frame: written by hand
    /// (`fast.rs`), byte for byte what serde's derive writes (the tests
    /// compare them), without its serializer in a wasm build.
    pub fn to_json(&self) -> String {
        fast::client_message(self)
    }
}

impl ServerMessage {
    /// Decodes one text frame.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] saying whether the text was not JSON, had no or an
    /// unknown `type`, or had wrong fields for its type.
    ///
    /// It reads the `type` first, then that type's fields only, without
    /// serde's buffering of a tagged enum (the derived `Deserialize` is
    /// kept as the reference the tests compare it with): the same messages,
    /// the same errors, but for the corner cases listed in `decode.rs`,
    /// none of which a server writes.
    pub fn from_json(text: &str) -> Result<Self, DecodeError> {
        decode::server_message(text)
    }

    /// Decodes `text` if it is a message of the connection itself
    /// ([`CONTROL_TYPES`]: welcome, msg, ack, resumed, resume_failed, gap,
    /// refreshed, error), exactly as [`ServerMessage::from_json`] would;
    /// `Ok(None)` for any other type, whose fields are not read. For a
    /// wrapper that hands the rest to its application as text: in a
    /// browser it then carries no decoder of the rest.
    ///
    /// # Errors
    ///
    /// As [`ServerMessage::from_json`], for the control types only.
    pub fn control_from_json(text: &str) -> Result<Option<Self>, DecodeError> {
        decode::control_message(text)
    }

    /// [`ServerMessage::control_from_json`] for a caller that drops the
    /// error: the message if `text` is a control type that decodes, else
    /// `None`. No error text is made, so a browser build that uses only
    /// this carries none of the decoder's error formatting.
    pub fn control_if_any(text: &str) -> Option<Self> {
        decode::control_message_if_any(text)
    }

    /// The channel message in `text` ([`CHANNEL_TYPES`], or an `error`) if
    /// it is one that decodes, else `None`, without error texts: the same
    /// message [`ServerMessage::from_json`] gives for those types, and a
    /// browser build that uses only this carries no decoder of the others.
    pub fn channel_if_any(text: &str) -> Option<Self> {
        decode::channel_message_if_any(text)
    }

    /// Encodes the message as one text frame.
    pub fn to_json(&self) -> String {
        match self {
            Self::Echo { id, body } => fast::echo_reply(*id, body),
            other => encode(other),
        }
    }
}

/// Encodes [`ServerMessage::Push`] frames that share a body and a time,
/// byte for byte as [`ServerMessage::to_json`] would.
///
/// A burst sends thousands of pushes that differ only in `seq`; serde per
/// push (the body escaped again, a growing `String`) was the largest part of
/// a burst's CPU on the server. The JSON around `seq` is built once here, and
/// each frame is allocated at its exact length.
///
/// ```
/// use shared::{PushEncoder, ServerMessage};
///
/// let encoder = PushEncoder::new(1_700_000_000_000, "tick");
/// let push = ServerMessage::Push { seq: 7, sent_at_ms: 1_700_000_000_000, body: "tick".into() };
/// assert_eq!(encoder.encode(7), push.to_json());
/// ```
///
/// The same encoder also writes the push wrapped in a reliable-mode
/// [`ServerMessage::Msg`] ([`PushEncoder::encode_msg`]), with the body
/// escaped (twice, as `msg`'s `data` string) once for every session: a
/// broadcast escapes its body once, not once per client.
#[derive(Debug)]
pub struct PushEncoder {
    /// Everything after `seq`: the time, the escaped body and the closing brace.
    suffix: String,
    /// `suffix` escaped again as the inside of a JSON string, built on first use.
    msg_suffix: std::sync::OnceLock<String>,
}

impl PushEncoder {
    /// What comes before `seq`; serde writes the tag first, then the fields in order.
    const PREFIX: &'static str = r#"{"type":"push","seq":"#;

    /// An encoder of pushes of `body` queued at `sent_at_ms`.
    pub fn new(sent_at_ms: u64, body: &str) -> Self {
        let mut suffix = format!(r#","sent_at_ms":{sent_at_ms},"body":"#);
        suffix.push_str(&encode(&body));
        suffix.push('}');
        Self {
            suffix,
            msg_suffix: std::sync::OnceLock::new(),
        }
    }

    /// The largest frame [`PushEncoder::encode`] writes (its `seq` at 20 digits).
    pub fn max_len(&self) -> usize {
        Self::PREFIX.len() + 20 + self.suffix.len()
    }

    /// What comes before the push's `seq` inside a `msg`'s `data`.
    const MSG_DATA_PREFIX: &'static str = r#"{\"type\":\"push\",\"seq\":"#;

    /// The push numbered `push_seq` as the `data` of a reliable-mode
    /// [`ServerMessage::Msg`] numbered `seq`, byte for byte as
    /// `ServerMessage::Msg { seq, data: push.to_json() }.to_json()` would
    /// write it. JSON escapes character by character, so the escaped parts
    /// are escaped once and concatenated.
    pub fn encode_msg(&self, seq: u64, push_seq: u64) -> String {
        let msg_suffix = self.msg_suffix.get_or_init(|| {
            let quoted = encode(&self.suffix);
            // The suffix as a JSON string, without its quotes.
            quoted[1..quoted.len() - 1].to_owned()
        });
        let (mut seq_digits, mut push_digits) = (itoa::Buffer::new(), itoa::Buffer::new());
        let (seq_digits, push_digits) = (seq_digits.format(seq), push_digits.format(push_seq));
        const MSG_PREFIX: &str = r#"{"type":"msg","seq":"#;
        const DATA: &str = r#","data":""#;
        const END: &str = r#""}"#;
        let mut out = String::with_capacity(
            MSG_PREFIX.len()
                + seq_digits.len()
                + DATA.len()
                + Self::MSG_DATA_PREFIX.len()
                + push_digits.len()
                + msg_suffix.len()
                + END.len(),
        );
        for part in [
            MSG_PREFIX,
            seq_digits,
            DATA,
            Self::MSG_DATA_PREFIX,
            push_digits,
            msg_suffix,
            END,
        ] {
            out.push_str(part);
        }
        out
    }

    /// The push numbered `push_seq` in a reliable-mode `msg` numbered
    /// `seq`, as `protocol` frames it: [`PushEncoder::encode_msg`] in
    /// version 1, the push embedded as it is in version 2.
    pub fn encode_msg_in(&self, seq: u64, push_seq: u64, protocol: Protocol) -> String {
        match protocol {
            Protocol::V1 => self.encode_msg(seq, push_seq),
            Protocol::V2 => encode_msg_json(seq, &self.encode(push_seq), Protocol::V2),
        }
    }

    /// The push numbered `seq`.
    pub fn encode(&self, seq: u64) -> String {
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(seq);
        let mut out = String::with_capacity(Self::PREFIX.len() + digits.len() + self.suffix.len());
        out.push_str(Self::PREFIX);
        out.push_str(digits);
        out.push_str(&self.suffix);
        out
    }
}

/// WebSocket close codes used by the server, with their meaning.
///
/// Codes below 4000 are defined by RFC 6455 and the IANA registry; 4000 and
/// up are this application's own.
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down (reason `"server shutting down"`).
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the WebSocket protocol (`/echo`).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame was not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy violation: the client kept sending messages the server could
    /// not decode, or (without `--allow-client-ids`) chose its own
    /// `?client_id=`; the reason says which.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A message was larger than the server's limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The server hit an unexpected condition.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// Try again later: the client did not read fast enough and its outbound
    /// queue stayed full, or (reliable mode) it let the server's history of
    /// unacknowledged messages fill up; it may resume.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Kicked by an administrator (`DELETE /api/clients/{id}`), reason `"kicked"`.
    pub const KICKED: u16 = 4000;
    /// The connection sent nothing, not even a pong, for the idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4001;
    /// A newer connection with the same `client_id` replaced this one, reason
    /// `"replaced"` (or, in reliable mode, a newer connection resumed this
    /// one's session). Reconnecting would replace the newer one in turn, so a
    /// client should not.
    pub const REPLACED: u16 = 4002;
    /// Token mode: the connection's token expired and no `refresh` replaced
    /// it, reason `"token expired"`. A client reconnects with a new token
    /// (and resumes its session in reliable mode).
    pub const TOKEN_EXPIRED: u16 = 4003;
    /// Token mode: the connection's token was refused at connect, right
    /// after the upgrade and before any `welcome`. The reason names the
    /// cause: `"missing token"`, `"invalid token"`, `"token expired"`,
    /// `"wrong issuer"`, `"wrong audience"` or `"token lifetime too long"`
    /// (`exp` beyond the server's `--jwt-max-lifetime`). Reconnecting with
    /// the same token fails again: a client gets a new token first, or
    /// stops. Also sent to an open connection after three refused or
    /// rate-limited `refresh`es in a row, reason `"too many bad refreshes"`.
    pub const UNAUTHORIZED: u16 = 4401;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every message with the exact JSON the contract fixes.
    fn client_cases() -> Vec<(ClientMessage, &'static str)> {
        vec![
            (
                ClientMessage::Echo {
                    id: 42,
                    body: "hi \"there\"".into(),
                },
                r#"{"type":"echo","id":42,"body":"hi \"there\""}"#,
            ),
            (
                ClientMessage::Burst { count: 100_000 },
                r#"{"type":"burst","count":100000}"#,
            ),
            (
                ClientMessage::Ping { t: 12.5 },
                r#"{"type":"ping","t":12.5}"#,
            ),
            (
                ClientMessage::Resume {
                    session: "s1".into(),
                    token: "k".into(),
                    last_seq: 41,
                },
                r#"{"type":"resume","session":"s1","token":"k","last_seq":41}"#,
            ),
            (ClientMessage::Ack { seq: 7 }, r#"{"type":"ack","seq":7}"#),
            (
                ClientMessage::Msg {
                    seq: 7,
                    data: r#"{"type":"ping","t":1}"#.into(),
                },
                r#"{"type":"msg","seq":7,"data":"{\"type\":\"ping\",\"t\":1}"}"#,
            ),
            (
                ClientMessage::Refresh {
                    token: "eyJ.x.y".into(),
                },
                r#"{"type":"refresh","token":"eyJ.x.y"}"#,
            ),
        ]
    }

    /// A welcome from a server older than versioning has no `protocol`:
    /// it decodes, as version 0.
    #[test]
    fn welcome_without_protocol_is_version_zero() {
        let welcome =
            ServerMessage::from_json(r#"{"type":"welcome","client_id":"c","push_interval_ms":0}"#);
        assert!(
            matches!(
                welcome,
                Ok(ServerMessage::Welcome {
                    protocol: 0,
                    exp: None,
                    ..
                })
            ),
            "{welcome:?}"
        );
    }

    fn server_cases() -> Vec<(ServerMessage, &'static str)> {
        vec![
            (
                ServerMessage::Welcome {
                    client_id: "c-1".into(),
                    push_interval_ms: 1000,
                    session: None,
                    token: None,
                    protocol: 1,
                    exp: None,
                },
                r#"{"type":"welcome","client_id":"c-1","push_interval_ms":1000,"protocol":1}"#,
            ),
            (
                ServerMessage::Welcome {
                    client_id: "c-1".into(),
                    push_interval_ms: 1000,
                    session: None,
                    token: None,
                    protocol: 1,
                    exp: Some(1_700_000_900),
                },
                r#"{"type":"welcome","client_id":"c-1","push_interval_ms":1000,"protocol":1,"exp":1700000900}"#,
            ),
            (
                ServerMessage::Refreshed { exp: 1_700_000_900 },
                r#"{"type":"refreshed","exp":1700000900}"#,
            ),
            (
                ServerMessage::Welcome {
                    client_id: "c-1".into(),
                    push_interval_ms: 1000,
                    session: Some("s1".into()),
                    token: Some("k".into()),
                    protocol: 1,
                    exp: None,
                },
                r#"{"type":"welcome","client_id":"c-1","push_interval_ms":1000,"session":"s1","token":"k","protocol":1}"#,
            ),
            (
                ServerMessage::Msg {
                    seq: 3,
                    data: r#"{"type":"pong","t":1}"#.into(),
                },
                r#"{"type":"msg","seq":3,"data":"{\"type\":\"pong\",\"t\":1}"}"#,
            ),
            (ServerMessage::Ack { seq: 9 }, r#"{"type":"ack","seq":9}"#),
            (
                ServerMessage::Resumed { last_seq: 12 },
                r#"{"type":"resumed","last_seq":12}"#,
            ),
            (
                ServerMessage::ResumeFailed {
                    reason: ResumeFailure::UnknownSession,
                },
                r#"{"type":"resume_failed","reason":"unknown_session"}"#,
            ),
            (
                ServerMessage::ResumeFailed {
                    reason: ResumeFailure::BadToken,
                },
                r#"{"type":"resume_failed","reason":"bad_token"}"#,
            ),
            (
                ServerMessage::Gap { from: 13, to: 20 },
                r#"{"type":"gap","from":13,"to":20}"#,
            ),
            (
                ServerMessage::Echo {
                    id: u64::MAX,
                    body: "ünïcode ✓".into(),
                },
                r#"{"type":"echo","id":18446744073709551615,"body":"ünïcode ✓"}"#,
            ),
            (
                ServerMessage::Push {
                    seq: 1,
                    sent_at_ms: 1_700_000_000_000,
                    body: "tick".into(),
                },
                r#"{"type":"push","seq":1,"sent_at_ms":1700000000000,"body":"tick"}"#,
            ),
            (
                ServerMessage::BurstDone {
                    count: 3,
                    elapsed_ms: 12,
                },
                r#"{"type":"burst_done","count":3,"elapsed_ms":12}"#,
            ),
            (
                ServerMessage::Pong { t: -0.25 },
                r#"{"type":"pong","t":-0.25}"#,
            ),
            (
                ServerMessage::Error {
                    code: ErrorCode::Malformed,
                    message: "bad".into(),
                    channel: None,
                    id: None,
                },
                r#"{"type":"error","code":"malformed","message":"bad"}"#,
            ),
            (
                ServerMessage::Error {
                    code: ErrorCode::BurstBusy,
                    message: "busy".into(),
                    channel: None,
                    id: None,
                },
                r#"{"type":"error","code":"burst_busy","message":"busy"}"#,
            ),
        ]
    }

    #[test]
    fn the_push_encoder_writes_what_serde_writes() {
        let bodies = [
            "",
            "burst",
            "tick",
            "quote \" backslash \\ newline \n tab \t",
            "ünïcode ✓ \u{1}",
        ];
        for body in bodies {
            for sent_at_ms in [0, 1_700_000_000_000, u64::MAX] {
                let encoder = PushEncoder::new(sent_at_ms, body);
                for seq in [0, 1, 9, 10, 99, 12_345, u64::MAX] {
                    let push = ServerMessage::Push {
                        seq,
                        sent_at_ms,
                        body: body.into(),
                    };
                    let encoded = encoder.encode(seq);
                    assert_eq!(encoded, push.to_json());
                    assert_eq!(
                        encoded.len(),
                        encoded.capacity(),
                        "allocated at its exact length"
                    );
                    let msg = ServerMessage::Msg {
                        seq: seq / 2,
                        data: push.to_json(),
                    };
                    let wrapped = encoder.encode_msg(seq / 2, seq);
                    assert_eq!(wrapped, msg.to_json());
                    assert_eq!(encoder.encode_msg_in(seq / 2, seq, Protocol::V1), wrapped);
                    assert_eq!(
                        encoder.encode_msg_in(seq / 2, seq, Protocol::V2),
                        encode_msg(seq / 2, &push.to_json(), Protocol::V2)
                    );
                    assert_eq!(wrapped.len(), wrapped.capacity());
                    assert!(encoded.len() <= encoder.max_len());
                    assert_eq!(ServerMessage::from_json(&encoded).ok(), Some(push));
                }
            }
        }
    }

    #[test]
    fn client_messages_have_the_contract_json_and_round_trip() {
        for (msg, json) in client_cases() {
            assert_eq!(msg.to_json(), json);
            assert_eq!(ClientMessage::from_json(json), Ok(msg));
        }
    }

    #[test]
    fn server_messages_have_the_contract_json_and_round_trip() {
        for (msg, json) in server_cases() {
            assert_eq!(msg.to_json(), json);
            assert_eq!(ServerMessage::from_json(json), Ok(msg));
        }
    }

    #[test]
    fn every_error_code_round_trips() {
        for code in [
            ErrorCode::Malformed,
            ErrorCode::UnknownType,
            ErrorCode::InvalidFields,
            ErrorCode::BurstTooLarge,
            ErrorCode::NotReliable,
            ErrorCode::OutOfOrder,
            ErrorCode::BurstBusy,
            ErrorCode::BadToken,
            ErrorCode::RateLimited,
            ErrorCode::BadChannel,
            ErrorCode::UnknownNamespace,
            ErrorCode::PermissionDenied,
            ErrorCode::TooManySubscriptions,
            ErrorCode::PublishTooLarge,
            ErrorCode::Unavailable,
            ErrorCode::ChannelFull,
            ErrorCode::Other("from_the_future".into()),
        ] {
            // Known codes have their own wire names, not `Other`.
            assert_eq!(
                matches!(code, ErrorCode::Other(_)),
                code.as_str() == "from_the_future"
            );
            assert_eq!(ErrorCode::from(code.as_str().to_owned()), code);
            let msg = ServerMessage::Error {
                code: code.clone(),
                message: String::new(),
                channel: None,
                id: None,
            };
            let back = ServerMessage::from_json(&msg.to_json()).unwrap();
            assert_eq!(back, msg);
            assert_eq!(String::from(code.clone()), code.to_string());
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert_eq!(
            ClientMessage::from_json(r#"{"type":"ping","t":1,"extra":[1,2]}"#),
            Ok(ClientMessage::Ping { t: 1.0 })
        );
    }

    #[test]
    fn malformed_input_is_a_typed_error() {
        for text in [
            "",
            "{",
            "not json",
            "[1,2]",
            "\"echo\"",
            "{\"type\":\"echo\"",
        ] {
            let err = ClientMessage::from_json(text).unwrap_err();
            assert!(
                matches!(err, DecodeError::Malformed(_)),
                "{text:?} gave {err:?}"
            );
            assert_eq!(err.code(), ErrorCode::Malformed);
        }
    }

    #[test]
    fn missing_and_unknown_types_are_told_apart_from_bad_fields() {
        assert_eq!(
            ClientMessage::from_json(r#"{"id":1}"#),
            Err(DecodeError::MissingType)
        );
        assert_eq!(
            ClientMessage::from_json(r#"{"type":"teleport"}"#),
            Err(DecodeError::UnknownType("teleport".into()))
        );
        assert_eq!(
            ClientMessage::from_json(r#"{"type":7}"#),
            Err(DecodeError::UnknownType("7".into()))
        );
        // A server-only type is unknown to the server.
        assert!(matches!(
            ClientMessage::from_json(r#"{"type":"welcome","client_id":"x","push_interval_ms":1}"#),
            Err(DecodeError::UnknownType(_))
        ));
        let err = ClientMessage::from_json(r#"{"type":"echo","id":"one","body":"x"}"#).unwrap_err();
        assert!(matches!(&err, DecodeError::InvalidFields { ty, .. } if ty == "echo"));
        assert_eq!(err.code(), ErrorCode::InvalidFields);
        let err = ClientMessage::from_json(r#"{"type":"burst","count":-1}"#).unwrap_err();
        assert!(matches!(err, DecodeError::InvalidFields { .. }));
        let err = ClientMessage::from_json(r#"{"type":"burst","count":4294967296}"#).unwrap_err();
        assert!(matches!(err, DecodeError::InvalidFields { .. }));
    }

    #[test]
    fn resume_failures_print_as_on_the_wire() {
        for reason in [
            ResumeFailure::UnknownSession,
            ResumeFailure::BadToken,
            ResumeFailure::NotFirst,
        ] {
            let json = ServerMessage::ResumeFailed { reason }.to_json();
            assert!(json.contains(&format!("\"{reason}\"")), "{json}");
        }
        assert!(matches!(
            ServerMessage::from_json(r#"{"type":"resume_failed","reason":"tomorrow"}"#),
            Err(DecodeError::InvalidFields { .. })
        ));
    }

    #[test]
    fn decode_errors_read_well() {
        let err = ClientMessage::from_json(r#"{"type":"teleport"}"#).unwrap_err();
        assert_eq!(err.to_string(), "unknown message type \"teleport\"");
    }
}
