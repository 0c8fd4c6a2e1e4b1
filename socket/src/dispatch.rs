//! Delivery of [`Event`]s to callbacks and streams, in order, for both
//! transports: one [`Dispatcher`], generic over its handle type ([`Local`]:
//! `Rc` and `RefCell` in the browser, where callbacks may be `!Send`;
//! [`Threaded`]: `Arc` and `Mutex` natively, where handles cross threads).
//!
//! # The re-entrancy rule (both transports)
//!
//! One delivery runs at a time. It takes each event to every callback, then
//! to every stream, before the next event. An event raised while a delivery
//! runs (a callback that sends, closes or changes the capacity, in the
//! browser synchronously; natively also another thread) is queued behind
//! the events already waiting, and the delivery in progress delivers it
//! after them: never nested inside the current one, never dropped. So no
//! callback runs twice at once, no callback misses an event because it was
//! busy, and every callback and stream sees the same order.
//!
//! * A callback may subscribe and unsubscribe (itself included) while it
//!   runs: a new subscription sees the next event; a dropped one gets no
//!   later event.
//! * A callback that panics misses that event only: the others, and the
//!   socket, go on (natively; a panic in the browser aborts the wasm module).
//! * When no delivery runs, the events are delivered at once, without going
//!   through the queue.
//!
//! Plain Rust, so both flavours are tested natively.

#![cfg_attr(
    not(any(target_arch = "wasm32", feature = "native")),
    allow(dead_code, reason = "no transport in this build: unit-tested only")
)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
#[cfg(not(target_arch = "wasm32"))]
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_channel::mpsc;

use crate::message::Event;
pub use crate::stream::EventStream;

/// The handle types a [`Dispatcher`] (and the transport around it) is
/// built from: how it shares, how it mutates, what a callback may hold.
pub(crate) trait Handles: Sized + 'static {
    /// A callback as kept: `dyn FnMut(&Event)` in a shared cell, plus
    /// `Send` natively.
    type Listener: Clone + 'static;
    /// A shared handle: `Rc` or `Arc`.
    type Shared<T: 'static>: Clone + Deref<Target = T>;
    /// A handle that does not keep its value alive: `rc::Weak` or `sync::Weak`.
    type Weak<T: 'static>: Clone;
    /// Interior mutability: `RefCell` or `Mutex`.
    type Cell<T: 'static>;

    /// Shares `value`.
    fn share<T: 'static>(value: T) -> Self::Shared<T>;
    /// A weak handle to `shared`.
    fn downgrade<T: 'static>(shared: &Self::Shared<T>) -> Self::Weak<T>;
    /// A weak handle to nothing.
    fn dangling<T: 'static>() -> Self::Weak<T>;
    /// The value, unless every strong handle is gone.
    fn upgrade<T: 'static>(weak: &Self::Weak<T>) -> Option<Self::Shared<T>>;
    /// A new cell.
    fn cell<T: 'static>(value: T) -> Self::Cell<T>;
    /// Runs `f` on the cell's value. Never called while the same cell is
    /// in use on this thread (the dispatcher holds no borrow while a
    /// callback runs); a `Mutex` poisoned by a panic stays usable.
    fn with<T: 'static, R>(cell: &Self::Cell<T>, f: impl FnOnce(&mut T) -> R) -> R;
    /// Calls `listener` with `event`, unless it is running already on this
    /// thread (which the queue rules out): a callback never runs inside itself.
    fn call(listener: &Self::Listener, event: &Event);
}

/// The browser's handles: one thread, `!Send` callbacks.
#[cfg_attr(
    not(target_arch = "wasm32"),
    allow(dead_code, reason = "the browser's, unit-tested natively")
)]
pub(crate) enum Local {}

impl Handles for Local {
    type Listener = Rc<RefCell<dyn FnMut(&Event)>>;
    type Shared<T: 'static> = Rc<T>;
    type Weak<T: 'static> = std::rc::Weak<T>;
    type Cell<T: 'static> = RefCell<T>;

