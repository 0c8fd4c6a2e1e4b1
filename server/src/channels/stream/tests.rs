//! The stream's rules: `on_both!` runs each behavioural test on the memory
//! streams and on Redis (a `redis-server` of its own on a free port; a
//! missing one fails the test). What rests on moving the clock (ages, the
//! dedup window, forgetting) is tested on the memory streams only: Redis
//! ages keys by its own clock.

use std::time::Duration;

use super::memory::{FORGET_AFTER_MS, MemoryStreams};
use super::redis::RedisStreams;
use super::*;
use crate::channels::namespace::Namespace;

/// Which streams a test runs against.
enum Kind {
    Memory,
    /// Holds the server for as long as the test runs.
    Redis(testbed::RedisServer),
}

impl Kind {
    fn redis() -> Self {
        Self::Redis(
            testbed::RedisServer::start().expect(
                "the Redis streams' tests need redis-server (`cargo xtask test` installs it)",
            ),
        )
    }

    /// Fresh streams (a node's byte budget of 1 MiB, a window of 2 min).
    fn streams(&self) -> Streams {
        match self {
            Self::Memory => Streams::Memory(MemoryStreams::new(1 << 20, 120_000)),
            Self::Redis(redis) => Streams::Redis(RedisStreams::new(
                crate::reliable::tests::redis_node(&redis.url()),
                Duration::from_secs(120),
            )),
        }
    }
}

/// Runs each named `async fn(Kind)` as two tests, one per kind of streams.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod on_memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Kind::Memory).await;
                }
            )*
        }
        mod on_redis {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Kind::redis()).await;
                }
            )*
        }
    };
}

on_both!(
    offsets_count_from_one_without_holes_and_recovery_is_exact,
    a_history_trimmed_by_size_reports_the_exact_gap_then_what_it_has,
    another_epoch_is_reported_as_such,
    an_id_is_published_once_per_channel,
    the_publisher_is_kept_with_the_publication,
);

fn namespace(size: usize, ttl_s: u64) -> Namespace {
    Namespace {
        history_size: size,
        history_ttl: Duration::from_secs(ttl_s),
        ..Namespace::default()
    }
}

fn request(channel: &str, id: Option<&str>) -> PublishRequest {
    PublishRequest {
        channel: channel.into(),
        data: "{\"n\":1}".into(),
        id: id.map(str::to_owned),
        info: None,
    }
}

async fn send(streams: &Streams, ns: &Namespace, channel: &str, id: Option<&str>) -> Published {
    streams
        .publish(request(channel, id), ns)
        .await
        .expect("published")
}

fn offsets(publications: &[Arc<Publication>]) -> Vec<u64> {
    publications.iter().map(|p| p.offset).collect()
}

fn at(epoch: &str, offset: u64) -> Position {
    Position {
        epoch: epoch.to_owned(),
        offset,
    }
}

async fn offsets_count_from_one_without_holes_and_recovery_is_exact(kind: Kind) {
    let streams = kind.streams();
    let ns = namespace(100, 300);
    let (start, recovery) = streams.recover("chat:a", None, &ns).await.expect("up");
    assert_eq!((start.offset, recovery), (0, Recovery::Fresh));
    for n in 1..=5 {
        let published = send(&streams, &ns, "chat:a", None).await;
        assert_eq!(published.offset, n);
        assert_eq!(published.epoch, start.epoch);
        assert!(published.publication.is_some());
    }
    let since = at(&start.epoch, 2);
    let (position, recovery) = streams
        .recover("chat:a", Some(&since), &ns)
        .await
        .expect("up");
    assert_eq!(position, at(&start.epoch, 5));
    let Recovery::Recovered(missed) = recovery else {
        panic!("{recovery:?}")
    };
    assert_eq!(offsets(&missed), [3, 4, 5]);
    assert_eq!(missed[0].data, "{\"n\":1}");
    // Up to date: nothing to replay.
    let since = at(&start.epoch, 5);
    let (_, recovery) = streams
        .recover("chat:a", Some(&since), &ns)
        .await
        .expect("up");
    assert_eq!(recovery, Recovery::Recovered(Vec::new()));
    let history = streams.history("chat:a", 2, &ns).await.expect("up");
    assert_eq!(offsets(&history), [4, 5]);
}

