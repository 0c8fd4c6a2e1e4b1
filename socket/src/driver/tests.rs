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
    }
}

fn server_msg(seq: u64, data: &str) -> ServerMessage {
    ServerMessage::Msg {
        seq,
        data: data.into(),
    }
}

// ---- connecting ----

#[test]
fn start_opens_a_socket_and_arms_the_connect_timeout() {
    let mut h = Harness::new(config().with_connect_timeout_ms(1234));
    let effects = h.start();
    assert_eq!(
        effects[0],
        Effect::OpenSocket {
            generation: 1,
            url: URL.into()
        }
    );
    assert_eq!(h.delay(TimerKind::ConnectTimeout), Some(1234));
    assert_eq!(
        events(&effects),
        [Event::StateChanged(State::Connecting { attempt: 0 })]
    );
    // Starting twice does nothing more.
    assert!(h.start().is_empty());
}

#[test]
fn reliable_mode_opens_the_url_with_reliable_1() {
    let mut h = Harness::new(config().with_reliable(true));
    let effects = h.start();
    assert_eq!(
        effects[0],
        Effect::OpenSocket {
            generation: 1,
            url: format!("{URL}?reliable=1")
        }
    );
}

#[test]
fn opening_stops_the_connect_timeout_and_reports_the_state_then_open() {
    let mut h = Harness::new(config());
    h.start();
    let effects = h.opened();
    assert_eq!(effects[0], Effect::StopTimer(TimerKind::ConnectTimeout));
    assert_eq!(
        events(&effects),
        [Event::StateChanged(State::Open), Event::Open]
    );
    assert_eq!(h.d.state(), State::Open);
}

#[test]
fn a_connect_timeout_closes_the_attempt_and_schedules_a_retry() {
    let mut h = Harness::new(config());
    h.start();
    let generation = h.generation();
    let effects = h.fire(TimerKind::ConnectTimeout);
    assert!(has(
        &effects,
        &Effect::CloseSocket {
            generation,
            code: NORMAL,
            reason: "connect timeout".into()
        }
    ));
    assert!(events(&effects).contains(&Event::Close(CloseInfo {
        url: URL.into(),
        code: ABNORMAL,
        reason: "connect timeout".into(),
        was_clean: false,
    })));
    assert_eq!(h.delay(TimerKind::Retry), Some(1000));
    assert_eq!(
        h.d.state(),
        State::Reconnecting {
            attempt: 1,
            delay_ms: Some(1000)
        }
    );
}

#[test]
fn a_socket_that_cannot_be_created_reports_an_error_and_times_out_at_once() {
    let mut h = Harness::new(config());
    h.start();
    let generation = h.generation();
    let effects = h.input(Input::OpenFailed {
        generation,
        reason: "bad".into(),
    });
    assert_eq!(
        events(&effects),
        [Event::Error(TransportError::Connect("bad".into()))]
    );
    assert_eq!(h.delay(TimerKind::ConnectTimeout), Some(0));
    // The timeout takes the normal retry path; there is no socket to close.
    let effects = h.fire(TimerKind::ConnectTimeout);
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::CloseSocket { .. }))
    );
    assert!(matches!(
        h.d.state(),
        State::Reconnecting { attempt: 1, .. }
    ));
}

#[test]
fn a_timer_fire_of_an_earlier_start_is_ignored() {
    let mut h = Harness::new(config());
    h.start();
    let (old, _) = h.timers[&TimerKind::ConnectTimeout];
    h.opened();
    // The connect timeout was stopped by the open; its fire is already on its way.
    assert!(h.input(Input::TimerFired(old)).is_empty());
    assert_eq!(h.d.state(), State::Open);
}

#[test]
fn the_retry_timer_opens_the_next_socket() {
    let mut h = Harness::new(config()).open();
    h.closed(ABNORMAL);
    let effects = h.fire(TimerKind::Retry);
    assert!(matches!(
        effects[0],
        Effect::OpenSocket { generation: 3, .. }
    ));
    assert_eq!(h.d.state(), State::Connecting { attempt: 1 });
    h.opened();
    assert_eq!(h.d.stats(h.now).reconnects, 1);
}

// ---- sending ----