    fn share<T: 'static>(value: T) -> Rc<T> {
        Rc::new(value)
    }
    fn downgrade<T: 'static>(shared: &Rc<T>) -> std::rc::Weak<T> {
        Rc::downgrade(shared)
    }
    fn dangling<T: 'static>() -> std::rc::Weak<T> {
        std::rc::Weak::new()
    }
    fn upgrade<T: 'static>(weak: &std::rc::Weak<T>) -> Option<Rc<T>> {
        weak.upgrade()
    }
    fn cell<T: 'static>(value: T) -> RefCell<T> {
        RefCell::new(value)
    }
    fn with<T: 'static, R>(cell: &RefCell<T>, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut cell.borrow_mut())
    }
    fn call(listener: &Self::Listener, event: &Event) {
        if let Ok(mut callback) = listener.try_borrow_mut() {
            callback(event);
        }
    }
}

/// The native transport's handles: `Send + Sync`, callbacks `Send`.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) enum Threaded {}

#[cfg(not(target_arch = "wasm32"))]
impl Handles for Threaded {
    type Listener = Arc<Mutex<dyn FnMut(&Event) + Send>>;
    type Shared<T: 'static> = Arc<T>;
    type Weak<T: 'static> = std::sync::Weak<T>;
    type Cell<T: 'static> = Mutex<T>;

    fn share<T: 'static>(value: T) -> Arc<T> {
        Arc::new(value)
    }
    fn downgrade<T: 'static>(shared: &Arc<T>) -> std::sync::Weak<T> {
        Arc::downgrade(shared)
    }
    fn dangling<T: 'static>() -> std::sync::Weak<T> {
        std::sync::Weak::new()
    }
    fn upgrade<T: 'static>(weak: &std::sync::Weak<T>) -> Option<Arc<T>> {
        weak.upgrade()
    }
    fn cell<T: 'static>(value: T) -> Mutex<T> {
        Mutex::new(value)
    }
    fn with<T: 'static, R>(cell: &Mutex<T>, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut lock(cell))
    }
    fn call(listener: &Self::Listener, event: &Event) {
        // One delivery runs at a time, so this lock is free (a callback
        // never runs inside itself: the queue rules it out).
        (lock(listener))(event);
    }
}

/// The handles of the transport this build has: the browser's on wasm32,
/// the native ones elsewhere.
#[cfg(target_arch = "wasm32")]
pub(crate) type TransportHandles = Local;
/// The handles of the transport this build has: the browser's on wasm32,
/// the native ones elsewhere.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) type TransportHandles = Threaded;

/// Locks a mutex whose holder may have panicked: the data (a list, a
/// callback, the driver) stays usable, and a panicking callback must not
/// stop delivery to the others.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A stream's channel and subscription, when it is a [`crate::Channel`]'s.
type Only = (String, u64);

/// The streams of one socket, each with the subscription it is limited to.
type Streams = Vec<(Option<Only>, mpsc::UnboundedSender<Event>)>;

/// `event` to every stream that wants it; a stream whose receiver is gone
/// is dropped.
fn send_to_streams(streams: &mut Streams, event: &Event) {
    streams.retain(|(only, tx)| {
        let wanted = only.as_ref().is_none_or(|(channel, subscription)| {
            matches!(event, Event::Channel(n) if n.is_for(channel, *subscription))
        });
        // One send (and one clone) site for both kinds of stream.
        if wanted {
            tx.unbounded_send(event.clone()).is_ok()
        } else {
            !tx.is_closed()
        }
    });
}

type Listeners<H> = <H as Handles>::Shared<Vec<(u64, <H as Handles>::Listener)>>;

/// The callbacks and streams of one socket.
pub(crate) struct Dispatcher<H: Handles> {
    state: H::Cell<DispatchState<H>>,
}

