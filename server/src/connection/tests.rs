//! The connection's task and its write side on in-memory channels instead
//! of a socket (as axum's `testing-websockets` example does): the real
//! rules, the real state, no network.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use clap::Parser;
use futures_util::{Sink, Stream};
use shared::{ClientMessage, ErrorCode, ServerMessage, close_code};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::burst::Pacer;
use super::outbound::{Failed, Outbox};
use super::{End, Peer, admit, serve};
use crate::config::Config;
use crate::queue;
use crate::registry::{ClientShared, Outbound};
use crate::reliable::{MemoryStore, Store};
use crate::state::AppState;

/// The real state, with timed pushes and pings off unless `args` turn them on.
fn state(args: &[&str]) -> AppState {
    let mut all = vec!["server", "--push-interval", "0", "--ping-interval", "0"];
    all.extend_from_slice(args);
    let config = Config::try_parse_from(all).unwrap();
    AppState {
        reliable: Arc::new(Store::Memory(MemoryStore::new(config.reliable_limits()))),
        channels: Arc::new(crate::channels::service::Channels::memory(
            config.namespaces.clone(),
            config.channel_history_bytes,
            config.publish_dedup_window,
        )),
        auth: config.verifier().unwrap().map(Arc::new),
        config: Arc::new(config),
        registry: Arc::default(),
        cluster: None,
        metrics: Arc::default(),
        shutdown: CancellationToken::new(),
        connections: TaskTracker::new(),
    }
}

/// The client's end of an in-memory connection.
struct Client {
    to_server: mpsc::UnboundedSender<Result<Message, axum::Error>>,
    from_server: mpsc::UnboundedReceiver<Message>,
    ended: JoinHandle<End>,
}

type BoxStream = Pin<Box<dyn Stream<Item = Result<Message, axum::Error>> + Send + Sync>>;
type BoxSink = Pin<Box<dyn Sink<Message, Error = ()> + Send + Sync>>;

/// A stream and a sink as one transport, as the socket is.
struct Duplex(BoxStream, BoxSink);

impl Stream for Duplex {
    type Item = Result<Message, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.as_mut().poll_next(cx)
    }
}

impl Sink<Message> for Duplex {
    type Error = ();

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        self.1.as_mut().poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), ()> {
        self.1.as_mut().start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        self.1.as_mut().poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        self.1.as_mut().poll_close(cx)
    }
}

/// Runs one `/ws` connection on channels, as `run` does on a socket.
fn connect(state: &AppState, query: (&str, Option<u32>, bool)) -> Client {
    let (id, burst, reliable) = query;
    let (in_tx, mut in_rx) = mpsc::unbounded_channel();
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let stream: BoxStream = Box::pin(futures_util::stream::poll_fn(move |cx| in_rx.poll_recv(cx)));
    let sink: BoxSink = Box::pin(futures_util::sink::unfold(
        out_tx,
        |tx: mpsc::UnboundedSender<Message>, message| async move {
            tx.send(message).map_err(drop)?;
            Ok(tx)
        },
    ));
    let peer = Peer {
        id: id.to_owned(),
        remote_addr: "127.0.0.1:1".parse().unwrap(),
        burst,
        reliable,
        protocol: shared::Protocol::V1,
        identity: None,
        partial: None,
        link: None,
    };
    let state = state.clone();
    let ended = tokio::spawn(async move {
        let queue = queue::channel(
            state.config.send_queue,
            state.config.send_queue_bytes,
            state.metrics.clone(),
        );
        let (conn, mode) = admit(&state, peer, &queue.0);
        serve(Duplex(stream, sink), queue, state, conn, mode).await
    });
    Client {
        to_server: in_tx,
        from_server: out_rx,
        ended,
    }
}

impl Client {
    fn send(&self, message: &ClientMessage) {
        self.send_text(&message.to_json());
    }

    fn send_text(&self, text: &str) {
        self.to_server.send(Ok(Message::Text(text.into()))).unwrap();
    }

    async fn next(&mut self) -> Message {
        tokio::time::timeout(Duration::from_secs(10), self.from_server.recv())
            .await
            .expect("a message within the deadline")
            .expect("the connection is open")
    }

