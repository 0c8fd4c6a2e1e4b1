//! The thin layer over `web_sys::WebSocket` that carries out the machine's actions.
//!
//! Ownership rules that keep it leak-free:
//! * every JS callback is a `Closure` owned by the struct that registered it
//!   ([`Live`], [`Timer`], [`WindowHooks`]); their `Drop` unregisters it, so
//!   nothing is `forget`-ed and nothing outlives the wrapper;
//! * callbacks hold a `Weak` to the state, so they never keep it alive;
//! * no application callback runs while the state is borrowed: events are
//!   collected, the borrow released, then they are delivered.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

use crate::Error;
use crate::config::Config;
use crate::dispatch::{Dispatcher, EventStream, Subscription};
use crate::driver::Queue;
use crate::liveness::{Liveness, Tick};
use crate::machine::{Action, Input, Machine};
use crate::message::{
    CloseInfo, DropReason, Event, Message, SendError, SendOutcome, State, Stats, TransportError,
};
use crate::reliable::{ACK_DELAY_MS, Incoming, Reliable};

type OpenHook = Rc<dyn Fn(&Socket)>;

/// A buffered, reconnecting WebSocket. Cloning gives another handle to the
/// same socket; when the last handle is dropped the socket is closed and every
/// listener and timer removed.
#[derive(Clone)]
pub struct Socket {
    inner: Rc<RefCell<Inner>>,
}

/// Why [`Inner::write`] did not write.
enum Unsent {
    /// The socket is not open (any more): the message should be queued.
    NotOpen(Message),
    /// The browser threw.
    Refused(SendError),
    /// Reliable mode: numbered and kept, but not written now; it goes out
    /// again after the resume.
    Kept,
}

struct Inner {
    config: Config,
    machine: Machine,
    queue: Queue,
    counters: Counters,
    live: Option<Live>,
    retry: Option<Timer>,
    connect_timeout: Option<Timer>,
    heartbeat: Option<Timer>,
    /// The heartbeat's bookkeeping while open (with a heartbeat configured).
    liveness: Option<Liveness>,
    /// Callbacks and streams; used with no borrow of `Inner` held.
    dispatcher: Rc<Dispatcher>,
    on_open: Option<OpenHook>,
    /// True while the open hook runs: its sends go out ahead of the queue.
    in_open_hook: bool,
    /// Reliable mode's session state, when on.
    reliable: Option<Reliable>,
    /// Reliable mode: fires to acknowledge what arrived since the last ack.
    ack_timer: Option<Timer>,
    _window: Option<WindowHooks>,
}

#[derive(Default)]
struct Counters {
    messages_sent: u64,
    bytes_sent: u64,
    messages_received: u64,
    bytes_received: u64,
    dropped: u64,
    gaps: u64,
}

/// The current browser socket and its callbacks.
struct Live {
    ws: WebSocket,
    generation: u64,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
    _on_error: Closure<dyn FnMut(web_sys::Event)>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
        if self.ws.ready_state() <= WebSocket::OPEN {
            let _ = self.ws.close();
        }
    }
}

/// A `setTimeout` or `setInterval`, cleared on drop.
pub(crate) struct Timer {
    id: i32,
    repeat: bool,
    _callback: Closure<dyn FnMut()>,
}

impl Timer {
    fn once(ms: u64, f: impl FnOnce() + 'static) -> Option<Self> {
        let callback = Closure::once(f);
        let ms = i32::try_from(ms).unwrap_or(i32::MAX);
        let id = web_sys::window()?
            .set_timeout_with_callback_and_timeout_and_arguments_0(
                callback.as_ref().unchecked_ref(),
                ms,
            )
            .ok()?;
        Some(Self {
            id,
            repeat: false,
            _callback: callback,
        })
    }

    pub(crate) fn every(ms: u32, f: impl FnMut() + 'static) -> Option<Self> {
        let callback = Closure::<dyn FnMut()>::new(f);
        let ms = i32::try_from(ms).unwrap_or(i32::MAX);
        let id = web_sys::window()?
            .set_interval_with_callback_and_timeout_and_arguments_0(
                callback.as_ref().unchecked_ref(),
                ms,
            )
            .ok()?;
        Some(Self {
            id,
            repeat: true,
            _callback: callback,
        })
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(window) = web_sys::window() {
            if self.repeat {
                window.clear_interval_with_handle(self.id);
            } else {
                window.clear_timeout_with_handle(self.id);
            }
        }
    }
}

