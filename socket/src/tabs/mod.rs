//! One connection for all tabs (issue 15): the pure coordinator behind
//! [`crate::Config::with_shared_across_tabs`].
//!
//! Tabs of one origin that share a name elect a leader with a Web Lock; the
//! leader holds the one socket (a [`crate::Driver`]), the others talk to it
//! over a `BroadcastChannel`. [`Tabs`] holds every rule of that, in the
//! style of the [`Driver`](crate::Driver): inputs in ([`Tabs::start`],
//! [`Tabs::send`], [`Tabs::close`], [`Tabs::handle`] with an [`Input`]),
//! [`Effect`]s out ([`Tabs::poll_effect`]), `now` an input, no browser type.
//!
//! # The rules
//!
//! * **Roles.** A tab starts as a [`Role::Follower`] without a leader: it
//!   says `Hello` and tries the lock if free ([`Effect::TryLock`]). Free:
//!   no other tab holds any state, it leads at once. Held
//!   ([`Input::LockBusy`]): it lines up ([`Effect::RequestLock`]) only once
//!   a leader's announcement gave it the [`Shared`] state (or after
//!   [`SILENCE_MS`] without one), so that no tab ever leads from nothing
//!   while a state exists. The tab the lock is granted to
//!   ([`Input::LockAcquired`]) becomes [`Role::Leader`]: it announces itself
//!   ([`TabMessage::Leader`], with a growing epoch and the [`Shared`] state)
//!   and opens the socket from that state ([`SocketCall::Open`]). A tab
//!   whose config differs from the leader's ([`TabConfig`]: URL, reliable
//!   mode, token provider presence), or whose browser lacks the APIs
//!   ([`Input::Unsupported`]), becomes [`Role::Alone`]: [`Effect::GoAlone`]
//!   tells the glue to run a socket of its own, with the messages not yet
//!   handed to a leader.
//! * **Catch-up.** The lock's grant is not ordered with the channel: the old
//!   leader's last broadcasts may reach the new one after the grant. So a
//!   new leader that has not seen its predecessor's `Bye` waits for it
//!   (applying what comes before it, nothing else; [`TabSend::Queued`] for
//!   its own sends), or for [`SILENCE_MS`] if the old one died without a
//!   word, before it announces and opens: no seq the old leader used is
//!   given again. The channel itself is assumed to deliver in one order to
//!   every tab (the browser routes it through one place).
//! * **Sends.** Every tab's messages, the leader's own included, are
//!   numbered per tab (`n` from 1) and count against the tab's own bound
//!   (the config's queue capacity and byte limit, the same
//!   [`SendError`]s) until the leader confirms them: written to the socket,
//!   or in reliable mode acknowledged by the server. A follower forwards
//!   ([`TabSend::Forwarded`]) or, while no leader exists, keeps them
//!   ([`TabSend::Queued`]); when a leader announces itself it resends, in
//!   order, every one the leader's state has not accepted. The leader
//!   accepts `(tab, n)` only as the next of that tab: a duplicate is dropped
//!   (and confirmed again if it was), a message past a hole waits for the
//!   resend. So each message goes to the socket once, in its tab's order.
//! * **Shared state.** The leader broadcasts each acceptance before it hands
//!   the message to the socket, each confirmation, each inbound message
//!   (with its server seq) and the session: every tab keeps an exact replica
//!   of [`Shared`]. A new leader resumes from its replica: the same session,
//!   from the last server seq delivered, resending the unconfirmed messages
//!   of every tab with the seqs they had (`acked_seq + 1 + i`), so the
//!   server processes none twice and loses none.
//! * **Inbound.** Every inbound message reaches every tab once: the leader
//!   delivers it and broadcasts it; tabs drop a seq at or below the last one.
//! * **Liveness.** Every tab broadcasts a heartbeat on each [`Input::Tick`]
//!   (feed one every [`HEARTBEAT_MS`]). The leader counts the known tabs
//!   heard within [`SILENCE_MS`]; a follower that has not heard its leader for
//!   that long forgets it and asks to steal the lock ([`Effect::StealLock`],
//!   best effort: browsers do not freeze a tab that holds a lock).
//! * **Close.** A follower's close detaches it and hands back what no
//!   leader accepted, except what it forwarded to the leader it knows:
//!   those are on the channel ahead of its `Bye`, so that leader accepts
//!   them (a follower that has not heard its leader for [`SILENCE_MS`]
//!   knows none, and hands back everything). The leader's close releases the socket to the next
//!   leader ([`SocketCall::Release`]) when other tabs remain, or closes it
//!   ([`SocketCall::Close`]) when it was the last. "Remain" means heard
//!   from: followers heartbeat on a leader's announcement, so only a leader
//!   closed within a channel round trip of taking over can take a follower
//!   for gone (the next leader then starts a new session, and the unsure
//!   messages come back as [`TabEvent::Unconfirmed`]).
//! * **Channels** (issue 23, `channels.rs`). The leader holds one server
//!   subscription per channel for all tabs, counted by reference in
//!   [`Shared::channels`] ([`Tabs::subscribe`], [`Tabs::unsubscribe`]; a
//!   tab's references go at its `Bye` or when it is forgotten), broadcasts
//!   what its driver delivers, and keeps each channel's position in the
//!   replica, from which a new leader subscribes again; each tab filters
//!   by its own position, so its app sees each publication once, in order,
//!   or a gap. The leader's channel news travel as the server's own frames
//!   ([`TabMessage::Server`]), read with the driver's decoder. A publish
//!   ([`Tabs::publish`]) goes through the leader, is answered to its tab
//!   ([`TabEvent::Published`]) and is resent to each new leader with its
//!   id (the server's idempotency key).
//! * **Presence** (issue 24, `channels.rs`): the shared tabs are one
//!   connection, so one member. A tab's query ([`Tabs::presence`]) is
//!   asked on the leader's connection and answered to that tab alone
//!   ([`TabEvent::Presence`]); `join` and `leave` reach every tab; a
//!   subscription that follows presence ([`Tabs::follow_presence`]) asks
//!   for the members again at each `subscribed` (after a reconnect or a
//!   leader change).
//! * **Two leaders.** A leader that hears a believable claim of the next
//!   epoch (its lock was stolen) steps down ([`SocketCall::Release`]) and
//!   follows. Two tabs that steal at once with the same epoch are not told
//!   apart yet.
//!
//! # What a tab believes (issue 22)
//!
//! Any script of the origin can post on the channel, and so can a tab of
//! an older build. The threat model: tabs of another build, another app of
//! the origin using the same name by mistake, malformed or out-of-range
//! values (a hostile script in the origin owns the page anyway, and may
//! speak as any tab). So every number is checked, and:
//!
//! * **Claims to lead.** A tab believes a [`TabMessage::Leader`] from a
//!   tab that said hello (or that a believed leader listed), at the epoch
//!   it knows or the next one; or from any tab whose roster names it (that
//!   tab heard its hello: first contact, or back after being away). Never
//!   at `u64::MAX`. A far-ahead claim or a stranger's changes nothing: the
//!   leader stays, followers keep it, the next leader adds one.
//! * **Replicas** change only at the current leader's word (a stranger's
//!   or a follower's `Accepted`, `Inbound`, `Mismatch`, channel news...
//!   are ignored).
//! * **Sends.** The leader takes them only from tabs that said hello; any
//!   other gets [`TabMessage::Rejoin`]. It bounds each tab's pending
//!   messages (its own queue capacity and byte limit) and refuses a frame
//!   its mode cannot carry: a refusal uses the number and goes back to the
//!   sender ([`TabMessage::Refused`], [`TabEvent::Refused`]), never into the
//!   socket. A follower refuses binary in reliable mode itself. Channel
//!   requests too come only from tabs that said hello, with a valid name,
//!   publish id and query id, at most [`MAX_CHANNELS_PER_TAB`] channels,
//!   [`MAX_PUBLISHES_PER_TAB`] unanswered publishes and
//!   [`MAX_QUERIES_PER_TAB`] unanswered queries per tab; offsets are
//!   checked (nothing past `u64::MAX`); a server frame that does not
//!   decode is ignored.
//! * **Forgetting.** A tab's roster entry goes at its `Bye` or after
//!   [`FORGET_MS`] of silence (a hidden tab's timers may fire once a
//!   minute), its numbering once nothing of it is pending. A forgotten tab
//!   that speaks again is told to rejoin: its hello carries its oldest
//!   unconfirmed `n`, and it resends from there, nothing lost or doubled.
//! * **Another wire version** ([`WireError::OtherVersion`], also a post
//!   without a version): every tab of this build goes alone
//!   ([`TabEvent::OtherWire`]), the leader first, keeping its socket and
//!   what it took ([`TabMessage::Disband`]), the followers at its word with
//!   what it did not take (`alone.rs`). Across the two sockets a tab's
//!   order holds only as far as the old leader's socket is as quick.
//!   Anything else unreadable is ignored.
//!
//! Without reliable mode a handoff is a reconnect: the new leader writes the
//! unconfirmed messages again, so one the old leader wrote just before it
//! left may reach the server twice (at least once, as a reconnect's flush).
//!
//! # Who runs it
//!
//! The runner (`crate::runner`) runs a [`Tabs`] next to the socket's
//! [`crate::Driver`]: it adapts [`SocketCall`]s to a driver of the
//! leader's (a reliable resume from [`Shared`] through
//! [`crate::Driver::restore_reliable`]), reads that driver back as
//! [`SocketReport`]s, turns [`Effect::Deliver`] into the app's
//! [`crate::Event`]s and starts the tab's own driver on
//! [`Effect::GoAlone`]. The browser's `transport/web/tabs_io.rs` performs
//! the channel and lock:
//!
//! * [`Effect::TryLock`] is `navigator.locks.request(name, { ifAvailable: true }, cb)`
//!   (a `null` lock: [`Input::LockBusy`]), [`Effect::RequestLock`] the same
//!   in line (withdrawn with an `AbortSignal`), [`Effect::StealLock`] with
//!   `{ steal: true }`; a granted lock ([`Input::LockAcquired`]) is held by
//!   a promise whose `resolve` [`Effect::ReleaseLock`] or drop calls. Web
//!   Locks are called through `js-sys`, not web-sys's unstable bindings (see
//!   `tabs_io.rs` for why).
//! * [`Effect::Broadcast`] posts [`Envelope::to_json`] on a
//!   `BroadcastChannel(name)`; its posts come back as text
//!   ([`Input::Posted`], parsed here).
//!   An interval feeds [`Input::Tick`] every [`HEARTBEAT_MS`]; `pagehide`
//!   is the tab's [`Tabs::close`].
//!
//! Tested end to end in headless Chromium with several windows
//! (`e2e/tests/tabs.rs`), the server's count of connections the judge.
//!
//! | file | what it holds |
//! |---|---|
//! | `tabs/mod.rs` | [`Tabs`]: state, the public calls, the channel's dispatch |
//! | `tabs/wire.rs` | [`Envelope`], [`TabMessage`], [`Shared`], [`TabConfig`]: the tab protocol, its version |
//! | `tabs/roster.rs` | hellos, goodbyes, heartbeats, forgetting, which claims to believe |
//! | `tabs/map.rs` | [`TabMap`]: what is kept per tab (the roster, [`Shared::accepted`]), a sorted vector in place of a `BTreeMap` (smaller in wasm) |
//! | `tabs/alone.rs` | going alone, and how on another wire version |
//! | `tabs/channels.rs` | channels and presence shared across tabs: references, the leader's broadcasts of its driver's channel events, each tab's filter by offset, publishes, presence queries and follows |
//! | `tabs/frames.rs` | the server frames the leader writes for those broadcasts |
//! | `tabs/leader.rs`, `tabs/follower.rs` | the leader's rules (lead, catch up, accept, confirm, socket reports) and the follower's (follow, resend, the replica) |
//! | `tabs/io.rs` | [`Input`], [`Effect`], [`SocketCall`], [`SocketReport`], [`TabEvent`], [`Role`], [`TabSend`] |
//! | `tabs/tests/` | unit tests (`mod.rs`, `validation.rs` for what a tab believes, `channels.rs` for shared channels), and several tabs and a reliable server simulated in-process, leaders closed mid-stream, with forged posts and another wire version (`sim.rs`) |

