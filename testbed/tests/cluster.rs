//! The testbed's cluster (`Testbed::start_with_cluster`), natively: what
//! the browser test `socket/tests/web_cluster.rs` relies on. A reliable
//! wrapper through the round-robin proxy is cut by the control API; its
//! reconnect lands on the other node, which resumes the session from Redis.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use buffered_socket::{AppSocket, Backoff, Config, Event, Socket};
use shared::{ClientMessage, ServerMessage};
use testbed::Testbed;
use tokio::time::Instant;

async fn control(testbed: &Testbed, path: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", testbed.control_base))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn wait_for_echoes(echoes: &Mutex<Vec<u64>>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while echoes.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {n} echoes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_sends_the_reliable_client_to_the_other_node_which_resumes() {
    let plain = Testbed::start(None).await.unwrap();
    assert!(plain.cluster_base.is_none());
    assert_eq!(control(&plain, "/cluster/cut").await.0, 404);
    plain.shutdown().await.unwrap();

    let testbed = Testbed::start_with_cluster(None).await.unwrap();
    let base = testbed.cluster_base.clone().unwrap();
    assert_eq!(
        control(&testbed, "/cluster/last").await,
        (200, "none".into())
    );
    let socket = Socket::new(
        Config::new(format!("{base}/ws"))
            .with_reliable(true)
            .with_backoff(Backoff {
                initial_ms: 5,
                max_ms: 20,
                ..Backoff::default()
            }),
    )
    .unwrap();
    let echoes = Arc::new(Mutex::new(Vec::new()));
    let events = Arc::new(Mutex::new(Vec::new()));
    let (sink, all) = (echoes.clone(), events.clone());
    let _subscription = socket.on_event(move |event| {
        if let Event::Message(message) = event
            && let Ok(ServerMessage::Echo { id, .. }) = AppSocket::decode(message)
        {
            sink.lock().unwrap().push(id);
        }
        all.lock().unwrap().push(event.clone());
    });
    let echo = |id| {
        ClientMessage::Echo {
            id,
            body: "x".into(),
        }
        .to_json()
    };
    socket.send(echo(1)).unwrap();
    wait_for_echoes(&echoes, 1).await;
    let (_, before) = control(&testbed, "/cluster/last").await;
    assert_eq!(control(&testbed, "/cluster/cut").await.0, 200);
    socket.send(echo(2)).unwrap();
    wait_for_echoes(&echoes, 2).await;
    let (_, after) = control(&testbed, "/cluster/last").await;
    assert_ne!(before, after, "the reconnect went to the other node");
    assert_eq!(*echoes.lock().unwrap(), [1, 2]);
    {
        let events = events.lock().unwrap();
        assert!(events.iter().any(|e| matches!(e, Event::Resumed { .. })));
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, Event::ResumeFailed { .. } | Event::Gap { .. })),
            "{events:?}"
        );
    }
    drop(socket);
    testbed.shutdown().await.unwrap();
}
