//! The cluster's flags, flattened into [`crate::Config`]. None of them does
//! anything without `--redis-url`.

use std::time::Duration;

use crate::duration::parse_duration;

/// Scale-out on Redis: every flag with its environment variable.
#[derive(Debug, Clone, clap::Args)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// Runs this server as a node of a cluster sharing this Redis
    /// (`redis://host:port/db`). Without it the server is one node, in memory.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// This node's id in logs, `/metrics` and the admin list; random
    /// (16 hex digits) by default. Two live nodes must not share one.
    #[arg(long, env = "SERVER_NODE_ID")]
    pub node_id: Option<String>,

    /// The prefix of every Redis key, so that several clusters (or other
    /// applications) can share one Redis.
    #[arg(long, env = "SERVER_REDIS_PREFIX", default_value = "ws:")]
    pub redis_prefix: String,

    /// How often a node refreshes its membership key and the TTL of its
    /// keys in Redis.
    #[arg(long, env = "SERVER_CLUSTER_HEARTBEAT", default_value = "1s", value_parser = parse_duration)]
    pub cluster_heartbeat: Duration,

    /// The TTL of a node's keys: a node that stops heartbeating (killed,
    /// frozen, cut from Redis) and its connections drop out of the
    /// cluster's list within this time. Must exceed `--cluster-heartbeat`.
    #[arg(long, env = "SERVER_CLUSTER_NODE_TTL", default_value = "5s", value_parser = parse_duration)]
    pub cluster_node_ttl: Duration,

    /// How long an admin request waits for the node holding a connection
    /// (or for every node, for a broadcast) before answering 504 (or
    /// naming the node as not answering).
    #[arg(long, env = "SERVER_CLUSTER_COMMAND_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub cluster_command_timeout: Duration,
}
