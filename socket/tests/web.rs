//! Browser tests: the wrapper in headless Chrome against the real server,
//! started by `cargo xtask test` (the testbed), which hands its addresses in
//! at compile time.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::option_env_unwrap)]

use std::cell::RefCell;
use std::rc::Rc;

use buffered_socket::{
    AppSocket, Backoff, Config, DropReason, Error, Event, Heartbeat, Message, Overflow, SendError,
    SendOutcome, Socket, State, TransportError,
};
use common::{
    control, control_text, proxy_base, sleep_ms, unique, wait_for, wait_until_the_server_forgets,
    ws_base,
};
use futures_util::StreamExt;
use shared::{ClientMessage, ServerMessage};
use wasm_bindgen_test::*;

mod common;

wasm_bindgen_test_configure!(run_in_browser);

/// Records every event of a socket.
struct Recorder {
    events: Rc<RefCell<Vec<Event>>>,
    _subscription: buffered_socket::Subscription,
}

impl Recorder {
    fn new(socket: &Socket) -> Self {
        let events = Rc::new(RefCell::new(Vec::new()));
        let sink = events.clone();
        let subscription = socket.on_event(move |event| sink.borrow_mut().push(event.clone()));
        Self {
            events,
            _subscription: subscription,
        }
    }

    fn messages(&self) -> Vec<ServerMessage> {
        self.events
            .borrow()
            .iter()
            .filter_map(|e| match e {
                Event::Message(Message::Text(text)) => ServerMessage::from_json(text).ok(),
                _ => None,
            })
            .collect()
    }

    fn echo_ids(&self) -> Vec<u64> {
        self.messages()
            .into_iter()
            .filter_map(|m| match m {
                ServerMessage::Echo { id, .. } => Some(id),
                _ => None,
            })
            .collect()
    }

    fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events.borrow().iter().filter(|e| f(e)).count()
    }
}

fn echo(id: u64) -> String {
    ClientMessage::Echo {
        id,
        body: format!("message {id}"),
    }
    .to_json()
}

fn fast_backoff() -> Backoff {
    Backoff {
        initial_ms: 100,
        max_ms: 500,
        ..Backoff::default()
    }
}

#[wasm_bindgen_test]
async fn connects_and_echoes_text_and_binary() {
    let socket = Socket::new(Config::new(format!("{}/ws", ws_base()))).unwrap();
    let rec = Recorder::new(&socket);
    wait_for("open", 10_000.0, || socket.state() == State::Open).await;
    assert_eq!(socket.send(echo(1)), Ok(SendOutcome::Sent));
    socket.send(vec![1u8, 2, 3]).unwrap();
    wait_for("the echoes", 10_000.0, || {
        rec.echo_ids() == [1]
            && rec.count(|e| matches!(e, Event::Message(Message::Binary(b)) if b == &[1, 2, 3]))
                == 1
    })
    .await;
    let stats = socket.stats();
    assert_eq!(stats.messages_sent, 2);
    assert!(stats.messages_received >= 2);
}

#[wasm_bindgen_test]
async fn messages_sent_before_open_are_flushed_in_order() {
    let socket = Socket::new(Config::new(format!("{}/ws", ws_base()))).unwrap();
    let rec = Recorder::new(&socket);
    assert!(matches!(socket.state(), State::Connecting { .. }));
    for id in 1..=20 {
        assert_eq!(socket.send(echo(id)), Ok(SendOutcome::Queued));
    }
    assert_eq!(socket.queue_len(), 20);
    wait_for("20 echoes", 10_000.0, || rec.echo_ids().len() == 20).await;
    assert_eq!(rec.echo_ids(), (1..=20).collect::<Vec<_>>());
    assert_eq!(socket.queue_len(), 0);
    // The queue went out before anything sent after the open.
    socket.send(echo(21)).unwrap();
    wait_for("echo 21", 10_000.0, || rec.echo_ids().len() == 21).await;
}

