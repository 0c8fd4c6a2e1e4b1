//! The pump: feeds the [`Runner`] its inputs and performs its [`Step`]s
//! with the browser's sockets, timers, tab channel and lock. No rule lives
//! here: they are the runner's (the driver's and, when sharing, the tab
//! coordinator's and their adapter's).
//!
//! One pump per socket asks the runner for its next step and performs it,
//! until none is left. A pump called while one runs returns at once: what
//! it would have done is queued in the runner, and the running pump does it
//! after the current step. So:
//!
//! * no input is ever dropped: a browser callback that fires while the pump
//!   runs (an app callback dispatching `online`, say) is queued and fed
//!   after the current step;
//! * the runner's `RefCell` is borrowed only for one runner call, never
//!   while the application's code runs (events, the open hook), so that
//!   code may use the socket: its calls queue more work in the runner;
//! * steps are performed in the runner's order, one at a time.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use super::Socket;
use super::hooks::WindowHooks;
use super::live::Live;
use super::tabs_io::{Ask, TabsIo};
use super::timers::Timers;
use crate::config::Config;
use crate::dispatch::{Dispatcher, Local};
use crate::driver::{Effect, Input};
use crate::runner::{Runner, Step, TabIo};
use crate::tabs::Input as TabInput;
use crate::token::url_with_token;

/// The application's open hook.
pub(super) type OpenHook = Rc<dyn Fn(&Socket)>;

/// Everything one socket owns; [`Socket`] handles share it. Dropping it
/// drops the browser socket, the timers, the tab channel and the window
/// hooks, which remove their callbacks.
pub(crate) struct Shared {
    pub(super) runner: RefCell<Runner>,
    /// Callbacks and streams; used with no borrow held.
    pub(super) dispatcher: Rc<Dispatcher<Local>>,
    pub(super) open_hook: RefCell<Option<OpenHook>>,
    io: RefCell<Io>,
    /// [`Socket::tab_id`].
    pub(super) tab_id: u32,
    pumping: Cell<bool>,
}

/// The browser side: the socket, the timers, the window hooks, the tab
/// channel and lock.
struct Io {
    live: Option<Live>,
    timers: Timers,
    tabs: Option<TabsIo>,
    _window: Option<WindowHooks>,
}

/// Resets the pump flag however the pump ends.
struct Pumping<'a>(&'a Cell<bool>);

impl Drop for Pumping<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

pub(super) fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// 128 random bits, a publish's id: from `crypto.getRandomValues`
/// (`Math.random` where there is no `crypto`, which a page always has).
pub(super) fn random_id() -> u128 {
    let mut bytes = [0u8; 16];
    let filled = web_sys::window()
        .and_then(|window| window.crypto().ok())
        .is_some_and(|crypto| crypto.get_random_values_with_u8_array(&mut bytes).is_ok());
    if filled {
        u128::from_le_bytes(bytes)
    } else {
        (u128::from(seed()) << 64) | u128::from(seed())
    }
}

/// 64 random bits for the backoff's jitter (`Math.random` gives 52 at most).
fn seed() -> u64 {
    let half = || (js_sys::Math::random() * 4_294_967_296.0) as u64;
    (half() << 32) | half()
}

/// Reports a browser callback's input to the socket, if it still exists.
fn reporter(weak: &Weak<Shared>) -> impl Fn(Input) + Clone + 'static {
    let weak = weak.clone();
    move |input| {
        if let Some(shared) = weak.upgrade() {
            shared.input(input);
        }
    }
}

impl Shared {
    /// A socket's state with its window hooks installed; started.
    pub(super) fn start(config: Config) -> Rc<Self> {
        let tab_id = crate::tabs::tab_id_from(seed());
        let name = config.shared_across_tabs.clone();
        let shared = Rc::new_cyclic(|weak| Self {
            runner: RefCell::new(Runner::new(config, tab_id, seed())),
            tab_id,
            dispatcher: Rc::default(),
            open_hook: RefCell::new(None),
            io: RefCell::new(Io {
                live: None,
                timers: Timers::default(),
                tabs: None,
                _window: WindowHooks::install(reporter(weak)),
            }),
            pumping: Cell::new(false),
        });
        let channel_ready = name.is_some_and(|name| shared.install_tabs(&name));
        shared.runner.borrow_mut().start(now_ms(), channel_ready);
        shared.pump();
        shared
    }

    /// Opens the tab channel and the lock; whether the browser can.
    fn install_tabs(self: &Rc<Self>, name: &str) -> bool {
        let weak = Rc::downgrade(self);
        let report: Rc<dyn Fn(TabInput)> = Rc::new(move |input| {
            if let Some(shared) = weak.upgrade() {
                shared.runner.borrow_mut().tab_input(input, now_ms());
                shared.pump();
            }
        });
        let weak = Rc::downgrade(self);
        let on_pagehide = move || {
            if let Some(shared) = weak.upgrade() {
                shared.runner.borrow_mut().leave(1000, "page hidden");
                shared.pump();
            }
        };
        let io = TabsIo::install(name, report, on_pagehide);
        let installed = io.is_some();
        self.io.borrow_mut().tabs = io;
        installed
    }

    /// Something happened: queue it for the runner and pump.
    pub(super) fn input(self: &Rc<Self>, input: Input) {
        let now = now_ms();
        self.runner.borrow_mut().input(input, now);
        self.pump_at(now);
    }