    async fn next_json(&mut self) -> ServerMessage {
        loop {
            match self.next().await {
                Message::Text(text) => return ServerMessage::from_json(&text).unwrap(),
                Message::Ping(_) => {}
                other => panic!("expected text, got {other:?}"),
            }
        }
    }

    /// The welcome's session and token.
    async fn welcome(&mut self) -> (Option<String>, Option<String>) {
        match self.next_json().await {
            ServerMessage::Welcome { session, token, .. } => (session, token),
            other => panic!("expected the welcome, got {other:?}"),
        }
    }

    /// Reads up to the close frame; then the connection's end.
    async fn closed(mut self) -> (CloseFrame, End) {
        loop {
            if let Message::Close(Some(frame)) = self.next().await {
                drop(self.to_server);
                let end = self.ended.await.unwrap();
                return (frame, end);
            }
        }
    }
}

#[tokio::test]
async fn a_plain_connection_answers_echo_ping_and_binary_directly() {
    let state = state(&[]);
    let mut client = connect(&state, ("p", None, false));
    assert_eq!(client.welcome().await, (None, None));
    client.send(&ClientMessage::Echo {
        id: 1,
        body: "hi".into(),
    });
    client.send(&ClientMessage::Ping { t: 2.0 });
    client
        .to_server
        .send(Ok(Message::Binary(vec![1u8, 2].into())))
        .unwrap();
    assert_eq!(
        client.next_json().await,
        ServerMessage::Echo {
            id: 1,
            body: "hi".into()
        }
    );
    assert_eq!(client.next_json().await, ServerMessage::Pong { t: 2.0 });
    assert_eq!(client.next().await, Message::Binary(vec![1u8, 2].into()));
    // The end of the stream ends the connection, without a close frame to send.
    drop(client.to_server);
    assert_eq!(client.ended.await.unwrap().code, None);
}

#[tokio::test]
async fn frames_read_together_are_each_answered_once_in_order() {
    let state = state(&[]);
    for reliable in [false, true] {
        let mut client = connect(&state, ("batch", None, reliable));
        client.welcome().await;
        if reliable {
            client.send(&ClientMessage::Ack { seq: 0 });
        }
        // All readable at once: read in batches, answered across their edges.
        for id in 1..=100 {
            let echo = ClientMessage::Echo {
                id,
                body: String::new(),
            };
            if reliable {
                client.send(&ClientMessage::Msg {
                    seq: id,
                    data: echo.to_json(),
                });
            } else {
                client.send(&echo);
            }
        }
        let mut ids = Vec::new();
        while ids.len() < 100 {
            match client.next_json().await {
                ServerMessage::Echo { id, .. } => ids.push(id),
                ServerMessage::Msg { data, .. } => match ServerMessage::from_json(&data).unwrap() {
                    ServerMessage::Echo { id, .. } => ids.push(id),
                    other => panic!("expected an echo, got {other:?}"),
                },
                ServerMessage::Ack { .. } => {}
                other => panic!("expected an echo, got {other:?}"),
            }
        }
        assert_eq!(ids, (1..=100).collect::<Vec<_>>(), "reliable: {reliable}");
    }
}

