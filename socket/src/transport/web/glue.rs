//! The pump: feeds the [`Driver`] its inputs and performs its [`Effect`]s
//! with the browser's sockets and timers.
//!
//! One pump per socket drains, in a loop, the inputs that arrived (browser
//! callbacks, each stamped with its arrival time) and then the driver's
//! effects, until both are empty. A pump called while one runs returns at
//! once: what it would have done is in the input queue or the effect FIFO,
//! and the running pump does it after the current effect. So:
//!
//! * no input is ever dropped: a browser callback that fires while the pump
//!   runs (an app callback dispatching `online`, say) is queued and fed to
//!   the driver after the current effect;
//! * the driver's `RefCell` is borrowed only for one driver call, never
//!   while the application's code runs (events, the open hook), so that
//!   code may use the socket: its calls append to the same FIFO;
//! * effects are performed in the driver's order, one at a time.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

use super::Socket;
use super::hooks::WindowHooks;
use super::live::Live;
use super::tabs::TabsPart;
use super::timers::Timers;
use crate::config::Config;
use crate::dispatch::{Dispatcher, Local};
use crate::driver::{Driver, Effect, Input};
use crate::token::url_with_token;

/// The application's open hook.
pub(super) type OpenHook = Rc<dyn Fn(&Socket)>;

/// Everything one socket owns; [`Socket`] handles share it. Dropping it
/// drops the browser socket, the timers and the window hooks, which remove
/// their callbacks.
pub(crate) struct Shared {
    pub(super) driver: RefCell<Driver>,
    /// Callbacks and streams; used with no borrow held.
    pub(super) dispatcher: Rc<Dispatcher<Local>>,
    pub(super) open_hook: RefCell<Option<OpenHook>>,
    pub(super) io: RefCell<Io>,
    /// The config the socket was made with.
    pub(super) config: Config,
    /// [`Socket::tab_id`].
    pub(super) tab_id: u32,
    /// Sharing across tabs: the coordinator ([`Config::with_shared_across_tabs`]).
    pub(super) tabs: Option<TabsPart>,
    /// Inputs not yet fed to the driver, with their arrival time.
    inputs: RefCell<VecDeque<(Input, f64)>>,
    pumping: Cell<bool>,
}

/// The browser side: the socket, the timers, the window hooks.
pub(super) struct Io {
    pub(super) live: Option<Live>,
    pub(super) timers: Timers,
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

/// 64 random bits for the backoff's jitter (`Math.random` gives 52 at most).
pub(super) fn seed() -> u64 {
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
    /// A socket's state with its window hooks installed; not started.
    pub(super) fn new(config: Config) -> Rc<Self> {
        let tab_id = crate::tabs::tab_id_from(seed());
        let tabs = config
            .shared_across_tabs
            .as_ref()
            .map(|_| TabsPart::new(tab_id, &config));
        Rc::new_cyclic(|weak| Self {
            driver: RefCell::new(Driver::new(config.clone(), seed())),
            config,
            tab_id,
            tabs,
            dispatcher: Rc::default(),
            open_hook: RefCell::new(None),
            io: RefCell::new(Io {
                live: None,
                timers: Timers::default(),
                _window: WindowHooks::install(reporter(weak)),
            }),
            inputs: RefCell::new(VecDeque::new()),
            pumping: Cell::new(false),
        })
    }

    /// Something happened: queue it for the driver and pump.
    pub(super) fn input(self: &Rc<Self>, input: Input) {
        self.inputs.borrow_mut().push_back((input, now_ms()));
        self.pump();
    }

    /// Feeds every queued input and performs every effect, in order; returns
    /// at once when a pump is already running (it does the work).
    pub(super) fn pump(self: &Rc<Self>) {
        if self.pumping.replace(true) {
            return;
        }
        let _pumping = Pumping(&self.pumping);
        loop {
            // A leader tab reads its driver right after each input (tabs.rs).
            if self.driver_effects_first() {
                let effect = self.driver.borrow_mut().poll_effect();
                if let Some(effect) = effect {
                    self.perform(effect);
                    continue;
                }
            }
            let input = self.inputs.borrow_mut().pop_front();
            if let Some((input, now)) = input {
                if self.idle_driver() {
                    // A follower tab's driver is idle: the window's signals are the leader's business.
                    continue;
                }
                self.before_driver_input();
                self.driver.borrow_mut().handle(input, now);
                self.after_driver_input();
                continue;
            }
            if self.feed_tabs() {
                continue;
            }
            let effect = self.driver.borrow_mut().poll_effect();
            if let Some(effect) = effect {
                self.perform(effect);
                continue;
            }
            if !self.perform_tabs() {
                return;
            }
        }
    }

    /// Performs one effect. No borrow is held while application code runs.
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
                if written && hand_back {
                    self.tab_written();
                }
                if !written && hand_back {
                    // Back to the head of the queue, in effect order.
                    self.input(Input::WriteFailed {
                        generation,
                        message,
                    });
                }
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
                self.driver.borrow_mut().open_hook_done(generation);
            }
            Effect::FetchToken { serial } => {
                let provider = self.driver.borrow().config().token.clone();
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
            Effect::Emit(event) => {
                if let Some(event) = self.tab_event(event) {
                    self.dispatcher.emit([event]);
                }
            }
        }
    }
}
