//! What a transport drives: one socket's rules, whether it shares its
//! connection across tabs or not. A [`Runner`] holds the [`Driver`] and, with
//! [`Config::with_shared_across_tabs`], the tab coordinator ([`Tabs`]) and
//! the adapter between them. It has the driver's shape: inputs in (the
//! socket's and the window's [`Input`]s, the tab channel's and lock's
//! [`TabInput`]s, the application's calls), [`Step`]s out
//! ([`Runner::next`]), `now` an input, no browser type. So a transport
//! performs steps and owns closures, and never asks whether it shares.
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | [`Runner`], [`Step`], the application's calls, the order of work |
//! | `sharing.rs` | the adapter: the leader's driver rebuilt from the shared state, acks and delivered seqs read off it, its channel events and publish answers reported, the coordinator's words as the app's events |
//! | `tests/` | native tests: the adapter's rules, and tabs simulated over a server that speaks the real wire, channels included |
//!
//! # The order of work
//!
//! [`Runner::next`] feeds every queued input and returns the next step to
//! perform, until none is left:
//!
//! 1. A leading tab's driver effects first: each is read right after the
//!    input that caused it, so that what the adapter reports of it is exact
//!    (the server seq of a delivered message is the window's `last_in` when
//!    it grew during that input).
//!    Then the server seq that input handled without delivering a message
//!    (a channel answer) is reported to the coordinator.
//! 2. The driver's inputs, in arrival order, each stamped with its arrival
//!    time. A follower's driver is idle: the window's signals are the
//!    leader's business, and go nowhere.
//! 3. The coordinator's inputs.
//! 4. The driver's effects.
//! 5. The coordinator's effects.
//!
//! A transport calls [`Runner::next`] in a loop and performs each step with
//! no borrow of the runner held, so that the application's code (events,
//! the open hook) may use the socket: its calls queue more work, which the
//! same loop does next.

#![cfg_attr(
    not(target_arch = "wasm32"),
    allow(
        dead_code,
        reason = "run by the browser transport; natively, tested only"
    )
)]

mod sharing;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use crate::channel::{PresenceError, PublishError, RawJson, StreamPosition, SubscribeError};
use crate::config::Config;
use crate::driver::{Driver, Effect, Input, PublishAnswer, Query};
use crate::message::{Event, Message, SendError, SendOutcome, State, Stats};
use crate::tabs::{Envelope, Input as TabInput};
use crate::{Error, TokenProvider};
use sharing::Sharing;

/// One thing for the transport to do.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// Perform the driver's effect. Never [`Effect::Emit`]: events come as
    /// [`Step::Emit`]. After a [`Effect::Write`], call [`Runner::wrote`];
    /// after [`Effect::RunOpenHook`], [`Runner::open_hook_done`].
    Socket(Effect),
    /// Deliver this event to the application.
    Emit(Event),
    /// Use the tab channel or the lock.
    Tabs(TabIo),
    /// The leader handed its connection over: forget the socket and every
    /// timer without closing (the session lives on in the next leader).
    ForgetSocket,
}

/// What the tab channel and the lock are asked to do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TabIo {
    /// Post the envelope on the channel (as JSON).
    Post(Box<Envelope>),
    /// Take the lock if it is free ([`TabInput::LockAcquired`] or
    /// [`TabInput::LockBusy`]).
    TryLock,
    /// Wait in line for the lock ([`TabInput::LockAcquired`] later).
    RequestLock,
    /// Take the lock from a holder that stopped answering.
    StealLock,
    /// Let go of the lock.
    ReleaseLock,
    /// This tab no longer shares: close the channel, let go of the lock,
    /// withdraw a request in line, remove the listeners.
    Detach,
}

/// The driver, and the tab coordinator when sharing.
pub(crate) struct Runner {
    driver: Driver,
    /// The config the socket was made with.
    config: Config,
    /// The driver's inputs not yet fed, with their arrival time.
    inputs: VecDeque<(Input, f64)>,
    sharing: Option<Sharing>,
    /// The application set an open hook.
    hook: bool,
    /// Seeds of the drivers made later (a leader's), `splitmix64`.
    rng: u64,
    /// Steps ready, ahead of any further work.
    out: VecDeque<Step>,
}

