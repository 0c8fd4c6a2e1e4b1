//! Presence on one node (issue 24): who is subscribed, `join` and `leave`
//! to those with the `presence` capability where the namespace has
//! `join_leave`, the answer's cap, `max_members`, the admin API, and
//! answers never numbered in reliable mode.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Connect, TestServer, Ws, next_json, send_text};
use shared::ServerMessage;
use shared::channel::Member;

const ADMIN: &str = "presence-test-admin-token";

const NAMESPACES: &str = r#"
[[namespace]]
name = "room"
presence = true
join_leave = true
anonymous = ["subscribe", "presence"]

[[namespace]]
name = "quiet"
presence = true
anonymous = ["subscribe"]

[[namespace]]
name = "solo"
presence = true
max_members = 1
anonymous = ["subscribe", "presence"]
"#;

async fn start(args: &[&str]) -> TestServer {
    let mut all = vec!["--admin-token", ADMIN];
    all.extend_from_slice(args);
    TestServer::start(testbed::config_with_namespaces(NAMESPACES, &all).unwrap())
        .await
        .unwrap()
}

async fn member(server: &TestServer, id: &str) -> Ws {
    server
        .connect_ws(&format!("/ws?protocol=2&client_id={id}"))
        .await
        .0
}

async fn ask(ws: &mut Ws, text: &str) -> ServerMessage {
    send_text(ws, text).await;
    next_json(ws).await
}

