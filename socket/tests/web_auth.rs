//! Browser tests of token mode: the wrapper in headless Chrome against the
//! testbed's second server, which runs in token mode
//! (`BUFFERED_SOCKET_TEST_WS_AUTH`); tokens come from the control API's
//! `POST /token`, which mints them with the testbed's secret.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::option_env_unwrap)]

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use buffered_socket::{AuthError, Backoff, Config, Event, Message, Socket, State};
use common::{auth_ws_base, control, control_text, wait_for};
use shared::ServerMessage;
use shared::close_code::UNAUTHORIZED;
use wasm_bindgen_test::*;

mod common;

wasm_bindgen_test_configure!(run_in_browser);

fn fast_backoff() -> Backoff {
    Backoff {
        initial_ms: 100,
        max_ms: 500,
        ..Backoff::default()
    }
}

/// Every event of `socket`, kept.
fn record(socket: &Socket) -> (Rc<RefCell<Vec<Event>>>, buffered_socket::Subscription) {
    let events = Rc::new(RefCell::new(Vec::new()));
    let sink = events.clone();
    let subscription = socket.on_event(move |event| sink.borrow_mut().push(event.clone()));
    (events, subscription)
}

/// The client ids of the welcomes so far, oldest first.
fn welcomes(events: &RefCell<Vec<Event>>) -> Vec<(String, Option<u64>)> {
    events
        .borrow()
        .iter()
        .filter_map(|e| match e {
            Event::Message(Message::Text(text)) => match ServerMessage::from_json(text) {
                Ok(ServerMessage::Welcome { client_id, exp, .. }) => Some((client_id, exp)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The wrapper's provider is called before each connect: the first, one the
/// application asks for, and one after the server kicked the connection.
/// Each provider call fetches a fresh token from the testbed (a `!Send`
/// future holding JS values, run with `spawn_local`).
#[wasm_bindgen_test]
async fn the_token_provider_is_called_before_each_connect() {
    let calls = Rc::new(Cell::new(0u32));
    let counter = calls.clone();
    let provider = move || {
        counter.set(counter.get() + 1);
        async move {
            let (status, token) = control_text("/token?sub=alice&ttl_ms=600000").await;
            if status == 200 {
                Ok(token)
            } else {
                Err(format!("the testbed answered {status}"))
            }
        }
    };
    let config = Config::new(format!("{}/ws", auth_ws_base()))
        .with_token(provider)
        .with_backoff(fast_backoff());
    let socket = Socket::new(config).unwrap();
    let (events, _subscription) = record(&socket);
    wait_for("open with the welcome", 10_000.0, || {
        welcomes(&events).len() == 1
    })
    .await;
    assert_eq!(calls.get(), 1);
    // Token mode's welcome carries the token's exp: the token was taken.
    let (first_id, exp) = welcomes(&events)[0].clone();
    let now_s = (js_sys::Date::now() / 1000.0) as u64;
    assert!(exp.is_some_and(|exp| exp > now_s + 500), "{exp:?}");

    // The application reconnects: a new token first.
    socket.reconnect();
    wait_for("the second welcome", 10_000.0, || {
        welcomes(&events).len() == 2
    })
    .await;
    assert_eq!(calls.get(), 2);

    // The server kicks the connection (1012, which reconnects): again.
    let (second_id, _) = welcomes(&events)[1].clone();
    assert_ne!(first_id, second_id);
    assert_eq!(
        control(&format!("/auth/kick/{second_id}?code=1012&reason=restart")).await,
        200
    );
    wait_for("the third welcome", 10_000.0, || {
        welcomes(&events).len() == 3
    })
    .await;
    assert_eq!(calls.get(), 3);
    assert_eq!(socket.stats().reconnects, 2);
    assert_eq!(
        events
            .borrow()
            .iter()
            .filter(|e| matches!(e, Event::Auth(_)))
            .count(),
        0
    );
}

/// Without a provider the token-mode server refuses with 4401 (the browser
/// sees the code, not a failed handshake), and the wrapper stops and says so.
#[wasm_bindgen_test]
async fn without_a_provider_a_4401_stops_the_wrapper_and_is_reported() {
    let config = Config::new(format!("{}/ws", auth_ws_base())).with_backoff(fast_backoff());
    let socket = Socket::new(config).unwrap();
    let (events, _subscription) = record(&socket);
    wait_for("the refusal", 10_000.0, || {
        events.borrow().iter().any(|e| matches!(e, Event::Auth(_)))
    })
    .await;
    assert_eq!(socket.state(), State::Closed);
    let events = events.borrow();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Close(c) if c.code == UNAUTHORIZED))
    );
    assert!(events.contains(&Event::Auth(AuthError::Unauthorized {
        reason: "missing token".into(),
        retrying: false
    })));
    assert!(
        !events.iter().any(|e| matches!(e, Event::Message(_))),
        "no welcome"
    );
}
