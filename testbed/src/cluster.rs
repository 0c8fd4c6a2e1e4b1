//! [`TestCluster`]: nodes of a cluster in-process, sharing one
//! [`RedisServer`], behind a round-robin [`FaultProxy`]: each new
//! connection (each reconnect) goes to the next node. For tests that need
//! the cluster but no real crash (those use [`crate::NodeProcess`]).

use anyhow::{Context, Result};

use crate::{FaultProxy, Faults, RedisServer, TestServer, config};

/// Redis, the nodes and the proxy in front of them.
pub struct TestCluster {
    /// The nodes, in the proxy's order.
    pub nodes: Vec<TestServer>,
    /// The round-robin proxy in front of the nodes (no cuts until told).
    pub proxy: FaultProxy,
    // Dropped last: the nodes shut down first.
    redis: RedisServer,
}

impl TestCluster {
    /// Starts Redis and `count` nodes (`node-1`, …) with `args` besides the
    /// cluster's, each on a free port, and the proxy in front of them.
    ///
    /// # Errors
    ///
    /// When Redis (see [`RedisServer::start`]) or a node does not start.
    pub async fn start(count: usize, args: &[&str]) -> Result<Self> {
        let redis = RedisServer::start()?;
        let url = redis.url();
        let mut nodes = Vec::with_capacity(count);
        for i in 1..=count {
            let id = format!("node-{i}");
            let mut node_args = vec!["--redis-url", &url, "--node-id", &id];
            node_args.extend_from_slice(args);
            let config = config(&node_args).with_context(|| format!("{id}'s config"))?;
            nodes.push(TestServer::start(config).await?);
        }
        let proxy =
            FaultProxy::start_many(nodes.iter().map(|n| n.addr).collect(), Faults::none()).await?;
        Ok(Self {
            nodes,
            proxy,
            redis,
        })
    }

    /// `ws://127.0.0.1:PORT` of the proxy.
    pub fn ws_base(&self) -> String {
        format!("ws://{}", self.proxy.addr)
    }

    /// The `redis://` URL the nodes share.
    pub fn redis_url(&self) -> String {
        self.redis.url()
    }

    /// Shuts every node down gracefully, then stops Redis.
    ///
    /// # Errors
    ///
    /// When a node ended with an error.
    pub async fn shutdown(self) -> Result<()> {
        for node in self.nodes {
            node.shutdown().await?;
        }
        Ok(())
    }
}
