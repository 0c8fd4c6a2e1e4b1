//! [`EventStream`]: a socket's events as a `Stream`, shared by both
//! transports' dispatchers.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_channel::mpsc;

use crate::message::Event;

/// Every [`Event`] of a socket, as a `Stream`; see `Socket::events`. It
/// ends when the socket is dropped. Unbounded, so a stream nobody polls
/// keeps every event: drop it when done.
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl EventStream {
    /// A new stream and the sender a dispatcher keeps for it.
    #[cfg_attr(
        not(any(target_arch = "wasm32", feature = "native")),
        allow(dead_code, reason = "no transport in this build: unit-tested only")
    )]
    pub(crate) fn channel() -> (mpsc::UnboundedSender<Event>, Self) {
        let (tx, rx) = mpsc::unbounded();
        (tx, Self { rx })
    }
}

impl futures_util::Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}