#[test]
fn sends_while_connecting_are_queued_and_flushed_in_order_on_open() {
    let mut h = Harness::new(config());
    h.start();
    assert_eq!(h.send("a"), Ok(SendOutcome::Queued));
    assert_eq!(h.send("b"), Ok(SendOutcome::Queued));
    assert!(writes(&h.effects()).is_empty());
    let effects = h.opened();
    assert_eq!(writes(&effects), [text("a"), text("b")]);
    assert_eq!(h.d.queue_len(), 0);
    // Events come after the writes.
    let first_event = effects
        .iter()
        .position(|e| matches!(e, Effect::Emit(_)))
        .unwrap();
    let last_write = effects
        .iter()
        .rposition(|e| matches!(e, Effect::Write { .. }))
        .unwrap();
    assert!(last_write < first_event);
}

#[test]
fn a_send_while_open_with_an_empty_queue_is_written_and_handed_back_on_failure() {
    let mut h = Harness::new(config()).open();
    assert_eq!(h.send("now"), Ok(SendOutcome::Sent));
    assert_eq!(
        h.effects(),
        [Effect::Write {
            generation: 1,
            message: text("now"),
            hand_back: true
        }]
    );
}

#[test]
fn binary_messages_go_out_as_binary() {
    let mut h = Harness::new(config()).open();
    assert_eq!(h.d.send(vec![1u8, 2, 3]), Ok(SendOutcome::Sent));
    assert_eq!(writes(&h.effects()), [Message::Binary(vec![1, 2, 3])]);
}

#[test]
fn a_send_after_close_fails_with_the_message() {
    let mut h = Harness::new(config()).open();
    h.d.close(NORMAL, "bye", 0.0).unwrap();
    assert_eq!(h.send("late"), Err(SendError::Closed(text("late"))));
}

#[test]
fn a_full_queue_rejects_the_new_message_and_gives_it_back() {
    let mut h = Harness::new(config().with_queue_capacity(2));
    h.start();
    h.send("a").unwrap();
    h.send("b").unwrap();
    assert_eq!(h.send("c"), Err(SendError::QueueFull(text("c"))));
    assert_eq!(h.d.queue_len(), 2);
}

#[test]
fn drop_oldest_makes_room_and_reports_each_drop() {
    let mut h = Harness::new(
        config()
            .with_queue_capacity(2)
            .with_overflow(Overflow::DropOldest),
    );
    h.start();
    h.effects();
    h.send("a").unwrap();
    h.send("b").unwrap();
    assert_eq!(h.send("c"), Ok(SendOutcome::Queued));
    assert_eq!(
        events(&h.effects()),
        [Event::Dropped {
            message: text("a"),
            reason: DropReason::Overflow
        }]
    );
    assert_eq!(h.d.stats(0.0).dropped, 1);
    assert_eq!(h.d.take_queued(), [text("b"), text("c")]);
}

#[test]
fn a_message_over_the_byte_limit_is_too_large() {
    let mut h = Harness::new(config().with_queue_max_bytes(3));
    h.start();
    assert_eq!(h.send("abcd"), Err(SendError::TooLarge(text("abcd"))));
}

#[test]
fn capacity_zero_never_queues() {
    let mut h = Harness::new(config().with_queue_capacity(0));
    h.start();
    assert_eq!(h.send("a"), Err(SendError::QueueFull(text("a"))));
    // Open, with nothing queued, it still sends.
    h.opened();
    assert_eq!(h.send("b"), Ok(SendOutcome::Sent));
}

#[test]
fn lowering_the_capacity_drops_the_newest_and_reports_them() {
    let mut h = Harness::new(config());
    h.start();
    h.effects();
    for m in ["a", "b", "c", "d"] {
        h.send(m).unwrap();
    }
    h.d.set_queue_capacity(2);
    assert_eq!(
        events(&h.effects()),
        [
            Event::Dropped {
                message: text("c"),
                reason: DropReason::CapacityLowered
            },
            Event::Dropped {
                message: text("d"),
                reason: DropReason::CapacityLowered
            }
        ]
    );
    let stats = h.d.stats(0.0);
    assert_eq!(
        (stats.queue_len, stats.queue_capacity, stats.dropped),
        (2, 2, 2)
    );
}

#[test]
fn take_queued_empties_the_queue_oldest_first() {
    let mut h = Harness::new(config());
    h.start();
    h.send("a").unwrap();
    h.send("b").unwrap();
    assert_eq!(h.d.take_queued(), [text("a"), text("b")]);
    assert_eq!(h.d.queue_len(), 0);
    assert!(writes(&h.opened()).is_empty());
}