    /// Performs every step the runner has, in order; returns at once when a
    /// pump is already running (it does the work).
    pub(super) fn pump(self: &Rc<Self>) {
        self.pump_at(now_ms());
    }

    /// [`Shared::pump`] at `now`: the clock is read once per pump, not once
    /// per step (a call into JS each time: a burst reads it per message).
    /// The runner's steps barely use it (the tab coordinator's reports);
    /// the driver's inputs carry their own arrival time.
    fn pump_at(self: &Rc<Self>, now: f64) {
        if self.pumping.replace(true) {
            return;
        }
        let _pumping = Pumping(&self.pumping);
        loop {
            let step = self.runner.borrow_mut().next(now);
            match step {
                Some(Step::Socket(effect)) => self.perform(effect),
                Some(Step::Emit(event)) => self.dispatcher.emit([event]),
                Some(Step::Tabs(io)) => self.tab_io(io),
                Some(Step::ForgetSocket) => {
                    let mut io = self.io.borrow_mut();
                    io.live = None;
                    io.timers = Timers::default();
                }
                None => return,
            }
        }
    }

    /// Uses the tab channel or the lock.
    fn tab_io(&self, step: TabIo) {
        let mut io = self.io.borrow_mut();
        if let TabIo::Detach = step {
            // Bye said, lock released: the channel and listeners go now.
            let tabs = io.tabs.take();
            drop(io);
            drop(tabs);
            return;
        }
        let Some(tabs) = io.tabs.as_mut() else {
            return;
        };
        match step {
            TabIo::Post(envelope) => tabs.post(&envelope),
            TabIo::TryLock => tabs.ask(Ask::IfFree),
            TabIo::RequestLock => tabs.ask(Ask::InLine),
            TabIo::StealLock => tabs.ask(Ask::Steal),
            TabIo::ReleaseLock => tabs.release(),
            TabIo::Detach => {}
        }
    }

    /// Performs one driver effect. No borrow is held while application
    /// code runs.
    fn perform(self: &Rc<Self>, effect: Effect) {
        match effect {
            Effect::OpenSocket {
                generation,
                url,
                token,
            } => {
                // Browsers cannot set headers on a WebSocket: the token goes in the query.
                let url = match &token {
                    Some(token) => url_with_token(&url, token),
                    None => url,
                };
                let mut io = self.io.borrow_mut();
                // The replaced socket goes first: at most one is live.
                io.live = None;
                match Live::connect(&url, generation, reporter(&Rc::downgrade(self))) {
                    Ok(live) => io.live = Some(live),
                    Err(error) => {
                        drop(io);
                        self.input(Input::OpenFailed { generation, error });
                    }
                }
            }
            Effect::Write {
                generation,
                message,
                hand_back,
            } => {
                let written =
                    self.io.borrow().live.as_ref().is_some_and(|live| {
                        live.generation() == generation && live.write(&message)
                    });
                self.runner
                    .borrow_mut()
                    .wrote(generation, message, hand_back, written, now_ms());
            }
            Effect::CloseSocket {
                generation,
                code,
                reason,
            } => {
                let live = {
                    let mut io = self.io.borrow_mut();
                    let current = io.live.as_ref().map(Live::generation);
                    if current == Some(generation) {
                        io.live.take()
                    } else {
                        None
                    }
                };
                if let Some(live) = live {
                    live.close(code, &reason);
                }
            }
            Effect::DropSocket => {
                let live = self.io.borrow_mut().live.take();
                drop(live);
            }
            Effect::StartTimer { id, delay_ms } => {
                let report = reporter(&Rc::downgrade(self));
                let fire = move || report(Input::TimerFired(id));
                self.io.borrow_mut().timers.start(id.kind, delay_ms, fire);
            }
            Effect::StopTimer(kind) => self.io.borrow_mut().timers.stop(kind),
            Effect::RunOpenHook { generation } => {
                let hook = self.open_hook.borrow().clone();
                if let Some(hook) = hook {
                    hook(&Socket {
                        shared: self.clone(),
                    });
                }
                self.runner.borrow_mut().open_hook_done(generation);
            }
            Effect::FetchToken { serial } => {
                let provider = self.runner.borrow().token_provider();
                let report = reporter(&Rc::downgrade(self));
                // Runs on the page's executor; a result that comes after the
                // socket was dropped goes nowhere (the reporter holds a Weak),
                // and one the driver no longer waits for is ignored by it.
                wasm_bindgen_futures::spawn_local(async move {
                    let result = match provider {
                        Some(provider) => provider.call().await,
                        None => Err("no token provider configured".into()),
                    };
                    report(Input::TokenFetched { serial, result });
                });
            }
            // The runner turns events into `Step::Emit`.
            Effect::Emit(event) => self.dispatcher.emit([event]),
        }
    }
}

impl Drop for Shared {
    /// The last handle went without a close: this tab says `Bye`, so that
    /// the others do not wait for silence (the lock goes with the channel,
    /// the socket with the driver).
    fn drop(&mut self) {
        let io = self.io.get_mut();
        if let Some(tabs) = &io.tabs {
            for envelope in self.runner.get_mut().farewell() {
                tabs.post(&envelope);
            }
        }
    }
}
