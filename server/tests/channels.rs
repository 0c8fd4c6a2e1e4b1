//! Channels on one node through the wire (issue 23): subscribe, publish,
//! recovery by offset (everything missed, a trimmed history's exact gap, a
//! changed epoch), idempotent publish, every refusal with its code, the
//! channel and the id echoed, reliable mode (answers numbered, `pub` not),
//! and a token's `channels` and `subs` claims with a refresh that takes a
//! capability away.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Connect, TestServer, Ws, next_json, send_text};
use shared::ServerMessage;
use shared::channel::{RecoveryFailure, UnsubscribeReason};

/// A `chat` namespace where anyone may publish, keeping 1000 publications,
/// and a `tiny` one keeping 2, with publications of 16 bytes at most.
const NAMESPACES: &str = r#"
[[namespace]]
name = "chat"
history_size = 1000
anonymous = ["subscribe", "publish"]
authenticated = ["subscribe"]

[[namespace]]
name = "tiny"
history_size = 2
anonymous = ["subscribe", "publish"]
max_publication_bytes = 16
"#;

async fn start(args: &[&str]) -> TestServer {
    TestServer::start(testbed::config_with_namespaces(NAMESPACES, args).unwrap())
        .await
        .unwrap()
}

/// A version 2 plain connection, past its welcome.
async fn connect(server: &TestServer) -> Ws {
    server.connect_ws("/ws?protocol=2").await.0
}

/// Subscribes and returns the `subscribed`'s epoch and offset.
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

fn epoch_of(subscribed: &ServerMessage) -> String {
    match subscribed {
        ServerMessage::Subscribed { epoch, .. } => epoch.clone(),
        other => panic!("expected subscribed, got {other:?}"),
    }
}

