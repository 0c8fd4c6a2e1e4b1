//! Browser tests: the wrapper in headless Chrome against the real server,
//! started by `cargo xtask test` (the testbed), which hands its addresses in
//! at compile time. The tests common to both transports are in
//! `common/both.rs` and run here too; what only a browser has (online and
//! visibility events, its event loop under a 100,000-message burst) is here.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::option_env_unwrap)]

use std::cell::RefCell;
use std::rc::Rc;

use both::{Harness, Recorder, echo, unique};
use buffered_socket::{
    Backoff, ChannelEvent, Config, Event, Message, PublishError, RawJson, SendError, SendOutcome,
    Socket, State,
};
use common::{control, control_text, proxy_base, wait_for, ws_base};
use shared::ServerMessage;
use wasm_bindgen_test::*;

mod common;

#[macro_use]
#[path = "common/both.rs"]
mod both;

wasm_bindgen_test_configure!(run_in_browser);

fn fast_backoff() -> Backoff {
    Backoff {
        initial_ms: 100,
        max_ms: 500,
        ..Backoff::default()
    }
}

/// The testbed `cargo xtask test` started, as the browser reaches it.
struct Web;

impl Harness for Web {
    const EVENTS_DURING_THE_CALL: bool = true;

    fn ws_base(&self) -> String {
        ws_base().into()
    }

    fn proxy_base(&self) -> String {
        proxy_base().into()
    }

    fn fast_backoff(&self) -> Backoff {
        fast_backoff()
    }

    fn fault_seed(&self) -> u64 {
        let seed = option_env!("FAULT_SEED")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(both::random_u64);
        web_sys::console::log_1(
            &format!("fault seed {seed} (build with FAULT_SEED to replay)").into(),
        );
        seed
    }

    async fn control(&self, path: &str) -> (u16, String) {
        control_text(path).await
    }

    async fn send_from_another_task(
        &self,
        socket: &Socket,
        messages: Vec<Message>,
    ) -> Vec<Result<SendOutcome, SendError>> {
        let (done, outcomes) = futures_channel::oneshot::channel();
        let socket = socket.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let _ = done.send(messages.into_iter().map(|m| socket.send(m)).collect());
        });
        outcomes.await.unwrap()
    }
}

/// One browser test per common test (the browser has one thread).
macro_rules! web_tests {
    ($($name:ident: $threads:ident),* $(,)?) => {
        $(
            #[wasm_bindgen_test]
            async fn $name() {
                both::$name(&Web).await;
            }
        )*
    };
}

common_tests!(web_tests);

#[wasm_bindgen_test]
async fn a_burst_of_100000_arrives_complete_and_in_order() {
    let socket = Socket::new(Config::new(format!("{}/ws?burst=100000", ws_base()))).unwrap();
    let next_seq = Rc::new(RefCell::new(1u64));
    let out_of_order = Rc::new(RefCell::new(0u64));
    let done = Rc::new(RefCell::new(None));
    let _subscription = {
        let (next_seq, out_of_order, done) = (next_seq.clone(), out_of_order.clone(), done.clone());
        socket.on_event(move |event| {
            if let Event::Message(Message::Text(text)) = event {
                match ServerMessage::from_json(text) {
                    Ok(ServerMessage::Push { seq, .. }) => {
                        let mut next = next_seq.borrow_mut();
                        if seq != *next {
                            *out_of_order.borrow_mut() += 1;
                        }
                        *next = seq + 1;
                    }
                    Ok(ServerMessage::BurstDone { count, .. }) => *done.borrow_mut() = Some(count),
                    _ => {}
                }
            }
        })
    };
    wait_for("burst_done", 60_000.0, || done.borrow().is_some()).await;
    assert_eq!(*done.borrow(), Some(100_000));
    assert_eq!(*out_of_order.borrow(), 0);
    assert!(*next_seq.borrow() > 100_000);
}

/// Dispatches a plain event, as the browser does on a network or visibility change.
fn fire(target: &web_sys::EventTarget, name: &str) {
    let event = web_sys::Event::new(name).unwrap();
    target.dispatch_event(&event).unwrap();
}

