//! The browser transport: [`Socket`] over `web_sys::WebSocket`, running the
//! runner (the [`Driver`](crate::Driver), and the tab coordinator when
//! sharing) and performing its steps. It holds no rule of its own: what to
//! send, queue, retry or report is the driver's, and how tabs share is the
//! runner's. No public method asks whether the socket shares.
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | the public [`Socket`] and [`WeakSocket`]: user calls go to the runner, then the pump runs |
//! | `glue.rs` | the pump: inputs to the runner, its steps to the browser, one at a time and in order |
//! | `live.rs` | one browser socket and its callbacks |
//! | `timers.rs` | `setTimeout`/`setInterval` as owned values, the driver's timer slots |
//! | `hooks.rs` | the window's `online`, `offline` and `visibilitychange` listeners |
//! | `tabs_io.rs` | the Web Lock, the `BroadcastChannel`, the heartbeat interval, `pagehide` |
//!
//! With [`Config::with_shared_across_tabs`] a [`Socket`] is a tab: its
//! sends go through the coordinator (to the leader tab), and its driver
//! runs only while this tab leads (or when it goes alone). Sharing changes
//! a few calls: [`Socket::close`] detaches this tab (the leader hands the
//! connection over, the last tab closes it) and cannot be undone;
//! [`Socket::reconnect`] acts only in the leader; the queue
//! ([`Socket::queue_len`], the stats) is this tab's unconfirmed messages,
//! [`Socket::take_queued`] gives back what [`Socket::close`] could not
//! hand over, and [`Socket::set_queue_capacity`] does not apply to it; the
//! open hook runs only if the tab goes alone. A follower hears the shared
//! connection's state ([`Event::StateChanged`](crate::Event::StateChanged),
//! and [`Event::Open`](crate::Event::Open) when it opens), not the leader's
//! transport details (`Close` codes, `Error`s).
//!
//! In token mode the provider's future (`!Send`: it may hold JS values) runs
//! with `spawn_local`, reporting through a `Weak`, and the token goes in the
//! URL's query (`?token=`): browsers cannot set headers on a WebSocket.
//!
//! Ownership rules that keep it leak-free:
//! * every JS callback is a `Closure` owned by the value that registered it
//!   (`Live`, `Timeout`, `WindowHooks`); dropping it unregisters the callback,
//!   so nothing is `forget`-ed and nothing outlives the wrapper;
//! * callbacks hold a `Weak` to the socket's state, so they never keep it
//!   alive: dropping the last [`Socket`] handle drops it all;
//! * no application code runs while the driver is borrowed (see `glue.rs`).

mod glue;
mod hooks;
mod live;
mod tabs_io;
mod timers;

use std::rc::Rc;

#[cfg(feature = "yew")]
pub(crate) use timers::Interval;

use crate::Error;
use crate::channel::{
    Channel, PresenceError, Publish, PublishError, RawJson, StreamPosition, SubscribeError,
};
use crate::config::Config;
use crate::dispatch::{EventStream, Subscription};
use crate::driver::Query;
use crate::message::{Event, Message, SendError, SendOutcome, State, Stats};
use crate::transport::WeakSocket;
pub(crate) use glue::Shared;
use glue::now_ms;

/// A buffered, reconnecting WebSocket. Cloning gives another handle to the
/// same socket; when the last handle is dropped the socket is closed and every
/// listener and timer removed.
#[derive(Clone)]
pub struct Socket {
    shared: Rc<Shared>,
}

impl Socket {
    /// Creates the wrapper and starts connecting to `config.url`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] unless the URL is a valid `ws:` or `wss:` URL;
    /// [`Error::NoWindow`] outside a browser window.
    pub fn new(config: Config) -> Result<Self, Error> {
        let parsed =
            web_sys::Url::new(&config.url).map_err(|_| Error::InvalidUrl(config.url.clone()))?;
        if !matches!(parsed.protocol().as_str(), "ws:" | "wss:") {
            return Err(Error::InvalidUrl(config.url));
        }
        if web_sys::window().is_none() {
            return Err(Error::NoWindow);
        }
        Ok(Self {
            shared: Shared::start(config),
        })
    }