#[test]
fn a_refused_write_goes_back_to_the_head_of_the_queue_in_order() {
    let mut h = Harness::new(config());
    h.start();
    for m in ["a", "b", "c"] {
        h.send(m).unwrap();
    }
    let generation = h.generation();
    let effects = h.opened();
    assert_eq!(writes(&effects).len(), 3);
    // The socket was closing: the transport hands the first two back.
    for m in ["a", "b"] {
        h.input(Input::WriteFailed {
            generation,
            message: text(m),
        });
    }
    // Later sends queue behind them rather than being written.
    assert_eq!(h.send("d"), Ok(SendOutcome::Queued));
    assert_eq!(h.d.stats(0.0).messages_sent, 1);
    h.closed(ABNORMAL);
    h.fire(TimerKind::Retry);
    assert_eq!(writes(&h.opened()), [text("a"), text("b"), text("d")]);
}

#[test]
fn writes_handed_back_after_their_socket_closed_keep_their_order() {
    let mut h = Harness::new(config());
    h.start();
    let generation = h.generation();
    h.opened();
    for m in ["a", "b", "c"] {
        assert_eq!(h.send(m), Ok(SendOutcome::Sent));
    }
    // The socket dies; its writes come back only afterwards, one by one.
    h.closed(ABNORMAL);
    assert_eq!(h.send("d"), Ok(SendOutcome::Queued));
    for m in ["a", "b", "c"] {
        h.input(Input::WriteFailed {
            generation,
            message: text(m),
        });
    }
    h.fire(TimerKind::Retry);
    assert_eq!(
        writes(&h.opened()),
        [text("a"), text("b"), text("c"), text("d")]
    );
}

// ---- the open hook ----

#[test]
fn the_open_hook_runs_before_the_flush_and_its_sends_go_first() {
    let mut h = Harness::new(config().with_queue_capacity(1));
    h.d.set_open_hook(true);
    h.start();
    h.send("queued").unwrap();
    let effects = h.opened();
    let generation = h.generation();
    assert_eq!(effects.last(), Some(&Effect::RunOpenHook { generation }));
    assert!(writes(&effects).is_empty());
    assert!(
        events(&effects).is_empty(),
        "the step's events wait for the hook"
    );
    // The hook sends, even though the queue is full.
    assert_eq!(h.send("auth"), Ok(SendOutcome::Sent));
    h.d.open_hook_done(generation);
    let effects = h.effects();
    assert_eq!(writes(&effects), [text("auth"), text("queued")]);
    assert_eq!(
        events(&effects),
        [Event::StateChanged(State::Open), Event::Open]
    );
}

#[test]
fn a_hook_that_closes_leaves_the_queue_for_the_next_open() {
    let mut h = Harness::new(config());
    h.d.set_open_hook(true);
    h.start();
    h.send("queued").unwrap();
    h.opened();
    let generation = h.generation();
    h.d.close(NORMAL, "from the hook", 0.0).unwrap();
    h.d.open_hook_done(generation);
    let effects = h.effects();
    assert!(writes(&effects).is_empty());
    assert!(!events(&effects).contains(&Event::Open));
    assert_eq!(h.d.queue_len(), 1);
}

#[test]
fn a_stale_open_hook_done_does_nothing() {
    let mut h = Harness::new(config());
    h.d.set_open_hook(true);
    h.start();
    h.send("queued").unwrap();
    h.opened();
    let generation = h.generation();
    h.d.open_hook_done(generation + 5);
    assert!(h.effects().is_empty());
    h.d.open_hook_done(generation);
    assert_eq!(writes(&h.effects()), [text("queued")]);
    // Only once.
    h.d.open_hook_done(generation);
    assert!(h.effects().is_empty());
}

#[test]
fn sends_during_a_pending_hook_are_not_blocked_by_the_queue_but_after_it_they_queue() {
    let mut h = Harness::new(config());
    h.d.set_open_hook(true);
    h.start();
    h.send("q1").unwrap();
    h.opened();
    let generation = h.generation();
    h.d.open_hook_done(generation);
    h.effects();
    // Open, queue empty again: a send is written at once.
    assert_eq!(h.send("after"), Ok(SendOutcome::Sent));
}

// ---- closes and the reconnect policy ----

#[test]
fn the_close_event_carries_the_connect_url_code_reason_and_cleanliness() {
    let mut h = Harness::new(config()).open();
    let generation = h.generation();
    let effects = h.input(Input::Closed {
        generation,
        code: 1012,
        reason: "restart".into(),
        was_clean: true,
    });
    assert_eq!(
        events(&effects)[0],
        Event::Close(CloseInfo {
            url: URL.into(),
            code: 1012,
            reason: "restart".into(),
            was_clean: true
        })
    );
}