async fn a_history_trimmed_by_size_reports_the_exact_gap_then_what_it_has(kind: Kind) {
    let streams = kind.streams();
    let ns = namespace(3, 300);
    let epoch = send(&streams, &ns, "chat:a", None).await.epoch;
    for _ in 2..=10 {
        send(&streams, &ns, "chat:a", None).await;
    }
    let since = at(&epoch, 2);
    let (_, recovery) = streams
        .recover("chat:a", Some(&since), &ns)
        .await
        .expect("up");
    let Recovery::Trimmed { gap, publications } = recovery else {
        panic!("{recovery:?}")
    };
    assert_eq!(gap, (3, 7));
    assert_eq!(offsets(&publications), [8, 9, 10]);
    // From just before the oldest kept: nothing lost.
    let since = at(&epoch, 7);
    let (_, recovery) = streams
        .recover("chat:a", Some(&since), &ns)
        .await
        .expect("up");
    let Recovery::Recovered(missed) = recovery else {
        panic!("{recovery:?}")
    };
    assert_eq!(offsets(&missed), [8, 9, 10]);
}

async fn another_epoch_is_reported_as_such(kind: Kind) {
    let streams = kind.streams();
    let ns = namespace(10, 300);
    send(&streams, &ns, "chat:a", None).await;
    let since = at("an-old-epoch", 1);
    let (position, recovery) = streams
        .recover("chat:a", Some(&since), &ns)
        .await
        .expect("up");
    assert_eq!(recovery, Recovery::EpochChanged);
    assert_eq!(position.offset, 1);
}

async fn an_id_is_published_once_per_channel(kind: Kind) {
    let streams = kind.streams();
    let ns = namespace(10, 300);
    let first = send(&streams, &ns, "chat:a", Some("p-1")).await;
    assert!(first.publication.is_some());
    send(&streams, &ns, "chat:a", None).await;
    let again = send(&streams, &ns, "chat:a", Some("p-1")).await;
    assert_eq!((again.epoch, again.offset), (first.epoch, first.offset));
    assert!(again.publication.is_none(), "not delivered twice");
    let history = streams.history("chat:a", 10, &ns).await.expect("up");
    assert_eq!(offsets(&history), [1, 2], "kept once");
    // Scoped to the channel: the same id elsewhere is another publication.
    let elsewhere = send(&streams, &ns, "chat:b", Some("p-1")).await;
    assert_eq!(elsewhere.offset, 1);
    assert!(elsewhere.publication.is_some());
}

async fn the_publisher_is_kept_with_the_publication(kind: Kind) {
    let streams = kind.streams();
    let ns = namespace(10, 300);
    let info = PublisherInfo {
        client_id: "c1".into(),
        user: Some("alice".into()),
    };
    let mut with_info = request("chat:a", None);
    with_info.info = Some(info.clone());
    streams.publish(with_info, &ns).await.expect("published");
    send(&streams, &ns, "chat:a", None).await;
    let history = streams.history("chat:a", 10, &ns).await.expect("up");
    assert_eq!(history[0].info, Some(info));
    assert_eq!(history[1].info, None);
}

// What follows moves the clock: the memory streams only.

fn publish(streams: &MemoryStreams, ns: &Namespace, id: Option<&str>, now: u64) -> Published {
    streams
        .publish(request("chat:a", id), ns, now)
        .expect("published")
}

