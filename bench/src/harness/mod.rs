//! What every scenario stands on, measured the same way for every peer:
//!
//! * [`procs`]: pinned child processes that are always killed;
//! * [`proc_stats`]: a process's CPU time and resident memory from `/proc`,
//!   and a reading once it has stopped moving;
//! * [`servers`]: a server on a free loopback port, waited for until it
//!   listens; the load generator run as a child and read as one JSON line;
//!   a child's stdout forwarded line by line;
//! * [`stats`]: medians, quantiles of a histogram, a least-squares fit;
//! * [`machine`]: the workspace root, the machine and tool versions, the date;
//! * [`ws`]: client connections (loopback only), from a chosen source address;
//! * [`builds`]: everything built before a run (the release server, the Go
//!   reference, the browser assets), in one place.

pub mod builds;
pub mod machine;
pub mod proc_stats;
pub mod procs;
pub mod servers;
pub mod stats;
pub mod ws;