mod alone;
mod channels;
mod follower;
mod frames;
mod io;
mod leader;
mod map;
mod roster;
#[cfg(test)]
mod tests;
mod wire;

use std::collections::VecDeque;

use crate::config::Config;
use crate::message::{Message, SendError};
pub use channels::{MAX_CHANNELS_PER_TAB, MAX_PUBLISHES_PER_TAB, MAX_QUERIES_PER_TAB};
pub use io::{Effect, Input, PresenceAnswer, Role, SocketCall, SocketReport, TabEvent, TabSend};
pub use map::TabMap;
pub use wire::{
    Envelope, Frame, LinkState, Pending, Refusal, Session, Shared, SharedChannel, TAB_PROTOCOL,
    TabConfig, TabId, TabMessage, WireError, tab_id_from,
};

/// How often the glue feeds [`Input::Tick`] (every tab heartbeats then).
pub const HEARTBEAT_MS: u64 = 1_000;
/// A tab not heard for this long is gone (a leader: replaced, best effort).
pub const SILENCE_MS: f64 = 5_000.0;
/// A tab not heard for this long is forgotten (its roster entry, and its
/// numbering once nothing of it is pending). Longer than the minute a
/// hidden tab's timers may be throttled to; a forgotten tab that speaks
/// again is told to rejoin.
pub const FORGET_MS: f64 = 60_000.0;

