//! Channels (issue 23) as the application sees them: [`Channel`] handles
//! from [`crate::Socket::subscribe`], their [`ChannelEvent`]s, publishing
//! ([`crate::Socket::publish`], resolving to a [`Publish`]), and the typed
//! variant ([`TypedChannel`]).
//!
//! The rules (the subscription table, resubscribing with `since` after every
//! reconnect, dropping what was delivered already, retrying publishes by
//! their id) are the driver's, in `driver/channels.rs`: this module is the
//! handles only.
//!
//! Channel events travel through the socket's dispatcher as
//! [`crate::Event::Channel`], so they keep their order with the socket's
//! other events and every re-entrancy rule of `on_event` holds for them; a
//! handle's callbacks and stream see its own subscription's only.

use serde::de::DeserializeOwned;
use shared::ErrorCode;
pub use shared::channel::{
    Member, PublisherInfo, RawJson, RecoveryFailure, StreamPosition, UnsubscribeReason,
};

/// What happened to one subscription, in the order it happened. Generic
/// over the publications' data: [`RawJson`] for a [`Channel`], the
/// application's type for a [`TypedChannel`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelEvent<D = RawJson> {
    /// The server subscribed us (after every reconnect too). `recovered`:
    /// the subscription continued from the last offset delivered and
    /// everything missed follows, so nothing is lost; false on a first
    /// subscription (nothing to recover), and when the server could not
    /// recover (a [`ChannelEvent::Gap`] or [`ChannelEvent::Reset`] then
    /// says what is missing).
    Subscribed {
        /// Whether everything missed since the last delivery follows.
        recovered: bool,
    },
    /// One publication, each offset once and in increasing order.
    Publication {
        /// Its offset in the channel's stream (from 1 in an epoch).
        offset: u64,
        /// What was published.
        data: D,
        /// Who published it (absent when the admin API did).
        info: Option<PublisherInfo>,
    },
    /// Offsets `from..=to` (inclusive) will never be delivered: the
    /// history no longer had them, or a node could not fill a hole.
    Gap {
        /// The first offset lost.
        from: u64,
        /// The last offset lost.
        to: u64,
    },
    /// The channel's stream was lost and started again under a new epoch:
    /// offsets start over, so reload the state that the publications built.
    Reset {
        /// Why ([`RecoveryFailure::EpochChanged`]).
        reason: RecoveryFailure,
    },
    /// The server ended the subscription (admin, permission lost at a token
    /// refresh). It is not resubscribed; drop the handle.
    Unsubscribed {
        /// Why.
        reason: UnsubscribeReason,
    },
    /// Someone subscribed to the channel (issue 24): a best-effort notice,
    /// sent to subscribers that hold the `presence` capability where the
    /// namespace enables `join_leave`. Not an offset of the stream: after a
    /// reconnect the authority is a fresh [`ChannelEvent::Presence`] (what
    /// [`Channel::follow_presence`] fetches by itself).
    Join(Member),
    /// Someone's subscription ended (best effort, as [`ChannelEvent::Join`]).
    Leave(Member),
    /// The channel's members as the server answered the query that
    /// [`Channel::follow_presence`] makes after each (re)subscription.
    Presence(Presence),
    /// Something went wrong with this subscription.
    Error(ChannelError),
}

/// A channel's members: the answer to [`Channel::presence`], and the set
/// that [`Channel::follow_presence`] keeps. A member is one connection (the
/// tabs that share one are one member), so the same client id may appear
/// twice (two connections that gave the same one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Presence {
    /// The members, at most the server's `--max-presence-answer` (1,000 by
    /// default) from the server, in no particular order.
    pub members: Vec<Member>,
    /// There were more members than the server lists: `members` is a part.
    pub truncated: bool,
}

impl Presence {
    /// Patches the set with one of the channel's events: a
    /// [`ChannelEvent::Presence`] replaces it, a [`ChannelEvent::Join`]
    /// adds its member, a [`ChannelEvent::Leave`] removes one equal member
    /// (a leave for a member the set does not hold changes nothing). Returns
    /// whether the set changed.
    ///
    /// The server sends a join or leave that races a `presence` query after
    /// the answer, so patching in arrival order is exact.
    pub fn apply(&mut self, event: &ChannelEvent) -> bool {
        match event {
            ChannelEvent::Presence(fresh) => {
                *self = fresh.clone();
                true
            }
            ChannelEvent::Join(member) => {
                self.members.push(member.clone());
                true
            }
            ChannelEvent::Leave(member) => match self.members.iter().position(|m| m == member) {
                Some(at) => {
                    self.members.swap_remove(at);
                    true
                }
                None => false,
            },
            _ => false,
        }
    }
}