/// `online`, `offline` and `visibilitychange` listeners, removed on drop.
struct WindowHooks {
    window: web_sys::Window,
    on_online: Closure<dyn FnMut()>,
    on_offline: Closure<dyn FnMut()>,
    on_visible: Closure<dyn FnMut()>,
}

impl WindowHooks {
    fn install(weak: &Weak<RefCell<Inner>>) -> Option<Self> {
        let window = web_sys::window()?;
        let hook = |input: fn() -> Option<Input>| {
            let weak = weak.clone();
            Closure::<dyn FnMut()>::new(move || {
                if let (Some(inner), Some(input)) = (weak.upgrade(), input()) {
                    step(&inner, input);
                }
            })
        };
        let on_online = hook(|| Some(Input::Online));
        let on_offline = hook(|| Some(Input::Offline));
        let on_visible = hook(|| {
            let visible = web_sys::window()
                .and_then(|w| w.document())
                .is_some_and(|d| d.visibility_state() == web_sys::VisibilityState::Visible);
            visible.then_some(Input::Visible)
        });
        let _ =
            window.add_event_listener_with_callback("online", on_online.as_ref().unchecked_ref());
        let _ =
            window.add_event_listener_with_callback("offline", on_offline.as_ref().unchecked_ref());
        if let Some(document) = window.document() {
            let _ = document.add_event_listener_with_callback(
                "visibilitychange",
                on_visible.as_ref().unchecked_ref(),
            );
        }
        Some(Self {
            window,
            on_online,
            on_offline,
            on_visible,
        })
    }
}