struct DispatchState<H: Handles> {
    /// Copy-on-write, so delivering an event clones one handle, not a `Vec`.
    listeners: Listeners<H>,
    next_id: u64,
    /// Each stream, with the channel subscription it is limited to (a
    /// [`crate::Channel`]'s), so that it is not sent a clone of every event.
    streams: Streams,
    /// How an event reaches the streams ([`send_to_streams`]): set by the
    /// first stream, so that an app that never asks for one carries no
    /// code that sends to one (a wasm bundle is smaller by it).
    to_streams: Option<fn(&mut Streams, &Event)>,
    /// Events raised while a delivery runs, for it to deliver next.
    pending: VecDeque<Event>,
    /// Whether a delivery runs.
    delivering: bool,
}

impl<H: Handles> Default for Dispatcher<H> {
    fn default() -> Self {
        Self {
            state: H::cell(DispatchState {
                listeners: H::share(Vec::new()),
                next_id: 0,
                streams: Vec::new(),
                to_streams: None,
                pending: VecDeque::new(),
                delivering: false,
            }),
        }
    }
}

#[cfg_attr(
    not(target_arch = "wasm32"),
    allow(dead_code, reason = "the browser's, unit-tested natively")
)]
impl Dispatcher<Local> {
    /// Registers `callback`; it stays until the returned handle is dropped.
    pub(crate) fn subscribe(
        self: &Rc<Self>,
        callback: impl FnMut(&Event) + 'static,
    ) -> Unsubscribe<Local> {
        Self::add(self, Rc::new(RefCell::new(callback)))
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Dispatcher<Threaded> {
    /// Registers `callback`; it stays until the returned handle is dropped.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        callback: impl FnMut(&Event) + Send + 'static,
    ) -> Unsubscribe<Threaded> {
        Self::add(self, Arc::new(Mutex::new(callback)))
    }
}

impl<H: Handles> Dispatcher<H> {
    fn add(this: &H::Shared<Self>, listener: H::Listener) -> Unsubscribe<H> {
        let id = H::with(&this.state, |state| {
            state.next_id += 1;
            let mut listeners: Vec<_> = state.listeners.iter().cloned().collect();
            listeners.push((state.next_id, listener));
            state.listeners = H::share(listeners);
            state.next_id
        });
        Unsubscribe {
            dispatcher: H::downgrade(this),
            id,
        }
    }

    fn unsubscribe(&self, id: u64) {
        H::with(&self.state, |state| {
            let kept: Vec<_> = state
                .listeners
                .iter()
                .filter(|(other, _)| *other != id)
                .cloned()
                .collect();
            state.listeners = H::share(kept);
        });
    }

    /// A stream of every event from now on; it ends when the dispatcher is dropped.
    pub(crate) fn stream(&self) -> EventStream {
        let (tx, stream) = EventStream::channel();
        H::with(&self.state, |state| {
            state.streams.push((None, tx));
            state.to_streams = Some(send_to_streams);
        });
        stream
    }

    /// A stream of subscription `subscription` to `channel`'s
    /// [`Event::Channel`]s only.
    #[cfg_attr(
        not(any(target_arch = "wasm32", feature = "native")),
        allow(dead_code, reason = "no transport in this build")
    )]
    pub(crate) fn channel_stream(&self, channel: String, subscription: u64) -> EventStream {
        let (tx, stream) = EventStream::channel();
        H::with(&self.state, |state| {
            state.streams.push((Some((channel, subscription)), tx));
            state.to_streams = Some(send_to_streams);
        });
        stream
    }

    /// Delivers `events` to every callback and stream, in order; while a
    /// delivery runs, queues them behind the events it has yet to deliver
    /// (the module's re-entrancy rule).
    pub(crate) fn emit(&self, events: impl IntoIterator<Item = Event>) {
        let mut events = events.into_iter();
        let idle = H::with(&self.state, |state| {
            if state.delivering {
                state.pending.extend(events.by_ref());
                return false;
            }
            state.delivering = true;
            true
        });
        if !idle {
            return;
        }
        // No delivery ran: these go out at once, without the queue.
        for event in events {
            self.deliver(&event);
        }
        while let Some(event) = H::with(&self.state, |state| {
            let next = state.pending.pop_front();
            // Checked and cleared under one borrow: an emit that comes
            // after this sees no delivery and delivers itself.
            state.delivering = next.is_some();
            next
        }) {
            self.deliver(&event);
        }
    }

    /// One event to every callback, then every stream; no borrow of the
    /// state is held while a callback runs.
    fn deliver(&self, event: &Event) {
        let listeners = H::with(&self.state, |state| state.listeners.clone());
        for (_, listener) in listeners.iter() {
            // A callback that panics misses this event only.
            let _ = catch_unwind(AssertUnwindSafe(|| H::call(listener, event)));
        }
        H::with(&self.state, |state| {
            if let Some(send) = state.to_streams {
                send(&mut state.streams, event);
            }
        });
    }
}