    /// Sends now if open; otherwise queues for the next open.
    ///
    /// [`SendOutcome::Sent`] means the frame is handed to the browser socket
    /// (in order, behind anything the socket is busy with). Should the socket
    /// turn out to be closing, the message is not lost: it goes back to the
    /// head of the queue, ahead of later sends, for the next connection.
    ///
    /// # Errors
    ///
    /// Every error gives the message back: [`SendError::QueueFull`],
    /// [`SendError::TooLarge`], [`SendError::Closed`] after [`Socket::close`]
    /// (or when the wrapper gave up; call [`Socket::reconnect`]), and
    /// [`SendError::BinaryNotReliable`] for binary in reliable mode.
    pub fn send(&self, message: impl Into<Message>) -> Result<SendOutcome, SendError> {
        let result = self.shared.runner.borrow_mut().send(message.into());
        self.shared.pump();
        result
    }

    /// Closes for good with `code` and `reason`: no reconnect, timers
    /// cancelled, later sends fail with [`SendError::Closed`]. Queued
    /// messages stay queued (take them with [`Socket::take_queued`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCloseCode`] unless `code` is 1000 or 3000-4999 (what
    /// browsers allow), [`Error::ReasonTooLong`] over 123 bytes.
    pub fn close(&self, code: u16, reason: &str) -> Result<(), Error> {
        let result = self
            .shared
            .runner
            .borrow_mut()
            .close(code, reason, now_ms());
        self.shared.pump();
        result
    }

    /// Reconnects now, with the attempt counter reset: after a close by the
    /// application or the policy, after the attempts ran out, or to replace a
    /// live connection.
    pub fn reconnect(&self) {
        self.shared.runner.borrow_mut().reconnect(now_ms());
        self.shared.pump();
    }

    /// Whether two handles are the same socket.
    pub fn ptr_eq(&self, other: &Socket) -> bool {
        Rc::ptr_eq(&self.shared, &other.shared)
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.shared.runner.borrow().state()
    }

    /// A random id of this tab (of this socket), nonzero and below 2^31.
    ///
    /// With [`Config::with_shared_across_tabs`] every inbound message
    /// reaches every tab: an app that wants the replies of one tab tags its
    /// requests with it (the console puts it in the high half of its echo
    /// ids) and keeps the replies that carry its own.
    pub fn tab_id(&self) -> u32 {
        self.shared.tab_id
    }

    /// The URL.
    pub fn url(&self) -> String {
        self.shared.runner.borrow().config().url.clone()
    }

    /// Counters and queue figures.
    pub fn stats(&self) -> Stats {
        self.shared.runner.borrow().stats(now_ms())
    }

    /// Messages waiting in the queue.
    pub fn queue_len(&self) -> usize {
        self.shared.runner.borrow().queue_len()
    }

    /// Changes the queue capacity; messages that no longer fit are dropped
    /// newest first, each reported with [`Event::Dropped`].
    pub fn set_queue_capacity(&self, capacity: usize) {
        self.shared.runner.borrow_mut().set_queue_capacity(capacity);
        self.shared.pump();
    }

    /// Takes every queued message back out, oldest first.
    pub fn take_queued(&self) -> Vec<Message> {
        self.shared.runner.borrow_mut().take_queued()
    }

    /// Empties the queue; returns how many messages it held.
    pub fn clear_queue(&self) -> usize {
        self.take_queued().len()
    }

    /// Runs `hook` on every open, before the queue is flushed (to send an
    /// authentication message first, say). What the hook sends goes out
    /// ahead of the queued messages, even when the queue is full. Use the
    /// `&Socket` it is given rather than capturing a clone (a cycle).
    pub fn set_on_open(&self, hook: impl Fn(&Socket) + 'static) {
        *self.shared.open_hook.borrow_mut() = Some(Rc::new(hook));
        // Sharing across tabs: the hook runs only if the tab goes alone.
        self.shared.runner.borrow_mut().set_open_hook(true);
    }

    /// Calls `callback` with every event until the subscription is dropped.
    ///
    /// Callbacks may use the socket (send, close...); events that raises are
    /// delivered after the current one, to every callback, in order. A
    /// callback that holds a clone of this `Socket` keeps it alive (a cycle):
    /// hold a [`WeakSocket`] there instead.
    pub fn on_event(&self, callback: impl FnMut(&Event) + 'static) -> Subscription {
        self.shared.dispatcher.subscribe(callback).into()
    }

    /// Every event from now on as a `Stream`; it ends when the socket is dropped.
    pub fn events(&self) -> EventStream {
        self.shared.dispatcher.stream()
    }

    /// A handle that does not keep the socket alive.
    pub fn downgrade(&self) -> WeakSocket {
        WeakSocket::new(&self.shared)
    }

