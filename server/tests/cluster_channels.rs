//! Channels across nodes on one Redis (issue 23): a publication on one node
//! reaches the subscribers of another once, in order; the admin API counts
//! over every node and ends a subscription on the node that holds it; while
//! Redis is down publish and recovery answer `unavailable` and plain
//! connections go on; and a Redis that lost its data (restarted without
//! persistence) gives `epoch_changed` to the next recovery.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Connect, TestServer, Ws, next_json, send_text, wait_until};
use shared::ServerMessage;
use shared::channel::{RecoveryFailure, UnsubscribeReason};
use testbed::RedisServer;

const ADMIN: &str = "cluster-channels-admin-token";

const NAMESPACES: &str = r#"
[[namespace]]
name = "chat"
history_size = 1000
anonymous = ["subscribe", "publish"]
"#;

async fn node(redis: &RedisServer, prefix: &str, id: &str) -> TestServer {
    let url = redis.url();
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
        "3s",
        "--cluster-command-timeout",
        "2s",
        "--admin-token",
        ADMIN,
        // The tests publish faster than the default 100 a second.
        "--publish-rate",
        "0",
    ];
    let config = testbed::config_with_namespaces(NAMESPACES, &args).unwrap();
    TestServer::start(config).await.unwrap()
}

async fn subscribe(ws: &mut Ws, channel: &str, since: Option<(&str, u64)>) -> ServerMessage {
    let since = since.map_or(String::new(), |(epoch, offset)| {
        format!(r#","since":{{"epoch":"{epoch}","offset":{offset}}}"#)
    });
    send_text(
        ws,
        &format!(r#"{{"type":"subscribe","channel":"{channel}"{since}}}"#),
    )
    .await;
    next_json(ws).await
}

async fn publish(ws: &mut Ws, channel: &str, n: u64) -> ServerMessage {
    send_text(
        ws,
        &format!(r#"{{"type":"publish","channel":"{channel}","data":{n},"id":"p{n}"}}"#),
    )
    .await;
    next_json(ws).await
}

fn epoch_of(message: &ServerMessage) -> String {
    match message {
        ServerMessage::Subscribed { epoch, .. } => epoch.clone(),
        other => panic!("expected subscribed, got {other:?}"),
    }
}

async fn get_json(server: &TestServer, path: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(server.http_url(path))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_cross_nodes_once_in_order_and_the_admin_api_sees_every_node() {
    let redis = RedisServer::start().unwrap();
    let a = node(&redis, "cc1:", "a").await;
    let b = node(&redis, "cc1:", "b").await;
    let (mut reader, reader_id) = b.connect_ws("/ws?protocol=2").await;
    epoch_of(&subscribe(&mut reader, "chat:x", None).await);
    let (mut writer, _) = a.connect_ws("/ws?protocol=2").await;
    for n in 1..=200 {
        assert!(matches!(
            publish(&mut writer, "chat:x", n).await,
            ServerMessage::Published { offset, .. } if offset == n
        ));
    }
    for n in 1..=200 {
        match next_json(&mut reader).await {
            ServerMessage::Pub { offset, .. } => assert_eq!(offset, n),
            other => panic!("expected pub {n}, got {other:?}"),
        }
    }
    // Counted over every node, asked of the node without the subscriber.
    wait_until("b's subscriber counted by a", || async {
        get_json(&a, "/api/channels").await
            == serde_json::json!({"channels": [{"channel": "chat:x", "subscribers": 1}], "unanswered": []})
    })
    .await;
    // Ended through a, on b, which holds the connection.
    let http = reqwest::Client::new();
    let url = a.http_url(&format!("/api/channels/chat:x/subscribers/{reader_id}"));
    wait_until("the subscription ended through the other node", || async {
        http.delete(&url)
            .bearer_auth(ADMIN)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert_eq!(
        next_json(&mut reader).await,
        ServerMessage::Unsubscribed {
            channel: "chat:x".into(),
            reason: UnsubscribeReason::Admin,
            id: None,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_channels_are_unavailable_and_a_redis_that_lost_its_data_changes_the_epoch() {
    let mut redis = RedisServer::start().unwrap();
    let a = node(&redis, "cc2:", "a").await;
    let (mut ws, _) = a.connect_ws("/ws?protocol=2").await;
    let epoch = epoch_of(&subscribe(&mut ws, "chat:y", None).await);
    assert!(matches!(
        publish(&mut ws, "chat:y", 1).await,
        ServerMessage::Pub { offset: 1, .. } | ServerMessage::Published { offset: 1, .. }
    ));
    let _ = next_json(&mut ws).await;
    redis.stop().unwrap();
    let (mut other, _) = a.connect_ws("/ws?protocol=2").await;
    let code = |message: ServerMessage| match message {
        ServerMessage::Error { code, .. } => code.to_string(),
        other => panic!("expected an error, got {other:?}"),
    };
    assert_eq!(code(publish(&mut other, "chat:y", 2).await), "unavailable");
    assert_eq!(
        code(subscribe(&mut other, "chat:y", Some((&epoch, 1))).await),
        "unavailable"
    );
    // A plain connection goes on.
    send_text(&mut other, r#"{"type":"echo","id":1,"body":"ok"}"#).await;
    assert!(matches!(
        next_json(&mut other).await,
        ServerMessage::Echo { id: 1, .. }
    ));
    // Redis back, empty: the stream starts again, and says so.
    redis.restart().unwrap();
    let (mut back, _) = a.connect_ws("/ws?protocol=2").await;
    let mut answer = subscribe(&mut back, "chat:y", Some((&epoch, 1))).await;
    for _ in 0..100 {
        // Until the node's Redis connection is back.
        if !matches!(answer, ServerMessage::Error { .. }) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        answer = subscribe(&mut back, "chat:y", Some((&epoch, 1))).await;
    }
    let ServerMessage::Subscribed {
        epoch: ref new,
        recovered: Some(false),
        reason: Some(RecoveryFailure::EpochChanged),
        ..
    } = answer
    else {
        panic!("a new epoch: {answer:?}")
    };
    assert_ne!(*new, epoch);
}
