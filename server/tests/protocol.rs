//! The protocol's versions and its one rule for every client message.
//!
//! `every_client_message_gets_its_answer_in_every_mode_and_version` is
//! docs/PROTOCOL.md's table of client messages, row by row: what each one
//! gets on a plain connection, at the top level of a reliable one, and
//! inside a reliable `msg`, in version 1 and in version 2. Then: a client
//! that asks for no version gets version 1 exactly as before versions were
//! asked for, and a session resumes on a connection of the other version
//! (in memory here; on Redis in `cluster_sessions.rs`).
#![allow(clippy::unwrap_used)]

mod common;

use common::{
    Connect, DEADLINE, TestServer, Ws, next_json, next_text, resume_in, send_text, three_unacked,
};
use futures_util::{SinkExt, StreamExt};
use shared::{Protocol, ServerMessage};
use tokio_tungstenite::tungstenite::Message;

/// Where a request travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A plain connection.
    Plain,
    /// The top level of a reliable connection.
    Reliable,
    /// Inside a reliable `msg` (number 1 of the session).
    Inside,
}

/// A bound connection in `mode`, speaking `protocol` (asked for with
/// `?protocol=`).
async fn open(server: &TestServer, mode: Mode, protocol: Protocol) -> Ws {
    let reliable = if mode == Mode::Plain {
        ""
    } else {
        "&reliable=1"
    };
    let mut ws = server
        .connect(&format!("/ws?protocol={}{reliable}", protocol.number()))
        .await;
    match next_json(&mut ws).await {
        ServerMessage::Welcome { protocol: p, .. } => assert_eq!(p, protocol.number()),
        other => panic!("expected the welcome, got {other:?}"),
    }
    if mode != Mode::Plain {
        // The first message binds the connection to its session.
        send_text(&mut ws, r#"{"type":"ack","seq":0}"#).await;
    }
    ws
}

/// A message's type, with an error's code or a failed resume's reason.
fn summary(message: &ServerMessage) -> String {
    match message {
        ServerMessage::Error { code, .. } => format!("error:{code}"),
        ServerMessage::ResumeFailed { reason } => format!("resume_failed:{reason}"),
        ServerMessage::Echo { .. } => "echo".into(),
        ServerMessage::Push { .. } => "push".into(),
        ServerMessage::BurstDone { .. } => "burst_done".into(),
        ServerMessage::Pong { .. } => "pong".into(),
        ServerMessage::Subscribed { .. } => "subscribed".into(),
        ServerMessage::Unsubscribed { .. } => "unsubscribed".into(),
        ServerMessage::Published { .. } => "published".into(),
        other => format!("{other:?}"),
    }
}

/// The server's answers to `request` sent as `mode` sends it: every frame
/// until the `pong` of a marker `ping` sent right after it (and, with
/// `burst`, until a `burst_done`: a reliable burst is paced by its window,
/// so the marker may overtake it),
/// leaving out the server's acks, which come on their own schedule. A
/// numbered answer is `msg:` and what it carries; each envelope is checked
/// to have its version's form.
async fn answers(
    ws: &mut Ws,
    (mode, protocol): (Mode, Protocol),
    request: &Message,
    burst: bool,
) -> Vec<String> {
    let request = match (mode, request) {
        (Mode::Inside, Message::Text(text)) => {
            Message::text(shared::encode_msg(1, text.as_str(), protocol))
        }
        _ => request.clone(),
    };
    ws.send(request).await.unwrap();
    send_text(ws, r#"{"type":"ping","t":-1}"#).await;
    let (mut seen, mut marked) = (Vec::new(), false);
    let done = |seen: &[String]| !burst || seen.iter().any(|s| s.ends_with("burst_done"));
    while !marked || !done(&seen) {
        let frame = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("an answer within the deadline")
            .expect("open")
            .unwrap();
        let text = match frame {
            Message::Text(text) => text,
            Message::Binary(_) => {
                seen.push("binary".to_owned());
                continue;
            }
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => continue,
        };
        match ServerMessage::from_json(&text).unwrap() {
            ServerMessage::Pong { t: -1.0 } => marked = true,
            ServerMessage::Ack { .. } => {}
            ServerMessage::Msg { data, .. } => {
                let embedded = text.contains(r#","data":{"#);
                assert_eq!(embedded, protocol == Protocol::V2, "{text}");
                let inner = ServerMessage::from_json(&data).unwrap();
                seen.push(format!("msg:{}", summary(&inner)));
            }
            other => seen.push(summary(&other)),
        }
    }
    seen
}

/// The answers to a request: plain, reliable at the top level, inside a `msg`.
type Answers = (
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

/// A request and its answers, the same in both versions or not.
type Row = (Message, Answers, Option<Answers>);

/// A row whose answers are the same in both versions.
fn both(
    request: Message,
    plain: &'static [&'static str],
    reliable: &'static [&'static str],
    inside: &'static [&'static str],
) -> Row {
    (request, (plain, reliable, inside), None)
}

/// Version 1 gets `unknown_type`; version 2 gets `v2`.
fn v2_only(request: &str, v2: Answers) -> Row {
    const UNKNOWN: &[&str] = &["error:unknown_type"];
    const UNKNOWN_MSG: &[&str] = &["msg:error:unknown_type"];
    (
        Message::text(request),
        (UNKNOWN, UNKNOWN_MSG, UNKNOWN_MSG),
        Some(v2),
    )
}

#[tokio::test]
async fn every_client_message_gets_its_answer_in_every_mode_and_version() {
    let server = common::start(&["--max-burst", "10"]).await;
    let echo = r#"{"type":"echo","id":5,"body":"b"}"#;
    const CONTROL: &[&str] = &["msg:error:not_reliable"];
    // (request, plain, reliable at the top level, inside a msg)
    let rows: Vec<Row> = vec![
        both(Message::text(echo), &["echo"], &["msg:echo"], &["msg:echo"]),
        both(
            Message::text(r#"{"type":"burst","count":2}"#),
            &["push", "push", "burst_done"],
            &["msg:push", "msg:push", "msg:burst_done"],
            &["msg:push", "msg:push", "msg:burst_done"],
        ),
        both(
            Message::text(r#"{"type":"burst","count":11}"#),
            &["error:burst_too_large"],
            &["msg:error:burst_too_large"],
            &["msg:error:burst_too_large"],
        ),
        both(
            Message::text(r#"{"type":"ping","t":5}"#),
            &["pong"],
            &["pong"],
            &["msg:pong"],
        ),
        both(
            Message::text(r#"{"type":"refresh","token":"x"}"#),
            &["error:bad_token"],
            &["error:bad_token"],
            CONTROL,
        ),
        both(
            Message::text(r#"{"type":"resume","session":"s","token":"t","last_seq":0}"#),
            &["error:not_reliable"],
            &["resume_failed:not_first"],
            CONTROL,
        ),
        both(
            Message::text(r#"{"type":"ack","seq":0}"#),
            &["error:not_reliable"],
            &[],
            CONTROL,
        ),
        both(
            Message::text(shared::encode_msg(1, echo, Protocol::V1)),
            &["error:not_reliable"],
            &["msg:echo"],
            CONTROL,
        ),
        // Channel messages (issue 23): version 2 only, answered as any
        // request is (numbered in reliable mode).
        v2_only(
            r#"{"type":"subscribe","channel":"x","id":"s-1"}"#,
            (&["subscribed"], &["msg:subscribed"], &["msg:subscribed"]),
        ),
        v2_only(
            r#"{"type":"unsubscribe","channel":"x"}"#,
            (
                &["unsubscribed"],
                &["msg:unsubscribed"],
                &["msg:unsubscribed"],
            ),
        ),
        // The default namespace allows no publication from clients.
        v2_only(
            r#"{"type":"publish","channel":"x","data":{"a":1},"id":"p-1"}"#,
            (
                &["error:permission_denied"],
                &["msg:error:permission_denied"],
                &["msg:error:permission_denied"],
            ),
        ),
        v2_only(
            r#"{"type":"subscribe","channel":"chat:x"}"#,
            (
                &["error:unknown_namespace"],
                &["msg:error:unknown_namespace"],
                &["msg:error:unknown_namespace"],
            ),
        ),
        // Presence (issue 24): the default namespace keeps no presence, so
        // the refusal, numbered like any channel error (the answers
        // themselves never are: `server/tests/presence.rs`).
        v2_only(
            r#"{"type":"presence","channel":"x","id":"q-1"}"#,
            (
                &["error:permission_denied"],
                &["msg:error:permission_denied"],
                &["msg:error:permission_denied"],
            ),
        ),
        v2_only(
            r#"{"type":"presence_stats","channel":"x"}"#,
            (
                &["error:permission_denied"],
                &["msg:error:permission_denied"],
                &["msg:error:permission_denied"],
            ),
        ),
        both(
            Message::text(r#"{"type":"nope"}"#),
            &["error:unknown_type"],
            &["error:unknown_type"],
            &["msg:error:unknown_type"],
        ),
        both(
            Message::text("{not json"),
            &["error:malformed"],
            &["error:malformed"],
            &["msg:error:malformed"],
        ),
        both(
            Message::text(r#"{"type":"echo","id":"x"}"#),
            &["error:invalid_fields"],
            &["error:invalid_fields"],
            &["msg:error:invalid_fields"],
        ),
        // A msg carries text only: a binary frame has no "inside".
        both(
            Message::binary(vec![1, 2, 3]),
            &["binary"],
            &["binary"],
            &[],
        ),
    ];
    for (request, v1, v2) in rows {
        for protocol in [Protocol::V1, Protocol::V2] {
            let (plain, reliable, inside) = match protocol {
                Protocol::V2 => v2.unwrap_or(v1),
                _ => v1,
            };
            for (mode, expected) in [
                (Mode::Plain, plain),
                (Mode::Reliable, reliable),
                (Mode::Inside, inside),
            ] {
                if mode == Mode::Inside && matches!(request, Message::Binary(_)) {
                    continue;
                }
                let mut ws = open(&server, mode, protocol).await;
                let burst = expected.last().is_some_and(|e| e.ends_with("burst_done"));
                let got = answers(&mut ws, (mode, protocol), &request, burst).await;
                assert_eq!(got, expected, "{request:?} {mode:?} {protocol:?}");
            }
        }
    }
}

#[tokio::test]
async fn a_client_that_asks_no_version_gets_version_one_as_before() {
    let server = common::start(&["--allow-client-ids"]).await;
    // No ask, or one that is not a version: version 1, byte for byte.
    for query in [
        "",
        "&protocol=",
        "&protocol=x",
        "&protocol=0",
        "&protocol=1",
    ] {
        let mut ws = server
            .connect(&format!("/ws?client_id=old&reliable=1{query}"))
            .await;
        let welcome = next_text(&mut ws).await;
        assert!(
            welcome.starts_with(
                r#"{"type":"welcome","client_id":"old","push_interval_ms":0,"session":""#
            ) && welcome.ends_with(r#"","protocol":1}"#),
            "{welcome}"
        );
        send_text(&mut ws, r#"{"type":"ack","seq":0}"#).await;
        send_text(
            &mut ws,
            r#"{"type":"msg","seq":1,"data":"{\"type\":\"echo\",\"id\":1,\"body\":\"hi\"}"}"#,
        )
        .await;
        assert_eq!(
            next_text(&mut ws).await,
            r#"{"type":"msg","seq":1,"data":"{\"type\":\"echo\",\"id\":1,\"body\":\"hi\"}"}"#
        );
    }
    // A plain one too.
    let mut ws = server.connect("/ws?client_id=plain").await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"type":"welcome","client_id":"plain","push_interval_ms":0,"protocol":1}"#
    );
    // Version 2, and a newer ask gets the newest the server speaks.
    for ask in ["2", "3", "4294967296"] {
        let mut ws = server
            .connect(&format!("/ws?client_id=new&reliable=1&protocol={ask}"))
            .await;
        assert!(next_text(&mut ws).await.ends_with(r#","protocol":2}"#));
        send_text(&mut ws, r#"{"type":"ack","seq":0}"#).await;
        send_text(
            &mut ws,
            r#"{"type":"msg","seq":1,"data":{"type":"echo","id":1,"body":"hi"}}"#,
        )
        .await;
        assert_eq!(
            next_text(&mut ws).await,
            r#"{"type":"msg","seq":1,"data":{"type":"echo","id":1,"body":"hi"}}"#
        );
        // A version-1 frame is understood on a version-2 connection.
        send_text(
            &mut ws,
            r#"{"type":"msg","seq":2,"data":"{\"type\":\"echo\",\"id\":2,\"body\":\"v1\"}"}"#,
        )
        .await;
        assert_eq!(
            next_text(&mut ws).await,
            r#"{"type":"msg","seq":2,"data":{"type":"echo","id":2,"body":"v1"}}"#
        );
    }
}

#[tokio::test]
async fn a_session_resumes_on_a_connection_of_the_other_version() {
    let server = common::start(&[]).await;
    let started = three_unacked(&server, Protocol::V1).await;
    resume_in(&server, started, Protocol::V2).await;
    let started = three_unacked(&server, Protocol::V2).await;
    resume_in(&server, started, Protocol::V1).await;
}
