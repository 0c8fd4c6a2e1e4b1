//! Connects the socket's events to the reducer, batched.
//!
//! The event callback only counts and keeps the newest log lines in a plain
//! `RefCell`; every 100 ms the batch is dispatched to the reducer as one
//! action. A 100,000-message burst therefore costs about ten renders a
//! second, and no message is missed: every one is counted.

use std::cell::RefCell;
use std::rc::Rc;

use buffered_socket::yew::{use_socket, use_socket_event};
use buffered_socket::{Event, Message, State};
use shared::ServerMessage;
use yew::prelude::*;

use crate::console::{Action, Batch, Console, Kind, Line, SocketFigures};
use crate::hooks::{use_interval, use_long_tasks};

/// How often collected events are flushed into the reducer.
const FLUSH_MS: u32 = 100;

/// The console state plus what components need to act.
#[derive(Clone)]
pub struct ConsoleHandle {
    /// The reducer's state and dispatcher.
    pub console: UseReducerHandle<Console>,
    /// When the next reconnection attempt is due (ms since the epoch), while reconnecting.
    pub retry_at_ms: Option<f64>,
}

/// The app's console: state from the socket's events, flushed every 100 ms.
#[hook]
pub fn use_console() -> ConsoleHandle {
    let ctx = use_socket();
    let console = use_reducer(Console::default);
    let pending = use_mut_ref(Batch::default);
    let retry_at: Rc<RefCell<Option<f64>>> = use_mut_ref(|| None);

    {
        let pending = pending.clone();
        let retry_at = retry_at.clone();
        use_socket_event(move |event| collect(&mut pending.borrow_mut(), &retry_at, event));
    }
    {
        let pending = pending.clone();
        let console = console.clone();
        let socket = ctx.socket.clone();
        use_interval(
            move || {
                let batch = std::mem::take(&mut *pending.borrow_mut());
                let stats = socket.stats();
                console.dispatch(Action::Flush {
                    batch,
                    figures: SocketFigures {
                        queue_len: stats.queue_len,
                        queue_capacity: stats.queue_capacity,
                        dropped: stats.dropped,
                        reconnects: stats.reconnects,
                        unacked: stats.unacked,
                        acked: stats.acked,
                        delivered: stats.delivered,
                        gaps: stats.gaps,
                    },
                    now_ms: js_sys::Date::now(),
                });
            },
            FLUSH_MS,
        );
    }
    {
        let console = console.clone();
        use_long_tasks(Callback::from(move |ms| {
            console.dispatch(Action::LongTask(ms))
        }));
    }
    let retry_at_ms = match ctx.state {
        State::Reconnecting { .. } => *retry_at.borrow(),
        _ => None,
    };
    ConsoleHandle {
        console,
        retry_at_ms,
    }
}

fn collect(batch: &mut Batch, retry_at: &RefCell<Option<f64>>, event: &Event) {
    let now = js_sys::Date::now();
    let line = match event {
        Event::Message(Message::Text(text)) => {
            batch.messages += 1;
            match ServerMessage::from_json(text) {
                Ok(ServerMessage::Push { .. }) => {
                    batch.pushes += 1;
                    Some((Kind::Push, text.clone()))
                }
                Ok(ServerMessage::BurstDone { count, .. }) => {
                    batch.burst_done = Some(count);
                    Some((Kind::Response, text.clone()))
                }
                // Heartbeat answers are counted, not logged.
                Ok(ServerMessage::Pong { .. }) => None,
                Ok(ServerMessage::Error { .. }) | Err(_) => Some((Kind::Error, text.clone())),
                Ok(_) => Some((Kind::Response, text.clone())),
            }
        }
        Event::Message(Message::Binary(data)) => {
            batch.messages += 1;
            Some((Kind::Response, format!("{} binary bytes", data.len())))
        }
        Event::Open => Some((Kind::Open, "connected".into())),
        Event::Close(close) => Some((
            Kind::Close,
            format!(
                "code {} {}{}",
                close.code,
                if close.reason.is_empty() {
                    "(no reason)"
                } else {
                    &close.reason
                },
                if close.was_clean { "" } else { ", not clean" }
            ),
        )),
        Event::Error(error) => Some((Kind::Error, error.to_string())),
        Event::Dropped { message, reason } => Some((
            Kind::Error,
            format!("dropped from the queue ({reason:?}): {message:?}"),
        )),
        Event::Resumed { resent } => Some((
            Kind::Resume,
            format!("the session continues; {resent} unacknowledged message(s) resent"),
        )),
        Event::ResumeFailed {
            reason,
            unconfirmed,
        } => Some((
            Kind::Gap,
            match unconfirmed.len() {
                0 => format!(
                    "the session could not resume ({reason}): a new one started; \
                     no sent message was waiting for an acknowledgement"
                ),
                n => format!(
                    "the session could not resume ({reason}): a new one started; {n} sent \
                     message(s) never acknowledged may or may not have been processed"
                ),
            },
        )),
        Event::Gap { from, to } => Some((
            Kind::Gap,
            format!(
                "server messages {from} to {to} were lost: the server's history did not reach back"
            ),
        )),
        Event::StateChanged(State::Reconnecting { delay_ms, .. }) => {
            *retry_at.borrow_mut() = delay_ms.map(|d| now + d as f64);
            None
        }
        Event::StateChanged(_) => {
            *retry_at.borrow_mut() = None;
            None
        }
        _ => None,
    };
    if let Some((kind, text)) = line {
        batch.line(Line {
            at_ms: now,
            kind,
            text,
        });
    }
}