impl Runner {
    /// The runner of tab `tab_id` for `config`; `seed` feeds the backoff's
    /// jitter. Not started.
    pub(crate) fn new(config: Config, tab_id: u32, seed: u64) -> Self {
        let sharing = config
            .shared_across_tabs
            .as_ref()
            .map(|_| Sharing::new(tab_id, &config));
        let mut rng = seed;
        Self {
            driver: Driver::new(config.clone(), next_seed(&mut rng)),
            config,
            inputs: VecDeque::new(),
            sharing,
            hook: false,
            rng,
            out: VecDeque::new(),
        }
    }

    /// Starts: connects, or with sharing joins the other tabs.
    /// `channel_ready` says whether the transport opened the tab channel
    /// and the lock (ignored without sharing); when it could not, the tab
    /// goes alone ([`NotShared::Unsupported`](crate::NotShared::Unsupported)).
    pub(crate) fn start(&mut self, now: f64, channel_ready: bool) {
        match &mut self.sharing {
            Some(sharing) if channel_ready => sharing.coordinator.start(),
            Some(sharing) => sharing.inputs.push_back((TabInput::Unsupported, now)),
            None => self.driver.start(now),
        }
    }

    /// A socket, timer or window input, which arrived at `now`.
    pub(crate) fn input(&mut self, input: Input, now: f64) {
        self.inputs.push_back((input, now));
    }

    /// A tab channel or lock input, which arrived at `now`.
    pub(crate) fn tab_input(&mut self, input: TabInput, now: f64) {
        if let Some(sharing) = &mut self.sharing {
            sharing.inputs.push_back((input, now));
        }
    }

    /// The next step to perform, after feeding what is queued; `None` when
    /// all is done.
    pub(crate) fn next(&mut self, now: f64) -> Option<Step> {
        loop {
            if let Some(step) = self.out.pop_front() {
                return Some(step);
            }
            if self.leading()
                && let Some(effect) = self.driver.poll_effect()
            {
                self.driver_effect(effect, now);
                continue;
            }
            self.report_seen(now);
            if let Some((input, at)) = self.inputs.pop_front() {
                if !self.idle_driver() {
                    self.before_driver_input();
                    self.driver.handle(input, at);
                    self.after_driver_input(at);
                }
                continue;
            }
            if self.feed_tabs() {
                continue;
            }
            if let Some(effect) = self.driver.poll_effect() {
                self.driver_effect(effect, now);
                continue;
            }
            if self.perform_tabs(now) || self.leave_now() {
                continue;
            }
            return self.detach_if_left();
        }
    }

    /// A driver effect: events go to the app (or the coordinator), the
    /// rest to the transport.
    fn driver_effect(&mut self, effect: Effect, now: f64) {
        match effect {
            Effect::Emit(event) => {
                if let Some(event) = self.tab_event(event, now) {
                    self.out.push_back(Step::Emit(event));
                }
            }
            other => self.out.push_back(Step::Socket(other)),
        }
    }

    /// The transport performed [`Effect::Write`]: `written` says whether
    /// the frame reached the socket.
    pub(crate) fn wrote(
        &mut self,
        generation: u64,
        message: Message,
        hand_back: bool,
        written: bool,
        now: f64,
    ) {
        match (hand_back, written) {
            (true, true) => self.tab_written(now),
            // Back to the head of the queue, in effect order.
            (true, false) => self.input(
                Input::WriteFailed {
                    generation,
                    message,
                },
                now,
            ),
            (false, _) => {}
        }
    }

    /// Sends now if open, queues otherwise; with sharing, through the
    /// coordinator (to the leader).
    pub(crate) fn send(&mut self, message: Message) -> Result<SendOutcome, SendError> {
        match self.sharing_mut() {
            Some(sharing) => sharing.send(message),
            None => self.driver.send(message),
        }
    }

    /// Closes for good; with sharing, this tab leaves (the leader hands
    /// the connection over, the last tab closes it) once the work queued
    /// before is done: [`Runner::take_queued`] has what it could not hand
    /// over after that.
    pub(crate) fn close(&mut self, code: u16, reason: &str, now: f64) -> Result<(), Error> {
        if self.sharing_mut().is_some() {
            crate::driver::check_close(code, reason)?;
            self.leave(code, reason);
            return Ok(());
        }
        self.driver.close(code, reason, now)
    }

    /// Reconnects now; with sharing, only the leader (the connection is its).
    pub(crate) fn reconnect(&mut self, now: f64) {
        if !self.idle_driver() {
            self.driver.reconnect(now);
        }
    }

    /// The state the app sees: with sharing, the shared connection's.
    pub(crate) fn state(&self) -> State {
        self.shared_state().unwrap_or_else(|| self.driver.state())
    }