impl Drop for WindowHooks {
    fn drop(&mut self) {
        let w = &self.window;
        let _ = w
            .remove_event_listener_with_callback("online", self.on_online.as_ref().unchecked_ref());
        let _ = w.remove_event_listener_with_callback(
            "offline",
            self.on_offline.as_ref().unchecked_ref(),
        );
        if let Some(document) = w.document() {
            let _ = document.remove_event_listener_with_callback(
                "visibilitychange",
                self.on_visible.as_ref().unchecked_ref(),
            );
        }
    }
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// Runs one machine step and its actions, then delivers the events.
fn step(rc: &Rc<RefCell<Inner>>, input: Input) {
    let mut events = Vec::new();
    let flush = {
        let Ok(mut inner) = rc.try_borrow_mut() else {
            return;
        };
        let actions = inner.machine.step(input, now_ms(), js_sys::Math::random());
        let mut flush = false;
        for action in actions {
            match action {
                Action::Open { generation } => inner.open(rc, generation, &mut events),
                Action::Close {
                    generation,
                    code,
                    reason,
                } => {
                    if inner
                        .live
                        .as_ref()
                        .is_some_and(|l| l.generation == generation)
                        && let Some(live) = inner.live.take()
                    {
                        let _ = live.ws.close_with_code_and_reason(code, &reason);
                    }
                }
                Action::ScheduleRetry { delay_ms } => {
                    let weak = Rc::downgrade(rc);
                    inner.retry = Timer::once(delay_ms, move || {
                        if let Some(inner) = weak.upgrade() {
                            step(&inner, Input::RetryDue);
                        }
                    });
                }
                Action::CancelRetry => inner.retry = None,
                Action::Flush => flush = true,
                Action::EmitClose(close) => events.push(Event::Close(close)),
                Action::EmitState(state) => {
                    if !matches!(state, State::Connecting { .. }) {
                        inner.connect_timeout = None;
                    }
                    if state != State::Open {
                        inner.heartbeat = None;
                        inner.liveness = None;
                        inner.ack_timer = None;
                        if let Some(reliable) = inner.reliable.as_mut() {
                            reliable.on_close();
                        }
                    }
                    if state == State::Closed {
                        inner.live = None;
                        inner.retry = None;
                    }
                    events.push(Event::StateChanged(state));
                }
            }
        }
        flush
    };
    if flush {
        on_open(rc, &mut events);
    }
    deliver(rc, events);
}

/// Open: the heartbeat; in reliable mode the session's first message
/// (`resume` or `ack`); then, once new messages may go out, [`ready`].
fn on_open(rc: &Rc<RefCell<Inner>>, events: &mut Vec<Event>) {
    let (generation, ready_now) = {
        let Ok(mut inner) = rc.try_borrow_mut() else {
            return;
        };
        let generation = inner.machine.generation();
        if let Some(heartbeat) = inner.config.heartbeat {
            inner.liveness = Some(Liveness::new(heartbeat, now_ms()));
            let weak = Rc::downgrade(rc);
            inner.heartbeat = Timer::every(Liveness::tick_ms(heartbeat), move || {
                if let Some(rc) = weak.upgrade() {
                    heartbeat_tick(&rc, generation);
                }
            });
        }
        let first = inner
            .reliable
            .as_mut()
            .map(|r| (r.on_open(), r.ready(), r.take_orphans()));
        let ready_now = match first {
            Some((first, ready, orphans)) => {
                if !orphans.is_empty() {
                    // Sent under a session whose welcome never came: unconfirmed.
                    events.push(Event::ResumeFailed {
                        reason: shared::ResumeFailure::NoSession,
                        unconfirmed: orphans.into_iter().map(Message::Text).collect(),
                    });
                }
                inner.sync_reserved();
                // A failed write shows up as a close of the socket.
                let _ = inner.write(Message::Text(first));
                ready
            }
            None => true,
        };
        (generation, ready_now)
    };
    // A resume waits for its answer: resends go first.
    if ready_now {
        ready(rc, generation, events);
    }
}

/// New messages may go out: the open hook, then the queue in order.
fn ready(rc: &Rc<RefCell<Inner>>, generation: u64, events: &mut Vec<Event>) {
    let hook = rc.borrow().on_open.clone();
    if let Some(hook) = hook {
        rc.borrow_mut().in_open_hook = true;
        hook(&Socket { inner: rc.clone() });
        rc.borrow_mut().in_open_hook = false;
    }
    let Ok(mut inner) = rc.try_borrow_mut() else {
        return;
    };
    // The hook may have closed or replaced the connection: then there is
    // nothing to flush, and the queue waits for the next open.
    if inner.machine.state() != State::Open || inner.machine.generation() != generation {
        return;
    }
    while let Some(message) = inner.queue.pop() {
        match inner.write_app(message) {
            Ok(()) => {}
            // Kept for the resume's resend: nothing to put back.
            Err(Unsent::Kept) => break,
            // The socket failed under us: keep the message, in place, for the next connection.
            Err(Unsent::NotOpen(message)) => {
                inner.queue.unpop(message);
                break;
            }
            Err(Unsent::Refused(err)) => {
                if let Some(message) = err.into_message() {
                    inner.queue.unpop(message);
                }
                break;
            }
        }
    }
    events.push(Event::Open);
}

/// One tick of the heartbeat timer of connection `generation`.
fn heartbeat_tick(rc: &Rc<RefCell<Inner>>, generation: u64) {
    let tick = {
        let Ok(mut inner) = rc.try_borrow_mut() else {
            return;
        };
        let Some(liveness) = inner.liveness.as_mut() else {
            return;
        };
        let now = now_ms();
        let tick = liveness.tick(now);
        if tick == Tick::Ping {
            let ping = shared::ClientMessage::Ping { t: now }.to_json();
            // A failed write shows up as a close of the socket.
            let _ = inner.write(Message::Text(ping));
        }
        tick
    };
    if tick == Tick::Dead {
        step(
            rc,
            Input::Dead {
                generation,
                reason: "heartbeat timeout",
            },
        );
    }
}

/// Delivers events to every callback and stream, with no borrow of `Inner` held.
fn deliver(rc: &Rc<RefCell<Inner>>, events: Vec<Event>) {
    if events.is_empty() {
        return;
    }
    let dispatcher = rc.borrow().dispatcher.clone();
    dispatcher.emit(events);
}

impl Inner {
    fn open(&mut self, rc: &Rc<RefCell<Inner>>, generation: u64, events: &mut Vec<Event>) {
        self.live = None;
        let weak = Rc::downgrade(rc);
        match Live::connect(&self.config.connect_url(), generation, &weak) {
            Ok(live) => self.live = Some(live),
            Err(reason) => events.push(Event::Error(TransportError::Connect(reason))),
        }
        // Also covers a socket that could not even be created: it times out
        // at once and goes through the normal retry path.
        let timeout = if self.live.is_some() {
            u64::from(self.config.connect_timeout_ms)
        } else {
            0
        };
        self.connect_timeout = Timer::once(timeout, move || {
            if let Some(rc) = weak.upgrade() {
                step(
                    &rc,
                    Input::Dead {
                        generation,
                        reason: "connect timeout",
                    },
                );
            }
        });
    }

