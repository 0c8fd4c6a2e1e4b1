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

use shared::channel::Member;

use super::hub::{Frames, Hub, Joined, Presence, Removed, Sink};
use super::namespace::{ChannelError, Namespace, Namespaces};
use super::presence::{Found, RedisPresence};
use super::relay::Relay;
use super::stream::memory::MemoryStreams;
use super::stream::redis::RedisStreams;
use super::stream::{Position, Publication, PublishRequest, Published, Recovery, StreamError};
use crate::clock::now_ms;

/// Members of dead nodes one reaping script removes at most: Redis runs
/// nothing else meanwhile.
const REAP_BUDGET: usize = 1000;

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
    /// `--channel-request-rate` reached.
    #[error("{0} subscribe and presence requests per second at most: this one was not served")]
    RequestsLimited(f64),
    /// The channel has its namespace's `max_members`.
    #[error("this channel has {0} members, its most")]
    ChannelFull(usize),
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
            Self::RateLimited(_) | Self::RequestsLimited(_) => ErrorCode::RateLimited,
            Self::ChannelFull(_) => ErrorCode::ChannelFull,
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

    fn join(&self, channel: &str, member: &Member) -> Message {
        crate::wire::text(&shared::ServerMessage::Join {
            channel: channel.to_owned(),
            info: member.clone(),
        })
    }

    fn leave(&self, channel: &str, member: &Member) -> Message {
        crate::wire::text(&shared::ServerMessage::Leave {
            channel: channel.to_owned(),
            info: member.clone(),
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
    /// The cluster's, in Redis, with the node's relay and presence.
    Redis {
        streams: Arc<RedisStreams>,
        relay: Arc<Relay<Message>>,
        presence: Arc<RedisPresence>,
        heartbeat: Duration,
    },
}

/// The node's channels.
pub struct Channels {
    namespaces: Arc<Namespaces>,
    hub: Arc<Hub<Message>>,
    store: Store,
    frames: Arc<WireFrames>,
    /// A reap of dead nodes' presence runs (one at a time).
    reaping: std::sync::atomic::AtomicBool,
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
            reaping: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A cluster node's channels, on the Redis of `node`.
    pub fn redis(
        namespaces: Namespaces,
        node: &Arc<crate::cluster::Node>,
        dedup_window: Duration,
        (heartbeat, node_ttl): (Duration, Duration),
    ) -> Self {
        let namespaces = Arc::new(namespaces);
        let hub = Arc::<Hub<Message>>::default();
        let frames = Arc::new(WireFrames);
        let backend: Arc<dyn crate::reliable::Backend> = node.clone();
        let streams = Arc::new(RedisStreams::new(backend.clone(), dedup_window));
        let presence = Arc::new(RedisPresence::new(backend, node_ttl));
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
            store: Store::Redis {
                streams,
                relay,
                presence,
                heartbeat,
            },
            frames,
            reaping: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Starts the background work until `stop`: the relay in a cluster,
    /// the sweep of idle channels in memory.
    pub fn start(self: &Arc<Self>, stop: &CancellationToken) {
        match &self.store {
            Store::Redis {
                relay, heartbeat, ..
            } => {
                tokio::spawn(relay.clone().run(stop.clone()));
                let (channels, stop, every) = (self.clone(), stop.clone(), *heartbeat);
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(every) => {}
                        }
                        channels.presence_heartbeat().await;
                    }
                });
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
        (sink, member): (Arc<dyn Sink<Message>>, Option<Presence>),
        since: Option<&Position>,
    ) -> Result<Subscribed, Refusal> {
        let namespace = self.namespaces.of(channel)?;
        let member = member.filter(|_| namespace.presence);
        let joining = member.as_ref().map(|p| p.member.clone());
        match self.hub.subscribe(channel, conn, sink, member) {
            Joined::Already => {
                let (epoch, offset) = self.hub.position(channel).unwrap_or_default();
                return Ok(Subscribed::Already(Position { epoch, offset }));
            }
            // Every new subscriber waits until the node listens, not only
            // the first: the first's SUBSCRIBE may still be on its way, and
            // a recovery read before it lands would leave a hole.
            Joined::First | Joined::Added => {
                if let Store::Redis { relay, .. } = &self.store {
                    relay.listen(channel).await;
                }
            }
        }
        if let Some(member) = joining
            && let Err(refusal) = self.join(channel, conn, &member, namespace).await
        {
            // Not a member after all: out without a `leave` (it had no `join`).
            let removed = self.hub.unsubscribe(channel, conn);
            if removed.emptied
                && let Store::Redis { relay, .. } = &self.store
            {
                relay.forget(channel).await;
            }
            return Err(refusal);
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
    /// it goes live, with what was held for it after them; false when the
    /// subscription ended meanwhile (the admin API's unsubscribe).
    pub fn go_live(&self, channel: &str, conn: u64, (epoch, sent): (&str, u64)) -> bool {
        self.hub
            .go_live(channel, conn, (epoch, sent), &*self.frames)
            .is_ok()
    }

    /// `member` (connection `conn`) joins `channel`'s presence: counted
    /// against `max_members`, and announced where the namespace has
    /// `join_leave`.
    async fn join(
        &self,
        channel: &str,
        conn: u64,
        member: &Member,
        namespace: &Namespace,
    ) -> Result<(), Refusal> {
        let max = namespace.max_members;
        match &self.store {
            Store::Memory { .. } => {
                if max > 0 && self.hub.members(channel).len() > max {
                    return Err(Refusal::ChannelFull(max));
                }
                if namespace.join_leave {
                    self.hub.notify(channel, &self.frames.join(channel, member));
                }
                Ok(())
            }
            Store::Redis {
                streams, presence, ..
            } => {
                let pubsub = streams.pubsub_channel(channel);
                let notify = namespace.join_leave;
                if presence
                    .join((channel, &pubsub), conn, member, (notify, max))
                    .await?
                {
                    Ok(())
                } else {
                    Err(Refusal::ChannelFull(max))
                }
            }
        }
    }

    /// What follows the end of a subscription: the node stops listening
    /// to a channel it no longer has subscribers for, and a member leaves.
    async fn removed(&self, channel: &str, conn: u64, removed: Removed) {
        let join_leave = self
            .namespaces
            .of(channel)
            .is_ok_and(|namespace| namespace.join_leave);
        match &self.store {
            Store::Memory { .. } => {
                if let Some(member) = removed.member
                    && join_leave
                {
                    self.hub
                        .notify(channel, &self.frames.leave(channel, &member));
                }
            }
            Store::Redis {
                streams,
                relay,
                presence,
                ..
            } => {
                if removed.member.is_some() {
                    let pubsub = streams.pubsub_channel(channel);
                    // Unanswered: the member goes with the run's liveness
                    // (a dead node's), or its key's TTL.
                    let _ = presence.leave((channel, &pubsub), conn, join_leave).await;
                }
                if removed.emptied {
                    relay.forget(channel).await;
                }
            }
        }
    }

    /// Ends `conn`'s subscription to `channel`; returns whether it had one.
    pub async fn unsubscribe(&self, channel: &str, conn: u64) -> bool {
        let removed = self.hub.unsubscribe(channel, conn);
        let was = removed.was;
        self.removed(channel, conn, removed).await;
        was
    }

    /// Connection `conn` ended: out of every channel, at once; in a
    /// cluster, what Redis must hear of it is told in the background.
    pub fn leave(self: &Arc<Self>, conn: u64) {
        let removed = self.hub.leave(conn);
        if removed.is_empty() {
            return;
        }
        match &self.store {
            Store::Memory { .. } => {
                for (channel, removed) in removed {
                    if let (Some(member), Ok(namespace)) =
                        (&removed.member, self.namespaces.of(&channel))
                        && namespace.join_leave
                    {
                        self.hub
                            .notify(&channel, &self.frames.leave(&channel, member));
                    }
                }
            }
            Store::Redis { .. } => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    let channels = self.clone();
                    runtime.spawn(async move {
                        for (channel, removed) in removed {
                            channels.removed(&channel, conn, removed).await;
                        }
                    });
                }
            }
        }
    }

    /// `channel`'s presence: how many members and users, and the first
    /// `limit` members.
    ///
    /// # Errors
    ///
    /// [`Refusal::Channel`] for a bad name or namespace,
    /// [`Refusal::PermissionDenied`] where the namespace keeps no presence,
    /// [`Refusal::Unavailable`] when Redis does not answer.
    pub async fn presence(&self, channel: &str, limit: usize) -> Result<Found, Refusal> {
        let namespace = self.namespaces.of(channel)?;
        if !namespace.presence {
            return Err(Refusal::PermissionDenied(
                "see presence (off in its namespace)",
            ));
        }
        match &self.store {
            Store::Memory { .. } => {
                let members = self.hub.members(channel);
                let mut users: Vec<&str> =
                    members.iter().filter_map(|m| m.user.as_deref()).collect();
                users.sort_unstable();
                users.dedup();
                Ok(Found {
                    clients: members.len() as u64,
                    users: users.len() as u64,
                    members: members
                        .iter()
                        .take(limit)
                        .map(|m| Member::clone(m))
                        .collect(),
                })
            }
            Store::Redis { presence, .. } => Ok(presence.query(channel, limit).await?),
        }
    }

    /// A cluster node's presence heartbeat: its run is alive and its keys
    /// kept; written again when Redis lost them; then, in a task of their
    /// own (one at a time, so that a large dead node does not hold this
    /// node's heartbeat back), the members of dead runs are reaped.
    async fn presence_heartbeat(self: &Arc<Self>) {
        let Store::Redis {
            streams, presence, ..
        } = &self.store
        else {
            return;
        };
        let members = self.hub.presence_members();
        let mut channels: Vec<Arc<str>> = members.iter().map(|(c, _, _)| c.clone()).collect();
        channels.sort_unstable();
        channels.dedup();
        if let Ok(false) = presence.heartbeat(&channels).await {
            if !members.is_empty() {
                tracing::info!("channel presence: writing this node's members to Redis again");
            }
            let mut complete = true;
            for (channel, conn, member) in &members {
                let pubsub = streams.pubsub_channel(channel);
                let written = presence
                    .join((channel, &pubsub), *conn, member, (false, 0))
                    .await;
                complete &= written.is_ok();
                // Left while it was written: its leave found nothing.
                if !self.hub.holds(channel, *conn) {
                    complete &= presence
                        .leave((channel, &pubsub), *conn, false)
                        .await
                        .is_ok();
                }
            }
            if complete {
                let _ = presence.synced().await;
            }
        }
        if !self.reaping.swap(true, std::sync::atomic::Ordering::AcqRel) {
            let channels = self.clone();
            tokio::spawn(async move {
                if let Store::Redis { presence, .. } = &channels.store {
                    let notices = channels.namespaces.with_join_leave();
                    let notices = (notices.0.as_slice(), notices.1);
                    if let Ok(removed) = presence.reap(notices, REAP_BUDGET).await
                        && removed > 0
                    {
                        tracing::info!(
                            removed,
                            "channel presence: reaped the members of dead nodes"
                        );
                    }
                }
                channels
                    .reaping
                    .store(false, std::sync::atomic::Ordering::Release);
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