#[test]
fn the_default_policy_stops_after_kick_policy_and_replaced() {
    for code in [KICKED, POLICY_VIOLATION, REPLACED] {
        let mut h = Harness::new(config()).open();
        let effects = h.closed(code);
        assert_eq!(h.d.state(), State::Closed, "{code}");
        // The socket is released and no retry is armed.
        assert!(has(&effects, &Effect::DropSocket));
        assert_eq!(h.delay(TimerKind::Retry), None);
    }
    for code in [NORMAL, GOING_AWAY, ABNORMAL, 1011, 1013, 4001] {
        let mut h = Harness::new(config()).open();
        h.closed(code);
        assert!(matches!(h.d.state(), State::Reconnecting { .. }), "{code}");
    }
}

#[test]
fn a_custom_policy_decides() {
    let mut h = Harness::new(config().with_should_reconnect(|close| close.code == 4100)).open();
    h.closed(ABNORMAL);
    assert_eq!(h.d.state(), State::Closed);
    let mut h = Harness::new(config().with_should_reconnect(|close| close.code == 4100)).open();
    h.closed(4100);
    assert!(matches!(h.d.state(), State::Reconnecting { .. }));
}

#[test]
fn the_backoff_doubles_up_to_its_cap() {
    let mut h = Harness::new(config().with_backoff(Backoff {
        max_ms: 5000,
        ..exact_backoff()
    }));
    h.start();
    let mut delays = Vec::new();
    for _ in 0..5 {
        h.closed(ABNORMAL);
        delays.push(h.delay(TimerKind::Retry).unwrap());
        h.fire(TimerKind::Retry);
    }
    assert_eq!(delays, [1000, 2000, 4000, 5000, 5000]);
}

#[test]
fn the_jitter_stays_under_the_ceiling_and_follows_the_seed() {
    let delays = |seed| {
        let mut d = Driver::new(Config::new(URL), seed);
        d.start(0.0);
        let mut delays = Vec::new();
        for attempt in 1..=6 {
            let generation = d.generation();
            d.handle(closed(generation, ABNORMAL), 0.0);
            let delay = d
                .take_effects()
                .into_iter()
                .find_map(|e| match e {
                    Effect::StartTimer { id, delay_ms } if id.kind == TimerKind::Retry => {
                        Some(delay_ms)
                    }
                    _ => None,
                })
                .unwrap();
            assert!(delay <= Backoff::default().ceiling_ms(attempt));
            delays.push(delay);
            let generation = d.generation();
            d.handle(closed(generation, ABNORMAL), 0.0);
            d.reconnect(0.0);
            d.take_effects();
            let _ = generation;
        }
        delays
    };
    assert_eq!(delays(1), delays(1));
    assert_ne!(delays(1), delays(2));
}

#[test]
fn attempts_reset_only_after_min_uptime() {
    let mut h = Harness::new(config().with_min_uptime_ms(5000)).open();
    // Up for less than the minimum: the attempts keep growing.
    h.now = 100.0;
    h.closed(ABNORMAL);
    h.fire(TimerKind::Retry);
    h.opened();
    h.now += 10.0;
    h.closed(ABNORMAL);
    assert_eq!(h.d.stats(h.now).attempt, 2);
    assert_eq!(h.delay(TimerKind::Retry), Some(2000));
    h.fire(TimerKind::Retry);
    h.opened();
    // Up for 5 s: the next failure starts from attempt 1 again.
    h.now += 5000.0;
    h.closed(ABNORMAL);
    assert_eq!(h.d.stats(h.now).attempt, 1);
    assert_eq!(h.delay(TimerKind::Retry), Some(1000));
}

#[test]
fn max_attempts_gives_up_and_reconnect_starts_again() {
    let mut h = Harness::new(config().with_backoff(Backoff {
        max_attempts: Some(1),
        ..exact_backoff()
    }));
    h.start();
    h.closed(ABNORMAL);
    h.fire(TimerKind::Retry);
    h.closed(ABNORMAL);
    assert_eq!(h.d.state(), State::Closed);
    assert!(matches!(h.send("x"), Err(SendError::Closed(_))));
    h.d.reconnect(h.now);
    h.effects();
    assert_eq!(h.d.state(), State::Connecting { attempt: 0 });
}

