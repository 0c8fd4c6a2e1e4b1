//! Socket events collected between two flushes into one [`Batch`].
//!
//! The event callback runs for every message of a burst, so it only counts
//! and keeps the newest log lines; the reducer sees the batch once per flush.

use std::collections::VecDeque;
use std::fmt::Display;

use buffered_socket::{CloseInfo, DropReason, Event, Message, State};
use shared::object::Object;

use super::{Kind, LOG_LINES, Line};

/// What the console reads of a server message: its type, and the one
/// number it counts or shows. Read field by field (`shared::object`)
/// rather than decoded whole: the console shows the rest as text, and its
/// wasm then carries no decoder of the message types it does not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Push(u64),
    BurstDone(u32),
    Pong,
    Echo(u64),
    /// An `error`, or a message that is not one (no type, a field missing).
    Error,
    Other,
}

impl Seen {
    fn of(text: &str) -> Self {
        let Ok(object) = Object::parse(text) else {
            return Self::Error;
        };
        let Ok(Some(ty)) = object.tag("type") else {
            return Self::Error;
        };
        let read = match &*ty {
            "push" => object.required("seq").map(Self::Push),
            "burst_done" => object.required("count").map(Self::BurstDone),
            "pong" => Ok(Self::Pong),
            "echo" => object.required("id").map(Self::Echo),
            "error" => Ok(Self::Error),
            _ => Ok(Self::Other),
        };
        read.unwrap_or(Self::Error)
    }
}

/// A state change and when the app saw it: the reconnection countdown runs
/// from there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StateChange {
    /// The new state.
    pub state: State,
    /// When the event arrived (ms since the epoch).
    pub at_ms: f64,
}

/// What happened since the last flush, collected outside the reducer.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    /// Messages received.
    pub messages: u64,
    /// Of which pushes.
    pub pushes: u64,
    /// A `burst_done` arrived (its count).
    pub burst_done: Option<u32>,
    /// The last state change, if any.
    pub state_change: Option<StateChange>,
    /// The pushes' seqs, in arrival order.
    pub push_seqs: Vec<u64>,
    /// This tab's echo replies, by their number in the tab, in arrival order.
    pub own_echoes: Vec<u64>,
    /// The newest log lines (at most [`LOG_LINES`]), oldest first.
    pub lines: VecDeque<Line>,
}

