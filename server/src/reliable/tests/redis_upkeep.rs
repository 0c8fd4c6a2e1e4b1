//! The Redis store's upkeep and its answers to what Redis holds: a
//! session Redis lost, a stale node's sweep, the TTL of a session away, a
//! detach Redis did not take, aging away, the takeover before a node's
//! first heartbeat, a user's set, and bad data read back.

use redis::AsyncCommands;

use super::*;

/// Records both signals of its connection.
#[derive(Debug, Default)]
struct Signals {
    taken: AtomicBool,
    unavailable: AtomicBool,
}

impl TakeoverSignal for Signals {
    fn taken_over(&self) {
        self.taken.store(true, Ordering::SeqCst);
    }

    fn store_unavailable(&self) {
        self.unavailable.store(true, Ordering::SeqCst);
    }
}

fn signalled(conn: u64) -> (Attach, Arc<Signals>) {
    let signals = Arc::new(Signals::default());
    let attach = Attach {
        conn,
        user: None,
        signal: signals.clone(),
        protocol: shared::Protocol::V1,
    };
    (attach, signals)
}

/// A node and its store on `redis`, with `limits`.
fn node(redis: &testbed::RedisServer, limits: Limits) -> (Arc<crate::cluster::Node>, Store) {
    let node = redis_node(&redis.url());
    let store = Store::Redis(RedisStore::new(node.clone(), limits));
    (node, store)
}

async fn raw(redis: &testbed::RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn server() -> testbed::RedisServer {
    testbed::RedisServer::start().expect("redis-server")
}

#[tokio::test]
async fn a_session_redis_lost_closes_for_a_fresh_start_not_as_a_takeover() {
    let now = Instant::now();
    let redis = server();
    let (_, a) = node(&redis, limits(10));
    let s = first(&a).await;
    let (idle, signals) = signalled(2);
    let quiet = a.create(offer("q"), "cq", HOME, idle, now).await.unwrap();
    a.persist(&quiet).await.unwrap();
    // Redis restarted empty (persistence off).
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut raw(&redis).await)
        .await
        .unwrap();
    lock(&s).send(To::Connection(1), push(1), now).unwrap();
    assert_eq!(
        a.persist(&s).await,
        Err(Unwritten::Gone),
        "not a takeover (4002 would stop the client)"
    );
    // The idle one hears of it at the sweep: 1013, not 4002.
    a.sweep(now).await;
    assert!(signals.unavailable.load(Ordering::SeqCst));
    assert!(!signals.taken.load(Ordering::SeqCst));
    assert_eq!(a.persist(&quiet).await, Err(Unwritten::Gone));
}

#[tokio::test]
async fn a_stale_node_neither_keeps_a_session_alive_nor_its_idle_connection_open() {
    let now = Instant::now();
    let redis = server();
    let (_, a) = node(&redis, limits(10));
    let (_, b) = node(&redis, limits(10));
    let (attach, signals) = signalled(1);
    let s = a.create(offer("s"), "c", HOME, attach, now).await.unwrap();
    a.persist(&s).await.unwrap();
    // B resumes; A never hears the takeover command (no reader runs here).
    let (r, _) = b.resume("s", "t", 0, "c", c(2), now).await.unwrap();
    lock(&r).detach(2, now);
    b.persist(&r).await.unwrap();
    let away_ttl: i64 = raw(&redis).await.pttl("ws:sess:s").await.unwrap();
    a.sweep(now).await;
    assert!(
        signals.taken.load(Ordering::SeqCst),
        "A's idle connection closes with 4002"
    );
    assert_eq!(a.len().await, 0);
    let ttl: i64 = raw(&redis).await.pttl("ws:sess:s").await.unwrap();
    assert!(ttl <= away_ttl, "A did not extend it: {ttl} > {away_ttl}");
}

