//! A node's listening post in a cluster (issue 23): one Redis pub/sub
//! connection, subscribed to each channel that has subscribers on this
//! node, whose publications go to the [`Hub`] in the order Redis sends them.
//!
//! Redis pub/sub drops what a node misses while its connection is down, so:
//!
//! * a publication past a hole is held back until the hole is filled from
//!   the channel's history, or reported (`channel_gap`) for what the
//!   history no longer has ([`Relay::publication`]);
//! * after the connection comes back, each channel's latest offset is
//!   compared with the last one this node delivered, and the tail is
//!   filled the same way ([`Relay::catch_up`]).
//!
//! A node listens to a channel before it reads that channel's history for
//! a recovery ([`Relay::listen`]), so that nothing published in between is
//! lost.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::hub::{Delivery, Frames, Hub};
use super::namespace::Namespaces;
use super::stream::redis::{RedisStreams, info_from_json};
use super::stream::{Position, Publication, Recovery};

/// How long a SUBSCRIBE or UNSUBSCRIBE may take: past it the connection
/// is taken to be going (its reconnect subscribes every channel listened
/// to), rather than holding every new subscriber of this node behind it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The listening post.
pub struct Relay<F> {
    hub: Arc<Hub<F>>,
    streams: Arc<RedisStreams>,
    namespaces: Arc<Namespaces>,
    frames: Arc<dyn Frames<F>>,
    client: redis::Client,
    /// The channels listened to (with subscribers on this node).
    listening: Mutex<BTreeSet<String>>,
    /// The live connection's subscribing half, once connected.
    sink: tokio::sync::Mutex<Option<redis::aio::PubSubSink>>,
}

