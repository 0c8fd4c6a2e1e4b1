//! Native tests: the native transport (feature `native`) against the real
//! server, started in-process on a free port by the testbed, with its
//! control API and fault proxy. The same behaviours as the browser tests
//! (`tests/web.rs`) where they apply; online/visible inputs do not exist
//! natively. Waits poll with a deadline.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use buffered_socket::{
    AppSocket, Backoff, Config, Error, Event, Heartbeat, Message, SendError, SendOutcome, Socket,
    State, TransportError,
};
use futures_util::StreamExt;
use shared::{ClientMessage, ServerMessage};
use testbed::{FaultProxy, Faults, Testbed};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;

/// Token mode: a token before every connect, 4401 (`native/auth.rs`), and
/// expiry: in-band refresh, 4003 and resume (`native/refresh.rs`).
#[path = "native/auth.rs"]
mod auth;
#[path = "native/refresh.rs"]
mod refresh;

/// Polls `condition` every 5 ms until it holds; panics after `timeout`.
async fn wait_for(what: &str, timeout: Duration, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

const LONG: Duration = Duration::from_secs(10);

/// Records every event of a socket.
struct Recorder {
    events: Arc<Mutex<Vec<Event>>>,
    _subscription: buffered_socket::Subscription,
}

impl Recorder {
    fn new(socket: &Socket) -> Self {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let subscription = socket.on_event(move |event| sink.lock().unwrap().push(event.clone()));
        Self {
            events,
            _subscription: subscription,
        }
    }

    fn messages(&self) -> Vec<ServerMessage> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Message(message) => AppSocket::decode(message).ok(),
                _ => None,
            })
            .collect()
    }

    fn echo_ids(&self) -> Vec<u64> {
        self.messages()
            .into_iter()
            .filter_map(|m| match m {
                ServerMessage::Echo { id, .. } => Some(id),
                _ => None,
            })
            .collect()
    }

    fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events.lock().unwrap().iter().filter(|e| f(e)).count()
    }
}

fn echo(id: u64) -> String {
    ClientMessage::Echo {
        id,
        body: format!("message {id}"),
    }
    .to_json()
}

fn fast_backoff() -> Backoff {
    Backoff {
        initial_ms: 20,
        max_ms: 100,
        ..Backoff::default()
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:x}", rand_u64())
}

/// Unique enough for client ids within one test run.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(7);
    hasher.finish()
}

