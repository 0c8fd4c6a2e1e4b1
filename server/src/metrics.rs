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
    /// `--max-connections` reached (503).
    MaxConnections,
    /// The client's `--max-connections-per-ip` reached (503).
    MaxConnectionsPerIp,
    /// The client's `--connect-rate` exceeded (429).
    ConnectRate,
    /// A `?client_id=` without `--allow-client-ids` (upgraded, closed with 1008).
    ClientId,
    /// Token mode: a missing or refused token (upgraded, closed with 4401).
    Token,
}

/// Why the server dropped an HTTP connection or refused a request, for
/// `http_dropped_total`.
#[derive(Debug, Clone, Copy)]
pub enum Dropped {
    /// Request headers not complete within `--handshake-timeout`.
    HandshakeTimeout,
    /// Idle between requests beyond `--keepalive-timeout`.
    KeepaliveTimeout,
    /// A request body not received within `--body-timeout` (408).
    BodyTimeout,
    /// Still open when `--shutdown-timeout` ran out.
    Shutdown,
    /// A `Host` outside `--allowed-host` (403, the connection stays).
    Host,
    /// Over `--max-http-connections-per-ip`: closed at accept, nothing read.
    HttpPerIp,
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
    /// Bytes in every connection's outbound queue now (`--send-queue-bytes`).
    pub(crate) send_queue_bytes: AtomicU64,
    /// Connections with a burst going on now (both modes): the share of
    /// each one's batches (`connection::burst`).
    pub(crate) bursting: AtomicU64,
    /// Bytes of unfinished messages charged against `--max-partial-bytes`
    /// now: the budget's own counter (`partial::PartialBudget`).
    pub(crate) partial_bytes: AtomicU64,
    /// Connections closed with 1013 because `--max-partial-bytes` was reached.
    pub(crate) partial_budget_closes: AtomicU64,
    rejected_origin: AtomicU64,
    rejected_not_upgrade: AtomicU64,
    rejected_max_connections: AtomicU64,
    rejected_max_connections_per_ip: AtomicU64,
    rejected_connect_rate: AtomicU64,
    rejected_client_id: AtomicU64,
    rejected_token: AtomicU64,
    /// TCP connections open now (HTTP and upgraded).
    pub(crate) tcp_open: AtomicU64,
    /// TCP connections accepted.
    pub(crate) tcp_total: AtomicU64,
    /// WebSocket slots held under `--max-connections`.
    pub(crate) ws_slots: AtomicU64,
    /// The effective `--max-connections` (0: none).
    pub(crate) ws_connections_limit: AtomicU64,
    /// `RLIMIT_NOFILE` in force (0: unknown).
    pub(crate) open_files_limit: AtomicU64,
    /// accept(2) failures because descriptors ran out.
    pub(crate) accept_errors_descriptors: AtomicU64,
    /// Other accept(2) failures.
    pub(crate) accept_errors_other: AtomicU64,
    dropped: [AtomicU64; 6],
}

const DROPPED: [(Dropped, &str); 6] = [
    (Dropped::HandshakeTimeout, "handshake_timeout"),
    (Dropped::KeepaliveTimeout, "keepalive_timeout"),
    (Dropped::BodyTimeout, "body_timeout"),
    (Dropped::Shutdown, "shutdown"),
    (Dropped::Host, "host"),
    (Dropped::HttpPerIp, "http_connections_per_ip"),
];

impl Metrics {
    pub(crate) fn reject(&self, why: Rejection) {
        match why {
            Rejection::Origin => &self.rejected_origin,
            Rejection::NotUpgrade => &self.rejected_not_upgrade,
            Rejection::MaxConnections => &self.rejected_max_connections,
            Rejection::MaxConnectionsPerIp => &self.rejected_max_connections_per_ip,
            Rejection::ConnectRate => &self.rejected_connect_rate,
            Rejection::ClientId => &self.rejected_client_id,
            Rejection::Token => &self.rejected_token,
        }
        .fetch_add(1, Relaxed);
    }

    pub(crate) fn dropped(&self, why: Dropped) {
        self.dropped[why as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Relaxed);
    }

    pub(crate) fn set(gauge: &AtomicU64, value: u64) {
        gauge.store(value, Relaxed);
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
        metric(
            "ws_send_queue_bytes",
            "gauge",
            "Bytes queued for clients now, across connections (bounded per connection by --send-queue-bytes).",
            self.send_queue_bytes.load(Relaxed),
        );
        metric(
            "ws_bursting_connections",
            "gauge",
            "Connections with a burst going on now; their batches shrink as they grow in number.",
            self.bursting.load(Relaxed),
        );
        metric(
            "ws_partial_bytes",
            "gauge",
            "Bytes of unfinished messages held now beyond each connection's free allowance, across /ws and /echo (bounded by --max-partial-bytes).",
            self.partial_bytes.load(Relaxed),
        );
        metric(
            "ws_partial_budget_closes_total",
            "counter",
            "Connections closed with 1013 because their unfinished message would take --max-partial-bytes past its bound.",
            self.partial_budget_closes.load(Relaxed),
        );
        metric(
            "tcp_connections_open",
            "gauge",
            "TCP connections open now (HTTP and upgraded).",
            self.tcp_open.load(Relaxed),
        );
        metric(
            "tcp_connections_total",
            "counter",
            "TCP connections accepted.",
            self.tcp_total.load(Relaxed),
        );
        metric(
            "ws_connection_slots",
            "gauge",
            "WebSocket connections counted against --max-connections now.",
            self.ws_slots.load(Relaxed),
        );
        metric(
            "ws_connections_limit",
            "gauge",
            "The effective --max-connections (0: no cap).",
            self.ws_connections_limit.load(Relaxed),
        );
        metric(
            "process_open_files_limit",
            "gauge",
            "The descriptor limit (RLIMIT_NOFILE) in force (0: unknown).",
            self.open_files_limit.load(Relaxed),
        );
        let mut labelled = |name: &str, help: &str, rows: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (reason, value) in rows {
                let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {value}");
            }
        };
        labelled(
            "ws_rejected_upgrades_total",
            "Upgrade requests refused, by reason.",
            &[
                ("origin", self.rejected_origin.load(Relaxed)),
                ("not_upgrade", self.rejected_not_upgrade.load(Relaxed)),
                (
                    "max_connections",
                    self.rejected_max_connections.load(Relaxed),
                ),
                (
                    "max_connections_per_ip",
                    self.rejected_max_connections_per_ip.load(Relaxed),
                ),
                ("connect_rate", self.rejected_connect_rate.load(Relaxed)),
                ("client_id", self.rejected_client_id.load(Relaxed)),
                ("token", self.rejected_token.load(Relaxed)),
            ],
        );
        let dropped: Vec<_> = DROPPED
            .iter()
            .map(|&(why, name)| (name, self.dropped[why as usize].load(Relaxed)))
            .collect();
        labelled(
            "http_dropped_total",
            "HTTP connections dropped or requests refused by the server, by reason.",
            &dropped,
        );
        labelled(
            "accept_errors_total",
            "accept(2) failures (descriptors: the process ran out of file descriptors; accept backs off and retries).",
            &[
                ("descriptors", self.accept_errors_descriptors.load(Relaxed)),
                ("other", self.accept_errors_other.load(Relaxed)),
            ],
        );
        out
    }
}
