//! What only a shared store does: two nodes (two stores on one Redis)
//! hand a session over, a stale node is fenced, and a Redis that does not
//! answer stores nothing and acknowledges nothing.

use super::*;

/// Two stores on one Redis: two nodes of a cluster.
fn two_nodes(limits: Limits) -> (testbed::RedisServer, Store, Store) {
    let Kind::Redis(redis) = Kind::redis() else {
        unreachable!("Kind::redis is Redis")
    };
    let a = Kind::Redis(redis);
    let (one, two) = (a.store(limits), a.store(limits));
    let Kind::Redis(redis) = a else {
        unreachable!("still Redis")
    };
    (redis, one, two)
}

#[tokio::test]
async fn the_caps_count_the_sessions_of_every_node() {
    let now = Instant::now();
    let mut bounds = limits(10);
    bounds.caps = Caps {
        total: 100,
        per_ip: 3,
        per_user: 0,
    };
    let (_redis, a, b) = two_nodes(bounds);
    // A client rotating over the nodes, leaving each session away.
    for (n, node) in [&a, &b, &a].into_iter().enumerate() {
        let conn = u64::try_from(n).unwrap();
        let s = node
            .create(offer(&format!("s{n}")), "c", HOME, c(conn), now)
            .await
            .unwrap();
        lock(&s).detach(conn, now);
        node.persist(&s).await.unwrap();
    }
    for node in [&a, &b] {
        let refused = node.create(offer("s9"), "c", HOME, c(9), now).await;
        assert_eq!(refused.err(), Some(TooMany::PerIp));
    }
}

#[tokio::test]
async fn a_session_resumes_on_another_node_with_nothing_lost_or_repeated() {
    let now = Instant::now();
    let (_redis, a, b) = two_nodes(limits(10));
    let s = first(&a).await;
    for n in 1..=3 {
        lock(&s).send(To::Connection(1), push(n), now).unwrap();
    }
    for seq in 1..=2 {
        let accepted = lock(&s).accept(1, seq, now, |_| Some(echo(seq))).unwrap();
        assert!(matches!(accepted, Accepted::Processed(Some(_))));
    }
    a.persist(&s).await.unwrap();
    lock(&s).detach(1, now);
    a.persist(&s).await.unwrap();
    // Wrong token, unknown id: refused as in memory.
    let wrong = b.resume("s", "wrong", 0, "c", c(7), now).await;
    assert_eq!(wrong.err(), Some(ResumeFailure::BadToken.into()));
    let unknown = b.resume("nope", "t", 0, "c", c(7), now).await;
    assert_eq!(unknown.err(), Some(ResumeFailure::UnknownSession.into()));
    // The client saw the first two of the five messages numbered.
    let (r, resume) = b.resume("s", "t", 2, "c", c(7), now).await.unwrap();
    assert_eq!(resume.gap, None);
    assert_eq!(resume.last_in, 2, "both client messages were processed");
    let seqs: Vec<u64> = resume.replay.iter().map(seq_of).collect();
    assert_eq!(seqs, [3, 4, 5]);
    // Numbering goes on where node A stopped; a resent client message is a duplicate.
    let frame = lock(&r).send(To::Connection(7), push(4), now).unwrap();
    assert_eq!((seq_of(&frame), push_seq_of(&frame)), (6, 4));
    assert_eq!(
        lock(&r).accept(7, 2, now, |_| Some(echo(2))).unwrap(),
        Accepted::Duplicate
    );
    b.persist(&r).await.unwrap();
}

#[tokio::test]
async fn a_node_that_lost_its_session_can_no_longer_write_into_it() {
    let now = Instant::now();
    let (_redis, a, b) = two_nodes(limits(10));
    let (first_attach, told) = watched(1);
    let s = a
        .create(offer("s"), "c", HOME, first_attach, now)
        .await
        .unwrap();
    lock(&s).send(To::Connection(1), push(1), now).unwrap();
    a.persist(&s).await.unwrap();
    // Node A still believes its connection alive when B resumes.
    let (r, resume) = b.resume("s", "t", 0, "c", c(2), now).await.unwrap();
    assert_eq!(resume.replay.len(), 1);
    // A numbers one more (it has not heard of the takeover): refused by Redis.
    lock(&s).send(To::Connection(1), push(2), now).unwrap();
    assert_eq!(a.persist(&s).await, Err(Unwritten::TakenOver));
    assert_eq!(
        a.persist(&s).await,
        Err(Unwritten::TakenOver),
        "nothing after a refused write"
    );
    // Told through the command stream in a cluster; here directly.
    a.taken_over("s", 2);
    assert!(told.raised());
    // B's numbering is not disturbed by A's attempt.
    let frame = lock(&r).send(To::Connection(2), push(2), now).unwrap();
    assert_eq!(seq_of(&frame), 2);
    b.persist(&r).await.unwrap();
}

