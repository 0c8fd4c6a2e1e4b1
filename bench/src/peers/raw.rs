//! The Rust ceiling: raw tokio + tokio-tungstenite, no framework.
//!
//! Every path echoes each message back unchanged; `?burst=N` first pushes N
//! messages in the same JSON as our server's `push`, then `burst_done`.
//! Bursts are written either with `feed` and one flush per batch (as ours)
//! or with `send` per message (a flush, so a syscall, each).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use shared::{PushEncoder, ServerMessage};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// How the raw server writes a burst.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BurstWrite {
    /// `feed` every message, one flush per 512.
    Feed,
    /// `send` every message.
    Send,
}

/// Serves until killed.
pub async fn serve(addr: &str, read_buffer: usize, burst: BurstWrite) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    serve_on(listener, read_buffer, burst).await
}

/// Serves on `listener` until killed (or dropped, in a test).
pub async fn serve_on(
    listener: TcpListener,
    read_buffer: usize,
    burst: BurstWrite,
) -> anyhow::Result<()> {
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        tokio::spawn(async move {
            let _ = connection(tcp, read_buffer, burst).await;
        });
    }
}

#[allow(clippy::result_large_err)] // tungstenite's callback signature, not ours
async fn connection(tcp: TcpStream, read_buffer: usize, burst: BurstWrite) -> anyhow::Result<()> {
    let mut count = None;
    let config = WebSocketConfig::default().read_buffer_size(read_buffer);
    let callback = |request: &Request, response: Response| {
        count = request
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("burst=")))
            .and_then(|n| n.parse::<u32>().ok());
        Ok(response)
    };
    let mut ws =
        tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(config)).await?;
    if let Some(count) = count {
        let started = Instant::now();
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
        // The same encoder as ours: the ratio then measures the framework,
        // not two ways of writing the JSON.
        let push = PushEncoder::new(now_ms, "burst");
        for seq in 1..=u64::from(count) {
            let message = Message::text(push.encode(seq));
            match burst {
                BurstWrite::Send => ws.send(message).await?,
                BurstWrite::Feed => {
                    ws.feed(message).await?;
                    if seq % 512 == 0 {
                        ws.flush().await?;
                    }
                }
            }
        }
        let done = ServerMessage::BurstDone {
            count,
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
        ws.send(Message::text(done.to_json())).await?;
    }
    while let Some(message) = ws.next().await {
        match message? {
            message @ (Message::Text(_) | Message::Binary(_)) => ws.send(message).await?,
            Message::Close(_) => break,
            _ => {}
        }
    }
    Ok(())
}

/// The raw server run by this very binary (`bench raw-server`) with a read
/// buffer of `read_buffer` bytes, writing bursts with `write` (`feed` or
/// `send`), shown as `name`.
pub fn server(
    name: &'static str,
    bench: &std::path::Path,
    read_buffer: usize,
    write: &str,
) -> super::Server {
    super::Server {
        name,
        program: super::owned(bench),
        args: [
            "raw-server",
            "--read-buffer",
            &read_buffer.to_string(),
            "--burst-write",
            write,
        ]
        .map(String::from)
        .to_vec(),
        addr_flag: "--addr",
        echo_path: "/",
        typed: false,
        burst_path: "/?burst=",
    }
}
