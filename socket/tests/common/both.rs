//! The tests common to both transports, written once: each body is generic
//! over a [`Harness`] (the testbed as the transport's tests reach it) and
//! runs natively (`tests/native.rs`, on a testbed of its own per test) and in
//! headless Chrome (`tests/web.rs`, on the testbed `cargo xtask test`
//! started), as the server's store tests do with `on_both_stores!`.
//!
//! [`common_tests!`] names every common test once; each test file hands it a
//! macro that makes one test of its kind per name. Where the transports
//! really differ the body asks the harness: a browser delivers the events of
//! a call before the call returns ([`Harness::EVENTS_DURING_THE_CALL`]),
//! the native transport from the socket's task, later; browsers' timers are
//! coarser ([`Harness::fast_backoff`]).
#![allow(
    dead_code,
    reason = "each test binary uses the helpers it needs, not all of them"
)]

use std::future::Future;

use buffered_socket::{
    AppSocket, Backoff, Config, DropReason, Error, Event, Heartbeat, Message, Overflow, SendError,
    SendOutcome, Socket, State,
};
use futures_util::StreamExt;
use shared::{ClientMessage, ServerMessage};

/// Every test common to both transports, as `name: threads`, where
/// `threads` is the native runtime it needs: `one_thread` when the socket's
/// task must not run before the test yields (so that what the test does
/// first certainly happens before the open), else `two_threads`.
macro_rules! common_tests {
    ($make:ident) => {
        $make! {
            connects_and_echoes_text_and_binary_from_another_task: two_threads,
            messages_sent_before_open_are_queued_and_flushed_in_order: one_thread,
            the_capacity_is_enforced_with_errors_that_give_the_message_back: one_thread,
            callbacks_may_use_the_socket_re_entrantly: two_threads,
            after_a_server_restart_it_reconnects_within_its_backoff_with_what_was_queued: two_threads,
            a_kick_with_a_reconnectable_code_reconnects_with_what_was_queued_and_4000_closes: one_thread,
            the_users_close_is_final_and_reaches_the_server: two_threads,
            dropping_the_last_handle_closes_the_connection_and_ends_the_streams: two_threads,
            invalid_urls_are_refused: one_thread,
            the_open_hook_goes_first_on_every_open_even_with_a_full_queue: one_thread,
            events_also_come_as_a_stream_in_order: one_thread,
            the_heartbeat_pings_and_the_answers_keep_the_connection: two_threads,
            a_typed_socket_speaks_the_protocol: one_thread,
            reliable_mode_delivers_exactly_once_through_random_cuts: two_threads,
        }
    };
}

/// The testbed, as a transport's tests reach it.
pub trait Harness {
    /// Whether the events a call raises are delivered before it returns (in
    /// a browser, when no callback is running); natively the socket's task
    /// delivers them, a little later.
    const EVENTS_DURING_THE_CALL: bool;

    /// `ws://127.0.0.1:port` of the server.
    fn ws_base(&self) -> String;

    /// `ws://127.0.0.1:port` of the fault proxy in front of the server.
    fn proxy_base(&self) -> String;

    /// A short backoff for tests that reconnect (a browser's timers are coarser).
    fn fast_backoff(&self) -> Backoff;

    /// The fault proxy's seed for a test that cuts: `FAULT_SEED` if set
    /// (natively when the test runs, for a browser when it is built), else random.
    fn fault_seed(&self) -> u64;

    /// POSTs to the testbed's control API; the status and the body.
    async fn control(&self, path: &str) -> (u16, String);

    /// Sends `messages` in order from another task than the test's (natively
    /// a spawned tokio task: the handle is `Send`); their outcomes.
    async fn send_from_another_task(
        &self,
        socket: &Socket,
        messages: Vec<Message>,
    ) -> Vec<Result<SendOutcome, SendError>>;
}

/// Generous: a wait that takes this long failed.
pub const LONG: f64 = 10_000.0;

#[cfg(target_arch = "wasm32")]
pub use crate::common::{sleep_ms, wait_for};

/// Milliseconds from a monotonic clock.
#[cfg(target_arch = "wasm32")]
pub fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// Milliseconds from a monotonic clock.
#[cfg(not(target_arch = "wasm32"))]
pub fn now_ms() -> f64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    ORIGIN
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64()
        * 1000.0
}

/// Yields for `ms`: between polls, never to wait for a condition.
#[cfg(not(target_arch = "wasm32"))]
pub async fn sleep_ms(ms: i32) {
    tokio::time::sleep(std::time::Duration::from_millis(ms.unsigned_abs().into())).await;
}

