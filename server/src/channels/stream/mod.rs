//! A channel's stream: its offsets, its epoch, its history and its
//! idempotency window (issue 23). One node keeps them in memory
//! ([`memory`]); a cluster keeps them in Redis ([`redis`], one script per
//! publication and per recovery). [`Streams`] is either, and the tests run
//! the same behaviour on both.
//!
//! Offsets count from 1 per channel and epoch, without holes: each offset
//! is one publication. The epoch is an opaque string that changes only
//! when the stream is lost (a memory-mode restart, Redis losing its data),
//! so a subscriber that recovers by `(epoch, offset)` either gets exactly
//! what it missed, or the exact range it cannot have, or `epoch_changed`.

pub mod memory;
pub mod redis;

use std::sync::Arc;

use crate::channels::namespace::Namespace;
use crate::clock::now_ms;

/// Where a channel's stream is: its epoch and its latest offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The stream's epoch.
    pub epoch: String,
    /// The latest offset (0 before the first publication).
    pub offset: u64,
}

/// Who published, when a client did (absent for the admin API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherInfo {
    /// The publishing connection's client id.
    pub client_id: String,
    /// Its user, in token mode.
    pub user: Option<String>,
}

/// One publication as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// Its offset in the channel's stream.
    pub offset: u64,
    /// Its data: one JSON value, as text (checked when it came in).
    pub data: String,
    /// Who published it.
    pub info: Option<PublisherInfo>,
}

/// A publication to make.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// The channel (its name checked, its namespace known).
    pub channel: String,
    /// The data: one JSON value, as text.
    pub data: String,
    /// The idempotency key: a repeat within the window is not published again.
    pub id: Option<String>,
    /// Who publishes.
    pub info: Option<PublisherInfo>,
}

/// A publication made, or the one an id already made.
#[derive(Debug, Clone)]
pub struct Published {
    /// The stream's epoch.
    pub epoch: String,
    /// The publication's offset.
    pub offset: u64,
    /// The publication to deliver; `None` when the id repeated an earlier
    /// one (delivered then).
    pub publication: Option<Arc<Publication>>,
}

/// What a subscriber that gave `since` missed.
#[derive(Debug, Clone, PartialEq)]
pub enum Recovery {
    /// No `since`: nothing to recover.
    Fresh,
    /// Everything after `since`, in order (maybe nothing).
    Recovered(Vec<Arc<Publication>>),
    /// The history no longer has `gap` (inclusive); these follow it.
    Trimmed {
        /// The first and last offset lost.
        gap: (u64, u64),
        /// What the history still has after `since`.
        publications: Vec<Arc<Publication>>,
    },
    /// `since` is of another epoch: the stream was lost and started again.
    EpochChanged,
}

impl Recovery {
    /// What a subscriber at `since` missed of a stream of `epoch` whose
    /// history keeps offsets from `first` on: `missed` (read only when
    /// the epochs match) is what the history has after `since`. The one
    /// rule of both stores.
    pub fn of(
        since: Option<&Position>,
        epoch: &str,
        first: u64,
        missed: impl FnOnce() -> Vec<Arc<Publication>>,
    ) -> Self {
        match since {
            None => Self::Fresh,
            Some(since) if since.epoch != epoch => Self::EpochChanged,
            Some(since) if since.offset.saturating_add(1) >= first => Self::Recovered(missed()),
            Some(since) => Self::Trimmed {
                gap: (since.offset + 1, first - 1),
                publications: missed(),
            },
        }
    }
}

/// Why a stream operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The channel's offsets ran out (2^64 publications).
    #[error("the channel's offsets ran out")]
    Full,
    /// Redis did not answer in time (the wire's `unavailable`; the admin
    /// API's 503). A publication may or may not have been made: a retry
    /// with the same id tells.
    #[error("the channel streams are unavailable")]
    Unavailable,
}

/// The node's channel streams: in memory on one node, in Redis in a cluster.
#[derive(Debug)]
pub enum Streams {
    /// One node's, in memory.
    Memory(memory::MemoryStreams),
    /// The cluster's, in Redis.
    Redis(redis::RedisStreams),
}

impl Streams {
    /// Publishes to `request.channel`.
    ///
    /// # Errors
    ///
    /// [`StreamError::Full`] when the channel's offsets ran out,
    /// [`StreamError::Unavailable`] when Redis does not answer.
    pub async fn publish(
        &self,
        request: PublishRequest,
        namespace: &Namespace,
    ) -> Result<Published, StreamError> {
        match self {
            Self::Memory(streams) => streams.publish(request, namespace, now_ms()),
            Self::Redis(streams) => streams.publish(request, namespace).await,
        }
    }

    /// Where `channel` is, and what a subscriber at `since` missed.
    ///
    /// # Errors
    ///
    /// [`StreamError::Unavailable`] when Redis does not answer.
    pub async fn recover(
        &self,
        channel: &str,
        since: Option<&Position>,
        namespace: &Namespace,
    ) -> Result<(Position, Recovery), StreamError> {
        match self {
            Self::Memory(streams) => Ok(streams.recover(channel, since, namespace, now_ms())),
            Self::Redis(streams) => streams.recover(channel, since, namespace).await,
        }
    }

    /// The last `limit` publications kept for `channel`, oldest first.
    ///
    /// # Errors
    ///
    /// [`StreamError::Unavailable`] when Redis does not answer.
    pub async fn history(
        &self,
        channel: &str,
        limit: usize,
        namespace: &Namespace,
    ) -> Result<Vec<Arc<Publication>>, StreamError> {
        match self {
            Self::Memory(streams) => Ok(streams.history(channel, limit, namespace, now_ms())),
            Self::Redis(streams) => streams.history(channel, limit, namespace).await,
        }
    }
}

#[cfg(test)]
mod tests;
