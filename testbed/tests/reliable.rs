//! Reliable mode end to end, natively: the real server (the testbed), a
//! fault-injecting proxy in front of it, and the real wrapper
//! (`buffered_socket::Socket`, native transport, reliable mode on), so the
//! ordering logic under test is the one applications run.
//!
//! * 10,000 messages each way through 20+ random cuts (mid-frame, no close
//!   frames): each side processes every message exactly once, in order;
//! * a history too short for what happened while the client was away is
//!   reported as [`Event::Gap`], never hidden.

#![allow(clippy::unwrap_used)] // test harness: a failure should stop the test

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use buffered_socket::{AppSocket, Backoff, Config, Event, SendError, Socket, Subscription};
use shared::{ClientMessage, ServerMessage};
use testbed::{FaultProxy, Faults, Testbed};
use tokio::time::Instant;

/// What the application saw, in order.
#[derive(Default)]
struct Seen {
    echo_ids: Vec<u64>,
    /// `(seq, body)` of every push: the burst's and the timed `tick`s.
    pushes: Vec<(u64, String)>,
    burst_done: u32,
    gaps: Vec<(u64, u64)>,
    resumes: u32,
    opens: u32,
    /// What must not happen: failed resumes, server errors, undecodable messages.
    errors: Vec<String>,
}

impl Seen {
    fn record(&mut self, event: &Event) {
        match event {
            Event::Message(message) => match AppSocket::decode(message) {
                Ok(ServerMessage::Echo { id, .. }) => self.echo_ids.push(id),
                Ok(ServerMessage::Push { seq, body, .. }) => self.pushes.push((seq, body)),
                Ok(ServerMessage::BurstDone { .. }) => self.burst_done += 1,
                Ok(ServerMessage::Welcome { .. }) => {}
                other => self.errors.push(format!("unexpected {other:?}")),
            },
            Event::Gap { from, to } => self.gaps.push((*from, *to)),
            Event::Resumed { .. } => self.resumes += 1,
            Event::Open => self.opens += 1,
            Event::ResumeFailed {
                reason,
                unconfirmed,
            } => self.errors.push(format!(
                "resume failed: {reason}, {} unconfirmed",
                unconfirmed.len()
            )),
            _ => {}
        }
    }

    fn burst_pushes(&self) -> usize {
        self.pushes
            .iter()
            .filter(|(_, body)| body != "tick")
            .count()
    }
}

/// A reliable wrapper through `proxy`, recording what it delivers.
fn reliable_socket(proxy: &FaultProxy, query: &str) -> (Socket, Arc<Mutex<Seen>>, Subscription) {
    let socket = Socket::new(
        Config::new(format!("ws://{}/ws{query}", proxy.addr))
            .with_reliable(true)
            .with_backoff(Backoff {
                initial_ms: 5,
                max_ms: 20,
                ..Backoff::default()
            }),
    )
    .unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sink = seen.clone();
    let subscription = socket.on_event(move |event| sink.lock().unwrap().record(event));
    (socket, seen, subscription)
}

