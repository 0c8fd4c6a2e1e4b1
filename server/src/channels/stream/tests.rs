//! The stream's rules, on the memory streams.

use std::time::Duration;

use super::memory::{FORGET_AFTER_MS, MemoryStreams};
use super::*;
use crate::channels::namespace::Namespace;

fn namespace(size: usize, ttl_s: u64) -> Namespace {
    Namespace {
        history_size: size,
        history_ttl: Duration::from_secs(ttl_s),
        ..Namespace::default()
    }
}

fn publish(streams: &MemoryStreams, ns: &Namespace, id: Option<&str>, now: u64) -> Published {
    streams
        .publish(
            PublishRequest {
                channel: "chat:a".into(),
                data: format!("{{\"n\":{now}}}"),
                id: id.map(str::to_owned),
                info: None,
            },
            ns,
            now,
        )
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

#[test]
fn offsets_count_from_one_without_holes_and_recovery_is_exact() {
    let streams = MemoryStreams::new(1 << 20, 120_000);
    let ns = namespace(100, 300);
    let (start, recovery) = streams.recover("chat:a", None, &ns, 0);
    assert_eq!((start.offset, recovery), (0, Recovery::Fresh));
    for n in 1..=5 {
        let published = publish(&streams, &ns, None, n);
        assert_eq!(published.offset, n);
        assert_eq!(published.epoch, start.epoch);
    }
    let (position, recovery) = streams.recover("chat:a", Some(&at(&start.epoch, 2)), &ns, 10);
    assert_eq!(position.offset, 5);
    let Recovery::Recovered(missed) = recovery else {
        panic!("{recovery:?}")
    };
    assert_eq!(offsets(&missed), [3, 4, 5]);
    // Up to date: nothing to replay.
    let (_, recovery) = streams.recover("chat:a", Some(&at(&start.epoch, 5)), &ns, 10);
    assert_eq!(recovery, Recovery::Recovered(Vec::new()));
}

#[test]
fn a_trimmed_history_reports_the_exact_gap_then_what_it_has() {
    let streams = MemoryStreams::new(1 << 20, 120_000);
    let ns = namespace(3, 300);
    let epoch = publish(&streams, &ns, None, 1).epoch;
    for n in 2..=10 {
        publish(&streams, &ns, None, n);
    }
    let (_, recovery) = streams.recover("chat:a", Some(&at(&epoch, 2)), &ns, 11);
    let Recovery::Trimmed { gap, publications } = recovery else {
        panic!("{recovery:?}")
    };
    assert_eq!(gap, (3, 7));
    assert_eq!(offsets(&publications), [8, 9, 10]);
    // By age: after the TTL nothing is kept, and the epoch and offset stay.
    let (position, recovery) = streams.recover("chat:a", Some(&at(&epoch, 9)), &ns, 400_000);
    assert_eq!(position, at(&epoch, 10));
    let Recovery::Trimmed { gap, publications } = recovery else {
        panic!("{recovery:?}")
    };
    assert_eq!((gap, publications.len()), ((10, 10), 0));
    let (_, recovery) = streams.recover("chat:a", Some(&at(&epoch, 10)), &ns, 400_000);
    assert_eq!(
        recovery,
        Recovery::Recovered(Vec::new()),
        "a quiet channel keeps its epoch"
    );
}

#[test]
fn another_epoch_is_reported_as_such() {
    let streams = MemoryStreams::new(1 << 20, 120_000);
    let ns = namespace(10, 300);
    publish(&streams, &ns, None, 1);
    let (_, recovery) = streams.recover("chat:a", Some(&at("an-old-node", 1)), &ns, 2);
    assert_eq!(recovery, Recovery::EpochChanged);
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
    streams.sweep(FORGET_AFTER_MS / 2);
    let (position, _) = streams.recover("chat:a", None, &ns, FORGET_AFTER_MS / 2);
    assert_eq!(position, at(&epoch, 1), "kept while recent");
    streams.sweep(FORGET_AFTER_MS + 2);
    let (position, recovery) =
        streams.recover("chat:a", Some(&at(&epoch, 1)), &ns, FORGET_AFTER_MS + 2);
    assert_eq!(position.offset, 0);
    assert_eq!(recovery, Recovery::EpochChanged);
}
