//! Channels through chaos (issue 23): three nodes as subprocesses on one
//! Redis, behind the fault proxy (each reconnect goes to the next node,
//! connections cut at random byte counts). 20 subscribers of one channel
//! recover by offset after every cut; 5,000 publications come half from the
//! admin API (any node, retried with the same `Idempotency-Key`) and half
//! from a client through the proxy (resent with the same `id` after each
//! cut); half way through, the node holding most subscribers is killed
//! with SIGKILL and started again.
//!
//! Every subscriber delivers offsets `1..=5000` exactly once, in order,
//! with no `channel_gap` and no new epoch. The server itself sends each
//! offset once per subscription (the wrapper would drop a repeat at or
//! below the last offset it delivered; none comes). Every publication is
//! made once (the last offset is 5,000).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use shared::ServerMessage;
use testbed::{FaultProxy, Faults, NodeProcess, RedisServer};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const PUBLICATIONS: u64 = 5_000;
const SUBSCRIBERS: usize = 20;
const NODES: [&str; 3] = ["ch-a", "ch-b", "ch-c"];
const ADMIN: &str = "channels-chaos-admin-token";
const CHANNEL: &str = "chat:chaos";
const DEADLINE: Duration = Duration::from_secs(90);

const NAMESPACES: &str = r#"
[[namespace]]
name = "chat"
history_size = 10000
history_ttl = "10m"
anonymous = ["subscribe", "publish"]
"#;

fn node(redis: &RedisServer, prefix: &str, id: &str, config: &Path) -> NodeProcess {
    let url = redis.url();
    let config = config.to_string_lossy();
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
        "2s",
        "--push-interval",
        "0",
        "--ping-interval",
        "0",
        "--static-dir",
        "/nonexistent",
        "--admin-token",
        ADMIN,
        "--publish-rate",
        "0",
        "--config",
        &config,
    ];
    NodeProcess::start(Path::new(env!("CARGO_BIN_EXE_server")), &args, false).unwrap()
}

/// What one subscriber delivered.
#[derive(Default)]
struct Delivered {
    offsets: Vec<u64>,
    /// Publications a recovery sent again at or below the last delivered.
    repeats: u64,
    /// What must not happen: gaps, new epochs, refusals.
    errors: Vec<String>,
    subscribes: u64,
}

