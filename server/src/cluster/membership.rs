//! The heartbeat and the mirror of the registry, in one task so that a full
//! resync never interleaves with an incremental update.
//!
//! Every `--cluster-heartbeat` the node, in one `MULTI`/`EXEC`: sets
//! `node:{id}` with the node TTL, adds itself to `nodes`, and refreshes the
//! TTL of `nodes`, `clients:{id}`, `cmd:{id}` and `reply:{id}`; then it
//! reads which members of `nodes` are still alive and drops the others.
//! Between heartbeats each registry change is written at once (`HSET` or
//! `HDEL` on `clients:{id}`). After Redis was unreachable, or when
//! `clients:{id}` is gone (Redis restarted empty, or the node was frozen
//! past its TTL), the whole hash is written again from the registry.
//!
//! The registry hands changes over through a bounded queue; when it is
//! full a change is dropped and a flag set, and the next heartbeat writes
//! the whole hash again.
//!
//! While Redis is down (two heartbeats failed in a row) the node serves on:
//! changes are dropped (the resync will cover them) and `up` is false, which `/readyz`, `/metrics` and the
//! admin API read. The heartbeat keeps trying, every period, while the
//! connection manager reconnects with its own exponential backoff.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

use serde::Serialize;
use std::sync::atomic::AtomicBool;

use tokio::sync::mpsc::Receiver;
use tokio_util::sync::CancellationToken;

use super::{ClusterError, Node};
use crate::clock::millis;
use crate::registry::{Change, MirrorRow, Registry};

/// A mirrored row as stored in `clients:{id}`: the registry's row and the node.
#[derive(Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    row: &'a MirrorRow,
    node: &'a str,
}

/// Heartbeats failed in a row before the node is not ready (`/readyz` 503,
/// admin API 503 for what needs other nodes).
const DOWN_AFTER: u32 = 2;

/// At most this many changes go in one pipeline.
const BATCH: usize = 256;

/// Runs until `stop`: heartbeats, and mirrors `changes` into Redis.
pub async fn run(
    node: Arc<Node>,
    registry: Arc<Registry>,
    (mut changes, overflowed): (Receiver<Change>, Arc<AtomicBool>),
    stop: CancellationToken,
) {
    let started_at = millis(SystemTime::now());
    let mut tick = tokio::time::interval(node.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resync = true;
    let mut failures = 0;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {
                // Changes were dropped (the queue was full): write all.
                resync |= overflowed.swap(false, Relaxed);
                match heartbeat(&node, started_at, resync, &registry).await {
                    Ok(()) => {
                        node.down.store(false, Relaxed);
                        if !node.up.swap(true, Relaxed) {
                            tracing::info!(node = %node.id, "cluster: Redis reachable, node ready");
                        }
                        resync = false;
                        failures = 0;
                    }
                    Err(err) => {
                        // One slow heartbeat on a loaded machine is not an
                        // outage: not ready after two failures in a row.
                        failures += 1;
                        if failures >= DOWN_AFTER {
                            node.down.store(true, Relaxed);
                        }
                        if failures >= DOWN_AFTER && node.up.swap(false, Relaxed) {
                            tracing::warn!(node = %node.id, "cluster: {err}; not ready until Redis answers again");
                        }
                        resync = true;
                    }
                }
            }
            received = changes.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    break;
                }
                // Down, or a resync is due anyway: the resync writes the
                // registry as it is then, which includes these changes.
                if !resync && node.is_up() && mirror(&node, &batch).await.is_err() {
                    resync = true;
                }
                batch.clear();
            }
        }
    }
    leave(&node).await;
}

/// One heartbeat; with `resync`, the whole mirror written again.
async fn heartbeat(
    node: &Node,
    started_at: u64,
    resync: bool,
    registry: &Registry,
) -> Result<(), ClusterError> {
    let ttl = i64::try_from(node.ttl_ms()).unwrap_or(i64::MAX);
    let clients = node.key("clients", &node.id);
    let nodes = format!("{}nodes", node.prefix);
    let me = serde_json::json!({ "id": node.id, "started_at": started_at }).to_string();
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("SET")
        .arg(node.key("node", &node.id))
        .arg(me)
        .arg("PX")
        .arg(ttl)
        .ignore()
        .sadd(&nodes, &node.id)
        .ignore()
        .pexpire(&nodes, ttl)
        .ignore();
    if resync {
        pipe.del(&clients).ignore();
        for row in registry.mirror_rows() {
            pipe.hset(&clients, &row.id, encode(node, &row)).ignore();
        }
    }
    pipe.pexpire(&clients, ttl)
        .pexpire(node.key("cmd", &node.id), ttl)
        .ignore()
        .pexpire(node.key("reply", &node.id), ttl)
        .ignore()
        .smembers(&nodes)
        .cmd("TIME");
    let before = crate::clock::local_ms();
    let (has_clients, members, (secs, micros)): (bool, Vec<String>, (u64, u64)) =
        node.query(&pipe).await?;
    let redis_ms = secs.saturating_mul(1000).saturating_add(micros / 1000);
    crate::clock::observed_redis_time(redis_ms, before, crate::clock::local_ms());
    if !has_clients && !resync && !registry.mirror_rows().is_empty() {
        // The hash vanished (Redis restarted, or this node was frozen past
        // its TTL): write it again now rather than at the next heartbeat.
        return Box::pin(heartbeat(node, started_at, true, registry)).await;
    }
    let mut alive = redis::pipe();
    for member in &members {
        alive.exists(node.key("node", member));
    }
    let flags: Vec<bool> = node.query(&alive).await?;
    let (live, dead): (Vec<_>, Vec<_>) = members.into_iter().zip(flags).partition(|(_, a)| *a);
    if !dead.is_empty() {
        let mut prune = redis::pipe();
        for (member, _) in &dead {
            prune.srem(&nodes, member).ignore();
        }
        node.query::<()>(&prune).await?;
    }
    *node
        .live
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) =
        live.into_iter().map(|(member, _)| member).collect();
    Ok(())
}

fn encode(node: &Node, row: &MirrorRow) -> String {
    serde_json::to_string(&Row {
        row,
        node: &node.id,
    })
    .unwrap_or_default()
}

/// Writes `changes` to `clients:{id}`.
async fn mirror(node: &Node, changes: &[Change]) -> Result<(), ClusterError> {
    let clients = node.key("clients", &node.id);
    let mut pipe = redis::pipe();
    for change in changes {
        match change {
            Change::Upsert(row) => pipe.hset(&clients, &row.id, encode(node, row)).ignore(),
            Change::Remove(id) => pipe.hdel(&clients, id).ignore(),
        };
    }
    // A hash created by the first HSET has no TTL yet.
    pipe.pexpire(&clients, i64::try_from(node.ttl_ms()).unwrap_or(i64::MAX))
        .ignore();
    node.query(&pipe).await
}

/// A clean shutdown: the node and its connections leave the list at once
/// rather than after the TTL.
async fn leave(node: &Node) {
    let mut pipe = redis::pipe();
    pipe.del(node.key("node", &node.id))
        .ignore()
        .del(node.key("clients", &node.id))
        .ignore()
        .srem(format!("{}nodes", node.prefix), &node.id)
        .ignore();
    if let Err(err) = node.query::<()>(&pipe).await {
        tracing::debug!(node = %node.id, "cluster: could not leave cleanly ({err}); the TTL will");
    }
}
