//! What the components can ask of the socket, as callbacks.
//!
//! Components take data and callbacks; this hook is the one place that turns
//! those callbacks into socket calls and log lines.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;

use buffered_socket::yew::use_socket;
use shared::ClientMessage;
use yew::prelude::*;

use crate::console::{Action, Console, Line, echo_id, parse_burst_count};

/// The socket commands of the page.
#[derive(Clone, PartialEq)]
pub struct Commands {
    /// Sends the text as an echo request and logs the outcome.
    pub send: Callback<String>,
    /// Sends this many echoes (`series 1`, `series 2`...), one every
    /// [`SERIES_TICK_MS`], waiting while the queue is full.
    pub series: Callback<u32>,
    /// Asks for a burst of the typed size (logged as an error if it is not a number).
    pub burst: Callback<String>,
    /// Changes the send queue's capacity.
    pub set_capacity: Callback<usize>,
    /// Closes the socket and starts a new connection (same URL and mode).
    pub reconnect: Callback<()>,
    /// Closes the socket for good, with 1000.
    pub disconnect: Callback<()>,
}

/// The pace of a series of echoes.
pub const SERIES_TICK_MS: i32 = 10;

/// A running series: its `setInterval`, cleared on drop.
struct Series {
    id: i32,
    _tick: Closure<dyn FnMut()>,
}

impl Drop for Series {
    fn drop(&mut self) {
        if let Some(window) = web_sys::window() {
            window.clear_interval_with_handle(self.id);
        }
    }
}

/// The commands for the socket of the enclosing provider. They are made once
/// per socket: a new URL or mode mounts a new provider, and a new page below it.
#[hook]
pub fn use_commands(log: UseReducerDispatcher<Console>) -> Rc<Commands> {
    let socket = use_socket().socket;
    use_memo((), move |()| {
        let ids = Rc::new(Cell::new(0u64));
        // Sends one echo and logs it; whether it was taken. An id is used
        // only by a message taken, so this tab's replies come numbered 1, 2...
        let send_echo: Rc<dyn Fn(String) -> bool> = {
            let (socket, log) = (socket.clone(), log.clone());
            Rc::new(move |body: String| {
                let id = ids.get() + 1;
                // Prefixed with the tab: every tab sharing a connection gets every reply.
                let json = ClientMessage::Echo {
                    id: echo_id(socket.tab_id(), id),
                    body: body.clone(),
                }
                .to_json();
                let outcome = socket.send(json);
                if outcome.is_ok() {
                    ids.set(id);
                }
                log.dispatch(Action::Log(Line::echo(
                    js_sys::Date::now(),
                    id,
                    &body,
                    &outcome,
                )));
                outcome.is_ok()
            })
        };
        let send = {
            let send_echo = send_echo.clone();
            Callback::from(move |body: String| {
                send_echo(body);
            })
        };
        let running: Rc<RefCell<Option<Series>>> = Rc::default();
        let series = Callback::from(move |count: u32| {
            let next = Cell::new(1u32);
            let send_echo = send_echo.clone();
            let tick = Closure::<dyn FnMut()>::new(move || {
                let k = next.get();
                if k <= count && send_echo(format!("series {k}")) {
                    next.set(k + 1);
                }
            });
            let id = web_sys::window().and_then(|window| {
                window
                    .set_interval_with_callback_and_timeout_and_arguments_0(
                        tick.as_ref().unchecked_ref(),
                        SERIES_TICK_MS,
                    )
                    .ok()
            });
            // A new series replaces the running one (dropping it clears it).
            *running.borrow_mut() = id.map(|id| Series { id, _tick: tick });
        });
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
            series,
            burst,
            set_capacity,
            reconnect,
            disconnect,
        }
    })
}
