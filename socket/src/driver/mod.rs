//! The socket's rules as a pure state machine: inputs in, effects out.
//!
//! [`Driver`] owns the connection [`machine`], the send [`Queue`], the
//! [`reliable`] window, the heartbeat's [`liveness`] and the counters. It
//! reads no clock (every input carries `now`, in milliseconds), draws its
//! jitter from a seeded generator it owns, and touches no socket and no
//! timer: a transport glue (the browser's in `web`, a native one) feeds it
//! inputs and performs the [`Effect`]s it queues. So every rule is unit-tested
//! natively (`driver/tests.rs`), and every transport follows the same rules.
//!
//! # Inputs
//!
//! * user calls, as methods: [`Driver::start`], [`Driver::send`],
//!   [`Driver::close`], [`Driver::reconnect`], [`Driver::set_queue_capacity`],
//!   [`Driver::take_queued`], [`Driver::set_open_hook`],
//!   [`Driver::open_hook_done`]; their results come back at once;
//! * what happened, as [`Input`]s to [`Driver::handle`]: the transport's
//!   open, message, close, error, a write it could not do, a timer that
//!   fired, the network going offline or online, the page becoming visible.
//!
//! # Effects
//!
//! Every call appends [`Effect`]s to a FIFO that the glue drains with
//! [`Driver::poll_effect`] and performs in order: open a socket, write a
//! frame, close or drop the socket, start or stop a timer, run the open
//! hook, emit an [`Event`]. The events of one call come after its other
//! effects, so the application sees a state change once its writes are out
//! (the open hook and the flush included).
//!
//! Sockets carry a generation: inputs of a socket that was replaced carry an
//! older one and are ignored, so at most one socket is ever live. Timers
//! carry a [`TimerId`]: a fire of a timer that was stopped or restarted since
//! is ignored, so the glue need not worry about a fire already on its way.
//! There is at most one timer per [`TimerKind`]; all are one-shot.
//!
//! # The open hook
//!
//! When new messages may go out on a fresh connection (at once, or in
//! reliable mode once the `resume` is answered and the unacknowledged
//! messages resent), a driver with a hook ([`Driver::set_open_hook`]) queues
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

pub mod liveness;
pub mod machine;
mod queue;
pub mod reliable;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use shared::ResumeFailure;

use crate::Error;
use crate::config::Config;
use crate::message::{
    CloseInfo, DropReason, Event, Message, SendError, SendOutcome, State, Stats, TransportError,
};
use liveness::{Liveness, Tick};
use machine::{Action, Input as Step, Machine};
pub use queue::Queue;
use reliable::{ACK_DELAY_MS, Incoming, Reliable};

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
}

/// One start of a timer; a fire reports it back ([`Input::TimerFired`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    /// Which timer.
    pub kind: TimerKind,
    /// Which start of it: a fire of an earlier start is ignored.
    pub serial: u64,
}

/// What happened, fed to [`Driver::handle`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Input {
    /// Socket `generation` opened.
    Opened {
        /// Which socket ([`Effect::OpenSocket`]).
        generation: u64,
    },
    /// Socket `generation` could not even be created; it counts as a failed
    /// attempt ([`Event::Error`], then the connect timeout fires at once).
    OpenFailed {
        /// Which socket.
        generation: u64,
        /// What the transport said.
        reason: String,
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
    /// Socket `generation` reported an error (its close follows).
    Error {
        /// Which socket.
        generation: u64,
        /// What it said.
        reason: String,
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
}

/// What the glue must do, in order ([`Driver::poll_effect`]).
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
    /// [`Driver::open_hook_done`] with this generation.
    RunOpenHook {
        /// The connection it runs for.
        generation: u64,
    },
    /// Deliver an event to the application.
    Emit(Event),
}

