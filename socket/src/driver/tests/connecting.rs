//! Driver rules: connecting.

use super::*;

#[test]
fn start_opens_a_socket_and_arms_the_connect_timeout() {
    let mut h = Harness::new(config().with_connect_timeout_ms(1234));
    let effects = h.start();
    assert_eq!(
        effects[0],
        Effect::OpenSocket {
            generation: 1,
            url: OPENED.into(),
            token: None
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
            url: format!("{URL}?reliable=1&protocol=2"),
            token: None
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
        error: "bad".into(),
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
