//! Native tests: the native transport (feature `native`) against the real
//! server, started in-process on a free port by the testbed, with its
//! control API and fault proxy. The tests common to both transports are in
//! `common/both.rs` and run here on a testbed of their own each; what only
//! the native transport has (a runtime to find, a connect timeout against a
//! raw TCP listener, rustls, the `Authorization` header of token mode) is
//! here. Waits poll with a deadline. Heartbeat death through the proxy's
//! silence is in `native/heartbeat.rs`, `wss://` end to end through the
//! testbed's TLS front in `native/wss.rs`.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use both::{Harness, LONG, Recorder, echo, random_u64, wait_for};
use buffered_socket::{
    Backoff, Config, Error, Event, Message, SendError, SendOutcome, Socket, State, TransportError,
};
use shared::ServerMessage;
use testbed::Testbed;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;

#[macro_use]
#[path = "common/both.rs"]
mod both;

/// Token mode: a token before every connect, 4401 (`native/auth.rs`), and
/// expiry: in-band refresh, 4003 and resume (`native/refresh.rs`).
#[path = "native/auth.rs"]
mod auth;
#[path = "native/refresh.rs"]
mod refresh;

/// Channels against a server with a publishing namespace, through cuts
/// (`native/channels.rs`).
#[path = "native/channels.rs"]
mod channels;

/// Presence: queries, join and leave, and a followed member set through a
/// cut (`native/presence.rs`).
#[path = "native/presence.rs"]
mod presence;

/// Heartbeat death through the fault proxy's silence (`native/heartbeat.rs`).
#[path = "native/heartbeat.rs"]
mod heartbeat;

/// `wss://` end to end through the testbed's TLS front, with an extra root
/// (`native/wss.rs`).
#[cfg(feature = "native-rustls")]
#[path = "native/wss.rs"]
mod wss;

fn fast_backoff() -> Backoff {
    Backoff {
        initial_ms: 20,
        max_ms: 100,
        ..Backoff::default()
    }
}

/// Runs `test` against a fresh testbed, then shuts the testbed down.
async fn with_testbed<F: Future<Output = ()>>(test: impl FnOnce(Arc<Testbed>) -> F) {
    let testbed = Arc::new(Testbed::start(None).await.unwrap());
    test(testbed.clone()).await;
    if let Ok(testbed) = Arc::try_unwrap(testbed) {
        testbed.shutdown().await.unwrap();
    }
}

/// The testbed of one native test.
struct Native(Arc<Testbed>);

impl Harness for Native {
    const EVENTS_DURING_THE_CALL: bool = false;

    fn ws_base(&self) -> String {
        self.0.ws_base.clone()
    }

    fn proxy_base(&self) -> String {
        self.0.proxy_base.clone()
    }

    fn fast_backoff(&self) -> Backoff {
        fast_backoff()
    }

    fn fault_seed(&self) -> u64 {
        let seed = std::env::var("FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(random_u64);
        eprintln!("fault seed {seed} (set FAULT_SEED to replay)");
        seed
    }

    async fn control(&self, path: &str) -> (u16, String) {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.0.control_base))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn send_from_another_task(
        &self,
        socket: &Socket,
        messages: Vec<Message>,
    ) -> Vec<Result<SendOutcome, SendError>> {
        let socket = socket.clone();
        tokio::spawn(async move { messages.into_iter().map(|m| socket.send(m)).collect() })
            .await
            .unwrap()
    }
}

/// One native test per common test: on one thread, or two.
macro_rules! native_tests {
    ($($name:ident: $threads:ident),* $(,)?) => {
        $(native_tests!(@one $name $threads);)*
    };
    (@one $name:ident one_thread) => {
        #[tokio::test(flavor = "current_thread")]
        async fn $name() {
            with_testbed(|tb| async move { both::$name(&Native(tb)).await }).await;
        }
    };
    (@one $name:ident two_threads) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            with_testbed(|tb| async move { both::$name(&Native(tb)).await }).await;
        }
    };
}

common_tests!(native_tests);

/// A server that accepts TCP and never answers the upgrade: each attempt is
/// abandoned at the connect timeout and retried with backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_that_never_opens_is_abandoned_at_the_connect_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let hold = held.clone();
    let accepting = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            hold.lock().unwrap().push(stream);
        }
    });
    let socket = Socket::new(
        Config::new(format!("ws://{addr}/ws"))
            .with_connect_timeout_ms(50)
            .with_backoff(fast_backoff()),
    )
    .unwrap();
    let started = Instant::now();
    wait_for("three attempts", LONG, || held.lock().unwrap().len() >= 3).await;
    // 50 ms each plus at most 100 ms of backoff between them.
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(
        socket.state(),
        State::Connecting { .. } | State::Reconnecting { .. }
    ));
    assert!(socket.stats().attempt >= 2, "{:?}", socket.stats());
    accepting.abort();
}

/// Invalid URLs are refused on both transports (`common/both.rs`); natively
/// a socket also needs a tokio runtime.
#[test]
fn a_missing_runtime_is_refused() {
    assert_eq!(
        Socket::new(Config::new("ws://127.0.0.1:1/ws")).unwrap_err(),
        Error::NoRuntime
    );
}

/// With `native-rustls`, a `wss` URL goes through rustls: against the plain
/// test server the TLS handshake fails (and is reported, then retried);
/// without the feature the URL cannot even be opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_goes_through_rustls_when_the_feature_is_on() {
    with_testbed(|tb| async move {
        let url = format!("{}/ws", tb.ws_base.replace("ws://", "wss://"));
        let socket = Socket::new(Config::new(url).with_backoff(fast_backoff())).unwrap();
        let rec = Recorder::new(&socket);
        wait_for("an error", LONG, || {
            rec.count(|e| matches!(e, Event::Error(_))) >= 1
        })
        .await;
        let first = rec
            .events()
            .iter()
            .find_map(|e| match e {
                Event::Error(err) => Some(err.clone()),
                _ => None,
            })
            .unwrap();
        // The cause is tungstenite's own error, not its text.
        if cfg!(feature = "native-rustls") {
            let TransportError::Socket(cause) = &first else {
                panic!("expected a TLS failure, got {first:?}");
            };
            eprintln!("the TLS failure: {cause}");
            assert!(
                cause.downcast_ref::<tungstenite::Error>().is_some(),
                "{cause:?}"
            );
            let reason = cause.to_string().to_lowercase();
            assert!(
                reason.contains("tls") || reason.contains("corrupt"),
                "{reason}"
            );
        } else {
            let TransportError::Connect(cause) = &first else {
                panic!("expected a URL the transport cannot open, got {first:?}");
            };
            assert!(
                matches!(
                    cause.downcast_ref::<tungstenite::Error>(),
                    Some(tungstenite::Error::Url(
                        tungstenite::error::UrlError::TlsFeatureNotEnabled
                    ))
                ),
                "{cause:?}"
            );
            assert!(
                first
                    .to_string()
                    .starts_with("could not create the socket: ")
            );
        }
        assert_ne!(socket.state(), State::Open);
        assert_ne!(socket.state(), State::Closed);
    })
    .await;
}