#[test]
fn the_users_close_closes_the_socket_and_is_final() {
    let mut h = Harness::new(config()).open();
    let generation = h.generation();
    h.d.close(4100, "bye", 0.0).unwrap();
    let effects = h.effects();
    assert_eq!(
        effects[0],
        Effect::CloseSocket {
            generation,
            code: 4100,
            reason: "bye".into()
        }
    );
    assert_eq!(events(&effects), [Event::StateChanged(State::Closed)]);
    // The socket's own close arrives later and changes nothing.
    assert!(h.input(closed(generation, 4100)).is_empty());
    assert_eq!(h.d.state(), State::Closed);
}

#[test]
fn close_codes_and_reasons_browsers_refuse_are_rejected() {
    let mut h = Harness::new(config()).open();
    assert_eq!(h.d.close(1001, "", 0.0), Err(Error::InvalidCloseCode(1001)));
    assert_eq!(
        h.d.close(NORMAL, &"x".repeat(124), 0.0),
        Err(Error::ReasonTooLong)
    );
    assert_eq!(h.d.state(), State::Open);
    assert!(h.d.close(4999, &"x".repeat(123), 0.0).is_ok());
}

#[test]
fn the_users_close_during_backoff_stops_the_retry() {
    let mut h = Harness::new(config()).open();
    h.closed(ABNORMAL);
    h.d.close(NORMAL, "", 0.0).unwrap();
    let effects = h.effects();
    assert!(has(&effects, &Effect::StopTimer(TimerKind::Retry)));
    assert_eq!(h.d.state(), State::Closed);
}

#[test]
fn reconnect_replaces_an_open_socket() {
    let mut h = Harness::new(config()).open();
    let old = h.generation();
    h.d.reconnect(0.0);
    let effects = h.effects();
    assert_eq!(
        effects[0],
        Effect::CloseSocket {
            generation: old,
            code: NORMAL,
            reason: "reconnect".into()
        }
    );
    assert!(has(
        &effects,
        &Effect::OpenSocket {
            generation: old + 1,
            url: URL.into()
        }
    ));
    assert_eq!(h.d.state(), State::Connecting { attempt: 0 });
}

#[test]
fn events_of_a_replaced_socket_are_ignored() {
    let mut h = Harness::new(config()).open();
    let old = h.generation();
    h.d.reconnect(0.0);
    h.effects();
    assert!(
        h.input(Input::Message {
            generation: old,
            message: text("late")
        })
        .is_empty()
    );
    assert!(h.input(closed(old, ABNORMAL)).is_empty());
    assert!(h.input(Input::Opened { generation: old }).is_empty());
    assert!(
        h.input(Input::Error {
            generation: old,
            reason: "x".into()
        })
        .is_empty()
    );
    assert_eq!(h.d.stats(0.0).messages_received, 0);
}

// ---- network and visibility ----

#[test]
fn offline_pauses_the_retries_and_online_retries_at_once() {
    let mut h = Harness::new(config()).open();
    h.input(Input::Offline);
    let effects = h.closed(ABNORMAL);
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::StartTimer { id, .. } if id.kind == TimerKind::Retry))
    );
    assert_eq!(
        h.d.state(),
        State::Reconnecting {
            attempt: 1,
            delay_ms: None
        }
    );
    assert!(
        h.input(Input::Visible).is_empty(),
        "visible but offline: wait"
    );
    let effects = h.input(Input::Online);
    assert!(matches!(effects[0], Effect::OpenSocket { .. }));
}

#[test]
fn going_offline_during_a_backoff_stops_the_retry_timer() {
    let mut h = Harness::new(config()).open();
    h.closed(ABNORMAL);
    let effects = h.input(Input::Offline);
    assert_eq!(effects[0], Effect::StopTimer(TimerKind::Retry));
    assert_eq!(
        events(&effects),
        [Event::StateChanged(State::Reconnecting {
            attempt: 1,
            delay_ms: None
        })]
    );
}

#[test]
fn a_visible_page_retries_at_once_during_a_backoff() {
    let mut h = Harness::new(config()).open();
    h.closed(ABNORMAL);
    let effects = h.input(Input::Visible);
    assert_eq!(effects[0], Effect::StopTimer(TimerKind::Retry));
    assert!(matches!(effects[1], Effect::OpenSocket { .. }));
    // Visible while open: nothing.
    h.opened();
    assert!(h.input(Input::Visible).is_empty());
}

// ---- heartbeat ----

const HB: Heartbeat = Heartbeat {
    interval_ms: 400,
    timeout_ms: 800,
};