impl Batch {
    /// Adds a line, keeping only the newest [`LOG_LINES`].
    pub fn line(&mut self, line: Line) {
        if self.lines.len() == LOG_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// Counts and logs one socket event that arrived at `now_ms` in tab
    /// `tab` ([`buffered_socket::Socket::tab_id`]; `None`: every echo is
    /// ours). With a connection shared across tabs every tab receives every
    /// reply, so an echo whose id does not carry `tab` ([`super::echo_tab`])
    /// is counted but not logged; pushes are logged in every tab.
    pub fn collect_in_tab(&mut self, event: &Event, now_ms: f64, tab: Option<u32>) {
        let line = match event {
            Event::Message(Message::Text(text)) => {
                self.messages += 1;
                match Seen::of(text) {
                    Seen::Push(seq) => {
                        self.pushes += 1;
                        self.push_seqs.push(seq);
                        Some((Kind::Push, text.clone()))
                    }
                    Seen::BurstDone(count) => {
                        self.burst_done = Some(count);
                        Some((Kind::Response, text.clone()))
                    }
                    // Heartbeat answers are counted, not logged.
                    Seen::Pong => None,
                    // Another tab's echo.
                    Seen::Echo(id) if tab.is_some_and(|tab| super::echo_tab(id) != tab) => None,
                    Seen::Echo(id) => {
                        self.own_echoes.push(id & 0xffff_ffff);
                        Some((Kind::Response, text.clone()))
                    }
                    Seen::Error => Some((Kind::Error, text.clone())),
                    Seen::Other => Some((Kind::Response, text.clone())),
                }
            }
            Event::Message(Message::Binary(data)) => {
                self.messages += 1;
                Some((Kind::Response, format!("{} binary bytes", data.len())))
            }
            Event::Open => Some((Kind::Open, "connected".into())),
            Event::Close(close) => Some((Kind::Close, close_text(close))),
            Event::Dropped { message, reason } => {
                // Written out rather than `{:?}`: Debug formatting is code
                // the console's wasm does without (its size budget).
                let why = match reason {
                    DropReason::Overflow => "overflow",
                    DropReason::CapacityLowered => "capacity lowered",
                    DropReason::RefusedByLeader => "refused by the leader tab",
                };
                let what = match message {
                    Message::Text(text) => format!("\"{text}\""),
                    Message::Binary(data) => format!("{} binary bytes", data.len()),
                };
                Some((
                    Kind::Error,
                    format!("dropped from the queue ({why}): {what}"),
                ))
            }
            Event::Resumed { resent } => Some((
                Kind::Resume,
                format!("the session continues; {resent} unacknowledged message(s) resent"),
            )),
            Event::Gap { from, to } => Some((
                Kind::Gap,
                format!(
                    "server messages {from} to {to} were lost: the server's history did not reach back"
                ),
            )),
            Event::StateChanged(state) => {
                self.state_change = Some(StateChange {
                    state: *state,
                    at_ms: now_ms,
                });
                None
            }
            Event::Error(error) => Some((Kind::Error, error_text(error))),
            Event::ResumeFailed {
                reason,
                unconfirmed,
            } => Some((Kind::Gap, resume_failed_text(reason, unconfirmed.len()))),
            // Token mode: a refused token or a failed provider. (A refresh
            // that worked shows as its `refreshed` message.)
            Event::Auth(error) => Some((Kind::Error, error_text(error))),
            _ => None,
        };
        if let Some((kind, text)) = line {
            self.line(Line {
                at_ms: now_ms,
                kind,
                text,
            });
        }
    }
}

/// `code 1001 server shutting down`, `code 1006 (no reason), not clean`.
fn close_text(close: &CloseInfo) -> String {
    format!(
        "code {} {}{}",
        close.code,
        if close.reason.is_empty() {
            "(no reason)"
        } else {
            &close.reason
        },
        if close.was_clean { "" } else { ", not clean" }
    )
}

/// The text of [`Event::Error`].
fn error_text(error: &impl Display) -> String {
    error.to_string()
}

/// The text of [`Event::ResumeFailed`]: why, and what may have been lost.
fn resume_failed_text(reason: &impl Display, unconfirmed: usize) -> String {
    match unconfirmed {
        0 => format!(
            "the session could not resume ({reason}): a new one started; \
             no sent message was waiting for an acknowledgement"
        ),
        n => format!(
            "the session could not resume ({reason}): a new one started; {n} sent \
             message(s) never acknowledged may or may not have been processed"
        ),
    }
}

#[cfg(test)]
mod tests {
    use buffered_socket::{AuthError, DropReason, TransportError};
    use shared::{ResumeFailure, ServerMessage};

    use super::*;

    fn collected(events: &[Event]) -> Batch {
        let mut batch = Batch::default();
        for (i, event) in events.iter().enumerate() {
            batch.collect_in_tab(event, 1_000.0 + i as f64, None);
        }
        batch
    }

    fn text(json: String) -> Event {
        Event::Message(Message::Text(json))
    }

    fn kinds_and_texts(batch: &Batch) -> Vec<(Kind, &str)> {
        batch
            .lines
            .iter()
            .map(|l| (l.kind, l.text.as_str()))
            .collect()
    }

    // The payloads of the variants being retyped, built in one place.
    fn resume_failed(reason: ResumeFailure, unconfirmed: usize) -> Event {
        Event::ResumeFailed {
            reason,
            unconfirmed: vec![Message::Text("m".into()); unconfirmed],
        }
    }

    fn error(text: &str) -> Event {
        Event::Error(TransportError::Socket(text.into()))
    }

    #[test]
    fn a_batch_keeps_only_the_newest_lines() {
        let mut batch = Batch::default();
        for i in 0..LOG_LINES + 10 {
            batch.line(Line {
                at_ms: 0.0,
                kind: Kind::Push,
                text: i.to_string(),
            });
        }
        assert_eq!(batch.lines.len(), LOG_LINES);
        assert_eq!(batch.lines[0].text, "10");
    }

    #[test]
    fn every_message_is_counted_and_pushes_apart() {
        let push = ServerMessage::Push {
            seq: 1,
            sent_at_ms: 5,
            body: "p".into(),
        }
        .to_json();
        let echo = ServerMessage::Echo {
            id: 1,
            body: "hello".into(),
        }
        .to_json();
        let batch = collected(&[
            text(push.clone()),
            text(echo.clone()),
            Event::Message(Message::Binary(vec![1, 2, 3])),
            text(push.clone()),
        ]);
        assert_eq!(batch.messages, 4);
        assert_eq!(batch.pushes, 2);
        assert_eq!(
            kinds_and_texts(&batch),
            [
                (Kind::Push, push.as_str()),
                (Kind::Response, echo.as_str()),
                (Kind::Response, "3 binary bytes"),
                (Kind::Push, push.as_str()),
            ]
        );
        // Each line carries the time its event arrived.
        assert_eq!(batch.lines[1].at_ms, 1_001.0);
    }

