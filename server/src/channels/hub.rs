//! One node's subscribers per channel, and the order in which each gets
//! the channel's publications (issue 23).
//!
//! A publication reaches the hub once per node (from this node's publish,
//! or from Redis pub/sub in a cluster), and is encoded once there
//! ([`Frames`]); each subscriber's sink gets the same frame.
//!
//! The hub is also the one record of who is subscribed to what on this
//! node: a connection's count (`--max-subscriptions`), its channels at a
//! token refresh, and its clean-up when it ends ([`Hub::leave`]) all read
//! it, so that an admin's unsubscribe and the connection cannot disagree.
//!
//! # The order each subscriber sees
//!
//! * **Recovery, then live, without a seam.** A subscription is added
//!   recovering ([`Hub::subscribe`]): live publications are held for it
//!   while the caller reads what it missed from the stream (after the node
//!   listens to the channel, so nothing falls between the two). The caller
//!   sends the recovered ones, then [`Hub::go_live`] with the last offset it
//!   sent: the held ones after it follow, those at or below it are dropped.
//!   So each offset reaches the subscriber once, in order.
//! * **Holes.** The hub keeps the last offset it delivered per channel.
//!   A publication past a hole (Redis pub/sub dropped what this node missed
//!   while disconnected) is not delivered until the caller filled the hole
//!   from the history ([`Delivery::Hole`], then [`Hub::fill`]), or reported
//!   what it could not have ([`Hub::gap`]): never skipped in silence.
//! * **A new epoch.** A publication of another epoch means the stream was
//!   lost and started again: every subscriber gets the new epoch's notice
//!   (a `subscribed` with `reason: epoch_changed`) and follows it
//!   ([`Delivery::EpochChanged`]); one still recovering gets the notice
//!   when it goes live, with everything of the new epoch held for it.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::stream::Publication;

/// Where a subscriber's frames go (a connection's outbound queue).
pub trait Sink<F>: Send + Sync {
    /// Queues a live `frame`; false when the subscriber cannot take it (its
    /// queue is full: the connection is then closed as a slow consumer, and
    /// its client recovers by offset when it comes back).
    fn send(&self, frame: &F) -> bool;

    /// Queues `frame` whatever the bounds: called by the subscriber's own
    /// connection task (its recovery going live), which drains the queue.
    fn send_own(&self, frame: &F) {
        self.send(frame);
    }
}

/// How a channel's frames are made: once per node per publication.
pub trait Frames<F>: Send + Sync {
    /// A publication's (`pub`).
    fn publication(&self, channel: &str, publication: &Publication) -> F;
    /// Offsets `from..=to` that could not be had (`channel_gap`).
    fn gap(&self, channel: &str, from: u64, to: u64) -> F;
    /// The stream started again at `epoch`, after `offset` (a `subscribed`
    /// with `recovered: false`, `reason: epoch_changed`).
    fn new_epoch(&self, channel: &str, epoch: &str, offset: u64) -> F;
}

/// What is held for a subscriber while it recovers.
struct Held<F> {
    frames: Vec<(u64, F)>,
    /// The stream started again meanwhile: its notice, sent first, and the
    /// held frames (all of the new epoch) sent whatever their offsets.
    reset: Option<F>,
}

/// One subscriber's state.
struct Subscriber<F> {
    sink: Arc<dyn Sink<F>>,
    /// Held while the subscription recovers; `None` once live.
    held: Option<Held<F>>,
    /// What its recovery sent already: a node whose relay lags behind the
    /// stream delivers those offsets after it went live, and they are not
    /// sent twice.
    sent_through: u64,
}

/// One channel on this node.
struct Local<F> {
    subscribers: HashMap<u64, Subscriber<F>>,
    /// The epoch and the last offset delivered on this node.
    epoch: Option<Arc<str>>,
    last: u64,
}

impl<F> Default for Local<F> {
    fn default() -> Self {
        Self {
            subscribers: HashMap::new(),
            epoch: None,
            last: 0,
        }
    }
}

/// What became of a publication handed to [`Hub::deliver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Sent to this many subscribers (and held for those recovering).
    Sent(usize),
    /// Already delivered (a repeat from pub/sub): dropped.
    Repeat,
    /// Offsets `from..=to` are missing before it: fill them
    /// ([`Hub::fill`]) or report them ([`Hub::gap`]), then deliver it again.
    Hole {
        /// The first missing offset.
        from: u64,
        /// The last missing offset.
        to: u64,
    },
    /// Its epoch is not the one this node followed: the stream started
    /// again. The hub now follows the new epoch from this publication.
    EpochChanged,
    /// No subscriber on this node.
    Nobody,
}