#[test]
fn the_heartbeat_ticks_while_open_and_pings_after_silence() {
    let mut h = Harness::new(config().with_heartbeat(HB)).open();
    assert_eq!(h.delay(TimerKind::Heartbeat), Some(100));
    let mut pings = 0;
    for _ in 0..4 {
        let effects = h.fire(TimerKind::Heartbeat);
        pings += writes(&effects).len();
        assert_eq!(h.delay(TimerKind::Heartbeat), Some(100), "re-armed");
    }
    assert_eq!(pings, 1);
    assert_eq!(h.d.stats(h.now).messages_sent, 1);
}

#[test]
fn the_ping_carries_the_time_it_was_sent() {
    let mut h = Harness::new(config().with_heartbeat(HB)).open();
    let mut frames = Vec::new();
    while frames.is_empty() {
        frames = writes(&h.fire(TimerKind::Heartbeat));
    }
    assert_eq!(client(&frames), [ClientMessage::Ping { t: h.now }]);
}

#[test]
fn any_message_postpones_the_ping() {
    let mut h = Harness::new(config().with_heartbeat(HB)).open();
    for _ in 0..10 {
        h.fire(TimerKind::Heartbeat);
        let effects = h.receive(text("traffic"));
        assert!(writes(&effects).is_empty());
    }
    assert_eq!(h.d.stats(h.now).messages_sent, 0);
}

#[test]
fn silence_after_a_ping_is_death_closed_and_retried() {
    let mut h = Harness::new(config().with_heartbeat(HB)).open();
    let generation = h.generation();
    let mut effects = Vec::new();
    while !effects
        .iter()
        .any(|e| matches!(e, Effect::CloseSocket { .. }))
    {
        assert!(h.now < 2000.0, "never declared dead");
        effects = h.fire(TimerKind::Heartbeat);
    }
    assert!(has(
        &effects,
        &Effect::CloseSocket {
            generation,
            code: NORMAL,
            reason: "heartbeat timeout".into()
        }
    ));
    assert!(events(&effects).iter().any(
        |e| matches!(e, Event::Close(c) if c.code == ABNORMAL && c.reason == "heartbeat timeout")
    ));
    assert!(matches!(
        h.d.state(),
        State::Reconnecting { attempt: 1, .. }
    ));
    assert_eq!(h.delay(TimerKind::Heartbeat), None, "stopped");
}

#[test]
fn the_heartbeat_stops_when_the_connection_closes() {
    let mut h = Harness::new(config().with_heartbeat(HB)).open();
    let effects = h.closed(ABNORMAL);
    assert!(has(&effects, &Effect::StopTimer(TimerKind::Heartbeat)));
    assert_eq!(h.delay(TimerKind::Heartbeat), None);
}

// ---- receiving, errors, stats ----

#[test]
fn messages_are_delivered_each_and_counted() {
    let mut h = Harness::new(config()).open();
    let effects = h.receive(text("a"));
    assert_eq!(events(&effects), [Event::Message(text("a"))]);
    h.receive(Message::Binary(vec![1, 2]));
    h.send("xyz").unwrap();
    h.now = 250.0;
    let stats = h.d.stats(h.now);
    assert_eq!(
        (
            stats.messages_received,
            stats.bytes_received,
            stats.messages_sent,
            stats.bytes_sent
        ),
        (2, 3, 1, 3)
    );
    assert_eq!(stats.uptime_ms, Some(250.0));
}

#[test]
fn a_transport_error_is_reported_typed() {
    let mut h = Harness::new(config()).open();
    let generation = h.generation();
    let effects = h.input(Input::Error {
        generation,
        reason: "boom".into(),
    });
    assert_eq!(
        events(&effects),
        [Event::Error(TransportError::Socket("boom".into()))]
    );
}

// ---- reliable mode ----

fn reliable() -> Harness {
    Harness::new(config().with_reliable(true))
}

/// A reliable driver, open, with session `s1` from the welcome.
fn reliable_open() -> Harness {
    let mut h = reliable().open();
    h.receive_server(&welcome("s1"));
    h.effects();
    h
}

#[test]
fn reliable_mode_starts_a_session_with_ack_0_and_numbers_sends() {
    let mut h = reliable();
    h.start();
    assert_eq!(h.send("a"), Ok(SendOutcome::Queued));
    let effects = h.opened();
    assert_eq!(
        client(&writes(&effects)),
        [
            ClientMessage::Ack { seq: 0 },
            ClientMessage::Msg {
                seq: 1,
                data: "a".into()
            }
        ]
    );
    assert_eq!(h.send("b"), Ok(SendOutcome::Sent));
    assert_eq!(
        client(&writes(&h.effects())),
        [ClientMessage::Msg {
            seq: 2,
            data: "b".into()
        }]
    );
    assert_eq!(h.d.stats(0.0).unacked, 2);
}