/// Where a tab stands with the lock.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Lock {
    /// [`Effect::TryLock`] asked, no answer yet.
    Trying,
    /// Held by another tab since `.0`; waiting to learn the leader's state.
    Busy(f64),
    /// In line ([`Effect::RequestLock`]).
    Requested,
    /// Ours.
    Held,
}

/// The tab coordinator; see the [module docs](self).
#[derive(Debug)]
pub struct Tabs {
    me: TabId,
    config: TabConfig,
    role: Role,
    closed: bool,
    /// Own messages not confirmed yet: (n, frame), oldest first.
    outbox: VecDeque<(u64, Frame)>,
    outbox_bytes: usize,
    /// The last `n` given.
    last_n: u64,
    capacity: usize,
    max_bytes: Option<usize>,
    /// The replica of the leader's state (the leader's own when leading).
    shared: Shared,
    epoch: u64,
    /// Where this tab stands with the lock.
    lock: Lock,
    /// Leader: the previous leader whose last broadcasts we wait for, and since when.
    catching_up: Option<(TabId, f64)>,
    /// The current leader and when it was last heard.
    leader: Option<(TabId, f64)>,
    /// The other tabs this tab knows (said hello with our config, or were
    /// in a believed leader's roster) and when each was last heard.
    roster: TabMap<f64>,
    /// Tabs sharing the connection, as last known.
    tabs: usize,
    /// Said hello again at the leader's [`TabMessage::Rejoin`], not answered yet.
    rejoining: bool,
    /// A tab of this wire version was heard: going alone, once the
    /// leader did (so that what it accepted is known).
    foreign: Option<u64>,
    link: LinkState,
    /// Channels shared across tabs: this tab's subscriptions and publishes,
    /// and the leader's bookkeeping (`channels.rs`).
    channels: channels::TabChannels,
    effects: VecDeque<Effect>,
}

