//! What the server holds for clients that start work and leave it hanging
//! (issue 25, items 2 and 9): unfinished messages against
//! `--max-partial-bytes`, and bursts nobody reads against
//! `--send-queue-bytes`. Each attack opens its connections first and reads
//! the server's RSS then, as the baseline its growth is measured from.
//! Every loop is bounded in count and in time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use super::net::{self, Ws, metric};
use super::{Outcome, Target};
use crate::harness::proc_stats::cpu_seconds;
use crate::harness::proc_stats::rss_kib;

const MIB: u64 = 1024 * 1024;

fn describe(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, n)| format!("{n} × {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `conns` WebSockets on `path` from 127.0.0.`first` to `first + 9`, 64
/// being opened at a time.
async fn open(t: &Target, conns: usize, first: u8, path: &str) -> Result<Vec<Ws>> {
    let gate = Arc::new(Semaphore::new(64));
    let mut set = JoinSet::new();
    for n in 0..conns {
        let (addr, gate, path) = (t.addr, gate.clone(), path.to_owned());
        set.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            match net::ws_from(first + (n % 10) as u8, addr, &path).await? {
                Ok(ws) => Ok(ws),
                Err((status, _)) => anyhow::bail!("refused {status}"),
            }
        });
    }
    let mut all = Vec::new();
    while let Some(done) = set.join_next().await {
        all.push(done??);
    }
    Ok(all)
}

