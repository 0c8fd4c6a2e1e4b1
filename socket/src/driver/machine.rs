//! The connection state machine: pure transitions from inputs to actions.
//!
//! No browser, no clock, no randomness inside: the web layer passes the time
//! and a random number in, and carries out the [`Action`]s that come back.
//! Every browser socket gets a generation number; events of a socket that was
//! replaced or abandoned carry an old generation and are ignored, so at most
//! one socket is ever live.

use shared::close_code::NORMAL;

use crate::config::{Backoff, ReconnectPolicy};
use crate::message::{CloseInfo, State};

/// The code of a close without a close frame (RFC 6455 section 7.1.5): the
/// browser reports it for a dropped connection, and the machine uses it for
/// the closes it synthesizes. Never sent on the wire, so not in
/// `shared::close_code`.
pub const ABNORMAL: u16 = 1006;

/// Something that happened, fed to [`Machine::step`].
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Start connecting (the wrapper was created).
    Start,
    /// Socket `generation` opened.
    Opened {
        /// Which socket.
        generation: u64,
    },
    /// Socket `generation` closed.
    Closed {
        /// Which socket.
        generation: u64,
        /// How.
        close: CloseInfo,
    },
    /// Socket `generation` closed with a close that forbids a reconnect
    /// whatever the policy says (the server refused the connection's token
    /// and there is no way to get another).
    Refused {
        /// Which socket.
        generation: u64,
        /// How.
        close: CloseInfo,
    },
    /// Socket `generation` did not open in time, or its heartbeat went silent.
    Dead {
        /// Which socket.
        generation: u64,
        /// Why, for the synthesized close.
        reason: &'static str,
    },
    /// The retry timer fired.
    RetryDue,
    /// The application closed the wrapper.
    UserClose {
        /// Close code sent to the server.
        code: u16,
        /// Close reason sent to the server.
        reason: String,
    },
    /// The application asked to reconnect now.
    Reconnect,
    /// The browser went offline.
    Offline,
    /// The browser came back online.
    Online,
    /// The tab became visible.
    Visible,
}

/// What the web layer must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create browser socket `generation` (dropping any previous one) and arm the connect timeout.
    Open {
        /// Its generation.
        generation: u64,
    },
    /// Close browser socket `generation` with `code` and `reason` and stop listening to it.
    Close {
        /// Which socket.
        generation: u64,
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Arm the retry timer.
    ScheduleRetry {
        /// After this many milliseconds.
        delay_ms: u64,
    },
    /// Disarm the retry timer.
    CancelRetry,
    /// The socket is open: run the open hook, flush the queue, start the heartbeat.
    Flush,
    /// Report a close to the application.
    EmitClose(CloseInfo),
    /// Report the new state to the application.
    EmitState(State),
}

/// The state machine of one wrapper.
pub struct Machine {
    url: String,
    state: State,
    generation: u64,
    attempt: u32,
    opened_at_ms: Option<f64>,
    offline: bool,
    backoff: Backoff,
    min_uptime_ms: f64,
    should_reconnect: ReconnectPolicy,
    opens: u64,
}