#[wasm_bindgen_test]
async fn the_capacity_is_enforced_with_errors_that_give_the_message_back() {
    let url = format!("{}/ws", ws_base());
    let socket = Socket::new(Config::new(url.clone()).with_queue_capacity(2)).unwrap();
    let rec = Recorder::new(&socket);
    socket.send(echo(1)).unwrap();
    socket.send(echo(2)).unwrap();
    assert_eq!(
        socket.send(echo(3)),
        Err(SendError::QueueFull(Message::Text(echo(3))))
    );
    // Raised at run time, the capacity takes one more.
    socket.set_queue_capacity(3);
    assert_eq!(socket.send(echo(3)), Ok(SendOutcome::Queued));
    wait_for("three echoes", 10_000.0, || rec.echo_ids().len() == 3).await;
    assert_eq!(rec.echo_ids(), [1, 2, 3]);

    let never = Socket::new(Config::new(url.clone()).with_queue_capacity(0)).unwrap();
    assert!(matches!(never.send("x"), Err(SendError::QueueFull(_))));

    let limited = Socket::new(Config::new(url.clone()).with_queue_max_bytes(4)).unwrap();
    assert_eq!(
        limited.send("12345"),
        Err(SendError::TooLarge(Message::Text("12345".into())))
    );

    let dropping = Socket::new(
        Config::new(url)
            .with_queue_capacity(1)
            .with_overflow(Overflow::DropOldest),
    )
    .unwrap();
    let dropped = Recorder::new(&dropping);
    dropping.send(echo(1)).unwrap();
    dropping.send(echo(2)).unwrap();
    assert_eq!(dropping.stats().dropped, 1);
    assert_eq!(
        dropped.count(|e| matches!(e,
            Event::Dropped { message: Message::Text(t), reason: DropReason::Overflow } if *t == echo(1))),
        1
    );
    wait_for("the kept echo", 10_000.0, || dropped.echo_ids() == [2]).await;
}

#[wasm_bindgen_test]
async fn a_kick_with_a_reconnectable_code_reconnects_and_queued_messages_arrive() {
    let id = unique("kick");
    let socket = Socket::new(
        Config::new(format!("{}/ws?client_id={id}", ws_base())).with_backoff(fast_backoff()),
    )
    .unwrap();
    let rec = Recorder::new(&socket);
    wait_for("open", 10_000.0, || socket.state() == State::Open).await;
    assert_eq!(
        control(&format!("/kick/{id}?code=1012&reason=restart")).await,
        200
    );
    wait_for("reconnecting", 10_000.0, || {
        matches!(socket.state(), State::Reconnecting { .. })
    })
    .await;
    assert_eq!(socket.send(echo(42)), Ok(SendOutcome::Queued));
    wait_for("the queued echo after reconnecting", 10_000.0, || {
        rec.echo_ids() == [42]
    })
    .await;
    assert_eq!(socket.stats().reconnects, 1);
    assert_eq!(
        rec.count(|e| matches!(e, Event::Close(c) if c.code == 1012 && c.reason == "restart")),
        1
    );

    // The default policy does not reconnect after a kick with 4000.
    assert_eq!(control(&format!("/kick/{id}")).await, 200);
    wait_for("closed", 10_000.0, || socket.state() == State::Closed).await;
    assert!(matches!(socket.send("x"), Err(SendError::Closed(_))));
    socket.reconnect();
    wait_for("open after reconnect()", 10_000.0, || {
        socket.state() == State::Open
    })
    .await;
}

#[wasm_bindgen_test]
async fn after_a_server_restart_it_reconnects_within_its_backoff() {
    let socket =
        Socket::new(Config::new(format!("{}/ws", ws_base())).with_backoff(fast_backoff())).unwrap();
    let rec = Recorder::new(&socket);
    wait_for("open", 10_000.0, || socket.state() == State::Open).await;
    assert_eq!(control("/stop").await, 200);
    wait_for("reconnecting", 10_000.0, || {
        matches!(socket.state(), State::Reconnecting { .. })
    })
    .await;
    assert!(rec.count(|e| matches!(e, Event::Close(c) if c.code == 1001)) == 1);
    // Sent while the server is down: queued.
    assert_eq!(socket.send(echo(7)), Ok(SendOutcome::Queued));
    assert_eq!(control("/start").await, 200);
    let restarted = js_sys::Date::now();
    wait_for("open again", 10_000.0, || socket.state() == State::Open).await;
    // The backoff is capped at 500 ms; allow for scheduling on a busy machine.
    assert!(js_sys::Date::now() - restarted < 3000.0);
    wait_for("the queued echo", 10_000.0, || rec.echo_ids() == [7]).await;
}

#[wasm_bindgen_test]
async fn the_users_close_is_final() {
    let socket = Socket::new(
        Config::new(format!("{}/ws", ws_base())).with_backoff(Backoff {
            initial_ms: 20,
            ..Backoff::default()
        }),
    )
    .unwrap();
    let rec = Recorder::new(&socket);
    wait_for("open", 10_000.0, || socket.state() == State::Open).await;
    assert_eq!(socket.close(999, ""), Err(Error::InvalidCloseCode(999)));
    socket.close(1000, "bye").unwrap();
    assert_eq!(socket.state(), State::Closed);
    assert_eq!(
        socket.send("late"),
        Err(SendError::Closed(Message::Text("late".into())))
    );
    // A reconnect would come within 20 ms; give it ten times that to prove it does not.
    sleep_ms(200).await;
    assert_eq!(socket.state(), State::Closed);
    assert_eq!(
        rec.count(|e| matches!(e, Event::StateChanged(State::Connecting { .. }))),
        0
    );
}