    /// The handle of `shared` (for [`WeakSocket::upgrade`]).
    pub(crate) fn from_shared(shared: Rc<Shared>) -> Self {
        Self { shared }
    }

    /// Subscribes to `channel` (`namespace:name`, or a bare name): the
    /// `subscribe` goes out once the connection is ready (at once if it is),
    /// and again after every reconnect with the last position delivered.
    /// Its events come on the handle; dropping it unsubscribes.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::BadChannel`] for a name the server would refuse,
    /// [`SubscribeError::AlreadySubscribed`] when this socket holds a
    /// [`Channel`] of that name, While the socket shares its
    /// connection across tabs, the leader tab holds one server
    /// subscription per channel for all tabs; this tab's handle sees each
    /// publication once, in order (see the crate docs).
    pub fn subscribe(&self, channel: &str) -> Result<Channel, SubscribeError> {
        self.subscribe_from(channel, None)
    }

    /// [`Socket::subscribe`] from a position the application kept (from
    /// [`Channel::position`], across a page reload say): what was published
    /// after `offset` in `epoch` comes first, or a gap or reset says why not.
    ///
    /// # Errors
    ///
    /// As [`Socket::subscribe`].
    pub fn subscribe_since(
        &self,
        channel: &str,
        epoch: impl Into<String>,
        offset: u64,
    ) -> Result<Channel, SubscribeError> {
        let since = StreamPosition {
            epoch: epoch.into(),
            offset,
        };
        self.subscribe_from(channel, Some(since))
    }

    fn subscribe_from(
        &self,
        channel: &str,
        since: Option<StreamPosition>,
    ) -> Result<Channel, SubscribeError> {
        let serial = self.shared.runner.borrow_mut().subscribe(channel, since)?;
        let first = self.channel_stream(channel.to_owned(), serial);
        self.shared.pump();
        Ok(Channel::new(
            channel.to_owned(),
            serial,
            self.downgrade(),
            first,
        ))
    }

    /// Publishes `data` (any JSON value) to `channel`: written now if the
    /// connection is ready, else when it is, within the queue's bounds
    /// (pending publishes count against them, as queued sends do). It
    /// carries an id of 128 random bits (`crypto.getRandomValues`), so that
    /// a retry after a reconnect is published once. The [`Publish`]
    /// resolves to its offset.
    ///
    /// # Errors
    ///
    /// [`PublishError::BadChannel`], [`PublishError::QueueFull`],
    /// [`PublishError::TooLarge`], [`PublishError::Closed`] after
    /// [`Socket::close`]. While sharing, the publish goes through the leader
    /// tab (again to the next one after a handoff, with the same id) and
    /// resolves here.
    pub fn publish(&self, channel: &str, data: RawJson) -> Result<Publish, PublishError> {
        let (tx, rx) = futures_channel::oneshot::channel();
        let id = glue::random_id();
        // Nobody waits when the `Publish` was dropped: fine.
        let answer = Box::new(move |result| drop(tx.send(result)));
        self.shared
            .runner
            .borrow_mut()
            .publish(channel, data, id, answer)?;
        self.shared.pump();
        Ok(Publish::new(rx))
    }

    pub(crate) fn unsubscribe(&self, channel: &str, subscription: u64) {
        self.shared
            .runner
            .borrow_mut()
            .unsubscribe(channel, subscription);
        self.shared.pump();
    }

    pub(crate) fn channel_position(
        &self,
        channel: &str,
        subscription: u64,
    ) -> Option<StreamPosition> {
        self.shared
            .runner
            .borrow()
            .channel_position(channel, subscription)
    }

    pub(crate) fn channel_stream(&self, channel: String, subscription: u64) -> EventStream {
        self.shared.dispatcher.channel_stream(channel, subscription)
    }

    pub(crate) fn presence_query(&self, channel: &str, query: Query) -> Result<(), PresenceError> {
        self.shared
            .runner
            .borrow_mut()
            .presence_query(channel, query)?;
        self.shared.pump();
        Ok(())
    }

    /// The subscription's events from now on, then its presence followed
    /// (the answer cannot come before the stream exists).
    pub(crate) fn follow_presence(&self, channel: String, subscription: u64) -> EventStream {
        let stream = self.channel_stream(channel.clone(), subscription);
        self.shared
            .runner
            .borrow_mut()
            .follow_presence(&channel, subscription);
        self.shared.pump();
        stream
    }
}
