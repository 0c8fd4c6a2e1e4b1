//! One connection for all tabs in the pump: the coordinator
//! ([`crate::tabs::Tabs`]) next to the [`Driver`], and the adapter between
//! them. No rule lives here (they are the coordinator's and the driver's):
//!
//! * the coordinator's effects are performed with [`TabsIo`] (channel,
//!   lock), the leader's socket calls ([`SocketCall`]) with a [`Driver`]
//!   made for the purpose, and its deliveries become the app's [`Event`]s;
//! * the leader's driver is read after each input it handles, and its
//!   effects are performed right after that input (not after the next
//!   one), so that each report is exact: the server seq of a delivered
//!   message is the reliable window's `last_in` when it grew during that
//!   input, acks are its `acked_total` growing, the session its
//!   credentials changing; in plain mode each application frame written
//!   (a `Write` with `hand_back`) is one [`SocketReport::Written`].
//!
//! The leader's driver has no queue bound of its own: what it holds was
//! bounded in the tab that sent it (each tab's queue capacity and byte
//! limit) and by the coordinator for each tab (it refuses past its own
//! bound, and binary frames in reliable mode, before they reach the
//! driver), and the coordinator counts on every accepted message reaching it.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use super::glue::{Shared, now_ms, seed};
use super::tabs_events::{link_of, role_of, state_of};
use super::tabs_io::{Ask, TabsIo};
use super::timers::Timers;
use crate::config::{Config, Overflow};
use crate::driver::Driver;
use crate::message::{DropReason, Event, Message, State};
use crate::reliable::Reliable;
use crate::tabs::{Effect, Frame, Input, LinkState, SocketCall, SocketReport, TabSend, Tabs};

/// The coordinator and what it needs, when the config shares across tabs.
pub(super) struct TabsPart {
    pub(super) coordinator: RefCell<Tabs>,
    inputs: RefCell<VecDeque<(Input, f64)>>,
    io: RefCell<Option<TabsIo>>,
    adapter: RefCell<Adapter>,
    /// The coordinator sent this tab alone: the driver runs as without sharing.
    alone: Cell<bool>,
    /// What [`crate::Socket::close`] handed back, for `take_queued`.
    unsent: RefCell<Vec<Message>>,
}

/// The leader's bookkeeping of its driver.
#[derive(Default)]
struct Adapter {
    /// The leader's driver was opened and not released nor closed.
    driving: bool,
    /// Reliable `last_in` before the input being handled.
    last_in_before: u64,
    /// Acked client seqs = `acked_base + acked_total - acked_from`.
    acked_base: u64,
    acked_from: u64,
    acked_reported: u64,
    credentials: Option<(String, String)>,
    link: Option<LinkState>,
    /// The application's close, for the last tab's [`SocketCall::Close`].
    close: Option<(u16, String)>,
}

impl TabsPart {
    /// The coordinator of tab `tab_id` for `config` (not started).
    pub(super) fn new(tab_id: u32, config: &Config) -> Self {
        Self {
            coordinator: RefCell::new(Tabs::new(crate::tabs::TabId(tab_id), config)),
            inputs: RefCell::default(),
            io: RefCell::new(None),
            adapter: RefCell::default(),
            alone: Cell::new(false),
            unsent: RefCell::default(),
        }
    }

    /// Whether the coordinator runs this tab (not alone).
    pub(super) fn sharing(&self) -> bool {
        !self.alone.get()
    }
}

impl Drop for TabsPart {
    /// The last handle went without a close: say `Bye`, so that the
    /// others do not wait for silence (the lock goes with the [`TabsIo`],
    /// the socket with the driver).
    fn drop(&mut self) {
        if self.alone.get() {
            return;
        }
        let coordinator = self.coordinator.get_mut();
        drop(coordinator.close());
        while let Some(effect) = coordinator.poll_effect() {
            if let (Effect::Broadcast(envelope), Some(io)) = (effect, self.io.get_mut().as_ref()) {
                io.post(&envelope);
            }
        }
    }
}