impl Tabs {
    /// The coordinator of tab `me`, sharing the connection `config` describes.
    pub fn new(me: TabId, config: &Config) -> Self {
        Self {
            me,
            config: TabConfig::of(config),
            role: Role::Follower,
            closed: false,
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            last_n: 0,
            capacity: config.queue_capacity,
            max_bytes: config.queue_max_bytes,
            shared: Shared::default(),
            epoch: 0,
            leader: None,
            catching_up: None,
            lock: Lock::Trying,
            roster: TabMap::new(),
            tabs: 1,
            rejoining: false,
            foreign: None,
            link: LinkState::Connecting,
            channels: channels::TabChannels::default(),
            effects: VecDeque::new(),
        }
    }

    /// The next effect to perform, oldest first.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// This tab's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// This tab's id.
    pub fn id(&self) -> &TabId {
        &self.me
    }

    /// Tabs sharing the connection, this one included.
    pub fn tabs(&self) -> usize {
        self.tabs
    }

    /// The shared connection's state.
    pub fn link(&self) -> LinkState {
        self.link
    }

    /// Whether a leader is known (or this tab leads).
    pub fn has_leader(&self) -> bool {
        self.role == Role::Leader || self.leader.is_some()
    }

    /// This tab's messages not confirmed yet.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// The replica of the shared state.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Joins: says hello and asks for the lock.
    pub fn start(&mut self) {
        self.hello();
        self.effects.push_back(Effect::TryLock);
    }