/// How many are in a channel: the answer to [`Channel::presence_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PresenceStats {
    /// Its members (connections).
    pub clients: u64,
    /// Its distinct users (token mode; anonymous members count none).
    pub users: u64,
}

/// Why a presence query ([`Channel::presence`], [`Channel::presence_stats`],
/// [`Channel::follow_presence`]) gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PresenceError {
    /// The queue (its capacity or byte limit, shared with
    /// [`crate::Socket::send`]) has no room for the query.
    #[error("the send queue is full")]
    QueueFull,
    /// The socket was closed by the application ([`crate::Socket::close`]).
    #[error("the socket was closed by the application")]
    Closed,
    /// The socket was dropped before the server answered.
    #[error("the socket was dropped before the server answered")]
    Dropped,
    /// No longer returned: presence is shared across tabs (issue 24), as
    /// channels are. Kept so that an application's match on it still
    /// compiles.
    #[error("presence was not shared across tabs")]
    SharedAcrossTabs,
    /// The server refused it (`permission_denied` without the `presence`
    /// capability, `unavailable` while Redis is down...).
    #[error("the server refused the presence query: {code}: {message}")]
    Refused {
        /// The server's code.
        code: ErrorCode,
        /// Its explanation.
        message: String,
    },
}

/// What went wrong with a subscription ([`ChannelEvent::Error`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The server refused the `subscribe` (`bad_channel`,
    /// `unknown_namespace`, `permission_denied`, `too_many_subscriptions`,
    /// `unavailable`...). The subscription is over: it is not retried; drop
    /// the handle and subscribe again to retry.
    #[error("the server refused the subscription: {code}: {message}")]
    Refused {
        /// The server's code.
        code: ErrorCode,
        /// Its explanation.
        message: String,
    },
    /// The server refused the query that [`Channel::follow_presence`] makes
    /// after each (re)subscription (`permission_denied` without the
    /// `presence` capability...). The subscription goes on.
    #[error("the server refused the presence query: {code}: {message}")]
    PresenceRefused {
        /// The server's code.
        code: ErrorCode,
        /// Its explanation.
        message: String,
    },
    /// [`TypedChannel`]: a publication's data is not the application's type.
    /// It is reported here instead of as a publication, never skipped.
    #[error("publication {offset} did not decode: {detail}")]
    Decode {
        /// The publication's offset (it counts as delivered).
        offset: u64,
        /// serde's explanation.
        detail: String,
    },
}

/// Why [`crate::Socket::subscribe`] gave no [`Channel`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// Not a channel name: at most 255 bytes of `[A-Za-z0-9_.\-:@=]`
    /// (`namespace:name`, or a bare name).
    #[error("not a channel name: {0:?}")]
    BadChannel(String),
    /// This socket holds a [`Channel`] of that name already: one handle per
    /// channel per socket (its callbacks and streams are many).
    #[error("already subscribed to {0:?} on this socket")]
    AlreadySubscribed(String),
    /// No longer returned: channels are shared across tabs (issue 23). Kept
    /// so that an application's match on it still compiles.
    #[error("channels were not shared across tabs")]
    SharedAcrossTabs,
}

/// Why a publish failed ([`crate::Socket::publish`] at once, or its
/// [`Publish`] later).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// Not a channel name.
    #[error("not a channel name: {0:?}")]
    BadChannel(String),
    /// The queue (its capacity or byte limit, shared with
    /// [`crate::Socket::send`]) has no room for it.
    #[error("the send queue is full")]
    QueueFull,
    /// The publication alone is larger than the queue's byte limit.
    #[error("the publication is larger than the queue's byte limit")]
    TooLarge,
    /// The socket was closed by the application ([`crate::Socket::close`]).
    #[error("the socket was closed by the application")]
    Closed,
    /// The socket was dropped before the server answered: whether it was
    /// published is unknown.
    #[error("the socket was dropped before the server answered")]
    Dropped,
    /// The data could not be encoded as JSON ([`TypedChannel::publish`]).
    #[error("the publication could not be encoded: {0}")]
    Encode(String),
    /// No longer returned: channels are shared across tabs (issue 23). Kept
    /// so that an application's match on it still compiles.
    #[error("channels were not shared across tabs")]
    SharedAcrossTabs,
    /// The server refused it (`permission_denied`, `publish_too_large`,
    /// `rate_limited`, `unavailable`...). It was not published.
    #[error("the server refused the publication: {code}: {message}")]
    Refused {
        /// The server's code.
        code: ErrorCode,
        /// Its explanation.
        message: String,
    },
}