impl<F: Clone + Send + 'static> Relay<F> {
    /// A relay for `hub`, reading from `streams` on the Redis at `client`.
    pub fn new(
        hub: Arc<Hub<F>>,
        streams: Arc<RedisStreams>,
        namespaces: Arc<Namespaces>,
        frames: Arc<dyn Frames<F>>,
        client: redis::Client,
    ) -> Arc<Self> {
        Arc::new(Self {
            hub,
            streams,
            namespaces,
            frames,
            client,
            listening: Mutex::new(BTreeSet::new()),
            sink: tokio::sync::Mutex::new(None),
        })
    }

    fn listening(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Listens to `channel` (idempotent). Returns once Redis confirmed the
    /// subscription, or at once while disconnected (the reconnect
    /// subscribes it, then catches up).
    ///
    /// Listening and forgetting take the connection's lock first, so that
    /// they reach Redis in the order they decided: a channel forgotten as
    /// a new subscriber arrives stays listened to.
    pub async fn listen(&self, channel: &str) {
        let mut sink = self.sink.lock().await;
        if !self.listening().insert(channel.to_owned()) {
            return;
        }
        if let Some(sink) = sink.as_mut() {
            // A failure or no answer in time means the connection is going:
            // the reconnect subscribes (the channel stays listened to).
            let _ = tokio::time::timeout(
                COMMAND_TIMEOUT,
                sink.subscribe(self.streams.pubsub_channel(channel)),
            )
            .await;
        }
    }

    /// Stops listening to `channel` when it has no subscriber left here
    /// (one may have come since its last one left).
    pub async fn forget(&self, channel: &str) {
        let mut sink = self.sink.lock().await;
        if self.hub.has(channel) || !self.listening().remove(channel) {
            return;
        }
        if let Some(sink) = sink.as_mut() {
            let _ = tokio::time::timeout(
                COMMAND_TIMEOUT,
                sink.unsubscribe(self.streams.pubsub_channel(channel)),
            )
            .await;
        }
    }

    /// Runs until `stop`: connects, subscribes to every channel listened
    /// to, catches up, then relays; again after each disconnection.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let prefix_len = self.streams.pubsub_channel("").len();
        while !stop.is_cancelled() {
            let connected = tokio::select! {
                () = stop.cancelled() => return,
                connected = self.client.get_async_pubsub() => connected,
            };
            let Ok(pubsub) = connected else {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            };
            let (mut sink, mut stream) = pubsub.split();
            // Held while subscribing: a channel listened to meanwhile is
            // either in the list or subscribed after it.
            let mut slot = self.sink.lock().await;
            let channels: Vec<String> = self.listening().iter().cloned().collect();
            let names: Vec<String> = channels
                .iter()
                .map(|c| self.streams.pubsub_channel(c))
                .collect();
            if !names.is_empty() && sink.subscribe(&names).await.is_err() {
                continue;
            }
            *slot = Some(sink);
            drop(slot);
            // What was published while nobody listened.
            for channel in &channels {
                self.catch_up(channel).await;
            }
            loop {
                let message = tokio::select! {
                    () = stop.cancelled() => return,
                    message = stream.next() => message,
                };
                let Some(message) = message else { break };
                let name = message.get_channel_name();
                let Some(channel) = name.get(prefix_len..) else {
                    continue;
                };
                let Ok(payload) = message.get_payload::<String>() else {
                    continue;
                };
                match parse(&payload) {
                    Some(Heard::Publication(epoch, publication)) => {
                        self.publication(channel, &epoch, publication).await;
                    }
                    Some(Heard::Join(member)) => {
                        self.hub
                            .notify(channel, &self.frames.join(channel, &member));
                    }
                    Some(Heard::Leave(member)) => {
                        self.hub
                            .notify(channel, &self.frames.leave(channel, &member));
                    }
                    None => {}
                }
            }
            *self.sink.lock().await = None;
        }
    }

    /// Delivers `publication` of `channel` to this node's subscribers,
    /// after filling (or reporting) any hole before it.
    pub async fn publication(&self, channel: &str, epoch: &str, publication: Publication) {
        // Once to find a hole, once after it was filled; a hole still
        // there (a history entry that did not read back) is reported rather
        // than the publication dropped, and it goes after the report.
        for attempt in 0..3 {
            match self
                .hub
                .deliver(channel, epoch, &publication, &*self.frames)
            {
                Delivery::Hole { from, to } if attempt == 0 => {
                    self.fill(channel, epoch, from, to).await;
                }
                Delivery::Hole { from, to } => self.hub.gap(channel, (from, to), &*self.frames),
                _ => return,
            }
        }
    }

    /// What this node missed of `channel` since its last delivery.
    pub async fn catch_up(&self, channel: &str) {
        let Some((epoch, last)) = self.hub.position(channel) else {
            return;
        };
        let Ok(namespace) = self.namespaces.of(channel) else {
            return;
        };
        let since = Position {
            epoch: epoch.clone(),
            offset: last,
        };
        match self.streams.recover(channel, Some(&since), namespace).await {
            // What that read recovered is the fill (the same read): the
            // history is not read a second time.
            Ok((position, recovery)) if position.epoch == epoch && position.offset > last => {
                self.fill_with(channel, &epoch, (last + 1, position.offset), Ok(recovery));
            }
            // Up to date; or another epoch, whose next publication the hub follows.
            _ => {}
        }
    }

    /// Fills offsets `from..=to` of `channel` from the history, reporting
    /// what it no longer has (or all of it when Redis does not answer).
    async fn fill(&self, channel: &str, epoch: &str, from: u64, to: u64) {
        let since = Position {
            epoch: epoch.to_owned(),
            offset: from - 1,
        };
        // A channel with subscribers has a namespace; were it gone, the
        // hole is reported rather than kept.
        let recovered = match self.namespaces.of(channel) {
            Ok(namespace) => self.streams.recover(channel, Some(&since), namespace).await,
            Err(_) => Err(super::stream::StreamError::Unavailable),
        };
        self.fill_with(channel, epoch, (from, to), recovered.map(|(_, r)| r));
    }

    /// Fills offsets `from..=to` of `channel` with what a read of the
    /// history after `from - 1` `recovered`, reporting what it no longer
    /// has (or all of it when the read failed).
    fn fill_with(
        &self,
        channel: &str,
        epoch: &str,
        (from, to): (u64, u64),
        recovered: Result<Recovery, super::stream::StreamError>,
    ) {
        let publications = match recovered {
            Ok(Recovery::Recovered(publications)) => publications,
            Ok(Recovery::Trimmed {
                gap: (a, b),
                publications,
            }) => {
                // Only what this fill was for: the node may hold the rest.
                if a <= to {
                    self.hub.gap(channel, (a, b.min(to)), &*self.frames);
                }
                publications
            }
            Ok(Recovery::EpochChanged | Recovery::Fresh) | Err(_) => {
                self.hub.gap(channel, (from, to), &*self.frames);
                return;
            }
        };
        let within: Vec<Arc<Publication>> = publications
            .into_iter()
            .filter(|p| p.offset <= to)
            .collect();
        self.hub.fill(channel, epoch, &within, &*self.frames);
    }
}

/// What a channel's pub/sub carries.
enum Heard {
    /// A publication of an epoch.
    Publication(String, Publication),
    /// A presence notice (issue 24), not an offset of the stream.
    Join(shared::channel::Member),
    /// Another.
    Leave(shared::channel::Member),
}