    /// Writes to the socket if it is really open.
    fn write(&mut self, message: Message) -> Result<(), Unsent> {
        let Some(live) = self
            .live
            .as_ref()
            .filter(|l| l.ws.ready_state() == WebSocket::OPEN)
        else {
            // Closing already: the browser would discard it silently.
            return Err(Unsent::NotOpen(message));
        };
        let len = message.len();
        let sent = match &message {
            Message::Text(text) => live.ws.send_with_str(text),
            Message::Binary(data) => live.ws.send_with_u8_array(data),
        };
        match sent {
            Ok(()) => {
                self.counters.messages_sent += 1;
                self.counters.bytes_sent += len as u64;
                Ok(())
            }
            Err(err) => Err(Unsent::Refused(SendError::Browser {
                message,
                reason: format!("{err:?}"),
            })),
        }
    }

    /// Writes an application message: as is, or in reliable mode numbered
    /// and kept until acknowledged.
    fn write_app(&mut self, message: Message) -> Result<(), Unsent> {
        let Some(reliable) = self.reliable.as_mut() else {
            return self.write(message);
        };
        let Message::Text(text) = message else {
            return Err(Unsent::Refused(SendError::BinaryNotReliable(message)));
        };
        let envelope = reliable.number(text);
        self.sync_reserved();
        match self.write(Message::Text(envelope)) {
            Ok(()) => Ok(()),
            Err(_) => Err(Unsent::Kept),
        }
    }

    /// Reliable mode: unacknowledged messages count against the queue's limits.
    fn sync_reserved(&mut self) {
        if let Some(reliable) = &self.reliable {
            self.queue
                .set_reserved(reliable.unacked(), reliable.unacked_bytes());
        }
    }

    /// Reliable mode: acknowledges now after enough messages, else arms the ack timer.
    fn schedule_ack(&mut self, rc: &Rc<RefCell<Inner>>) {
        let Some(reliable) = self.reliable.as_mut() else {
            return;
        };
        if reliable.ack_now() {
            if let Some(ack) = reliable.take_ack() {
                let _ = self.write(Message::Text(ack));
            }
            self.ack_timer = None;
        } else if reliable.ack_pending() && self.ack_timer.is_none() {
            let weak = Rc::downgrade(rc);
            self.ack_timer = Timer::once(u64::from(ACK_DELAY_MS), move || {
                if let Some(rc) = weak.upgrade()
                    && let Ok(mut inner) = rc.try_borrow_mut()
                {
                    inner.ack_timer = None;
                    if let Some(ack) = inner.reliable.as_mut().and_then(Reliable::take_ack) {
                        let _ = inner.write(Message::Text(ack));
                    }
                }
            });
        }
    }

    fn enqueue(
        &mut self,
        message: Message,
        events: &mut Vec<Event>,
    ) -> Result<SendOutcome, SendError> {
        let dropped = self.queue.push(message)?;
        self.report_dropped(dropped, DropReason::Overflow, events);
        Ok(SendOutcome::Queued)
    }