/// What a [`Subscription`] holds: the dispatcher (weakly) and the callback's id.
pub(crate) struct Unsubscribe<H: Handles> {
    dispatcher: H::Weak<Dispatcher<H>>,
    id: u64,
}

impl<H: Handles> Drop for Unsubscribe<H> {
    fn drop(&mut self) {
        if let Some(dispatcher) = H::upgrade(&self.dispatcher) {
            dispatcher.unsubscribe(self.id);
        }
    }
}

/// Keeps an `on_event` callback registered; dropping it unsubscribes.
/// Natively it is `Send + Sync` (drop it on any thread).
#[must_use = "the callback is removed when the subscription is dropped"]
pub struct Subscription {
    _callback: Unsubscribe<TransportHandles>,
}

impl Subscription {
    /// A subscription of nothing (a channel whose socket is gone).
    #[cfg_attr(
        not(any(target_arch = "wasm32", feature = "native")),
        allow(dead_code, reason = "no transport in this build")
    )]
    pub(crate) fn none() -> Self {
        Self {
            _callback: Unsubscribe {
                dispatcher: TransportHandles::dangling(),
                id: 0,
            },
        }
    }
}

impl From<Unsubscribe<TransportHandles>> for Subscription {
    fn from(callback: Unsubscribe<TransportHandles>) -> Self {
        Self {
            _callback: callback,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::{Context, Poll};

    use super::*;
    use crate::message::{DropReason, Message};

    fn text(s: &str) -> Event {
        Event::Message(Message::Text(s.into()))
    }

    /// Polls a future that is ready without waiting (the channel is filled and closed).
    fn ready<F: Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(value) => value,
            Poll::Pending => panic!("the stream should be complete"),
        }
    }

