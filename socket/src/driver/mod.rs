//! The socket's rules as a pure state machine: inputs in, effects out.
//!
//! [`Driver`] owns the connection [`machine`], the send [`Queue`], the
//! [`reliable`] window, the heartbeat's [`liveness`], token mode's
//! [`auth`] bookkeeping and the counters. It
//! reads no clock (every input carries `now`, in milliseconds), draws its
//! jitter from a seeded generator it owns, and touches no socket and no
//! timer: a transport glue (the browser's in `transport/web`, a native one) feeds it
//! inputs and performs the [`Effect`]s it queues. So every rule is unit-tested
//! natively (`driver/tests/`, one file per group of rules), and every transport follows the same rules.
//!
//! # Inputs
//!
//! * user calls, as methods: [`Driver::start`], [`Driver::send`],
//!   [`Driver::close`], [`Driver::reconnect`], [`Driver::set_queue_capacity`],
//!   [`Driver::take_queued`], [`Driver::set_open_hook`],
//!   [`Driver::open_hook_done`]; their results come back at once;
//! * what happened, as [`Input`]s to [`Driver::handle`]: the transport's
//!   open, message, close, error, a write it could not do, a timer that
//!   fired, the network going offline or online, the page becoming visible,
//!   the token provider's answer.
//!
//! # Effects
//!
//! Every call appends [`Effect`]s to a FIFO that the glue drains with
//! [`Driver::poll_effect`] and performs in order: open a socket, write a
//! frame, close or drop the socket, start or stop a timer, run the open
//! hook, fetch a token, emit an [`Event`]. The events of one call come after its other
//! effects, so the application sees a state change once its writes are out
//! (the open hook and the flush included).
//!
//! Sockets carry a generation: inputs of a socket that was replaced carry an
//! older one and are ignored, so at most one socket is ever live. Timers
//! carry a [`TimerId`]: a fire of a timer that was stopped or restarted since
//! is ignored, so the glue need not worry about a fire already on its way.
//! There is at most one timer per [`TimerKind`]; all are one-shot.
//!
//! # Writes
//!
//! [`Driver::send`] answers [`SendOutcome::Sent`] when it queues the
//! [`Effect::Write`]: the driver cannot ask the socket. A transport that
//! finds it closing hands the message back with [`Input::WriteFailed`]; it
//! goes back to the head of the queue, in order, and later sends queue
//! behind it until the next connection. So nothing is lost, and no
//! transport failure is reported as a send error.
//!
//! # The open hook
//!
//! When new messages may go out on a fresh connection (at once; in token
//! mode, or in reliable mode with no session yet, once the `welcome` came;
//! in reliable mode with a session, once the `resume` is answered and the
//! unacknowledged messages resent), a driver with a hook ([`Driver::set_open_hook`]) queues
//! [`Effect::RunOpenHook`] and waits. The glue runs the application's hook
//! when it reaches that effect; whatever the hook sends goes out ahead of the
//! queue (even a full one). Then the glue calls [`Driver::open_hook_done`],
//! which flushes the queue and emits [`Event::Open`] after the events of the
//! step that opened.
//!
//! # Re-entrancy: the contract with the glue
//!
//! The driver is a plain `&mut self` machine: one call at a time. The glue
//! never holds its borrow of the driver while it runs application code (the
//! open hook, event callbacks), so that code may call the driver (send,
//! close...): those calls append effects to the same FIFO, behind the ones
//! already queued. One pump drains the FIFO: a pump started while another
//! runs (a callback that sends, then pumps) returns at once, and the running
//! pump performs the new effects after the current one. Inputs that arrive
//! while the driver is borrowed (a transport callback during a step) are
//! queued by the glue and fed after the step, never dropped.
//!
//! # Example: a glue loop
//!
//! ```
//! use buffered_socket::driver::{Driver, Effect, Input};
//! use buffered_socket::{Config, Event};
//!
//! let mut driver = Driver::new(Config::new("ws://127.0.0.1:1/ws"), 42);
//! driver.start(0.0);
//! driver.send("queued until open").unwrap();
//! let mut written = Vec::new();
//! // The glue's pump: perform every effect, in order. A real glue creates
//! // sockets and timers here and feeds their callbacks back as inputs.
//! while let Some(effect) = driver.poll_effect() {
//!     match effect {
//!         Effect::OpenSocket { generation, .. } => {
//!             // The socket opened: feed it back (a real glue does this from its callback).
//!             driver.handle(Input::Opened { generation }, 5.0);
//!         }
//!         Effect::Write { message, .. } => written.push(message),
//!         Effect::RunOpenHook { generation } => driver.open_hook_done(generation),
//!         Effect::Emit(Event::Open) => println!("open"),
//!         _ => {}
//!     }
//! }
//! assert_eq!(written, ["queued until open".into()]);
//! ```