    fn report_dropped(
        &mut self,
        dropped: Vec<Message>,
        reason: DropReason,
        events: &mut Vec<Event>,
    ) {
        self.counters.dropped += dropped.len() as u64;
        events.extend(
            dropped
                .into_iter()
                .map(|message| Event::Dropped { message, reason }),
        );
    }
}

impl Live {
    fn connect(url: &str, generation: u64, weak: &Weak<RefCell<Inner>>) -> Result<Self, String> {
        let ws = WebSocket::new(url).map_err(|err| format!("{err:?}"))?;
        ws.set_binary_type(BinaryType::Arraybuffer);
        let on_open = {
            let weak = weak.clone();
            Closure::<dyn FnMut()>::new(move || {
                if let Some(rc) = weak.upgrade() {
                    step(&rc, Input::Opened { generation });
                }
            })
        };
        let on_message = {
            let weak = weak.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
                if let Some(rc) = weak.upgrade() {
                    receive(&rc, generation, event.data());
                }
            })
        };
        let on_close = {
            let weak = weak.clone();
            let url = url.to_owned();
            Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
                if let Some(rc) = weak.upgrade() {
                    let close = CloseInfo {
                        url: url.clone(),
                        code: event.code(),
                        reason: event.reason(),
                        was_clean: event.was_clean(),
                    };
                    step(&rc, Input::Closed { generation, close });
                }
            })
        };
        let on_error = {
            let weak = weak.clone();
            Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
                if let Some(rc) = weak.upgrade() {
                    deliver(
                        &rc,
                        vec![Event::Error(TransportError::Socket(
                            "the WebSocket reported an error".into(),
                        ))],
                    );
                }
            })
        };
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        ws.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        Ok(Self {
            ws,
            generation,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
            _on_error: on_error,
        })
    }
}

fn receive(rc: &Rc<RefCell<Inner>>, generation: u64, data: JsValue) {
    let mut events = Vec::new();
    let resumed = {
        let Ok(mut inner) = rc.try_borrow_mut() else {
            return;
        };
        if inner.machine.generation() != generation {
            return;
        }
        let message = match data.as_string() {
            Some(text) => Message::Text(text),
            None => match data.dyn_into::<js_sys::ArrayBuffer>() {
                Ok(buffer) => Message::Binary(js_sys::Uint8Array::new(&buffer).to_vec()),
                Err(_) => return,
            },
        };
        inner.counters.messages_received += 1;
        inner.counters.bytes_received += message.len() as u64;
        if let Some(liveness) = inner.liveness.as_mut() {
            liveness.seen(now_ms());
        }
        match (inner.reliable.as_mut(), message) {
            (Some(reliable), Message::Text(text)) => {
                let incoming = reliable.on_text(text);
                let resumed = inner.on_incoming(incoming, &mut events);
                inner.sync_reserved();
                inner.schedule_ack(rc);
                resumed
            }
            (_, message) => {
                events.push(Event::Message(message));
                false
            }
        }
    };
    if resumed {
        ready(rc, generation, &mut events);
    }
    deliver(rc, events);
}

impl Inner {
    /// Reliable mode: carries out what a received text meant; true when the
    /// resume was answered (new messages may go out now).
    fn on_incoming(&mut self, incoming: Incoming, events: &mut Vec<Event>) -> bool {
        match incoming {
            Incoming::Deliver(data) => events.push(Event::Message(Message::Text(data))),
            Incoming::Resumed { resend } => {
                let resent = resend.len();
                for frame in resend {
                    // A failed write shows up as a close; the next resume resends again.
                    if self.write(Message::Text(frame)).is_err() {
                        break;
                    }
                }
                events.push(Event::Resumed { resent });
                return true;
            }
            Incoming::ResumeFailed {
                reason,
                unconfirmed,
            } => {
                events.push(Event::ResumeFailed {
                    reason,
                    unconfirmed: unconfirmed.into_iter().map(Message::Text).collect(),
                });
                return true;
            }
            Incoming::Gap { from, to } => {
                self.counters.gaps += 1;
                events.push(Event::Gap { from, to });
            }
            Incoming::GapThen { from, to, data } => {
                self.counters.gaps += 1;
                events.push(Event::Gap { from, to });
                events.push(Event::Message(Message::Text(data)));
            }
            // An ack, or a replay of something delivered before.
            _ => {}
        }
        false
    }
}

