//! Driver rules: heartbeat.

use super::*;

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
