//! Identities against a real server on port 0: anonymous mode (ids the
//! server assigns, `?client_id=` only with `--allow-client-ids`) and token
//! mode (tokens minted here with `jsonwebtoken`, refusals, users with many
//! connections, refresh and expiry, sessions that belong to their user).
#![allow(clippy::unwrap_used)] // test helpers: a failure should stop the test

mod common;

use std::collections::HashSet;

use common::*;
use futures_util::SinkExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use server::auth::unix_now;
use shared::{ServerMessage, close_code};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// The first message of `ws` (control frames skipped), which must be a
/// close frame: nothing of the application came before it.
async fn closed_before_anything(ws: &mut Ws) -> CloseFrame {
    match next_message(ws).await {
        Message::Close(Some(frame)) => frame,
        other => panic!("expected a close frame first, got {other:?}"),
    }
}

#[tokio::test]
async fn anonymous_ids_are_assigned_random_128_bit_and_distinct() {
    let server = start(&["--allow-client-ids=false"]).await;
    let mut ids = HashSet::new();
    let mut open = Vec::new();
    for _ in 0..20 {
        let (ws, id) = server.connect_ws("/ws").await;
        assert_eq!(id.len(), 32, "128 bits as 32 hex digits: {id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert!(ids.insert(id), "every id is new");
        open.push(ws);
    }
    // Not a counter: the ids share no long common prefix.
    let mut sorted: Vec<&String> = ids.iter().collect();
    sorted.sort();
    let shared_prefix = sorted
        .windows(2)
        .map(|w| {
            w[0].bytes()
                .zip(w[1].bytes())
                .take_while(|(a, b)| a == b)
                .count()
        })
        .max()
        .unwrap();
    assert!(shared_prefix < 16, "ids look sequential: {sorted:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_chosen_client_id_is_closed_with_1008_without_the_flag() {
    let server = start(&["--allow-client-ids=false"]).await;
    let mut ws = server.connect("/ws?client_id=alice").await;
    let frame = closed_before_anything(&mut ws).await;
    assert_eq!(u16::from(frame.code), close_code::POLICY_VIOLATION);
    assert!(
        frame.reason.contains("--allow-client-ids"),
        "the reason names the flag: {}",
        frame.reason
    );
    // Never registered: no one named alice.
    assert_eq!(
        metric(&server, "ws_rejected_upgrades_total{reason=\"client_id\"}").await,
        1
    );
    // Reliable mode too, and with the flag the same id is accepted.
    let mut ws = server.connect("/ws?reliable=1&client_id=bob").await;
    let frame = closed_before_anything(&mut ws).await;
    assert_eq!(u16::from(frame.code), close_code::POLICY_VIOLATION);
    server.shutdown().await.unwrap();

    let server = start(&[]).await;
    let (_ws, id) = server.connect_ws("/ws?client_id=alice").await;
    assert_eq!(id, "alice");
    server.shutdown().await.unwrap();
}

// ---- token mode ----

const SECRET: &str = "integration-test secret, long enough";
const ADMIN: &str = "auth-test-admin-s3cret";

/// A server in token mode (HS256 with [`SECRET`], no leeway) with the admin
/// API, plus `extra` flags.
async fn token_server(extra: &[&str]) -> TestServer {
    let mut args = vec![
        "--allow-client-ids=false",
        "--jwt-secret",
        SECRET,
        "--jwt-leeway",
        "0",
        "--admin-token",
        ADMIN,
    ];
    args.extend_from_slice(extra);
    start(&args).await
}

/// `claims` signed with `alg` and `key`, by `jsonwebtoken` directly.
fn sign(alg: Algorithm, key: &EncodingKey, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

fn hs256(claims: &serde_json::Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

/// Claims of `sub` valid for `ttl` seconds (negative: expired).
fn claims(sub: &str, ttl: i64) -> serde_json::Value {
    json!({ "sub": sub, "exp": unix_now().saturating_add_signed(ttl) })
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// base64url without padding, for hand-built tokens.
fn b64url(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ABC[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// Connects with `token` in the query and reads the welcome.
async fn connect_with(server: &TestServer, path: &str, token: &str) -> (Ws, ServerMessage) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut ws = server.connect(&format!("{path}{sep}token={token}")).await;
    let welcome = next_json(&mut ws).await;
    (ws, welcome)
}

/// Connects with `Authorization: <authorization>` and no query token.
async fn connect_with_header(server: &TestServer, path: &str, authorization: &str) -> Ws {
    let mut request = server.ws_url(path).into_client_request().unwrap();
    request
        .headers_mut()
        .insert(AUTHORIZATION, authorization.parse().unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

async fn admin(server: &TestServer, method: reqwest::Method, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(method, server.http_url(path))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
}

async fn clients(server: &TestServer) -> Vec<serde_json::Value> {
    admin(server, reqwest::Method::GET, "/api/clients")
        .await
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_valid_token_connects_and_carries_its_user() {
    let server = token_server(&[]).await;
    let mut named = claims("alice", 3600);
    named["client_name"] = json!("laptop");
    let (mut ws, welcome) = connect_with(&server, "/ws", &hs256(&named)).await;
    let ServerMessage::Welcome {
        client_id,
        protocol,
        exp,
        ..
    } = welcome
    else {
        panic!("expected a welcome, got {welcome:?}")
    };
    assert_eq!(protocol, 1, "no version asked: version 1");
    assert_eq!(exp, named["exp"].as_u64());
    assert_eq!(client_id.len(), 32, "still a random id per connection");
    send_text(&mut ws, r#"{"type":"echo","id":1,"body":"hi"}"#).await;
    assert!(matches!(
        next_json(&mut ws).await,
        ServerMessage::Echo { id: 1, .. }
    ));
    // Also with the header, as a native client sends it.
    let mut bearer = connect_with_header(
        &server,
        "/ws",
        &format!("Bearer {}", hs256(&claims("bob", 3600))),
    )
    .await;
    let ServerMessage::Welcome { exp: Some(_), .. } = next_json(&mut bearer).await else {
        panic!("a welcome with exp")
    };
    let list = clients(&server).await;
    let row = |user: &str| {
        list.iter()
            .find(|row| row["user"] == user)
            .unwrap_or_else(|| panic!("{user} in {list:?}"))
            .clone()
    };
    assert_eq!(row("alice")["id"], json!(client_id));
    assert_eq!(row("alice")["client_name"], "laptop");
    assert!(row("bob").get("client_name").is_none());
    server.shutdown().await.unwrap();
}

/// Connects with `token` (query) and expects 4401 with `reason`, no welcome.
async fn refused(server: &TestServer, token: Option<&str>, reason: &str) {
    let path = match token {
        Some(token) => format!("/ws?token={token}"),
        None => "/ws".to_owned(),
    };
    let mut ws = server.connect(&path).await;
    let frame = closed_before_anything(&mut ws).await;
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (close_code::UNAUTHORIZED, reason),
        "token {token:?}"
    );
}

#[tokio::test]
async fn each_bad_token_is_closed_with_4401_and_its_cause_before_the_welcome() {
    let server = token_server(&[]).await;
    refused(&server, None, "missing token").await;
    refused(&server, Some(""), "missing token").await;
    refused(&server, Some("not-a-jwt"), "invalid token").await;
    // Another secret.
    let other = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"someone else's secret"),
        &claims("alice", 3600),
    );
    refused(&server, Some(&other), "invalid token").await;
    // Another algorithm with the right secret, and an asymmetric one.
    let hs384 = sign(
        Algorithm::HS384,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        &claims("alice", 3600),
    );
    refused(&server, Some(&hs384), "invalid token").await;
    let es256 = sign(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(&fixture("es256-private.pem")).unwrap(),
        &claims("alice", 3600),
    );
    refused(&server, Some(&es256), "invalid token").await;
    // `alg: none`, built by hand: no signature at all.
    assert_eq!(
        (b64url(b"foobar"), b64url(b"fooba")),
        ("Zm9vYmFy".into(), "Zm9vYmE".into())
    );
    let none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims("alice", 3600).to_string().as_bytes())
    );
    refused(&server, Some(&none), "invalid token").await;
    // A valid signature over a token without `sub`, or without `exp`.
    refused(
        &server,
        Some(&hs256(&json!({ "exp": unix_now() + 3600 }))),
        "invalid token",
    )
    .await;
    refused(
        &server,
        Some(&hs256(&json!({ "sub": "alice" }))),
        "invalid token",
    )
    .await;
    refused(&server, Some(&hs256(&claims("alice", -5))), "token expired").await;
    // A bad header token too.
    let mut ws = connect_with_header(&server, "/ws?reliable=1", "Bearer nonsense").await;
    let frame = closed_before_anything(&mut ws).await;
    assert_eq!(u16::from(frame.code), close_code::UNAUTHORIZED);
    assert_eq!(frame.reason.as_str(), "invalid token");
    assert_eq!(
        metric(&server, "ws_rejected_upgrades_total{reason=\"token\"}").await,
        11
    );
    assert!(clients(&server).await.is_empty(), "none was registered");
    // A chosen id is refused in token mode too, even with a good token.
    let mut ws = server
        .connect(&format!(
            "/ws?client_id=alice&token={}",
            hs256(&claims("alice", 3600))
        ))
        .await;
    let frame = closed_before_anything(&mut ws).await;
    assert_eq!(u16::from(frame.code), close_code::POLICY_VIOLATION);
    server.shutdown().await.unwrap();

    let server = token_server(&["--jwt-issuer", "me", "--jwt-audience", "ws"]).await;
    let with = |iss: Option<&str>, aud: Option<&str>| {
        let mut c = claims("alice", 3600);
        if let Some(iss) = iss {
            c["iss"] = json!(iss);
        }
        if let Some(aud) = aud {
            c["aud"] = json!(aud);
        }
        hs256(&c)
    };
    refused(
        &server,
        Some(&with(Some("them"), Some("ws"))),
        "wrong issuer",
    )
    .await;
    refused(&server, Some(&with(None, Some("ws"))), "wrong issuer").await;
    refused(
        &server,
        Some(&with(Some("me"), Some("other"))),
        "wrong audience",
    )
    .await;
    refused(&server, Some(&with(Some("me"), None)), "wrong audience").await;
    let (_ws, welcome) = connect_with(&server, "/ws", &with(Some("me"), Some("ws"))).await;
    assert!(matches!(welcome, ServerMessage::Welcome { .. }));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn public_key_mode_accepts_rs256_or_es256_as_the_key_says() {
    for (alg, private, public) in [
        (Algorithm::ES256, "es256-private.pem", "es256-public.pem"),
        (Algorithm::RS256, "rs256-private.pem", "rs256-public.pem"),
    ] {
        let path = format!("{}/tests/fixtures/{public}", env!("CARGO_MANIFEST_DIR"));
        let server = start(&[
            "--allow-client-ids=false",
            "--jwt-public-key",
            &path,
            "--jwt-leeway",
            "0",
        ])
        .await;
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&fixture(private)).unwrap(),
            _ => EncodingKey::from_rsa_pem(&fixture(private)).unwrap(),
        };
        let good = sign(alg, &key, &claims("carol", 3600));
        let (_ws, welcome) = connect_with(&server, "/ws", &good).await;
        assert!(
            matches!(welcome, ServerMessage::Welcome { exp: Some(_), .. }),
            "{alg:?}: {welcome:?}"
        );
        // HS256 "signed" with the public key as the secret: the classic
        // algorithm confusion, refused.
        let confused = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(&fixture(public)),
            &claims("carol", 3600),
        );
        refused(&server, Some(&confused), "invalid token").await;
        refused(
            &server,
            Some(&hs256(&claims("carol", 3600))),
            "invalid token",
        )
        .await;
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn token_mode_refuses_to_start_with_allow_client_ids() {
    // testbed's config turns --allow-client-ids on.
    let config = testbed::config(&["--jwt-secret", SECRET]).unwrap();
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let result = tokio::time::timeout(
        DEADLINE,
        server::run(listener, config, std::future::pending()),
    )
    .await
    .expect("refused at once, not served");
    let err = result.unwrap_err();
    assert!(
        err.to_string().contains("--allow-client-ids"),
        "the error names the flag: {err}"
    );
    // So is a key that cannot be read, and two keys.
    let config = testbed::config(&[
        "--allow-client-ids=false",
        "--jwt-public-key",
        "/nonexistent.pem",
    ])
    .unwrap();
    assert!(config.verifier().is_err());
    let config = testbed::config(&[
        "--allow-client-ids=false",
        "--jwt-secret",
        "a",
        "--jwt-public-key",
        "/nonexistent.pem",
    ])
    .unwrap();
    assert!(config.verifier().is_err());
}

/// Sends a heartbeat ping (never numbered) and waits for its pong: the
/// connection is still served.
async fn still_served(ws: &mut Ws, id: u64) {
    send_text(ws, &format!(r#"{{"type":"ping","t":{id}}}"#)).await;
    match next_json(ws).await {
        ServerMessage::Pong { t } => assert_eq!(t, id as f64),
        other => panic!("expected pong {id}, got {other:?}"),
    }
}

fn refresh(token: &str) -> String {
    json!({ "type": "refresh", "token": token }).to_string()
}

#[tokio::test]
async fn without_a_refresh_the_connection_is_closed_with_4003_at_exp() {
    let server = token_server(&[]).await;
    let short = claims("alice", 3);
    let exp = short["exp"].as_u64().unwrap();
    let (mut ws, _) = connect_with(&server, "/ws", &hs256(&short)).await;
    let frame = expect_close(&mut ws).await.expect("a close frame");
    assert_eq!(u16::from(frame.code), close_code::TOKEN_EXPIRED);
    assert_eq!(frame.reason.as_str(), "token expired");
    assert!(unix_now() >= exp, "not before exp ({} < {exp})", unix_now());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_in_band_refresh_extends_the_connection_unnumbered() {
    let server = token_server(&[]).await;
    let short = claims("alice", 3);
    let exp = short["exp"].as_u64().unwrap();
    // Reliable mode: refresh and refreshed are never numbered.
    let (mut ws, _) = connect_with(&server, "/ws?reliable=1", &hs256(&short)).await;
    let longer = claims("alice", 60);
    send_text(&mut ws, &refresh(&hs256(&longer))).await;
    assert_eq!(
        next_json(&mut ws).await,
        ServerMessage::Refreshed {
            exp: longer["exp"].as_u64().unwrap()
        }
    );
    // Served past the first token's exp.
    let mut id = 0;
    while unix_now() <= exp + 1 {
        id += 1;
        still_served(&mut ws, id).await;
        // Pacing, not waiting for a condition: the loop ends on the clock.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    still_served(&mut ws, id + 1).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_refused_refresh_gets_bad_token_and_the_connection_ends_at_its_exp() {
    // Every refresh checked (no rate limit), so that each cause is seen.
    let server = token_server(&["--refresh-interval", "0"]).await;
    let short = claims("alice", 3);
    let exp = short["exp"].as_u64().unwrap();
    let (mut ws, _) = connect_with(&server, "/ws", &hs256(&short)).await;
    let other_key = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"someone else's secret"),
        &claims("alice", 60),
    );
    for (i, (token, says)) in [
        (hs256(&claims("mallory", 60)), "another user"),
        (other_key, "invalid token"),
        (hs256(&claims("alice", -10)), "token expired"),
        ("garbage".to_owned(), "invalid token"),
    ]
    .into_iter()
    .enumerate()
    {
        if i == 2 {
            // Three refused in a row would close the connection (4401):
            // the same token again, accepted, starts the count over
            // without moving exp.
            send_text(&mut ws, &refresh(&hs256(&short))).await;
            assert_eq!(next_json(&mut ws).await, ServerMessage::Refreshed { exp });
        }
        send_text(&mut ws, &refresh(&token)).await;
        match next_json(&mut ws).await {
            ServerMessage::Error { code, message, .. } => {
                assert_eq!(code, shared::ErrorCode::BadToken);
                assert!(message.contains(says), "{message:?} names {says:?}");
            }
            other => panic!("expected bad_token, got {other:?}"),
        }
    }
    let frame = expect_close(&mut ws).await.expect("a close frame");
    assert_eq!(u16::from(frame.code), close_code::TOKEN_EXPIRED);
    assert!(unix_now() >= exp);
    server.shutdown().await.unwrap();

    // Anonymous mode has nothing to refresh.
    let server = start(&["--allow-client-ids=false"]).await;
    let (mut ws, _) = server.connect_ws("/ws").await;
    send_text(&mut ws, &refresh("x")).await;
    assert!(matches!(
        next_json(&mut ws).await,
        ServerMessage::Error {
            code: shared::ErrorCode::BadToken,
            ..
        }
    ));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_token_subcommand_mints_what_the_server_accepts() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_server"))
            .arg("token")
            .args(args)
            .env_remove("JWT_SECRET")
            .env_remove("JWT_SECRET_FILE")
            .env_remove("JWT_PUBLIC_KEY")
            .output()
            .unwrap()
    };
    let out = run(&[
        "--sub",
        "dave",
        "--ttl",
        "1h",
        "--client-name",
        "cli",
        "--jwt-secret",
        SECRET,
        "--jwt-issuer",
        "me",
    ]);
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let server = token_server(&["--jwt-issuer", "me"]).await;
    let (_ws, welcome) = connect_with(&server, "/ws", &token).await;
    let ServerMessage::Welcome { exp: Some(exp), .. } = welcome else {
        panic!("a welcome with exp, got {welcome:?}")
    };
    let ttl = exp - unix_now();
    assert!((3590..=3601).contains(&ttl), "1h: {ttl}");
    let list = clients(&server).await;
    assert_eq!(list[0]["user"], "dave");
    assert_eq!(list[0]["client_name"], "cli");
    server.shutdown().await.unwrap();

    // Only a public key: it cannot sign, and says so.
    let public = format!(
        "{}/tests/fixtures/es256-public.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = run(&["--sub", "dave", "--jwt-public-key", &public]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("can only verify"), "{said}");
}

// ---- users ----

async fn push_user(server: &TestServer, user: &str, body: &str) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(server.http_url(&format!("/api/users/{user}/push")))
        .bearer_auth(ADMIN)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// The body of the next push on a plain connection.
async fn next_push(ws: &mut Ws) -> String {
    match next_json(ws).await {
        ServerMessage::Push { body, .. } => body,
        other => panic!("expected a push, got {other:?}"),
    }
}

/// How many connections of `user` the admin list shows.
async fn connections_of(server: &TestServer, user: &str) -> usize {
    clients(server)
        .await
        .iter()
        .filter(|row| row["user"] == user)
        .count()
}

#[tokio::test]
async fn a_user_holds_many_connections_and_a_push_to_the_user_reaches_each() {
    let server = token_server(&[]).await;
    let alice = hs256(&claims("alice", 3600));
    let (mut tab, first) = connect_with(&server, "/ws", &alice).await;
    let (mut phone, second) = connect_with(&server, "/ws", &alice).await;
    let (mut bob, _) = connect_with(&server, "/ws", &hs256(&claims("bob", 3600))).await;
    let id = |welcome: &ServerMessage| match welcome {
        ServerMessage::Welcome { client_id, .. } => client_id.clone(),
        other => panic!("{other:?}"),
    };
    assert_ne!(id(&first), id(&second), "each connection its own id");
    // The second did not displace the first.
    still_served(&mut tab, 1).await;
    still_served(&mut phone, 2).await;
    assert_eq!(connections_of(&server, "alice").await, 2);

    let (status, answer) = push_user(&server, "alice", "for alice").await;
    assert_eq!(status, 200);
    assert_eq!(answer, json!({ "delivered": 2, "stored": 0 }));
    assert_eq!(next_push(&mut tab).await, "for alice");
    assert_eq!(next_push(&mut phone).await, "for alice");
    // Not bob: his next message is the pong of his own ping.
    still_served(&mut bob, 3).await;
    let (status, _) = push_user(&server, "nobody", "x").await;
    assert_eq!(status, 404);

    // A user kick closes every connection of the user, and only those.
    let response = admin(
        &server,
        reqwest::Method::DELETE,
        "/api/users/alice?reason=bye",
    )
    .await;
    assert_eq!(response.status(), 200);
    for ws in [&mut tab, &mut phone] {
        let frame = expect_close(ws).await.expect("a close frame");
        assert_eq!(u16::from(frame.code), close_code::KICKED);
        assert_eq!(frame.reason.as_str(), "bye");
    }
    still_served(&mut bob, 4).await;
    wait_until("alice gone", || async {
        connections_of(&server, "alice").await == 0
    })
    .await;
    let response = admin(&server, reqwest::Method::DELETE, "/api/users/alice").await;
    assert_eq!(response.status(), 404);
    server.shutdown().await.unwrap();
}

/// A token-mode reliable connection of `token` with its session stored:
/// the socket, the session id and its resume token.
async fn reliable_of(server: &TestServer, token: &str) -> (Ws, String, String) {
    let (mut ws, welcome) = connect_with(server, "/ws?reliable=1", token).await;
    let ServerMessage::Welcome {
        session: Some(session),
        token: Some(resume),
        ..
    } = welcome
    else {
        panic!("a reliable welcome offers a session: {welcome:?}")
    };
    // An ack binds the connection and stores the session.
    send_text(&mut ws, r#"{"type":"ack","seq":0}"#).await;
    still_served(&mut ws, 0).await;
    (ws, session, resume)
}

fn resume(session: &str, token: &str) -> String {
    json!({ "type": "resume", "session": session, "token": token, "last_seq": 0 }).to_string()
}

#[tokio::test]
async fn a_session_belongs_to_its_user_another_cannot_resume_or_read_it() {
    let server = token_server(&[]).await;
    let alice = hs256(&claims("alice", 3600));
    let (mut ws, session, resume_token) = reliable_of(&server, &alice).await;
    ws.close(None).await.unwrap();
    wait_until("alice away", || async {
        connections_of(&server, "alice").await == 0
    })
    .await;
    let (status, answer) = push_user(&server, "alice", "secret for alice").await;
    assert_eq!(status, 200);
    assert_eq!(answer, json!({ "delivered": 0, "stored": 1 }));
    // Bob holds no session: nothing of alice's is stored for him.
    let (status, _) = push_user(&server, "bob", "x").await;
    assert_eq!(status, 404);

    // Bob, with alice's session id and resume token, learns nothing.
    let bob = hs256(&claims("bob", 3600));
    let (mut thief, _) = connect_with(&server, "/ws?reliable=1", &bob).await;
    send_text(&mut thief, &resume(&session, &resume_token)).await;
    assert_eq!(
        next_json(&mut thief).await,
        ServerMessage::ResumeFailed {
            reason: shared::ResumeFailure::BadToken
        }
    );
    still_served(&mut thief, 1).await;

    // Alice resumes and reads it.
    let (mut back, _) = connect_with(&server, "/ws?reliable=1", &alice).await;
    send_text(&mut back, &resume(&session, &resume_token)).await;
    assert!(matches!(
        next_json(&mut back).await,
        ServerMessage::Resumed { .. }
    ));
    match next_json(&mut back).await {
        ServerMessage::Msg { data, .. } => assert!(data.contains("secret for alice"), "{data}"),
        other => panic!("the stored push, got {other:?}"),
    }

    // A user kick ends her sessions: no resume afterwards.
    let response = admin(&server, reqwest::Method::DELETE, "/api/users/alice").await;
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["closed"], 1);
    assert_eq!(answer["sessions_ended"], 1);
    let frame = expect_close(&mut back).await.expect("a close frame");
    assert_eq!(u16::from(frame.code), close_code::KICKED);
    let (mut again, _) = connect_with(&server, "/ws?reliable=1", &alice).await;
    send_text(&mut again, &resume(&session, &resume_token)).await;
    assert_eq!(
        next_json(&mut again).await,
        ServerMessage::ResumeFailed {
            reason: shared::ResumeFailure::UnknownSession
        }
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn anonymous_mode_has_no_users() {
    let server = start(&["--allow-client-ids=false", "--admin-token", ADMIN]).await;
    let (_ws, _) = server.connect_ws("/ws").await;
    let (status, _) = push_user(&server, "anyone", "x").await;
    assert_eq!(status, 404);
    let response = admin(&server, reqwest::Method::DELETE, "/api/users/anyone").await;
    assert_eq!(response.status(), 404);
    assert!(clients(&server).await[0].get("user").is_none());
    server.shutdown().await.unwrap();
}

/// A log sink for [`tokens_are_never_logged`].
#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Capture {
    /// Captures what this thread logs up to `level` until the guard drops.
    /// The test's runtime runs on this thread, the server's tasks included,
    /// so a thread-local subscriber sees every line the server logs, but
    /// only if the line's callsite is enabled: tracing caches each
    /// callsite's interest once for the whole process, computed against the
    /// subscriber of the thread that reaches it first. Another test of this
    /// binary, with no subscriber, reaching the same line first would cache
    /// it as never (that test thread's default being no subscriber at all),
    /// and this capture would stay empty, as it once did in CI. A global
    /// default that wants everything (a bare registry: it prints nothing)
    /// keeps every callsite's cached interest on.
    fn start(level: tracing::Level) -> (Self, tracing::subscriber::DefaultGuard) {
        static ANCHOR: std::sync::Once = std::sync::Once::new();
        ANCHOR.call_once(|| {
            // Another global default, if one was set, does as well.
            let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
            tracing::callsite::rebuild_interest_cache();
        });
        let capture = Self::default();
        let sink = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(move || sink.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (capture, guard)
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn tokens_are_never_logged() {
    // (With the refresh rate limit off, so that the bad token is checked.)
    let (capture, _guard) = Capture::start(tracing::Level::TRACE);

    let server = token_server(&["--refresh-interval", "0"]).await;
    let good = hs256(&claims("erin", 3600));
    let fresh = hs256(&claims("erin", 7200));
    let bad = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"someone else's secret"),
        &claims("erin", 3600),
    );
    let header = hs256(&claims("frank", 3600));
    let (mut ws, _) = connect_with(&server, "/ws?reliable=1", &good).await;
    send_text(&mut ws, &refresh(&fresh)).await;
    assert!(matches!(
        next_json(&mut ws).await,
        ServerMessage::Refreshed { .. }
    ));
    send_text(&mut ws, &refresh(&bad)).await;
    assert!(matches!(
        next_json(&mut ws).await,
        ServerMessage::Error { .. }
    ));
    refused(&server, Some(&bad), "invalid token").await;
    let mut by_header = connect_with_header(&server, "/ws", &format!("Bearer {header}")).await;
    next_json(&mut by_header).await;
    ws.close(None).await.unwrap();
    expect_close(&mut ws).await;
    server.shutdown().await.unwrap();

    let logged = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("connect"), "the server logged: {logged}");
    assert!(logged.contains("erin"), "the user is logged: {logged}");
    for token in [&good, &fresh, &bad, &header] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !logged.contains(signature),
            "a token reached the log:\n{logged}"
        );
    }
}

#[tokio::test]
async fn after_4003_a_new_token_resumes_the_session_with_nothing_lost() {
    let server = token_server(&[]).await;
    let short = hs256(&claims("gina", 3));
    let (mut ws, session, resume_token) = reliable_of(&server, &short).await;
    send_text(
        &mut ws,
        r#"{"type":"msg","seq":1,"data":"{\"type\":\"echo\",\"id\":1,\"body\":\"before\"}"}"#,
    )
    .await;
    assert!(matches!(
        next_json(&mut ws).await,
        ServerMessage::Msg { seq: 1, .. }
    ));
    let frame = expect_close(&mut ws).await.expect("a close frame");
    assert_eq!(u16::from(frame.code), close_code::TOKEN_EXPIRED);
    wait_until("gina away", || async {
        connections_of(&server, "gina").await == 0
    })
    .await;
    let (_, answer) = push_user(&server, "gina", "while away").await;
    assert_eq!(answer, json!({ "delivered": 0, "stored": 1 }));

    let fresh = hs256(&claims("gina", 3600));
    let (mut back, _) = connect_with(&server, "/ws?reliable=1", &fresh).await;
    send_text(&mut back, &resume(&session, &resume_token)).await;
    assert_eq!(
        next_json(&mut back).await,
        ServerMessage::Resumed { last_seq: 1 }
    );
    // The unacknowledged echo, then the push stored while away.
    let mut replay = Vec::new();
    for _ in 0..2 {
        match next_json(&mut back).await {
            ServerMessage::Msg { seq, data } => replay.push((seq, data)),
            other => panic!("expected the replay, got {other:?}"),
        }
    }
    assert_eq!(replay[0].0, 1);
    assert!(replay[0].1.contains("before"), "{replay:?}");
    assert_eq!(replay[1].0, 2);
    assert!(replay[1].1.contains("while away"), "{replay:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_token_with_a_huge_exp_is_refused_and_never_panics_the_connection() {
    // 2^62 and u64::MAX: `Instant::now() + (exp - now)` overflowed (and
    // panicked) for an `exp` past about 2^63 seconds.
    let huge = |sub: &str| json!({ "sub": sub, "exp": 1u64 << 62 });
    let max = |sub: &str| json!({ "sub": sub, "exp": u64::MAX });
    // Beyond --jwt-max-lifetime (24 h by default): 4401 at connect, and
    // bad_token at a refresh, with the same cause.
    let server = token_server(&[]).await;
    refused(
        &server,
        Some(&hs256(&huge("alice"))),
        "token lifetime too long",
    )
    .await;
    refused(
        &server,
        Some(&hs256(&max("alice"))),
        "token lifetime too long",
    )
    .await;
    refused(
        &server,
        Some(&hs256(&claims("alice", 25 * 3600))),
        "token lifetime too long",
    )
    .await;
    let (mut ws, _) = connect_with(&server, "/ws?reliable=1", &hs256(&claims("alice", 60))).await;
    send_text(&mut ws, &refresh(&hs256(&huge("alice")))).await;
    match next_json(&mut ws).await {
        ServerMessage::Error { code, message, .. } => {
            assert_eq!(code, shared::ErrorCode::BadToken);
            assert!(message.contains("token lifetime too long"), "{message:?}");
        }
        other => panic!("expected bad_token, got {other:?}"),
    }
    still_served(&mut ws, 1).await;
    server.shutdown().await.unwrap();

    // With the bound off (`0`), such a token is served like any other: its
    // deadline is far away, not an overflow, and the connection leaves the
    // list when it closes.
    let server = token_server(&["--jwt-max-lifetime", "0"]).await;
    let (mut ws, welcome) = connect_with(&server, "/ws", &hs256(&max("bob"))).await;
    assert!(
        matches!(
            welcome,
            ServerMessage::Welcome {
                exp: Some(u64::MAX),
                ..
            }
        ),
        "{welcome:?}"
    );
    still_served(&mut ws, 1).await;
    let (mut other, _) = connect_with(&server, "/ws", &hs256(&claims("carol", 60))).await;
    send_text(&mut other, &refresh(&hs256(&max("carol")))).await;
    assert_eq!(
        next_json(&mut other).await,
        ServerMessage::Refreshed { exp: u64::MAX }
    );
    still_served(&mut other, 2).await;
    assert_eq!(connections_of(&server, "bob").await, 1);
    assert_eq!(connections_of(&server, "carol").await, 1);
    ws.close(None).await.unwrap();
    other.close(None).await.unwrap();
    wait_until("both gone from the list", || async {
        connections_of(&server, "bob").await + connections_of(&server, "carol").await == 0
    })
    .await;
    wait_until("no connection open", || async {
        metric(&server, "ws_connections_open").await == 0
    })
    .await;
    server.shutdown().await.unwrap();
}

/// Reads the `error` answer of a refresh and returns its code.
async fn refresh_error(ws: &mut Ws) -> shared::ErrorCode {
    match next_json(ws).await {
        ServerMessage::Error { code, .. } => code,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn refreshes_are_rate_limited_and_three_bad_ones_in_a_row_close_with_4401() {
    use shared::ErrorCode::{BadToken, RateLimited};
    let server = token_server(&[]).await;
    let token = hs256(&claims("alice", 60));
    let expect_4401 = |frame: Option<CloseFrame>| {
        let frame = frame.expect("a close frame");
        assert_eq!(
            (u16::from(frame.code), frame.reason.as_str()),
            (close_code::UNAUTHORIZED, "too many bad refreshes")
        );
    };
    // One refresh per --refresh-interval (5 s): the next ones, valid or
    // not, are rate_limited without being checked; the third in a row closes.
    let (mut ws, _) = connect_with(&server, "/ws?reliable=1", &token).await;
    send_text(&mut ws, &refresh(&token)).await;
    assert!(matches!(
        next_json(&mut ws).await,
        ServerMessage::Refreshed { .. }
    ));
    for _ in 0..3 {
        send_text(&mut ws, &refresh(&token)).await;
        assert_eq!(refresh_error(&mut ws).await, RateLimited);
    }
    expect_4401(expect_close(&mut ws).await);

    // The flood of the issue: 200 bogus refreshes at once get three answers
    // (one checked, two rate_limited), then 4401.
    let (mut ws, _) = connect_with(&server, "/ws", &token).await;
    for _ in 0..200 {
        ws.feed(Message::text(refresh("garbage"))).await.unwrap();
    }
    ws.flush().await.unwrap();
    assert_eq!(refresh_error(&mut ws).await, BadToken);
    assert_eq!(refresh_error(&mut ws).await, RateLimited);
    assert_eq!(refresh_error(&mut ws).await, RateLimited);
    expect_4401(expect_close(&mut ws).await);
    wait_until("both closed connections gone", || async {
        connections_of(&server, "alice").await == 0
    })
    .await;
    server.shutdown().await.unwrap();

    // Without the rate limit, three refused in a row still close; one
    // accepted between them starts the count over.
    let server = token_server(&["--refresh-interval", "0"]).await;
    let (mut ws, _) = connect_with(&server, "/ws", &token).await;
    for round in 0..3 {
        for _ in 0..2 {
            send_text(&mut ws, &refresh("garbage")).await;
            assert_eq!(refresh_error(&mut ws).await, BadToken, "round {round}");
        }
        send_text(&mut ws, &refresh(&token)).await;
        assert!(matches!(
            next_json(&mut ws).await,
            ServerMessage::Refreshed { .. }
        ));
    }
    for _ in 0..3 {
        send_text(&mut ws, &refresh("garbage")).await;
        assert_eq!(refresh_error(&mut ws).await, BadToken);
    }
    expect_4401(expect_close(&mut ws).await);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn refused_refreshes_are_logged_at_most_once_a_minute_per_connection() {
    let (capture, _guard) = Capture::start(tracing::Level::INFO);
    let server = token_server(&["--refresh-interval", "0"]).await;
    let token = hs256(&claims("alice", 60));
    let (mut ws, _) = connect_with(&server, "/ws", &token).await;
    // Ten refused, never three in a row (the connection stays open).
    for _ in 0..5 {
        for _ in 0..2 {
            send_text(&mut ws, &refresh("garbage")).await;
            assert_eq!(refresh_error(&mut ws).await, shared::ErrorCode::BadToken);
        }
        send_text(&mut ws, &refresh(&token)).await;
        assert!(matches!(
            next_json(&mut ws).await,
            ServerMessage::Refreshed { .. }
        ));
    }
    still_served(&mut ws, 1).await;
    server.shutdown().await.unwrap();
    let logged = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert_eq!(
        logged.matches("refused a token refresh").count(),
        1,
        "one line for ten refusals:\n{logged}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_keeps_the_read_side_busy_is_still_closed_with_4003_at_exp() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::MaybeTlsStream;
    let server = token_server(&[]).await;
    let short = claims("alice", 3);
    let exp = short["exp"].as_u64().unwrap();
    let (ws, _) = connect_with(&server, "/ws", &hs256(&short)).await;
    // Down to the socket: after the welcome the server sends nothing until
    // its close frame (pings and pushes are off), so raw frames are enough.
    let MaybeTlsStream::Plain(tcp) = ws.into_inner() else {
        panic!("a plain TCP connection")
    };
    let (mut read, mut write) = tcp.into_split();
    // Empty masked pongs, 4096 to a write, without any pause: the
    // connection's reads always find a frame ready.
    let flood = tokio::spawn(async move {
        let frames = [0x8a, 0x80, 1, 2, 3, 4].repeat(4096);
        let mut sent = 0u64;
        while write.write_all(&frames).await.is_ok() {
            sent += 4096;
        }
        sent
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    let wait = std::time::Duration::from_secs(exp.saturating_sub(unix_now()) + 10);
    let frame = tokio::time::timeout(wait, async {
        while got.len() < 4 {
            let n = read.read(&mut buf).await.unwrap();
            assert!(n > 0, "the connection ended without a close frame");
            got.extend_from_slice(&buf[..n]);
        }
        got
    })
    .await
    .expect("a close frame while the client floods");
    let arrived = unix_now();
    assert_eq!(frame[0], 0x88, "a close frame: {frame:?}");
    assert_eq!(
        u16::from_be_bytes([frame[2], frame[3]]),
        close_code::TOKEN_EXPIRED
    );
    assert!(
        arrived <= exp + 2,
        "4003 came at exp + {} s",
        arrived.saturating_sub(exp)
    );
    let sent = flood.await.unwrap();
    assert!(sent > 10_000, "the flood kept up: {sent} pongs");
    server.shutdown().await.unwrap();
}
