//! A real server on port 0 and a native WebSocket client, for the integration tests.
#![allow(dead_code, async_fn_in_trait, clippy::unwrap_used)]

use std::future::Future;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use shared::ServerMessage;
pub use testbed::TestServer;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long any single expectation may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The server on a free port (`testbed::TestServer`, the one helper), with
/// timed pushes and pings off unless `args` turn them on, and no UI.
pub async fn start(args: &[&str]) -> TestServer {
    TestServer::start(testbed::quiet_config(args).unwrap())
        .await
        .unwrap()
}

/// A native WebSocket client of the test server.
pub trait Connect {
    /// Connects to `path`.
    async fn connect(&self, path: &str) -> Ws;
    /// Connects to /ws and returns the socket and the welcome's client id.
    async fn connect_ws(&self, path: &str) -> (Ws, String);
}

impl Connect for TestServer {
    async fn connect(&self, path: &str) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(self.ws_url(path))
            .await
            .unwrap();
        ws
    }

    async fn connect_ws(&self, path: &str) -> (Ws, String) {
        let mut ws = self.connect(path).await;
        match next_json(&mut ws).await {
            ServerMessage::Welcome { client_id, .. } => (ws, client_id),
            other => panic!("expected welcome first, got {other:?}"),
        }
    }
}

/// The next data message, skipping control frames.
pub async fn next_message(ws: &mut Ws) -> Message {
    loop {
        let message = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("a message within the deadline")
            .expect("the stream is open")
            .expect("no socket error");
        if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
            return message;
        }
    }
}

pub async fn next_json(ws: &mut Ws) -> ServerMessage {
    match next_message(ws).await {
        Message::Text(text) => ServerMessage::from_json(&text).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
}

/// Reads until the close frame and returns it (`None` if the TCP connection ended without one).
pub async fn expect_close(ws: &mut Ws) -> Option<CloseFrame> {
    loop {
        match tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("close within the deadline")
        {
            Some(Ok(Message::Close(frame))) => return frame,
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// Polls `check` until it is true, or fails after the deadline.
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn metric(server: &TestServer, name: &str) -> u64 {
    let text = reqwest::get(server.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

// Protocol versions (`protocol.rs`, `cluster_sessions.rs`).

/// The first text frame after the welcome (and the reliable connection's
/// binding `ack`).
pub async fn next_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(DEADLINE, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Text(text) if !text.starts_with(r#"{"type":"ack""#) => {
                return text.as_str().to_owned();
            }
            _ => {}
        }
    }
}

/// A reliable connection speaking `protocol` that starts a session and
/// sends echoes 1 to 3 inside msgs, reading their replies without
/// acknowledging them; returns the session's id and token.
pub async fn three_unacked(server: &TestServer, protocol: shared::Protocol) -> (String, String) {
    let mut ws = server
        .connect(&format!("/ws?reliable=1&protocol={}", protocol.number()))
        .await;
    let ServerMessage::Welcome {
        session: Some(session),
        token: Some(token),
        ..
    } = next_json(&mut ws).await
    else {
        panic!("a reliable welcome")
    };
    send_text(&mut ws, r#"{"type":"ack","seq":0}"#).await;
    for id in 1..=3 {
        let echo = format!(r#"{{"type":"echo","id":{id},"body":"e{id}"}}"#);
        send_text(&mut ws, &shared::encode_msg(id, &echo, protocol)).await;
        assert!(next_text(&mut ws).await.contains(&format!("e{id}")));
    }
    ws.close(None).await.unwrap();
    (session, token)
}

/// Resumes `session` speaking `protocol`, having processed server message
/// 1: the replay of 2 and 3 must be in `protocol`'s form, exactly.
pub async fn resume_in(
    server: &TestServer,
    (session, token): (String, String),
    protocol: shared::Protocol,
) {
    let mut ws = server
        .connect(&format!("/ws?reliable=1&protocol={}", protocol.number()))
        .await;
    next_json(&mut ws).await;
    let resume = shared::ClientMessage::Resume {
        session,
        token,
        last_seq: 1,
    };
    send_text(&mut ws, &resume.to_json()).await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"type":"resumed","last_seq":3}"#
    );
    for id in 2..=3 {
        let echo = format!(r#"{{"type":"echo","id":{id},"body":"e{id}"}}"#);
        assert_eq!(
            next_text(&mut ws).await,
            shared::encode_msg(id, &echo, protocol)
        );
    }
}

/// The JSON of an admin API `GET` of `url` with `token`.
pub async fn admin_json(url: &str, token: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