    /// The same tests for both handle types: `$handles` is `Local` or
    /// `Threaded`, whose `subscribe` differ only in `Send`.
    macro_rules! on_both_handles {
        ($($(#[$attr:meta])* $name:ident: $handles:ident),* $(,)?) => {$(
            $(#[$attr])*
            mod $name {
                use std::sync::{Arc, Mutex};

                use futures_util::StreamExt;

                use super::*;

                type H = $handles;
                type D = <H as Handles>::Shared<Dispatcher<H>>;

                fn dispatcher() -> D {
                    H::share(Dispatcher::default())
                }

                fn recorder(d: &D) -> (Arc<Mutex<Vec<Event>>>, Unsubscribe<H>) {
                    let seen = Arc::new(Mutex::new(Vec::new()));
                    let sink = seen.clone();
                    let sub = d.subscribe(move |e| sink.lock().unwrap().push(e.clone()));
                    (seen, sub)
                }

                #[test]
                fn every_callback_and_stream_gets_every_event_in_order_until_dropped() {
                    let d = dispatcher();
                    let (a, sa) = recorder(&d);
                    let (b, _sb) = recorder(&d);
                    let stream = d.stream();
                    d.emit([text("1"), text("2")]);
                    let dropped_stream = d.stream();
                    drop(dropped_stream);
                    drop(sa);
                    d.emit([text("3")]);
                    assert_eq!(*a.lock().unwrap(), [text("1"), text("2")]);
                    assert_eq!(*b.lock().unwrap(), [text("1"), text("2"), text("3")]);
                    assert_eq!(
                        H::with(&d.state, |s| s.streams.len()),
                        1,
                        "closed streams are pruned"
                    );
                    drop(d);
                    let got = ready(stream.collect::<Vec<_>>());
                    assert_eq!(got, [text("1"), text("2"), text("3")]);
                }

                #[test]
                fn events_raised_inside_a_callback_reach_every_callback_after_the_current_ones() {
                    let d = dispatcher();
                    let (before, _s1) = recorder(&d);
                    let inner = H::downgrade(&d);
                    let nested = Event::Dropped {
                        message: Message::Text("x".into()),
                        reason: DropReason::Overflow,
                    };
                    let raised = nested.clone();
                    let _s2 = d.subscribe(move |e| {
                        if *e == text("1")
                            && let Some(d) = H::upgrade(&inner)
                        {
                            d.emit([raised.clone()]);
                        }
                    });
                    let (after, _s3) = recorder(&d);
                    let stream = d.stream();
                    d.emit([text("1"), text("2")]);
                    // The nested event happened after both emitted ones:
                    // it comes after them, for everyone.
                    let want = [text("1"), text("2"), nested];
                    assert_eq!(*before.lock().unwrap(), want);
                    assert_eq!(*after.lock().unwrap(), want);
                    drop(d);
                    assert_eq!(ready(stream.collect::<Vec<_>>()), want);
                }

                #[test]
                fn a_callback_may_drop_its_own_subscription_or_subscribe_another() {
                    let d = dispatcher();
                    let slot: Arc<Mutex<Option<Unsubscribe<H>>>> = Arc::default();
                    let calls = Arc::new(Mutex::new(0));
                    let (s, c) = (slot.clone(), calls.clone());
                    *slot.lock().unwrap() = Some(d.subscribe(move |_| {
                        *c.lock().unwrap() += 1;
                        s.lock().unwrap().take();
                    }));
                    d.emit([text("1"), text("2")]);
                    assert_eq!(*calls.lock().unwrap(), 1);

                    // Subscribed during "3": sees "4", not "3".
                    let late: Arc<Mutex<Vec<Event>>> = Arc::default();
                    let keep: Arc<Mutex<Vec<Unsubscribe<H>>>> = Arc::default();
                    let (inner, sink, k) = (H::downgrade(&d), late.clone(), keep.clone());
                    let _adder = d.subscribe(move |e| {
                        if *e == text("3")
                            && let Some(d) = H::upgrade(&inner)
                        {
                            let sink = sink.clone();
                            let sub = d.subscribe(move |e| sink.lock().unwrap().push(e.clone()));
                            k.lock().unwrap().push(sub);
                        }
                    });
                    d.emit([text("3"), text("4")]);
                    assert_eq!(*late.lock().unwrap(), [text("4")]);
                }

                #[test]
                fn a_channel_stream_gets_its_own_subscription_s_events_only() {
                    use crate::channel::{ChannelEvent, ChannelNotice};

                    let notice = |channel: &str, subscription| {
                        let event = ChannelEvent::Gap { from: 1, to: 2 };
                        Event::Channel(ChannelNotice::new(channel.into(), subscription, event))
                    };
                    let d = dispatcher();
                    let mine = d.channel_stream("a".into(), 2);
                    let all = d.stream();
                    d.emit([text("1"), notice("a", 1), notice("a", 2), notice("b", 2)]);
                    drop(d);
                    assert_eq!(ready(mine.collect::<Vec<_>>()), [notice("a", 2)]);
                    assert_eq!(ready(all.collect::<Vec<_>>()).len(), 4);
                }

                #[test]
                fn a_panicking_callback_misses_that_event_only_and_stops_no_other() {
                    let d = dispatcher();
                    let _panics = d.subscribe(|e| assert_ne!(*e, text("boom")));
                    let (seen, _s) = recorder(&d);
                    d.emit([text("boom")]);
                    d.emit([text("after")]);
                    assert_eq!(*seen.lock().unwrap(), [text("boom"), text("after")]);
                    assert!(!H::with(&d.state, |s| s.delivering));
                }
            }
        )*};
    }

    on_both_handles!(
        local: Local,
        #[cfg(not(target_arch = "wasm32"))]
        threaded: Threaded,
    );
}
