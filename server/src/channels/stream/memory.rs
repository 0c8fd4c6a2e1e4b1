//! One node's channel streams in memory: offsets, epochs, history and the
//! idempotency window, behind one mutex (each call holds it for a few map
//! operations; nothing waits while holding it).
//!
//! * **Epochs.** A channel's epoch is drawn when the node first sees it, so
//!   a restart gives every channel a new one: a client that recovers with
//!   the old epoch is told `epoch_changed`, never handed offsets of another
//!   stream as if they continued its own.
//! * **History.** Each channel keeps at most its namespace's
//!   `history_size` publications, none older than its `history_ttl`, and
//!   all channels together at most `--channel-history-bytes`, the oldest
//!   publication of the node trimmed first. The epoch and the latest offset
//!   outlive the history: a quiet channel keeps its epoch, so a client that
//!   missed nothing recovers with nothing to replay.
//! * **Idempotency.** A publication with an id is published once per
//!   channel within the dedup window; a repeat gets the first one's offset.
//! * **Forgetting.** A channel with no history and no id in its window is
//!   forgotten after [`FORGET_AFTER_MS`] without a publication (its next
//!   subscriber gets a new epoch): metadata of channels used once does not
//!   pile up.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use super::{Position, Publication, PublishRequest, Published, Recovery, StreamError};
use crate::channels::namespace::Namespace;

/// An idle channel with nothing kept is forgotten after this long.
pub const FORGET_AFTER_MS: u64 = 60 * 60 * 1000;

/// What one publication costs the byte budget besides its data: its entry,
/// its offset, its publisher's ids.
const OVERHEAD_BYTES: usize = 64;

/// The streams of every channel this node has seen.
#[derive(Debug)]
pub struct MemoryStreams {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    channels: HashMap<Arc<str>, Channel>,
    /// Every kept publication, oldest first: channel, epoch, offset, bytes.
    order: VecDeque<Entry>,
    bytes: usize,
    budget: usize,
    dedup_window_ms: u64,
}

#[derive(Debug)]
struct Channel {
    epoch: Arc<str>,
    offset: u64,
    history: VecDeque<Kept>,
    dedup: HashMap<String, u64>,
    /// Ids in the window, oldest first, with when they leave it.
    dedup_order: VecDeque<(String, u64)>,
    last_publish_ms: u64,
}

/// A publication in the node's order.
#[derive(Debug)]
struct Entry {
    channel: Arc<str>,
    epoch: Arc<str>,
    offset: u64,
    bytes: usize,
}

impl Entry {
    /// Whether this publication is still kept (its channel may have been
    /// forgotten and seen again since, with another epoch).
    fn kept_in(&self, channel: &Channel) -> bool {
        Arc::ptr_eq(&self.epoch, &channel.epoch)
            && channel
                .history
                .front()
                .is_some_and(|k| k.publication.offset <= self.offset)
    }
}

#[derive(Debug)]
struct Kept {
    publication: Arc<Publication>,
    at_ms: u64,
}

fn new_epoch() -> Arc<str> {
    Arc::from(format!("{:016x}", rand::random::<u64>()))
}

impl Channel {
    fn new(now_ms: u64) -> Self {
        Self {
            epoch: new_epoch(),
            offset: 0,
            history: VecDeque::new(),
            dedup: HashMap::new(),
            dedup_order: VecDeque::new(),
            last_publish_ms: now_ms,
        }
    }

    /// Drops the ids whose window passed.
    fn expire_ids(&mut self, now_ms: u64) {
        while let Some((id, until)) = self.dedup_order.front() {
            if *until > now_ms {
                break;
            }
            self.dedup.remove(id);
            self.dedup_order.pop_front();
        }
    }

    /// The first offset the history still has (`offset + 1` when empty).
    fn first_kept(&self) -> u64 {
        self.history
            .front()
            .map_or(self.offset.saturating_add(1), |k| k.publication.offset)
    }
}

