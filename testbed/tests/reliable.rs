//! Reliable mode end to end, natively: the real server, the fault-injecting
//! proxy between it and a client driven by the wrapper's own reliable core
//! (`buffered_socket::reliable`, the same code the browser wrapper runs).
//!
//! * 10,000 messages each way through 20+ random cuts (mid-frame, no close
//!   frames): each side processes every message exactly once, in order;
//! * a history too short for what happened while the client was away is
//!   reported as a `gap`, never hidden.

#![allow(clippy::unwrap_used)] // test harness: a failure should stop the test

use std::net::SocketAddr;
use std::time::Duration;

use buffered_socket::reliable::{ACK_DELAY_MS, Incoming, Reliable};
use futures_util::{SinkExt, StreamExt};
use shared::{ClientMessage, ServerMessage};
use testbed::{FaultProxy, Faults, TestServer};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// The server on a free port (`testbed::TestServer`), pushes off, with an
/// admin token; stopped on drop.
struct Server {
    addr: SocketAddr,
    token: String,
    _server: TestServer,
}

impl Server {
    async fn start(extra: &[&str]) -> Self {
        let token = "reliable-test-token".to_owned();
        let mut args = vec!["--push-interval", "0", "--admin-token", &token];
        args.extend_from_slice(extra);
        let server = TestServer::start(testbed::config(&args).unwrap())
            .await
            .unwrap();
        Self {
            addr: server.addr,
            token,
            _server: server,
        }
    }
}

/// What the client saw, in order.
#[derive(Default)]
struct Seen {
    echo_ids: Vec<u64>,
    push_seqs: Vec<u64>,
    burst_done: u32,
    gaps: Vec<(u64, u64)>,
    resumes: u32,
    connections: u32,
    errors: Vec<String>,
}

