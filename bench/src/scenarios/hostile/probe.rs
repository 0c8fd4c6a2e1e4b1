//! What a well-behaved client sees during an attack, and what the server's
//! memory does: both on threads of their own, so the attack's tasks do not
//! delay their scheduling (the machine's cores are still shared).
//!
//! The legitimate client, from 127.0.0.1 (no attack uses that address): one
//! `/ws` connection sending a typed `echo` every 10 ms and timing its round
//! trip; every 500 ms a fresh connection (its `welcome`, then one echo) and a
//! `GET /healthz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;

use super::net::{self, Ws};
use crate::harness::proc_stats::rss_kib;

/// What the legitimate client saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Echo round trips timed on the held connection.
    pub echoes: u64,
    /// Round-trip percentiles in microseconds (0 without echoes).
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Echoes that failed (no answer within 5 s, or the connection ended; it is reopened).
    pub echo_failures: u64,
    /// Fresh connections that got their welcome and an echo, of those tried.
    pub fresh_ok: u64,
    pub fresh_tried: u64,
    /// Why fresh connections failed (an HTTP status, or an error), counted.
    pub fresh_refusals: Vec<(String, u64)>,
    /// `/healthz` answered 200 "ok", of those tried.
    pub healthz_ok: u64,
    pub healthz_tried: u64,
}

/// The legitimate client, running until dropped or [`Probe::finish`].
pub struct Probe {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Seen>>>,
}

impl Probe {
    /// Starts it against `server`, its connections on `path` (`/ws`, with a
    /// `?token=` in token mode); it is connected (welcome received) when
    /// this returns.
    pub fn start(server: SocketAddr, path: &str) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let flag = stop.clone();
        let path = path.to_owned();
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(run(server, &path, flag, ready_tx))
        });
        match ready_rx.recv_timeout(Duration::from_secs(15)) {
            Ok(Ok(())) => Ok(Self {
                stop,
                thread: Some(thread),
            }),
            Ok(Err(why)) => bail!("the legitimate client could not start: {why}"),
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                let _ = thread.join();
                bail!("the legitimate client did not start within 15 s")
            }
        }
    }

    /// Stops it and returns what it saw.
    pub fn finish(mut self) -> Result<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(seen)) => seen,
            _ => bail!("the legitimate client panicked"),
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const ECHO_EVERY: Duration = Duration::from_millis(10);
const FRESH_EVERY: Duration = Duration::from_millis(500);
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

async fn welcomed(server: SocketAddr, path: &str) -> Result<Ws, String> {
    match net::ws_from(1, server, path).await {
        Ok(Ok(mut ws)) => match next_text(&mut ws).await {
            Ok(text) if text.starts_with(r#"{"type":"welcome""#) => Ok(ws),
            Ok(text) => Err(format!("not a welcome: {}", &text[..text.len().min(60)])),
            Err(why) => Err(format!("{why:#}")),
        },
        Ok(Err((status, _))) => Err(format!("HTTP {status}")),
        Err(why) => Err(format!("{why:#}")),
    }
}

async fn next_text(ws: &mut Ws) -> Result<String> {
    loop {
        let message = tokio::time::timeout(ANSWER_WITHIN, ws.next())
            .await
            .context("no answer within 5 s")?
            .context("closed")??;
        match message {
            Message::Text(text) => return Ok(text.as_str().to_owned()),
            Message::Close(frame) => bail!("closed: {frame:?}"),
            _ => {}
        }
    }
}

/// One typed echo, checked; its round trip.
async fn echo(ws: &mut Ws, id: u64) -> Result<Duration> {
    let text = shared::ClientMessage::Echo {
        id,
        body: "legitimate".into(),
    }
    .to_json();
    let sent = Instant::now();
    ws.send(Message::text(text.clone())).await?;
    loop {
        let reply = next_text(ws).await?;
        if reply == text {
            return Ok(sent.elapsed());
        }
        if reply.starts_with(r#"{"type":"echo""#) {
            bail!("an echo differs from what was sent");
        }
    }
}

fn count(list: &mut Vec<(String, u64)>, why: String) {
    match list.iter_mut().find(|(w, _)| *w == why) {
        Some((_, n)) => *n += 1,
        None => list.push((why, 1)),
    }
}

async fn run(
    server: SocketAddr,
    path: &str,
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) -> Result<Seen> {
    let mut seen = Seen::default();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut held = match welcomed(server, path).await {
        Ok(ws) => Some(ws),
        Err(why) => {
            let _ = ready.send(Err(why.clone()));
            bail!(why);
        }
    };
    let _ = ready.send(Ok(()));
    let mut id = 0;
    let mut next_fresh = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let tick = Instant::now();
        id += 1;
        match held.as_mut() {
            Some(ws) => match echo(ws, id).await {
                Ok(rtt) => {
                    seen.echoes += 1;
                    histogram.record(rtt.as_micros().max(1) as u64)?;
                }
                Err(_) => {
                    seen.echo_failures += 1;
                    held = None;
                }
            },
            None => {
                held = welcomed(server, path).await.ok();
                if held.is_none() {
                    seen.echo_failures += 1;
                }
            }
        }
        if tick >= next_fresh {
            next_fresh = tick + FRESH_EVERY;
            seen.fresh_tried += 1;
            match welcomed(server, path).await {
                Ok(mut ws) => match echo(&mut ws, 1).await {
                    Ok(_) => {
                        seen.fresh_ok += 1;
                        let _ = ws.close(None).await;
                    }
                    Err(why) => count(&mut seen.fresh_refusals, format!("{why:#}")),
                },
                Err(why) => count(&mut seen.fresh_refusals, why),
            }
            seen.healthz_tried += 1;
            if let Ok((200, body)) = net::http(server, "GET", "/healthz", "").await
                && body == "ok"
            {
                seen.healthz_ok += 1;
            }
        }
        tokio::time::sleep_until((tick + ECHO_EVERY).into()).await;
    }
    if let Some(mut ws) = held {
        let _ = ws.close(None).await;
    }
    seen.p50_us = histogram.value_at_quantile(0.5);
    seen.p99_us = histogram.value_at_quantile(0.99);
    seen.max_us = histogram.max();
    Ok(seen)
}

/// The server's RSS before, at its peak during, and after an attack.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rss {
    pub before_kib: u64,
    pub peak_kib: u64,
    pub after_kib: u64,
}

/// Samples a process's RSS every 50 ms on a thread of its own.
pub struct RssSampler {
    pid: u32,
    before: u64,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RssSampler {
    /// Starts sampling process `pid`.
    pub fn start(pid: u32) -> Result<Self> {
        let before = rss_kib(pid)?;
        let peak = Arc::new(AtomicU64::new(before));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(kib) = rss_kib(pid) {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Ok(Self {
            pid,
            before,
            peak,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops sampling once the attack is over; "after" is read once RSS has
    /// settled (unchanged over 300 ms, at most 3 s).
    pub fn finish(mut self) -> Result<Rss> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut last = rss_kib(self.pid)?;
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = rss_kib(self.pid)?;
            if now == last || Instant::now() > deadline {
                last = now;
                break;
            }
            last = now;
        }
        Ok(Rss {
            before_kib: self.before,
            peak_kib: self.peak.load(Ordering::Relaxed).max(last),
            after_kib: last,
        })
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