/// POSTs to the testbed's control API; the status and the body.
async fn control(testbed: &Testbed, path: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", testbed.control_base))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Runs `test` against a fresh testbed, then shuts the testbed down.
async fn with_testbed<F: Future<Output = ()>>(test: impl FnOnce(Arc<Testbed>) -> F) {
    let testbed = Arc::new(Testbed::start(None).await.unwrap());
    test(testbed.clone()).await;
    if let Ok(testbed) = Arc::try_unwrap(testbed) {
        testbed.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_and_echoes_text_and_binary_from_another_task() {
    with_testbed(|tb| async move {
        let socket = Socket::new(Config::new(format!("{}/ws", tb.ws_base))).unwrap();
        let rec = Recorder::new(&socket);
        wait_for("open", LONG, || socket.state() == State::Open).await;
        // The handle is Send: it works from a spawned task.
        let sender = socket.clone();
        let sent =
            tokio::spawn(async move { (sender.send(echo(1)), sender.send(vec![1u8, 2, 3])) })
                .await
                .unwrap();
        assert_eq!(sent, (Ok(SendOutcome::Sent), Ok(SendOutcome::Sent)));
        wait_for("the echoes", LONG, || {
            rec.echo_ids() == [1]
                && rec.count(|e| matches!(e, Event::Message(Message::Binary(b)) if b == &[1, 2, 3]))
                    == 1
        })
        .await;
        let stats = socket.stats();
        assert_eq!(stats.messages_sent, 2);
        assert!(stats.messages_received >= 3, "{stats:?}");
        assert!(stats.uptime_ms.is_some_and(|ms| ms >= 0.0));
    })
    .await;
}

/// Current-thread: the socket's task cannot open the connection before the
/// test yields, so every send before that is certainly queued.
#[tokio::test(flavor = "current_thread")]
async fn messages_sent_before_open_are_queued_and_flushed_in_order() {
    with_testbed(|tb| async move {
        let socket = Socket::new(Config::new(format!("{}/ws", tb.ws_base))).unwrap();
        let rec = Recorder::new(&socket);
        assert!(matches!(socket.state(), State::Connecting { .. }));
        for id in 1..=20 {
            assert_eq!(socket.send(echo(id)), Ok(SendOutcome::Queued));
        }
        assert_eq!(socket.queue_len(), 20);
        wait_for("20 echoes", LONG, || rec.echo_ids().len() == 20).await;
        assert_eq!(rec.echo_ids(), (1..=20).collect::<Vec<_>>());
        assert_eq!(socket.queue_len(), 0);
        // The queue went out before anything sent after the open.
        assert_eq!(socket.send(echo(21)), Ok(SendOutcome::Sent));
        wait_for("echo 21", LONG, || rec.echo_ids().len() == 21).await;
    })
    .await;
}

/// Current-thread, so that nothing opens before the test yields.
#[tokio::test(flavor = "current_thread")]
async fn the_capacity_is_enforced_with_errors_that_give_the_message_back() {
    with_testbed(|tb| async move {
        let url = format!("{}/ws", tb.ws_base);
        let socket = Socket::new(Config::new(url.clone()).with_queue_capacity(2)).unwrap();
        let rec = Recorder::new(&socket);
        socket.send(echo(1)).unwrap();
        socket.send(echo(2)).unwrap();
        assert_eq!(
            socket.send(echo(3)),
            Err(SendError::QueueFull(Message::Text(echo(3))))
        );
        // Raised at run time, the capacity takes one more.
        socket.set_queue_capacity(3);
        assert_eq!(socket.send(echo(3)), Ok(SendOutcome::Queued));
        wait_for("three echoes", LONG, || rec.echo_ids().len() == 3).await;
        assert_eq!(rec.echo_ids(), [1, 2, 3]);

        let never = Socket::new(Config::new(url.clone()).with_queue_capacity(0)).unwrap();
        assert!(matches!(never.send("x"), Err(SendError::QueueFull(_))));
        let limited = Socket::new(Config::new(url.clone()).with_queue_max_bytes(4)).unwrap();
        assert_eq!(
            limited.send("12345"),
            Err(SendError::TooLarge(Message::Text("12345".into())))
        );

        let dropping = Socket::new(
            Config::new(url)
                .with_queue_capacity(1)
                .with_overflow(buffered_socket::Overflow::DropOldest),
        )
        .unwrap();
        let dropped = Recorder::new(&dropping);
        dropping.send(echo(1)).unwrap();
        dropping.send(echo(2)).unwrap();
        assert_eq!(dropping.stats().dropped, 1);
        wait_for("the kept echo", LONG, || dropped.echo_ids() == [2]).await;
        assert_eq!(
            dropped.count(|e| matches!(e,
                Event::Dropped { message: Message::Text(t), reason: buffered_socket::DropReason::Overflow }
                    if *t == echo(1))),
            1
        );
    })
    .await;
}

/// A callback that sends on each echo it gets: 50 round trips, each sent
/// from inside the delivery of the previous answer, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_may_use_the_socket_re_entrantly() {
    with_testbed(|tb| async move {
        let socket = Socket::new(Config::new(format!("{}/ws", tb.ws_base))).unwrap();
        let rec = Recorder::new(&socket);
        let weak = socket.downgrade();
        let _chain = socket.on_event(move |event| {
            if let Event::Message(message) = event
                && let Ok(ServerMessage::Echo { id, .. }) = AppSocket::decode(message)
                && id < 50
                && let Some(socket) = weak.upgrade()
            {
                assert_eq!(socket.send(echo(id + 1)), Ok(SendOutcome::Sent));
            }
        });
        socket.send(echo(1)).unwrap();
        wait_for("50 echoes", LONG, || rec.echo_ids().len() == 50).await;
        assert_eq!(rec.echo_ids(), (1..=50).collect::<Vec<_>>());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_server_restart_it_reconnects_and_sends_what_was_queued_while_down() {
    with_testbed(|tb| async move {
        let socket =
            Socket::new(Config::new(format!("{}/ws", tb.ws_base)).with_backoff(fast_backoff()))
                .unwrap();
        let rec = Recorder::new(&socket);
        wait_for("open", LONG, || socket.state() == State::Open).await;
        assert!(tb.stop_server().await.unwrap());
        wait_for("reconnecting", LONG, || {
            matches!(socket.state(), State::Reconnecting { .. })
        })
        .await;
        assert_eq!(
            rec.count(|e| matches!(e, Event::Close(c) if c.code == 1001)),
            1
        );
        // Sent while the server is down: queued.
        assert_eq!(socket.send(echo(7)), Ok(SendOutcome::Queued));
        assert!(tb.start_server().await.unwrap());
        let restarted = Instant::now();
        wait_for("open again", LONG, || socket.state() == State::Open).await;
        // The backoff is capped at 100 ms; allow for a busy machine.
        assert!(restarted.elapsed() < Duration::from_secs(3));
        wait_for("the queued echo", LONG, || rec.echo_ids() == [7]).await;
        assert_eq!(socket.stats().reconnects, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_with_a_reconnectable_code_reconnects_and_4000_closes_until_reconnect() {
    with_testbed(|tb| async move {
        let id = unique("kick");
        let socket = Socket::new(
            Config::new(format!("{}/ws?client_id={id}", tb.ws_base)).with_backoff(fast_backoff()),
        )
        .unwrap();
        let rec = Recorder::new(&socket);
        wait_for("open", LONG, || socket.state() == State::Open).await;
        let kicked = control(&tb, &format!("/kick/{id}?code=1012&reason=restart")).await;
        assert_eq!(kicked.0, 200);
        wait_for("open again", LONG, || socket.stats().reconnects == 1).await;
        assert_eq!(
            rec.count(|e| matches!(e, Event::Close(c) if c.code == 1012 && c.reason == "restart")),
            1
        );
        // The default policy does not reconnect after a kick with 4000.
        assert_eq!(control(&tb, &format!("/kick/{id}")).await.0, 200);
        wait_for("closed", LONG, || socket.state() == State::Closed).await;
        assert!(matches!(socket.send("x"), Err(SendError::Closed(_))));
        socket.reconnect();
        wait_for("open after reconnect()", LONG, || {
            socket.state() == State::Open
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_users_close_is_final_and_reaches_the_server() {
    with_testbed(|tb| async move {
        let id = unique("close");
        let socket = Socket::new(
            Config::new(format!("{}/ws?client_id={id}", tb.ws_base)).with_backoff(Backoff {
                initial_ms: 10,
                ..Backoff::default()
            }),
        )
        .unwrap();
        let rec = Recorder::new(&socket);
        wait_for("open", LONG, || socket.state() == State::Open).await;
        assert_eq!(socket.close(999, ""), Err(Error::InvalidCloseCode(999)));
        assert_eq!(
            socket.close(1000, &"x".repeat(124)),
            Err(Error::ReasonTooLong)
        );
        socket.close(1000, "bye").unwrap();
        assert_eq!(socket.state(), State::Closed);
        let connecting =
            || rec.count(|e| matches!(e, Event::StateChanged(State::Connecting { .. })));
        wait_for("the closed state", LONG, || {
            rec.count(|e| *e == Event::StateChanged(State::Closed)) == 1
        })
        .await;
        let connects_before = connecting();
        assert_eq!(
            socket.send("late"),
            Err(SendError::Closed(Message::Text("late".into())))
        );
        wait_for_server_to_forget(&tb, &id).await;
        // A reconnect would come within 10 ms; twenty times that proves none comes.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(socket.state(), State::Closed);
        assert_eq!(connecting(), connects_before);
    })
    .await;
}

/// Polls until a kick of `id` answers 404: the server closed its connection.
async fn wait_for_server_to_forget(tb: &Testbed, id: &str) {
    let deadline = Instant::now() + LONG;
    while control(tb, &format!("/kick/{id}?code=1012")).await.0 != 404 {
        assert!(Instant::now() < deadline, "the server still has {id}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_closes_the_connection_and_ends_the_streams() {
    with_testbed(|tb| async move {
        let id = unique("drop");
        let socket = Socket::new(Config::new(format!("{}/ws?client_id={id}", tb.ws_base))).unwrap();
        let mut stream = socket.events();
        let weak = socket.downgrade();
        wait_for("open", LONG, || socket.state() == State::Open).await;
        assert!(weak.upgrade().is_some_and(|s| s.ptr_eq(&socket)));
        drop(socket);
        assert!(weak.upgrade().is_none());
        wait_for_server_to_forget(&tb, &id).await;
        let rest = tokio::time::timeout(LONG, async {
            let mut count = 0;
            while stream.next().await.is_some() {
                count += 1;
            }
            count
        })
        .await;
        assert!(rest.is_ok(), "the stream did not end");
    })
    .await;
}

/// Current-thread: the stream is made before the socket's task can run,
/// so it sees the open (on two threads the task could open and take the
/// welcome first, and the stream would start with a later push).
#[tokio::test(flavor = "current_thread")]
async fn events_also_come_as_a_stream_in_order() {
    with_testbed(|tb| async move {
        let socket = Socket::new(Config::new(format!("{}/ws", tb.ws_base))).unwrap();
        let mut stream = socket.events();
        let mut got = Vec::new();
        tokio::time::timeout(LONG, async {
            while !got.iter().any(|e| matches!(e, Event::Message(_))) {
                got.push(stream.next().await.unwrap());
            }
        })
        .await
        .unwrap();
        // The stream may start after the first Connecting: what follows is fixed.
        let open = got
            .iter()
            .position(|e| *e == Event::StateChanged(State::Open))
            .unwrap_or_else(|| panic!("no open in {got:?}"));
        assert_eq!(got[open + 1], Event::Open);
        let Event::Message(first) = &got[open + 2] else {
            panic!("expected the welcome, got {got:?}");
        };
        assert!(matches!(
            AppSocket::decode(first),
            Ok(ServerMessage::Welcome { .. })
        ));
    })
    .await;
}

/// Current-thread: the socket's task cannot open the connection before the
/// test set the hook and queued (on two threads it could, and the first
/// open would run without the hook).
#[tokio::test(flavor = "current_thread")]
async fn the_open_hook_goes_first_on_every_open_even_with_a_full_queue() {
    with_testbed(|tb| async move {
        let id = unique("hook");
        let socket = Socket::new(
            Config::new(format!("{}/ws?client_id={id}", tb.ws_base))
                .with_queue_capacity(3)
                .with_backoff(fast_backoff()),
        )
        .unwrap();
        let rec = Recorder::new(&socket);
        let hook_outcomes = Arc::new(Mutex::new(Vec::new()));
        let outcomes = hook_outcomes.clone();
        socket.set_on_open(move |socket| outcomes.lock().unwrap().push(socket.send(echo(0))));
        // Nothing opened yet: the socket's task has not run.
        for id in 1..=3 {
            assert!(socket.send(echo(id)).is_ok());
        }
        wait_for("the hook's echo then the queue", LONG, || {
            rec.echo_ids().len() == 4
        })
        .await;
        assert_eq!(rec.echo_ids(), [0, 1, 2, 3]);
        assert_eq!(control(&tb, &format!("/kick/{id}?code=1012")).await.0, 200);
        wait_for("reconnecting", LONG, || {
            matches!(socket.state(), State::Reconnecting { .. })
        })
        .await;
        socket.send(echo(5)).unwrap();
        wait_for("the second open", LONG, || rec.echo_ids().len() == 6).await;
        assert_eq!(rec.echo_ids(), [0, 1, 2, 3, 0, 5]);
        assert_eq!(
            *hook_outcomes.lock().unwrap(),
            [Ok(SendOutcome::Sent), Ok(SendOutcome::Sent)]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_pings_and_the_answers_keep_the_connection() {
    with_testbed(|tb| async move {
        let socket = Socket::new(Config::new(format!("{}/ws", tb.ws_base)).with_heartbeat(
            Heartbeat {
                interval_ms: 50,
                timeout_ms: 2_000,
            },
        ))
        .unwrap();
        let rec = Recorder::new(&socket);
        let pongs = || {
            rec.messages()
                .iter()
                .filter(|m| matches!(m, ServerMessage::Pong { .. }))
                .count()
        };
        wait_for("three pongs", LONG, || pongs() >= 3).await;
        assert_eq!(socket.state(), State::Open);
        assert_eq!(socket.stats().reconnects, 0);
        assert_eq!(rec.count(|e| matches!(e, Event::Close(_))), 0);
    })
    .await;
}

/// Reliable mode through a fault proxy that cuts connections at random byte
/// counts (mid-frame, no close frame): 1,000 echoes and a burst of 1,000
/// pushes, each processed exactly once, in order. (`testbed/tests/reliable.rs`
/// runs the 10,000-each-way version.) A failure says its seed (`FAULT_SEED`
/// replays the byte budgets; where they fall in the stream depends on timing)
/// and where the exchange stood.
///
/// The cuts start once the session is stored: the server stores the session
/// its welcome offered only at the client's first `ack` or `msg`, so a cut
/// that loses those (or a resume that overtakes them) finds no session, and
/// the wrapper rightly reports what it wrote as unconfirmed
/// (`ResumeFailed`). Cuts before the welcome are the driver's tests'
/// (`new_messages_wait_for_the_welcome_that_names_the_session`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_mode_delivers_exactly_once_through_random_cuts() {
    const N: u64 = 1000;
    with_testbed(|tb| async move {
        let server = tb.ws_base.trim_start_matches("ws://").parse().unwrap();
        let seed = std::env::var("FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand_u64);
        eprintln!("fault seed {seed} (set FAULT_SEED to replay)");
        let faults = Faults {
            seed,
            ..Faults::none()
        };
        let proxy = FaultProxy::start(server, faults).await.unwrap();
        let socket = Socket::new(
            Config::new(format!("ws://{}/ws", proxy.addr))
                .with_reliable(true)
                .with_backoff(Backoff {
                    initial_ms: 5,
                    max_ms: 20,
                    ..Backoff::default()
                }),
        )
        .unwrap();
        let rec = Recorder::new(&socket);
        let done = || {
            rec.messages()
                .iter()
                .filter(|m| matches!(m, ServerMessage::BurstDone { .. }))
                .count()
        };
        // What must not happen, and where the exchange stands: for a failure.
        let failures = || {
            rec.events
                .lock()
                .unwrap()
                .iter()
                .filter(|e| matches!(e, Event::Gap { .. } | Event::ResumeFailed { .. }))
                .map(|e| format!("{e:?}").chars().take(300).collect::<String>())
                .collect::<Vec<_>>()
        };
        let standing = || {
            format!(
                "seed {seed}: {} echoes, {} messages, burst done {}, {} cuts, {} resumes, \
                 state {:?}, {:?}, gaps and failed resumes {:?}",
                rec.echo_ids().len(),
                rec.messages().len(),
                done(),
                proxy.cuts(),
                rec.count(|e| matches!(e, Event::Resumed { .. })),
                socket.state(),
                socket.stats(),
                failures(),
            )
        };
        let burst = ClientMessage::Burst { count: N as u32 }.to_json();
        assert!(socket.send(burst).is_ok());
        // A push of the burst: the server stored the session. Cut from now on.
        wait_for("the first push", LONG, || socket.stats().delivered >= 1).await;
        proxy.set_budget(4_000, 16_000);
        proxy.cut_all();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut next = 1;
        while next <= N {
            assert!(
                Instant::now() < deadline && failures().is_empty(),
                "sending {next}: {}",
                standing()
            );
            match socket.send(echo(next)) {
                Ok(_) => next += 1,
                // Sent-but-unacknowledged messages fill the capacity: wait for acks.
                Err(SendError::QueueFull(_)) => tokio::time::sleep(Duration::from_millis(2)).await,
                Err(err) => panic!("send {next}: {err}"),
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(rec.echo_ids().len() as u64 >= N && done() >= 1) {
            assert!(
                Instant::now() < deadline && failures().is_empty(),
                "waiting for every echo and push: {}",
                standing()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let resumes = rec.count(|e| matches!(e, Event::Resumed { .. }));
        eprintln!("{}", standing());
        assert_eq!(failures(), Vec::<String>::new());
        assert!(proxy.cuts() >= 5, "only {} cuts", proxy.cuts());
        assert!(resumes >= 5, "only {resumes} resumes");
        assert_eq!(rec.echo_ids(), (1..=N).collect::<Vec<_>>());
        // Pushes (the burst's and the timed "tick"s) once each, in order, no gap.
        let pushes: Vec<(u64, String)> = rec
            .messages()
            .into_iter()
            .filter_map(|m| match m {
                ServerMessage::Push { seq, body, .. } => Some((seq, body)),
                _ => None,
            })
            .collect();
        let seqs: Vec<u64> = pushes.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (1..=pushes.len() as u64).collect::<Vec<_>>());
        let burst = pushes.iter().filter(|(_, body)| body != "tick").count();
        assert_eq!(burst as u64, N);
        assert_eq!(done(), 1);
        wait_for("the last acks", LONG, || socket.stats().unacked == 0).await;
        assert_eq!(socket.stats().acked, N + 1);
    })
    .await;
}

// One thread: the socket's task cannot run (and its welcome arrive) before
// the subscription below, which the first message's assertion needs.
#[tokio::test]
async fn a_typed_socket_speaks_the_protocol() {
    with_testbed(|tb| async move {
        let raw = Socket::new(Config::new(format!("{}/ws", tb.ws_base))).unwrap();
        let typed = AppSocket::new(raw.clone());
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let _subscription = typed.on_message(move |decoded| {
            // Timed pushes may come in between; they are not what this test is about.
            if !matches!(decoded, Ok(ServerMessage::Push { .. })) {
                sink.lock()
                    .unwrap()
                    .push(decoded.map_err(|e| e.to_string()));
            }
        });
        let echo = ClientMessage::Echo {
            id: 9,
            body: "typed".into(),
        };
        assert!(typed.send(&echo).is_ok());
        wait_for("the echo", LONG, || got.lock().unwrap().len() >= 2).await;
        typed.raw().send(vec![7u8]).unwrap();
        wait_for("the binary", LONG, || got.lock().unwrap().len() >= 3).await;
        let got = got.lock().unwrap().clone();
        assert!(
            matches!(got[0], Ok(ServerMessage::Welcome { .. })),
            "{got:?}"
        );
        assert_eq!(
            got[1],
            Ok(ServerMessage::Echo {
                id: 9,
                body: "typed".into()
            })
        );
        assert_eq!(got[2], Err("a binary frame is not a typed message".into()));
    })
    .await;
}

/// A server that accepts TCP and never answers the upgrade: each attempt is
/// abandoned at the connect timeout and retried with backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_that_never_opens_is_abandoned_at_the_connect_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let hold = held.clone();
    let accepting = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            hold.lock().unwrap().push(stream);
        }
    });
    let socket = Socket::new(
        Config::new(format!("ws://{addr}/ws"))
            .with_connect_timeout_ms(50)
            .with_backoff(fast_backoff()),
    )
    .unwrap();
    let started = Instant::now();
    wait_for("three attempts", LONG, || held.lock().unwrap().len() >= 3).await;
    // 50 ms each plus at most 100 ms of backoff between them.
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(
        socket.state(),
        State::Connecting { .. } | State::Reconnecting { .. }
    ));
    assert!(socket.stats().attempt >= 2, "{:?}", socket.stats());
    accepting.abort();
}

#[test]
fn invalid_urls_and_a_missing_runtime_are_refused() {
    for url in ["http://x/ws", "not a url", "ws://"] {
        assert!(
            matches!(Socket::new(Config::new(url)), Err(Error::InvalidUrl(_))),
            "{url}"
        );
    }
    assert_eq!(
        Socket::new(Config::new("ws://127.0.0.1:1/ws")).unwrap_err(),
        Error::NoRuntime
    );
}

/// With `native-rustls`, a `wss` URL goes through rustls: against the plain
/// test server the TLS handshake fails (and is reported, then retried);
/// without the feature the URL cannot even be opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_goes_through_rustls_when_the_feature_is_on() {
    with_testbed(|tb| async move {
        let url = format!("{}/ws", tb.ws_base.replace("ws://", "wss://"));
        let socket = Socket::new(Config::new(url).with_backoff(fast_backoff())).unwrap();
        let rec = Recorder::new(&socket);
        wait_for("an error", LONG, || {
            rec.count(|e| matches!(e, Event::Error(_))) >= 1
        })
        .await;
        let first = rec
            .events
            .lock()
            .unwrap()
            .iter()
            .find_map(|e| match e {
                Event::Error(err) => Some(err.clone()),
                _ => None,
            })
            .unwrap();
        // The cause is tungstenite's own error, not its text.
        if cfg!(feature = "native-rustls") {
            let TransportError::Socket(cause) = &first else {
                panic!("expected a TLS failure, got {first:?}");
            };
            eprintln!("the TLS failure: {cause}");
            assert!(
                cause.downcast_ref::<tungstenite::Error>().is_some(),
                "{cause:?}"
            );
            let reason = cause.to_string().to_lowercase();
            assert!(
                reason.contains("tls") || reason.contains("corrupt"),
                "{reason}"
            );
        } else {
            let TransportError::Connect(cause) = &first else {
                panic!("expected a URL the transport cannot open, got {first:?}");
            };
            assert!(
                matches!(
                    cause.downcast_ref::<tungstenite::Error>(),
                    Some(tungstenite::Error::Url(
                        tungstenite::error::UrlError::TlsFeatureNotEnabled
                    ))
                ),
                "{cause:?}"
            );
            assert!(
                first
                    .to_string()
                    .starts_with("could not create the socket: ")
            );
        }
        assert_ne!(socket.state(), State::Open);
        assert_ne!(socket.state(), State::Closed);
    })
    .await;
}