/// Polls `condition` every 5 ms until it holds; panics after `timeout_ms`.
#[cfg(not(target_arch = "wasm32"))]
pub async fn wait_for(what: &str, timeout_ms: f64, condition: impl Fn() -> bool) {
    let deadline = now_ms() + timeout_ms;
    while !condition() {
        assert!(now_ms() < deadline, "timed out waiting for {what}");
        sleep_ms(5).await;
    }
}

/// What an event recorded: where the transport delivers the events of a
/// call during it, `condition` holds at once; else it holds within [`LONG`].
pub async fn recorded<H: Harness>(what: &str, condition: impl Fn() -> bool) {
    if H::EVENTS_DURING_THE_CALL {
        assert!(condition(), "{what}: not recorded at once");
    }
    wait_for(what, LONG, condition).await;
}

/// `future`'s output, or `None` after `timeout_ms`.
pub async fn within<T>(timeout_ms: i32, future: impl Future<Output = T>) -> Option<T> {
    let future = std::pin::pin!(future);
    let timeout = std::pin::pin!(sleep_ms(timeout_ms));
    match futures_util::future::select(future, timeout).await {
        futures_util::future::Either::Left((output, _)) => Some(output),
        futures_util::future::Either::Right(_) => None,
    }
}

/// A value the test and the socket's callbacks share: an `Arc<Mutex>`
/// natively, where callbacks run on the socket's task, and an `Rc<RefCell>`
/// in a browser.
pub struct Shared<T>(
    #[cfg(not(target_arch = "wasm32"))] std::sync::Arc<std::sync::Mutex<T>>,
    #[cfg(target_arch = "wasm32")] std::rc::Rc<std::cell::RefCell<T>>,
);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Shared<T> {
    pub fn new(value: T) -> Self {
        #[cfg(not(target_arch = "wasm32"))]
        return Self(std::sync::Arc::new(std::sync::Mutex::new(value)));
        #[cfg(target_arch = "wasm32")]
        return Self(std::rc::Rc::new(std::cell::RefCell::new(value)));
    }

    /// Runs `f` on the value.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        #[cfg(not(target_arch = "wasm32"))]
        let mut value = self.0.lock().unwrap();
        #[cfg(target_arch = "wasm32")]
        let mut value = self.0.borrow_mut();
        f(&mut value)
    }
}

impl<T: Clone> Shared<T> {
    /// A copy of the value.
    pub fn get(&self) -> T {
        self.with(|value| value.clone())
    }
}

/// Records every event of a socket.
pub struct Recorder {
    events: Shared<Vec<Event>>,
    _subscription: buffered_socket::Subscription,
}

impl Recorder {
    pub fn new(socket: &Socket) -> Self {
        let events = Shared::new(Vec::new());
        let sink = events.clone();
        let subscription = socket.on_event(move |event| sink.with(|e| e.push(event.clone())));
        Self {
            events,
            _subscription: subscription,
        }
    }

    /// Every event so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.events.get()
    }

    /// The server's messages so far, decoded.
    pub fn messages(&self) -> Vec<ServerMessage> {
        self.events.with(|events| {
            events
                .iter()
                .filter_map(|e| match e {
                    Event::Message(message) => AppSocket::decode(message).ok(),
                    _ => None,
                })
                .collect()
        })
    }

    pub fn echo_ids(&self) -> Vec<u64> {
        self.messages()
            .into_iter()
            .filter_map(|m| match m {
                ServerMessage::Echo { id, .. } => Some(id),
                _ => None,
            })
            .collect()
    }

    pub fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events
            .with(|events| events.iter().filter(|e| f(e)).count())
    }
}

pub fn echo(id: u64) -> String {
    ClientMessage::Echo {
        id,
        body: format!("message {id}"),
    }
    .to_json()
}

/// Random enough for client ids and seeds within one test run.
#[cfg(not(target_arch = "wasm32"))]
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(7);
    hasher.finish()
}

/// Random enough for client ids and seeds within one test run.
#[cfg(target_arch = "wasm32")]
pub fn random_u64() -> u64 {
    (js_sys::Math::random() * 2f64.powi(53)) as u64
}

/// A name no other test uses (a `client_id`, say).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:x}", random_u64())
}

/// A retry 100 ms after a close, without jitter: long enough for a test to
/// see the `Reconnecting` state and act in it.
fn visible_retry() -> Backoff {
    Backoff {
        initial_ms: 100,
        max_ms: 500,
        jitter: false,
        ..Backoff::default()
    }
}

