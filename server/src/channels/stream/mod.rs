//! A channel's stream: its offsets, its epoch, its history and its
//! idempotency window (issue 23). One node keeps them in memory
//! ([`memory`]); a cluster keeps them in Redis (to come, one script per
//! publication).
//!
//! Offsets count from 1 per channel and epoch, without holes: each offset
//! is one publication. The epoch is an opaque string that changes only
//! when the stream is lost (a memory-mode restart, Redis losing its data),
//! so a subscriber that recovers by `(epoch, offset)` either gets exactly
//! what it missed, or the exact range it cannot have, or `epoch_changed`.

pub mod memory;

use std::sync::Arc;

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

/// Why a stream operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The channel's offsets ran out (2^64 publications).
    #[error("the channel's offsets ran out")]
    Full,
}

#[cfg(test)]
mod tests;
