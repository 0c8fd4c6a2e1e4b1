//! The native transport (feature `native`, not on wasm32): the browser
//! [`Socket`]'s API over tokio-tungstenite, running the same pure
//! [`Driver`], so Rust services, command-line tools, load generators and
//! tests get the same rules (queue, flush on open, backoff, heartbeat,
//! reliable mode) as the browser.
//!
//! # How it runs
//!
//! Each socket has one tokio task (`actor.rs`) that owns the tungstenite
//! stream and the timers (`tokio::time`) and performs the driver's
//! [`Effect`](crate::driver::Effect)s in order. The driver itself sits in a
//! `std::sync::Mutex` shared with the handles: a call that must answer at
//! once ([`Socket::send`] gives its [`SendOutcome`]) locks it briefly, never
//! across an `.await`, and wakes the task to perform what the call queued.
//! Transport inputs (open, frames, close, timer fires) are fed by the task
//! only, so they reach the driver in the order they happened.
//!
//! * Handles are `Send + Sync`: clone them into other tasks and threads.
//! * [`Socket::new`] needs a tokio runtime (multi-threaded or not): it
//!   spawns the task there.
//! * Callbacks ([`Socket::on_event`]) and the open hook run on the socket's
//!   task, one event at a time, in order: keep them short and never block
//!   there (hand work to a channel). They may use the socket (send,
//!   close...); what that raises comes after the current event.
//! * Time is monotonic ([`std::time::Instant`]), so wall-clock jumps do not
//!   fire the heartbeat or the backoff early.
//! * There is no network-online or page-visibility signal natively: those
//!   driver inputs are never fed, and retries follow the backoff alone.
//! * Token mode: the provider's future runs on the socket's task, one at a
//!   time (a newer fetch drops an older one, whose answer the driver would
//!   ignore); the token goes in an `Authorization: Bearer` header; a provider
//!   that panics counts as a failed call.
//! * A write that fails (the connection broke) hands the message back to the
//!   driver: it goes back to the head of the queue, for the next connection.
//! * Dropping the last handle (a [`WeakSocket`] does not count) closes the
//!   connection (a close frame with no code) and ends the task; event streams end.
//! * `wss://` needs the feature `native-rustls`: rustls on ring (named, not
//!   left to the process default; `tls.rs`), trusting the webpki roots
//!   (Mozilla's list, built in; the system's store is not read) and any
//!   root added with [`Config::with_root_certificate`] (a private CA's).
//!   Without the feature a `wss` URL fails each attempt with
//!   [`Event::Error`] ([`TransportError::Connect`]). A root that is not a
//!   certificate is refused by [`Socket::new`]
//!   ([`Error::InvalidRootCertificate`]). A server certificate that no
//!   trusted root vouches for fails the attempt with
//!   [`TransportError::Socket`], whose cause is `tungstenite::Error::Io`
//!   holding rustls's `Error::InvalidCertificate` (`UnknownIssuer` for a
//!   private CA not added), and is retried with the backoff like any failed
//!   handshake. Tested end to end through the testbed's TLS front
//!   (`tests/native/wss.rs`).
//! * A path that dies silently (no FIN, no RST: a NAT entry or a route gone)
//!   looks open to TCP; only the heartbeat ([`Config::with_heartbeat`]) can
//!   tell, and closes with 1006 and the reason `heartbeat timeout`
//!   (`tests/native/heartbeat.rs`, through the fault proxy's silence).

mod actor;
#[cfg(feature = "native-rustls")]
mod tls;

use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::Error;
use crate::channel::{
    Channel, PresenceError, Publish, PublishError, RawJson, StreamPosition, SubscribeError,
};
use crate::config::Config;
use crate::dispatch::{Dispatcher, EventStream, Subscription, Threaded, lock};
use crate::driver::{Driver, Query};
#[cfg(doc)]
use crate::message::DropReason;
#[cfg(doc)]
use crate::message::TransportError;
use crate::message::{Event, Message, SendError, SendOutcome, State, Stats};
use crate::transport::WeakSocket;

type OpenHook = Arc<dyn Fn(&Socket) + Send + Sync>;

/// What the handles and the task share.
struct Core {
    driver: Mutex<Driver>,
    on_open: Mutex<Option<OpenHook>>,
    dispatcher: Arc<Dispatcher<Threaded>>,
    origin: Instant,
    /// How `wss://` connects: with `native-rustls`, rustls on ring trusting
    /// the webpki roots and the config's extra roots (`tls.rs`); without
    /// it, none (a `wss` URL cannot be opened).
    connector: Option<Connector>,
}

impl Core {
    /// Milliseconds since the socket was made, from a monotonic clock.
    fn now(&self) -> f64 {
        self.origin.elapsed().as_secs_f64() * 1000.0
    }

    /// The driver, for one short call; never held across an `.await`.
    fn driver(&self) -> MutexGuard<'_, Driver> {
        lock(&self.driver)
    }
}

