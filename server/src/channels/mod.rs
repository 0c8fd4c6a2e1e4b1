//! Channels (issue 23): subscribe, publish and recovery by offset.
//!
//! | file | what it holds |
//! |---|---|
//! | `namespace.rs` | channel names, namespaces and their capabilities, from the config file |
//! | `stream/` | a channel's offsets, epoch, history and idempotency window: in memory (`memory.rs`) and in Redis (`redis.rs`, one script each) |
//! | `hub.rs` | one node's subscribers per channel: recovery then live without a seam, holes filled or reported, one frame per publication |
//! | `relay.rs` | a node's Redis pub/sub for the channels it has subscribers for; what it misses is filled from the history or reported |
//!
//! Not on the wire yet: the subscribe, publish and recovery messages, the
//! admin API and the wrapper's `Channel` come next (issue 23).

pub mod hub;
pub mod namespace;
pub mod relay;
pub mod stream;