/// Drives one reliable client until `done` holds for what it saw or the
/// deadline passes: reconnects at once after every cut, resumes, resends,
/// acknowledges in batches, and keeps at most `window` messages unacknowledged.
async fn drive(
    url: &str,
    reliable: &mut Reliable,
    outgoing: &mut std::collections::VecDeque<String>,
    window: usize,
    deadline: Instant,
    done: impl Fn(&Seen) -> bool,
) -> Seen {
    let mut seen = Seen::default();
    while !done(&seen) {
        assert!(
            Instant::now() < deadline,
            "timed out: {} echoes, {} pushes, {} connections, errors {:?}",
            seen.echo_ids.len(),
            seen.push_seqs.len(),
            seen.connections,
            seen.errors
        );
        let Ok(Ok((ws, _))) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio_tungstenite::connect_async(url),
        )
        .await
        else {
            // Cut during the handshake, or held: try again shortly.
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        seen.connections += 1;
        let (mut sink, mut stream) = ws.split();
        let mut alive = sink.send(Message::text(reliable.on_open())).await.is_ok();
        let mut ack_timer = Box::pin(tokio::time::sleep(Duration::from_secs(3600)));
        let mut ack_armed = false;
        while alive && !done(&seen) {
            // Write what the window allows, once the resume is answered.
            while reliable.ready() && reliable.unacked() < window {
                let Some(text) = outgoing.pop_front() else {
                    break;
                };
                if sink
                    .feed(Message::text(reliable.number(text)))
                    .await
                    .is_err()
                {
                    alive = false;
                    break;
                }
            }
            if !alive || sink.flush().await.is_err() {
                break;
            }
            let frame = tokio::select! {
                frame = stream.next() => frame,
                () = &mut ack_timer, if ack_armed => {
                    ack_armed = false;
                    if let Some(ack) = reliable.take_ack() {
                        alive = sink.send(Message::text(ack)).await.is_ok();
                    }
                    continue;
                }
                () = tokio::time::sleep_until(deadline) => {
                    if std::env::var_os("FAULT_DEBUG").is_some() {
                        let api = url.replace("ws://", "http://");
                        let api = &api[..api.find("/ws").unwrap_or(api.len())];
                        eprintln!("clients at the deadline: last_in {:?} unacked {} ready {}", reliable.take_ack(), reliable.unacked(), reliable.ready());
                        let mut missing = Vec::new();
                        let mut expect = 1;
                        for &id in &seen.echo_ids {
                            while expect < id { missing.push(expect); expect += 1; }
                            expect = id + 1;
                        }
                        eprintln!("missing echo ids: {missing:?}; last {:?}", seen.echo_ids.last());
                        let _ = std::process::Command::new("curl")
                            .args(["-s", "-H", "authorization: Bearer reliable-test-token"])
                            .arg(format!("{api}/api/clients"))
                            .status();
                    }
                    break;
                }
            };
            let text = match frame {
                Some(Ok(Message::Text(text))) => text.to_string(),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break,
            };
            match reliable.on_text(text) {
                Incoming::Deliver(data) => see(&mut seen, &data),
                Incoming::GapThen { from, to, data } => {
                    seen.gaps.push((from, to));
                    see(&mut seen, &data);
                }
                Incoming::Gap { from, to } => seen.gaps.push((from, to)),
                Incoming::Resumed { resend } => {
                    seen.resumes += 1;
                    if std::env::var_os("FAULT_DEBUG").is_some() {
                        eprintln!(
                            "resumed: resend {} echoes so far {}",
                            resend.len(),
                            seen.echo_ids.len()
                        );
                    }
                    for frame in resend {
                        if sink.feed(Message::text(frame)).await.is_err() {
                            alive = false;
                        }
                    }
                }
                Incoming::ResumeFailed {
                    reason,
                    unconfirmed,
                } => seen.errors.push(format!(
                    "resume failed: {reason}, {} unconfirmed",
                    unconfirmed.len()
                )),
                Incoming::Consumed => {}
                other => seen.errors.push(format!("unexpected {other:?}")),
            }
            if reliable.ack_now() {
                if let Some(ack) = reliable.take_ack() {
                    alive = sink.send(Message::text(ack)).await.is_ok();
                }
            } else if reliable.ack_pending() && !ack_armed {
                ack_timer
                    .as_mut()
                    .reset(Instant::now() + Duration::from_millis(u64::from(ACK_DELAY_MS)));
                ack_armed = true;
            }
        }
        reliable.on_close();
        if std::env::var_os("FAULT_DEBUG").is_some() {
            eprintln!(
                "{:?} conn {} ended: {} echoes {} pushes unacked {} ready {}",
                Instant::now(),
                seen.connections,
                seen.echo_ids.len(),
                seen.push_seqs.len(),
                reliable.unacked(),
                reliable.ready()
            );
        }
    }
    seen
}

/// Records one delivered application message.
fn see(seen: &mut Seen, data: &str) {
    match ServerMessage::from_json(data) {
        Ok(ServerMessage::Echo { id, .. }) => seen.echo_ids.push(id),
        Ok(ServerMessage::Push { seq, .. }) => seen.push_seqs.push(seq),
        Ok(ServerMessage::BurstDone { .. }) => seen.burst_done += 1,
        Ok(ServerMessage::Welcome { .. }) => {}
        Ok(ServerMessage::Error { code, message }) => {
            seen.errors.push(format!("error {code}: {message}"));
        }
        other => seen.errors.push(format!("unexpected {other:?}")),
    }
}

