//! One test per rule of the driver, natively: the inputs a transport would
//! feed, the effects it would perform.

use std::collections::HashMap;

use shared::close_code::{GOING_AWAY, KICKED, NORMAL, POLICY_VIOLATION, REPLACED};
use shared::{ClientMessage, ResumeFailure, ServerMessage};

use super::machine::ABNORMAL;
use super::reliable::{ACK_DELAY_MS, ACK_EVERY};
use super::*;
use crate::config::{Backoff, Heartbeat, Overflow};

const URL: &str = "ws://x/ws";
/// What the driver opens for [`URL`]: it asks for the newest protocol version.
const OPENED: &str = "ws://x/ws?protocol=2";

/// Backoff without jitter: the delays are the ceilings exactly.
fn exact_backoff() -> Backoff {
    Backoff {
        jitter: false,
        ..Backoff::default()
    }
}

fn config() -> Config {
    Config::new(URL).with_backoff(exact_backoff())
}

fn text(s: &str) -> Message {
    Message::Text(s.into())
}

/// A driver, a clock, and the last start of each timer.
struct Harness {
    d: Driver,
    now: f64,
    timers: HashMap<TimerKind, (TimerId, u64)>,
}

impl Harness {
    fn new(config: Config) -> Self {
        Self {
            d: Driver::new(config, 7),
            now: 0.0,
            timers: HashMap::new(),
        }
    }

    /// The pending effects; records the timers they start and stop.
    fn effects(&mut self) -> Vec<Effect> {
        let effects = self.d.take_effects();
        for effect in &effects {
            match effect {
                Effect::StartTimer { id, delay_ms } => {
                    self.timers.insert(id.kind, (*id, *delay_ms));
                }
                Effect::StopTimer(kind) => {
                    self.timers.remove(kind);
                }
                _ => {}
            }
        }
        effects
    }

    fn generation(&self) -> u64 {
        self.d.generation()
    }

    fn start(&mut self) -> Vec<Effect> {
        self.d.start(self.now);
        self.effects()
    }

    /// The current socket opened.
    fn opened(&mut self) -> Vec<Effect> {
        let generation = self.generation();
        self.input(Input::Opened { generation })
    }

    /// Starts and opens.
    fn open(mut self) -> Self {
        self.start();
        self.opened();
        self
    }

    fn input(&mut self, input: Input) -> Vec<Effect> {
        self.d.handle(input, self.now);
        self.effects()
    }

    /// The current socket closed with `code`.
    fn closed(&mut self, code: u16) -> Vec<Effect> {
        let generation = self.generation();
        self.input(closed(generation, code))
    }

    fn receive(&mut self, message: Message) -> Vec<Effect> {
        let generation = self.generation();
        self.input(Input::Message {
            generation,
            message,
        })
    }

    fn receive_server(&mut self, message: &ServerMessage) -> Vec<Effect> {
        self.receive(Message::Text(message.to_json()))
    }

    /// Fires the running timer of `kind`.
    fn fire(&mut self, kind: TimerKind) -> Vec<Effect> {
        // A fired timer is no longer running (it may be started again).
        let (id, delay) = self.timers.remove(&kind).expect("the timer is running");
        self.now += delay as f64;
        self.input(Input::TimerFired(id))
    }

    fn delay(&self, kind: TimerKind) -> Option<u64> {
        self.timers.get(&kind).map(|(_, delay)| *delay)
    }

    fn send(&mut self, message: &str) -> Result<SendOutcome, SendError> {
        self.d.send(message)
    }
}

/// The close input for socket `generation`: the helper of every close test.
fn closed(generation: u64, code: u16) -> Input {
    Input::Closed {
        generation,
        code,
        reason: String::new(),
        was_clean: code != ABNORMAL,
    }
}

fn writes(effects: &[Effect]) -> Vec<Message> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Write { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn events(effects: &[Effect]) -> Vec<Event> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Emit(event) => Some(event.clone()),
            _ => None,
        })
        .collect()
}

fn has(effects: &[Effect], wanted: &Effect) -> bool {
    effects.contains(wanted)
}

/// The client messages among `frames`, decoded.
fn client(frames: &[Message]) -> Vec<ClientMessage> {
    frames
        .iter()
        .map(|m| match m {
            Message::Text(t) => ClientMessage::from_json(t).unwrap(),
            Message::Binary(_) => panic!("binary frame"),
        })
        .collect()
}

fn welcome(session: &str) -> ServerMessage {
    ServerMessage::Welcome {
        client_id: "c".into(),
        push_interval_ms: 0,
        session: Some(session.into()),
        token: Some(format!("{session}-token")),
        protocol: shared::PROTOCOL_VERSION,
        exp: None,
    }
}

fn server_msg(seq: u64, data: &str) -> ServerMessage {
    ServerMessage::Msg {
        seq,
        data: data.into(),
    }
}

mod auth;
mod channels;
mod closes;
mod connecting;
mod heartbeat;
mod network;
mod open_hook;
mod presence;
mod receiving;
mod reliable;
mod sending;
