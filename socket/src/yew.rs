//! Yew integration (feature `yew`): one socket per app, shared through a
//! context provider.
//!
//! * [`SocketProvider`] creates the [`Socket`] once and re-renders its
//!   children when the [`State`] changes (not on every message);
//! * [`use_socket`] gives a component the handle and the state;
//! * [`use_socket_event`] delivers every event to a callback, always the
//!   latest closure the component rendered with; nothing is collapsed;
//! * [`use_socket_stats`] gives the [`Stats`], refreshed on a timer (stats
//!   change with every message, so they do not re-render on each).

use std::cell::RefCell;
use std::rc::Rc;

use yew::prelude::*;

use crate::transport::web::Interval;
use crate::{Config, Event, Socket, State, Stats};

type EventCallback = Rc<dyn Fn(&Event)>;

/// What [`use_socket`] returns.
#[derive(Clone)]
pub struct SocketContext {
    /// The app's socket.
    pub socket: Socket,
    /// Its state at the last render.
    pub state: State,
}

impl PartialEq for SocketContext {
    fn eq(&self, other: &Self) -> bool {
        self.state == other.state && self.socket.ptr_eq(&other.socket)
    }
}

/// Properties of [`SocketProvider`].
#[derive(Properties, PartialEq)]
pub struct SocketProviderProps {
    /// The socket's configuration; read once, when the provider mounts.
    pub config: Config,
    /// The app.
    #[prop_or_default]
    pub children: Html,
}

/// Creates the app's socket and provides it to its children.
#[component]
pub fn SocketProvider(props: &SocketProviderProps) -> Html {
    let socket = use_memo((), |()| Socket::new(props.config.clone()));
    let state = use_state(|| match &*socket {
        Ok(socket) => socket.state(),
        Err(_) => State::Closed,
    });
    {
        let socket = socket.clone();
        let state = state.clone();
        use_effect_with((), move |()| {
            let subscription = socket.as_ref().as_ref().ok().map(|socket| {
                let subscription = {
                    let state = state.clone();
                    socket.on_event(move |event| {
                        if let Event::StateChanged(new) = event {
                            state.set(*new);
                        }
                    })
                };
                // A change before the subscription (a tab sharing a
                // connection may hear its state from the leader that early).
                state.set(socket.state());
                subscription
            });
            move || drop(subscription)
        });
    }
    match &*socket {
        Ok(socket) => {
            let context = SocketContext {
                socket: socket.clone(),
                state: *state,
            };
            html! {
                <ContextProvider<SocketContext> {context}>
                    { props.children.clone() }
                </ContextProvider<SocketContext>>
            }
        }
        Err(err) => {
            html! { <p class="socket-error">{ format!("cannot open the socket: {err}") }</p> }
        }
    }
}

/// The app's socket and its state.
///
/// # Panics
///
/// Outside a [`SocketProvider`]: that is a mistake in the component tree,
/// not a run-time condition.
#[hook]
pub fn use_socket() -> SocketContext {
    use_context::<SocketContext>().expect("use_socket needs a SocketProvider above the component")
}

/// Calls `callback` with every event of the app's socket, for as long as the
/// component is mounted. The latest `callback` is used, so it may capture
/// state handles freely; with a burst, prefer a reducer or a `use_mut_ref`
/// accumulator over `use_state` (whose captured value is from the last render).
#[hook]
pub fn use_socket_event<F>(callback: F)
where
    F: Fn(&Event) + 'static,
{
    let SocketContext { socket, .. } = use_socket();
    let latest: Rc<RefCell<Option<EventCallback>>> = use_mut_ref(|| None);
    *latest.borrow_mut() = Some(Rc::new(callback));
    use_effect_with((), move |()| {
        let subscription = socket.on_event(move |event| {
            let current = latest.borrow().clone();
            if let Some(callback) = current {
                callback(event);
            }
        });
        move || drop(subscription)
    });
}

/// The socket's [`Stats`], refreshed every `period_ms` (at least 1 ms); the
/// component re-renders only when they changed (while open, `uptime_ms`
/// changes every time, so at most once per period).
#[hook]
pub fn use_socket_stats(period_ms: u32) -> Stats {
    let SocketContext { socket, .. } = use_socket();
    let stats = use_state_eq(|| socket.stats());
    {
        let stats = stats.clone();
        let weak = socket.downgrade();
        use_effect_with(period_ms, move |&period_ms| {
            let timer = Interval::every(period_ms.max(1), move || {
                if let Some(socket) = weak.upgrade() {
                    stats.set(socket.stats());
                }
            });
            move || drop(timer)
        });
    }
    *stats
}