#[test]
fn the_history_ages_out_and_a_quiet_channel_keeps_its_epoch() {
    let streams = MemoryStreams::new(1 << 20, 120_000);
    let ns = namespace(100, 300);
    let epoch = publish(&streams, &ns, None, 1).epoch;
    publish(&streams, &ns, None, 2);
    // After the TTL nothing is kept; the epoch and the offset stay.
    let (position, recovery) = streams.recover("chat:a", Some(&at(&epoch, 1)), &ns, 400_000);
    assert_eq!(position, at(&epoch, 2));
    let Recovery::Trimmed { gap, publications } = recovery else {
        panic!("{recovery:?}")
    };
    assert_eq!((gap, publications.len()), ((2, 2), 0));
    let (_, recovery) = streams.recover("chat:a", Some(&at(&epoch, 2)), &ns, 400_000);
    assert_eq!(recovery, Recovery::Recovered(Vec::new()));
}

#[test]
fn a_restart_draws_new_epochs() {
    let streams = MemoryStreams::new(1 << 20, 120_000);
    let ns = namespace(10, 300);
    publish(&streams, &ns, None, 1);
    // A restart: a new node's streams give the channel a new epoch.
    let before = streams.recover("chat:a", None, &ns, 2).0;
    let restarted = MemoryStreams::new(1 << 20, 120_000);
    let (after, recovery) = restarted.recover("chat:a", Some(&before), &ns, 3);
    assert_ne!(after.epoch, before.epoch);
    assert_eq!(recovery, Recovery::EpochChanged);
}

#[test]
fn an_id_is_published_once_within_the_window() {
    let streams = MemoryStreams::new(1 << 20, 1_000);
    let ns = namespace(10, 300);
    let first = publish(&streams, &ns, Some("p-1"), 1);
    assert!(first.publication.is_some());
    publish(&streams, &ns, None, 2);
    let again = publish(&streams, &ns, Some("p-1"), 500);
    assert_eq!(again.offset, first.offset);
    assert!(again.publication.is_none(), "not delivered twice");
    // Scoped to the channel: the same id elsewhere is another publication.
    let elsewhere = streams
        .publish(
            PublishRequest {
                channel: "chat:b".into(),
                data: "1".into(),
                id: Some("p-1".into()),
                info: None,
            },
            &ns,
            600,
        )
        .expect("published");
    assert_eq!(elsewhere.offset, 1);
    assert!(elsewhere.publication.is_some());
    // After the window it is a new publication.
    let later = publish(&streams, &ns, Some("p-1"), 1_001);
    assert_eq!(later.offset, 3);
}

#[test]
fn the_node_budget_trims_the_oldest_publication_of_any_channel() {
    // Room for about three publications of ~70 bytes.
    let streams = MemoryStreams::new(220, 120_000);
    let ns = namespace(100, 300);
    let publish_to = |channel: &str, now: u64| {
        streams
            .publish(
                PublishRequest {
                    channel: channel.into(),
                    data: "1".into(),
                    id: None,
                    info: None,
                },
                &ns,
                now,
            )
            .expect("published")
    };
    let a = publish_to("a", 1).epoch;
    publish_to("b", 2);
    publish_to("a", 3);
    publish_to("b", 4);
    assert!(streams.bytes() <= 220, "{}", streams.bytes());
    // a's first went first: a recovery from 0 reports it lost.
    let (_, recovery) = streams.recover("a", Some(&at(&a, 0)), &ns, 5);
    let Recovery::Trimmed { gap, publications } = recovery else {
        panic!("{recovery:?}")
    };
    assert_eq!((gap, offsets(&publications)), ((1, 1), vec![2]));
    assert_eq!(offsets(&streams.history("b", 10, &ns, 5)), [1, 2]);
}

