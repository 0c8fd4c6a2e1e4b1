//! Channels through the native wrapper against the real server (issue 23):
//! a server with a `chat` namespace where clients may publish, behind the
//! testbed's fault proxy, cut while publications flow. Every publication is
//! published once (its id deduplicated across retries) and reaches the
//! subscriber once, in offset order; a subscriber away for a while recovers
//! what it missed; a server restart (memory mode: the streams are lost) is a
//! reset. Waits poll with deadlines.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use buffered_socket::{
    ChannelEvent, Config, PublishError, RawJson, RecoveryFailure, Socket, State, SubscribeError,
    TypedChannel,
};
use futures_util::StreamExt;
use testbed::{FaultProxy, Faults, TestServer};

use super::both::{LONG, wait_for};
use super::fast_backoff;

/// [`LONG`] as a `Duration`.
const LONG_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

const NAMESPACES: &str = r#"
[[namespace]]
name = "chat"
history_size = 10000
history_ttl = "10m"
anonymous = ["subscribe", "publish"]
authenticated = ["subscribe", "publish"]
"#;

/// A server with the `chat` namespace (no publish rate limit: the tests
/// publish in bursts), and the fault proxy in front of it.
async fn server() -> (TestServer, FaultProxy) {
    let config = testbed::config_with_namespaces(NAMESPACES, &["--publish-rate", "0"]).unwrap();
    let server = TestServer::start(config).await.unwrap();
    let proxy = FaultProxy::start(server.addr, Faults::none())
        .await
        .unwrap();
    (server, proxy)
}

fn socket(addr: std::net::SocketAddr, reliable: bool) -> Socket {
    let config = Config::new(format!("ws://{addr}/ws"))
        .with_reliable(reliable)
        .with_queue_capacity(2000)
        .with_backoff(fast_backoff());
    Socket::new(config).unwrap()
}

/// Every event of a channel, in order.
type Seen = Arc<Mutex<Vec<ChannelEvent>>>;

/// Records every event of `channel` from its subscription's start: its
/// first `events()` stream, drained by a task (a callback would see the
/// events from its registration on, and natively the server's answer may
/// come first).
fn record(channel: &buffered_socket::Channel) -> Seen {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let mut events = channel.events();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            sink.lock().unwrap().push(event);
        }
    });
    seen
}

fn offsets(seen: &Seen) -> Vec<u64> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            ChannelEvent::Publication { offset, .. } => Some(*offset),
            _ => None,
        })
        .collect()
}

fn count(seen: &Seen, wanted: impl Fn(&ChannelEvent) -> bool) -> usize {
    seen.lock().unwrap().iter().filter(|e| wanted(e)).count()
}

