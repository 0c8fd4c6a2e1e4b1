//! `/echo`: a raw RFC 6455 echo for conformance tools and tools like Postman.
//!
//! Every text and binary message comes back unchanged with the same type
//! (fragments are reassembled by tungstenite); pings are answered and the
//! close handshake echoes the peer's code. Invalid UTF-8 closes with 1007,
//! protocol errors with 1002, oversized messages with 1009.
//!
//! The connection has the same liveness rules as `/ws`: a ping every
//! `--ping-interval`, a close with 4001 after `--idle-timeout` without any
//! frame from the peer, and a batch of replies (one flush) or a ping not
//! written within `--write-timeout` (the peer stopped reading) ends it with
//! 1013 and counts a slow consumer. Without them a silent client, or one
//! that sends 16 MiB messages and never reads, held its memory forever.
//!
//! A message in progress counts against `--max-partial-bytes` (the socket
//! counts it, `crate::partial`; each message that comes out empties the
//! connection's meter): past it the connection closes with 1013. In token
//! mode the upgrade needs a token, as `/ws`'s does, unless `--public-echo`
//! (`routes`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{FutureExt, SinkExt};

use crate::connection::End;
use crate::metrics::Metrics;
use crate::partial::PartialMeter;
use crate::state::AppState;
use crate::timer::{tick, ticker};
use crate::wire::ReadError;

/// Replies fed between two flushes at most, so a fast sender cannot starve the flush.
const MAX_BATCH: usize = 64;

/// What one batch of replies came to.
enum Step {
    /// Written and flushed; read on.
    Continue,
    /// The connection ends.
    End(End),
}

/// Replies fed and not yet flushed: counted in `ws_send_queue_bytes` until
/// the batch is flushed or abandoned (a timed-out batch drops this).
struct Unflushed<'a> {
    metrics: &'a Metrics,
    bytes: u64,
}

impl Unflushed<'_> {
    fn add(&mut self, bytes: u64) {
        self.bytes += bytes;
        Metrics::add(&self.metrics.send_queue_bytes, bytes);
    }
}

impl Drop for Unflushed<'_> {
    fn drop(&mut self) {
        Metrics::sub(&self.metrics.send_queue_bytes, self.bytes);
    }
}

/// Feeds one reply (no flush) and counts it; its size, or `None` when the peer is gone.
async fn echo_one(socket: &mut WebSocket, state: &AppState, reply: Message) -> Option<u64> {
    let len = match &reply {
        Message::Text(text) => text.len(),
        Message::Binary(data) => data.len(),
        _ => 0,
    } as u64;
    Metrics::add(&state.metrics.messages_in, 1);
    Metrics::add(&state.metrics.bytes_in, len);
    if socket.feed(reply).await.is_err() {
        return None;
    }
    Metrics::add(&state.metrics.messages_out, 1);
    Metrics::add(&state.metrics.bytes_out, len);
    Some(len)
}

/// Runs one `/echo` connection to its end; `partial` is its socket's meter
/// of unfinished messages, emptied at each message.
pub async fn run(mut socket: WebSocket, state: AppState, partial: Option<Arc<PartialMeter>>) {
    Metrics::add(&state.metrics.connections_open, 1);
    Metrics::add(&state.metrics.connections_total, 1);
    let shutdown = state.shutdown.clone();
    let config = state.config.clone();
    let mut ping = ticker(config.ping_interval);
    let idle = tokio::time::sleep(config.idle_timeout);
    tokio::pin!(idle);
    let mut last_heard = tokio::time::Instant::now();
    let slow = || {
        Metrics::add(&state.metrics.slow_consumer_closes, 1);
        tracing::info!(
            path = "/echo",
            "closing a slow consumer: writes made no progress"
        );
        End::slow_consumer()
    };
    let close = loop {
        let message = tokio::select! {
            biased;
            () = shutdown.cancelled() => break End::shutdown(),
            () = &mut idle => {
                if crate::timer::expired(idle.as_mut(), last_heard, config.idle_timeout) {
                    tracing::debug!(path = "/echo", "closing an idle connection after {:?}", config.idle_timeout);
                    break End::idle();
                }
                continue;
            }
            Some(()) = tick(&mut ping) => {
                match tokio::time::timeout(config.write_timeout, socket.send(Message::Ping(Default::default()))).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) => break End::gone("connection failed"),
                    Err(_) => break slow(),
                }
            }
            message = socket.recv() => message,
        };
        last_heard = tokio::time::Instant::now();
        match tokio::time::timeout(
            config.write_timeout,
            echo_batch(&mut socket, &state, partial.as_deref(), message),
        )
        .await
        {
            Ok(Step::Continue) => {}
            Ok(Step::End(close)) => break close,
            Err(_) => break slow(),
        }
    };
    if let Some(code) = close.code {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(close.reason),
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

/// Feeds the reply to `first` and to every message already readable, then
/// flushes once: a flush per message costs a syscall each (tungstenite PR 357).
/// A batch ends at [`MAX_BATCH`] replies or `--send-queue-bytes` (the first
/// reply always goes): unflushed replies are this connection's queue.
async fn echo_batch(
    socket: &mut WebSocket,
    state: &AppState,
    partial: Option<&PartialMeter>,
    first: Option<Result<Message, axum::Error>>,
) -> Step {
    let mut next = first;
    let mut fed = 0;
    let limit = state.config.send_queue_bytes as u64;
    let mut unflushed = Unflushed {
        metrics: &state.metrics,
        bytes: 0,
    };
    loop {
        if let (Some(partial), Some(Ok(message))) = (partial, &next) {
            partial.received(message);
        }
        match next {
            Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                let Some(len) = echo_one(socket, state, message).await else {
                    return Step::End(End::gone("connection failed"));
                };
                unflushed.add(len);
                fed += 1;
            }
            // tungstenite answers pings and replies to the close frame itself.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_))) => {}
            // Past --max-partial-bytes among them: 1013.
            Some(Err(err)) => {
                let _ = socket.flush().await;
                return Step::End(End::read(&ReadError::from(err)));
            }
            None => {
                let _ = socket.flush().await;
                return Step::End(End::gone("connection ended"));
            }
        }
        if fed >= MAX_BATCH || (limit != 0 && unflushed.bytes >= limit) {
            break;
        }
        // `recv` is cancel-safe: an unfinished read stays in the buffer.
        match socket.recv().now_or_never() {
            Some(message) => next = message,
            None => break,
        }
    }
    if socket.flush().await.is_err() {
        return Step::End(End::gone("connection failed"));
    }
    Step::Continue
}