/// Why [`write_app`](Driver::write_app) did not write.
enum Unsent {
    /// The socket cannot take writes now: queue the message.
    NotOpen(Message),
    /// Refused outright (a binary message in reliable mode).
    Refused(SendError),
    /// Reliable mode: numbered and kept, but not written now; it goes out
    /// again after the resume.
    Kept,
}

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
    liveness: Option<Liveness>,
    counters: Counters,
    rng: Rng,
    timers: [Option<Armed>; 4],
    next_serial: u64,
    /// The generation of the socket the glue holds, if any.
    live: Option<u64>,
    /// The open socket takes writes (false once a write came back).
    writable: bool,
    /// Messages handed back by [`Input::WriteFailed`], oldest first.
    unwritten: Vec<Message>,
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
            config,
            machine,
            queue,
            liveness: None,
            counters: Counters::default(),
            rng: Rng(seed),
            timers: [None; 4],
            next_serial: 0,
            live: None,
            writable: false,
            unwritten: Vec::new(),
            has_open_hook: false,
            hook_pending: None,
            hook_started: false,
            held: Vec::new(),
            events: Vec::new(),
            effects: VecDeque::new(),
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
            Input::OpenFailed { generation, reason } => {
                if generation == self.machine.generation() && self.live == Some(generation) {
                    self.live = None;
                    self.events
                        .push(Event::Error(TransportError::Connect(reason)));
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
                self.step(Step::Closed { generation, close }, now);
            }
            Input::Error { generation, reason } => {
                if generation == self.machine.generation() {
                    self.events
                        .push(Event::Error(TransportError::Socket(reason)));
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
        let ready = self.reliable.as_ref().is_none_or(Reliable::ready);
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
        if code != shared::close_code::NORMAL && !(3000..=4999).contains(&code) {
            return Err(Error::InvalidCloseCode(code));
        }
        if reason.len() > 123 {
            return Err(Error::ReasonTooLong);
        }
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
        }
    }

    /// Ends a call: its events go out after its other effects (or, for the
    /// step that queued the open hook, after the hook's done).
    fn finish(&mut self) {
        let events = std::mem::take(&mut self.events);
        if std::mem::take(&mut self.hook_started) {
            self.held.extend(events);
        } else {
            self.effects.extend(events.into_iter().map(Effect::Emit));
        }
    }

    /// Runs one machine step and carries out its actions.
    fn step(&mut self, input: Step, now: f64) {
        let random = self.rng.next_unit();
        let mut flush = false;
        for action in self.machine.step(input, now, random) {
            match action {
                Action::Open { generation } => {
                    self.live = Some(generation);
                    self.writable = false;
                    let url = self.connect_url.clone();
                    self.effects
                        .push_back(Effect::OpenSocket { generation, url });
                    let timeout = u64::from(self.config.connect_timeout_ms);
                    self.start_timer(TimerKind::ConnectTimeout, timeout);
                }
                Action::Close {
                    generation,
                    code,
                    reason,
                } => {
                    if self.live == Some(generation) {
                        self.live = None;
                        self.effects.push_back(Effect::CloseSocket {
                            generation,
                            code,
                            reason,
                        });
                    }
                }
                Action::ScheduleRetry { delay_ms } => self.start_timer(TimerKind::Retry, delay_ms),
                Action::CancelRetry => self.stop_timer(TimerKind::Retry),
                Action::Flush => flush = true,
                Action::EmitClose(close) => self.events.push(Event::Close(close)),
                Action::EmitState(state) => self.state_changed(state),
            }
        }
        if flush {
            self.on_open(now);
        }
    }

    /// The side effects of entering `state`.
    fn state_changed(&mut self, state: State) {
        if !matches!(state, State::Connecting { .. }) {
            self.stop_timer(TimerKind::ConnectTimeout);
        }
        if state != State::Open {
            self.stop_timer(TimerKind::Heartbeat);
            self.stop_timer(TimerKind::Ack);
            self.liveness = None;
            self.writable = false;
            self.restore_unwritten();
            if let Some(reliable) = self.reliable.as_mut() {
                reliable.on_close();
            }
        }
        if state == State::Closed {
            if self.live.take().is_some() {
                self.effects.push_back(Effect::DropSocket);
            }
            self.stop_timer(TimerKind::Retry);
        }
        self.events.push(Event::StateChanged(state));
    }

    /// Open: the heartbeat; in reliable mode the session's first message
    /// (`resume` or `ack`); then, once new messages may go out, [`Self::ready`].
    fn on_open(&mut self, now: f64) {
        let generation = self.machine.generation();
        self.writable = true;
        if let Some(heartbeat) = self.config.heartbeat {
            self.liveness = Some(Liveness::new(heartbeat, now));
            self.start_timer(TimerKind::Heartbeat, Liveness::tick_ms(heartbeat).into());
        }
        let first = self
            .reliable
            .as_mut()
            .map(|r| (r.on_open(), r.ready(), r.take_orphans()));
        let ready_now = match first {
            Some((first, ready, orphans)) => {
                if !orphans.is_empty() {
                    // Sent under a session whose welcome never came: unconfirmed.
                    self.events.push(Event::ResumeFailed {
                        reason: ResumeFailure::NoSession,
                        unconfirmed: orphans.into_iter().map(Message::Text).collect(),
                    });
                }
                self.sync_reserved();
                self.write_control(first);
                ready
            }
            None => true,
        };
        // A resume waits for its answer: resends go first.
        if ready_now {
            self.ready(generation);
        }
    }

    /// New messages may go out: the open hook, then the queue in order.
    fn ready(&mut self, generation: u64) {
        if self.has_open_hook {
            self.hook_pending = Some(generation);
            self.hook_started = true;
            self.effects.push_back(Effect::RunOpenHook { generation });
        } else {
            self.flush(generation);
        }
    }

    /// Writes the queue out in order, then reports [`Event::Open`].
    fn flush(&mut self, generation: u64) {
        if self.machine.state() != State::Open || self.machine.generation() != generation {
            return;
        }
        self.restore_unwritten();
        while let Some(message) = self.queue.pop() {
            match self.write_app(message) {
                Ok(()) => {}
                // Kept for the resume's resend: nothing to put back.
                Err(Unsent::Kept) => break,
                Err(Unsent::NotOpen(message)) => {
                    self.queue.unpop(message);
                    break;
                }
                Err(Unsent::Refused(err)) => {
                    if let Some(message) = err.into_message() {
                        self.queue.unpop(message);
                    }
                    break;
                }
            }
        }
        self.events.push(Event::Open);
    }

    fn receive(&mut self, generation: u64, message: Message, now: f64) {
        if generation != self.machine.generation() {
            return;
        }
        self.counters.messages_received += 1;
        self.counters.bytes_received += message.len() as u64;
        if let Some(liveness) = self.liveness.as_mut() {
            liveness.seen(now);
        }
        match (self.reliable.as_mut(), message) {
            (Some(reliable), Message::Text(text)) => {
                let incoming = reliable.on_text(text);
                let resumed = self.on_incoming(incoming);
                self.sync_reserved();
                self.schedule_ack();
                if resumed {
                    self.ready(generation);
                }
            }
            (_, message) => self.events.push(Event::Message(message)),
        }
    }

    /// Reliable mode: carries out what a received text meant; true when the
    /// resume was answered (new messages may go out now).
    fn on_incoming(&mut self, incoming: Incoming) -> bool {
        match incoming {
            Incoming::Deliver(data) => self.events.push(Event::Message(Message::Text(data))),
            Incoming::Resumed { resend } => {
                let resent = resend.len();
                for frame in resend {
                    self.write_control(frame);
                }
                self.events.push(Event::Resumed { resent });
                return true;
            }
            Incoming::ResumeFailed {
                reason,
                unconfirmed,
            } => {
                self.events.push(Event::ResumeFailed {
                    reason,
                    unconfirmed: unconfirmed.into_iter().map(Message::Text).collect(),
                });
                return true;
            }
            Incoming::Gap { from, to } => {
                self.counters.gaps += 1;
                self.events.push(Event::Gap { from, to });
            }
            Incoming::GapThen { from, to, data } => {
                self.counters.gaps += 1;
                self.events.push(Event::Gap { from, to });
                self.events.push(Event::Message(Message::Text(data)));
            }
            // An ack, or a replay of something delivered before.
            _ => {}
        }
        false
    }

    fn timer_fired(&mut self, id: TimerId, now: f64) {
        let slot = &mut self.timers[id.kind as usize];
        let Some(armed) = slot.filter(|a| a.serial == id.serial) else {
            return;
        };
        *slot = None;
        let generation = armed.generation;
        match id.kind {
            TimerKind::Retry => self.step(Step::RetryDue, now),
            TimerKind::ConnectTimeout => {
                let reason = "connect timeout";
                self.step(Step::Dead { generation, reason }, now);
            }
            TimerKind::Heartbeat => self.heartbeat_tick(generation, now),
            TimerKind::Ack => {
                if let Some(ack) = self.reliable.as_mut().and_then(Reliable::take_ack) {
                    self.write_control(ack);
                }
            }
        }
    }

    /// One tick of the heartbeat of connection `generation`.
    fn heartbeat_tick(&mut self, generation: u64, now: f64) {
        let (Some(liveness), Some(heartbeat)) = (self.liveness.as_mut(), self.config.heartbeat)
        else {
            return;
        };
        match liveness.tick(now) {
            Tick::Dead => {
                let reason = "heartbeat timeout";
                self.step(Step::Dead { generation, reason }, now);
            }
            tick => {
                if tick == Tick::Ping {
                    self.write_control(shared::ClientMessage::Ping { t: now }.to_json());
                }
                self.start_timer(TimerKind::Heartbeat, Liveness::tick_ms(heartbeat).into());
            }
        }
    }

    /// Reliable mode: acknowledges now after enough messages, else arms the ack timer.
    fn schedule_ack(&mut self) {
        let Some(reliable) = self.reliable.as_mut() else {
            return;
        };
        if reliable.ack_now() {
            if let Some(ack) = reliable.take_ack() {
                self.write_control(ack);
            }
            self.stop_timer(TimerKind::Ack);
        } else if reliable.ack_pending() && self.timers[TimerKind::Ack as usize].is_none() {
            self.start_timer(TimerKind::Ack, ACK_DELAY_MS.into());
        }
    }

    fn start_timer(&mut self, kind: TimerKind, delay_ms: u64) {
        self.next_serial += 1;
        let serial = self.next_serial;
        let generation = self.machine.generation();
        self.timers[kind as usize] = Some(Armed { serial, generation });
        let id = TimerId { kind, serial };
        self.effects.push_back(Effect::StartTimer { id, delay_ms });
    }

    fn stop_timer(&mut self, kind: TimerKind) {
        if self.timers[kind as usize].take().is_some() {
            self.effects.push_back(Effect::StopTimer(kind));
        }
    }

    /// Whether a write now would reach the open socket.
    fn writable_now(&self) -> bool {
        self.writable
            && self.machine.state() == State::Open
            && self.live == Some(self.machine.generation())
    }

    fn write(&mut self, message: Message, hand_back: bool) {
        self.counters.messages_sent += 1;
        self.counters.bytes_sent += message.len() as u64;
        let generation = self.machine.generation();
        self.effects.push_back(Effect::Write {
            generation,
            message,
            hand_back,
        });
    }

    /// Writes a frame the driver does not hand back (a failure shows up as
    /// the socket's close; a reliable frame is resent after the resume).
    fn write_control(&mut self, text: String) {
        if self.writable_now() {
            self.write(Message::Text(text), false);
        }
    }

    /// Writes an application message: as is, or in reliable mode numbered
    /// and kept until acknowledged.
    fn write_app(&mut self, message: Message) -> Result<(), Unsent> {
        let Some(reliable) = self.reliable.as_mut() else {
            if !self.writable_now() {
                return Err(Unsent::NotOpen(message));
            }
            self.write(message, true);
            return Ok(());
        };
        let Message::Text(text) = message else {
            return Err(Unsent::Refused(SendError::BinaryNotReliable(message)));
        };
        let envelope = reliable.number(text);
        self.sync_reserved();
        if !self.writable_now() {
            return Err(Unsent::Kept);
        }
        self.write(Message::Text(envelope), false);
        Ok(())
    }

    fn write_failed(&mut self, generation: u64, message: Message) {
        self.counters.messages_sent = self.counters.messages_sent.saturating_sub(1);
        self.counters.bytes_sent = self
            .counters
            .bytes_sent
            .saturating_sub(message.len() as u64);
        self.unwritten.push(message);
        if generation == self.machine.generation() && self.machine.state() == State::Open {
            // Later sends queue behind it until the next connection.
            self.writable = false;
        } else {
            self.restore_unwritten();
        }
    }

    /// Puts handed-back messages back at the head of the queue, in order.
    fn restore_unwritten(&mut self) {
        while let Some(message) = self.unwritten.pop() {
            self.queue.unpop(message);
        }
    }

    /// Reliable mode: unacknowledged messages count against the queue's limits.
    fn sync_reserved(&mut self) {
        if let Some(reliable) = &self.reliable {
            self.queue
                .set_reserved(reliable.unacked(), reliable.unacked_bytes());
        }
    }

    fn enqueue(&mut self, message: Message) -> Result<SendOutcome, SendError> {
        let dropped = self.queue.push(message)?;
        self.report_dropped(dropped, DropReason::Overflow);
        Ok(SendOutcome::Queued)
    }

    fn report_dropped(&mut self, dropped: Vec<Message>, reason: DropReason) {
        self.counters.dropped += dropped.len() as u64;
        self.events.extend(
            dropped
                .into_iter()
                .map(|message| Event::Dropped { message, reason }),
        );
    }
}
