//! The `/ws` application protocol against a real server on port 0.
#![allow(clippy::unwrap_used)] // test helpers: a failure should stop the test

mod common;

use common::*;
use futures_util::SinkExt;
use std::time::Duration;

use shared::{ErrorCode, ServerMessage, close_code};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

#[tokio::test]
async fn welcome_comes_first_then_echoes_text_and_binary() {
    let server = start(&[]).await;
    let mut ws = server.connect("/ws").await;
    assert!(matches!(
        next_json(&mut ws).await,
        ServerMessage::Welcome {
            push_interval_ms: 0,
            ..
        }
    ));
    send_text(&mut ws, r#"{"type":"echo","id":7,"body":"hello ✓"}"#).await;
    assert_eq!(
        next_json(&mut ws).await,
        ServerMessage::Echo {
            id: 7,
            body: "hello ✓".into()
        }
    );
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        next_message(&mut ws).await,
        Message::binary(vec![0u8, 1, 2, 255])
    );
    send_text(&mut ws, r#"{"type":"ping","t":1.5}"#).await;
    assert_eq!(next_json(&mut ws).await, ServerMessage::Pong { t: 1.5 });
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_client_chooses_its_id_and_a_second_connection_replaces_the_first() {
    let server = start(&[]).await;
    let (mut first, id) = server.connect_ws("/ws?client_id=alice").await;
    assert_eq!(id, "alice");
    let (mut second, id) = server.connect_ws("/ws?client_id=alice").await;
    assert_eq!(id, "alice");
    let frame = expect_close(&mut first).await.expect("a close frame");
    assert_eq!(u16::from(frame.code), close_code::REPLACED);
    assert_eq!(frame.reason.as_str(), "replaced");
    // The newer connection is unaffected.
    send_text(&mut second, r#"{"type":"echo","id":1,"body":"still here"}"#).await;
    assert!(matches!(
        next_json(&mut second).await,
        ServerMessage::Echo { id: 1, .. }
    ));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn timed_pushes_arrive_with_seq_counting_up() {
    let server = start(&["--push-interval", "30ms"]).await;
    let mut ws = server.connect("/ws").await;
    assert!(matches!(
        next_json(&mut ws).await,
        ServerMessage::Welcome {
            push_interval_ms: 30,
            ..
        }
    ));
    for expected in 1..=3 {
        match next_json(&mut ws).await {
            ServerMessage::Push {
                seq,
                body,
                sent_at_ms,
            } => {
                assert_eq!(seq, expected);
                assert_eq!(body, "tick");
                assert!(sent_at_ms > 1_600_000_000_000);
            }
            other => panic!("expected a push, got {other:?}"),
        }
    }
    server.shutdown().await.unwrap();
}

async fn expect_burst(ws: &mut Ws, count: u32, first_seq: u64) {
    for i in 0..u64::from(count) {
        match next_json(ws).await {
            ServerMessage::Push { seq, .. } => assert_eq!(seq, first_seq + i, "pushes in order"),
            other => panic!("push {i}: got {other:?}"),
        }
    }
    match next_json(ws).await {
        ServerMessage::BurstDone { count: done, .. } => assert_eq!(done, count),
        other => panic!("expected burst_done, got {other:?}"),
    }
}

#[tokio::test]
async fn a_burst_query_delivers_exactly_n_pushes_in_order_then_burst_done() {
    let server = start(&[]).await;
    let (mut ws, _) = server.connect_ws("/ws?burst=5000").await;
    expect_burst(&mut ws, 5000, 1).await;
    // And a burst message on the same connection carries on the numbering.
    send_text(&mut ws, r#"{"type":"burst","count":700}"#).await;
    expect_burst(&mut ws, 700, 5001).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_burst_over_the_limit_gets_an_error_and_the_connection_carries_on() {
    let server = start(&["--max-burst", "10"]).await;
    let (mut ws, _) = server.connect_ws("/ws").await;
    send_text(&mut ws, r#"{"type":"burst","count":11}"#).await;
    match next_json(&mut ws).await {
        ServerMessage::Error { code, .. } => assert_eq!(code, ErrorCode::BurstTooLarge),
        other => panic!("expected an error, got {other:?}"),
    }
    send_text(&mut ws, r#"{"type":"burst","count":10}"#).await;
    expect_burst(&mut ws, 10, 1).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn garbage_gets_errors_and_then_1008() {
    let server = start(&["--max-bad-messages", "3"]).await;
    let (mut ws, _) = server.connect_ws("/ws").await;
    send_text(&mut ws, "not json").await;
    assert!(matches!(
        next_json(&mut ws).await,
        ServerMessage::Error {
            code: ErrorCode::Malformed,
            ..
        }
    ));
    send_text(&mut ws, r#"{"type":"teleport"}"#).await;
    assert!(matches!(
        next_json(&mut ws).await,
        ServerMessage::Error {
            code: ErrorCode::UnknownType,
            ..
        }
    ));
    // A good message resets the count: the limit is on garbage in a row.
    send_text(&mut ws, r#"{"type":"ping","t":0}"#).await;
    assert!(matches!(
        next_json(&mut ws).await,
        ServerMessage::Pong { .. }
    ));
    for _ in 0..3 {
        send_text(&mut ws, r#"{"type":"echo","id":"x"}"#).await;
        assert!(matches!(
            next_json(&mut ws).await,
            ServerMessage::Error {
                code: ErrorCode::InvalidFields,
                ..
            }
        ));
    }
    let frame = expect_close(&mut ws).await.expect("a close frame");
    assert_eq!(u16::from(frame.code), close_code::POLICY_VIOLATION);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let server = start(&["--max-message-size", "1024"]).await;
    let (mut ws, _) = server.connect_ws("/ws").await;
    send_text(&mut ws, &"x".repeat(2000)).await;
    let frame = expect_close(&mut ws).await.expect("a close frame");
    assert_eq!(u16::from(frame.code), close_code::MESSAGE_TOO_BIG);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_idle_timeout() {
    let server = start(&["--idle-timeout", "300ms"]).await;
    let (mut ws, _) = server.connect_ws("/ws").await;
    let frame = expect_close(&mut ws).await.expect("a close frame");
    assert_eq!(u16::from(frame.code), close_code::IDLE_TIMEOUT);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_that_answers_pings_is_not_idle() {
    let server = start(&["--idle-timeout", "400ms", "--ping-interval", "100ms"]).await;
    let (mut ws, _) = server.connect_ws("/ws").await;
    // Reading answers the pings; ask for an echo well after the idle timeout.
    let started = tokio::time::Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(1000) {
        match tokio::time::timeout(DEADLINE, futures_util::StreamExt::next(&mut ws)).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            other => panic!("expected only pings, got {other:?}"),
        }
    }
    assert!(pings >= 5, "pings every 100 ms, got {pings}");
    send_text(&mut ws, r#"{"type":"echo","id":3,"body":""}"#).await;
    assert!(matches!(
        next_json(&mut ws).await,
        ServerMessage::Echo { id: 3, .. }
    ));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_1013_while_others_keep_their_pushes() {
    let server = start(&["--write-timeout", "300ms", "--push-interval", "20ms"]).await;
    // The slow one asks for a large burst and never reads it.
    let mut slow = server.connect("/ws?burst=1000000").await;
    let (mut fast, _) = server.connect_ws("/ws").await;
    wait_until("the slow consumer to be closed", || async {
        metric(&server, "ws_slow_consumer_closes_total").await == 1
    })
    .await;
    // The other client got its timed pushes all along and still does.
    let mut pushes = 0;
    while pushes < 5 {
        if let ServerMessage::Push { .. } = next_json(&mut fast).await {
            pushes += 1;
        }
    }
    // The slow client's stream ends; if the close frame made it, it says 1013.
    let closed = tokio::time::timeout(DEADLINE * 3, async {
        loop {
            match futures_util::StreamExt::next(&mut slow).await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the slow client's connection ends");
    if let Some(code) = closed {
        assert_eq!(code, close_code::TRY_AGAIN_LATER);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_sends_1001_to_every_client_and_run_returns() {
    let server = start(&[]).await;
    let (mut a, _) = server.connect_ws("/ws").await;
    let (mut b, _) = server.connect_ws("/ws?client_id=b").await;
    let mut e = server.connect("/echo").await;
    let stopping = tokio::spawn(server.shutdown());
    for ws in [&mut a, &mut b, &mut e] {
        let frame = expect_close(ws).await.expect("a close frame");
        assert_eq!(u16::from(frame.code), close_code::GOING_AWAY);
        assert_eq!(frame.reason.as_str(), "server shutting down");
    }
    stopping.await.unwrap().unwrap();
}

#[tokio::test]
async fn reliable_mode_is_opt_in_and_the_plain_wire_is_unchanged() {
    let server = start(&[]).await;
    let mut plain = server.connect("/ws?client_id=p").await;
    let Message::Text(welcome) = next_message(&mut plain).await else {
        panic!("no welcome")
    };
    assert_eq!(
        welcome.as_str(),
        r#"{"type":"welcome","client_id":"p","push_interval_ms":0,"protocol":1}"#
    );
    for text in [
        r#"{"type":"ack","seq":1}"#,
        r#"{"type":"msg","seq":1,"data":"{}"}"#,
        r#"{"type":"resume","session":"s","token":"t","last_seq":0}"#,
    ] {
        send_text(&mut plain, text).await;
        assert!(matches!(
            next_json(&mut plain).await,
            ServerMessage::Error {
                code: ErrorCode::NotReliable,
                ..
            }
        ));
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn reliable_messages_are_numbered_acknowledged_and_processed_once() {
    let server = start(&[]).await;
    let mut ws = server.connect("/ws?reliable=1").await;
    let ServerMessage::Welcome {
        session: Some(session),
        token: Some(token),
        ..
    } = next_json(&mut ws).await
    else {
        panic!("a reliable welcome offers a session")
    };
    // A resume of a session that does not exist fails, and the connection
    // carries on with the offered one.
    send_text(
        &mut ws,
        r#"{"type":"resume","session":"nope","token":"x","last_seq":0}"#,
    )
    .await;
    assert_eq!(
        next_json(&mut ws).await,
        ServerMessage::ResumeFailed {
            reason: shared::ResumeFailure::UnknownSession
        }
    );
    let echo = |seq: u64, id: u64| {
        shared::ClientMessage::Msg {
            seq,
            data: format!(r#"{{"type":"echo","id":{id},"body":"b"}}"#),
        }
        .to_json()
    };
    send_text(&mut ws, &echo(1, 10)).await;
    // The same seq again (a resend) is not processed twice; a skip is refused.
    send_text(&mut ws, &echo(1, 10)).await;
    send_text(&mut ws, &echo(3, 30)).await;
    send_text(&mut ws, &echo(2, 20)).await;
    let mut replies = Vec::new();
    let mut acked = 0;
    let mut out_of_order = 0;
    while replies.len() < 2 || acked < 2 {
        match next_json(&mut ws).await {
            ServerMessage::Msg { seq, data } => replies.push((seq, data)),
            ServerMessage::Ack { seq } => acked = seq,
            ServerMessage::Error {
                code: ErrorCode::OutOfOrder,
                ..
            } => out_of_order += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(out_of_order, 1);
    assert_eq!(
        replies,
        vec![
            (1, r#"{"type":"echo","id":10,"body":"b"}"#.to_owned()),
            (2, r#"{"type":"echo","id":20,"body":"b"}"#.to_owned()),
        ]
    );
    // Resuming on a new connection: the server says what it processed and
    // replays what the client did not acknowledge (it acknowledged nothing).
    drop(ws);
    let mut again = server.connect("/ws?reliable=1").await;
    assert!(matches!(
        next_json(&mut again).await,
        ServerMessage::Welcome { .. }
    ));
    let resume = shared::ClientMessage::Resume {
        session,
        token,
        last_seq: 1,
    };
    send_text(&mut again, &resume.to_json()).await;
    assert_eq!(
        next_json(&mut again).await,
        ServerMessage::Resumed { last_seq: 2 }
    );
    assert!(matches!(
        next_json(&mut again).await,
        ServerMessage::Msg { seq: 2, .. }
    ));
    server.shutdown().await.unwrap();
}

/// A reliable connection with its session bound (its first message sent):
/// the socket, the session id and its token.
async fn reliable_session(server: &TestServer, client_id: &str) -> (Ws, String, String) {
    let mut ws = server
        .connect(&format!("/ws?reliable=1&client_id={client_id}"))
        .await;
    let ServerMessage::Welcome {
        session: Some(session),
        token: Some(token),
        ..
    } = next_json(&mut ws).await
    else {
        panic!("a reliable welcome offers a session")
    };
    // The first message binds the connection to the offered session.
    send_text(&mut ws, r#"{"type":"ack","seq":0}"#).await;
    (ws, session, token)
}

/// Reads numbered messages until the close frame: their envelopes' sizes and the close.
async fn numbered_until_close(ws: &mut Ws) -> (Vec<usize>, Option<CloseFrame>) {
    let mut sizes = Vec::new();
    loop {
        match tokio::time::timeout(DEADLINE, futures_util::StreamExt::next(ws))
            .await
            .expect("close within the deadline")
        {
            Some(Ok(Message::Text(text))) => {
                if let ServerMessage::Msg { .. } = ServerMessage::from_json(&text).unwrap() {
                    sizes.push(text.len());
                }
            }
            Some(Ok(Message::Close(frame))) => return (sizes, frame),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (sizes, None),
        }
    }
}

#[tokio::test]
async fn a_session_resumed_on_another_connection_closes_the_first_at_once() {
    let server = start(&[]).await;
    let (mut first, session, token) = reliable_session(&server, "first").await;
    send_text(&mut first, r#"{"type":"echo","id":1,"body":"bound"}"#).await;
    assert!(matches!(
        next_json(&mut first).await,
        ServerMessage::Msg { seq: 1, .. }
    ));
    // Another client id takes the session over.
    let (mut second, _) = server.connect_ws("/ws?reliable=1&client_id=second").await;
    let resume = shared::ClientMessage::Resume {
        session,
        token,
        last_seq: 1,
    };
    send_text(&mut second, &resume.to_json()).await;
    assert!(matches!(
        next_json(&mut second).await,
        ServerMessage::Resumed { .. }
    ));
    // The first connection sends nothing and is closed at once all the same.
    let frame = tokio::time::timeout(Duration::from_secs(1), expect_close(&mut first))
        .await
        .expect("the taken-over connection is closed within a second")
        .expect("a close frame");
    assert_eq!(u16::from(frame.code), close_code::REPLACED);
    assert_eq!(
        frame.reason.as_str(),
        "session resumed on another connection"
    );
    server.shutdown().await.unwrap();
}

/// Unnumbered echoes, never acknowledged, against a history of `args`:
/// the connection is closed with 1013 before the history passes its bounds,
/// and a resume replays exactly what was kept.
async fn unnumbered_echoes_fill_the_history(
    args: &[&str],
    body: usize,
    max: usize,
    max_bytes: usize,
) {
    let server = start(args).await;
    let (mut ws, session, token) = reliable_session(&server, "greedy").await;
    let body = "x".repeat(body);
    for id in 1..=60 {
        let echo = shared::ClientMessage::Echo {
            id,
            body: body.clone(),
        };
        if ws.send(Message::text(echo.to_json())).await.is_err() {
            break; // Closed already.
        }
    }
    let (sizes, close) = numbered_until_close(&mut ws).await;
    let close = close.expect("a close frame");
    assert_eq!(u16::from(close.code), close_code::TRY_AGAIN_LATER);
    assert!(
        sizes.len() <= max,
        "{} numbered messages held, at most {max}",
        sizes.len()
    );
    assert!(
        sizes.iter().sum::<usize>() <= max_bytes,
        "{} bytes held, at most {max_bytes}",
        sizes.iter().sum::<usize>()
    );
    // Nothing was lost: the resume replays every one of them (none acknowledged).
    let (mut again, _) = server.connect_ws("/ws?reliable=1&client_id=greedy").await;
    let resume = shared::ClientMessage::Resume {
        session,
        token,
        last_seq: 0,
    };
    send_text(&mut again, &resume.to_json()).await;
    assert!(matches!(
        next_json(&mut again).await,
        ServerMessage::Resumed { .. }
    ));
    // A ping's pong follows the replay: it marks its end.
    send_text(&mut again, r#"{"type":"ping","t":1}"#).await;
    let mut replayed = Vec::new();
    loop {
        match next_message(&mut again).await {
            Message::Text(text) => match ServerMessage::from_json(&text).unwrap() {
                ServerMessage::Msg { .. } => replayed.push(text.len()),
                ServerMessage::Pong { .. } => break,
                other => panic!("unexpected {other:?}"),
            },
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(replayed, sizes);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn unnumbered_replies_count_against_the_history_in_messages() {
    unnumbered_echoes_fill_the_history(&["--history-max", "10"], 10, 10, usize::MAX).await;
}

#[tokio::test]
async fn unnumbered_replies_count_against_the_history_in_bytes() {
    unnumbered_echoes_fill_the_history(&["--history-max-bytes", "8000"], 1000, 1000, 8000).await;
}

#[tokio::test]
async fn a_reliable_session_keeps_a_bounded_number_of_bursts_pending() {
    // A window of 50 pushes: without acks the first burst stalls, the rest wait.
    let server = start(&["--history-max", "100"]).await;
    let (mut ws, _, _) = reliable_session(&server, "bursty").await;
    for _ in 0..18 {
        send_text(&mut ws, r#"{"type":"burst","count":1000}"#).await;
    }
    let mut busy = 0;
    let mut pushes = 0;
    while busy < 2 {
        match next_json(&mut ws).await {
            ServerMessage::Msg { data, .. } => match ServerMessage::from_json(&data).unwrap() {
                ServerMessage::Push { .. } => pushes += 1,
                ServerMessage::Error {
                    code: ErrorCode::BurstBusy,
                    ..
                } => busy += 1,
                other => panic!("unexpected {other:?}"),
            },
            ServerMessage::Ack { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pushes <= 50, "{pushes} pushes past the window");
    server.shutdown().await.unwrap();
}