/// One subscription's event, as the socket's dispatcher carries it
/// ([`crate::Event::Channel`]): a [`Channel`]'s callbacks and streams get
/// those of their own subscription. An application that watches the
/// socket's events sees every channel's. Shared, not copied, by each
/// callback and stream (cloning it is cheap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelNotice(std::sync::Arc<Notice>);

#[derive(Debug, PartialEq, Eq)]
struct Notice {
    channel: String,
    event: ChannelEvent,
    /// Which subscription of the channel (a handle dropped and made again
    /// is another).
    subscription: u64,
}

impl ChannelNotice {
    pub(crate) fn new(channel: String, subscription: u64, event: ChannelEvent) -> Self {
        Self(std::sync::Arc::new(Notice {
            channel,
            event,
            subscription,
        }))
    }

    /// The channel.
    pub fn channel(&self) -> &str {
        &self.0.channel
    }

    /// What happened.
    pub fn event(&self) -> &ChannelEvent {
        &self.0.event
    }

    pub(crate) fn is_for(&self, channel: &str, subscription: u64) -> bool {
        self.0.subscription == subscription && self.0.channel == channel
    }
}

/// The typed view of `event`: its data decoded as a `T`; data that does
/// not decode is a [`ChannelError::Decode`].
pub fn decode_event<T: DeserializeOwned>(event: &ChannelEvent) -> ChannelEvent<T> {
    match event {
        ChannelEvent::Publication { offset, data, info } => {
            match serde_json::from_str(data.get()) {
                Ok(data) => ChannelEvent::Publication {
                    offset: *offset,
                    data,
                    info: info.clone(),
                },
                Err(err) => ChannelEvent::Error(ChannelError::Decode {
                    offset: *offset,
                    detail: err.to_string(),
                }),
            }
        }
        ChannelEvent::Subscribed { recovered } => ChannelEvent::Subscribed {
            recovered: *recovered,
        },
        ChannelEvent::Gap { from, to } => ChannelEvent::Gap {
            from: *from,
            to: *to,
        },
        ChannelEvent::Reset { reason } => ChannelEvent::Reset { reason: *reason },
        ChannelEvent::Unsubscribed { reason } => ChannelEvent::Unsubscribed {
            reason: reason.clone(),
        },
        ChannelEvent::Join(member) => ChannelEvent::Join(member.clone()),
        ChannelEvent::Leave(member) => ChannelEvent::Leave(member.clone()),
        ChannelEvent::Presence(presence) => ChannelEvent::Presence(presence.clone()),
        ChannelEvent::Error(err) => ChannelEvent::Error(err.clone()),
    }
}

#[cfg(any(target_arch = "wasm32", feature = "native"))]
pub use handles::{Channel, ChannelStream, FollowPresence, PresenceQuery, Publish, TypedChannel};

#[cfg(any(target_arch = "wasm32", feature = "native"))]
mod handles {
    use std::marker::PhantomData;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;
    use crate::dispatch::Subscription;
    use crate::driver::Query;
    use crate::message::Event;
    use crate::stream::EventStream;
    use crate::token::MaybeSend;
    use crate::transport::WeakSocket;

    /// One subscription to a channel, from [`crate::Socket::subscribe`].
    /// Dropping it unsubscribes (and removes its callbacks' deliveries;
    /// its streams end). It does not keep the socket alive.
    ///
    /// It lasts across reconnects: after each, the socket resubscribes with
    /// the last `(epoch, offset)` delivered, and its events say what came
    /// of it ([`ChannelEvent::Subscribed`], then the publications missed,
    /// or a [`ChannelEvent::Gap`] or [`ChannelEvent::Reset`]).
    ///
    /// Natively the socket's task may deliver the server's answer before
    /// the thread that subscribed registers a callback; so the handle's
    /// first [`Channel::events`] stream has every event of the subscription
    /// from its start (it was made with it). A callback
    /// ([`Channel::on_event`]) sees the events from its registration on,
    /// as [`crate::Socket::on_event`] does; in the browser nothing can come
    /// in between. That first stream keeps its events until it is taken
    /// or the first callback is registered (which drops it).
    pub struct Channel {
        name: String,
        subscription: u64,
        socket: WeakSocket,
        first: std::sync::Mutex<Option<EventStream>>,
    }

