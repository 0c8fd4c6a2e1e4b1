//! One node's subscribers per channel, and the order in which each gets
//! the channel's publications (issue 23).
//!
//! A publication reaches the hub once per node (from this node's publish,
//! or from Redis pub/sub in a cluster), and is encoded once there
//! ([`Hub::deliver`] takes the encoder); each subscriber's sink gets the
//! same frame.
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
//!   lost and started again: every subscriber is told
//!   ([`Delivery::EpochChanged`]) and follows the new one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::stream::Publication;

/// Where a subscriber's frames go (a connection's outbound queue).
pub trait Sink<F>: Send + Sync {
    /// Queues `frame`; false when the subscriber cannot take it (its queue
    /// is full: the connection is then closed as a slow consumer, and the
    /// subscription ends with it).
    fn send(&self, frame: &F) -> bool;
}

/// One subscriber's state.
struct Subscriber<F> {
    sink: Arc<dyn Sink<F>>,
    /// Held while the subscription recovers; `None` once live.
    held: Option<Vec<(u64, F)>>,
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

/// Every channel with subscribers on this node.
pub struct Hub<F> {
    channels: Mutex<HashMap<Arc<str>, Local<F>>>,
}

impl<F> Default for Hub<F> {
    fn default() -> Self {
        Self {
            channels: Mutex::new(HashMap::new()),
        }
    }
}

impl<F: Clone> Hub<F> {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Local<F>>> {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds connection `conn` to `channel`, recovering: live publications
    /// are held for it until [`Hub::go_live`]. Returns whether it is the
    /// channel's first subscriber on this node (the node then listens to
    /// the channel before reading its history). Idempotent: subscribing
    /// again keeps the subscription as it is and returns `false`.
    pub fn subscribe(&self, channel: &str, conn: u64, sink: Arc<dyn Sink<F>>) -> bool {
        let mut channels = self.lock();
        let first = !channels.contains_key(channel);
        let local = channels.entry(Arc::from(channel)).or_default();
        if local.subscribers.contains_key(&conn) {
            return false;
        }
        local.subscribers.insert(
            conn,
            Subscriber {
                sink,
                held: Some(Vec::new()),
            },
        );
        first
    }

    /// The recovered publications up to `sent` reached `conn`: it goes
    /// live, with what was held for it after `sent`, in order. Records
    /// `epoch` and `sent` as the node's position when it has none. Offsets
    /// that fell between `sent` and the first held one (pub/sub dropped
    /// them while the history was read) are reported in order, with the
    /// frame `gap` makes of them, and returned.
    pub fn go_live(
        &self,
        channel: &str,
        conn: u64,
        (epoch, sent): (&str, u64),
        gap: impl FnOnce(u64, u64) -> F,
    ) -> Option<(u64, u64)> {
        let mut channels = self.lock();
        let local = channels.get_mut(channel)?;
        if local.epoch.is_none() {
            local.epoch = Some(Arc::from(epoch));
            local.last = sent;
        }
        let subscriber = local.subscribers.get_mut(&conn)?;
        let held = subscriber.held.take().unwrap_or_default();
        let mut next = sent.saturating_add(1);
        let mut hole = None;
        let mut gap = Some(gap);
        for (offset, frame) in held {
            if offset < next {
                continue;
            }
            if offset > next
                && let Some(gap) = gap.take()
            {
                hole = Some((next, offset - 1));
                subscriber.sink.send(&gap(next, offset - 1));
            }
            subscriber.sink.send(&frame);
            next = offset.saturating_add(1);
        }
        hole
    }

    /// Removes `conn` from `channel`; returns whether the channel has no
    /// subscriber left on this node (the node then stops listening).
    pub fn unsubscribe(&self, channel: &str, conn: u64) -> bool {
        let mut channels = self.lock();
        let Some(local) = channels.get_mut(channel) else {
            return false;
        };
        local.subscribers.remove(&conn);
        if local.subscribers.is_empty() {
            channels.remove(channel);
            return true;
        }
        false
    }