/// What the handles own: when the last goes, the wake channel closes and the
/// task closes the connection and ends.
pub(crate) struct Shared {
    core: Arc<Core>,
    wake: mpsc::Sender<()>,
    /// [`Socket::tab_id`]: random per socket.
    tab_id: u32,
}

impl Shared {
    /// Tells the task that the driver has effects to perform.
    fn wake(&self) {
        // Full: a wake is pending already, and one pump performs every effect.
        let _ = self.wake.try_send(());
    }
}

/// A buffered, reconnecting WebSocket on a tokio runtime. Cloning gives
/// another handle to the same socket; when the last handle is dropped the
/// connection is closed and its task ends. See the crate docs, section "Native".
#[derive(Clone)]
pub struct Socket {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("url", &self.url())
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// A different seed for each socket, so that clients that lost the same
/// server do not retry in lockstep: the standard library's randomly keyed
/// hasher (keyed once per process, then incremented), plus the time.
fn seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.finish()
}

impl Socket {
    /// Creates the wrapper and starts connecting to `config.url`, on the
    /// current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] unless the URL is a valid `ws:` or `wss:` URL
    /// with a host; [`Error::InvalidRootCertificate`] (feature
    /// `native-rustls`) when a root given to
    /// [`Config::with_root_certificate`] is not a certificate;
    /// [`Error::NoRuntime`] when called outside a tokio runtime.
    pub fn new(config: Config) -> Result<Self, Error> {
        let invalid = || Error::InvalidUrl(config.url.clone());
        let request = config
            .connect_url()
            .into_client_request()
            .map_err(|_| invalid())?;
        if !matches!(request.uri().scheme_str(), Some("ws" | "wss")) {
            return Err(invalid());
        }
        #[cfg(feature = "native-rustls")]
        let connector = Some(tls::connector(&config.root_certificates)?);
        #[cfg(not(feature = "native-rustls"))]
        let connector = None;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let core = Arc::new(Core {
            driver: Mutex::new(Driver::new(config, seed())),
            on_open: Mutex::new(None),
            dispatcher: Arc::default(),
            origin: Instant::now(),
            connector,
        });
        // Token expiries are wall-clock times; the driver's clock is monotonic.
        let epoch_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        let now = core.now();
        core.driver().set_wall_clock_offset_ms(epoch_ms - now);
        core.driver().start(now);
        let (wake, woken) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            core: core.clone(),
            wake,
            tab_id: crate::tabs::tab_id_from(seed()),
        });
        runtime.spawn(actor::run(core, Arc::downgrade(&shared), woken));
        Ok(Self { shared })
    }

    fn core(&self) -> &Core {
        &self.shared.core
    }

    /// Sends now if open; otherwise queues for the next open.
    ///
    /// `Sent` means the frame was handed to the socket's task, which writes
    /// it next; should the connection break first, the message goes back to
    /// the head of the queue for the next connection (it is never lost
    /// silently, and never reported as an error).
    ///
    /// # Errors
    ///
    /// Every error gives the message back: [`SendError::QueueFull`],
    /// [`SendError::TooLarge`], [`SendError::Closed`] after [`Socket::close`]
    /// (or when the wrapper gave up; call [`Socket::reconnect`]),
    /// [`SendError::BinaryNotReliable`] for binary in reliable mode.
    pub fn send(&self, message: impl Into<Message>) -> Result<SendOutcome, SendError> {
        let result = self.core().driver().send(message);
        self.shared.wake();
        result
    }

    /// Closes for good with `code` and `reason`: no reconnect, timers
    /// cancelled, later sends fail with [`SendError::Closed`]. Queued
    /// messages stay queued (take them with [`Socket::take_queued`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCloseCode`] unless `code` is 1000 or 3000-4999 (what
    /// browsers allow; the same rule natively), [`Error::ReasonTooLong`]
    /// over 123 bytes.
    pub fn close(&self, code: u16, reason: &str) -> Result<(), Error> {
        let now = self.core().now();
        let result = self.core().driver().close(code, reason, now);
        self.shared.wake();
        result
    }

    /// Reconnects now, with the attempt counter reset: after a close by the
    /// application or the policy, after the attempts ran out, or to replace a
    /// live connection.
    pub fn reconnect(&self) {
        let now = self.core().now();
        self.core().driver().reconnect(now);
        self.shared.wake();
    }

    /// Whether two handles are the same socket.
    pub fn ptr_eq(&self, other: &Socket) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.core().driver().state()
    }

    /// The URL.
    pub fn url(&self) -> String {
        self.core().driver().config().url.clone()
    }

    /// A random id of this socket (in the browser: of this tab), nonzero
    /// and below 2^31, to tag requests whose replies are for it alone
    /// (with [`Config::with_shared_across_tabs`] every tab receives every
    /// message). Natively there are no tabs: sharing is a browser feature,
    /// a native socket always has a connection of its own
    /// ([`crate::TabRole::Alone`]), and this is just a per-socket id.
    pub fn tab_id(&self) -> u32 {
        self.shared.tab_id
    }

    /// Counters and queue figures.
    pub fn stats(&self) -> Stats {
        let now = self.core().now();
        self.core().driver().stats(now)
    }

    /// Messages waiting in the queue.
    pub fn queue_len(&self) -> usize {
        self.core().driver().queue_len()
    }

    /// Changes the queue capacity; messages that no longer fit are dropped
    /// newest first, each reported with [`Event::Dropped`]
    /// ([`DropReason::CapacityLowered`]).
    pub fn set_queue_capacity(&self, capacity: usize) {
        self.core().driver().set_queue_capacity(capacity);
        self.shared.wake();
    }

    /// Takes every queued message back out, oldest first.
    pub fn take_queued(&self) -> Vec<Message> {
        self.core().driver().take_queued()
    }

    /// Empties the queue; returns how many messages it held.
    pub fn clear_queue(&self) -> usize {
        self.take_queued().len()
    }

    /// Runs `hook` on every open, before the queue is flushed (to send an
    /// authentication message first, say). What the hook sends goes out
    /// ahead of the queued messages, even when the queue is full. It runs
    /// on the socket's task: use the `&Socket` it is given rather than
    /// capturing a clone (a cycle that keeps the socket alive).
    pub fn set_on_open(&self, hook: impl Fn(&Socket) + Send + Sync + 'static) {
        *lock(&self.core().on_open) = Some(Arc::new(hook));
        self.core().driver().set_open_hook(true);
    }

    /// Calls `callback` with every event until the subscription is dropped.
    ///
    /// Callbacks run on the socket's task, in order, one event at a time;
    /// they may use the socket (send, close...), and the events that raises
    /// come after the current one, to every callback. A callback that holds
    /// a clone of this `Socket` keeps it alive (a cycle): hold a
    /// [`WeakSocket`] there instead. A callback that panics misses that
    /// event only.
    pub fn on_event(&self, callback: impl FnMut(&Event) + Send + 'static) -> Subscription {
        self.core().dispatcher.subscribe(callback).into()
    }

    /// Every event from now on as a `Stream`; it ends when the socket is dropped.
    pub fn events(&self) -> EventStream {
        self.core().dispatcher.stream()
    }

    /// A handle that does not keep the socket alive.
    pub fn downgrade(&self) -> WeakSocket {
        WeakSocket::new(&self.shared)
    }

    /// The handle of `shared` (for [`WeakSocket::upgrade`]).
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
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
    /// [`Channel`] of that name.
    pub fn subscribe(&self, channel: &str) -> Result<Channel, SubscribeError> {
        self.subscribe_from(channel, None)
    }

    /// [`Socket::subscribe`] from a position the application kept (from
    /// [`Channel::position`], across a restart say): what was published
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
        // The first stream of the handle is made under the driver's lock:
        // no event of the subscription can be emitted before it exists.
        let mut driver = self.core().driver();
        let serial = driver.subscribe(channel, since)?;
        let first = self.channel_stream(channel.to_owned(), serial);
        drop(driver);
        self.shared.wake();
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
    /// carries an id of 128 random bits, so that a retry after a reconnect
    /// is published once. The [`Publish`] resolves to its offset.
    ///
    /// # Errors
    ///
    /// [`PublishError::BadChannel`], [`PublishError::QueueFull`],
    /// [`PublishError::TooLarge`], [`PublishError::Closed`] after
    /// [`Socket::close`].
    pub fn publish(&self, channel: &str, data: RawJson) -> Result<Publish, PublishError> {
        let (tx, rx) = futures_channel::oneshot::channel();
        let id = (u128::from(seed()) << 64) | u128::from(seed());
        // Nobody waits when the `Publish` was dropped: fine.
        let answer = Box::new(move |result| drop(tx.send(result)));
        self.core().driver().publish(channel, data, id, answer)?;
        self.shared.wake();
        Ok(Publish::new(rx))
    }

    pub(crate) fn unsubscribe(&self, channel: &str, subscription: u64) {
        self.core().driver().unsubscribe(channel, subscription);
        self.shared.wake();
    }

    pub(crate) fn channel_position(
        &self,
        channel: &str,
        subscription: u64,
    ) -> Option<StreamPosition> {
        self.core().driver().channel_position(channel, subscription)
    }

    pub(crate) fn channel_stream(&self, channel: String, subscription: u64) -> EventStream {
        self.core().dispatcher.channel_stream(channel, subscription)
    }

    pub(crate) fn presence_query(&self, channel: &str, query: Query) -> Result<(), PresenceError> {
        self.core().driver().query(channel, query)?;
        self.shared.wake();
        Ok(())
    }

    /// The subscription's events from now on, then its presence followed
    /// (the answer cannot come before the stream exists).
    pub(crate) fn follow_presence(&self, channel: String, subscription: u64) -> EventStream {
        let stream = self.channel_stream(channel.clone(), subscription);
        self.core().driver().follow_presence(&channel, subscription);
        self.shared.wake();
        stream
    }
}

/// The handles cross threads, so `tokio::spawn` works with them.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_sync::<Socket>();
    send_sync::<WeakSocket>();
    send_sync::<Subscription>();
    send_sync::<Channel>();
    send::<Publish>();
    send::<EventStream>();
};
