//! A real server on port 0 and a native WebSocket client, for the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use shared::ServerMessage;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long any single expectation may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), server::Error>>,
}

impl TestServer {
    /// Starts the server with `args`; timed pushes and pings are off unless asked for.
    pub async fn start(args: &[&str]) -> Self {
        let mut all = vec![
            "server",
            "--push-interval",
            "0",
            "--ping-interval",
            "0",
            "--static-dir",
            "/nonexistent",
        ];
        all.extend_from_slice(args);
        let config = server::Config::try_parse_from(all).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(listener, config, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn connect(&self, path: &str) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(self.url(path))
            .await
            .unwrap();
        ws
    }

    /// Connects to /ws and returns the socket and the welcome's client id.
    pub async fn connect_ws(&self, path: &str) -> (Ws, String) {
        let mut ws = self.connect(path).await;
        match next_json(&mut ws).await {
            ServerMessage::Welcome { client_id, .. } => (ws, client_id),
            other => panic!("expected welcome first, got {other:?}"),
        }
    }

    /// Triggers the graceful shutdown and waits for `run` to return.
    pub async fn shutdown(mut self) -> Result<(), server::Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("server stops in time")
            .unwrap()
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
    let text = reqwest::get(server.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}