pub mod auth;
mod channels;
mod io;
pub mod liveness;
pub mod machine;
mod queue;
pub mod reliable;
mod steps;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use crate::Error;
use crate::config::Config;
use crate::message::{
    CloseInfo, DropReason, Event, Message, SendError, SendOutcome, State, Stats, TransportError,
};
use auth::Auth;
pub use channels::{PublishAnswer, Query, QueryAnswer};
pub use io::{Effect, Input, TimerId, TimerKind};
use liveness::Liveness;
use machine::{Input as Step, Machine};
pub use queue::Queue;
use reliable::Reliable;
use steps::Unsent;

#[derive(Debug, Default)]
struct Counters {
    messages_sent: u64,
    bytes_sent: u64,
    messages_received: u64,
    bytes_received: u64,
    dropped: u64,
    gaps: u64,
}

/// A running timer: which start, and the connection it was started for.
#[derive(Debug, Clone, Copy)]
struct Armed {
    serial: u64,
    generation: u64,
}

/// `splitmix64`: small, seeded, good enough for jitter, same on every target.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    /// Uniform in `[0, 1)`.
    fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The socket's rules; see the [module docs](self).
pub struct Driver {
    config: Config,
    connect_url: String,
    machine: Machine,
    queue: Queue,
    reliable: Option<Reliable>,
    /// Token mode's bookkeeping, with a token provider only.
    auth: Option<Auth>,
    /// Epoch milliseconds minus `now` ([`Driver::set_wall_clock_offset_ms`]).
    wall_clock_offset_ms: f64,
    /// Open, but the server's `welcome` has not come yet; new messages
    /// wait. Token mode: it says the token was accepted. Reliable mode with
    /// no session yet: it names the session, and a message numbered before
    /// it could not be resumed on the next connection.
    awaiting_welcome: bool,
    liveness: Option<Liveness>,
    counters: Counters,
    rng: Rng,
    timers: [Option<Armed>; TimerKind::COUNT],
    next_serial: u64,
    /// The generation of the socket the glue holds, if any.
    live: Option<u64>,
    /// The open socket takes writes (false once a write came back).
    writable: bool,
    /// Messages handed back by [`Input::WriteFailed`], oldest first.
    unwritten: Vec<Message>,
    /// Hand-backs of a socket that is no longer open: its generation and how
    /// many of them are at the head of the queue, so the next goes after them.
    stale_put_back: Option<(u64, usize)>,
    has_open_hook: bool,
    /// The generation whose [`Effect::RunOpenHook`] awaits its done.
    hook_pending: Option<u64>,
    /// Set by the call that queued the hook: its events wait for the done.
    hook_started: bool,
    /// Events of the step that queued the hook.
    held: Vec<Event>,
    /// Events of the current call, emitted at its end.
    events: Vec<Event>,
    effects: VecDeque<Effect>,
    /// Channels' table (`channels.rs`), from the first subscribe or publish.
    channels: Option<Box<dyn channels::ChannelRules>>,
    /// Reliable mode: channel frames go at the top level, unnumbered (a
    /// leader's driver shared across tabs: its session numbers only the
    /// tabs' messages).
    unnumbered_channels: bool,
}

impl Driver {
    /// A driver for `config`, not started; `seed` feeds the backoff's jitter
    /// (give each wrapper a different one, from the platform's randomness).
    pub fn new(config: Config, seed: u64) -> Self {
        let machine = Machine::new(
            config.url.clone(),
            config.backoff,
            config.min_uptime_ms,
            config.should_reconnect.clone(),
        );
        let queue = Queue::new(
            config.queue_capacity,
            config.queue_max_bytes,
            config.overflow,
        );
        Self {
            connect_url: config.connect_url(),
            reliable: config.reliable.then(Reliable::new),
            auth: config.token.as_ref().map(|_| Auth::default()),
            wall_clock_offset_ms: 0.0,
            awaiting_welcome: false,
            config,
            machine,
            queue,
            liveness: None,
            counters: Counters::default(),
            rng: Rng(seed),
            timers: [None; TimerKind::COUNT],
            next_serial: 0,
            live: None,
            writable: false,
            unwritten: Vec::new(),
            stale_put_back: None,
            has_open_hook: false,
            hook_pending: None,
            hook_started: false,
            held: Vec::new(),
            events: Vec::new(),
            effects: VecDeque::new(),
            channels: None,
            unnumbered_channels: false,
        }
    }