#[wasm_bindgen_test]
async fn offline_pauses_retries_and_online_or_a_visible_tab_retries_at_once() {
    // A minute between attempts: a reconnect within seconds can only come
    // from the `online` or `visibilitychange` event.
    let slow = Backoff {
        initial_ms: 60_000,
        max_ms: 60_000,
        jitter: false,
        ..Backoff::default()
    };
    let socket = Socket::new(Config::new(format!("{}/ws", ws_base())).with_backoff(slow)).unwrap();
    let window = web_sys::window().unwrap();
    let document = window.document().unwrap();
    wait_for("open", 10_000.0, || socket.state() == State::Open).await;

    fire(&window, "offline");
    assert_eq!(control("/stop").await, 200);
    wait_for("a paused retry", 10_000.0, || {
        socket.state()
            == State::Reconnecting {
                attempt: 1,
                delay_ms: None,
            }
    })
    .await;
    assert_eq!(control("/start").await, 200);
    fire(&window, "online");
    wait_for("open at once after online", 10_000.0, || {
        socket.state() == State::Open
    })
    .await;

    assert_eq!(
        document.visibility_state(),
        web_sys::VisibilityState::Visible
    );
    assert_eq!(control("/stop").await, 200);
    wait_for("a scheduled retry", 10_000.0, || {
        matches!(
            socket.state(),
            State::Reconnecting {
                delay_ms: Some(60_000),
                ..
            }
        )
    })
    .await;
    assert_eq!(control("/start").await, 200);
    fire(&document, "visibilitychange");
    wait_for("open at once when the tab is visible", 10_000.0, || {
        socket.state() == State::Open
    })
    .await;
}

/// Reliable mode: pushes made while the client was away beyond the server's
/// history (the testbed keeps 200) are reported as a gap, never hidden.
#[wasm_bindgen_test]
async fn reliable_mode_reports_a_gap_when_the_history_was_too_short() {
    let id = unique("away");
    let socket = Socket::new(
        Config::new(format!("{}/ws?client_id={id}", proxy_base()))
            .with_reliable(true)
            .with_backoff(fast_backoff()),
    )
    .unwrap();
    let rec = Recorder::new(&socket);
    socket.send(echo(1)).unwrap();
    wait_for("the echo", 10_000.0, || rec.echo_ids() == [1]).await;
    // Away: the proxy refuses reconnects; 250 pushes arrive meanwhile.
    assert_eq!(control("/proxy/hold?on=1").await, 200);
    assert_eq!(control("/proxy/cut").await, 200);
    let (status, stored) = control_text(&format!("/push/{id}?count=250")).await;
    assert_eq!((status, stored.as_str()), (200, "250"));
    assert_eq!(control("/proxy/hold?on=0").await, 200);
    wait_for("the resume", 20_000.0, || {
        rec.count(|e| matches!(e, Event::Resumed { .. })) == 1
    })
    .await;
    wait_for("the kept pushes", 10_000.0, || {
        rec.messages()
            .iter()
            .filter(|m| matches!(m, ServerMessage::Push { .. }))
            .count()
            >= 200
    })
    .await;
    // Server message 1 was the echo, 2..=251 the pushes; the history kept the last 200.
    let gaps: Vec<(u64, u64)> = rec
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::Gap { from, to } => Some((*from, *to)),
            _ => None,
        })
        .collect();
    assert_eq!(gaps, [(2, 51)]);
    assert_eq!(socket.stats().gaps, 1);
}