    /// Sends `message` through the shared connection.
    ///
    /// # Errors
    ///
    /// Every error gives the message back: [`SendError::Closed`] after
    /// [`Tabs::close`] or when alone (the tab's own socket takes sends then),
    /// [`SendError::BinaryNotReliable`] as the driver, [`SendError::TooLarge`] over the byte limit, [`SendError::QueueFull`]
    /// when the tab's unconfirmed messages fill its capacity or byte limit
    /// (whatever the overflow policy: a forwarded message cannot be taken back).
    pub fn send(&mut self, message: impl Into<Message>) -> Result<TabSend, SendError> {
        let message = message.into();
        if self.closed || self.role == Role::Alone {
            return Err(SendError::Closed(message));
        }
        if self.config.reliable && matches!(message, Message::Binary(_)) {
            return Err(SendError::BinaryNotReliable(message));
        }
        let size = message.len();
        if self.max_bytes.is_some_and(|max| size > max) {
            return Err(SendError::TooLarge(message));
        }
        if self.outbox.len() >= self.capacity
            || self
                .max_bytes
                .is_some_and(|max| self.outbox_bytes + size > max)
        {
            return Err(SendError::QueueFull(message));
        }
        self.last_n += 1;
        let n = self.last_n;
        let frame = Frame::from(message);
        self.outbox_bytes += size;
        self.outbox.push_back((n, frame.clone()));
        Ok(match self.role {
            Role::Leader if self.catching_up.is_none() => {
                self.accept(self.me, n, frame);
                TabSend::Sent
            }
            // Catching up: handed over once the lead is taken.
            Role::Leader => TabSend::Queued,
            _ if self.leader.is_some() => {
                self.broadcast(TabMessage::Send { n, frame });
                TabSend::Forwarded
            }
            _ => TabSend::Queued,
        })
    }

    /// Detaches this tab; returns its messages that will not be sent,
    /// oldest first: those no leader accepted, except what a follower
    /// forwarded to a leader it knows (the channel delivers them to it
    /// before the `Bye`, so it accepts them: handing them back too would
    /// have the app send them twice).
    pub fn close(&mut self) -> Vec<Frame> {
        if self.closed {
            return Vec::new();
        }
        self.closed = true;
        let unsent = if self.role == Role::Alone {
            Vec::new()
        } else {
            self.broadcast(TabMessage::Bye);
            // A leader still catching up has no socket yet.
            if self.role == Role::Leader && self.catching_up.is_none() {
                let call = if self.tabs <= 1 {
                    SocketCall::Close
                } else {
                    SocketCall::Release
                };
                self.effects.push_back(Effect::DriveSocket(call));
            }
            self.effects.push_back(Effect::ReleaseLock);
            if self.role == Role::Follower && self.leader.is_some() {
                Vec::new()
            } else {
                self.take_unaccepted()
            }
        };
        self.outbox.clear();
        self.outbox_bytes = 0;
        unsent
    }

