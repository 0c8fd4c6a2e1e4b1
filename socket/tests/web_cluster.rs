//! The browser's reliable socket across the nodes of a cluster (issue 14):
//! the testbed's two nodes share one Redis behind a round-robin proxy
//! (`BUFFERED_SOCKET_TEST_CLUSTER`), so a cut sends the reconnect to the
//! other node, which resumes the session from Redis. The smaller twin of
//! the native chaos test (`server/tests/cluster_chaos.rs`).
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::option_env_unwrap)]

use std::cell::RefCell;
use std::rc::Rc;

use buffered_socket::{AppSocket, Backoff, Config, Event, SendError, Socket};
use common::{cluster_base, control, control_text, sleep_ms, wait_for};
use shared::{ClientMessage, ServerMessage};
use wasm_bindgen_test::*;

mod common;

wasm_bindgen_test_configure!(run_in_browser);

/// Sends echo `id`, waiting while the unacknowledged fill the queue.
async fn send_echo(socket: &Socket, id: u64) {
    let deadline = js_sys::Date::now() + 30_000.0;
    loop {
        let echo = ClientMessage::Echo {
            id,
            body: format!("message {id}"),
        };
        match socket.send(echo.to_json()) {
            Ok(_) => return,
            Err(SendError::QueueFull(_)) => {
                assert!(js_sys::Date::now() < deadline, "timed out sending {id}");
                sleep_ms(5).await;
            }
            Err(err) => panic!("send {id}: {err}"),
        }
    }
}

/// Messages in flight when the connection is cut are resent to the other
/// node, which resumes the session: every echo comes back once, in order,
/// with no gap and no failed resume.
#[wasm_bindgen_test]
async fn a_reliable_socket_resumes_on_the_other_node_with_nothing_lost() {
    const N: u64 = 200;
    let socket = Socket::new(
        Config::new(format!("{}/ws", cluster_base()))
            .with_reliable(true)
            .with_backoff(Backoff {
                initial_ms: 10,
                max_ms: 50,
                ..Backoff::default()
            }),
    )
    .unwrap();
    let echoes = Rc::new(RefCell::new(Vec::new()));
    let troubles = Rc::new(RefCell::new(Vec::new()));
    let resumes = Rc::new(RefCell::new(0u32));
    let (sink, trouble, resumed) = (echoes.clone(), troubles.clone(), resumes.clone());
    let _subscription = socket.on_event(move |event| match event {
        Event::Message(message) => {
            if let Ok(ServerMessage::Echo { id, .. }) = AppSocket::decode(message) {
                sink.borrow_mut().push(id);
            }
        }
        Event::Resumed { .. } => *resumed.borrow_mut() += 1,
        Event::Gap { .. } | Event::ResumeFailed { .. } => {
            trouble.borrow_mut().push(format!("{event:?}"));
        }
        _ => {}
    });

    // The session is bound on the first node.
    send_echo(&socket, 1).await;
    wait_for("the first echo", 10_000.0, || echoes.borrow().len() == 1).await;
    let (status, before) = control_text("/cluster/last").await;
    assert_eq!(status, 200);

    // Half sent, cut with them in flight, the other half after.
    for id in 2..=N / 2 {
        send_echo(&socket, id).await;
    }
    assert_eq!(control("/cluster/cut").await, 200);
    for id in N / 2 + 1..=N {
        send_echo(&socket, id).await;
    }
    wait_for("every echo", 30_000.0, || {
        echoes.borrow().len() as u64 >= N || !troubles.borrow().is_empty()
    })
    .await;
    assert!(troubles.borrow().is_empty(), "{:?}", troubles.borrow());
    assert_eq!(*echoes.borrow(), (1..=N).collect::<Vec<_>>());
    assert!(*resumes.borrow() >= 1, "no resume");
    let (_, after) = control_text("/cluster/last").await;
    assert_ne!(before, after, "the reconnect went to the other node");
    assert_eq!(socket.stats().gaps, 0);
}
