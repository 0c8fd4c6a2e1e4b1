//! Scale-out on Redis: reliable sessions kept in Redis. A session started
//! on one node resumes on another (also after its node was SIGKILLed), a
//! resume elsewhere closes the old connection with 4002, a push to a
//! client that is away is stored from any node, a Redis that is down
//! closes reliable connections with 1013 while plain ones carry on, and
//! with `appendfsync always` the sessions survive a Redis restart. A burst
//! cut short by a node kill goes on from another node, every push once.
//!
//! Nodes run in-process, except where one must really die (a subprocess
//! killed with SIGKILL: an in-process runtime would close its sockets
//! cleanly). Each test has its own `redis-server` on a free port.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Connect, TestServer, Ws, expect_close, next_json, send_text, wait_until};
use shared::{ClientMessage, ServerMessage, close_code};
use testbed::{NodeProcess, RedisServer};
use tokio_tungstenite::tungstenite::Message;

const ADMIN: &str = "cluster-admin-token";

/// The cluster flags of a node.
fn node_args(redis: &RedisServer, node: &str) -> Vec<String> {
    [
        "--redis-url",
        &redis.url(),
        "--redis-prefix",
        "s:",
        "--node-id",
        node,
        "--cluster-heartbeat",
        "100ms",
        "--cluster-node-ttl",
        "3s",
        // Not shorter: the in-process nodes share the test's one-thread
        // runtime, and on a loaded machine a write through to Redis that
        // is not polled in time closes its connection with 1013.
        "--cluster-command-timeout",
        "2s",
        "--admin-token",
        ADMIN,
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
}

async fn start_node(redis: &RedisServer, node: &str) -> TestServer {
    start_node_with(redis, node, &[]).await
}

async fn start_node_with(redis: &RedisServer, node: &str, extra: &[&str]) -> TestServer {
    let mut args = node_args(redis, node);
    args.extend(extra.iter().map(ToString::to_string));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    common::start(&args).await
}

/// Waits until `node` (named `name`) counts `nodes` live nodes in its
/// `/metrics`: a node sends commands only to the nodes it knows.
async fn sees_nodes(node: &TestServer, name: &str, nodes: usize) {
    let metrics = node.http_url("/metrics");
    let line = format!("ws_cluster_nodes{{node=\"{name}\"}} {nodes}");
    wait_until(&format!("{name} sees {nodes} nodes"), || {
        let (metrics, line) = (metrics.clone(), line.clone());
        async move {
            let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
            text.contains(&line)
        }
    })
    .await;
}

/// A node in a process of its own (`testbed::NodeProcess`), killed with
/// SIGKILL when dropped.
struct Subprocess(NodeProcess);

impl Subprocess {
    fn start(redis: &RedisServer, node: &str) -> Self {
        Self::start_with(redis, node, &[], &[])
    }

    /// With more flags and environment variables.
    fn start_with(redis: &RedisServer, node: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut args = node_args(redis, node);
        args.extend(extra.iter().map(ToString::to_string));
        args.extend(
            [
                "--allow-client-ids",
                "--push-interval",
                "0",
                "--ping-interval",
                "0",
            ]
            .map(String::from),
        );
        args.extend(["--static-dir", "/nonexistent"].map(String::from));
        let binary = std::path::Path::new(env!("CARGO_BIN_EXE_server"));
        Self(NodeProcess::start_with_env(binary, &args, env, false).unwrap())
    }

    #[cfg(feature = "testing")]
    fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.0.addr())
    }

    async fn connect(&self, path: &str) -> Ws {
        let url = format!("ws://{}{path}", self.0.addr());
        tokio_tungstenite::connect_async(url).await.unwrap().0
    }
}

/// The session id and token of a reliable welcome.
async fn welcome(ws: &mut Ws) -> (String, String) {
    match next_json(ws).await {
        ServerMessage::Welcome {
            session: Some(session),
            token: Some(token),
            ..
        } => (session, token),
        other => panic!("expected a reliable welcome, got {other:?}"),
    }
}