#[tokio::test]
async fn refreshes_read_together_stop_at_the_third_refusal_and_close_with_4401() {
    let state = state(&[]);
    let mut client = connect(&state, ("r", None, false));
    client.welcome().await;
    // Ten at once: all readable before the connection reads the first.
    for _ in 0..10 {
        client.send(&ClientMessage::Refresh {
            token: "bogus".into(),
        });
    }
    let mut refusals = 0;
    loop {
        match client.next().await {
            Message::Text(text) => match ServerMessage::from_json(&text).unwrap() {
                ServerMessage::Error { .. } => refusals += 1,
                other => panic!("expected refusals, got {other:?}"),
            },
            Message::Close(Some(frame)) => {
                assert_eq!(frame.code, close_code::UNAUTHORIZED);
                assert_eq!(frame.reason, super::end::TOO_MANY_BAD_REFRESHES);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        refusals, 3,
        "the frames behind the third wait for the close"
    );
}

#[tokio::test]
async fn reliable_messages_are_refused_on_a_plain_connection() {
    let state = state(&[]);
    let mut client = connect(&state, ("p", None, false));
    client.welcome().await;
    client.send(&ClientMessage::Ack { seq: 1 });
    let ServerMessage::Error { code, .. } = client.next_json().await else {
        panic!("expected an error")
    };
    assert_eq!(code, ErrorCode::NotReliable);
}

#[tokio::test]
async fn undecodable_messages_get_errors_then_1008() {
    let state = state(&["--max-bad-messages", "3"]);
    let mut client = connect(&state, ("p", None, false));
    client.welcome().await;
    for _ in 0..3 {
        client.send_text("not json");
    }
    for _ in 0..3 {
        let ServerMessage::Error { code, .. } = client.next_json().await else {
            panic!("expected an error")
        };
        assert_eq!(code, ErrorCode::Malformed);
    }
    let (frame, end) = client.closed().await;
    assert_eq!(frame.code, close_code::POLICY_VIOLATION);
    assert_eq!(end, End::too_many_bad());
}

#[tokio::test(start_paused = true)]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let state = state(&["--idle-timeout", "5s"]);
    let mut client = connect(&state, ("p", None, false));
    client.welcome().await;
    // Virtual time: the timeout passes at once.
    let (frame, end) = client.closed().await;
    assert_eq!(frame.code, close_code::IDLE_TIMEOUT);
    assert_eq!(end, End::idle());
}

#[tokio::test]
async fn unnumbered_requests_on_a_reliable_connection_are_numbered_and_bounded() {
    let state = state(&["--history-max", "3"]);
    let mut client = connect(&state, ("r", None, true));
    let (session, _) = client.welcome().await;
    assert!(session.is_some());
    for id in 1..=5 {
        client.send(&ClientMessage::Echo {
            id,
            body: "b".into(),
        });
    }
    for seq in 1..=3 {
        let ServerMessage::Msg { seq: got, data } = client.next_json().await else {
            panic!("expected a numbered reply")
        };
        assert_eq!(got, seq);
        assert!(data.contains(r#""type":"echo""#), "{data}");
    }
    let (frame, end) = client.closed().await;
    assert_eq!(frame.code, close_code::TRY_AGAIN_LATER);
    assert_eq!(end, End::history_full());
}

#[tokio::test]
async fn a_resume_elsewhere_ends_the_first_connection_with_4002() {
    let state = state(&[]);
    let mut first = connect(&state, ("a", None, true));
    let (Some(session), Some(token)) = first.welcome().await else {
        panic!("a reliable welcome offers a session")
    };
    first.send(&ClientMessage::Ack { seq: 0 });
    // The registry lists the session once the first message bound it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !state
        .registry
        .list(None)
        .iter()
        .any(|row| serde_json::to_value(row).unwrap()["session"].as_str() == Some(session.as_str()))
    {
        assert!(tokio::time::Instant::now() < deadline, "never bound");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut second = connect(&state, ("b", None, true));
    second.welcome().await;
    second.send(&ClientMessage::Resume {
        session,
        token,
        last_seq: 0,
    });
    assert_eq!(
        second.next_json().await,
        ServerMessage::Resumed { last_seq: 0 }
    );
    let (frame, end) = first.closed().await;
    assert_eq!(frame.code, close_code::REPLACED);
    assert_eq!(end, End::from(crate::reliable::TakenOver));
}

#[tokio::test]
async fn shutdown_closes_with_1001() {
    let state = state(&[]);
    let mut client = connect(&state, ("p", None, false));
    client.welcome().await;
    super::shut_down(&state);
    let (frame, end) = client.closed().await;
    assert_eq!(frame.code, close_code::GOING_AWAY);
    assert_eq!(end, End::shutdown());
}

/// A sink that records what it is given and how often it is flushed, and
/// can be stuck (never ready), as a peer that stopped reading is; with
/// `gauge`, the most the server's queued bytes were while a frame was given.
#[derive(Clone, Default)]
struct Recorder {
    log: Arc<Mutex<(Vec<Message>, usize)>>,
    stuck: bool,
    gauge: Option<(Arc<crate::metrics::Metrics>, Arc<Mutex<u64>>)>,
}

impl Recorder {
    fn frames(&self) -> Vec<Message> {
        self.log.lock().unwrap().0.clone()
    }

    fn flushes(&self) -> usize {
        self.log.lock().unwrap().1
    }

    fn most_queued(&self) -> u64 {
        self.gauge
            .as_ref()
            .map_or(0, |(_, most)| *most.lock().unwrap())
    }
}

impl Sink<Message> for Recorder {
    type Error = ();

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        if self.stuck {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), ()> {
        self.log.lock().unwrap().0.push(item);
        if let Some((metrics, most)) = &self.gauge {
            let now = metrics
                .send_queue_bytes
                .load(std::sync::atomic::Ordering::Relaxed);
            let mut most = most.lock().unwrap();
            *most = (*most).max(now);
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        if self.stuck {
            return Poll::Pending;
        }
        self.log.lock().unwrap().1 += 1;
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Poll::Ready(Ok(()))
    }
}

/// Writes the queued `items` and the plain bursts of `pacer` into `sink`
/// step by step until nothing is left to write, as the connection's loop
/// does between reads.
async fn write_paced(
    state: &AppState,
    sink: &mut Recorder,
    items: Vec<Outbound>,
    pacer: &mut Pacer,
) -> Result<(), Failed> {
    let (tx, rx) = queue::channel(
        items.len().max(1),
        state.config.send_queue_bytes,
        state.metrics.clone(),
    );
    for item in items {
        tx.force_send(item);
    }
    let shared = ClientShared::default();
    let mut outbox = Outbox::new(rx, None, state.metrics.clone());
    loop {
        let queued = !tx.is_empty();
        outbox.write(sink, state, (&shared, queued), pacer).await?;
        if !outbox.busy() && tx.is_empty() && !pacer.plain_running() {
            return Ok(());
        }
    }
}

/// Writes the queued `items` into `sink` (see [`write_paced`]).
async fn write(state: &AppState, sink: &mut Recorder, items: Vec<Outbound>) -> Result<(), Failed> {
    write_paced(state, sink, items, &mut Pacer::default()).await
}

fn text(message: &Message) -> ServerMessage {
    match message {
        Message::Text(text) => ServerMessage::from_json(text).unwrap(),
        other => panic!("expected text, got {other:?}"),
    }
}

#[tokio::test]
async fn the_outbox_feeds_what_is_queued_and_flushes_once_per_batch() {
    let state = state(&[]);
    let mut sink = Recorder::default();
    let frames = (1..=5)
        .map(|id| {
            Outbound::Frame(crate::wire::text(&ServerMessage::Echo {
                id,
                body: String::new(),
            }))
        })
        .collect();
    assert_eq!(write(&state, &mut sink, frames).await, Ok(()));
    let written = sink.frames();
    assert_eq!(written.len(), 5);
    assert!(matches!(
        text(&written[4]),
        ServerMessage::Echo { id: 5, .. }
    ));
    // One flush for the batch of five.
    assert_eq!(sink.flushes(), 1);
}

#[tokio::test]
async fn direct_replies_go_first_share_the_batchs_flush_and_leave_the_gauge() {
    use std::sync::atomic::Ordering::Relaxed;
    let state = state(&[]);
    let gauge = || state.metrics.send_queue_bytes.load(Relaxed);
    let mut sink = Recorder::default();
    let shared = ClientShared::default();
    let (tx, rx) = queue::channel(4, 0, state.metrics.clone());
    let mut outbox = Outbox::new(rx, None, state.metrics.clone());
    outbox.push_direct(Message::Text("a".into()));
    outbox.push_direct(Message::Text("bb".into()));
    tx.try_send(Outbound::Frame(Message::Text("c".into())))
        .unwrap();
    assert_eq!(gauge(), 4, "direct replies count while they wait");
    outbox
        .write(&mut sink, &state, (&shared, true), &mut Pacer::default())
        .await
        .unwrap();
    let texts: Vec<String> = sink
        .frames()
        .iter()
        .map(|m| m.to_text().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["a", "bb", "c"]);
    assert_eq!(sink.flushes(), 1, "one flush for the direct and the queued");
    assert_eq!(gauge(), 0);
    // Direct replies alone are flushed on their own.
    outbox.push_direct(Message::Text("d".into()));
    outbox
        .write(&mut sink, &state, (&shared, false), &mut Pacer::default())
        .await
        .unwrap();
    assert_eq!(sink.frames().len(), 4);
    assert_eq!(sink.flushes(), 2);
    // Never written (the connection failed): out of the gauge all the same.
    outbox.push_direct(Message::Text("e".into()));
    assert_eq!(gauge(), 1);
    drop(outbox);
    assert_eq!(gauge(), 0);
}

/// The seqs of the pushes among `written`.
fn push_seqs(written: &[Message]) -> Vec<u64> {
    written
        .iter()
        .filter_map(|m| match text(m) {
            ServerMessage::Push { seq, .. } => Some(seq),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn the_outbox_numbers_pushes_and_writes_a_burst_in_batches_after_what_is_queued() {
    let state = state(&[]);
    let mut sink = Recorder::default();
    let mut pacer = Pacer::default();
    pacer.start(1000, tokio::time::Instant::now()).unwrap();
    let items = vec![
        Outbound::Push {
            push: Arc::new(shared::PushEncoder::new(1, "tick")),
        },
        Outbound::Frame(crate::wire::text(&ServerMessage::Pong { t: 1.0 })),
    ];
    assert_eq!(
        write_paced(&state, &mut sink, items, &mut pacer).await,
        Ok(())
    );
    let written = sink.frames();
    // What was queued goes first; the pushes are numbered in wire order.
    assert!(matches!(text(&written[1]), ServerMessage::Pong { .. }));
    assert_eq!(push_seqs(&written), (1..=1001).collect::<Vec<_>>());
    assert!(matches!(
        text(&written[1002]),
        ServerMessage::BurstDone { count: 1000, .. }
    ));
    // The queued batch; two batches of the burst (512 + 488); burst_done.
    assert_eq!(sink.flushes(), 4);
}

#[tokio::test]
async fn a_bursts_batches_count_in_the_queues_bytes_and_fit_its_bound() {
    use std::sync::atomic::Ordering::Relaxed;
    let state = state(&["--send-queue-bytes", "1000"]);
    let mut sink = Recorder {
        gauge: Some((state.metrics.clone(), Arc::default())),
        ..Recorder::default()
    };
    let mut pacer = Pacer::default();
    pacer.start(100, tokio::time::Instant::now()).unwrap();
    // A reply queued before the burst goes first (and out of the count).
    let reply = Outbound::Frame(crate::wire::text(&ServerMessage::Echo {
        id: 1,
        body: "r".repeat(580),
    }));
    assert_eq!(
        write_paced(&state, &mut sink, vec![reply], &mut pacer).await,
        Ok(())
    );
    let written = sink.frames();
    assert_eq!(push_seqs(&written), (1..=100).collect::<Vec<_>>());
    // Counted while written, at most the bound and one push at its largest
    // (a burst used to count as nothing).
    let largest =
        shared::PushEncoder::new(crate::clock::millis(std::time::SystemTime::now()), "burst")
            .max_len();
    let most = sink.most_queued();
    assert!(most > 0, "the burst's batches are counted");
    assert!(most <= 1000 + largest as u64, "{most} bytes held");
    // Batches of what fits: 1000 bytes hold ceil(1000 / largest) pushes.
    let per_batch = 1000_usize.div_ceil(largest);
    let batches = 100_usize.div_ceil(per_batch);
    // The reply's batch, the burst's, its burst_done.
    assert_eq!(sink.flushes(), 1 + batches + 1);
    assert_eq!(state.metrics.send_queue_bytes.load(Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn a_plain_burst_over_the_rate_takes_its_time_and_a_third_is_busy() {
    // 1,000 pushes a second: batches of 50, one per 50 ms after the first.
    let state = state(&["--max-burst-rate", "1000"]);
    let mut client = connect(&state, ("p", Some(500), false));
    client.welcome().await;
    client.send(&ClientMessage::Burst { count: 500 });
    client.send(&ClientMessage::Burst { count: 500 });
    let mut busy = 0;
    let mut done = Vec::new();
    let mut pushes = 0;
    while done.len() < 2 {
        match client.next_json().await {
            ServerMessage::Push { seq, .. } => {
                pushes += 1;
                assert_eq!(seq, pushes);
            }
            ServerMessage::BurstDone { count, elapsed_ms } => done.push((count, elapsed_ms)),
            ServerMessage::Error {
                code: ErrorCode::BurstBusy,
                ..
            } => busy += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((busy, pushes), (1, 1000));
    // Virtual time: 450 pushes after the first batch at 1,000 a second.
    assert_eq!(done[0], (500, 450));
    // The second started when the first ended: its 500 at the same rate.
    assert_eq!(done[1], (500, 500));
}

#[tokio::test(start_paused = true)]
async fn an_outbox_whose_peer_stops_reading_gives_up_as_a_slow_consumer() {
    let state = state(&["--write-timeout", "10s"]);
    let mut sink = Recorder {
        stuck: true,
        ..Recorder::default()
    };
    let items = vec![Outbound::Frame(Message::Text("x".into()))];
    let failed = write(&state, &mut sink, items).await.unwrap_err();
    assert_eq!(failed, Failed::SlowConsumer);
    let end = failed.end(&state);
    assert_eq!(end.code, Some(close_code::TRY_AGAIN_LATER));
    assert_eq!(
        state
            .metrics
            .slow_consumer_closes
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// A connection `id` whose transport's read panics on "boom": a stand-in
/// for any bug in the connection's task. Its input, and its task.
fn panicking(
    state: &AppState,
    id: &str,
    reliable: bool,
) -> (
    mpsc::UnboundedSender<Result<Message, axum::Error>>,
    JoinHandle<End>,
) {
    use futures_util::SinkExt;
    let (in_tx, mut in_rx) = mpsc::unbounded_channel::<Result<Message, axum::Error>>();
    let stream: BoxStream = Box::pin(futures_util::stream::poll_fn(move |cx| {
        match in_rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(Message::Text(text)))) if text.as_str() == "boom" => {
                panic!("a bug in the connection task")
            }
            other => other,
        }
    }));
    let sink: BoxSink = Box::pin(futures_util::sink::drain().sink_map_err(drop));
    let peer = Peer {
        id: id.to_owned(),
        remote_addr: "127.0.0.1:1".parse().unwrap(),
        burst: None,
        reliable,
        protocol: shared::Protocol::V1,
        identity: None,
        partial: None,
        link: None,
    };
    let state = state.clone();
    let task = tokio::spawn(async move {
        let queue = queue::channel(16, 0, state.metrics.clone());
        let (conn, mode) = admit(&state, peer, &queue.0);
        serve(Duplex(stream, sink), queue, state, conn, mode).await
    });
    (in_tx, task)
}

#[tokio::test]
async fn a_panicking_connection_task_still_leaves_the_registry() {
    use std::sync::atomic::Ordering::Relaxed;
    let state = state(&[]);
    let (in_tx, task) = panicking(&state, "ghost", false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !state.registry.contains("ghost") {
        assert!(tokio::time::Instant::now() < deadline, "never registered");
        tokio::task::yield_now().await;
    }
    assert_eq!(state.metrics.connections_open.load(Relaxed), 1);
    in_tx.send(Ok(Message::Text("boom".into()))).unwrap();
    assert!(task.await.unwrap_err().is_panic());
    assert!(!state.registry.contains("ghost"), "no ghost client listed");
    assert_eq!(state.metrics.connections_open.load(Relaxed), 0);
}

#[tokio::test]
async fn a_panicking_reliable_connection_leaves_its_session_away() {
    let state = state(&[]);
    let (in_tx, task) = panicking(&state, "r", true);
    // The first ack binds the connection to its session.
    let ack = ClientMessage::Ack { seq: 0 }.to_json();
    in_tx.send(Ok(Message::Text(ack.into()))).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !state
        .registry
        .list(None)
        .iter()
        .any(|row| serde_json::to_value(row).unwrap()["session"].is_string())
    {
        assert!(tokio::time::Instant::now() < deadline, "never bound");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    in_tx.send(Ok(Message::Text("boom".into()))).unwrap();
    assert!(task.await.unwrap_err().is_panic());
    // Away, as after any end: resumable, and not held by a dead connection.
    use crate::reliable::SessionStore;
    assert!(state.reliable.detached_of("r").await.unwrap().is_some());
}
