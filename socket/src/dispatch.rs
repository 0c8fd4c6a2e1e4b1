//! Delivery of [`Event`]s to callbacks and streams, in order, re-entrancy safe.
//!
//! A callback may act on the socket (send, close, change the capacity), and
//! that may raise new events while the current one is being delivered. Those
//! are queued behind the events already waiting and delivered to every
//! callback: no callback misses an event because it was busy, and every
//! callback sees the same order.
//! Plain Rust, so it is tested natively.
#![cfg_attr(
    not(target_arch = "wasm32"),
    allow(dead_code, reason = "used by the wasm web layer, unit-tested natively")
)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

use futures_channel::mpsc;

use crate::message::Event;
pub use crate::stream::EventStream;

type Listener = Rc<RefCell<dyn FnMut(&Event)>>;

/// The callbacks and streams of one socket.
#[derive(Default)]
pub(crate) struct Dispatcher {
    state: RefCell<DispatchState>,
}

#[derive(Default)]
struct DispatchState {
    /// Copy-on-write, so delivering an event clones one `Rc`, not a `Vec`.
    listeners: Rc<Vec<(u64, Listener)>>,
    next_id: u64,
    streams: Vec<mpsc::UnboundedSender<Event>>,
    pending: VecDeque<Event>,
    delivering: bool,
}

impl Dispatcher {
    /// Registers `callback`; it stays until the returned [`Subscription`] is dropped.
    pub(crate) fn subscribe(
        self: &Rc<Self>,
        callback: impl FnMut(&Event) + 'static,
    ) -> Subscription {
        let mut state = self.state.borrow_mut();
        state.next_id += 1;
        let id = state.next_id;
        let mut listeners: Vec<_> = state.listeners.iter().cloned().collect();
        listeners.push((id, Rc::new(RefCell::new(callback))));
        state.listeners = Rc::new(listeners);
        Subscription {
            dispatcher: Rc::downgrade(self),
            id,
        }
    }

    fn unsubscribe(&self, id: u64) {
        let mut state = self.state.borrow_mut();
        let kept: Vec<_> = state
            .listeners
            .iter()
            .filter(|(other, _)| *other != id)
            .cloned()
            .collect();
        state.listeners = Rc::new(kept);
    }

    /// A stream of every event from now on; it ends when the dispatcher is dropped.
    pub(crate) fn stream(&self) -> EventStream {
        let (tx, stream) = EventStream::channel();
        self.state.borrow_mut().streams.push(tx);
        stream
    }

    /// Delivers `events` to every callback and stream, in order. Called from
    /// inside a callback, it queues them behind the event being delivered.
    pub(crate) fn emit(&self, events: impl IntoIterator<Item = Event>) {
        {
            let mut state = self.state.borrow_mut();
            state.pending.extend(events);
            if state.delivering || state.pending.is_empty() {
                return;
            }
            state.delivering = true;
        }
        loop {
            let (event, listeners) = {
                let mut state = self.state.borrow_mut();
                let Some(event) = state.pending.pop_front() else {
                    state.delivering = false;
                    return;
                };
                (event, state.listeners.clone())
            };
            for (_, listener) in listeners.iter() {
                // Never busy: nested emits only queue, so no callback runs twice at once.
                if let Ok(mut listener) = listener.try_borrow_mut() {
                    listener(&event);
                }
            }
            let mut state = self.state.borrow_mut();
            state
                .streams
                .retain(|tx| tx.unbounded_send(event.clone()).is_ok());
        }
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
    use crate::message::{DropReason, Message};

    fn text(s: &str) -> Event {
        Event::Message(Message::Text(s.into()))
    }

    fn recorder(d: &Rc<Dispatcher>) -> (Rc<RefCell<Vec<Event>>>, Subscription) {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let sink = seen.clone();
        let sub = d.subscribe(move |e| sink.borrow_mut().push(e.clone()));
        (seen, sub)
    }

    #[test]
    fn every_callback_gets_every_event_in_order() {
        let d = Rc::new(Dispatcher::default());
        let (a, _sa) = recorder(&d);
        let (b, _sb) = recorder(&d);
        d.emit([text("1"), text("2")]);
        d.emit([text("3")]);
        let want = vec![text("1"), text("2"), text("3")];
        assert_eq!(*a.borrow(), want);
        assert_eq!(*b.borrow(), want);
    }

    #[test]
    fn events_raised_inside_a_callback_reach_every_callback_after_the_current_one() {
        let d = Rc::new(Dispatcher::default());
        let (before, _s1) = recorder(&d);
        let inner = Rc::downgrade(&d);
        let _s2 = d.subscribe(move |e| {
            if *e == text("1")
                && let Some(d) = inner.upgrade()
            {
                d.emit([Event::Dropped {
                    message: Message::Text("x".into()),
                    reason: DropReason::Overflow,
                }]);
            }
        });
        let (after, _s3) = recorder(&d);
        d.emit([text("1"), text("2")]);
        let dropped = Event::Dropped {
            message: Message::Text("x".into()),
            reason: DropReason::Overflow,
        };
        // The nested event happened after both emitted ones: it comes after them, for everyone.
        let want = vec![text("1"), text("2"), dropped];
        assert_eq!(*before.borrow(), want);
        assert_eq!(*after.borrow(), want);
    }

    #[test]
    fn dropping_the_subscription_unsubscribes() {
        let d = Rc::new(Dispatcher::default());
        let (seen, sub) = recorder(&d);
        d.emit([text("1")]);
        drop(sub);
        d.emit([text("2")]);
        assert_eq!(*seen.borrow(), vec![text("1")]);
        // A callback may drop its own subscription while it runs.
        let slot: Rc<RefCell<Option<Subscription>>> = Rc::default();
        let calls = Rc::new(RefCell::new(0));
        let (s, c) = (slot.clone(), calls.clone());
        *slot.borrow_mut() = Some(d.subscribe(move |_| {
            *c.borrow_mut() += 1;
            s.borrow_mut().take();
        }));
        d.emit([text("3"), text("4")]);
        assert_eq!(*calls.borrow(), 1);
    }

    #[test]
    fn streams_get_every_event_and_end_with_the_dispatcher() {
        let d = Rc::new(Dispatcher::default());
        let stream = d.stream();
        d.emit([text("1"), text("2")]);
        let dropped_stream = d.stream();
        drop(dropped_stream);
        d.emit([text("3")]);
        assert_eq!(
            d.state.borrow().streams.len(),
            1,
            "closed streams are pruned"
        );
        drop(d);
        let got = futures_executor_lite(stream.collect::<Vec<_>>());
        assert_eq!(got, vec![text("1"), text("2"), text("3")]);
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
