//! The store's limits: TTL and tokens, session caps, the age sweep, the total budget.

use super::*;

on_both_stores!(the_caps_count_sessions_away_and_attached_per_address_and_per_user);

/// The same [`Caps`] give the same answers in both stores: away sessions
/// count as attached ones do, each address and each user has its own
/// count, and the total is checked first.
async fn the_caps_count_sessions_away_and_attached_per_address_and_per_user(kind: Kind) {
    let now = Instant::now();
    let mut bounds = limits(10);
    bounds.caps = Caps {
        total: 5,
        per_ip: 2,
        per_user: 2,
    };
    let store = kind.store(bounds);
    let (a, b, d): (std::net::IpAddr, std::net::IpAddr, std::net::IpAddr) = (
        "192.0.2.1".parse().unwrap(),
        "192.0.2.2".parse().unwrap(),
        "192.0.2.3".parse().unwrap(),
    );
    let of = |user: &str, conn| Attach {
        user: Some(Arc::from(user)),
        ..c(conn)
    };
    let s0 = store
        .create(offer("s0"), "c0", a, of("u", 0), now)
        .await
        .unwrap();
    lock(&s0).detach(0, now);
    store.persist(&s0).await.unwrap();
    store
        .create(offer("s1"), "c1", a, of("v", 1), now)
        .await
        .unwrap();
    let refused = store.create(offer("s2"), "c2", a, of("w", 2), now).await;
    assert_eq!(refused.err(), Some(TooMany::PerIp), "the away one counts");
    store
        .create(offer("s3"), "c3", b, of("u", 3), now)
        .await
        .unwrap();
    let refused = store.create(offer("s4"), "c4", d, of("u", 4), now).await;
    assert_eq!(refused.err(), Some(TooMany::PerUser));
    store
        .create(offer("s5"), "c5", d, of("w", 5), now)
        .await
        .unwrap();
    store.create(offer("s6"), "c6", b, c(6), now).await.unwrap();
    // Five held: the total refuses first, whatever else is free.
    let refused = store
        .create(offer("s7"), "c7", "192.0.2.9".parse().unwrap(), c(7), now)
        .await;
    assert_eq!(refused.err(), Some(TooMany::Sessions));
    // Ending a user's sessions gives their places back.
    assert_eq!(store.end_user("u").await, 2);
    store
        .create(offer("s8"), "c8", d, of("u", 8), now)
        .await
        .unwrap();
    store
        .create(offer("s9"), "c9", a, of("x", 9), now)
        .await
        .unwrap();
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
    assert!(store.detached_of("c").await.unwrap().is_some());
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
async fn sessions_are_capped_per_owner_address() {
    let now = Instant::now();
    let mut per_ip = limits(10);
    per_ip.caps.total = 100;
    per_ip.caps.per_ip = 2;
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
    tight.caps.total = 10;
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
