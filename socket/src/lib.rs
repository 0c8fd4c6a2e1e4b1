//! A WebSocket for Rust/wasm browser apps that never drops a send silently.
//!
//! While the socket is not open, [`Socket::send`] queues into a bounded FIFO
//! (capacity 100 by default) and says so; the queue is flushed in order when
//! the socket opens, before anything sent afterwards; after a close the
//! application did not ask for, it reconnects with exponential backoff and
//! full jitter. Every refusal hands the message back in the error.
//!
//! # Defaults
//!
//! | option ([`Config`]) | default |
//! |---|---|
//! | `url` | required: a `ws:` or `wss:` URL |
//! | `queue_capacity` | 100 messages (0: never queue); changeable at run time |
//! | `queue_max_bytes` | none |
//! | `overflow` | [`Overflow::RejectNew`] ([`Overflow::DropOldest`] reports each drop) |
//! | `backoff` | 1 s initial, factor 2, 30 s cap, full jitter, unlimited attempts |
//! | `connect_timeout_ms` | 10 000 |
//! | `min_uptime_ms` | 5 000 (before the attempt counter resets) |
//! | `heartbeat` | off; with it, a `ping` after `interval_ms` of silence, dead when nothing arrives `timeout_ms` after the ping |
//! | `should_reconnect` | all closes except 4000 (kicked), 1008 (policy), 4002 (replaced); 4401 without a token provider never reconnects |
//! | open hook ([`Socket::set_on_open`]) | none; its sends go out ahead of the queue |
//! | `reliable` | off; on, acknowledged and resumable delivery both ways ([`reliable`]) |
//! | `token` | none; with [`Config::with_token`], token mode (below) |
//! | `root_certificates` (natively, feature `native-rustls`) | none: `wss://` trusts the webpki roots; [`Config::with_root_certificate`] adds one (DER), a private CA's say. No such option in the browser, whose own trust decides |
//!
//! # Behaviour in short
//!
//! * [`Socket::send`] gives [`SendOutcome::Sent`] or [`SendOutcome::Queued`],
//!   or a [`SendError`] holding the message (`QueueFull`, `TooLarge`,
//!   `Closed`, `BinaryNotReliable`; `Encode` from a [`TypedSocket`] has no
//!   message to give back). `Sent` means handed to the open socket; if the
//!   socket turns out to be closing, the message goes back to the head of the
//!   queue for the next connection: nothing is lost, the order is kept.
//! * [`Socket::close`] is final (timers cancelled, no reconnect, sends fail
//!   with `Closed`) until [`Socket::reconnect`], which also restarts after
//!   the attempts ran out. Dropping the last handle closes the browser
//!   socket and removes every listener and timer; no closure is leaked.
//! * At most one browser socket is live; events of a replaced one are ignored.
//! * Retries pause while the browser is offline and run at once on `online`
//!   or when a hidden tab becomes visible with the socket down.
//! * Events ([`Event`]) come as callbacks ([`Socket::on_event`]) and as a
//!   `Stream` ([`Socket::events`]); every message is delivered, none is
//!   collapsed, and a callback may use the socket re-entrantly.
//! * [`Socket::stats`]: queue length and capacity, messages and bytes each
//!   way, drops, reconnects, current attempt, uptime.
//! * One connection for all tabs ([`Config::with_shared_across_tabs`], off
//!   by default; browser only): tabs of one origin that share a name elect
//!   a leader with a Web Lock; it holds the one WebSocket and the others
//!   send ([`SendOutcome::Forwarded`]) and receive through it over a
//!   `BroadcastChannel`. Every tab gets every inbound message (tag requests
//!   with [`Socket::tab_id`]); [`Stats::tab_role`] and [`Stats::tabs`] say
//!   where the tab stands. When the leader leaves, another takes over; in
//!   reliable mode the session, the last server seq and every tab's
//!   unacknowledged messages go with it: nothing lost or duplicated.
//!   Without Web Locks or `BroadcastChannel`, with a config that differs
//!   from the leader's, or next to a tab of another build (another version
//!   of the tabs' wire), the tab keeps its own socket ([`Event::NotShared`]).
//!   What tabs hear from each other is checked: a stranger's or a broken
//!   post changes nothing. Natively the option is ignored.
//! * Reliable mode ([`Config::with_reliable`]): every text written is kept
//!   until the server acknowledges it (counted against the queue's limits)
//!   and resent after a reconnect's `resume`, before anything new (on a new
//!   session's first connection nothing goes out before the `welcome` names
//!   the session, so a cut before it loses nothing; [`Event::Open`] comes
//!   with it); each server message is delivered once, in order; what
//!   cannot be guaranteed is reported ([`Event::ResumeFailed`] hands the
//!   unconfirmed messages back, [`Event::Gap`] names the server messages
//!   lost).
//!
//! # Channels
//!
//! Against a server of protocol version 2 (the wrapper asks for it with
//! `?protocol=2`), [`Socket::subscribe`] gives a [`Channel`] handle whose
//! events ([`ChannelEvent`]) come as callbacks ([`Channel::on_event`]) and
//! as a `Stream` ([`Channel::events`]); dropping it unsubscribes.
//! [`Socket::subscribe_since`] starts from a position the application kept
//! ([`Channel::position`]), across a page reload say. [`Socket::publish`]
//! resolves to the publication's offset ([`Publish`]). [`TypedChannel`]
//! decodes the publications as a serde type.
//!
//! * Each publication reaches the handle once, in offset order, or a
//!   [`ChannelEvent::Gap`] names the exact range that will never come; a
//!   [`ChannelEvent::Reset`] says the channel's stream started again (a new
//!   epoch: reload the state).
//! * After every reconnect (a resumed reliable session included: the
//!   server's subscriptions belong to the connection) each channel is
//!   subscribed again with its last `(epoch, offset)`, and what was
//!   delivered already is dropped.
//! * A publish waits in the same bounded queue as [`Socket::send`] (it
//!   counts against its capacity and byte limit), carries an id of 128
//!   random bits, and is retried with it after a cut or a lost session
//!   until the server answers: the server publishes an id once.
//! * In reliable mode `subscribe`, `unsubscribe`, `publish` and their
//!   answers travel numbered inside the session; publications (`pub`) come
//!   unnumbered, covered by the recovery by offset.
//! * One [`Channel`] per channel per socket
//!   ([`SubscribeError::AlreadySubscribed`]); refusals are typed
//!   ([`SubscribeError`], [`ChannelError`], [`PublishError`]).
//! * Shared across tabs: with [`Config::with_shared_across_tabs`] the
//!   leader tab holds one server subscription per channel for all tabs,
//!   counted by reference, each tab sees each publication once and in
//!   order (or a gap), and a publish is answered in the tab that made it,
//!   through handoffs too (`tabs/channels.rs`). Presence too: the shared
//!   tabs are one connection, so one member; a tab's presence query is
//!   asked on the leader's connection and answered to that tab alone,
//!   joins and leaves reach every subscribed tab, and `follow_presence`
//!   asks again after each (re)subscription, a new leader's included.
//!   [`SubscribeError::SharedAcrossTabs`],
//!   [`PublishError::SharedAcrossTabs`] and
//!   [`PresenceError::SharedAcrossTabs`] are no longer returned.
//! * Channel events also reach the socket's own callbacks and streams, as
//!   [`Event::Channel`]. Once the socket has subscribed or published, the
//!   server's channel frames (`pub`, `subscribed`, `channel_gap`,
//!   `published`, `unsubscribed`, and an `error` answering one of its
//!   channel messages) are the channels', not [`Event::Message`]s; before
//!   that nothing changes (an app that speaks them by hand with
//!   [`Socket::send`] sees them as before).
//! * Presence (issue 24): [`Channel::presence`] and
//!   [`Channel::presence_stats`] ask the server (futures of a [`Presence`]
//!   and a [`PresenceStats`], or a [`PresenceError`]); the queries go at the
//!   top level, never numbered, and are asked again on the next connection
//!   when one is cut before its answer. [`ChannelEvent::Join`] and
//!   [`ChannelEvent::Leave`] are best-effort notices; [`Channel::follow_presence`]
//!   keeps an exact member set by asking for the members after each
//!   (re)subscription and patching the answer with the notices after it
//!   ([`Presence::apply`]).
//! * None of this is in the code of an app that never subscribes nor
//!   publishes: the driver's channel table is a trait object made on the
//!   first use.
//!
//! ```no_run
//! # #[cfg(all(feature = "native", not(target_arch = "wasm32")))]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use buffered_socket::{ChannelEvent, Config, RawJson, Socket};
//! use futures_util::StreamExt;
//!
//! let socket = Socket::new(Config::new("ws://127.0.0.1:8080/ws"))?;
//! let lobby = socket.subscribe("chat:lobby")?;
//! let mut events = lobby.events();
//! let offset = socket.publish("chat:lobby", RawJson::parse(r#"{"text":"hi"}"#)?)?.await?;
//! while let Some(event) = events.next().await {
//!     if let ChannelEvent::Publication { offset: at, data, .. } = event {
//!         eprintln!("{at}: {}", data.get());
//!         if at == offset {
//!             break;
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Token mode
//!
//! Against a server that wants signed tokens, [`Config::with_token`] takes an
//! async provider of fresh tokens. It is called before every connection
//! attempt (the browser sends the token as `?token=`, see
//! [`url_with_token`]; the native client as `Authorization: Bearer`) and
//! ahead of the token's `exp` (from the `welcome`) for an in-band
//! `refresh`: at 80 % of the remaining lifetime, at least 5 s before `exp`,
//! and not before half of it ([`driver::auth::refresh_delay_ms`]). The
//! `refresh` is never numbered nor queued, even in reliable mode.
//!
//! * `refreshed` gives [`Event::TokenRefreshed`] and reschedules; a refused
//!   refresh gives [`AuthError::RefreshRefused`] and the connection lasts
//!   until `exp`.
//! * Close 4003 (expired unrefreshed): reconnect with a new token (reliable
//!   mode resumes the session).
//! * Close 4401 (refused at connect): with a provider, a new token and a
//!   retry with the backoff; without one, no reconnect: state `Closed` and
//!   [`AuthError::Unauthorized`].
//! * A provider failure: [`AuthError::Provider`], retried with the backoff,
//!   never in a tight loop.
//! * Nothing of the application goes out before the server's `welcome`
//!   (which says the token was accepted; a refusal comes before it), and
//!   [`Event::Open`] comes with it.
//! * Tokens are [`Token`]s, whose `Debug` and `Display` are redacted.
//!
//! ```no_run
//! use buffered_socket::Config;
//!
//! # async fn my_login_endpoint() -> Result<String, std::io::Error> { Ok(String::new()) }
//! let config = Config::new("wss://example.org/ws")
//!     .with_reliable(true)
//!     .with_token(|| async { my_login_endpoint().await });
//! # drop(config);
//! ```
//!
//! # Layout
//!
//! The rules are plain Rust, unit-tested natively with `cargo test`:
//!
//! | module | what it holds |
//! |---|---|
//! | [`driver`] | [`Driver`]: every rule of the socket as a pure machine, inputs in, effects out (send branching, open hook before the flush, resume and resend order, acks, heartbeat, backoff, stats) |
//! | `driver/io.rs` | [`driver::Input`], [`driver::Effect`], the timers |
//! | [`driver::auth`] (`driver/auth.rs`) | token mode: a token before each connect, the refresh's timing, 4401 and 4003 |
//! | `driver/steps.rs` | the driver's private steps |
//! | `driver/channels.rs` | channels' rules: the subscription table, resubscribing with `since` after every connection, each offset once and in order or a gap, stale answers told by attempt id, publishes pending by id within the queue's bound and retried, presence queries asked unnumbered and again after a cut, a followed subscription's members asked for after each `subscribed`; behind a trait object made on the first subscribe, publish or query |
//! | [`machine`] (`driver/machine.rs`) | the connection state machine and backoff, inputs to actions |
//! | `driver/queue.rs` | [`Queue`], the bounded FIFO with both overflow policies and a byte limit |
//! | [`reliable`] (`driver/reliable.rs`) | reliable mode's client side (window, acks, resume, dedup), also usable from native code |
//! | [`liveness`] (`driver/liveness.rs`) | the heartbeat's decisions from wall-clock times |
//! | `tabs/` (hidden: the runner's, not an app's) | one connection for all tabs ([`Config::with_shared_across_tabs`]): the pure leader/follower coordinator, its tab protocol, and a simulation of several tabs with handoffs and forgeries |
//! | `runner/` | what a transport drives: the [`Driver`] and, when sharing, the coordinator and the adapter between them (the leader's driver rebuilt from the shared state, acks and delivered seqs read off it); inputs in, steps out; tested natively with tabs over a server that speaks the real wire |
//! | `config` | [`Config`], [`Backoff`] (the schedule as pure functions), [`Heartbeat`] |
//! | `dispatch` | in-order, re-entrancy-safe delivery to callbacks and streams, one dispatcher generic over its handles (`Rc` in the browser, `Arc` natively), with one re-entrancy rule; [`Subscription`] |
//! | `stream` | [`EventStream`], the events as a `Stream`, for both transports |
//! | `message` | [`Message`], [`SendOutcome`], [`SendError`], [`State`], [`Event`], [`TransportError`], [`Stats`] |
//! | `typed` | [`TypedSocket`] encoding and decoding (JSON over the `shared` protocol) |
//! | `channel` | [`Channel`] handles, [`ChannelEvent`], [`ChannelStream`], [`Publish`], [`TypedChannel`], presence's answers ([`Presence`], [`PresenceStats`], [`PresenceQuery`], [`FollowPresence`]), and the channels' errors; no rule (the driver's) but how a member set is patched |
//! | `token` | [`Token`] (redacted), [`TokenProvider`], [`AuthError`], [`url_with_token`] |
//! | `cause` | [`ErrorCause`]: the error under a [`TransportError`] or [`AuthError::Provider`] (the transport's or the provider's own, to print or downcast) |
//! | `transport/native/` (feature `native`) | the native [`Socket`] over tokio-tungstenite: one task per socket runs the [`Driver`] (`actor.rs`), `Send + Sync` handles; the rustls config of `wss://` (`tls.rs`, feature `native-rustls`) |
//! | `transport/mod.rs` | [`WeakSocket`], for both transports |
//!
//! Only the glue needs a browser (wasm32 only). It holds no rule: it runs the
//! runner and performs its steps. Tested in headless Chrome against the
//! real server (`tests/web.rs`, channels included, `tests/yew.rs`, token mode in
//! `tests/web_auth.rs`, their helpers in `tests/common/mod.rs`):
//!
//! | module | what it holds |
//! |---|---|
//! | `transport/web/mod.rs` | [`Socket`]: each call goes to the runner, then the pump runs; no call asks whether the socket shares |
//! | `transport/web/glue.rs` | the pump: inputs to the runner (queued, never dropped, when they arrive during a pump), its steps to the browser in order; no borrow held while application code runs |
//! | `transport/web/live.rs` | one `web_sys::WebSocket` and its callbacks, removed on drop |
//! | `transport/web/timers.rs` | `setTimeout`/`setInterval` as owned values, cleared on drop; the driver's timer slots |
//! | `transport/web/hooks.rs` | the window's `online`, `offline`, `visibilitychange` listeners, removed on drop |
//! | `transport/web/tabs_io.rs` | sharing across tabs, the browser side: Web Locks (through `js-sys`), the `BroadcastChannel`, the heartbeat interval, `pagehide`; all released on drop |
//! | [`yew`] (feature `yew`) | a context provider and hooks |
//!
//! Reliable mode sits between the queue and the browser socket: on open the
//! session's first message (`resume`) goes out; once it is answered the
//! unacknowledged messages are resent, then the open hook runs and the queue
//! flushes.
//!
//! # Example: a plain wasm app
//!
//! The same code is `examples/plain.rs`, compiled for wasm32 by clippy.
//!
//! ```no_run
//! # #[cfg(target_arch = "wasm32")] {
//! use buffered_socket::{Config, Event, SendOutcome, Socket};
//!
//! let socket = Socket::new(Config::new("ws://127.0.0.1:8080/ws").with_queue_capacity(500))?;
//! let subscription = socket.on_event(|event| {
//!     if let Event::Message(message) = event {
//!         web_sys::console::log_1(&format!("{message:?}").into());
//!     }
//! });
//! // Not open yet: queued, and sent first thing on open.
//! assert_eq!(socket.send(r#"{"type":"echo","id":1,"body":"hi"}"#)?, SendOutcome::Queued);
//! // Keep `socket` and `subscription` for as long as the app runs.
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Native (feature `native`)
//!
//! The same [`Socket`] API runs natively over tokio-tungstenite, on a tokio
//! runtime, with the same rules (it runs the same [`Driver`]): for Rust
//! services, command-line tools, load generators and tests. Its handles
//! are `Send + Sync`; callbacks must be `Send`; there is no online or
//! visibility signal natively, so retries follow the backoff alone;
//! [`TypedSocket`] wraps it as it wraps the browser one. `wss://`
//! needs the feature `native-rustls` (rustls with ring and the webpki
//! roots), and [`Config::with_root_certificate`] trusts one more root, a
//! private CA's (a root that is not a certificate is refused by
//! [`Socket::new`] with [`Error::InvalidRootCertificate`]; a server
//! certificate no root vouches for is a [`TransportError::Socket`] with
//! rustls's certificate error underneath). In the browser that method does
//! not exist, so that code written for both fails to compile rather than
//! silently not trusting the root: a page cannot add roots, the browser's
//! store (and the system's) decides. Natively a connection whose path died
//! without a FIN or RST is found only by the heartbeat, which closes it
//! with 1006 and the reason `heartbeat timeout`, then reconnects.
//! Tested against the real server in `tests/native.rs` (token mode in
//! `tests/native/auth.rs` and `tests/native/refresh.rs`, channels through
//! the fault proxy's cuts in `tests/native/channels.rs`, a followed member
//! set through a cut in `tests/native/presence.rs`, heartbeat death
//! through the fault proxy's silence in `tests/native/heartbeat.rs`,
//! `wss://` through the testbed's TLS front in `tests/native/wss.rs`); the
//! same code is `examples/native.rs`.
//!
//! ```no_run
//! # #[cfg(all(feature = "native", not(target_arch = "wasm32")))]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use buffered_socket::{Config, Event, Socket};
//! use futures_util::StreamExt;
//!
//! // Inside a tokio runtime (`Error::NoRuntime` otherwise).
//! let socket = Socket::new(Config::new("ws://127.0.0.1:8080/ws").with_reliable(true))?;
//! let mut events = socket.events();
//! // Send + Sync: any task may send. Queued until open, then flushed in order.
//! let sender = socket.clone();
//! tokio::spawn(async move { sender.send(r#"{"type":"echo","id":1,"body":"hi"}"#) });
//! while let Some(event) = events.next().await {
//!     if let Event::Message(message) = event {
//!         eprintln!("{message:?}");
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Example: a Yew component (feature `yew`)
//!
//! One socket per app, from a [`yew::SocketProvider`] at the root. The same
//! code, with the `Received` reducer (`+1` per action), is `examples/yew_counter.rs`.
//!
//! ```ignore
//! use buffered_socket::yew::{SocketProvider, use_socket, use_socket_event};
//! use buffered_socket::{Config, Event};
//! use yew::prelude::*;
//!
//! #[component]
//! fn Counter() -> Html {
//!     let ctx = use_socket(); // the handle and the state
//!     let received = use_reducer(Received::default); // a reducer: every message of a burst counts
//!     let count = received.dispatcher();
//!     use_socket_event(move |e| if let Event::Message(_) = e { count.dispatch(()) });
//!     let socket = ctx.socket.clone();
//!     let send = Callback::from(move |_| drop(socket.send("hi")));
//!     html! { <button onclick={send}>{ format!("{}: {} received", ctx.state.name(), received.0) }</button> }
//! }
//! // html! { <SocketProvider config={Config::new("ws://127.0.0.1:8080/ws")}><Counter /></SocketProvider> }
//! ```
#![warn(missing_docs)]
// `Socket` and the `yew` module exist on wasm32 only (and `yew` with its
// feature); build the docs with `--target wasm32-unknown-unknown --all-features`.
#![cfg_attr(
    not(all(target_arch = "wasm32", feature = "yew")),
    allow(rustdoc::broken_intra_doc_links)
)]

