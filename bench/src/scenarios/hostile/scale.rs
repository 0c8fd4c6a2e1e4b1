//! The attacks at scale: connection floods, slowloris, non-reading clients,
//! a connect-rate flood, reliable-session exhaustion (on one node and
//! across a cluster's nodes), concurrent bursts.
//! Every loop is bounded in count and in time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use super::net::{self, Ws, metric};
use super::{Outcome, Target};

/// Upgrades opened by many clients: those held, and how the others ended.
struct Opened {
    held: Vec<Ws>,
    /// "101", "503", "429", or an error, counted.
    outcomes: BTreeMap<String, u64>,
    /// Refusals that carried a `Retry-After`.
    with_retry_after: u64,
    seconds: f64,
}

/// `per_source` upgrades on `path` from each of `sources`, `in_flight` at a time.
async fn open_many(
    t: &Target,
    sources: &[u8],
    per_source: usize,
    path: &str,
    in_flight: usize,
) -> Opened {
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(in_flight));
    let mut set = JoinSet::new();
    for round in 0..per_source {
        for &src in sources {
            let _ = round;
            let gate = gate.clone();
            let (addr, path) = (t.addr, path.to_owned());
            set.spawn(async move {
                let _permit = gate.acquire_owned().await;
                net::ws_from(src, addr, &path).await
            });
        }
    }
    let mut opened = Opened {
        held: Vec::new(),
        outcomes: BTreeMap::new(),
        with_retry_after: 0,
        seconds: 0.0,
    };
    while let Some(done) = set.join_next().await {
        let key = match done {
            Ok(Ok(Ok(ws))) => {
                opened.held.push(ws);
                "101".to_owned()
            }
            Ok(Ok(Err((status, retry)))) => {
                opened.with_retry_after += u64::from(retry.is_some());
                status.to_string()
            }
            Ok(Err(why)) => format!("error: {why:#}"),
            Err(why) => format!("task: {why}"),
        };
        *opened.outcomes.entry(key).or_default() += 1;
    }
    opened.seconds = started.elapsed().as_secs_f64();
    opened
}

fn count(map: &BTreeMap<String, u64>, key: &str) -> u64 {
    map.get(key).copied().unwrap_or(0)
}