impl Socket {
    /// Creates the wrapper and starts connecting to `config.url`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] unless the URL is a valid `ws:` or `wss:` URL;
    /// [`Error::NoWindow`] outside a browser window.
    pub fn new(config: Config) -> Result<Self, Error> {
        let parsed =
            web_sys::Url::new(&config.url).map_err(|_| Error::InvalidUrl(config.url.clone()))?;
        if !matches!(parsed.protocol().as_str(), "ws:" | "wss:") {
            return Err(Error::InvalidUrl(config.url));
        }
        if web_sys::window().is_none() {
            return Err(Error::NoWindow);
        }
        let machine = Machine::new(
            config.url.clone(),
            config.backoff,
            config.min_uptime_ms,
            config.should_reconnect.clone(),
        );
        let queue = Queue::new(
            config.queue_capacity,
            config.queue_max_bytes,
            config.overflow,
        );
        let reliable = config.reliable.then(Reliable::new);
        let inner = Rc::new(RefCell::new(Inner {
            reliable,
            config,
            machine,
            queue,
            counters: Counters::default(),
            live: None,
            retry: None,
            connect_timeout: None,
            heartbeat: None,
            liveness: None,
            dispatcher: Rc::default(),
            on_open: None,
            in_open_hook: false,
            ack_timer: None,
            _window: None,
        }));
        inner.borrow_mut()._window = WindowHooks::install(&Rc::downgrade(&inner));
        step(&inner, Input::Start);
        Ok(Self { inner })
    }

    /// Sends now if open; otherwise queues for the next open.
    ///
    /// # Errors
    ///
    /// Every error gives the message back: [`SendError::QueueFull`],
    /// [`SendError::TooLarge`], [`SendError::Closed`] after [`Socket::close`]
    /// (or when the wrapper gave up; call [`Socket::reconnect`]), and
    /// [`SendError::Browser`] if the browser refused it.
    pub fn send(&self, message: impl Into<Message>) -> Result<SendOutcome, SendError> {
        let message = message.into();
        let mut events = Vec::new();
        let result = {
            let mut inner = self.inner.borrow_mut();
            let ready = inner.reliable.as_ref().is_none_or(Reliable::ready);
            match inner.machine.state() {
                State::Closed => Err(SendError::Closed(message)),
                _ if inner.reliable.is_some() && matches!(message, Message::Binary(_)) => {
                    Err(SendError::BinaryNotReliable(message))
                }
                // Reliable mode: written messages are kept, so they need room too.
                State::Open
                    if ready
                        && inner.reliable.is_some()
                        && !inner.queue.has_room(message.len()) =>
                {
                    inner.enqueue(message, &mut events)
                }
                // The open hook's messages go out ahead of the queue it precedes.
                State::Open if ready && (inner.queue.is_empty() || inner.in_open_hook) => {
                    match inner.write_app(message) {
                        Ok(()) => Ok(SendOutcome::Sent),
                        Err(Unsent::Refused(err)) => Err(err),
                        Err(Unsent::Kept) => Ok(SendOutcome::Queued),
                        Err(Unsent::NotOpen(message)) => inner.enqueue(message, &mut events),
                    }
                }
                _ => inner.enqueue(message, &mut events),
            }
        };
        deliver(&self.inner, events);
        result
    }

    /// Closes for good with `code` and `reason`: no reconnect, timers
    /// cancelled, later sends fail with [`SendError::Closed`]. Queued
    /// messages stay queued (take them with [`Socket::take_queued`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCloseCode`] unless `code` is 1000 or 3000-4999 (what
    /// browsers allow), [`Error::ReasonTooLong`] over 123 bytes.
    pub fn close(&self, code: u16, reason: &str) -> Result<(), Error> {
        if code != 1000 && !(3000..=4999).contains(&code) {
            return Err(Error::InvalidCloseCode(code));
        }
        if reason.len() > 123 {
            return Err(Error::ReasonTooLong);
        }
        step(
            &self.inner,
            Input::UserClose {
                code,
                reason: reason.to_owned(),
            },
        );
        Ok(())
    }

