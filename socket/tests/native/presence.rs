//! Presence through the native wrapper against the real server (issue 24):
//! `Channel::presence` and `presence_stats`, join and leave on the handle,
//! and `follow_presence`'s member set, judged by the server's own admin
//! answer. The follower is cut off behind the fault proxy while others
//! leave and join: what it missed comes back with the answer it fetches
//! after resubscribing. Waits poll with deadlines.

use std::sync::{Arc, Mutex};

use buffered_socket::{Channel, ChannelEvent, Config, Presence, PresenceError, Socket};
use futures_util::StreamExt;
use shared::ErrorCode;
use testbed::{FaultProxy, Faults, TestServer};

use super::both::{LONG, now_ms, sleep_ms};
use super::fast_backoff;

const TOKEN: &str = "t0ken-for-the-presence-admin-tests-0123456789";

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
"#;

async fn server() -> (TestServer, FaultProxy) {
    let config = testbed::config_with_namespaces(NAMESPACES, &["--admin-token", TOKEN]).unwrap();
    let server = TestServer::start(config).await.unwrap();
    let proxy = FaultProxy::start(server.addr, Faults::none())
        .await
        .unwrap();
    (server, proxy)
}

fn socket(addr: std::net::SocketAddr, client_id: &str, reliable: bool) -> Socket {
    let config = Config::new(format!("ws://{addr}/ws?client_id={client_id}"))
        .with_reliable(reliable)
        .with_backoff(fast_backoff());
    Socket::new(config).unwrap()
}

/// The channel's members by client id, as the server's admin API answers.
async fn server_members(server: &TestServer, channel: &str) -> Vec<String> {
    let url = server.http_url(&format!("/api/channels/{channel}/presence"));
    let answer = reqwest::Client::new()
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let mut ids: Vec<String> = answer["clients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["client_id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

fn ids(presence: &Presence) -> Vec<String> {
    let mut ids: Vec<String> = presence
        .members
        .iter()
        .map(|m| m.client_id.clone())
        .collect();
    ids.sort();
    ids
}

/// Every set `follow_presence` yields, in order.
type Sets = Arc<Mutex<Vec<Presence>>>;

fn follow(channel: &Channel) -> Sets {
    let sets: Sets = Arc::default();
    let sink = sets.clone();
    let mut stream = channel.follow_presence();
    tokio::spawn(async move {
        while let Some(set) = stream.next().await {
            sink.lock()
                .unwrap()
                .push(set.expect("the query is allowed"));
        }
    });
    sets
}

fn latest(sets: &Sets) -> Vec<String> {
    sets.lock().unwrap().last().map(ids).unwrap_or_default()
}

/// Waits until the followed set and the server's answer are both `wanted`.
async fn agree(server: &TestServer, sets: &Sets, wanted: &[&str]) {
    let wanted: Vec<String> = wanted.iter().map(|s| (*s).to_owned()).collect();
    let deadline = now_ms() + LONG;
    loop {
        let theirs = server_members(server, "room:x").await;
        if latest(sets) == wanted && theirs == wanted {
            return;
        }
        assert!(
            now_ms() < deadline,
            "followed {:?}, the server {theirs:?}, wanted {wanted:?}",
            latest(sets)
        );
        sleep_ms(20).await;
    }
}

async fn follows_through_a_cut(reliable: bool) {
    let (server, proxy) = server().await;
    // The follower goes through the proxy; the others straight to the server.
    let follower = socket(proxy.addr, "f", reliable);
    let room = follower.subscribe("room:x").unwrap();
    let mut events = room.events();
    let sets = follow(&room);
    agree(&server, &sets, &["f"]).await;

    let b = socket(server.addr, "b", false);
    let b_room = b.subscribe("room:x").unwrap();
    agree(&server, &sets, &["b", "f"]).await;
    // The join came on the handle's events too.
    let deadline = now_ms() + LONG;
    let mut joined = false;
    while !joined {
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
            .await
            .expect("an event")
            .expect("the stream goes on");
        joined = matches!(next, ChannelEvent::Join(ref m) if m.client_id == "b");
        assert!(now_ms() < deadline);
    }

    // The queries answer the same.
    let presence = room.presence().await.unwrap();
    assert_eq!(ids(&presence), ["b", "f"]);
    assert!(!presence.truncated);
    let stats = room.presence_stats().await.unwrap();
    assert_eq!((stats.clients, stats.users), (2, 0), "anonymous: no users");

    // Cut off (held: no reconnect gets through), b leaves and c joins: the
    // follower hears neither.
    proxy.hold(true);
    proxy.cut_all();
    let deadline = now_ms() + LONG;
    while server_members(&server, "room:x").await != ["b"] {
        assert!(now_ms() < deadline, "the follower's subscription ended");
        sleep_ms(20).await;
    }
    drop(b_room);
    let c = socket(server.addr, "c", false);
    let c_room = c.subscribe("room:x").unwrap();
    let deadline = now_ms() + LONG;
    while server_members(&server, "room:x").await != ["c"] {
        assert!(now_ms() < deadline, "b left, c joined");
        sleep_ms(20).await;
    }
    assert_eq!(latest(&sets), ["b", "f"], "away: the set is as it was");
    // Back: resubscribed, the members fetched again.
    proxy.hold(false);
    agree(&server, &sets, &["c", "f"]).await;

    // c goes, and its leave patches the set.
    drop((c_room, c));
    agree(&server, &sets, &["f"]).await;
    drop((events, room, follower, b));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_followed_member_set_matches_the_server_through_a_cut() {
    follows_through_a_cut(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_reliable_mode_too() {
    follows_through_a_cut(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_without_the_capability_is_refused_typed_and_the_follow_stream_says_so() {
    let (server, _proxy) = server().await;
    let socket = socket(server.addr, "q", false);
    let quiet = socket.subscribe("quiet:x").unwrap();
    let refused = quiet.presence().await.unwrap_err();
    assert!(
        matches!(
            refused,
            PresenceError::Refused {
                code: ErrorCode::PermissionDenied,
                ..
            }
        ),
        "{refused:?}"
    );
    let mut follow = quiet.follow_presence();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), follow.next())
        .await
        .expect("an answer");
    assert!(
        matches!(first, Some(Err(PresenceError::Refused { .. }))),
        "{first:?}"
    );
    // The subscription itself goes on: the server counts its member.
    assert_eq!(server_members(&server, "quiet:x").await, ["q"]);
    drop((follow, quiet, socket));
    server.shutdown().await.unwrap();
}
