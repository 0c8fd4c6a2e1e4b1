//! The coordinator's vocabulary with its glue: roles, what happened
//! ([`Input`]), what to do ([`Effect`]), and the leader's socket port
//! ([`SocketCall`], [`SocketReport`]).

use super::wire::{Envelope, Frame, LinkState, Refusal, Session, Shared, TabConfig, TabId};
use crate::channel::{
    ChannelEvent, Presence, PresenceError, PresenceStats, PublishError, RawJson, StreamPosition,
};
use shared::ErrorCode;

/// A tab's part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Holds the lock and the socket.
    Leader,
    /// Talks to the leader (or waits for one).
    Follower,
    /// Not sharing: a socket of its own (config mismatch, no browser support).
    Alone,
}

/// What [`super::Tabs::send`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TabSend {
    /// The leader's own: handed to its socket.
    Sent,
    /// Forwarded to the leader; counted against this tab's bound until confirmed.
    Forwarded,
    /// No leader right now: kept, and forwarded to the next one.
    Queued,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The Web Lock was granted to this tab: it leads.
    LockAcquired,
    /// The lock asked for with [`Effect::TryLock`] is held by another tab.
    LockBusy,
    /// A post on the channel, as posted: parsed here ([`Envelope::from_json`]),
    /// so that a post of another wire version is told apart from noise.
    Posted(String),
    /// Another tab's broadcast, parsed.
    Channel(Envelope),
    /// The heartbeat interval fired.
    Tick,
    /// Web Locks or `BroadcastChannel` is missing: go alone.
    Unsupported,
    /// The leader's socket reports (leader only).
    Socket(SocketReport),
}

/// What the leader's socket adapter reports.
#[derive(Debug, Clone, PartialEq)]
pub enum SocketReport {
    /// Plain mode: the oldest application frame handed over was written.
    Written,
    /// Reliable mode: the server acknowledged client seqs up to `seq`.
    Acked {
        /// The cumulative seq.
        seq: u64,
    },
    /// A message for the application (reliable mode: with its server seq).
    Inbound {
        /// Its server seq, in reliable mode.
        seq: Option<u64>,
        /// The message.
        frame: Frame,
    },
    /// Reliable mode: the session the server named in its `welcome`.
    Session(Session),
    /// Reliable mode: the session could not be resumed (the driver's
    /// [`crate::Event::ResumeFailed`]); the connection goes on with a new
    /// one. The first `unconfirmed` pending messages (those the old session
    /// numbered) may or may not have been processed: handed back to their
    /// tabs, not resent. The rest go out in the new session.
    ResumeFailed {
        /// The new session (from the connection's `welcome`), if named.
        session: Option<Session>,
        /// How many messages the driver handed back.
        unconfirmed: usize,
    },
    /// The connection's state changed.
    State(LinkState),
    /// The leader's driver said this about `channel` (its one server
    /// subscription); `position`: the driver's epoch and last offset
    /// delivered after it.
    Channel {
        /// The channel.
        channel: String,
        /// The position after the event.
        position: Option<StreamPosition>,
        /// What happened.
        event: ChannelEvent,
    },
    /// Reliable mode: the driver handled server messages up to `seq` that
    /// it delivered no message for (channel answers).
    Seen {
        /// The last server seq handled.
        seq: u64,
    },
    /// The server answered `tab`'s presence query `id` about `channel`.
    Presence {
        /// The asking tab.
        tab: TabId,
        /// Its id of the query.
        id: String,
        /// The channel.
        channel: String,
        /// The answer, or the server's code and explanation.
        result: Result<PresenceAnswer, (ErrorCode, String)>,
    },
    /// The server answered publish `id`: its offset, or its refusal.
    Published {
        /// The publish id.
        id: String,
        /// The offset, or the server's code and explanation.
        result: Result<u64, (ErrorCode, String)>,
    },
}

