//! `/echo`, the origin check, the admin API and the plain HTTP routes.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use shared::{ServerMessage, close_code};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

#[tokio::test]
async fn echo_returns_every_message_unchanged_with_its_type() {
    let server = start(&[]).await;
    let mut ws = server.connect("/echo").await;
    ws.send(Message::text("plain ✓")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("plain ✓"));
    ws.send(Message::binary(vec![9u8; 10])).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::binary(vec![9u8; 10]));
    // 1 MiB, both types.
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::binary(big));
    let big_text = "é".repeat(512 * 1024);
    ws.send(Message::text(big_text.clone())).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text(big_text));
    // A fragmented text message comes back whole.
    ws.send(Message::Frame(Frame::message(
        "frag",
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    ws.send(Message::Frame(Frame::message(
        "mented",
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("fragmented"));
    // Pings are answered with the same payload.
    ws.send(Message::Ping(vec![1u8, 2, 3].into()))
        .await
        .unwrap();
    match tokio::time::timeout(DEADLINE, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        Message::Pong(payload) => assert_eq!(&payload[..], &[1, 2, 3]),
        other => panic!("expected a pong, got {other:?}"),
    }
    // The close handshake echoes the peer's code.
    ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: 4321.into(),
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    let frame = expect_close(&mut ws).await.expect("the close reply");
    assert_eq!(u16::from(frame.code), 4321);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn echo_closes_invalid_utf8_with_1007() {
    let server = start(&[]).await;
    let mut ws = server.connect("/echo").await;
    ws.send(Message::Frame(Frame::message(
        vec![0xffu8, 0xfe, 0x41],
        OpCode::Data(Data::Text),
        true,
    )))
    .await
    .unwrap();
    let frame = expect_close(&mut ws).await.expect("a close frame");
    assert_eq!(u16::from(frame.code), close_code::INVALID_PAYLOAD);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn echo_closes_protocol_errors_with_1002() {
    let server = start(&[]).await;
    let mut ws = server.connect("/echo").await;
    // A continuation frame with no message to continue breaks RFC 6455.
    ws.send(Message::Frame(Frame::message(
        "orphan",
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    let frame = expect_close(&mut ws).await.expect("a close frame");
    assert_eq!(u16::from(frame.code), close_code::PROTOCOL_ERROR);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn echo_has_its_own_size_limit() {
    let server = start(&[
        "--max-message-size",
        "100",
        "--echo-max-message-size",
        "1000",
    ])
    .await;
    let mut ws = server.connect("/echo").await;
    ws.send(Message::text("y".repeat(500))).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("y".repeat(500)));
    ws.send(Message::text("y".repeat(1500))).await.unwrap();
    let frame = expect_close(&mut ws).await.expect("a close frame");
    assert_eq!(u16::from(frame.code), close_code::MESSAGE_TOO_BIG);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_foreign_origin_gets_403_before_the_upgrade() {
    let server = start(&[]).await;
    for (origin, allowed) in [
        ("http://evil.example", false),
        (&*format!("http://{}", server.addr), true),
    ] {
        let mut request = server.ws_url("/ws").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Ok(_) => assert!(allowed, "{origin} should be refused"),
            Err(WsError::Http(response)) => {
                assert!(!allowed, "{origin} should be allowed");
                assert_eq!(response.status(), 403);
            }
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(
        metric(&server, "ws_rejected_upgrades_total{reason=\"origin\"}").await,
        1
    );
    server.shutdown().await.unwrap();

    let server = start(&["--allowed-origin", "http://evil.example"]).await;
    let mut request = server.ws_url("/echo").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_ok());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn plain_http_routes_answer_clearly() {
    let server = start(&[]).await;
    let response = reqwest::get(server.http_url("/ws")).await.unwrap();
    assert_eq!(response.status(), 426);
    assert!(response.text().await.unwrap().contains("WebSocket"));
    let response = reqwest::get(server.http_url("/healthz")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");
    // Without --redis-url there is nothing to wait for: always ready.
    let response = reqwest::get(server.http_url("/readyz")).await.unwrap();
    assert_eq!(response.status(), 200);
    let page = reqwest::get(server.http_url("/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Welcome to the server!"), "{page}");
    let (_ws, _) = server.connect_ws("/ws").await;
    let metrics = reqwest::get(server.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "ws_connections_open 1",
        "ws_connections_total 1",
        "ws_messages_out_total",
        "ws_bytes_in_total",
        "ws_pushes_dropped_total",
        "ws_slow_consumer_closes_total",
        "ws_rejected_upgrades_total{reason=\"not_upgrade\"} 1",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
    assert!(
        !metrics.contains("ws_cluster_"),
        "a single node has no cluster metrics"
    );
    server.shutdown().await.unwrap();
}

/// The admin token of these tests (at least 16 bytes, as the server requires).
const ADMIN: &str = "http-test-admin-token";

#[tokio::test]
async fn the_admin_api_is_off_without_a_token() {
    let server = start(&[]).await;
    let client = reqwest::Client::new();
    let response = client
        .get(server.http_url("/api/clients"))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_admin_api_lists_pushes_broadcasts_and_kicks() {
    let server = start(&["--admin-token", ADMIN]).await;
    let client = reqwest::Client::new();
    let api = |path: &str| server.http_url(&format!("/api{path}"));
    for token in [None, Some("wrong")] {
        let mut request = client.get(api("/clients"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        assert_eq!(request.send().await.unwrap().status(), 401);
    }
    let (mut a, _) = server.connect_ws("/ws?client_id=a").await;
    let (mut b, _) = server.connect_ws("/ws?client_id=b").await;
    send_text(&mut a, r#"{"type":"echo","id":1,"body":"x"}"#).await;
    next_json(&mut a).await;

    let list: serde_json::Value = client
        .get(api("/clients"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], "a");
    assert_eq!(rows[0]["messages_in"], 1);
    assert_eq!(rows[0]["messages_out"], 2);
    assert!(
        rows[0]["remote_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(rows[0]["connected_at"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(rows[0]["queue_len"], 0);

    let response = client
        .post(api("/clients/a/push"))
        .bearer_auth(ADMIN)
        .body("for a only")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(matches!(next_json(&mut a).await,
        ServerMessage::Push { seq: 1, body, .. } if body == "for a only"));
    let response = client
        .post(api("/clients/nobody/push"))
        .bearer_auth(ADMIN)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    let reply: serde_json::Value = client
        .post(api("/broadcast"))
        .bearer_auth(ADMIN)
        .body("to all")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["delivered"], 2);
    assert!(matches!(next_json(&mut a).await,
        ServerMessage::Push { seq: 2, body, .. } if body == "to all"));
    assert!(matches!(next_json(&mut b).await,
        ServerMessage::Push { seq: 1, body, .. } if body == "to all"));

    let response = client
        .delete(api("/clients/a"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let frame = expect_close(&mut a).await.expect("a close frame");
    assert_eq!(u16::from(frame.code), close_code::KICKED);
    assert_eq!(frame.reason.as_str(), "kicked");

    let response = client
        .delete(api("/clients/b?code=1012&reason=restart"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let frame = expect_close(&mut b).await.expect("a close frame");
    assert_eq!(u16::from(frame.code), 1012);
    assert_eq!(frame.reason.as_str(), "restart");

    wait_until("the kicked clients to leave the registry", || async {
        let list: serde_json::Value = client
            .get(api("/clients"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list.as_array().unwrap().is_empty()
    })
    .await;
    for path in ["/clients/a", "/clients/b?code=3000"] {
        let status = client
            .delete(api(path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .status();
        assert!(status == 404 || status == 400, "{path}: {status}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn echo_answers_pipelined_messages_in_order() {
    let server = start(&[]).await;
    let mut ws = server.connect("/echo").await;
    // Many messages in flight at once: the server feeds the ready ones and
    // flushes per batch; every one must still come back, in order, typed.
    const N: usize = 2_000;
    for i in 0..N {
        let message = if i % 3 == 0 {
            Message::binary(i.to_le_bytes().to_vec())
        } else {
            Message::text(format!("m{i}"))
        };
        ws.feed(message).await.unwrap();
    }
    ws.flush().await.unwrap();
    for i in 0..N {
        let expected = if i % 3 == 0 {
            Message::binary(i.to_le_bytes().to_vec())
        } else {
            Message::text(format!("m{i}"))
        };
        assert_eq!(next_message(&mut ws).await, expected, "message {i}");
    }
    assert_eq!(metric(&server, "ws_messages_in_total").await, N as u64);
}
