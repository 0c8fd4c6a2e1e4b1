//! Scale-out on Redis: the cluster's membership, its admin API across
//! nodes and the takeover of reliable sessions (issue 14).
//!
//! Without `--redis-url` there is no [`Node`]: `AppState::cluster` is
//! `None`, the registry has no mirror, and every admin request is served
//! from this process's memory as before. Nothing here runs, and nothing
//! is paid, on a single node.
//!
//! # The engine
//!
//! The `redis` crate (redis-rs) with its tokio `ConnectionManager`: the
//! most used Redis client of the ecosystem, pure Rust, with a manager that
//! multiplexes one connection for every task and reconnects by itself
//! with exponential backoff, which is what a node needs; streams,
//! pipelines and `MULTI`/`EXEC` are plain commands. `fred` does as much
//! with more machinery (its own pools, a much larger API and dependency
//! tree) that one node does not need. Blocking reads (`XREAD BLOCK`)
//! stall the connection they run on, so the command reader has its own
//! connection; everything else shares the manager's.
//!
//! # Keys (every key starts with `--redis-prefix`, `ws:` by default)
//!
//! | key | type | TTL | what |
//! |---|---|---|---|
//! | `nodes` | set | node TTL, refreshed by every heartbeat | the ids of nodes seen; a member whose `node:{id}` is gone is removed |
//! | `node:{id}` | string | node TTL | the node is alive: `{"id","started_at"}` |
//! | `clients:{id}` | hash | node TTL | the node's connections: client id → `{"id","node","user","client_name","remote_addr","connected_at"}` |
//! | `cmd:{id}` | stream | node TTL, refreshed by the node and by every `XADD` | commands to the node (push, kick, user push and kick, broadcast), `MAXLEN ~ 1000` |
//! | `reply:{id}` | stream | as `cmd:{id}` | the answers to the commands the node sent |
//!
//! The heartbeat (`--cluster-heartbeat`, 1 s) refreshes them; the TTL
//! (`--cluster-node-ttl`, 5 s) bounds how long a dead node and its
//! connections stay in the cluster's list.
//!
//! # Layout
//!
//! | module | what |
//! |---|---|
//! | `config` | [`ClusterConfig`]: the flags |
//! | `membership` | the heartbeat and the mirror of the registry into `clients:{id}` (one task, so a full resync never races an update) |
//! | `command` | [`Command`] and [`Answer`], the per-node command stream, its reader and the replies with a deadline |
//!
//! Reliable sessions have keys of their own (`sess:`, `hist:`, `client:`,
//! `user:`), listed with their scripts in `reliable::RedisStore`'s docs and
//! in docs/CLUSTER.md.
//!
//! # Reliable sessions
//!
//! With a node, the server's session store is `reliable::RedisStore` on
//! this node's connection: a resume on another node sends
//! [`Command::Takeover`] to the node that held the session, whose
//! connection closes with 4002 at once (its writes are fenced in Redis
//! either way).

mod command;
mod config;
mod membership;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

pub use command::{Answer, Command, Executor};
pub use config::ClusterConfig;

/// Why a cross-node operation could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// Redis does not answer (or answered an error): the admin API says 503.
    #[error("Redis is unreachable: {0}")]
    Redis(String),
    /// The node holding the connection did not answer in time: 504.
    #[error("node {0} did not answer within the command timeout")]
    Timeout(String),
}

impl From<redis::RedisError> for ClusterError {
    fn from(err: redis::RedisError) -> Self {
        Self::Redis(err.to_string())
    }
}

/// The Redis session store runs on the node's connection and command streams.
impl crate::reliable::Backend for Node {
    fn id(&self) -> &str {
        &self.id
    }

    fn prefix(&self) -> &str {
        &self.prefix
    }

    fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    fn count_redis_error(&self) {
        self.redis_errors.fetch_add(1, Relaxed);
    }

    fn send_takeover(self: Arc<Self>, node: String, session: String, epoch: u64) {
        tokio::spawn(async move {
            let takeover = Command::Takeover { session, epoch };
            // The resume just reached Redis: no need to wait for a heartbeat.
            if let Err(err) = self.send_anyway(&node, takeover).await {
                tracing::info!(%node, "takeover not confirmed (the node is fenced anyway): {err}");
            }
        });
    }
}

