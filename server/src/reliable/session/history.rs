//! What a session's history holds: each unacknowledged message ([`Entry`])
//! kept as the message itself ([`Kept`]), not as the envelope of one
//! protocol version, and the bursts it still owes ([`Burst`]).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use shared::Protocol;

/// One unacknowledged server message.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) seq: u64,
    pub(super) at: Instant,
    pub(super) body: Kept,
}

/// How an unacknowledged message is kept for a resend: as the message
/// itself, not as the envelope of one protocol version, so that a client
/// may resume the session speaking another version (the store writes the
/// version-1 envelope, which every node reads, see `journal.rs`).
#[derive(Debug)]
pub(super) enum Kept {
    /// The message's JSON and the length of its version-1 envelope.
    Message { json: Utf8Bytes, len: usize },
    /// A push shared by many sessions (a broadcast): the body, escaped once,
    /// is held by every session through one `Arc` and framed again around
    /// this session's numbers only when it is replayed. `len` is the
    /// length of its version-1 envelope.
    Shared {
        push: Arc<shared::PushEncoder>,
        push_seq: u64,
        len: usize,
    },
}

impl Entry {
    /// The bytes the history's bounds count for it: the length of its
    /// version-1 envelope, the longest of its framings, so that the bounds
    /// hold whatever version the client speaks now or after a resume.
    pub(super) fn len(&self) -> usize {
        match &self.body {
            Kept::Message { len, .. } | Kept::Shared { len, .. } => *len,
        }
    }

    /// The frame to write again on a resume, as `protocol` frames it.
    pub(super) fn frame(&self, protocol: Protocol) -> Utf8Bytes {
        Utf8Bytes::from(match &self.body {
            Kept::Message { json, .. } => shared::encode_msg_json(self.seq, json, protocol),
            Kept::Shared { push, push_seq, .. } => {
                push.encode_msg_in(self.seq, *push_seq, protocol)
            }
        })
    }
}

/// A burst that survives reconnects: its pushes are numbered as they are made.
#[derive(Debug, Clone, Copy)]
pub(super) struct Burst {
    pub(super) count: u32,
    pub(super) left: u32,
    pub(super) started: Instant,
}