impl Shared {
    /// Starts sharing: opens the channel and asks for the lock, or goes
    /// alone where the browser cannot share.
    pub(super) fn start_tabs(self: &Rc<Self>, name: &str) {
        let Some(tabs) = &self.tabs else { return };
        let weak = Rc::downgrade(self);
        let report: Rc<dyn Fn(Input)> = Rc::new(move |input| {
            if let Some(shared) = weak.upgrade() {
                shared.tab_input(input);
            }
        });
        let weak = Rc::downgrade(self);
        let on_pagehide = move || {
            if let Some(shared) = weak.upgrade() {
                shared.leave_tabs(1000, "page hidden");
            }
        };
        match TabsIo::install(name, report, on_pagehide) {
            Some(io) => {
                *tabs.io.borrow_mut() = Some(io);
                tabs.coordinator.borrow_mut().start();
            }
            None => tabs
                .inputs
                .borrow_mut()
                .push_back((Input::Unsupported, now_ms())),
        }
        self.pump();
    }

    /// A coordinator input from the browser: queue it and pump.
    fn tab_input(self: &Rc<Self>, input: Input) {
        if let Some(tabs) = &self.tabs {
            tabs.inputs.borrow_mut().push_back((input, now_ms()));
            self.pump();
        }
    }

    /// Whether the coordinator runs this socket (sharing on, not alone).
    pub(super) fn sharing(&self) -> bool {
        self.tabs.as_ref().is_some_and(TabsPart::sharing)
    }

    /// Whether this tab's driver is the shared connection's.
    pub(super) fn leading(&self) -> bool {
        self.tabs
            .as_ref()
            .is_some_and(|t| t.sharing() && t.adapter.borrow().driving)
    }

    /// Whether this tab shares and does not lead: its driver is idle (not
    /// started), and takes no input.
    pub(super) fn idle_driver(&self) -> bool {
        self.sharing() && !self.leading()
    }

    /// A send while sharing: through the coordinator.
    pub(super) fn tab_send(
        self: &Rc<Self>,
        message: Message,
    ) -> Result<crate::SendOutcome, crate::SendError> {
        let Some(tabs) = &self.tabs else {
            return Err(crate::SendError::Closed(message));
        };
        let sent = tabs.coordinator.borrow_mut().send(message);
        self.pump();
        sent.map(|sent| match sent {
            TabSend::Sent => crate::SendOutcome::Sent,
            TabSend::Forwarded => crate::SendOutcome::Forwarded,
            TabSend::Queued => crate::SendOutcome::Queued,
        })
    }

    /// This tab leaves the shared connection (its close, or the page going
    /// away): the leader hands it over or, last, closes it with `code`.
    pub(super) fn leave_tabs(self: &Rc<Self>, code: u16, reason: &str) {
        let Some(tabs) = &self.tabs else { return };
        if !tabs.sharing() {
            return;
        }
        tabs.adapter.borrow_mut().close = Some((code, reason.to_owned()));
        let unsent = tabs.coordinator.borrow_mut().close();
        tabs.unsent
            .borrow_mut()
            .extend(unsent.into_iter().map(Message::from));
        self.pump();
        // Bye said, lock released: the channel and listeners go now.
        let io = tabs.io.borrow_mut().take();
        drop(io);
    }

    /// What `close` handed back.
    pub(super) fn take_unsent(&self) -> Vec<Message> {
        self.tabs
            .as_ref()
            .map(|t| std::mem::take(&mut *t.unsent.borrow_mut()))
            .unwrap_or_default()
    }

    /// The state the app sees: the shared connection's.
    pub(super) fn tab_state(&self) -> Option<State> {
        let tabs = self.tabs.as_ref().filter(|t| t.sharing())?;
        if tabs.adapter.borrow().driving {
            return None;
        }
        Some(state_of(tabs.coordinator.borrow().link()))
    }

    /// Stats with the tab's role and count (and its own queue while sharing).
    pub(super) fn tab_stats(&self, stats: &mut crate::Stats) {
        let Some(tabs) = &self.tabs else { return };
        if !tabs.sharing() {
            return;
        }
        let coordinator = tabs.coordinator.borrow();
        stats.tab_role = role_of(coordinator.role());
        stats.tabs = coordinator.tabs();
        stats.queue_len = coordinator.outbox_len();
        stats.queue_capacity = self.config.queue_capacity;
    }

    /// Before the driver handles an input.
    pub(super) fn before_driver_input(&self) {
        if let Some(tabs) = self.tabs.as_ref().filter(|_| self.leading()) {
            let last_in = self.driver.borrow().reliable().map_or(0, Reliable::last_in);
            tabs.adapter.borrow_mut().last_in_before = last_in;
        }
    }