/// This process as a node of the cluster.
pub struct Node {
    id: String,
    prefix: String,
    client: redis::Client,
    conn: ConnectionManager,
    heartbeat: Duration,
    ttl: Duration,
    command_timeout: Duration,
    /// True while the last heartbeat reached Redis.
    up: AtomicBool,
    /// True once heartbeats failed (not before the first one, unlike `!up`).
    down: AtomicBool,
    /// The live nodes (this one included) as of the last heartbeat.
    live: Mutex<Vec<String>>,
    /// The next command's request id: from a random start
    /// ([`command::first_request`]), never 1 after a restart.
    next_request: AtomicU64,
    /// Requests sent to other nodes, waiting for their answer.
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    /// Counters for `/metrics`.
    commands_timed_out: AtomicU64,
    redis_errors: AtomicU64,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// The node for `config`, without touching Redis yet (it may be down
    /// at start: the node serves and reconnects by itself).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Cluster`] when the URL does not parse or the node
    /// TTL is not above the heartbeat.
    pub fn new(url: &str, config: &ClusterConfig) -> Result<Self, crate::Error> {
        if config.cluster_heartbeat.is_zero() || config.cluster_node_ttl <= config.cluster_heartbeat
        {
            return Err(crate::Error::Cluster(
                "--cluster-node-ttl must be above --cluster-heartbeat (and the heartbeat above 0)"
                    .into(),
            ));
        }
        let client = redis::Client::open(url)
            .map_err(|err| crate::Error::Cluster(format!("--redis-url: {err}")))?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(config.cluster_command_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager)
            .map_err(|err| crate::Error::Cluster(format!("--redis-url: {err}")))?;
        let id = config
            .node_id
            .clone()
            .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
        // It goes into Redis keys and metric labels as it is.
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(crate::Error::Cluster(
                "--node-id must have 1 to 64 letters, digits, '-', '_' or '.'".into(),
            ));
        }
        Ok(Self {
            id,
            prefix: config.redis_prefix.clone(),
            client,
            conn,
            heartbeat: config.cluster_heartbeat,
            ttl: config.cluster_node_ttl,
            command_timeout: config.cluster_command_timeout,
            up: AtomicBool::new(false),
            down: AtomicBool::new(false),
            live: Mutex::default(),
            next_request: AtomicU64::new(command::first_request()),
            pending: Mutex::default(),
            commands_timed_out: AtomicU64::new(0),
            redis_errors: AtomicU64::new(0),
        })
    }

    /// Starts the heartbeat, the registry's mirror and the command reader;
    /// they stop when `stop` is cancelled. The returned task ends once the
    /// node has left the cluster (its keys deleted): `run` waits for it, so
    /// that a clean exit does not leave the node listed until its TTL.
    pub fn start(
        self: &Arc<Self>,
        registry: &Arc<crate::registry::Registry>,
        executor: Executor,
        stop: &CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tracing::info!(node = %self.id, prefix = %self.prefix, "cluster node: heartbeat {:?}, TTL {:?}", self.heartbeat, self.ttl);
        let changes = registry.mirror();
        tokio::spawn(command::read(self.clone(), executor, stop.clone()));
        tokio::spawn(membership::run(
            self.clone(),
            registry.clone(),
            changes,
            stop.clone(),
        ))
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The Redis client, for a connection of one's own (pub/sub).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// True while Redis answers this node's heartbeat.
    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    fn key(&self, what: &str, node: &str) -> String {
        format!("{}{what}:{node}", self.prefix)
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// The live nodes other than this one, as of the last heartbeat.
    pub fn others(&self) -> Vec<String> {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|n| **n != self.id)
            .cloned()
            .collect()
    }

    /// True once Redis stopped answering the heartbeats (until one
    /// succeeds again); false at start, before the first heartbeat.
    pub fn is_down(&self) -> bool {
        self.down.load(Relaxed)
    }

    /// Redis commands of this node that failed or timed out so far (the
    /// `ws_cluster_redis_errors_total` metric).
    pub fn redis_errors(&self) -> u64 {
        self.redis_errors.load(Relaxed)
    }

    /// Fails fast while Redis is known to be down.
    pub fn check_up(&self) -> Result<(), ClusterError> {
        if self.is_up() {
            Ok(())
        } else {
            Err(ClusterError::Redis(
                "the last heartbeat did not reach Redis".into(),
            ))
        }
    }

    /// Runs `query` on the shared connection within the command timeout.
    async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, ClusterError> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.command_timeout, pipe.query_async::<T>(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                self.redis_errors.fetch_add(1, Relaxed);
                Err(err.into())
            }
            Err(_) => {
                self.redis_errors.fetch_add(1, Relaxed);
                Err(ClusterError::Redis("Redis did not answer in time".into()))
            }
        }
    }

    /// The mirrored rows of every other live node's connections.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Redis`] when Redis does not answer.
    pub async fn remote_clients(&self) -> Result<Vec<serde_json::Value>, ClusterError> {
        self.check_up()?;
        let others = self.others();
        if others.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for node in &others {
            pipe.hvals(self.key("clients", node));
        }
        let rows: Vec<Vec<String>> = self.query(&pipe).await?;
        Ok(rows
            .into_iter()
            .flatten()
            .filter_map(|row| serde_json::from_str(&row).ok())
            .collect())
    }

    /// The other live node holding connection `id`, if any.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Redis`] when Redis does not answer.
    pub async fn locate(&self, id: &str) -> Result<Option<String>, ClusterError> {
        self.check_up()?;
        let others = self.others();
        if others.is_empty() {
            return Ok(None);
        }
        let mut pipe = redis::pipe();
        for node in &others {
            pipe.hexists(self.key("clients", node), id);
        }
        let found: Vec<bool> = self.query(&pipe).await?;
        Ok(others
            .into_iter()
            .zip(found)
            .find_map(|(node, here)| here.then_some(node)))
    }

    /// Lines for `/metrics`.
    pub fn render_metrics(&self) -> String {
        let live = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        format!(
            "# HELP ws_cluster_redis_up 1 while this node's heartbeat reaches Redis, else 0.\n\
             # TYPE ws_cluster_redis_up gauge\nws_cluster_redis_up{{node=\"{id}\"}} {up}\n\
             # HELP ws_cluster_nodes Live nodes of the cluster (this one included) as of the last heartbeat.\n\
             # TYPE ws_cluster_nodes gauge\nws_cluster_nodes{{node=\"{id}\"}} {live}\n\
             # HELP ws_cluster_commands_timed_out_total Commands to another node that got no answer within --cluster-command-timeout.\n\
             # TYPE ws_cluster_commands_timed_out_total counter\nws_cluster_commands_timed_out_total{{node=\"{id}\"}} {timed_out}\n\
             # HELP ws_cluster_redis_errors_total Redis commands of this node that failed or timed out.\n\
             # TYPE ws_cluster_redis_errors_total counter\nws_cluster_redis_errors_total{{node=\"{id}\"}} {errors}\n",
            id = self.id,
            up = u8::from(self.is_up()),
            timed_out = self.commands_timed_out.load(Relaxed),
            errors = self.redis_errors.load(Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn config(args: &[&str]) -> crate::Config {
        crate::Config::try_parse_from(std::iter::once("server").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn defaults_match_the_documentation() {
        let cluster = config(&[]).cluster;
        assert_eq!(cluster.redis_url, None);
        assert_eq!(cluster.node_id, None);
        assert_eq!(cluster.redis_prefix, "ws:");
        assert_eq!(cluster.cluster_heartbeat, Duration::from_secs(1));
        assert_eq!(cluster.cluster_node_ttl, Duration::from_secs(5));
        assert_eq!(cluster.cluster_command_timeout, Duration::from_secs(2));
    }

    #[tokio::test]
    async fn unusable_flags_are_refused_at_start() {
        let url = "redis://127.0.0.1:1/";
        let ok = config(&["--node-id", "a-1.b_2"]).cluster;
        let node = Node::new(url, &ok).unwrap();
        assert_eq!(node.id(), "a-1.b_2");
        assert!(!node.is_up(), "not ready before the first heartbeat");
        let random = Node::new(url, &config(&[]).cluster).unwrap();
        assert_eq!(random.id().len(), 16);
        for bad in [
            &["--cluster-node-ttl", "1s", "--cluster-heartbeat", "1s"][..],
            &["--cluster-heartbeat", "0"],
            &["--node-id", "a b"],
            &["--node-id", "x\"y"],
        ] {
            assert!(
                matches!(
                    Node::new(url, &config(bad).cluster),
                    Err(crate::Error::Cluster(_))
                ),
                "{bad:?}"
            );
        }
        assert!(Node::new("not a url", &ok).is_err());
    }

    #[tokio::test]
    async fn a_node_restarted_with_its_id_does_not_number_its_commands_again() {
        let url = "redis://127.0.0.1:1/";
        let fixed = config(&["--node-id", "a"]).cluster;
        let starts: Vec<u64> = (0..3)
            .map(|_| {
                let node = Node::new(url, &fixed).unwrap();
                node.next_request.load(Relaxed)
            })
            .collect();
        // Three runs of node "a": three different starts, none of them 1,
        // so a late answer to the previous run's request 1, 2, ... does not
        // match this run's.
        assert!(!starts.contains(&1), "{starts:?}");
        assert!(
            starts[0] != starts[1] && starts[1] != starts[2] && starts[0] != starts[2],
            "{starts:?}"
        );
    }
}
