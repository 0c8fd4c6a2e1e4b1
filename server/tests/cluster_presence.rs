//! Presence across nodes on one Redis (issue 24): three subprocess nodes
//! with members on each answer the same presence; one SIGKILLed drops out
//! of every answer within two node TTLs, and one `leave` per member of it
//! reaches the subscribers; and after Redis restarts empty, the nodes write
//! their members again. `presence_stats`, which counts from the runs'
//! counts without reading members, agrees with the listed members on every
//! node, users included (token mode), and drops a killed node's.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Ws, next_json, send_text};
use shared::ServerMessage;
use testbed::{NodeProcess, RedisServer};
use tokio::time::Instant;

const ADMIN: &str = "cluster-presence-admin-token";
/// `--cluster-node-ttl`: a dead node's members go within twice this.
const NODE_TTL: Duration = Duration::from_secs(2);

const NAMESPACES: &str = r#"
[[namespace]]
name = "room"
presence = true
join_leave = true
anonymous = ["subscribe", "presence"]
authenticated = ["subscribe", "presence"]
"#;

/// The namespaces' config file, removed on drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "cluster-presence-{}-{:x}.toml",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::write(&path, NAMESPACES).unwrap();
        Self(path)
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn node(redis: &RedisServer, prefix: &str, id: &str, config: &Path) -> NodeProcess {
    start_node(redis, prefix, id, config, &["--allow-client-ids"])
}

/// A node in token mode (the testbed's secret): its members have users.
fn token_node(redis: &RedisServer, prefix: &str, id: &str, config: &Path) -> NodeProcess {
    start_node(
        redis,
        prefix,
        id,
        config,
        // A small answer: the list is cut, and the cut is said.
        &[
            "--jwt-secret",
            testbed::TEST_JWT_SECRET,
            "--max-presence-answer",
            "2",
        ],
    )
}

fn start_node(
    redis: &RedisServer,
    prefix: &str,
    id: &str,
    config: &Path,
    mode: &[&str],
) -> NodeProcess {
    let (url, config) = (redis.url(), config.to_string_lossy());
    let ttl = format!("{}ms", NODE_TTL.as_millis());
    let args = [
        "--redis-url",
        &url,
        "--redis-prefix",
        prefix,
        "--node-id",
        id,
        "--cluster-heartbeat",
        "100ms",
        "--cluster-node-ttl",
        &ttl,
        "--push-interval",
        "0",
        "--ping-interval",
        "0",
        "--static-dir",
        "/nonexistent",
        "--admin-token",
        ADMIN,
        "--config",
        &config,
    ];
    let args: Vec<&str> = args.iter().chain(mode).copied().collect();
    NodeProcess::start(Path::new(env!("CARGO_BIN_EXE_server")), &args, false).unwrap()
}

async fn join(node: &NodeProcess, id: &str) -> Ws {
    subscribed(&format!(
        "ws://{}/ws?protocol=2&client_id={id}",
        node.addr()
    ))
    .await
}

/// A connection of `user`'s (token mode) subscribed to `room:p`.
async fn join_as(node: &NodeProcess, user: &str) -> Ws {
    let token = testbed::mint_token(user, Duration::from_secs(600));
    subscribed(&format!("ws://{}/ws?protocol=2&token={token}", node.addr())).await
}