    /// Hands a publication of `epoch` to the channel's subscribers; `encode`
    /// makes its frame, once, when it is to be sent.
    pub fn deliver(
        &self,
        channel: &str,
        epoch: &str,
        publication: &Publication,
        encode: impl FnOnce(&Publication) -> F,
    ) -> Delivery {
        let mut channels = self.lock();
        let Some(local) = channels.get_mut(channel) else {
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
        if changed {
            local.epoch = Some(Arc::from(epoch));
        }
        local.last = offset;
        let frame = encode(publication);
        let mut sent = 0;
        for subscriber in local.subscribers.values_mut() {
            match &mut subscriber.held {
                Some(held) => held.push((offset, frame.clone())),
                None => {
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
    /// `notice` (a `channel_gap` frame) goes to the live subscribers, and
    /// the node goes on after `to`.
    pub fn gap(&self, channel: &str, to: u64, notice: &F) {
        let mut channels = self.lock();
        let Some(local) = channels.get_mut(channel) else {
            return;
        };
        local.last = local.last.max(to);
        for subscriber in local.subscribers.values() {
            if subscriber.held.is_none() {
                subscriber.sink.send(notice);
            }
        }
    }

    /// The channels with subscribers on this node, with their counts.
    pub fn counts(&self) -> Vec<(String, usize)> {
        let mut counts: Vec<(String, usize)> = self
            .lock()
            .iter()
            .map(|(name, local)| (name.to_string(), local.subscribers.len()))
            .collect();
        counts.sort();
        counts
    }

    /// The node's last delivered offset of `channel`, with its epoch.
    pub fn position(&self, channel: &str) -> Option<(String, u64)> {
        let channels = self.lock();
        let local = channels.get(channel)?;
        Some((local.epoch.as_deref()?.to_owned(), local.last))
    }

    /// Delivers publications that fill a hole, in order (from the history).
    pub fn fill(
        &self,
        channel: &str,
        epoch: &str,
        publications: &[Arc<Publication>],
        encode: impl Fn(&Publication) -> F,
    ) {
        for publication in publications {
            // In order and without holes: each is the next.
            let _ = self.deliver(channel, epoch, publication, &encode);
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

    fn encode(p: &Publication) -> String {
        format!("pub {}", p.offset)
    }

    fn gap_notice(from: u64, to: u64) -> String {
        format!("gap {from}-{to}")
    }

    fn deliver(hub: &Hub<String>, epoch: &str, offset: u64) -> Delivery {
        hub.deliver("c", epoch, &publication(offset), encode)
    }

    #[test]
    fn recovery_then_live_without_a_seam() {
        let hub = Hub::default();
        let a = Arc::new(Recorder::default());
        assert!(hub.subscribe("c", 1, a.clone()), "the node's first");
        // Live publications while the history is read: held.
        assert_eq!(deliver(&hub, "e", 4), Delivery::Sent(0));
        assert_eq!(deliver(&hub, "e", 5), Delivery::Sent(0));
        // The history had up to 4; the caller sent 3 and 4 itself.
        assert_eq!(hub.go_live("c", 1, ("e", 4), gap_notice), None);
        assert_eq!(a.got(), ["pub 5"], "4 once, 5 after it");
        assert_eq!(deliver(&hub, "e", 6), Delivery::Sent(1));
        assert_eq!(a.got(), ["pub 5", "pub 6"]);
        // A second subscriber joins while the channel is live.
        let b = Arc::new(Recorder::default());
        assert!(!hub.subscribe("c", 2, b.clone()));
        assert_eq!(deliver(&hub, "e", 7), Delivery::Sent(1));
        assert_eq!(hub.go_live("c", 2, ("e", 6), gap_notice), None);
        assert_eq!(b.got(), ["pub 7"]);
        assert_eq!(hub.counts(), [("c".to_owned(), 2)]);
        assert!(!hub.unsubscribe("c", 1));
        assert!(hub.unsubscribe("c", 2), "the node's last");
        assert_eq!(deliver(&hub, "e", 8), Delivery::Nobody);
    }

    #[test]
    fn a_repeat_is_dropped_and_a_hole_is_filled_before_what_follows() {
        let hub = Hub::default();
        let a = Arc::new(Recorder::default());
        hub.subscribe("c", 1, a.clone());
        assert_eq!(hub.go_live("c", 1, ("e", 2), gap_notice), None);
        assert_eq!(deliver(&hub, "e", 2), Delivery::Repeat);
        assert_eq!(deliver(&hub, "e", 6), Delivery::Hole { from: 3, to: 5 });
        assert!(a.got().is_empty(), "nothing past the hole yet");
        let history: Vec<Arc<Publication>> = (3..=5).map(|o| Arc::new(publication(o))).collect();
        hub.fill("c", "e", &history, encode);
        assert_eq!(deliver(&hub, "e", 6), Delivery::Sent(1));
        assert_eq!(a.got(), ["pub 3", "pub 4", "pub 5", "pub 6"]);
        assert_eq!(hub.position("c"), Some(("e".to_owned(), 6)));
    }

    #[test]
    fn what_cannot_be_filled_is_reported_and_the_node_goes_on() {
        let hub = Hub::default();
        let a = Arc::new(Recorder::default());
        hub.subscribe("c", 1, a.clone());
        assert_eq!(hub.go_live("c", 1, ("e", 0), gap_notice), None);
        assert_eq!(deliver(&hub, "e", 4), Delivery::Hole { from: 1, to: 3 });
        hub.gap("c", 3, &"gap 1-3".to_owned());
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
        assert_eq!(hub.go_live("c", 1, ("e", 4), gap_notice), Some((5, 6)));
        assert_eq!(a.got(), ["gap 5-6", "pub 7", "pub 8"]);
    }

    #[test]
    fn a_new_epoch_is_followed_from_its_publication() {
        let hub = Hub::default();
        let a = Arc::new(Recorder::default());
        hub.subscribe("c", 1, a.clone());
        assert_eq!(hub.go_live("c", 1, ("e", 9), gap_notice), None);
        assert_eq!(deliver(&hub, "f", 1), Delivery::EpochChanged);
        assert_eq!(deliver(&hub, "f", 2), Delivery::Sent(1));
        assert_eq!(a.got(), ["pub 1", "pub 2"]);
        assert_eq!(hub.position("c"), Some(("f".to_owned(), 2)));
    }
}
