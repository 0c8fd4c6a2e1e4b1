//! Token expiry against the real server in token mode: the in-band refresh
//! keeps a connection past its first token's `exp`; without it the server
//! closes with 4003 and the wrapper reconnects with a new token and resumes.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use buffered_socket::AuthError;
use shared::close_code::TOKEN_EXPIRED;
use testbed::mint_token;

use super::auth::{counting_provider, token_server, unix_now, welcome_exp};
use super::*;

#[tokio::test(flavor = "current_thread")]
async fn an_in_band_refresh_extends_the_connection_without_a_reconnect() {
    let server = token_server(&[]).await;
    // 4 s tokens (a margin for a loaded machine, where a connect slower than
    // the ttl would be refused): refreshed at half of what is left, so every
    // second or two.
    let (calls, provider) = counting_provider("alice", Duration::from_secs(4));
    let socket = Socket::new(Config::new(server.ws_url("/ws")).with_token(provider)).unwrap();
    let rec = Recorder::new(&socket);
    wait_for("the welcome", LONG, || welcome_exp(&rec).is_some()).await;
    let first_exp = welcome_exp(&rec).unwrap();
    wait_for("two refreshes", LONG, || {
        rec.count(|e| matches!(e, Event::TokenRefreshed { .. })) >= 2
    })
    .await;
    // Past the first token's exp (and any leeway of 1 s), on the same connection.
    wait_for("the first token's exp", LONG, || unix_now() > first_exp + 1).await;
    assert_eq!(socket.send(echo(1)), Ok(SendOutcome::Sent));
    wait_for("the echo", LONG, || rec.echo_ids() == [1]).await;
    assert_eq!(socket.state(), State::Open);
    assert_eq!(socket.stats().reconnects, 0);
    assert_eq!(rec.count(|e| matches!(e, Event::Close(_))), 0);
    assert_eq!(rec.count(|e| matches!(e, Event::Auth(_))), 0);
    let refreshed: Vec<u64> = rec
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::TokenRefreshed { exp } => Some(*exp),
            _ => None,
        })
        .collect();
    assert!(
        refreshed.iter().all(|exp| *exp >= first_exp),
        "{refreshed:?}"
    );
    assert!(refreshed.last().is_some_and(|exp| *exp > first_exp));
    // One call per connect plus one per refresh: the refreshes answered,
    // and at most one whose token is being fetched or written right now
    // (a 4 s token is refreshed every second or two, so one may have begun
    // since the events above were read).
    let calls = calls.load(Ordering::SeqCst) as usize;
    assert!(
        calls == 1 + refreshed.len() || calls == 2 + refreshed.len(),
        "{calls} provider calls for {} refreshes",
        refreshed.len()
    );
    drop(socket);
    server.shutdown().await.unwrap();
}

/// The refresh is refused (the provider hands out another user's token), so
/// the connection lasts until its `exp`: the server closes it with 4003, the
/// wrapper reconnects with a new token and resumes its reliable session,
/// and every echo sent meanwhile arrives once, in order.
#[tokio::test(flavor = "current_thread")]
async fn without_a_refresh_4003_at_exp_reconnects_with_a_new_token_and_resumes_with_nothing_lost() {
    const N: u64 = 40;
    let server = token_server(&["--jwt-leeway", "0s"]).await;
    let wrong_user = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU32::new(0));
    let provider = {
        let (wrong_user, calls) = (wrong_user.clone(), calls.clone());
        move || {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            let token = if wrong_user.load(Ordering::SeqCst) {
                mint_token("mallory", Duration::from_secs(600))
            } else if n == 1 {
                // Short, but not so short that a slow connect would see it expire.
                mint_token("alice", Duration::from_secs(3))
            } else {
                mint_token("alice", Duration::from_secs(600))
            };
            std::future::ready(Ok::<_, String>(token))
        }
    };
    let socket = Socket::new(
        Config::new(server.ws_url("/ws"))
            .with_reliable(true)
            .with_token(provider)
            .with_backoff(fast_backoff()),
    )
    .unwrap();
    let rec = Recorder::new(&socket);
    // Right after the expiry's close, the provider gives alice's tokens again.
    let _fix = {
        let wrong_user = wrong_user.clone();
        socket.on_event(move |event| {
            if matches!(event, Event::Close(c) if c.code == TOKEN_EXPIRED) {
                wrong_user.store(false, Ordering::SeqCst);
            }
        })
    };
    wait_for("the welcome", LONG, || welcome_exp(&rec).is_some()).await;
    wrong_user.store(true, Ordering::SeqCst);
    // Echoes all along: before the expiry, while reconnecting, after.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut next = 1;
    while next <= N || socket.stats().reconnects == 0 {
        assert!(Instant::now() < deadline, "no reconnect after the expiry");
        if next <= N {
            assert!(socket.send(echo(next)).is_ok());
            next += 1;
        }
        tokio::time::sleep(Duration::from_millis(75)).await;
    }
    wait_for("every echo", LONG, || rec.echo_ids().len() as u64 >= N).await;
    assert_eq!(rec.echo_ids(), (1..=N).collect::<Vec<_>>());
    assert!(
        rec.count(|e| matches!(e, Event::Auth(AuthError::RefreshRefused(_)))) >= 1,
        "the refresh was refused"
    );
    assert_eq!(
        rec.count(|e| matches!(e, Event::Close(c) if c.code == TOKEN_EXPIRED)),
        1
    );
    assert_eq!(rec.count(|e| matches!(e, Event::Resumed { .. })), 1);
    assert_eq!(
        rec.count(|e| matches!(e, Event::ResumeFailed { .. } | Event::Gap { .. })),
        0
    );
    assert_eq!(socket.stats().reconnects, 1);
    wait_for("the last acks", LONG, || socket.stats().unacked == 0).await;
    drop(socket);
    server.shutdown().await.unwrap();
}