async fn publish(ws: &mut Ws, channel: &str, data: &str, id: &str) -> ServerMessage {
    send_text(
        ws,
        &format!(r#"{{"type":"publish","channel":"{channel}","data":{data},"id":"{id}"}}"#),
    )
    .await;
    next_json(ws).await
}

/// The next `pub`'s offset and data.
async fn next_pub(ws: &mut Ws) -> (u64, String) {
    match next_json(ws).await {
        ServerMessage::Pub { offset, data, .. } => (offset, data.get().to_owned()),
        other => panic!("expected a pub, got {other:?}"),
    }
}

/// Publishes `body` to `channel` through the admin API, which accepts it.
async fn admin_publish(http: &reqwest::Client, server: &TestServer, channel: &str, body: &str) {
    let answer = http
        .post(server.http_url(&format!("/api/channels/{channel}/publish")))
        .bearer_auth(ADMIN)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
}

/// The code of the next message, an `error`, with its channel and id.
async fn next_error(ws: &mut Ws) -> (String, Option<String>, Option<String>) {
    match next_json(ws).await {
        ServerMessage::Error {
            code, channel, id, ..
        } => (code.to_string(), channel, id),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn publications_reach_subscribers_once_in_order_and_a_return_recovers_what_it_missed() {
    let server = start(&[]).await;
    let mut reader = connect(&server).await;
    let subscribed = subscribe(&mut reader, "chat:lobby", None).await;
    let ServerMessage::Subscribed {
        ref epoch,
        offset: 0,
        recovered: None,
        ..
    } = subscribed
    else {
        panic!("a new channel starts at 0, without recovery: {subscribed:?}")
    };
    let epoch = epoch.clone();
    let (mut writer, writer_id) = server.connect_ws("/ws?protocol=2").await;
    for n in 1..=3u64 {
        let published = publish(
            &mut writer,
            "chat:lobby",
            &format!("{{\"n\":{n}}}"),
            &format!("p{n}"),
        )
        .await;
        assert_eq!(
            published,
            ServerMessage::Published {
                channel: "chat:lobby".into(),
                offset: n,
                id: Some(format!("p{n}")),
            }
        );
    }
    for n in 1..=3u64 {
        match next_json(&mut reader).await {
            ServerMessage::Pub {
                channel,
                offset,
                data,
                info,
            } => {
                assert_eq!((channel.as_str(), offset), ("chat:lobby", n));
                assert_eq!(
                    data.get(),
                    format!("{{\"n\":{n}}}"),
                    "the data as published"
                );
                assert_eq!(info.unwrap().client_id, writer_id);
            }
            other => panic!("expected pub {n}, got {other:?}"),
        }
    }
    // The reader goes away after 3; 4 and 5 are published meanwhile.
    drop(reader);
    for n in 4..=5u64 {
        publish(&mut writer, "chat:lobby", &n.to_string(), &format!("p{n}")).await;
    }
    let mut back = connect(&server).await;
    let subscribed = subscribe(&mut back, "chat:lobby", Some((&epoch, 3))).await;
    let ServerMessage::Subscribed {
        offset: 5,
        recovered: Some(true),
        reason: None,
        ..
    } = subscribed
    else {
        panic!("everything missed is there: {subscribed:?}")
    };
    assert_eq!(next_pub(&mut back).await, (4, "4".into()));
    assert_eq!(next_pub(&mut back).await, (5, "5".into()));
    publish(&mut writer, "chat:lobby", "6", "p6").await;
    assert_eq!(next_pub(&mut back).await, (6, "6".into()), "then live");
}

#[tokio::test]
async fn a_repeated_publish_id_is_published_once_and_answered_with_the_first_offset() {
    let server = start(&[]).await;
    let mut reader = connect(&server).await;
    subscribe(&mut reader, "chat:x", None).await;
    let mut writer = connect(&server).await;
    let first = publish(&mut writer, "chat:x", "1", "same").await;
    let again = publish(&mut writer, "chat:x", "1", "same").await;
    assert_eq!(first, again);
    publish(&mut writer, "chat:x", "2", "other").await;
    assert_eq!(next_pub(&mut reader).await.0, 1);
    assert_eq!(
        next_pub(&mut reader).await.0,
        2,
        "the repeat was not published"
    );
    let metric = |name| common::metric(&server, name);
    assert_eq!(metric("ws_channel_publications_delivered_total").await, 2);
    assert_eq!(metric("ws_channel_subscriptions").await, 1);
    assert_eq!(metric("ws_channels").await, 1);
}

#[tokio::test]
async fn a_trimmed_history_reports_the_exact_gap_and_an_unknown_epoch_says_so() {
    let server = start(&[]).await;
    let mut watcher = connect(&server).await;
    let epoch = epoch_of(&subscribe(&mut watcher, "tiny:t", None).await);
    let mut writer = connect(&server).await;
    for n in 1..=5u64 {
        publish(&mut writer, "tiny:t", &n.to_string(), &format!("t{n}")).await;
        assert_eq!(next_pub(&mut watcher).await.0, n);
    }
    let mut late = connect(&server).await;
    let subscribed = subscribe(&mut late, "tiny:t", Some((&epoch, 0))).await;
    let ServerMessage::Subscribed {
        offset: 5,
        recovered: Some(false),
        reason: Some(RecoveryFailure::HistoryTrimmed),
        gap: Some(gap),
        ..
    } = subscribed
    else {
        panic!("two kept of five: {subscribed:?}")
    };
    assert_eq!((gap.from, gap.to), (1, 3));
    assert_eq!(next_pub(&mut late).await.0, 4);
    assert_eq!(next_pub(&mut late).await.0, 5);
    let mut other = connect(&server).await;
    let subscribed = subscribe(&mut other, "tiny:t", Some(("not-the-epoch", 2))).await;
    let ServerMessage::Subscribed {
        ref epoch,
        offset: 5,
        recovered: Some(false),
        reason: Some(RecoveryFailure::EpochChanged),
        ..
    } = subscribed
    else {
        panic!("another epoch: {subscribed:?}")
    };
    assert_ne!(epoch, "not-the-epoch");
}

#[tokio::test]
async fn every_refusal_has_its_code_and_echoes_the_channel_and_id() {
    let server = start(&["--max-subscriptions", "2", "--publish-rate", "1"]).await;
    let mut ws = connect(&server).await;
    let cases: &[(&str, &str)] = &[
        (
            r#"{"type":"subscribe","channel":"a b","id":"i1"}"#,
            "bad_channel",
        ),
        (
            r#"{"type":"subscribe","channel":"nope:x","id":"i2"}"#,
            "unknown_namespace",
        ),
        // The default namespace allows subscribing only.
        (
            r#"{"type":"publish","channel":"x","data":1,"id":"i3"}"#,
            "permission_denied",
        ),
        (
            r#"{"type":"publish","channel":"tiny:x","data":"seventeen bytes..","id":"i4"}"#,
            "publish_too_large",
        ),
    ];
    for (request, code) in cases {
        send_text(&mut ws, request).await;
        let (got, channel, id) = next_error(&mut ws).await;
        assert_eq!(got, *code, "{request}");
        assert!(channel.is_some() && id.is_some(), "{request}");
    }
    // An id over 64 bytes is refused, not echoed.
    let long = "i".repeat(65);
    send_text(
        &mut ws,
        &format!(r#"{{"type":"unsubscribe","channel":"x","id":"{long}"}}"#),
    )
    .await;
    assert_eq!(
        next_error(&mut ws).await,
        ("invalid_fields".into(), Some("x".into()), None)
    );
    // Two subscriptions at most; a repeat of one is no new one.
    epoch_of(&subscribe(&mut ws, "a", None).await);
    epoch_of(&subscribe(&mut ws, "b", None).await);
    epoch_of(&subscribe(&mut ws, "a", None).await);
    subscribe(&mut ws, "c", None).await;
    let refused = next_error_of(subscribe(&mut ws, "c", None).await);
    assert_eq!(refused, "too_many_subscriptions");
    // One publication a second: of several at once, some are refused.
    let mut limited = 0;
    for n in 0..5 {
        if let ServerMessage::Error { code, .. } =
            publish(&mut ws, "chat:r", "1", &format!("r{n}")).await
        {
            assert_eq!(code.to_string(), "rate_limited");
            limited += 1;
        }
    }
    assert!(limited >= 1, "over --publish-rate");
}

#[tokio::test]
async fn subscribe_and_presence_requests_are_rate_limited_and_unsubscribes_never() {
    // 0.01 a second: no token comes back during the test. The bucket holds
    // twice --max-subscriptions (a reconnect resubscribes everything).
    let server = start(&["--channel-request-rate", "0.01", "--max-subscriptions", "2"]).await;
    let mut ws = connect(&server).await;
    for _ in 0..4 {
        epoch_of(&subscribe(&mut ws, "chat:a", None).await);
    }
    for (request, channel, id) in [
        (
            r#"{"type":"subscribe","channel":"chat:b","id":"s5"}"#,
            "chat:b",
            "s5",
        ),
        (
            r#"{"type":"presence_stats","channel":"chat:a","id":"p1"}"#,
            "chat:a",
            "p1",
        ),
    ] {
        send_text(&mut ws, request).await;
        let limited = ("rate_limited".into(), Some(channel.into()), Some(id.into()));
        assert_eq!(next_error(&mut ws).await, limited, "{request}");
    }
    // Publications have their own bucket, and unsubscribing only frees.
    let published = publish(&mut ws, "chat:a", "1", "x1").await;
    assert!(
        matches!(
            published,
            ServerMessage::Published { .. } | ServerMessage::Pub { .. }
        ),
        "{published:?}"
    );
    send_text(
        &mut ws,
        r#"{"type":"unsubscribe","channel":"chat:a","id":"u1"}"#,
    )
    .await;
    loop {
        match next_json(&mut ws).await {
            ServerMessage::Unsubscribed { channel, id, .. } => {
                assert_eq!((channel.as_str(), id.as_deref()), ("chat:a", Some("u1")));
                break;
            }
            ServerMessage::Pub { .. } | ServerMessage::Published { .. } => {}
            other => panic!("expected unsubscribed, got {other:?}"),
        }
    }
}

fn next_error_of(message: ServerMessage) -> String {
    match message {
        ServerMessage::Error { code, .. } => code.to_string(),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn subscribe_and_unsubscribe_are_idempotent() {
    let server = start(&[]).await;
    let mut ws = connect(&server).await;
    let epoch = epoch_of(&subscribe(&mut ws, "chat:i", None).await);
    let again = subscribe(&mut ws, "chat:i", None).await;
    assert_eq!(epoch_of(&again), epoch);
    let mut writer = connect(&server).await;
    publish(&mut writer, "chat:i", "1", "a").await;
    assert_eq!(next_pub(&mut ws).await.0, 1, "delivered once");
    for _ in 0..2 {
        send_text(
            &mut ws,
            r#"{"type":"unsubscribe","channel":"chat:i","id":"u"}"#,
        )
        .await;
        assert_eq!(
            next_json(&mut ws).await,
            ServerMessage::Unsubscribed {
                channel: "chat:i".into(),
                reason: UnsubscribeReason::Client,
                id: Some("u".into()),
            }
        );
    }
    publish(&mut writer, "chat:i", "2", "b").await;
    send_text(&mut ws, r#"{"type":"ping","t":1}"#).await;
    assert_eq!(
        next_json(&mut ws).await,
        ServerMessage::Pong { t: 1.0 },
        "nothing after the unsubscribe"
    );
}

#[tokio::test]
async fn in_reliable_mode_answers_are_numbered_and_publications_are_not() {
    let server = start(&[]).await;
    let mut ws = server.connect("/ws?protocol=2&reliable=1").await;
    next_json(&mut ws).await;
    let subscribe = r#"{"type":"subscribe","channel":"chat:r"}"#;
    send_text(
        &mut ws,
        &shared::encode_msg(1, subscribe, shared::Protocol::V2),
    )
    .await;
    match next_json(&mut ws).await {
        ServerMessage::Msg { seq: 1, data, .. } => {
            assert!(matches!(
                ServerMessage::from_json(&data).unwrap(),
                ServerMessage::Subscribed { .. }
            ));
        }
        other => panic!("expected the numbered subscribed, got {other:?}"),
    }
    // Its own publication, at the top level: `published` numbered, `pub` not.
    send_text(
        &mut ws,
        r#"{"type":"publish","channel":"chat:r","data":[1],"id":"q"}"#,
    )
    .await;
    let mut got = Vec::new();
    while got.len() < 2 {
        match next_json(&mut ws).await {
            ServerMessage::Ack { .. } => {}
            ServerMessage::Msg { seq, data, .. } => {
                let inner = ServerMessage::from_json(&data).unwrap();
                assert!(matches!(inner, ServerMessage::Published { offset: 1, .. }));
                got.push(format!("msg {seq}"));
            }
            ServerMessage::Pub { offset, .. } => got.push(format!("pub {offset}")),
            other => panic!("unexpected {other:?}"),
        }
    }
    got.sort();
    assert_eq!(got, ["msg 2", "pub 1"]);
    // A resent msg is not served again.
    send_text(
        &mut ws,
        &shared::encode_msg(1, subscribe, shared::Protocol::V2),
    )
    .await;
    send_text(&mut ws, r#"{"type":"ping","t":2}"#).await;
    loop {
        match next_json(&mut ws).await {
            ServerMessage::Ack { .. } => {}
            ServerMessage::Pong { .. } => break,
            other => panic!("a duplicate gets only its ack: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_tokens_claims_grant_subscribe_at_connect_and_a_refresh_takes_them_away() {
    use server::channels::namespace::Capability;
    let config = testbed::config_with_namespaces(NAMESPACES, &token_args()).unwrap();
    let server = TestServer::start(config).await.unwrap();
    let mint = |channels: &[(&str, &[Capability])], subs: &[&str]| {
        let mut claims = server::auth::Claims::expiring_in("ann", Duration::from_secs(600));
        claims.channels = Some(
            channels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
                .collect(),
        );
        claims.subs = Some(subs.iter().map(|s| (*s).to_owned()).collect());
        server::auth::mint_hs256(testbed::TEST_JWT_SECRET.as_bytes(), &claims).unwrap()
    };
    let token = mint(
        &[("chat:*", &[Capability::Subscribe, Capability::Publish])],
        &["chat:news"],
    );
    let mut ws = server
        .connect(&format!("/ws?protocol=2&token={token}"))
        .await;
    assert!(matches!(
        next_json(&mut ws).await,
        ServerMessage::Welcome { .. }
    ));
    // `subs`: subscribed by the server at connect.
    let subscribed = next_json(&mut ws).await;
    assert!(
        matches!(&subscribed, ServerMessage::Subscribed { channel, .. } if channel == "chat:news"),
        "{subscribed:?}"
    );
    // The claim grants publish in chat (the namespace grants users subscribe only).
    assert!(matches!(
        publish(&mut ws, "chat:news", "1", "n1").await,
        ServerMessage::Pub { offset: 1, .. } | ServerMessage::Published { offset: 1, .. }
    ));
    let _ = next_json(&mut ws).await;
    // Outside the claim's pattern: nothing, the namespace's list is replaced.
    send_text(&mut ws, r#"{"type":"subscribe","channel":"x"}"#).await;
    assert_eq!(next_error(&mut ws).await.0, "permission_denied");
    // A refreshed token without the capability ends the subscription.
    let narrower = mint(&[("chat:other", &[Capability::Subscribe])], &[]);
    send_text(
        &mut ws,
        &format!(r#"{{"type":"refresh","token":"{narrower}"}}"#),
    )
    .await;
    assert!(matches!(
        next_json(&mut ws).await,
        ServerMessage::Refreshed { .. }
    ));
    assert_eq!(
        next_json(&mut ws).await,
        ServerMessage::Unsubscribed {
            channel: "chat:news".into(),
            reason: UnsubscribeReason::Permission,
            id: None,
        }
    );
    send_text(
        &mut ws,
        r#"{"type":"publish","channel":"chat:news","data":1}"#,
    )
    .await;
    assert_eq!(next_error(&mut ws).await.0, "permission_denied");
}

/// Token mode's flags, as `testbed::token_config` sets them.
fn token_args() -> Vec<&'static str> {
    vec![
        "--allow-client-ids=false",
        "--jwt-secret",
        testbed::TEST_JWT_SECRET,
        "--refresh-interval",
        "0",
    ]
}

#[tokio::test]
async fn version_one_has_no_channels() {
    let server = start(&[]).await;
    let mut ws = server.connect_ws("/ws?protocol=1").await.0;
    send_text(&mut ws, r#"{"type":"subscribe","channel":"chat:x"}"#).await;
    assert_eq!(next_error(&mut ws).await.0, "unknown_type");
}

const ADMIN: &str = "channels-test-admin-token";

#[tokio::test]
async fn the_admin_api_publishes_once_per_key_lists_reads_the_history_and_unsubscribes() {
    let server = start(&["--admin-token", ADMIN]).await;
    let http = reqwest::Client::new();
    let (mut ws, id) = server.connect_ws("/ws?protocol=2").await;
    let epoch = epoch_of(&subscribe(&mut ws, "chat:a", None).await);
    let post = |key: &'static str, body: &'static str| {
        http.post(server.http_url("/api/channels/chat:a/publish"))
            .bearer_auth(ADMIN)
            .header("Idempotency-Key", key)
            .body(body)
            .send()
    };
    for _ in 0..2 {
        let answer: serde_json::Value = post("k1", r#"{"hello":"world"}"#)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer, serde_json::json!({"offset": 1, "epoch": epoch}));
    }
    let not_json = post("k2", "{oops").await.unwrap();
    assert_eq!(not_json.status(), 400);
    match next_json(&mut ws).await {
        ServerMessage::Pub {
            offset: 1,
            data,
            info: None,
            ..
        } => assert_eq!(data.get(), r#"{"hello":"world"}"#),
        other => panic!("one pub, without info: {other:?}"),
    }
    let list: serde_json::Value =
        common::admin_json(&server.http_url("/api/channels"), ADMIN).await;
    assert_eq!(
        list,
        serde_json::json!({"channels": [{"channel": "chat:a", "subscribers": 1}], "unanswered": []})
    );
    let history: serde_json::Value = common::admin_json(
        &server.http_url("/api/channels/chat:a/history?limit=10"),
        ADMIN,
    )
    .await;
    assert_eq!(
        history,
        serde_json::json!({"channel": "chat:a", "publications": [{"offset": 1, "data": {"hello": "world"}}]})
    );
    let unknown = http
        .post(server.http_url("/api/channels/nope:a/publish"))
        .bearer_auth(ADMIN)
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let delete = |client: String| {
        http.delete(server.http_url(&format!("/api/channels/chat:a/subscribers/{client}")))
            .bearer_auth(ADMIN)
            .send()
    };
    assert_eq!(delete(id.clone()).await.unwrap().status(), 200);
    assert_eq!(
        next_json(&mut ws).await,
        ServerMessage::Unsubscribed {
            channel: "chat:a".into(),
            reason: UnsubscribeReason::Admin,
            id: None,
        }
    );
    assert_eq!(
        delete(id).await.unwrap().status(),
        404,
        "not subscribed now"
    );
    // A connection that ends leaves its channels.
    subscribe(&mut ws, "chat:b", None).await;
    drop(ws);
    common::wait_until("the channel has no subscriber left", || async {
        let list: serde_json::Value =
            common::admin_json(&server.http_url("/api/channels"), ADMIN).await;
        list["channels"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
}

#[tokio::test]
async fn a_subscriber_that_reads_late_gets_every_frame_whole_and_in_order() {
    // 800 publications of 15 KB (under serve::DIRECT_MAX), more than the
    // sockets' buffers hold, to a subscriber that reads nothing meanwhile,
    // and that asks for an echo after every fortieth: the first
    // publications are written straight into its socket by the fan-out,
    // one of them in part once the socket fills (its rest goes first at
    // the connection's next write), the others through its queue, and the
    // echo replies go between them. Read at last, every frame is whole:
    // each publication once and in order, and each reply.
    let server = start(&[
        "--admin-token",
        ADMIN,
        "--send-queue",
        "1000",
        "--send-queue-bytes",
        "0",
        // It reads nothing until every publication is in: its writes
        // wait that long without being taken for a slow consumer (a
        // loaded machine may take a while to publish 800).
        "--write-timeout",
        "60s",
    ])
    .await;
    let mut late = connect(&server).await;
    subscribe(&mut late, "chat:late", None).await;
    let http = reqwest::Client::new();
    let body = format!("\"{}\"", "x".repeat(15_000));
    const PUBLISHED: u64 = 800;
    for n in 1..=PUBLISHED {
        admin_publish(&http, &server, "chat:late", &body).await;
        if n.is_multiple_of(40) {
            send_text(
                &mut late,
                &format!(r#"{{"type":"echo","id":{n},"body":"after {n}"}}"#),
            )
            .await;
        }
    }
    let (mut offset, mut echoes) = (0, Vec::new());
    while offset < PUBLISHED || echoes.len() < 20 {
        match next_json(&mut late).await {
            ServerMessage::Pub {
                offset: got, data, ..
            } => {
                assert_eq!(got, offset + 1, "in order, once each");
                assert_eq!(data.get(), body, "whole");
                offset = got;
            }
            ServerMessage::Echo { id, body } => {
                assert_eq!(body, format!("after {id}"));
                echoes.push(id);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(echoes, (1..=20).map(|n| n * 40).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_is_closed_as_slow_and_recovers_everything_after() {
    // Publications of 60 KB into a queue of 8: once the socket's buffers
    // are full, the queue is, and the next publication asks the connection
    // to close (1013, slow consumer); its task, stuck writing to the full
    // socket, gives up at the write timeout, so the close frame itself
    // rarely gets through to a client that reads nothing. What matters:
    // the client comes back and recovers exactly what it had not read.
    let server = start(&[
        "--admin-token",
        ADMIN,
        "--send-queue",
        "8",
        "--write-timeout",
        "1s",
    ])
    .await;
    let (mut slow, _) = server.connect_ws("/ws?protocol=2").await;
    let epoch = epoch_of(&subscribe(&mut slow, "chat:big", None).await);
    let http = reqwest::Client::new();
    let body = format!("\"{}\"", "x".repeat(60_000));
    let mut published = 0u64;
    let mut closed = false;
    // 24 MB at most: past the socket's buffers, within the history's.
    while !closed && published < 400 {
        admin_publish(&http, &server, "chat:big", &body).await;
        published += 1;
        if published.is_multiple_of(10) {
            closed = common::metric(&server, "ws_connections_open").await == 0;
        }
    }
    common::wait_until("the slow subscriber closed", || async {
        common::metric(&server, "ws_connections_open").await == 0
    })
    .await;
    // It reads what was written before the close, then the close (1013),
    // unless the server gave up writing it to a socket nobody read.
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut last = 0;
    loop {
        let next = tokio::time::timeout(common::DEADLINE, slow.next())
            .await
            .expect("the rest within the deadline");
        match next {
            Some(Ok(Message::Text(text))) => {
                if let ServerMessage::Pub { offset, .. } = ServerMessage::from_json(&text).unwrap()
                {
                    assert_eq!(offset, last + 1, "in order, none skipped");
                    last = offset;
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let frame = frame.unwrap();
                assert_eq!(u16::from(frame.code), 1013);
                assert_eq!(frame.reason.as_str(), "slow consumer");
                eprintln!("closed with 1013 after {last} of {published}");
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                eprintln!("ended without its close after {last} of {published}");
                break;
            }
        }
    }
    assert!(last < published, "closed before it had everything");
    // Back, it recovers the rest exactly.
    let mut back = connect(&server).await;
    let subscribed = subscribe(&mut back, "chat:big", Some((&epoch, last))).await;
    assert!(
        matches!(subscribed, ServerMessage::Subscribed { recovered: Some(true), offset, .. } if offset == published),
        "{subscribed:?}"
    );
    for offset in last + 1..=published {
        assert_eq!(next_pub(&mut back).await.0, offset);
    }
}