impl Machine {
    /// A machine in [`State::Closed`] that has not started.
    pub fn new(
        url: String,
        backoff: Backoff,
        min_uptime_ms: u32,
        should_reconnect: ReconnectPolicy,
    ) -> Self {
        Self {
            url,
            state: State::Closed,
            generation: 0,
            attempt: 0,
            opened_at_ms: None,
            offline: false,
            backoff,
            min_uptime_ms: f64::from(min_uptime_ms),
            should_reconnect,
            opens: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The generation of the current browser socket.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The current consecutive attempt number.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the current connection opened, if it is open.
    pub fn opened_at_ms(&self) -> Option<f64> {
        self.opened_at_ms
    }

    /// Opens after the first: successful reconnections.
    pub fn reconnects(&self) -> u64 {
        self.opens.saturating_sub(1)
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Feeds one input at time `now_ms`, with `random` uniform in `[0, 1)`
    /// for the jitter, and returns what to do.
    pub fn step(&mut self, input: Input, now_ms: f64, random: f64) -> Vec<Action> {
        let mut actions = Vec::new();
        match input {
            Input::Start => {
                if self.state == State::Closed {
                    self.attempt = 0;
                    self.connect(&mut actions);
                }
            }
            Input::Opened { generation } => {
                if generation == self.generation && matches!(self.state, State::Connecting { .. }) {
                    self.opened_at_ms = Some(now_ms);
                    self.opens += 1;
                    self.set(State::Open, &mut actions);
                    actions.push(Action::Flush);
                }
            }
            Input::Closed { generation, close } => {
                if generation == self.generation {
                    self.on_close(close, true, now_ms, random, &mut actions);
                }
            }
            Input::Refused { generation, close } => {
                if generation == self.generation {
                    self.on_close(close, false, now_ms, random, &mut actions);
                }
            }
            Input::Dead { generation, reason } => {
                if generation == self.generation
                    && matches!(self.state, State::Connecting { .. } | State::Open)
                {
                    actions.push(Action::Close {
                        generation,
                        code: NORMAL,
                        reason: reason.into(),
                    });
                    let close = CloseInfo {
                        url: self.url.clone(),
                        code: ABNORMAL,
                        reason: reason.into(),
                        was_clean: false,
                    };
                    self.on_close(close, true, now_ms, random, &mut actions);
                }
            }
            Input::RetryDue => {
                if matches!(self.state, State::Reconnecting { .. }) && !self.offline {
                    self.connect(&mut actions);
                }
            }
            Input::UserClose { code, reason } => {
                match self.state {
                    State::Connecting { .. } | State::Open => {
                        actions.push(Action::Close {
                            generation: self.generation,
                            code,
                            reason,
                        });
                        // That socket is finished: the web layer stops listening
                        // to it, and the new generation ignores anything late.
                    }
                    State::Reconnecting { .. } => actions.push(Action::CancelRetry),
                    State::Closed => {}
                }
                self.generation += 1;
                self.opened_at_ms = None;
                self.set(State::Closed, &mut actions);
            }
            Input::Reconnect => {
                match self.state {
                    State::Connecting { .. } | State::Open => actions.push(Action::Close {
                        generation: self.generation,
                        code: NORMAL,
                        reason: "reconnect".into(),
                    }),
                    State::Reconnecting { .. } => actions.push(Action::CancelRetry),
                    State::Closed => {}
                }
                self.attempt = 0;
                self.opened_at_ms = None;
                self.connect(&mut actions);
            }
            Input::Offline => {
                self.offline = true;
                if let State::Reconnecting { attempt, .. } = self.state {
                    actions.push(Action::CancelRetry);
                    self.set(
                        State::Reconnecting {
                            attempt,
                            delay_ms: None,
                        },
                        &mut actions,
                    );
                }
            }
            Input::Online | Input::Visible => {
                if matches!(input, Input::Online) {
                    self.offline = false;
                }
                if matches!(self.state, State::Reconnecting { .. }) && !self.offline {
                    actions.push(Action::CancelRetry);
                    self.connect(&mut actions);
                }
            }
        }
        actions
    }

    fn set(&mut self, state: State, actions: &mut Vec<Action>) {
        if self.state != state {
            self.state = state;
            actions.push(Action::EmitState(state));
        }
    }

    fn connect(&mut self, actions: &mut Vec<Action>) {
        self.generation += 1;
        actions.push(Action::Open {
            generation: self.generation,
        });
        self.set(
            State::Connecting {
                attempt: self.attempt,
            },
            actions,
        );
    }

    /// A close of the live socket; `may_reconnect` false forbids a
    /// reconnect whatever the policy says.
    fn on_close(
        &mut self,
        close: CloseInfo,
        may_reconnect: bool,
        now_ms: f64,
        random: f64,
        actions: &mut Vec<Action>,
    ) {
        let was_up_long = self
            .opened_at_ms
            .take()
            .is_some_and(|opened| now_ms - opened >= self.min_uptime_ms);
        let reconnect = may_reconnect && (self.should_reconnect)(&close);
        actions.push(Action::EmitClose(close));
        // The socket is finished: a late event from it must not count.
        self.generation += 1;
        if self.state == State::Closed || !reconnect {
            self.set(State::Closed, actions);
            return;
        }
        if was_up_long {
            self.attempt = 0;
        }
        self.attempt += 1;
        if self
            .backoff
            .max_attempts
            .is_some_and(|max| self.attempt > max)
        {
            self.set(State::Closed, actions);
            return;
        }
        if self.offline {
            self.set(
                State::Reconnecting {
                    attempt: self.attempt,
                    delay_ms: None,
                },
                actions,
            );
            return;
        }
        let delay_ms = self.backoff.delay_ms(self.attempt, random);
        actions.push(Action::ScheduleRetry { delay_ms });
        self.set(
            State::Reconnecting {
                attempt: self.attempt,
                delay_ms: Some(delay_ms),
            },
            actions,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::default_should_reconnect;

    fn machine() -> Machine {
        Machine::new(
            "ws://x/ws".into(),
            Backoff::default(),
            5000,
            Arc::new(default_should_reconnect),
        )
    }

    fn close(code: u16) -> CloseInfo {
        CloseInfo {
            url: "ws://x/ws".into(),
            code,
            reason: String::new(),
            was_clean: code != 1006,
        }
    }

    /// The input for a close of socket `generation` with `code`.
    fn closed(generation: u64, code: u16) -> Input {
        Input::Closed {
            generation,
            close: close(code),
        }
    }

    /// Starts and opens; returns the live generation.
    fn open(m: &mut Machine, now: f64) -> u64 {
        m.step(Input::Start, now, 0.5);
        let generation = m.generation();
        m.step(Input::Opened { generation }, now, 0.5);
        generation
    }

    #[test]
    fn start_opens_a_socket_and_open_flushes() {
        let mut m = machine();
        assert_eq!(
            m.step(Input::Start, 0.0, 0.5),
            vec![
                Action::Open { generation: 1 },
                Action::EmitState(State::Connecting { attempt: 0 })
            ]
        );
        assert_eq!(
            m.step(Input::Opened { generation: 1 }, 10.0, 0.5),
            vec![Action::EmitState(State::Open), Action::Flush]
        );
        assert_eq!(m.opened_at_ms(), Some(10.0));
    }

    #[test]
    fn an_abnormal_close_schedules_a_jittered_retry_then_reconnects() {
        let mut m = machine();
        let generation = open(&mut m, 0.0);
        let actions = m.step(closed(generation, 1006), 100.0, 0.5);
        assert_eq!(
            actions,
            vec![
                Action::EmitClose(close(1006)),
                Action::ScheduleRetry { delay_ms: 500 },
                Action::EmitState(State::Reconnecting {
                    attempt: 1,
                    delay_ms: Some(500)
                }),
            ]
        );
        let actions = m.step(Input::RetryDue, 600.0, 0.5);
        assert_eq!(
            actions,
            vec![
                Action::Open {
                    generation: generation + 2
                },
                Action::EmitState(State::Connecting { attempt: 1 })
            ]
        );
        m.step(
            Input::Opened {
                generation: generation + 2,
            },
            700.0,
            0.5,
        );
        assert_eq!(m.reconnects(), 1);
    }

    #[test]
    fn attempts_grow_until_an_uptime_of_min_uptime_resets_them() {
        let mut m = machine();
        let mut generation = open(&mut m, 0.0);
        // Accepted and dropped at once, three times: the delay ceiling grows.
        for (i, ceiling) in [1000u64, 2000, 4000].into_iter().enumerate() {
            let actions = m.step(closed(generation, 1006), 100.0, 0.999);
            assert!(actions.contains(&Action::ScheduleRetry {
                delay_ms: (ceiling as f64 * 0.999).round() as u64
            }));
            assert_eq!(m.attempt(), i as u32 + 1);
            m.step(Input::RetryDue, 0.0, 0.5);
            generation = m.generation();
            m.step(Input::Opened { generation }, 0.0, 0.5);
        }
        // This connection stays up 5 s: the next failure starts from attempt 1.
        m.step(closed(generation, 1006), 5000.0, 0.0);
        assert_eq!(m.attempt(), 1);
    }

    #[test]
    fn the_policy_stops_reconnects_after_a_kick() {
        let mut m = machine();
        let generation = open(&mut m, 0.0);
        let actions = m.step(closed(generation, 4000), 1.0, 0.5);
        assert_eq!(
            actions,
            vec![
                Action::EmitClose(close(4000)),
                Action::EmitState(State::Closed)
            ]
        );
        // reconnect() works after that.
        let actions = m.step(Input::Reconnect, 2.0, 0.5);
        assert!(matches!(actions[0], Action::Open { .. }));
        assert_eq!(m.state(), State::Connecting { attempt: 0 });
    }

    #[test]
    fn max_attempts_gives_up_and_reconnect_starts_again() {
        let mut m = Machine::new(
            "u".into(),
            Backoff {
                max_attempts: Some(2),
                ..Backoff::default()
            },
            5000,
            Arc::new(default_should_reconnect),
        );
        m.step(Input::Start, 0.0, 0.5);
        for _ in 0..2 {
            let generation = m.generation();
            m.step(closed(generation, 1006), 0.0, 0.5);
            assert!(matches!(m.state(), State::Reconnecting { .. }));
            m.step(Input::RetryDue, 0.0, 0.5);
        }
        let generation = m.generation();
        m.step(closed(generation, 1006), 0.0, 0.5);
        assert_eq!(m.state(), State::Closed);
        m.step(Input::Reconnect, 0.0, 0.5);
        assert_eq!(m.state(), State::Connecting { attempt: 0 });
    }

    #[test]
    fn user_close_during_connecting_is_final() {
        let mut m = machine();
        m.step(Input::Start, 0.0, 0.5);
        let generation = m.generation();
        let actions = m.step(
            Input::UserClose {
                code: 1000,
                reason: "bye".into(),
            },
            0.0,
            0.5,
        );
        assert_eq!(
            actions,
            vec![
                Action::Close {
                    generation,
                    code: 1000,
                    reason: "bye".into()
                },
                Action::EmitState(State::Closed)
            ]
        );
        // The late events of that socket change nothing.
        assert_eq!(m.step(Input::Opened { generation }, 1.0, 0.5), vec![]);
        assert_eq!(m.step(closed(generation, 1000), 1.0, 0.5), vec![]);
        assert_eq!(m.step(Input::RetryDue, 1.0, 0.5), vec![]);
        assert_eq!(m.state(), State::Closed);
    }

    #[test]
    fn user_close_during_backoff_cancels_the_retry() {
        let mut m = machine();
        let generation = open(&mut m, 0.0);
        m.step(closed(generation, 1006), 0.0, 0.5);
        let actions = m.step(
            Input::UserClose {
                code: 1000,
                reason: String::new(),
            },
            0.0,
            0.5,
        );
        assert_eq!(
            actions,
            vec![Action::CancelRetry, Action::EmitState(State::Closed)]
        );
        assert_eq!(m.step(Input::RetryDue, 1.0, 0.5), vec![]);
    }

    #[test]
    fn events_of_a_replaced_socket_are_ignored() {
        let mut m = machine();
        let old = open(&mut m, 0.0);
        m.step(Input::Reconnect, 1.0, 0.5);
        let new = m.generation();
        assert_ne!(old, new);
        assert_eq!(m.step(closed(old, 1000), 2.0, 0.5), vec![]);
        assert_eq!(m.step(Input::Opened { generation: old }, 2.0, 0.5), vec![]);
        assert_eq!(m.state(), State::Connecting { attempt: 0 });
        assert_eq!(
            m.step(Input::Opened { generation: new }, 2.0, 0.5),
            vec![Action::EmitState(State::Open), Action::Flush]
        );
    }

    #[test]
    fn a_dead_connection_is_closed_and_retried() {
        let mut m = machine();
        let generation = open(&mut m, 0.0);
        let actions = m.step(
            Input::Dead {
                generation,
                reason: "heartbeat timeout",
            },
            1.0,
            0.5,
        );
        assert_eq!(
            actions[0],
            Action::Close {
                generation,
                code: 1000,
                reason: "heartbeat timeout".into()
            }
        );
        assert!(matches!(
            actions[1],
            Action::EmitClose(CloseInfo { code: 1006, .. })
        ));
        assert!(matches!(m.state(), State::Reconnecting { attempt: 1, .. }));
        // The browser's own close of that socket arrives later and is ignored.
        assert_eq!(m.step(closed(generation, 1000), 2.0, 0.5), vec![]);
        // A connect timeout works the same way.
        m.step(Input::RetryDue, 3.0, 0.5);
        let generation = m.generation();
        m.step(
            Input::Dead {
                generation,
                reason: "connect timeout",
            },
            4.0,
            0.5,
        );
        assert!(matches!(m.state(), State::Reconnecting { attempt: 2, .. }));
    }

    #[test]
    fn offline_pauses_retries_and_online_or_visible_retries_at_once() {
        let mut m = machine();
        let generation = open(&mut m, 0.0);
        m.step(Input::Offline, 0.0, 0.5);
        let actions = m.step(closed(generation, 1006), 1.0, 0.5);
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::ScheduleRetry { .. }))
        );
        assert_eq!(
            m.state(),
            State::Reconnecting {
                attempt: 1,
                delay_ms: None
            }
        );
        assert_eq!(m.step(Input::RetryDue, 2.0, 0.5), vec![]);
        assert_eq!(
            m.step(Input::Visible, 2.0, 0.5),
            vec![],
            "visible but offline: wait"
        );
        let actions = m.step(Input::Online, 3.0, 0.5);
        assert!(matches!(actions[1], Action::Open { .. }));

        // Visible while waiting for a retry: retry at once.
        let generation = m.generation();
        m.step(closed(generation, 1006), 4.0, 0.5);
        let actions = m.step(Input::Visible, 5.0, 0.5);
        assert_eq!(actions[0], Action::CancelRetry);
        assert!(matches!(actions[1], Action::Open { .. }));
    }

    #[test]
    fn going_offline_during_a_backoff_cancels_the_timer() {
        let mut m = machine();
        let generation = open(&mut m, 0.0);
        m.step(closed(generation, 1006), 1.0, 0.5);
        let actions = m.step(Input::Offline, 2.0, 0.5);
        assert_eq!(
            actions,
            vec![
                Action::CancelRetry,
                Action::EmitState(State::Reconnecting {
                    attempt: 1,
                    delay_ms: None
                })
            ]
        );
    }
}