    /// Reconnects now, with the attempt counter reset: after a close by the
    /// application or the policy, after the attempts ran out, or to replace a
    /// live connection.
    pub fn reconnect(&self) {
        step(&self.inner, Input::Reconnect);
    }

    /// Whether two handles are the same socket.
    pub fn ptr_eq(&self, other: &Socket) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.inner.borrow().machine.state()
    }

    /// The URL.
    pub fn url(&self) -> String {
        self.inner.borrow().config.url.clone()
    }

    /// Counters and queue figures.
    pub fn stats(&self) -> Stats {
        let inner = self.inner.borrow();
        let c = &inner.counters;
        Stats {
            queue_len: inner.queue.len(),
            queue_capacity: inner.queue.capacity(),
            queue_bytes: inner.queue.bytes(),
            messages_sent: c.messages_sent,
            bytes_sent: c.bytes_sent,
            messages_received: c.messages_received,
            bytes_received: c.bytes_received,
            dropped: c.dropped,
            reconnects: inner.machine.reconnects(),
            attempt: inner.machine.attempt(),
            uptime_ms: inner.machine.opened_at_ms().map(|t| now_ms() - t),
            unacked: inner.reliable.as_ref().map_or(0, Reliable::unacked),
            acked: inner.reliable.as_ref().map_or(0, Reliable::acked_total),
            delivered: inner.reliable.as_ref().map_or(0, Reliable::delivered_total),
            gaps: c.gaps,
        }
    }

    /// Messages waiting in the queue.
    pub fn queue_len(&self) -> usize {
        self.inner.borrow().queue.len()
    }

    /// Changes the queue capacity; messages that no longer fit are dropped
    /// newest first, each reported with [`Event::Dropped`].
    pub fn set_queue_capacity(&self, capacity: usize) {
        let mut events = Vec::new();
        {
            let mut inner = self.inner.borrow_mut();
            let evicted = inner.queue.set_capacity(capacity);
            inner.report_dropped(evicted, DropReason::CapacityLowered, &mut events);
        }
        deliver(&self.inner, events);
    }

    /// Takes every queued message back out, oldest first.
    pub fn take_queued(&self) -> Vec<Message> {
        self.inner.borrow_mut().queue.take_all()
    }

    /// Empties the queue; returns how many messages it held.
    pub fn clear_queue(&self) -> usize {
        self.take_queued().len()
    }

    /// Runs `hook` on every open, before the queue is flushed (to send an
    /// authentication message first, say). What the hook sends goes out
    /// ahead of the queued messages, even when the queue is full. Use the
    /// `&Socket` it is given rather than capturing a clone (a cycle).
    pub fn set_on_open(&self, hook: impl Fn(&Socket) + 'static) {
        self.inner.borrow_mut().on_open = Some(Rc::new(hook));
    }

    /// Calls `callback` with every event until the subscription is dropped.
    ///
    /// Callbacks may use the socket (send, close...); events that raises are
    /// delivered after the current one, to every callback, in order. A
    /// callback that holds a clone of this `Socket` keeps it alive (a cycle):
    /// hold a [`WeakSocket`] there instead.
    pub fn on_event(&self, callback: impl FnMut(&Event) + 'static) -> Subscription {
        let dispatcher = self.inner.borrow().dispatcher.clone();
        dispatcher.subscribe(callback)
    }

    /// Every event from now on as a `Stream`; it ends when the socket is dropped.
    pub fn events(&self) -> EventStream {
        self.inner.borrow().dispatcher.stream()
    }

    /// A handle that does not keep the socket alive.
    pub fn downgrade(&self) -> WeakSocket {
        WeakSocket {
            inner: Rc::downgrade(&self.inner),
        }
    }
}

/// A [`Socket`] handle that does not keep it alive, for callbacks that the
/// socket itself owns (see [`Socket::on_event`]).
#[derive(Clone)]
pub struct WeakSocket {
    inner: Weak<RefCell<Inner>>,
}

impl WeakSocket {
    /// The socket, unless every [`Socket`] handle was dropped.
    pub fn upgrade(&self) -> Option<Socket> {
        self.inner.upgrade().map(|inner| Socket { inner })
    }
}
