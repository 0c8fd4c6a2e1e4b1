//! Scale-out on Redis, first slice: membership and the admin API across
//! nodes. Three in-process nodes (and, where a node must really die or
//! freeze, a subprocess) share one `redis-server` on a free port
//! (`testbed::RedisServer`); each test has its own key prefix.
//!
//! Short heartbeats and TTLs come from the real operator flags
//! (`--cluster-heartbeat`, `--cluster-node-ttl`, `--cluster-command-timeout`).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Connect, DEADLINE, TestServer, Ws, expect_close, next_json, send_text, wait_until};
use serde_json::Value;
use shared::ServerMessage;
use testbed::RedisServer;

const ADMIN: &str = "cluster-admin-token";
const SECRET: &str = "cluster test secret, long enough";
/// The node TTL of these tests (`--cluster-node-ttl`): a dead node leaves
/// the list within it. 3 s leaves a frozen node listed long enough for two
/// requests to time out (700 ms each) on a loaded machine.
const TTL: Duration = Duration::from_secs(3);

/// The cluster flags of every node of a test.
fn node_args(redis: &RedisServer, prefix: &str, node: &str) -> Vec<String> {
    let ttl = format!("{}ms", TTL.as_millis());
    [
        "--redis-url",
        &redis.url(),
        "--redis-prefix",
        prefix,
        "--node-id",
        node,
        "--cluster-heartbeat",
        "100ms",
        "--cluster-node-ttl",
        &ttl,
        "--cluster-command-timeout",
        "700ms",
        "--admin-token",
        ADMIN,
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
}

async fn start_node(redis: &RedisServer, prefix: &str, node: &str, extra: &[&str]) -> TestServer {
    let mut args = node_args(redis, prefix, node);
    args.extend(extra.iter().map(ToString::to_string));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    common::start(&args).await
}

async fn admin(
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: &str,
) -> (u16, Value, String) {
    let response = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(ADMIN)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

fn base(server: &TestServer) -> String {
    server.http_url("")
}

/// The ids and nodes of `GET /api/clients` on `base` (None unless 200).
async fn listed(base: &str) -> Option<Vec<(String, String)>> {
    let (status, rows, _) = admin(base, reqwest::Method::GET, "/api/clients", "").await;
    if status != 200 {
        return None;
    }
    Some(
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_owned(),
                    r["node"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
    )
}

async fn expect_push(ws: &mut Ws, body: &str) {
    match next_json(ws).await {
        ServerMessage::Push { body: got, .. } => assert_eq!(got, body),
        other => panic!("expected the push {body:?}, got {other:?}"),
    }
}

async fn status(url: &str) -> u16 {
    reqwest::get(url).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn pushes_broadcasts_kicks_and_the_list_reach_every_node() {
    let redis = RedisServer::start().unwrap();
    let prefix = "t1:";
    let a = start_node(&redis, prefix, "node-a", &[]).await;
    let b = start_node(&redis, prefix, "node-b", &[]).await;
    let c = start_node(&redis, prefix, "node-c", &[]).await;
    let (mut on_a, id_a) = a.connect_ws("/ws?client_id=on-a").await;
    let (mut on_b, _) = b.connect_ws("/ws?client_id=on-b").await;
    let (mut on_c, id_c) = c.connect_ws("/ws?client_id=on-c").await;

    // The list on any node shows every node's connections, with the node.
    let all = vec![
        ("on-a".to_owned(), "node-a".to_owned()),
        ("on-b".to_owned(), "node-b".to_owned()),
        ("on-c".to_owned(), "node-c".to_owned()),
    ];
    for server in [&a, &b, &c] {
        let url = base(server);
        wait_until("every connection in the list", || {
            let url = url.clone();
            let all = all.clone();
            async move { listed(&url).await == Some(all) }
        })
        .await;
    }

    // A push on A reaches the client on C, with a single node's answer.
    let (code, body, _) = admin(
        &base(&a),
        reqwest::Method::POST,
        &format!("/api/clients/{id_c}/push"),
        "from a",
    )
    .await;
    assert_eq!((code, body), (200, serde_json::json!({ "queued": true })));
    expect_push(&mut on_c, "from a").await;
    let (code, _, _) = admin(
        &base(&a),
        reqwest::Method::POST,
        "/api/clients/nobody/push",
        "x",
    )
    .await;
    assert_eq!(code, 404, "an id no node holds");

    // A broadcast from B counts every client of the three nodes.
    let (code, body, _) = admin(&base(&b), reqwest::Method::POST, "/api/broadcast", "to all").await;
    assert_eq!(code, 200);
    assert_eq!(body["delivered"], 3, "{body}");
    assert_eq!(body["unanswered"], serde_json::json!([]), "{body}");
    for ws in [&mut on_a, &mut on_b, &mut on_c] {
        expect_push(ws, "to all").await;
    }

    // A kick from C closes the client on A.
    let (code, body, _) = admin(
        &base(&c),
        reqwest::Method::DELETE,
        &format!("/api/clients/{id_a}?code=4321&reason=bye"),
        "",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let close = expect_close(&mut on_a).await.unwrap();
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (4321, "bye")
    );
    let url = base(&b);
    wait_until("the kicked client out of the list", || {
        let url = url.clone();
        async move { listed(&url).await.is_some_and(|rows| rows.len() == 2) }
    })
    .await;

    assert_eq!(status(&a.http_url("/readyz")).await, 200);
    assert_eq!(
        common::metric(&a, "ws_cluster_redis_up{node=\"node-a\"}").await,
        1
    );
    assert_eq!(
        common::metric(&a, "ws_cluster_nodes{node=\"node-a\"}").await,
        3
    );

    // A clean shutdown deletes the node's keys: it leaves the list at
    // once (A's next heartbeat), not after its TTL.
    c.shutdown().await.unwrap();
    let stopped = Instant::now();
    let url = base(&a);
    wait_until("C out of the list after its shutdown", || {
        let url = url.clone();
        async move {
            listed(&url)
                .await
                .is_some_and(|rows| rows == vec![("on-b".to_owned(), "node-b".to_owned())])
        }
    })
    .await;
    assert!(stopped.elapsed() < TTL, "{:?}", stopped.elapsed());
    assert_eq!(
        common::metric(&a, "ws_cluster_nodes{node=\"node-a\"}").await,
        2
    );
    for server in [a, b] {
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn user_pushes_and_kicks_reach_every_node_in_token_mode() {
    let redis = RedisServer::start().unwrap();
    let prefix = "t2:";
    let token_args = ["--allow-client-ids=false", "--jwt-secret", SECRET];
    let a = start_node(&redis, prefix, "a", &token_args).await;
    let b = start_node(&redis, prefix, "b", &token_args).await;
    let c = start_node(&redis, prefix, "c", &token_args).await;
    let token = |sub: &str| {
        let claims = server::auth::Claims::expiring_in(sub, Duration::from_secs(600));
        server::auth::mint_hs256(SECRET.as_bytes(), &claims).unwrap()
    };
    let alice = token("alice");
    let (mut alice_a, _) = a.connect_ws(&format!("/ws?token={alice}")).await;
    let (mut alice_c, _) = c.connect_ws(&format!("/ws?token={alice}")).await;
    let (mut bob_c, _) = c.connect_ws(&format!("/ws?token={}", token("bob"))).await;
    let url = base(&b);
    wait_until("the three connections in B's list", || {
        let url = url.clone();
        async move { listed(&url).await.is_some_and(|rows| rows.len() == 3) }
    })
    .await;

    let (code, body, _) = admin(
        &base(&b),
        reqwest::Method::POST,
        "/api/users/alice/push",
        "hi alice",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (body["delivered"].as_u64(), body["stored"].as_u64()),
        (Some(2), Some(0))
    );
    expect_push(&mut alice_a, "hi alice").await;
    expect_push(&mut alice_c, "hi alice").await;
    let (code, _, _) = admin(
        &base(&b),
        reqwest::Method::POST,
        "/api/users/nobody/push",
        "x",
    )
    .await;
    assert_eq!(code, 404, "a user with nothing on any node");

    let (code, body, _) = admin(&base(&b), reqwest::Method::DELETE, "/api/users/alice", "").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["closed"], 2, "{body}");
    assert_eq!(
        (&body["code"], &body["user"]),
        (&serde_json::json!(4000), &serde_json::json!("alice")),
        "{body}"
    );
    for ws in [&mut alice_a, &mut alice_c] {
        assert_eq!(u16::from(expect_close(ws).await.unwrap().code), 4000);
    }
    // Bob, on the same node as one of alice's connections, is untouched.
    send_text(&mut bob_c, r#"{"type":"echo","id":1,"body":"still here"}"#).await;
    assert!(matches!(
        next_json(&mut bob_c).await,
        ServerMessage::Echo { id: 1, .. }
    ));
    for server in [a, b, c] {
        server.shutdown().await.unwrap();
    }
}

/// The server binary as a node of the cluster, for a real death (SIGKILL)
/// or a freeze (SIGSTOP): its address read from its log.
struct Subprocess {
    child: Child,
    base: String,
}

impl Subprocess {
    fn start(redis: &RedisServer, prefix: &str, node: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_server"))
            .args(node_args(redis, prefix, node))
            .args([
                "--addr",
                "127.0.0.1:0",
                "--allow-client-ids",
                "--push-interval",
                "0",
            ])
            .args(["--ping-interval", "0", "--static-dir", "/nonexistent"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = loop {
            let line = lines.next().expect("the server logs its address").unwrap();
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        // Keeps draining its log, so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, base }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        if signal == "-STOP" {
            // `kill` returns once the signal is queued; the freeze is done
            // when every thread shows `T` (stopped) in /proc.
            let deadline = Instant::now() + DEADLINE;
            while !self.stopped() {
                assert!(Instant::now() < deadline, "the node never stopped");
                std::thread::yield_now();
            }
        }
    }

    /// Whether every thread of the process is stopped.
    fn stopped(&self) -> bool {
        let tasks = format!("/proc/{}/task", self.child.id());
        std::fs::read_dir(tasks).unwrap().all(|task| {
            let stat =
                std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap_or_default();
            // The state follows the command's closing parenthesis.
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('T'))
        })
    }
}

impl Drop for Subprocess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_frozen_node_gives_504_and_a_dead_one_leaves_the_list_within_the_ttl() {
    let redis = RedisServer::start().unwrap();
    let prefix = "t3:";
    let a = start_node(&redis, prefix, "a", &[]).await;
    let mut sub = Subprocess::start(&redis, prefix, "sub");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "{}/ws?client_id=far",
        sub.base.replacen("http", "ws", 1)
    ))
    .await
    .unwrap();
    assert!(matches!(
        next_json(&mut ws).await,
        ServerMessage::Welcome { .. }
    ));
    let url = base(&a);
    wait_until("the subprocess's client in A's list", || {
        let url = url.clone();
        async move {
            listed(&url)
                .await
                .is_some_and(|rows| rows.contains(&("far".into(), "sub".into())))
        }
    })
    .await;
    let (code, _, _) = admin(&url, reqwest::Method::POST, "/api/clients/far/push", "one").await;
    assert_eq!(code, 200);
    expect_push(&mut ws, "one").await;

    // Frozen: still a member (its TTL runs) but it does not answer.
    sub.signal("-STOP");
    let (code, _, text) = admin(&url, reqwest::Method::POST, "/api/clients/far/push", "lost").await;
    assert_eq!(code, 504, "{text}");
    let (code, body, _) = admin(&url, reqwest::Method::POST, "/api/broadcast", "b").await;
    assert_eq!(code, 200);
    assert_eq!(body["unanswered"], serde_json::json!(["sub"]), "{body}");
    sub.signal("-CONT");
    wait_until("the thawed node answering again", || {
        let url = url.clone();
        async move {
            admin(&url, reqwest::Method::POST, "/api/clients/far/push", "two")
                .await
                .0
                == 200
        }
    })
    .await;

    // Killed: it and its connection leave the list within the TTL.
    sub.child.kill().unwrap();
    sub.child.wait().unwrap();
    let killed = Instant::now();
    wait_until("the dead node's client out of the list", || {
        let url = url.clone();
        async move { listed(&url).await.is_some_and(|rows| rows.is_empty()) }
    })
    .await;
    let gone_after = killed.elapsed();
    // The TTL, plus one heartbeat of A to notice.
    assert!(gone_after <= TTL + Duration::from_secs(1), "{gone_after:?}");
    let (code, _, _) = admin(&url, reqwest::Method::POST, "/api/clients/far/push", "x").await;
    assert_eq!(code, 404);
    drop(sub);

    // SIGTERM: the process deletes its keys before it exits, and leaves
    // the list well before its TTL.
    let mut sub = Subprocess::start(&redis, prefix, "sub2");
    let (_ws, _) = tokio_tungstenite::connect_async(format!(
        "{}/ws?client_id=near",
        sub.base.replacen("http", "ws", 1)
    ))
    .await
    .unwrap();
    wait_until("the second subprocess's client in A's list", || {
        let url = url.clone();
        async move { listed(&url).await == Some(vec![("near".into(), "sub2".into())]) }
    })
    .await;
    sub.signal("-TERM");
    let stopped = Instant::now();
    assert!(sub.child.wait().unwrap().success());
    wait_until("the stopped node's client out of the list", || {
        let url = url.clone();
        async move { listed(&url).await.is_some_and(|rows| rows.is_empty()) }
    })
    .await;
    assert!(stopped.elapsed() < TTL, "{:?}", stopped.elapsed());
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_redis_plain_connections_work_the_admin_api_says_503_and_the_node_recovers() {
    let mut redis = RedisServer::start().unwrap();
    let a = start_node(&redis, "t4:", "a", &[]).await;
    let url = base(&a);
    let ready = a.http_url("/readyz");
    wait_until("ready", || {
        let ready = ready.clone();
        async move { status(&ready).await == 200 }
    })
    .await;
    let (mut before, _) = a.connect_ws("/ws?client_id=before").await;

    redis.stop().unwrap();
    wait_until("/readyz 503 with Redis down", || {
        let ready = ready.clone();
        async move { status(&ready).await == 503 }
    })
    .await;
    assert_eq!(status(&a.http_url("/healthz")).await, 200);
    assert_eq!(
        common::metric(&a, "ws_cluster_redis_up{node=\"a\"}").await,
        0
    );
    let (code, _, _) = admin(&url, reqwest::Method::GET, "/api/clients", "").await;
    assert_eq!(code, 503);
    let (code, _, _) = admin(&url, reqwest::Method::POST, "/api/broadcast", "x").await;
    assert_eq!(code, 503);
    let (code, _, _) = admin(
        &url,
        reqwest::Method::POST,
        "/api/clients/elsewhere/push",
        "x",
    )
    .await;
    assert_eq!(code, 503, "a client that may be on another node");
    let (code, _, _) = admin(
        &url,
        reqwest::Method::POST,
        "/api/clients/before/push",
        "here",
    )
    .await;
    assert_eq!(code, 200, "a client of this node needs no Redis");
    expect_push(&mut before, "here").await;
    // Plain connections, old and new, are served.
    let (mut during, _) = a.connect_ws("/ws?client_id=during").await;
    for ws in [&mut before, &mut during] {
        send_text(ws, r#"{"type":"echo","id":5,"body":"ok"}"#).await;
        assert!(matches!(
            next_json(ws).await,
            ServerMessage::Echo { id: 5, .. }
        ));
    }

    // Redis back (empty) on the same port: the node recovers by itself and
    // writes its connections again.
    redis.restart().unwrap();
    let started = Instant::now();
    wait_until("ready again", || {
        let ready = ready.clone();
        async move { status(&ready).await == 200 }
    })
    .await;
    assert!(started.elapsed() < DEADLINE);
    assert_eq!(
        common::metric(&a, "ws_cluster_redis_up{node=\"a\"}").await,
        1
    );
    let b = start_node(&redis, "t4:", "b", &[]).await;
    let url_b = base(&b);
    wait_until("A's connections in B's list", || {
        let url_b = url_b.clone();
        async move {
            listed(&url_b).await.is_some_and(|rows| {
                rows == vec![("before".into(), "a".into()), ("during".into(), "a".into())]
            })
        }
    })
    .await;
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

/// A connection of the test to `redis`, to break a key on purpose.
async fn redis_conn(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_broadcast_that_reaches_some_nodes_answers_200_with_the_counts_and_names_the_others() {
    let redis = RedisServer::start().unwrap();
    let prefix = "t6:";
    let a = start_node(&redis, prefix, "a", &[]).await;
    let b = start_node(&redis, prefix, "b", &[]).await;
    let (mut on_a, _) = a.connect_ws("/ws?client_id=on-a").await;
    let (_on_b, _) = b.connect_ws("/ws?client_id=on-b").await;
    let url = base(&a);
    wait_until("both connections in A's list", || {
        let url = url.clone();
        async move { listed(&url).await.is_some_and(|rows| rows.len() == 2) }
    })
    .await;
    // B's command stream replaced by a string: A's command to B fails at
    // once with a Redis error (WRONGTYPE), after A delivered to its own.
    let mut conn = redis_conn(&redis).await;
    redis::cmd("SET")
        .arg("t6:cmd:b")
        .arg("not a stream")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let (code, body, text) = admin(&url, reqwest::Method::POST, "/api/broadcast", "partial").await;
    assert_eq!(
        code, 200,
        "never a bare error after a partial delivery: {text}"
    );
    assert_eq!(body["delivered"], 1, "{body}");
    assert_eq!(body["unanswered"], serde_json::json!(["b"]), "{body}");
    expect_push(&mut on_a, "partial").await;
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn deleting_a_user_answers_503_when_redis_fails_not_404() {
    let mut redis = RedisServer::start().unwrap();
    let prefix = "t7:";
    let a = start_node(
        &redis,
        prefix,
        "a",
        &["--allow-client-ids=false", "--jwt-secret", SECRET],
    )
    .await;
    let claims = server::auth::Claims::expiring_in("alice", Duration::from_secs(600));
    let token = server::auth::mint_hs256(SECRET.as_bytes(), &claims).unwrap();
    // Alice's reliable session, stored (her first ack), then away.
    let mut ws = a.connect(&format!("/ws?reliable=1&token={token}")).await;
    let ServerMessage::Welcome { .. } = next_json(&mut ws).await else {
        panic!("a welcome first")
    };
    send_text(&mut ws, r#"{"type":"ack","seq":0}"#).await;
    let mut conn = redis_conn(&redis).await;
    let sessions = || {
        let mut conn = conn.clone();
        async move {
            redis::cmd("SMEMBERS")
                .arg("t7:user:alice")
                .query_async::<Vec<String>>(&mut conn)
                .await
                .unwrap()
        }
    };
    wait_until("alice's session stored", || async {
        sessions().await.len() == 1
    })
    .await;
    let stored = sessions().await;
    ws.close(None).await.unwrap();
    expect_close(&mut ws).await;
    let url = base(&a);
    wait_until("alice away", || {
        let url = url.clone();
        async move { listed(&url).await.is_some_and(|rows| rows.is_empty()) }
    })
    .await;

    // Her sessions' index broken: ending them fails in Redis, and the
    // answer says so (503), not "no such user" while her session is still
    // resumable.
    redis::cmd("SET")
        .arg("t7:user:alice")
        .arg("not a set")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let (code, _, text) = admin(&url, reqwest::Method::DELETE, "/api/users/alice", "").await;
    assert_eq!(code, 503, "{text}");
    // Repaired, the retry ends it.
    redis::cmd("DEL")
        .arg("t7:user:alice")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    redis::cmd("SADD")
        .arg("t7:user:alice")
        .arg(&stored)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let (code, body, text) = admin(&url, reqwest::Method::DELETE, "/api/users/alice", "").await;
    assert_eq!(code, 200, "{text}");
    assert_eq!(body["sessions_ended"], 1, "{body}");

    // Redis stopped: 503 as well.
    redis.stop().unwrap();
    let (code, _, text) = admin(&url, reqwest::Method::DELETE, "/api/users/alice", "").await;
    assert_eq!(code, 503, "{text}");
    a.shutdown().await.unwrap();
}
