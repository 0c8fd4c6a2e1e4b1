//! Delivery of [`Event`]s to callbacks and streams for the native socket:
//! the `Send + Sync` twin of the browser's `dispatch` module.
//!
//! Only the socket's task delivers, one event at a time, so every callback
//! and stream sees every event in the same order. A callback may use the
//! socket (send, close...): that only appends effects to the driver, which
//! the task performs after the callback returns, so nothing is delivered
//! re-entrantly. Callbacks may subscribe and unsubscribe from any thread at
//! any time; a subscription made during a delivery sees the next event.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use futures_channel::mpsc;

use crate::message::Event;
pub use crate::stream::EventStream;

type Listener = Arc<Mutex<dyn FnMut(&Event) + Send>>;

/// The callbacks and streams of one native socket.
#[derive(Default)]
pub(crate) struct Dispatcher {
    state: Mutex<DispatchState>,
}

#[derive(Default)]
struct DispatchState {
    /// Copy-on-write, so delivering an event clones one `Arc`, not a `Vec`.
    listeners: Arc<Vec<(u64, Listener)>>,
    next_id: u64,
    streams: Vec<mpsc::UnboundedSender<Event>>,
}

/// Locks a mutex whose holder may have panicked: the data (a list, a
/// callback) stays usable, and a panicking callback must not stop delivery
/// to the others.
pub(super) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Dispatcher {
    /// Registers `callback`; it stays until the returned [`Subscription`] is dropped.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        callback: impl FnMut(&Event) + Send + 'static,
    ) -> Subscription {
        let mut state = lock(&self.state);
        state.next_id += 1;
        let id = state.next_id;
        let mut listeners: Vec<_> = state.listeners.iter().cloned().collect();
        listeners.push((id, Arc::new(Mutex::new(callback))));
        state.listeners = Arc::new(listeners);
        Subscription {
            dispatcher: Arc::downgrade(self),
            id,
        }
    }

    fn unsubscribe(&self, id: u64) {
        let mut state = lock(&self.state);
        let kept: Vec<_> = state
            .listeners
            .iter()
            .filter(|(other, _)| *other != id)
            .cloned()
            .collect();
        state.listeners = Arc::new(kept);
    }

    /// A stream of every event from now on; it ends when the dispatcher is dropped.
    pub(crate) fn stream(&self) -> EventStream {
        let (tx, stream) = EventStream::channel();
        lock(&self.state).streams.push(tx);
        stream
    }

    /// Delivers `event` to every callback, then every stream. Called by the
    /// socket's task only, with no lock of the driver held.
    pub(crate) fn emit(&self, event: &Event) {
        let listeners = lock(&self.state).listeners.clone();
        for (_, listener) in listeners.iter() {
            // A callback that panics misses this event only: the socket's
            // task, and the other callbacks, go on.
            let _ = catch_unwind(AssertUnwindSafe(|| (lock(listener))(event)));
        }
        lock(&self.state)
            .streams
            .retain(|tx| tx.unbounded_send(event.clone()).is_ok());
    }
}

/// Keeps an `on_event` callback registered; dropping it unsubscribes.
#[must_use = "the callback is removed when the subscription is dropped"]
pub struct Subscription {
    dispatcher: Weak<Dispatcher>,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(dispatcher) = self.dispatcher.upgrade() {
            dispatcher.unsubscribe(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::{Context, Poll};

    use futures_util::StreamExt;

    use super::*;
    use crate::message::Message;

    fn text(s: &str) -> Event {
        Event::Message(Message::Text(s.into()))
    }

    fn recorder(d: &Arc<Dispatcher>) -> (Arc<Mutex<Vec<Event>>>, Subscription) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let sub = d.subscribe(move |e| sink.lock().unwrap().push(e.clone()));
        (seen, sub)
    }

    #[test]
    fn every_callback_and_stream_gets_every_event_in_order_until_dropped() {
        let d = Arc::new(Dispatcher::default());
        let (a, sa) = recorder(&d);
        let (b, _sb) = recorder(&d);
        let stream = d.stream();
        d.emit(&text("1"));
        d.emit(&text("2"));
        drop(sa);
        d.emit(&text("3"));
        assert_eq!(*a.lock().unwrap(), [text("1"), text("2")]);
        assert_eq!(*b.lock().unwrap(), [text("1"), text("2"), text("3")]);
        drop(d);
        let got = futures_executor_lite(stream.collect::<Vec<_>>());
        assert_eq!(got, [text("1"), text("2"), text("3")]);
    }

    #[test]
    fn a_callback_may_drop_its_own_subscription_and_a_panicking_one_stops_no_other() {
        let d = Arc::new(Dispatcher::default());
        let slot: Arc<Mutex<Option<Subscription>>> = Arc::default();
        let calls = Arc::new(Mutex::new(0));
        let (s, c) = (slot.clone(), calls.clone());
        *slot.lock().unwrap() = Some(d.subscribe(move |_| {
            *c.lock().unwrap() += 1;
            s.lock().unwrap().take();
        }));
        d.emit(&text("1"));
        d.emit(&text("2"));
        assert_eq!(*calls.lock().unwrap(), 1);

        let _panics = d.subscribe(|e| assert_ne!(*e, text("boom")));
        let (seen, _s) = recorder(&d);
        d.emit(&text("boom"));
        d.emit(&text("after"));
        assert_eq!(*seen.lock().unwrap(), [text("boom"), text("after")]);
    }

    /// Polls a future that is ready without waiting (the channel is filled and closed).
    fn futures_executor_lite<F: Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(value) => value,
            Poll::Pending => panic!("the stream should be complete"),
        }
    }
}