#[tokio::test]
async fn pushes_to_a_client_away_are_stored_from_any_node() {
    let now = Instant::now();
    let (_redis, a, b) = two_nodes(limits(10));
    let s = first(&a).await;
    lock(&s).detach(1, now);
    a.persist(&s).await.unwrap();
    assert!(b.detached_of("nobody").await.unwrap().is_none());
    let away = b.detached_of("c").await.unwrap().expect("stored away");
    lock(&away).send(To::Away, push(1), now).unwrap();
    b.persist(&away).await.unwrap();
    let (_, resume) = a.resume("s", "t", 0, "c", c(2), now).await.unwrap();
    assert_eq!(resume.replay.len(), 1);
    assert_eq!(push_seq_of(&resume.replay[0]), 1);
    // Back: nothing is away any more.
    assert!(b.detached_of("c").await.unwrap().is_none());
}

#[tokio::test]
async fn concurrent_pushes_to_a_client_away_are_not_numbered_twice() {
    let now = Instant::now();
    let (_redis, a, b) = two_nodes(limits(10));
    let s = first(&a).await;
    lock(&s).detach(1, now);
    a.persist(&s).await.unwrap();
    let one = a.detached_of("c").await.unwrap().unwrap();
    let two = b.detached_of("c").await.unwrap().unwrap();
    lock(&one).send(To::Away, push(1), now).unwrap();
    lock(&two).send(To::Away, push(1), now).unwrap();
    b.persist(&two).await.unwrap();
    assert_eq!(a.persist(&one).await, Err(Unwritten::Raced));
    let (_, resume) = a.resume("s", "t", 0, "c", c(2), now).await.unwrap();
    assert_eq!(resume.replay.len(), 1, "one push stored, numbered once");
}

#[tokio::test]
async fn without_redis_nothing_is_stored_or_acknowledged() {
    let now = Instant::now();
    let mut redis = testbed::RedisServer::start().expect("redis-server");
    let node = redis_node(&redis.url());
    let store = Store::Redis(RedisStore::new(node, limits(10)));
    let s = first(&store).await;
    lock(&s).accept(1, 1, now, |_| Some(echo(1))).unwrap();
    store.persist(&s).await.unwrap();
    redis.stop().unwrap();
    lock(&s).accept(1, 2, now, |_| Some(echo(2))).unwrap();
    // Unconfirmed when the request went out on the connection Redis dropped.
    let failed = store.persist(&s).await;
    assert!(
        matches!(failed, Err(Unwritten::Unavailable | Unwritten::Unconfirmed)),
        "{failed:?}"
    );
    assert_eq!(
        store.persist(&s).await,
        failed,
        "a failed write is never followed by one that stands for it"
    );
    // Not "no such client" (404) but "cannot say" (503).
    assert_eq!(
        store.detached_of("c").await.err(),
        Some(Unwritten::Unavailable)
    );
    let refused = store.create(offer("s2"), "c2", HOME, c(2), now).await;
    assert_eq!(refused.err(), Some(TooMany::Unavailable));
    let refused = store.resume("s", "t", 0, "c", c(3), now).await;
    assert_eq!(refused.err(), Some(ResumeError::Unavailable));
    // Redis is back (empty: persistence is off): the node works again by itself.
    redis.restart().unwrap();
    let again = poll_create(&store, now).await;
    assert!(lock(&again).is_attached(4));
}

/// Creates session "s3" for connection 4, retrying while the connection
/// manager reconnects (a deadline, no fixed sleep).
async fn poll_create(store: &Store, now: Instant) -> SessionRef {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.create(offer("s3"), "c3", HOME, c(4), now).await {
            Ok(session) => return session,
            Err(err) if Instant::now() < deadline => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("Redis is back but the store is not: {err:?}"),
        }
    }
}