    /// Feeds what happened at `now` (milliseconds, any monotonic origin).
    pub fn handle(&mut self, input: Input, now: f64) {
        if self.closed || self.role == Role::Alone {
            return;
        }
        match input {
            Input::LockAcquired => {
                self.lock = Lock::Held;
                match self.foreign {
                    None => self.lead(now),
                    // Leading now would only hand the connection to no one.
                    // The grant may overtake our leader's last acceptances
                    // and its `Disband`: we go alone at that word, not now.
                    Some(_) if self.leader.is_some() => {
                        self.effects.push_back(Effect::ReleaseLock);
                    }
                    Some(version) => self.go_alone(TabEvent::OtherWire { version }),
                }
            }
            Input::LockBusy => {
                self.lock = Lock::Busy(now);
                if self.leader.is_some() {
                    self.request_lock();
                }
            }
            Input::Posted(text) => match Envelope::from_json(&text) {
                Ok(envelope) => self.channel(envelope, now),
                Err(WireError::OtherVersion { version }) => self.other_wire(version),
                // Noise (another app's posts, a broken one): nothing to act on.
                Err(_) => {}
            },
            Input::Channel(envelope) => self.channel(envelope, now),
            Input::Tick => self.tick(now),
            Input::Unsupported => self.go_alone(TabEvent::Unsupported),
            Input::Socket(report) if self.role == Role::Leader && self.catching_up.is_none() => {
                self.socket(report);
            }
            Input::Socket(_) => {}
        }
    }

    pub(super) fn broadcast(&mut self, body: TabMessage) {
        self.effects.push_back(Effect::Broadcast(Envelope {
            v: TAB_PROTOCOL,
            from: self.me,
            body,
        }));
    }

    pub(super) fn deliver(&mut self, event: TabEvent) {
        self.effects.push_back(Effect::Deliver(event));
    }

    pub(super) fn role_changed(&mut self) {
        let tabs = if self.role == Role::Alone {
            0
        } else {
            self.tabs
        };
        self.deliver(TabEvent::Role {
            role: self.role,
            tabs,
        });
    }

    /// Own messages past what the shared state accepted of this tab.
    pub(super) fn take_unaccepted(&mut self) -> Vec<Frame> {
        let accepted = self.accepted_of(&self.me);
        self.outbox
            .iter()
            .filter(|(n, _)| *n > accepted)
            .map(|(_, frame)| frame.clone())
            .collect()
    }

    pub(super) fn accepted_of(&self, tab: &TabId) -> u64 {
        self.shared.accepted.get(tab).copied().unwrap_or(0)
    }

    /// Lines up for the lock, once.
    pub(super) fn request_lock(&mut self) {
        if matches!(self.lock, Lock::Busy(_)) {
            self.lock = Lock::Requested;
            self.effects.push_back(Effect::RequestLock);
        }
    }

    /// Delivers an inbound message unless its seq was delivered; whether it was new.
    pub(super) fn inbound(&mut self, seq: Option<u64>, frame: Frame) -> bool {
        if let Some(seq) = seq {
            if seq <= self.shared.last_in {
                return false;
            }
            self.shared.last_in = seq;
        }
        self.deliver(TabEvent::Message(frame));
        true
    }

    fn channel(&mut self, envelope: Envelope, now: f64) {
        let Envelope { v, from, body } = envelope;
        if v != TAB_PROTOCOL || from == self.me {
            return;
        }
        self.heard(&from, &body, now);
        if self.role == Role::Leader {
            self.as_leader(from, body, now);
            if self.role == Role::Leader && self.catching_up.is_none() {
                self.recount(now);
            }
        } else {
            self.as_follower(from, body, now);
        }
    }
}
