//! Resumes: replay, takeover, gaps and the history bounds while away.

use super::*;

on_both_stores!(
    resume_replays_what_follows_last_seq_in_order,
    a_broadcast_push_is_kept_once_for_every_session_and_replayed_exactly,
    resume_takes_over_a_connection_the_server_still_thinks_alive,
    a_history_too_short_is_reported_as_a_gap,
    old_messages_are_evicted_by_age,
    the_byte_limit_bounds_the_history_and_evicts_only_while_away,
    a_session_belongs_to_its_user,
);

async fn resume_replays_what_follows_last_seq_in_order(kind: Kind) {
    let now = Instant::now();
    let store = kind.store(limits(10));
    let s = first(&store).await;
    for n in 1..=6 {
        lock(&s).send(To::Connection(1), push(n), now).unwrap();
    }
    lock(&s).ack(2);
    lock(&s).accept(1, 1, now, |_| None).unwrap();
    lock(&s).detach(1, now);
    let (r, resume) = store.resume("s", "t", 4, "c2", c(2), now).await.unwrap();
    assert_eq!(resume.gap, None);
    assert_eq!(resume.last_in, 1);
    let seqs: Vec<u64> = resume.replay.iter().map(seq_of).collect();
    assert_eq!(seqs, [5, 6]);
    // The old connection may no longer speak for the session.
    assert_eq!(
        lock(&s).send(To::Connection(1), push(7), now).unwrap_err(),
        Refused::from(TakenOver)
    );
    let frame = lock(&r).send(To::Connection(2), push(7), now).unwrap();
    assert_eq!(seq_of(&frame), 7);
}

async fn a_broadcast_push_is_kept_once_for_every_session_and_replayed_exactly(kind: Kind) {
    let now = Instant::now();
    let store = kind.store(limits(10));
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
    // In memory, both histories hold the one body, not a copy each (Redis
    // keeps each session's frame).
    if matches!(kind, Kind::Memory) {
        assert_eq!(Arc::strong_count(&shared), 3);
    }
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

async fn resume_takes_over_a_connection_the_server_still_thinks_alive(kind: Kind) {
    let now = Instant::now();
    let store = kind.store(limits(10));
    let (first, first_flag) = watched(1);
    let s = store
        .create(offer("s"), "c", HOME, first, now)
        .await
        .unwrap();
    let (second, second_flag) = watched(2);
    let (r, _) = store
        .resume("s", "t", 0, "c", second.clone(), now)
        .await
        .unwrap();
    // The old connection is told at once; the new one is not.
    assert!(first_flag.raised());
    assert!(!second_flag.raised());
    assert!(lock(&r).is_attached(2));
    assert!(!lock(&s).is_attached(1));
    // The old connection ending does not detach the new one.
    lock(&s).detach(1, now);
    assert!(lock(&r).is_attached(2));
    // Resuming on the same connection again is no takeover.
    store.resume("s", "t", 0, "c", second, now).await.unwrap();
    assert!(!second_flag.raised());
}

async fn a_history_too_short_is_reported_as_a_gap(kind: Kind) {
    let now = Instant::now();
    let store = kind.store(limits(3));
    let s = first(&store).await;
    lock(&s).detach(1, now);
    // The client is away: pushes are stored, the oldest evicted.
    for n in 1..=5 {
        lock(&s).send(To::Away, push(n), now).unwrap();
    }
    assert_eq!(lock(&s).unacked(), 3);
    let (r, resume) = store.resume("s", "t", 0, "c", c(2), now).await.unwrap();
    assert_eq!(resume.gap, Some((1, 2)));
    let seqs: Vec<u64> = resume.replay.iter().map(seq_of).collect();
    assert_eq!(seqs, [3, 4, 5]);
    // Back: a message "for a client that is away" is refused, not stored.
    assert_eq!(
        lock(&r).send(To::Away, push(6), now).unwrap_err(),
        Refused::TakenOver
    );
    // A client that got the gap and the replay resumes without a new gap.
    lock(&r).detach(2, now);
    let (_, resume) = store.resume("s", "t", 5, "c", c(3), now).await.unwrap();
    assert_eq!(resume.gap, None);
    assert!(resume.replay.is_empty());
}

async fn old_messages_are_evicted_by_age(kind: Kind) {
    let start = Instant::now();
    let store = kind.store(limits(100));
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

async fn the_byte_limit_bounds_the_history_and_evicts_only_while_away(kind: Kind) {
    let now = Instant::now();
    let mut tight = limits(100);
    tight.history_max_bytes = 300;
    let store = kind.store(tight);
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

/// Connection `conn` of `user` (token mode).
fn of(user: &str, conn: u64) -> Attach {
    Attach {
        user: Some(user.into()),
        ..c(conn)
    }
}

async fn a_session_belongs_to_its_user(kind: Kind) {
    let now = Instant::now();
    let store = kind.store(limits(10));
    let alice = store
        .create(offer("a"), "c1", HOME, of("alice", 1), now)
        .await
        .unwrap();
    store
        .create(offer("b"), "c2", HOME, of("bob", 2), now)
        .await
        .unwrap();
    lock(&alice).detach(1, now);
    lock(&alice).send(To::Away, push(1), now).unwrap();
    // Another user, with the right id and token: told nothing more than a wrong token.
    let refused = store.resume("a", "t", 0, "c3", of("bob", 3), now).await;
    assert_eq!(refused.err(), Some(ResumeFailure::BadToken.into()));
    // An anonymous connection neither.
    let refused = store.resume("a", "t", 0, "c3", c(3), now).await;
    assert_eq!(refused.err(), Some(ResumeFailure::BadToken.into()));
    // Only alice's away session is hers to store pushes in.
    assert_eq!(store.detached_of_user("alice").await.unwrap().len(), 1);
    assert!(
        store.detached_of_user("bob").await.unwrap().is_empty(),
        "bob is connected"
    );
    let (_, resume) = store
        .resume("a", "t", 0, "c4", of("alice", 4), now)
        .await
        .unwrap();
    assert_eq!(resume.replay.len(), 1);
    assert!(store.detached_of_user("alice").await.unwrap().is_empty());
    // Ending a user forgets all of its sessions, and only those.
    assert_eq!(store.end_user("alice").await, 1);
    assert_eq!(store.len().await, 1);
    let gone = store.resume("a", "t", 0, "c5", of("alice", 5), now).await;
    assert_eq!(gone.err(), Some(ResumeFailure::UnknownSession.into()));
}
