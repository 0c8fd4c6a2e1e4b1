//! Token mode against the real server in token mode (`testbed::token_config`),
//! with tokens minted in the test (`testbed::mint_token`, the testbed's
//! HS256 secret).
//!
//! On one thread, here and in `refresh.rs`: the socket's task cannot
//! connect before the test has subscribed to its events (on two it could,
//! and a test would miss the welcome or the refusal it waits for).

use std::sync::atomic::{AtomicU32, Ordering};

use buffered_socket::AuthError;
use shared::close_code::UNAUTHORIZED;
use testbed::{TestServer, mint_token, token_config};

use super::*;

const ADMIN: &str = "native-auth-admin-token";

/// A server in token mode, with an admin token to list its clients.
pub(super) async fn token_server(extra: &[&str]) -> TestServer {
    let mut args = vec!["--admin-token", ADMIN];
    args.extend_from_slice(extra);
    TestServer::start(token_config(&args).unwrap())
        .await
        .unwrap()
}

/// The server's `GET /api/clients`, as text.
async fn clients(server: &TestServer) -> String {
    reqwest::Client::new()
        .get(server.http_url("/api/clients"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A provider that mints a token of `sub` valid for `ttl` on each call and
/// counts its calls.
pub(super) fn counting_provider(
    sub: &'static str,
    ttl: Duration,
) -> (
    Arc<AtomicU32>,
    impl Fn() -> std::future::Ready<Result<String, String>> + Send + Sync + 'static,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let provider = move || {
        counter.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(mint_token(sub, ttl)))
    };
    (calls, provider)
}

pub(super) fn welcome_exp(rec: &Recorder) -> Option<u64> {
    rec.messages().into_iter().find_map(|m| match m {
        ServerMessage::Welcome { exp, .. } => exp,
        _ => None,
    })
}

/// How many welcomes arrived (a connection refused with 4401 gets none).
fn welcomes(rec: &Recorder) -> usize {
    rec.messages()
        .iter()
        .filter(|m| matches!(m, ServerMessage::Welcome { .. }))
        .count()
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "current_thread")]
async fn a_valid_token_connects_as_its_user_and_the_welcome_carries_exp() {
    let server = token_server(&[]).await;
    let (calls, provider) = counting_provider("alice", Duration::from_secs(600));
    let socket = Socket::new(Config::new(server.ws_url("/ws")).with_token(provider)).unwrap();
    let rec = Recorder::new(&socket);
    wait_for("open", LONG, || socket.state() == State::Open).await;
    wait_for("the welcome", LONG, || welcome_exp(&rec).is_some()).await;
    let exp = welcome_exp(&rec).unwrap();
    let now = unix_now();
    assert!(exp > now + 590 && exp <= now + 601, "exp {exp}, now {now}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The server took the Bearer header's user.
    assert!(clients(&server).await.contains(r#""user":"alice""#));
    assert_eq!(rec.count(|e| matches!(e, Event::Auth(_))), 0);
    drop(socket);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn without_a_provider_a_4401_stops_and_is_reported() {
    let server = token_server(&[]).await;
    let socket =
        Socket::new(Config::new(server.ws_url("/ws")).with_backoff(fast_backoff())).unwrap();
    let rec = Recorder::new(&socket);
    wait_for("the refusal", LONG, || {
        rec.count(|e| matches!(e, Event::Auth(_))) == 1
    })
    .await;
    let refusal = rec.events().iter().find_map(|e| match e {
        Event::Auth(error) => Some(error.clone()),
        _ => None,
    });
    assert_eq!(
        refusal,
        Some(AuthError::Unauthorized {
            reason: "missing token".into(),
            retrying: false
        })
    );
    assert_eq!(socket.state(), State::Closed);
    assert_eq!(
        rec.count(|e| matches!(e, Event::Close(c) if c.code == UNAUTHORIZED)),
        1
    );
    assert_eq!(
        rec.count(|e| matches!(e, Event::Message(_))),
        0,
        "no welcome"
    );
    // Nothing more: with a 20 ms backoff, a retry would have come by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rec.count(|e| matches!(e, Event::StateChanged(State::Connecting { .. }))),
        1
    );
    drop(socket);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn the_provider_is_called_before_every_connect_and_a_refused_token_is_replaced() {
    let server = token_server(&[]).await;
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    // The first call gives a token of another key (refused: 4401), the
    // second fails, then valid tokens.
    let provider = move || {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        std::future::ready(match n {
            1 => Ok("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.bm90IHNpZ25lZA".to_owned()),
            2 => Err(std::io::Error::other("the login service is down")),
            _ => Ok(mint_token("alice", Duration::from_secs(600))),
        })
    };
    let socket = Socket::new(
        Config::new(server.ws_url("/ws"))
            .with_token(provider)
            .with_backoff(fast_backoff()),
    )
    .unwrap();
    let rec = Recorder::new(&socket);
    wait_for("open", LONG, || socket.state() == State::Open).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let auth: Vec<AuthError> = rec
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::Auth(error) => Some(error.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        auth,
        [
            AuthError::Unauthorized {
                reason: "invalid token".into(),
                retrying: true
            },
            AuthError::Provider("the login service is down".into()),
        ]
    );
    // The provider's own error comes back as the cause, to downcast.
    let AuthError::Provider(cause) = &auth[1] else {
        unreachable!("checked above");
    };
    assert!(
        cause.downcast_ref::<std::io::Error>().is_some(),
        "{cause:?}"
    );
    wait_for("the welcome", LONG, || welcomes(&rec) == 1).await;
    // Each reconnect asks again: one asked by the application...
    socket.reconnect();
    wait_for("a second welcome", LONG, || welcomes(&rec) == 2).await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    // ...and one after the server closed the connection.
    let id = rec
        .messages()
        .into_iter()
        .rev()
        .find_map(|m| match m {
            ServerMessage::Welcome { client_id, .. } => Some(client_id),
            _ => None,
        })
        .unwrap();
    let kicked = reqwest::Client::new()
        .delete(server.http_url(&format!("/api/clients/{id}?code=1012")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(kicked.status().is_success(), "{}", kicked.status());
    wait_for("a third welcome", LONG, || welcomes(&rec) == 3).await;
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    drop(socket);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_provider_that_panics_counts_as_a_failure_and_the_socket_goes_on() {
    let server = token_server(&[]).await;
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let provider = move || {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        let token = mint_token("alice", Duration::from_secs(600));
        async move {
            assert!(n > 1, "the first call panics");
            Ok::<_, String>(token)
        }
    };
    let socket = Socket::new(
        Config::new(server.ws_url("/ws"))
            .with_token(provider)
            .with_backoff(fast_backoff()),
    )
    .unwrap();
    let rec = Recorder::new(&socket);
    wait_for("the welcome", LONG, || welcomes(&rec) == 1).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        rec.count(|e| *e == Event::Auth(AuthError::Provider("the token provider panicked".into()))),
        1
    );
    drop(socket);
    server.shutdown().await.unwrap();
}