/// Polls until a kick of `client_id` answers 404: the server closed its
/// connection. Meant for a socket that was closed or dropped; a kick that
/// still finds the connection closes it with 1012.
pub async fn wait_until_the_server_forgets<H: Harness>(h: &H, client_id: &str) {
    let deadline = now_ms() + LONG;
    while h.control(&format!("/kick/{client_id}?code=1012")).await.0 != 404 {
        assert!(now_ms() < deadline, "the server still has {client_id}");
        sleep_ms(10).await;
    }
}

pub async fn connects_and_echoes_text_and_binary_from_another_task<H: Harness>(h: &H) {
    let socket = Socket::new(Config::new(format!("{}/ws", h.ws_base()))).unwrap();
    let rec = Recorder::new(&socket);
    wait_for("open", LONG, || socket.state() == State::Open).await;
    assert_eq!(socket.send(echo(1)), Ok(SendOutcome::Sent));
    let sent = h
        .send_from_another_task(&socket, vec![echo(2).into(), vec![1u8, 2, 3].into()])
        .await;
    assert_eq!(sent, [Ok(SendOutcome::Sent), Ok(SendOutcome::Sent)]);
    wait_for("the echoes", LONG, || {
        rec.echo_ids() == [1, 2]
            && rec.count(|e| matches!(e, Event::Message(Message::Binary(b)) if b == &[1, 2, 3]))
                == 1
    })
    .await;
    let stats = socket.stats();
    assert_eq!(stats.messages_sent, 3);
    // The welcome and three echoes.
    assert!(stats.messages_received >= 4, "{stats:?}");
    assert!(stats.uptime_ms.is_some_and(|ms| ms >= 0.0));
}

pub async fn messages_sent_before_open_are_queued_and_flushed_in_order<H: Harness>(h: &H) {
    let socket = Socket::new(Config::new(format!("{}/ws", h.ws_base()))).unwrap();
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
}

pub async fn the_capacity_is_enforced_with_errors_that_give_the_message_back<H: Harness>(h: &H) {
    let url = format!("{}/ws", h.ws_base());
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
            .with_overflow(Overflow::DropOldest),
    )
    .unwrap();
    let dropped = Recorder::new(&dropping);
    dropping.send(echo(1)).unwrap();
    dropping.send(echo(2)).unwrap();
    assert_eq!(dropping.stats().dropped, 1);
    let dropped_first = || {
        dropped.count(|e| {
            matches!(e,
            Event::Dropped { message: Message::Text(t), reason: DropReason::Overflow }
                if *t == echo(1))
        })
    };
    recorded::<H>("the drop", || dropped_first() == 1).await;
    wait_for("the kept echo", LONG, || dropped.echo_ids() == [2]).await;
    assert_eq!(dropped_first(), 1);
}

/// A callback that sends on each echo it gets: 50 round trips, each sent
/// from inside the delivery of the previous answer, in order.
pub async fn callbacks_may_use_the_socket_re_entrantly<H: Harness>(h: &H) {
    let socket = Socket::new(Config::new(format!("{}/ws", h.ws_base()))).unwrap();
    let rec = Recorder::new(&socket);
    let outcomes = Shared::new(Vec::new());
    let _chain = {
        let (weak, outcomes) = (socket.downgrade(), outcomes.clone());
        socket.on_event(move |event| {
            if let Event::Message(message) = event
                && let Ok(ServerMessage::Echo { id, .. }) = AppSocket::decode(message)
                && id < 50
                && let Some(socket) = weak.upgrade()
            {
                outcomes.with(|o| o.push(socket.send(echo(id + 1))));
            }
        })
    };
    socket.send(echo(1)).unwrap();
    wait_for("50 echoes", LONG, || rec.echo_ids().len() == 50).await;
    assert_eq!(rec.echo_ids(), (1..=50).collect::<Vec<_>>());
    assert_eq!(outcomes.get(), vec![Ok(SendOutcome::Sent); 49]);
}

pub async fn after_a_server_restart_it_reconnects_within_its_backoff_with_what_was_queued<
    H: Harness,
