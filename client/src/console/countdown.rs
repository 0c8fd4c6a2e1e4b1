//! The connection state as shown, with the countdown to the next attempt.
//!
//! The socket's [`State::Reconnecting`] carries the delay chosen when the
//! attempt was scheduled, not when it is due. The app notes the time the
//! state change arrived ([`super::StateChange`]), so the deadline is that
//! time plus the delay; the text counts down to it from the clock of the last
//! flush, which runs every 100 ms.

use buffered_socket::State;

use super::StateChange;

/// The next reconnection attempt, as a state change scheduled it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    /// The `Reconnecting` state that scheduled it.
    pub state: State,
    /// When the attempt is due (ms since the epoch), or `None` while the
    /// wrapper waits for the browser to come back online.
    pub due_ms: Option<f64>,
}

impl Retry {
    /// The attempt `change` scheduled, if it is a `Reconnecting` state.
    pub fn scheduled_by(change: StateChange) -> Option<Self> {
        match change.state {
            State::Reconnecting { delay_ms, .. } => Some(Self {
                state: change.state,
                due_ms: delay_ms.map(|d| change.at_ms + d as f64),
            }),
            _ => None,
        }
    }
}

/// The state badge's classes: `state` and the state's name, written out.
/// The badge sets them as its `className` property: html! makes a
/// `class={…}` that is not a literal into yew's `Classes`, an `IndexSet`
/// whose hashing and table code the console need not carry for one word.
pub fn state_class(state: &State) -> &'static str {
    match state {
        State::Connecting { .. } => "state connecting",
        State::Open => "state open",
        State::Reconnecting { .. } => "state reconnecting",
        State::Closed => "state closed",
    }
}

/// The state as shown: its name, and while reconnecting the attempt and the
/// seconds left until it (rounded up to a tenth, so it reads 0.0 only once
/// due), e.g. `reconnecting (attempt 2, next try in 1.4 s)`.
///
/// `retry` is the attempt recorded at the last flush; if it belongs to another
/// state (the change has not been flushed yet), the whole delay is ahead.
pub fn state_text(state: &State, retry: Option<&Retry>, now_ms: f64) -> String {
    let State::Reconnecting { attempt, delay_ms } = *state else {
        return state.name().to_owned();
    };
    let left_ms = match (delay_ms, retry) {
        (None, _) => return format!("reconnecting (attempt {attempt}, waiting for the network)"),
        (
            Some(_),
            Some(Retry {
                state: scheduled,
                due_ms: Some(due_ms),
            }),
        ) if scheduled == state => (due_ms - now_ms).max(0.0),
        (Some(delay_ms), _) => delay_ms as f64,
    };
    let seconds = (left_ms / 100.0).ceil() / 10.0;
    format!(
        "reconnecting (attempt {attempt}, next try in {} s)",
        super::fixed(seconds, 1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reconnecting(attempt: u32, delay_ms: Option<u64>) -> State {
        State::Reconnecting { attempt, delay_ms }
    }

    fn retry(state: State, at_ms: f64) -> Option<Retry> {
        Retry::scheduled_by(StateChange { state, at_ms })
    }

    #[test]
    fn the_badge_class_is_state_and_the_name() {
        for state in [
            State::Connecting { attempt: 0 },
            State::Open,
            reconnecting(2, Some(1500)),
            State::Closed,
        ] {
            assert_eq!(state_class(&state), format!("state {}", state.name()));
        }
    }

    #[test]
    fn other_states_show_their_name_only() {
        let stale = retry(reconnecting(1, Some(1_000)), 0.0);
        for (state, name) in [
            (State::Connecting { attempt: 3 }, "connecting"),
            (State::Open, "open"),
            (State::Closed, "closed"),
        ] {
            assert_eq!(state_text(&state, stale.as_ref(), 500.0), name);
            assert_eq!(retry(state, 0.0), None);
        }
    }

    #[test]
    fn the_seconds_left_count_down_to_zero() {
        let state = reconnecting(2, Some(25_500));
        let scheduled = retry(state, 1_000_000.0);
        assert_eq!(
            scheduled.map(|r| r.due_ms),
            Some(Some(1_025_500.0)),
            "due at the arrival plus the delay"
        );
        let at = |now_ms| state_text(&state, scheduled.as_ref(), now_ms);
        assert_eq!(
            at(1_000_000.0),
            "reconnecting (attempt 2, next try in 25.5 s)"
        );
        assert_eq!(
            at(1_000_100.0),
            "reconnecting (attempt 2, next try in 25.4 s)"
        );
        assert_eq!(
            at(1_010_000.0),
            "reconnecting (attempt 2, next try in 15.5 s)"
        );
        assert_eq!(
            at(1_025_450.0),
            "reconnecting (attempt 2, next try in 0.1 s)"
        );
        assert_eq!(
            at(1_025_500.0),
            "reconnecting (attempt 2, next try in 0.0 s)"
        );
        // Past due (the attempt is starting): never negative.
        assert_eq!(
            at(1_030_000.0),
            "reconnecting (attempt 2, next try in 0.0 s)"
        );
    }

    #[test]
    fn each_tick_shows_less_time_left() {
        let state = reconnecting(1, Some(3_000));
        let scheduled = retry(state, 0.0);
        let texts: Vec<String> = (0..=30)
            .map(|tick| state_text(&state, scheduled.as_ref(), f64::from(tick) * 100.0))
            .collect();
        for pair in texts.windows(2) {
            assert_ne!(pair[0], pair[1], "the countdown stood still");
        }
        assert!(texts[30].ends_with("next try in 0.0 s)"));
    }

    #[test]
    fn a_change_not_flushed_yet_shows_the_whole_delay() {
        // The flush recorded attempt 1; the socket is already at attempt 2.
        let old = retry(reconnecting(1, Some(1_000)), 0.0);
        let state = reconnecting(2, Some(2_000));
        assert_eq!(
            state_text(&state, old.as_ref(), 5_000.0),
            "reconnecting (attempt 2, next try in 2.0 s)"
        );
        assert_eq!(
            state_text(&state, None, 5_000.0),
            "reconnecting (attempt 2, next try in 2.0 s)"
        );
    }

    #[test]
    fn offline_waits_for_the_network_without_a_countdown() {
        let state = reconnecting(4, None);
        let scheduled = retry(state, 0.0);
        assert_eq!(scheduled.map(|r| r.due_ms), Some(None));
        assert_eq!(
            state_text(&state, scheduled.as_ref(), 10_000.0),
            "reconnecting (attempt 4, waiting for the network)"
        );
    }
}