#[test]
fn reliable_frames_are_not_handed_back() {
    let mut h = reliable_open();
    h.send("a").unwrap();
    assert!(matches!(
        h.effects()[..],
        [Effect::Write {
            hand_back: false,
            ..
        }]
    ));
}

#[test]
fn reliable_mode_refuses_binary() {
    let mut h = reliable_open();
    assert_eq!(
        h.d.send(vec![1u8]),
        Err(SendError::BinaryNotReliable(Message::Binary(vec![1])))
    );
}

#[test]
fn unacknowledged_messages_count_against_the_queue_capacity() {
    let mut h = Harness::new(config().with_reliable(true).with_queue_capacity(2)).open();
    h.receive_server(&welcome("s1"));
    assert_eq!(h.send("a"), Ok(SendOutcome::Sent));
    assert_eq!(h.send("b"), Ok(SendOutcome::Sent));
    // Two kept: the window is full, so the third is refused rather than written.
    assert_eq!(h.send("c"), Err(SendError::QueueFull(text("c"))));
    h.receive_server(&ServerMessage::Ack { seq: 2 });
    assert_eq!(h.send("c"), Ok(SendOutcome::Sent));
    assert_eq!(h.d.stats(0.0).acked, 2);
}

#[test]
fn resume_order_is_resume_then_resend_then_hook_then_queue() {
    let mut h = reliable_open();
    h.d.set_open_hook(true);
    h.send("m1").unwrap();
    h.send("m2").unwrap();
    h.receive_server(&ServerMessage::Ack { seq: 1 });
    h.closed(ABNORMAL);
    h.fire(TimerKind::Retry);
    // Sent while down: queued.
    assert_eq!(h.send("m3"), Ok(SendOutcome::Queued));
    let effects = h.opened();
    assert_eq!(
        client(&writes(&effects)),
        [ClientMessage::Resume {
            session: "s1".into(),
            token: "s1-token".into(),
            last_seq: 0
        }]
    );
    assert!(!has(
        &effects,
        &Effect::RunOpenHook {
            generation: h.generation()
        }
    ));
    // Waiting for the answer: new sends queue behind.
    assert_eq!(h.send("m4"), Ok(SendOutcome::Queued));
    let effects = h.receive_server(&ServerMessage::Resumed { last_seq: 1 });
    assert_eq!(
        client(&writes(&effects)),
        [ClientMessage::Msg {
            seq: 2,
            data: "m2".into()
        }]
    );
    let generation = h.generation();
    assert_eq!(effects.last(), Some(&Effect::RunOpenHook { generation }));
    h.send("hook").unwrap();
    h.d.open_hook_done(generation);
    let effects = h.effects();
    let sent: Vec<String> = client(&writes(&effects))
        .into_iter()
        .map(|m| match m {
            ClientMessage::Msg { data, .. } => data,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(sent, ["hook", "m3", "m4"]);
    assert_eq!(
        events(&effects),
        [Event::Resumed { resent: 1 }, Event::Open]
    );
}

#[test]
fn a_failed_resume_hands_the_unconfirmed_back_typed_then_flushes() {
    let mut h = reliable_open();
    h.send("m1").unwrap();
    h.closed(ABNORMAL);
    h.fire(TimerKind::Retry);
    h.send("m2").unwrap();
    h.opened();
    h.receive_server(&welcome("s2"));
    let effects = h.receive_server(&ServerMessage::ResumeFailed {
        reason: ResumeFailure::UnknownSession,
    });
    assert_eq!(
        events(&effects),
        [
            Event::ResumeFailed {
                reason: ResumeFailure::UnknownSession,
                unconfirmed: vec![text("m1")]
            },
            Event::Open
        ]
    );
    // The queue flushes under the new session, numbered from 1.
    assert_eq!(
        client(&writes(&effects)),
        [ClientMessage::Msg {
            seq: 1,
            data: "m2".into()
        }]
    );
}

#[test]
fn messages_of_a_connection_that_died_before_its_welcome_fail_with_no_session() {
    let mut h = reliable().open();
    h.send("m1").unwrap();
    h.closed(ABNORMAL);
    h.fire(TimerKind::Retry);
    let effects = h.opened();
    assert!(events(&effects).contains(&Event::ResumeFailed {
        reason: ResumeFailure::NoSession,
        unconfirmed: vec![text("m1")]
    }));
    assert_eq!(client(&writes(&effects)), [ClientMessage::Ack { seq: 0 }]);
}

#[test]
fn an_ack_goes_out_after_32_messages_at_once() {
    let mut h = reliable_open();
    for seq in 1..ACK_EVERY {
        assert!(writes(&h.receive_server(&server_msg(seq, "x"))).is_empty());
    }
    assert_eq!(h.delay(TimerKind::Ack), Some(ACK_DELAY_MS.into()));
    let effects = h.receive_server(&server_msg(ACK_EVERY, "x"));
    assert_eq!(
        client(&writes(&effects)),
        [ClientMessage::Ack { seq: ACK_EVERY }]
    );
    assert!(has(&effects, &Effect::StopTimer(TimerKind::Ack)));
}

#[test]
fn the_ack_timer_acknowledges_what_arrived_since_the_last_ack() {
    let mut h = reliable_open();
    let effects = h.receive_server(&server_msg(1, "a"));
    assert_eq!(h.delay(TimerKind::Ack), Some(50));
    let first = h.timers[&TimerKind::Ack].0;
    // A second message does not restart the timer.
    let effects2 = h.receive_server(&server_msg(2, "b"));
    assert!(
        !effects2
            .iter()
            .any(|e| matches!(e, Effect::StartTimer { .. }))
    );
    assert_eq!(events(&effects), [Event::Message(text("a"))]);
    assert_eq!(h.timers[&TimerKind::Ack].0, first);
    let effects = h.fire(TimerKind::Ack);
    assert_eq!(client(&writes(&effects)), [ClientMessage::Ack { seq: 2 }]);
}

#[test]
fn server_messages_are_delivered_once_and_gaps_reported() {
    let mut h = reliable_open();
    let first = h.receive_server(&server_msg(1, "a"));
    assert_eq!(events(&first), [Event::Message(text("a"))]);
    assert!(events(&h.receive_server(&server_msg(1, "a"))).is_empty());
    let effects = h.receive_server(&ServerMessage::Gap { from: 2, to: 4 });
    assert_eq!(events(&effects), [Event::Gap { from: 2, to: 4 }]);
    let effects = h.receive_server(&server_msg(7, "g"));
    assert_eq!(
        events(&effects),
        [Event::Gap { from: 5, to: 6 }, Event::Message(text("g"))]
    );
    let stats = h.d.stats(0.0);
    assert_eq!((stats.gaps, stats.delivered), (2, 2));
}

#[test]
fn a_reliable_send_on_a_failed_socket_is_kept_for_the_resend() {
    let mut h = reliable_open();
    let generation = h.generation();
    h.send("a").unwrap();
    let effects = h.effects();
    // Not handed back (hand_back is false): the transport reports nothing,
    // and the socket closes. The message is resent after the resume.
    assert!(!effects.is_empty());
    h.closed(ABNORMAL);
    let _ = generation;
    h.fire(TimerKind::Retry);
    h.opened();
    let effects = h.receive_server(&ServerMessage::Resumed { last_seq: 0 });
    assert_eq!(
        client(&writes(&effects)),
        [ClientMessage::Msg {
            seq: 1,
            data: "a".into()
        }]
    );
}

#[test]
fn the_driver_can_move_to_another_thread() {
    // The native transport runs it on a multi-threaded runtime.
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Driver>();
    send_sync::<Effect>();
    send_sync::<Input>();
}

#[test]
fn a_callback_that_sends_during_the_pump_is_served_after_the_current_effect() {
    // The glue's pump, with an application callback that uses the driver
    // re-entrantly: its effects join the same FIFO, nothing is dropped.
    let mut d = Driver::new(config(), 1);
    d.set_open_hook(true);
    d.start(0.0);
    d.send("queued").unwrap();
    let mut log = Vec::new();
    while let Some(effect) = d.poll_effect() {
        match effect {
            Effect::OpenSocket { generation, .. } => {
                d.handle(Input::Opened { generation }, 1.0);
            }
            Effect::RunOpenHook { generation } => {
                d.send("hook").unwrap();
                d.open_hook_done(generation);
            }
            Effect::Write { message, .. } => log.push(format!("write {message:?}")),
            Effect::Emit(Event::Open) => {
                log.push("open".into());
                assert_eq!(d.send("callback"), Ok(SendOutcome::Sent));
            }
            _ => {}
        }
    }
    assert_eq!(
        log,
        [
            r#"write Text("hook")"#,
            r#"write Text("queued")"#,
            "open",
            r#"write Text("callback")"#
        ]
    );
}