async fn subscribed(url: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert!(matches!(
        next_json(&mut ws).await,
        ServerMessage::Welcome { .. }
    ));
    send_text(&mut ws, r#"{"type":"subscribe","channel":"room:p"}"#).await;
    assert!(matches!(
        next_json(&mut ws).await,
        ServerMessage::Subscribed { .. }
    ));
    ws
}

/// [`join`], subscribing again while the node's Redis is still away
/// (`unavailable`), within a deadline.
async fn join_when_up(node: &NodeProcess, id: &str) -> Ws {
    let url = format!("ws://{}/ws?protocol=2&client_id={id}", node.addr());
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert!(matches!(
        next_json(&mut ws).await,
        ServerMessage::Welcome { .. }
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        send_text(&mut ws, r#"{"type":"subscribe","channel":"room:p"}"#).await;
        match next_json(&mut ws).await {
            ServerMessage::Subscribed { .. } => return ws,
            ServerMessage::Error { .. } if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("expected subscribed, got {other:?}"),
        }
    }
}

/// The members a node's admin API lists, sorted; `None` when it does not answer.
async fn members(addr: std::net::SocketAddr) -> Option<Vec<String>> {
    let answer: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{addr}/api/channels/room:p/presence"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let mut ids: Vec<String> = answer["clients"]
        .as_array()?
        .iter()
        .filter_map(|m| m["client_id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    Some(ids)
}

/// A node's `presence_stats` of `room:p`: (clients, users).
async fn stats(addr: std::net::SocketAddr) -> Option<(u64, u64)> {
    let answer: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{addr}/api/channels/room:p/presence_stats"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some((answer["clients"].as_u64()?, answer["users"].as_u64()?))
}

/// How many members a node's `presence` of `room:p` lists, and whether it
/// says the list was cut.
async fn listed(addr: std::net::SocketAddr) -> (usize, bool) {
    let answer: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{addr}/api/channels/room:p/presence"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let clients = answer["clients"].as_array().map_or(0, Vec::len);
    (clients, answer["truncated"] == true)
}

/// Waits until every node's `presence_stats` is `want`.
async fn until_all_count(nodes: &[std::net::SocketAddr], want: (u64, u64), within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut seen = Vec::new();
        for &addr in nodes {
            seen.push(stats(addr).await);
        }
        if seen.iter().all(|s| *s == Some(want)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "every node counts {want:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn until_all_answer(nodes: &[std::net::SocketAddr], want: &[&str], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut same = true;
        for &addr in nodes {
            same &= members(addr).await.as_deref()
                == Some(&want.iter().map(|s| s.to_string()).collect::<Vec<_>>()[..]);
        }
        if same {
            return;
        }
        assert!(Instant::now() < deadline, "every node answers {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `join`s and `leave`s `ws` got until the pong of a marker ping.
async fn notices(ws: &mut Ws) -> BTreeMap<String, (u32, u32)> {
    send_text(ws, r#"{"type":"ping","t":7}"#).await;
    let mut seen = BTreeMap::new();
    loop {
        match next_json(ws).await {
            ServerMessage::Join { info, .. } => seen.entry(info.client_id).or_insert((0, 0)).0 += 1,
            ServerMessage::Leave { info, .. } => {
                seen.entry(info.client_id).or_insert((0, 0)).1 += 1
            }
            ServerMessage::Pong { .. } => return seen,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_answers_the_same_and_a_killed_nodes_members_leave_once() {
    let config = ConfigFile::new();
    let redis = RedisServer::start().unwrap();
    let prefix = format!("cp-{:x}:", rand::random::<u32>());
    let mut nodes: Vec<NodeProcess> = ["pa", "pb", "pc"]
        .iter()
        .map(|id| node(&redis, &prefix, id, &config.0))
        .collect();
    let mut watcher = join(&nodes[1], "watcher").await;
    let _a1 = join(&nodes[0], "a1").await;
    let _a2 = join(&nodes[0], "a2").await;
    let _b1 = join(&nodes[1], "b1").await;
    let _c1 = join(&nodes[2], "c1").await;
    let _c2 = join(&nodes[2], "c2").await;
    let addrs: Vec<_> = nodes.iter().map(NodeProcess::addr).collect();
    until_all_answer(
        &addrs,
        &["a1", "a2", "b1", "c1", "c2", "watcher"],
        Duration::from_secs(10),
    )
    .await;
    // Joins reached the watcher across nodes (best effort, but here all).
    let joined = {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut all = BTreeMap::new();
        while all.len() < 5 {
            for (id, (j, _)) in notices(&mut watcher).await {
                *all.entry(id).or_insert(0) += j;
            }
            assert!(Instant::now() < deadline, "joins: {all:?}");
        }
        all
    };
    assert!(
        joined.values().all(|&n| n == 1),
        "one join each: {joined:?}"
    );
    // The counts agree with the list (anonymous: no users).
    until_all_count(&addrs, (6, 0), Duration::from_secs(10)).await;

    tokio::task::block_in_place(|| nodes[2].kill().unwrap());
    let killed = Instant::now();
    until_all_answer(
        &addrs[..2],
        &["a1", "a2", "b1", "watcher"],
        // Two node TTLs, and room for a loaded machine's heartbeats.
        2 * NODE_TTL + Duration::from_secs(2),
    )
    .await;
    until_all_count(&addrs[..2], (4, 0), Duration::from_secs(1)).await;
    eprintln!(
        "the killed node's members were gone after {:?}",
        killed.elapsed()
    );
    // One leave per member of the dead node: wait a while for any second one.
    let mut leaves: BTreeMap<String, u32> = BTreeMap::new();
    let settle = Instant::now() + Duration::from_secs(1);
    while Instant::now() < settle || leaves.len() < 2 {
        for (id, (_, l)) in notices(&mut watcher).await {
            *leaves.entry(id).or_insert(0) += l;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "leaves: {leaves:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    leaves.retain(|_, n| *n > 0);
    assert_eq!(
        leaves,
        BTreeMap::from([("c1".to_owned(), 1), ("c2".to_owned(), 1)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_restarts_empty_the_nodes_write_their_members_again() {
    let config = ConfigFile::new();
    let mut redis = RedisServer::start().unwrap();
    let prefix = format!("cr-{:x}:", rand::random::<u32>());
    let nodes: Vec<NodeProcess> = ["ra", "rb"]
        .iter()
        .map(|id| node(&redis, &prefix, id, &config.0))
        .collect();
    let _a = join(&nodes[0], "a").await;
    let _b = join(&nodes[1], "b").await;
    let addrs: Vec<_> = nodes.iter().map(NodeProcess::addr).collect();
    until_all_answer(&addrs, &["a", "b"], Duration::from_secs(10)).await;
    redis.restart().unwrap();
    // One joins at once, most likely before the nodes' next heartbeat: its
    // write must not pass for the node's (the others would stay unlisted).
    let _late = join_when_up(&nodes[0], "late").await;
    until_all_answer(&addrs, &["a", "b", "late"], Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counts_of_clients_and_users_agree_on_every_node_and_follow_leaves_and_deaths() {
    let config = ConfigFile::new();
    let redis = RedisServer::start().unwrap();
    let prefix = format!("cs-{:x}:", rand::random::<u32>());
    let mut nodes: Vec<NodeProcess> = ["sa", "sb"]
        .iter()
        .map(|id| token_node(&redis, &prefix, id, &config.0))
        .collect();
    let addrs: Vec<_> = nodes.iter().map(NodeProcess::addr).collect();
    // Alice on both nodes, twice on the first; Bob and Carol on the second.
    let alice_a1 = join_as(&nodes[0], "alice").await;
    let _alice_a2 = join_as(&nodes[0], "alice").await;
    let _alice_b = join_as(&nodes[1], "alice").await;
    let bob = join_as(&nodes[1], "bob").await;
    let _carol = join_as(&nodes[1], "carol").await;
    until_all_count(&addrs, (5, 3), Duration::from_secs(10)).await;
    for &addr in &addrs {
        assert_eq!(listed(addr).await, (2, true), "two of five, cut");
    }
    // One of Alice's connections leaves: she is still there; Bob leaves.
    drop((alice_a1, bob));
    until_all_count(&addrs, (3, 2), Duration::from_secs(10)).await;
    // The second node dies: its members go, Carol with them, and Alice
    // stays by her first node's connection.
    tokio::task::block_in_place(|| nodes[1].kill().unwrap());
    until_all_count(&addrs[..1], (1, 1), 2 * NODE_TTL + Duration::from_secs(2)).await;
    // Listed from the live node only, reaped or not: one, not cut.
    assert_eq!(listed(addrs[0]).await, (1, false));
    // Another connection of Alice's is one more client, not one more user.
    let _alice_again = join_as(&nodes[0], "alice").await;
    until_all_count(&addrs[..1], (2, 1), Duration::from_secs(10)).await;
}