/// The server's RSS (KiB) and one gauge of its `/metrics`, sampled every
/// 50 ms until `stop` fires: their peaks.
async fn peaks(
    t: &Target,
    gauge: &str,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<(u64, f64)> {
    tokio::pin!(stop);
    let (mut rss, mut value) = (0u64, 0f64);
    loop {
        rss = rss.max(rss_kib(t.pid)?);
        value = value.max(metric(&net::metrics(t.addr).await?, gauge));
        tokio::select! {
            _ = &mut stop => return Ok((rss, value)),
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// Sends 1 MiB of a binary message in 16 fragments of 64 KiB, never its
/// last one, then a ping (allowed between fragments). The server reads in
/// order: its pong says it holds the MiB (`Ok(ws)`, kept open); its close
/// frame says it refused it (`Err`: the code and reason).
async fn unfinished(mut ws: Ws) -> Result<std::result::Result<Ws, String>> {
    for i in 0..16 {
        let opcode = OpCode::Data(if i == 0 { Data::Binary } else { Data::Continue });
        let fragment = Frame::message(vec![7u8; 64 * 1024], opcode, false);
        // A refused connection may fail the writes: its close frame is read below.
        if ws.feed(Message::Frame(fragment)).await.is_err() {
            break;
        }
    }
    let _ = ws.send(Message::Ping(b"held?".to_vec().into())).await;
    let deadline = tokio::time::Instant::now() + net::IO_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Ok(Err("neither a pong nor a close within 10 s".into())),
            Ok(Some(Ok(Message::Pong(payload)))) if payload.as_ref() == b"held?" => {
                return Ok(Ok(ws));
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Ok(Err(frame.map_or("close without a code".into(), |f| {
                    format!("close {} {:?}", u16::from(f.code), f.reason.as_str())
                })));
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(why))) => return Ok(Err(format!("reset without a close frame ({why})"))),
            Ok(None) => return Ok(Err("ended without a close frame".into())),
        }
    }
}

/// Item 2: 200 connections on `/echo`, each sending 1 MiB of a fragmented
/// message it never finishes, against `--max-partial-bytes` of 32 MiB. The
/// connections beyond the budget must be closed with 1013, the budget's
/// gauge stay within it, and the server's RSS grow by no more than the
/// budget plus what each connection may read before its meter is charged
/// (one 64 KiB chunk of the budget's accounting, `partial::CHUNK`), from
/// its RSS with the 200 connections open.
pub async fn partial_messages(t: &Target) -> Result<Outcome> {
    const CONNS: usize = 200;
    /// The phase's `--max-partial-bytes`.
    const BUDGET: u64 = 32 * MIB;
    /// The budget's charge granularity (`partial::CHUNK`).
    const CHUNK: u64 = 64 * 1024;
    const FULL: &str = "server busy: too many bytes of unfinished messages, try again later";
    let started = Instant::now();
    let conns = open(t, CONNS, 120, "/echo").await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = rss_kib(t.pid)?;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let sampling = async { peaks(t, "ws_partial_bytes", stopped).await };
    let attack = async {
        let mut set = JoinSet::new();
        for ws in conns {
            set.spawn(unfinished(ws));
        }
        let (mut held, mut endings) = (Vec::new(), BTreeMap::<String, u64>::new());
        while let Some(done) = set.join_next().await {
            let key = match done {
                Ok(Ok(Ok(ws))) => {
                    held.push(ws);
                    "held (pong)".to_owned()
                }
                Ok(Ok(Err(ending))) => ending,
                Ok(Err(why)) => format!("error: {why:#}"),
                Err(why) => format!("task: {why}"),
            };
            *endings.entry(key).or_default() += 1;
        }
        // Held a moment with the budget full, beside the legitimate client.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = stop.send(());
        (held, endings)
    };
    let ((held, endings), sampled) = tokio::join!(attack, sampling);
    let (peak_rss, peak_partial) = sampled?;
    let m = net::metrics(t.addr).await?;
    let partial = metric(&m, "ws_partial_bytes");
    let closes = metric(&m, "ws_partial_budget_closes_total");
    let seconds = started.elapsed().as_secs_f64();
    drop(held);
    let kept = endings.get("held (pong)").copied().unwrap_or(0);
    let refused = endings
        .get(&format!("close 1013 {FULL:?}"))
        .copied()
        .unwrap_or(0);
    let grown = peak_rss.saturating_sub(baseline) * 1024;
    let allowed = BUDGET + CONNS as u64 * CHUNK;
    let holds = kept * MIB <= BUDGET
        && kept + refused == CONNS as u64
        && closes as u64 == refused
        && peak_partial <= BUDGET as f64
        && grown <= allowed;
    let mib = |bytes: f64| format!("{:.1} MiB", bytes / MIB as f64);
    Ok(Outcome {
        tried: format!(
            "{CONNS} connections on /echo (127.0.0.120-129), opened first, then each sending 1 MiB of a binary message in 16 fragments of 64 KiB and never its last, then a ping (the server answers it once it has read the whole MiB); against `--max-partial-bytes` {}; held 1 s; {seconds:.1} s in all.",
            mib(BUDGET as f64)
        ),
        held: format!(
            "Endings: {}. `ws_partial_bytes` at most {} while they pushed ({} with the survivors held), within the budget of {}; `ws_partial_budget_closes_total` {closes}. Server RSS with the {CONNS} connections open {}, at its peak {}: grown by {}, against the budget plus one 64 KiB chunk per connection ({}).",
            describe(&endings),
            mib(peak_partial),
            mib(partial),
            mib(BUDGET as f64),
            mib((baseline * 1024) as f64),
            mib((peak_rss * 1024) as f64),
            mib(grown as f64),
            mib(allowed as f64),
        ),
        holds,
    })
}

/// What one connection asking for five bursts saw before it stopped reading.
struct Asked {
    /// The connection, kept open and unread until dropped.
    _held: Ws,
    busy: u64,
    /// Frames read other than the `burst_busy` errors, and the longest.
    read: u64,
    longest: u64,
}

/// Asks for five bursts of a million at once, then reads only until three
/// `burst_busy` errors came (10 s at most): the connection, kept open.
async fn five_bursts(mut ws: Ws) -> Result<Asked> {
    // The welcome.
    let _ = tokio::time::timeout(net::IO_TIMEOUT, ws.next()).await?;
    for _ in 0..5 {
        ws.feed(Message::text(r#"{"type":"burst","count":1000000}"#))
            .await?;
    }
    ws.flush().await?;
    let (mut busy, mut read, mut longest) = (0, 0, 0);
    let deadline = tokio::time::Instant::now() + net::IO_TIMEOUT;
    while busy < 3 {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                if text.as_str().contains(r#""code":"burst_busy""#) {
                    busy += 1;
                } else {
                    read += 1;
                    longest = longest.max(text.len() as u64);
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    Ok(Asked {
        _held: ws,
        busy,
        read,
        longest,
    })
}

/// Item 9: 200 connections each asking for five bursts of 1,000,000 at
/// once and reading only until their refusals came, then not at all for
/// 3 s. Each must get `burst_busy` for three of the five (one in progress,
/// one waiting); what the server queues for them must stay within
/// `--send-queue-bytes` per connection (plus one push), and its RSS grow by
/// no more than that from its RSS with the connections open. The legitimate
/// client's echo p99 is held to the burst phases' target by the phase.
pub async fn bursts_bounded(t: &Target) -> Result<Outcome> {
    const CONNS: usize = 200;
    /// The server's `--send-queue-bytes` (its default).
    const QUEUE: u64 = MIB;
    const HOLD: Duration = Duration::from_secs(3);
    let started = Instant::now();
    let conns = open(t, CONNS, 130, "/ws").await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = rss_kib(t.pid)?;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let sampling = async { peaks(t, "ws_send_queue_bytes", stopped).await };
    // What the server wrote and spent: before the requests, once the
    // refusals came, after the hold.
    let written = async || -> Result<(f64, f64, f64)> {
        let m = net::metrics(t.addr).await?;
        Ok((
            metric(&m, "ws_messages_out_total"),
            metric(&m, "ws_bytes_out_total"),
            cpu_seconds(t.pid)?,
        ))
    };
    let before = written().await?;
    let attack = async {
        let mut set = JoinSet::new();
        for ws in conns {
            set.spawn(five_bursts(ws));
        }
        let (mut asked, mut failed) = (Vec::new(), Vec::new());
        while let Some(done) = set.join_next().await {
            match done {
                Ok(Ok(one)) => asked.push(one),
                Ok(Err(why)) => failed.push(format!("{why:#}")),
                Err(why) => failed.push(why.to_string()),
            }
        }
        let refused = written().await;
        // Nobody reads now.
        tokio::time::sleep(HOLD).await;
        let held = written().await;
        let _ = stop.send(());
        (asked, failed, refused, held)
    };
    let ((asked, failed, refused, held), sampled) = tokio::join!(attack, sampling);
    let (peak_rss, peak_queue) = sampled?;
    let (refused, held) = (refused?, held?);
    let m = net::metrics(t.addr).await?;
    let queue_now = metric(&m, "ws_send_queue_bytes");
    let slow = metric(&m, "ws_slow_consumer_closes_total");
    let spent = |from: (f64, f64, f64), to: (f64, f64, f64)| {
        format!(
            "{:.0} messages ({:.1} MB) written, {:.2} CPU-seconds",
            to.0 - from.0,
            (to.1 - from.1) / 1e6,
            to.2 - from.2
        )
    };
    let seconds = started.elapsed().as_secs_f64();
    let mut busy = BTreeMap::<String, u64>::new();
    for one in &asked {
        *busy
            .entry(format!("{} × burst_busy", one.busy))
            .or_default() += 1;
    }
    let read: u64 = asked.iter().map(|a| a.read).sum();
    let longest = asked.iter().map(|a| a.longest).max().unwrap_or(0);
    let three = asked.iter().filter(|a| a.busy == 3).count();
    drop(asked);
    let bound = CONNS as u64 * (QUEUE + longest);
    let grown = peak_rss.saturating_sub(baseline) * 1024;
    let holds = three == CONNS && failed.is_empty() && peak_queue <= bound as f64 && grown <= bound;
    let mib = |bytes: f64| format!("{:.1} MiB", bytes / MIB as f64);
    Ok(Outcome {
        tried: format!(
            "{CONNS} connections on /ws (127.0.0.130-139), opened first, then each sending five `{{\"type\":\"burst\",\"count\":1000000}}` at once and reading only until its refusals came ({read} other frames read in all, the longest {longest} bytes), then nothing for {} s; {seconds:.1} s in all.",
            HOLD.as_secs()
        ),
        held: format!(
            "Refusals per connection: {}{}. Peak `ws_send_queue_bytes` {} ({} after), against `--send-queue-bytes` plus the longest push per connection, {}; `ws_slow_consumer_closes_total` {slow}. Server RSS with the {CONNS} connections open {}, at its peak {}: grown by {}, against the same bound. The server, until the last refusal was read: {}; over the {} s nobody read: {} (the pushes stop once the kernel's socket buffers are full).",
            describe(&busy),
            if failed.is_empty() {
                String::new()
            } else {
                format!("; failures: {}", failed.join("; "))
            },
            mib(peak_queue),
            mib(queue_now),
            mib(bound as f64),
            mib((baseline * 1024) as f64),
            mib((peak_rss * 1024) as f64),
            mib(grown as f64),
            spent(before, refused),
            HOLD.as_secs(),
            spent(refused, held),
        ),
        holds,
    })
}
