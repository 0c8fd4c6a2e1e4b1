//! Connects the socket's events to the reducer, batched.
//!
//! The event callback only collects into a [`Batch`] kept in a plain
//! `RefCell` (see `console::collect`); every 100 ms the batch, the socket's
//! [`Stats`](buffered_socket::Stats) and the time are dispatched to the
//! reducer as one action. A 100,000-message burst therefore costs about ten
//! renders a second, no message is missed (every one is counted), and the
//! reconnection countdown advances at every flush.

use buffered_socket::yew::{use_socket, use_socket_event};
use yew::prelude::*;

use crate::console::{Action, Batch, Console};
use crate::hooks::{use_interval, use_long_tasks};

/// How often collected events are flushed into the reducer.
const FLUSH_MS: u32 = 100;

/// The app's console: state from the socket's events, flushed every 100 ms.
#[hook]
pub fn use_console() -> UseReducerHandle<Console> {
    let ctx = use_socket();
    let console = use_reducer(Console::default);
    let pending = use_mut_ref(Batch::default);

    {
        let pending = pending.clone();
        let tab = ctx.socket.tab_id();
        use_socket_event(move |event| {
            pending
                .borrow_mut()
                .collect_in_tab(event, js_sys::Date::now(), Some(tab));
        });
    }
    {
        let console = console.clone();
        let socket = ctx.socket.clone();
        use_interval(
            move || {
                let batch = std::mem::take(&mut *pending.borrow_mut());
                console.dispatch(Action::Flush {
                    batch: Box::new(batch),
                    stats: socket.stats(),
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
    console
}