/// One subscriber: connects through the proxy, (re)subscribes from its
/// last offset, and delivers each offset once, until it has them all.
async fn subscriber(url: String, delivered: Arc<Mutex<Delivered>>, stop: Instant) {
    let mut position: Option<(String, u64)> = None;
    while Instant::now() < stop {
        let Ok(Ok((mut ws, _))) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(&url),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let since = position.as_ref().map_or(String::new(), |(epoch, offset)| {
            format!(r#","since":{{"epoch":"{epoch}","offset":{offset}}}"#)
        });
        let subscribe = format!(r#"{{"type":"subscribe","channel":"{CHANNEL}"{since}}}"#);
        if ws.send(Message::text(subscribe)).await.is_err() {
            continue;
        }
        loop {
            let next = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
            let text = match next {
                Ok(Some(Ok(Message::Text(text)))) => text,
                Ok(Some(Ok(_))) => continue,
                // Cut, closed or silent: connect again.
                _ => break,
            };
            let mut d = delivered.lock().unwrap();
            match ServerMessage::from_json(&text) {
                Ok(ServerMessage::Welcome { .. }) => {}
                Ok(ServerMessage::Subscribed {
                    epoch,
                    offset,
                    recovered,
                    reason,
                    ..
                }) => {
                    d.subscribes += 1;
                    match (&position, recovered, reason) {
                        // Subscribed before the first publication.
                        (None, None, None) if offset == 0 => position = Some((epoch, 0)),
                        (Some((known, _)), Some(true), None) if *known == epoch => {}
                        other => d.errors.push(format!("subscribed: {other:?}")),
                    }
                }
                Ok(ServerMessage::Pub { offset, .. }) => {
                    let last = position.as_ref().map_or(0, |(_, last)| *last);
                    if offset <= last {
                        d.repeats += 1;
                    } else if offset == last + 1 {
                        d.offsets.push(offset);
                        if let Some((_, last)) = &mut position {
                            *last = offset;
                        }
                    } else {
                        d.errors.push(format!("pub {offset} after {last}"));
                    }
                    if d.offsets.len() as u64 >= PUBLICATIONS {
                        return;
                    }
                }
                Ok(other) => d.errors.push(format!("unexpected {other:?}")),
                Err(err) => d.errors.push(format!("undecodable: {err}")),
            }
        }
    }
}

/// Publishes `ids` through the proxy, each resent with its id after a cut
/// until its `published` comes.
async fn client_publisher(url: String, ids: Vec<u64>, made: Arc<AtomicU64>, stop: Instant) {
    let mut next = 0;
    while next < ids.len() && Instant::now() < stop {
        let Ok(Ok((mut ws, _))) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(&url),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        'connection: while next < ids.len() {
            let id = ids[next];
            let publish = format!(
                r#"{{"type":"publish","channel":"{CHANNEL}","data":{{"from":"client","n":{id}}},"id":"c{id}"}}"#
            );
            if ws.send(Message::text(publish)).await.is_err() {
                break;
            }
            loop {
                match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) => match ServerMessage::from_json(&text) {
                        Ok(ServerMessage::Published { id: Some(got), .. })
                            if got == format!("c{id}") =>
                        {
                            made.fetch_add(1, Relaxed);
                            next += 1;
                            continue 'connection;
                        }
                        // `unavailable` while a node's Redis is away: again.
                        Ok(ServerMessage::Error { .. }) => {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue 'connection;
                        }
                        _ => {}
                    },
                    Ok(Some(Ok(_))) => {}
                    _ => break 'connection,
                }
            }
        }
    }
}

