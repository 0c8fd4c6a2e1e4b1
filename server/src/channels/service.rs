//! The node's channels as the connections and the admin API use them: the
//! namespaces, the streams (in memory, or in Redis with the relay), the
//! hub, and the frames of the wire (issue 23).
//!
//! # The path of one publication
//!
//! * **One node** (memory): the stream gives the offset and keeps the
//!   history, and the hub delivers, both under one lock, so that the hub
//!   sees each channel's offsets in order.
//! * **A cluster** (Redis): one script gives the offset, keeps the history
//!   and publishes to the nodes; every node, this one included, delivers
//!   what its relay hears. A node never delivers its own publication
//!   directly: one path, one order.
//!
//! # The path of one subscription
//!
//! The hub adds the subscriber, holding live publications for it; the node
//! listens to the channel (in a cluster) before it reads the stream; the
//! caller sends `subscribed` and what was missed, then the subscriber goes
//! live ([`Channels::go_live`]) with what was held after it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ws::Message;
use shared::ErrorCode;
use tokio_util::sync::CancellationToken;

use super::hub::{Frames, Hub, Joined, Sink};
use super::namespace::{ChannelError, Namespace, Namespaces};
use super::relay::Relay;
use super::stream::memory::MemoryStreams;
use super::stream::redis::RedisStreams;
use super::stream::{Position, Publication, PublishRequest, Published, Recovery, StreamError};
use crate::clock::now_ms;

/// How often a node forgets idle channels of its memory streams.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Why a channel request is refused: the wire's error code, and the admin
/// API's status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Not a channel name, or its namespace is not configured.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The connection may not do that there.
    #[error("this connection may not {0} in this channel")]
    PermissionDenied(&'static str),
    /// `--max-subscriptions` reached.
    #[error("a connection may be subscribed to {0} channels at most")]
    TooManySubscriptions(usize),
    /// Larger than the namespace's `max_publication_bytes`.
    #[error("a publication in this namespace has {max} bytes at most, not {size}")]
    TooLarge {
        /// The publication's.
        size: usize,
        /// The namespace's bound.
        max: usize,
    },
    /// `--publish-rate` reached.
    #[error("{0} publications per second at most: this one was not published")]
    RateLimited(f64),
    /// An `id` longer than 64 bytes.
    #[error("an id has {} bytes at most", shared::channel::MAX_ID_BYTES)]
    BadId,
    /// The streams do not answer (Redis is down), or the channel's offsets
    /// ran out.
    #[error("{0}")]
    Unavailable(StreamError),
}

impl Refusal {
    /// The wire's error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Channel(ChannelError::BadChannel) => ErrorCode::BadChannel,
            Self::Channel(_) => ErrorCode::UnknownNamespace,
            Self::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Self::TooManySubscriptions(_) => ErrorCode::TooManySubscriptions,
            Self::TooLarge { .. } => ErrorCode::PublishTooLarge,
            Self::RateLimited(_) => ErrorCode::RateLimited,
            Self::BadId => ErrorCode::InvalidFields,
            Self::Unavailable(_) => ErrorCode::Unavailable,
        }
    }
}

impl From<StreamError> for Refusal {
    fn from(err: StreamError) -> Self {
        Self::Unavailable(err)
    }
}

/// A subscription made: where the channel is, and what the subscriber
/// missed.
#[derive(Debug)]
pub enum Subscribed {
    /// A new one, recovering until [`Channels::go_live`].
    New {
        /// The channel's position when it started.
        position: Position,
        /// What the subscriber missed after its `since`.
        recovery: Recovery,
    },
    /// It was subscribed already: nothing changed; the node's position.
    Already(Position),
}

/// The wire's frames of a channel, encoded once per node.
#[derive(Debug, Default)]
pub struct WireFrames;

impl Frames<Message> for WireFrames {
    fn publication(&self, channel: &str, publication: &Publication) -> Message {
        Message::Text(pub_frame(channel, publication).into())
    }

    fn gap(&self, channel: &str, from: u64, to: u64) -> Message {
        crate::wire::text(&shared::ServerMessage::ChannelGap {
            channel: channel.to_owned(),
            from,
            to,
        })
    }

    fn new_epoch(&self, channel: &str, epoch: &str, offset: u64) -> Message {
        crate::wire::text(&shared::ServerMessage::Subscribed {
            channel: channel.to_owned(),
            epoch: epoch.to_owned(),
            offset,
            recovered: Some(false),
            reason: Some(shared::channel::RecoveryFailure::EpochChanged),
            gap: None,
            id: None,
        })
    }
}