    /// After the driver handled an input: report a new session and new acks.
    pub(super) fn after_driver_input(&self) {
        let Some(tabs) = self.tabs.as_ref().filter(|_| self.leading()) else {
            return;
        };
        let driver = self.driver.borrow();
        let Some(reliable) = driver.reliable() else {
            return;
        };
        let mut adapter = tabs.adapter.borrow_mut();
        let mut inputs = tabs.inputs.borrow_mut();
        let now = now_ms();
        let credentials = reliable
            .credentials()
            .map(|(id, token)| (id.to_owned(), token.to_owned()));
        if credentials.is_some() && credentials != adapter.credentials {
            adapter.credentials.clone_from(&credentials);
            if let Some((id, token)) = credentials {
                let session = crate::tabs::Session { id, token };
                inputs.push_back((Input::Socket(SocketReport::Session(session)), now));
            }
        }
        let acked = adapter.acked_base + reliable.acked_total() - adapter.acked_from;
        if acked > adapter.acked_reported {
            adapter.acked_reported = acked;
            inputs.push_back((Input::Socket(SocketReport::Acked { seq: acked }), now));
        }
    }

    /// Whether the driver's effects go first (leading: so that each is
    /// read right after the input that caused it).
    pub(super) fn driver_effects_first(&self) -> bool {
        self.leading()
    }

    /// A driver event while sharing: reported to the coordinator, or
    /// passed to the app. `None` when taken.
    pub(super) fn tab_event(&self, event: Event) -> Option<Event> {
        let Some(tabs) = self.tabs.as_ref().filter(|t| t.sharing()) else {
            // Not sharing, or alone: the app's own socket.
            return Some(event);
        };
        if !tabs.adapter.borrow().driving {
            // The leader's driver closing after its release: not ours to show.
            return None;
        }
        let report = |report: SocketReport| {
            tabs.inputs
                .borrow_mut()
                .push_back((Input::Socket(report), now_ms()));
        };
        match event {
            Event::Message(message) => {
                let last_in = self.driver.borrow().reliable().map(Reliable::last_in);
                let before = tabs.adapter.borrow().last_in_before;
                let seq = last_in.filter(|seq| *seq > before);
                report(SocketReport::Inbound {
                    seq,
                    frame: Frame::from(message),
                });
                None
            }
            Event::StateChanged(state) => {
                let link = link_of(state);
                let mut adapter = tabs.adapter.borrow_mut();
                if adapter.link != Some(link) {
                    adapter.link = Some(link);
                    report(SocketReport::State(link));
                }
                Some(event)
            }
            Event::ResumeFailed { unconfirmed, .. } => {
                let mut adapter = tabs.adapter.borrow_mut();
                adapter.acked_base = 0;
                adapter.acked_reported = 0;
                adapter.acked_from = self
                    .driver
                    .borrow()
                    .reliable()
                    .map_or(0, Reliable::acked_total);
                report(SocketReport::ResumeFailed {
                    session: None,
                    unconfirmed: unconfirmed.len(),
                });
                // Each tab hears of its own (the coordinator's `Unconfirmed`).
                None
            }
            other => Some(other),
        }
    }

    /// Plain mode: an application frame reached the leader's socket.
    pub(super) fn tab_written(&self) {
        if let Some(tabs) = self.tabs.as_ref().filter(|_| self.leading()) {
            tabs.inputs
                .borrow_mut()
                .push_back((Input::Socket(SocketReport::Written), now_ms()));
        }
    }

    /// Feeds the next coordinator input; whether there was one.
    pub(super) fn feed_tabs(&self) -> bool {
        let Some(tabs) = &self.tabs else { return false };
        let input = tabs.inputs.borrow_mut().pop_front();
        match input {
            Some((input, now)) => {
                tabs.coordinator.borrow_mut().handle(input, now);
                true
            }
            None => false,
        }
    }