/// Publishes `ids` through the admin API of any node, each retried with its
/// key (on another node) until one answers 200.
async fn admin_publisher(
    bases: Arc<Mutex<Vec<String>>>,
    ids: Vec<u64>,
    made: Arc<AtomicU64>,
    stop: Instant,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let mut attempt = 0usize;
    for id in ids {
        loop {
            assert!(Instant::now() < stop, "admin publication {id} timed out");
            attempt += 1;
            let base = {
                let bases = bases.lock().unwrap();
                bases[attempt % bases.len()].clone()
            };
            let answer = http
                .post(format!("{base}/api/channels/{CHANNEL}/publish"))
                .bearer_auth(ADMIN)
                .header("Idempotency-Key", format!("a{id}"))
                .body(format!(r#"{{"from":"admin","n":{id}}}"#))
                .send()
                .await;
            if answer.is_ok_and(|a| a.status() == 200) {
                made.fetch_add(1, Relaxed);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn seed() -> u64 {
    std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

/// The namespaces' config file, removed on drop.
struct ConfigFile(PathBuf);

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_gets_every_offset_once_in_order_through_cuts_and_a_node_killed() {
    let config = ConfigFile(std::env::temp_dir().join(format!(
        "channels-chaos-{}-{:x}.toml",
        std::process::id(),
        rand::random::<u32>()
    )));
    std::fs::write(&config.0, NAMESPACES).unwrap();
    let redis = RedisServer::start().unwrap();
    let prefix = format!("chch-{:x}:", rand::random::<u32>());
    let mut nodes: Vec<NodeProcess> = NODES
        .iter()
        .map(|id| node(&redis, &prefix, id, &config.0))
        .collect();
    let bases = Arc::new(Mutex::new(
        nodes
            .iter()
            .map(|n| format!("http://{}", n.addr()))
            .collect::<Vec<_>>(),
    ));
    let seed = seed();
    eprintln!("fault seed {seed} (set FAULT_SEED to replay)");
    // Each subscriber takes about 0.5 MB of publications: budgets of
    // 100-300 KB cut each one a few times.
    let proxy = FaultProxy::start_many(
        nodes.iter().map(NodeProcess::addr).collect(),
        Faults {
            seed,
            min_bytes: 100_000,
            max_bytes: 300_000,
        },
    )
    .await
    .unwrap();
    let url = format!("ws://{}/ws?protocol=2", proxy.addr);
    let started = Instant::now();
    let stop = started + DEADLINE;
    let delivered: Vec<Arc<Mutex<Delivered>>> = (0..SUBSCRIBERS)
        .map(|_| Arc::new(Mutex::new(Delivered::default())))
        .collect();
    let subscribers: Vec<_> = delivered
        .iter()
        .map(|d| tokio::spawn(subscriber(url.clone(), d.clone(), stop)))
        .collect();
    // Every subscriber in before the first publication.
    while delivered.iter().any(|d| d.lock().unwrap().subscribes == 0) {
        assert!(Instant::now() < stop, "subscribers did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let made = Arc::new(AtomicU64::new(0));
    let (admin_ids, client_ids): (Vec<u64>, Vec<u64>) =
        (1..=PUBLICATIONS).partition(|n| n % 2 == 0);
    let admin = tokio::spawn(admin_publisher(
        bases.clone(),
        admin_ids,
        made.clone(),
        stop,
    ));
    let client = tokio::spawn(client_publisher(
        url.clone(),
        client_ids,
        made.clone(),
        stop,
    ));
    // Half way through, the node holding most subscribers dies.
    while made.load(Relaxed) < PUBLICATIONS / 2 {
        assert!(Instant::now() < stop, "timed out publishing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let http = reqwest::Client::new();
    let base = bases.lock().unwrap()[0].clone();
    let list: serde_json::Value = http
        .get(format!("{base}/api/clients"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let held = |id: &str| {
        list.as_array().map_or(0, |rows| {
            rows.iter()
                .filter(|r| r["node"].as_str() == Some(id))
                .count()
        })
    };
    let index = (0..NODES.len())
        .max_by_key(|&i| held(NODES[i]))
        .unwrap_or(0);
    tokio::task::block_in_place(|| {
        nodes[index].kill().unwrap();
        nodes[index] = node(&redis, &prefix, NODES[index], &config.0);
    });
    proxy.set_upstream(index, nodes[index].addr()).unwrap();
    bases.lock().unwrap()[index] = format!("http://{}", nodes[index].addr());
    eprintln!(
        "{:?}: killed {} at {} publications, started again",
        started.elapsed(),
        NODES[index],
        made.load(Relaxed)
    );
    admin.await.unwrap();
    client.await.unwrap();
    for subscriber in subscribers {
        subscriber.await.unwrap();
    }
    let all: Vec<u64> = (1..=PUBLICATIONS).collect();
    let mut repeats = 0;
    let mut subscribes = 0;
    for (i, d) in delivered.iter().enumerate() {
        let d = d.lock().unwrap();
        assert!(d.errors.is_empty(), "subscriber {i}: {:?}", d.errors);
        assert_eq!(d.offsets.len(), all.len(), "subscriber {i} got them all");
        assert_eq!(d.offsets, all, "subscriber {i}: once each, in order");
        repeats += d.repeats;
        subscribes += d.subscribes;
    }
    eprintln!(
        "{:?}: {} cuts, {subscribes} subscribes, {repeats} repeats dropped, connections per node {:?}",
        started.elapsed(),
        proxy.cuts(),
        (0..NODES.len())
            .map(|i| proxy.forwarded_to(i))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        repeats, 0,
        "the server sends each offset once per subscription"
    );
    assert_eq!(made.load(Relaxed), PUBLICATIONS);
    assert!(proxy.cuts() >= 20, "only {} cuts", proxy.cuts());
    // Every publication made once: the channel's last offset is 5,000.
    let base = bases.lock().unwrap()[0].clone();
    let history: serde_json::Value = http
        .get(format!("{base}/api/channels/{CHANNEL}/history?limit=1"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(history["publications"][0]["offset"], PUBLICATIONS);
}