/// The glue's re-entrancy contract: what an event callback does while the
/// wrapper is delivering (sends, and a window event it fires synchronously)
/// is queued and carried out after the current event, never dropped. With a
/// minute of backoff, only the `online` fired inside the callback can make it
/// reconnect within seconds.
#[wasm_bindgen_test]
async fn inputs_and_sends_from_inside_a_callback_are_carried_out_in_order() {
    let id = unique("reentrant");
    let slow = Backoff {
        initial_ms: 60_000,
        max_ms: 60_000,
        jitter: false,
        ..Backoff::default()
    };
    let socket =
        Socket::new(Config::new(format!("{}/ws?client_id={id}", ws_base())).with_backoff(slow))
            .unwrap();
    let rec = Recorder::new(&socket);
    let outcomes = Rc::new(RefCell::new(Vec::new()));
    let _subscription = {
        let (weak, outcomes) = (socket.downgrade(), outcomes.clone());
        socket.on_event(move |event| {
            if let (Event::Close(_), Some(socket)) = (event, weak.upgrade()) {
                let mut outcomes = outcomes.borrow_mut();
                outcomes.push(socket.send(echo(1)));
                fire(&web_sys::window().unwrap(), "online");
                outcomes.push(socket.send(echo(2)));
            }
        })
    };
    wait_for("open", 10_000.0, || socket.state() == State::Open).await;
    assert_eq!(
        control(&format!("/kick/{id}?code=1012&reason=again")).await,
        200
    );
    wait_for("both echoes after the reconnect", 10_000.0, || {
        rec.echo_ids().len() == 2
    })
    .await;
    assert_eq!(rec.echo_ids(), [1, 2]);
    assert_eq!(
        *outcomes.borrow(),
        [Ok(SendOutcome::Queued), Ok(SendOutcome::Queued)]
    );
    assert_eq!(socket.state(), State::Open);
    assert_eq!(socket.stats().reconnects, 1);
}

/// Channels (issue 23) in the browser: subscribe, receive what the admin API
/// publishes (through the control API), then recover what was published
/// while the connection was cut: each offset once, in order, no gap. A
/// publish from the browser goes out with its id and its refusal (bare
/// names: subscribe only by default) comes back typed.
#[wasm_bindgen_test]
async fn a_channel_recovers_what_was_published_during_a_cut() {
    let name = unique("web");
    let socket =
        Socket::new(Config::new(format!("{}/ws", proxy_base())).with_backoff(fast_backoff()))
            .unwrap();
    let channel = socket.subscribe(&name).unwrap();
    let seen: Rc<RefCell<Vec<ChannelEvent>>> = Rc::default();
    let sink = seen.clone();
    let _recording = channel.on_event(move |event| sink.borrow_mut().push(event.clone()));
    let publications = || {
        seen.borrow()
            .iter()
            .filter_map(|e| match e {
                ChannelEvent::Publication { offset, data, .. } => {
                    Some((*offset, data.get().to_owned()))
                }
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    wait_for("subscribed", 10_000.0, || !seen.borrow().is_empty()).await;
    assert_eq!(
        seen.borrow()[0],
        ChannelEvent::Subscribed { recovered: false }
    );
    for n in 1..=3 {
        assert_eq!(control(&format!("/publish/{name}?n={n}")).await, 200);
    }
    wait_for("three publications", 10_000.0, || publications().len() == 3).await;

    // Away: reconnects refused while three more are published.
    assert_eq!(control("/proxy/hold?on=1").await, 200);
    assert_eq!(control("/proxy/cut").await, 200);
    wait_for("down", 10_000.0, || socket.state() != State::Open).await;
    for n in 4..=6 {
        assert_eq!(control(&format!("/publish/{name}?n={n}")).await, 200);
    }
    assert_eq!(control("/proxy/hold?on=0").await, 200);
    wait_for("the recovery", 10_000.0, || publications().len() == 6).await;
    let want: Vec<(u64, String)> = (1..=6).map(|n| (n, format!(r#"{{"n":{n}}}"#))).collect();
    assert_eq!(publications(), want);
    assert!(
        seen.borrow()
            .contains(&ChannelEvent::Subscribed { recovered: true })
    );
    assert!(
        !seen
            .borrow()
            .iter()
            .any(|e| matches!(e, ChannelEvent::Gap { .. }))
    );
    assert_eq!(channel.position().map(|p| p.offset), Some(6));

    let refused = socket
        .publish(&name, RawJson::parse("1").unwrap())
        .unwrap()
        .await;
    assert!(
        matches!(
            refused,
            Err(PublishError::Refused {
                code: shared::ErrorCode::PermissionDenied,
                ..
            })
        ),
        "{refused:?}"
    );
}
