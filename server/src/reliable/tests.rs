//! The session store's behaviour, written against [`SessionStore`] so
//! that every store (memory today, Redis later) runs the same tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use shared::{ResumeFailure, ServerMessage};

use super::*;

fn limits(history_max: usize) -> Limits {
    Limits {
        history_max,
        history_max_age: Duration::from_secs(60),
        history_max_bytes: usize::MAX,
        ttl: Duration::from_secs(120),
        max_sessions: 3,
        max_sessions_per_ip: 0,
        history_total_bytes: 0,
    }
}

/// Records whether its connection was taken over.
#[derive(Debug, Default)]
struct Flag(AtomicBool);

impl TakeoverSignal for Flag {
    fn taken_over(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Flag {
    fn raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The owner address of every session in these tests, unless said otherwise.
const HOME: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn offer(id: &str) -> (String, String) {
    (id.to_owned(), "t".to_owned())
}

/// Connection `conn`, whose takeover signal nobody watches.
fn c(conn: u64) -> Attach {
    Attach {
        conn,
        signal: Arc::new(Flag::default()),
    }
}

/// Connection `conn` and its takeover signal.
fn watched(conn: u64) -> (Attach, Arc<Flag>) {
    let flag = Arc::new(Flag::default());
    let attach = Attach {
        conn,
        signal: flag.clone(),
    };
    (attach, flag)
}

fn push(n: u64) -> Outgoing {
    Outgoing::Push {
        body: format!("p{n}"),
        sent_at_ms: 0,
    }
}

fn echo(id: u64) -> ServerMessage {
    ServerMessage::Echo {
        id,
        body: "b".into(),
    }
}

/// Session "s" (token "t") of client "c", attached to connection 1.
async fn first(store: &impl SessionStore) -> SessionRef {
    store
        .create(offer("s"), "c", HOME, c(1), Instant::now())
        .await
        .unwrap()
}

fn seq_of(frame: &Utf8Bytes) -> u64 {
    match ServerMessage::from_json(frame.as_str()).unwrap() {
        ServerMessage::Msg { seq, .. } => seq,
        other => panic!("not a msg: {other:?}"),
    }
}

/// The push seq inside a `msg` envelope.
fn push_seq_of(frame: &Utf8Bytes) -> u64 {
    let ServerMessage::Msg { data, .. } = ServerMessage::from_json(frame.as_str()).unwrap() else {
        panic!("not a msg")
    };
    match ServerMessage::from_json(&data).unwrap() {
        ServerMessage::Push { seq, .. } => seq,
        other => panic!("not a push: {other:?}"),
    }
}

#[tokio::test]
async fn sends_number_from_one_and_acks_release_them() {
    let now = Instant::now();
    let store = MemoryStore::new(limits(10));
    let s = first(&store).await;
    let mut s = lock(&s);
    let seqs: Vec<u64> = (1..=5)
        .map(|n| seq_of(&s.send(To::Connection(1), push(n), now).unwrap()))
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(s.unacked(), 5);
    assert!(!s.window_open());
    s.ack(3);
    assert_eq!(s.unacked(), 2);
    assert!(s.window_open());
    // Acks beyond what was sent, or going backwards, change nothing wrong.
    s.ack(2);
    assert_eq!(s.unacked(), 2);
    s.ack(99);
    assert_eq!(s.unacked(), 0);
}

#[tokio::test]
async fn each_client_seq_is_processed_once_and_in_order() {
    let now = Instant::now();
    let store = MemoryStore::new(limits(10));
    let s = first(&store).await;
    let mut s = lock(&s);
    let mut served = Vec::new();
    let mut accept = |s: &mut Session, seq: u64| {
        s.accept(1, seq, now, |_| {
            served.push(seq);
            Some(echo(seq))
        })
        .unwrap()
    };
    assert!(matches!(accept(&mut s, 1), Accepted::Processed(Some(_))));
    assert!(matches!(accept(&mut s, 2), Accepted::Processed(Some(_))));
    assert_eq!(accept(&mut s, 2), Accepted::Duplicate);
    assert_eq!(accept(&mut s, 1), Accepted::Duplicate);
    assert_eq!(accept(&mut s, 4), Accepted::OutOfOrder { expected: 3 });
    assert!(matches!(accept(&mut s, 3), Accepted::Processed(Some(_))));
    assert_eq!(s.last_in(), 3);
    assert_eq!(served, [1, 2, 3]);
}

#[tokio::test]
async fn a_reply_without_room_is_refused_and_its_message_not_processed() {
    let now = Instant::now();
    let store = MemoryStore::new(limits(2));
    let s = first(&store).await;
    let mut s = lock(&s);
    for seq in 1..=2 {
        let accepted = s.accept(1, seq, now, |_| Some(echo(seq))).unwrap();
        assert!(matches!(accepted, Accepted::Processed(Some(_))));
    }
    assert_eq!(
        s.accept(1, 3, now, |_| Some(echo(3))).unwrap_err(),
        Refused::Full
    );
    assert_eq!(s.last_in(), 2);
    assert_eq!(s.unacked(), 2);
    // A refused push does not use up a push seq.
    assert_eq!(
        s.send(To::Connection(1), push(1), now).unwrap_err(),
        Refused::Full
    );
    s.ack(2);
    let frame = s.send(To::Connection(1), push(1), now).unwrap();
    assert_eq!(push_seq_of(&frame), 1);
    assert!(matches!(
        s.accept(1, 3, now, |_| Some(echo(3))).unwrap(),
        Accepted::Processed(Some(_))
    ));
}

#[tokio::test]
async fn resume_replays_what_follows_last_seq_in_order() {
    let now = Instant::now();
    let store = MemoryStore::new(limits(10));
    let s = first(&store).await;
    for n in 1..=6 {
        lock(&s).send(To::Connection(1), push(n), now).unwrap();
    }
    lock(&s).ack(2);
    lock(&s).accept(1, 1, now, |_| None).unwrap();
    lock(&s).detach(1, now);
    let (_, resume) = store.resume("s", "t", 4, "c2", c(2), now).await.unwrap();
    assert_eq!(resume.gap, None);
    assert_eq!(resume.last_in, 1);
    let seqs: Vec<u64> = resume.replay.iter().map(seq_of).collect();
    assert_eq!(seqs, [5, 6]);
    // The old connection may no longer speak for the session.
    assert_eq!(
        lock(&s).send(To::Connection(1), push(7), now).unwrap_err(),
        Refused::from(TakenOver)
    );
    let frame = lock(&s).send(To::Connection(2), push(7), now).unwrap();
    assert_eq!(seq_of(&frame), 7);
}

#[tokio::test]
async fn a_broadcast_push_is_kept_once_for_every_session_and_replayed_exactly() {
    let now = Instant::now();
    let store = MemoryStore::new(limits(10));
    let shared = Arc::new(shared::PushEncoder::new(7, "line\n \"quoted\" \u{1b}"));
    let mut frames = Vec::new();
    for id in ["s1", "s2"] {
        let s = store.create(offer(id), "c", HOME, c(1), now).await.unwrap();
        lock(&s).send(To::Connection(1), push(1), now).unwrap();
        let frame = lock(&s)
            .send(To::Connection(1), Outgoing::Shared(shared.clone()), now)
            .unwrap();
        lock(&s).detach(1, now);
        frames.push(frame);
    }
    // Both histories hold the one body, not a copy each.
    assert_eq!(Arc::strong_count(&shared), 3);
    for (id, frame) in ["s1", "s2"].into_iter().zip(frames) {
        assert_eq!((seq_of(&frame), push_seq_of(&frame)), (2, 2));
        let (_, resume) = store.resume(id, "t", 1, "c", c(2), now).await.unwrap();
        assert_eq!(
            resume.replay,
            [frame],
            "the replay is the frame first written"
        );
    }
}

#[tokio::test]
async fn resume_takes_over_a_connection_the_server_still_thinks_alive() {
    let now = Instant::now();
    let store = MemoryStore::new(limits(10));
    let (first, first_flag) = watched(1);
    let s = store
        .create(offer("s"), "c", HOME, first, now)
        .await
        .unwrap();
    let (second, second_flag) = watched(2);
    let resumed = store.resume("s", "t", 0, "c", second.clone(), now).await;
    assert!(resumed.is_ok());
    // The old connection is told at once; the new one is not.
    assert!(first_flag.raised());
    assert!(!second_flag.raised());
    assert!(lock(&s).is_attached(2));
    assert!(!lock(&s).is_attached(1));
    // The old connection ending does not detach the new one.
    lock(&s).detach(1, now);
    assert!(lock(&s).is_attached(2));
    // Resuming on the same connection again is no takeover.
    store.resume("s", "t", 0, "c", second, now).await.unwrap();
    assert!(!second_flag.raised());
}

#[tokio::test]
async fn a_history_too_short_is_reported_as_a_gap() {
    let now = Instant::now();
    let store = MemoryStore::new(limits(3));
    let s = first(&store).await;
    lock(&s).detach(1, now);
    // The client is away: pushes are stored, the oldest evicted.
    for n in 1..=5 {
        lock(&s).send(To::Away, push(n), now).unwrap();
    }
    assert_eq!(lock(&s).unacked(), 3);
    let (_, resume) = store.resume("s", "t", 0, "c", c(2), now).await.unwrap();
    assert_eq!(resume.gap, Some((1, 2)));
    let seqs: Vec<u64> = resume.replay.iter().map(seq_of).collect();
    assert_eq!(seqs, [3, 4, 5]);
    // Back: a message "for a client that is away" is refused, not stored.
    assert_eq!(
        lock(&s).send(To::Away, push(6), now).unwrap_err(),
        Refused::TakenOver
    );
    // A client that got the gap and the replay resumes without a new gap.
    lock(&s).detach(2, now);
    let (_, resume) = store.resume("s", "t", 5, "c", c(3), now).await.unwrap();
    assert_eq!(resume.gap, None);
    assert!(resume.replay.is_empty());
}

#[tokio::test]
async fn old_messages_are_evicted_by_age() {
    let start = Instant::now();
    let store = MemoryStore::new(limits(100));
    let s = first(&store).await;
    lock(&s).send(To::Connection(1), push(1), start).unwrap();
    lock(&s).send(To::Connection(1), push(2), start).unwrap();
    let later = start + Duration::from_secs(61);
    lock(&s).send(To::Connection(1), push(3), later).unwrap();
    lock(&s).detach(1, later);
    let (_, resume) = store.resume("s", "t", 0, "c", c(2), later).await.unwrap();
    assert_eq!(resume.gap, Some((1, 2)));
    assert_eq!(resume.replay.len(), 1);
}

#[tokio::test]
async fn sessions_expire_after_the_ttl_and_tokens_are_checked() {
    let now = Instant::now();
    let store = MemoryStore::new(limits(10));
    let s = first(&store).await;
    assert_eq!(
        store
            .resume("s", "wrong", 0, "c", c(2), now)
            .await
            .unwrap_err(),
        ResumeFailure::BadToken
    );
    assert_eq!(
        store
            .resume("nope", "t", 0, "c", c(2), now)
            .await
            .unwrap_err(),
        ResumeFailure::UnknownSession
    );
    lock(&s).detach(1, now);
    assert!(store.detached_of("c").await.is_some());
    assert_eq!(store.sweep(now + Duration::from_secs(119)).await, 0);
    assert_eq!(store.sweep(now + Duration::from_secs(120)).await, 1);
    assert_eq!(store.len().await, 0);
    let later = now + Duration::from_secs(121);
    assert_eq!(
        store
            .resume("s", "t", 0, "c", c(2), later)
            .await
            .unwrap_err(),
        ResumeFailure::UnknownSession
    );
}

#[tokio::test]
async fn bursts_continue_where_they_stopped_and_end_with_done() {
    let now = Instant::now();
    let store = MemoryStore::new(limits(10));
    let s = first(&store).await;
    let mut s = lock(&s);
    s.start_burst(2, now).unwrap();
    assert!(s.burst_ready());
    let mut got = Vec::new();
    while let Some(frame) = s.burst_step(1, 0, now).unwrap() {
        let ServerMessage::Msg { data, .. } = ServerMessage::from_json(&frame).unwrap() else {
            panic!("not a msg")
        };
        got.push(ServerMessage::from_json(&data).unwrap());
    }
    assert!(!s.burst_ready());
    assert!(matches!(got[0], ServerMessage::Push { seq: 1, .. }));
    assert!(matches!(got[1], ServerMessage::Push { seq: 2, .. }));
    assert!(matches!(got[2], ServerMessage::BurstDone { count: 2, .. }));
    assert_eq!(got.len(), 3);
}

#[tokio::test]
async fn pending_bursts_are_bounded() {
    let now = Instant::now();
    let store = MemoryStore::new(limits(10));
    let s = first(&store).await;
    let mut s = lock(&s);
    for _ in 0..MAX_PENDING_BURSTS {
        s.start_burst(5, now).unwrap();
    }
    assert_eq!(s.start_burst(5, now), Err(BurstBusy));
}

#[tokio::test]
async fn sessions_are_capped_and_expired_ones_make_room() {
    let now = Instant::now();
    let store = MemoryStore::new(limits(10));
    for n in 0..3 {
        let s = store
            .create(offer(&format!("s{n}")), "c", HOME, c(n), now)
            .await
            .unwrap();
        lock(&s).detach(n, now);
    }
    let refused = store.create(offer("s3"), "c", HOME, c(3), now).await;
    assert_eq!(refused.err(), Some(TooMany::Sessions));
    let later = now + Duration::from_secs(120);
    let made = store.create(offer("s3"), "c", HOME, c(3), later).await;
    assert!(made.is_ok());
    assert_eq!(store.len().await, 1);
}

#[tokio::test]
async fn the_byte_limit_bounds_the_history_and_evicts_only_while_away() {
    let now = Instant::now();
    let mut tight = limits(100);
    tight.history_max_bytes = 300;
    let store = MemoryStore::new(tight);
    let s = first(&store).await;
    let one = lock(&s)
        .send(To::Connection(1), push(1), now)
        .unwrap()
        .len();
    assert!(one > 60 && one < 150, "{one}");
    // Connected: nothing evicted, but the window closes at half and the
    // history refuses what would pass the limit.
    let mut n = 1;
    while lock(&s).window_open() {
        n += 1;
        lock(&s).send(To::Connection(1), push(n), now).unwrap();
    }
    loop {
        match lock(&s).send(To::Connection(1), push(n + 1), now) {
            Ok(_) => n += 1,
            Err(refused) => {
                assert_eq!(refused, Refused::Full);
                break;
            }
        }
    }
    assert!(lock(&s).unacked_bytes() <= 300);
    assert_eq!(lock(&s).unacked(), n as usize);
    // Away: the next message evicts down to the limit.
    lock(&s).detach(1, now);
    lock(&s).send(To::Away, push(n + 1), now).unwrap();
    assert!(lock(&s).unacked_bytes() <= 300);
    assert!(lock(&s).unacked() <= n as usize);
    let (_, resume) = store.resume("s", "t", 0, "c", c(2), now).await.unwrap();
    assert!(resume.gap.is_some_and(|(from, _)| from == 1));
}

#[tokio::test]
async fn sessions_are_capped_per_owner_address() {
    let now = Instant::now();
    let mut per_ip = limits(10);
    per_ip.max_sessions = 100;
    per_ip.max_sessions_per_ip = 2;
    let store = MemoryStore::new(per_ip);
    let other: std::net::IpAddr = "192.0.2.7".parse().unwrap();
    for n in 0..2 {
        let s = store
            .create(offer(&format!("s{n}")), "c", HOME, c(n), now)
            .await
            .unwrap();
        lock(&s).detach(n, now);
    }
    let refused = store.create(offer("s2"), "c", HOME, c(2), now).await;
    assert_eq!(refused.err(), Some(TooMany::PerIp));
    // Another address has its own count.
    assert!(
        store
            .create(offer("o"), "c", other, c(9), now)
            .await
            .is_ok()
    );
    // Expired sessions give their owner's places back.
    let later = now + Duration::from_secs(120);
    assert!(
        store
            .create(offer("s2"), "c", HOME, c(2), later)
            .await
            .is_ok()
    );
    assert_eq!(store.len().await, 2);
}

#[tokio::test]
async fn the_sweep_evicts_by_age_without_any_activity() {
    let start = Instant::now();
    let store = MemoryStore::new(limits(100));
    let s = first(&store).await;
    lock(&s).send(To::Connection(1), push(1), start).unwrap();
    lock(&s).send(To::Connection(1), push(2), start).unwrap();
    let bytes = store.history_bytes().await;
    assert!(bytes > 0);
    // Connected: the age evicts nothing.
    assert_eq!(store.sweep(start + Duration::from_secs(61)).await, 0);
    assert_eq!(store.history_bytes().await, bytes);
    lock(&s).detach(1, start);
    store.sweep(start + Duration::from_secs(59)).await;
    assert_eq!(store.history_bytes().await, bytes);
    // Away and past the age: the sweep alone frees it; the resume gets the gap.
    let later = start + Duration::from_secs(61);
    assert_eq!(store.sweep(later).await, 0, "not expired, only trimmed");
    assert_eq!(store.history_bytes().await, 0);
    let (_, resume) = store.resume("s", "t", 0, "c", c(2), later).await.unwrap();
    assert_eq!(resume.gap, Some((1, 2)));
    assert!(resume.replay.is_empty());
}

#[tokio::test]
async fn the_total_budget_evicts_clients_that_are_away_oldest_first() {
    let start = Instant::now();
    let mut tight = limits(100);
    tight.max_sessions = 10;
    let one = {
        let store = MemoryStore::new(tight);
        let s = first(&store).await;
        lock(&s)
            .send(To::Connection(1), push(1), start)
            .unwrap()
            .len()
    };
    tight.history_total_bytes = one * 6;
    let store = MemoryStore::new(tight);
    let mk = |n: u64| store.create(offer(&format!("s{n}")), "c", HOME, c(n), start);
    let (old, young, live) = (
        mk(1).await.unwrap(),
        mk(2).await.unwrap(),
        mk(3).await.unwrap(),
    );
    for n in 0..2 {
        lock(&old).send(To::Connection(1), push(n), start).unwrap();
    }
    let t1 = start + Duration::from_secs(1);
    for n in 0..2 {
        lock(&young).send(To::Connection(2), push(n), t1).unwrap();
    }
    lock(&old).detach(1, t1);
    lock(&young).detach(2, t1);
    let t2 = start + Duration::from_secs(2);
    lock(&live).send(To::Connection(3), push(0), t2).unwrap();
    lock(&live).send(To::Connection(3), push(1), t2).unwrap();
    assert_eq!(store.history_bytes().await, one * 6);
    // A connected client's next message does not fit: refused (its
    // connection closes with 1013); a reclaim makes room from the oldest
    // client that is away, and the retry fits.
    assert_eq!(
        lock(&live).send(To::Connection(3), push(2), t2),
        Err(Refused::Full)
    );
    assert_eq!(store.reclaim().await, one);
    lock(&live).send(To::Connection(3), push(2), t2).unwrap();
    assert_eq!(store.history_bytes().await, one * 6);
    // A message for a client that is away passes the budget: the sweep
    // brings it back under, again from the oldest.
    lock(&young).send(To::Away, push(2), t2).unwrap();
    assert!(store.history_bytes().await > one * 6);
    store.sweep(t2).await;
    assert!(store.history_bytes().await <= one * 6);
    // Every loss is a gap on resume, never silent.
    let (_, resume) = store.resume("s1", "t", 0, "c", c(4), t2).await.unwrap();
    assert_eq!(resume.gap, Some((1, 2)));
    assert!(resume.replay.is_empty());
    // The connected client lost nothing.
    assert_eq!(lock(&live).unacked(), 3);
}
