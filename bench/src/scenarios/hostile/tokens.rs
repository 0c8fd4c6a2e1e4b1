//! The attacks of token mode (issue 25, items 4 and 7): connections that
//! keep the read side busy so that their token's expiry would be starved,
//! and a flood of bogus refreshes. Tokens are minted with the testbed's
//! test secret, which the phase's server is started with. Every loop is
//! bounded in count and in time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use super::net::{self, Ending};
use super::{Outcome, Target};
use crate::harness::proc_stats::cpu_seconds;

/// Seconds since the epoch, with their fraction.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// `sorted[q]` by nearest rank (NaN when empty).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn describe(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, n)| format!("{n} × {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How one connection of the deadline phase ended.
struct Expired {
    flooded: bool,
    ending: Ending,
    /// Seconds from the token's `exp` to the close frame read (negative: before it).
    late: f64,
    /// Bytes of pong frames written.
    flood_bytes: u64,
}

/// Pong frames written back to back, as one buffer.
fn pongs() -> Vec<u8> {
    let one = net::frame(0x8A, b"flood", true);
    one.repeat(4096)
}

/// A raw connection whose token expires at the next whole second past 2 s
/// from now (2 to 3 s, `exp` being whole seconds), and, when `flood`, pong
/// frames written without pause until it ends; how it ended and when.
async fn expire(
    n: usize,
    server: SocketAddr,
    flood: bool,
    gate: Arc<Semaphore>,
) -> Result<Expired> {
    const GIVE_UP: Duration = Duration::from_secs(10);
    let src = 100 + (n % 10) as u8;
    let (tcp, exp) = {
        let _permit = gate.acquire_owned().await?;
        let mut tcp = net::tcp_from(src, server).await?;
        // Minted once connected, so that a busy machine cannot expire it first.
        let exp = unix_now().ceil() as u64 + 2;
        let token = testbed::try_mint_token_until(&format!("deadline-{n}"), exp)?;
        let status = net::raw_upgrade(&mut tcp, server, &format!("/ws?token={token}")).await?;
        anyhow::ensure!(status == 101, "the upgrade got {status}");
        (tcp, exp)
    };
    let (mut read, mut write) = tcp.into_split();
    let written = Arc::new(AtomicU64::new(0));
    // An idle connection keeps its write half: dropping it would send a FIN.
    let (writer, _idle) = if flood {
        let written = written.clone();
        let writer = tokio::spawn(async move {
            let batch = pongs();
            while write.write_all(&batch).await.is_ok() {
                written.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
        });
        (Some(writer), None)
    } else {
        (None, Some(write))
    };
    let within = Duration::from_secs_f64((exp as f64 - unix_now()).max(0.0)) + GIVE_UP;
    let ending = net::ending(&mut read, within).await;
    let late = unix_now() - exp as f64;
    if let Some(writer) = writer {
        writer.abort();
    }
    Ok(Expired {
        flooded: flood,
        ending,
        late,
        flood_bytes: written.load(Ordering::Relaxed),
    })
}

/// Item 4: 200 connections each writing pong frames without pause, whose
/// tokens expire 2 to 3 s after they connect, and 20 idle ones beside them
/// (connected first) as the baseline: each must be closed with 4003 at its
/// `exp` (`--jwt-leeway 0s`), however busy its read side. How late the
/// idle ones are is what the loaded machine (server, attacker, other work)
/// adds; a flooded one may be at most [`MARGIN`] later than the latest of
/// them.
pub async fn deadlines(t: &Target) -> Result<Outcome> {
    const FLOODED: usize = 200;
    const IDLE: usize = 20;
    /// How much later than the idle baseline a flooded close may come. A
    /// loop that checks its deadlines at every turn closes within a turn
    /// (milliseconds); one whose timer was starved by its stream closed 5 s
    /// late, or never.
    const MARGIN: f64 = 1.0;
    let cpu_before = cpu_seconds(t.pid)?;
    let gate = Arc::new(Semaphore::new(64));
    let mut set = JoinSet::new();
    for n in 0..IDLE + FLOODED {
        set.spawn(expire(n, t.addr, n >= IDLE, gate.clone()));
    }
    let (mut flooded, mut idle) = (Vec::new(), Vec::new());
    let (mut endings, mut failed) = (BTreeMap::<String, u64>::new(), Vec::new());
    let mut flood_bytes = 0u64;
    while let Some(done) = set.join_next().await {
        match done {
            Ok(Ok(expired)) => {
                let group = if expired.flooded { "flooded" } else { "idle" };
                let how = match expired.ending {
                    Ending::Close(code) => format!("close {code}"),
                    Ending::Dropped => "dropped without a close frame".into(),
                    Ending::Open => "still open 10 s after exp".into(),
                };
                *endings.entry(format!("{group}: {how}")).or_default() += 1;
                if expired.ending == Ending::Close(4003) {
                    if expired.flooded {
                        flooded.push(expired.late);
                    } else {
                        idle.push(expired.late);
                    }
                }
                flood_bytes += expired.flood_bytes;
            }
            Ok(Err(why)) => failed.push(format!("{why:#}")),
            Err(why) => failed.push(why.to_string()),
        }
    }
    let cpu = cpu_seconds(t.pid)? - cpu_before;
    flooded.sort_by(f64::total_cmp);
    idle.sort_by(f64::total_cmp);
    let early = flooded
        .iter()
        .chain(&idle)
        .filter(|&&late| late < 0.0)
        .count();
    let max = quantile(&flooded, 1.0);
    let allowed = quantile(&idle, 1.0) + MARGIN;
    let holds = flooded.len() == FLOODED
        && idle.len() == IDLE
        && early == 0
        && max <= allowed
        && failed.is_empty();
    let ms = |s: f64| format!("{:.0} ms", s * 1000.0);
    Ok(Outcome {
        tried: format!(
            "{FLOODED} connections in token mode (their tokens expiring 2 to 3 s after they connect, `--jwt-leeway 0s`), each writing pong frames back to back without pause from its upgrade on, so that its read side always has a frame ready ({:.0} MB of pongs in all); beside them, connected first, {IDLE} idle connections with tokens of the same kind, as the baseline of how late a close frame is read on this machine.",
            flood_bytes as f64 / 1e6
        ),
        held: format!(
            "Endings: {}. Time from `exp` to the 4003 close frame read: flooded connections p50 {}, p99 {}, max {}; the idle baseline p50 {}, max {}; allowed for the flooded: the baseline's max + {} = {}; {early} closed before `exp`. The server used {cpu:.2} CPU-seconds over the phase.{}",
            describe(&endings),
            ms(quantile(&flooded, 0.5)),
            ms(quantile(&flooded, 0.99)),
            ms(max),
            ms(quantile(&idle, 0.5)),
            ms(quantile(&idle, 1.0)),
            ms(MARGIN),
            ms(allowed),
            if failed.is_empty() {
                String::new()
            } else {
                format!(" Failures: {}", failed.join("; "))
            }
        ),
        holds,
    })
}

/// What one connection sending refreshes saw.
#[derive(Default)]
struct Refusals {
    /// Refreshes written.
    sent: u64,
    /// `error` answers by code, other answers by type.
    answers: BTreeMap<String, u64>,
    /// Refusals (`bad_token` and `rate_limited`) answered.
    refused: u64,
    /// The close frame's code and reason.
    close: Option<(u16, String)>,
}

/// A token of `user` whose signature no longer matches: a full check
/// refuses it only after verifying the signature.
fn bogus_token(user: &str) -> Result<String> {
    let token = testbed::try_mint_token(user, Duration::from_secs(3600))?;
    let (signed, signature) = token.rsplit_once('.').context("a JWT has three parts")?;
    // A character in the middle of the signature, so that it still decodes.
    let mut signature = signature.as_bytes().to_vec();
    let middle = signature.len() / 2;
    signature[middle] = if signature[middle] == b'A' {
        b'B'
    } else {
        b'A'
    };
    Ok(format!("{signed}.{}", String::from_utf8(signature)?))
}

/// A token-mode connection sending `message` up to `count` times as fast as
/// it goes (batched, never waiting for an answer), while it reads every
/// answer until its close frame (10 s at most).
async fn send_fast(
    n: usize,
    server: SocketAddr,
    message: fn(&str) -> Result<String>,
    count: u64,
    gate: Arc<Semaphore>,
) -> Result<Refusals> {
    let user = format!("refresher-{n}");
    let token = testbed::try_mint_token(&user, Duration::from_secs(3600))?;
    let mut ws = {
        let _permit = gate.acquire_owned().await?;
        match net::ws_from(110 + (n % 10) as u8, server, &format!("/ws?token={token}")).await? {
            Ok(ws) => ws,
            Err((status, _)) => anyhow::bail!("refused {status}"),
        }
    };
    // The welcome.
    let _ = tokio::time::timeout(net::IO_TIMEOUT, ws.next()).await?;
    let text = message(&user)?;
    let (mut sink, mut stream) = ws.split();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let writer = tokio::spawn(async move {
        for i in 1..=count {
            if sink.feed(Message::text(text.clone())).await.is_err() {
                return;
            }
            counter.store(i, Ordering::Relaxed);
            if (i % 64 == 0 || i == count) && sink.flush().await.is_err() {
                return;
            }
        }
    });
    let mut seen = Refusals::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, stream.next()).await {
        match frame {
            Message::Text(text) => {
                let value: serde_json::Value = serde_json::from_str(text.as_str())?;
                let key = match (value["type"].as_str(), value["code"].as_str()) {
                    (Some("error"), Some(code)) => {
                        seen.refused += u64::from(matches!(code, "bad_token" | "rate_limited"));
                        code.to_owned()
                    }
                    (Some(kind), _) => kind.to_owned(),
                    _ => "not a message".to_owned(),
                };
                *seen.answers.entry(key).or_default() += 1;
            }
            Message::Close(frame) => {
                seen.close = Some(frame.map_or((0, String::new()), |f| {
                    (u16::from(f.code), f.reason.as_str().to_owned())
                }));
                break;
            }
            _ => {}
        }
        // Every answer came: the pings' baseline ends here.
        if seen.answers.values().sum::<u64>() == count {
            break;
        }
    }
    writer.abort();
    seen.sent = sent.load(Ordering::Relaxed);
    Ok(seen)
}

