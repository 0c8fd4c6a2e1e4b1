//! What the components can ask of the socket, as callbacks.
//!
//! Components take data and callbacks; this hook is the one place that turns
//! those callbacks into socket calls and log lines.

use std::cell::Cell;
use std::rc::Rc;

use buffered_socket::yew::use_socket;
use shared::ClientMessage;
use yew::prelude::*;

use crate::console::{Action, Console, Line, echo_id, parse_burst_count};

/// The socket commands of the page.
#[derive(Clone, PartialEq)]
pub struct Commands {
    /// Sends the text as an echo request and logs the outcome.
    pub send: Callback<String>,
    /// Asks for a burst of the typed size (logged as an error if it is not a number).
    pub burst: Callback<String>,
    /// Changes the send queue's capacity.
    pub set_capacity: Callback<usize>,
    /// Closes the socket and starts a new connection (same URL and mode).
    pub reconnect: Callback<()>,
    /// Closes the socket for good, with 1000.
    pub disconnect: Callback<()>,
}

/// The commands for the socket of the enclosing provider. They are made once
/// per socket: a new URL or mode mounts a new provider, and a new page below it.
#[hook]
pub fn use_commands(log: UseReducerDispatcher<Console>) -> Rc<Commands> {
    let socket = use_socket().socket;
    use_memo((), move |()| {
        let ids = Rc::new(Cell::new(0u64));
        let send = {
            let (socket, log) = (socket.clone(), log.clone());
            Callback::from(move |body: String| {
                let id = ids.get() + 1;
                ids.set(id);
                // Prefixed with the tab: every tab sharing a connection gets every reply.
                let json = ClientMessage::Echo {
                    id: echo_id(socket.tab_id(), id),
                    body: body.clone(),
                }
                .to_json();
                let outcome = socket.send(json);
                log.dispatch(Action::Log(Line::echo(
                    js_sys::Date::now(),
                    id,
                    &body,
                    &outcome,
                )));
            })
        };
        let burst = {
            let (socket, log) = (socket.clone(), log.clone());
            Callback::from(move |count: String| {
                let now_ms = js_sys::Date::now();
                let count = match parse_burst_count(&count, now_ms) {
                    Ok(count) => count,
                    Err(line) => return log.dispatch(Action::Log(line)),
                };
                match socket.send(ClientMessage::Burst { count }.to_json()) {
                    Ok(_) => log.dispatch(Action::BurstRequested { count, now_ms }),
                    Err(err) => log.dispatch(Action::Log(Line::error(
                        now_ms,
                        format!("burst not sent: {err}"),
                    ))),
                }
            })
        };
        let set_capacity = {
            let socket = socket.clone();
            Callback::from(move |capacity| socket.set_queue_capacity(capacity))
        };
        let reconnect = {
            let socket = socket.clone();
            Callback::from(move |()| socket.reconnect())
        };
        let disconnect = Callback::from(move |()| {
            // Only a disallowed code or a long reason fail, not these; if
            // that changes, the log says so.
            if let Err(err) = socket.close(1000, "closed by the user") {
                log.dispatch(Action::Log(Line::error(
                    js_sys::Date::now(),
                    format!("not closed: {err}"),
                )));
            }
        });
        Commands {
            send,
            burst,
            set_capacity,
            reconnect,
            disconnect,
        }
    })
}