fn seed() -> u64 {
    std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_each_way_through_twenty_cuts_arrive_exactly_once_in_order() {
    const N: u64 = 10_000;
    // A window of 200 messages (about 30 KB): a resume's replay fits well
    // inside a connection's byte budget, so every connection makes progress.
    let server = Server::start(&["--history-max", "200"]).await;
    let seed = seed();
    eprintln!("fault seed {seed} (set FAULT_SEED to replay)");
    // About 2.6 MB cross the proxy: budgets of 20-120 KB give 30-ish cuts.
    let proxy = FaultProxy::start(
        server.addr,
        Faults {
            seed,
            min_bytes: 20_000,
            max_bytes: 120_000,
        },
    )
    .await
    .unwrap();
    let url = format!("ws://{}/ws?reliable=1", proxy.addr);
    let mut reliable = Reliable::new();
    // Client to server: N echoes; server to client: a burst of N pushes,
    // asked for by the first message, interleaved with the echo replies.
    let mut outgoing: std::collections::VecDeque<String> =
        std::iter::once(ClientMessage::Burst { count: N as u32 }.to_json())
            .chain((1..=N).map(|id| {
                ClientMessage::Echo {
                    id,
                    body: format!("message {id}"),
                }
                .to_json()
            }))
            .collect();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    let seen = drive(&url, &mut reliable, &mut outgoing, 100, deadline, |s| {
        s.echo_ids.len() as u64 >= N && s.burst_done >= 1
    })
    .await;

    eprintln!(
        "{:?}: {} cuts, {} connections, {} resumes",
        started.elapsed(),
        proxy.cuts(),
        seen.connections,
        seen.resumes
    );
    assert!(seen.errors.is_empty(), "errors: {:?}", seen.errors);
    assert!(seen.gaps.is_empty(), "gaps: {:?}", seen.gaps);
    assert!(proxy.cuts() >= 20, "only {} cuts", proxy.cuts());
    assert!(seen.resumes >= 20, "only {} resumes", seen.resumes);
    // Every echo once, in order: the server processed each client message once, in order.
    assert_eq!(seen.echo_ids, (1..=N).collect::<Vec<_>>());
    // Every push once, in order.
    assert_eq!(seen.push_seqs, (1..=N).collect::<Vec<_>>());
    assert_eq!(seen.burst_done, 1);
    assert_eq!(reliable.delivered_total(), 2 * N + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_too_short_is_reported_as_a_gap() {
    let server = Server::start(&["--history-max", "50"]).await;
    let proxy = FaultProxy::start(server.addr, Faults::none())
        .await
        .unwrap();
    let url = format!("ws://{}/ws?reliable=1&client_id=away", proxy.addr);
    let mut reliable = Reliable::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Connect and bind the session (an echo answered proves it).
    let mut outgoing = std::collections::VecDeque::from([ClientMessage::Echo {
        id: 1,
        body: "hi".into(),
    }
    .to_json()]);
    let http = reqwest::Client::new();
    let api = format!("http://{}/api", server.addr);
    drive(&url, &mut reliable, &mut outgoing, 8, deadline, |s| {
        s.echo_ids.len() == 1
    })
    .await;
    // The client is away (drive returned and dropped its socket); hold the
    // proxy so it stays away, and wait for the server to notice.
    proxy.hold(true);
    proxy.cut_all();
    loop {
        let clients = http
            .get(format!("{api}/clients"))
            .bearer_auth(&server.token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let clients: serde_json::Value = serde_json::from_str(&clients).unwrap();
        if clients.as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(Instant::now() < deadline, "the server kept the client");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // 80 pushes while away: the history keeps the newest 50.
    for n in 1..=80 {
        let response = http
            .post(format!("{api}/clients/away/push"))
            .bearer_auth(&server.token)
            .body(format!("while away {n}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "push {n}");
    }
    proxy.hold(false);
    let mut none = std::collections::VecDeque::new();
    let seen = drive(&url, &mut reliable, &mut none, 8, deadline, |s| {
        s.push_seqs.len() == 50
    })
    .await;
    assert!(seen.errors.is_empty(), "errors: {:?}", seen.errors);
    assert_eq!(seen.resumes, 1);
    // Server messages: 1 was the echo; pushes 2..=81; 2..=31 were evicted.
    assert_eq!(seen.gaps, vec![(2, 31)]);
    assert_eq!(seen.push_seqs, (31..=80).collect::<Vec<_>>());
}
