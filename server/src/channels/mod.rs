//! Channels (issue 23): subscribe, publish and recovery by offset.
//!
//! | file | what it holds |
//! |---|---|
//! | `namespace.rs` | channel names, namespaces and their capabilities, from the config file |

pub mod namespace;