/// What the leader asks of its socket.
#[derive(Debug, Clone, PartialEq)]
pub enum SocketCall {
    /// Connect, carrying on from `resume`: in reliable mode resume its
    /// session (if any) from `last_in` and resend `pending` numbered from
    /// `acked_seq + 1`; in plain mode write `pending` first.
    Open {
        /// The shared state.
        resume: Box<Shared>,
    },
    /// Write this application message (numbered next, in reliable mode).
    Send(Frame),
    /// Other tabs carry on: stop without ending the session.
    Release,
    /// The last tab left: close the connection for good.
    Close,
    /// Subscribe to `channel` (its first reference), from `since`.
    Subscribe {
        /// The channel.
        channel: String,
        /// Where to start, if known.
        since: Option<StreamPosition>,
    },
    /// Unsubscribe from `channel` (its last reference went).
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// Ask `channel`'s presence for `tab` (its query `id`); the answer is a
    /// [`SocketReport::Presence`].
    Query {
        /// The asking tab.
        tab: TabId,
        /// Its id of the query.
        id: String,
        /// The channel.
        channel: String,
        /// `presence_stats` rather than `presence`.
        stats: bool,
    },
    /// Publish `data` to `channel` with the idempotency key `id` (32 hex
    /// digits); its answer is a [`SocketReport::Published`].
    Publish {
        /// The channel.
        channel: String,
        /// The publish id.
        id: String,
        /// What to publish.
        data: RawJson,
    },
}

/// An event for this tab's application.
#[derive(Debug, Clone, PartialEq)]
pub enum TabEvent {
    /// A message from the server.
    Message(Frame),
    /// This tab's role or the number of tabs changed.
    Role {
        /// The role.
        role: Role,
        /// Tabs sharing the connection, this one included (0 when alone).
        tabs: usize,
    },
    /// The shared connection's state changed.
    State(LinkState),
    /// Reliable mode: the session could not be resumed; these messages of
    /// this tab may or may not have been processed (as the driver's
    /// [`crate::Event::ResumeFailed`]).
    Unconfirmed(Vec<Frame>),
    /// Sharing is off for this tab: its config differs from the leader's.
    ConfigMismatch {
        /// The leader's config.
        leader: TabConfig,
    },
    /// Sharing is off for this tab: the browser lacks Web Locks or `BroadcastChannel`.
    Unsupported,
    /// Sharing is off for this tab: a tab of another build speaks another
    /// wire version on the channel (0: a build without a version field).
    OtherWire {
        /// The version heard.
        version: u64,
    },
    /// The leader refused this tab's message: it is not sent.
    Refused {
        /// The message.
        frame: Frame,
        /// Why.
        reason: Refusal,
    },
    /// An event of this tab's subscription `serial` to `channel`.
    Channel {
        /// The channel.
        channel: String,
        /// The subscription (the serial [`super::Tabs::subscribe`] was given).
        serial: u64,
        /// What happened.
        event: ChannelEvent,
    },
    /// This tab's presence query `id` ([`super::Tabs::presence`]) was answered.
    Presence {
        /// The query's id.
        id: String,
        /// The answer, or why not.
        result: Result<PresenceAnswer, PresenceError>,
    },
    /// This tab's publish `id` was answered.
    Published {
        /// The publish id.
        id: String,
        /// Its offset, or why not.
        result: Result<u64, PublishError>,
    },
}

/// The answer to a presence query: the members, or how many.
#[derive(Debug, Clone, PartialEq)]
pub enum PresenceAnswer {
    /// `presence`.
    Members(Presence),
    /// `presence_stats`.
    Stats(PresenceStats),
}

/// What the glue must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Post on the channel (as [`Envelope::to_json`]).
    Broadcast(Envelope),
    /// Ask for the lock if no tab holds it (`ifAvailable`): granted,
    /// [`Input::LockAcquired`] (no other tab: lead at once); held,
    /// [`Input::LockBusy`].
    TryLock,
    /// Wait in line for the lock; its grant is [`Input::LockAcquired`].
    /// Asked only once the tab knows the leader's state, so that a tab never
    /// leads from nothing while a state exists.
    RequestLock,
    /// Take the lock from a leader that stopped answering.
    StealLock,
    /// Release the lock, or withdraw the request.
    ReleaseLock,
    /// The leader's socket ([`SocketCall`]).
    DriveSocket(SocketCall),
    /// Deliver to this tab's application.
    Deliver(TabEvent),
    /// Run a socket of this tab's own, and send it these first. A leader
    /// keeps the socket it drives as its own: the other tabs' messages it
    /// accepted go out through it, as they would have.
    GoAlone {
        /// The messages no leader accepted, oldest first.
        unsent: Vec<Frame>,
    },
}
