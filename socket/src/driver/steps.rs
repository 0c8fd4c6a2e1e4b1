//! The driver's private steps: the machine's actions, the open sequence,
//! receiving, timers and writes. Split from `mod.rs` to keep each file short.

use shared::ResumeFailure;

use super::liveness::{Liveness, Tick};
use super::machine::{Action, Input as Step};
use super::reliable::{ACK_DELAY_MS, Incoming, Reliable};
use super::{Armed, Driver, Effect, TimerId, TimerKind};
use crate::message::{DropReason, Event, Message, SendError, SendOutcome, State};

/// Why [`write_app`](Driver::write_app) did not write.
pub(super) enum Unsent {
    /// The socket cannot take writes now: queue the message.
    NotOpen(Message),
    /// Refused outright (a binary message in reliable mode).
    Refused(SendError),
    /// Reliable mode: numbered and kept, but not written now; it goes out
    /// again after the resume.
    Kept,
}

impl Driver {
    /// Ends a call: its events go out after its other effects (or, for the
    /// step that queued the open hook, after the hook's done).
    pub(super) fn finish(&mut self) {
        let events = std::mem::take(&mut self.events);
        if std::mem::take(&mut self.hook_started) {
            self.held.extend(events);
        } else {
            self.effects.extend(events.into_iter().map(Effect::Emit));
        }
    }