>(
    h: &H,
) {
    let socket =
        Socket::new(Config::new(format!("{}/ws", h.ws_base())).with_backoff(h.fast_backoff()))
            .unwrap();
    let rec = Recorder::new(&socket);
    wait_for("open", LONG, || socket.state() == State::Open).await;
    assert_eq!(h.control("/stop").await.0, 200);
    wait_for("reconnecting", LONG, || {
        matches!(socket.state(), State::Reconnecting { .. })
    })
    .await;
    recorded::<H>("the close", || {
        rec.count(|e| matches!(e, Event::Close(c) if c.code == 1001)) == 1
    })
    .await;
    // Sent while the server is down: queued.
    assert_eq!(socket.send(echo(7)), Ok(SendOutcome::Queued));
    assert_eq!(h.control("/start").await.0, 200);
    let restarted = now_ms();
    wait_for("open again", LONG, || socket.state() == State::Open).await;
    // The backoff is capped (100 ms natively, 500 ms in a browser); allow
    // for scheduling on a busy machine.
    assert!(now_ms() - restarted < 3000.0);
    wait_for("the queued echo", LONG, || rec.echo_ids() == [7]).await;
    assert_eq!(socket.stats().reconnects, 1);
}

pub async fn a_kick_with_a_reconnectable_code_reconnects_with_what_was_queued_and_4000_closes<
    H: Harness,
>(
    h: &H,
) {
    let id = unique("kick");
    let socket = Socket::new(
        Config::new(format!("{}/ws?client_id={id}", h.ws_base())).with_backoff(visible_retry()),
    )
    .unwrap();
    let rec = Recorder::new(&socket);
    wait_for("open", LONG, || socket.state() == State::Open).await;
    let kicked = h
        .control(&format!("/kick/{id}?code=1012&reason=restart"))
        .await;
    assert_eq!(kicked.0, 200);
    wait_for("reconnecting", LONG, || {
        matches!(socket.state(), State::Reconnecting { .. })
    })
    .await;
    assert_eq!(socket.send(echo(42)), Ok(SendOutcome::Queued));
    wait_for("the queued echo after reconnecting", LONG, || {
        rec.echo_ids() == [42]
    })
    .await;
    assert_eq!(socket.stats().reconnects, 1);
    assert_eq!(
        rec.count(|e| matches!(e, Event::Close(c) if c.code == 1012 && c.reason == "restart")),
        1
    );
    // The default policy does not reconnect after a kick with 4000.
    assert_eq!(h.control(&format!("/kick/{id}")).await.0, 200);
    wait_for("closed", LONG, || socket.state() == State::Closed).await;
    assert!(matches!(socket.send("x"), Err(SendError::Closed(_))));
    socket.reconnect();
    wait_for("open after reconnect()", LONG, || {
        socket.state() == State::Open
    })
    .await;
}