#[wasm_bindgen_test]
async fn dropping_the_wrapper_closes_its_socket() {
    let id = unique("drop");
    let socket = Socket::new(Config::new(format!("{}/ws?client_id={id}", ws_base()))).unwrap();
    wait_for("open", 10_000.0, || socket.state() == State::Open).await;
    drop(socket);
    wait_until_the_server_forgets(&id).await;
}

#[wasm_bindgen_test]
async fn invalid_urls_are_refused() {
    assert!(matches!(
        Socket::new(Config::new("http://x/ws")),
        Err(Error::InvalidUrl(_))
    ));
    assert!(matches!(
        Socket::new(Config::new("not a url")),
        Err(Error::InvalidUrl(_))
    ));
}

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

#[wasm_bindgen_test]
async fn the_open_hook_goes_first_on_every_open_even_with_a_full_queue() {
    let id = unique("hook");
    let socket = Socket::new(
        Config::new(format!("{}/ws?client_id={id}", ws_base()))
            .with_queue_capacity(3)
            .with_backoff(fast_backoff()),
    )
    .unwrap();
    let rec = Recorder::new(&socket);
    socket.set_on_open(|socket| {
        assert_eq!(socket.send(echo(0)), Ok(SendOutcome::Sent));
    });
    for id in 1..=3 {
        assert_eq!(socket.send(echo(id)), Ok(SendOutcome::Queued));
    }
    assert!(matches!(socket.send(echo(4)), Err(SendError::QueueFull(_))));
    wait_for("the hook's echo then the queue", 10_000.0, || {
        rec.echo_ids().len() == 4
    })
    .await;
    assert_eq!(rec.echo_ids(), [0, 1, 2, 3]);
    // After a reconnect the hook runs again, before what was queued meanwhile.
    assert_eq!(
        control(&format!("/kick/{id}?code=1012&reason=again")).await,
        200
    );
    wait_for("reconnecting", 10_000.0, || {
        matches!(socket.state(), State::Reconnecting { .. })
    })
    .await;
    socket.send(echo(5)).unwrap();
    wait_for("the second open", 10_000.0, || rec.echo_ids().len() == 6).await;
    assert_eq!(rec.echo_ids(), [0, 1, 2, 3, 0, 5]);
}

#[wasm_bindgen_test]
async fn events_also_come_as_a_stream_in_order() {
    let socket = Socket::new(Config::new(format!("{}/ws", ws_base()))).unwrap();
    let mut stream = socket.events();
    let got = Rc::new(RefCell::new(Vec::new()));
    {
        let got = got.clone();
        wasm_bindgen_futures::spawn_local(async move {
            while let Some(event) = stream.next().await {
                got.borrow_mut().push(event);
            }
            // The stream ends when the socket is dropped.
            got.borrow_mut()
                .push(Event::Error(TransportError::Socket("stream ended".into())));
        });
    }
    wait_for("open and welcome", 10_000.0, || {
        got.borrow().iter().any(|e| matches!(e, Event::Message(_)))
    })
    .await;
    {
        let got = got.borrow();
        assert_eq!(got[0], Event::StateChanged(State::Open));
        assert_eq!(got[1], Event::Open);
        let Event::Message(first) = &got[2] else {
            panic!("expected the welcome, got {:?}", got[2]);
        };
        assert!(matches!(
            AppSocket::decode(first),
            Ok(ServerMessage::Welcome { .. })
        ));
    }
    drop(socket);
    wait_for("the end of the stream", 10_000.0, || {
        got.borrow().last() == Some(&Event::Error(TransportError::Socket("stream ended".into())))
    })
    .await;
}

#[wasm_bindgen_test]
async fn the_heartbeat_pings_and_the_answers_keep_the_connection() {
    let socket = Socket::new(
        Config::new(format!("{}/ws", ws_base())).with_heartbeat(Heartbeat {
            interval_ms: 100,
            timeout_ms: 2_000,
        }),
    )
    .unwrap();
    let rec = Recorder::new(&socket);
    let pongs = || {
        rec.messages()
            .iter()
            .filter(|m| matches!(m, ServerMessage::Pong { .. }))
            .count()
    };
    wait_for("three pongs", 10_000.0, || pongs() >= 3).await;
    assert_eq!(socket.state(), State::Open);
    assert_eq!(socket.stats().reconnects, 0);
    assert_eq!(rec.count(|e| matches!(e, Event::Close(_))), 0);
}