/// Client `msg` number `seq`: an echo with id `seq`.
fn msg(seq: u64) -> String {
    ClientMessage::Msg {
        seq,
        data: format!(r#"{{"type":"echo","id":{seq},"body":"m{seq}"}}"#),
    }
    .to_json()
}

fn resume(session: &str, token: &str, last_seq: u64) -> String {
    ClientMessage::Resume {
        session: session.to_owned(),
        token: token.to_owned(),
        last_seq,
    }
    .to_json()
}

/// The next numbered message (skipping acks): its seq and inner message.
async fn next_numbered(ws: &mut Ws) -> (u64, ServerMessage) {
    loop {
        match next_json(ws).await {
            ServerMessage::Msg { seq, data } => {
                return (seq, ServerMessage::from_json(&data).unwrap());
            }
            ServerMessage::Ack { .. } => {}
            other => panic!("expected a msg, got {other:?}"),
        }
    }
}

/// Reads until an ack of `seq` (or beyond), failing on a numbered message.
async fn until_ack(ws: &mut Ws, seq: u64) {
    loop {
        match next_json(ws).await {
            ServerMessage::Ack { seq: got } if got >= seq => return,
            ServerMessage::Ack { .. } => {}
            other => panic!("expected only an ack of {seq}, got {other:?}"),
        }
    }
}

/// A new reliable connection to `server` resuming `session`, retried
/// while the node cannot reach Redis yet (it closes with 1013 then):
/// the socket and the last client seq the server processed.
async fn resume_on(server: &TestServer, session: &str, token: &str, last_seq: u64) -> (Ws, u64) {
    let deadline = tokio::time::Instant::now() + common::DEADLINE;
    loop {
        let mut ws = server.connect("/ws?reliable=1").await;
        welcome(&mut ws).await;
        send_text(&mut ws, &resume(session, token, last_seq)).await;
        match common::next_message(&mut ws).await {
            Message::Text(text) => match ServerMessage::from_json(&text).unwrap() {
                ServerMessage::Resumed { last_seq } => return (ws, last_seq),
                other => panic!("expected resumed, got {other:?}"),
            },
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), close_code::TRY_AGAIN_LATER);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no resume within the deadline"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_session_resumes_on_another_node_after_its_node_was_killed() {
    let redis = RedisServer::start().unwrap();
    let a = Subprocess::start(&redis, "a");
    let b = start_node(&redis, "b").await;
    let mut ws = a.connect("/ws?reliable=1&client_id=roamer").await;
    let (session, token) = welcome(&mut ws).await;
    const N: u64 = 40;
    for seq in 1..=N {
        send_text(&mut ws, &msg(seq)).await;
    }
    for expected in 1..=N {
        let (seq, reply) = next_numbered(&mut ws).await;
        assert_eq!(seq, expected);
        assert!(matches!(reply, ServerMessage::Echo { id, .. } if id == expected));
    }
    // Node A dies with everything it wrote to the socket; the client
    // processed all but the last two replies.
    drop(a);
    let (mut ws, last_in) = resume_on(&b, &session, &token, N - 2).await;
    assert_eq!(last_in, N, "every client message was processed, once");
    for expected in N - 1..=N {
        let (seq, reply) = next_numbered(&mut ws).await;
        assert_eq!(seq, expected, "the replay");
        assert!(matches!(reply, ServerMessage::Echo { id, .. } if id == expected));
    }
    // A resend of a processed message is not processed again; the next is.
    send_text(&mut ws, &msg(N)).await;
    until_ack(&mut ws, N).await;
    send_text(&mut ws, &msg(N + 1)).await;
    let (seq, reply) = next_numbered(&mut ws).await;
    assert_eq!(seq, N + 1);
    assert!(matches!(reply, ServerMessage::Echo { id, .. } if id == N + 1));
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_resume_on_another_node_closes_the_old_connection_with_4002() {
    let redis = RedisServer::start().unwrap();
    let a = start_node(&redis, "a").await;
    let b = start_node(&redis, "b").await;
    let mut first = a.connect("/ws?reliable=1").await;
    let (session, token) = welcome(&mut first).await;
    send_text(&mut first, &msg(1)).await;
    assert_eq!(next_numbered(&mut first).await.0, 1);
    // B must know A is alive to send it the takeover.
    sees_nodes(&b, "b", 2).await;
    let (mut second, last_in) = resume_on(&b, &session, &token, 1).await;
    assert_eq!(last_in, 1);
    let frame = tokio::time::timeout(Duration::from_secs(2), expect_close(&mut first))
        .await
        .expect("the connection on the other node is closed at once")
        .expect("a close frame");
    assert_eq!(u16::from(frame.code), close_code::REPLACED);
    // The new connection goes on numbering.
    send_text(&mut second, &msg(2)).await;
    assert_eq!(next_numbered(&mut second).await.0, 2);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_push_through_a_third_node_to_a_client_away_arrives_on_its_resume() {
    let redis = RedisServer::start().unwrap();
    let a = start_node(&redis, "a").await;
    let b = start_node(&redis, "b").await;
    let c = start_node(&redis, "c").await;
    let mut ws = a.connect("/ws?reliable=1&client_id=away").await;
    let (session, token) = welcome(&mut ws).await;
    send_text(&mut ws, &msg(1)).await;
    assert_eq!(next_numbered(&mut ws).await.0, 1);
    drop(ws);
    // Once A wrote the detach, C stores the push in the session in Redis.
    let push = c.http_url("/api/clients/away/push");
    wait_until("the push stored for the client away", || {
        let push = push.clone();
        async move {
            let response = reqwest::Client::new()
                .post(&push)
                .bearer_auth(ADMIN)
                .body("while away")
                .send()
                .await
                .unwrap();
            response.status().as_u16() == 202
        }
    })
    .await;
    let (mut ws, last_in) = resume_on(&b, &session, &token, 1).await;
    assert_eq!(last_in, 1);
    let (seq, pushed) = next_numbered(&mut ws).await;
    assert_eq!(seq, 2);
    assert!(
        matches!(&pushed, ServerMessage::Push { body, .. } if body == "while away"),
        "{pushed:?}"
    );
    for server in [a, b, c] {
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn without_redis_reliable_connections_close_with_1013_plain_ones_carry_on() {
    let mut redis = RedisServer::start().unwrap();
    // A short session TTL: the sweep, which notices Redis is gone for
    // idle connections, runs every second.
    let a = start_node_with(&redis, "a", &["--session-ttl", "4s"]).await;
    let mut reliable = a.connect("/ws?reliable=1").await;
    welcome(&mut reliable).await;
    send_text(&mut reliable, &msg(1)).await;
    assert_eq!(next_numbered(&mut reliable).await.0, 1);
    let mut idle = a.connect("/ws?reliable=1").await;
    welcome(&mut idle).await;
    send_text(&mut idle, &msg(1)).await;
    assert_eq!(next_numbered(&mut idle).await.0, 1);
    let (mut plain, _) = a.connect_ws("/ws").await;

    redis.stop().unwrap();
    // The next reply cannot be stored: nothing is sent, the connection closes.
    send_text(&mut reliable, &msg(2)).await;
    let frame = expect_close(&mut reliable).await.expect("a close frame");
    assert_eq!(u16::from(frame.code), close_code::TRY_AGAIN_LATER);
    assert!(frame.reason.contains("unavailable"), "{}", frame.reason);
    // One that sends nothing is closed all the same, by the node's sweep.
    let frame = expect_close(&mut idle).await.expect("a close frame");
    assert_eq!(u16::from(frame.code), close_code::TRY_AGAIN_LATER);
    assert!(frame.reason.contains("unavailable"), "{}", frame.reason);
    // A new reliable connection is upgraded, then closed with the reason,
    // without a message of its own once the node knows Redis is down.
    let ready = a.http_url("/readyz");
    wait_until("/readyz 503", || {
        let ready = ready.clone();
        async move { reqwest::get(&ready).await.unwrap().status().as_u16() == 503 }
    })
    .await;
    let mut new = a.connect("/ws?reliable=1").await;
    welcome(&mut new).await;
    let frame = expect_close(&mut new).await.expect("a close frame");
    assert_eq!(u16::from(frame.code), close_code::TRY_AGAIN_LATER);
    assert!(frame.reason.contains("unavailable"), "{}", frame.reason);
    // Plain connections need no Redis.
    send_text(&mut plain, r#"{"type":"echo","id":5,"body":"ok"}"#).await;
    assert!(matches!(
        next_json(&mut plain).await,
        ServerMessage::Echo { id: 5, .. }
    ));

    // Redis back (empty: persistence off): new sessions work by themselves.
    redis.restart().unwrap();
    wait_until("a reliable session stored again", || async {
        let mut ws = a.connect("/ws?reliable=1").await;
        welcome(&mut ws).await;
        send_text(&mut ws, &msg(1)).await;
        matches!(common::next_message(&mut ws).await, Message::Text(_))
    })
    .await;
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_appendfsync_always_sessions_survive_a_redis_restart() {
    let mut redis = RedisServer::start_persistent().unwrap();
    let a = start_node(&redis, "a").await;
    let mut ws = a.connect("/ws?reliable=1").await;
    let (session, token) = welcome(&mut ws).await;
    for seq in 1..=5 {
        send_text(&mut ws, &msg(seq)).await;
        assert_eq!(next_numbered(&mut ws).await.0, seq);
    }
    drop(ws);
    // Killed (SIGKILL) and started again: it loads its append-only file.
    redis.restart().unwrap();
    let b = start_node(&redis, "b").await;
    let (mut ws, last_in) = resume_on(&b, &session, &token, 3).await;
    assert_eq!(last_in, 5);
    for expected in 4..=5 {
        assert_eq!(next_numbered(&mut ws).await.0, expected);
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Reads a burst's numbered messages, acknowledging every 50, until
/// `stop` pushes were read (or `burst_done`): appends each push's seq to
/// `pushes`; returns the last server seq read and `burst_done`'s count.
async fn read_burst(
    ws: &mut Ws,
    last: &mut u64,
    pushes: &mut Vec<u64>,
    stop: usize,
) -> Option<u32> {
    while pushes.len() < stop {
        let (seq, message) = next_numbered(ws).await;
        assert_eq!(seq, *last + 1, "server seqs in order, none repeated");
        *last = seq;
        if seq % 50 == 0 {
            let ack = ClientMessage::Ack { seq }.to_json();
            send_text(ws, &ack).await;
        }
        match message {
            ServerMessage::Push { seq, .. } => pushes.push(seq),
            ServerMessage::BurstDone { count, .. } => return Some(count),
            other => panic!("unexpected {other:?}"),
        }
    }
    None
}

#[tokio::test]
async fn a_burst_cut_by_a_node_kill_goes_on_from_the_other_node_exactly_once() {
    let redis = RedisServer::start().unwrap();
    let a = Subprocess::start(&redis, "a");
    let b = start_node(&redis, "b").await;
    const N: u32 = 1500;
    let mut ws = a.connect(&format!("/ws?reliable=1&burst={N}")).await;
    let (session, token) = welcome(&mut ws).await;
    // The first message binds the connection; the burst starts then.
    send_text(&mut ws, r#"{"type":"ack","seq":0}"#).await;
    let (mut last, mut pushes) = (0, Vec::new());
    assert_eq!(read_burst(&mut ws, &mut last, &mut pushes, 300).await, None);
    drop(a);
    let (mut ws, _) = resume_on(&b, &session, &token, last).await;
    let done = read_burst(&mut ws, &mut last, &mut pushes, usize::MAX).await;
    assert_eq!(done, Some(N));
    let expected: Vec<u64> = (1..=u64::from(N)).collect();
    assert!(pushes == expected, "every push exactly once, in order");
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn messages_in_flight_when_a_node_dies_are_processed_exactly_once() {
    let redis = RedisServer::start().unwrap();
    let a = Subprocess::start(&redis, "a");
    let b = start_node(&redis, "b").await;
    const N: u64 = 300;
    let mut ws = a.connect("/ws?reliable=1").await;
    let (session, token) = welcome(&mut ws).await;
    // Every message sent at once; node A dies while replies are in flight.
    for seq in 1..=N {
        send_text(&mut ws, &msg(seq)).await;
    }
    let mut replies = Vec::new();
    while replies.len() < 100 {
        let (seq, reply) = next_numbered(&mut ws).await;
        assert_eq!(seq, replies.len() as u64 + 1);
        let ServerMessage::Echo { id, .. } = reply else {
            panic!("expected an echo, got {reply:?}")
        };
        replies.push(id);
    }
    drop(a);
    let (mut ws, last_in) = resume_on(&b, &session, &token, replies.len() as u64).await;
    assert!(last_in >= 100, "what A replied to was processed");
    // The client resends what the server did not process.
    for seq in last_in + 1..=N {
        send_text(&mut ws, &msg(seq)).await;
    }
    while replies.len() < N as usize {
        let (seq, reply) = next_numbered(&mut ws).await;
        assert_eq!(seq, replies.len() as u64 + 1, "no reply lost or repeated");
        let ServerMessage::Echo { id, .. } = reply else {
            panic!("expected an echo, got {reply:?}")
        };
        replies.push(id);
    }
    let expected: Vec<u64> = (1..=N).collect();
    assert!(replies == expected, "each message processed once, in order");
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_user_push_is_stored_once_for_a_session_away_whatever_the_nodes() {
    const SECRET: &str = "cluster sessions secret, long enough";
    let redis = RedisServer::start().unwrap();
    let token_args = ["--allow-client-ids=false", "--jwt-secret", SECRET];
    let a = start_node_with(&redis, "a", &token_args).await;
    let b = start_node_with(&redis, "b", &token_args).await;
    let c = start_node_with(&redis, "c", &token_args).await;
    let claims = server::auth::Claims::expiring_in("alice", Duration::from_secs(600));
    let alice = server::auth::mint_hs256(SECRET.as_bytes(), &claims).unwrap();
    let mut ws = a.connect(&format!("/ws?reliable=1&token={alice}")).await;
    let (session, token) = welcome(&mut ws).await;
    send_text(&mut ws, &msg(1)).await;
    assert_eq!(next_numbered(&mut ws).await.0, 1);
    drop(ws);
    // B must know the other nodes, so that each gets the user push.
    sees_nodes(&b, "b", 3).await;
    let push = b.http_url("/api/users/alice/push");
    wait_until("the push stored for alice's session away", || {
        let push = push.clone();
        async move {
            let response = reqwest::Client::new()
                .post(&push)
                .bearer_auth(ADMIN)
                .body("for alice")
                .send()
                .await
                .unwrap();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            body["stored"].as_u64() == Some(1)
        }
    })
    .await;
    // Resumed on a third node by a connection of alice: the push, once.
    let mut back = c.connect(&format!("/ws?reliable=1&token={alice}")).await;
    welcome(&mut back).await;
    send_text(&mut back, &resume(&session, &token, 1)).await;
    assert_eq!(
        next_json(&mut back).await,
        ServerMessage::Resumed { last_seq: 1 }
    );
    let (seq, pushed) = next_numbered(&mut back).await;
    assert_eq!(seq, 2);
    assert!(matches!(&pushed, ServerMessage::Push { body, .. } if body == "for alice"));
    send_text(&mut back, &msg(2)).await;
    let (seq, reply) = next_numbered(&mut back).await;
    assert_eq!(seq, 3, "nothing else was stored: {reply:?}");
    for server in [a, b, c] {
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_session_redis_lost_closes_with_1013_and_the_client_starts_over() {
    let redis = RedisServer::start().unwrap();
    let a = start_node(&redis, "a").await;
    let mut ws = a.connect("/ws?reliable=1").await;
    let (session, token) = welcome(&mut ws).await;
    send_text(&mut ws, &msg(1)).await;
    assert_eq!(next_numbered(&mut ws).await.0, 1);
    // Redis restarted empty (persistence off) while the client stayed.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    send_text(&mut ws, &msg(2)).await;
    let frame = expect_close(&mut ws).await.expect("a close frame");
    // Not 4002, after which a client never reconnects.
    assert_eq!(u16::from(frame.code), close_code::TRY_AGAIN_LATER);
    assert!(frame.reason.contains("resume"), "{}", frame.reason);
    let mut again = a.connect("/ws?reliable=1").await;
    welcome(&mut again).await;
    send_text(&mut again, &resume(&session, &token, 1)).await;
    match next_json(&mut again).await {
        ServerMessage::ResumeFailed { reason } => {
            assert_eq!(reason, shared::ResumeFailure::UnknownSession);
        }
        other => panic!("expected resume_failed, got {other:?}"),
    }
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_push_to_a_client_of_a_killed_node_is_stored_for_its_resume() {
    let redis = RedisServer::start().unwrap();
    let a = Subprocess::start(&redis, "a");
    let b = start_node(&redis, "b").await;
    let mut ws = a.connect("/ws?reliable=1&client_id=orphan").await;
    let (session, token) = welcome(&mut ws).await;
    send_text(&mut ws, &msg(1)).await;
    assert_eq!(next_numbered(&mut ws).await.0, 1);
    // B knows A is alive (else it would answer 404 for a client it thinks
    // attached on a node it does not know yet).
    sees_nodes(&b, "b", 2).await;
    // A dies without writing a detach; once its heartbeat key expired
    // (--cluster-node-ttl), the client counts as away: 202 stored (it was
    // 404 until the session's TTL).
    drop(a);
    let push = b.http_url("/api/clients/orphan/push");
    wait_until("the push stored for the client of the dead node", || {
        let push = push.clone();
        async move {
            let response = reqwest::Client::new()
                .post(&push)
                .bearer_auth(ADMIN)
                .body("after the crash")
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            // 504 while A is still listed (until its TTL), then 202.
            assert!(matches!(status, 202 | 504), "{status}");
            status == 202
        }
    })
    .await;
    let (mut ws, last_in) = resume_on(&b, &session, &token, 1).await;
    assert_eq!(last_in, 1);
    let (seq, pushed) = next_numbered(&mut ws).await;
    assert_eq!(seq, 2);
    assert!(
        matches!(&pushed, ServerMessage::Push { body, .. } if body == "after the crash"),
        "{pushed:?}"
    );
    b.shutdown().await.unwrap();
}

/// Protocol versions on Redis: a session resumes on another node speaking
/// the other version, both ways, and Redis holds every numbered message
/// as its version-1 envelope, byte for byte, whatever the version of the
/// connection that numbered it: what nodes of the release before versions
/// read and write, so old and new nodes share one Redis during a rolling
/// deploy (an old node replays what a new one stored, and the other way).
#[tokio::test]
async fn sessions_resume_across_versions_and_nodes_and_redis_keeps_version_one_envelopes() {
    use shared::Protocol;
    let redis = RedisServer::start().unwrap();
    let a = start_node(&redis, "a").await;
    let b = start_node(&redis, "b").await;
    let started = common::three_unacked(&a, Protocol::V2).await;
    let id = started.0.clone();
    // Stored by a version-2 connection: version-1 envelopes in Redis.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let history: Vec<String> = redis::cmd("LRANGE")
        .arg(format!("s:hist:{id}"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let envelopes: Vec<&str> = history
        .iter()
        .map(|line| line.splitn(3, ' ').nth(2).unwrap())
        .collect();
    let expected: Vec<String> = (1..=3)
        .map(|id| {
            let echo = format!(r#"{{"type":"echo","id":{id},"body":"e{id}"}}"#);
            ServerMessage::Msg {
                seq: id,
                data: echo,
            }
            .to_json()
        })
        .collect();
    assert_eq!(envelopes, expected);
    common::resume_in(&b, started, Protocol::V1).await;
    let started = common::three_unacked(&b, Protocol::V1).await;
    common::resume_in(&a, started, Protocol::V2).await;
}

#[tokio::test]
async fn the_session_caps_hold_across_nodes_for_a_client_rotating_over_them() {
    let redis = RedisServer::start().unwrap();
    let cap = ["--max-sessions-per-ip", "4"];
    let nodes = [
        start_node_with(&redis, "a", &cap).await,
        start_node_with(&redis, "b", &cap).await,
        start_node_with(&redis, "c", &cap).await,
    ];
    // One address stores a session, leaves it and goes to the next node.
    for n in 0..4 {
        let mut ws = nodes[n % 3].connect("/ws?reliable=1").await;
        welcome(&mut ws).await;
        send_text(&mut ws, &msg(1)).await;
        assert_eq!(next_numbered(&mut ws).await.0, 1);
        ws.close(None).await.unwrap();
    }
    // Its fifth is refused on every node, although none holds more than two.
    for node in &nodes {
        let mut ws = node.connect("/ws?reliable=1").await;
        welcome(&mut ws).await;
        send_text(&mut ws, &msg(1)).await;
        let frame = expect_close(&mut ws).await.expect("a close frame");
        assert_eq!(u16::from(frame.code), close_code::TRY_AGAIN_LATER);
        assert!(frame.reason.contains("too many"), "{}", frame.reason);
    }
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_redis_pause_shorter_than_the_grace_closes_no_connection() {
    let redis = RedisServer::start().unwrap();
    // The sweep runs every 2 s; a refresh fails after the 2 s command timeout.
    let a = start_node_with(&redis, "a", &["--session-ttl", "8s"]).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut ws = a.connect("/ws?reliable=1").await;
        welcome(&mut ws).await;
        send_text(&mut ws, &msg(1)).await;
        assert_eq!(next_numbered(&mut ws).await.0, 1);
        idle.push(ws);
    }
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // 5 s: a sweep starts within 2 s of it, and its refresh times out
    // within the pause; the sessions' keys still have more than 8 s.
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(5000)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    // Answered once the pause is over (the client's own timeout is shorter).
    wait_until("Redis answers after its pause", || {
        let mut conn = conn.clone();
        async move {
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok()
        }
    })
    .await;
    for ws in &mut idle {
        send_text(ws, &msg(2)).await;
        let (seq, reply) = next_numbered(ws).await;
        assert_eq!(seq, 2, "{reply:?}");
    }
    a.shutdown().await.unwrap();
}

/// Clock skew: a node 10 minutes behind and one 10 minutes ahead (a
/// `testing` build's `SERVER_TEST_CLOCK_OFFSET_MS`). The session's detach
/// and history are written by the one behind, a push to the client away
/// and the resume go through the one ahead: once each node counted in its
/// own clock, the push gave the session a TTL of 1 ms (deleted: the resume
/// failed with `unknown_session`) and the resume aged the history as 20
/// minutes old (a gap). Both count in Redis's clock now.
#[cfg(feature = "testing")]
#[tokio::test]
async fn nodes_whose_clocks_disagree_by_minutes_lose_no_session_and_no_message() {
    let redis = RedisServer::start().unwrap();
    let flags = ["--session-ttl", "60s", "--history-max-age", "5m"];
    let behind = Subprocess::start_with(
        &redis,
        "behind",
        &flags,
        &[("SERVER_TEST_CLOCK_OFFSET_MS", "-600000")],
    );
    let ahead = Subprocess::start_with(
        &redis,
        "ahead",
        &flags,
        &[("SERVER_TEST_CLOCK_OFFSET_MS", "600000")],
    );
    // Ready once a heartbeat went through: each has read Redis's clock.
    for node in [&behind, &ahead] {
        let ready = node.http_url("/readyz");
        wait_until("the node is ready", || {
            let ready = ready.clone();
            async move { reqwest::get(&ready).await.unwrap().status().as_u16() == 200 }
        })
        .await;
    }
    let mut ws = behind.connect("/ws?reliable=1&client_id=skewed").await;
    let (session, token) = welcome(&mut ws).await;
    send_text(&mut ws, &msg(1)).await;
    assert_eq!(next_numbered(&mut ws).await.0, 1);
    ws.close(None).await.unwrap();
    drop(ws);
    // Stored by the node ahead for the client away (202), once the
    // detach is written (404 while it reads attached).
    let push = ahead.http_url("/api/clients/skewed/push");
    wait_until("the push stored for the client away", || {
        let push = push.clone();
        async move {
            let response = reqwest::Client::new()
                .post(&push)
                .bearer_auth(ADMIN)
                .body("while away")
                .send()
                .await
                .unwrap();
            response.status().as_u16() == 202
        }
    })
    .await;
    let mut ws = ahead.connect("/ws?reliable=1").await;
    welcome(&mut ws).await;
    send_text(&mut ws, &resume(&session, &token, 0)).await;
    match next_json(&mut ws).await {
        ServerMessage::Resumed { last_seq } => assert_eq!(last_seq, 1),
        other => panic!("expected resumed, got {other:?}"),
    }
    // The reply and the push, no gap before them.
    let (seq, reply) = next_numbered(&mut ws).await;
    assert_eq!(seq, 1, "{reply:?}");
    let (seq, pushed) = next_numbered(&mut ws).await;
    assert_eq!(seq, 2);
    assert!(
        matches!(&pushed, ServerMessage::Push { body, .. } if body == "while away"),
        "{pushed:?}"
    );
}