    /// Counters and queue figures, with the tab's role while sharing.
    pub(crate) fn stats(&self, now: f64) -> Stats {
        let mut stats = self.driver.stats(now);
        self.tab_stats(&mut stats);
        stats
    }

    /// Messages waiting: with sharing, this tab's not yet confirmed.
    pub(crate) fn queue_len(&self) -> usize {
        match self.sharing() {
            Some(sharing) => sharing.coordinator.outbox_len(),
            None => self.driver.queue_len(),
        }
    }

    /// Changes the queue capacity. Not while sharing: each tab's bound is
    /// the config's, which the leader also applies to the tab's messages
    /// (and a leader's driver must keep every message it accepted).
    pub(crate) fn set_queue_capacity(&mut self, capacity: usize) {
        if self.sharing().is_none() {
            self.driver.set_queue_capacity(capacity);
        }
    }

    /// Takes the queued messages back: with sharing, what [`Runner::close`]
    /// could not hand over.
    pub(crate) fn take_queued(&mut self) -> Vec<Message> {
        match self.sharing_mut() {
            Some(sharing) => std::mem::take(&mut sharing.unsent),
            None => self.driver.take_queued(),
        }
    }

    /// The application set (or removed) its open hook. With sharing it
    /// runs only if the tab goes alone.
    pub(crate) fn set_open_hook(&mut self, present: bool) {
        self.hook = present;
        if self.sharing().is_none() {
            self.driver.set_open_hook(present);
        }
    }

    /// The open hook of connection `generation` returned.
    pub(crate) fn open_hook_done(&mut self, generation: u64) {
        self.driver.open_hook_done(generation);
    }

    /// Subscribes to `channel`: the driver's, or with sharing the
    /// coordinator's (one server subscription per channel for all tabs).
    pub(crate) fn subscribe(
        &mut self,
        channel: &str,
        since: Option<StreamPosition>,
    ) -> Result<u64, SubscribeError> {
        match self.sharing_mut() {
            Some(sharing) => sharing.subscribe(channel, since),
            None => self.driver.subscribe(channel, since),
        }
    }

    /// Ends a subscription.
    pub(crate) fn unsubscribe(&mut self, channel: &str, subscription: u64) {
        match self.sharing_mut() {
            Some(sharing) => sharing.coordinator.unsubscribe(channel, subscription),
            None => self.driver.unsubscribe(channel, subscription),
        }
    }

    /// Publishes to `channel`: the driver's, or with sharing through the
    /// leader (answered to this tab).
    pub(crate) fn publish(
        &mut self,
        channel: &str,
        data: RawJson,
        id: u128,
        answer: PublishAnswer,
    ) -> Result<u64, PublishError> {
        match self.sharing_mut() {
            Some(sharing) => sharing.publish(channel, data, id, answer),
            None => self.driver.publish(channel, data, id, answer),
        }
    }

    /// A presence query about `channel`: the driver's, or with sharing
    /// through the leader's connection (answered to this tab).
    pub(crate) fn presence_query(
        &mut self,
        channel: &str,
        query: Query,
    ) -> Result<(), PresenceError> {
        match self.sharing_mut() {
            Some(sharing) => sharing.query(channel, query),
            None => self.driver.query(channel, query),
        }
    }

    /// A subscription follows its channel's presence: the driver's, or
    /// with sharing the coordinator's (asked through the leader after each
    /// `subscribed` this tab hears).
    pub(crate) fn follow_presence(&mut self, channel: &str, subscription: u64) {
        match self.sharing_mut() {
            Some(sharing) => sharing.coordinator.follow_presence(channel, subscription),
            None => self.driver.follow_presence(channel, subscription),
        }
    }

    /// A subscription's epoch and last offset delivered.
    pub(crate) fn channel_position(
        &self,
        channel: &str,
        subscription: u64,
    ) -> Option<StreamPosition> {
        match self.sharing() {
            Some(sharing) => sharing.coordinator.channel_position(channel, subscription),
            None => self.driver.channel_position(channel, subscription),
        }
    }

    /// The config the socket was made with.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// The application's token provider, for [`Effect::FetchToken`].
    pub(crate) fn token_provider(&self) -> Option<TokenProvider> {
        self.config.token.clone()
    }

    /// The next driver's seed.
    fn seed(&mut self) -> u64 {
        next_seed(&mut self.rng)
    }
}

/// `splitmix64`: the next seed from `state`.
fn next_seed(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