#[wasm_bindgen_test]
async fn a_typed_socket_speaks_the_protocol() {
    let raw = Socket::new(Config::new(format!("{}/ws", ws_base()))).unwrap();
    let typed = AppSocket::new(raw.clone());
    let got = Rc::new(RefCell::new(Vec::new()));
    let _subscription = {
        let got = got.clone();
        typed.on_message(move |decoded| {
            // Timed pushes may come in between; they are not what this test is about.
            if !matches!(decoded, Ok(ServerMessage::Push { .. })) {
                got.borrow_mut().push(decoded.map_err(|e| e.to_string()));
            }
        })
    };
    assert_eq!(
        typed.send(&ClientMessage::Echo {
            id: 9,
            body: "typed".into()
        }),
        Ok(SendOutcome::Queued)
    );
    raw.send(vec![7u8]).unwrap();
    wait_for("the echo and the binary", 10_000.0, || {
        got.borrow().len() >= 3
    })
    .await;
    let got = got.borrow();
    assert!(
        matches!(got[0], Ok(ServerMessage::Welcome { .. })),
        "{got:?}"
    );
    assert_eq!(
        got[1],
        Ok(ServerMessage::Echo {
            id: 9,
            body: "typed".into()
        })
    );
    assert_eq!(got[2], Err("a binary frame is not a typed message".into()));
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

/// Reliable mode in the browser, the smaller twin of the native
/// fault-injection test: 1,000 echoes and a burst of 1,000 pushes through
/// the testbed's proxy, which cuts connections at random byte counts
/// (mid-frame, no close frame). Each side processes everything exactly once,
/// in order. The cuts start once the session is stored (see the native twin).
#[wasm_bindgen_test]
async fn reliable_mode_delivers_exactly_once_through_random_cuts() {
    const N: u64 = 1000;
    let cuts_before: u64 = control_text("/proxy/cuts").await.1.parse().unwrap();
    assert_eq!(control("/proxy/budget").await, 200);
    let socket = Socket::new(
        Config::new(format!("{}/ws", proxy_base()))
            .with_reliable(true)
            .with_backoff(Backoff {
                initial_ms: 10,
                max_ms: 50,
                ..Backoff::default()
            }),
    )
    .unwrap();
    let rec = Recorder::new(&socket);
    socket
        .send(ClientMessage::Burst { count: N as u32 }.to_json())
        .unwrap();
    // A push of the burst: the server stored the session. Cut from now on.
    wait_for("the first push", 10_000.0, || socket.stats().delivered >= 1).await;
    assert_eq!(control("/proxy/budget?min=4000&max=16000").await, 200);
    assert_eq!(control("/proxy/cut").await, 200);
    let deadline = js_sys::Date::now() + 60_000.0;
    let mut next = 1;
    while next <= N {
        assert!(js_sys::Date::now() < deadline, "timed out sending {next}");
        match socket.send(echo(next)) {
            Ok(_) => next += 1,
            // Sent-but-unacknowledged messages fill the capacity: wait for acks.
            Err(SendError::QueueFull(_)) => sleep_ms(5).await,
            Err(err) => panic!("send {next}: {err}"),
        }
    }
    let pushes = || {
        rec.messages()
            .into_iter()
            .filter_map(|m| match m {
                ServerMessage::Push { seq, .. } => Some(seq),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let done = || {
        rec.messages()
            .iter()
            .filter(|m| matches!(m, ServerMessage::BurstDone { .. }))
            .count()
    };
    wait_for("every echo and push", 60_000.0, || {
        rec.echo_ids().len() as u64 >= N && done() >= 1
    })
    .await;
    assert_eq!(control("/proxy/budget").await, 200);
    let cuts = control_text("/proxy/cuts").await.1.parse::<u64>().unwrap() - cuts_before;
    let resumes = rec.count(|e| matches!(e, Event::Resumed { .. }));
    assert_eq!(
        rec.count(|e| matches!(e, Event::Gap { .. } | Event::ResumeFailed { .. })),
        0
    );
    assert!(cuts >= 5, "only {cuts} cuts");
    assert!(resumes >= 5, "only {resumes} resumes");
    assert_eq!(rec.echo_ids(), (1..=N).collect::<Vec<_>>());
    assert_eq!(pushes(), (1..=N).collect::<Vec<_>>());
    assert_eq!(done(), 1);
    let stats = socket.stats();
    assert_eq!(stats.delivered, 2 * N + 1);
    wait_for("the last acks", 10_000.0, || socket.stats().unacked == 0).await;
    assert_eq!(socket.stats().acked, N + 1);
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
        .events
        .borrow()
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
