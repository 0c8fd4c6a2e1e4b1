//! `/echo`: a raw RFC 6455 echo for conformance tools and tools like Postman.
//!
//! Every text and binary message comes back unchanged with the same type
//! (fragments are reassembled by tungstenite); pings are answered and the
//! close handshake echoes the peer's code. Invalid UTF-8 closes with 1007,
//! protocol errors with 1002, oversized messages with 1009. Nothing else is
//! ever sent.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{FutureExt, SinkExt};
use shared::close_code;

use crate::metrics::Metrics;
use crate::state::AppState;
use crate::wire::{self, ReadError};

/// Replies fed between two flushes at most, so a fast sender cannot starve the flush.
const MAX_BATCH: usize = 64;

/// Feeds one reply (no flush) and counts it; `false` when the peer is gone.
async fn echo_one(socket: &mut WebSocket, state: &AppState, reply: Message) -> bool {
    let len = match &reply {
        Message::Text(text) => text.len(),
        Message::Binary(data) => data.len(),
        _ => 0,
    } as u64;
    Metrics::add(&state.metrics.messages_in, 1);
    Metrics::add(&state.metrics.bytes_in, len);
    if socket.feed(reply).await.is_err() {
        return false;
    }
    Metrics::add(&state.metrics.messages_out, 1);
    Metrics::add(&state.metrics.bytes_out, len);
    true
}

/// Runs one `/echo` connection to its end.
pub async fn run(mut socket: WebSocket, state: AppState) {
    Metrics::add(&state.metrics.connections_open, 1);
    Metrics::add(&state.metrics.connections_total, 1);
    let shutdown = state.shutdown.clone();
    let close = 'conn: loop {
        let message = tokio::select! {
            biased;
            () = shutdown.cancelled() => break Some((close_code::GOING_AWAY, "server shutting down")),
            message = socket.recv() => message,
        };
        // Feed this reply and every one already readable, then flush once:
        // a flush per message costs a syscall each (tungstenite PR 357).
        let mut next = message;
        let mut fed = 0;
        loop {
            match next {
                Some(Ok(Message::Text(text))) => {
                    if !echo_one(&mut socket, &state, Message::Text(text)).await {
                        break 'conn None;
                    }
                    fed += 1;
                }
                Some(Ok(Message::Binary(data))) => {
                    if !echo_one(&mut socket, &state, Message::Binary(data)).await {
                        break 'conn None;
                    }
                    fed += 1;
                }
                // tungstenite answers pings and replies to the close frame itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_))) => {}
                Some(Err(err)) => {
                    let _ = socket.flush().await;
                    break 'conn wire::close_for(&ReadError::from(err));
                }
                None => {
                    let _ = socket.flush().await;
                    break 'conn None;
                }
            }
            if fed >= MAX_BATCH {
                break;
            }
            // `recv` is cancel-safe: an unfinished read stays in the buffer.
            match socket.recv().now_or_never() {
                Some(message) => next = message,
                None => break,
            }
        }
        if socket.flush().await.is_err() {
            break None;
        }
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            if socket.send(Message::Close(Some(frame))).await.is_ok() {
                while let Some(Ok(_)) = socket.recv().await {}
            }
        })
        .await;
    }
    state
        .metrics
        .connections_open
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}