/// `CONNS` connections each running [`send_fast`]; what they saw, and the
/// server's CPU-seconds meanwhile.
async fn many(
    t: &Target,
    conns: usize,
    message: fn(&str) -> Result<String>,
    count: u64,
) -> Result<(Vec<Refusals>, Vec<String>, f64)> {
    let cpu_before = cpu_seconds(t.pid)?;
    let gate = Arc::new(Semaphore::new(64));
    let mut set = JoinSet::new();
    for n in 0..conns {
        set.spawn(send_fast(n, t.addr, message, count, gate.clone()));
    }
    let (mut seen, mut failed) = (Vec::new(), Vec::new());
    while let Some(done) = set.join_next().await {
        match done {
            Ok(Ok(one)) => seen.push(one),
            Ok(Err(why)) => failed.push(format!("{why:#}")),
            Err(why) => failed.push(why.to_string()),
        }
    }
    Ok((seen, failed, cpu_seconds(t.pid)? - cpu_before))
}

/// Item 7: 500 connections each sending up to 1,000 bogus refreshes (a
/// token of its own user, its signature altered) as fast as it can. Each
/// must get at most three refusals and be closed with 4401 "too many bad
/// refreshes"; and the server must not spend per refresh sent: the flood
/// must cost it less CPU than as many pings (the cheapest message it
/// answers) sent the same way by as many connections.
pub async fn refresh_flood(t: &Target) -> Result<Outcome> {
    const CONNS: usize = 500;
    const EACH: u64 = 1000;
    const REASON: &str = "too many bad refreshes";
    let refresh = |user: &str| -> Result<String> {
        Ok(shared::ClientMessage::Refresh {
            token: bogus_token(user)?,
        }
        .to_json())
    };
    let (seen, failed, cpu) = many(t, CONNS, refresh, EACH).await?;
    let sent: u64 = seen.iter().map(|s| s.sent).sum();
    let most = seen.iter().map(|s| s.refused).max().unwrap_or(0);
    let over = seen.iter().filter(|s| s.refused > 3).count();
    let mut answers = BTreeMap::<String, u64>::new();
    let mut closes = BTreeMap::<String, u64>::new();
    for one in &seen {
        for (key, n) in &one.answers {
            *answers.entry(key.clone()).or_default() += n;
        }
        let close = match &one.close {
            Some((code, reason)) => format!("{code} {reason:?}"),
            None => "no close frame within 10 s".into(),
        };
        *closes.entry(close).or_default() += 1;
    }
    let closed = seen
        .iter()
        .filter(|s| {
            s.close
                .as_ref()
                .is_some_and(|(c, r)| *c == 4401 && r == REASON)
        })
        .count();
    // The baseline: as many pings, per connection, as the flood's refreshes.
    let per = sent.div_ceil(CONNS as u64).max(1);
    let ping = |_: &str| -> Result<String> { Ok(r#"{"type":"ping","t":1}"#.to_owned()) };
    let (pinged, ping_failed, ping_cpu) = many(t, CONNS, ping, per).await?;
    let pongs: u64 = pinged
        .iter()
        .map(|s| s.answers.get("pong").copied().unwrap_or(0))
        .sum();
    let holds = seen.len() == CONNS
        && over == 0
        && closed == CONNS
        && failed.is_empty()
        && ping_failed.is_empty()
        && cpu < ping_cpu;
    let failures = |list: &[String]| {
        if list.is_empty() {
            String::new()
        } else {
            format!(" Failures: {}.", list.join("; "))
        }
    };
    Ok(Outcome {
        tried: format!(
            "{CONNS} token-mode connections (10 addresses), each sending up to {EACH} `refresh` messages with a bogus token (its own user's, the signature altered: refused only after a full check) as fast as it can, batched, without waiting for answers ({sent} sent in all before the close frames came); then, as the baseline of the server's CPU, {CONNS} connections sending {per} pings each the same way."
        ),
        held: format!(
            "Answers: {}; refusals per connection at most {most} ({over} connections got more than 3). Closes: {} ({closed} of {CONNS} with 4401 {REASON:?}). The server used {cpu:.2} CPU-seconds for the refresh flood against {ping_cpu:.2} for the pings' baseline ({pongs} pongs answered).{}{}",
            describe(&answers),
            describe(&closes),
            failures(&failed),
            failures(&ping_failed),
        ),
        holds,
    })
}