/// What [`Hub::subscribe`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// Added, as the channel's first subscriber on this node (the node
    /// then listens to the channel before reading its history).
    First,
    /// Added beside others.
    Added,
    /// Subscribed already: nothing changed.
    Already,
}

struct Inner<F> {
    channels: HashMap<Arc<str>, Local<F>>,
    /// Each connection's channels.
    members: HashMap<u64, BTreeSet<Arc<str>>>,
}

/// Every channel with subscribers on this node.
pub struct Hub<F> {
    inner: Mutex<Inner<F>>,
    /// Publications delivered on this node (each once, whatever the
    /// number of its subscribers), for `/metrics`.
    delivered: AtomicU64,
    /// Ranges reported as `channel_gap`, for `/metrics`.
    gaps: AtomicU64,
}

impl<F> Default for Hub<F> {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                channels: HashMap::new(),
                members: HashMap::new(),
            }),
            delivered: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
        }
    }
}

/// What `/metrics` shows of a hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubStats {
    /// Channels with subscribers on this node.
    pub channels: usize,
    /// Subscriptions on this node.
    pub subscriptions: usize,
    /// Publications delivered on this node.
    pub delivered: u64,
    /// Holes reported as `channel_gap`.
    pub gaps: u64,
}

impl<F: Clone> Hub<F> {
    fn lock(&self) -> MutexGuard<'_, Inner<F>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds connection `conn` to `channel`, recovering: live publications
    /// are held for it until [`Hub::go_live`]. Idempotent.
    pub fn subscribe(&self, channel: &str, conn: u64, sink: Arc<dyn Sink<F>>) -> Joined {
        let mut inner = self.lock();
        let Inner { channels, members } = &mut *inner;
        let name = channels
            .get_key_value(channel)
            .map_or_else(|| Arc::from(channel), |(name, _)| name.clone());
        let first = !channels.contains_key(channel);
        let local = channels.entry(name.clone()).or_default();
        if local.subscribers.contains_key(&conn) {
            return Joined::Already;
        }
        local.subscribers.insert(
            conn,
            Subscriber {
                sink,
                held: Some(Held {
                    frames: Vec::new(),
                    reset: None,
                }),
                sent_through: 0,
            },
        );
        members.entry(conn).or_default().insert(name);
        if first { Joined::First } else { Joined::Added }
    }

    /// The recovered publications up to `sent` reached `conn`: it goes
    /// live, with what was held for it after `sent`, in order. Records
    /// `epoch` and `sent` as the node's position when it has none. Offsets
    /// that fell between `sent` and the first held one (pub/sub dropped
    /// them while the history was read) are reported in order, with a
    /// `channel_gap`, and returned.
    pub fn go_live(
        &self,
        channel: &str,
        conn: u64,
        (epoch, sent): (&str, u64),
        frames: &dyn Frames<F>,
    ) -> Option<(u64, u64)> {
        let mut inner = self.lock();
        let local = inner.channels.get_mut(channel)?;
        if local.epoch.is_none() {
            local.epoch = Some(Arc::from(epoch));
            local.last = sent;
        }
        let subscriber = local.subscribers.get_mut(&conn)?;
        let held = subscriber.held.take()?;
        if let Some(reset) = held.reset {
            // All of the new epoch, which the recovery did not send.
            subscriber.sent_through = held.frames.last().map_or(0, |(offset, _)| *offset);
            subscriber.sink.send_own(&reset);
            for (_, frame) in &held.frames {
                subscriber.sink.send_own(frame);
            }
            return None;
        }
        let mut next = sent.saturating_add(1);
        let mut hole = None;
        for (offset, frame) in held.frames {
            if offset < next {
                continue;
            }
            if offset > next && hole.is_none() {
                hole = Some((next, offset - 1));
                subscriber
                    .sink
                    .send_own(&frames.gap(channel, next, offset - 1));
            }
            subscriber.sink.send_own(&frame);
            next = offset.saturating_add(1);
        }
        subscriber.sent_through = next.saturating_sub(1);
        hole
    }

    /// Removes `conn` from `channel`; returns whether it was subscribed,
    /// and whether the channel has no subscriber left on this node (the
    /// node then stops listening).
    pub fn unsubscribe(&self, channel: &str, conn: u64) -> (bool, bool) {
        let mut inner = self.lock();
        let Inner { channels, members } = &mut *inner;
        if let Some(mine) = members.get_mut(&conn) {
            mine.remove(channel);
            if mine.is_empty() {
                members.remove(&conn);
            }
        }
        let Some(local) = channels.get_mut(channel) else {
            return (false, false);
        };
        let was = local.subscribers.remove(&conn).is_some();
        if local.subscribers.is_empty() {
            channels.remove(channel);
            return (was, true);
        }
        (was, false)
    }