/// A pub/sub payload: `epoch\noffset\ninfo\ndata` for a publication (an
/// epoch is hex), `J\n{member}` or `L\n{member}` for a presence notice.
fn parse(payload: &str) -> Option<Heard> {
    if let Some(member) = payload.strip_prefix("J\n") {
        return serde_json::from_str(member).ok().map(Heard::Join);
    }
    if let Some(member) = payload.strip_prefix("L\n") {
        return serde_json::from_str(member).ok().map(Heard::Leave);
    }
    let mut parts = payload.splitn(4, '\n');
    let epoch = parts.next()?.to_owned();
    let offset = parts.next()?.parse().ok()?;
    let info = parts.next()?;
    let data = parts.next()?.to_owned();
    let info = if info.is_empty() {
        None
    } else {
        Some(info_from_json(info)?)
    };
    Some(Heard::Publication(
        epoch,
        Publication { offset, data, info },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::hub::tests::{Recorder, Text};
    use crate::channels::namespace::Namespace;
    use crate::channels::stream::PublishRequest;

    /// One node: its streams, hub and relay (running), on `redis`.
    struct Node {
        streams: Arc<RedisStreams>,
        hub: Arc<Hub<String>>,
        relay: Arc<Relay<String>>,
        stop: CancellationToken,
    }

    impl Drop for Node {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    fn node(redis: &testbed::RedisServer) -> Node {
        let streams = Arc::new(RedisStreams::new(
            crate::reliable::tests::redis_node(&redis.url()),
            Duration::from_secs(120),
        ));
        let hub = Arc::new(Hub::default());
        let relay = Relay::new(
            hub.clone(),
            streams.clone(),
            Arc::new(Namespaces::default()),
            Arc::new(Text),
            redis::Client::open(redis.url()).expect("a client"),
        );
        let stop = CancellationToken::new();
        tokio::spawn(relay.clone().run(stop.clone()));
        Node {
            streams,
            hub,
            relay,
            stop,
        }
    }

    /// Subscribes a recorder to `channel` on `node` as a connection would:
    /// listen, read the history, send it, go live.
    async fn subscribe(node: &Node, channel: &str) -> Arc<Recorder> {
        let recorder = Arc::new(Recorder::default());
        node.hub.subscribe(channel, 1, recorder.clone(), None);
        node.relay.listen(channel).await;
        let (position, _) = node
            .streams
            .recover(channel, None, &Namespace::default())
            .await
            .expect("up");
        let _ = node
            .hub
            .go_live(channel, 1, (&position.epoch, position.offset), &Text)
            .expect("subscribed");
        recorder
    }

    async fn publish(node: &Node, channel: &str, n: u64) {
        for _ in 0..n {
            let request = PublishRequest {
                channel: channel.into(),
                data: "1".into(),
                id: None,
                info: None,
            };
            node.streams
                .publish(request, &Namespace::default())
                .await
                .expect("published");
        }
    }

    /// Waits until `recorder` got `n` frames, within a deadline.
    async fn until_got(recorder: &Recorder, n: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let got = recorder.got();
            if got.len() >= n || tokio::time::Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn offsets(from: u64, to: u64) -> Vec<String> {
        (from..=to).map(|o| format!("pub {o}")).collect()
    }

    /// Waits until node's relay is connected (its sink is set).
    async fn connected(node: &Node) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while node.relay.sink.lock().await.is_none() {
            assert!(tokio::time::Instant::now() < deadline, "the relay connects");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publications_on_one_node_reach_subscribers_on_another_once_in_order() {
        let redis = testbed::RedisServer::start().expect("redis-server");
        let (a, b) = (node(&redis), node(&redis));
        connected(&b).await;
        let got = subscribe(&b, "x").await;
        publish(&a, "x", 200).await;
        assert_eq!(until_got(&got, 200).await, offsets(1, 200));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_whose_pubsub_was_killed_fills_what_it_missed() {
        let redis = testbed::RedisServer::start().expect("redis-server");
        let (a, b) = (node(&redis), node(&redis));
        connected(&b).await;
        let got = subscribe(&b, "x").await;
        publish(&a, "x", 50).await;
        assert_eq!(until_got(&got, 50).await, offsets(1, 50));
        // Redis drops b's pub/sub connection: what is published until b is
        // back reaches it from the history, in order, once.
        let mut conn = redis::Client::open(redis.url())
            .expect("a client")
            .get_multiplexed_async_connection()
            .await
            .expect("connected");
        let killed: u64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut conn)
            .await
            .expect("killed");
        assert!(killed >= 1);
        publish(&a, "x", 100).await;
        assert_eq!(until_got(&got, 150).await, offsets(1, 150));
        // And live again after it.
        publish(&a, "x", 10).await;
        assert_eq!(until_got(&got, 160).await, offsets(1, 160));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_the_history_no_longer_has_is_reported_as_a_gap() {
        let redis = testbed::RedisServer::start().expect("redis-server");
        let b = node(&redis);
        connected(&b).await;
        let got = subscribe(&b, "x").await;
        b.stop.cancel();
        // Nobody relays: 150 publications, of which the default namespace
        // keeps 100.
        let a = node(&redis);
        publish(&a, "x", 150).await;
        b.relay.catch_up("x").await;
        let mut want = vec!["gap 1-50".to_owned()];
        want.extend(offsets(51, 150));
        assert_eq!(got.got(), want);
    }
}