/// A `pub` frame's text: the data is written as it was checked when it
/// came in, without a parse (one encode per publication per node).
pub fn pub_frame(channel: &str, publication: &Publication) -> String {
    let info = publication
        .info
        .as_ref()
        .map(super::stream::redis::info_json);
    let channel = serde_json::to_string(channel).unwrap_or_default();
    let mut out = String::with_capacity(
        64 + channel.len() + publication.data.len() + info.as_ref().map_or(0, String::len),
    );
    out.push_str(r#"{"type":"pub","channel":"#);
    out.push_str(&channel);
    out.push_str(r#","offset":"#);
    out.push_str(&publication.offset.to_string());
    out.push_str(r#","data":"#);
    out.push_str(&publication.data);
    if let Some(info) = info {
        out.push_str(r#","info":"#);
        out.push_str(&info);
    }
    out.push('}');
    out
}

/// Where the streams are.
enum Store {
    /// One node's, in memory; the lock orders each publication's offset
    /// and its delivery.
    Memory {
        streams: MemoryStreams,
        order: Mutex<()>,
    },
    /// The cluster's, in Redis, with the node's relay.
    Redis {
        streams: Arc<RedisStreams>,
        relay: Arc<Relay<Message>>,
    },
}

/// The node's channels.
pub struct Channels {
    namespaces: Arc<Namespaces>,
    hub: Arc<Hub<Message>>,
    store: Store,
    frames: Arc<WireFrames>,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels").finish_non_exhaustive()
    }
}

impl Channels {
    /// One node's channels, in memory: `history_bytes` of history in all,
    /// ids remembered for `dedup_window`.
    pub fn memory(namespaces: Namespaces, history_bytes: usize, dedup_window: Duration) -> Self {
        let window_ms = u64::try_from(dedup_window.as_millis()).unwrap_or(u64::MAX);
        Self {
            namespaces: Arc::new(namespaces),
            hub: Arc::default(),
            store: Store::Memory {
                streams: MemoryStreams::new(history_bytes, window_ms),
                order: Mutex::new(()),
            },
            frames: Arc::new(WireFrames),
        }
    }

    /// A cluster node's channels, on the Redis of `node`.
    pub fn redis(
        namespaces: Namespaces,
        node: &Arc<crate::cluster::Node>,
        dedup_window: Duration,
    ) -> Self {
        let namespaces = Arc::new(namespaces);
        let hub = Arc::<Hub<Message>>::default();
        let frames = Arc::new(WireFrames);
        let backend: Arc<dyn crate::reliable::Backend> = node.clone();
        let streams = Arc::new(RedisStreams::new(backend, dedup_window));
        let relay = Relay::new(
            hub.clone(),
            streams.clone(),
            namespaces.clone(),
            frames.clone(),
            node.client().clone(),
        );
        Self {
            namespaces,
            hub,
            store: Store::Redis { streams, relay },
            frames,
        }
    }

    /// Starts the background work until `stop`: the relay in a cluster,
    /// the sweep of idle channels in memory.
    pub fn start(self: &Arc<Self>, stop: &CancellationToken) {
        match &self.store {
            Store::Redis { relay, .. } => {
                tokio::spawn(relay.clone().run(stop.clone()));
            }
            Store::Memory { .. } => {
                let (channels, stop) = (self.clone(), stop.clone());
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(SWEEP_EVERY) => {}
                        }
                        if let Store::Memory { streams, .. } = &channels.store {
                            streams.sweep(now_ms(), |name| channels.hub.has(name));
                        }
                    }
                });
            }
        }
    }

    /// The namespace of `channel`.
    ///
    /// # Errors
    ///
    /// As [`Namespaces::of`].
    pub fn namespace(&self, channel: &str) -> Result<&Namespace, ChannelError> {
        self.namespaces.of(channel)
    }

    /// This node's subscribers.
    pub fn hub(&self) -> &Hub<Message> {
        &self.hub
    }

    /// The wire's frames.
    pub fn frames(&self) -> &WireFrames {
        &self.frames
    }

    async fn recover(
        &self,
        channel: &str,
        since: Option<&Position>,
        namespace: &Namespace,
    ) -> Result<(Position, Recovery), StreamError> {
        match &self.store {
            Store::Memory { streams, .. } => {
                Ok(streams.recover(channel, since, namespace, now_ms()))
            }
            Store::Redis { streams, .. } => streams.recover(channel, since, namespace).await,
        }
    }

    /// Subscribes connection `conn` (its frames go to `sink`) to `channel`,
    /// recovering from `since`. The subscriber holds live publications
    /// until [`Channels::go_live`]. Without `since`, while the streams do
    /// not answer, a channel live on this node starts at the node's
    /// position.
    ///
    /// # Errors
    ///
    /// [`Refusal::Channel`] for a bad name or namespace,
    /// [`Refusal::Unavailable`] when the stream cannot be read (the
    /// subscription is then undone).
    pub async fn subscribe(
        &self,
        channel: &str,
        conn: u64,
        sink: Arc<dyn Sink<Message>>,
        since: Option<&Position>,
    ) -> Result<Subscribed, Refusal> {
        let namespace = self.namespaces.of(channel)?;
        match self.hub.subscribe(channel, conn, sink) {
            Joined::Already => {
                let (epoch, offset) = self.hub.position(channel).unwrap_or_default();
                return Ok(Subscribed::Already(Position { epoch, offset }));
            }
            Joined::First => {
                if let Store::Redis { relay, .. } = &self.store {
                    relay.listen(channel).await;
                }
            }
            Joined::Added => {}
        }
        match self.recover(channel, since, namespace).await {
            Ok((position, recovery)) => Ok(Subscribed::New { position, recovery }),
            Err(err) => match (since, self.hub.position(channel)) {
                (None, Some((epoch, offset))) => Ok(Subscribed::New {
                    position: Position { epoch, offset },
                    recovery: Recovery::Fresh,
                }),
                _ => {
                    self.unsubscribe(channel, conn).await;
                    Err(err.into())
                }
            },
        }
    }

    /// The recovered publications up to `sent` of `epoch` reached `conn`:
    /// it goes live, with what was held for it after them.
    pub fn go_live(&self, channel: &str, conn: u64, (epoch, sent): (&str, u64)) {
        let _ = self
            .hub
            .go_live(channel, conn, (epoch, sent), &*self.frames);
    }

    /// Ends `conn`'s subscription to `channel`; returns whether it had one.
    pub async fn unsubscribe(&self, channel: &str, conn: u64) -> bool {
        let (was, last) = self.hub.unsubscribe(channel, conn);
        if last && let Store::Redis { relay, .. } = &self.store {
            relay.forget(channel).await;
        }
        was
    }

    /// Connection `conn` ended: out of every channel, at once (the
    /// listening it no longer needs is given up in the background).
    pub fn leave(&self, conn: u64) {
        let emptied = self.hub.leave(conn);
        if let Store::Redis { relay, .. } = &self.store
            && !emptied.is_empty()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let relay = relay.clone();
            runtime.spawn(async move {
                for channel in emptied {
                    relay.forget(&channel).await;
                }
            });
        }
    }

    /// Publishes `request` (its channel and size checked by the caller).
    ///
    /// # Errors
    ///
    /// [`Refusal::Channel`] for a bad name or namespace,
    /// [`Refusal::Unavailable`] when the streams do not answer.
    pub async fn publish(&self, request: PublishRequest) -> Result<Published, Refusal> {
        let namespace = self.namespaces.of(&request.channel)?;
        match &self.store {
            Store::Memory { streams, order } => {
                let _order = order.lock().unwrap_or_else(PoisonError::into_inner);
                let channel = request.channel.clone();
                let published = streams.publish(request, namespace, now_ms())?;
                if let Some(publication) = &published.publication {
                    let delivery =
                        self.hub
                            .deliver(&channel, &published.epoch, publication, &*self.frames);
                    if let super::hub::Delivery::Hole { from, to } = delivery {
                        // The lock keeps offsets in order: this cannot be.
                        tracing::error!(channel, from, to, "channel delivery out of order");
                    }
                }
                Ok(published)
            }
            Store::Redis { streams, .. } => Ok(streams.publish(request, namespace).await?),
        }
    }

    /// The last `limit` publications kept for `channel`.
    ///
    /// # Errors
    ///
    /// As [`Channels::publish`].
    pub async fn history(
        &self,
        channel: &str,
        limit: usize,
    ) -> Result<Vec<Arc<Publication>>, Refusal> {
        let namespace = self.namespaces.of(channel)?;
        Ok(match &self.store {
            Store::Memory { streams, .. } => streams.history(channel, limit, namespace, now_ms()),
            Store::Redis { streams, .. } => streams.history(channel, limit, namespace).await?,
        })
    }

    /// The channels' part of `/metrics` (Prometheus text).
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write;
        let stats = self.hub.stats();
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "ws_channels",
            "gauge",
            "Channels with subscribers on this node.",
            stats.channels as u64,
        );
        metric(
            "ws_channel_subscriptions",
            "gauge",
            "Channel subscriptions on this node (bounded per connection by --max-subscriptions).",
            stats.subscriptions as u64,
        );
        metric(
            "ws_channel_publications_delivered_total",
            "counter",
            "Publications delivered on this node, each encoded once for all its subscribers.",
            stats.delivered,
        );
        metric(
            "ws_channel_gaps_total",
            "counter",
            "Offset ranges this node could not fill and reported as channel_gap.",
            stats.gaps,
        );
        if let Store::Memory { streams, .. } = &self.store {
            metric(
                "ws_channel_history_bytes",
                "gauge",
                "Bytes of channel history kept in memory (bounded by --channel-history-bytes).",
                streams.bytes() as u64,
            );
        }
        out
    }
}
