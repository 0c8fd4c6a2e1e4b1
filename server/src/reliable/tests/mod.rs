//! The session store's behaviour, written against [`SessionStore`] so
//! that every store runs the same tests: `on_both_stores!` runs each test
//! named in it once in memory (`on_memory::`) and once in Redis
//! (`on_redis::`, against a `redis-server` of its own on a free port; a
//! missing `redis-server` fails the test, it is never skipped). The tests
//! of `limits.rs` run in memory only: they move the store's clock forward
//! (`sweep(now + ttl)`), while Redis forgets sessions by its own clock
//! (key TTLs); `redis_only.rs` and `redis_upkeep.rs` cover what
//! differs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use shared::{ResumeFailure, ServerMessage};

use super::*;

/// Which store a test runs against.
enum Kind {
    Memory,
    /// Holds the server for as long as the test runs.
    Redis(testbed::RedisServer),
}

impl Kind {
    fn redis() -> Self {
        Self::Redis(testbed::RedisServer::start().expect(
            "the Redis store's tests need redis-server (`cargo xtask test` installs it; \
             Debian: apt-get install redis-server)",
        ))
    }

    /// A fresh store with `limits`.
    fn store(&self, limits: Limits) -> Store {
        match self {
            Self::Memory => Store::Memory(MemoryStore::new(limits)),
            Self::Redis(redis) => Store::Redis(RedisStore::new(redis_node(&redis.url()), limits)),
        }
    }
}

/// A cluster node on `url` (Redis answers; the node's heartbeat is not
/// started: its `node:{id}` key, which says it is alive, is set once here).
/// Also the channel streams' tests' node.
pub(crate) fn redis_node(url: &str) -> Arc<crate::cluster::Node> {
    redis_node_with(url, &[])
}

/// As [`redis_node`], with more flags.
fn redis_node_with(url: &str, flags: &[&str]) -> Arc<crate::cluster::Node> {
    use clap::Parser;
    let base = ["server", "--redis-url", url];
    let config = crate::Config::try_parse_from(base.iter().chain(flags)).unwrap();
    let node = Arc::new(crate::cluster::Node::new(url, &config.cluster).unwrap());
    let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    redis::cmd("SET")
        .arg(format!("ws:node:{}", node.id()))
        .arg("alive")
        .query::<()>(&mut conn)
        .unwrap();
    node
}

/// Runs each named `async fn(Kind)` as two tests, one per store.
macro_rules! on_both_stores {
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

fn limits(history_max: usize) -> Limits {
    Limits {
        history_max,
        history_max_age: Duration::from_secs(60),
        history_max_bytes: usize::MAX,
        ttl: Duration::from_secs(120),
        caps: Caps {
            total: 3,
            per_ip: 0,
            per_user: 0,
        },
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
        user: None,
        signal: Arc::new(Flag::default()),
        protocol: shared::Protocol::V1,
    }
}

/// Connection `conn` and its takeover signal.
fn watched(conn: u64) -> (Attach, Arc<Flag>) {
    let flag = Arc::new(Flag::default());
    let attach = Attach {
        conn,
        user: None,
        signal: flag.clone(),
        protocol: shared::Protocol::V1,
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

mod limits;
mod numbering;
mod redis_only;
mod redis_upkeep;
mod resume;
