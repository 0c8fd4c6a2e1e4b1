//! Chaos across the cluster (issue 14): three nodes as subprocesses share
//! one `redis-server`, behind the fault proxy as load balancer (each
//! reconnect goes to the next node), with random cuts mid-frame. The real
//! reliable wrapper (`buffered_socket::Socket`, native transport) asks for
//! a burst of 10,000 pushes and sends 10,000 echoes, so 10,000 messages go
//! each way (20,000 back, with the replies). Half way through, the node holding the connection is killed with SIGKILL and
//! started again. Every message is processed exactly once and in order,
//! both ways:
//!
//! * client to server: the echo ids come back `1..=N`, each once, in order
//!   (a message processed twice would answer twice, one lost would leave a
//!   hole, since the server answers each in the order it processes them);
//! * server to client: the pushes come with seqs `1..=N`, each once, in
//!   order, then one `burst_done`; the wrapper delivers exactly the
//!   replies, the pushes and the `burst_done`, no gap and no failed resume,
//!   whatever node sent each (the burst goes on from the node the client
//!   resumes on, from what was recorded).
//!
//! The nodes are subprocesses because only a real process dies without
//! running `Drop` code or closing its sockets (see `testbed::NodeProcess`).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use buffered_socket::{AppSocket, Backoff, Config, Event, SendError, Socket};
use shared::{ClientMessage, ServerMessage};
use testbed::{FaultProxy, Faults, NodeProcess, RedisServer};
use tokio::time::Instant;

const N: u64 = 10_000;
const NODES: [&str; 3] = ["chaos-a", "chaos-b", "chaos-c"];

/// What the application saw, in order.
#[derive(Default)]
struct Seen {
    echo_ids: Vec<u64>,
    /// The seqs of the burst's pushes.
    pushes: Vec<u64>,
    burst_done: u32,
    /// Anything else delivered (timed pushes are off: nothing expected).
    others: Vec<String>,
    gaps: Vec<(u64, u64)>,
    resumes: u32,
    opens: u32,
    /// What must not happen: failed resumes, undecodable messages.
    errors: Vec<String>,
}

impl Seen {
    fn record(&mut self, event: &Event) {
        match event {
            Event::Message(message) => match AppSocket::decode(message) {
                Ok(ServerMessage::Echo { id, .. }) => self.echo_ids.push(id),
                Ok(ServerMessage::Push { seq, .. }) => self.pushes.push(seq),
                Ok(ServerMessage::BurstDone { .. }) => self.burst_done += 1,
                Ok(ServerMessage::Welcome { .. }) => {}
                Ok(other) => self.others.push(format!("{other:?}")),
                Err(err) => self.errors.push(format!("undecodable: {err}")),
            },
            Event::Gap { from, to } => self.gaps.push((*from, *to)),
            Event::Resumed { .. } => self.resumes += 1,
            Event::Open => self.opens += 1,
            Event::ResumeFailed {
                reason,
                unconfirmed,
            } => self.errors.push(format!(
                "resume failed: {reason}, {} unconfirmed",
                unconfirmed.len()
            )),
            _ => {}
        }
    }
}

fn node(redis: &RedisServer, prefix: &str, id: &str) -> NodeProcess {
    let args = [
        "--redis-url",
        &redis.url(),
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
    ];
    NodeProcess::start(Path::new(env!("CARGO_BIN_EXE_server")), &args, false).unwrap()
}