    impl std::fmt::Debug for Channel {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Channel")
                .field("name", &self.name)
                .finish_non_exhaustive()
        }
    }

    impl Channel {
        pub(crate) fn new(
            name: String,
            subscription: u64,
            socket: WeakSocket,
            first: EventStream,
        ) -> Self {
            Self {
                name,
                subscription,
                socket,
                first: std::sync::Mutex::new(Some(first)),
            }
        }

        fn take_first(&self) -> Option<EventStream> {
            self.first
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
        }

        /// The channel's name.
        pub fn name(&self) -> &str {
            &self.name
        }

        /// Where the subscription is: the stream's epoch and the last offset
        /// delivered (`None` before the first `subscribed`, or once the
        /// socket is gone). Persist it and give it to
        /// [`crate::Socket::subscribe_since`] to carry on after a reload.
        pub fn position(&self) -> Option<StreamPosition> {
            let socket = self.socket.upgrade()?;
            socket.channel_position(&self.name, self.subscription)
        }

        /// Calls `callback` with each of this subscription's events until
        /// the returned [`Subscription`] is dropped, with the re-entrancy
        /// rules of [`crate::Socket::on_event`] (natively the callback runs
        /// on the socket's task, so it must be `Send`). Once the socket is
        /// gone it is never called.
        pub fn on_event(
            &self,
            mut callback: impl FnMut(&ChannelEvent) + MaybeSend + 'static,
        ) -> Subscription {
            // A callback listens now: the first stream's events are not kept.
            drop(self.take_first());
            let (name, subscription) = (self.name.clone(), self.subscription);
            let filtered = move |event: &Event| {
                if let Event::Channel(notice) = event
                    && notice.is_for(&name, subscription)
                {
                    callback(notice.event());
                }
            };
            match self.socket.upgrade() {
                Some(socket) => socket.on_event(filtered),
                None => Subscription::none(),
            }
        }

        /// This subscription's events as a `Stream`: the first call's from
        /// the subscription's start (see [`Channel`]), a later call's from
        /// now on. It ends when the socket is dropped (at once if it is gone).
        pub fn events(&self) -> ChannelStream {
            let inner = self.take_first().or_else(|| {
                let socket = self.socket.upgrade()?;
                Some(socket.channel_stream(self.name.clone(), self.subscription))
            });
            ChannelStream { inner }
        }

        /// Publishes `data` (any JSON value) to this channel: see
        /// [`crate::Socket::publish`]. Subscribing is not needed to publish.
        ///
        /// # Errors
        ///
        /// As [`crate::Socket::publish`]; [`PublishError::Dropped`] once the
        /// socket is gone.
        pub fn publish(&self, data: RawJson) -> Result<Publish, PublishError> {
            match self.socket.upgrade() {
                Some(socket) => socket.publish(&self.name, data),
                None => Err(PublishError::Dropped),
            }
        }

        /// The channel's members, asked of the server now (a `presence`
        /// query; the `presence` capability is needed). The query goes at
        /// the top level, never numbered, in reliable mode too; one cut
        /// before its answer is asked again on the next connection.
        /// Subscribing is not needed to ask.
        pub fn presence(&self) -> PresenceQuery<Presence> {
            self.query(Query::Members)
        }

        /// How many are in the channel (a `presence_stats` query), as
        /// [`Channel::presence`].
        pub fn presence_stats(&self) -> PresenceQuery<PresenceStats> {
            self.query(Query::Stats)
        }

        fn query<T: Send + 'static>(
            &self,
            make: impl FnOnce(Box<dyn FnOnce(Result<T, PresenceError>) + Send + Sync>) -> Query,
        ) -> PresenceQuery<T> {
            let (tx, rx) = futures_channel::oneshot::channel();
            // Nobody waits when the query was dropped: fine.
            let answer = Box::new(move |result| drop(tx.send(result)));
            let sent = match self.socket.upgrade() {
                Some(socket) => socket.presence_query(&self.name, make(answer)),
                None => Err(PresenceError::Dropped),
            };
            PresenceQuery {
                rx: sent.map(|()| rx),
            }
        }

        /// The channel's member set, kept up to date: its `Stream` yields
        /// the set each time it changes. The socket asks the server for the
        /// members after each (re)subscription (after every reconnect too:
        /// join and leave notices are best effort, the answer is the
        /// authority), and from then on each [`ChannelEvent::Join`] and
        /// [`ChannelEvent::Leave`] patches it ([`Presence::apply`]). A
        /// refused query yields [`PresenceError::Refused`] and the stream
        /// goes on (it tries again after the next reconnect).
        ///
        /// Once asked, the socket keeps fetching the members after each
        /// resubscription for as long as this [`Channel`] lives. The stream
        /// ends when the socket is dropped.
        pub fn follow_presence(&self) -> FollowPresence {
            let inner = self
                .socket
                .upgrade()
                .map(|socket| socket.follow_presence(self.name.clone(), self.subscription));
            FollowPresence { inner, set: None }
        }
    }

    impl Drop for Channel {
        fn drop(&mut self) {
            if let Some(socket) = self.socket.upgrade() {
                socket.unsubscribe(&self.name, self.subscription);
            }
        }
    }

    /// A [`Channel`]'s events as a `Stream`; see [`Channel::events`].
    pub struct ChannelStream {
        inner: Option<EventStream>,
    }

    impl futures_util::Stream for ChannelStream {
        type Item = ChannelEvent;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ChannelEvent>> {
            let Some(inner) = self.inner.as_mut() else {
                return Poll::Ready(None);
            };
            // The dispatcher sends this stream its subscription's events only.
            loop {
                match Pin::new(&mut *inner).poll_next(cx) {
                    Poll::Ready(Some(Event::Channel(notice))) => {
                        return Poll::Ready(Some(notice.event().clone()));
                    }
                    Poll::Ready(Some(_)) => {}
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                }
            }
        }
    }

    /// A presence query's answer on its way ([`Channel::presence`],
    /// [`Channel::presence_stats`]).
    pub struct PresenceQuery<T> {
        rx: Result<futures_channel::oneshot::Receiver<Result<T, PresenceError>>, PresenceError>,
    }

    impl<T> Future for PresenceQuery<T> {
        type Output = Result<T, PresenceError>;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            match &mut self.rx {
                Ok(rx) => Pin::new(rx)
                    .poll(cx)
                    .map(|answer| answer.unwrap_or(Err(PresenceError::Dropped))),
                Err(err) => Poll::Ready(Err(err.clone())),
            }
        }
    }

    /// A channel's member set as it changes; see [`Channel::follow_presence`].
    pub struct FollowPresence {
        inner: Option<EventStream>,
        /// The set, from the first answer on.
        set: Option<Presence>,
    }

    impl futures_util::Stream for FollowPresence {
        type Item = Result<Presence, PresenceError>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            let this = &mut *self;
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            loop {
                let notice = match Pin::new(&mut *inner).poll_next(cx) {
                    Poll::Ready(Some(Event::Channel(notice))) => notice,
                    Poll::Ready(Some(_)) => continue,
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                };
                match notice.event() {
                    ChannelEvent::Error(ChannelError::PresenceRefused { code, message }) => {
                        return Poll::Ready(Some(Err(PresenceError::Refused {
                            code: code.clone(),
                            message: message.clone(),
                        })));
                    }
                    // Before the first answer there is no set to patch: a
                    // join or leave before it is in the answer already.
                    ChannelEvent::Presence(fresh) if this.set.is_none() => {
                        this.set = Some(fresh.clone());
                    }
                    event => {
                        let changed = this.set.as_mut().is_some_and(|set| set.apply(event));
                        if !changed {
                            continue;
                        }
                    }
                }
                if let Some(set) = &this.set {
                    return Poll::Ready(Some(Ok(set.clone())));
                }
            }
        }
    }

    /// A publication on its way: resolves to its offset once the server
    /// answers `published`, or to why not. It is retried with its id after
    /// a reconnect (the server publishes an id once), so it resolves once
    /// the server has it, however many cuts come first. Dropping it does
    /// not cancel the publication.
    pub struct Publish {
        rx: futures_channel::oneshot::Receiver<Result<u64, PublishError>>,
    }

    impl Publish {
        pub(crate) fn new(
            rx: futures_channel::oneshot::Receiver<Result<u64, PublishError>>,
        ) -> Self {
            Self { rx }
        }
    }

    impl Future for Publish {
        type Output = Result<u64, PublishError>;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            Pin::new(&mut self.rx)
                .poll(cx)
                .map(|answer| answer.unwrap_or(Err(PublishError::Dropped)))
        }
    }

    /// A [`Channel`] whose publications are decoded as `T` (JSON through
    /// serde); [`TypedChannel::publish`] encodes one.
    pub struct TypedChannel<T> {
        channel: Channel,
        _type: PhantomData<fn(T) -> T>,
    }

    impl<T: serde::Serialize + DeserializeOwned + 'static> TypedChannel<T> {
        /// Decodes `channel`'s publications as `T`.
        pub fn new(channel: Channel) -> Self {
            Self {
                channel,
                _type: PhantomData,
            }
        }

        /// The untyped handle.
        pub fn raw(&self) -> &Channel {
            &self.channel
        }

        /// Calls `callback` with each event, the data decoded
        /// ([`decode_event`]): data that is not a `T` comes as
        /// [`ChannelError::Decode`], never skipped.
        pub fn on_event(
            &self,
            mut callback: impl FnMut(ChannelEvent<T>) + MaybeSend + 'static,
        ) -> Subscription {
            self.channel
                .on_event(move |event| callback(decode_event(event)))
        }

        /// The events as a `Stream`, decoded as for [`TypedChannel::on_event`].
        pub fn events(&self) -> impl futures_util::Stream<Item = ChannelEvent<T>> + use<T> {
            use futures_util::StreamExt;
            self.channel.events().map(|event| decode_event(&event))
        }

        /// Publishes `value` as JSON.
        ///
        /// # Errors
        ///
        /// [`PublishError::Encode`] when its `Serialize` fails; otherwise
        /// as [`crate::Socket::publish`].
        pub fn publish(&self, value: &T) -> Result<Publish, PublishError> {
            let text = serde_json::to_string(value)
                .map_err(|err| PublishError::Encode(err.to_string()))?;
            let data =
                RawJson::parse(&text).map_err(|err| PublishError::Encode(err.to_string()))?;
            self.channel.publish(data)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_typed_view_decodes_the_data_and_reports_what_does_not_decode() {
        #[derive(Debug, PartialEq, serde::Deserialize)]
        struct Chat {
            text: String,
        }
        let publication = |data: &str| ChannelEvent::Publication {
            offset: 7,
            data: RawJson::parse(data).unwrap(),
            info: None,
        };
        assert_eq!(
            decode_event::<Chat>(&publication(r#"{"text":"hi"}"#)),
            ChannelEvent::Publication {
                offset: 7,
                data: Chat { text: "hi".into() },
                info: None
            }
        );
        assert!(matches!(
            decode_event::<Chat>(&publication("42")),
            ChannelEvent::Error(ChannelError::Decode { offset: 7, .. })
        ));
        assert_eq!(
            decode_event::<Chat>(&ChannelEvent::Gap { from: 1, to: 2 }),
            ChannelEvent::Gap { from: 1, to: 2 }
        );
    }

    #[test]
    fn a_member_set_is_replaced_by_an_answer_and_patched_by_join_and_leave() {
        let member = |id: &str| Member {
            client_id: id.into(),
            user: None,
            client_name: None,
        };
        let mut set = Presence::default();
        let answer = Presence {
            members: vec![member("a"), member("b")],
            truncated: false,
        };
        assert!(set.apply(&ChannelEvent::Presence(answer.clone())));
        assert_eq!(set, answer);
        // Two connections may give the same client id: each is a member.
        assert!(set.apply(&ChannelEvent::Join(member("a"))));
        assert!(set.apply(&ChannelEvent::Leave(member("a"))));
        assert!(set.apply(&ChannelEvent::Leave(member("a"))));
        assert!(
            !set.apply(&ChannelEvent::Leave(member("a"))),
            "no longer there"
        );
        assert_eq!(set.members, [member("b")]);
        assert!(!set.apply(&ChannelEvent::Gap { from: 1, to: 1 }));
    }
}