    /// Removes `conn` from every channel (it ended); returns the channels
    /// left without a subscriber on this node.
    pub fn leave(&self, conn: u64) -> Vec<Arc<str>> {
        let mut inner = self.lock();
        let Inner { channels, members } = &mut *inner;
        let Some(mine) = members.remove(&conn) else {
            return Vec::new();
        };
        let mut emptied = Vec::new();
        for channel in mine {
            if let Some(local) = channels.get_mut(&channel) {
                local.subscribers.remove(&conn);
                if local.subscribers.is_empty() {
                    channels.remove(&channel);
                    emptied.push(channel);
                }
            }
        }
        emptied
    }

    /// How many channels `conn` is subscribed to.
    pub fn count_of(&self, conn: u64) -> usize {
        self.lock().members.get(&conn).map_or(0, BTreeSet::len)
    }

    /// The channels `conn` is subscribed to.
    pub fn channels_of(&self, conn: u64) -> Vec<Arc<str>> {
        self.lock()
            .members
            .get(&conn)
            .map(|mine| mine.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether `channel` has subscribers on this node.
    pub fn has(&self, channel: &str) -> bool {
        self.lock().channels.contains_key(channel)
    }

    /// Hands a publication of `epoch` to the channel's subscribers; its
    /// frame is made once, when it is to be sent.
    pub fn deliver(
        &self,
        channel: &str,
        epoch: &str,
        publication: &Publication,
        frames: &dyn Frames<F>,
    ) -> Delivery {
        let mut inner = self.lock();
        let Some(local) = inner.channels.get_mut(channel) else {
            return Delivery::Nobody;
        };
        let offset = publication.offset;
        let changed = match &local.epoch {
            // The node's first: where it starts (each subscriber holds it
            // until its recovery says where it was).
            None => {
                local.epoch = Some(Arc::from(epoch));
                false
            }
            Some(known) if **known != *epoch => true,
            Some(_) if offset <= local.last => return Delivery::Repeat,
            Some(_) if offset > local.last.saturating_add(1) => {
                return Delivery::Hole {
                    from: local.last + 1,
                    to: offset - 1,
                };
            }
            Some(_) => false,
        };
        let notice = changed.then(|| {
            local.epoch = Some(Arc::from(epoch));
            frames.new_epoch(channel, epoch, offset.saturating_sub(1))
        });
        local.last = offset;
        self.delivered.fetch_add(1, Relaxed);
        let frame = frames.publication(channel, publication);
        let mut sent = 0;
        for subscriber in local.subscribers.values_mut() {
            match (&mut subscriber.held, &notice) {
                (Some(held), Some(notice)) => {
                    held.frames.clear();
                    held.reset = Some(notice.clone());
                    held.frames.push((offset, frame.clone()));
                }
                (Some(held), None) => held.frames.push((offset, frame.clone())),
                (None, Some(notice)) => {
                    subscriber.sink.send(notice);
                    subscriber.sent_through = offset;
                    if subscriber.sink.send(&frame) {
                        sent += 1;
                    }
                }
                (None, None) if offset <= subscriber.sent_through => {}
                (None, None) => {
                    subscriber.sent_through = offset;
                    if subscriber.sink.send(&frame) {
                        sent += 1;
                    }
                }
            }
        }
        if changed {
            Delivery::EpochChanged
        } else {
            Delivery::Sent(sent)
        }
    }

    /// Offsets `from..=to` could not be had (trimmed from the history):
    /// their `channel_gap` goes to the live subscribers, and the node goes
    /// on after `to`.
    pub fn gap(&self, channel: &str, (from, to): (u64, u64), frames: &dyn Frames<F>) {
        let mut inner = self.lock();
        let Some(local) = inner.channels.get_mut(channel) else {
            return;
        };
        local.last = local.last.max(to);
        self.gaps.fetch_add(1, Relaxed);
        let notice = frames.gap(channel, from, to);
        for subscriber in local.subscribers.values() {
            if subscriber.held.is_none() {
                subscriber.sink.send(&notice);
            }
        }
    }

    /// The channels with subscribers on this node, with their counts.
    pub fn counts(&self) -> Vec<(String, usize)> {
        let mut counts: Vec<(String, usize)> = self
            .lock()
            .channels
            .iter()
            .map(|(name, local)| (name.to_string(), local.subscribers.len()))
            .collect();
        counts.sort();
        counts
    }

    /// What `/metrics` shows.
    pub fn stats(&self) -> HubStats {
        let inner = self.lock();
        HubStats {
            channels: inner.channels.len(),
            subscriptions: inner.members.values().map(BTreeSet::len).sum(),
            delivered: self.delivered.load(Relaxed),
            gaps: self.gaps.load(Relaxed),
        }
    }

    /// The node's last delivered offset of `channel`, with its epoch.
    pub fn position(&self, channel: &str) -> Option<(String, u64)> {
        let inner = self.lock();
        let local = inner.channels.get(channel)?;
        Some((local.epoch.as_deref()?.to_owned(), local.last))
    }

    /// Delivers publications that fill a hole, in order (from the history).
    pub fn fill(
        &self,
        channel: &str,
        epoch: &str,
        publications: &[Arc<Publication>],
        frames: &dyn Frames<F>,
    ) {
        for publication in publications {
            // In order and without holes: each is the next.
            let _ = self.deliver(channel, epoch, publication, frames);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A sink that records what it got (also the relay's tests').
    #[derive(Default)]
    pub(crate) struct Recorder(Mutex<Vec<String>>);

    impl Sink<String> for Recorder {
        fn send(&self, frame: &String) -> bool {
            self.0.lock().expect("not poisoned").push(frame.clone());
            true
        }
    }

    impl Recorder {
        pub(crate) fn got(&self) -> Vec<String> {
            self.0.lock().expect("not poisoned").clone()
        }
    }

    fn publication(offset: u64) -> Publication {
        Publication {
            offset,
            data: format!("{offset}"),
            info: None,
        }
    }

    /// Frames as short text (also the relay's tests').
    pub(crate) struct Text;

    impl Frames<String> for Text {
        fn publication(&self, _: &str, p: &Publication) -> String {
            format!("pub {}", p.offset)
        }
        fn gap(&self, _: &str, from: u64, to: u64) -> String {
            format!("gap {from}-{to}")
        }
        fn new_epoch(&self, _: &str, epoch: &str, offset: u64) -> String {
            format!("epoch {epoch} after {offset}")
        }
    }

    fn deliver(hub: &Hub<String>, epoch: &str, offset: u64) -> Delivery {
        hub.deliver("c", epoch, &publication(offset), &Text)
    }

    #[test]
    fn recovery_then_live_without_a_seam() {
        let hub = Hub::default();
        let a = Arc::new(Recorder::default());
        assert_eq!(hub.subscribe("c", 1, a.clone()), Joined::First);
        // Live publications while the history is read: held.
        assert_eq!(deliver(&hub, "e", 4), Delivery::Sent(0));
        assert_eq!(deliver(&hub, "e", 5), Delivery::Sent(0));
        // The history had up to 4; the caller sent 3 and 4 itself.
        assert_eq!(hub.go_live("c", 1, ("e", 4), &Text), None);
        assert_eq!(a.got(), ["pub 5"], "4 once, 5 after it");
        assert_eq!(deliver(&hub, "e", 6), Delivery::Sent(1));
        assert_eq!(a.got(), ["pub 5", "pub 6"]);
        // A second subscriber joins while the channel is live.
        let b = Arc::new(Recorder::default());
        assert_eq!(hub.subscribe("c", 2, b.clone()), Joined::Added);
        assert_eq!(hub.subscribe("c", 2, b.clone()), Joined::Already);
        assert_eq!(deliver(&hub, "e", 7), Delivery::Sent(1));
        assert_eq!(hub.go_live("c", 2, ("e", 6), &Text), None);
        assert_eq!(b.got(), ["pub 7"]);
        assert_eq!(hub.counts(), [("c".to_owned(), 2)]);
        assert_eq!(hub.count_of(2), 1);
        assert_eq!(hub.unsubscribe("c", 1), (true, false));
        assert_eq!(hub.unsubscribe("c", 2), (true, true), "the node's last");
        assert_eq!(hub.unsubscribe("c", 2), (false, false), "idempotent");
        assert_eq!(hub.count_of(2), 0);
        assert_eq!(deliver(&hub, "e", 8), Delivery::Nobody);
    }

    #[test]
    fn a_repeat_is_dropped_and_a_hole_is_filled_before_what_follows() {
        let hub = Hub::default();
        let a = Arc::new(Recorder::default());
        hub.subscribe("c", 1, a.clone());
        assert_eq!(hub.go_live("c", 1, ("e", 2), &Text), None);
        assert_eq!(deliver(&hub, "e", 2), Delivery::Repeat);
        assert_eq!(deliver(&hub, "e", 6), Delivery::Hole { from: 3, to: 5 });
        assert!(a.got().is_empty(), "nothing past the hole yet");
        let history: Vec<Arc<Publication>> = (3..=5).map(|o| Arc::new(publication(o))).collect();
        hub.fill("c", "e", &history, &Text);
        assert_eq!(deliver(&hub, "e", 6), Delivery::Sent(1));
        assert_eq!(a.got(), ["pub 3", "pub 4", "pub 5", "pub 6"]);
        assert_eq!(hub.position("c"), Some(("e".to_owned(), 6)));
    }

    #[test]
    fn what_cannot_be_filled_is_reported_and_the_node_goes_on() {
        let hub = Hub::default();
        let a = Arc::new(Recorder::default());
        hub.subscribe("c", 1, a.clone());
        assert_eq!(hub.go_live("c", 1, ("e", 0), &Text), None);
        assert_eq!(deliver(&hub, "e", 4), Delivery::Hole { from: 1, to: 3 });
        hub.gap("c", (1, 3), &Text);
        assert_eq!(deliver(&hub, "e", 4), Delivery::Sent(1));
        assert_eq!(a.got(), ["gap 1-3", "pub 4"]);
    }

    #[test]
    fn a_hole_between_the_recovery_and_the_held_publications_is_returned() {
        let hub = Hub::default();
        let a = Arc::new(Recorder::default());
        hub.subscribe("c", 1, a.clone());
        deliver(&hub, "e", 7);
        deliver(&hub, "e", 8);
        // The history said 4: 5 and 6 were dropped on the way.
        assert_eq!(hub.go_live("c", 1, ("e", 4), &Text), Some((5, 6)));
        assert_eq!(a.got(), ["gap 5-6", "pub 7", "pub 8"]);
    }

    #[test]
    fn a_new_epoch_is_followed_from_its_publication() {
        let hub = Hub::default();
        let a = Arc::new(Recorder::default());
        hub.subscribe("c", 1, a.clone());
        assert_eq!(hub.go_live("c", 1, ("e", 9), &Text), None);
        assert_eq!(deliver(&hub, "f", 1), Delivery::EpochChanged);
        assert_eq!(deliver(&hub, "f", 2), Delivery::Sent(1));
        assert_eq!(a.got(), ["epoch f after 0", "pub 1", "pub 2"]);
        assert_eq!(hub.position("c"), Some(("f".to_owned(), 2)));
    }

    #[test]
    fn a_subscriber_recovering_through_a_new_epoch_gets_its_notice_then_all_of_it() {
        let hub = Hub::default();
        let a = Arc::new(Recorder::default());
        hub.subscribe("c", 1, a.clone());
        deliver(&hub, "e", 5);
        deliver(&hub, "f", 1);
        deliver(&hub, "f", 2);
        // Its recovery read epoch e up to 7: the new epoch's 1 and 2 still come.
        assert_eq!(hub.go_live("c", 1, ("e", 7), &Text), None);
        assert_eq!(a.got(), ["epoch f after 0", "pub 1", "pub 2"]);
    }

    #[test]
    fn what_a_recovery_sent_is_not_sent_again_by_a_node_that_lags() {
        let hub = Hub::default();
        let a = Arc::new(Recorder::default());
        let b = Arc::new(Recorder::default());
        hub.subscribe("c", 1, a.clone());
        assert_eq!(hub.go_live("c", 1, ("e", 3), &Text), None);
        // b recovered from the stream up to 6; the node has delivered 3.
        hub.subscribe("c", 2, b.clone());
        assert_eq!(hub.go_live("c", 2, ("e", 6), &Text), None);
        for offset in 4..=7 {
            deliver(&hub, "e", offset);
        }
        assert_eq!(a.got(), ["pub 4", "pub 5", "pub 6", "pub 7"]);
        assert_eq!(b.got(), ["pub 7"], "4 to 6 came with its recovery");
    }

    #[test]
    fn a_connection_leaves_every_channel_at_once() {
        let hub = Hub::default();
        let a = Arc::new(Recorder::default());
        let b = Arc::new(Recorder::default());
        for channel in ["x", "y", "z"] {
            hub.subscribe(channel, 1, a.clone());
        }
        hub.subscribe("y", 2, b.clone());
        assert_eq!(hub.count_of(1), 3);
        assert_eq!(hub.channels_of(1).len(), 3);
        let mut emptied: Vec<String> = hub.leave(1).iter().map(|c| c.to_string()).collect();
        emptied.sort();
        assert_eq!(emptied, ["x", "z"], "y still has b");
        assert_eq!(hub.count_of(1), 0);
        assert!(hub.has("y") && !hub.has("x"));
        assert!(hub.leave(1).is_empty());
    }
}