fn value(n: usize) -> RawJson {
    RawJson::parse(&format!(r#"{{"n":{n}}}"#)).unwrap()
}

/// Publishes `total` values through the proxy, cutting every connection
/// every `cut_every`; the subscriber, through the same proxy, must see each
/// offset once and in order, and each value once.
async fn publish_through_cuts(reliable: bool) {
    let (server, proxy) = server().await;
    let subscriber = socket(proxy.addr, reliable);
    let channel = subscriber.subscribe("chat:room").unwrap();
    let seen = record(&channel);
    wait_for("subscribed", LONG, || {
        count(&seen, |e| matches!(e, ChannelEvent::Subscribed { .. })) == 1
    })
    .await;

    let publisher = socket(proxy.addr, reliable);
    let total = 300;
    let mut pending = Vec::new();
    for n in 0..total {
        pending.push(publisher.publish("chat:room", value(n)).unwrap());
        if n % 60 == 30 {
            proxy.cut_all();
            // Let the cut land while publications are in flight.
            super::both::sleep_ms(20).await;
        }
    }
    let answers = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        futures_util::future::join_all(pending),
    )
    .await
    .expect("every publish answered");
    let published: BTreeSet<u64> = answers.into_iter().map(Result::unwrap).collect();
    // Exactly once: `total` distinct offsets, 1..=total, none published twice.
    assert_eq!(published, (1..=total as u64).collect());
    assert!(proxy.cuts() >= 5, "the proxy cut {} times", proxy.cuts());

    wait_for("every publication", LONG, || {
        offsets(&seen).last() == Some(&(total as u64))
    })
    .await;
    assert_eq!(offsets(&seen), (1..=total as u64).collect::<Vec<_>>());
    assert_eq!(count(&seen, |e| matches!(e, ChannelEvent::Gap { .. })), 0);
    let values: BTreeSet<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            ChannelEvent::Publication { data, .. } => Some(data.get().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(values.len(), total, "each value once");
    // Recovered after every cut of the subscriber's connection.
    assert!(
        count(&seen, |e| matches!(
            e,
            ChannelEvent::Subscribed { recovered: true }
        )) >= 1,
        "{:?}",
        seen.lock()
            .unwrap()
            .iter()
            .filter(|e| !matches!(e, ChannelEvent::Publication { .. }))
            .collect::<Vec<_>>()
    );
    drop((channel, subscriber, publisher));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_through_cuts_arrive_once_in_order_and_publish_once() {
    publish_through_cuts(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_reliable_mode_too() {
    publish_through_cuts(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_away_recovers_what_it_missed_and_a_restart_is_a_reset() {
    let (server, proxy) = server().await;
    let subscriber = socket(proxy.addr, false);
    let channel =
        TypedChannel::<serde_json::Value>::new(subscriber.subscribe("chat:news").unwrap());
    let seen: Arc<Mutex<Vec<ChannelEvent<serde_json::Value>>>> = Arc::default();
    let sink = seen.clone();
    let mut events = channel.events();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            sink.lock().unwrap().push(event);
        }
    });
    let publisher = socket(server.addr, false);
    let publications = |seen: &Arc<Mutex<Vec<ChannelEvent<serde_json::Value>>>>| {
        seen.lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                ChannelEvent::Publication { offset, data, .. } => {
                    Some((*offset, data["n"].as_u64()))
                }
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    wait_for("subscribed", LONG, || !seen.lock().unwrap().is_empty()).await;
    publisher
        .publish("chat:news", value(1))
        .unwrap()
        .await
        .unwrap();
    wait_for("the first", LONG, || publications(&seen).len() == 1).await;

    // Away: its connections are refused while five are published.
    proxy.hold(true);
    proxy.cut_all();
    wait_for("down", LONG, || subscriber.state() != State::Open).await;
    for n in 2..=6 {
        assert_eq!(
            publisher.publish("chat:news", value(n)).unwrap().await,
            Ok(n as u64)
        );
    }
    proxy.hold(false);
    wait_for("recovered", LONG, || publications(&seen).len() == 6).await;
    assert_eq!(
        publications(&seen),
        (1..=6).map(|n| (n, Some(n))).collect::<Vec<_>>()
    );
    assert!(
        seen.lock()
            .unwrap()
            .contains(&ChannelEvent::Subscribed { recovered: true })
    );
    let position = channel.raw().position().unwrap();
    assert_eq!(position.offset, 6);

    // A memory-mode restart loses the streams: a new epoch, a reset.
    let addr = server.addr;
    drop(publisher);
    server.shutdown().await.unwrap();
    let config = testbed::config_with_namespaces(NAMESPACES, &["--publish-rate", "0"]).unwrap();
    let listener = bind_again(addr).await;
    let server = TestServer::serve(listener, config).unwrap();
    wait_for("the reset", LONG, || {
        seen.lock().unwrap().contains(&ChannelEvent::Reset {
            reason: RecoveryFailure::EpochChanged,
        })
    })
    .await;
    let publisher = socket(server.addr, false);
    publisher
        .publish("chat:news", value(7))
        .unwrap()
        .await
        .unwrap();
    wait_for("after the reset", LONG, || publications(&seen).len() == 7).await;
    assert_eq!(publications(&seen)[6], (1, Some(7)), "offsets start over");
    assert_ne!(channel.raw().position().unwrap().epoch, position.epoch);
    drop((channel, subscriber, publisher));
    server.shutdown().await.unwrap();
}

/// The port of a server just stopped, bound again (it may take a moment).
async fn bind_again(addr: std::net::SocketAddr) -> tokio::net::TcpListener {
    let deadline = super::both::now_ms() + LONG;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(err) => {
                assert!(super::both::now_ms() < deadline, "rebinding {addr}: {err}");
                super::both::sleep_ms(20).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_typed_and_dropping_the_handle_unsubscribes() {
    let (server, _proxy) = server().await;
    let socket = socket(server.addr, false);
    let all = super::both::Recorder::new(&socket);
    // Bare names may be subscribed to but not published to by default.
    let lobby = socket.subscribe("lobby").unwrap();
    assert_eq!(
        socket.subscribe("lobby").unwrap_err(),
        SubscribeError::AlreadySubscribed("lobby".into())
    );
    assert!(matches!(
        socket.subscribe("no spaces").unwrap_err(),
        SubscribeError::BadChannel(_)
    ));
    let refused = socket.publish("lobby", value(1)).unwrap().await;
    assert!(
        matches!(
            refused,
            Err(PublishError::Refused {
                code: shared::ErrorCode::PermissionDenied,
                ..
            })
        ),
        "{refused:?}"
    );
    // A namespace the server does not know: an error on the handle.
    let unknown = socket.subscribe("nowhere:x").unwrap();
    // The first stream has every event from the subscription's start,
    // however soon the server answered.
    let refused = tokio::time::timeout(LONG_WAIT, unknown.events().next()).await;
    assert!(
        matches!(
            refused,
            Ok(Some(ChannelEvent::Error(
                buffered_socket::ChannelError::Refused {
                    code: shared::ErrorCode::UnknownNamespace,
                    ..
                }
            )))
        ),
        "{refused:?} {:?}",
        all.events()
    );
    // Dropped, then subscribed again: a new subscription that works.
    drop(lobby);
    let lobby = socket.subscribe("lobby").unwrap();
    let again = tokio::time::timeout(LONG_WAIT, lobby.events().next()).await;
    assert_eq!(
        again.unwrap(),
        Some(ChannelEvent::Subscribed { recovered: false })
    );
    let chat = socket.subscribe("chat:a").unwrap();
    let mut stream = chat.events();
    let first = tokio::time::timeout(LONG_WAIT, stream.next()).await;
    assert_eq!(
        first.unwrap(),
        Some(ChannelEvent::Subscribed { recovered: false })
    );
    socket.publish("chat:a", value(1)).unwrap().await.unwrap();
    let next = tokio::time::timeout(LONG_WAIT, stream.next()).await;
    assert!(
        matches!(
            next.unwrap(),
            Some(ChannelEvent::Publication { offset: 1, .. })
        ),
        "only this channel's events"
    );
    drop((lobby, chat, unknown, socket));
    server.shutdown().await.unwrap();
}

/// The server's own count of a channel's subscribers (admin API), 0 when
/// it lists none.
async fn subscribers(server: &TestServer, token: &str, channel: &str) -> u64 {
    let listed = reqwest::Client::new()
        .get(server.http_url("/api/channels"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    listed["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|row| row["channel"] == channel)
        .and_then(|row| row["subscribers"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_counts_one_subscription_until_the_handle_drops_and_an_admin_end_reaches_it() {
    let token = "t0ken-for-the-channel-admin-tests-0123456789";
    let config = testbed::config_with_namespaces(
        NAMESPACES,
        &["--publish-rate", "0", "--admin-token", token],
    )
    .unwrap();
    let server = TestServer::start(config).await.unwrap();
    let socket = Socket::new(
        Config::new(server.ws_url("/ws?client_id=chan-admin")).with_backoff(fast_backoff()),
    )
    .unwrap();
    let room = socket.subscribe("chat:count").unwrap();
    let mut events = room.events();
    let first = tokio::time::timeout(LONG_WAIT, events.next())
        .await
        .unwrap();
    assert_eq!(first, Some(ChannelEvent::Subscribed { recovered: false }));
    assert_eq!(subscribers(&server, token, "chat:count").await, 1);
    drop((events, room));
    let deadline = super::both::now_ms() + LONG;
    while subscribers(&server, token, "chat:count").await != 0 {
        assert!(super::both::now_ms() < deadline, "still subscribed");
        super::both::sleep_ms(20).await;
    }

    // Ended by the admin API: the handle hears why, and it is not resubscribed.
    let room = socket.subscribe("chat:count").unwrap();
    let mut events = room.events();
    let first = tokio::time::timeout(LONG_WAIT, events.next())
        .await
        .unwrap();
    assert_eq!(first, Some(ChannelEvent::Subscribed { recovered: false }));
    let ended = reqwest::Client::new()
        .delete(server.http_url("/api/channels/chat:count/subscribers/chan-admin"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status().as_u16(), 200);
    let next = tokio::time::timeout(LONG_WAIT, events.next())
        .await
        .unwrap();
    assert_eq!(
        next,
        Some(ChannelEvent::Unsubscribed {
            reason: buffered_socket::UnsubscribeReason::Admin
        })
    );
    assert_eq!(subscribers(&server, token, "chat:count").await, 0);
    drop((events, room, socket));
    server.shutdown().await.unwrap();
}
