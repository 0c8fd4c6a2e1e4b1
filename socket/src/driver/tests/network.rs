//! Driver rules: network and visibility.

use super::*;

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