fn seed() -> u64 {
    std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_each_way_through_cuts_and_a_node_killed_arrive_exactly_once_in_order() {
    let redis = RedisServer::start().unwrap();
    let prefix = format!("chaos-{:x}:", rand::random::<u32>());
    let mut nodes: Vec<NodeProcess> = NODES.iter().map(|id| node(&redis, &prefix, id)).collect();
    let seed = seed();
    eprintln!("fault seed {seed} (set FAULT_SEED to replay)");
    // About 2.6 MB cross the proxy: budgets of 20-120 KB give 30-ish cuts.
    // The wrapper keeps at most its queue capacity (100) unacknowledged,
    // inside the server's history (1000), so every resume can replay.
    let proxy = FaultProxy::start_many(
        nodes.iter().map(NodeProcess::addr).collect(),
        Faults {
            seed,
            min_bytes: 20_000,
            max_bytes: 120_000,
        },
    )
    .await
    .unwrap();
    let socket = Socket::new(
        Config::new(format!("ws://{}/ws", proxy.addr))
            .with_reliable(true)
            .with_backoff(Backoff {
                initial_ms: 5,
                max_ms: 20,
                ..Backoff::default()
            }),
    )
    .unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sink = seen.clone();
    let _subscription = socket.on_event(move |event| sink.lock().unwrap().record(event));

    let started = Instant::now();
    let deadline = started + Duration::from_secs(45);
    let mut killed = None;
    // The first message asks for the burst; the echoes follow.
    for id in 0..=N {
        let mut message = if id == 0 {
            ClientMessage::Burst { count: N as u32 }.to_json()
        } else {
            ClientMessage::Echo {
                id,
                body: format!("message {id}"),
            }
            .to_json()
        }
        .into();
        loop {
            match socket.send(message) {
                Ok(_) => break,
                // Unacknowledged messages fill the capacity: wait for acks.
                Err(SendError::QueueFull(back)) => {
                    assert!(Instant::now() < deadline, "timed out sending {id}");
                    message = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(err) => panic!("send: {err}"),
            }
        }
        // Half way through (half of the 2N messages back), the node holding
        // the connection dies (SIGKILL) and starts again on a new port, in
        // its slot of the balancer.
        let (answered, pushed) = {
            let seen = seen.lock().unwrap();
            (seen.echo_ids.len() as u64, seen.pushes.len() as u64)
        };
        if killed.is_none() && answered + pushed >= N {
            let index = proxy.last_upstream().unwrap();
            tokio::task::block_in_place(|| {
                nodes[index].kill().unwrap();
                nodes[index] = node(&redis, &prefix, NODES[index]);
            });
            proxy.set_upstream(index, nodes[index].addr()).unwrap();
            eprintln!(
                "{:?}: killed {} at {answered} answers and {pushed} pushes, started again",
                started.elapsed(),
                NODES[index]
            );
            killed = Some(index);
        }
    }
    loop {
        {
            let seen = seen.lock().unwrap();
            if seen.echo_ids.len() as u64 >= N && seen.burst_done >= 1 {
                break;
            }
            assert!(seen.errors.is_empty(), "errors: {:?}", seen.errors);
            assert!(
                Instant::now() < deadline,
                "timed out: {} echoes, {} pushes, {} opens, {} resumes, errors {:?}",
                seen.echo_ids.len(),
                seen.pushes.len(),
                seen.opens,
                seen.resumes,
                seen.errors
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seen = seen.lock().unwrap();
    let forwarded: Vec<u64> = (0..NODES.len()).map(|i| proxy.forwarded_to(i)).collect();
    eprintln!(
        "{:?}: {} cuts, {} opens, {} resumes, connections per node {forwarded:?}",
        started.elapsed(),
        proxy.cuts(),
        seen.opens,
        seen.resumes
    );
    assert!(killed.is_some(), "no node was killed");
    assert!(seen.errors.is_empty(), "errors: {:?}", seen.errors);
    assert!(seen.gaps.is_empty(), "gaps: {:?}", seen.gaps);
    assert!(seen.others.is_empty(), "unexpected: {:?}", seen.others);
    assert!(proxy.cuts() >= 20, "only {} cuts", proxy.cuts());
    assert!(seen.resumes >= 20, "only {} resumes", seen.resumes);
    assert!(
        forwarded.iter().all(|&n| n >= 3),
        "every node served reconnects: {forwarded:?}"
    );
    // Client to server and back: every echo once, in order.
    assert_eq!(seen.echo_ids, (1..=N).collect::<Vec<_>>());
    // Server to client: every push once, in order, and the burst's end.
    assert_eq!(seen.pushes, (1..=N).collect::<Vec<_>>());
    assert_eq!(seen.burst_done, 1);
    let stats = socket.stats();
    assert_eq!(
        stats.delivered,
        2 * N + 1,
        "the wrapper delivered each reply, push and burst_done once"
    );
    assert_eq!(stats.gaps, 0);
}