impl MemoryStreams {
    /// Streams that keep at most `budget` bytes of history in all, and
    /// answer a repeated publication id for `dedup_window_ms`.
    pub fn new(budget: usize, dedup_window_ms: u64) -> Self {
        Self {
            state: Mutex::new(State {
                channels: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
                budget,
                dedup_window_ms,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes to `request.channel`: the next offset, kept in its history.
    ///
    /// # Errors
    ///
    /// [`StreamError::Full`] when the channel's offsets ran out (2^64).
    pub fn publish(
        &self,
        request: PublishRequest,
        namespace: &Namespace,
        now_ms: u64,
    ) -> Result<Published, StreamError> {
        let mut state = self.state();
        let window = state.dedup_window_ms;
        let name: Arc<str> = match state.channels.get_key_value(request.channel.as_str()) {
            Some((name, _)) => name.clone(),
            None => Arc::from(request.channel.as_str()),
        };
        let channel = state
            .channels
            .entry(name.clone())
            .or_insert_with(|| Channel::new(now_ms));
        channel.expire_ids(now_ms);
        if let Some(offset) = request.id.as_ref().and_then(|id| channel.dedup.get(id)) {
            return Ok(Published {
                epoch: channel.epoch.to_string(),
                offset: *offset,
                publication: None,
            });
        }
        let offset = channel.offset.checked_add(1).ok_or(StreamError::Full)?;
        channel.offset = offset;
        channel.last_publish_ms = now_ms;
        let publication = Arc::new(Publication {
            offset,
            data: request.data,
            info: request.info,
        });
        let bytes = publication.data.len() + OVERHEAD_BYTES;
        if let Some(id) = request.id {
            channel.dedup.insert(id.clone(), offset);
            channel
                .dedup_order
                .push_back((id, now_ms.saturating_add(window)));
        }
        let epoch = channel.epoch.to_string();
        if namespace.history_size > 0 {
            channel.history.push_back(Kept {
                publication: publication.clone(),
                at_ms: now_ms,
            });
            let entry = Entry {
                channel: name.clone(),
                epoch: channel.epoch.clone(),
                offset,
                bytes,
            };
            state.order.push_back(entry);
            state.bytes += bytes;
        }
        state.trim(&name, namespace, now_ms);
        Ok(Published {
            epoch,
            offset,
            publication: Some(publication),
        })
    }

    /// Where `channel` is, and what a subscriber that was at `since` missed.
    pub fn recover(
        &self,
        channel: &str,
        since: Option<&Position>,
        namespace: &Namespace,
        now_ms: u64,
    ) -> (Position, Recovery) {
        let mut state = self.state();
        let name: Arc<str> = match state.channels.get_key_value(channel) {
            Some((name, _)) => name.clone(),
            None => Arc::from(channel),
        };
        state
            .channels
            .entry(name.clone())
            .or_insert_with(|| Channel::new(now_ms));
        state.trim(&name, namespace, now_ms);
        let Some(channel) = state.channels.get(&name) else {
            // `trim` keeps the channel it was asked about.
            return (
                Position {
                    epoch: String::new(),
                    offset: 0,
                },
                Recovery::EpochChanged,
            );
        };
        let position = Position {
            epoch: channel.epoch.to_string(),
            offset: channel.offset,
        };
        let after = since.map_or(0, |s| s.offset);
        let recovery = Recovery::of(since, &channel.epoch, channel.first_kept(), || {
            channel
                .history
                .iter()
                .filter(|k| k.publication.offset > after)
                .map(|k| k.publication.clone())
                .collect()
        });
        (position, recovery)
    }

    /// The last `limit` publications kept for `channel`, oldest first.
    pub fn history(
        &self,
        channel: &str,
        limit: usize,
        namespace: &Namespace,
        now_ms: u64,
    ) -> Vec<Arc<Publication>> {
        let mut state = self.state();
        if !state.channels.contains_key(channel) {
            return Vec::new();
        }
        let name: Arc<str> = Arc::from(channel);
        state.trim(&name, namespace, now_ms);
        state.channels.get(channel).map_or_else(Vec::new, |c| {
            let skip = c.history.len().saturating_sub(limit);
            c.history
                .iter()
                .skip(skip)
                .map(|k| k.publication.clone())
                .collect()
        })
    }

    /// Forgets the channels idle for [`FORGET_AFTER_MS`] with nothing kept,
    /// but those `keep` names (they have subscribers: forgotten, their
    /// next publication would start a new epoch under them).
    pub fn sweep(&self, now_ms: u64, keep: impl Fn(&str) -> bool) {
        let mut state = self.state();
        state.channels.retain(|name, channel| {
            channel.expire_ids(now_ms);
            keep(name)
                || !(channel.history.is_empty()
                    && channel.dedup.is_empty()
                    && now_ms.saturating_sub(channel.last_publish_ms) >= FORGET_AFTER_MS)
        });
    }

    /// Entries of the node's order (kept publications, and some trimmed
    /// ones not yet dropped), for the tests of its bound.
    #[cfg(test)]
    pub(crate) fn order_len(&self) -> usize {
        self.state().order.len()
    }

    /// Bytes of history kept, for `/metrics`.
    pub fn bytes(&self) -> usize {
        self.state().bytes
    }
}

impl State {
    /// Trims `name`'s history to its namespace's bounds, then the node's
    /// oldest publications to the byte budget.
    fn trim(&mut self, name: &Arc<str>, namespace: &Namespace, now_ms: u64) {
        let ttl_ms = u64::try_from(namespace.history_ttl.as_millis()).unwrap_or(u64::MAX);
        if let Some(channel) = self.channels.get_mut(name) {
            while channel.history.len() > namespace.history_size
                || channel
                    .history
                    .front()
                    .is_some_and(|k| now_ms.saturating_sub(k.at_ms) >= ttl_ms)
            {
                if let Some(kept) = channel.history.pop_front() {
                    self.bytes -= kept.publication.data.len() + OVERHEAD_BYTES;
                }
            }
        }
        // The node's order may name publications already trimmed above (or
        // of forgotten channels): those cost nothing any more.
        while self.bytes > self.budget
            && let Some(entry) = self.order.pop_front()
        {
            let Some(channel) = self.channels.get_mut(&entry.channel) else {
                continue;
            };
            // The node's oldest kept publication is its channel's oldest.
            let front = channel.history.front().map(|k| k.publication.offset);
            if entry.kept_in(channel) && front == Some(entry.offset) {
                channel.history.pop_front();
                self.bytes -= entry.bytes;
            }
        }
        // Entries of publications trimmed per channel are dropped as they
        // reach the front; those behind a kept one (a quiet channel's last
        // publication holds the front for as long as it is kept) are
        // dropped in one pass once they are most of `order`. Each kept
        // publication costs at least `OVERHEAD_BYTES`, so past this bound
        // at least half of `order` is stale, and the pass costs each entry
        // O(1) over its life.
        while let Some(entry) = self.order.front() {
            if self
                .channels
                .get(&entry.channel)
                .is_some_and(|c| entry.kept_in(c))
            {
                break;
            }
            self.order.pop_front();
        }
        if self.order.len() > 2 * (self.bytes / OVERHEAD_BYTES) + 1024 {
            let channels = &self.channels;
            self.order.retain(|entry| {
                channels
                    .get(&entry.channel)
                    .is_some_and(|c| entry.kept_in(c))
            });
        }
    }
}