/// Polls `condition` on what was seen every 5 ms; panics after the deadline.
async fn wait_until(
    what: &str,
    seen: &Mutex<Seen>,
    deadline: Instant,
    done: impl Fn(&Seen) -> bool,
) {
    loop {
        {
            let seen = seen.lock().unwrap();
            if done(&seen) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {} echoes, {} pushes, {} opens, errors {:?}",
                seen.echo_ids.len(),
                seen.pushes.len(),
                seen.opens,
                seen.errors
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn server_addr(testbed: &Testbed) -> SocketAddr {
    testbed.ws_base.trim_start_matches("ws://").parse().unwrap()
}

fn seed() -> u64 {
    std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

/// Every push once, in order, with no gap: the seqs are exactly `1..=len`.
fn assert_pushes_once_in_order(seen: &Seen) {
    let seqs: Vec<u64> = seen.pushes.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_each_way_through_twenty_cuts_arrive_exactly_once_in_order() {
    const N: u64 = 10_000;
    let testbed = Testbed::start(None).await.unwrap();
    let seed = seed();
    eprintln!("fault seed {seed} (set FAULT_SEED to replay)");
    // About 2.6 MB cross the proxy: budgets of 20-120 KB give 30-ish cuts.
    // The wrapper keeps at most its queue capacity (100) unacknowledged, well
    // inside the server's history (200), so every resume can replay.
    let faults = Faults {
        seed,
        min_bytes: 20_000,
        max_bytes: 120_000,
    };
    let proxy = FaultProxy::start(server_addr(&testbed), faults)
        .await
        .unwrap();
    let (socket, seen, _subscription) = reliable_socket(&proxy, "");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    // Client to server: N echoes; server to client: a burst of N pushes,
    // asked for by the first message, interleaved with the echo replies.
    let outgoing = std::iter::once(ClientMessage::Burst { count: N as u32 }.to_json()).chain(
        (1..=N).map(|id| {
            ClientMessage::Echo {
                id,
                body: format!("message {id}"),
            }
            .to_json()
        }),
    );
    for message in outgoing {
        let mut message = message.into();
        loop {
            match socket.send(message) {
                Ok(_) => break,
                // Unacknowledged messages fill the capacity: wait for acks.
                Err(SendError::QueueFull(back)) => {
                    assert!(Instant::now() < deadline, "timed out sending");
                    message = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(err) => panic!("send: {err}"),
            }
        }
    }
    wait_until("every echo and push", &seen, deadline, |s| {
        s.echo_ids.len() as u64 >= N && s.burst_done >= 1
    })
    .await;
    {
        let seen = seen.lock().unwrap();
        eprintln!(
            "{:?}: {} cuts, {} opens, {} resumes",
            started.elapsed(),
            proxy.cuts(),
            seen.opens,
            seen.resumes
        );
        assert!(seen.errors.is_empty(), "errors: {:?}", seen.errors);
        assert!(seen.gaps.is_empty(), "gaps: {:?}", seen.gaps);
        assert!(proxy.cuts() >= 20, "only {} cuts", proxy.cuts());
        assert!(seen.resumes >= 20, "only {} resumes", seen.resumes);
        // Every echo once, in order: the server processed each client message once, in order.
        assert_eq!(seen.echo_ids, (1..=N).collect::<Vec<_>>());
        assert_pushes_once_in_order(&seen);
        assert_eq!(seen.burst_pushes() as u64, N);
        assert_eq!(seen.burst_done, 1);
        let stats = socket.stats();
        assert_eq!(stats.delivered, N + seen.pushes.len() as u64 + 1);
        assert_eq!(stats.gaps, 0);
    }
    drop(socket);
    testbed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_too_short_is_reported_as_a_gap() {
    // The testbed's server keeps the newest 200 messages of a session.
    let testbed = Testbed::start(None).await.unwrap();
    let proxy = FaultProxy::start(server_addr(&testbed), Faults::none())
        .await
        .unwrap();
    let id = format!("away-{:x}", rand::random::<u64>());
    let (socket, seen, _subscription) = reliable_socket(&proxy, &format!("?client_id={id}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    // Bind the session (an echo answered proves it).
    let echo = ClientMessage::Echo {
        id: 1,
        body: "hi".into(),
    };
    socket.send(echo.to_json()).unwrap();
    wait_until("the echo", &seen, deadline, |s| s.echo_ids == [1]).await;
    // Away: the proxy refuses reconnects; 250 pushes arrive meanwhile (the
    // control API waits until the server noticed the client left).
    proxy.hold(true);
    proxy.cut_all();
    let response = reqwest::Client::new()
        .post(format!("{}/push/{id}?count=250", testbed.control_base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "250");
    proxy.hold(false);
    wait_until("the kept pushes", &seen, deadline, |s| {
        s.pushes.len() >= 200
    })
    .await;
    {
        let seen = seen.lock().unwrap();
        assert!(seen.errors.is_empty(), "errors: {:?}", seen.errors);
        assert_eq!(seen.resumes, 1);
        // Server messages: 1 was the echo, 2..=251 the pushes; 2..=51 were evicted.
        assert_eq!(seen.gaps, [(2, 51)]);
        // The kept ones, each once, in order (a timed `tick` may follow them).
        let seqs: Vec<u64> = seen.pushes.iter().take(200).map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (51..=250).collect::<Vec<_>>());
        assert_eq!(socket.stats().gaps, 1);
    }
    drop(socket);
    testbed.shutdown().await.unwrap();
}