mod cause;
mod channel;
mod config;
mod dispatch;
pub mod driver;
mod message;
mod runner;
mod stream;
// Issue 15's pure coordinator, run by the runner (see its docs);
// public for its tests and the curious, not part of the app's API.
#[doc(hidden)]
pub mod tabs;
mod token;
mod transport;
mod typed;
#[cfg(all(target_arch = "wasm32", feature = "yew"))]
pub mod yew;

pub use cause::{DynError, ErrorCause};
#[cfg(any(target_arch = "wasm32", feature = "native"))]
pub use channel::{Channel, ChannelStream, FollowPresence, PresenceQuery, Publish, TypedChannel};
pub use channel::{
    ChannelError, ChannelEvent, ChannelNotice, Member, Presence, PresenceError, PresenceStats,
    PublishError, PublisherInfo, RawJson, RecoveryFailure, StreamPosition, SubscribeError,
    UnsubscribeReason, decode_event,
};
pub use config::{Backoff, Config, Heartbeat, Overflow, ReconnectPolicy, default_should_reconnect};
pub use dispatch::Subscription;
pub use driver::{Driver, PublishAnswer, Query, QueryAnswer, Queue, liveness, machine, reliable};
pub use message::{
    CloseInfo, DropReason, EncodeError, Event, Message, NotShared, SendError, SendOutcome, State,
    Stats, TabRole, TransportError,
};
pub use stream::EventStream;
pub use token::{
    AuthError, MaybeSend, MaybeSendSync, Token, TokenFuture, TokenProvider, url_with_token,
};
#[cfg(any(target_arch = "wasm32", feature = "native"))]
pub use transport::WeakSocket;
#[cfg(target_arch = "wasm32")]
pub use transport::web::Socket;
// The native transport (feature `native`): the same API over tokio-tungstenite.
#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
pub use transport::native::Socket;
pub use typed::{AppSocket, DecodeError, TypedSocket};