async fn subscribe(ws: &mut Ws, channel: &str) -> ServerMessage {
    ask(
        ws,
        &format!(r#"{{"type":"subscribe","channel":"{channel}"}}"#),
    )
    .await
}

fn anonymous(id: &str) -> Member {
    Member {
        client_id: id.into(),
        user: None,
        client_name: None,
    }
}

/// The ids in a `presence` answer, sorted.
fn ids(answer: &ServerMessage) -> Vec<String> {
    match answer {
        ServerMessage::Presence { clients, .. } => {
            let mut ids: Vec<String> = clients.iter().map(|m| m.client_id.clone()).collect();
            ids.sort();
            ids
        }
        other => panic!("expected presence, got {other:?}"),
    }
}

#[tokio::test]
async fn members_are_listed_counted_and_announced_as_they_come_and_go() {
    let server = start(&[]).await;
    let mut ann = member(&server, "ann").await;
    assert!(matches!(
        subscribe(&mut ann, "room:1").await,
        ServerMessage::Subscribed { .. }
    ));
    let mut bob = member(&server, "bob").await;
    assert!(matches!(
        subscribe(&mut bob, "room:1").await,
        ServerMessage::Subscribed { .. }
    ));
    assert_eq!(
        next_json(&mut ann).await,
        ServerMessage::Join {
            channel: "room:1".into(),
            info: anonymous("bob"),
        }
    );
    let answer = ask(
        &mut ann,
        r#"{"type":"presence","channel":"room:1","id":"q"}"#,
    )
    .await;
    assert_eq!(ids(&answer), ["ann", "bob"]);
    assert!(
        matches!(answer, ServerMessage::Presence { truncated: None, id: Some(ref q), .. } if q == "q")
    );
    assert_eq!(
        ask(&mut ann, r#"{"type":"presence_stats","channel":"room:1"}"#).await,
        ServerMessage::PresenceStats {
            channel: "room:1".into(),
            clients: 2,
            users: 0,
            id: None,
        }
    );
    // The admin API sees the same.
    let listed: serde_json::Value = common::admin_json(
        &server.http_url("/api/channels/room:1/presence_stats"),
        ADMIN,
    )
    .await;
    assert_eq!(
        listed,
        serde_json::json!({"channel": "room:1", "clients": 2, "users": 0})
    );
    drop(bob);
    assert_eq!(
        next_json(&mut ann).await,
        ServerMessage::Leave {
            channel: "room:1".into(),
            info: anonymous("bob"),
        }
    );
    let answer = ask(&mut ann, r#"{"type":"presence","channel":"room:1"}"#).await;
    assert_eq!(ids(&answer), ["ann"]);
    // An unsubscribe leaves too.
    let mut cid = member(&server, "cid").await;
    subscribe(&mut cid, "room:1").await;
    assert!(matches!(
        next_json(&mut ann).await,
        ServerMessage::Join { .. }
    ));
    ask(&mut cid, r#"{"type":"unsubscribe","channel":"room:1"}"#).await;
    assert!(matches!(
        next_json(&mut ann).await,
        ServerMessage::Leave { .. }
    ));
}

#[tokio::test]
async fn presence_needs_its_capability_and_its_answer_has_a_cap() {
    let server = start(&["--max-presence-answer", "2"]).await;
    let mut watcher = member(&server, "w").await;
    let code = |m: ServerMessage| match m {
        ServerMessage::Error { code, .. } => code.to_string(),
        other => panic!("expected an error, got {other:?}"),
    };
    // `quiet` keeps presence, but anonymous connections may not see it.
    assert_eq!(
        code(ask(&mut watcher, r#"{"type":"presence","channel":"quiet:x"}"#).await),
        "permission_denied"
    );
    // The default namespace keeps none.
    assert_eq!(
        code(ask(&mut watcher, r#"{"type":"presence_stats","channel":"x"}"#).await),
        "permission_denied"
    );
    let mut others = Vec::new();
    for id in ["a", "b", "c"] {
        let mut ws = member(&server, id).await;
        subscribe(&mut ws, "room:big").await;
        others.push(ws);
    }
    let answer = ask(&mut watcher, r#"{"type":"presence","channel":"room:big"}"#).await;
    assert!(
        matches!(&answer, ServerMessage::Presence { clients, truncated: Some(true), .. } if clients.len() == 2),
        "{answer:?}"
    );
    // `max_members = 1`.
    let mut first = member(&server, "first").await;
    assert!(matches!(
        subscribe(&mut first, "solo:x").await,
        ServerMessage::Subscribed { .. }
    ));
    let mut second = member(&server, "second").await;
    assert_eq!(code(subscribe(&mut second, "solo:x").await), "channel_full");
    let answer = ask(&mut first, r#"{"type":"presence","channel":"solo:x"}"#).await;
    assert_eq!(ids(&answer), ["first"], "the refused one is no member");
}

#[tokio::test]
async fn in_reliable_mode_presence_answers_are_not_numbered() {
    let server = start(&[]).await;
    let mut ws = server
        .connect("/ws?protocol=2&reliable=1&client_id=r")
        .await;
    next_json(&mut ws).await;
    let subscribe = r#"{"type":"subscribe","channel":"room:r"}"#;
    send_text(
        &mut ws,
        &shared::encode_msg(1, subscribe, shared::Protocol::V2),
    )
    .await;
    assert!(matches!(
        next_json(&mut ws).await,
        ServerMessage::Msg { seq: 1, .. }
    ));
    // Inside a msg, and at the top level: the answer comes unnumbered.
    let query = r#"{"type":"presence","channel":"room:r"}"#;
    send_text(&mut ws, &shared::encode_msg(2, query, shared::Protocol::V2)).await;
    send_text(&mut ws, query).await;
    let mut answers = 0;
    while answers < 2 {
        match next_json(&mut ws).await {
            ServerMessage::Ack { .. } => {}
            answer @ ServerMessage::Presence { .. } => {
                assert_eq!(ids(&answer), ["r"]);
                answers += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The msg was accepted all the same: its resend is a duplicate.
    send_text(&mut ws, &shared::encode_msg(2, query, shared::Protocol::V2)).await;
    send_text(&mut ws, r#"{"type":"ping","t":1}"#).await;
    loop {
        match next_json(&mut ws).await {
            ServerMessage::Ack { .. } => {}
            ServerMessage::Pong { .. } => break,
            other => panic!("a duplicate gets only its ack: {other:?}"),
        }
    }
}