#[tokio::test]
async fn the_ttl_of_a_session_away_runs_from_when_its_client_left() {
    let now = Instant::now();
    let redis = server();
    let (_, a) = node(&redis, limits(10));
    let (_, b) = node(&redis, limits(10));
    let s = first(&a).await;
    // Left 100 s ago, of a 120 s TTL.
    let left = now.checked_sub(Duration::from_secs(100)).unwrap();
    lock(&s).detach(1, left);
    a.persist(&s).await.unwrap();
    let pttl = || async { raw(&redis).await.pttl::<_, i64>("ws:sess:s").await.unwrap() };
    let ttl = pttl().await;
    assert!((1..=20_500).contains(&ttl), "{ttl} ms");
    // A push to it does not prolong it.
    let away = b.detached_of("c").await.unwrap().unwrap();
    lock(&away).send(To::Away, push(1), now).unwrap();
    b.persist(&away).await.unwrap();
    let ttl = pttl().await;
    assert!((1..=20_500).contains(&ttl), "{ttl} ms after a push");
}

#[tokio::test]
async fn a_detach_redis_did_not_take_is_written_once_it_answers() {
    let now = Instant::now();
    let mut redis = testbed::RedisServer::start_persistent().expect("redis-server");
    let (_, a) = node(&redis, limits(10));
    let (_, b) = node(&redis, limits(10));
    let s = first(&a).await;
    lock(&s).send(To::Connection(1), push(1), now).unwrap();
    a.persist(&s).await.unwrap();
    redis.stop().unwrap();
    lock(&s).detach(1, now);
    a.detached(&s).await;
    redis.restart().unwrap();
    // The sweep writes it once Redis answers: the client is away again,
    // and a push to it is stored rather than answered 404.
    let deadline = Instant::now() + Duration::from_secs(10);
    let away = loop {
        a.sweep(Instant::now()).await;
        if let Some(away) = b.detached_of("c").await.unwrap() {
            break away;
        }
        assert!(Instant::now() < deadline, "the detach was never written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    lock(&away).send(To::Away, push(2), now).unwrap();
    b.persist(&away).await.unwrap();
    let (_, resume) = b.resume("s", "t", 0, "c", c(3), now).await.unwrap();
    let seqs: Vec<u64> = resume.replay.iter().map(seq_of).collect();
    assert_eq!(seqs, [1, 2]);
}

#[tokio::test]
async fn the_sweep_ages_the_history_of_a_session_away_in_redis() {
    let now = Instant::now();
    let redis = server();
    let (_, a) = node(&redis, limits(10));
    let (_, b) = node(&redis, limits(10));
    let s = first(&a).await;
    let old = now.checked_sub(Duration::from_secs(120)).unwrap();
    lock(&s).send(To::Connection(1), push(1), old).unwrap();
    lock(&s).send(To::Connection(1), push(2), now).unwrap();
    lock(&s).detach(1, now);
    a.persist(&s).await.unwrap();
    // A push loaded before the aging must not trim from a stale view.
    let loaded = b.detached_of("c").await.unwrap().unwrap();
    a.sweep(now).await;
    let mut conn = raw(&redis).await;
    let held: Vec<String> = conn.lrange("ws:hist:s", 0, -1).await.unwrap();
    assert_eq!(
        held.len(),
        1,
        "the message older than the age is gone from Redis"
    );
    let lost: String = conn.hget("ws:sess:s", "lost_through").await.unwrap();
    assert_eq!(lost, "1");
    lock(&loaded).send(To::Away, push(3), now).unwrap();
    assert_eq!(b.persist(&loaded).await, Err(Unwritten::TakenOver));
    let (_, resume) = b.resume("s", "t", 0, "c", c(2), now).await.unwrap();
    assert_eq!(resume.gap, Some((1, 1)));
    let seqs: Vec<u64> = resume.replay.iter().map(seq_of).collect();
    assert_eq!(seqs, [2]);
}

#[tokio::test]
async fn a_takeover_is_sent_before_the_first_heartbeat() {
    let now = Instant::now();
    let redis = server();
    let (node_a, a) = node(&redis, limits(10));
    // B never heartbeats (not started): its resume still tells A.
    let (_, b) = node(&redis, limits(10));
    let s = first(&a).await;
    a.persist(&s).await.unwrap();
    b.resume("s", "t", 0, "c", c(2), now).await.unwrap();
    let stream = format!("ws:cmd:{}", node_a.id());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let sent: usize = raw(&redis).await.xlen(&stream).await.unwrap();
        if sent > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no takeover command on {stream}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_users_set_forgets_the_sessions_that_expired() {
    let now = Instant::now();
    let redis = server();
    let short = Limits {
        ttl: Duration::from_millis(100),
        ..limits(10)
    };
    let (_, a) = node(&redis, short);
    let of_u = |conn| Attach {
        user: Some(Arc::from("u")),
        ..c(conn)
    };
    let s1 = a
        .create(offer("s1"), "c", HOME, of_u(1), now)
        .await
        .unwrap();
    lock(&s1).detach(1, now);
    a.persist(&s1).await.unwrap();
    let mut conn = raw(&redis).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while conn.exists::<_, bool>("ws:sess:s1").await.unwrap() {
        assert!(Instant::now() < deadline, "s1 never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.create(offer("s2"), "c", HOME, of_u(2), now)
        .await
        .unwrap();
    let members: Vec<String> = conn.smembers("ws:user:u").await.unwrap();
    assert_eq!(members, ["s2"]);
    let counted: Vec<String> = conn.zrange("ws:count:user:u", 0, -1).await.unwrap();
    assert_eq!(counted, ["s2"], "the user's count forgot s1 too");
}

#[tokio::test]
async fn a_live_session_whose_count_fell_behind_stays_counted_and_in_its_users_set() {
    let now = Instant::now();
    let redis = server();
    let (_, a) = node(&redis, limits(10));
    let of_u = |conn| Attach {
        user: Some(Arc::from("u")),
        ..c(conn)
    };
    a.create(offer("s1"), "c", HOME, of_u(1), now)
        .await
        .unwrap();
    let mut conn = raw(&redis).await;
    // Its scores passed while its keys live on (its node was killed
    // between two sweeps, or an older node keeps it without counting).
    for key in ["ws:count:all", "ws:count:ip:127.0.0.1", "ws:count:user:u"] {
        conn.zadd::<_, _, _, ()>(key, "s1", 1).await.unwrap();
    }
    a.create(offer("s2"), "c2", HOME, of_u(2), now)
        .await
        .unwrap();
    let mut members: Vec<String> = conn.smembers("ws:user:u").await.unwrap();
    members.sort();
    assert_eq!(members, ["s1", "s2"]);
    for key in ["ws:count:all", "ws:count:ip:127.0.0.1", "ws:count:user:u"] {
        let score: Option<f64> = conn.zscore(key, "s1").await.unwrap();
        assert!(
            score.is_some_and(|s| s > 1.0),
            "{key}: s1 scored again, {score:?}"
        );
    }
    // A resume puts it back in its user's set, should it be missing.
    conn.srem::<_, _, ()>("ws:user:u", "s1").await.unwrap();
    a.resume("s1", "t", 0, "c", of_u(3), now).await.unwrap();
    let mut members: Vec<String> = conn.smembers("ws:user:u").await.unwrap();
    members.sort();
    assert_eq!(members, ["s1", "s2"]);
}

#[tokio::test]
async fn numbers_out_of_range_read_from_redis_do_not_panic() {
    let now = Instant::now();
    let redis = server();
    let (_, a) = node(&redis, limits(10));
    let s = first(&a).await;
    lock(&s).detach(1, now);
    a.persist(&s).await.unwrap();
    let mut conn = raw(&redis).await;
    let max = u64::MAX.to_string();
    conn.hset::<_, _, _, ()>("ws:sess:s", "detached_at", &max)
        .await
        .unwrap();
    let frame = shared::encode_msg(1, r#"{"type":"pong","t":1}"#, shared::Protocol::V1);
    let line = format!("1 {max} {frame}");
    conn.rpush::<_, _, ()>("ws:hist:s", line).await.unwrap();
    conn.hset::<_, _, _, ()>("ws:sess:s", "last_out", "1")
        .await
        .unwrap();
    let (_, resume) = a.resume("s", "t", 0, "c", c(2), now).await.unwrap();
    assert_eq!(resume.replay, [frame.as_str()]);
    // A line that does not parse: the resume fails, clearly.
    lock(&a.resume("s", "t", 0, "c", c(3), now).await.unwrap().0).detach(3, now);
    conn.rpush::<_, _, ()>("ws:hist:s", "not a line")
        .await
        .unwrap();
    let failed = a.resume("s", "t", 0, "c", c(4), now).await;
    assert_eq!(failed.err(), Some(ResumeFailure::UnknownSession.into()));
}

/// A node whose Redis commands time out after `timeout`.
fn impatient(redis: &testbed::RedisServer, timeout: &str, limits: Limits) -> Store {
    let node = redis_node_with(&redis.url(), &["--cluster-command-timeout", timeout]);
    Store::Redis(RedisStore::new(node, limits))
}

#[tokio::test]
async fn a_write_redis_applies_after_its_timeout_is_unconfirmed_not_unavailable() {
    let now = Instant::now();
    let redis = server();
    let (_, a) = node(&redis, limits(10));
    let b = impatient(&redis, "200ms", limits(10));
    let s = first(&a).await;
    lock(&s).detach(1, now);
    a.persist(&s).await.unwrap();
    let away = b.detached_of("c").await.unwrap().unwrap();
    // Redis holds every write (scripts included) for a while, then runs it.
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1000)
        .arg("WRITE")
        .query_async::<()>(&mut raw(&redis).await)
        .await
        .unwrap();
    lock(&away).send(To::Away, push(1), now).unwrap();
    // "Unavailable" would tell the admin API to answer 503 (retry), and a
    // retry would store the push twice.
    assert_eq!(b.persist(&away).await, Err(Unwritten::Unconfirmed));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let held: usize = raw(&redis).await.llen("ws:hist:s").await.unwrap();
        if held == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the paused write never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_push_to_a_client_of_a_dead_node_is_stored_and_fences_that_node() {
    let now = Instant::now();
    let redis = server();
    let (node_a, a) = node(&redis, limits(10));
    let (_, b) = node(&redis, limits(10));
    let s = first(&a).await;
    lock(&s).send(To::Connection(1), push(1), now).unwrap();
    a.persist(&s).await.unwrap();
    assert!(
        b.detached_of("c").await.unwrap().is_none(),
        "attached on a live node"
    );
    // A dies (SIGKILL: no detach written); its heartbeat key expires.
    let mut conn = raw(&redis).await;
    conn.del::<_, ()>(format!("ws:node:{}", node_a.id()))
        .await
        .unwrap();
    let away = b
        .detached_of("c")
        .await
        .unwrap()
        .expect("away: its node is dead");
    lock(&away).send(To::Away, push(2), now).unwrap();
    b.persist(&away).await.unwrap();
    // Had A only been cut off, its next write is refused, and not as a
    // takeover (4002 would stop its client; 1013 makes it resume).
    lock(&s).send(To::Connection(1), push(3), now).unwrap();
    assert_eq!(a.persist(&s).await, Err(Unwritten::Raced));
    let (_, resume) = b.resume("s", "t", 0, "c", c(2), now).await.unwrap();
    let pushes: Vec<u64> = resume.replay.iter().map(push_seq_of).collect();
    assert_eq!(pushes, [1, 2]);
}
