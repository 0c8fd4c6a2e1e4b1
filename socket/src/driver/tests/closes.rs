//! Driver rules: closes and the reconnect policy.

use super::*;

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
            url: OPENED.into(),
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
            url: OPENED.into(),
            token: None
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
            error: "x".into()
        })
        .is_empty()
    );
    assert_eq!(h.d.stats(0.0).messages_received, 0);
}
