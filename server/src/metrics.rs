//! Counters exported at `/metrics` in the Prometheus text format.
//!
//! Plain relaxed atomics: they are statistics, not synchronisation. Hot paths
//! add per batch, not per message, where they can.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why an upgrade was refused, for the `rejected_upgrades` counter.
#[derive(Debug, Clone, Copy)]
pub enum Rejection {
    /// The `Origin` header was not allowed.
    Origin,
    /// The request was not a WebSocket upgrade.
    NotUpgrade,
}

/// Server-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) connections_open: AtomicU64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) pushes_dropped: AtomicU64,
    pub(crate) slow_consumer_closes: AtomicU64,
    rejected_origin: AtomicU64,
    rejected_not_upgrade: AtomicU64,
}

impl Metrics {
    pub(crate) fn reject(&self, why: Rejection) {
        match why {
            Rejection::Origin => &self.rejected_origin,
            Rejection::NotUpgrade => &self.rejected_not_upgrade,
        }
        .fetch_add(1, Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(1024);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "ws_connections_open",
            "gauge",
            "WebSocket connections open now.",
            self.connections_open.load(Relaxed),
        );
        metric(
            "ws_connections_total",
            "counter",
            "WebSocket connections accepted.",
            self.connections_total.load(Relaxed),
        );
        metric(
            "ws_messages_in_total",
            "counter",
            "Messages received from clients.",
            self.messages_in.load(Relaxed),
        );
        metric(
            "ws_messages_out_total",
            "counter",
            "Messages sent to clients.",
            self.messages_out.load(Relaxed),
        );
        metric(
            "ws_bytes_in_total",
            "counter",
            "Payload bytes received from clients.",
            self.bytes_in.load(Relaxed),
        );
        metric(
            "ws_bytes_out_total",
            "counter",
            "Payload bytes sent to clients.",
            self.bytes_out.load(Relaxed),
        );
        metric(
            "ws_pushes_dropped_total",
            "counter",
            "Pushes not queued because a client's queue was full or a timed push was still pending.",
            self.pushes_dropped.load(Relaxed),
        );
        metric(
            "ws_slow_consumer_closes_total",
            "counter",
            "Connections closed with 1013 because writes made no progress.",
            self.slow_consumer_closes.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP ws_rejected_upgrades_total Upgrade requests refused, by reason.\n# TYPE ws_rejected_upgrades_total counter\nws_rejected_upgrades_total{{reason=\"origin\"}} {}\nws_rejected_upgrades_total{{reason=\"not_upgrade\"}} {}",
            self.rejected_origin.load(Relaxed),
            self.rejected_not_upgrade.load(Relaxed)
        );
        out
    }
}
