//! The cloneable state handle passed to every handler with `Router::with_state`.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::reliable;

/// Shared state: configuration, registry, counters, and the shutdown signal
/// every connection watches.
#[derive(Clone)]
pub struct AppState {
    /// The configuration.
    pub config: Arc<Config>,
    /// Token mode's verifier; `None` in anonymous mode.
    pub auth: Option<Arc<crate::auth::Verifier>>,
    /// Connected `/ws` clients.
    pub registry: Arc<Registry>,
    /// Reliable-mode sessions, which outlive their connections.
    pub reliable: Arc<reliable::Store>,
    /// Cluster mode (`--redis-url`): this node; `None` on a single node.
    pub cluster: Option<Arc<crate::cluster::Node>>,
    /// Channels: the node's subscribers, streams and (in a cluster) relay.
    pub channels: Arc<crate::channels::service::Channels>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Every WebSocket connection, so shutdown can wait for them.
    pub connections: TaskTracker,
}