pub async fn the_users_close_is_final_and_reaches_the_server<H: Harness>(h: &H) {
    let id = unique("close");
    let socket = Socket::new(
        Config::new(format!("{}/ws?client_id={id}", h.ws_base())).with_backoff(Backoff {
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
    let connecting = || rec.count(|e| matches!(e, Event::StateChanged(State::Connecting { .. })));
    recorded::<H>("the closed state", || {
        rec.count(|e| *e == Event::StateChanged(State::Closed)) == 1
    })
    .await;
    let connects_before = connecting();
    if H::EVENTS_DURING_THE_CALL {
        // The first connect was reported before the recorder subscribed.
        assert_eq!(connects_before, 0);
    }
    assert_eq!(
        socket.send("late"),
        Err(SendError::Closed(Message::Text("late".into())))
    );
    wait_until_the_server_forgets(h, &id).await;
    // A reconnect would come within 10 ms; twenty times that proves none comes.
    sleep_ms(200).await;
    assert_eq!(socket.state(), State::Closed);
    assert_eq!(connecting(), connects_before);
}

pub async fn dropping_the_last_handle_closes_the_connection_and_ends_the_streams<H: Harness>(
    h: &H,
) {
    let id = unique("drop");
    let socket = Socket::new(Config::new(format!("{}/ws?client_id={id}", h.ws_base()))).unwrap();
    let mut stream = socket.events();
    let weak = socket.downgrade();
    wait_for("open", LONG, || socket.state() == State::Open).await;
    assert!(weak.upgrade().is_some_and(|s| s.ptr_eq(&socket)));
    drop(socket);
    assert!(weak.upgrade().is_none());
    wait_until_the_server_forgets(h, &id).await;
    let rest = within(LONG as i32, async {
        let mut count = 0;
        while stream.next().await.is_some() {
            count += 1;
        }
        count
    })
    .await;
    assert!(rest.is_some(), "the stream did not end");
}

pub async fn invalid_urls_are_refused<H: Harness>(_: &H) {
    for url in ["http://x/ws", "not a url", "ws://"] {
        assert!(
            matches!(Socket::new(Config::new(url)), Err(Error::InvalidUrl(_))),
            "{url}"
        );
    }
}

pub async fn the_open_hook_goes_first_on_every_open_even_with_a_full_queue<H: Harness>(h: &H) {
    let id = unique("hook");
    let socket = Socket::new(
        Config::new(format!("{}/ws?client_id={id}", h.ws_base()))
            .with_queue_capacity(3)
            .with_backoff(visible_retry()),
    )
    .unwrap();
    let rec = Recorder::new(&socket);
    let hook_outcomes = Shared::new(Vec::new());
    let outcomes = hook_outcomes.clone();
    socket.set_on_open(move |socket| outcomes.with(|o| o.push(socket.send(echo(0)))));
    // Nothing opened yet (natively: the socket's task has not run).
    for id in 1..=3 {
        assert_eq!(socket.send(echo(id)), Ok(SendOutcome::Queued));
    }
    assert!(matches!(socket.send(echo(4)), Err(SendError::QueueFull(_))));
    wait_for("the hook's echo then the queue", LONG, || {
        rec.echo_ids().len() == 4
    })
    .await;
    assert_eq!(rec.echo_ids(), [0, 1, 2, 3]);
    // After a reconnect the hook runs again, before what was queued meanwhile.
    let kicked = h
        .control(&format!("/kick/{id}?code=1012&reason=again"))
        .await;
    assert_eq!(kicked.0, 200);
    wait_for("reconnecting", LONG, || {
        matches!(socket.state(), State::Reconnecting { .. })
    })
    .await;
    socket.send(echo(5)).unwrap();
    wait_for("the second open", LONG, || rec.echo_ids().len() == 6).await;
    assert_eq!(rec.echo_ids(), [0, 1, 2, 3, 0, 5]);
    assert_eq!(
        hook_outcomes.get(),
        [Ok(SendOutcome::Sent), Ok(SendOutcome::Sent)]
    );
}

/// The stream sees the open, then the welcome; it ends when the socket is
/// dropped.
pub async fn events_also_come_as_a_stream_in_order<H: Harness>(h: &H) {
    let socket = Socket::new(Config::new(format!("{}/ws", h.ws_base()))).unwrap();
    let mut stream = socket.events();
    let mut got = Vec::new();
    within(LONG as i32, async {
        while !got.iter().any(|e| matches!(e, Event::Message(_))) {
            got.push(stream.next().await.unwrap());
        }
    })
    .await
    .unwrap_or_else(|| panic!("no open and welcome in {got:?}"));
    let open = got
        .iter()
        .position(|e| *e == Event::StateChanged(State::Open))
        .unwrap_or_else(|| panic!("no open in {got:?}"));
    if H::EVENTS_DURING_THE_CALL {
        // The first connect was reported before the stream was made;
        // natively (one thread) the stream is made before it.
        assert_eq!(open, 0, "{got:?}");
    }
    assert_eq!(got[open + 1], Event::Open);
    let Event::Message(first) = &got[open + 2] else {
        panic!("expected the welcome, got {got:?}");
    };
    assert!(matches!(
        AppSocket::decode(first),
        Ok(ServerMessage::Welcome { .. })
    ));
    drop(socket);
    let rest = within(LONG as i32, async {
        while stream.next().await.is_some() {}
    })
    .await;
    assert!(rest.is_some(), "the stream did not end");
}

pub async fn the_heartbeat_pings_and_the_answers_keep_the_connection<H: Harness>(h: &H) {
    let socket = Socket::new(Config::new(format!("{}/ws", h.ws_base())).with_heartbeat(
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
}

/// Natively on one thread: the socket's task cannot run (and its welcome
/// arrive) before the subscription, which the first message's assertion needs.
pub async fn a_typed_socket_speaks_the_protocol<H: Harness>(h: &H) {
    let raw = Socket::new(Config::new(format!("{}/ws", h.ws_base()))).unwrap();
    let typed = AppSocket::new(raw.clone());
    let got = Shared::new(Vec::new());
    let _subscription = {
        let got = got.clone();
        typed.on_message(move |decoded| {
            // Timed pushes may come in between; they are not what this test is about.
            if !matches!(decoded, Ok(ServerMessage::Push { .. })) {
                got.with(|g| g.push(decoded.map_err(|e| e.to_string())));
            }
        })
    };
    let echo = ClientMessage::Echo {
        id: 9,
        body: "typed".into(),
    };
    assert_eq!(typed.send(&echo), Ok(SendOutcome::Queued));
    typed.raw().send(vec![7u8]).unwrap();
    wait_for("the echo and the binary", LONG, || {
        got.with(|g| g.len()) >= 3
    })
    .await;
    let got = got.get();
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
}

/// Reliable mode through the testbed's fault proxy, which cuts connections
/// at random byte counts (mid-frame, no close frame): 1,000 echoes and a
/// burst of 1,000 pushes, each processed exactly once, in order.
/// (`testbed/tests/reliable.rs` runs the 10,000-each-way version.) A
/// failure says its seed (`FAULT_SEED` replays the byte budgets; where they
/// fall in the stream depends on timing) and where the exchange stood.
///
/// The cuts start once the session is stored: the server stores the session
/// its welcome offered only at the client's first `ack` or `msg`, so a cut
/// that loses those (or a resume that overtakes them) finds no session, and
/// the wrapper rightly reports what it wrote as unconfirmed
/// (`ResumeFailed`). Cuts before the welcome are the driver's tests'
/// (`new_messages_wait_for_the_welcome_that_names_the_session`).
pub async fn reliable_mode_delivers_exactly_once_through_random_cuts<H: Harness>(h: &H) {
    const N: u64 = 1000;
    let seed = h.fault_seed();
    let cuts = || async { h.control("/proxy/cuts").await.1.parse::<u64>().unwrap() };
    let cuts_before = cuts().await;
    assert_eq!(h.control("/proxy/budget").await.0, 200);
    let socket = Socket::new(
        Config::new(format!("{}/ws", h.proxy_base()))
            .with_reliable(true)
            .with_backoff(Backoff {
                initial_ms: 10,
                max_ms: 50,
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
        rec.events()
            .iter()
            .filter(|e| matches!(e, Event::Gap { .. } | Event::ResumeFailed { .. }))
            .map(|e| format!("{e:?}").chars().take(300).collect::<String>())
            .collect::<Vec<_>>()
    };
    let standing = || {
        format!(
            "seed {seed}: {} echoes, {} messages, burst done {}, {} resumes, state {:?}, \
             {:?}, gaps and failed resumes {:?}",
            rec.echo_ids().len(),
            rec.messages().len(),
            done(),
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
    let budget = format!("/proxy/budget?min=4000&max=16000&seed={seed}");
    assert_eq!(h.control(&budget).await.0, 200);
    assert_eq!(h.control("/proxy/cut").await.0, 200);
    let deadline = now_ms() + 60_000.0;
    let mut next = 1;
    while next <= N {
        assert!(
            now_ms() < deadline && failures().is_empty(),
            "sending {next}: {}",
            standing()
        );
        match socket.send(echo(next)) {
            Ok(_) => next += 1,
            // Sent-but-unacknowledged messages fill the capacity: wait for acks.
            Err(SendError::QueueFull(_)) => sleep_ms(2).await,
            Err(err) => panic!("send {next}: {err}"),
        }
    }
    let deadline = now_ms() + 60_000.0;
    while !(rec.echo_ids().len() as u64 >= N && done() >= 1) {
        assert!(
            now_ms() < deadline && failures().is_empty(),
            "waiting for every echo and push: {}",
            standing()
        );
        sleep_ms(5).await;
    }
    assert_eq!(h.control("/proxy/budget").await.0, 200);
    let cuts = cuts().await - cuts_before;
    let resumes = rec.count(|e| matches!(e, Event::Resumed { .. }));
    eprintln!("{cuts} cuts; {}", standing());
    assert_eq!(failures(), Vec::<String>::new());
    assert!(cuts >= 5, "only {cuts} cuts");
    assert!(resumes >= 5, "only {resumes} resumes");
    assert_eq!(rec.echo_ids(), (1..=N).collect::<Vec<_>>());
    // Pushes (the burst's and the testbed's timed "tick"s, one a second)
    // once each, in order, no gap.
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
    let ticks = pushes.iter().filter(|(_, body)| body == "tick").count() as u64;
    assert_eq!(pushes.len() as u64 - ticks, N);
    assert_eq!(done(), 1);
    // Every numbered server message once: the echoes, the pushes, burst_done.
    assert_eq!(socket.stats().delivered, 2 * N + 1 + ticks);
    wait_for("the last acks", LONG, || socket.stats().unacked == 0).await;
    assert_eq!(socket.stats().acked, N + 1);
}
