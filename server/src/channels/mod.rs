//! Channels (issue 23): subscribe, publish and recovery by offset.
//!
//! | file | what it holds |
//! |---|---|
//! | `namespace.rs` | channel names, namespaces and their capabilities, from the config file |
//! | `stream/` | a channel's offsets, epoch, history and idempotency window: in memory (`memory.rs`) |

pub mod namespace;
pub mod stream;