    /// Runs one machine step and carries out its actions.
    pub(super) fn step(&mut self, input: Step, now: f64) {
        let random = self.rng.next_unit();
        let mut flush = false;
        for action in self.machine.step(input, now, random) {
            match action {
                Action::Open { generation } => {
                    self.begin_connect(generation);
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
    pub(super) fn state_changed(&mut self, state: State) {
        if !matches!(state, State::Connecting { .. }) {
            self.stop_timer(TimerKind::ConnectTimeout);
        }
        if state != State::Open {
            self.stop_timer(TimerKind::Heartbeat);
            self.stop_timer(TimerKind::Ack);
            self.auth_closed();
            self.awaiting_welcome = false;
            self.liveness = None;
            self.writable = false;
            self.restore_unwritten();
            self.channels_closed();
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
    pub(super) fn on_open(&mut self, now: f64) {
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
                    // Sent under a welcome that named no session: unconfirmed.
                    let mut orphans = orphans;
                    self.channels_session_lost(&mut orphans);
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
        // Nothing of the application goes out until the welcome, in token
        // mode (the server may still refuse the token: 4401, before its
        // welcome) and in reliable mode with no session yet (a message
        // numbered before the welcome names the session is lost to a cut
        // before it: there is nothing to resume).
        self.awaiting_welcome = self.auth.is_some()
            || self
                .reliable
                .as_ref()
                .is_some_and(|r| r.session().is_none());
        // A resume waits for its answer: resends go first.
        if ready_now && !self.awaiting_welcome {
            self.ready(generation);
        }
    }

    /// New messages may go out: the open hook, then the queue in order.
    pub(super) fn ready(&mut self, generation: u64) {
        // Channels first: the subscriptions back, the pending publishes out.
        self.channels_ready();
        if self.has_open_hook {
            self.hook_pending = Some(generation);
            self.hook_started = true;
            self.effects.push_back(Effect::RunOpenHook { generation });
        } else {
            self.flush(generation);
        }
    }

    /// Writes the queue out in order, then reports [`Event::Open`].
    pub(super) fn flush(&mut self, generation: u64) {
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

    pub(super) fn receive(&mut self, generation: u64, message: Message, now: f64) {
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
                let resumed = self.on_incoming(incoming, now);
                self.sync_reserved();
                self.schedule_ack();
                if resumed && !self.awaiting_welcome {
                    self.ready(generation);
                }
            }
            (_, Message::Text(text)) => self.deliver(text, now),
            (_, message) => self.events.push(Event::Message(message)),
        }
    }

    /// Delivers a server text to the application, then looks at what it
    /// means for the token (token mode only).
    fn deliver(&mut self, text: String, now: f64) {
        if self.channel_text(&text) {
            return;
        }
        // The message comes before what the inspection reports.
        let at = self.events.len();
        self.inspect_welcome_and_auth(&text, now);
        self.events.insert(at, Event::Message(Message::Text(text)));
    }

    /// Reliable mode: carries out what a received text meant; true when the
    /// resume was answered (new messages may go out now).
    pub(super) fn on_incoming(&mut self, incoming: Incoming, now: f64) -> bool {
        match incoming {
            Incoming::Deliver(data) => self.deliver(data, now),
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
                mut unconfirmed,
            } => {
                self.channels_session_lost(&mut unconfirmed);
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
                self.deliver(data, now);
            }
            // An ack, or a replay of something delivered before.
            _ => {}
        }
        false
    }

    pub(super) fn timer_fired(&mut self, id: TimerId, now: f64) {
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
            TimerKind::Refresh => self.refresh_due(generation),
            TimerKind::Ack => {
                if let Some(ack) = self.reliable.as_mut().and_then(Reliable::take_ack) {
                    self.write_control(ack);
                }
            }
        }
    }

    /// One tick of the heartbeat of connection `generation`.
    pub(super) fn heartbeat_tick(&mut self, generation: u64, now: f64) {
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
    pub(super) fn schedule_ack(&mut self) {
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

    pub(super) fn start_timer(&mut self, kind: TimerKind, delay_ms: u64) {
        self.next_serial += 1;
        let serial = self.next_serial;
        let generation = self.machine.generation();
        self.timers[kind as usize] = Some(Armed { serial, generation });
        let id = TimerId { kind, serial };
        self.effects.push_back(Effect::StartTimer { id, delay_ms });
    }

    pub(super) fn stop_timer(&mut self, kind: TimerKind) {
        if self.timers[kind as usize].take().is_some() {
            self.effects.push_back(Effect::StopTimer(kind));
        }
    }

    /// Whether a write now would reach the open socket.
    pub(super) fn writable_now(&self) -> bool {
        self.writable
            && self.machine.state() == State::Open
            && self.live == Some(self.machine.generation())
    }

    pub(super) fn write(&mut self, message: Message, hand_back: bool) {
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
    pub(super) fn write_control(&mut self, text: String) {
        if self.writable_now() {
            self.write(Message::Text(text), false);
        }
    }

    /// Writes an application message: as is, or in reliable mode numbered
    /// and kept until acknowledged.
    pub(super) fn write_app(&mut self, message: Message) -> Result<(), Unsent> {
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

    pub(super) fn write_failed(&mut self, generation: u64, message: Message) {
        self.counters.messages_sent = self.counters.messages_sent.saturating_sub(1);
        self.counters.bytes_sent = self
            .counters
            .bytes_sent
            .saturating_sub(message.len() as u64);
        if generation == self.machine.generation() && self.machine.state() == State::Open {
            self.unwritten.push(message);
            // Later sends queue behind it until the next connection.
            self.writable = false;
        } else {
            // The socket is gone and its earlier hand-backs are already in
            // the queue: this one goes right after them, not before.
            let at = match self.stale_put_back {
                Some((from, count)) if from == generation => count,
                _ => 0,
            };
            self.queue.put_back_at(at, message);
            self.stale_put_back = Some((generation, at + 1));
        }
    }

    /// Puts handed-back messages back at the head of the queue, in order.
    pub(super) fn restore_unwritten(&mut self) {
        while let Some(message) = self.unwritten.pop() {
            self.queue.unpop(message);
        }
    }

    /// Reliable mode's unacknowledged messages and the pending publishes
    /// count against the queue's limits.
    pub(super) fn sync_reserved(&mut self) {
        let (count, bytes) = self.channels_held();
        let (unacked, unacked_bytes) = self
            .reliable
            .as_ref()
            .map_or((0, 0), |r| (r.unacked(), r.unacked_bytes()));
        self.queue
            .set_reserved(count + unacked, bytes + unacked_bytes);
    }

    pub(super) fn enqueue(&mut self, message: Message) -> Result<SendOutcome, SendError> {
        let dropped = self.queue.push(message)?;
        self.report_dropped(dropped, DropReason::Overflow);
        Ok(SendOutcome::Queued)
    }

    pub(super) fn report_dropped(&mut self, dropped: Vec<Message>, reason: DropReason) {
        self.counters.dropped += dropped.len() as u64;
        self.events.extend(
            dropped
                .into_iter()
                .map(|message| Event::Dropped { message, reason }),
        );
    }
}
