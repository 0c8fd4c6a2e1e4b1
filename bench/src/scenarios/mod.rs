//! What is measured, one scenario a file. The load-generator side of each
//! (`bench load ...`) and the orchestrator that starts its servers sit
//! together; the servers come from [`crate::peers`], the processes and
//! readings from [`crate::harness`], the written sections from
//! [`crate::report`].
//!
//! * [`suite`]: `bench run`, every echo, burst, idle and browser scenario
//!   side by side, repeated and interleaved, then the cluster and the scale runs;
//! * [`echo`], [`burst`], [`idle`]: the load generator's three modes;
//! * [`scale`]: connections on one node (issue 16);
//! * [`cluster`] and [`cluster_reliable`]: two nodes on Redis (issue 14);
//! * [`channels`]: a channel's fan-out, ours beside socket.io, one node and
//!   two on Redis (issue 23);
//! * [`presence`]: a channel's presence queries and the CPU of its members,
//!   ours beside socket.io, one to three nodes on Redis (issue 24);
//! * [`browser`] and [`tabs`]: headless Chromium (issues 15 and 22);
//! * [`hostile`]: hostile clients at scale (issue 12), with its own report.

pub mod browser;
pub mod burst;
pub mod channels;
pub mod cluster;
pub mod cluster_reliable;
pub mod echo;
pub mod hostile;
pub mod idle;
pub mod presence;
pub mod scale;
pub mod suite;
pub mod tabs;

#[cfg(test)]
mod tests;