    #[test]
    fn pongs_are_counted_but_not_logged() {
        let pong = ServerMessage::Pong { t: 3.0 }.to_json();
        let batch = collected(&[text(pong)]);
        assert_eq!(batch.messages, 1);
        assert!(batch.lines.is_empty());
    }

    #[test]
    fn burst_done_is_noted_and_logged_as_a_response() {
        let done = ServerMessage::BurstDone {
            count: 100,
            elapsed_ms: 12,
        }
        .to_json();
        let batch = collected(&[text(done.clone())]);
        assert_eq!(batch.burst_done, Some(100));
        assert_eq!(kinds_and_texts(&batch), [(Kind::Response, done.as_str())]);
    }

    #[test]
    fn server_errors_and_undecodable_text_are_errors() {
        let batch = collected(&[text("not json".into()), error("the socket failed")]);
        assert_eq!(
            kinds_and_texts(&batch),
            [
                (Kind::Error, "not json"),
                (
                    Kind::Error,
                    "the socket reported an error: the socket failed"
                ),
            ]
        );
    }

    #[test]
    fn token_problems_are_logged_as_errors() {
        let batch = collected(&[
            Event::Auth(AuthError::Unauthorized {
                reason: "invalid token".into(),
                retrying: false,
            }),
            Event::TokenRefreshed { exp: 1 },
        ]);
        assert_eq!(
            kinds_and_texts(&batch),
            [(Kind::Error, "the server refused the token: invalid token")]
        );
    }

    #[test]
    fn open_and_close_are_logged_with_the_code_and_reason() {
        let close = |code, reason: &str, was_clean| {
            Event::Close(CloseInfo {
                url: "ws://x/ws".into(),
                code,
                reason: reason.into(),
                was_clean,
            })
        };
        let batch = collected(&[
            Event::Open,
            close(1001, "server shutting down", true),
            close(1006, "", false),
        ]);
        assert_eq!(
            kinds_and_texts(&batch),
            [
                (Kind::Open, "connected"),
                (Kind::Close, "code 1001 server shutting down"),
                (Kind::Close, "code 1006 (no reason), not clean"),
            ]
        );
    }

    #[test]
    fn a_failed_resume_names_the_reason_and_the_unconfirmed_messages() {
        let batch = collected(&[
            resume_failed(ResumeFailure::UnknownSession, 0),
            resume_failed(ResumeFailure::BadToken, 2),
        ]);
        assert_eq!(batch.lines[0].kind, Kind::Gap);
        assert!(batch.lines[0].text.contains("(unknown_session)"));
        assert!(batch.lines[0].text.contains("no sent message was waiting"));
        assert!(batch.lines[1].text.contains("(bad_token)"));
        assert!(
            batch.lines[1]
                .text
                .contains("2 sent message(s) never acknowledged")
        );
    }

    #[test]
    fn resumes_gaps_and_drops_are_logged() {
        let batch = collected(&[
            Event::Resumed { resent: 3 },
            Event::Gap { from: 5, to: 9 },
            Event::Dropped {
                message: Message::Text("old".into()),
                reason: DropReason::Overflow,
            },
        ]);
        let lines = kinds_and_texts(&batch);
        assert_eq!(
            lines[0],
            (
                Kind::Resume,
                "the session continues; 3 unacknowledged message(s) resent"
            )
        );
        assert_eq!(lines[1].0, Kind::Gap);
        assert!(lines[1].1.starts_with("server messages 5 to 9 were lost"));
        assert_eq!(
            lines[2],
            (Kind::Error, "dropped from the queue (overflow): \"old\"")
        );
    }

    #[test]
    fn the_last_state_change_is_kept_with_its_time_and_not_logged() {
        let reconnecting = State::Reconnecting {
            attempt: 1,
            delay_ms: Some(500),
        };
        let batch = collected(&[
            Event::StateChanged(State::Connecting { attempt: 0 }),
            Event::StateChanged(reconnecting),
        ]);
        assert_eq!(
            batch.state_change,
            Some(StateChange {
                state: reconnecting,
                at_ms: 1_001.0
            })
        );
        assert!(batch.lines.is_empty());
        assert_eq!(batch.messages, 0);
    }
}