#[test]
fn idle_channels_with_nothing_kept_are_forgotten() {
    let streams = MemoryStreams::new(1 << 20, 1_000);
    let ns = namespace(0, 300);
    let epoch = publish(&streams, &ns, None, 1).epoch;
    streams.sweep(FORGET_AFTER_MS / 2, |_| false);
    let (position, _) = streams.recover("chat:a", None, &ns, FORGET_AFTER_MS / 2);
    assert_eq!(position, at(&epoch, 1), "kept while recent");
    streams.sweep(FORGET_AFTER_MS + 2, |name| name == "chat:a");
    let (position, _) = streams.recover("chat:a", None, &ns, FORGET_AFTER_MS + 2);
    assert_eq!(position, at(&epoch, 1), "kept while it has subscribers");
    streams.sweep(FORGET_AFTER_MS + 2, |_| false);
    let (position, recovery) =
        streams.recover("chat:a", Some(&at(&epoch, 1)), &ns, FORGET_AFTER_MS + 2);
    assert_eq!(position.offset, 0);
    assert_eq!(recovery, Recovery::EpochChanged);
}

// Redis only: what Redis itself does.

#[tokio::test]
async fn redis_losing_its_data_changes_the_epoch() {
    let mut redis = testbed::RedisServer::start().expect("redis-server");
    let node = crate::reliable::tests::redis_node(&redis.url());
    let streams = RedisStreams::new(node, Duration::from_secs(120));
    let ns = namespace(10, 300);
    let before = streams
        .publish(request("chat:a", None), &ns)
        .await
        .expect("published");
    // Without persistence a restart loses every key.
    redis.restart().expect("restarted");
    let since = at(&before.epoch, before.offset);
    let (position, recovery) = poll_recover(&streams, &since, &ns).await;
    assert_eq!(recovery, Recovery::EpochChanged);
    assert_ne!(position.epoch, before.epoch);
    assert_eq!(position.offset, 0);
    let after = streams
        .publish(request("chat:a", None), &ns)
        .await
        .expect("published");
    assert_eq!((after.epoch, after.offset), (position.epoch, 1));
}

/// Recovers once Redis answers again (the connection manager reconnects
/// in the background), within a deadline.
async fn poll_recover(
    streams: &RedisStreams,
    since: &Position,
    ns: &Namespace,
) -> (Position, Recovery) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match streams.recover("chat:a", Some(since), ns).await {
            Ok(answer) => return answer,
            Err(StreamError::Unavailable) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("{other}"),
        }
    }
}

#[tokio::test]
async fn each_publication_is_announced_on_the_channels_pubsub() {
    use futures_util::StreamExt;
    let redis = testbed::RedisServer::start().expect("redis-server");
    let node = crate::reliable::tests::redis_node(&redis.url());
    let streams = RedisStreams::new(node, Duration::from_secs(120));
    let client = ::redis::Client::open(redis.url()).expect("a client");
    let mut pubsub = client.get_async_pubsub().await.expect("pub/sub");
    pubsub
        .subscribe(streams.pubsub_channel("chat:a"))
        .await
        .expect("subscribed");
    let ns = namespace(10, 300);
    let mut with_info = request("chat:a", Some("p-1"));
    with_info.info = Some(PublisherInfo {
        client_id: "c1".into(),
        user: None,
    });
    let published = streams.publish(with_info, &ns).await.expect("published");
    // The repeat is not announced again: the next message is the next publication.
    streams
        .publish(request("chat:a", Some("p-1")), &ns)
        .await
        .expect("answered");
    streams
        .publish(request("chat:a", None), &ns)
        .await
        .expect("published");
    let mut messages = pubsub.on_message();
    let mut next = async || -> String {
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("announced in time")
            .expect("a message");
        message.get_payload().expect("text")
    };
    assert_eq!(
        next().await,
        format!(
            "{}\n1\n{{\"client_id\":\"c1\"}}\n{{\"n\":1}}",
            published.epoch
        )
    );
    assert_eq!(
        next().await,
        format!("{}\n2\n\n{{\"n\":1}}", published.epoch)
    );
}