/// Why a [`Socket`] could not be created or closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL is not a valid `ws:` or `wss:` URL.
    #[error("not a ws: or wss: URL: {0:?}")]
    InvalidUrl(String),
    /// There is no browser window (a worker, or not a browser).
    #[error("no browser window: the socket needs window timers and events")]
    NoWindow,
    /// Browsers only let applications close with 1000 or 3000-4999.
    #[error("close code {0} is not allowed: use 1000 or 3000-4999")]
    InvalidCloseCode(u16),
    /// A close reason is at most 123 bytes.
    #[error("the close reason is longer than 123 bytes")]
    ReasonTooLong,
    /// Native transport: `Socket::new` was called outside a tokio runtime.
    #[error("no tokio runtime: create the native socket from within one")]
    NoRuntime,
    /// Native transport with `native-rustls`: root certificate `index` (from
    /// 0, in the order given to `Config::with_root_certificate`) is not a
    /// certificate rustls can trust (not DER, say, or PEM text given as
    /// is). Refused when the socket is made, so that a bad root does not
    /// turn into a certificate error on every attempt.
    #[error("root certificate {index} cannot be trusted: {cause}")]
    InvalidRootCertificate {
        /// Which root, from 0.
        index: usize,
        /// rustls's error (a `rustls::Error`, to downcast).
        #[source]
        cause: ErrorCause,
    },
}