    /// Performs the next coordinator effect; whether there was one.
    pub(super) fn perform_tabs(self: &Rc<Self>) -> bool {
        let Some(tabs) = &self.tabs else { return false };
        let effect = tabs.coordinator.borrow_mut().poll_effect();
        let Some(effect) = effect else { return false };
        let io = |f: &dyn Fn(&mut TabsIo)| {
            if let Some(io) = tabs.io.borrow_mut().as_mut() {
                f(io);
            }
        };
        match effect {
            Effect::Broadcast(envelope) => io(&|io| io.post(&envelope)),
            Effect::TryLock => io(&|io| io.ask(Ask::IfFree)),
            Effect::RequestLock => io(&|io| io.ask(Ask::InLine)),
            Effect::StealLock => io(&|io| io.ask(Ask::Steal)),
            Effect::ReleaseLock => io(&|io| io.release()),
            Effect::DriveSocket(call) => self.drive(tabs, call),
            Effect::Deliver(event) => self.deliver(event),
            Effect::GoAlone { unsent } => {
                tabs.alone.set(true);
                let io = tabs.io.borrow_mut().take();
                drop(io);
                // A leader keeps the socket it drives (with the other tabs'
                // messages it accepted) as its own.
                let driving = std::mem::take(&mut tabs.adapter.borrow_mut().driving);
                let hook = self.open_hook.borrow().is_some();
                let mut driver = self.driver.borrow_mut();
                if !driving {
                    driver.set_open_hook(hook);
                    driver.start(now_ms());
                }
                let refused: Vec<Message> = unsent
                    .into_iter()
                    .filter_map(|frame| driver.send(frame).err()?.into_message())
                    .collect();
                drop(driver);
                // Never silent: what its own socket refused is handed back.
                self.dispatcher
                    .emit(refused.into_iter().map(|message| Event::Dropped {
                        message,
                        reason: DropReason::Overflow,
                    }));
            }
        }
        true
    }

    /// The leader's socket calls.
    fn drive(self: &Rc<Self>, tabs: &TabsPart, call: SocketCall) {
        match call {
            SocketCall::Open { resume } => {
                let config = Config {
                    queue_capacity: usize::MAX,
                    queue_max_bytes: None,
                    overflow: Overflow::RejectNew,
                    ..self.config.clone()
                };
                let mut driver = Driver::new(config, seed());
                let restored = match (&resume.session, self.config.reliable) {
                    (Some(session), true) => {
                        driver.restore_reliable(Reliable::restored(
                            session.id.clone(),
                            session.token.clone(),
                            resume.last_in,
                            resume.acked_seq,
                            resume.pending.iter().filter_map(|p| match &p.frame {
                                Frame::Text(text) => Some(text.clone()),
                                Frame::Binary(_) => None,
                            }),
                        ));
                        true
                    }
                    _ => false,
                };
                let close = tabs.adapter.borrow().close.clone();
                *tabs.adapter.borrow_mut() = Adapter {
                    driving: true,
                    acked_base: resume.acked_seq,
                    acked_reported: resume.acked_seq,
                    credentials: resume
                        .session
                        .as_ref()
                        .map(|s| (s.id.clone(), s.token.clone())),
                    close,
                    ..Adapter::default()
                };
                driver.start(now_ms());
                if !restored {
                    for pending in &resume.pending {
                        // Unbounded and not closed: queued for the open.
                        let _ = driver.send(pending.frame.clone());
                    }
                }
                *self.driver.borrow_mut() = driver;
            }
            SocketCall::Send(frame) => {
                let sent = self.driver.borrow_mut().send(frame);
                if let Err(error) = sent
                    && let Some(message) = error.into_message()
                {
                    self.dispatcher.emit([Event::Dropped {
                        message,
                        reason: DropReason::Overflow,
                    }]);
                }
            }
            SocketCall::Release => {
                tabs.adapter.borrow_mut().driving = false;
                // The socket goes without ending the session; the timers too.
                let fresh = Driver::new(self.config.clone(), seed());
                *self.driver.borrow_mut() = fresh;
                let mut io = self.io.borrow_mut();
                io.live = None;
                io.timers = Timers::default();
            }
            SocketCall::Close => {
                // Still this tab's driver: its close shows as its state.
                let (code, reason) = tabs
                    .adapter
                    .borrow()
                    .close
                    .clone()
                    .unwrap_or((1000, String::new()));
                // The code was checked by `Socket::close`.
                let _ = self.driver.borrow_mut().close(code, &reason, now_ms());
            }
        }
    }
}
