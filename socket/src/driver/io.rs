//! The driver's vocabulary with its glue: what happened ([`Input`]), what
//! to do ([`Effect`]), and the timers ([`TimerKind`], [`TimerId`]).

use crate::cause::ErrorCause;
use crate::message::{Event, Message};
use crate::token::Token;

/// The timers the driver uses, one of each at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// The backoff before the next connection attempt.
    Retry,
    /// A connection attempt that is not open by then is abandoned.
    ConnectTimeout,
    /// The heartbeat's check (a ping after silence, death after no answer).
    Heartbeat,
    /// Reliable mode: acknowledge what arrived since the last ack.
    Ack,
    /// Token mode: fetch a fresh token for the in-band `refresh`, ahead of
    /// the current one's `exp` (see [`super::auth`]).
    Refresh,
}

impl TimerKind {
    /// How many kinds there are: the size of a table of timer slots.
    pub const COUNT: usize = 5;
}

/// One start of a timer; a fire reports it back ([`Input::TimerFired`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    /// Which timer.
    pub kind: TimerKind,
    /// Which start of it: a fire of an earlier start is ignored.
    pub serial: u64,
}

/// What happened, fed to [`Driver::handle`](super::Driver::handle).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Input {
    /// Socket `generation` opened.
    Opened {
        /// Which socket ([`Effect::OpenSocket`]).
        generation: u64,
    },
    /// Socket `generation` could not even be created; it counts as a failed
    /// attempt ([`Event::Error`] with [`crate::TransportError::Connect`],
    /// then the connect timeout fires at once).
    OpenFailed {
        /// Which socket.
        generation: u64,
        /// What the transport said.
        error: ErrorCause,
    },
    /// A frame arrived on socket `generation`.
    Message {
        /// Which socket.
        generation: u64,
        /// The frame.
        message: Message,
    },
    /// Socket `generation` closed.
    Closed {
        /// Which socket.
        generation: u64,
        /// The close code (1006 for a connection lost without a close frame).
        code: u16,
        /// The close reason.
        reason: String,
        /// Whether the closing handshake completed.
        was_clean: bool,
    },
    /// Socket `generation` reported an error (its close follows); it is
    /// reported as [`crate::TransportError::Socket`].
    Error {
        /// Which socket.
        generation: u64,
        /// What it said.
        error: ErrorCause,
    },
    /// The transport could not write an [`Effect::Write`] whose `hand_back`
    /// was true (the socket was closing): the message goes back to the head
    /// of the queue, for the next connection. Report them in effect order.
    WriteFailed {
        /// Which socket.
        generation: u64,
        /// The effect's message.
        message: Message,
    },
    /// A timer started with [`Effect::StartTimer`] fired.
    TimerFired(TimerId),
    /// The network went offline: retries pause.
    Offline,
    /// The network came back: retry at once if waiting.
    Online,
    /// The page became visible: retry at once if waiting (and online).
    Visible,
    /// The token provider run for [`Effect::FetchToken`] `serial` finished:
    /// a token, or why not (reported as [`crate::AuthError::Provider`]).
    /// Results of a fetch that was superseded are ignored.
    TokenFetched {
        /// The fetch ([`Effect::FetchToken`]).
        serial: u64,
        /// The provider's answer.
        result: Result<Token, ErrorCause>,
    },
}

/// What the glue must do, in order ([`Driver::poll_effect`](super::Driver::poll_effect)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Effect {
    /// Create socket `generation` for `url`, replacing (and closing, if
    /// still open) any previous one. Report its events with this generation.
    OpenSocket {
        /// Its generation.
        generation: u64,
        /// The URL to open.
        url: String,
        /// Token mode: the token to present, from the provider just now. A
        /// browser adds it to the URL's query ([`crate::url_with_token`]);
        /// a native client sends `Authorization: Bearer`.
        token: Option<Token>,
    },
    /// Write `message` on socket `generation`.
    Write {
        /// Which socket.
        generation: u64,
        /// The frame.
        message: Message,
        /// An application message the driver holds nowhere else: if it
        /// cannot be written, hand it back with [`Input::WriteFailed`]. When
        /// false (a control frame, or a reliable one kept for resending),
        /// a failed write only shows up as the socket's close.
        hand_back: bool,
    },
    /// Close socket `generation` with `code` and `reason`, and stop
    /// listening to it.
    CloseSocket {
        /// Which socket.
        generation: u64,
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// The wrapper closed for good: forget the current socket (closing it
    /// without a code if it is still open) and stop listening to it.
    DropSocket,
    /// Start timer `id.kind` (replacing a running one of that kind); when it
    /// fires after `delay_ms`, feed [`Input::TimerFired`] with `id`.
    StartTimer {
        /// The timer and this start of it.
        id: TimerId,
        /// Milliseconds until it fires.
        delay_ms: u64,
    },
    /// Stop the timer of this kind.
    StopTimer(TimerKind),
    /// Run the application's open hook now, then call
    /// [`Driver::open_hook_done`](super::Driver::open_hook_done) with this generation.
    RunOpenHook {
        /// The connection it runs for.
        generation: u64,
    },
    /// Token mode: call the application's token provider
    /// ([`crate::Config::token`]) and feed its answer back as
    /// [`Input::TokenFetched`] with this `serial`. A glue may cancel a fetch
    /// when it starts the next one (its result would be ignored anyway).
    FetchToken {
        /// Which fetch.
        serial: u64,
    },
    /// Deliver an event to the application.
    Emit(Event),
}
