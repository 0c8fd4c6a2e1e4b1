//! Channels (issue 23): subscribe, publish and recovery by offset.
//!
//! | file | what it holds |
//! |---|---|
//! | `namespace.rs` | channel names, namespaces and their capabilities, from the config file |
//! | `stream/` | a channel's offsets, epoch, history and idempotency window: in memory (`memory.rs`) and in Redis (`redis.rs`, one script each) |
//! | `hub.rs` | one node's subscribers per channel: recovery then live without a seam, holes filled or reported, one frame per publication |
//! | `relay.rs` | a node's Redis pub/sub for the channels it has subscribers for; what it misses is filled from the history or reported |
//! | `grants.rs` | what a connection may do in a channel: the namespace's lists, or a token's `channels` claim (and its `subs`) |
//! | `service.rs` | the node's channels as the connections and the admin API use them: one path per publication, one per subscription, the wire's frames |
//!
//! A connection's side (its requests, its sink, the token's claims at
//! connect and at a refresh) is `connection/channels.rs`.

pub mod grants;
pub mod hub;
pub mod namespace;
pub mod relay;
pub mod service;
pub mod stream;