    /// The next effect to perform, oldest first.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// Every pending effect, oldest first.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        self.effects.drain(..).collect()
    }

    /// Starts connecting (once; later calls do nothing while not closed).
    pub fn start(&mut self, now: f64) {
        self.step(Step::Start, now);
        self.finish();
    }

    /// Feeds what happened at `now`.
    pub fn handle(&mut self, input: Input, now: f64) {
        match input {
            Input::Opened { generation } => self.step(Step::Opened { generation }, now),
            Input::OpenFailed { generation, error } => {
                if generation == self.machine.generation() && self.live == Some(generation) {
                    self.live = None;
                    self.events
                        .push(Event::Error(TransportError::Connect(error)));
                    // Times out at once: the normal retry path.
                    self.start_timer(TimerKind::ConnectTimeout, 0);
                }
            }
            Input::Message {
                generation,
                message,
            } => self.receive(generation, message, now),
            Input::Closed {
                generation,
                code,
                reason,
                was_clean,
            } => {
                let close = CloseInfo {
                    url: self.connect_url.clone(),
                    code,
                    reason,
                    was_clean,
                };
                self.closed(generation, close, now);
            }
            Input::Error { generation, error } => {
                if generation == self.machine.generation() {
                    self.events
                        .push(Event::Error(TransportError::Socket(error)));
                }
            }
            Input::WriteFailed {
                generation,
                message,
            } => self.write_failed(generation, message),
            Input::TimerFired(id) => self.timer_fired(id, now),
            Input::Offline => self.step(Step::Offline, now),
            Input::Online => self.step(Step::Online, now),
            Input::Visible => self.step(Step::Visible, now),
            Input::TokenFetched { serial, result } => self.token_fetched(serial, result, now),
        }
        self.finish();
    }

    /// Sends now if open; otherwise queues for the next open.
    ///
    /// # Errors
    ///
    /// Every error gives the message back: [`SendError::Closed`] after
    /// [`Driver::close`] (or when the attempts ran out),
    /// [`SendError::BinaryNotReliable`] for binary in reliable mode,
    /// [`SendError::QueueFull`] and [`SendError::TooLarge`] from the queue.
    pub fn send(&mut self, message: impl Into<Message>) -> Result<SendOutcome, SendError> {
        let result = self.send_inner(message.into());
        self.finish();
        result
    }

    fn send_inner(&mut self, message: Message) -> Result<SendOutcome, SendError> {
        let reliable = self.reliable.is_some();
        let ready = self.reliable.as_ref().is_none_or(Reliable::ready) && !self.awaiting_welcome;
        match self.machine.state() {
            State::Closed => Err(SendError::Closed(message)),
            _ if reliable && matches!(message, Message::Binary(_)) => {
                Err(SendError::BinaryNotReliable(message))
            }
            // Reliable mode: written messages are kept, so they need room too.
            State::Open if ready && reliable && !self.queue.has_room(message.len()) => {
                self.enqueue(message)
            }
            // The open hook's messages go out ahead of the queue it precedes.
            State::Open if ready && (self.queue.is_empty() || self.hook_pending.is_some()) => {
                match self.write_app(message) {
                    Ok(()) => Ok(SendOutcome::Sent),
                    Err(Unsent::Refused(err)) => Err(err),
                    Err(Unsent::Kept) => Ok(SendOutcome::Queued),
                    Err(Unsent::NotOpen(message)) => self.enqueue(message),
                }
            }
            _ => self.enqueue(message),
        }
    }

    /// Closes for good with `code` and `reason`: no reconnect, timers
    /// stopped, later sends fail with [`SendError::Closed`]. Queued messages
    /// stay queued ([`Driver::take_queued`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCloseCode`] unless `code` is 1000 or 3000-4999 (what
    /// browsers allow), [`Error::ReasonTooLong`] over 123 bytes.
    pub fn close(&mut self, code: u16, reason: &str, now: f64) -> Result<(), Error> {
        check_close(code, reason)?;
        let reason = reason.to_owned();
        self.step(Step::UserClose { code, reason }, now);
        self.finish();
        Ok(())
    }

    /// Reconnects now with the attempt counter reset: after a close, after
    /// the attempts ran out, or to replace a live connection.
    pub fn reconnect(&mut self, now: f64) {
        self.step(Step::Reconnect, now);
        self.finish();
    }

    /// Changes the queue capacity; messages that no longer fit are dropped
    /// newest first, each reported with [`Event::Dropped`].
    pub fn set_queue_capacity(&mut self, capacity: usize) {
        let evicted = self.queue.set_capacity(capacity);
        self.report_dropped(evicted, DropReason::CapacityLowered);
        self.finish();
    }

    /// Takes every queued message back out, oldest first.
    pub fn take_queued(&mut self) -> Vec<Message> {
        self.queue.take_all()
    }

    /// Whether the application has an open hook: with one, each open queues
    /// [`Effect::RunOpenHook`] and waits for [`Driver::open_hook_done`].
    pub fn set_open_hook(&mut self, present: bool) {
        self.has_open_hook = present;
    }

    /// The open hook of connection `generation` ran: flush the queue and
    /// report [`Event::Open`] (unless the hook closed or replaced the
    /// connection: then the queue waits for the next open). A call for
    /// another generation, or without a pending hook, does nothing.
    pub fn open_hook_done(&mut self, generation: u64) {
        if self.hook_pending != Some(generation) {
            return;
        }
        self.hook_pending = None;
        self.flush(generation);
        let mut events = std::mem::take(&mut self.held);
        events.append(&mut self.events);
        self.events = events;
        self.finish();
    }

    /// Reliable mode: carries on with `reliable`, a window another client
    /// of the session left ([`Reliable::restored`]); call it before
    /// [`Driver::start`]. Does nothing without reliable mode.
    pub fn restore_reliable(&mut self, reliable: Reliable) {
        if self.reliable.is_some() {
            self.reliable = Some(reliable);
            self.sync_reserved();
        }
    }

    /// Writes channel frames (`subscribe`, `unsubscribe`, `publish`) at the
    /// top level in reliable mode too, as in plain mode: the table writes
    /// each again on the next connection (the server accepts them there and
    /// numbers its answers). A driver shared across tabs does, so that its
    /// session numbers the tabs' messages alone (each new leader resends
    /// them with the seqs they had); its tabs resend their publishes
    /// themselves.
    pub fn unnumbered_channels(&mut self) {
        self.unnumbered_channels = true;
    }

    /// Reliable mode's window: its session, its last server seq (after a
    /// [`Input::Message`], the seq of a message it delivered), its acks.
    pub fn reliable(&self) -> Option<&Reliable> {
        self.reliable.as_ref()
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.machine.state()
    }

    /// The generation of the current socket.
    pub fn generation(&self) -> u64 {
        self.machine.generation()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Messages waiting in the queue.
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Counters and queue figures at `now`.
    pub fn stats(&self, now: f64) -> Stats {
        let c = &self.counters;
        let reliable = self.reliable.as_ref();
        Stats {
            queue_len: self.queue.len(),
            queue_capacity: self.queue.capacity(),
            queue_bytes: self.queue.bytes(),
            messages_sent: c.messages_sent,
            bytes_sent: c.bytes_sent,
            messages_received: c.messages_received,
            bytes_received: c.bytes_received,
            dropped: c.dropped,
            reconnects: self.machine.reconnects(),
            attempt: self.machine.attempt(),
            uptime_ms: self.machine.opened_at_ms().map(|t| now - t),
            unacked: reliable.map_or(0, Reliable::unacked),
            acked: reliable.map_or(0, Reliable::acked_total),
            delivered: reliable.map_or(0, Reliable::delivered_total),
            gaps: c.gaps,
            tab_role: crate::message::TabRole::Alone,
            tabs: 1,
        }
    }
}

/// Whether an application may close with `code` and `reason`: the one
/// check of [`Driver::close`] and of a tab leaving a shared connection,
/// with the browser's rule on both transports (so that code written
/// against one behaves the same on the other).
///
/// # Errors
///
/// [`Error::InvalidCloseCode`] unless `code` is 1000 or 3000-4999 (what
/// browsers let applications send: the others are the protocol's),
/// [`Error::ReasonTooLong`] over 123 bytes (what fits a close frame).
pub fn check_close(code: u16, reason: &str) -> Result<(), Error> {
    if code != shared::close_code::NORMAL && !(3000..=4999).contains(&code) {
        return Err(Error::InvalidCloseCode(code));
    }
    if reason.len() > 123 {
        return Err(Error::ReasonTooLong);
    }
    Ok(())
}