fn describe(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, n)| format!("{n} × {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// 11,000 upgrades from ten addresses (1,100 each) under the default
/// `--max-connections-per-ip` of 1,000: 10,000 held at once, 1,000 refused.
pub async fn flood(t: &Target) -> Result<Outcome> {
    let sources: Vec<u8> = (10..20).collect();
    let opened = open_many(t, &sources, 1100, "/ws", 256).await;
    let m = net::metrics(t.addr).await?;
    // Held for 3 s with the legitimate client beside it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let open = metric(&m, "ws_connections_open");
    let per_ip = metric(
        &m,
        "ws_rejected_upgrades_total{reason=\"max_connections_per_ip\"}",
    );
    let (accepted, refused) = (
        count(&opened.outcomes, "101"),
        count(&opened.outcomes, "503"),
    );
    let holds = accepted == 10_000
        && refused == 1_000
        && per_ip as u64 == refused
        && opened.with_retry_after == refused;
    drop(opened.held);
    Ok(Outcome {
        tried: format!(
            "11,000 WebSocket upgrades on /ws from 10 addresses (127.0.0.10-19, 1,100 each, 256 in flight), opened in {:.1} s and held 3 s; `--max-connections-per-ip` at its default 1,000 (the connect rate is off here: it has its own phase).",
            opened.seconds
        ),
        held: format!(
            "Upgrades: {}. `ws_connections_open` {open} with the flood held; `ws_rejected_upgrades_total{{reason=\"max_connections_per_ip\"}}` {per_ip}; {} of the refusals carried `Retry-After`.",
            describe(&opened.outcomes),
            opened.with_retry_after
        ),
        holds,
    })
}

/// 3,000 upgrades from ten addresses against `--max-connections 2000`.
pub async fn over_the_cap(t: &Target) -> Result<Outcome> {
    let sources: Vec<u8> = (10..20).collect();
    let opened = open_many(t, &sources, 300, "/ws", 256).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = net::metrics(t.addr).await?;
    let (healthz, _) = net::http(t.addr, "GET", "/healthz", "").await?;
    let slots = metric(&m, "ws_connection_slots");
    let capped = metric(&m, "ws_rejected_upgrades_total{reason=\"max_connections\"}");
    let refused = count(&opened.outcomes, "503");
    let holds = refused > 0
        && count(&opened.outcomes, "101") + refused == 3000
        && slots <= 2000.0
        && opened.with_retry_after == refused
        && healthz == 200;
    drop(opened.held);
    Ok(Outcome {
        tried: format!(
            "3,000 upgrades on /ws from 10 addresses (300 each) against `--max-connections 2000` (the legitimate client holds one slot), opened in {:.1} s, held 3 s.",
            opened.seconds
        ),
        held: format!(
            "Upgrades: {}; {} refusals carried `Retry-After`. `ws_connection_slots` {slots} (cap 2000); `ws_rejected_upgrades_total{{reason=\"max_connections\"}}` {capped} (the legitimate client's fresh connections refused at the full cap count here too). `/healthz` with the cap full: {healthz}. The legitimate client's held connection kept echoing; its fresh connections are refused 503 while the cap is full, as designed.",
            describe(&opened.outcomes),
            opened.with_retry_after
        ),
        holds,
    })
}

/// 3,000 connections dripping their headers one byte a second.
pub async fn slowloris(t: &Target) -> Result<Outcome> {
    const CONNS: usize = 3000;
    const GIVE_UP: Duration = Duration::from_secs(20);
    let before = net::metrics(t.addr).await?;
    let kernel_before = net::tcp_ext();
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(256));
    let mut set = JoinSet::new();
    for i in 0..CONNS {
        let src = 20 + (i % 30) as u8;
        let (addr, gate) = (t.addr, gate.clone());
        set.spawn(async move {
            let mut tcp = {
                let _permit = gate.acquire_owned().await;
                net::tcp_from(src, addr).await?
            };
            let opened = Instant::now();
            tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await?;
            let mut buf = [0u8; 1024];
            let mut got = Vec::new();
            let how = |got: &[u8], end: &str| match got.split(|&b| b == b'\r').next() {
                Some(line) if !line.is_empty() => {
                    format!("answered {:?}", String::from_utf8_lossy(line))
                }
                _ => end.to_owned(),
            };
            while opened.elapsed() < GIVE_UP {
                if let Err(why) = tcp.write_all(b"a").await {
                    return anyhow::Ok(Some((
                        opened.elapsed(),
                        how(&got, &format!("write failed ({:?})", why.kind())),
                    )));
                }
                match tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut buf)).await {
                    Ok(Ok(0)) => return Ok(Some((opened.elapsed(), how(&got, "closed (EOF)")))),
                    Ok(Err(why)) => {
                        return Ok(Some((
                            opened.elapsed(),
                            how(&got, &format!("read failed ({:?})", why.kind())),
                        )));
                    }
                    Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                    Err(_) => {}
                }
            }
            Ok(None)
        });
    }
    let mut dropped = Vec::new();
    let (mut open, mut failed, mut hows) = (0u64, BTreeMap::new(), BTreeMap::new());
    while let Some(done) = set.join_next().await {
        match done {
            Ok(Ok(Some((took, how)))) => {
                let when = if took.as_secs_f64() < 4.5 {
                    "before 4.5 s"
                } else {
                    "at the timeout"
                };
                *hows.entry(format!("{how} {when}")).or_insert(0u64) += 1;
                dropped.push(took.as_secs_f64());
            }
            Ok(Ok(None)) => open += 1,
            Ok(Err(why)) => *failed.entry(format!("{why:#}")).or_insert(0u64) += 1,
            Err(why) => *failed.entry(why.to_string()).or_insert(0u64) += 1,
        }
    }
    dropped.sort_by(f64::total_cmp);
    let kernel_after = net::tcp_ext();
    let kernel = ["ListenOverflows", "ListenDrops", "SyncookiesSent"]
        .map(|k| {
            let delta = kernel_after
                .get(k)
                .copied()
                .unwrap_or(0)
                .saturating_sub(kernel_before.get(k).copied().unwrap_or(0));
            format!("{k} +{delta}")
        })
        .join(", ");
    let early = dropped.iter().filter(|&&s| s < 4.5).count();
    let m = net::metrics(t.addr).await?;
    let key = "http_dropped_total{reason=\"handshake_timeout\"}";
    let counted = metric(&m, key) - metric(&before, key);
    let pct = |q: f64| {
        dropped
            .get(((dropped.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    // 5 s, plus up to 1 s for the drip's read to notice.
    let late = dropped.iter().filter(|&&s| s > 6.5).count();
    // Held: no connection outlived the timeout. Those ended early were not
    // held either; they are reported apart.
    let holds =
        dropped.len() == CONNS && open == 0 && late == 0 && counted as usize + early >= CONNS;
    Ok(Outcome {
        tried: format!(
            "{CONNS} TCP connections from 30 addresses, each sending `GET /healthz HTTP/1.1`, a `Host` and an unfinished header, then one more byte every second, for up to {} s each; all opened and dropped within {:.1} s.",
            GIVE_UP.as_secs(),
            started.elapsed().as_secs_f64()
        ),
        held: format!(
            "{} of {CONNS} ended (time from connect to end: min {:.2} s, median {:.2} s, max {:.2} s; {late} later than 6.5 s; how: {}), {open} still open after {} s{}; `http_dropped_total{{reason=\"handshake_timeout\"}}` grew by {counted}. {early} ended before 4.5 s, not by the server's timeout; the kernel's system-wide counters over the phase: {kernel} (the server listens with a backlog of 1,024, `server::LISTEN_BACKLOG`; connections the kernel could not queue while the server was busy accepting are reset or retried by the kernel, not timed out by the server).",
            dropped.len(),
            pct(0.0),
            pct(0.5),
            pct(1.0),
            describe(&hows),
            GIVE_UP.as_secs(),
            if failed.is_empty() {
                String::new()
            } else {
                format!(", failures: {}", describe(&failed))
            },
        ),
        holds,
    })
}

/// Sends `message` up to `count` times without reading, each send within 5 s,
/// then drains what the server sent for its close code.
async fn without_reading(mut ws: Ws, message: Message, count: usize) -> (usize, String) {
    let mut sent = 0;
    while sent < count {
        match tokio::time::timeout(Duration::from_secs(5), ws.send(message.clone())).await {
            Ok(Ok(())) => sent += 1,
            _ => break,
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let ending = loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => break "still open".to_owned(),
            Ok(None) => break "ended without a close frame".to_owned(),
            Ok(Some(Err(_))) => break "reset without a close frame".to_owned(),
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                break format!("close {}", u16::from(frame.code));
            }
            Ok(Some(Ok(Message::Close(None)))) => break "close without a code".to_owned(),
            Ok(Some(Ok(_))) => {}
        }
    };
    (sent, ending)
}

/// 10 clients sending 60 KB echoes on /ws and 10 sending 16 MiB messages on
/// /echo, none reading.
pub async fn non_reading(t: &Target) -> Result<Outcome> {
    let body = "x".repeat(60_000);
    let small = Message::text(format!(r#"{{"type":"echo","id":1,"body":"{body}"}}"#));
    let big = Message::binary(vec![7u8; 16 * 1024 * 1024]);
    let mut set = JoinSet::new();
    for i in 0..20u8 {
        let (path, message, count) = if i < 10 {
            ("/ws", small.clone(), 2000)
        } else {
            ("/echo", big.clone(), 20)
        };
        let ws = match net::ws_from(50 + i, t.addr, path).await? {
            Ok(ws) => ws,
            Err((status, _)) => anyhow::bail!("a non-reading client was refused {status}"),
        };
        set.spawn(async move { (path, without_reading(ws, message, count).await) });
    }
    // The server's own accounting while they push.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut peak_queue = 0.0f64;
    let closes = loop {
        let m = net::metrics(t.addr).await?;
        peak_queue = peak_queue.max(metric(&m, "ws_send_queue_bytes"));
        let closes = metric(&m, "ws_slow_consumer_closes_total");
        if closes >= 20.0 || Instant::now() > deadline {
            break closes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut endings: BTreeMap<String, u64> = BTreeMap::new();
    let mut sent = BTreeMap::<&str, usize>::new();
    while let Some(done) = set.join_next().await {
        if let Ok((path, (n, ending))) = done {
            *sent.entry(path).or_default() += n;
            *endings.entry(format!("{path}: {ending}")).or_default() += 1;
        }
    }
    let m = net::metrics(t.addr).await?;
    let queue_after = metric(&m, "ws_send_queue_bytes");
    // The configured bound: 1 MiB behind one admitted message, per connection.
    let bound = 10.0 * (1_048_576.0 + 60_100.0) + 10.0 * (1_048_576.0 + 16.0 * 1_048_576.0);
    let holds = closes >= 20.0 && peak_queue <= bound && queue_after == 0.0;
    Ok(Outcome {
        tried: format!(
            "20 clients that never read: 10 on /ws sending typed 60 KB echoes (up to 2,000 each; {} sent in all) and 10 on /echo sending 16 MiB binary messages (up to 20 each; {} sent), each send given 5 s.",
            sent.get("/ws").copied().unwrap_or(0),
            sent.get("/echo").copied().unwrap_or(0)
        ),
        held: format!(
            "`ws_slow_consumer_closes_total` {closes} of 20 (closed with 1013 after `--write-timeout 2s`); peak `ws_send_queue_bytes` across all of them {:.1} MiB (bound by `--send-queue-bytes`: 1 MiB behind one admitted message per connection, {:.1} MiB for these 20), {queue_after} after. What the clients read when they drained at the end: {} (a client that never reads cannot see the 1013 close frame: it waits behind the data it left unread, and a socket closed with unread input is reset by the kernel, which discards both).",
            peak_queue / 1_048_576.0,
            bound / 1_048_576.0,
            describe(&endings)
        ),
        holds,
    })
}

/// 1,000 upgrades from one address as fast as 20 at a time go, under the
/// default rate (50/s, burst 100).
pub async fn connect_rate(t: &Target) -> Result<Outcome> {
    let before = net::metrics(t.addr).await?;
    let opened = open_many(t, &[60], 1000, "/echo", 20).await;
    drop(opened.held);
    let m = net::metrics(t.addr).await?;
    let key = "ws_rejected_upgrades_total{reason=\"connect_rate\"}";
    let counted = metric(&m, key) - metric(&before, key);
    let limited = count(&opened.outcomes, "429");
    let accepted = count(&opened.outcomes, "101");
    // The bucket allows at most its burst plus the rate over the time taken.
    let allowed = 100.0 + 50.0 * opened.seconds;
    let holds = limited > 0
        && counted as u64 == limited
        && opened.with_retry_after == limited
        && accepted as f64 <= allowed + 1.0;
    Ok(Outcome {
        tried: format!(
            "1,000 upgrades on /echo from one address (127.0.0.60), 20 in flight, each accepted one closed at once; took {:.1} s.",
            opened.seconds
        ),
        held: format!(
            "Upgrades: {} (the bucket allows at most 100 + 50/s × {:.1} s = {allowed:.0}); {} of the 429s carried `Retry-After`; `ws_rejected_upgrades_total{{reason=\"connect_rate\"}}` grew by {counted}. The legitimate client's address was not limited (see its fresh welcomes).",
            describe(&opened.outcomes),
            opened.seconds,
            opened.with_retry_after
        ),
        holds,
    })
}

/// A reliable connection that sends its first numbered message (an ack):
/// whether the server kept it (`None`) or closed it (the code).
async fn store_session(src: u8, t: &Target) -> Result<(Option<u16>, Ws)> {
    let mut ws = match net::ws_from(src, t.addr, "/ws?reliable=1").await? {
        Ok(ws) => ws,
        Err((status, _)) => anyhow::bail!("refused {status}"),
    };
    // The welcome, then the first numbered message stores the session.
    let _ = tokio::time::timeout(net::IO_TIMEOUT, ws.next()).await?;
    ws.send(Message::text(r#"{"type":"ack","seq":0}"#)).await?;
    let code = match tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
        Err(_) => None,
        Ok(Some(Ok(Message::Close(frame)))) => Some(frame.map_or(0, |f| u16::from(f.code))),
        Ok(_) => Some(0),
    };
    Ok((code, ws))
}

/// 300 reliable sessions from one address under `--max-sessions-per-ip 100`,
/// then 20 from another.
pub async fn sessions(t: &Target) -> Result<Outcome> {
    let mut set = JoinSet::new();
    for _ in 0..300 {
        let target = t.clone();
        set.spawn(async move { store_session(70, &target).await });
    }
    let (mut held, mut outcomes) = (Vec::new(), BTreeMap::new());
    while let Some(done) = set.join_next().await {
        let key = match done {
            Ok(Ok((None, ws))) => {
                held.push(ws);
                "stored".to_owned()
            }
            Ok(Ok((Some(code), _))) => format!("closed {code}"),
            Ok(Err(why)) => format!("error: {why:#}"),
            Err(why) => format!("task: {why}"),
        };
        *outcomes.entry(key).or_default() += 1;
    }
    let stored = net::metrics(t.addr).await?;
    let sessions_one = metric(&stored, "ws_reliable_sessions");
    // Another address: a session each, and a numbered echo.
    let mut other_ok = 0;
    for _ in 0..20 {
        if let Ok(Ok(mut ws)) = net::ws_from(71, t.addr, "/ws?reliable=1").await {
            let _ = tokio::time::timeout(net::IO_TIMEOUT, ws.next()).await;
            let echo = shared::ClientMessage::Echo {
                id: 1,
                body: "mine".into(),
            }
            .to_json();
            if ws.send(Message::text(echo)).await.is_ok()
                && let Ok(Some(Ok(Message::Text(reply)))) =
                    tokio::time::timeout(net::IO_TIMEOUT, ws.next()).await
                && reply.starts_with(r#"{"type":"msg","seq":1"#)
            {
                other_ok += 1;
                held.push(ws);
            }
        }
    }
    let m = net::metrics(t.addr).await?;
    let sessions_all = metric(&m, "ws_reliable_sessions");
    let holds = count(&outcomes, "stored") == 100
        && count(&outcomes, "closed 1013") == 200
        && other_ok == 20;
    drop(held);
    Ok(Outcome {
        tried: "300 reliable connections (`/ws?reliable=1`) from one address (127.0.0.70), each acknowledging to store its session and held open; then 20 from another address (127.0.0.71), each sending a numbered echo.".into(),
        held: format!(
            "First address: {}; `ws_reliable_sessions` {sessions_one} after it. Other address: {other_ok} of 20 got a session and their echo as `msg` seq 1; `ws_reliable_sessions` {sessions_all} in all.",
            describe(&outcomes)
        ),
        holds,
    })
}

/// A reliable connection that stores its session (an `ack`, then an echo
/// to learn whether it was stored) and leaves: `None` when it was stored
/// (the echo came back numbered), else the close frame's code and reason.
async fn store_and_leave(src: u8, node: SocketAddr) -> Result<Option<(u16, String)>> {
    let mut ws = match net::ws_from(src, node, "/ws?reliable=1").await? {
        Ok(ws) => ws,
        Err((status, _)) => anyhow::bail!("refused {status}"),
    };
    // The welcome; the ack stores the session or is closed with 1013.
    let _ = tokio::time::timeout(net::IO_TIMEOUT, ws.next()).await?;
    ws.send(Message::text(r#"{"type":"ack","seq":0}"#)).await?;
    let echo = shared::ClientMessage::Echo {
        id: 1,
        body: "stored?".into(),
    }
    .to_json();
    ws.send(Message::text(echo)).await?;
    let deadline = tokio::time::Instant::now() + net::IO_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => anyhow::bail!("neither the echo nor a close frame within 10 s"),
            Ok(Some(Ok(Message::Text(text)))) if text.starts_with(r#"{"type":"msg""#) => {
                // Leaves: the session stays in Redis for --session-ttl.
                let _ = ws.close(None).await;
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
                return Ok(None);
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Ok(Some(frame.map_or((0, String::new()), |f| {
                    (u16::from(f.code), f.reason.as_str().to_owned())
                })));
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(why))) => return Err(why.into()),
            Ok(None) => anyhow::bail!("ended without a close frame"),
        }
    }
}

fn attempt_key(result: &Result<Option<(u16, String)>>) -> String {
    match result {
        Ok(None) => "stored".to_owned(),
        Ok(Some((code, reason))) => format!("closed {code} {reason:?}"),
        Err(why) => format!("error: {why:#}"),
    }
}

/// Issue 25, item 1: one address (127.0.0.90) stores a reliable session
/// and leaves, 300 times, rotating over three nodes sharing Redis, 8 at a
/// time, against `--max-sessions-per-ip 40`; then one more attempt on each
/// node. The cap counts every node's sessions: at most 40 stored in all
/// (by the attempts, and by Redis's own count), the later attempts closed
/// with 1013 on every node.
pub async fn cluster_sessions(t: &Target) -> Result<Outcome> {
    const ATTEMPTS: usize = 300;
    /// The phase's `--max-sessions-per-ip`.
    const CAP: u64 = 40;
    const SRC: u8 = 90;
    const REFUSED: &str = "closed 1013 \"too many reliable sessions\"";
    let redis = t.redis.context("a cluster phase has its redis-server")?;
    let nodes: Vec<SocketAddr> = std::iter::once(t.addr)
        .chain(t.others.iter().copied())
        .collect();
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(8));
    let mut set = JoinSet::new();
    for i in 0..ATTEMPTS {
        let (node, gate) = (i % nodes.len(), gate.clone());
        let addr = nodes[node];
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            (node, store_and_leave(SRC, addr).await)
        });
    }
    let mut per_node = vec![BTreeMap::<String, u64>::new(); nodes.len()];
    let mut all = BTreeMap::<String, u64>::new();
    while let Some(done) = set.join_next().await {
        let (node, key) = match done {
            Ok((node, result)) => (node, attempt_key(&result)),
            Err(why) => (0, format!("task: {why}")),
        };
        *per_node[node].entry(key.clone()).or_default() += 1;
        *all.entry(key).or_default() += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    // Later: one more on each node, in turn.
    let mut later = Vec::new();
    for &node in &nodes {
        later.push(attempt_key(&store_and_leave(SRC, node).await));
    }
    let counted =
        net::redis_integer(redis, &["ZCARD", &format!("ws:count:ip:127.0.0.{SRC}")]).await? as u64;
    let mut local = Vec::new();
    for &node in &nodes {
        local.push(metric(&net::metrics(node).await?, "ws_reliable_sessions"));
    }
    let stored = count(&all, "stored");
    let refused = count(&all, REFUSED);
    let holds = stored <= CAP
        && counted <= CAP
        && stored + refused == ATTEMPTS as u64
        && later.iter().all(|key| key == REFUSED);
    let nodes_text: Vec<String> = per_node
        .iter()
        .zip(&local)
        .enumerate()
        .map(|(n, (outcomes, sessions))| {
            format!(
                "node hostile-{n}: {} (`ws_reliable_sessions` {sessions} after)",
                describe(outcomes)
            )
        })
        .collect();
    Ok(Outcome {
        tried: format!(
            "{ATTEMPTS} reliable connections (`/ws?reliable=1`) from one address (127.0.0.{SRC}), each sending `{{\"type\":\"ack\",\"seq\":0}}` (which stores its session) and an echo (answered as a numbered `msg` once stored), then closing; rotating over the {} nodes, 8 at a time; took {seconds:.1} s. Then one more attempt on each node, in turn.",
            nodes.len()
        ),
        held: format!(
            "{stored} sessions stored in all (cap {CAP}), {refused} attempts closed with 1013 \"too many reliable sessions\"; Redis's count (`ZCARD ws:count:ip:127.0.0.{SRC}`) {counted}. By node: {}. The later attempts: {}.",
            nodes_text.join("; "),
            later
                .iter()
                .enumerate()
                .map(|(n, key)| format!("hostile-{n}: {key}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        holds,
    })
}

/// 32 raw clients each asking `/ws?burst=1000000` and reading it all (bytes
/// discarded, so the client side costs little), up to 150 s.
pub async fn bursts(t: &Target) -> Result<Outcome> {
    const CLIENTS: usize = 32;
    let started = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..CLIENTS {
        let addr = t.addr;
        set.spawn(async move {
            let mut tcp = net::tcp_from(80 + (i % 8) as u8, addr).await?;
            let status = net::raw_upgrade(&mut tcp, addr, "/ws?burst=1000000").await?;
            anyhow::ensure!(status == 101, "the burst upgrade got {status}");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
            let mut buf = vec![0u8; 256 * 1024];
            let mut tail: Vec<u8> = Vec::new();
            let mut bytes = 0u64;
            loop {
                let n = match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
                    Err(_) | Ok(Ok(0) | Err(_)) => return anyhow::Ok((false, bytes)),
                    Ok(Ok(n)) => n,
                };
                bytes += n as u64;
                // The marker may straddle two reads: keep the last bytes.
                tail.extend_from_slice(&buf[..n.min(buf.len())]);
                if tail.windows(10).any(|w| w == b"burst_done") {
                    return Ok((true, bytes));
                }
                let keep = tail.len().saturating_sub(16);
                tail.drain(..keep);
            }
        });
    }
    let (mut done, mut bytes, mut failed) = (0, 0u64, Vec::new());
    while let Some(result) = set.join_next().await {
        match result {
            Ok(Ok((finished, n))) => {
                done += usize::from(finished);
                bytes += n;
            }
            Ok(Err(why)) => failed.push(format!("{why:#}")),
            Err(why) => failed.push(why.to_string()),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let holds = done == CLIENTS;
    Ok(Outcome {
        tried: format!(
            "{CLIENTS} connections each asking `/ws?burst=1000000` at once and reading every push (raw reads, bytes discarded), up to 150 s."
        ),
        held: format!(
            "{done} of {CLIENTS} bursts completed (`burst_done` received) in {seconds:.1} s: {:.1} MB read, {:.2} M pushes/s across them{}.",
            bytes as f64 / 1e6,
            (done as f64 * 1e6) / seconds / 1e6,
            if failed.is_empty() {
                String::new()
            } else {
                format!("; failures: {}", failed.join("; "))
            }
        ),
        holds,
    })
}
